"""The engine contract, checked on every registered engine (harness/spec/engine.py).

An engine whose dependency is not importable or not built (TensorFlow, the native extension) is
skipped with the import error as the reason; any other failure is a failure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.spec import registry
from harness.spec.engine import Batch, Engine, ModelSpec, OptimizerSpec, TrainMeta

N_FEATURES, N_LABELS, K = 40, 25, 5


def engine_or_skip(name: str, params: dict | None = None) -> Engine:
    try:
        cls = registry.engine_class(name)
    except ImportError as exc:
        pytest.skip(f"engine {name!r} not importable: {exc}")
    engine = cls(params or {})
    try:
        threads = engine.set_threads(1)
        engine.prepare(
            TrainMeta(
                num_features=N_FEATURES,
                num_labels=N_LABELS,
                num_train=64,
                batch_size=16,
                model=ModelSpec(hidden=(16,)),
                optimizer=OptimizerSpec(lr=0.01),
                seed=0,
                label_counts=np.arange(N_LABELS) % 5,  # what the harness gives (tf_sampled's sampler)
            )
        )
    except (ImportError, RuntimeError) as exc:  # heavy imports happen in set_threads/prepare by contract
        # An engine may wrap the ImportError of its native module in a clearer RuntimeError.
        if isinstance(exc, ImportError) or isinstance(exc.__cause__, ImportError):
            pytest.skip(f"engine {name!r}: dependency not available or not built: {exc}")
        raise
    engine._contract_threads = threads  # type: ignore[attr-defined]
    return engine


def random_features(n: int, rng: np.random.Generator, nnz: int = 6) -> Csr:
    cols = np.stack([np.sort(rng.choice(N_FEATURES, size=nnz, replace=False)) for _ in range(n)])
    indptr = np.arange(0, n * nnz + 1, nnz, dtype=np.int64)
    values = rng.uniform(0.5, 1.0, size=n * nnz).astype(np.float32)
    return Csr(indptr, cols.ravel().astype(np.int32), values, N_FEATURES)


def constant_labels(n: int, label: int) -> Csr:
    return Csr(np.arange(n + 1, dtype=np.int64), np.full(n, label, dtype=np.int32), None, N_LABELS)


ENGINES = sorted(registry.ENGINES)


@pytest.mark.parametrize("name", ENGINES)
def test_check_params_refuses_unknown_keys(name: str) -> None:
    try:
        cls = registry.engine_class(name)
    except ImportError as exc:
        pytest.skip(f"engine {name!r} not importable: {exc}")
    assert isinstance(cls.check_params({}), dict)
    with pytest.raises(ValueError, match="no_such_parameter"):
        cls.check_params({"no_such_parameter": 1})


@pytest.mark.parametrize("name", ENGINES)
def test_contract(name: str) -> None:
    engine = engine_or_skip(name)
    assert isinstance(engine._contract_threads, int) and engine._contract_threads >= 1  # type: ignore[attr-defined]
    rng = np.random.default_rng(1)
    # Every sample carries label 3: whatever the engine's sampling, it must learn to rank 3 first.
    batch = Batch(random_features(16, rng), constant_labels(16, 3))
    losses = []
    for _ in range(60):
        stats = engine.fit_step(batch)
        losses.append(float(stats.loss))
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], "training on one constant label must lower the loss"

    test_x = random_features(7, rng)
    top = engine.predict_topk(test_x, K)
    assert isinstance(top, np.ndarray) and top.dtype == np.int32 and top.shape == (7, K)
    assert top.min() >= 0 and top.max() < N_LABELS
    assert all(len(set(row)) == K for row in top.tolist()), "ids must be unique within a row"
    assert (top[:, 0] == 3).all(), f"best first: the trained label must be ranked first, got {top[:, 0]}"
    # Best first, consistently: asking for fewer gives a prefix of the same ranking.
    assert np.array_equal(engine.predict_topk(test_x, 1), top[:, :1])
    assert np.array_equal(engine.predict_topk(test_x, 3), top[:, :3])

    info = engine.info()
    assert isinstance(info, dict) and info


@pytest.mark.parametrize("name", ENGINES)
def test_rows_without_labels_do_not_break_training(name: str) -> None:
    engine = engine_or_skip(name)
    rng = np.random.default_rng(2)
    labels = Csr(np.array([0, 1, 1, 2], dtype=np.int64), np.array([4, 5], dtype=np.int32), None, N_LABELS)
    stats = engine.fit_step(Batch(random_features(3, rng), labels))
    assert math.isfinite(float(stats.loss))
