"""Cache-miss and other counters over the training region, with `perf stat`.

Two halves, one on each side of the worker process:

- the runner wraps the worker command with :func:`wrap_command`; the returned
  :class:`WrappedCommand` carries the argv (``perf stat ... -- <worker argv>``), the file descriptors
  the child must inherit and the environment variables to add, and, after the worker has exited,
  :meth:`WrappedCommand.collect` turns perf's CSV output into the record's ``counters`` section;
- the worker brackets its training loop with :class:`TrainingRegion` (``from_env()``,
  ``enable()``/``disable()``), which writes ``enable``/``disable`` to perf's control pipe and waits
  for perf's ``ack``, so that data loading, ``prepare()`` and every evaluation stay uncounted.

perf starts with counters disabled (``-D -1``) and is driven through ``--control fd:CTL,ACK``
(perf >= 5.9). Where that is unsupported the whole process is counted and the record says
``scope: "whole_process"``. Where perf is missing, forbidden (``perf_event_paranoid``) or counts no
hardware events (virtual machines without a virtual PMU report ``<not supported>``), the reason is
recorded and the run goes on; if the workload asks for cache behaviour (``cachegrind = true``) the
runner then simulates a short training slice under valgrind (:mod:`harness.counters.counter_source` decides,
:mod:`harness.counters.cachegrind` simulates) and the record's ``source`` is ``"cachegrind"``. Counters
never make a run fail.

The record's ``counters`` section::

    {source: "perf" | "cachegrind" | "unavailable",
     scope: "training_region" | "whole_process" | None,
     reason: str,                         # "" when every requested event counted
     events: {name: count | None},        # None: not supported / not counted on this machine
     per_sample: {name: count / training samples},
     running_pct: {name: % of the region the event was scheduled (perf multiplexing)},
     cachegrind: {...} | None}            # see harness.counters.cachegrind.run_slice

For ``source == "cachegrind"``, ``events``/``per_sample`` hold the simulated counts of the slice and
``cachegrind.perf`` keeps what perf counted (software events) over the full run.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.store import records

log = logging.getLogger("slidebench.perf")

HARDWARE_EVENTS: tuple[str, ...] = (
    "cycles",
    "instructions",
    "cache-references",
    "cache-misses",
    "L1-dcache-load-misses",
    "LLC-load-misses",
    "dTLB-load-misses",
)
SOFTWARE_EVENTS: tuple[str, ...] = ("page-faults", "context-switches", "cpu-clock", "task-clock")
EVENTS: tuple[str, ...] = HARDWARE_EVENTS + SOFTWARE_EVENTS

#: "CTL_FD,ACK_FD" of perf's control pipes, as seen by the worker. Absent: not under perf.
CONTROL_ENV = "SLIDEBENCH_PERF_CONTROL"
#: Set (by harness.counters.cachegrind) when the worker runs under callgrind: the region toggles instrumentation.
VALGRIND_CONTROL_ENV = "SLIDEBENCH_VALGRIND_CONTROL"
#: How long the worker waits for perf's ack before it stops driving the counters.
ACK_TIMEOUT_S = 10.0
INSTALL_HINT = "install perf (Debian: apt-get install linux-perf; Ubuntu: linux-tools-$(uname -r))"
#: perf >= 5.9 has --control; older versions fail with an unknown-option error.
PERF_OUTPUT_NAME = "perf-stat.csv"


# --------------------------------------------------------------------------------------------
# Parsing perf's CSV output (`perf stat -x, -o FILE`)


@dataclass(frozen=True)
class PerfReading:
    """One event of a `perf stat -x,` output file."""

    event: str
    value: float | None  # None: "<not supported>" or "<not counted>"
    status: str  # "counted" | "not supported" | "not counted"
    unit: str = ""
    running_pct: float | None = None


_MODIFIER = re.compile(r":[ukhGHpPSDIW]+$")


def _event_name(raw: str) -> str:
    """Canonical event name: drop PMU prefixes (``cpu_core/cycles:u/``) and modifiers (``cycles:u``)."""
    name = raw.strip()
    parts = name.split("/")
    if len(parts) >= 3:  # pmu/event[,params]/[modifiers]
        name = parts[1].split(",")[0]
    return _MODIFIER.sub("", name)


def parse_perf_csv(text: str) -> dict[str, PerfReading]:
    """Readings by canonical event name from `perf stat -x,` output.

    Skips comments, blank lines and the ``Events enabled``/``Events disabled`` lines perf writes when
    driven through ``--control``. Values of the same event on several PMUs (hybrid CPUs:
    ``cpu_core/cycles/`` and ``cpu_atom/cycles/``) are summed. Raises ValueError naming the line
    when a line has too few fields or a value that is not a number.
    """
    out: dict[str, PerfReading] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "Events ")):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            raise ValueError(f"perf output line {lineno}: expected 'value,unit,event,...', got {line!r}")
        raw_value, unit, raw_event = fields[0].strip(), fields[1].strip(), fields[2]
        name = _event_name(raw_event)
        if not name:
            raise ValueError(f"perf output line {lineno}: no event name in {line!r}")
        pct: float | None = None
        if len(fields) > 4 and fields[4].strip():
            try:
                pct = float(fields[4])
            except ValueError:
                pct = None
        value: float | None
        if raw_value.startswith("<"):
            status = raw_value.strip("<>")
            value = None
        else:
            try:
                value = float(raw_value)
            except ValueError:
                raise ValueError(
                    f"perf output line {lineno}: value {raw_value!r} of {name} is not a number"
                ) from None
            status = "counted"
        prev = out.get(name)
        if prev is not None:
            # The same event on several PMUs: sum what counted; the lowest running share is reported.
            if prev.value is None:
                pass
            elif value is None:
                value, status, pct = prev.value, prev.status, prev.running_pct
            else:
                value = prev.value + value
                shares = [p for p in (prev.running_pct, pct) if p is not None]
                pct = min(shares) if shares else None
        out[name] = PerfReading(name, value, status, unit, pct)
    return out


def _count(reading: PerfReading) -> float | int | None:
    """A count as an int where it is one (events), a float for clocks (msec)."""
    if reading.value is None:
        return None
    return int(reading.value) if float(reading.value).is_integer() and not reading.unit else reading.value


# --------------------------------------------------------------------------------------------
# What this machine supports (probed once per process)


@dataclass(frozen=True)
class PerfSupport:
    """Result of the probe: what `perf stat` can count here, and why not when it cannot."""

    perf: str | None  # path of the perf binary, None when missing
    version: str | None
    paranoid: int | None  # /proc/sys/kernel/perf_event_paranoid
    control: bool  # --control fd:... and -D -1 accepted
    events: Mapping[str, str] = field(default_factory=dict)  # event -> "counted" | "not supported" | ...
    reason: str = ""  # "" when every event counts; otherwise what is missing and why

    @property
    def usable(self) -> bool:
        return self.perf is not None and any(s == "counted" for s in self.events.values())

    @property
    def hardware(self) -> bool:
        """Whether any hardware (cache) event counts."""
        return any(self.events.get(e) == "counted" for e in HARDWARE_EVENTS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "perf": self.perf,
            "version": self.version,
            "paranoid": self.paranoid,
            "control": self.control,
            "events": dict(self.events),
            "reason": self.reason,
        }


def read_paranoid(path: Path = Path("/proc/sys/kernel/perf_event_paranoid")) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _paranoid_note(paranoid: int | None) -> str:
    if paranoid is None or os.geteuid() == 0:
        return ""
    if paranoid >= 3:
        return f"; kernel.perf_event_paranoid={paranoid} forbids perf for unprivileged users (set it to 2 or lower)"
    if paranoid == 2:
        return "; kernel.perf_event_paranoid=2: user-space only"
    return ""


@functools.cache
def probe(perf: str | None = None) -> PerfSupport:
    """Probe `perf` (default: the one on PATH) once per process: a few milliseconds.

    Runs ``perf stat -x, -e <EVENTS> -- true`` to learn which events count, and the same with
    ``-D -1 --control fd:...`` to learn whether the training region can be isolated.
    """
    path = perf or shutil.which("perf")
    paranoid = read_paranoid()
    if path is None:
        return PerfSupport(None, None, paranoid, False, {}, f"perf not found on PATH; {INSTALL_HINT}")
    try:
        ver = subprocess.run([path, "--version"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return PerfSupport(None, None, paranoid, False, {}, f"{path} cannot run ({exc}); {INSTALL_HINT}")
    if ver.returncode != 0:
        # Debian's /usr/bin/perf is a wrapper that fails when no perf matches the running kernel.
        msg = (ver.stderr or ver.stdout).strip().splitlines()
        return PerfSupport(
            None,
            None,
            paranoid,
            False,
            {},
            f"{path} --version failed: {msg[-1] if msg else ver.returncode}; {INSTALL_HINT}",
        )
    version = ver.stdout.strip().removeprefix("perf version ").strip()

    with tempfile.TemporaryDirectory(prefix="slidebench-perf-probe-") as tmp:
        out = Path(tmp) / "probe.csv"
        cmd = [path, "stat", "-x,", "-o", str(out), "-e", ",".join(EVENTS), "--", "true"]
        try:
            res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return PerfSupport(path, version, paranoid, False, {}, f"perf stat failed to run: {exc}")
        if res.returncode != 0 or not out.exists():
            err = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
            return PerfSupport(
                path, version, paranoid, False, {}, f"perf stat failed: {err}{_paranoid_note(paranoid)}"
            )
        try:
            readings = parse_perf_csv(out.read_text())
        except ValueError as exc:
            return PerfSupport(path, version, paranoid, False, {}, f"perf stat output unreadable: {exc}")
        events = {e: readings[e].status if e in readings else "missing" for e in EVENTS}
        control = _probe_control(path, Path(tmp) / "control.csv")

    missing = [e for e in EVENTS if events[e] != "counted"]
    reasons = []
    if missing:
        hw_missing = [e for e in HARDWARE_EVENTS if events[e] != "counted"]
        if len(hw_missing) == len(HARDWARE_EVENTS):
            reasons.append(
                "hardware events <not supported> by perf on this machine (no PMU: a virtual machine "
                f"without a virtual PMU?){_paranoid_note(paranoid)}"
            )
            missing = [e for e in missing if e not in HARDWARE_EVENTS]
        if missing:
            reasons.append("not counted here: " + ", ".join(f"{e} ({events[e]})" for e in missing))
    if not control:
        reasons.append(f"perf {version} lacks --control/-D -1 (needs perf >= 5.9): whole process counted")
    return PerfSupport(path, version, paranoid, control, events, "; ".join(reasons))


def _probe_control(perf: str, out: Path) -> bool:
    """Whether this perf accepts ``-D -1 --control fd:CTL,ACK`` (it exits with an error otherwise)."""
    ctl_r, ctl_w = os.pipe()
    ack_r, ack_w = os.pipe()
    try:
        cmd = [perf, "stat", "-x,", "-o", str(out), "-D", "-1", "--control", f"fd:{ctl_r},{ack_w}",
               "-e", "task-clock", "--", "true"]  # fmt: skip
        res = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=30, pass_fds=(ctl_r, ack_w)
        )
        return res.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        for fd in (ctl_r, ctl_w, ack_r, ack_w):
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Worker side: bracket the training region


class TrainingRegion:
    """Turns perf's counters on and off around the training loop; a no-op when not under perf.

    Use ``TrainingRegion.from_env()``; ``enable()`` before training, ``disable()`` before each
    evaluation and ``enable()`` after it, ``disable()`` at the end. Repeated calls in the same state
    are ignored. If perf stops answering, the region logs a warning and turns itself into a no-op
    (the runner then records the counters as unreliable) rather than hanging the run.
    """

    def __init__(
        self, ctl_fd: int | None = None, ack_fd: int | None = None, timeout_s: float = ACK_TIMEOUT_S
    ) -> None:
        self._ctl = ctl_fd
        self._ack = ack_fd
        self._timeout = timeout_s
        self.enabled = False
        self.toggles = 0  # commands acknowledged
        self.failed: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Any:
        """The region for this process: perf-driven, valgrind-driven (cachegrind slice) or a no-op."""
        env = os.environ if environ is None else environ
        if env.get(VALGRIND_CONTROL_ENV, "") not in ("", "0"):
            from harness.counters.cachegrind import ValgrindRegion

            return ValgrindRegion.from_env(env)
        raw = env.get(CONTROL_ENV, "").strip()
        if not raw:
            return cls()
        try:
            ctl, ack = (int(part) for part in raw.split(","))
            os.fstat(ctl)
            os.fstat(ack)
        except (ValueError, OSError) as exc:
            log.warning(
                "%s=%r is not two open file descriptors (%s): counters stay as perf started them",
                CONTROL_ENV,
                raw,
                exc,
            )
            return cls()
        return cls(ctl, ack)

    @property
    def active(self) -> bool:
        return self._ctl is not None and self.failed is None

    def enable(self) -> None:
        if self.active and not self.enabled:
            self._command("enable")
            self.enabled = True

    def disable(self) -> None:
        if self.active and self.enabled:
            self._command("disable")
            self.enabled = False

    def _command(self, cmd: str) -> None:
        assert self._ctl is not None and self._ack is not None
        try:
            os.write(self._ctl, f"{cmd}\n".encode())
            buf = b""
            while b"ack" not in buf:
                ready, _, _ = select.select([self._ack], [], [], self._timeout)
                if not ready:
                    raise TimeoutError(f"no ack from perf within {self._timeout:g} s")
                chunk = os.read(self._ack, 64)
                if not chunk:
                    raise EOFError("perf closed its ack pipe")
                buf += chunk
            self.toggles += 1
        except (OSError, TimeoutError, EOFError) as exc:
            self.failed = f"perf control '{cmd}' failed: {exc}"
            log.warning("%s; counters no longer follow the training region", self.failed)


# --------------------------------------------------------------------------------------------
# Runner side: wrap the worker command, collect afterwards


@dataclass
class WrappedCommand:
    """The worker command as the runner must launch it, and the collector of its counters.

    Launch ``subprocess.Popen(w.argv, pass_fds=w.pass_fds, env={**base_env, **w.env})``: ``env``
    holds only the variables to ADD. After the process has exited, ``w.collect(samples)`` returns
    the record's ``counters`` section (and closes the runner's ends of perf's pipes).
    """

    argv: list[str]
    pass_fds: tuple[int, ...]
    env: dict[str, str]
    workdir: Path
    counters_cfg: Mapping[str, Any]
    support: PerfSupport | None
    output: Path | None  # perf's CSV file
    scope: str | None
    _fds: list[int] = field(default_factory=list)
    _unavailable: str = ""

    def close(self) -> None:
        """Close the runner's copies of perf's control pipes (idempotent)."""
        while self._fds:
            fd = self._fds.pop()
            try:
                os.close(fd)
            except OSError:
                pass

    def collect(self, samples: int) -> dict[str, Any]:
        """What perf counted, as a ``counters`` section; `samples` = training samples of the run.

        Only perf's side: whether a cachegrind slice follows is the runner's next step
        (harness.counters.counter_source).
        """
        self.close()
        return self._perf_section(samples)

    def _perf_section(self, samples: int) -> dict[str, Any]:
        if self.output is None:
            return unavailable(self._unavailable)
        try:
            readings = parse_perf_csv(self.output.read_text())
        except OSError as exc:
            return unavailable(f"perf wrote no output ({exc}): did the worker start?")
        except ValueError as exc:
            return unavailable(f"perf output unreadable: {exc}")
        events = {e: (_count(readings[e]) if e in readings else None) for e in EVENTS}
        reason = self.support.reason if self.support else ""
        if all(v is None for v in events.values()):
            return unavailable(join_reasons(reason, "no event counted (the training region was never enabled?)"))
        return {
            "source": "perf",
            "scope": self.scope,
            "reason": reason,
            "events": events,
            "per_sample": per_sample(events, samples),
            "running_pct": {
                e: readings[e].running_pct for e in EVENTS if e in readings and readings[e].value is not None
            },
            "cachegrind": None,
        }


def join_reasons(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def unavailable(reason: str) -> dict[str, Any]:
    """A ``counters`` section for a run without counters: every perf event listed as null."""
    return dict(records.unavailable_counters(reason, EVENTS))


def per_sample(events: Mapping[str, float | int | None], samples: int) -> dict[str, float | None]:
    """Each count divided by the number of training samples (None where not counted or no samples)."""
    return {e: (v / samples if v is not None and samples > 0 else None) for e, v in events.items()}


def wrap_command(
    argv: Sequence[str],
    counters_cfg: Mapping[str, Any] | Any,
    workdir: Path,
    *,
    support: PerfSupport | None = None,
) -> WrappedCommand:
    """Wrap the worker command (``python -m harness.run.worker SPEC.json OUT.json``) in `perf stat`.

    `counters_cfg` is the workload's ``[counters]`` table (a dict or the CountersSpec dataclass).
    `workdir` receives perf's CSV file. Never raises
    because counters are unavailable: the returned command then runs the worker unwrapped and
    `collect` records why.
    """
    cfg = _cfg_dict(counters_cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in argv]
    plain: dict[str, Any] = {
        "argv": list(argv), "pass_fds": (), "env": {}, "workdir": workdir, "counters_cfg": cfg
    }  # fmt: skip
    if not cfg.get("perf", False):
        return WrappedCommand(
            **plain,
            support=None,
            output=None,
            scope=None,
            _unavailable="perf counting off in the workload's [counters]",
        )
    sup = support or probe()
    if not sup.usable:
        return WrappedCommand(
            **plain,
            support=sup,
            output=None,
            scope=None,
            _unavailable=sup.reason or "perf counts nothing here",
        )
    assert sup.perf is not None
    output = workdir / PERF_OUTPUT_NAME
    output.unlink(missing_ok=True)
    events = [e for e in EVENTS if sup.events.get(e) == "counted"]
    cmd = [sup.perf, "stat", "-x,", "-o", str(output), "-e", ",".join(events)]
    if not sup.control:
        return WrappedCommand(
            **{**plain, "argv": cmd + ["--"] + argv}, support=sup, output=output, scope="whole_process"
        )
    ctl_r, ctl_w = os.pipe()
    ack_r, ack_w = os.pipe()
    # perf reads commands from ctl_r and acks on ack_w; the worker (perf's child, which inherits
    # every fd perf inherited) writes to ctl_w and reads ack_r.
    cmd += ["-D", "-1", "--control", f"fd:{ctl_r},{ack_w}", "--"] + argv
    return WrappedCommand(
        **{
            **plain,
            "argv": cmd,
            "pass_fds": (ctl_r, ctl_w, ack_r, ack_w),
            "env": {CONTROL_ENV: f"{ctl_w},{ack_r}"},
        },
        support=sup,
        output=output,
        scope="training_region",
        _fds=[ctl_r, ctl_w, ack_r, ack_w],
    )


def _cfg_dict(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "__dataclass_fields__"):
        return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}
    raise TypeError(f"counters config must be a mapping or a dataclass, got {type(cfg).__name__}")
