"""Ranking metrics shared by every engine: P@k and nDCG@k from top-k label ids.

Engines never grade themselves: they return int32 top-k ids (best first) and this one function
scores them against the true label rows, so a difference between engines cannot come from two
implementations of the metric.

Definitions (the Extreme Classification Repository's):

- ``P@k = |top_k ∩ y| / k``, averaged over rows.
- ``DCG@k = sum_{j<k} [top_j ∈ y] / log2(j + 2)``;
  ``nDCG@k = DCG@k / IDCG@min(k, |y|)``, where ``IDCG@m = sum_{j<m} 1 / log2(j + 2)``.
- A row with no true labels scores 0 on every metric and still counts in the average (it is a
  point the model cannot get right; dropping it would flatter every engine equally, but silently
  change the denominator from the published convention of "all test points").
- A label id repeated within one row of ``topk`` counts once (the first occurrence), so an engine
  cannot inflate its score by repeating a correct label.
"""

from __future__ import annotations

import numpy as np

from harness.datasets.sparse import Csr

DEFAULT_KS: tuple[int, ...] = (1, 3, 5)


def hits_matrix(topk: np.ndarray, labels: Csr) -> np.ndarray:
    """bool[n, k]: whether topk[i, j] is a true label of row i (repeats after the first are False)."""
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise ValueError(f"topk must be 2-d (rows x k), got shape {topk.shape}")
    if not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must hold integer label ids, got dtype {topk.dtype}")
    n, k = topk.shape
    if n != labels.n_rows:
        raise ValueError(f"topk has {n} rows but the label matrix has {labels.n_rows}")
    if n == 0 or k == 0:
        return np.zeros((n, k), dtype=bool)
    lo, hi = int(topk.min()), int(topk.max())
    if lo < 0 or hi >= labels.n_cols:
        raise ValueError(f"topk holds label ids outside [0, {labels.n_cols}): min {lo}, max {hi}")
    # Every (row, label) pair becomes one int64 key; CSR rows are sorted and unique, so the true
    # keys are already sorted and one searchsorted answers every membership question at once.
    width = np.int64(labels.n_cols)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(labels.indptr))
    true_keys = rows * width + labels.indices.astype(np.int64)
    query = np.arange(n, dtype=np.int64)[:, None] * width + topk.astype(np.int64)
    if len(true_keys) == 0:
        return np.zeros((n, k), dtype=bool)
    pos = np.searchsorted(true_keys, query)
    hits = true_keys[np.minimum(pos, len(true_keys) - 1)] == query
    if k > 1:
        # Drop repeats: sort each row's ids, mark an id equal to its left neighbour as a repeat,
        # and scatter the mark back to the original (later) position.
        order = np.argsort(topk, axis=1, kind="stable")
        sorted_ids = np.take_along_axis(topk, order, axis=1)
        repeat_sorted = np.zeros_like(hits)
        repeat_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
        repeat = np.zeros_like(hits)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        hits &= ~repeat
    return hits


def ranking_metrics(topk: np.ndarray, labels: Csr, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean P@k and nDCG@k for each k in `ks` (keys "p1", "ndcg1", ...).

    Every k must be at most topk.shape[1]: scoring P@5 from 3 predictions would silently count
    the missing two as misses.
    """
    topk = np.asarray(topk)
    hits = hits_matrix(topk, labels)
    n, width = hits.shape
    for k in ks:
        if k < 1 or k > width:
            raise ValueError(f"cannot score @{k} from {width} predictions per row")
    if n == 0:
        raise ValueError("cannot score an empty evaluation set")
    discounts = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])  # ideal[m] = IDCG@m
    n_true = np.diff(labels.indptr)
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k]
        out[f"p{k}"] = float(h.sum() / (n * k))
        dcg = h.astype(np.float64) @ discounts[:k]
        idcg = ideal[np.minimum(n_true, k)]
        ndcg = np.divide(dcg, idcg, out=np.zeros(n, dtype=np.float64), where=idcg > 0)
        out[f"ndcg{k}"] = float(ndcg.mean())
    return out


def candidate_quality(
    cand_indptr: np.ndarray,
    cand_ids: np.ndarray,
    scores: np.ndarray,
    labels: Csr,
    ks: tuple[int, ...] = (10, 100),
) -> dict[str, float | None]:
    """How well a sampler's candidates (before random padding) find the outputs that matter.

    For each point, over its *non-label* outputs (the negatives a sampled softmax needs):
    - ``recall_topK``: share of the K highest exact scores that are among the candidates;
    - ``enrichment``: the softmax mass the candidates cover, divided by the mass a uniform random set
      of the same size covers in expectation (1 = no better than random; undefined, so skipped,
      for a point without candidates);
    and ``candidates``, the mean count of candidates per point (labels included, as retrieved).
    `scores` is the dense (points x outputs) matrix of exact logits. Means over points; None when
    there are no points.
    """
    n, n_out = scores.shape
    if labels.n_rows != n or len(cand_indptr) != n + 1:
        raise ValueError(
            f"candidate_quality: {n} score rows, {labels.n_rows} label rows, {len(cand_indptr) - 1} candidate rows"
        )
    keys = ["candidates", *(f"recall_top{k}" for k in ks), "enrichment"]
    if n == 0:
        return dict.fromkeys(keys)
    recall: dict[int, list[float]] = {k: [] for k in ks}
    enrich: list[float] = []
    counts: list[int] = []
    for i in range(n):
        cand = np.asarray(cand_ids[cand_indptr[i] : cand_indptr[i + 1]], dtype=np.int64)
        counts.append(len(cand))
        row_labels = labels.indices[labels.indptr[i] : labels.indptr[i + 1]]
        label_ids = np.unique(np.asarray(row_labels, dtype=np.int64))
        n_neg = n_out - len(label_ids)
        # Labels at -inf: out of every top-k and of the softmax mass, without copying the row's
        # negatives out (one 670K-wide row per pass is what this function spends its time on).
        s = scores[i].astype(np.float64)
        s[label_ids] = -np.inf
        cand_neg = np.setdiff1d(cand, label_ids)  # unique, sorted
        # Only the top max(ks) matter: partition for the k-th largest score, then order just the scores
        # at or above it (highest first, ties to the lower output, as a full stable sort would).
        kmax = min(max(ks), n_neg)
        if kmax:
            cut = np.partition(s, n_out - kmax)[n_out - kmax]
            head = np.flatnonzero(s >= cut)
            order = head[np.lexsort((head, -s[head]))]
        else:
            order = np.zeros(0, dtype=np.int64)
        for k in ks:
            top = order[: min(k, len(order))]
            recall[k].append(float(np.isin(top, cand_neg, assume_unique=True).mean()) if len(top) else 0.0)
        if len(cand_neg):
            p = np.exp(s - s.max())
            covered = p[cand_neg].sum() / p.sum()
            enrich.append(float(covered / (len(cand_neg) / n_neg)))
    out: dict[str, float | None] = {"candidates": float(np.mean(counts))}
    for k in ks:
        out[f"recall_top{k}"] = float(np.mean(recall[k]))
    out["enrichment"] = float(np.mean(enrich)) if enrich else None
    return out


def popularity_p1(train_labels: Csr, eval_labels: Csr) -> float:
    """P@1 of always predicting the most frequent training label: the floor every engine must beat.

    Ties go to the smallest label id (numpy's argmax), so the figure is deterministic.
    """
    if eval_labels.n_rows == 0:
        raise ValueError("popularity_p1 needs at least one evaluation row")
    if train_labels.n_cols != eval_labels.n_cols:
        raise ValueError(f"label widths differ: train {train_labels.n_cols}, evaluation {eval_labels.n_cols}")
    counts = np.bincount(train_labels.indices, minlength=train_labels.n_cols)
    top = np.full((eval_labels.n_rows, 1), int(np.argmax(counts)), dtype=np.int32)
    return float(hits_matrix(top, eval_labels)[:, 0].mean())
