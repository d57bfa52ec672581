"""Test helpers for the TF engine tests: a dense numpy reference of the model, and small data.

Written independently of engines/tf: plain dense numpy with hand-written backprop, so that an
error shared by the engine's graph code cannot hide here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.datasets.sparse import Csr
from harness.spec.engine import OptimizerSpec


def dense(csr: Csr) -> np.ndarray:
    out = np.zeros((csr.n_rows, csr.n_cols), dtype=np.float64)
    for i in range(csr.n_rows):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        out[i, csr.indices[lo:hi]] = 1.0 if csr.values is None else csr.values[lo:hi]
    return out


class NumpyAdamModel:
    """Float64 model: weights [W1, b1, (Wk, bk)..., W_out (labels x h), b_out]; Adam, Algorithm 1."""

    def __init__(self, weights: list[np.ndarray], opt: OptimizerSpec) -> None:
        self.w = [np.array(a, dtype=np.float64) for a in weights]
        self.m = [np.zeros_like(a) for a in self.w]
        self.v = [np.zeros_like(a) for a in self.w]
        self.t = 0
        self.opt = opt

    def loss_and_grads(self, features: Csr, labels: Csr) -> tuple[float, list[np.ndarray]]:
        x = dense(features)
        y = dense(labels)
        n = x.shape[0]
        counts = y.sum(axis=1, keepdims=True)
        target = np.divide(y, counts, out=np.zeros_like(y), where=counts > 0)
        acts = [x]
        pre = []
        for k in range(0, len(self.w) - 2, 2):
            z = acts[-1] @ self.w[k] + self.w[k + 1]
            pre.append(z)
            acts.append(np.maximum(z, 0.0))
        h = acts[-1]
        o = h @ self.w[-2].T + self.w[-1]
        o_max = o.max(axis=1, keepdims=True)
        lse = (o_max + np.log(np.exp(o - o_max).sum(axis=1, keepdims=True)))[:, 0]
        p = np.exp(o - lse[:, None])
        mass = target.sum(axis=1)
        loss = float(np.sum(mass * lse - (target * o).sum(axis=1)) / n)
        d_o = (mass[:, None] * p - target) / n
        grads = [np.zeros_like(a) for a in self.w]
        grads[-2] = d_o.T @ h
        grads[-1] = d_o.sum(axis=0)
        d_h = d_o @ self.w[-2]
        for layer in reversed(range(len(pre))):
            d_z = d_h * (pre[layer] > 0)
            grads[2 * layer] = acts[layer].T @ d_z
            grads[2 * layer + 1] = d_z.sum(axis=0)
            d_h = d_z @ self.w[2 * layer].T
        return loss, grads

    def step(self, features: Csr, labels: Csr) -> float:
        loss, grads = self.loss_and_grads(features, labels)
        o = self.opt
        self.t += 1
        for i, g in enumerate(grads):
            self.m[i] = o.beta1 * self.m[i] + (1 - o.beta1) * g
            self.v[i] = o.beta2 * self.v[i] + (1 - o.beta2) * g * g
            m_hat = self.m[i] / (1 - o.beta1**self.t)
            v_hat = self.v[i] / (1 - o.beta2**self.t)
            self.w[i] = self.w[i] - o.lr * m_hat / (np.sqrt(v_hat) + o.eps)
        return loss


def random_csr(rng: np.random.Generator, n: int, n_cols: int, mean_per_row: int, values: bool) -> Csr:
    counts = rng.integers(0, 2 * mean_per_row + 1, size=n)
    counts = np.minimum(counts, n_cols)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    parts = [np.sort(rng.choice(n_cols, c, replace=False)) for c in counts]
    idx = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    vals = (rng.random(len(idx)) + 0.5).astype(np.float32) if values else None
    return Csr(indptr, idx, vals, n_cols)


def read_xmc_small(path: Path) -> tuple[Csr, Csr]:
    """Minimal XMC-format reader for the real-data tests (harness.datasets.data.read_xmc preferred)."""
    with open(path) as fh:
        n, n_feat, n_lab = (int(t) for t in fh.readline().split())
        f_ptr, f_idx, f_val, l_ptr, l_idx = [0], [], [], [0], []
        for line in fh:
            line = line.rstrip("\n")
            head, _, rest = line.partition(" ")
            if head and ":" not in head:
                l_idx.extend(int(t) for t in head.split(","))
            else:
                rest = line  # no labels: the line starts with a space (or a feature)
            for tok in rest.split():
                f, v = tok.split(":")
                f_idx.append(int(f))
                f_val.append(float(v))
            f_ptr.append(len(f_idx))
            l_ptr.append(len(l_idx))
    assert len(f_ptr) == n + 1, f"{path}: expected {n} rows, read {len(f_ptr) - 1}"
    features = Csr(np.array(f_ptr, np.int64), np.array(f_idx, np.int32), np.array(f_val, np.float32), n_feat)
    labels = Csr(np.array(l_ptr, np.int64), np.array(l_idx, np.int32), None, n_lab)
    return features, labels


def load_xmc(path: Path) -> tuple[Csr, Csr]:
    try:
        from harness.datasets.data import read_xmc  # the project's parser, once it exists
    except ImportError:
        return read_xmc_small(path)
    ds = read_xmc(path)
    return ds.features, ds.labels
