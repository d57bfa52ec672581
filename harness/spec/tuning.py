"""Equal tuning for every engine: the declared search, its stored outcome, and how runs use it.

A workload declares one search in `[tuning]` (a grid over `[tuning.space]`, a number of trials, a
fraction of the run budget per trial). `slidebench tune WORKLOAD` runs the same trials for every
engine of its matrix, scored on a validation split carved from the training data (never the test
split), keeps each trial as a record under `<results>/tuning/`, and writes the outcome beside the
workload as `workloads/tuning/<name>.json`: every trial's values and validated P@1, the values
chosen per engine, and the target derived from a long reference run. Loading the workload then
pins the chosen values into each engine's runs and the target into the evaluation; the run spec
carries both with their provenance, so the report is built from records alone.

Refused, before anything runs: a space key that is not a parameter of every engine, a space key
also set by hand for one engine, and a tuning file that covers some engines of the matrix but
not others (nothing is tuned for one engine only).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# `reference = "best"`: the reference run is the engine whose best trial scored highest.
BEST_TUNED = "best"
# The only training key a search may cover; every other key is an engine parameter.
TRAINING_KEYS = ("lr",)
TUNING_FILE_VERSION = 1


@dataclass(frozen=True)
class TuningDecl:
    """`[tuning]`: the search every engine of the workload gets."""

    space: Mapping[str, tuple[Any, ...]]
    trials: int
    budget_fraction: float
    seed: int = 0
    reference: str | None = None  # engine whose long run sets the target, or BEST_TUNED
    reference_seconds: float | None = None
    target_fraction: float | None = None

    def configs(self) -> list[dict[str, Any]]:
        """The trial configurations: the whole grid if it has at most `trials` points, else a seeded
        sample of it; the same list, in the same order, for every engine."""
        keys = sorted(self.space)
        grid = [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.space[k] for k in keys))
        ]
        if len(grid) <= self.trials:
            return grid
        pick = np.random.default_rng([self.seed, 0x7E4E]).choice(len(grid), size=self.trials, replace=False)
        return [grid[i] for i in sorted(pick)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": {k: list(v) for k, v in sorted(self.space.items())},
            "trials": self.trials,
            "budget_fraction": self.budget_fraction,
            "seed": self.seed,
            "reference": self.reference,
            "reference_seconds": self.reference_seconds,
            "target_fraction": self.target_fraction,
        }


@dataclass(frozen=True)
class TuningOutcome:
    """A workload's stored tuning: per engine its trials and chosen values; the derived target."""

    path: Path
    doc: Mapping[str, Any]
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def chosen(self, engine: str) -> dict[str, Any]:
        return dict(self.engines[engine]["chosen"])

    def spec_section(self, engine: str) -> dict[str, Any]:
        """What one run's spec carries: the search, this engine's trials and choice, and the source."""
        entry = self.engines[engine]
        return {
            "search": self.doc["search"],
            "budget_s": self.doc["budget_s"],
            "validation_points": self.doc.get("validation_points"),
            "trials": [
                {"values": t["values"], "p1": t["p1"], "run_id": t["run_id"]} for t in entry["trials"]
            ],
            "chosen": dict(entry["chosen"]),
            "chosen_p1": entry["p1"],
            "file": f"workloads/tuning/{self.path.name}",
            "tuned_at": self.doc.get("tuned_at"),
            "window": entry.get("window"),  # when and at what load this engine's trials ran
        }

    @property
    def target(self) -> dict[str, Any] | None:
        return self.doc.get("target")


def tuning_file(workload_path: Path | None, name: str) -> Path | None:
    if workload_path is None:
        return None
    return workload_path.parent / "tuning" / f"{name}.json"


def read_outcome(path: Path, decl: TuningDecl) -> TuningOutcome:
    """Read a tuning file, refusing one made for a different search than the workload declares."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable tuning file: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("version") != TUNING_FILE_VERSION
        or not isinstance(doc.get("engines"), dict)
    ):
        raise ValueError(f"{path}: not a version {TUNING_FILE_VERSION} tuning file")
    if doc.get("search") != decl.to_dict():
        raise ValueError(
            f"{path}: made for another search than [tuning] declares now; rerun `slidebench tune {doc.get('workload')}`"
        )
    for engine, entry in doc["engines"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("chosen"), dict) or "trials" not in entry:
            raise ValueError(f"{path}: engine {engine!r}: malformed entry")
        if set(entry["chosen"]) != set(decl.space):
            raise ValueError(
                f"{path}: engine {engine!r}: chosen keys {sorted(entry['chosen'])} differ from the space"
            )
    return TuningOutcome(path=path, doc=doc, engines=doc["engines"])


def check_coverage(outcome: TuningOutcome, engines: Sequence[str]) -> None:
    """Refuse a tuning that covers some engines of the matrix but not others."""
    missing = [e for e in engines if e not in outcome.engines]
    if missing:
        tuned = ", ".join(sorted(e for e in engines if e in outcome.engines)) or "none"
        raise ValueError(
            f"{outcome.path}: tunes {tuned} but not {', '.join(missing)}: every engine of the matrix gets "
            f"the same search; run `slidebench tune {outcome.doc.get('workload')}` for the missing ones"
        )


def split_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training values, engine parameters) of one configuration."""
    training = {k: v for k, v in values.items() if k in TRAINING_KEYS}
    params = {k: v for k, v in values.items() if k not in TRAINING_KEYS}
    return training, params


def plain_number(value: Any) -> Any:
    """numpy scalars and floats as JSON-ready Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def reference_engine(reference: str, engines: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> str:
    """The engine whose long run sets the target: `reference` itself, or with BEST_TUNED the engine
    whose chosen trial scored highest (ties: the first in the matrix's order)."""
    if reference != BEST_TUNED:
        return reference
    tuned = [e for e in order if e in engines and engines[e].get("p1") is not None]
    if not tuned:
        raise ValueError("no tuned engine to take as the reference")
    return max(tuned, key=lambda e: engines[e]["p1"])
