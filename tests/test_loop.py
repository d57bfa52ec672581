"""The training loop: what each clock holds, the stop rule, the evaluation schedule, the feed.

Time is a fake clock here that moves only when the engine trains or a batch is built, so the
assertions are exact and independent of the machine.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.run import loop as hloop
from harness.run.loop import Budget, Clock, EpochFeed, EvalSchedule, Hooks, Loop, Target, batch_order
from harness.spec.engine import Batch, StepStats

FIT_S, FEED_S, EVAL_S = 1.0, 0.25, 10.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    t = FakeTime()
    monkeypatch.setattr(hloop.time, "perf_counter", t)
    return t


class Engine:
    """Takes FIT_S per step and reports the losses it is given, then 0.5."""

    def __init__(self, t: FakeTime, losses: tuple[float, ...] = ()) -> None:
        self.t, self.losses, self.steps = t, list(losses), 0

    def fit_step(self, batch: Batch) -> StepStats:
        self.t.now += FIT_S
        self.steps += 1
        return StepStats(loss=self.losses.pop(0) if self.losses else 0.5)


def _batch(rows: int) -> Batch:
    m = Csr(np.zeros(rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 4)
    return Batch(m, Csr(m.indptr, m.indices, None, 4))


def feed(t: FakeTime, rows: int = 8):
    while True:
        t.now += FEED_S
        yield _batch(rows)


def evaluator(t: FakeTime, p1s: list[float]):
    seen: list[dict[str, Any]] = []

    def evaluate(clock: Clock) -> dict[str, Any]:
        t.now += EVAL_S
        point = {"step": clock.step, "train_s": clock.train_s, "loss": clock.mean_loss(), "p1": p1s.pop(0)}
        seen.append(point)
        return point

    return evaluate, seen


def test_step_puts_fit_step_alone_on_the_train_clock(fake_time: FakeTime) -> None:
    lp = Loop(Engine(fake_time), feed(fake_time, rows=8))
    for _ in range(3):
        lp.step()
    c = lp.clock
    assert (c.step, c.samples) == (3, 24)
    assert c.train_s == 3 * FIT_S and c.feed_s == 3 * FEED_S and c.last_step_s == FIT_S


def test_budget_spent_ends_with_a_last_evaluation_off_the_train_clock(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.1] * 10)
    lp = Loop(Engine(fake_time), feed(fake_time))
    stop = lp.run(Budget(max_steps=7), schedule=EvalSchedule(3, None), evaluate=evaluate, target=Target(0.9))
    assert (stop.state, stop.message) == ("budget_spent", "max_steps 7 reached")
    assert [p["step"] for p in seen] == [0, 3, 6, 7]
    assert lp.clock.train_s == 7 * FIT_S and lp.clock.eval_s == 4 * EVAL_S
    assert lp.clock.wall_s() == pytest.approx(7 * (FIT_S + FEED_S) + 4 * EVAL_S)
    assert seen[0]["loss"] is None and seen[1]["loss"] == 0.5  # mean since the previous point


def test_target_reached_at_an_evaluation(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0, 0.2, 0.7, 0.9])
    lp = Loop(Engine(fake_time), feed(fake_time))
    stop = lp.run(
        Budget(max_steps=100), schedule=EvalSchedule(2, None), evaluate=evaluate, target=Target(0.6)
    )
    assert stop.state == "target_reached" and stop.message == "P@1 0.7000 >= target 0.6 at step 4"
    assert lp.clock.step == 4 and len(seen) == 3


def test_a_run_that_trains_on_past_its_target_still_reached_it(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0, 0.2, 0.7, 0.5, 0.9, 0.9])
    lp = Loop(Engine(fake_time), feed(fake_time))
    stop = lp.run(
        Budget(max_steps=8),
        schedule=EvalSchedule(2, None),
        evaluate=evaluate,
        target=Target(0.6),
        stop_at_target=False,
    )
    assert stop.state == "target_reached"
    assert stop.message == "P@1 0.7000 >= target 0.6 at step 4; trained on until max_steps 8 reached"
    assert lp.clock.step == 8 and [p["step"] for p in seen] == [0, 2, 4, 6, 8]


def test_a_run_that_never_reaches_its_target_spends_its_budget(fake_time: FakeTime) -> None:
    evaluate, _ = evaluator(fake_time, [0.0, 0.2, 0.3])
    lp = Loop(Engine(fake_time), feed(fake_time))
    stop = lp.run(
        Budget(max_steps=4),
        schedule=EvalSchedule(2, None),
        evaluate=evaluate,
        target=Target(0.6),
        stop_at_target=False,
    )
    assert (stop.state, stop.message) == ("budget_spent", "max_steps 4 reached")


def test_non_finite_loss_stops_at_once_without_an_evaluation(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0] * 5)
    got: list[tuple[int, float]] = []

    class Seen(Hooks):
        def diverged(self, step: int, loss: float) -> None:
            got.append((step, loss))

    lp = Loop(Engine(fake_time, (0.5, 0.4, math.nan)), feed(fake_time))
    stop = lp.run(Budget(max_steps=10), schedule=EvalSchedule(1, None), evaluate=evaluate, hooks=Seen())
    assert (stop.state, stop.message) == ("diverged", "loss became nan at step 3")
    assert got == [(3, pytest.approx(math.nan, nan_ok=True))]
    assert [p["step"] for p in seen] == [0, 1, 2]


def test_evaluations_every_seconds_of_train_clock(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0] * 10)
    lp = Loop(Engine(fake_time), feed(fake_time))
    # Evaluation and feeding take time too, but only the train clock counts.
    lp.run(Budget(max_seconds=7.0), schedule=EvalSchedule(None, 2.5), evaluate=evaluate)
    assert [p["step"] for p in seen] == [0, 3, 5, 7]


def test_geometric_evaluation_marks_one_evaluation_per_crossing() -> None:
    schedule, clock = EvalSchedule(None, 1.0, growth=2.0), Clock()
    due = []
    for train_s in (0.5, 1.0, 1.5, 2.5, 3.0, 9.0, 15.9, 16.0):
        clock.train_s = train_s
        due.append(schedule.due(clock))
    # Marks at 1, 2, 4, 8, 16: the step at 9 s crossed both 4 and 8 and evaluates once.
    assert due == [False, True, False, True, False, True, False, True]


def test_geometric_cadence_needs_seconds_and_growth_above_1() -> None:
    with pytest.raises(ValueError, match="growth"):
        EvalSchedule(10, None, growth=2.0)
    with pytest.raises(ValueError, match="growth"):
        EvalSchedule(None, 1.0, growth=1.0)


def test_epoch_budget_and_a_disabled_schedule(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0] * 10)
    lp = Loop(Engine(fake_time), feed(fake_time, rows=8))
    stop = lp.run(
        Budget(max_epochs=1.5, num_train=40), schedule=EvalSchedule(1, None, enabled=False), evaluate=evaluate
    )
    assert (stop.state, lp.clock.samples, seen) == ("budget_spent", 64, [])


def test_no_evaluation_at_step_0_when_the_schedule_says_so(fake_time: FakeTime) -> None:
    evaluate, seen = evaluator(fake_time, [0.0] * 10)
    Loop(Engine(fake_time), feed(fake_time)).run(
        Budget(max_steps=4), schedule=EvalSchedule(2, None, at_start=False), evaluate=evaluate
    )
    assert [p["step"] for p in seen] == [2, 4]


def test_region_is_off_while_evaluating_and_at_the_end(fake_time: FakeTime) -> None:
    log: list[str] = []

    class Region:
        def enable(self) -> None:
            log.append("on")

        def disable(self) -> None:
            log.append("off")

    def evaluate(clock: Clock) -> dict[str, Any]:
        log.append(f"eval@{clock.step}")
        return {"p1": 0.0}

    Loop(Engine(fake_time), feed(fake_time)).run(
        Budget(max_steps=2), schedule=EvalSchedule(1, None), evaluate=evaluate, region=Region()
    )
    assert log == ["eval@0", "on", "off", "eval@1", "on", "off", "eval@2", "on", "off"]


def test_epoch_feed_gives_the_harness_order_and_its_fingerprint() -> None:
    rng = np.random.default_rng(0)
    n, bs = 10, 4
    lengths = rng.integers(0, 3, n)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(0, 50, int(indptr[-1])).astype(np.int32)
    x = Csr(indptr, ids, np.arange(len(ids), dtype=np.float32), 50)
    y = Csr(indptr, ids, None, 50)

    fed = EpochFeed(x, y, bs, seed=3)
    want = batch_order(n, bs, 3, 0) + batch_order(n, bs, 3, 1)
    digest = hashlib.sha256()
    for idx in want:
        got = next(fed)
        expected = x.take(idx)
        assert np.array_equal(got.features.indptr, expected.indptr)
        assert np.array_equal(got.features.indices, expected.indices)
        assert np.array_equal(got.features.values, expected.values)
        assert np.array_equal(got.labels.indices, y.take(idx).indices)
        digest.update(idx.astype("<i8").tobytes())
    assert fed.fingerprint() == digest.hexdigest() and fed.epoch == 1
