"""The TF baselines learn real data: P@1 on the Delicious test set (983 labels).

Settings (hidden 128, batch 128, Adam, seed 0, data order from a seeded permutation):
  tf_dense   lr 1e-3, 6 epochs            -> P@1 about 0.65 (threshold 0.60)
  tf_sampled lr 3e-3, 5 epochs, 256 cand. -> P@1 about 0.59-0.63 (threshold 0.55)
About 10-20 s each on 2 threads.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from engines.tf import TFDenseEngine, TFSampledEngine
from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

try:
    from tf_numpy_ref import load_xmc
except ImportError:  # tests/ imported as a package
    from tests.tf_numpy_ref import load_xmc

# Skip without importing TF: the engine sets its allocator/oneDNN switches before TF's import.
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow not installed", allow_module_level=True)
pytestmark = [pytest.mark.tf, pytest.mark.realdata, pytest.mark.slow]


def _delicious() -> Path:
    root = os.environ.get("SLIDEBENCH_DATA")
    if not root:
        pytest.skip("SLIDEBENCH_DATA is not set (the Makefile points it at the shared data sets)")
    path = Path(root) / "delicious"
    if not (path / "delicious_train.txt").is_file():
        pytest.skip(f"Delicious not found under {path}")
    return path


def precision_at_1(top: np.ndarray, labels) -> float:
    return float(np.mean([top[i, 0] in labels.row(i) for i in range(labels.n_rows)]))


@pytest.mark.parametrize(
    "cls,params,lr,epochs,threshold",
    [
        (TFDenseEngine, {}, 1e-3, 6, 0.60),
        (TFSampledEngine, {"num_sampled": 256}, 3e-3, 5, 0.55),
    ],
)
def test_delicious_p_at_1(cls, params, lr, epochs, threshold):
    path = _delicious()
    train_f, train_y = load_xmc(path / "delicious_train.txt")
    test_f, test_y = load_xmc(path / "delicious_test.txt")
    meta = TrainMeta(
        num_features=train_f.n_cols,
        num_labels=train_y.n_cols,
        num_train=train_f.n_rows,
        batch_size=128,
        model=ModelSpec(hidden=(128,)),
        optimizer=OptimizerSpec(lr=lr),
        seed=0,
        label_counts=np.bincount(train_y.indices, minlength=train_y.n_cols),
    )
    engine = cls(params)
    engine.set_threads(2)
    engine.prepare(meta)
    rng = np.random.default_rng(0)
    first_losses, last_losses = [], []
    for epoch in range(epochs):
        order = rng.permutation(train_f.n_rows)
        for start in range(0, len(order), meta.batch_size):
            rows = order[start : start + meta.batch_size]
            loss = engine.fit_step(Batch(train_f.take(rows), train_y.take(rows))).loss
            (first_losses if epoch == 0 else last_losses).append(loss)
    assert np.mean(last_losses[-20:]) < np.mean(first_losses[:5])
    p1 = precision_at_1(engine.predict_topk(test_f, 1), test_y)
    assert p1 >= threshold, f"{cls.name}: P@1 {p1:.3f} < {threshold} after {epochs} epochs at lr {lr}"
