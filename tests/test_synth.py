"""The synthetic generator: deterministic, the preset's shape and statistics, well-formed rows,
power-law labels, learnable, cached."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from harness.datasets import synth
from harness.datasets.data import DatasetSpec, Progress, load


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEBENCH_CACHE", str(tmp_path / "cache"))


def as_scipy(m):
    values = m.values if m.values is not None else np.ones(m.nnz, dtype=np.float32)
    return sp.csr_matrix((values, m.indices, m.indptr), shape=(m.n_rows, m.n_cols))


def test_deterministic_per_seed():
    a_train, a_test = synth.generate("tiny", 0.5, seed=7)
    b_train, b_test = synth.generate("tiny", 0.5, seed=7)
    for x, y in ((a_train, b_train), (a_test, b_test)):
        np.testing.assert_array_equal(x.features.indices, y.features.indices)
        np.testing.assert_array_equal(x.features.values, y.features.values)
        np.testing.assert_array_equal(x.labels.indices, y.labels.indices)
    c_train, _ = synth.generate("tiny", 0.5, seed=8)
    assert not np.array_equal(c_train.labels.indices[:200], a_train.labels.indices[:200])


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_shape_and_statistics_match_the_preset(name):
    p = synth.PRESETS[name]
    train, test = synth.generate(name, 1.0, 0)
    assert (train.num_points, test.num_points) == (p.train_points, p.test_points)
    for ds in (train, test):
        assert (ds.num_features, ds.num_labels) == (p.num_features, p.num_labels)
        s = ds.stats()
        assert s.labels_per_point == pytest.approx(p.labels_per_point, rel=0.05)
        assert s.nnz_per_point == pytest.approx(p.nnz_per_point, rel=0.1)
        assert s.points_without_features == 0


def test_scale_scales_points_only():
    p = synth.PRESETS["amazon-670k"]
    train, test = synth.generate("amazon-670k", 0.002, 0)
    assert (train.num_points, test.num_points) == (round(490_449 * 0.002), round(153_025 * 0.002))
    assert (train.num_features, train.num_labels) == (p.num_features, p.num_labels)
    s = train.stats()
    assert s.labels_per_point == pytest.approx(5.45, rel=0.08)
    assert s.nnz_per_point == pytest.approx(75, rel=0.1)


def test_rows_are_well_formed():
    train, _ = synth.generate("small", 0.2, 1)
    for m in (train.features, train.labels):
        assert m.indptr.dtype == np.int64 and m.indices.dtype == np.int32
        assert m.indices.min() >= 0 and m.indices.max() < m.n_cols
        rows = np.repeat(np.arange(m.n_rows), np.diff(m.indptr))
        same_row = rows[1:] == rows[:-1]
        assert np.all(np.diff(m.indices.astype(np.int64))[same_row] > 0)  # sorted, unique
    v = train.features.values
    assert v.dtype == np.float32 and np.all(np.isfinite(v)) and np.all(v > 0)
    norms = np.sqrt(np.bincount(np.repeat(np.arange(train.num_points), np.diff(train.features.indptr)),
                                weights=v.astype(np.float64) ** 2))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert len(np.unique(v)) > 100  # tf-idf-like, not binary


def test_label_frequencies_are_heavy_tailed():
    train, _ = synth.generate("small", 1.0, 0)
    freq = np.sort(np.bincount(train.labels.indices, minlength=train.num_labels))[::-1]
    top_1pct = freq[: len(freq) // 100].sum() / freq.sum()
    assert top_1pct > 0.15  # uniform would give 0.01
    assert freq[0] > 20 * np.median(freq)


def test_learnable_well_above_chance():
    """A label-centroid model (W = X^T Y, learned on train) beats the majority label by far."""
    train, test = synth.generate("tiny", 1.0, 0)
    X, Y = as_scipy(train.features), as_scipy(train.labels)
    Xt, Yt = as_scipy(test.features), as_scipy(test.labels)
    scores = (Xt @ (X.T @ Y)).toarray()
    p1 = Yt[np.arange(Yt.shape[0]), scores.argmax(axis=1)].mean()
    majority = Yt[:, np.asarray(Y.sum(axis=0)).ravel().argmax()].mean()
    assert p1 > 0.5
    assert p1 > 3 * majority


def test_unknown_preset_and_bad_scale():
    with pytest.raises(ValueError, match="unknown synthetic preset 'nope'.*tiny"):
        synth.generate("nope")
    with pytest.raises(ValueError, match="scale"):
        synth.generate("tiny", 0)


def test_load_through_the_cache(monkeypatch):
    train, test = load(DatasetSpec(synthetic="tiny", scale=0.3, seed=4))
    calls = []
    monkeypatch.setattr(synth, "generate", lambda *a, **k: calls.append(a))
    train2, test2 = load(DatasetSpec(synthetic="tiny", scale=0.3, seed=4))
    assert calls == []
    np.testing.assert_array_equal(train.features.values, train2.features.values)
    np.testing.assert_array_equal(test.labels.indices, test2.labels.indices)
    assert train2.name == "synthetic:tiny@0.3/s4"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_quiet_for_short_work_and_off_a_terminal():
    now = [0.0]
    clock = lambda: now[0]
    tty = Tty()
    p = Progress("work", 100, stream=tty, clock=clock)
    now[0] = 1.5  # under the couple of seconds: nothing
    p.update(90)
    p.close()
    assert tty.getvalue() == ""
    pipe = io.StringIO()  # not a terminal: nothing, however long
    p = Progress("work", 100, stream=pipe, clock=clock)
    now[0] = 1000.0
    p.update(50)
    p.close()
    assert pipe.getvalue() == ""


def test_progress_lines_have_done_total_and_eta():
    now = [0.0]
    tty = Tty()
    p = Progress("generating x", 1000, stream=tty, clock=lambda: now[0])
    for t, done in ((3.0, 100), (4.0, 150), (8.0, 400), (100.0, 1000)):
        now[0] = t
        p.update(done)
    p.close()
    lines = tty.getvalue().splitlines()
    # 3 s: first line (100 of 1000 in 3 s -> 27 s to go); 4 s: too soon after; 8 s: next line.
    assert lines == [
        "generating x: 100/1,000 points (10%, ETA 27s)",
        "generating x: 400/1,000 points (40%, ETA 12s)",
        "generating x: 1,000/1,000 points (100%, ETA 0s)",
        "generating x: done in 1m40s",
    ]


def test_generator_reports_progress(monkeypatch):
    monkeypatch.setattr(Progress, "AFTER_S", 0.0)
    monkeypatch.setattr(Progress, "EVERY_S", 0.0)
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    synth.generate("tiny", 0.5, 0)
    lines = tty.getvalue().splitlines()
    assert lines[0].startswith("generating synthetic:tiny@0.5/s0: 1,000/1,250 points (80%, ETA")
    assert lines[1].startswith("generating synthetic:tiny@0.5/s0: 1,250/1,250 points (100%")
    assert "done in" in lines[-1]
