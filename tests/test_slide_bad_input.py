"""Every kind of bad input to the native SLIDE engine raises ValueError with a clear message and
never crashes the process: arrays (dtype, shape, contiguity, CSR structure, sortedness, id ranges,
finiteness, batch sizes), configuration, prediction arguments and model files."""

from __future__ import annotations

import numpy as np
import pytest

try:
    from slide_helpers import native, needs_native
except ImportError:  # pragma: no cover
    from tests.slide_helpers import native, needs_native

pytestmark = needs_native

N_FEATURES, N_LABELS = 20, 10


def _config(**over) -> dict:
    cfg = {
        "num_features": N_FEATURES,
        "layers": [
            {"size": 8},
            {
                "size": N_LABELS,
                "sampled": True,
                "K": 2,
                "L": 4,
                "bucket_bits": 4,
                "bucket_capacity": 8,
                "min_active": 4,
            },
        ],
        "seed": 1,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def net():
    return native().Network(_config())


def _good():
    x = {
        "indptr": np.array([0, 2, 3], np.int64),
        "indices": np.array([1, 5, 19], np.int32),
        "values": np.array([1.0, 0.5, 2.0], np.float32),
    }
    y = {"label_indptr": np.array([0, 1, 3], np.int64), "label_indices": np.array([0, 2, 9], np.int32)}
    return x, y


def test_good_batch_trains(net) -> None:
    x, y = _good()
    loss, active = net.train_batch(**x, **y)
    assert np.isfinite(loss) and active >= 4


BAD_BATCHES = [
    # (change to features or labels, message fragment)
    ({"indices": np.array([1, 5, 19], np.int64)}, "features.indices must have dtype int32"),
    ({"indptr": np.array([0, 2, 3], np.int32)}, "features.indptr must have dtype int64"),
    ({"values": np.array([1.0, 0.5, 2.0], np.float64)}, "features.values must have dtype float32"),
    ({"indices": [1, 5, 19]}, "features.indices must be a numpy array"),
    ({"indices": np.array([[1, 5, 19]], np.int32)}, "must be 1-dimensional"),
    ({"values": np.array([1.0, 9.0, 0.5, 9.0, 2.0, 9.0], np.float32)[::2]}, "C-contiguous"),
    ({"values": np.array([1.0, 0.5], np.float32)}, "features.values has 2 entries, indices has 3"),
    ({"indices": np.array([5, 1, 19], np.int32)}, "strictly increasing"),
    ({"indices": np.array([5, 5, 19], np.int32)}, "strictly increasing"),
    ({"indices": np.array([1, 5, 20], np.int32)}, "id 20 outside [0, 20)"),
    ({"indices": np.array([-1, 5, 19], np.int32)}, "id -1 outside"),
    ({"values": np.array([1.0, np.nan, 2.0], np.float32)}, "non-finite value"),
    ({"values": np.array([1.0, np.inf, 2.0], np.float32)}, "non-finite value"),
    ({"indptr": np.array([1, 2, 3], np.int64)}, "indptr[0] must be 0"),
    ({"indptr": np.array([0, 2, 4], np.int64)}, "must equal the number of indices"),
    ({"indptr": np.array([0, 3, 2, 3], np.int64)}, "non-decreasing"),
    (
        {
            "indptr": np.array([0], np.int64),
            "indices": np.zeros(0, np.int32),
            "values": np.zeros(0, np.float32),
        },
        "batch is empty",
    ),
    ({"indptr": np.zeros(0, np.int64)}, "at least one entry"),
    ({"label_indices": np.array([0, 2, 10], np.int32)}, "labels: row 1 has id 10 outside [0, 10)"),
    ({"label_indices": np.array([0, 9, 2], np.int32)}, "labels: row 1 ids must be strictly increasing"),
    ({"label_indices": np.array([0, 2, 9], np.int64)}, "labels.indices must have dtype int32"),
    ({"label_indptr": np.array([0, 1, 2, 3], np.int64)}, "labels: 3 rows, but features have 2"),
]


@pytest.mark.parametrize(("change", "fragment"), BAD_BATCHES)
def test_bad_batch_refused(net, change: dict, fragment: str) -> None:
    x, y = _good()
    for key, value in change.items():
        (y if key.startswith("label") else x)[key] = value
    step = net.step
    with pytest.raises(ValueError) as err:
        net.train_batch(**x, **y)
    assert fragment in str(err.value)
    assert net.step == step  # refused before any work


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 0}, "k must be in 1..num_labels"),
        ({"k": N_LABELS + 1}, "k must be in 1..num_labels"),
        ({"mode": "fast"}, "mode must be 'exact' or 'lsh'"),
        ({"indices": np.array([1, 5, 25], np.int32)}, "id 25 outside"),
    ],
)
def test_bad_predict_refused(net, kwargs: dict, fragment: str) -> None:
    x, _ = _good()
    args = dict(x, k=3, mode="exact")
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        net.predict_topk(**args)
    assert fragment in str(err.value)


def _layer(**over) -> dict:
    out = {
        "size": N_LABELS,
        "sampled": True,
        "K": 2,
        "L": 4,
        "bucket_bits": 4,
        "bucket_capacity": 8,
        "min_active": 4,
    }
    out.update(over)
    return out


BAD_CONFIGS = [
    ({"num_features": 0}, "num_features must be >= 1"),
    ({"num_features": -3}, "num_features must be >= 1"),
    ({"num_features": 2**40}, "out of range"),
    ({"num_features": "20"}, "num_features has the wrong type"),
    ({"layers": []}, "at least the output layer"),
    ({"layers": "128"}, "'layers' must be a list"),
    ({"layers": [5]}, "layers[0] must be a dict"),
    ({"layers": [{"size": 0}]}, "layers[0].size must be >= 1"),
    ({"layers": [_layer(K=0)]}, "layers[0]"),
    ({"layers": [_layer(L=0)]}, "layers[0]"),
    ({"layers": [_layer(bucket_bits=30)]}, "layers[0]"),
    ({"layers": [_layer(bucket_capacity=0)]}, "bucket_capacity must be >= 1"),
    ({"layers": [_layer(min_active=5, max_active=3)]}, "min_active (5) must not exceed max_active (3)"),
    ({"layers": [_layer(selection="threshold", threshold=9)]}, "threshold must be in 1..L"),
    ({"layers": [_layer(selection="topk")]}, "max_active must be > 0 for selection 'topk'"),
    ({"layers": [_layer(hash="md5")]}, "layers[0].hash"),
    ({"layers": [_layer(insertion="lifo")]}, "layers[0].insertion"),
    ({"layers": [_layer(colour="red")]}, "unknown key 'colour'"),
    ({"layers": [_layer(sampled="yes")]}, "sampled has the wrong type"),
    ({"layers": [{"size": 2**30}, _layer()]}, "model too large"),
    ({"layers": [_layer(L=100, bucket_bits=24, bucket_capacity=2**16)]}, "hash tables would take"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"beta1": 1.0}, "beta1 must be in [0, 1)"),
    ({"eps": 0.0}, "eps must be a finite number > 0"),
    ({"adam": "lazy"}, "adam must be 'sparse' or 'dense'"),
    ({"threads": 0}, "threads must be in 1..4096"),
    ({"rebuild_n0": 0}, "rebuild_n0 must be >= 1"),
    ({"rebuild_decay": -1.0}, "rebuild_decay must be in [0, 10]"),
    ({"rehash_m": -1}, "rehash_m must be >= 0"),
    ({"seed": -1}, "seed = -1 must be >= 0"),
    ({"colour": 1}, "unknown key 'colour'"),
]


@pytest.mark.parametrize(("over", "fragment"), BAD_CONFIGS)
def test_bad_config_refused(over: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        native().Network(_config(**over))
    assert fragment in str(err.value)


def test_bad_weights_and_files_refused(net, tmp_path) -> None:
    with pytest.raises(ValueError, match="layer index 5 out of range"):
        net.get_weights(5)
    with pytest.raises(ValueError, match=r"must be C-contiguous float32 of shape \(20, 8\)"):
        net.set_weights(0, np.zeros((8, 20), np.float32), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="threads must be in 1..4096"):
        net.set_threads(0)
    with pytest.raises(ValueError, match="cannot open model file"):
        native().Network.load(str(tmp_path / "absent.model"))
    bad = tmp_path / "bad.model"
    net.save(str(bad))
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated"):
        native().Network.load(str(bad))
    with pytest.raises(ValueError, match="unknown kernel"):
        native().select_kernel("sse9")
