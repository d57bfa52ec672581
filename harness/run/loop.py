"""The one training loop: every place that trains an engine (a run's worker, the scaling sweep, the
data twin's dense reference, the asv suite, the benchmark scripts) feeds it through `Loop`.

The pieces are small objects, so each caller takes the ones it needs:

- `prepare_engine` / `prepare_for_spec`: build an engine, fix its threads, `prepare` it (untimed);
- a feed: any iterator of `Batch`es. `EpochFeed` is the harness's order (`batch_order`: a seeded
  shuffle per epoch, the same for every engine) with the fingerprint of the rows it gave out;
- `Clock`: the train clock runs only around `fit_step`; building batches is `feed_s`, evaluation
  `eval_s`, each on its own clock;
- `Budget` (steps, train-clock seconds, epochs) and `Target` (P@1 at an evaluation): the stop rule,
  with a non-finite loss ending the run at once;
- `EvalSchedule`: evaluations at step 0, every N steps and/or every S seconds of train clock, and
  when the budget is spent;
- `Hooks`: what a caller does at the loop's events (log them, write them down).

`Loop.step()` is one batch; `Loop.run()` is a whole run by the rules above. This module imports
numpy at the top: a worker imports it only after its thread variables are set.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, Engine, StepStats, TrainMeta
from harness.store import records

# Salts keep the batch stream and the evaluation subset independent of other streams seeded alike.
BATCH_SALT = 0x5B1DE
EVAL_SALT = 0xE7A1


# --------------------------------------------------------------------------------------------
# Data order and evaluation subset (pure functions: tests hash them)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of each minibatch of `epoch`: a seeded shuffle cut into batches (last one short).

    Depends only on (n, batch_size, seed, epoch), so every engine with the same seed sees the
    very same batches in the same order.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"batch_order needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    perm = np.random.default_rng([seed, epoch, BATCH_SALT]).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def eval_rows(n_test: int, subset: int, seed: int) -> np.ndarray:
    """The fixed evaluation subset: a seeded shuffle of the test rows (test files are often sorted)."""
    return np.random.default_rng([seed, EVAL_SALT]).permutation(n_test)[: min(subset, n_test)]


def row_slice(m: Csr, start: int, stop: int) -> Csr:
    """Rows [start, stop) of a Csr as views of its arrays (indptr rebased to 0)."""
    lo, hi = int(m.indptr[start]), int(m.indptr[stop])
    values = None if m.values is None else m.values[lo:hi]
    return Csr(m.indptr[start : stop + 1] - lo, m.indices[lo:hi], values, m.n_cols)


# --------------------------------------------------------------------------------------------
# Preparing an engine


@dataclass(frozen=True)
class Prepared:
    engine: Engine
    threads_in_effect: int
    init_s: float  # construction, set_threads and prepare (a run's `timing.init_s`)
    prepare_s: float  # prepare alone


def prepare_engine(name: str, params: Mapping[str, Any] | None, threads: int, meta: TrainMeta) -> Prepared:
    """The registered engine `name`, its threads fixed (before `prepare`: TensorFlow's pools are
    sized at the first op), prepared for `meta`."""
    from harness.spec import registry

    t0 = time.perf_counter()
    engine = registry.engine_class(name)(dict(params or {}))
    in_effect = int(engine.set_threads(threads))
    t1 = time.perf_counter()
    engine.prepare(meta)
    t2 = time.perf_counter()
    return Prepared(engine, in_effect, t2 - t0, t2 - t1)


def prepare_for_spec(spec: Any, features: Csr, labels: Csr) -> Prepared:
    """`prepare_engine` for a `RunSpec` and the rows it trains on."""
    counts = np.bincount(labels.indices, minlength=labels.n_cols)
    meta = spec.train_meta(features.n_cols, labels.n_cols, features.n_rows, label_counts=counts)
    return prepare_engine(spec.engine_class_name, spec.engine_params, spec.threads, meta)


# --------------------------------------------------------------------------------------------
# Feeding


class EpochFeed:
    """Batches of the training rows in the harness's order, epoch after epoch, without end.

    One gather per epoch puts the shuffled rows in order; each batch is then a contiguous slice
    (no copy), which keeps the per-step cost to microseconds. `fingerprint()` is the sha256 of the
    row ids given out so far: equal across engines that trained on the same batches.
    """

    def __init__(self, features: Csr, labels: Csr, batch_size: int, seed: int) -> None:
        self.features, self.labels, self.batch_size, self.seed = features, labels, batch_size, seed
        self.n = features.n_rows
        self.epoch = 0  # the epoch the next batch comes from
        self._digest = hashlib.sha256()
        self._batches: list[np.ndarray] = []
        self._next = 0
        self._start = 0
        self._x: Csr | None = None
        self._y: Csr | None = None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._next == len(self._batches):
            if self._batches:
                self.epoch += 1
            self._batches = batch_order(self.n, self.batch_size, self.seed, self.epoch)
            perm = np.concatenate(self._batches)
            self._x, self._y = self.features.take(perm), self.labels.take(perm)
            self._next = self._start = 0
        idx = self._batches[self._next]
        self._next += 1
        self._digest.update(idx.astype("<i8").tobytes())
        start, stop = self._start, self._start + len(idx)
        self._start = stop
        assert self._x is not None and self._y is not None
        return Batch(row_slice(self._x, start, stop), row_slice(self._y, start, stop))

    def fingerprint(self) -> str:
        return self._digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Clock, stop rule, evaluation schedule


@dataclass
class Clock:
    """Where the time of a loop went. `train_s` (the train clock) covers `fit_step` alone."""

    step: int = 0
    samples: int = 0
    train_s: float = 0.0
    feed_s: float = 0.0
    eval_s: float = 0.0
    last_step_s: float = 0.0  # the last fit_step alone
    started: float = 0.0  # perf_counter when `Loop.run` began (evaluation at step 0 included)
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_n: int = 0

    def wall_s(self) -> float:
        return time.perf_counter() - self.started

    def mean_loss(self) -> float | None:
        """Mean training loss since the last evaluation (None before the first step)."""
        return self.loss_sum / self.loss_n if self.loss_n else None


@dataclass(frozen=True)
class Budget:
    """The first of these spent ends a run; None is no limit. Epochs count samples over `num_train`."""

    max_steps: int | None = None
    max_seconds: float | None = None  # on the train clock
    max_epochs: float | None = None
    num_train: int = 0

    def spent(self, clock: Clock) -> str | None:
        if self.max_steps is not None and clock.step >= self.max_steps:
            return f"max_steps {self.max_steps} reached"
        if self.max_seconds is not None and clock.train_s >= self.max_seconds:
            return f"max_seconds {self.max_seconds:g} of train clock spent"
        if self.max_epochs is not None and clock.samples >= self.max_epochs * self.num_train:
            return f"max_epochs {self.max_epochs:g} done"
        return None


@dataclass(frozen=True)
class Target:
    """P@1 at an evaluation that ends a run as reached."""

    p1: float | None

    def reached(self, point: Mapping[str, Any]) -> bool:
        return self.p1 is not None and point["p1"] >= self.p1


class EvalSchedule:
    """Evaluations at step 0 (unless `at_start` is off), every `every_steps` steps and/or every
    `every_seconds` of train clock (and, decided by the loop, when the budget is spent).
    With `growth`, the seconds marks are geometric instead: every_seconds x growth^k, so that an
    engine that reaches its target in a tenth of the budget still gets a curve of many points
    while a slow one is not evaluated more often than it trains. `enabled=False` evaluates never."""

    def __init__(
        self,
        every_steps: int | None,
        every_seconds: float | None,
        *,
        growth: float | None = None,
        at_start: bool = True,
        enabled: bool = True,
    ) -> None:
        if growth is not None and not (growth > 1.0 and every_seconds):
            raise ValueError(f"growth needs every_seconds and must be > 1, got {growth}")
        self.every_steps, self.every_seconds, self.growth = every_steps, every_seconds, growth
        self.at_start, self.enabled = at_start, enabled
        self._next_s = every_seconds if every_seconds else math.inf

    def _after(self, mark: float) -> float:
        if self.growth is not None:
            return mark * self.growth
        return mark + (self.every_seconds or math.inf)

    def due(self, clock: Clock) -> bool:
        """Whether this step ends on an evaluation; passes the seconds marks once they are crossed
        (one evaluation however many marks a slow step crossed)."""
        due = bool(self.every_steps and clock.step % self.every_steps == 0)
        if clock.train_s >= self._next_s:
            due = True
            while self._next_s <= clock.train_s:
                self._next_s = self._after(self._next_s)
        return due


@dataclass(frozen=True)
class Stop:
    state: str  # records.TARGET_REACHED | BUDGET_SPENT | DIVERGED
    message: str


class Region(Protocol):
    """A counted region (`harness.counters.perf.TrainingRegion`): on while training, off while evaluating."""

    def enable(self) -> None: ...

    def disable(self) -> None: ...


class _NoCount:
    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


class Hooks:
    """What a caller does at the loop's events; every method does nothing by default."""

    def train_start(self) -> None:
        pass

    def evaluated(self, point: dict[str, Any]) -> None:
        """After each evaluation, off every clock."""

    def diverged(self, step: int, loss: float) -> None:
        pass


# --------------------------------------------------------------------------------------------
# The loop


class Loop:
    """One engine fed from one iterator of batches, on one clock."""

    def __init__(self, engine: Engine, feed: Iterator[Batch], clock: Clock | None = None) -> None:
        self.engine, self.feed = engine, feed
        self.clock = clock or Clock()

    def step(self) -> StepStats:
        """One batch: fetched on the feed clock, `fit_step` alone on the train clock."""
        c = self.clock
        t_feed = time.perf_counter()
        batch = next(self.feed)
        t_fit = time.perf_counter()
        stats = self.engine.fit_step(batch)
        t_done = time.perf_counter()
        c.feed_s += t_fit - t_feed
        c.last_step_s = t_done - t_fit
        c.train_s += c.last_step_s
        c.step += 1
        c.samples += len(batch)
        return stats

    def run(
        self,
        budget: Budget,
        *,
        target: Target | None = None,
        schedule: EvalSchedule | None = None,
        evaluate: Callable[[Clock], dict[str, Any]] | None = None,
        region: Region | None = None,
        hooks: Hooks | None = None,
        stop_at_target: bool = True,
    ) -> Stop:
        """Train until the stop rule says so: a non-finite loss at once (`diverged`), the target
        at an evaluation (`target_reached`), else the first budget spent (`budget_spent`, after a
        last evaluation). With `stop_at_target` off, a run that reached its target trains on to
        the budget and still ends `target_reached`. `evaluate(clock)` returns a curve point (with
        `p1`); its time goes to `eval_s`, and `region` is off while it runs."""
        c, hooks, region = self.clock, hooks or Hooks(), region or _NoCount()
        target = target or Target(None)
        evaluating = evaluate is not None and (schedule is None or schedule.enabled)
        c.started = time.perf_counter()

        def evaluation() -> dict[str, Any]:
            assert evaluate is not None
            t0 = time.perf_counter()
            point = evaluate(c)
            c.eval_s += time.perf_counter() - t0
            c.loss_sum, c.loss_n = 0.0, 0
            hooks.evaluated(point)
            return point

        reached: str | None = None  # the first evaluation at or above the target, described
        if evaluating and (schedule is None or schedule.at_start):
            evaluation()
        hooks.train_start()
        region.enable()
        try:
            while True:
                loss = float(self.step().loss)
                if not math.isfinite(loss):
                    hooks.diverged(c.step, loss)
                    return Stop(records.DIVERGED, f"loss became {loss} at step {c.step}")
                c.loss_sum += loss
                c.loss_n += 1
                spent = budget.spent(c)
                due = schedule.due(c) if schedule is not None else False
                if evaluating and (due or spent):
                    region.disable()
                    point = evaluation()
                    region.enable()
                    if reached is None and target.reached(point):
                        reached = f"P@1 {point['p1']:.4f} >= target {target.p1:g} at step {c.step}"
                        if stop_at_target:
                            return Stop(records.TARGET_REACHED, reached)
                if spent:
                    if reached is not None:
                        return Stop(records.TARGET_REACHED, f"{reached}; trained on until {spent}")
                    return Stop(records.BUDGET_SPENT, spent)
        finally:
            region.disable()
