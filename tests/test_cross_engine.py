"""Cross-engine agreement: from identical weights, one training step gives the same loss and weights.

tf_dense is compared with
  - an independent float64 numpy model with hand-written backprop (tests/tf_numpy_ref.py),
  - the harness's reference engine `numpy_dense` (engines/reference),
  - the native SLIDE engine with every output neuron active (skipped until it is built).
All share the weight layout [W1 (features x hidden), b1, W_out (labels x hidden), b_out] and Adam
as Kingma & Ba's Algorithm 1 with bias correction by the global step.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta
from harness.spec.registry import engine_class

try:
    from tf_numpy_ref import NumpyAdamModel, random_csr
except ImportError:  # tests/ imported as a package
    from tests.tf_numpy_ref import NumpyAdamModel, random_csr

# Skip without importing TF: the engine sets its allocator/oneDNN switches before TF's import.
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow not installed", allow_module_level=True)
pytestmark = pytest.mark.tf

# SlideEngine parameters under which every output neuron is active in training, so its step is the
# exact dense step (engines/slide/__init__.py: min_active >= num_labels activates all; adam "dense"
# is the paper's optimizer; from a fresh state one step of sparse and dense Adam agree anyway).
SLIDE_ALL_ACTIVE: dict = {"min_active": 17, "adam": "dense"}

META = TrainMeta(  # num_labels = SLIDE_ALL_ACTIVE["min_active"]
    num_features=30,
    num_labels=17,
    num_train=12,
    batch_size=12,
    model=ModelSpec(hidden=(8,)),
    optimizer=OptimizerSpec(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8),
    seed=0,
)


def _batch(seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        random_csr(rng, 12, META.num_features, 4, True), random_csr(rng, 12, META.num_labels, 2, None)
    )


def _start_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    shapes = [(30, 8), (8,), (17, 8), (17,)]
    return [(rng.standard_normal(s) * 0.3).astype(np.float32) for s in shapes]


def _one_step(name: str, params: dict, batch: Batch, weights: list[np.ndarray]):
    engine = engine_class(name)(params)
    engine.set_threads(2)
    engine.prepare(META)
    engine.set_weights([w.copy() for w in weights])
    loss = engine.fit_step(batch).loss
    return loss, engine.get_weights()


def _assert_same(loss_a, weights_a, loss_b, weights_b, what: str) -> None:
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-6), f"{what}: loss differs"
    for i, (a, b) in enumerate(zip(weights_a, weights_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=f"{what}: weight {i} differs")


def test_tf_dense_one_step_matches_numpy_model():
    batch, start = _batch(3), _start_weights()
    loss, weights = _one_step("tf_dense", {}, batch, start)
    ref = NumpyAdamModel(start, META.optimizer)
    ref_loss = ref.step(batch.features, batch.labels)
    _assert_same(loss, weights, ref_loss, ref.w, "tf_dense vs numpy model")
    # The step moved the weights (Adam's first step moves each weight with a gradient by ~lr).
    assert np.abs(weights[2] - start[2]).max() > 0.5 * META.optimizer.lr


def test_tf_dense_one_step_matches_reference_engine():
    try:
        engine_class("numpy_dense")
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"engines.reference not importable: {exc}")
    batch, start = _batch(4), _start_weights()
    loss_tf, w_tf = _one_step("tf_dense", {}, batch, start)
    loss_ref, w_ref = _one_step("numpy_dense", {}, batch, start)
    _assert_same(loss_tf, w_tf, loss_ref, w_ref, "tf_dense vs numpy_dense")


def _slide_or_skip():
    try:
        module = importlib.import_module("engines.slide")
        cls = module.SlideEngine
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"SlideEngine not available: {exc}")
    for method in ("get_weights", "set_weights"):
        if not hasattr(cls, method):
            pytest.skip(f"SlideEngine has no {method}() yet")
    try:
        cls.check_params(SLIDE_ALL_ACTIVE)
    except ValueError as exc:
        pytest.skip(f"SlideEngine does not accept the all-active parameters {SLIDE_ALL_ACTIVE}: {exc}")
    return cls


@pytest.mark.parametrize("adam,steps", [("dense", 1), ("dense", 3), ("sparse", 1)])
def test_tf_dense_matches_slide_all_active(adam, steps):
    """One step (the contract) and, with SLIDE's dense Adam, three (bias correction t = 1..3).

    SLIDE's default sparse Adam equals dense Adam only while no row has stale moments, i.e. for
    the first step from a fresh optimiser.
    """
    _slide_or_skip()
    start = _start_weights()
    params = {**SLIDE_ALL_ACTIVE, "adam": adam}
    results = {}
    for name, engine_params in (("tf_dense", {}), ("slide", params)):
        engine = engine_class(name)(engine_params)
        engine.set_threads(2)
        try:
            engine.prepare(META)
        except ImportError as exc:  # the compiled _slide extension is not built
            pytest.skip(f"native extension not importable: {exc}")
        engine.set_weights([w.copy() for w in start])
        losses = [engine.fit_step(_batch(10 + s)).loss for s in range(steps)]
        results[name] = (losses, engine.get_weights())
    (loss_tf, w_tf), (loss_sl, w_sl) = results["tf_dense"], results["slide"]
    for i, (a, b) in enumerate(zip(loss_tf, loss_sl)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), f"step {i + 1}: loss tf_dense {a} vs slide {b}"
    _assert_same(loss_tf[-1], w_tf, loss_sl[-1], w_sl, f"tf_dense vs slide (all outputs active, adam {adam})")
