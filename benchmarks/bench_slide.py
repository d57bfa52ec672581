"""SLIDE-specific costs: LSH hash-table rebuild and top-k prediction (exact versus LSH inference).

- `Tables*.time_rebuild_tables`: one full rebuild of the output layer's hash tables (re-hash every
  neuron's weights into L tables), the periodic cost SLIDE pays to keep tables in step with the
  weights (`rebuild_n0` / `rebuild_decay`). At 670K labels with the default L = 50 this is the
  table memory (~470 MB) refilled.
- `OptionsAmazon670k.{time,peakmem}_fit_step`: a training step at 670K labels for SLIDE's two
  memory-traffic options, `adam_state` (fp32 | bf16 moments) x `padding` (per sample | shared by
  the batch), at 1 and 2 threads: the step is bound by the optimizer's random row traffic, and
  these options change how many bytes per touched row (bf16) and how many rows (batch padding).
- `Predict*.time_predict_topk`: top-5 labels of 256 held-out points. `exact` scores every label (a dense
  hidden x labels product), `lsh` hashes the hidden activation and scores only the retrieved
  candidates: the difference is what LSH inference saves, at the P@k cost reported by the
  accuracy benchmarks and the training runs.

Each process trains `WARMUP_STEPS` steps first, so tables and weights are not at their initial state.
A standalone LSH *query* timing (hash + bucket lookup + candidate union, without scoring) needs a
binding the native module does not expose; `time_predict_topk` with `lsh` includes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .bench_common import SHAPES, THREADS, engine_fixture, load_data

INFERENCE = ["exact", "lsh"]


class _Tables:
    shape = ""
    params: ClassVar[list[list[Any]]] = [THREADS]
    param_names: ClassVar[list[str]] = ["threads"]

    def setup(self, threads: int) -> None:
        fixture = engine_fixture(self.shape, "slide", threads)
        self.net = fixture.engine._net  # the native Network: a rebuild has no Engine-interface call

    def time_rebuild_tables(self, threads: int) -> None:
        self.net.rebuild_tables()


class _Predict:
    shape = ""
    params: ClassVar[list[list[Any]]] = [INFERENCE, THREADS]
    param_names: ClassVar[list[str]] = ["inference", "threads"]

    def setup(self, inference: str, threads: int) -> None:
        self.fixture = engine_fixture(self.shape, "slide", threads, {"inference": inference})

    def time_predict_topk(self, inference: str, threads: int) -> None:
        self.fixture.engine.predict_topk(self.fixture.test_features, 5)


class OptionsAmazon670k:
    params: ClassVar[list[list[Any]]] = [["fp32", "bf16"], ["sample", "batch"], THREADS]
    param_names: ClassVar[list[str]] = ["adam_state", "padding", "threads"]
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 900

    def setup_cache(self) -> None:
        load_data(SHAPES["amazon670k"])

    setup_cache.timeout = 900  # type: ignore[attr-defined]

    def setup(self, adam_state: str, padding: str, threads: int) -> None:
        options = {"adam_state": adam_state, "padding": padding}
        self.fixture = engine_fixture("amazon670k", "slide", threads, options)

    def time_fit_step(self, adam_state: str, padding: str, threads: int) -> None:
        self.fixture.step()

    def peakmem_fit_step(self, adam_state: str, padding: str, threads: int) -> None:
        self.fixture.step()


# Each concrete class defines its own setup_cache: asv keys the cache by module and line, so an
# inherited one would be shared between shapes.


class TablesSmall(_Tables):
    shape = "small"
    timeout = 300

    def setup_cache(self) -> None:
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 600  # type: ignore[attr-defined]


class PredictSmall(_Predict):
    shape = "small"
    timeout = 300

    def setup_cache(self) -> None:
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 600  # type: ignore[attr-defined]


class TablesAmazon670k(_Tables):
    shape = "amazon670k"
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 900

    def setup_cache(self) -> None:
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 900  # type: ignore[attr-defined]


class PredictAmazon670k(_Predict):
    shape = "amazon670k"
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 900

    def setup_cache(self) -> None:
        load_data(SHAPES[self.shape])

    setup_cache.timeout = 900  # type: ignore[attr-defined]
