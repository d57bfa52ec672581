"""Simulated cache misses of a short training slice, under valgrind, where perf has no hardware counters.

Valgrind's cache simulator (cachegrind's, also inside callgrind) replays every memory access of the
program against a model of the host's caches. Three things make its numbers meaningful here:

- **The real cache geometry, given explicitly.** Valgrind's auto-detection reads CPUID, which a
  hypervisor may fill with nonsense (on this project's AMD EPYC VM it models a 256 MiB
  direct-mapped LL). :func:`host_geometry` reads ``/sys/devices/system/cpu/cpu0/cache/index*/`` (or
  ``lscpu -J -C -B``) and :func:`fit_valgrind` adapts each level to valgrind's rules (the set count
  and the line size must be powers of two, line >= 16 bytes): when the set count is not a power of
  two it picks the nearest associativity that keeps the size, else it rounds the size down; the
  record stores both the host geometry and what was simulated, with the adjustment spelled out.
- **A kernel path valgrind executes.** Valgrind has no AVX-512: the native engine is pinned to its
  AVX2 kernels (``SLIDE_KERNEL=avx2``).
- **Only the training slice is counted.** Importing TensorFlow under a full simulation takes
  minutes (measured: 3 min 40 s for ``import tensorflow`` under cachegrind on this machine), so
  the slice runs under callgrind with instrumentation off at start (``--instr-atstart=no``: a
  few-fold slowdown instead of ~50x) and the worker's own :class:`harness.counters.perf.TrainingRegion`
  switches instrumentation on and off around the training loop through valgrind's gdbserver
  (``vgdb --pid=<self> instrumentation on|off``). The slice is the worker itself
  (``python -m harness.run.worker SPEC OUT``) on a copy of the run's spec that trains exactly
  ``WARMUP_STEPS + cachegrind_steps`` steps (also capped with ``SLIDEBENCH_MAX_STEPS``), with no
  target, evaluating (uninstrumented, on a small subset) every ``WARMUP_STEPS`` steps: the region
  skips its first ``enable`` (``SLIDEBENCH_VALGRIND_SKIP_ENABLES=1``), so the warm-up steps — where
  TF traces its graph, which instrumented takes minutes — run uninstrumented, and counting starts
  after the first evaluation. Measured here: tf_dense on the smoke workload, 3 counted steps, 183 s
  in all (~100 s of it importing TensorFlow uninstrumented); numpy_dense/slide: under 30 s.
  Simulated caches start cold at the first counted step; valgrind runs the program's threads one
  at a time against one simulated cache hierarchy.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness import REPO_ROOT

log = logging.getLogger("slidebench.cachegrind")

SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
#: Worker environment that makes harness.counters.perf.TrainingRegion drive valgrind instead of perf.
VALGRIND_CONTROL_ENV = "SLIDEBENCH_VALGRIND_CONTROL"  # same value as harness.counters.perf.VALGRIND_CONTROL_ENV
INSTALL_HINT = "install valgrind (Debian: apt-get install valgrind)"
#: Worker environment: how many `enable()` calls the region lets pass before instrumenting (warm-up).
VALGRIND_SKIP_ENV = "SLIDEBENCH_VALGRIND_SKIP_ENABLES"
SLICE_TIMEOUT_S = 1800.0
#: Untimed, uninstrumented steps before the slice: TF traces its graph and the SLIDE engine builds
#: its tables on the first step; simulating that would take minutes and describe no training step.
WARMUP_STEPS = 2
#: The evaluation that separates warm-up from slice runs uninstrumented; a small subset keeps it short
#: (at Amazon-670K width, exact scoring of 64 rows took 355 s under valgrind; 8 rows take an eighth).
WARMUP_EVAL_SUBSET = 8
MIN_LINE = 16


# --------------------------------------------------------------------------------------------
# Cache geometry


@dataclass(frozen=True)
class CacheLevel:
    """One cache: total size in bytes, associativity (ways), line size in bytes."""

    size: int
    assoc: int
    line: int

    @property
    def sets(self) -> float:
        return self.size / (self.assoc * self.line)

    def arg(self) -> str:
        """valgrind's ``size,assoc,line`` form."""
        return f"{self.size},{self.assoc},{self.line}"


@dataclass(frozen=True)
class CacheGeometry:
    """The three caches valgrind simulates: first-level instruction and data, and the last level."""

    I1: CacheLevel
    D1: CacheLevel
    LL: CacheLevel
    source: str = ""  # where the numbers came from
    notes: tuple[str, ...] = ()  # adjustments made for valgrind

    def valgrind_args(self) -> list[str]:
        return [f"--I1={self.I1.arg()}", f"--D1={self.D1.arg()}", f"--LL={self.LL.arg()}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "I1": asdict(self.I1),
            "D1": asdict(self.D1),
            "LL": asdict(self.LL),
            "source": self.source,
            "notes": list(self.notes),
        }


def _size_bytes(text: str) -> int:
    """sysfs sizes: ``32K``, ``1024K``, ``32M`` or plain bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"cache size {text!r} is not a number with an optional K/M/G suffix")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2).upper()]


def _choose(
    levels: list[tuple[int, str, CacheLevel]], where: str
) -> tuple[CacheLevel, CacheLevel, CacheLevel]:
    """(level, type, cache) entries -> (I1, D1, LL). LL is the highest level holding data."""
    i1 = next((c for lvl, t, c in levels if lvl == 1 and t in ("instruction", "unified")), None)
    d1 = next((c for lvl, t, c in levels if lvl == 1 and t in ("data", "unified")), None)
    data_levels = sorted((lvl, c.size, c) for lvl, t, c in levels if t in ("data", "unified"))
    if i1 is None or d1 is None or not data_levels:
        raise ValueError(f"{where}: no L1 instruction/data cache or last-level cache described")
    ll = data_levels[-1][2]
    return i1, d1, ll


def read_sysfs(root: Path = SYSFS_CACHE) -> CacheGeometry:
    """The host's caches from Linux sysfs (``index*/level,type,size,ways_of_associativity,...``)."""
    levels: list[tuple[int, str, CacheLevel]] = []
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip().lower()
            size = _size_bytes((index / "size").read_text())
            line = int((index / "coherency_line_size").read_text())
            ways = int((index / "ways_of_associativity").read_text())
            if ways <= 0:  # 0: fully associative or unknown; derive from the set count
                sets = int((index / "number_of_sets").read_text())
                ways = max(1, size // (line * max(sets, 1)))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{index}: unreadable cache description ({exc})") from None
        levels.append((level, kind, CacheLevel(size, ways, line)))
    if not levels:
        raise ValueError(f"{root}: no cache index* entries")
    i1, d1, ll = _choose(levels, str(root))
    return CacheGeometry(i1, d1, ll, source=str(root))


def parse_lscpu_json(text: str) -> CacheGeometry:
    """The host's caches from ``lscpu -J -C -B`` output."""
    try:
        caches = json.loads(text)["caches"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"lscpu -J -C -B: unexpected output ({exc})") from None
    levels = []
    for c in caches:
        try:
            size = int(c["one-size"])
            line = int(c["coherency-size"])
            ways = int(c["ways"] or 0) or max(1, size // (line * int(c["sets"])))
            levels.append((int(c["level"]), str(c["type"]).lower(), CacheLevel(size, ways, line)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"lscpu -J -C -B: cache entry {c!r} incomplete ({exc})") from None
    i1, d1, ll = _choose(levels, "lscpu -J -C -B")
    return CacheGeometry(i1, d1, ll, source="lscpu -J -C -B")


@functools.cache
def host_geometry() -> CacheGeometry:
    """The host's real cache geometry (sysfs, else lscpu); ValueError when neither describes it."""
    try:
        return read_sysfs()
    except ValueError as sysfs_error:
        try:
            res = subprocess.run(
                ["lscpu", "-J", "-C", "-B"], check=False, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"cache geometry unknown: {sysfs_error}; lscpu failed: {exc}") from None
        if res.returncode != 0:
            raise ValueError(f"cache geometry unknown: {sysfs_error}; lscpu: {res.stderr.strip()}") from None
        return parse_lscpu_json(res.stdout)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fit_level(name: str, c: CacheLevel) -> tuple[CacheLevel, str | None]:
    """`c` adapted to valgrind's rules, and a note saying what changed (None if nothing did)."""
    if not _is_pow2(c.line) or c.line < MIN_LINE:
        raise ValueError(
            f"{name}: line size {c.line} B cannot be simulated (valgrind needs a power of two >= {MIN_LINE})"
        )
    if c.size <= c.line or c.assoc < 1:
        raise ValueError(f"{name}: size {c.size} B / {c.assoc} ways cannot be simulated")
    lines = c.size // c.line
    if c.size % c.line == 0 and c.size % (c.assoc * c.line) == 0 and _is_pow2(lines // c.assoc):
        return c, None
    # Keep the size if some associativity gives a power-of-two set count: the nearest (ties: more ways).
    if c.size % c.line == 0:
        options = [a for a in range(1, lines + 1) if lines % a == 0 and _is_pow2(lines // a)]
        if options:
            assoc = min(options, key=lambda a: (abs(a - c.assoc), -a))
            if abs(assoc - c.assoc) <= c.assoc // 2:
                new = CacheLevel(c.size, assoc, c.line)
                return (
                    new,
                    f"{name}: {c.assoc}-way gives {c.sets:g} sets (not a power of two); simulated {assoc}-way, same size",
                )
    sets = 1 << math.floor(math.log2(max(c.sets, 1)))
    new = CacheLevel(sets * c.assoc * c.line, c.assoc, c.line)
    return (
        new,
        f"{name}: {c.sets:g} sets is not a power of two; simulated {sets} sets ({new.size} B instead of {c.size} B)",
    )


def fit_valgrind(geo: CacheGeometry) -> CacheGeometry:
    """`geo` with every level valgrind can simulate, the changes listed in `notes`."""
    fitted = {}
    notes = list(geo.notes)
    for name in ("I1", "D1", "LL"):
        level, note = fit_level(name, getattr(geo, name))
        fitted[name] = level
        if note:
            notes.append(note)
    return replace(geo, **fitted, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# valgrind output


@dataclass(frozen=True)
class ValgrindCounts:
    """Totals of a cachegrind.out / callgrind.out file."""

    events: dict[str, int]
    desc: dict[str, str]
    cmd: str


def parse_output(text: str, where: str = "valgrind output") -> ValgrindCounts:
    """Totals from a cachegrind or callgrind output file.

    Uses ``totals:`` (callgrind: the costs collected) when present, else ``summary:`` (cachegrind),
    paired with the ``events:`` line. ValueError naming the line when they do not match.
    """
    events: list[str] | None = None
    totals: list[str] | None = None
    summary: list[str] | None = None
    desc: dict[str, str] = {}
    cmd = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
        elif line.startswith("totals:"):
            totals = line.split(":", 1)[1].split()
            totals_line = lineno
        elif line.startswith("summary:"):
            summary = line.split(":", 1)[1].split()
            summary_line = lineno
        elif line.startswith("desc:"):
            key, _, value = line.split(":", 1)[1].partition(":")
            desc[key.strip()] = value.strip()
        elif line.startswith("cmd:"):
            cmd = line.split(":", 1)[1].strip()
    if events is None:
        raise ValueError(f"{where}: no 'events:' line")
    values, lineno = (
        (totals, totals_line) if totals is not None else (summary, summary_line if summary else 0)
    )
    if values is None:
        raise ValueError(f"{where}: no 'summary:' or 'totals:' line")
    if len(values) > len(events):
        raise ValueError(f"{where} line {lineno}: {len(values)} totals for {len(events)} events")
    try:
        counts = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"{where} line {lineno}: totals are not integers: {' '.join(values)}") from None
    # Trailing zero totals may be omitted.
    counts += [0] * (len(events) - len(counts))
    return ValgrindCounts(dict(zip(events, counts, strict=True)), desc, cmd)


def derived(events: Mapping[str, int]) -> dict[str, int]:
    """The raw events plus ``D1_misses`` (reads + writes) and ``LL_misses`` (instruction + data)."""
    out = dict(events)
    if {"D1mr", "D1mw"} <= events.keys():
        out["D1_misses"] = events["D1mr"] + events["D1mw"]
    if {"ILmr", "DLmr", "DLmw"} <= events.keys():
        out["LL_misses"] = events["ILmr"] + events["DLmr"] + events["DLmw"]
    return out


# --------------------------------------------------------------------------------------------
# Running the slice


@functools.cache
def valgrind_version() -> str | None:
    exe = shutil.which("valgrind")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--version"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def slice_command(
    worker_argv: Sequence[str], workdir: Path, geo: CacheGeometry, steps: int, warmup: int
) -> tuple[list[str], Path, Path]:
    """valgrind argv for the slice, plus the callgrind output and slice record paths.

    `worker_argv` ends with ``SPEC.json OUT.json``; the slice gets its own copy of the spec with its
    event log in `workdir` and writes its record to `workdir`, so the real run's files are untouched.
    The copy trains exactly ``warmup + steps`` steps with no target and, when there is a warm-up,
    evaluates every ``warmup`` steps on a small subset: the worker's region is disabled around that
    first evaluation and enabled after it, which is where instrumentation starts (the region skips
    the first enable); later evaluations are excluded by the region as always.
    """
    if len(worker_argv) < 3:
        raise ValueError(f"worker command {list(worker_argv)!r} does not end with SPEC.json OUT.json")
    spec_path = Path(worker_argv[-2])
    try:
        doc = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the run spec {spec_path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{spec_path}: a run spec must be a JSON object")  # noqa: TRY004 - bad input, not a bug
    if "spec" not in doc:
        doc = {"spec": doc}
    doc["events"] = str(workdir / "cachegrind-slice.events.jsonl")
    spec = doc["spec"] if isinstance(doc["spec"], dict) else {}
    training = spec.setdefault("training", {})
    training.update(max_steps=warmup + steps, max_epochs=None, max_seconds=None)
    if warmup > 0:
        evaluation = spec.setdefault("evaluation", {})
        subset = evaluation.get("subset") or WARMUP_EVAL_SUBSET
        evaluation.update(every_steps=warmup, every_seconds=None, growth=None, target_p1=None)
        evaluation["subset"] = min(int(subset), WARMUP_EVAL_SUBSET)
    slice_spec = workdir / "cachegrind-slice.spec.json"
    slice_spec.write_text(json.dumps(doc), encoding="utf-8")
    record = workdir / "cachegrind-slice.json"
    out = workdir / "callgrind.out"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # uninstrumented (fast) until the worker's TrainingRegion turns it on
        "--cache-sim=yes",
        *geo.valgrind_args(),
        "--vgdb=yes",
        f"--callgrind-out-file={out}",
        f"--log-file={workdir / 'valgrind.log'}",
        "--",
        *worker_argv[:-2],
        str(slice_spec),
        str(record),
    ]
    return argv, out, record


def run_slice(
    worker_argv: Sequence[str], workdir: Path, steps: int, *, timeout_s: float = SLICE_TIMEOUT_S
) -> dict[str, Any]:
    """Run `steps` training steps of the worker under valgrind's cache simulator.

    Returns the ``counters.cachegrind`` section: ``{tool, valgrind, method, steps, samples, geometry,
    host_geometry, env, events, per_sample, seconds, error}``; ``error`` is a message (the rest
    partly None) when the slice could not be simulated. Never raises for a failed slice.
    The `steps` follow :data:`WARMUP_STEPS` uninstrumented warm-up steps.
    """
    warmup = WARMUP_STEPS
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    section: dict[str, Any] = {
        "tool": "callgrind --cache-sim=yes",
        "valgrind": valgrind_version(),
        "method": f"{steps} training steps after {WARMUP_STEPS} uninstrumented warm-up steps, under callgrind with "
        "instrumentation switched by the worker's training region (vgdb); simulated caches cold at the first "
        "counted step; evaluations excluded",
        "warmup_steps": WARMUP_STEPS,
        "steps": steps,
        "samples": None,
        "geometry": None,
        "host_geometry": None,
        "env": None,
        "events": {},
        "per_sample": {},
        "seconds": None,
        "error": None,
    }
    if steps < 1:
        section["error"] = f"cachegrind_steps must be >= 1, got {steps}"
        return section
    if section["valgrind"] is None or shutil.which("vgdb") is None:
        section["error"] = f"valgrind (with vgdb) not found; {INSTALL_HINT}"
        return section
    try:
        host = host_geometry()
        geo = fit_valgrind(host)
        argv, out, record = slice_command(worker_argv, workdir, geo, steps, warmup)
    except ValueError as exc:
        section["error"] = str(exc)
        return section
    section["host_geometry"] = host.to_dict()
    section["geometry"] = geo.to_dict()
    env_add = {
        "SLIDEBENCH_MAX_STEPS": str(warmup + steps),
        "SLIDE_KERNEL": "avx2",  # valgrind cannot execute AVX-512
        VALGRIND_CONTROL_ENV: "1",
        VALGRIND_SKIP_ENV: "1" if warmup > 0 else "0",
        "PYTHONHASHSEED": "0",
    }
    if warmup == 0:
        env_add["SLIDEBENCH_NO_EVAL"] = "1"
    section["env"] = env_add
    env = {k: v for k, v in os.environ.items() if k != "SLIDEBENCH_PERF_CONTROL"}
    env.update(env_add)
    # The worker is started as `python -m harness.run.worker`: the repository must be importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for stale in (out, record):
        stale.unlink(missing_ok=True)
    log.info("cachegrind slice: %d steps under valgrind (this takes a while)", steps)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            argv, env=env, cwd=REPO_ROOT, check=False, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        section["error"] = f"slice did not finish within {timeout_s:g} s"
        return section
    except OSError as exc:
        section["error"] = f"valgrind failed to start: {exc}"
        return section
    section["seconds"] = time.perf_counter() - t0
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or [""])[-1]
        section["error"] = (
            f"slice exited with status {res.returncode}: {tail} (see {workdir / 'valgrind.log'})"
        )
        return section
    try:
        slice_record = json.loads(record.read_text(encoding="utf-8"))
        counts = parse_output(out.read_text(encoding="utf-8"), str(out))
    except (OSError, ValueError) as exc:
        section["error"] = f"slice output unreadable: {exc}"
        return section
    state = slice_record.get("status", {}).get("state")
    if state == "error":
        section["error"] = f"slice run failed: {slice_record['status'].get('message')}"
        return section
    if not any(counts.events.values()):
        section["error"] = "nothing was counted: the worker never switched instrumentation on"
        return section
    timing = slice_record.get("timing") or {}
    total_steps, total_samples = int(timing.get("steps") or 0), int(timing.get("samples") or 0)
    # Samples of the warm-up: the curve point of the evaluation that ended it.
    warm = next((p for p in slice_record.get("curve") or [] if p.get("step") == warmup), None)
    if warmup > 0 and warm is None:
        section["error"] = f"slice record has no evaluation at the end of the {warmup} warm-up steps"
        return section
    samples = total_samples - (int(warm["samples"]) if warm else 0)
    section["steps"] = total_steps - warmup
    section["samples"] = samples
    section["events"] = derived(counts.events)
    section["per_sample"] = {k: (v / samples if samples else None) for k, v in section["events"].items()}
    return section


# --------------------------------------------------------------------------------------------
# Worker side: switch instrumentation through valgrind's gdbserver


class ValgrindRegion:
    """`TrainingRegion` under callgrind: ``vgdb --pid=<self> instrumentation on|off``.

    While vgdb runs, this process keeps executing guest code (a short busy loop) so valgrind's
    gdbserver polls for it on its own; vgdb would otherwise need ptrace rights over its parent.
    """

    def __init__(self, timeout_s: float = 120.0, skip_enables: int = 0) -> None:
        self.enabled = False
        self.instrumented = False
        self._skip = skip_enables
        self.toggles = 0
        self.failed: str | None = None
        self._timeout = timeout_s
        self._vgdb = shutil.which("vgdb")
        if self._vgdb is None:
            self.failed = "vgdb not found"

    @property
    def active(self) -> bool:
        return self.failed is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ValgrindRegion:
        raw = environ.get(VALGRIND_SKIP_ENV, "0") or "0"
        try:
            skip = max(0, int(raw))
        except ValueError:
            log.warning("%s=%r is not an integer: no warm-up skipped", VALGRIND_SKIP_ENV, raw)
            skip = 0
        return cls(skip_enables=skip)

    def enable(self) -> None:
        if not self.active or self.enabled:
            return
        self.enabled = True
        if self._skip > 0:  # warm-up: the region is on, instrumentation stays off
            self._skip -= 1
            return
        self._monitor("instrumentation on")
        self.instrumented = self.failed is None

    def disable(self) -> None:
        if not self.active or not self.enabled:
            return
        self.enabled = False
        if self.instrumented:
            self._monitor("instrumentation off")
            self.instrumented = False

    def _monitor(self, command: str) -> None:
        assert self._vgdb is not None
        try:
            proc = subprocess.Popen(
                [self._vgdb, f"--pid={os.getpid()}", *command.split()],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.failed = f"vgdb failed to start: {exc}"
            log.warning("%s", self.failed)
            return
        deadline = time.monotonic() + self._timeout
        spins = 0
        while proc.poll() is None:  # busy on purpose: see the class docstring
            spins += 1
            if spins % 4096 == 0 and time.monotonic() > deadline:
                proc.kill()
                self.failed = f"vgdb '{command}' got no answer within {self._timeout:g} s"
                log.warning("%s", self.failed)
                return
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if proc.returncode != 0:
            self.failed = f"vgdb '{command}' failed ({proc.returncode}): {output.strip()}"
            log.warning("%s", self.failed)
            return
        self.toggles += 1


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.counters.cachegrind``: print the host geometry and what valgrind would simulate."""
    logging.basicConfig(level=logging.INFO)
    geo = host_geometry()
    print(
        json.dumps(
            {
                "host": geo.to_dict(),
                "simulated": fit_valgrind(geo).to_dict(),
                "args": fit_valgrind(geo).valgrind_args(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
