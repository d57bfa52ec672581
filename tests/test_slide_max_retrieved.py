"""`max_retrieved`: at most that many outputs per sample come from the hash tables (labels aside),
chosen by the selection's own rule; the rest of the active set up to `min_active` is padding.

The reference for "its own rule" is a twin engine with the same seed and weights (hence the same
hash functions and tables) and `max_active` = `max_retrieved`: top-k keeps the same most-found
outputs, rerank the same best by exact logit.
"""

from __future__ import annotations

import numpy as np
import pytest

try:  # tests/ is on sys.path under pytest's default import mode; the package path otherwise
    import slide_helpers as helpers
except ImportError:  # pragma: no cover
    from tests import slide_helpers as helpers

N_FEATURES, N_LABELS = 300, 3000
ACTIVE, RETRIEVED = 120, 30
# 8 tables of 2^6 buckets: ~47 outputs a bucket, a union of a few hundred, far more than RETRIEVED.
TABLES = {"hash": "simhash_mips", "K": 6, "L": 8, "bucket_bits": 6, "bucket_capacity": 128,
          "simhash_density": 1.0, "init_std": 0.1}  # fmt: skip


def _candidates(e, f) -> list[set[int]]:
    indptr, ids = e._net.lsh_candidates(f.indptr, f.indices, f.values)
    return [set(ids[indptr[i] : indptr[i + 1]].tolist()) for i in range(len(indptr) - 1)]


@helpers.needs_native
@pytest.mark.parametrize("selection", ["topk", "rerank"])
def test_retrieved_are_the_selections_own_best_then_padding(selection: str) -> None:
    rng = np.random.default_rng(11)
    data = helpers.learnable(rng, 16, N_FEATURES, N_LABELS, 20)
    params = {**TABLES, "selection": selection, "min_active": ACTIVE, "max_active": ACTIVE}
    shape = helpers.meta(N_FEATURES, N_LABELS, hidden=(16,), seed=3)
    e = helpers.engine({**params, "max_retrieved": RETRIEVED}, shape)
    for _ in range(3):  # move the weights off their initialisation
        e.fit_step(data)
    e._net.rebuild_tables()
    weights = e.get_weights()

    # What the tables give: the selection's best RETRIEVED, the same as a twin capped there.
    twin = helpers.engine(
        {**params, "min_active": RETRIEVED, "max_active": RETRIEVED},
        helpers.meta(N_FEATURES, N_LABELS, hidden=(16,), seed=3),
    )
    twin.set_weights(weights)
    got, want = _candidates(e, data.features), _candidates(twin, data.features)
    assert all(len(c) == RETRIEVED for c in got)
    assert got == want

    # A training step: labels, at most RETRIEVED from the tables, the rest padding, no duplicates.
    before = e._net.active_composition()  # sums since the first step
    e.fit_step(data)
    comp = {k: v - before[k] for k, v in e._net.active_composition().items()}
    n = data.features.indptr.size - 1
    assert comp["lsh"] <= RETRIEVED * n
    assert comp["lsh"] >= 0.9 * RETRIEVED * n  # the unions hold far more than RETRIEVED
    assert comp["random"] > 0 and comp["labels"] + comp["lsh"] + comp["random"] == ACTIVE * n
    for s in range(n):
        ids, _ = e._net.last_output(s)
        assert len(set(ids.tolist())) == len(ids) == ACTIVE


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"selection": "topk", "min_active": 64, "max_active": 64, "max_retrieved": 65},
            r"'max_retrieved' \(65\) must not exceed 'max_active' \(64\)",
        ),
        ({"selection": "random", "max_retrieved": 10}, "selection 'random' builds none"),
        ({"max_retrieved": -1}, "'max_retrieved' must be >= 0"),
    ],
)
def test_impossible_settings_are_refused_by_name(params: dict, message: str) -> None:
    from engines.slide import SlideEngine

    with pytest.raises(ValueError, match=message):
        SlideEngine.check_params(params)


@helpers.needs_native
def test_the_core_refuses_impossible_caps() -> None:
    """The binding's own checks, for configs built without check_params."""
    cfg = helpers.native_config(50, 500, selection="topk", min_active=64, max_active=64)
    cfg["layers"][-1]["max_retrieved"] = 65
    with pytest.raises(ValueError, match=r"max_retrieved \(65\) must not exceed max_active \(64\)"):
        helpers.native().Network(cfg)
    cfg["layers"][-1].update(selection="random", max_active=0, max_retrieved=8)
    with pytest.raises(ValueError, match="max_retrieved \\(8\\) caps retrieval"):
        helpers.native().Network(cfg)


@helpers.needs_native
def test_the_cap_survives_a_save_and_load(tmp_path) -> None:
    """A loaded model keeps max_retrieved: it retrieves RETRIEVED per sample, the same ids."""
    data = helpers.learnable(np.random.default_rng(5), 24, N_FEATURES, N_LABELS, 20)
    params = {**TABLES, "selection": "rerank", "min_active": ACTIVE, "max_active": ACTIVE, "max_retrieved": RETRIEVED}
    e = helpers.engine(params, helpers.meta(N_FEATURES, N_LABELS, hidden=(16,), seed=3))
    e.fit_step(data)
    e._net.rebuild_tables()  # a loaded model builds its tables from the saved weights
    _, ids = helpers.candidates_after_save_and_load(e, data.features, tmp_path / "capped.bin")
    assert len(ids) == RETRIEVED * data.features.n_rows
