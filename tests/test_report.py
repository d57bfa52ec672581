"""Plots and the report from stored records (harness.reporting.report, harness.reporting.plots).

The fixture records under tests/fixtures/records/ (regenerate with tests/fixtures/make_records.py)
hold planted numbers: slide reaches the delicious target at 41.2 / 38.7 / 45.9 s, tf_dense at
130.4 / 122.8 / 141.0 s, tf_sampled at 88.5 / 95.1 s with its third seed diverged.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from harness.reporting.plots import group, style
from harness.reporting.plots.markup import to_markdown
from harness.reporting.plots.records import Run, load_runs, parse_record, scan
from harness.reporting.plots.stats import band, scaling_points, time_to_target

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "records"
WORKLOADS = REPO / "tests" / "fixtures" / "workloads"
MACHINE = "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz, 16 cores / 32 threads"
PLOT_STEMS = [
    f"{w}-{kind}"
    for w in ("delicious", "smoke")
    for kind in ("time-to-accuracy", "p1-vs-epochs", "cache-misses", "throughput-memory")
] + ["delicious-thread-scaling"]

# Renders the fixtures in a fresh interpreter in which TensorFlow, the engines package and the
# native extension cannot be imported at all, then reports which heavy modules got loaded.
RENDER_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    from pathlib import Path

    BLOCKED = ("tensorflow", "engines", "_slide", "keras")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name} (the report must not need it)")
            return None

    sys.meta_path.insert(0, Blocker())
    from harness.reporting.report import render

    report = render(Path(sys.argv[1]), Path(sys.argv[2]), workloads_dir=Path(sys.argv[3]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"report": str(report), "loaded": loaded}))
    """
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT, str(FIXTURES), str(out), str(WORKLOADS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"heavy modules imported: {result['loaded']}"
    assert Path(result["report"]) == out / "report.md"
    return out


# --- rendering from fixtures -------------------------------------------------------------


def test_every_plot_written_as_png_and_svg(rendered: Path) -> None:
    for stem in PLOT_STEMS:
        png = rendered / "plots" / f"{stem}.png"
        svg = rendered / "plots" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 10_000, f"{png} suspiciously small"
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
    # Atomic writes leave no temporary files behind.
    assert not [p for p in rendered.rglob("*.tmp")]


def test_plot_titles_name_workload_and_machine(rendered: Path) -> None:
    for stem in PLOT_STEMS:
        text = (rendered / "plots" / f"{stem}.svg").read_text(encoding="utf-8")
        assert f": {stem.split('-')[0]}" in text
        assert MACHINE in text


def test_counter_plot_labels_source_scope_and_unavailable(rendered: Path) -> None:
    smoke = (rendered / "plots" / "smoke-cache-misses.svg").read_text(encoding="utf-8")
    assert "cachegrind (simulated caches)" in smoke
    assert "LL: 8 MiB 16-way 64 B lines" in smoke
    assert "slide: no cache counts (perf_event_paranoid=4" in smoke
    assert "not shown, no counted run: tf_sampled" in smoke
    delicious = (rendered / "plots" / "delicious-cache-misses.svg").read_text(encoding="utf-8")
    assert "perf (hardware counters)" in delicious
    assert "training region only" in delicious
    assert "LLC-load-misses" in delicious
    assert "task-clock" not in delicious  # a software event, not a cache miss


def test_report_holds_planted_numbers(rendered: Path) -> None:
    md = (rendered / "report.md").read_text(encoding="utf-8")
    # Time to target: median [min-max] over seeds.
    assert "| slide | 16 | 3/3 | 41.2 s [38.7–45.9] | 3.17× |" in md
    assert "| tf_dense | 16 | 3/3 | 130.4 s [122.8–141.0] | 1.00× |" in md
    # A diverged seed counts as not reached: median of (88.5, 95.1, inf) is 95.1.
    assert "| tf_sampled | 16 | 2/3 | 95.1 s [88.5–not reached] | 1.37× |" in md
    assert "| tf_sampled | 16 | 2 | diverged | loss is NaN at step 900 |" in md
    assert "ValueError: num_sampled 4096 exceeds the 300 labels" in md
    # Scaling: 7200 / 650 samples/s at 16 vs 1 thread.
    assert "| slide | 16 | 7,200 [7,128–7,272] | 11.08× | 69% |" in md
    # Counters with their source; the unavailable one with its reason.
    assert "| slide | perf | training region only | LLC-load-misses | 420 [412–428] |  |" in md
    assert "| slide | perf | training region only | context-switches | 0.21 |  |" in md
    assert "| LLC-load-misses | 1,765 [1,730–1,799] | counted 62% of the time (scaled) |" in md
    assert "| slide | unavailable | — | — | — | nothing counted: see notes |" in md
    assert "- slide (unavailable): perf_event_paranoid=4 and cachegrind not installed" in md
    assert "- numpy_dense (cachegrind): simulated geometry I1: 32 KiB 8-way 64 B lines;" in md
    assert "| numpy_dense | cachegrind |" in md
    # Environment and fairness.
    assert "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz" in md
    assert "compiler=GCC 12.2.0; flags=-O3 -fopenmp -DNDEBUG" in md
    assert "90c87c1d0e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b" in md
    assert "runs only around `fit_step`" in md
    assert (
        "| slide | model: activation=relu; hidden=128; training: batch_size=128; beta1=0.9; beta2=0.999; "
        "eps=1e-08; lr=0.0001; max_epochs=20 | K=6; L=50; hash=dwta;" in md
    )
    assert "Description (from the current workload file `delicious.toml`): Delicious (real)" in md
    assert "Why this target: P@1 0.42: the tf_dense median" in md
    assert "OMP_NUM_THREADS ∈ {1, 2, 4, 8, 16}" in md
    assert "No engine was tuned: every engine ran the workload's own settings." in md
    assert "| slide | 16 | 16 | 1.90 | 41.2 | 4.62 | 53.0 |" in md  # the clocks of the fairness section
    assert (
        "| numpy_dense | model: activation=relu; hidden=32; training: batch_size=64; beta1=0.9; beta2=0.999; "
        "eps=1e-08; lr=0.001; max_steps=150 | — |" in md
    )
    # Every plot is referenced.
    for stem in PLOT_STEMS:
        assert f"(plots/{stem}.png)" in md


def test_html_report_inlines_plots(rendered: Path) -> None:
    html = (rendered / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == len(PLOT_STEMS)
    assert "<td>41.2 s [38.7–45.9]</td>" in html
    assert "<code>fit_step</code>" in html


# --- records ----------------------------------------------------------------------------


def _copy_fixtures(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    return results


def test_fixtures_load_with_unknown_extra_keys_and_ignore_event_logs() -> None:
    runs = load_runs(FIXTURES)
    assert len(runs) == 34
    assert all("future_field_this_report_does_not_know" in r.raw for r in runs)
    assert not any(r.path.name.endswith(".jsonl") for r in runs)
    assert {r.state for r in runs} == {"target_reached", "budget_spent", "diverged", "error"}


def test_bad_records_skipped_with_warning_naming_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = _copy_fixtures(tmp_path)
    good = next((results / "runs" / "smoke" / "slide").glob("*.json"))
    record = json.loads(good.read_text())
    bad_version = results / "runs" / "smoke" / "slide" / "future.json"
    bad_version.write_text(json.dumps(record | {"schema_version": 99}))
    no_spec = results / "runs" / "smoke" / "slide" / "nospec.json"
    no_spec.write_text(json.dumps({k: v for k, v in record.items() if k != "spec"}))
    garbage = results / "runs" / "smoke" / "slide" / "garbage.json"
    garbage.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        loaded = scan(results)
    assert len(loaded.runs) == 34
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad_version) in m and "unknown schema_version 99" in m for m in messages)
    assert any(str(no_spec) in m and "missing key spec" in m for m in messages)
    assert any(str(garbage) in m and "not a readable JSON record" in m for m in messages)
    # The report names the skipped files too.
    from harness.reporting.report import build

    md = to_markdown(build(loaded.runs, loaded.skipped, {}, results), results)
    assert "3 file(s) were skipped" in md
    assert "future.json`: unknown schema_version 99" in md


def test_drafts_event_logs_and_temporaries_are_not_records(tmp_path: Path) -> None:
    results = _copy_fixtures(tmp_path)
    folder = results / "runs" / "smoke" / "slide"
    good = next(folder.glob("*.json"))
    (folder / "abc.draft.json").write_text(good.read_text())
    (folder / ".abc.json.x1y2.tmp.json").write_text("{")
    assert len(load_runs(results)) == 34


def test_workload_text_from_records_then_workload_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from harness.reporting.report import workload_text

    runs = _runs("smoke", "slide")
    text = workload_text("smoke", runs, WORKLOADS)
    assert text.description.startswith("Smoke test on the synthetic tiny preset")
    assert text.target_source.startswith("P@1 0.90")
    assert workload_text("smoke", runs, tmp_path).description == ""  # no file: no description
    assert workload_text("smoke", runs, None).description == ""
    (tmp_path / "smoke.toml").write_text('description = "unterminated')
    with caplog.at_level(logging.WARNING):
        assert workload_text("smoke", runs, tmp_path).description == ""
    assert "smoke.toml" in caplog.text
    carried = [replace(runs[0], spec={**runs[0].spec, "description": "From the record: slide untouched."})]
    text = workload_text("smoke", carried, WORKLOADS)
    assert (text.description, text.origin) == ("From the record: slide untouched.", "the records")
    # Records that carry the prose are read whole: no half from the records, half from the file.
    assert text.target_source == ""
    carried = [replace(carried[0], spec={**carried[0].spec, "target_source": "From the record too."})]
    assert workload_text("smoke", carried, None).target_source == "From the record too."


def test_report_from_records_alone_needs_no_workload_file(tmp_path: Path) -> None:
    """Records written since the spec carries the workload's prose render with no workloads folder."""
    from harness.reporting.report import render
    from harness.store import records

    results = tmp_path / "results"
    for path in sorted(FIXTURES.rglob("*.json")):
        rec = dict(records.read(path))
        prose = {
            "description": f"The {rec['spec']['workload']} campaign, as its records say.",
            "target_source": "Planted in the record itself.",
        }
        rec["spec"] = {**rec["spec"], **prose}
        records.write(results / path.relative_to(FIXTURES), rec)
    md = render(results, tmp_path / "out", workloads_dir=None).read_text(encoding="utf-8")
    assert "Description (from the records): The delicious campaign, as its records say." in md
    assert "Description (from the records): The smoke campaign, as its records say." in md
    assert "Why this target: Planted in the record itself." in md
    assert "current workload file" not in md


def test_parse_record_names_bad_key() -> None:
    record = json.loads(next((FIXTURES / "runs" / "smoke" / "slide").glob("*.json")).read_text())
    record["spec"]["threads"] = 0
    with pytest.raises(ValueError, match=r"x\.json: spec\.threads is not a positive integer"):
        parse_record(record, Path("x.json"))
    record["spec"].pop("threads")
    with pytest.raises(ValueError, match=r"missing key spec\.threads"):
        parse_record(record, Path("x.json"))


def test_empty_results_give_clear_errors(tmp_path: Path) -> None:
    from harness.reporting.report import render

    with pytest.raises(FileNotFoundError, match=r"no result records: .*runs does not exist"):
        render(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match=r"no usable result records under .*runs \(no \*\.json files\)"):
        render(tmp_path)
    (tmp_path / "runs" / "a.json").write_text('{"schema_version": 2}')
    with pytest.raises(ValueError, match=r"1 file\(s\) skipped"):
        render(tmp_path)
    assert not (tmp_path / "report.md").exists()
    assert not (tmp_path / "plots").exists()


# --- aggregation ------------------------------------------------------------------------


def _runs(workload: str, engine: str, kind: str = "train") -> list[Run]:
    return group([r for r in load_runs(FIXTURES) if r.kind == kind], split_threads=kind == "train")[workload][
        engine
    ]


def test_time_to_target_counts_misses_as_infinite() -> None:
    s = time_to_target(_runs("delicious", "tf_sampled"))
    assert s is not None
    assert (s.median, s.low, s.n, s.missing) == (95.1, 88.5, 3, 1)
    assert math.isinf(s.high)


def test_median_curve_crosses_target_at_median_time_to_target() -> None:
    runs = _runs("delicious", "slide")
    b = band(runs, "train_s", log=True)
    assert b is not None and b.seeds == 3
    first = b.x[b.median >= 0.42][0]
    assert first == pytest.approx(41.2)
    assert b.high[b.x >= 38.7][0] >= 0.42  # the fastest seed is in the band from its own time


def test_scaling_speedup_and_efficiency() -> None:
    points = scaling_points(_runs("delicious", "slide", kind="scaling"))
    assert [p.threads for p in points] == [1, 2, 4, 8, 16]
    assert points[0].speedup == 1.0
    assert points[-1].speedup == pytest.approx(7200 / 650)
    assert points[-1].efficiency == pytest.approx(7200 / 650 / 16)


def test_engine_colours_fixed_and_distinct() -> None:
    colours = style.EngineColours(["slide", "zeta", "alpha", "tf_dense"])
    assert colours("slide") == style.ENGINE_COLOURS["slide"]
    assert colours("slide@4") == colours("slide")
    assert colours("alpha") == style.EXTRA_PALETTE[0] and colours("zeta") == style.EXTRA_PALETTE[1]
    assert style.engine_order(["zeta", "tf_dense", "slide@8", "slide@2"]) == [
        "slide@2",
        "slide@8",
        "tf_dense",
        "zeta",
    ]


def test_machine_label_flags_mixed_machines() -> None:
    env = {"cpu_model": "X", "cores": 4}
    assert style.machine_label([env, env]) == "X, 4 cores"
    assert style.machine_label([env, env, {"cpu_model": "Y", "cores": {"physical": 2, "logical": 4}}]) == (
        "X, 4 cores (+1 other machine(s))"
    )


# --- command line -----------------------------------------------------------------------


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.commands import report as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--results-dir", str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError):
        args.func(args)
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "runs" / "smoke", results / "runs" / "smoke")
    out = tmp_path / "out"
    args = parser.parse_args(["report", "--results-dir", str(results), "--out", str(out)])
    assert args.func(args) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    assert (out / "plots" / "smoke-time-to-accuracy.png").stat().st_size > 0
    assert not (results / "report.md").exists()


def test_perf_without_pmu_counts_no_cache_misses() -> None:
    from harness.reporting.plots.counters import counter_table
    from harness.reporting.plots.tables import counters_table

    run = _runs("smoke", "slide")[0]
    # What harness.counters.perf records in a VM without a virtual PMU: software events only.
    counters = {
        "source": "perf",
        "scope": "training_region",
        "reason": "hardware events <not supported> by perf on this machine",
        "events": {"cache-misses": None, "LLC-load-misses": None, "page-faults": 50595},
        "per_sample": {"cache-misses": None, "LLC-load-misses": None, "page-faults": 8.9},
        "running_pct": {"page-faults": 100.0},
        "cachegrind": None,
    }
    info = counter_table({"slide": [replace(run, counters=counters)]})["slide"]
    assert info["misses"] == {}
    assert info["uncounted"] == ["LLC-load-misses", "cache-misses"]
    assert info["per_sample"]["page-faults"].median == 8.9
    rows = counters_table({"slide": [replace(run, counters=counters)]}).rows
    assert (
        "slide",
        "perf",
        "training region only",
        "LLC-load-misses, cache-misses",
        "not counted",
        "",
    ) in rows


def test_several_thread_counts_are_separate_series() -> None:
    runs = [r for r in load_runs(FIXTURES) if r.kind == "train" and r.workload == "smoke"]
    doubled = runs + [replace(r, threads=4, run_id=r.run_id + "x") for r in runs if r.engine == "slide"]
    by_engine = group(doubled)["smoke"]
    assert sorted(by_engine) == ["numpy_dense", "slide@2", "slide@4", "tf_sampled"]
    assert {r.threads for r in by_engine["slide@4"]} == {4}
    assert style.variant("slide@4", by_engine) == 1 and style.variant("numpy_dense", by_engine) == 0


def test_fairness_warns_when_engines_ran_different_settings(tmp_path: Path) -> None:
    from harness.reporting.report import build

    runs = [r for r in load_runs(FIXTURES) if r.workload == "smoke"]
    same = to_markdown(build(runs, (), {}, tmp_path), tmp_path)
    assert "not a like-for-like comparison" not in same
    changed = [
        replace(r, spec={**r.spec, "training": {**r.spec["training"], "lr": 0.1}})
        if r.engine == "slide"
        else r
        for r in runs
    ]
    assert "not a like-for-like comparison" in to_markdown(build(changed, (), {}, tmp_path), tmp_path)


# -- names from records never choose where files are written ----------------------------------


@pytest.mark.parametrize("key", ["workload", "engine"])
@pytest.mark.parametrize("name", ["../../../x", "..", "a/b", ".hidden", "/abs"])
def test_record_names_that_are_not_plain_identifiers_are_refused(key: str, name: str) -> None:
    record = json.loads(next((FIXTURES / "runs" / "smoke" / "slide").glob("*.json")).read_text())
    record["spec"][key] = name
    with pytest.raises(ValueError, match=rf"x\.json: spec\.{key} .* cannot be used in a file name"):
        parse_record(record, Path("x.json"))


def test_record_with_escaping_workload_is_skipped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "runs" / "smoke", results / "runs" / "smoke")
    good = next((results / "runs" / "smoke" / "slide").glob("*.json"))
    record = json.loads(good.read_text())
    record["spec"]["workload"] = "../../../x"
    bad = good.with_name("escape.json")
    bad.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        loaded = scan(results)
    assert bad in [path for path, _ in loaded.skipped]
    assert all(r.workload == "smoke" for r in loaded.runs)
    assert any(str(bad) in r.getMessage() and "spec.workload" in r.getMessage() for r in caplog.records)


def test_plot_files_and_descriptions_stay_inside_their_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from matplotlib.figure import Figure

    from harness.reporting.plots.output import save_figure
    from harness.reporting.report import workload_text

    out = tmp_path / "a" / "b" / "plots"
    for stem in ("../../../x-time-to-accuracy", "../escape", "/abs"):
        with pytest.raises(ValueError, match="cannot be used in a file name"):
            save_figure(Figure(), out, stem)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "nothing written anywhere"
    (tmp_path / "secret.toml").write_text('description = "not a workload of this folder"')
    with caplog.at_level(logging.WARNING):
        assert workload_text("../secret", [], tmp_path / "a").description == ""
    assert "cannot be used in a file name" in caplog.text
