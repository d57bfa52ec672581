"""The one sparse container the harness hands around: a CSR matrix with fixed dtypes.

A tiny frozen dataclass instead of scipy.sparse so that every engine sees exactly the same dtypes
(int64 indptr, int32 indices, float32 values) and nothing is converted on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Csr:
    """Rows of sparse ids with optional values (labels carry no values)."""

    indptr: np.ndarray  # int64, shape (n_rows + 1,)
    indices: np.ndarray  # int32, shape (nnz,), sorted and unique within each row
    values: np.ndarray | None  # float32, shape (nnz,), or None for binary rows (labels)
    n_cols: int

    def __post_init__(self) -> None:
        if self.indptr.dtype != np.int64 or self.indptr.ndim != 1 or len(self.indptr) < 1:
            raise ValueError("Csr.indptr must be a 1-d int64 array with at least one entry")
        if self.indices.dtype != np.int32 or self.indices.ndim != 1:
            raise ValueError("Csr.indices must be a 1-d int32 array")
        if self.values is not None and (self.values.dtype != np.float32 or self.values.shape != self.indices.shape):
            raise ValueError("Csr.values must be float32 with the same shape as indices")
        if int(self.indptr[0]) != 0 or int(self.indptr[-1]) != len(self.indices):
            raise ValueError("Csr.indptr must start at 0 and end at nnz")

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def take(self, rows: np.ndarray) -> Csr:
        """The given rows, in the given order (used to build minibatches and evaluation subsets)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # One gather index for all rows: position j of output row r reads starts[r] + j.
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        values = None if self.values is None else self.values[gather]
        return Csr(indptr, self.indices[gather], values, self.n_cols)


# --------------------------------------------------------------------------------------------------
# Batch validation for engines written in Python. The native SLIDE engine refuses bad batches in C++
# (engines/slide/core/validate.cpp); an engine that must refuse exactly the same inputs (the numpy
# oracle) calls `check_batch`, which makes the same checks in the same order with the same messages.


def check_batch(features: Csr, labels: Csr | None, num_features: int, num_labels: int) -> None:
    """Raise ValueError for a batch a model of this shape cannot take: empty, a declared width other
    than the model's, mismatched row counts, or a malformed CSR (see `check_csr`). `labels` None: an
    inference batch."""
    if features.n_rows < 1:
        raise ValueError("features: the batch is empty (0 rows)")
    if features.n_cols != num_features:
        raise ValueError(
            f"features: {features.n_cols} columns, but the network has num_features = {num_features}"
        )
    check_csr(features, "features")
    if labels is None:
        return
    if labels.n_rows != features.n_rows:
        raise ValueError(f"labels: {labels.n_rows} rows, but features have {features.n_rows}")
    if labels.n_cols != num_labels:
        raise ValueError(f"labels: {labels.n_cols} columns, but the network has num_labels = {num_labels}")
    check_csr(labels, "labels")


def check_csr(m: Csr, what: str) -> None:
    """Raise ValueError unless `m` is well formed: dtypes, indptr from 0 to nnz and non-decreasing,
    ids in [0, n_cols) and strictly increasing within each row, values finite. The arrays are checked
    as they are now (a frozen Csr's arrays can still be changed in place after construction)."""
    for name, arr, dtype in (("indptr", m.indptr, np.int64), ("indices", m.indices, np.int32)):
        if arr.dtype != dtype or arr.ndim != 1:
            raise ValueError(
                f"{what}.{name} must be a 1-dimensional {np.dtype(dtype)} array, got {arr.dtype}"
            )
    if len(m.indptr) < 1:
        raise ValueError(f"{what}.indptr must have at least one entry")
    ptr, idx, nnz = m.indptr, m.indices, len(m.indices)
    if m.values is not None and (m.values.dtype != np.float32 or m.values.shape != idx.shape):
        raise ValueError(f"{what}.values must be float32 with one entry per index")
    if ptr[0] != 0:
        raise ValueError(f"{what}: indptr[0] must be 0, got {ptr[0]}")
    if ptr[-1] != nnz:
        raise ValueError(f"{what}: indptr[-1] ({ptr[-1]}) must equal the number of indices ({nnz})")
    # The first malformed row (its span decreasing or past nnz); entries are checked only in the rows
    # before it, where indptr is known to be sound, so the first error reported is the one a row by
    # row scan meets first.
    bad_span = np.flatnonzero((ptr[1:] < ptr[:-1]) | (ptr[1:] > nnz))
    sound = int(bad_span[0]) if len(bad_span) else m.n_rows  # rows 0..sound-1 are well formed
    ptr_ok = ptr[: sound + 1]
    end = int(ptr_ok[-1])
    ids = idx[:end]
    out_of_range = (ids < 0) | (ids >= m.n_cols)
    row_start = np.zeros(end, dtype=bool)
    row_start[ptr_ok[:-1][ptr_ok[:-1] < end]] = True
    unordered = np.zeros(end, dtype=bool)
    unordered[1:] = ids[1:] <= ids[:-1]
    unordered &= ~row_start
    non_finite = ~np.isfinite(m.values[:end]) if m.values is not None else np.zeros(end, dtype=bool)
    bad = np.flatnonzero(out_of_range | unordered | non_finite)
    if len(bad):
        i = int(bad[0])
        row = int(np.searchsorted(ptr_ok, i, side="right")) - 1
        if out_of_range[i]:
            raise ValueError(f"{what}: row {row} has id {ids[i]} outside [0, {m.n_cols})")
        if unordered[i]:
            raise ValueError(
                f"{what}: row {row} ids must be strictly increasing (sorted, no duplicates); "
                f"{ids[i - 1]} is followed by {ids[i]}"
            )
        raise ValueError(f"{what}: row {row} id {ids[i]} has a non-finite value ({m.values[i]:g})")
    if sound < m.n_rows:
        raise ValueError(
            f"{what}: indptr must be non-decreasing and within [0, nnz]; "
            f"row {sound} spans [{ptr[sound]}, {ptr[sound + 1]})"
        )


def vstack(parts: list[Csr], n_cols: int, with_values: bool) -> Csr:
    """Row blocks stacked into one matrix (values dropped unless `with_values`: label matrices)."""
    indptr = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for part in parts:
        indptr.append(part.indptr[1:] + offset)
        offset += part.nnz
    indices = np.concatenate([part.indices for part in parts])
    values = np.concatenate([part.values for part in parts]) if with_values else None
    return Csr(np.concatenate(indptr), indices, values, n_cols)
