"""`numpy_dense`: the exact dense model in vectorised numpy — the correctness oracle.

Same math as every contender: sparse input x W1 + b1, ReLU (for each hidden layer), a full
softmax over all labels, a target of 1/|y| on each true label (a row without labels has no target
and no gradient), mean cross-entropy over the batch, Adam with bias correction on every parameter.
Deterministic given the seed (single-threaded BLAS is not required: numpy's matmul results do not
depend on the thread count for these shapes in practice, and the tests compare with tolerances).

Weights, for oracle comparisons, in the layout ``[W1 (features x hidden), b1, W_h..., b_h...,
W_out (labels x hidden), b_out]`` via `get_weights` / `set_weights` (extras beyond the interface).

Test hooks (engine parameters, off by default) let the harness tests exercise its failure paths
with a real engine: ``nan_at_step`` (report a NaN loss at that 1-based step), ``raise_at_step``
(raise), ``sleep_per_step`` (seconds; makes a run slow enough to be killed mid-way).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from harness.datasets.sparse import Csr, check_batch
from harness.spec.engine import Batch, Engine, StepStats, TrainMeta, check_keys

VERSION = "1.0"


def _to_scipy(x: Csr) -> sp.csr_matrix:
    values = x.values if x.values is not None else np.ones(x.nnz, dtype=np.float32)
    return sp.csr_matrix((values, x.indices, x.indptr), shape=(x.n_rows, x.n_cols))


def topk_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """int32[n, k] column ids of the k largest scores per row, best first; ties -> lower id first."""
    n, width = scores.shape
    if not 1 <= k <= width:
        raise ValueError(f"k must be in [1, {width}], got {k}")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < width else np.tile(np.arange(width), (n, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=1).astype(np.int32)


class NumpyDenseEngine(Engine):
    name = "numpy_dense"

    DEFAULTS: Mapping[str, Any] = {
        "init_scale": 1.0,  # multiplies the Glorot standard deviation
        "nan_at_step": -1,
        "raise_at_step": -1,
        "sleep_per_step": 0.0,
    }

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        out = check_keys(params, cls.DEFAULTS, "numpy_dense")
        if out["init_scale"] <= 0:
            raise ValueError(f"numpy_dense: parameter 'init_scale' must be > 0, got {out['init_scale']}")
        if out["sleep_per_step"] < 0:
            raise ValueError(
                f"numpy_dense: parameter 'sleep_per_step' must be >= 0, got {out['sleep_per_step']}"
            )
        return out

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._threads = 1
        self._limiter: Any = None
        self._weights: list[np.ndarray] = []
        self._m: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._t = 0
        self._meta: TrainMeta | None = None

    # -- interface -------------------------------------------------------------------------

    def set_threads(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        try:
            from threadpoolctl import threadpool_limits

            self._limiter = threadpool_limits(limits=n)
        except ImportError:  # the worker's environment variables already fix BLAS threads
            self._limiter = None
        self._threads = n
        return n

    def prepare(self, meta: TrainMeta) -> None:
        if meta.model.activation != "relu":
            raise ValueError(f"numpy_dense supports relu only, got {meta.model.activation!r}")
        _check_meta(meta)
        self._meta = meta
        rng = np.random.default_rng(meta.seed)
        sizes = [meta.num_features, *meta.model.hidden]
        weights: list[np.ndarray] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            std = self.params["init_scale"] * np.sqrt(2.0 / (fan_in + fan_out))
            weights += [
                (rng.standard_normal((fan_in, fan_out)) * std).astype(np.float32),
                np.zeros(fan_out, np.float32),
            ]
        hidden = sizes[-1]
        std = self.params["init_scale"] * np.sqrt(2.0 / (hidden + meta.num_labels))
        weights += [
            (rng.standard_normal((meta.num_labels, hidden)) * std).astype(np.float32),
            np.zeros(meta.num_labels, np.float32),
        ]
        self.set_weights(weights)

    def fit_step(self, batch: Batch) -> StepStats:
        if self._meta is None:
            raise RuntimeError("numpy_dense: fit_step before prepare")
        step = self._t + 1
        if step == self.params["raise_at_step"]:
            raise RuntimeError(f"numpy_dense: raise_at_step={step} (test hook)")
        if self.params["sleep_per_step"] > 0:
            time.sleep(self.params["sleep_per_step"])
        loss, grads = self.loss_and_grads(batch)
        self._adam(grads)
        if step == self.params["nan_at_step"]:
            loss = float("nan")
        return StepStats(loss=loss, active_outputs=float(self._meta.num_labels))

    def predict_topk(self, features: Csr, k: int) -> np.ndarray:
        num_features, num_labels = self._shape()
        if not 1 <= k <= num_labels:
            raise ValueError(f"k must be in 1..num_labels ({num_labels}), got {k}")
        check_batch(features, None, num_features, num_labels)
        logits, _ = self._forward(_to_scipy(features))
        return topk_desc(logits, k)

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "version": VERSION,
            "numpy": np.__version__,
            "device": "cpu",
            "threads": self._threads,
            "exact": True,
        }

    # -- oracle extras ---------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self._weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace every parameter (layout in the module docstring) and reset Adam's state."""
        if self._weights and [w.shape for w in weights] != [w.shape for w in self._weights]:
            raise ValueError("set_weights: shapes differ from the model's")
        for i, w in enumerate(weights):
            if not np.all(np.isfinite(w)):
                which = "weights" if i % 2 == 0 else "bias"
                raise ValueError(f"set_weights: layer {i // 2} {which} has a non-finite value")
        self._weights = [np.ascontiguousarray(w, dtype=np.float32).copy() for w in weights]
        self._m = [np.zeros_like(w) for w in self._weights]
        self._v = [np.zeros_like(w) for w in self._weights]
        self._t = 0

    def loss_and_grads(self, batch: Batch) -> tuple[float, list[np.ndarray]]:
        """Mean loss over the batch and the gradient of every parameter (no update)."""
        check_batch(batch.features, batch.labels, *self._shape())
        x = _to_scipy(batch.features)
        n = x.shape[0]
        logits, acts = self._forward(x)
        z = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        logp = z - lse
        counts = np.diff(batch.labels.indptr)
        rows = np.repeat(np.arange(n), counts)
        share = np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)
        loss = float(-(share * logp[rows, batch.labels.indices]).sum() / n)
        # d(loss)/d(logits) = (softmax * sum(target) - target) / n; sum(target) is 1, or 0 without labels.
        dz = np.exp(logp) * (counts > 0)[:, None].astype(np.float32)
        dz[rows, batch.labels.indices] -= share  # ids are unique within a row
        dz /= n
        grads: list[np.ndarray] = [np.empty(0)] * len(self._weights)
        w_out = self._weights[-2]
        grads[-2] = dz.T @ acts[-1]
        grads[-1] = dz.sum(axis=0)
        delta = (dz @ w_out) * (acts[-1] > 0)
        for layer in range(len(acts) - 1, -1, -1):
            prev = x if layer == 0 else acts[layer - 1]
            gw = prev.T @ delta
            grads[2 * layer] = np.asarray(gw, dtype=np.float32)
            grads[2 * layer + 1] = delta.sum(axis=0)
            if layer > 0:
                delta = (delta @ self._weights[2 * layer].T) * (acts[layer - 1] > 0)
        return loss, [g.astype(np.float32, copy=False) for g in grads]

    # -- internals -------------------------------------------------------------------------

    def _shape(self) -> tuple[int, int]:
        """(num_features, num_labels) of the model, from its weights."""
        if not self._weights:
            raise RuntimeError("numpy_dense: used before prepare")
        return self._weights[0].shape[0], self._weights[-1].shape[0]

    def _forward(self, x: sp.csr_matrix) -> tuple[np.ndarray, list[np.ndarray]]:
        if not self._weights:
            raise RuntimeError("numpy_dense: used before prepare")
        acts: list[np.ndarray] = []
        h: Any = x
        for layer in range((len(self._weights) - 2) // 2):
            w, b = self._weights[2 * layer], self._weights[2 * layer + 1]
            h = np.maximum(np.asarray(h @ w, dtype=np.float32) + b, 0.0)
            acts.append(h)
        logits = h @ self._weights[-2].T + self._weights[-1]
        return logits.astype(np.float32, copy=False), acts

    def _adam(self, grads: list[np.ndarray]) -> None:
        opt = self._meta.optimizer if self._meta is not None else None
        lr, b1, b2, eps = (opt.lr, opt.beta1, opt.beta2, opt.eps) if opt else (1e-3, 0.9, 0.999, 1e-8)
        self._t += 1
        c1, c2 = 1.0 - b1**self._t, 1.0 - b2**self._t
        for w, g, m, v in zip(self._weights, grads, self._m, self._v, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            w -= (lr / c1) * m / (np.sqrt(v / c2) + eps)


def _check_meta(meta: TrainMeta) -> None:
    """Refuse the shapes and Adam settings the native SLIDE engine refuses (core/validate.cpp), with
    the same wording (numbers as C++ prints them, hence :g): the oracle must not train where the
    engine under test would not."""
    if meta.num_features < 1:
        raise ValueError(f"numpy_dense: num_features must be >= 1, got {meta.num_features}")
    for i, size in enumerate((*meta.model.hidden, meta.num_labels)):
        if size < 1:
            raise ValueError(f"numpy_dense: layers[{i}].size must be >= 1, got {size}")
    o = meta.optimizer
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise ValueError(f"numpy_dense: optimizer.lr must be a finite number > 0, got {o.lr:g}")
    if not 0 <= o.beta1 < 1:
        raise ValueError(f"numpy_dense: optimizer.beta1 must be in [0, 1), got {o.beta1:g}")
    if not 0 <= o.beta2 < 1:
        raise ValueError(f"numpy_dense: optimizer.beta2 must be in [0, 1), got {o.beta2:g}")
    if not (math.isfinite(o.eps) and o.eps > 0):
        raise ValueError(f"numpy_dense: optimizer.eps must be a finite number > 0, got {o.eps:g}")
