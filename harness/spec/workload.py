"""Workloads: declarative TOML specs, validated whole before any run starts, expanded into runs.

`load(path_or_name)` reads ``workloads/<name>.toml`` (or a path), refuses unknown keys, wrong
types and impossible values with a `WorkloadError` naming the file and the key, and validates each
engine's own parameters through `Engine.check_params` (cheap by contract: no TensorFlow, no
native extension). `Workload.expand()` yields one frozen `RunSpec` per (engine, threads, seed),
and per device for engines with a `device` parameter when the matrix lists `devices`.

"Impossible" includes settings that are well-typed but could only fail deep inside a worker after
the data is loaded (a thread count of 2**63, an lr that is inf in float32, a model of 10**12
parameters, k above the label count): each key has a bound that no real run comes near, and the
checks that need the data's shape read it from the manifest, the synthetic preset or the header of
the workload's own files, never by loading the data.

Identity of a run: `RunSpec.canonical()` is the canonical JSON of everything that decides the
run's outcome (not the workload's prose). `RunSpec.run_id` hashes it together with the engine's
build identity (`build_id`): class path, slidebench version, and a digest of the engine package's
source files (Python, C++ and CMake), so that editing an engine gives its runs new ids while
editing a description or a plot does not. A digest of the sources is used rather than the git
commit because it also tells apart uncommitted edits, and does not invalidate every record on
each unrelated commit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import REPO_ROOT
from harness.datasets.dataset import DatasetSpec, SplitFile
from harness.spec import registry
from harness.spec.engine import ModelSpec, OptimizerSpec, TrainMeta
from harness.spec.tuning import (
    BEST_TUNED,
    TRAINING_KEYS,
    TuningDecl,
    TuningOutcome,
    check_coverage,
    read_outcome,
    split_values,
    tuning_file,
)

WORKLOADS_DIR = REPO_ROOT / "workloads"
SOURCE_SUFFIXES = (".py", ".cpp", ".cc", ".h", ".hpp", ".txt", ".cmake")


class WorkloadError(ValueError):
    """A workload that cannot run; the message names the file and the key."""


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_steps: int | None = None
    max_epochs: float | None = None
    max_seconds: float | None = None  # on the train clock

    def optimizer(self) -> OptimizerSpec:
        return OptimizerSpec(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps)


@dataclass(frozen=True)
class EvalSpec:
    subset: int
    k: int = 5
    seed: int = 0
    every_steps: int | None = None
    every_seconds: float | None = None  # on the train clock
    # Geometric cadence: evaluations at every_seconds x growth^k of train clock (None: linear).
    growth: float | None = None
    target_p1: float | None = None
    # True: a run ends at its first evaluation at or above the target (MLPerf's rule). False: it
    # trains on to its budget, so every engine's curve spans the same budget and the time to target
    # is read from the curve's first point at or above it.
    stop_at_target: bool = True
    batch_size: int = 256  # rows per predict_topk call: bounds the memory of exact scoring
    # "test": the fixed subset of the test split; "validation": training rows held out from the
    # run's own training (tuning scores there, never on the test split)
    split: str = "test"
    # Sampler diagnostics (Engine.diagnostics) at each evaluation; tuning trials leave them out.
    diagnostics: bool = True
    # Evaluate the untrained model at step 0 (the curve's origin); tuning trials, scored on their
    # last evaluation, skip it.
    at_start: bool = True


@dataclass(frozen=True)
class CountersSpec:
    perf: bool = False
    cachegrind: bool = False
    cachegrind_steps: int = 20
    cachegrind_timeout_s: float = 1800.0  # the whole valgrind process, warm-up and evaluations included


def _plain(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


@dataclass(frozen=True)
class Variant:
    """`[variants.NAME]`: a named configuration of a registered engine, so that one campaign can
    hold several (an ablation and its control). Its parameters lie over the engine's own
    `[engines.ENGINE]` table, so a variant differs from its engine in exactly the keys it names."""

    engine: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class RunSpec:
    """One run: a workload's settings fixed to one engine, thread count and seed.

    `engine` is the name the run is listed, recorded and reported under: a registered engine, or a
    variant (a named configuration of one, `[variants.NAME]`), whose registered engine is then
    `base_engine`.
    """

    workload: str
    engine: str
    engine_params: Mapping[str, Any]
    threads: int
    seed: int
    dataset: DatasetSpec
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvalSpec
    counters: CountersSpec
    base_engine: str | None = None  # set for variants only
    # The tuning this engine's values came from (harness.spec.tuning.TuningOutcome.spec_section); None: untuned.
    tuning: Mapping[str, Any] | None = None
    # Where target_p1 comes from: {"p1", "source", ...}; None when the evaluation has no target.
    target: Mapping[str, Any] | None = None
    # The workload's prose, carried so that a report needs nothing but the records. It says what
    # the run is about, not what it does: left out of `canonical()` (so of the run id) and of
    # equality, so rewording a description neither renames runs nor reruns them.
    description: str = field(default="", compare=False)
    target_source: str = field(default="", compare=False)

    @property
    def engine_class_name(self) -> str:
        """The registered engine that runs this spec."""
        return self.base_engine or self.engine

    def to_dict(self) -> dict[str, Any]:
        """The record's `spec` section (also what the worker reads back)."""
        return {
            "workload": self.workload,
            "engine": self.engine,
            # Only variants carry it, so the specs (and run ids) of plain engines are unchanged.
            **({"base_engine": self.base_engine} if self.base_engine else {}),
            "engine_params": dict(sorted(self.engine_params.items())),
            "threads": self.threads,
            "seed": self.seed,
            "dataset": self.dataset.to_dict(),
            "model": {"hidden": list(self.model.hidden), "activation": self.model.activation},
            "training": _plain(self.training),
            "evaluation": _plain(self.evaluation),
            "counters": _plain(self.counters),
            # Present only when set, so the specs (and run ids) of untuned runs keep their form.
            **({"tuning": dict(self.tuning)} if self.tuning else {}),
            **({"target": dict(self.target)} if self.target else {}),
            **{key: text for key, text in self._prose().items() if text},
        }

    def _prose(self) -> dict[str, str]:
        return {"description": self.description, "target_source": self.target_source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        try:
            model = d["model"]
            return cls(
                workload=str(d["workload"]),
                engine=str(d["engine"]),
                base_engine=str(d["base_engine"]) if d.get("base_engine") else None,
                engine_params=dict(d.get("engine_params") or {}),
                threads=int(d["threads"]),
                seed=int(d["seed"]),
                dataset=DatasetSpec(**d["dataset"]),
                model=ModelSpec(
                    hidden=tuple(int(h) for h in model["hidden"]), activation=model["activation"]
                ),
                training=TrainingSpec(**d["training"]),
                evaluation=EvalSpec(**d["evaluation"]),
                counters=CountersSpec(**d.get("counters", {})),
                tuning=d.get("tuning"),
                target=d.get("target"),
                description=str(d.get("description") or ""),
                target_source=str(d.get("target_source") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise WorkloadError(f"malformed run spec: {exc}") from None

    def canonical(self) -> str:
        """The spec without its prose, as canonical JSON: what the run id hashes."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self._prose()}
        return json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(
            f"{self.canonical()}\n{build_id(self.engine_class_name)}".encode()
        ).hexdigest()
        return digest[:16]

    def train_meta(
        self, num_features: int, num_labels: int, num_train: int, label_counts: Any = None
    ) -> TrainMeta:
        return TrainMeta(
            num_features=num_features,
            num_labels=num_labels,
            num_train=num_train,
            batch_size=self.training.batch_size,
            model=self.model,
            optimizer=self.training.optimizer(),
            seed=self.seed,
            label_counts=label_counts,
        )


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    target_source: str
    dataset: DatasetSpec
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvalSpec
    engines: tuple[str, ...]
    threads: tuple[int, ...]
    seeds: tuple[int, ...]
    counters: CountersSpec
    engine_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)  # engine -> why it cannot be imported
    path: Path | None = None
    variants: Mapping[str, Variant] = field(default_factory=dict)
    # [matrix] devices: each engine with a `device` parameter (the TF engines) runs once per entry,
    # as that parameter, so the device is part of the spec and of the run id; engines without one
    # run once (on the CPU). Empty: every engine runs with its own `device` setting.
    devices: tuple[str, ...] = ()
    tuning_decl: TuningDecl | None = None
    tuning: TuningOutcome | None = None  # the stored outcome of `slidebench tune`, when there is one

    def target_section(self) -> dict[str, Any] | None:
        """The target's value and provenance, as every run's spec carries it."""
        if self.tuning is not None and self.tuning.target is not None:
            return {"source": "reference run", **self.tuning.target}
        if self.evaluation.target_p1 is None:
            return None
        return {"source": "workload file", "p1": self.evaluation.target_p1}

    def base_of(self, name: str) -> str:
        """The registered engine behind a listed name (itself, or a variant's engine)."""
        return self.variants[name].engine if name in self.variants else name

    def raw_params(self, name: str) -> dict[str, Any]:
        """A listed name's parameters before defaults: a variant's lie over its engine's table."""
        base = self.base_of(name)
        own = self.variants[name].params if name in self.variants else {}
        return {**self.engine_params.get(base, {}), **own}

    def params_where(self, name: str) -> str:
        return f"[variants.{name}]" if name in self.variants else f"[engines.{name}]"

    def params_for(self, engine: str) -> dict[str, Any]:
        """The engine's (or variant's) parameters with defaults filled (validated at load time)."""
        return registry.engine_class(self.base_of(engine)).check_params(self.raw_params(engine))

    def expand(
        self,
        engines: Sequence[str] | None = None,
        threads: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        *,
        tuned: bool = True,
    ) -> list[RunSpec]:
        """One RunSpec per (engine[, device], threads, seed); overrides are validated like the matrix.

        With a stored tuning (and `tuned`), each engine runs with its chosen values and the target
        of the reference run; `tuned=False` gives the workload as written (what trials start from).
        """
        where = str(self.path or self.name)
        engines_t = (
            self.engines
            if engines is None
            else _check_engines(list(engines), where, "--engines", self.variants)
        )
        threads_t = (
            self.threads if threads is None else _check_int_list(list(threads), where, "--threads", _THREADS)
        )
        seeds_t = self.seeds if seeds is None else _check_int_list(list(seeds), where, "--seeds", _SEED)
        params: list[tuple[str, dict[str, Any]]] = []
        for engine in engines_t:
            base = self.base_of(engine)
            if base in self.unavailable:
                raise WorkloadError(self.unavailable[base])
            cls = _engine_cls(base, where, "engines")
            given = self.raw_params(engine)
            if tuned and self.tuning is not None and engine in self.tuning.engines:
                given = {**given, **split_values(self.tuning.chosen(engine))[1]}
            per_device = [{**given, "device": d} for d in self.devices] if _has_device(cls) else []
            for p in per_device or [given]:
                try:
                    params.append((engine, cls.check_params(p)))
                except ValueError as exc:
                    if isinstance(exc, WorkloadError):
                        raise
                    raise WorkloadError(f"{where}: {self.params_where(engine)}: {exc}") from None
        target = self.target_section() if tuned else None
        evaluation = self.evaluation
        if target is not None:
            evaluation = replace(evaluation, target_p1=float(target["p1"]))
        specs = []
        for engine, p in params:
            training, tuning = self.training, None
            if tuned and self.tuning is not None and engine in self.tuning.engines:
                training = replace(training, **split_values(self.tuning.chosen(engine))[0])
                tuning = self.tuning.spec_section(engine)
            specs += [
                RunSpec(
                    workload=self.name,
                    engine=engine,
                    base_engine=self.variants[engine].engine if engine in self.variants else None,
                    engine_params=p,
                    threads=t,
                    seed=s,
                    dataset=self.dataset,
                    model=self.model,
                    training=training,
                    evaluation=evaluation,
                    # Simulated cache misses are a property of the code, not of the seed: one
                    # valgrind slice per (engine, threads), on the first seed, is enough.
                    counters=self.counters if s == seeds_t[0] else replace(self.counters, cachegrind=False),
                    tuning=tuning,
                    target=target,
                    description=self.description,
                    target_source=self.target_source,
                )
                for t in threads_t
                for s in seeds_t
            ]
        return specs


def _has_device(cls: Any) -> bool:
    """Whether an engine takes a `device` parameter (check_params fills its defaults, cheaply)."""
    return "device" in cls.check_params({})


# --------------------------------------------------------------------------------------------
# Engine build identity


@functools.cache
def build_id(engine: str) -> str:
    """Engine class path + slidebench version + digest of the engine package's sources."""
    cls = registry.engine_class(engine)
    module = importlib.import_module(cls.__module__)
    origin = Path(module.__file__ or "").resolve()
    root = origin.parent if origin.name == "__init__.py" else origin
    files = (
        sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES)
        if root.is_dir()
        else [root]
    )
    digest = hashlib.sha256()
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(root.parent)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    try:
        version = importlib.metadata.version("slidebench")
    except importlib.metadata.PackageNotFoundError:
        version = "source"
    return f"{cls.__module__}.{cls.__qualname__}|slidebench {version}|src {digest.hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------
# Validation helpers: each raises WorkloadError naming file and key.


def _fail(where: str, key: str, msg: str) -> WorkloadError:
    return WorkloadError(f"{where}: {key}: {msg}")


def _got(value: Any) -> str:
    """`repr` of an offending value, cut short: a message must stay readable whatever the file holds."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text):,} characters)"


# ---- Bounds. Each is far above anything a real run uses and far below where a worker would fail
# (overflow, out of memory, a timer that cannot be armed), so that an impossible setting is refused
# here, naming the key, instead of minutes later inside a worker.

# Threads per run: more than any machine's cores (the largest servers have a few hundred), and
# OpenMP / TensorFlow thread pools take int32 counts.
MAX_THREADS = 1024
# Seeds: below 2**32, which every engine's generator accepts (TensorFlow takes int64, the native
# engine uint64, numpy any size); more distinct seeds than any campaign runs.
MAX_SEED = 2**32 - 1
# Rows in a batch (training or prediction): more than the largest XMC training sets have (a few
# million points), and far from where int32 offsets into a batch overflow.
MAX_BATCH = 2**24
# Steps (budget, cadence): at a million steps per second, 10**12 steps take 11 days of train clock.
MAX_STEPS = 10**12
# Passes over the training data: the shipped workloads use <= 40; the worker multiplies this by the
# point count to decide when the budget is spent.
MAX_EPOCHS = 10**6
# Seconds (budgets, cadence, timeouts): a year. Far beyond any run, and well inside what timers and
# waits accept (Python refuses a wait of 1e308 s with an OverflowError).
MAX_SECONDS = 366 * 24 * 3600
# Floats of one model (weights; Adam adds two moments per weight) or of one score matrix (rows x
# labels in exact scoring or a dense softmax): 2**34 float32 are 64 GiB. The paper's largest model
# (Amazon-670K, hidden 128) has about 10**8 parameters.
MAX_FLOATS = 2**34
# Hidden layers: XMC models use one to three; a hundred is no real model.
MAX_HIDDEN_LAYERS = 100
# Rows of the evaluation subset: no test split has more rows than int32 can index.
MAX_SUBSET = 2**31 - 1
# Steps of the cachegrind slice: valgrind runs 50-100x slower than native; a million steps is weeks.
MAX_CACHEGRIND_STEPS = 10**6
# A workload's name names folders under results/runs/ and is a CLI argument: a plain identifier
# (no '.', '/', or a leading '-'), short enough for any file system.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))


Check = Callable[[Any], str | None]  # returns an error message or None


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {_got(v)}"


def _prob(v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {_got(v)}"


def _between(lo: float, hi: float, why: str = "") -> Check:
    """lo <= v <= hi; `why` says where the upper bound comes from (shown when it is exceeded)."""

    def check(v: Any) -> str | None:
        if v < lo:
            return f"must be >= {lo}, got {_got(v)}"
        if v > hi:
            return f"must be <= {hi:,}{f' ({why})' if why else ''}, got {_got(v)}"
        return None

    return check


def _positive_up_to(hi: float, why: str = "") -> Check:
    def check(v: Any) -> str | None:
        return _positive(v) or _between(0, hi, why)(v)

    return check


def _positive_float32(v: Any) -> str | None:
    """> 0 and still finite and > 0 once the engines round it to float32 (1e308 becomes inf,
    1e-50 becomes 0: an lr or eps that only fails after the data is loaded)."""
    if not v > 0:
        return f"must be > 0, got {_got(v)}"
    as32 = float(np.float32(v)) if abs(v) < 1e39 else math.inf
    if not math.isfinite(as32):
        return f"must be finite in float32 (< 3.4e38), got {_got(v)}"
    if as32 == 0:
        return f"must be > 0 in float32 (>= 1.5e-45), got {_got(v)}"
    return None


def _beta(v: Any) -> str | None:
    """Adam's decay rates: in [0, 1), and still < 1 in float32 (0.99999999 rounds to 1.0 there,
    which makes the bias correction 1 - beta**t zero)."""
    if not 0 <= v < 1:
        return f"must be in [0, 1), got {_got(v)}"
    if float(np.float32(v)) >= 1:
        return f"must be < 1 in float32 (it rounds to 1.0 there), got {_got(v)}"
    return None


@dataclass(frozen=True)
class _Field:
    kind: str  # "int" | "num" | "str" | "bool" | "int_list" | "str_list"
    required: bool = False
    check: Check | None = None


def _section(table: Any, fields: Mapping[str, _Field], where: str, section: str) -> dict[str, Any]:
    """Type- and range-check one TOML table against its field list; unknown keys refused."""
    if not isinstance(table, dict):
        raise _fail(where, f"[{section}]", f"must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise _fail(
            where, f"[{section}] {unknown[0]}", f"unknown key; known keys: {', '.join(sorted(fields))}"
        )
    out: dict[str, Any] = {}
    for key, spec in fields.items():
        name = f"[{section}] {key}"
        if key not in table:
            if spec.required:
                raise _fail(where, name, "is required")
            continue
        value = table[key]
        if spec.kind == "int" and not _is_int(value):
            raise _fail(where, name, f"must be an integer, got {_got(value)}")
        if spec.kind == "num":
            if not _is_num(value):
                raise _fail(where, name, f"must be a finite number, got {_got(value)}")
            value = float(value)
        if spec.kind == "str" and not isinstance(value, str):
            raise _fail(where, name, f"must be a string, got {_got(value)}")
        if spec.kind == "bool" and not isinstance(value, bool):
            raise _fail(where, name, f"must be true or false, got {_got(value)}")
        if spec.kind in ("int_list", "str_list"):
            ok = _is_int if spec.kind == "int_list" else (lambda v: isinstance(v, str))
            if not isinstance(value, list) or not value or not all(ok(v) for v in value):
                what = "integers" if spec.kind == "int_list" else "strings"
                raise _fail(where, name, f"must be a non-empty list of {what}, got {_got(value)}")
            if len(set(value)) != len(value):
                raise _fail(where, name, f"has duplicates: {_got(value)}")
        if spec.check is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                msg = spec.check(item)
                if msg:
                    raise _fail(where, name, msg)
        out[key] = value
    return out


_TOP = {
    "name": _Field("str", True),
    "description": _Field("str", True),
    "target_source": _Field("str"),
    "dataset": _Field("table", True),
    "model": _Field("table"),
    "training": _Field("table", True),
    "evaluation": _Field("table", True),
    "matrix": _Field("table", True),
    "counters": _Field("table"),
    "engines": _Field("table"),
    "variants": _Field("table"),
    "tuning": _Field("table"),
}
_SEED = _between(0, MAX_SEED, "32-bit seeds")
_THREADS = _between(1, MAX_THREADS, "more than any machine's cores")
_BATCH = _positive_up_to(MAX_BATCH, "more rows than any data set here")
_STEPS = _positive_up_to(MAX_STEPS, "10**12 steps is days at a million steps per second")
_SECONDS = _positive_up_to(MAX_SECONDS, "a year")
_DATASET = {
    "name": _Field("str"),
    "synthetic": _Field("str"),
    "scale": _Field("num", check=_positive),
    "seed": _Field("int", check=_SEED),
    "train": _Field("str"),  # users' own files: relative to the data directory, or absolute
    "test": _Field("str"),
}
_MODEL = {"hidden": _Field("int_list", True, _positive), "activation": _Field("str")}
_TRAINING = {
    "batch_size": _Field("int", True, _BATCH),
    "lr": _Field("num", True, _positive_float32),
    "beta1": _Field("num", check=_beta),
    "beta2": _Field("num", check=_beta),
    "eps": _Field("num", check=_positive_float32),
    "max_steps": _Field("int", check=_STEPS),
    "max_epochs": _Field("num", check=_positive_up_to(MAX_EPOCHS, "passes over the training data")),
    "max_seconds": _Field("num", check=_SECONDS),
}
_EVALUATION = {
    "every_steps": _Field("int", check=_STEPS),
    "every_seconds": _Field("num", check=_SECONDS),
    "growth": _Field("num", check=lambda v: None if 1 < v <= 10 else f"must be in (1, 10], got {_got(v)}"),
    "subset": _Field("int", True, _positive_up_to(MAX_SUBSET, "int32 row ids")),
    "seed": _Field("int", check=_SEED),
    "k": _Field("int", check=lambda v: None if v >= 1 else f"must be >= 1, got {_got(v)}"),
    "target_p1": _Field("num", check=_prob),
    "stop_at_target": _Field("bool"),
    "batch_size": _Field("int", check=_BATCH),
    "diagnostics": _Field("bool"),
    "at_start": _Field("bool"),
    "split": _Field(
        "str",
        check=lambda v: (
            None if v in ("test", "validation") else f"must be 'test' or 'validation', got {_got(v)}"
        ),
    ),
}
_TUNING_FROM = {"from": _Field("str", True)}
_TUNING = {
    "trials": _Field("int", True, _between(1, 1000, "trials per engine")),
    "budget_fraction": _Field(
        "num", True, lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {_got(v)}"
    ),
    "seed": _Field("int", check=_SEED),
    "reference": _Field("str"),
    "reference_seconds": _Field("num", check=_SECONDS),
    "target_fraction": _Field(
        "num", check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {_got(v)}"
    ),
    "space": _Field("table", True),
}
_MATRIX = {
    "engines": _Field("str_list", True),
    "threads": _Field("int_list", True, _THREADS),
    "seeds": _Field("int_list", True, _SEED),
    "devices": _Field(
        "str_list", check=lambda v: None if v in ("cpu", "gpu") else f"must be 'cpu' or 'gpu', got {v!r}"
    ),
}
_COUNTERS = {
    "perf": _Field("bool"),
    "cachegrind": _Field("bool"),
    "cachegrind_steps": _Field("int", check=_positive_up_to(MAX_CACHEGRIND_STEPS, "weeks under valgrind")),
    "cachegrind_timeout_s": _Field("num", check=_SECONDS),
}


def _check_engines(
    names: list[Any], where: str, key: str, variants: Mapping[str, Variant] | None = None
) -> tuple[str, ...]:
    if not names or not all(isinstance(n, str) for n in names):
        raise _fail(where, key, f"must be a non-empty list of engine names, got {_got(names)}")
    for n in names:
        if n not in registry.ENGINES and n not in (variants or {}):
            known = f"registered: {', '.join(sorted(registry.ENGINES))}"
            if variants:
                known += f"; variants of this workload: {', '.join(sorted(variants))}"
            raise _fail(where, key, f"unknown engine {_got(n)}; {known}")
    if len(set(names)) != len(names):
        raise _fail(where, key, f"has duplicates: {_got(names)}")
    return tuple(names)


def _engine_cls(name: str, where: str, key: str) -> Any:
    """The engine class, or a WorkloadError when its module cannot be imported (e.g. not built)."""
    try:
        return registry.engine_class(name)
    except (ImportError, AttributeError) as exc:
        raise _fail(where, key, f"cannot import engine {name!r} to check its parameters: {exc}") from None


def _check_int_list(values: list[Any], where: str, key: str, check: Check) -> tuple[int, ...]:
    if not values or not all(_is_int(v) for v in values):
        raise _fail(where, key, f"must be a non-empty list of integers, got {_got(values)}")
    for v in values:
        msg = check(v)
        if msg:
            raise _fail(where, key, msg)
    if len(set(values)) != len(values):
        raise _fail(where, key, f"has duplicates: {_got(values)}")
    return tuple(values)


def _user_file(ds: Mapping[str, Any], key: str, where: str, data_dir: str | Path | None) -> SplitFile:
    """`[dataset] train` / `test`: the file described (header shape, size, sha256), or WorkloadError
    naming the key and the file."""
    from harness.datasets import data

    file = ds[key]
    name = f"[dataset] {key}"
    if not file.strip():
        raise _fail(where, name, "must be a file path, got ''")
    try:
        path = data.user_file_path(file, data_dir)
    except (data.DataError, FileNotFoundError) as exc:
        raise _fail(
            where,
            name,
            f"{_got(file)} is relative to the data directory, but {exc} (or give an absolute path)",
        ) from None
    try:
        return data.describe_file(file, data_dir)
    except FileNotFoundError:
        raise _fail(where, name, f"file not found: {path}") from None
    except data.DataError as exc:
        raise _fail(where, name, f"not a data file with an 'N D L' header: {exc}") from None
    except OSError as exc:
        raise _fail(where, name, f"cannot read {path}: {exc.strerror or exc}") from None


def _dataset(ds: Mapping[str, Any], where: str, data_dir: str | Path | None) -> tuple[DatasetSpec, int, int]:
    """The `[dataset]` table as a DatasetSpec, with the data's (features, labels), which the model and
    evaluation checks need. Cheap: a manifest lookup, a preset, or the files' headers (and hashes)."""
    from harness.datasets import data, synth

    files = [key for key in ("train", "test") if key in ds]
    if files:
        for other in ("name", "synthetic"):
            if other in ds:
                raise _fail(
                    where,
                    f"[dataset] {files[0]}",
                    f"give either '{other}' or 'train' + 'test' (file paths), not both",
                )
        if len(files) == 1:
            missing = "test" if files[0] == "train" else "train"
            raise _fail(where, f"[dataset] {missing}", f"is required with '{files[0]}'")
        if {"scale", "seed"} & set(ds):
            raise _fail(where, "[dataset] scale", "'scale' and 'seed' apply to synthetic data only")
        train = _user_file(ds, "train", where, data_dir)
        test = _user_file(ds, "test", where, data_dir)
        if (train.features, train.labels) != (test.features, test.labels):
            raise _fail(
                where,
                "[dataset] test",
                f"{test.file} declares {test.features} features and {test.labels} labels, "
                f"{train.file} (train) {train.features} and {train.labels}",
            )
        return DatasetSpec(train=train, test=test), train.features, train.labels

    if ("name" in ds) == ("synthetic" in ds):
        raise _fail(
            where,
            "[dataset]",
            "give exactly one of 'name' (a manifest entry), 'synthetic' (a preset) or 'train' + 'test' (files)",
        )
    if "name" in ds:
        if {"scale", "seed"} & set(ds):
            raise _fail(where, "[dataset] scale", "'scale' and 'seed' apply to synthetic data only")
        known = data.load_manifest()
        if ds["name"] not in known:
            raise _fail(
                where,
                "[dataset] name",
                f"unknown data set {_got(ds['name'])}; the manifest has: {', '.join(sorted(known))}",
            )
        entry = known[ds["name"]]
        return DatasetSpec(name=ds["name"]), entry.train.features, entry.train.labels

    if ds["synthetic"] not in synth.PRESETS:
        raise _fail(
            where,
            "[dataset] synthetic",
            f"unknown preset {_got(ds['synthetic'])}; known: {', '.join(sorted(synth.PRESETS))}",
        )
    try:
        dataset = DatasetSpec(synthetic=ds["synthetic"], scale=ds.get("scale", 1.0), seed=ds.get("seed", 0))
    except ValueError as exc:
        raise _fail(where, "[dataset]", str(exc)) from None
    preset = synth.PRESETS[ds["synthetic"]]
    return dataset, preset.num_features, preset.num_labels


def _check_against_data(
    where: str,
    dataset: DatasetSpec,
    features: int,
    labels: int,
    model: ModelSpec,
    tr: TrainingSpec,
    ev: EvalSpec,
) -> None:
    """Settings that are only impossible for this data: k, and the memory the model and scores need."""
    if ev.k > labels:
        raise _fail(
            where, "[evaluation] k", f"must be <= the {labels:,} labels of {dataset.label}, got {ev.k}"
        )
    if len(model.hidden) > MAX_HIDDEN_LAYERS:
        raise _fail(where, "[model] hidden", f"at most {MAX_HIDDEN_LAYERS} layers, got {len(model.hidden)}")
    widths = [features, *model.hidden, labels]
    params = sum(a * b + b for a, b in itertools.pairwise(widths))
    if params > MAX_FLOATS:
        raise _fail(
            where,
            "[model] hidden",
            f"{_got(list(model.hidden))} with {features:,} input features and {labels:,} labels makes "
            f"{params:,} parameters, more than {MAX_FLOATS:,} float32 (64 GiB) fit in memory",
        )
    # A dense output scores every label for every row of a batch: rows x labels float32 at once.
    for key, rows in (("[training] batch_size", tr.batch_size), ("[evaluation] batch_size", ev.batch_size)):
        if rows * labels > MAX_FLOATS:
            raise _fail(
                where,
                key,
                f"{rows:,} rows x {labels:,} labels is a score matrix of {rows * labels:,} float32, "
                f"more than {MAX_FLOATS:,} (64 GiB)",
            )


def resolve(path_or_name: str | Path) -> Path:
    """A workload file: an existing path, else ``workloads/<name>.toml``."""
    p = Path(path_or_name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"workload file {p} does not exist or is not a file")
        return p
    if not NAME_PATTERN.fullmatch(str(path_or_name)):
        # Not a path, so a name: one that could leave workloads/ ('../x') is no workload's.
        raise FileNotFoundError(
            f"no workload named {_got(str(path_or_name))}: not a file, and not a workload name"
        )
    candidate = WORKLOADS_DIR / f"{path_or_name}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(q.stem for q in WORKLOADS_DIR.glob("*.toml") if q.stem != "suites"))
        raise FileNotFoundError(f"no workload named {path_or_name!r} in {WORKLOADS_DIR}; known: {known}")
    return candidate


def load(
    path_or_name: str | Path, *, data_dir: str | Path | None = None, partial_tuning: bool = False
) -> Workload:
    """Read and fully validate a workload (engine parameters included).

    `data_dir` (else `$SLIDEBENCH_DATA`) is where relative `[dataset] train`/`test` paths point.
    `partial_tuning` accepts a stored tuning that misses some engines of the matrix: only
    `slidebench tune`, which exists to fill it, loads a workload that way.
    """
    from harness.datasets.data import read_toml

    path = resolve(path_or_name)
    return parse(read_toml(path, WorkloadError), path, data_dir=data_dir, partial_tuning=partial_tuning)


def parse(
    raw: Mapping[str, Any], path: Path | str, *, data_dir: str | Path | None = None, partial_tuning: bool = False
) -> Workload:
    """Validate a decoded workload table; `path` names it in errors (and must match `name`)."""
    where = str(path)
    unknown = sorted(set(raw) - set(_TOP))
    if unknown:
        raise _fail(where, unknown[0], f"unknown top-level key; known keys: {', '.join(sorted(_TOP))}")
    for key, spec in _TOP.items():
        if spec.required and key not in raw:
            raise _fail(
                where, key, "is required" if spec.kind != "table" else f"the [{key}] table is required"
            )
    for key in ("name", "description", "target_source"):
        if key in raw and not isinstance(raw[key], str):
            raise _fail(where, key, f"must be a string, got {_got(raw[key])}")
    name = raw["name"]
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(
            where,
            "name",
            f"must be a plain name (letters, digits, '-', '_'; not starting with '-'; at most 100 "
            f"characters): it names folders under results/, got {_got(name)}",
        )
    if isinstance(path, Path) and path.stem != name:
        raise _fail(where, "name", f"must equal the file stem {_got(path.stem)}, got {_got(name)}")
    if not raw["description"].strip():
        raise _fail(where, "description", "must not be empty")

    dataset, num_features, num_labels = _dataset(
        _section(raw["dataset"], _DATASET, where, "dataset"), where, data_dir
    )

    md = _section(raw.get("model", {}), _MODEL, where, "model") if "model" in raw else {}
    activation = md.get("activation", "relu")
    if activation != "relu":
        raise _fail(where, "[model] activation", f"only 'relu' is supported, got {_got(activation)}")
    model = ModelSpec(hidden=tuple(md.get("hidden", ModelSpec().hidden)), activation=activation)

    tr = _section(raw["training"], _TRAINING, where, "training")
    if not {"max_steps", "max_epochs", "max_seconds"} & set(tr):
        raise _fail(where, "[training]", "no budget: give at least one of max_steps, max_epochs, max_seconds")
    training = TrainingSpec(**tr)

    ev = _section(raw["evaluation"], _EVALUATION, where, "evaluation")
    if not {"every_steps", "every_seconds"} & set(ev):
        raise _fail(where, "[evaluation]", "no cadence: give every_steps and/or every_seconds")
    if "growth" in ev and "every_seconds" not in ev:
        raise _fail(where, "[evaluation] growth", "needs every_seconds, the first mark of its cadence")
    evaluation = EvalSpec(**ev)
    if evaluation.k < 5:
        # The record's curve and `final` always carry P@1/3/5 and nDCG@1/3/5.
        raise _fail(
            where, "[evaluation] k", f"must be >= 5 (P@5 and nDCG@5 are always reported), got {evaluation.k}"
        )
    _check_against_data(where, dataset, num_features, num_labels, model, training, evaluation)
    if evaluation.target_p1 is not None and not str(raw.get("target_source", "")).strip():
        raise _fail(
            where, "target_source", "is required when [evaluation] target_p1 is set: say where it comes from"
        )

    variants = _variants(raw.get("variants", {}), where)
    mx = _section(raw["matrix"], _MATRIX, where, "matrix")
    engines = _check_engines(mx["engines"], where, "[matrix] engines", variants)

    counters = CountersSpec(
        **(_section(raw["counters"], _COUNTERS, where, "counters") if "counters" in raw else {})
    )

    engine_params: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}
    tables = raw.get("engines", {})
    if not isinstance(tables, dict):
        raise _fail(where, "[engines]", "must be a table of per-engine tables")
    for engine in tables:
        _check_engines([engine], where, f"[engines.{engine}]")
        if not isinstance(tables[engine], dict):
            raise _fail(where, f"[engines.{engine}]", "must be a table")
    listed = {variants[e].engine if e in variants else e for e in engines}
    for engine in sorted(set(tables) | listed):
        params = dict(tables.get(engine, {}))
        try:
            cls = _engine_cls(engine, where, f"[engines.{engine}]")
        except WorkloadError as exc:
            # An engine whose module cannot be imported (not built, dependency missing) cannot
            # validate its parameters; the workload stays usable for the other engines and
            # expand() refuses this one if it is selected.
            unavailable[engine] = str(exc)
            engine_params[engine] = params
            continue
        try:
            cls.check_params(params)
        except ValueError as exc:
            raise _fail(where, f"[engines.{engine}]", str(exc)) from None
        if "devices" in mx and "device" in params:
            raise _fail(
                where,
                f"[engines.{engine}] device",
                "conflicts with [matrix] devices: give the device in one place",
            )
        if "devices" in mx and _has_device(cls):
            for device in mx["devices"]:
                try:
                    cls.check_params({**params, "device": device})
                except ValueError as exc:
                    raise _fail(where, f"[engines.{engine}]", str(exc)) from None
        if engine in tables:
            engine_params[engine] = params
    for variant_name, variant in variants.items():
        if variant.engine in unavailable:
            continue
        try:
            merged = {**engine_params.get(variant.engine, {}), **variant.params}
            registry.engine_class(variant.engine).check_params(merged)
        except ValueError as exc:
            raise _fail(where, f"[variants.{variant_name}]", str(exc)) from None

    decl, outcome = _tuning(
        raw, where, path, name, engines, variants, engine_params, set(unavailable), partial_tuning
    )

    return Workload(
        name=name,
        description=raw["description"],
        target_source=raw.get("target_source", ""),
        dataset=dataset,
        model=model,
        training=training,
        evaluation=evaluation,
        engines=engines,
        threads=tuple(mx["threads"]),
        seeds=tuple(mx["seeds"]),
        counters=counters,
        engine_params=engine_params,
        unavailable=unavailable,
        path=Path(path) if isinstance(path, Path) else None,
        variants=variants,
        devices=tuple(mx.get("devices", ())),
        tuning_decl=decl,
        tuning=outcome,
    )


def _tuning(
    raw: Mapping[str, Any],
    where: str,
    path: Path | str,
    name: str,
    engines: Sequence[str],
    variants: Mapping[str, Variant],
    engine_params: Mapping[str, Mapping[str, Any]],
    unavailable: set[str],
    partial: bool = False,
) -> tuple[TuningDecl | None, TuningOutcome | None]:
    """`[tuning]`: the declared search, checked against every engine, and its stored outcome
    (which must cover every engine of the matrix unless `partial`)."""
    if "tuning" not in raw:
        return None, None
    if isinstance(raw["tuning"], dict) and "from" in raw["tuning"]:
        return _tuning_from(raw, where, path, engines, variants, engine_params)
    tu = _section(raw["tuning"], _TUNING, where, "tuning")
    space_raw = tu.pop("space")
    if not space_raw:
        raise _fail(where, "[tuning.space]", "must name at least one key")
    space: dict[str, tuple[Any, ...]] = {}
    for key, values in space_raw.items():
        if not isinstance(values, list) or not values or len({json.dumps(v) for v in values}) != len(values):
            raise _fail(
                where,
                f"[tuning.space] {key}",
                f"must be a non-empty list of distinct values, got {_got(values)}",
            )
        space[key] = tuple(values)
    decl = TuningDecl(space=space, **tu)
    if (decl.reference is None) != (decl.reference_seconds is None) or (decl.reference is None) != (
        decl.target_fraction is None
    ):
        raise _fail(where, "[tuning]", "reference, reference_seconds and target_fraction go together")
    if decl.reference is not None and decl.reference != BEST_TUNED and decl.reference not in engines:
        raise _fail(
            where,
            "[tuning] reference",
            f"must be {BEST_TUNED!r} or an engine of [matrix] engines, got {_got(decl.reference)}",
        )
    for engine in engines:
        base = variants[engine].engine if engine in variants else engine
        own = {**engine_params.get(base, {}), **(variants[engine].params if engine in variants else {})}
        for key, values in space.items():
            if key in TRAINING_KEYS:
                for v in values:
                    msg = _positive_float32(v)
                    if msg:
                        raise _fail(where, f"[tuning.space] {key}", msg)
                continue
            if key in own:
                where_set = (
                    f"[variants.{engine}]"
                    if engine in variants and key in variants[engine].params
                    else f"[engines.{base}]"
                )
                raise _fail(
                    where, f"{where_set} {key}",
                    "is in [tuning.space]: tuning sets it for every engine, so it cannot be set by hand for one",
                )  # fmt: skip
            if base in unavailable:
                continue  # refused by expand() if selected; it cannot check its values here
            cls = registry.engine_class(base)
            for v in values:
                try:
                    cls.check_params({**own, key: v})
                except ValueError as exc:
                    raise _fail(
                        where, f"[tuning.space] {key}", f"not a valid value for {engine}: {exc}"
                    ) from None
    file = tuning_file(Path(path) if isinstance(path, Path) else None, name)
    if file is None or not file.exists():
        return decl, None
    try:
        outcome = read_outcome(file, decl)
        if not partial:
            check_coverage(outcome, engines)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None
    return decl, outcome


def _tuning_from(
    raw: Mapping[str, Any],
    where: str,
    path: Path | str,
    engines: Sequence[str],
    variants: Mapping[str, Variant],
    engine_params: Mapping[str, Mapping[str, Any]],
) -> tuple[TuningDecl | None, TuningOutcome | None]:
    """`[tuning] from = "OTHER"`: the stored tuning of another workload on the same data and model
    (a device or counter study of it), so that study's engines run exactly the tuned values."""
    other = _section(raw["tuning"], _TUNING_FROM, where, "tuning")["from"]
    if not NAME_PATTERN.fullmatch(other):
        raise _fail(where, "[tuning] from", f"must name a workload, got {_got(other)}")
    file = tuning_file(Path(path) if isinstance(path, Path) else None, other)
    if file is None or not file.exists():
        raise _fail(
            where, "[tuning] from", f"no stored tuning for {other!r}: run `slidebench tune {other}` first"
        )
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        search = doc["search"]
        decl = TuningDecl(
            space={k: tuple(v) for k, v in search["space"].items()},
            **{k: v for k, v in search.items() if k != "space"},
        )
        outcome = read_outcome(file, decl)
        check_coverage(outcome, engines)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WorkloadError(f"{where}: [tuning] from {other!r}: {exc}") from None
    for engine in engines:
        base = variants[engine].engine if engine in variants else engine
        own = {**engine_params.get(base, {}), **(variants[engine].params if engine in variants else {})}
        for key in set(decl.space) & set(own):
            raise _fail(
                where, f"[engines.{base}] {key}",
                f"is tuned in {file.name}: tuning sets it for every engine, so it cannot be set by hand for one",
            )  # fmt: skip
    return decl, outcome


def _variants(table: Any, where: str) -> dict[str, Variant]:
    """`[variants.NAME]` tables: each names a registered `engine`; the other keys are its parameters."""
    if not isinstance(table, dict):
        raise _fail(where, "[variants]", "must be a table of per-variant tables")
    out: dict[str, Variant] = {}
    for name, body in table.items():
        key = f"[variants.{name}]"
        if not NAME_PATTERN.fullmatch(name):
            raise _fail(where, key, "a variant name must be a plain identifier (letters, digits, '-', '_')")
        if name in registry.ENGINES:
            raise _fail(where, key, f"{name!r} is a registered engine; give the variant a name of its own")
        if not isinstance(body, dict):
            raise _fail(where, key, "must be a table")
        engine = body.get("engine")
        if not isinstance(engine, str) or engine not in registry.ENGINES:
            raise _fail(
                where, f"{key} engine",
                f"must name a registered engine ({', '.join(sorted(registry.ENGINES))}), got {_got(engine)}",
            )  # fmt: skip
        out[name] = Variant(engine=engine, params={k: v for k, v in body.items() if k != "engine"})
    return out


def load_all(names: Iterable[str | Path], *, data_dir: str | Path | None = None) -> list[Workload]:
    """Validate every workload before any is run: a campaign never starts on a half-valid suite."""
    return [load(n, data_dir=data_dir) for n in names]
