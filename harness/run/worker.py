"""One training run in one fresh process: ``python -m harness.run.worker SPEC.json OUT.json``.

SPEC.json is ``{"spec": <RunSpec.to_dict()>, "run_id": ..., "build_id": ..., "data_dir": ...,
"events": <path of the JSON-lines event log>}`` (a bare RunSpec dict is accepted too). The
worker writes one record (`harness.store.records`; fields in docs/design.md) to OUT.json atomically,
whatever the outcome — target reached, budget spent, diverged, or an engine/data error with its
message — and exits 0.
It writes nothing when interrupted (SIGINT/SIGTERM) or killed, so a resumed campaign simply runs
it again. Its `counters` section says "unavailable: worker run without the campaign runner"; the
runner (`harness.run.runner`) replaces it with what `harness.counters.perf` collected.

Thread counts are fixed through the environment here, before numpy or any engine is imported
(this module imports only the standard library and `harness.store.records`, which imports nothing
more, at the top for that reason); the runner sets the
same variables, so either way an engine's thread pools are sized before they exist.

Measurement protocol:
- data loading and `engine.prepare()` are untimed by the train clock (`timing.data_s`, `init_s`);
- the train clock runs only around `fit_step`; batches are built outside it (`timing.feed_s`);
- evaluation (`predict_topk` on a fixed, seeded, shuffled test subset, scored by
  `harness.run.metrics`; with `split = "validation"`, on training rows held out of the run's own
  training instead) happens at step 0, every `every_steps` steps and/or every `every_seconds` of
  train clock, and when the run stops; it is off the train clock (`timing.eval_s`);
- the stop rule: P@1 >= target at an evaluation, else the first budget spent (steps, epochs,
  train-clock seconds); a non-finite loss stops the run at once as `diverged`;
- `timing.overhead_s` is the loop's wall time minus train and eval time: the harness's own cost
  (batch building, bookkeeping, counter toggles).

The record also carries the label-popularity P@1 of the evaluation subset (`popularity_p1`) and
the run's sanity flags (`flags`, harness.store.flags).

Environment overrides, for short measurement slices (cachegrind, scaling): ``SLIDEBENCH_MAX_STEPS=N``
caps the run at N steps and ``SLIDEBENCH_NO_EVAL=1`` skips every evaluation; both are recorded
under `overrides` and in `status.message`.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.store import records

log = logging.getLogger("slidebench.worker")

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
VALIDATION_SALT = 0x7A11D  # keeps the held-out rows independent of other streams seeded alike
# At most this fraction of the training points is held out as the validation split.
MAX_VALIDATION_FRACTION = 0.2


# Points of the evaluation subset on which an engine's sampler diagnostics are computed.
DIAGNOSTIC_POINTS = 64


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that fix every thread pool an engine may create to `threads`."""
    env = {name: str(threads) for name in THREAD_VARS}
    # TF's inter-op pool runs independent ops concurrently; one keeps the total at `threads`.
    env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# Dying with the campaign: a worker whose campaign is gone must not train on (it would hold CPUs,
# and a resumed campaign would run the same run id beside it). Two mechanisms, because either alone
# has a gap: the parent-death signal fires when the *direct* parent dies (that is `perf stat`
# when counters are on, and the runner arranges the same signal for perf), and the pipe reaches
# the worker through any wrapper and also covers a parent that died before the signal was set.

PARENT_FD_ENV = "SLIDEBENCH_PARENT_FD"  # read end of a pipe the runner holds open while it lives
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A function that makes the kernel send `sig` to the calling process when its parent dies.

    Linux only (prctl PR_SET_PDEATHSIG); None elsewhere. libc is loaded here, in the caller, so
    that the returned function can also run in a freshly forked child (a Popen preexec_fn).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def apply() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return apply


def watch_campaign(environ: Mapping[str, str] | None = None) -> None:
    """Arrange for this process to die when the campaign that started it dies (see above)."""
    environ = os.environ if environ is None else environ
    apply = parent_death_signal()
    if apply is not None:
        apply()
    raw = environ.get(PARENT_FD_ENV)
    if not raw:
        return  # run by hand, without the campaign runner
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        log.warning("%s=%r is not an open file descriptor; not watching the campaign", PARENT_FD_ENV, raw)
        return

    def watch() -> None:
        # The runner never writes: read returns b"" once its end is closed, i.e. when it exits.
        while True:
            try:
                if not os.read(fd, 1):
                    os.kill(os.getpid(), signal.SIGKILL)
            except OSError:  # the descriptor was closed under us: nothing left to watch
                return

    threading.Thread(target=watch, name="campaign-watch", daemon=True).start()


class Interrupted(BaseException):
    """SIGTERM/SIGINT: stop without writing a record (the run is simply not done)."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------------------------
# The validation split (data order and the evaluation subset: harness.run.loop)


def validation_rows(n_train: int, subset: int, seed: int) -> Any:
    """Training rows held out for validation (tuning scores on them, never on the test split).

    A seeded choice of at most `subset` rows and at most MAX_VALIDATION_FRACTION of the training
    points, sorted; the run then trains on the other rows only.
    """
    import numpy as np

    size = min(subset, int(n_train * MAX_VALIDATION_FRACTION))
    if size < 1:
        raise ValueError(f"a validation split needs more training points than {n_train}")
    return np.sort(np.random.default_rng([seed, VALIDATION_SALT]).permutation(n_train)[:size])


def split_for_validation(features: Any, labels: Any, subset: int, seed: int) -> tuple[Any, Any, Any, Any]:
    """(train features, train labels, validation features, validation labels) carved from training data."""
    import numpy as np

    held = validation_rows(features.n_rows, subset, seed)
    keep = np.setdiff1d(np.arange(features.n_rows), held, assume_unique=True)
    return features.take(keep), labels.take(keep), features.take(held), labels.take(held)


# --------------------------------------------------------------------------------------------


def _read_spec(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise TypeError(f"{path}: a run spec must be a JSON object")
    return doc if "spec" in doc else {"spec": doc}


def _overrides() -> dict[str, Any]:
    out: dict[str, Any] = {}
    raw = os.environ.get("SLIDEBENCH_MAX_STEPS")
    if raw:
        try:
            out["max_steps"] = int(raw)
        except ValueError:
            raise ValueError(f"SLIDEBENCH_MAX_STEPS must be an integer, got {raw!r}") from None
        if out["max_steps"] < 1:
            raise ValueError(f"SLIDEBENCH_MAX_STEPS must be >= 1, got {raw!r}")
    if os.environ.get("SLIDEBENCH_NO_EVAL", "") not in ("", "0"):
        out["no_eval"] = True
    return out


class _Run:
    """State of one run; `execute` fills it, `record` turns it into the draft record."""

    def __init__(self, doc: dict[str, Any], events: Any, overrides: dict[str, Any]) -> None:
        from harness.spec.workload import RunSpec

        self.doc = doc
        self.spec = RunSpec.from_dict(doc["spec"])
        self.events = events
        self.overrides = overrides
        self.state = records.ERROR
        self.message = ""
        self.timing: dict[str, Any] = dict(
            records.timing(
                train_s=0.0, eval_s=0.0, feed_s=0.0, loop_s=0.0, overhead_s=0.0, steps=0, samples=0, epochs=0.0
            )
        )
        self.curve: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.engine_info: dict[str, Any] = {}
        self.threads_in_effect: int | None = None
        self.data_info: dict[str, Any] = {}
        self.popularity_p1: float | None = None
        self.clock: Any = None  # harness.run.loop.Clock of the training loop, once it exists
        self._predict_s = 0.0  # the last evaluation's predict_topk and scoring, for its event
        self.t_start = time.perf_counter()

    # -- the run ---------------------------------------------------------------------------

    def execute(self) -> None:
        import numpy as np

        from harness.datasets import data
        from harness.run.loop import (
            Budget,
            Clock,
            EpochFeed,
            EvalSchedule,
            Loop,
            Target,
            eval_rows,
            prepare_for_spec,
        )
        from harness.run.metrics import popularity_p1, ranking_metrics

        spec = self.spec
        ev = spec.evaluation
        tr = spec.training
        self.events.emit(
            records.RUN_START, run_id=self.doc.get("run_id"), spec=spec.to_dict(), overrides=self.overrides
        )

        t0 = time.perf_counter()
        train, test = data.load(spec.dataset, self.doc.get("data_dir"))
        x_train, y_train = train.features, train.labels
        if ev.split == "validation":
            # Tuning never sees the test split: it scores on training rows the run does not train on.
            x_train, y_train, x_eval, y_eval = split_for_validation(x_train, y_train, ev.subset, ev.seed)
        else:
            x_eval, y_eval = test.features, test.labels
        self.timing["data_s"] = time.perf_counter() - t0
        n_train = x_train.n_rows
        self.data_info = {
            "train_rows": n_train,
            "test_rows": test.features.n_rows,
            "num_features": x_train.n_cols,
            "num_labels": y_train.n_cols,
            "source": getattr(train, "source", None),
            "eval_split": ev.split,
        }
        if n_train == 0 or x_eval.n_rows == 0:
            raise ValueError(f"dataset {spec.dataset.label} has an empty split: {self.data_info}")
        self.events.emit(records.DATA_LOADED, seconds=self.timing["data_s"], **self.data_info)

        # Evaluation subset, cut into predict batches once: identical for every engine.
        rows = eval_rows(x_eval.n_rows, ev.subset, ev.seed)
        eval_labels = y_eval.take(rows)
        eval_chunks = [x_eval.take(rows[i : i + ev.batch_size]) for i in range(0, len(rows), ev.batch_size)]
        self.data_info["eval_rows"] = len(rows)
        self.popularity_p1 = popularity_p1(y_train, eval_labels)
        # The sampler's diagnostics look at the first points of the same subset: exact scores of
        # every output for a few dozen points cost a fraction of an evaluation, even at 670K labels.
        diag_rows = rows[:DIAGNOSTIC_POINTS]
        diag_features, diag_labels = x_eval.take(diag_rows), y_eval.take(diag_rows)

        prepared = prepare_for_spec(spec, x_train, y_train)
        engine = prepared.engine
        self.threads_in_effect = prepared.threads_in_effect
        self.timing["init_s"] = prepared.init_s
        self.events.emit(records.INIT_STOP, seconds=self.timing["init_s"], threads_in_effect=self.threads_in_effect)

        max_steps = tr.max_steps
        if "max_steps" in self.overrides:
            max_steps = min(max_steps or self.overrides["max_steps"], self.overrides["max_steps"])
        k = ev.k

        def evaluate(clock: Clock) -> dict[str, Any]:
            te = time.perf_counter()
            parts = []
            for chunk in eval_chunks:
                top = engine.predict_topk(chunk, k)
                if not isinstance(top, np.ndarray) or top.dtype != np.int32 or top.shape != (chunk.n_rows, k):
                    got = f"{type(top).__name__} {getattr(top, 'dtype', '?')} {getattr(top, 'shape', '?')}"
                    raise TypeError(
                        f"{spec.engine}.predict_topk must return int32 ({chunk.n_rows}, {k}), got {got}"
                    )
                parts.append(top)
            m = ranking_metrics(np.concatenate(parts), eval_labels, (1, 3, 5))
            self._predict_s = time.perf_counter() - te
            point = {
                "step": clock.step,
                "epoch": clock.samples / n_train,
                "samples": clock.samples,
                "train_s": clock.train_s,
                "wall_s": clock.wall_s(),
                "p1": m["p1"], "p3": m["p3"], "p5": m["p5"], "ndcg5": m["ndcg5"],
                "loss": clock.mean_loss(),
            }  # fmt: skip
            td = time.perf_counter()
            diag = engine.diagnostics(diag_features, diag_labels) if ev.diagnostics else None
            if diag is not None:
                # Part of the evaluation time (never of the train clock); also kept on its own.
                self.timing["diagnostics_s"] = self.timing.get("diagnostics_s", 0.0) + time.perf_counter() - td
                point["diagnostics"] = diag
            self.curve.append(point)
            self.final = {key: m[key] for key in records.FINAL_KEYS}
            return point

        from harness.counters.perf import TrainingRegion

        feed = EpochFeed(x_train, y_train, tr.batch_size, spec.seed)
        self.clock = Clock()
        loop = Loop(engine, feed, self.clock)
        stop = loop.run(
            Budget(max_steps, tr.max_seconds, tr.max_epochs, n_train),
            target=Target(ev.target_p1),
            schedule=EvalSchedule(
                ev.every_steps,
                ev.every_seconds,
                growth=ev.growth,
                at_start=ev.at_start,
                enabled=not self.overrides.get("no_eval"),
            ),
            evaluate=evaluate,
            region=TrainingRegion.from_env(),
            hooks=_EventHooks(self),
            stop_at_target=ev.stop_at_target,
        )
        self.data_info["batch_stream_sha256"] = feed.fingerprint()
        self._take_clock()
        self.timing["loop_s"] = self.clock.wall_s()
        self.timing["overhead_s"] = max(
            0.0, self.timing["loop_s"] - self.timing["train_s"] - self.timing["eval_s"]
        )
        self.timing["steps"], self.timing["samples"] = self.clock.step, self.clock.samples
        self.timing["epochs"] = self.clock.samples / n_train
        if stop.state == records.TARGET_REACHED:
            # The first point at or above the target: the run may have trained on past it.
            self.timing["time_to_target_s"] = next(
                p["train_s"] for p in self.curve if p["p1"] >= (ev.target_p1 or 0.0)
            )
        self.state, self.message = stop.state, stop.message
        if self.overrides:
            self.message += (
                f" (overrides: {', '.join(f'{k}={v}' for k, v in sorted(self.overrides.items()))})"
            )
        try:
            self.engine_info = dict(engine.info())
        except Exception as exc:  # noqa: BLE001 - a broken info() must not lose the run's numbers
            self.engine_info = {"error": f"{type(exc).__name__}: {exc}"}

    def _take_clock(self) -> None:
        """The loop's clocks into `timing` (also for a run that failed part way)."""
        if self.clock is not None:
            for key in ("train_s", "feed_s", "eval_s"):
                self.timing[key] = getattr(self.clock, key)

    # -- the record ------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        from harness.run import env
        from harness.store.flags import run_flags

        self._take_clock()
        self.timing["wall_s"] = time.perf_counter() - self.t_start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        train_s = self.timing["train_s"]
        info = dict(self.engine_info)
        if self.threads_in_effect is not None:
            info.setdefault("threads_in_effect", self.threads_in_effect)
        return records.build(
            records.TRAIN,
            self.doc.get("run_id") or self.spec.run_id,
            self.spec.to_dict(),
            self.state,
            self.message,
            build_id=self.doc.get("build_id"),
            timing=self.timing,
            curve=self.curve,
            final=self.final,
            throughput={"samples_per_s": self.timing["samples"] / train_s if train_s > 0 else None},
            counters=records.unavailable_counters("not collected: worker run without the campaign runner"),
            resources={
                # ru_maxrss is in KiB on Linux.
                "peak_rss_mb": usage.ru_maxrss / 1024.0,
                "cpu_user_s": usage.ru_utime,
                "cpu_sys_s": usage.ru_stime,
            },
            engine_info=info,
            environment=env.capture(info),
            data=self.data_info,
            overrides=self.overrides,
            popularity_p1=self.popularity_p1,
            flags=run_flags(self.curve, self.popularity_p1, self.data_info.get("eval_rows", 0)),
        )


class _EventHooks:
    """The loop's events into the run's event log."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def train_start(self) -> None:
        self.run.events.emit(records.TRAIN_START)

    def evaluated(self, point: dict[str, Any]) -> None:
        self.run.events.emit(records.EVAL_ACCURACY, eval_seconds=self.run._predict_s, **point)

    def diverged(self, step: int, loss: float) -> None:
        self.run.events.emit(records.DIVERGED_EVENT, step=step, loss=loss)


def run(spec_path: Path, out_path: Path) -> int:
    """Execute one run and write its record; see the module docstring. Returns the exit status."""
    from harness.store.results import EventLog, events_path

    doc = _read_spec(spec_path)
    events_file = Path(doc["events"]) if doc.get("events") else events_path(out_path)
    with EventLog(events_file) as events:
        try:
            overrides = _overrides()
            state = _Run(doc, events, overrides)
        except Exception as exc:
            events.emit(records.RUN_STOP, state=records.ERROR, message=f"bad spec: {exc}")
            raise
        try:
            state.execute()
        except Interrupted as exc:
            events.emit(records.RUN_ABORT, reason=str(exc))
            return 130
        except KeyboardInterrupt:
            events.emit(records.RUN_ABORT, reason="SIGINT")
            return 130
        except Exception as exc:  # noqa: BLE001 - any engine/data failure becomes an `error` record
            state.state, state.message = records.ERROR, f"{type(exc).__name__}: {exc}"
            events.emit(records.ERROR_EVENT, message=state.message, traceback=traceback.format_exc())
            log.error("run failed: %s", state.message)
        record = state.record()
        records.write(out_path, record)
        events.emit(records.RUN_STOP, state=state.state, message=state.message, timing=record["timing"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m harness.run.worker SPEC.json OUT.json\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    watch_campaign()
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    doc = _read_spec(spec_path)
    threads = int(doc["spec"]["threads"])
    # Before numpy or any engine is imported: thread pools are sized from these at creation.
    for name, value in thread_env(threads).items():
        if os.environ.get(name) not in (None, value):
            log.warning(
                "%s=%s in the environment; the spec says %s threads: using %s",
                name,
                os.environ[name],
                threads,
                value,
            )
        os.environ[name] = value
    signal.signal(signal.SIGTERM, _on_signal)
    return run(spec_path, out_path)


if __name__ == "__main__":
    sys.exit(main())
