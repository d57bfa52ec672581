"""`selection = "rerank"`: the union of the L buckets (or its `rerank_pool` most found) scored
exactly, the best `max_active` kept.

The references are twin engines with the same seed and weights, hence the same hash functions and
tables: one with `selection = "vanilla"` and no cap gives the whole union, one with `selection =
"topk"` the pool cut by table hits; exact logits come from `predict_scores`. One sample per step,
so `last_output` is the whole active set of the step, and its loss and gradients are checked
against numpy over that set.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.spec.engine import Batch

try:  # tests/ is on sys.path under pytest's default import mode; the package path otherwise
    from slide_helpers import assert_first_adam_step, engine, learnable, meta, needs_native
except ImportError:  # pragma: no cover
    from tests.slide_helpers import assert_first_adam_step, engine, learnable, meta, needs_native

LR, EPS = 1e-2, 1e-3
N_FEATURES, N_LABELS, KEEP = 300, 3000, 40
# 8 tables of 2^6 buckets: ~47 outputs a bucket, a union of a few hundred, far more than KEEP.
TABLES = {"hash": "simhash_mips", "K": 6, "L": 8, "bucket_bits": 6, "bucket_capacity": 128,
          "simhash_density": 1.0, "init_std": 0.1}  # fmt: skip
RERANK = {**TABLES, "selection": "rerank", "min_active": KEEP, "max_active": KEEP}


def _twin(params: dict, weights: list[np.ndarray], seed: int):
    e = engine(params, meta(N_FEATURES, N_LABELS, hidden=(16,), lr=LR, eps=EPS, seed=seed))
    e.set_weights(weights)  # rebuilds its tables from these weights
    return e


def _candidates(e, f) -> list[np.ndarray]:
    indptr, ids = e._net.lsh_candidates(f.indptr, f.indices, f.values)
    return [ids[indptr[i] : indptr[i + 1]] for i in range(len(indptr) - 1)]


def _best(pool: np.ndarray, scores: np.ndarray, m: int) -> set[int]:
    order = np.lexsort((np.arange(len(pool)), -scores[pool]))  # score, then position: keep_best's ties
    return set(pool[order[:m]].tolist())


@needs_native
@pytest.mark.parametrize("pool", [0, 60])
def test_candidates_are_the_pools_best_by_exact_logit(pool: int) -> None:
    rng = np.random.default_rng(5)
    data = learnable(rng, 24, N_FEATURES, N_LABELS, 20)
    e = engine({**RERANK, "rerank_pool": pool}, meta(N_FEATURES, N_LABELS, hidden=(16,), seed=3))
    for _ in range(3):  # move the weights off their initialisation; the tables follow at rebuilds
        e.fit_step(data)
    e._net.rebuild_tables()
    w = e.get_weights()
    f = data.features
    # The whole union, or the `pool` found in most tables (forced ids: none here).
    ref_params = (
        {**TABLES, "selection": "vanilla", "min_active": KEEP, "max_active": 0}
        if pool == 0
        else {**TABLES, "selection": "topk", "min_active": KEEP, "max_active": pool}
    )
    ref = _twin(ref_params, w, seed=3)
    scores = ref._net.predict_scores(f.indptr, f.indices, f.values)
    got, pools = _candidates(e, f), _candidates(ref, f)
    assert np.array_equal(scores, e._net.predict_scores(f.indptr, f.indices, f.values))
    cut = 0
    for g, p, s in zip(got, pools, scores, strict=True):
        assert len(set(g.tolist())) == len(g) == min(KEEP, len(p))
        assert set(g.tolist()) == _best(p, s, KEEP)
        cut += len(p) > KEEP
    assert cut == len(got), "every pool must exceed max_active, or the cut is not tested"


@needs_native
def test_rerank_survives_a_save_and_load(tmp_path) -> None:
    try:
        from slide_helpers import candidates_after_save_and_load
    except ImportError:  # pragma: no cover
        from tests.slide_helpers import candidates_after_save_and_load

    data = learnable(np.random.default_rng(5), 24, N_FEATURES, N_LABELS, 20)
    e = engine({**RERANK, "rerank_pool": 60}, meta(N_FEATURES, N_LABELS, hidden=(16,), seed=3))
    e.fit_step(data)
    e._net.rebuild_tables()  # a loaded model builds its tables from the saved weights
    _, ids = candidates_after_save_and_load(e, data.features, tmp_path / "rerank.bin")
    assert len(ids) == KEEP * data.features.n_rows


@needs_native
@pytest.mark.parametrize("row", [0, 1, 2])
def test_training_keeps_labels_and_the_best_of_the_rest_and_its_gradient_is_exact(row: int) -> None:
    """One step on one sample: the active set is its labels plus the max_active - |labels| best
    by exact logit of the union without them, and the step is softmax cross-entropy over that set."""
    rng = np.random.default_rng(11)
    data = learnable(rng, 8, N_FEATURES, N_LABELS, 20)
    e = engine(RERANK, meta(N_FEATURES, N_LABELS, hidden=(16,), lr=LR, eps=EPS, seed=row))
    f, y = data.features.take(np.array([row])), data.labels.take(np.array([row]))
    before = [w.copy() for w in e.get_weights()]
    union = _candidates(
        _twin({**TABLES, "selection": "vanilla", "min_active": KEEP, "max_active": 0}, before, seed=row), f
    )[0]
    stats = e.fit_step(Batch(f, y))
    ids, _ = e._net.last_output(0)
    labels = y.indices
    assert list(ids[: len(labels)]) == list(labels), "labels come first in the active list"

    W1, b1, W2, b2 = (w.astype(np.float64) for w in before)
    x = np.zeros(N_FEATURES)
    x[f.indices] = f.values
    pre = x @ W1 + b1
    h = np.maximum(pre, 0.0)
    rest = np.setdiff1d(union, labels)
    assert len(rest) > KEEP
    scores = np.zeros(N_LABELS)
    scores[rest] = W2[rest] @ h + b2[rest]
    # float32 in the engine against float64 here: compare as sets, and allow a swap at the cut
    # only between scores that float32 cannot tell apart.
    want = _best(rest, scores, KEEP - len(labels))
    got = set(ids[len(labels) :].tolist())
    assert len(got) == KEEP - len(labels)
    if got != want:
        cut = min(scores[list(want)])
        assert all(abs(scores[j] - cut) < 1e-5 for j in got ^ want), got ^ want
    comp = e._net.active_composition()
    assert (comp["labels"], comp["lsh"], comp["random"]) == (len(labels), KEEP - len(labels), 0)

    z = W2[ids] @ h + b2[ids]
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    assert stats.loss == pytest.approx(lse - z[: len(labels)].mean(), rel=1e-5)
    dz = np.exp(z - lse)
    dz[: len(labels)] -= 1.0 / len(labels)
    dh = (W2[ids].T @ dz) * (pre > 0)
    assert_first_adam_step(before, e.get_weights(), ids, f.indices, x, h, dz, dh, LR, EPS)


@needs_native
def test_a_union_smaller_than_min_active_is_padded_after_the_cut() -> None:
    rng = np.random.default_rng(7)
    data = learnable(rng, 16, N_FEATURES, N_LABELS, 20)
    # 2^12 buckets of ~1 output, 2 tables: a union of a few outputs, padded up to 200.
    params = {**TABLES, "K": 12, "L": 2, "bucket_bits": 12, "selection": "rerank", "min_active": 200,
              "max_active": 300}  # fmt: skip
    e = engine(params, meta(N_FEATURES, N_LABELS, hidden=(16,), seed=1))
    stats = e.fit_step(data)
    assert stats.active_outputs == pytest.approx(200)
    comp = e._net.active_composition()
    assert comp["random"] > 0 and comp["labels"] + comp["lsh"] + comp["random"] == 200 * 16
    for s in range(16):
        ids, _ = e._net.last_output(s)
        assert len(set(ids.tolist())) == len(ids) == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"selection": "rerank"}, "selection 'rerank' needs 'max_active' > 0"),
        (
            {"selection": "rerank", "min_active": 64, "max_active": 64, "rerank_pool": 32},
            r"'rerank_pool' \(32\) must be 0 \(the whole union\) or >= 'max_active' \(64\)",
        ),
        ({"rerank_pool": 100}, "'rerank_pool' .* is used by selection 'rerank' only"),
        ({"selection": "rerank", "max_active": 2048, "rerank_pool": -1}, "'rerank_pool' must be >= 0"),
        (
            {"selection": "rerank", "max_active": 2048, "hidden_sampled": True},
            "selection 'rerank' needs hidden_sampled = false",
        ),
        (
            {"selection": "rerank", "max_active": 2048, "logit_correction": "log_q"},
            "logit_correction 'log_q' needs selection 'vanilla' or 'random'",
        ),
    ],
)
def test_impossible_settings_are_refused_by_name(params: dict, message: str) -> None:
    from engines.slide import SlideEngine

    with pytest.raises(ValueError, match=message):
        SlideEngine.check_params(params)


@needs_native
def test_the_core_refuses_a_pool_below_max_active() -> None:
    """The binding's own check, for configs built without check_params."""
    try:
        from slide_helpers import native, native_config
    except ImportError:  # pragma: no cover
        from tests.slide_helpers import native, native_config

    cfg = native_config(50, 500, selection="rerank", min_active=64, max_active=64)
    cfg["layers"][-1]["rerank_pool"] = 32
    with pytest.raises(
        ValueError, match=r"rerank_pool \(32\) must be 0 \(the whole union\) or >= max_active \(64\)"
    ):
        native().Network(cfg)
    cfg["layers"][-1].update(selection="topk", rerank_pool=100)
    with pytest.raises(ValueError, match="rerank_pool .* is used by selection 'rerank' only"):
        native().Network(cfg)
