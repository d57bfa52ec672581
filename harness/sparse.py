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
