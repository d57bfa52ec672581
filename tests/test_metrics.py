"""P@k and nDCG@k on hand-worked cases (harness/run/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.run.metrics import hits_matrix, ranking_metrics


def labels_csr(rows: list[list[int]], n_cols: int) -> Csr:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.asarray([i for r in rows for i in sorted(r)], dtype=np.int32)
    return Csr(indptr, indices, None, n_cols)


def d(j: int) -> float:
    """Discount of 0-based rank j."""
    return 1.0 / math.log2(j + 2)


def test_hand_worked_two_rows() -> None:
    # row 0: true {1, 4}; predicted 4, 0, 1, 2, 3 -> hits at ranks 0 and 2
    # row 1: true {3};    predicted 0, 1, 2, 3, 4 -> hit at rank 3
    y = labels_csr([[1, 4], [3]], 6)
    top = np.array([[4, 0, 1, 2, 3], [0, 1, 2, 3, 4]], dtype=np.int32)
    m = ranking_metrics(top, y)
    assert m["p1"] == pytest.approx((1 + 0) / 2)
    assert m["p3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["p5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert m["ndcg1"] == pytest.approx((1.0 + 0.0) / 2)
    ndcg3_row0 = (d(0) + d(2)) / (d(0) + d(1))
    assert m["ndcg3"] == pytest.approx((ndcg3_row0 + 0.0) / 2)
    ndcg5_row1 = d(3) / d(0)  # IDCG@min(5, |y|=1) = 1
    assert m["ndcg5"] == pytest.approx((ndcg3_row0 + ndcg5_row1) / 2)


def test_perfect_and_zero() -> None:
    y = labels_csr([[0, 1, 2], [5]], 8)
    perfect = np.array([[2, 0, 1, 7, 6], [5, 0, 1, 2, 3]], dtype=np.int32)
    m = ranking_metrics(perfect, y)
    assert (
        m["p1"] == 1.0
        and m["ndcg1"] == 1.0
        and m["ndcg3"] == pytest.approx(1.0)
        and m["ndcg5"] == pytest.approx(1.0)
    )
    assert m["p3"] == pytest.approx((1.0 + 1 / 3) / 2)
    wrong = np.array([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]], dtype=np.int32)
    assert all(v == 0.0 for v in ranking_metrics(wrong, y).values())


def test_row_without_labels_counts_as_zero() -> None:
    y = labels_csr([[2], []], 4)
    top = np.array([[2, 0, 1], [2, 0, 1]], dtype=np.int32)
    m = ranking_metrics(top, y, ks=(1, 3))
    assert m["p1"] == pytest.approx(0.5)  # the empty row is in the denominator
    assert m["ndcg1"] == pytest.approx(0.5)


def test_repeated_prediction_counts_once() -> None:
    y = labels_csr([[1]], 4)
    top = np.array([[1, 1, 1]], dtype=np.int32)
    assert hits_matrix(top, y).tolist() == [[True, False, False]]
    assert ranking_metrics(top, y, ks=(3,))["p3"] == pytest.approx(1 / 3)


def test_matches_a_plain_loop_on_random_data() -> None:
    rng = np.random.default_rng(0)
    n, width, k = 200, 30, 5
    rows = [sorted(rng.choice(width, size=rng.integers(0, 6), replace=False).tolist()) for _ in range(n)]
    y = labels_csr(rows, width)
    top = np.stack([rng.permutation(width)[:k] for _ in range(n)]).astype(np.int32)
    m = ranking_metrics(top, y)
    for kk in (1, 3, 5):
        p = np.mean([len(set(top[i, :kk]) & set(rows[i])) / kk for i in range(n)])
        nd = []
        for i in range(n):
            dcg = sum(d(j) for j in range(kk) if top[i, j] in rows[i])
            idcg = sum(d(j) for j in range(min(kk, len(rows[i]))))
            nd.append(dcg / idcg if idcg else 0.0)
        assert m[f"p{kk}"] == pytest.approx(p)
        assert m[f"ndcg{kk}"] == pytest.approx(np.mean(nd))


@pytest.mark.parametrize(
    "top, message",
    [
        (np.array([[0, 9]], dtype=np.int32), "outside"),
        (np.array([[-1, 0]], dtype=np.int32), "outside"),
        (np.array([0, 1], dtype=np.int32), "2-d"),
        (np.array([[0.0, 1.0]]), "integer"),
        (np.array([[0, 1], [1, 0]], dtype=np.int32), "rows"),
    ],
)
def test_bad_input_is_refused(top: np.ndarray, message: str) -> None:
    y = labels_csr([[0]], 4)
    with pytest.raises(ValueError, match=message):
        ranking_metrics(top, y, ks=(1,))


def test_k_larger_than_predictions_is_refused() -> None:
    y = labels_csr([[0]], 4)
    with pytest.raises(ValueError, match="@5 from 3"):
        ranking_metrics(np.array([[0, 1, 2]], dtype=np.int32), y)
