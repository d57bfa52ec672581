"""What the output sampler does: the random-selection control, the active-set composition, and the
retrieval quality of the LSH candidates (`harness.run.metrics.candidate_quality`) against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.run.metrics import candidate_quality
from harness.spec.engine import TrainMeta
from tests.slide_helpers import engine, learnable, meta, native, needs_native


def _brute_quality(cands: list[set[int]], scores: np.ndarray, labels: list[set[int]], k: int) -> dict:
    """candidate_quality written the slow, obvious way: per point, lists and sets."""
    recalls, enrich = [], []
    for s_row, cand, lab in zip(scores, cands, labels, strict=True):
        negatives = [j for j in range(len(s_row)) if j not in lab]
        ranked = sorted(negatives, key=lambda j: (-s_row[j], j))
        recalls.append(sum(j in cand for j in ranked[:k]) / min(k, len(ranked)))
        neg_cand = [j for j in negatives if j in cand]
        if neg_cand:
            z = sum(math.exp(s_row[j]) for j in negatives)
            covered = sum(math.exp(s_row[j]) for j in neg_cand) / z
            enrich.append(covered / (len(neg_cand) / len(negatives)))
    return {"recall": float(np.mean(recalls)), "enrichment": float(np.mean(enrich)) if enrich else None}


def _csr_rows(rows: list[list[int]], n_cols: int) -> Csr:
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    idx = np.array([j for r in rows for j in sorted(r)], dtype=np.int32)
    return Csr(indptr, idx, None, n_cols)


def test_candidate_quality_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    n, n_out = 12, 300
    scores = rng.standard_normal((n, n_out)).astype(np.float32) * 3
    labels = [set(rng.choice(n_out, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(n)]
    cands = [set(rng.choice(n_out, size=rng.integers(0, 60), replace=False).tolist()) for _ in range(n)]
    cands[3] = set()  # a point without candidates: recall 0, no enrichment
    cands[4] = set(labels[4])  # only its labels: no negative candidates either
    indptr = np.cumsum([0] + [len(c) for c in cands]).astype(np.int64)
    ids = np.array([j for c in cands for j in sorted(c)], dtype=np.int32)
    got = candidate_quality(indptr, ids, scores, _csr_rows([sorted(x) for x in labels], n_out), ks=(10, 100))
    for k in (10, 100):
        assert got[f"recall_top{k}"] == pytest.approx(_brute_quality(cands, scores, labels, k)["recall"])
    assert got["enrichment"] == pytest.approx(
        _brute_quality(cands, scores, labels, 10)["enrichment"], rel=1e-6
    )
    assert got["candidates"] == pytest.approx(np.mean([len(c) for c in cands]))


def test_candidate_quality_breaks_ties_like_a_full_sort() -> None:
    """Scores with many ties (a trained model's rows can share biases): the top-k are still the
    highest scores, ties going to the lower output, as in the brute-force ranking."""
    rng = np.random.default_rng(7)
    n, n_out = 20, 500
    scores = rng.integers(0, 4, size=(n, n_out)).astype(np.float32)  # 4 distinct values
    labels = [{int(rng.integers(n_out))} for _ in range(n)]
    cands = [set(rng.choice(n_out, size=150, replace=False).tolist()) for _ in range(n)]
    indptr = np.cumsum([0] + [len(c) for c in cands]).astype(np.int64)
    ids = np.array([j for c in cands for j in sorted(c)], dtype=np.int32)
    got = candidate_quality(indptr, ids, scores, _csr_rows([sorted(x) for x in labels], n_out), ks=(10, 100))
    for k in (10, 100):
        assert got[f"recall_top{k}"] == pytest.approx(_brute_quality(cands, scores, labels, k)["recall"])


def test_candidate_quality_of_random_sets_is_about_one_and_of_the_top_is_high() -> None:
    rng = np.random.default_rng(1)
    n, n_out, m = 200, 2000, 100
    scores = rng.standard_normal((n, n_out)) * 2
    labels = _csr_rows([[0]] * n, n_out)
    rand = np.concatenate([rng.choice(np.arange(1, n_out), size=m, replace=False) for _ in range(n)])
    indptr = np.arange(0, (n + 1) * m, m, dtype=np.int64)
    q_rand = candidate_quality(indptr, rand.astype(np.int32), scores, labels)
    assert q_rand["enrichment"] == pytest.approx(1.0, abs=0.3)
    assert q_rand["recall_top10"] == pytest.approx(m / (n_out - 1), abs=0.03)
    top = np.concatenate([np.argsort(-np.where(np.arange(n_out) == 0, -np.inf, s))[:m] for s in scores])
    q_top = candidate_quality(indptr, top.astype(np.int32), scores, labels)
    assert q_top["recall_top10"] == 1.0 and q_top["recall_top100"] == 1.0
    assert q_top["enrichment"] > 5 * q_rand["enrichment"]


def test_candidate_quality_refuses_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="score rows"):
        candidate_quality(
            np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros((4, 5)), _csr_rows([[0]] * 4, 5)
        )


@needs_native
def test_random_selection_is_labels_plus_uniform_padding_and_builds_no_tables() -> None:
    rng = np.random.default_rng(3)
    m = meta(200, 400)
    batch = learnable(rng, 64, 200, 400, 8)
    rand = engine({"selection": "random", "min_active": 50}, m)
    hashed = engine({"min_active": 50, "K": 3, "L": 8, "bucket_bits": 6}, m)
    reported = {}
    for name, e in (("rand", rand), ("hashed", hashed)):
        reported[name] = np.mean([e.fit_step(batch).active_outputs for _ in range(2)])
    labels_per_point = np.diff(batch.labels.indptr).mean()
    d_rand = rand.diagnostics(batch.features, batch.labels)
    assert d_rand["active"]["labels"] == pytest.approx(labels_per_point)
    assert d_rand["active"]["lsh"] == 0
    assert d_rand["active"]["labels"] + d_rand["active"]["random"] == pytest.approx(50)
    assert d_rand["lsh"] is None
    # No tables: the random control's memory is the weights alone.
    assert rand.info()["memory_bytes"] < hashed.info()["memory_bytes"]
    d_hash = hashed.diagnostics(batch.features, batch.labels)
    assert d_hash["active"]["lsh"] > 0
    # Every computed output is counted once, by origin: the parts add up to what training reported.
    assert sum(d_hash["active"].values()) == pytest.approx(reported["hashed"])
    assert sum(d_rand["active"].values()) == pytest.approx(reported["rand"])
    # Since the previous call: nothing trained, nothing counted.
    assert rand.diagnostics(batch.features, batch.labels)["active"]["labels"] is None


@needs_native
def test_random_selection_refuses_lsh_inference() -> None:
    from engines.slide import SlideEngine

    with pytest.raises(ValueError, match="selection 'random' builds no tables"):
        SlideEngine.check_params({"selection": "random", "inference": "lsh"})


@needs_native
def test_engine_diagnostics_match_brute_force_on_planted_neighbours() -> None:
    """SimHash on planted near-duplicates: the engine's recall and enrichment are what a brute-force
    computation over its own candidates and exact scores gives, and far above a random set's."""
    rng = np.random.default_rng(2)
    n_labels, dim, n_q = 2000, 64, 40
    m = meta(dim, n_labels, hidden=())
    # K = 10 bits a table: ~2 neurons a bucket, so ~20 candidates from 10 tables; the planted
    # neighbour (cosine ~0.99) shares a table's bucket with p ~ 0.63, so it is almost always found.
    e = engine({"hash": "simhash", "K": 10, "L": 10, "bucket_bits": 10, "bucket_capacity": 128,
                "min_active": 64, "simhash_density": 1.0}, m)  # fmt: skip
    w = rng.standard_normal((n_labels, dim)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    e._net.set_weights(0, w * 10, np.zeros(n_labels, np.float32))
    target = rng.integers(n_labels, size=n_q)
    q = w[target] + 0.5 * rng.standard_normal((n_q, dim)).astype(np.float32) / 8
    x = Csr(np.arange(0, (n_q + 1) * dim, dim, dtype=np.int64), np.tile(np.arange(dim, dtype=np.int32), n_q),
            q.astype(np.float32).ravel(), dim)  # fmt: skip
    y = _csr_rows([[int((t + 1) % n_labels)] for t in target], n_labels)  # a label that is not the neighbour
    d = e.diagnostics(x, y)["lsh"]
    indptr, ids = e._net.lsh_candidates(x.indptr, x.indices, x.values)
    cands = [set(ids[indptr[i] : indptr[i + 1]].tolist()) for i in range(n_q)]
    scores = e._net.predict_scores(x.indptr, x.indices, x.values)
    brute = _brute_quality(cands, scores, [{int((t + 1) % n_labels)} for t in target], 10)
    assert d["recall_top10"] == pytest.approx(brute["recall"])
    assert d["enrichment"] == pytest.approx(brute["enrichment"], rel=1e-5)
    assert d["candidates"] == pytest.approx(np.mean([len(c) for c in cands]))
    # The planted neighbour holds most of each query's softmax mass: candidates that hold it cover
    # far more mass than their ~1% share of the outputs.
    assert d["candidates"] < 100 and d["recall_top10"] > 0.05 and d["enrichment"] > 10, d


@needs_native
def test_mips_hashing_finds_the_outputs_a_large_bias_makes_likely(tmp_path) -> None:
    """Labels that win through their bias are invisible to a hash of the rows alone; the
    inner-product transform puts the bias in the key, so they are retrieved."""
    rng = np.random.default_rng(4)
    n_labels, dim, n_q = 4000, 64, 60
    m = meta(dim, n_labels, hidden=())
    w = (rng.standard_normal((n_labels, dim)) / np.sqrt(dim)).astype(np.float32)
    bias = np.zeros(n_labels, np.float32)
    popular = rng.choice(n_labels, size=20, replace=False)
    bias[popular] = 6.0  # these dominate every query's softmax
    # |q| ~ 2 and M ~ 6: a popular key is at ~64 degrees from a query, any other at ~90, so a
    # table of 8 bits holds a popular label with p ~ (1 - 64/180)^8 = 0.03 and any other with
    # 2^-8: over 32 tables ~0.62 against ~0.12 (SimHash separates logits relative to |q| M).
    q = 0.25 * rng.standard_normal((n_q, dim)).astype(np.float32)
    x = Csr(np.arange(0, (n_q + 1) * dim, dim, dtype=np.int64), np.tile(np.arange(dim, dtype=np.int32), n_q),
            q.ravel(), dim)  # fmt: skip
    common = {"K": 8, "L": 32, "bucket_bits": 8, "bucket_capacity": 256, "min_active": 64, "simhash_density": 1.0}
    recall = {}
    for kind in ("simhash", "simhash_mips"):
        e = engine({**common, "hash": kind}, m)
        e._net.set_weights(0, w, bias)
        indptr, ids = e._net.lsh_candidates(x.indptr, x.indices, x.values)
        found = [len(set(ids[indptr[i] : indptr[i + 1]].tolist()) & set(popular.tolist())) / 20 for i in range(n_q)]
        recall[kind] = float(np.mean(found))
        if kind == "simhash_mips":
            # The new hash kind survives a save and load: the reloaded model retrieves the same.
            e._net.save(str(tmp_path / "mips.bin"))
            back = native().Network.load(str(tmp_path / "mips.bin"))
            again = back.lsh_candidates(x.indptr, x.indices, x.values)
            assert np.array_equal(again[0], indptr) and np.array_equal(again[1], ids)
    # Measured: 0.51 against 0.12.
    assert recall["simhash_mips"] > 0.35 and recall["simhash"] < 0.2, recall
    assert recall["simhash_mips"] > 3 * recall["simhash"], recall


@needs_native
def test_mips_keys_of_the_top_logits_are_not_hidden_by_a_few_larger_rows() -> None:
    """Keys are hashed with the largest norm of their norm band, so a row in a band that also
    holds much larger rows gets a large completion coordinate and collides rarely. The rows that
    win a query are typically among the largest (popular labels' rows grow) but not the very
    largest: narrow bands at the top keep them findable."""
    rng = np.random.default_rng(11)
    n_labels, dim, n_q = 4000, 32, 40

    def rows(n: int, lo: float, hi: float) -> np.ndarray:
        r = rng.standard_normal((n, dim))
        return r / np.linalg.norm(r, axis=1, keepdims=True) * rng.uniform(lo, hi, (n, 1))

    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    targets = u + 0.05 * rng.standard_normal((10, dim))
    targets *= 2.05 / np.linalg.norm(targets, axis=1, keepdims=True)
    # 60 very large rows in random directions, then 910 rows of norm ~2 (the targets among them,
    # in the top eighth by norm but not in the top 64th), then the bulk.
    parts = [rows(60, 6.0, 6.5), targets, rows(900, 1.9, 2.1), rows(3030, 0.9, 1.1)]
    w = np.concatenate(parts).astype(np.float32)
    m = meta(dim, n_labels, hidden=())
    q = (u + 0.1 * rng.standard_normal((n_q, dim))).astype(np.float32)
    x = Csr(np.arange(0, (n_q + 1) * dim, dim, dtype=np.int64), np.tile(np.arange(dim, dtype=np.int32), n_q),
            q.ravel(), dim)  # fmt: skip
    e = engine({"hash": "simhash_mips", "K": 8, "L": 32, "bucket_bits": 8, "bucket_capacity": 256,
                "min_active": 64, "simhash_density": 1.0}, m)  # fmt: skip
    e._net.set_weights(0, w, np.zeros(n_labels, np.float32))
    indptr, ids = e._net.lsh_candidates(x.indptr, x.indices, x.values)
    found = np.mean([np.isin(np.arange(60, 70), ids[indptr[i] : indptr[i + 1]]).mean() for i in range(n_q)])
    # Each target's logit is ~2 (the bulk's ~0, the large rows' ~0 +- 1); with bands as wide as an
    # eighth of the rows the targets share the 6.5 bound and are found far less often.
    assert found > 0.7, found


# ---- frequency-drawn padding (padding_sampler = "unigram") -------------------------------------


def _skewed_meta(n_features: int, n_labels: int, heavy: int) -> TrainMeta:
    """Label counts with `heavy` labels seen 1,000 times each and the rest never."""
    counts = np.zeros(n_labels, np.int64)
    counts[:heavy] = 1000
    return meta(n_features, n_labels, label_counts=counts)


def _padded_heavy_per_sample(e, batch, heavy: int) -> float:
    """Mean count, per sample of the last batch, of padded outputs among the `heavy` first labels."""
    got = []
    for s in range(batch.labels.n_rows):
        ids, _ = e._net.last_output(s)
        own = set(batch.labels.indices[batch.labels.indptr[s] : batch.labels.indptr[s + 1]].tolist())
        got.append(sum(1 for j in ids.tolist() if j < heavy and j not in own))
    return float(np.mean(got))


@needs_native
def test_unigram_padding_draws_negatives_by_label_frequency() -> None:
    """(count + 1)^0.75 weights: 10 labels of count 1,000 hold 82% of the draws among 400 labels, so
    nearly all 10 are in every sample's padding of 20; uniform padding holds 0.5 of them on average."""
    rng = np.random.default_rng(5)
    m = _skewed_meta(200, 400, heavy=10)
    batch = learnable(rng, 64, 200, 400, 8)
    base = {"selection": "random", "min_active": 24}
    uni = engine(base, m)  # the default padding_sampler
    flat = engine({**base, "padding_sampler": "uniform"}, m)
    uni.fit_step(batch)
    flat.fit_step(batch)
    assert _padded_heavy_per_sample(uni, batch, 10) > 8.0
    assert _padded_heavy_per_sample(flat, batch, 10) < 1.5
    # The active set keeps its size and origin accounting: labels, then padding.
    d = uni.diagnostics(batch.features, batch.labels)
    assert d["active"]["lsh"] == 0
    assert d["active"]["labels"] + d["active"]["random"] == pytest.approx(24)
    # Hashed selection pads by frequency too (two one-slot buckets: at most 2 retrieved).
    lsh = {"K": 3, "L": 2, "bucket_bits": 6, "bucket_capacity": 1}
    hashed = engine({"min_active": 24, **lsh}, m)
    hashed.fit_step(batch)
    assert _padded_heavy_per_sample(hashed, batch, 10) > 5.0


@needs_native
def test_unigram_padding_needs_label_counts_and_a_sane_power() -> None:
    from engines.slide import SlideEngine

    with pytest.raises(ValueError, match="padding_sampler 'unigram' needs the training rows per label"):
        engine({"min_active": 8}, meta(20, 30, label_counts=None))
    with pytest.raises(ValueError, match="got 29 of them"):
        engine({"min_active": 8}, meta(20, 30, label_counts=np.ones(29, np.int64)))
    with pytest.raises(ValueError, match="label_counts must be finite and >= 0"):
        engine({"min_active": 8}, meta(20, 30, label_counts=-np.ones(30, np.int64)))
    # Every output active: nothing is padded, so no counts are needed.
    engine({"min_active": 30}, meta(20, 30, label_counts=None))
    engine({"min_active": 8, "padding_sampler": "uniform"}, meta(20, 30, label_counts=None))
    with pytest.raises(ValueError, match="'unigram_power' must be in"):
        SlideEngine.check_params({"unigram_power": -1.0})
    with pytest.raises(ValueError, match="'padding_sampler' must be one of uniform, unigram"):
        SlideEngine.check_params({"padding_sampler": "zipf"})


@needs_native
def test_padding_weights_are_validated_by_the_binding() -> None:
    from tests.slide_helpers import native_config

    def with_weights(w):
        cfg = native_config(20, 30, K=2, L=4, bucket_bits=4, bucket_capacity=8, min_active=4)
        cfg["layers"][-1]["padding_weights"] = w
        return cfg

    with pytest.raises(ValueError, match="holds 29 weights for 30 neurons"):
        native().Network(with_weights(np.ones(29)))
    with pytest.raises(ValueError, match=r"padding_weights\[3\] is 0"):
        native().Network(with_weights(np.where(np.arange(30) == 3, 0.0, 1.0)))
    with pytest.raises(ValueError, match="their sum overflows a double"):
        native().Network(with_weights(np.full(30, 1e307)))
    with pytest.raises(ValueError, match="numpy array of float64"):
        native().Network(with_weights(np.ones(30, np.float32)))
    with pytest.raises(ValueError, match="numpy array of float64"):
        native().Network(with_weights([1.0] * 30))
    cfg = with_weights(np.ones(30))
    cfg["layers"][0]["padding_weights"] = np.ones(8)
    with pytest.raises(ValueError, match="a dense layer"):
        native().Network(cfg)


@needs_native
def test_saved_model_keeps_its_padding_weights(tmp_path) -> None:
    """A loaded model pads by the saved weights: the same step draws the same padding as the original."""
    rng = np.random.default_rng(9)
    m = _skewed_meta(200, 400, heavy=10)
    batch = learnable(rng, 16, 200, 400, 8)
    e = engine({"selection": "random", "min_active": 24}, m)
    e.fit_step(batch)
    path = tmp_path / "unigram.model"
    e._net.save(str(path))
    loaded = native().Network.load(str(path))
    f, y = batch.features, batch.labels
    args = (f.indptr, f.indices, f.values, y.indptr, y.indices)
    e._net.train_batch(*args, n_cols=f.n_cols, label_n_cols=y.n_cols)
    loaded.train_batch(*args, n_cols=f.n_cols, label_n_cols=y.n_cols)
    for s in range(batch.labels.n_rows):
        assert e._net.last_output(s)[0].tolist() == loaded.last_output(s)[0].tolist()
