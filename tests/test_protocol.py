"""The comparison protocol: sanity flags, the popularity floor, the validation split, equal tuning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.datasets.sparse import Csr
from harness.run import runner, tune
from harness.run.loop import batch_order, eval_rows
from harness.run.metrics import popularity_p1
from harness.run.worker import split_for_validation, validation_rows
from harness.spec import workload
from harness.spec.workload import WorkloadError
from harness.store import flags
from tests.test_runner import records, write_workload

FIXTURE_RECORDS = Path(__file__).parent / "fixtures" / "records"


def _rows(rows: list[list[int]], n_cols: int, values: bool = False) -> Csr:
    indptr = np.cumsum([0, *map(len, rows)]).astype(np.int64)
    indices = np.asarray([i for r in rows for i in r], dtype=np.int32)
    return Csr(indptr, indices, np.ones(len(indices), np.float32) if values else None, n_cols)


def _curve(*p1: float) -> list[dict]:
    return [{"step": 10 * i, "p1": v} for i, v in enumerate(p1)]


# -- flags ----------------------------------------------------------------------------------------


def test_falling_curve_is_flagged_and_noise_is_not() -> None:
    rising = _curve(0.0, 0.2, 0.3, 0.35, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46)
    assert flags.run_flags(rising, 0.1, 1000) == []
    # Three standard errors of 0.46 on 1,000 points is ~0.047: a dip of 0.02 is noise, 0.10 is a fall.
    assert flags.run_flags([*rising, {"step": 200, "p1": 0.44}], 0.1, 1000) == []
    assert flags.FALLING in flags.run_flags([*rising, {"step": 200, "p1": 0.36}], 0.1, 1000)
    # The same dip on 50 points is within noise.
    assert flags.FALLING not in flags.run_flags([*rising, {"step": 200, "p1": 0.36}], 0.1, 50)
    # A dip the run recovers from is the curve's business, not a flag.
    recovered = [*rising, {"step": 200, "p1": 0.30}, {"step": 210, "p1": 0.45}]
    assert flags.FALLING not in flags.run_flags(recovered, 0.1, 1000)
    assert flags.FALLING in flags.run_flags([*recovered, {"step": 220, "p1": 0.30}], 0.1, 1000)


def test_below_popularity_uses_the_standard_error() -> None:
    curve = _curve(0.0, 0.10, 0.11, 0.115, 0.115, 0.115, 0.115, 0.115, 0.115, 0.115, 0.115)
    # popularity 0.10 on 1,000 points: SE 0.0095, so 0.115 is within two standard errors, 0.13 is not.
    assert flags.BELOW_POPULARITY in flags.run_flags(curve, 0.10, 1000)
    assert flags.BELOW_POPULARITY not in flags.run_flags([*curve, {"step": 200, "p1": 0.13}], 0.10, 1000)
    assert flags.BELOW_POPULARITY not in flags.run_flags(curve, None, 1000)  # no floor known


def test_few_evaluations_counts_the_points_after_step_0() -> None:
    short = _curve(0.0, 0.3, 0.5)
    assert flags.FEW_EVALUATIONS in flags.run_flags(short, 0.1, 100)
    assert flags.FEW_EVALUATIONS not in flags.run_flags(_curve(0.0, *[0.5] * 10), 0.1, 100)
    assert flags.FEW_EVALUATIONS in flags.run_flags(_curve(0.0, *[0.5] * 9), 0.1, 100)


def test_workload_and_scaling_flags() -> None:
    assert flags.workload_flags([(0.12, 0.11, 1000), (0.10, 0.11, 1000)]) == [flags.NO_SEPARATION]
    assert flags.workload_flags([(0.30, 0.11, 1000), (0.10, 0.11, 1000)]) == []
    assert flags.scaling_flags(1.07) == [flags.EFFICIENCY_ABOVE_1]
    assert flags.scaling_flags(0.93) == [] and flags.scaling_flags(None) == []


def test_popularity_p1_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    rows = [sorted(set(rng.integers(0, 12, rng.integers(1, 4)).tolist())) for _ in range(300)]
    train = _rows(rows[:200], 12)
    test = _rows(rows[200:], 12)
    counts = np.zeros(12, int)
    for r in rows[:200]:
        counts[r] += 1
    top = int(np.argmax(counts))
    assert popularity_p1(train, test) == pytest.approx(np.mean([top in r for r in rows[200:]]))


# -- the validation split ----------------------------------------------------------------------


def test_validation_never_overlaps_training_batches_or_the_test_subset() -> None:
    n = 1000
    held = validation_rows(n, 150, seed=4)
    assert len(held) == 150 and len(set(held.tolist())) == 150
    # Capped at a fifth of the training points.
    assert len(validation_rows(n, 5000, seed=4)) == 200
    ids = _rows([[i] for i in range(n)], n, values=True)  # row i holds feature i: rows are traceable
    x_train, _, x_val, _ = split_for_validation(ids, ids, 150, seed=4)
    trained = set(x_train.indices.tolist())
    validated = set(x_val.indices.tolist())
    assert trained.isdisjoint(validated) and len(trained) + len(validated) == n
    # Every batch the worker builds indexes the kept rows only, so validation rows are never trained on.
    for epoch in range(3):
        for idx in batch_order(x_train.n_rows, 64, 0, epoch):
            assert set(x_train.take(idx).indices.tolist()) <= trained
    # The test subset comes from the test split: validation rows are training rows, a different file.
    assert len(eval_rows(500, 150, 0)) == 150


def test_engines_get_the_label_counts_of_the_rows_they_train_on(tmp_path: Path, monkeypatch) -> None:
    """TrainMeta.label_counts (tf_sampled's unigram sampler) count the given training rows only:
    the worker passes the rows left after the validation split, so held-out labels are not seen."""
    from harness.run import loop

    spec = workload.load(write_workload(tmp_path, max_steps=8, every_steps=4)).expand()[0]
    x = _rows([[0], [1], [2], [3]], 4, values=True)
    y = _rows([[0, 2], [2], [], [2, 3]], 5)
    seen = {}
    monkeypatch.setattr(loop, "prepare_engine", lambda name, params, threads, meta: seen.setdefault("meta", meta))
    loop.prepare_for_spec(spec, x, y)
    assert seen["meta"].label_counts.tolist() == [1, 0, 3, 1, 0]


def test_validation_run_records_its_split(tmp_path: Path) -> None:
    path = write_workload(tmp_path, max_steps=8, every_steps=4)
    text = path.read_text().replace("subset = 200", 'subset = 200\nsplit = "validation"')
    path.write_text(text)
    w = workload.load(path)
    runner.run_campaign(w, tmp_path / "res")
    (rec,) = records(tmp_path / "res")
    assert rec["status"]["state"] == "budget_spent"
    assert rec["data"]["eval_split"] == "validation" and rec["data"]["eval_rows"] == 200
    assert rec["data"]["train_rows"] == 2000 - 200  # the tiny preset's 2,000 training points
    assert rec["popularity_p1"] is not None and isinstance(rec["flags"], list)


# -- equal tuning -------------------------------------------------------------------------------

TUNING = """
[tuning]
trials = 2
budget_fraction = 0.5
reference = "numpy_dense"
reference_seconds = 2
target_fraction = 0.9
[tuning.space]
lr = [0.001, 0.01]
init_scale = [1.0]
"""


def _tuned_workload(tmp_path: Path, extra: str = "", engines: str = '["numpy_dense", "dense-b"]') -> Path:
    path = write_workload(
        tmp_path,
        engines=engines,
        extra_training="max_seconds = 2",
        engine_params=extra + '\n[variants.dense-b]\nengine = "numpy_dense"\nsleep_per_step = 0.0\n',
    )
    path.write_text(path.read_text() + TUNING)
    return path


def _tuning_doc(path: Path, engines: dict[str, dict]) -> dict:
    """A tuning file for the workload at `path` (read before any tuning file exists beside it)."""
    decl = workload.load(path).tuning_decl
    return {
        "version": 1,
        "workload": "tw",
        "search": decl.to_dict(),
        "budget_s": 1.0,
        "validation_points": 200,
        "engines": engines,
    }


def _entry(lr: float) -> dict:
    return {
        "trials": [{"values": {"lr": lr, "init_scale": 1.0}, "p1": 0.5, "run_id": "x", "state": "budget_spent"}],
        "chosen": {"lr": lr, "init_scale": 1.0},
        "p1": 0.5,
    }


def test_a_workload_tuning_one_engine_and_not_another_is_refused(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path)
    one = _tuning_doc(path, {"numpy_dense": _entry(0.01)})
    both = _tuning_doc(path, {"numpy_dense": _entry(0.01), "dense-b": _entry(0.001)})
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(one))
    with pytest.raises(WorkloadError, match=r"tunes numpy_dense but not dense-b"):
        workload.load(path)
    # Covering both, the chosen values reach each engine's runs, with their provenance in the spec.
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(both))
    w = workload.load(path)
    a, b = w.expand()
    assert (a.training.lr, b.training.lr) == (0.01, 0.001)
    assert a.tuning["chosen"] == {"lr": 0.01, "init_scale": 1.0} and a.to_dict()["tuning"]["search"]["trials"] == 2
    assert w.expand(tuned=False)[0].training.lr == 0.005  # the workload as written


def test_a_space_key_set_by_hand_for_one_engine_is_refused(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path, extra="[engines.numpy_dense]\ninit_scale = 2.0\n")
    with pytest.raises(WorkloadError, match=r"\[engines.numpy_dense\] init_scale.*tuning sets it for every engine"):
        workload.load(path)


def test_a_space_key_every_engine_cannot_take_is_refused(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path)
    path.write_text(path.read_text().replace("init_scale = [1.0]", "init_std = [0.1]"))
    with pytest.raises(WorkloadError, match=r"\[tuning.space\] init_std.*not a valid value for numpy_dense"):
        workload.load(path)


def test_a_stale_tuning_file_is_refused(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path)
    doc = _tuning_doc(path, {"numpy_dense": _entry(0.01), "dense-b": _entry(0.001)})
    doc["search"]["trials"] = 7
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(doc))
    with pytest.raises(WorkloadError, match="made for another search"):
        workload.load(path)


def test_trials_are_the_same_for_every_engine_and_interleaved(tmp_path: Path) -> None:
    w = workload.load(_tuned_workload(tmp_path))
    trials = tune.trial_specs(w, w.engines)
    assert [(e, v["lr"]) for e, v, _ in trials] == [
        ("numpy_dense", 0.001), ("dense-b", 0.001), ("numpy_dense", 0.01), ("dense-b", 0.01),
    ]  # fmt: skip
    for _, values, spec in trials:
        assert spec.training.lr == values["lr"] and spec.training.max_seconds == 1.0
        assert spec.evaluation.split == "validation" and spec.evaluation.target_p1 is None


def test_tune_writes_choices_and_a_target_that_runs_then_use(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path)
    out = tune.tune(workload.load(path), tmp_path / "res")
    doc = json.loads(out.read_text())
    assert set(doc["engines"]) == {"numpy_dense", "dense-b"}
    assert doc["validation_points"] == 200  # the tiny preset's 2,000 training points allow all 200
    for entry in doc["engines"].values():
        assert len(entry["trials"]) == 2 and entry["p1"] == max(t["p1"] for t in entry["trials"])
    target = doc["target"]
    assert target["p1"] == pytest.approx(0.9 * target["reference"]["best_p1"], abs=1e-4)
    # Trial records live apart from the campaign's, so the report never mixes them in.
    assert len(list((tmp_path / "res" / "tuning" / "runs").rglob("*.json"))) == 5
    assert not (tmp_path / "res" / "runs").exists()
    spec = workload.load(path).expand()[0]
    assert spec.evaluation.target_p1 == target["p1"] and spec.target["reference"]["engine"] == "numpy_dense"
    assert spec.training.lr == doc["engines"]["numpy_dense"]["chosen"]["lr"]


def test_tune_completes_a_tuning_that_misses_an_engine(tmp_path: Path) -> None:
    """A variant added after tuning: runs are refused, and `tune --engines` fills just that entry."""
    path = _tuned_workload(tmp_path)
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(_tuning_doc(path, {"numpy_dense": _entry(0.01)})))
    with pytest.raises(WorkloadError, match=r"tunes numpy_dense but not dense-b"):
        workload.load(path)
    w = workload.load(path, partial_tuning=True)
    out = tune.tune(w, tmp_path / "res", engines=["dense-b"], reference=False)
    doc = json.loads(out.read_text())
    assert doc["engines"]["numpy_dense"] == _entry(0.01)  # kept as it was
    assert len(doc["engines"]["dense-b"]["trials"]) == 2
    # Each engine's entry says when and at what load its own trials ran.
    window = doc["engines"]["dense-b"]["window"]
    assert set(window) == {"tuned_at", "load_before", "load_after"} and len(window["load_before"]) == 3
    assert {s.engine for s in workload.load(path).expand()} == {"numpy_dense", "dense-b"}


def test_tune_takes_a_variant_outside_the_matrix_and_refuses_an_unknown_name(tmp_path: Path) -> None:
    """Such a variant runs with `run --engines`, so it gets the same search; the matrix's entries stay."""
    path = _tuned_workload(tmp_path, engines='["numpy_dense"]')
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(_tuning_doc(path, {"numpy_dense": _entry(0.01)})))
    w = workload.load(path)
    with pytest.raises(ValueError, match=r"neither in \[matrix\] engines nor a \[variants\] table: nope"):
        tune.tune(w, tmp_path / "res", engines=["nope"], reference=False)
    doc = json.loads(tune.tune(w, tmp_path / "res", engines=["dense-b"], reference=False).read_text())
    assert doc["engines"]["numpy_dense"] == _entry(0.01)
    assert len(doc["engines"]["dense-b"]["trials"]) == 2
    run = workload.load(path).expand(engines=["dense-b"])[0]
    assert run.training.lr == doc["engines"]["dense-b"]["chosen"]["lr"]


# -- records of both schema versions in one report ---------------------------------------------------


def test_report_reads_both_schema_versions(tmp_path: Path) -> None:
    from harness.reporting import report

    res = tmp_path / "res"
    shutil.copytree(FIXTURE_RECORDS, res)
    # One record rewritten as version 2, with a popularity floor it never beats.
    source = min((res / "runs").rglob("*.json"))
    rec = json.loads(source.read_text())
    assert rec["schema_version"] == 1
    rec.update(schema_version=2, popularity_p1=0.99, flags=[flags.BELOW_POPULARITY])
    source.write_text(json.dumps(rec))
    md = report.render(res).read_text()
    assert "## Summary" in md and md.index("## Summary") < md.index("## Workload")
    assert f"{flags.BELOW_POPULARITY} (1 of" in md
    assert "file(s) were skipped" not in md


def test_a_study_takes_another_workloads_tuning(tmp_path: Path) -> None:
    path = _tuned_workload(tmp_path)
    doc = _tuning_doc(path, {"numpy_dense": _entry(0.01), "dense-b": _entry(0.001)})
    study = write_workload(tmp_path, name="study", engines='["numpy_dense"]', extra_training="max_seconds = 2")
    study.write_text(study.read_text() + '\n[tuning]\nfrom = "tw"\n')
    with pytest.raises(WorkloadError, match=r"no stored tuning for 'tw'"):
        workload.load(study)
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tw.json").write_text(json.dumps(doc))
    (spec,) = workload.load(study).expand()
    assert spec.training.lr == 0.01 and spec.tuning["file"] == "workloads/tuning/tw.json"
    study.write_text(study.read_text() + "[engines.numpy_dense]\ninit_scale = 2.0\n")
    with pytest.raises(WorkloadError, match=r"init_scale.*tuning sets it for every engine"):
        workload.load(study)


def test_the_best_reference_is_the_engine_whose_choice_scored_highest() -> None:
    from harness.spec.tuning import reference_engine

    engines = {"a": {"p1": 0.2}, "b": {"p1": 0.4}, "c": {"p1": 0.4}}
    assert reference_engine("best", engines, ["a", "b", "c"]) == "b"  # ties: the matrix's order
    assert reference_engine("best", engines, ["c", "b", "a"]) == "c"
    assert reference_engine("a", engines, ["a", "b"]) == "a"


def test_the_cachegrind_slice_runs_on_the_first_seed_only(tmp_path: Path) -> None:
    path = write_workload(tmp_path, seeds="[3, 1, 2]")
    path.write_text(path.read_text().replace("perf = false", "perf = false\ncachegrind = true"))
    specs = workload.load(path).expand()
    assert [(s.seed, s.counters.cachegrind) for s in specs] == [(3, True), (1, False), (2, False)]


def test_speedup_column_names_who_missed_the_target() -> None:
    import math

    from harness.reporting.plots.tables import _ratio

    assert _ratio(30.0, math.inf) == "not reached (tf_dense did)"
    assert _ratio(math.inf, 8.0) == "tf_dense not reached"
    assert _ratio(math.inf, math.inf) == "neither reached"
    assert _ratio(32.0, 8.0) == "4.00×"


def test_fidelity_workload_copies_amazon670ks_current_target() -> None:
    """amazon670k-fidelity has no tuning of its own: its literal target must follow amazon670k's."""
    fidelity = workload.load("amazon670k-fidelity")
    derived = workload.load("amazon670k").target_section()
    assert derived is not None and derived["source"] == "reference run"
    assert fidelity.evaluation.target_p1 == pytest.approx(derived["p1"])
