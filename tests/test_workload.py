"""Workload validation, expansion and run identity (harness/workload.py), and the shipped files."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness import registry, workload
from harness.workload import WorkloadError

BASE: dict[str, Any] = {
    "name": "w",
    "description": "a test workload",
    "target_source": "made up",
    "dataset": {"synthetic": "tiny", "scale": 0.5, "seed": 1},
    "model": {"hidden": [32]},
    "training": {"batch_size": 32, "lr": 0.001, "max_steps": 10},
    "evaluation": {"every_steps": 5, "subset": 100, "seed": 0, "k": 5, "target_p1": 0.5},
    "matrix": {"engines": ["numpy_dense"], "threads": [1, 2], "seeds": [0, 1, 2]},
    "counters": {"perf": False},
    "engines": {"numpy_dense": {"init_scale": 0.5}},
}
PATH = Path("w.toml")


def parse(raw: dict[str, Any]) -> workload.Workload:
    return workload.parse(raw, PATH)


def mutated(path: str, value: Any) -> dict[str, Any]:
    """BASE with one key (dotted path) set, or deleted when value is DELETE."""
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


DELETE = object()


def test_base_is_valid() -> None:
    w = parse(BASE)
    assert w.name == "w" and w.threads == (1, 2) and w.seeds == (0, 1, 2)
    assert w.training.lr == 0.001 and w.training.max_steps == 10
    assert w.dataset.synthetic == "tiny" and w.dataset.scale == 0.5


@pytest.mark.parametrize(
    "path, value, key",
    [
        ("bogus", 1, "bogus"),
        ("training.momentum", 0.9, "momentum"),
        ("evaluation.subsets", 10, "subsets"),
        ("dataset.scale_factor", 1, "scale_factor"),
        ("training.batch_size", 0, "batch_size"),
        ("training.batch_size", -4, "batch_size"),
        ("training.batch_size", 32.0, "batch_size"),
        ("training.batch_size", "32", "batch_size"),
        ("training.batch_size", True, "batch_size"),
        ("training.lr", 0, "lr"),
        ("training.lr", -0.1, "lr"),
        ("training.lr", "fast", "lr"),
        ("training.beta1", 1.0, "beta1"),
        ("training.max_steps", DELETE, "budget"),
        ("training.max_seconds", -1, "max_seconds"),
        ("evaluation.subset", 0, "subset"),
        ("evaluation.k", 0, "k"),
        ("evaluation.k", 3, "k"),
        ("evaluation.target_p1", 1.5, "target_p1"),
        ("evaluation.every_steps", DELETE, "cadence"),
        ("matrix.engines", ["numpy_dense", "warp_drive"], "engines"),
        ("matrix.engines", [], "engines"),
        ("matrix.threads", [0], "threads"),
        ("matrix.threads", [2, 2], "threads"),
        ("matrix.seeds", [-1], "seeds"),
        ("matrix.seeds", "0", "seeds"),
        ("model.hidden", [], "hidden"),
        ("model.hidden", [0], "hidden"),
        ("model.activation", "tanh", "activation"),
        ("dataset.synthetic", "no-such-preset", "synthetic"),
        ("dataset.scale", 0, "scale"),
        ("dataset.name", "delicious", "dataset"),
        ("counters.perf", "yes", "perf"),
        ("engines.numpy_dense", {"init_scale": -1}, "init_scale"),
        ("engines.numpy_dense", {"no_such_param": 1}, "no_such_param"),
        ("engines.numpy_dense", {"init_scale": "big"}, "init_scale"),
        ("engines.warp_drive", {}, "warp_drive"),
        ("name", "other", "name"),
        ("description", "", "description"),
        ("target_source", DELETE, "target_source"),
        ("training", DELETE, "training"),
    ],
)
def test_invalid_workload_is_refused_naming_the_key(path: str, value: Any, key: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse(mutated(path, value))
    message = str(info.value)
    assert key in message, message
    assert str(PATH) in message, "the file is named"


def test_unknown_manifest_name_is_refused() -> None:
    raw = mutated("dataset", {"name": "no-such-data"})
    with pytest.raises(WorkloadError, match="no-such-data"):
        parse(raw)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("name = 'broken'\n[training\n")
    with pytest.raises(WorkloadError, match="broken.toml"):
        workload.load(p)


def test_missing_workload_names_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="known"):
        workload.load("no-such-workload")


def test_expand_and_overrides() -> None:
    w = parse(BASE)
    specs = w.expand()
    assert len(specs) == 1 * 2 * 3
    assert {(s.threads, s.seed) for s in specs} == {(t, s) for t in (1, 2) for s in (0, 1, 2)}
    assert specs[0].engine_params["init_scale"] == 0.5 and specs[0].engine_params["nan_at_step"] == -1
    assert len(w.expand(threads=[4], seeds=[9])) == 1
    with pytest.raises(WorkloadError, match="--threads"):
        w.expand(threads=[0])
    with pytest.raises(WorkloadError, match="--engines"):
        w.expand(engines=["warp_drive"])


def test_run_id_is_stable_and_sensitive() -> None:
    a = parse(BASE).expand()[0]
    b = parse(copy.deepcopy(BASE)).expand()[0]
    assert a.run_id == b.run_id and len(a.run_id) == 16
    assert json.loads(a.canonical()) == a.to_dict()
    assert a.canonical() == json.dumps(a.to_dict(), sort_keys=True, separators=(",", ":"))
    ids = {a.run_id}
    for path, value in [
        ("training.lr", 0.002),
        ("evaluation.subset", 101),
        ("engines.numpy_dense", {"init_scale": 0.25}),
        ("dataset.seed", 2),
        ("model.hidden", [33]),
    ]:
        ids.add(parse(mutated(path, value)).expand()[0].run_id)
    assert len(ids) == 6, "every setting that changes the run changes its id"
    # Prose does not.
    assert parse(mutated("description", "reworded")).expand()[0].run_id == a.run_id
    assert len({s.run_id for s in parse(BASE).expand()}) == 6


def test_run_spec_round_trips() -> None:
    spec = parse(BASE).expand()[3]
    again = workload.RunSpec.from_dict(json.loads(spec.canonical()))
    assert again == spec and again.run_id == spec.run_id


def test_build_id_names_engine_and_sources() -> None:
    bid = workload.build_id("numpy_dense")
    assert "NumpyDenseEngine" in bid and "src " in bid


SHIPPED = sorted(p for p in workload.WORKLOADS_DIR.glob("*.toml") if p.stem != "suites")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_workloads_are_valid_and_documented(path: Path) -> None:
    try:
        w = workload.load(path)
    except WorkloadError as exc:
        if "cannot import engine" in str(exc):
            pytest.skip(str(exc))
        raise
    assert w.evaluation.target_p1 is not None, "every shipped workload documents a P@1 target"
    assert len(w.target_source) > 20 and len(w.description) > 20
    assert set(w.engines) <= set(registry.ENGINES)


def test_suites_name_shipped_workloads() -> None:
    from harness.commands.run import load_suites

    suites = load_suites()
    assert {"default", "paper"} <= set(suites)
    names = {p.stem for p in SHIPPED}
    for suite in suites.values():
        for n in (*suite.workloads, *suite.realdata, *([suite.scaling] if suite.scaling else [])):
            assert n in names, f"suite {suite.name} names {n}, which has no workloads/{n}.toml"
    raw = tomllib.loads((workload.WORKLOADS_DIR / "suites.toml").read_text())
    assert "smoke" in raw["default"]["workloads"]
