"""Host-side conversion of harness CSR batches into the flat arrays the TF step functions take.

No TensorFlow here: this is plain numpy, O(nnz), and keeps labels sparse (one entry per
(sample, true label) pair, never a dense [batch, labels] matrix).

For each batch the step functions receive
  feat_idx int32[nnz], feat_val float32[nnz], feat_row int32[nnz]   one entry per stored feature
  lab_idx  int32[P],   lab_row  int32[P],     lab_w   float32[P]    one entry per (sample, label) pair
  n_rows   int32 scalar
where `lab_w` is 1/|y_i| for every pair of sample i: the soft target of the multi-label softmax.
Samples without labels have no pairs and therefore contribute zero loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.datasets.sparse import Csr


@dataclass(frozen=True)
class FeatureArrays:
    idx: np.ndarray  # int32[nnz]
    val: np.ndarray  # float32[nnz]
    row: np.ndarray  # int32[nnz]
    n_rows: int


@dataclass(frozen=True)
class LabelArrays:
    idx: np.ndarray  # int32[P]
    row: np.ndarray  # int32[P]
    weight: np.ndarray  # float32[P], 1/|y_row|


def _row_ids(indptr: np.ndarray) -> np.ndarray:
    n = len(indptr) - 1
    return np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))


def _check_range(idx: np.ndarray, n: int, what: str) -> None:
    # tf.gather on a GPU returns zeros for an out-of-range id instead of failing: refuse it here.
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{what} id out of range [0, {n}): min {int(idx.min())}, max {int(idx.max())}")


def _pad_length(n: int) -> int:
    """Next power of two (at least 64): XLA compiles once per shape, so bucket the lengths."""
    return max(64, 1 << max(0, int(n - 1).bit_length()))


def _pad(arr: np.ndarray, length: int, fill: float) -> np.ndarray:
    if len(arr) == length:
        return arr
    out = np.full(length, fill, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


def feature_arrays(features: Csr, num_features: int, pad: bool = False) -> FeatureArrays:
    """Flat feature arrays; with `pad`, lengths rounded up to a power of two by zero-valued entries.

    Padding entries repeat the batch's first (row, feature) pair with value 0: they add nothing to
    the hidden layer, and because they name a row already present they do not widen the set of
    input rows a lazy optimiser touches.
    """
    if features.n_cols != num_features:
        raise ValueError(
            f"batch has {features.n_cols} feature columns, the model was prepared for {num_features}"
        )
    idx = features.indices
    _check_range(idx, num_features, "feature")
    val = features.values if features.values is not None else np.ones(len(idx), dtype=np.float32)
    row = _row_ids(features.indptr)
    if pad:
        length = _pad_length(len(idx))
        first_idx = int(idx[0]) if len(idx) else 0
        first_row = int(row[0]) if len(row) else 0
        idx = _pad(idx, length, first_idx)
        val = _pad(val, length, 0.0)
        row = _pad(row, length, first_row)
    return FeatureArrays(idx, val, row, features.n_rows)


def label_arrays(labels: Csr, num_labels: int, n_rows: int, pad: bool = False) -> LabelArrays:
    """Flat (sample, label) pairs with weight 1/|y_sample|; padding pairs get weight 0."""
    if labels.n_cols != num_labels:
        raise ValueError(f"batch has {labels.n_cols} label columns, the model was prepared for {num_labels}")
    if labels.n_rows != n_rows:
        raise ValueError(f"batch has {n_rows} feature rows but {labels.n_rows} label rows")
    _check_range(labels.indices, num_labels, "label")
    counts = np.diff(labels.indptr)
    row = _row_ids(labels.indptr)
    # 1/|y| per pair; rows with no labels produce no pairs, so no division by zero reaches a pair.
    inv = np.divide(1.0, counts, out=np.zeros(len(counts), dtype=np.float64), where=counts > 0)
    weight = np.repeat(inv.astype(np.float32), counts)
    idx = labels.indices
    if pad:
        length = _pad_length(len(idx))
        idx = _pad(idx, length, int(idx[0]) if len(idx) else 0)
        row = _pad(row, length, int(row[0]) if len(row) else 0)
        weight = _pad(weight, length, 0.0)
    return LabelArrays(idx, row, weight)
