"""Reading stored result records for plots and the report.

Only the JSON records under `<results>/runs/**/*.json` are read (never engines, never data), so
this module imports nothing heavy. Each record, brought to the current schema by
`harness.store.records.upgrade` (which owns the versions), becomes a frozen `Run`, a flat view of the
fields the plots and tables use; the record is kept for anything else. Unknown extra keys are
tolerated (the schema grows); a record whose `schema_version` is unknown, or that lacks a key every
consumer needs, is skipped with a warning naming the file, so that one bad file never hides a whole
campaign.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.store import records
from harness.store.records import RecordError
from harness.store.results import safe_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a training run."""

    step: int
    epoch: float
    train_s: float
    p1: float
    p3: float | None = None
    p5: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class Run:
    """One stored record, flattened to what the plots and the report read."""

    path: Path
    run_id: str
    kind: str  # "train" | "scaling"
    workload: str
    engine: str
    threads: int
    seed: int
    state: str
    message: str
    target_p1: float | None
    time_to_target_s: float | None
    train_s: float | None
    samples_per_s: float | None
    peak_rss_mb: float | None
    curve: tuple[CurvePoint, ...]
    final: Mapping[str, float]
    counters: Mapping[str, Any]
    environment: Mapping[str, Any]
    engine_info: Mapping[str, Any]
    spec: Mapping[str, Any]
    scaling: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)
    device: str = "cpu"  # "cpu" or "gpu": where the engine trained (see run_device)
    popularity_p1: float | None = None  # the label-popularity P@1 of the evaluation subset
    flags: tuple[str, ...] = ()  # harness.store.flags names
    eval_rows: int | None = None  # points per evaluation

    @property
    def ok(self) -> bool:
        """A run whose numbers mean something: it neither failed nor diverged."""
        return self.state in records.OK_STATES


def _get(mapping: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise RecordError(f"{path}: {where} is not an object")
    if key not in mapping:
        raise RecordError(f"{path}: missing key {where}.{key}" if where else f"{path}: missing key {key}")
    return mapping[key]


def _number(value: Any) -> float | None:
    """A finite float, or None for null / NaN / non-numbers (a diverged loss is stored as NaN or null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _section(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An optional object-valued section; a null or absent one reads as empty."""
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}


def _curve(raw: Any, path: Path) -> tuple[CurvePoint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RecordError(f"{path}: curve is not a list")
    points = []
    for i, point in enumerate(raw):
        if not isinstance(point, Mapping):
            raise RecordError(f"{path}: curve[{i}] is not an object")
        train_s = _number(point.get("train_s"))
        p1 = _number(point.get("p1"))
        if train_s is None or p1 is None:
            # An evaluation without a time or a P@1 (e.g. after divergence) cannot be plotted.
            continue
        points.append(
            CurvePoint(
                step=int(point.get("step", 0) or 0),
                epoch=_number(point.get("epoch")) or 0.0,
                train_s=train_s,
                p1=p1,
                p3=_number(point.get("p3")),
                p5=_number(point.get("p5")),
                loss=_number(point.get("loss")),
            )
        )
    points.sort(key=lambda p: p.train_s)
    return tuple(points)


def run_device(engine_info: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """ "gpu" or "cpu": where a run's engine trained.

    The engine's own report wins (the TF engines' `device_kind`, or their TF device name); else
    the device the spec asked for, when it named one; else "cpu", which every engine without a
    device (slide, numpy_dense) is.
    """
    kind = engine_info.get("device_kind")
    if kind in ("cpu", "gpu"):
        return kind
    name = engine_info.get("device")
    if isinstance(name, str) and name:
        return "gpu" if ":GPU:" in name.upper() else "cpu"
    params = spec.get("engine_params")
    asked = params.get("device") if isinstance(params, Mapping) else None
    return asked if asked in ("cpu", "gpu") else "cpu"


def _workload_name(spec: Mapping[str, Any], path: Path) -> str:
    # The spec names its workload; a richer spec may carry the workload as an object.
    workload = _get(spec, "workload", path, "spec")
    if isinstance(workload, Mapping):
        workload = _get(workload, "name", path, "spec.workload")
    if not isinstance(workload, str) or not workload:
        raise RecordError(f"{path}: spec.workload is not a non-empty string")
    return _path_safe(workload, "spec.workload", path)


def _path_safe(value: str, key: str, path: Path) -> str:
    # Workload and engine names become plot file names: a record is data, and a name such as
    # "../../x" must not choose where the report writes.
    try:
        return safe_name(value, key)
    except ValueError as exc:
        raise RecordError(f"{path}: {exc}") from None


def parse_record(record: Any, path: Path) -> Run:
    """Validate one decoded record and flatten it; RecordError naming file and key otherwise."""
    record = records.upgrade(record, path)
    kind = record["kind"]
    if kind not in records.KINDS:
        raise RecordError(f"{path}: unknown kind {kind!r} (expected 'train' or 'scaling')")
    spec = _get(record, "spec", path, "")
    engine = _get(spec, "engine", path, "spec")
    if not isinstance(engine, str) or not engine:
        raise RecordError(f"{path}: spec.engine is not a non-empty string")
    _path_safe(engine, "spec.engine", path)
    status = _get(record, "status", path, "")
    state = _get(status, "state", path, "status")
    if state not in records.STATES:
        log.warning("%s: unknown status.state %r; treating the run as failed", path, state)
    timing = _section(record, "timing")
    evaluation = _section(spec, "evaluation")
    scaling = record.get("scaling") if kind == "scaling" else None
    if kind == "scaling" and not isinstance(scaling, Mapping):
        raise RecordError(f"{path}: a scaling record needs a 'scaling' object")
    threads = _get(spec, "threads", path, "spec")
    seed = spec.get("seed", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise RecordError(f"{path}: spec.threads is not a positive integer: {threads!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RecordError(f"{path}: spec.seed is not an integer: {seed!r}")
    final = {k: f for k, v in _section(record, "final").items() if (f := _number(v)) is not None}
    # A scaling record's own measurement (after its warm-up steps) is the one to plot.
    samples_per_s = _number(scaling.get("samples_per_s")) if scaling is not None else None
    if samples_per_s is None:
        samples_per_s = _number(_section(record, "throughput").get("samples_per_s"))
    curve = _curve(record.get("curve"), path)
    popularity = _number(record.get("popularity_p1"))
    eval_rows = _section(record, "data").get("eval_rows")
    eval_rows = eval_rows if isinstance(eval_rows, int) and not isinstance(eval_rows, bool) else None
    return Run(
        path=path,
        run_id=str(record.get("run_id", path.stem)),
        kind=kind,
        workload=_workload_name(spec, path),
        engine=engine,
        threads=threads,
        seed=seed,
        state=state if state in records.STATES else records.ERROR,
        message=str(status.get("message") or ""),
        target_p1=_number(evaluation.get("target_p1")),
        time_to_target_s=_number(timing.get("time_to_target_s")),
        train_s=_number(timing.get("train_s")),
        samples_per_s=samples_per_s,
        peak_rss_mb=_number(_section(record, "resources").get("peak_rss_mb")),
        curve=curve,
        final=final,
        counters=_section(record, "counters"),
        environment=_section(record, "environment"),
        engine_info=_section(record, "engine_info"),
        spec=spec,
        scaling=scaling,
        raw=record,
        device=run_device(_section(record, "engine_info"), spec),
        popularity_p1=popularity,
        flags=tuple(record["flags"]),
        eval_rows=eval_rows,
    )


def record_paths(results_dir: Path) -> list[Path]:
    """Every record file under `results_dir/runs`, sorted.

    Event logs (`*.events.jsonl`) are not records, nor are drafts (`*.draft.json`, a run the
    runner has not accepted yet) or hidden temporary files of an atomic write in progress.
    """
    runs_dir = results_dir / "runs"
    return sorted(
        p
        for p in runs_dir.rglob("*.json")
        if p.is_file()
        and not p.name.endswith((".events.jsonl", ".draft.json"))
        and not p.name.startswith(".")
    )


@dataclass(frozen=True)
class Loaded:
    """The usable runs of a results folder, and the files skipped with the reason for each."""

    runs: tuple[Run, ...]
    skipped: tuple[tuple[Path, str], ...]


def scan(results_dir: Path) -> Loaded:
    """All usable records under `results_dir/runs`; bad ones are skipped with a warning each.

    FileNotFoundError when there is no runs folder; ValueError when it holds no usable record,
    both naming the folder, so an empty campaign is reported rather than rendered as blank plots.
    """
    runs_dir = results_dir / "runs"
    if not runs_dir.is_dir():
        raise FileNotFoundError(
            f"no result records: {runs_dir} does not exist (run a campaign first, e.g. `slidebench run smoke`)"
        )
    paths = record_paths(results_dir)
    runs: list[Run] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            runs.append(parse_record(record, path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("skipping %s: not a readable JSON record (%s)", path, exc)
            skipped.append((path, f"not a readable JSON record ({exc})"))
        except RecordError as exc:
            log.warning("skipping %s", exc)
            skipped.append((path, str(exc).removeprefix(f"{path}: ")))
    if not runs:
        detail = f" ({len(paths)} file(s) skipped, see warnings)" if paths else " (no *.json files)"
        raise ValueError(f"no usable result records under {runs_dir}{detail}")
    _warn_duplicates(runs)
    return Loaded(tuple(runs), tuple(skipped))


def load_runs(results_dir: Path) -> list[Run]:
    """The usable runs under `results_dir/runs` (see `scan`)."""
    return list(scan(results_dir).runs)


def _warn_duplicates(runs: Iterable[Run]) -> None:
    # Two records for one (workload, engine, threads, seed) means the campaign ran twice (e.g. after
    # an engine rebuild); both are kept, but the medians then mix builds, which the reader should know.
    seen: dict[tuple[str, str, str, str, int, int], Path] = {}
    for run in runs:
        key = (run.kind, run.workload, run.engine, run.device, run.threads, run.seed)
        if key in seen:
            log.warning(
                "%s and %s are the same (workload, engine, device, threads, seed); both are counted",
                seen[key],
                run.path,
            )
        else:
            seen[key] = run.path
