"""Plots and the report, from stored result records only.

`render(results_dir, out_dir=None) -> Path` reads `results_dir/runs/**/*.json`, draws every plot
into `out_dir/plots/` (PNG and SVG) and writes `out_dir/report.md` and `out_dir/report.html`
(plots inline), all atomically; it returns the path of report.md. It never imports an engine,
TensorFlow or the native extension and never reads data, so a report can be rebuilt anywhere
from the records alone.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import REPO_ROOT
from harness.reporting.plots import ablation, group, render_all, summary, tables, target_of
from harness.reporting.plots.markup import Block, Bullets, Heading, Image, Para, to_html, to_markdown
from harness.reporting.plots.records import Run, scan
from harness.store.results import inside, safe_name, write_atomic

log = logging.getLogger(__name__)

# The source tree's workloads/ folder: where the prose of records older than the spec's own
# description and target_source is looked up (see workload_text).
DEFAULT_WORKLOADS_DIR = REPO_ROOT / "workloads"

PLOT_TITLES = {
    "seed_comparison": "slide on the CPU against tf_dense on the GPU (time to accuracy, samples/s per device)",
    "time_to_accuracy": "P@1 against the train clock",
    "p1_vs_epochs": "P@1 against epochs",
    "cache_misses": "cache misses per training sample",
    "throughput_memory": "throughput and peak memory",
    "thread_scaling": "thread scaling",
}


def _image(kind: str, paths: Mapping[str, Path], workload: str) -> Image:
    if kind.startswith("ablation:"):
        _, treat, control = kind.split(":", 2)
        return Image(f"{workload}: hashing ablation, {treat} vs {control}", paths["png"], paths.get("svg"))
    return Image(f"{workload}: {PLOT_TITLES.get(kind, kind)}", paths["png"], paths.get("svg"))


@dataclass(frozen=True)
class WorkloadText:
    """A workload's prose: what it is, how much tuning went in, where its target comes from."""

    description: str = ""
    target_source: str = ""
    origin: str = ""  # where the text was read from, said in the report


def workload_text(workload: str, runs: Sequence[Run], workloads_dir: Path | None) -> WorkloadText:
    """The description and target source from the records, else from `workloads_dir/<workload>.toml`.

    Every spec carries the workload's prose since it became part of `RunSpec`; records written
    before then do not, and only for those is the current workload file read (the report says
    so). Only its text keys are read, never validated or executed, and a missing or unreadable
    file just means no description.
    """
    carried = tables.description_of(runs)
    if carried:
        return WorkloadText(carried, tables.target_source_of(runs), "the records")
    if workloads_dir is None:
        return WorkloadText()
    try:
        # The name comes from the records: it may only pick a file directly in workloads_dir.
        path = inside(workloads_dir / f"{safe_name(workload, 'workload name')}.toml", workloads_dir)
    except ValueError as exc:
        log.warning("no description for workload %r: %s", workload, exc)
        return WorkloadText()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return WorkloadText()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("%s: unreadable, the report goes without its description (%s)", path, exc)
        return WorkloadText()

    def text(key: str) -> str:
        value = raw.get(key)
        return " ".join(value.split()) if isinstance(value, str) else ""

    return WorkloadText(
        text("description"), text("target_source"), f"the current workload file `{path.name}`"
    )


def _protocol(runs: Sequence[Run], text: WorkloadText) -> str:
    spec = runs[0].spec
    evaluation = spec.get("evaluation") if isinstance(spec.get("evaluation"), Mapping) else {}
    target = target_of(runs)
    parts = [f"Target P@1 {summary.target_text(runs)}." if target is not None else "No target P@1 recorded."]
    if text.target_source:
        parts.append(f"Why this target: {text.target_source}")
    if evaluation:
        cadence = [
            f"every {evaluation[key]:g} {unit}"
            for key, unit in (("every_steps", "steps"), ("every_seconds", "s of train clock"))
            if isinstance(evaluation.get(key), (int, float))
        ]
        growth = evaluation.get("growth")
        if isinstance(growth, (int, float)) and isinstance(evaluation.get("every_seconds"), (int, float)):
            first = evaluation["every_seconds"]
            cadence = [
                f"at {first:g} s x {growth:g}^k of train clock (geometric: fast and slow engines both get curves)"
            ]
        parts.append(
            f"Evaluation {' or '.join(cadence) or '?'} on a fixed, seeded subset of "
            f"{evaluation.get('subset', '?')} test samples (seed {evaluation.get('seed', '?')}), k = "
            f"{evaluation.get('k', '?')}; P@k computed by the harness from each engine's top-k."
        )
    dataset = spec.get("dataset")
    if dataset:
        data = runs[0].raw.get("data")
        # The shape only; checksums and sources are in the records for whoever needs them.
        shape_keys = ("train_rows", "test_rows", "eval_rows", "num_features", "num_labels")
        shape_of = {k: data[k] for k in shape_keys if k in data} if isinstance(data, Mapping) else {}
        shape = f" ({tables.kv(shape_of)})" if shape_of else ""
        parts.append(f"Dataset: {tables.kv(dataset)}{shape}.")
    return " ".join(parts)


def _fairness(by_engine: tables.ByEngine, text: WorkloadText) -> list[Block]:
    shared = {
        (
            tables.kv(r.spec.get("model")),
            tables.kv(r.spec.get("training")),
            tables.kv(r.spec.get("evaluation")),
        )
        for rs in by_engine.values()
        for r in rs
    }
    # The claim below is checked against the specs, not assumed: a campaign assembled from records
    # of different workload versions would otherwise be reported as a like-for-like comparison.
    mismatch = (
        [
            Para(
                "WARNING: the engines' records differ in model, training or evaluation settings (see the "
                "table below), so this is not a like-for-like comparison."
            )
        ]
        if len(shared) > 1
        else []
    )
    return [
        Heading(3, "Fairness: what each clock covered, parameters, tuning"),
        *mismatch,
        Para(
            "Every engine ran the same workload: the same data, the same minibatches in the same order for "
            "a given seed (the harness owns batching), the same model and optimizer, the same evaluation "
            "subset, graded by one shared P@k function from each engine's top-k label ids. The train clock "
            "runs only around `fit_step` (one minibatch update); `prepare` (allocation, initialisation, hash "
            "tables, graph tracing), evaluation (`predict_topk`), data loading and process start are off it "
            "and shown separately below. Time to target is train-clock time at the first evaluation at or "
            "above the target; the wall clock includes everything."
        ),
        tables.clock_table(by_engine),
        *summary.tuning_blocks(by_engine),
        tables.hyper_table(by_engine),
    ]


def _train_section(
    workload: str, by_engine: tables.ByEngine, plots: Mapping, results_dir: Path, text: WorkloadText
) -> list[Block]:
    runs = [r for rs in by_engine.values() for r in rs]
    blocks: list[Block] = [Heading(2, f"Workload `{workload}`")]
    if text.description:
        blocks.append(Para(f"Description (from {text.origin}): {text.description}"))
    blocks += [
        Para(_protocol(runs, text)),
        *tables.machine_types_note(by_engine),
        Heading(3, "Time to target (train clock)"),
        *tables.per_machine_type(by_engine, tables.time_to_target_table),
        Para(
            "Medians over seeds of runs that did not fail; a run that missed the target (budget spent or "
            "diverged) counts as infinitely slow, so the median is 'not reached' when fewer than half the "
            f"seeds got there. Speedup = {tables.REFERENCE_ENGINE} median time / engine median time, at the same "
            "thread count (above 1: faster than the reference)."
            + (
                f" This workload has GPU records: each engine is labelled with its device, and the reference "
                f"is {tables.REFERENCE_ENGINE} on the GPU."
                if any(r.device == "gpu" for r in runs)
                else ""
            )
        ),
        Heading(3, "Final accuracy, throughput, memory"),
        *tables.per_machine_type(by_engine, tables.results_table),
        Para(
            "Medians [min–max] over runs that neither failed nor diverged; final P@k is the last evaluation."
        ),
        Heading(3, "Counters per training sample (cache misses and more)"),
        *tables.per_machine_type(by_engine, tables.counters_table),
    ]
    notes = tables.counters_notes(by_engine)
    if notes:
        blocks.append(Bullets(notes))
    not_counted = tables.not_counted_table(runs, results_dir)
    if not_counted is not None:
        blocks += [Heading(3, "Runs not counted (failed or diverged)"), not_counted]
    blocks += ablation.section(
        workload,
        by_engine,
        [_image(kind, paths, workload) for kind, paths in plots.items() if kind.startswith("ablation:")],
    )
    blocks.append(Heading(3, "Plots"))
    blocks += [
        _image(kind, paths, workload)
        for kind, paths in plots.items()
        if kind != "thread_scaling" and not kind.startswith("ablation:")
    ]
    blocks += _fairness(by_engine, text)
    return blocks


def _scaling_section(
    workload: str, by_engine: tables.ByEngine, plots: Mapping, results_dir: Path
) -> list[Block]:
    runs = [r for rs in by_engine.values() for r in rs]
    blocks: list[Block] = [
        Heading(3, "Thread scaling"),
        Para(
            "Samples per second on the train clock after the warm-up steps, median over seeds; speedup "
            "relative to the same engine at its fewest threads; efficiency = speedup / ideal."
        ),
        tables.scaling_table(by_engine),
    ]
    if "thread_scaling" in plots:
        blocks.append(_image("thread_scaling", plots["thread_scaling"], workload))
    not_counted = tables.not_counted_table(runs, results_dir)
    if not_counted is not None:
        blocks += [Para("Scaling runs not counted:"), not_counted]
    return blocks


def build(
    runs: Sequence[Run],
    skipped: Sequence[tuple[Path, str]],
    plots: Mapping,
    results_dir: Path,
    workloads_dir: Path | None = None,
) -> list[Block]:
    """The whole report as blocks (see harness.reporting.plots.markup)."""
    train = group([r for r in runs if r.kind == "train"])
    scaling = group([r for r in runs if r.kind == "scaling"], split_threads=False)
    n_scaling = sum(1 for r in runs if r.kind == "scaling")
    blocks: list[Block] = [
        Heading(1, "slidebench report"),
        Para(
            f"Rendered from {len(runs)} result record(s) under `{(results_dir / 'runs').as_posix()}` "
            f"({len(runs) - n_scaling} training, {n_scaling} thread-scaling); "
            f"workloads: {', '.join(sorted(set(train) | set(scaling)))}. Plots and this report are generated "
            "from the records alone and can be rebuilt with `slidebench report`."
        ),
    ]
    if train:
        blocks += summary.section(train, scaling)
    if skipped:
        blocks += [
            Para(f"{len(skipped)} file(s) were skipped:"),
            Bullets(tuple(f"`{path.as_posix()}`: {reason}" for path, reason in skipped)),
        ]
    for workload in sorted(set(train) | set(scaling)):
        workload_plots = plots.get(workload, {})
        all_runs = [
            r for by in (train.get(workload, {}), scaling.get(workload, {})) for rs in by.values() for r in rs
        ]
        text = workload_text(workload, all_runs, workloads_dir)
        if workload in train:
            blocks += _train_section(workload, train[workload], workload_plots, results_dir, text)
        else:
            blocks.append(Heading(2, f"Workload `{workload}`"))
        if workload in scaling:
            blocks += _scaling_section(workload, scaling[workload], workload_plots, results_dir)
        per_engine = group(all_runs, split_threads=False)[workload]
        blocks += [
            Heading(3, "Environment"),
            tables.environment_table(all_runs),
            tables.engine_info_table(per_engine),
        ]
    return blocks


def render(
    results_dir: Path, out_dir: Path | None = None, *, workloads_dir: Path | None = DEFAULT_WORKLOADS_DIR
) -> Path:
    """Render every plot and the report from `results_dir/runs`; returns the path of report.md.

    `workloads_dir` is where the descriptions of records that carry none are looked up (None:
    nowhere); records written since the spec carries the prose need nothing else. Raises
    FileNotFoundError / ValueError (naming the folder) when there are no usable records, before
    anything is written.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    loaded = scan(results_dir)
    plots = render_all(loaded.runs, out_dir / "plots")
    blocks = build(loaded.runs, loaded.skipped, plots, results_dir, workloads_dir)
    report_md = write_atomic(out_dir / "report.md", to_markdown(blocks, out_dir).encode("utf-8"))
    report_html = write_atomic(
        out_dir / "report.html", to_html(blocks, out_dir, "slidebench report").encode("utf-8")
    )
    log.info("wrote %s and %s", report_md, report_html)
    return report_md
