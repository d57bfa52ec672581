"""The hashing ablation in the report: pairs found from records, the measured effect stated, the
sampler diagnostics tabled and plotted (planted records, no engine runs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.reporting.plots import ablation
from harness.reporting.plots.records import load_runs

FIXTURE = (
    Path(__file__).parent / "fixtures" / "records" / "runs" / "smoke" / "slide" / "0c4580bcf49ec785.json"
)


def _record(engine: str, seed: int, p1s: list[float], selection: str, recall: float | None) -> dict[str, Any]:
    rec = copy.deepcopy(json.loads(FIXTURE.read_text()))
    rec["run_id"] = f"{engine}-{seed}"
    rec["spec"]["engine"] = engine
    rec["spec"]["seed"] = seed
    rec["spec"]["engine_params"] = {**rec["spec"]["engine_params"], "selection": selection}
    if engine != "slide":
        rec["spec"]["base_engine"] = "slide"
    rec["status"] = {"state": "budget_spent", "message": "planted"}
    rec["curve"] = [
        {
            "step": 100 * i,
            "epoch": i / 10,
            "samples": 12800 * i,
            "train_s": 1.0 * i,
            "wall_s": 2.0 * i,
            "p1": p1,
            "p3": p1,
            "p5": p1,
            "ndcg5": p1,
            "loss": 1.0,
            "diagnostics": {
                "active": {
                    "labels": 5.5,
                    "lsh": 0.0 if recall is None else 900.0,
                    "random": 1018.5 if recall is None else 118.5,
                },
                "lsh": None
                if recall is None
                else {
                    "candidates": 950.0,
                    "recall_top10": recall,
                    "recall_top100": recall / 2,
                    "enrichment": 40.0 + seed,
                },
            },
        }
        for i, p1 in enumerate(p1s)
    ]
    return rec


def _write(results: Path, records: list[dict[str, Any]]) -> None:
    for rec in records:
        path = results / "runs" / "smoke" / rec["spec"]["engine"] / f"{rec['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))


def _by_engine(results: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in load_runs(results):
        out.setdefault(run.engine, []).append(run)
    return out


@pytest.mark.parametrize(
    ("treat_p1", "control_p1", "effect"),
    [
        ([0.1, 0.5, 0.8], [0.1, 0.3, 0.4], "hashing helps: +0.4"),
        ([0.1, 0.3, 0.4], [0.1, 0.5, 0.8], "hashing hurts: -0.4"),
        ([0.1, 0.5, 0.6], [0.1, 0.5, 0.6], "no measurable effect of hashing"),
    ],
)
def test_verdict_states_the_measured_effect_with_seeds(
    tmp_path: Path, treat_p1: list[float], control_p1: list[float], effect: str
) -> None:
    records = []
    for seed in (0, 1, 2):
        jitter = 0.01 * seed
        records.append(_record("slide", seed, [p + jitter for p in treat_p1], "vanilla", 0.4))
        records.append(_record("slide-random", seed, [p + jitter for p in control_p1], "random", None))
    _write(tmp_path, records)
    by_engine = _by_engine(tmp_path)
    assert ablation.pairs(by_engine) == [("slide", "slide-random")]
    sentence = ablation.verdict("slide", "slide-random", by_engine["slide"], by_engine["slide-random"])
    assert "At step 200" in sentence and "over 3 and 3 seed(s)" in sentence
    assert effect in sentence, sentence
    if "helps" in effect:
        every = "20, 40, 60, 80, 100, 120, 140, 160, 180, 200"
        assert f"ahead of the control with disjoint ranges at steps {every} and behind at no step" in sentence
    if "no measurable" in effect:
        assert "disjoint ranges at no step and behind at no step" in sentence


def test_verdict_sees_an_effect_that_is_gone_by_the_last_step(tmp_path: Path) -> None:
    records = []
    for seed in (0, 1, 2):
        records.append(_record("slide", seed, [0.1, 0.5, 0.60 + 0.01 * seed], "vanilla", 0.4))
        records.append(_record("slide-random", seed, [0.1, 0.1, 0.60 + 0.01 * seed], "random", None))
    _write(tmp_path, records)
    by_engine = _by_engine(tmp_path)
    sentence = ablation.verdict("slide", "slide-random", by_engine["slide"], by_engine["slide-random"])
    assert "no measurable effect of hashing" in sentence
    early = "20, 40, 60, 80, 100, 120, 140, 160, 180"  # equal at 200 only
    assert f"ahead of the control with disjoint ranges at steps {early} and behind at no step" in sentence


def test_section_tables_diagnostics_and_is_absent_without_a_control(tmp_path: Path) -> None:
    _write(tmp_path, [_record("slide", s, [0.1, 0.4, 0.6], "vanilla", 0.3 + 0.1 * s) for s in (0, 1, 2)])
    assert ablation.section("smoke", _by_engine(tmp_path), []) == []
    _write(tmp_path, [_record("slide-random", s, [0.1, 0.4, 0.5], "random", None) for s in (0, 1, 2)])
    blocks = ablation.section("smoke", _by_engine(tmp_path), [])
    table = next(b for b in blocks if isinstance(b, ablation.Table))
    rows = {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}
    assert rows["`slide`"]["recall top-10"] == "0.40 [0.30–0.50]"
    assert rows["`slide`"]["enrichment"] == "41.00 [40.00–42.00]"
    assert rows["`slide-random`"]["LSH / sample"] == "0.00 [0.00–0.00]"
    assert rows["`slide-random`"]["recall top-10"] == "n/a"


def test_report_renders_the_ablation_with_its_plot(tmp_path: Path) -> None:
    from harness.reporting import report

    results = tmp_path / "results"
    _write(results, [_record("slide", s, [0.1, 0.4, 0.6], "vanilla", 0.3) for s in (0, 1)])
    _write(results, [_record("slide-random", s, [0.1, 0.3, 0.5], "random", None) for s in (0, 1)])
    report.render(results)
    text = (results / "report.md").read_text()
    assert "### Hashing ablation" in text and "`slide` (LSH candidates) reaches P@1" in text
    assert (results / "plots" / "smoke-ablation-slide-vs-slide-random.png").is_file()


def test_p1_between_evaluations_is_interpolated_not_the_older_point(tmp_path: Path) -> None:
    """Runs evaluated on the train clock share no steps: each is read at the same step, between its
    own evaluations, so neither side is compared with a stale value."""
    control = _record("slide-random", 0, [0.1, 0.3, 0.5], "random", None)
    for i, point in enumerate(control["curve"]):
        point["step"] = 150 * i  # evaluated at 0, 150, 300
    _write(tmp_path, [control])
    run = _by_engine(tmp_path)["slide-random"][0]
    assert ablation._p1_at_step(run, 150) == pytest.approx(0.3)
    assert ablation._p1_at_step(run, 200) == pytest.approx(0.3 + (50 / 150) * 0.2)
    assert ablation._p1_at_step(run, 301) is None  # past its last evaluation: unknown, not its last value


def test_one_seed_or_no_common_steps_claims_nothing(tmp_path: Path) -> None:
    """One seed a side has no spread: the sentence gives the difference, says it cannot be judged,
    and adds no per-step clause (here the two runs do not even share their evaluated steps)."""
    treat = _record("slide", 0, [0.1, 0.5, 0.8], "vanilla", 0.4)
    control = _record("slide-random", 0, [0.1, 0.3, 0.4], "random", None)
    for i, point in enumerate(control["curve"]):
        point["step"] = 100 * i + (37 if i else 0)  # other steps than the treatment's
    _write(tmp_path, [treat, control])
    by_engine = _by_engine(tmp_path)
    sentence = ablation.verdict("slide", "slide-random", by_engine["slide"], by_engine["slide-random"])
    assert "from one seed: no spread to judge it by" in sentence and "helps" not in sentence, sentence
    assert "evaluated steps" not in sentence


def test_every_treatment_meets_every_control_and_each_control_is_named_by_its_negatives(tmp_path: Path) -> None:
    records = []
    for seed in (0, 1):
        records.append(_record("slide", seed, [0.1, 0.3, 0.4 + 0.01 * seed], "vanilla", 0.4))
        records.append(_record("slide-random", seed, [0.1, 0.2, 0.3 + 0.01 * seed], "random", None))
        freq = _record("slide-random-unigram", seed, [0.1, 0.4, 0.5 + 0.01 * seed], "random", None)
        freq["spec"]["engine_params"]["padding_sampler"] = "unigram"
        records.append(freq)
    _write(tmp_path, records)
    by_engine = _by_engine(tmp_path)
    assert ablation.pairs(by_engine) == [("slide", "slide-random"), ("slide", "slide-random-unigram")]
    uniform = ablation.verdict("slide", "slide-random", by_engine["slide"], by_engine["slide-random"])
    assert "(labels + uniform random negatives, no tables)" in uniform and "hashing helps: +0.100" in uniform
    freq_sentence = ablation.verdict(
        "slide", "slide-random-unigram", by_engine["slide"], by_engine["slide-random-unigram"]
    )
    assert "(labels + random negatives drawn by training label frequency, no tables)" in freq_sentence
    assert "hashing hurts: -0.100" in freq_sentence
