"""Shared helpers of the tests/test_slide_*.py files: skip markers and small engines and data."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

HAVE_NATIVE = importlib.util.find_spec("engines.slide._slide") is not None
needs_native = pytest.mark.skipif(
    not HAVE_NATIVE, reason="engines.slide._slide is not built (run `make install`)"
)


def native() -> Any:
    from engines.slide import _native

    return _native()


def learnable(rng: np.random.Generator, n: int, n_features: int, n_labels: int, nnz: int) -> Batch:
    """Each point has a topic label (plus its neighbour) and features mostly from the topic's block."""
    block = max(1, n_features // n_labels)
    f_ptr, f_idx, l_ptr, l_idx = [0], [], [0], []
    for _ in range(n):
        topic = int(rng.integers(n_labels))
        own = (topic * block + rng.integers(block, size=nnz)) % n_features
        noise = rng.integers(n_features, size=max(1, nnz // 4))
        ids = np.unique(np.concatenate([own, noise]))
        f_idx.extend(ids.tolist())
        f_ptr.append(len(f_idx))
        l_idx.extend(sorted({topic, (topic + 1) % n_labels}))
        l_ptr.append(len(l_idx))
    vals = (0.5 + rng.random(len(f_idx))).astype(np.float32)
    x = Csr(np.array(f_ptr, np.int64), np.array(f_idx, np.int32), vals, n_features)
    y = Csr(np.array(l_ptr, np.int64), np.array(l_idx, np.int32), None, n_labels)
    return Batch(x, y)


_ZEROS: Any = object()


def meta(
    n_features: int,
    n_labels: int,
    hidden: tuple[int, ...] = (16,),
    lr: float = 1e-3,
    eps: float = 1e-8,
    seed: int = 0,
    label_counts: Any = _ZEROS,
) -> TrainMeta:
    """Label counts default to zeros, as if no label had been seen: the engine's default
    frequency-drawn padding then draws every label alike. None: no counts given."""
    counts = np.zeros(n_labels, np.int64) if label_counts is _ZEROS else label_counts
    return TrainMeta(
        n_features,
        n_labels,
        1000,
        32,
        ModelSpec(hidden),
        OptimizerSpec(lr=lr, eps=eps),
        seed=seed,
        label_counts=counts,
    )


def engine(params: dict[str, Any], m: TrainMeta, threads: int = 1) -> Any:
    from engines.slide import SlideEngine

    e = SlideEngine(params)
    e.set_threads(threads)
    e.prepare(m)
    return e


def native_config(
    n_features: int, n_labels: int, hidden: tuple[int, ...] = (8,), seed: int = 1, **params: Any
) -> dict:
    """The complete config dict the binding takes (it requires every key), from the engine's DEFAULTS."""
    from engines.slide import SlideEngine

    return SlideEngine(SlideEngine.check_params(params)).native_config(
        meta(n_features, n_labels, hidden, seed=seed)
    )


def all_weights(e: Any) -> list[np.ndarray]:
    net = e._net
    out = []
    for i in range(len(net.layer_shapes())):
        w, b = net.get_weights(i)
        out += [w, b]
    return out


def candidates_after_save_and_load(e: Any, features: Csr, path: Any) -> tuple[np.ndarray, np.ndarray]:
    """Saves the engine's network to `path`, loads it back, and checks that the loaded network
    retrieves the same LSH candidates (indptr, ids) for `features`; returns them."""
    e._net.save(str(path))
    back = native().Network.load(str(path))
    want = e._net.lsh_candidates(features.indptr, features.indices, features.values)
    again = back.lsh_candidates(features.indptr, features.indices, features.values)
    assert np.array_equal(again[0], want[0]) and np.array_equal(again[1], want[1])
    return want


def assert_first_adam_step(before, after, ids, feature_ids, x, h, dz, dh, lr: float, eps: float) -> None:
    """One hidden layer, one sample, Adam's first step: every weight moved by -lr g / (|g| + eps).

    `before`/`after` are [W1, b1, W2, b2]; `ids` the active outputs, `dz` the loss gradient of their
    logits, `dh` that of the hidden pre-activations. Output rows outside `ids` must not move.
    """
    W1, b1, W2, b2 = (w.astype(np.float64) for w in before)
    V1, c1, V2, c2 = after

    def moved(g: np.ndarray) -> np.ndarray:
        return -lr * g / (np.abs(g) + eps)

    def rel(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))

    assert rel(V2[ids] - W2[ids], moved(np.outer(dz, h))) < 1e-4
    assert rel(c2[ids] - b2[ids], moved(dz)) < 1e-4
    assert not np.any(np.delete(V2 - before[2], ids, axis=0)), "an inactive output row moved"
    assert rel(V1[feature_ids] - W1[feature_ids], moved(np.outer(x[feature_ids], dh))) < 1e-4
    assert rel(c1 - b1, moved(dh)) < 1e-4
