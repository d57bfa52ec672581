"""The result record, owned here: its schema, the names every writer and reader shares, building a
record, reading one back (any version this code knows, brought to the current one) and writing it.

Every record, whatever wrote it (a run's worker, the runner for a worker that died, a scaling
sweep), is made by `build`, so each has the same sections; docs/design.md describes each field.
Readers (`read`, the report through `harness.reporting.plots.records`) accept every version in `READABLE`
and see the current shape: `upgrade` fills what older records lack.

Versions:
1. the first schema;
2. training records carry `popularity_p1` and `flags` (computed on reading for version 1, from the
   curve; version 1 has no popularity, so never the popularity flag);
3. every record has every section and every timing key, null or empty where not measured: a
   scaling record and the record of a worker that died read like a training record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from harness.store import flags, results

SCHEMA_VERSION = 3
READABLE = frozenset({1, 2, 3})

TRAIN, SCALING = "train", "scaling"
KINDS = (TRAIN, SCALING)
TARGET_REACHED, BUDGET_SPENT, DIVERGED, ERROR = "target_reached", "budget_spent", "diverged", "error"
STATES = (TARGET_REACHED, BUDGET_SPENT, DIVERGED, ERROR)
OK_STATES = (TARGET_REACHED, BUDGET_SPENT)  # runs whose numbers mean something

# Events of a run's log (`<run_id>.events.jsonl`, harness.store.results.EventLog), in the order they come.
RUN_START = "run_start"
DATA_LOADED = "data_loaded"
INIT_STOP = "init_stop"
EVAL_ACCURACY = "eval_accuracy"
TRAIN_START = "train_start"
DIVERGED_EVENT = "diverged"
ERROR_EVENT = "error"
RUN_ABORT = "run_abort"
RUN_STOP = "run_stop"
PLACEMENT = "placement"  # a cluster executor's: where the run ran

CURVE_KEYS = ("step", "epoch", "samples", "train_s", "wall_s", "p1", "p3", "p5", "ndcg5", "loss")
FINAL_KEYS = ("p1", "p3", "p5", "ndcg1", "ndcg3", "ndcg5")
TIMING_KEYS = (
    "data_s", "init_s", "train_s", "eval_s", "feed_s", "loop_s", "overhead_s", "wall_s",
    "time_to_target_s", "steps", "samples", "epochs",
)  # fmt: skip
OPTIONAL_TIMING_KEYS = ("diagnostics_s",)


class Status(TypedDict):
    state: str  # one of STATES
    message: str


class Timing(TypedDict, total=False):
    """Seconds and counts of a run; `train_s` is the train clock (fit_step alone)."""

    data_s: float | None
    init_s: float | None
    train_s: float | None
    eval_s: float | None
    feed_s: float | None
    loop_s: float | None
    overhead_s: float | None  # loop wall - train - eval
    wall_s: float | None
    time_to_target_s: float | None
    steps: int | None
    samples: int | None
    epochs: float | None
    diagnostics_s: float  # engines that sample their outputs only


class CurvePoint(TypedDict, total=False):
    """One evaluation: CURVE_KEYS, and `diagnostics` for engines that sample their outputs."""

    step: int
    epoch: float
    samples: int
    train_s: float
    wall_s: float
    p1: float
    p3: float
    p5: float
    ndcg5: float
    loss: float | None
    diagnostics: dict[str, Any]


class Counters(TypedDict):
    source: str  # "perf" | "cachegrind" | "unavailable"
    scope: str | None
    reason: str
    events: dict[str, float | None]
    per_sample: dict[str, float | None]
    running_pct: dict[str, float]
    cachegrind: dict[str, Any] | None


class Record(TypedDict):
    schema_version: int
    run_id: str
    kind: str  # one of KINDS
    build_id: str | None
    spec: dict[str, Any]
    status: Status
    timing: Timing
    curve: list[CurvePoint]
    final: dict[str, float] | None
    throughput: dict[str, float | None]
    counters: Counters
    resources: dict[str, float] | None
    engine_info: dict[str, Any]
    environment: dict[str, Any]
    data: dict[str, Any]
    overrides: dict[str, Any]
    popularity_p1: float | None
    flags: list[str]
    scaling: dict[str, Any] | None  # scaling records only


class RecordError(ValueError):
    """A record that cannot be used; the message names the file and the key."""


def unavailable_counters(reason: str, events: Iterable[str] = ()) -> Counters:
    """The `counters` section of a run without counters; `events` (names) are listed as null."""
    return {
        "source": "unavailable",
        "scope": None,
        "reason": reason,
        "events": {e: None for e in events},
        "per_sample": {},
        "running_pct": {},
        "cachegrind": None,
    }


def timing(**measured: Any) -> Timing:
    """A `timing` section: every key of TIMING_KEYS, null where not given."""
    unknown = sorted(set(measured) - set(TIMING_KEYS) - set(OPTIONAL_TIMING_KEYS))
    if unknown:
        raise ValueError(f"unknown timing key(s) {', '.join(unknown)}")
    out: dict[str, Any] = {key: measured.get(key) for key in TIMING_KEYS}
    out.update({key: measured[key] for key in OPTIONAL_TIMING_KEYS if key in measured})
    return out  # type: ignore[return-value]


def curve_point(raw: Mapping[str, Any]) -> CurvePoint:
    """The CURVE_KEYS of a point (an `eval_accuracy` event carries more)."""
    return {key: raw.get(key) for key in CURVE_KEYS}  # type: ignore[return-value]


def _defaults() -> dict[str, Any]:
    return {
        "build_id": None,
        "timing": timing(),
        "curve": [],
        "final": None,
        "throughput": {"samples_per_s": None},
        "counters": unavailable_counters("not collected"),
        "resources": None,
        "engine_info": {},
        "environment": {},
        "data": {},
        "overrides": {},
        "popularity_p1": None,
        "flags": [],
        "scaling": None,
    }


SECTIONS = tuple(_defaults())
# Sections that are objects or lists in every current record (older ones may hold null).
_NEVER_NULL = (
    "timing",
    "curve",
    "throughput",
    "counters",
    "engine_info",
    "environment",
    "data",
    "overrides",
    "flags",
)


def build(
    kind: str, run_id: str, spec: Mapping[str, Any], state: str, message: str, **sections: Any
) -> Record:
    """A record of the current version: the given sections, every other one at its empty value."""
    if kind not in KINDS:
        raise ValueError(f"record kind {kind!r} is not one of {', '.join(KINDS)}")
    if state not in STATES:
        raise ValueError(f"status.state {state!r} is not one of {', '.join(STATES)}")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown record section(s) {', '.join(unknown)}")
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "kind": kind,
        "spec": dict(spec),
        "status": {"state": state, "message": message},
    }
    for key, default in _defaults().items():
        record[key] = sections.get(key, default)
    if "timing" in sections:
        record["timing"] = timing(**sections["timing"])
    return record  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Reading


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _flags_of(record: Mapping[str, Any]) -> list[str]:
    """Flags of a record written before records carried them."""
    if record.get("kind") == SCALING:
        scaling = record.get("scaling")
        return flags.scaling_flags(
            _number(scaling.get("efficiency")) if isinstance(scaling, Mapping) else None
        )
    curve = record.get("curve")
    points = [
        {"step": p.get("step", 0) or 0, "p1": _number(p.get("p1"))}
        for p in (curve if isinstance(curve, list) else [])
        if isinstance(p, Mapping)
        and _number(p.get("train_s")) is not None
        and _number(p.get("p1")) is not None
    ]
    data = record.get("data")
    eval_rows = data.get("eval_rows") if isinstance(data, Mapping) else None
    eval_rows = eval_rows if isinstance(eval_rows, int) and not isinstance(eval_rows, bool) else 0
    return flags.run_flags(points, _number(record.get("popularity_p1")), eval_rows)


def upgrade(record: Any, path: Path | str = "record") -> Record:
    """`record` in the current version's shape (a new dict; the input is left alone).

    RecordError naming `path` for something that is no record, or of a version not in READABLE.
    Sections an older version lacks are filled with their empty values; the flags of records
    written before flags existed are computed from their numbers.
    """
    if not isinstance(record, Mapping) or "schema_version" not in record:
        raise RecordError(f"{path}: not a slidebench record (no schema_version)")
    version = record["schema_version"]
    if version not in READABLE:
        raise RecordError(f"{path}: unknown schema_version {version!r} (this code reads {sorted(READABLE)})")
    out: dict[str, Any] = dict(record)
    out.setdefault("kind", TRAIN)
    stored_flags = out.get("flags")
    for key, default in _defaults().items():
        if out.get(key) is None and (key not in out or key in _NEVER_NULL):
            out[key] = default
    if isinstance(out["timing"], Mapping):
        out["timing"] = {**timing(), **out["timing"]}
    if not (isinstance(stored_flags, list) and all(isinstance(f, str) for f in stored_flags)):
        out["flags"] = _flags_of(out)
    out["schema_version"] = SCHEMA_VERSION
    return out  # type: ignore[return-value]


def read(path: Path | str) -> Record:
    """One record from its file, in the current shape; RecordError naming the file otherwise."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None
    return upgrade(raw, path)


# --------------------------------------------------------------------------------------------
# Writing


def write(path: Path | str, record: Mapping[str, Any]) -> None:
    """Atomically write one record of the current version (never rewritten: see harness.store.results)."""
    path = Path(path)
    for key in ("schema_version", "run_id", "kind", "spec", "status"):
        if key not in record:
            raise ValueError(f"record for {path} lacks the key {key!r}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ValueError(
            f"record for {path}: schema_version {record['schema_version']!r}, writing {SCHEMA_VERSION}"
        )
    state = record["status"].get("state") if isinstance(record["status"], Mapping) else None
    if state not in STATES:
        raise ValueError(f"record for {path}: status.state {state!r} is not one of {', '.join(STATES)}")
    try:
        results.write_atomic(path, results.dumps(record))
    except OSError as exc:
        if exc.filename is not None:
            raise
        # A failed write(2) (a full disk) names no file; the one being written is the useful part.
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
