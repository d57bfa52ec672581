"""Training step time and peak memory, per engine x threads, at two shapes.

- `FitStepSmall`: the `small` preset (20,000 features -> 128 -> 5,000 labels, batch 128).
- `FitStepAmazon670k`: Amazon-670K's width (135,909 features -> 128 -> 670,091 labels, batch 128)
  on 2,048 synthetic points; tf_dense is about a second per step here, so one call per sample.

`time_fit_step` is one `fit_step` (steady state: the process's engine has already taken
`WARMUP_STEPS` untimed steps, and each sample takes the next batch). `peakmem_fit_step` is the
peak resident memory of a process that loaded the data, prepared the engine and trained: the
model, optimizer state, hash tables and framework overheads together.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .bench_common import SHAPES, THREADS, engine_fixture, load_data

ENGINES = ["slide", "tf_dense", "tf_sampled"]


class _FitStep:
    """Shared benchmark methods; each subclass names its shape and defines its own `setup_cache`
    (asv keys the cache by the function's module and line: an inherited one would be shared)."""

    shape = ""
    params: ClassVar[list[list[Any]]] = [ENGINES, THREADS]
    param_names: ClassVar[list[str]] = ["engine", "threads"]

    def setup(self, engine: str, threads: int) -> None:
        self.fixture = engine_fixture(self.shape, engine, threads)

    def time_fit_step(self, engine: str, threads: int) -> None:
        self.fixture.step()

    def peakmem_fit_step(self, engine: str, threads: int) -> None:
        self.fixture.step()


class FitStepSmall(_FitStep):
    shape = "small"
    timeout = 300

    def setup_cache(self) -> None:
        # Generates (or finds) the synthetic data once, in its own process, so the on-disk cache
        # is warm before any timed process starts; every later load is a cache hit.
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 600  # type: ignore[attr-defined]


class FitStepAmazon670k(_FitStep):
    shape = "amazon670k"
    # tf_dense: ~1 s per step at 670K labels plus a long prepare; a handful of samples suffices.
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 900

    def setup_cache(self) -> None:
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 900  # type: ignore[attr-defined]
