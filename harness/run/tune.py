"""`slidebench tune WORKLOAD`: the same declared search for every engine, then the target's reference.

The trials run interleaved (every engine's first configuration, then every engine's second, ...),
so a change in the machine's load falls on all engines alike rather than on the last one tuned.
Each trial trains for `budget_fraction` of the workload's train-clock budget and is scored by the
P@1 of its last evaluation on the validation split (held-out training rows; the test split is
never seen). Ties keep the earlier configuration. Trials are records under `<results>/tuning/`
like any run, so an interrupted tuning resumes where it stopped.

With `reference` declared (an engine, or "best": the engine whose chosen trial scored highest),
the reference engine then trains with its chosen values for `reference_seconds` on the same
validation split, and the target is `target_fraction` of the best P@1 it reached. Everything lands in `workloads/tuning/<workload>.json` (written atomically).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.run import env, runner
from harness.spec.tuning import TUNING_FILE_VERSION, plain_number, reference_engine, split_values, tuning_file
from harness.spec.workload import RunSpec, Workload
from harness.store import records, results

log = logging.getLogger(__name__)

# Evaluations per trial: the score is the last one; the one before shows whether it was still rising.
# Exact scoring of every label is what a trial's wall time goes to at paper width, so they are few.
TRIAL_EVALUATIONS = 2
REFERENCE_EVALUATIONS = 20  # at least; more where the workload evaluates more often


def _as_trial(base: RunSpec, values: dict[str, Any], factor: float, evaluations: int) -> RunSpec:
    """A run of `base` with `values` and `factor` times each of its budgets, scored on the validation split."""
    training_values, params = split_values(values)
    tr = base.training
    assert tr.max_seconds is not None
    seconds = factor * tr.max_seconds
    training = replace(
        tr,
        max_seconds=seconds,
        max_steps=None if tr.max_steps is None else max(1, math.ceil(factor * tr.max_steps)),
        max_epochs=None if tr.max_epochs is None else factor * tr.max_epochs,
        **training_values,
    )
    evaluation = replace(
        base.evaluation,
        split="validation",
        every_seconds=seconds / evaluations,
        growth=None,
        every_steps=None,
        target_p1=None,
        diagnostics=False,
        at_start=False,
    )
    counters = replace(base.counters, perf=False, cachegrind=False)
    return replace(
        base,
        engine_params={**base.engine_params, **params},
        training=training,
        evaluation=evaluation,
        counters=counters,
        tuning=None,
        target=None,
    )


def trial_specs(w: Workload, engines: Sequence[str]) -> list[tuple[str, dict[str, Any], RunSpec]]:
    """(engine, values, spec) of every trial, interleaved across engines."""
    decl = w.tuning_decl
    if decl is None:
        raise ValueError(f"{w.name}: no [tuning] table: declare the search space first (docs/protocol.md)")
    if w.training.max_seconds is None:
        raise ValueError(f"{w.name}: tuning needs a [training] max_seconds budget to take a fraction of")
    bases = {e: w.expand([e], [w.threads[0]], [decl.seed], tuned=False) for e in engines}
    out = []
    for values in decl.configs():
        for engine in engines:
            for base in bases[engine]:
                out.append((engine, values, _as_trial(base, values, decl.budget_fraction, TRIAL_EVALUATIONS)))
    return out


def _run_all(
    specs: Sequence[RunSpec], results_dir: Path, data_dir: Path | None, timeout_s: float | None
) -> dict[str, dict[str, Any]]:
    """Run the specs not yet recorded; return every record by run id."""
    from harness.run.executors import LocalExecutor

    todo = [s for s in specs if not results.record_path(results_dir, s.workload, s.engine, s.run_id).exists()]
    progress = runner.Progress(len(todo), specs=todo)
    for _ in LocalExecutor().run(
        todo, results_dir, data_dir=data_dir, timeout_s=timeout_s, progress=progress
    ):
        pass
    out = {}
    for s in specs:
        path = results.record_path(results_dir, s.workload, s.engine, s.run_id)
        out[s.run_id] = (
            records.read(path) if path.exists() else {"status": {"state": "missing"}, "curve": []}
        )
    return out


def _score(record: dict[str, Any]) -> float | None:
    """The last validated P@1 of a trial that ran to its budget; None for a failed trial."""
    if record.get("status", {}).get("state") not in records.OK_STATES:
        return None
    curve = record.get("curve") or []
    return float(curve[-1]["p1"]) if curve else None


def tune(
    w: Workload,
    results_dir: Path,
    *,
    engines: Sequence[str] | None = None,
    data_dir: Path | None = None,
    timeout_s: float | None = None,
    reference: bool = True,
) -> Path:
    """Run the search (and the reference), write the tuning file; returns its path."""
    decl = w.tuning_decl
    if decl is None:
        raise ValueError(f"{w.name}: no [tuning] table: declare the search space first (docs/protocol.md)")
    out_path = tuning_file(w.path, w.name)
    if out_path is None:
        raise ValueError(
            f"{w.name}: tuning needs a workload loaded from a file (the outcome is written beside it)"
        )
    chosen_engines = list(engines) if engines else list(w.engines)
    # A variant defined outside the matrix runs with `run --engines`, so it can take the same search.
    unknown = [e for e in chosen_engines if e not in w.engines and e not in w.variants]
    if unknown:
        raise ValueError(f"{w.name}: neither in [matrix] engines nor a [variants] table: {', '.join(unknown)}")
    tune_dir = results.check_results_dir(Path(results_dir) / "tuning")
    load_before = os.getloadavg()
    with results.locked(tune_dir, f"tune {w.name}"):
        trials = trial_specs(w, chosen_engines)
        log.info("%s: %d trials (%d per engine) of %.0f s train clock each", w.name, len(trials),
                 len(decl.configs()), decl.budget_fraction * (w.training.max_seconds or 0))  # fmt: skip
        trial_records = _run_all([s for _, _, s in trials], tune_dir, data_dir, timeout_s)
        per_engine: dict[str, dict[str, Any]] = {}
        for engine, values, spec in trials:
            rec = trial_records[spec.run_id]
            entry = per_engine.setdefault(engine, {"trials": []})
            entry["trials"].append({
                "values": {k: plain_number(v) for k, v in values.items()},
                "p1": _score(rec),
                "state": rec.get("status", {}).get("state"),
                "run_id": spec.run_id,
                "steps": rec.get("timing", {}).get("steps"),
            })  # fmt: skip
        for engine, entry in per_engine.items():
            scored = [t for t in entry["trials"] if t["p1"] is not None]
            if not scored:
                raise RuntimeError(
                    f"{w.name}: every trial of {engine} failed; see the records under {tune_dir}"
                )
            best = max(scored, key=lambda t: t["p1"])  # max keeps the first of equals
            entry["chosen"], entry["p1"] = dict(best["values"]), best["p1"]
            # Per engine, because `--engines` can retune some later: a reader compares the windows.
            entry["window"] = {
                "tuned_at": results.utc_now(),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            }

        doc = _previous(out_path, decl.to_dict())
        doc["engines"].update(per_engine)
        doc.update({
            "version": TUNING_FILE_VERSION,
            "workload": w.name,
            "search": decl.to_dict(),
            "budget_s": decl.budget_fraction * (w.training.max_seconds or 0),
            # What the trials scored on (the split is capped at a fraction of the training points).
            "validation_points": next(
                (r["data"].get("eval_rows") for r in trial_records.values() if isinstance(r.get("data"), dict)), None
            ),
            "tuned_at": results.utc_now(),
            "machine": {"cpu": env.cpu_info().get("cpu_model"), "cores": os.cpu_count()},
            "load_before": [round(x, 2) for x in load_before],
        })  # fmt: skip
        if reference and decl.reference is not None and set(w.engines) <= set(doc["engines"]):
            doc["target"] = _reference(w, doc, tune_dir, data_dir, timeout_s)
        doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results.write_atomic(out_path, results.dumps(doc))
    return out_path


def _previous(path: Path, search: dict[str, Any]) -> dict[str, Any]:
    """The tuning file's earlier content when it was made for the same search (a resumed or partial tune)."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"engines": {}}
    if not isinstance(doc, dict) or doc.get("search") != search or not isinstance(doc.get("engines"), dict):
        return {"engines": {}}
    return doc


def _reference(
    w: Workload, doc: dict[str, Any], tune_dir: Path, data_dir: Path | None, timeout_s: float | None
) -> dict[str, Any]:
    decl = w.tuning_decl
    assert decl is not None and decl.reference is not None and decl.reference_seconds is not None
    assert decl.target_fraction is not None
    engine = reference_engine(decl.reference, doc["engines"], w.engines)
    values = doc["engines"][engine]["chosen"]
    base = w.expand([engine], [w.threads[0]], [decl.seed], tuned=False)[0]
    factor = decl.reference_seconds / (w.training.max_seconds or 1.0)
    spec = _as_trial(base, values, factor, REFERENCE_EVALUATIONS)
    # At least the workload's own cadence: an engine that converges in seconds on a small set would
    # otherwise pass its best P@1 between two of the REFERENCE_EVALUATIONS.
    if w.evaluation.growth:  # geometric: fine early, where a fast engine peaks, sparse later
        spec = replace(
            spec,
            evaluation=replace(spec.evaluation, every_seconds=w.evaluation.every_seconds, growth=w.evaluation.growth),
        )
    elif w.evaluation.every_seconds:
        every = min(spec.evaluation.every_seconds or math.inf, w.evaluation.every_seconds)
        spec = replace(spec, evaluation=replace(spec.evaluation, every_seconds=every))
    rec = _run_all([spec], tune_dir, data_dir, timeout_s)[spec.run_id]
    curve = rec.get("curve") or []
    if rec.get("status", {}).get("state") not in records.OK_STATES or not curve:
        raise RuntimeError(f"{w.name}: the reference run of {engine} failed: {rec.get('status')}")
    best = max(float(p["p1"]) for p in curve)
    last = float(curve[-1]["p1"])
    return {
        "p1": round(decl.target_fraction * best, 4),
        "fraction": decl.target_fraction,
        "reference": {
            "engine": engine,
            "values": values,
            "budget_s": decl.reference_seconds,
            "best_p1": best,
            "last_p1": last,
            "run_id": spec.run_id,
            "split": "validation",
        },
    }
