"""Sampled softmax's logit correction (`logit_correction = "log_q"`) against its formula.

With the correction the output layer's training loss is the softmax cross-entropy over
z_p - log q_p on the active set, where q_p is the active output's inclusion probability: 1 for the
forced labels, need / (n - chosen) for uniform padding (exact), and for a neuron the tables
retrieved from c of their L buckets the estimate 1 - (1 - c/L)^L, combined with the padding rate.
One sample per step, so the active set and its log q (`last_output`) fully determine the step:
the loss and every gradient are checked against numpy through Adam's first step (eps large enough
that the update shows the gradient's size, not only its sign).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.spec.engine import Batch

try:  # tests/ is on sys.path under pytest's default import mode; the package path otherwise
    from slide_helpers import assert_first_adam_step, engine, learnable, meta, needs_native
except ImportError:  # pragma: no cover
    from tests.slide_helpers import assert_first_adam_step, engine, learnable, meta, needs_native

LR, EPS = 1e-2, 1e-3
N_FEATURES, N_LABELS, MIN_ACTIVE = 400, 3000, 64


def _step(params: dict, row: int, counts: np.ndarray | None = None):
    """One corrected training step on one sample: everything the formula needs, before and after.
    Uniform padding unless `params` say otherwise (its inclusion probability is exact)."""
    rng = np.random.default_rng(11)
    data = learnable(rng, 8, N_FEATURES, N_LABELS, 20)
    m = meta(N_FEATURES, N_LABELS, hidden=(16,), lr=LR, eps=EPS, seed=row)
    e = engine(
        {"min_active": MIN_ACTIVE, "init_std": 0.1, "logit_correction": "log_q", "padding_sampler": "uniform", **params},
        m if counts is None else dataclasses.replace(m, label_counts=counts),
    )
    f, y = data.features.take(np.array([row])), data.labels.take(np.array([row]))
    before = [w.copy() for w in e.get_weights()]
    stats = e.fit_step(Batch(f, y))
    ids, log_q = e._net.last_output(0)
    comp = e._net.active_composition()
    return f, y, before, e.get_weights(), stats, ids, log_q.astype(np.float64), comp


def _check_against_numpy(f, y, before, after, stats, ids, log_q) -> None:
    W1, b1, W2, b2 = (w.astype(np.float64) for w in before)
    x = np.zeros(N_FEATURES)
    x[f.indices] = f.values
    pre = x @ W1 + b1
    h = np.maximum(pre, 0.0)
    z = W2[ids] @ h + b2[ids]
    zc = z - log_q
    lse = zc.max() + np.log(np.exp(zc - zc.max()).sum())
    labels = y.indices
    assert list(ids[: len(labels)]) == list(labels), "labels come first in the active list"
    assert np.all(log_q[: len(labels)] == 0.0), "labels are always included: log q = 0"
    assert stats.loss == pytest.approx(lse - z[: len(labels)].mean(), rel=1e-5)
    dz = np.exp(zc - lse)
    dz[: len(labels)] -= 1.0 / len(labels)
    dh = (W2[ids].T @ dz) * (pre > 0)

    assert_first_adam_step(before, after, ids, f.indices, x, h, dz, dh, LR, EPS)


@needs_native
@pytest.mark.parametrize("row", [0, 1, 2])
def test_uniform_padding_is_corrected_by_its_exact_inclusion_probability(row: int) -> None:
    f, y, before, after, stats, ids, log_q, _ = _step({"selection": "random"}, row)
    n_lab = len(y.indices)
    assert len(ids) == MIN_ACTIVE
    want = np.log(np.float32((MIN_ACTIVE - n_lab) / (N_LABELS - n_lab)))
    assert np.all(log_q[n_lab:] == want)
    _check_against_numpy(f, y, before, after, stats, ids, log_q)


@needs_native
def test_frequency_drawn_padding_is_corrected_by_its_expected_count() -> None:
    """padding_sampler 'unigram': a padded label's log q is log(1 - (1 - p_i)^T), p_i its share of
    the weights (count + 1)^0.75 and T the draws the padding took (one T for all, at least the
    padding's size); the step matches numpy with those log q."""
    counts = np.arange(N_LABELS) % 50
    f, y, before, after, stats, ids, log_q, _ = _step(
        {"selection": "random", "padding_sampler": "unigram"}, 0, counts=counts
    )
    w = (counts + 1.0) ** 0.75
    p = w / w.sum()
    n_lab = len(y.indices)
    pad = ids[n_lab:]
    draws = np.log1p(-np.exp(log_q[n_lab:].astype(np.float64))) / np.log1p(-p[pad])
    assert np.all(np.abs(draws - draws[0]) < 1e-3 * draws[0]), draws
    assert draws[0] >= len(pad) - 0.5
    _check_against_numpy(f, y, before, after, stats, ids, log_q)


@needs_native
@pytest.mark.parametrize(("hash_kind", "row"), [("dwta", 0), ("simhash", 1), ("simhash_mips", 2)])
def test_lsh_candidates_are_corrected_by_their_table_count_estimate(hash_kind: str, row: int) -> None:
    L = 8
    f, y, before, after, stats, ids, log_q, comp = _step(
        {"hash": hash_kind, "L": L, "K": 2, "bucket_bits": 6, "bucket_capacity": 64}, row
    )
    n_lab, n_lsh, n_pad = len(y.indices), comp["lsh"], comp["random"]
    assert n_lsh > 0, "the tables must retrieve something for this test to mean anything"
    assert n_lab + n_lsh + n_pad == len(ids)
    chosen = n_lab + n_lsh
    r = n_pad / (N_LABELS - chosen) if n_pad else 0.0
    # Retrieved: one of the L values the count c = 1..L can give.
    c = np.arange(1, L + 1)
    q_lsh = 1.0 - (1.0 - c / L) ** L
    allowed = np.log(q_lsh + (1.0 - q_lsh) * r).astype(np.float32)
    got = log_q[n_lab:chosen].astype(np.float32)
    assert np.all(np.isin(got, allowed)), sorted(set(got.tolist()) - set(allowed.tolist()))
    assert np.any(got < 0.0), "some candidate was found in fewer than all tables"
    if n_pad:
        assert np.all(log_q[chosen:] == np.log(np.float32(r)))
    _check_against_numpy(f, y, before, after, stats, ids, log_q)


@needs_native
def test_without_the_correction_nothing_is_recorded_and_the_loss_is_plain() -> None:
    rng = np.random.default_rng(11)
    data = learnable(rng, 8, N_FEATURES, N_LABELS, 20)
    losses = {}
    for corr in ("none", "log_q"):
        e = engine(
            {"min_active": MIN_ACTIVE, "selection": "random", "logit_correction": corr, "padding_sampler": "uniform"},
            meta(N_FEATURES, N_LABELS),
        )
        losses[corr] = e.fit_step(
            Batch(data.features.take(np.array([0])), data.labels.take(np.array([0])))
        ).loss
        ids, log_q = e._net.last_output(0)
        assert len(ids) == MIN_ACTIVE
        assert (len(log_q) == 0) == (corr == "none")
    # Padding logits gain -log q > 0, so the corrected partition function, hence the loss, is larger.
    assert losses["log_q"] > losses["none"]


def test_log_q_is_refused_where_inclusion_probabilities_are_undefined() -> None:
    from engines.slide import SlideEngine

    with pytest.raises(ValueError, match="logit_correction 'log_q' needs selection"):
        SlideEngine.check_params({"logit_correction": "log_q", "selection": "topk", "max_active": 2000})
    with pytest.raises(ValueError, match="logit_correction"):
        SlideEngine.check_params({"logit_correction": "sampled"})
