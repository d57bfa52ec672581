"""Workloads: declarative TOML specs, validated whole before any run starts, expanded into runs.

`load(path_or_name)` reads ``workloads/<name>.toml`` (or a path), refuses unknown keys, wrong
types and impossible values with a `WorkloadError` naming the file and the key, and validates each
engine's own parameters through `Engine.check_params` (cheap by contract: no TensorFlow, no
native extension). `Workload.expand()` yields one frozen `RunSpec` per (engine, threads, seed),
and per device for engines with a `device` parameter when the matrix lists `devices`.

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
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import registry
from harness.engine import ModelSpec, OptimizerSpec, TrainMeta

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_DIR = REPO_ROOT / "workloads"
SOURCE_SUFFIXES = (".py", ".cpp", ".cc", ".h", ".hpp", ".txt", ".cmake")


class WorkloadError(ValueError):
    """A workload that cannot run; the message names the file and the key."""


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class DatasetRef:
    """Either a manifest entry (`name`) or a synthetic preset (`synthetic`, `scale`, `seed`)."""

    name: str | None = None
    synthetic: str | None = None
    scale: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.name is not None:
            return {"name": self.name}
        return {"synthetic": self.synthetic, "scale": self.scale, "seed": self.seed}

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"{self.synthetic}@{self.scale:g}/seed{self.seed}"

    def to_data_spec(self) -> Any:
        """The data layer's `DatasetSpec` (imported here so validating a workload never loads data code)."""
        from harness.data import DatasetSpec

        if self.name is not None:
            return DatasetSpec(name=self.name)
        return DatasetSpec(synthetic=self.synthetic, scale=self.scale, seed=self.seed)


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
    target_p1: float | None = None
    batch_size: int = 256  # rows per predict_topk call: bounds the memory of exact scoring


@dataclass(frozen=True)
class CountersSpec:
    perf: bool = False
    cachegrind: bool = False
    cachegrind_steps: int = 20
    cachegrind_timeout_s: float = 1800.0  # the whole valgrind process, warm-up and evaluations included


def _plain(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


@dataclass(frozen=True)
class RunSpec:
    """One run: a workload's settings fixed to one engine, thread count and seed."""

    workload: str
    engine: str
    engine_params: Mapping[str, Any]
    threads: int
    seed: int
    dataset: DatasetRef
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvalSpec
    counters: CountersSpec

    def to_dict(self) -> dict[str, Any]:
        """The record's `spec` section (also what the worker reads back)."""
        return {
            "workload": self.workload,
            "engine": self.engine,
            "engine_params": dict(sorted(self.engine_params.items())),
            "threads": self.threads,
            "seed": self.seed,
            "dataset": self.dataset.to_dict(),
            "model": {"hidden": list(self.model.hidden), "activation": self.model.activation},
            "training": _plain(self.training),
            "evaluation": _plain(self.evaluation),
            "counters": _plain(self.counters),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        try:
            model = d["model"]
            return cls(
                workload=str(d["workload"]),
                engine=str(d["engine"]),
                engine_params=dict(d.get("engine_params") or {}),
                threads=int(d["threads"]),
                seed=int(d["seed"]),
                dataset=DatasetRef(**d["dataset"]),
                model=ModelSpec(
                    hidden=tuple(int(h) for h in model["hidden"]), activation=model["activation"]
                ),
                training=TrainingSpec(**d["training"]),
                evaluation=EvalSpec(**d["evaluation"]),
                counters=CountersSpec(**d.get("counters", {})),
            )
        except (KeyError, TypeError) as exc:
            raise WorkloadError(f"malformed run spec: {exc}") from None

    def canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(f"{self.canonical()}\n{build_id(self.engine)}".encode()).hexdigest()
        return digest[:16]

    def train_meta(self, num_features: int, num_labels: int, num_train: int) -> TrainMeta:
        return TrainMeta(
            num_features=num_features,
            num_labels=num_labels,
            num_train=num_train,
            batch_size=self.training.batch_size,
            model=self.model,
            optimizer=self.training.optimizer(),
            seed=self.seed,
        )


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    target_source: str
    dataset: DatasetRef
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
    # [matrix] devices: each engine with a `device` parameter (the TF engines) runs once per entry,
    # as that parameter, so the device is part of the spec and of the run id; engines without one
    # run once (on the CPU). Empty: every engine runs with its own `device` setting.
    devices: tuple[str, ...] = ()

    def params_for(self, engine: str) -> dict[str, Any]:
        """The engine's parameters with defaults filled (validated at load time)."""
        return registry.engine_class(engine).check_params(dict(self.engine_params.get(engine, {})))

    def expand(
        self,
        engines: Sequence[str] | None = None,
        threads: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[RunSpec]:
        """One RunSpec per (engine[, device], threads, seed); overrides are validated like the matrix."""
        where = str(self.path or self.name)
        engines_t = self.engines if engines is None else _check_engines(list(engines), where, "--engines")
        threads_t = self.threads if threads is None else _check_int_list(list(threads), where, "--threads", 1)
        seeds_t = self.seeds if seeds is None else _check_int_list(list(seeds), where, "--seeds", 0)
        params: list[tuple[str, dict[str, Any]]] = []
        for engine in engines_t:
            if engine in self.unavailable:
                raise WorkloadError(self.unavailable[engine])
            cls = _engine_cls(engine, where, "engines")
            given = dict(self.engine_params.get(engine, {}))
            per_device = [{**given, "device": d} for d in self.devices] if _has_device(cls) else []
            for p in per_device or [given]:
                try:
                    params.append((engine, cls.check_params(p)))
                except ValueError as exc:
                    if isinstance(exc, WorkloadError):
                        raise
                    raise WorkloadError(f"{where}: [engines.{engine}]: {exc}") from None
        return [
            RunSpec(
                workload=self.name,
                engine=engine,
                engine_params=p,
                threads=t,
                seed=s,
                dataset=self.dataset,
                model=self.model,
                training=self.training,
                evaluation=self.evaluation,
                counters=self.counters,
            )
            for engine, p in params
            for t in threads_t
            for s in seeds_t
        ]


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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))


Check = Callable[[Any], str | None]  # returns an error message or None


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _nonneg(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def _unit_open(v: Any) -> str | None:
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v!r}"


def _prob(v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}"


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
            raise _fail(where, name, f"must be an integer, got {value!r}")
        if spec.kind == "num":
            if not _is_num(value):
                raise _fail(where, name, f"must be a finite number, got {value!r}")
            value = float(value)
        if spec.kind == "str" and not isinstance(value, str):
            raise _fail(where, name, f"must be a string, got {value!r}")
        if spec.kind == "bool" and not isinstance(value, bool):
            raise _fail(where, name, f"must be true or false, got {value!r}")
        if spec.kind in ("int_list", "str_list"):
            ok = _is_int if spec.kind == "int_list" else (lambda v: isinstance(v, str))
            if not isinstance(value, list) or not value or not all(ok(v) for v in value):
                what = "integers" if spec.kind == "int_list" else "strings"
                raise _fail(where, name, f"must be a non-empty list of {what}, got {value!r}")
            if len(set(value)) != len(value):
                raise _fail(where, name, f"has duplicates: {value!r}")
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
}
_DATASET = {
    "name": _Field("str"),
    "synthetic": _Field("str"),
    "scale": _Field("num", check=_positive),
    "seed": _Field("int", check=_nonneg),
}
_MODEL = {"hidden": _Field("int_list", True, _positive), "activation": _Field("str")}
_TRAINING = {
    "batch_size": _Field("int", True, _positive),
    "lr": _Field("num", True, _positive),
    "beta1": _Field("num", check=_unit_open),
    "beta2": _Field("num", check=_unit_open),
    "eps": _Field("num", check=_positive),
    "max_steps": _Field("int", check=_positive),
    "max_epochs": _Field("num", check=_positive),
    "max_seconds": _Field("num", check=_positive),
}
_EVALUATION = {
    "every_steps": _Field("int", check=_positive),
    "every_seconds": _Field("num", check=_positive),
    "subset": _Field("int", True, _positive),
    "seed": _Field("int", check=_nonneg),
    "k": _Field("int", check=lambda v: None if v >= 1 else f"must be >= 1, got {v!r}"),
    "target_p1": _Field("num", check=_prob),
    "batch_size": _Field("int", check=_positive),
}
_MATRIX = {
    "engines": _Field("str_list", True),
    "threads": _Field("int_list", True, lambda v: None if v >= 1 else f"must be >= 1, got {v!r}"),
    "seeds": _Field("int_list", True, _nonneg),
    "devices": _Field(
        "str_list", check=lambda v: None if v in ("cpu", "gpu") else f"must be 'cpu' or 'gpu', got {v!r}"
    ),
}
_COUNTERS = {
    "perf": _Field("bool"),
    "cachegrind": _Field("bool"),
    "cachegrind_steps": _Field("int", check=_positive),
    "cachegrind_timeout_s": _Field("num", check=_positive),
}


def _check_engines(names: list[Any], where: str, key: str) -> tuple[str, ...]:
    if not names or not all(isinstance(n, str) for n in names):
        raise _fail(where, key, f"must be a non-empty list of engine names, got {names!r}")
    for n in names:
        if n not in registry.ENGINES:
            raise _fail(
                where, key, f"unknown engine {n!r}; registered: {', '.join(sorted(registry.ENGINES))}"
            )
    if len(set(names)) != len(names):
        raise _fail(where, key, f"has duplicates: {names!r}")
    return tuple(names)


def _engine_cls(name: str, where: str, key: str) -> Any:
    """The engine class, or a WorkloadError when its module cannot be imported (e.g. not built)."""
    try:
        return registry.engine_class(name)
    except (ImportError, AttributeError) as exc:
        raise _fail(where, key, f"cannot import engine {name!r} to check its parameters: {exc}") from None


def _check_int_list(values: list[Any], where: str, key: str, minimum: int) -> tuple[int, ...]:
    if not values or not all(_is_int(v) for v in values):
        raise _fail(where, key, f"must be a non-empty list of integers, got {values!r}")
    bad = [v for v in values if v < minimum]
    if bad:
        raise _fail(where, key, f"must be >= {minimum}, got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise _fail(where, key, f"has duplicates: {values!r}")
    return tuple(values)


def _check_dataset(dataset: DatasetRef, where: str) -> None:
    """The data set must be one the data layer knows (manifest entry or synthetic preset): cheap checks."""
    from harness import data, synth

    if dataset.name is not None:
        known = data.load_manifest()
        if dataset.name not in known:
            raise _fail(
                where,
                "[dataset] name",
                f"unknown data set {dataset.name!r}; the manifest has: {', '.join(sorted(known))}",
            )
    else:
        if dataset.synthetic not in synth.PRESETS:
            raise _fail(
                where,
                "[dataset] synthetic",
                f"unknown preset {dataset.synthetic!r}; known: {', '.join(sorted(synth.PRESETS))}",
            )
        try:
            dataset.to_data_spec()
        except ValueError as exc:
            raise _fail(where, "[dataset]", str(exc)) from None


def resolve(path_or_name: str | Path) -> Path:
    """A workload file: an existing path, else ``workloads/<name>.toml``."""
    p = Path(path_or_name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"workload file {p} does not exist")
        return p
    candidate = WORKLOADS_DIR / f"{path_or_name}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(q.stem for q in WORKLOADS_DIR.glob("*.toml") if q.stem != "suites"))
        raise FileNotFoundError(f"no workload named {path_or_name!r} in {WORKLOADS_DIR}; known: {known}")
    return candidate


def load(path_or_name: str | Path) -> Workload:
    """Read and fully validate a workload (engine parameters included)."""
    path = resolve(path_or_name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: Mapping[str, Any], path: Path | str) -> Workload:
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
            raise _fail(where, key, f"must be a string, got {raw[key]!r}")
    name = raw["name"]
    if isinstance(path, Path) and path.stem != name:
        raise _fail(where, "name", f"must equal the file stem {path.stem!r}, got {name!r}")
    if not raw["description"].strip():
        raise _fail(where, "description", "must not be empty")

    ds = _section(raw["dataset"], _DATASET, where, "dataset")
    if ("name" in ds) == ("synthetic" in ds):
        raise _fail(
            where, "[dataset]", "give exactly one of 'name' (a manifest entry) or 'synthetic' (a preset)"
        )
    if "name" in ds and ({"scale", "seed"} & set(ds)):
        raise _fail(where, "[dataset] scale", "'scale' and 'seed' apply to synthetic data only")
    dataset = DatasetRef(
        name=ds.get("name"), synthetic=ds.get("synthetic"), scale=ds.get("scale", 1.0), seed=ds.get("seed", 0)
    )
    _check_dataset(dataset, where)

    md = _section(raw.get("model", {}), _MODEL, where, "model") if "model" in raw else {}
    activation = md.get("activation", "relu")
    if activation != "relu":
        raise _fail(where, "[model] activation", f"only 'relu' is supported, got {activation!r}")
    model = ModelSpec(hidden=tuple(md.get("hidden", ModelSpec().hidden)), activation=activation)

    tr = _section(raw["training"], _TRAINING, where, "training")
    if not {"max_steps", "max_epochs", "max_seconds"} & set(tr):
        raise _fail(where, "[training]", "no budget: give at least one of max_steps, max_epochs, max_seconds")
    training = TrainingSpec(**tr)

    ev = _section(raw["evaluation"], _EVALUATION, where, "evaluation")
    if not {"every_steps", "every_seconds"} & set(ev):
        raise _fail(where, "[evaluation]", "no cadence: give every_steps and/or every_seconds")
    evaluation = EvalSpec(**ev)
    if evaluation.k < 5:
        # The record's curve and `final` always carry P@1/3/5 and nDCG@1/3/5.
        raise _fail(
            where, "[evaluation] k", f"must be >= 5 (P@5 and nDCG@5 are always reported), got {evaluation.k}"
        )
    if evaluation.target_p1 is not None and not str(raw.get("target_source", "")).strip():
        raise _fail(
            where, "target_source", "is required when [evaluation] target_p1 is set: say where it comes from"
        )

    mx = _section(raw["matrix"], _MATRIX, where, "matrix")
    engines = _check_engines(mx["engines"], where, "[matrix] engines")

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
    for engine in sorted(set(tables) | set(engines)):
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
        devices=tuple(mx.get("devices", ())),
    )


def load_all(names: Iterable[str | Path]) -> list[Workload]:
    """Validate every workload before any is run: a campaign never starts on a half-valid suite."""
    return [load(n) for n in names]
