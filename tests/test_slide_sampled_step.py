"""One *sampled* training step of the SLIDE engine against numpy over the same active set.

The other gradient checks run with every output active (full softmax). This one keeps the output
layer sampled (LSH union padded to min_active, labels forced in) and checks the step that the
Amazon-670K-width investigation depends on: the loss over the active set, the Adam update of every
active output row and bias, that no inactive row moves, and the hidden layer's lazy update of the
touched feature rows and its bias. With a batch of one sample the active set is recoverable from
the weights alone: exactly the output rows whose bias moved (every active neuron has a non-zero
softmax gradient). At Adam's first step the update is lr * g / (|g| + eps); eps is set large so the
check sees the gradient's magnitude, not only its sign.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.spec.engine import Batch

try:  # tests/ is on sys.path under pytest's default import mode; the package path otherwise
    from slide_helpers import engine, learnable, meta, needs_native
except ImportError:  # pragma: no cover
    from tests.slide_helpers import engine, learnable, meta, needs_native

LR, EPS = 1e-2, 1e-3


def _adam_first_step(g: np.ndarray) -> np.ndarray:
    return LR * g / (np.abs(g) + EPS)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))


@needs_native
@pytest.mark.parametrize(("hash_kind", "adam"), [("dwta", "sparse"), ("simhash", "sparse"), ("dwta", "dense")])
def test_sampled_step_matches_numpy(hash_kind: str, adam: str) -> None:
    n_features, n_labels, min_active = 400, 3000, 64
    rng = np.random.default_rng(7)
    data = learnable(rng, 8, n_features, n_labels, 20)
    for row in range(3):
        e = engine(
            {"hash": hash_kind, "adam": adam, "min_active": min_active, "init_std": 0.1},
            meta(n_features, n_labels, hidden=(16,), lr=LR, eps=EPS, seed=row),
        )
        f, y = data.features.take(np.array([row])), data.labels.take(np.array([row]))
        W1, b1, W2, b2 = (w.copy() for w in e.get_weights())
        stats = e.fit_step(Batch(f, y))
        V1, c1, V2, c2 = e.get_weights()

        active = np.flatnonzero(c2 != b2)
        assert len(active) == stats.active_outputs  # (LSH union + labels may exceed min_active)
        assert min_active <= len(active) < n_labels // 4, "the output layer must really be sampled"
        assert set(y.indices.tolist()) <= set(active.tolist()), "labels must be forced into the active set"

        x = np.zeros(n_features)
        x[f.indices] = f.values
        pre = x @ W1.astype(np.float64) + b1
        h = np.maximum(pre, 0.0)
        z = W2[active].astype(np.float64) @ h + b2[active]
        lse = z.max() + np.log(np.exp(z - z.max()).sum())
        pos = np.searchsorted(active, y.indices)
        assert stats.loss == pytest.approx(lse - z[pos].mean(), rel=1e-5)

        dz = np.exp(z - lse)
        dz[pos] -= 1.0 / len(pos)
        dh = (W2[active].T.astype(np.float64) @ dz) * (pre > 0)
        assert _rel(V2[active] - W2[active], -_adam_first_step(np.outer(dz, h))) < 1e-4
        assert _rel(c2[active] - b2[active], -_adam_first_step(dz)) < 1e-4
        # (dense Adam at its first step has zero moments, so untouched rows stay put there too)
        assert not np.any(np.delete(V2 - W2, active, axis=0)), "an inactive output row moved"
        assert _rel(V1[f.indices] - W1[f.indices], -_adam_first_step(np.outer(x[f.indices], dh))) < 1e-4
        assert not np.any(np.delete(V1 - W1, f.indices, axis=0)), "an untouched feature row moved"
        assert _rel(c1 - b1, -_adam_first_step(dh)) < 1e-4

