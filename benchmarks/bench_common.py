"""Shared fixtures of the asv suite: workload shapes, data, and one trained-in engine per process.

No benchmarks live here (asv imports this module and finds none). asv runs every benchmark (one
parameter combination) in a fresh process, and re-runs `setup` before every timed sample. A
fresh engine per sample would time the first step after `prepare` (graph tracing, page faults of
fresh weights), not the steady state, and would pay a 670K-label `prepare` per sample. So a
fixture is built once per process and kept in `_FIXTURES`; later `setup` calls find it and return.
Training state carries over between samples: each timed call is the next step of one run.

The project must be importable (`make install` / the asv environment's wheel). Nothing here adds
the checkout to `sys.path`: under `asv continuous` that would time the working tree instead of the
commit asv installed.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("slidebench.benchmarks")

SEED = 0
WARMUP_STEPS = 3  # untimed: tf.function tracing, first-touch page faults, first table fills
THREADS = [1, 2]


@dataclass(frozen=True)
class Shape:
    """A benchmark workload shape: synthetic preset (at `scale` points) and model/batch settings."""

    name: str
    preset: str
    scale: float
    hidden: int = 128
    batch_size: int = 128
    lr: float = 1e-3
    max_batches: int = 32  # batches kept in memory; steps cycle through them


SHAPES: dict[str, Shape] = {
    # The whole `small` preset: 20,000 features, 5,000 labels, 20,000 train / 5,000 test points.
    "small": Shape("small", "small", 1.0),
    # Amazon-670K's width (135,909 features -> 128 -> 670,091 labels) with 2,048 train points:
    # step time and memory depend on the width, not on how many points exist.
    "amazon670k": Shape("amazon670k", "amazon-670k", 2048 / 490_449, lr=1e-4, max_batches=16),
}


def load_data(shape: Shape) -> tuple[Any, Any]:
    """(train, test) of the shape, through harness.datasets.synth's on-disk cache (seeded, deterministic)."""
    from harness.datasets.synth import load_synthetic

    return load_synthetic(shape.preset, scale=shape.scale, seed=SEED)


def skip_if_too_many_threads(threads: int) -> None:
    """asv treats NotImplementedError in setup as 'skipped': more threads than cores says nothing."""
    from harness.run.scaling import core_count

    cores = core_count()
    if threads > cores:
        raise NotImplementedError(f"{threads} threads requested, {cores} core(s) available")


def fix_thread_env(threads: int) -> None:
    """Thread pools that read the environment when they start (OpenMP, TF) get `threads`.

    Effective for libraries not yet loaded in this process; engines' `set_threads` is the call that
    must take effect, and `EngineFixture` checks that it did.
    """
    from harness.run.worker import thread_env

    os.environ.update(thread_env(threads))


@dataclass
class EngineFixture:
    """A prepared engine, its batches and a held-out set, advanced one step per `step()` (one
    `harness.run.loop.Loop` step over the batches, round and round)."""

    engine: Any
    batches: list[Any]
    test_features: Any
    test_labels: Any
    threads: int
    info: dict[str, Any] = field(default_factory=dict)
    loop: Any = None

    def __post_init__(self) -> None:
        from harness.run.loop import Loop

        self.loop = Loop(self.engine, itertools.cycle(self.batches))

    def step(self) -> float:
        return self.loop.step().loss


_FIXTURES: dict[tuple[Any, ...], EngineFixture] = {}


def engine_fixture(
    shape_name: str,
    engine_name: str,
    threads: int,
    params: dict[str, Any] | None = None,
) -> EngineFixture:
    """The process's fixture for (shape, engine, threads, params): built on first use, then reused."""
    key = (shape_name, engine_name, threads, tuple(sorted((params or {}).items())))
    if key not in _FIXTURES:
        _FIXTURES[key] = build_fixture(shape_name, engine_name, threads, params)
    return _FIXTURES[key]


def build_fixture(
    shape_name: str,
    engine_name: str,
    threads: int,
    params: dict[str, Any] | None = None,
    warmup: int = WARMUP_STEPS,
    eval_rows: int = 256,
    max_batches: int | None = None,
    lr: float | None = None,
) -> EngineFixture:
    """A fresh prepared engine after `warmup` steps, with its batches (first epoch's order, at
    most `max_batches`, default the shape's) and `eval_rows` seeded held-out points. `lr`
    replaces the shape's learning rate."""
    skip_if_too_many_threads(threads)
    fix_thread_env(threads)  # before any engine (TensorFlow, the native module) is imported

    import numpy as np

    from harness.run.loop import batch_order, prepare_engine
    from harness.run.loop import eval_rows as eval_subset
    from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

    shape = SHAPES[shape_name]
    train, test = load_data(shape)
    n = train.features.n_rows
    meta = TrainMeta(
        num_features=train.features.n_cols,
        num_labels=train.labels.n_cols,
        num_train=n,
        batch_size=shape.batch_size,
        model=ModelSpec(hidden=(shape.hidden,)),
        optimizer=OptimizerSpec(lr=shape.lr if lr is None else lr),
        seed=SEED,
        label_counts=np.bincount(train.labels.indices, minlength=train.labels.n_cols),
    )
    # Threads are set before prepare: TF's pools are fixed at the first op.
    prepared = prepare_engine(engine_name, params, threads, meta)
    engine = prepared.engine
    if prepared.threads_in_effect != threads:
        raise RuntimeError(
            f"{engine_name}: asked for {threads} threads, the engine reports {prepared.threads_in_effect} in effect"
        )
    order = batch_order(n, shape.batch_size, SEED, 0)[: max_batches or shape.max_batches]
    batches = [Batch(train.features.take(idx), train.labels.take(idx)) for idx in order]
    rows = eval_subset(test.features.n_rows, eval_rows, SEED)
    fixture = EngineFixture(engine, batches, test.features.take(rows), test.labels.take(rows), threads)
    for _ in range(warmup):
        fixture.step()
    fixture.info = dict(engine.info())
    reported = fixture.info.get("threads")
    if isinstance(reported, int) and reported != threads:
        raise RuntimeError(f"{engine_name}: info() reports {reported} threads, {threads} requested")
    # TensorFlow's own view of its pool, read after ops ran: the setting really took effect.
    intra = fixture.info.get("intra_op_threads")
    if isinstance(intra, int) and intra not in (0, threads):
        raise RuntimeError(f"{engine_name}: TensorFlow runs {intra} intra-op threads, {threads} requested")
    log.info(
        "%s/%s/%d threads ready (%d batches, %d eval rows)",
        shape_name,
        engine_name,
        threads,
        len(batches),
        len(rows),
    )
    return fixture
