"""Campaigns: expand a workload into runs, skip the ones already recorded, run the rest one at a time.

Each run is one fresh worker process (`harness.run.worker`), launched with its thread settings in the
environment and wrapped by `harness.counters.perf.wrap_command` (perf over the training region, or nothing).
The worker writes a *draft* record into a scratch folder (``<results>/work/<run_id>/``, outside
``runs/`` so that readers never see it). The runner then counts: what perf counted
(`wrapped.collect(samples)`), and, where `harness.counters.counter_source` says perf cannot see cache
behaviour, a short slice of the run replayed under valgrind (`_count`). It merges the counters
into the record and writes the final record atomically to
``<results>/runs/<workload>/<engine>/<run_id>.json``. So a record exists only for a finished run,
and everything in it — counters included — was written once.

Failure handling:
- the worker dies (crash, kill, out of memory) or exceeds the run timeout: the runner writes an
  `error` record saying how it died (exit status or signal, last lines of its stderr) with the
  accuracy curve recovered from its event log, and the campaign goes on. Such runs are skipped on
  the next campaign like any other recorded run; ``--retry-errors`` runs them again.
- Ctrl-C (or SIGTERM to the runner): the current worker is stopped, its scratch folder removed, no
  record written; finished runs stay, and rerunning the same command resumes where it stopped.
- the whole campaign killed (kill -9, power loss): at most a scratch folder is left behind (it is
  cleared when that run starts again); records are all-or-nothing. The worker dies with the
  campaign (see run_one), and one found still running its run when that run starts again is killed
  first, so two attempts at one run never overlap.

Each worker runs in a session of its own, with its wrapper: a timeout, Ctrl-C or error ends that
whole process group, never just the wrapper. One campaign at a time per results folder
(results.locked).

`--force` reruns recorded runs; the old record is kept beside the new one as
``<run_id>.json.replaced-<utc>`` (not a ``*.json`` file, so readers ignore it): records are never
rewritten in place.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from harness import REPO_ROOT
from harness.counters import counter_source, perf
from harness.run.worker import PARENT_FD_ENV, parent_death_signal, thread_env
from harness.spec.workload import RunSpec, Workload, build_id
from harness.store import records, results
from harness.store.results import inside, safe_name

log = logging.getLogger("slidebench.runner")

STDERR_TAIL_LINES = 30
# Run in each worker's direct child (the worker, or `perf stat` wrapping it) between fork and exec:
# that process is then killed by the kernel when this one dies, even by kill -9.
_DIE_WITH_US = parent_death_signal()


@dataclass(frozen=True)
class Outcome:
    """What happened to one run of a campaign."""

    spec: RunSpec
    run_id: str
    path: Path
    state: str  # a record state, or "skipped"
    message: str
    wall_s: float = 0.0


# --------------------------------------------------------------------------------------------
# Counter wrapping (harness.counters.perf is optional: without it the record says counters are unavailable)


class _Unwrapped:
    support = None  # no perf: harness.counters.counter_source treats it as "counts no hardware events"

    def __init__(self, argv: list[str], reason: str) -> None:
        self.argv = argv
        self.pass_fds: tuple[int, ...] = ()
        self.env: dict[str, str] = {}
        self._reason = reason

    def collect(self, samples: int) -> dict[str, Any]:
        return dict(records.unavailable_counters(self._reason))


# --------------------------------------------------------------------------------------------
# Progress display


class Progress:
    """A one-line progress display on a TTY; plain log lines otherwise.

    Per run: the step, accuracy and an ETA extrapolated from the budget fraction spent. For the
    campaign (when given the planned `specs`): runs done/total and an estimate of the time left,
    the current run's ETA plus each remaining run's training budget: max_seconds where set, and
    steps (or epochs) times the train seconds per step measured so far for that engine, workload
    and thread count. It covers the train clock only (set-up and evaluation come on top) and
    assumes every run spends its budget (one that reaches its target ends sooner), hence the "~";
    runs with nothing measured yet to go on are counted, not guessed.
    """

    def __init__(self, total: int, stream: Any = None, specs: Sequence[RunSpec] | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0
        self.specs = list(specs) if specs is not None else None
        self.index = 0
        self._step_s: dict[tuple[str, str, int], float] = {}  # train seconds per step
        self._steps_per_epoch: dict[tuple[str, int], float] = {}  # by workload and batch size
        self._run_eta: float | None = None

    def run_started(self, index: int, spec: RunSpec) -> None:
        self.index, self.spec, self.t0 = index, spec, time.monotonic()
        self.train_t0: float | None = None  # ETA extrapolates from training time only, not set-up
        self._run_eta = None
        campaign = self.campaign_eta()
        self._line(
            f"[{index}/{self.total}] {self._name(spec)}: starting" + (f" | {campaign}" if campaign else ""),
            log_too=True,
        )

    def event(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("event")
        if kind == records.EVAL_ACCURACY:
            self._measure(ev)
            eta = self._eta(ev)
            self._run_eta = eta
            campaign = self.campaign_eta()
            msg = (
                f"[{self.index}/{self.total}] {self._name(self.spec)}: step {ev.get('step')} "
                f"epoch {_num(ev.get('epoch')):.2f} P@1 {_num(ev.get('p1')):.4f} "
                f"train {_num(ev.get('train_s')):.1f}s"
                + (f" ETA {eta:.0f}s" if eta is not None else "")
                + (f" | {campaign}" if campaign else "")
            )
            self._line(msg, log_too=not self.tty)
        elif kind == "train_start":
            self.train_t0 = time.monotonic()
        if kind in ("data_loaded", "init_stop") and not self.tty:
            log.info("%s: %s %.1fs", self._name(self.spec), kind, ev.get("seconds", 0.0))

    def run_finished(self, outcome: Outcome) -> None:
        self._clear()
        log.info(
            "[%d/%d] %s: %s (%s) in %.0fs",
            self.index, self.total, self._name(outcome.spec), outcome.state, outcome.message, outcome.wall_s,
        )  # fmt: skip

    def _eta(self, ev: Mapping[str, Any]) -> float | None:
        tr = self.spec.training
        fractions = []
        if tr.max_steps:
            fractions.append(_num(ev.get("step")) / tr.max_steps)
        if tr.max_seconds:
            fractions.append(_num(ev.get("train_s")) / tr.max_seconds)
        if tr.max_epochs:
            fractions.append(_num(ev.get("epoch")) / tr.max_epochs)
        done = max((f for f in fractions if not math.isnan(f)), default=0.0)
        if done <= 0:
            return None
        elapsed = time.monotonic() - (self.train_t0 if self.train_t0 is not None else self.t0)
        return elapsed * (1 - min(done, 1.0)) / done

    def _measure(self, ev: Mapping[str, Any]) -> None:
        step, epoch, train_s = _num(ev.get("step")), _num(ev.get("epoch")), _num(ev.get("train_s"))
        if step > 0 and train_s > 0:
            self._step_s[(self.spec.workload, self.spec.engine, self.spec.threads)] = train_s / step
        if step > 0 and epoch > 0:
            self._steps_per_epoch[(self.spec.workload, self.spec.training.batch_size)] = step / epoch

    def budget_s(self, spec: RunSpec) -> float | None:
        """Train-clock seconds `spec` would take to spend its budget, as far as is known now."""
        tr = spec.training
        rate = self._step_s.get((spec.workload, spec.engine, spec.threads))
        per_epoch = self._steps_per_epoch.get((spec.workload, tr.batch_size))
        estimates = []
        if tr.max_seconds:
            estimates.append(float(tr.max_seconds))
        if rate is not None and tr.max_steps:
            estimates.append(tr.max_steps * rate)
        if rate is not None and per_epoch is not None and tr.max_epochs:
            estimates.append(tr.max_epochs * per_epoch * rate)
        return min(estimates) if estimates else None  # the first budget spent ends the run

    def campaign_eta(self) -> str | None:
        """'campaign D/T done, ~Ns left (train clock)' (see the class docstring); None without specs."""
        if self.specs is None:
            return None
        done = max(self.index - 1, 0)
        text = f"campaign {done}/{self.total} done"
        left, unknown = 0.0, 0
        current = self._run_eta
        if self.index >= 1 and current is None:
            budget = self.budget_s(self.spec)
            if budget is not None:
                current = max(budget - (time.monotonic() - self.t0), 0.0)
        if self.index >= 1:
            if current is None:
                unknown += 1
            else:
                left += current
        for spec in self.specs[self.index :]:
            budget = self.budget_s(spec)
            if budget is None:
                unknown += 1
            else:
                left += budget
        if unknown == self.total - done:
            return text  # nothing known yet: no number rather than a made-up one
        text += f", ~{left:.0f}s left (train clock)"
        if unknown:
            text += f" + {unknown} run(s) not estimated yet"
        return text

    @staticmethod
    def _name(spec: RunSpec) -> str:
        device = spec.engine_params.get("device")  # the TF engines' device, when a workload sets one
        where = f" device={device}" if device not in (None, "auto") else ""
        return f"{spec.workload} {spec.engine}{where} threads={spec.threads} seed={spec.seed}"

    def _line(self, msg: str, log_too: bool = False) -> None:
        if self.tty:
            pad = max(0, self._width - len(msg))
            self.stream.write("\r" + msg + " " * pad)
            self.stream.flush()
            self._width = len(msg)
        elif log_too:
            log.info("%s", msg)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class Executor(Protocol):
    """Where a campaign's runs execute (implementations: harness.run.executors); yields each run's
    Outcome once its record is stored. Declared here, by the one who calls it, so that the
    executors depend on the runner and not the other way round."""

    name: str

    def run(
        self,
        todo: Sequence[RunSpec],
        results_dir: Path,
        *,
        data_dir: Path | None,
        timeout_s: float | None,
        progress: Progress,
    ) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def _num(value: Any) -> float:
    """A number from an event for display (NaN stored as null in the log reads as nan)."""
    return float(value) if isinstance(value, (int, float)) else float("nan")


class _EventTail:
    """Reads the new complete lines of a JSON-lines file each time it is polled."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


# --------------------------------------------------------------------------------------------
# One run


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def failure_record(
    spec: RunSpec, run_id: str, message: str, events_file: Path, counters: Mapping[str, Any]
) -> dict:
    """An `error` record for a worker that died without writing one; the curve comes from its events."""
    from harness.run import env

    curve = [records.curve_point(ev) for ev in _EventTail(events_file).poll() if ev.get("event") == records.EVAL_ACCURACY]
    last = curve[-1] if curve else {}
    return dict(
        records.build(
            records.TRAIN,
            run_id,
            spec.to_dict(),
            records.ERROR,
            message,
            build_id=build_id(spec.engine_class_name),
            timing={
                "train_s": last.get("train_s"),
                "steps": last.get("step"),
                "samples": last.get("samples"),
                "epochs": last.get("epoch"),
            },
            curve=curve,
            counters=counters,
            environment=env.capture(None),
        )
    )


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with status {rc} without writing a record"


def _stderr_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(collections.deque(lines, maxlen=STDERR_TAIL_LINES))


def run_one(
    spec: RunSpec,
    results_dir: Path,
    data_dir: Path | None = None,
    progress: Progress | None = None,
    timeout_s: float | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run `spec` in a fresh worker process and store its record; KeyboardInterrupt if interrupted."""
    t0 = time.monotonic()
    run_id = spec.run_id
    final = results.record_path(results_dir, spec.workload, spec.engine, run_id)
    events_file = results.events_path(final)
    workdir = inside(Path(results_dir).resolve() / "work" / safe_name(run_id, "run id"), results_dir)
    spec_file = workdir / "spec.json"
    _end_orphans(run_id, spec_file)
    shutil.rmtree(workdir, ignore_errors=True)  # left over by a killed campaign
    workdir.mkdir(parents=True)
    events_file.parent.mkdir(parents=True, exist_ok=True)
    events_file.unlink(missing_ok=True)  # the log of an attempt that left no record
    draft = workdir / f"{run_id}{results.DRAFT_SUFFIX}"
    doc = {
        "spec": spec.to_dict(),
        "run_id": run_id,
        "build_id": build_id(spec.engine_class_name),
        "data_dir": str(data_dir) if data_dir else None,
        "events": str(events_file),
    }
    spec_file.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")

    argv = [sys.executable, "-m", "harness.run.worker", str(spec_file), str(draft)]
    wrapped = perf.wrap_command(argv, _plain_counters(spec), workdir)
    env = dict(os.environ)
    env.update(thread_env(spec.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    env.update(wrapped.env)
    stderr_file = workdir / "worker.stderr"
    tail = _EventTail(events_file)
    # The worker watches the read end; this process holds the write end until it exits (see
    # harness.run.worker.watch_campaign), so the worker learns of our death however we die.
    alive_r, alive_w = os.pipe()
    env[PARENT_FD_ENV] = str(alive_r)
    timed_out = False
    try:
        with open(stderr_file, "wb") as err:
            # Its own session: the worker and its wrapper form one process group that can be ended
            # as a whole (killing only `perf stat` would leave the worker running), and a Ctrl-C on
            # the terminal reaches this process only, which then stops the group in order.
            proc = subprocess.Popen(
                wrapped.argv, cwd=REPO_ROOT, env=env, pass_fds=(*wrapped.pass_fds, alive_r),
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                # preexec_fn only makes one prctl call (libc loaded beforehand), nothing that could
                # deadlock on a lock another thread held at fork time.
                start_new_session=True, preexec_fn=_DIE_WITH_US,  # noqa: PLW1509
            )  # fmt: skip
            os.close(alive_r)
            alive_r = -1
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if progress is not None:
                        for ev in tail.poll():
                            progress.event(ev)
                    if timeout_s is not None and time.monotonic() - t0 > timeout_s and not timed_out:
                        timed_out = True
                        _signal_group(proc.pid, signal.SIGKILL)
            except BaseException:
                # Ctrl-C or SIGTERM reached us (not the worker, which is in its own session): stop
                # the worker's group, keep nothing.
                _stop(proc)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            finally:
                # Whatever is left of the group once its leader is gone (a worker whose wrapper
                # died first) goes too. The group id cannot be reused while any member lives.
                _signal_group(proc.pid, signal.SIGKILL)
    finally:
        for fd in (alive_r, alive_w):
            if fd >= 0:
                os.close(fd)
    if rc in (130, -signal.SIGINT, -signal.SIGTERM) and not draft.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        raise KeyboardInterrupt(f"worker of {run_id} was interrupted")

    if draft.exists():
        # The draft is written atomically as the worker's last act: if it exists it is complete,
        # even when a wrapper (perf) reports a non-zero status afterwards.
        record = dict(records.read(draft))
        samples = int((record.get("timing") or {}).get("samples") or 0)
        try:
            record["counters"] = _count(wrapped, argv, workdir, spec, samples)
        except Exception as exc:
            log.exception("counter collection failed")
            record["counters"] = _Unwrapped(
                [], f"counter collection failed: {type(exc).__name__}: {exc}"
            ).collect(0)
        if rc != 0:
            record["status"]["message"] += f" (wrapper exited with status {rc})"
        state, message = record["status"]["state"], record["status"]["message"]
        summary = message
    else:
        message = f"timed out after {timeout_s:g} s (worker killed)" if timed_out else _describe_exit(rc)
        summary = message  # the record keeps the output tail; the outcome is one line
        stderr = _stderr_tail(stderr_file)
        if stderr:
            message += f"; last lines of its output:\n{stderr}"
        try:
            counters = wrapped.collect(0)
        except Exception as exc:  # noqa: BLE001 - counters of a dead run are a nicety
            counters = _Unwrapped([], f"counter collection failed: {exc}").collect(0)
        record = failure_record(spec, run_id, message, events_file, counters)
        state = records.ERROR
        results.EventLog(events_file).emit(records.RUN_STOP, state=records.ERROR, message=message)
    if final.exists():
        final.rename(final.with_name(f"{final.name}.replaced-{_utc_stamp()}"))
    records.write(final, record)
    shutil.rmtree(workdir, ignore_errors=True)
    return Outcome(
        spec, run_id, final, state, summary.splitlines()[0] if summary else "", time.monotonic() - t0
    )


def _count(wrapped: Any, argv: list[str], workdir: Path, spec: RunSpec, samples: int) -> dict[str, Any]:
    """The record's counters: perf's reading, then, where perf cannot see caches, the cachegrind slice.

    The slice is a step of its own (it replays the worker under valgrind, minutes to half an
    hour), taken after the run so that it never disturbs the run's own clock.
    """
    perf_section = wrapped.collect(samples)
    cfg = _plain_counters(spec)
    slice_result = None
    if counter_source.needs_slice(cfg, wrapped.support, samples):
        slice_result = counter_source.cachegrind_slice(argv, workdir, cfg)
    return counter_source.combine(perf_section, slice_result)


def _plain_counters(spec: RunSpec) -> dict[str, Any]:
    return spec.to_dict()["counters"]


def _signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to the process group of a worker (its own session, see run_one); gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker's group: SIGTERM (the worker exits without a record), SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _owners(spec_file: Path) -> list[Any]:
    """Live processes (a worker and its wrapper) whose command line names `spec_file`."""
    try:
        import psutil
    except ImportError:  # a dependency; without it no orphan can be found, which the log says
        log.warning("psutil is not installed: cannot check for a worker left by an earlier campaign")
        return []
    target = str(spec_file)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and target in (p.info.get("cmdline") or ()):
            found.append(p)
    return found


def _end_orphans(run_id: str, spec_file: Path) -> None:
    """End any worker of this run still alive from an earlier campaign (killed with -9, say).

    The results folder's lock says no other campaign is running on it, so such a process is an
    orphan: left alone it would train beside the new attempt and write into the same event log.
    """
    orphans = _owners(spec_file)
    if not orphans:
        return
    log.warning(
        "run %s: a worker from an earlier campaign is still running it (pid %s); killing it before "
        "starting the run again",
        run_id,
        ", ".join(str(p.pid) for p in orphans),
    )
    import psutil

    for p in orphans:
        try:
            p.kill()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(orphans, timeout=10)
    if alive:
        raise results.ResultsBusy(
            f"run {run_id}: could not end the earlier worker (pid {', '.join(str(p.pid) for p in alive)}); "
            "stop it by hand and run again"
        )


# --------------------------------------------------------------------------------------------
# Campaigns


def plan(
    workload: Workload,
    results_dir: Path,
    engines: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    force: bool = False,
    retry_errors: bool = False,
) -> tuple[list[RunSpec], list[Outcome]]:
    """(runs to do, runs skipped because their record exists) — validates everything first."""
    todo, skipped = [], []
    for spec in workload.expand(engines, threads, seeds):
        path = results.record_path(results_dir, spec.workload, spec.engine, spec.run_id)
        if path.exists() and not force:
            try:
                state = records.read(path)["status"]["state"]
            except (ValueError, KeyError, TypeError):
                state = records.ERROR
            if not (retry_errors and state == records.ERROR):
                skipped.append(Outcome(spec, spec.run_id, path, "skipped", f"recorded earlier as {state}"))
                continue
        todo.append(spec)
    return todo, skipped


def run_campaign(
    workload: Workload,
    results_dir: Path | None = None,
    engines: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    force: bool = False,
    retry_errors: bool = False,
    data_dir: Path | None = None,
    timeout_s: float | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    executor: Executor | None = None,
) -> list[Outcome]:
    """Run every not-yet-recorded run of `workload`; KeyboardInterrupt propagates after cleanup.

    `results_dir` defaults to results.default_results_dir(). The folder is locked for the whole
    campaign (results.locked): a second campaign on it is refused with ResultsBusy. `executor`
    (harness.run.executors) decides where the runs execute; None: here, one after another.
    """
    results_dir = results.check_results_dir(
        Path(results_dir) if results_dir is not None else results.default_results_dir()
    )
    with results.locked(results_dir, f"campaign {workload.name}: {' '.join(sys.argv)}"):
        return _campaign(
            workload,
            results_dir,
            engines,
            threads,
            seeds,
            force,
            retry_errors,
            data_dir,
            timeout_s,
            on_outcome,
            executor,
        )


def _campaign(
    workload: Workload,
    results_dir: Path,
    engines: Sequence[str] | None,
    threads: Sequence[int] | None,
    seeds: Sequence[int] | None,
    force: bool,
    retry_errors: bool,
    data_dir: Path | None,
    timeout_s: float | None,
    on_outcome: Callable[[Outcome], None] | None,
    executor: Executor | None = None,
) -> list[Outcome]:
    # Planned under the lock: what is recorded cannot change until the campaign ends.
    todo, skipped = plan(workload, results_dir, engines, threads, seeds, force, retry_errors)
    cores = os.cpu_count() or 1
    # This machine's cores say nothing about the nodes of a cluster executor.
    local = executor is None or executor.name == "local"
    for t in sorted({s.threads for s in todo} if local else ()):
        if t > cores:
            log.warning(
                "%s: %d threads on a machine with %d cores: oversubscribed, timings will suffer",
                workload.name,
                t,
                cores,
            )
    errors_skipped = sum(1 for o in skipped if o.message.endswith("as error"))
    log.info(
        "%s: %d runs, %d already recorded%s, %d to run",
        workload.name, len(todo) + len(skipped), len(skipped),
        f" ({errors_skipped} as error; --retry-errors reruns them)" if errors_skipped else "", len(todo),
    )  # fmt: skip
    outcomes = list(skipped)
    progress = Progress(len(todo), specs=todo)
    runs = (
        run_here(todo, results_dir, data_dir=data_dir, timeout_s=timeout_s, progress=progress)
        if executor is None
        else executor.run(todo, results_dir, data_dir=data_dir, timeout_s=timeout_s, progress=progress)
    )
    for outcome in runs:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def run_here(
    todo: Sequence[RunSpec],
    results_dir: Path,
    *,
    data_dir: Path | None,
    timeout_s: float | None,
    progress: Progress,
) -> Iterator[Outcome]:
    """One run at a time on this machine, each in a fresh worker (the local executor's work)."""
    for i, spec in enumerate(todo, 1):
        progress.run_started(i, spec)
        outcome = run_one(spec, results_dir, data_dir, progress, timeout_s)
        progress.run_finished(outcome)
        yield outcome


def summarize(outcomes: Sequence[Outcome]) -> str:
    counts = collections.Counter(o.state for o in outcomes)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing to do"
