"""Workload validation, expansion and run identity (harness/spec/workload.py), and the shipped files."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.spec import registry, workload
from harness.spec.workload import WorkloadError

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
        ("evaluation.growth", 1.0, "growth"),
        ("evaluation.growth", 2.0, "growth"),  # needs every_seconds, which the base lacks
        ("evaluation.stop_at_target", "no", "stop_at_target"),
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
    # The record's spec carries the workload's prose; the identity (canonical JSON) leaves it out.
    prose = {"description": BASE["description"], "target_source": BASE["target_source"]}
    assert {k: a.to_dict()[k] for k in prose} == prose
    identity = {k: v for k, v in a.to_dict().items() if k not in prose}
    assert json.loads(a.canonical()) == identity
    assert a.canonical() == json.dumps(identity, sort_keys=True, separators=(",", ":"))
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
    assert parse(mutated("target_source", "reworded")).expand()[0].run_id == a.run_id
    assert len({s.run_id for s in parse(BASE).expand()}) == 6


def test_run_spec_round_trips() -> None:
    spec = parse(BASE).expand()[3]
    again = workload.RunSpec.from_dict(json.loads(spec.canonical()))
    assert again == spec and again.run_id == spec.run_id
    # The record's spec (to_dict) brings the prose back too, which the worker passes on.
    whole = workload.RunSpec.from_dict(spec.to_dict())
    assert (whole.description, whole.target_source) == (spec.description, spec.target_source)
    assert whole.description == BASE["description"]


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
    derived = w.tuning_decl is not None and w.tuning_decl.reference is not None
    assert w.evaluation.target_p1 is not None or derived, "every shipped workload has a P@1 target or derives one"
    if w.tuning_decl is not None and w.tuning is not None:
        # A shipped tuning covers the whole matrix (read_outcome and check_coverage refuse otherwise).
        assert set(w.engines) <= set(w.tuning.engines)
    assert len(w.target_source) > 20 and len(w.description) > 20
    assert {w.base_of(e) for e in w.engines} <= set(registry.ENGINES)


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


# ------------------------------------------------------------------------- impossible settings


@pytest.mark.parametrize(
    "path, value, key",
    [
        ("matrix.threads", [2**63 - 1], "threads"),
        ("matrix.threads", [1025], "threads"),
        ("matrix.seeds", [2**32], "seeds"),
        ("evaluation.k", 501, "k"),  # the tiny preset has 500 labels
        ("model.hidden", [10**9], "hidden"),
        ("model.hidden", [8] * 101, "hidden"),
        ("training.lr", 1e308, "lr"),  # finite in float64, inf in float32
        ("training.lr", 1e-50, "lr"),  # 0 in float32
        ("training.eps", 1e39, "eps"),
        ("training.beta2", 0.99999999, "beta2"),  # 1.0 in float32
        ("training.batch_size", 2**30, "batch_size"),
        ("training.max_steps", 2**63 - 1, "max_steps"),
        ("training.max_epochs", 1e300, "max_epochs"),
        ("training.max_seconds", 1e308, "max_seconds"),
        ("evaluation.every_steps", 2**62, "every_steps"),
        ("evaluation.every_seconds", 1e300, "every_seconds"),
        ("evaluation.subset", 2**40, "subset"),
        ("evaluation.batch_size", 2**40, "batch_size"),
        ("evaluation.seed", 2**64, "seed"),
        ("dataset.seed", 2**40, "seed"),
        ("counters.cachegrind_steps", 10**9, "cachegrind_steps"),
        ("counters.cachegrind_timeout_s", 1e300, "cachegrind_timeout_s"),
    ],
)
def test_impossible_settings_are_refused_up_front(path: str, value: Any, key: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse(mutated(path, value))
    message = str(info.value)
    assert f"{key}:" in message and str(PATH) in message, message


def test_settings_that_only_fail_for_this_data_are_refused() -> None:
    """k and memory bounds need the data's shape: from the manifest or the preset, without data."""
    raw = mutated("dataset", {"name": "delicious"})  # 983 labels in the manifest
    raw["evaluation"]["k"] = 984
    with pytest.raises(WorkloadError, match=r"w.toml: \[evaluation\] k: must be <= the 983 labels"):
        parse(raw)
    raw["evaluation"]["k"] = 983
    assert parse(raw).evaluation.k == 983
    # Amazon-670K's width: 100,000 rows x 670,091 labels of dense scores is ~250 GiB.
    raw = mutated("dataset", {"synthetic": "amazon-670k", "scale": 0.01})
    raw["training"]["batch_size"] = 100_000
    with pytest.raises(WorkloadError, match=r"\[training\] batch_size: .*score matrix"):
        parse(raw)
    raw["training"]["batch_size"] = 128
    raw["model"]["hidden"] = [100_000]  # 135,909 x 100,000 + 100,000 x 670,091 parameters
    with pytest.raises(WorkloadError, match=r"\[model\] hidden: .*parameters"):
        parse(raw)
    raw["model"]["hidden"] = [128]  # the paper's model
    parse(raw)


def test_thread_and_seed_overrides_have_the_same_bounds() -> None:
    w = parse(BASE)
    with pytest.raises(WorkloadError, match="--threads"):
        w.expand(threads=[2**63 - 1])
    with pytest.raises(WorkloadError, match="--seeds"):
        w.expand(seeds=[2**40])


def test_offending_values_are_quoted_short() -> None:
    with pytest.raises(WorkloadError) as info:
        parse(mutated("training.batch_size", "x" * 1_000_000))
    assert len(str(info.value)) < 200 and "characters)" in str(info.value)


# ----------------------------------------------------------------------------------- names, files


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../up", "-x", "a b", "caf\u00e9", "x" * 101])
def test_workload_name_must_be_a_plain_identifier(name: str) -> None:
    with pytest.raises(WorkloadError) as info:
        workload.parse(dict(BASE, name=name), f"{name}.toml")
    assert "name:" in str(info.value) and "plain name" in str(info.value)


def test_dot_dot_workload_file_is_refused_naming_it(tmp_path: Path) -> None:
    # "...toml" has the stem "..", so a name of ".." matched its file stem.
    path = tmp_path / "...toml"
    path.write_text(SMALL_TOML.replace('name = "small"', 'name = ".."'))
    with pytest.raises(WorkloadError, match=r"\.\.\.toml: name: must be a plain name"):
        workload.load(path)
    with pytest.raises(FileNotFoundError, match="not a workload name"):
        workload.load("../smoke")


def test_non_utf8_workload_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "latin"\ndescription = "caf\xe9"\n')
    with pytest.raises(WorkloadError, match=r"latin.toml:2: not UTF-8 text \(byte 0xe9 at column 19\)"):
        workload.load(path)


SMALL_TOML = """\
name = "small"
description = "a workload in a file"
[dataset]
synthetic = "tiny"
[training]
batch_size = 8
lr = 0.01
max_steps = 3
[evaluation]
every_steps = 1
subset = 10
[matrix]
engines = ["numpy_dense"]
threads = [1]
seeds = [0]
"""


def write_xmc_file(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    write_xmc_file(root / "mine" / "train.txt", "3 6 7", ["0,3 0:1 2:0.5", "6 1:1", "1 5:2"])
    write_xmc_file(root / "mine" / "test.txt", "2 6 7", ["3 0:1", "4,5 2:1"])
    monkeypatch.setenv("SLIDEBENCH_DATA", str(root))
    monkeypatch.setenv("SLIDEBENCH_CACHE", str(tmp_path / "cache"))
    return root


def with_files(train: str = "mine/train.txt", test: str = "mine/test.txt", **extra: Any) -> dict[str, Any]:
    raw = mutated("dataset", {"train": train, "test": test, **extra})
    raw["evaluation"]["k"] = 5
    return raw


def test_dataset_files_by_path_carry_shape_and_sha256(data_dir: Path) -> None:
    import hashlib

    from harness.datasets import data

    w = parse(with_files())
    spec = w.expand()[0]
    recorded = spec.to_dict()["dataset"]
    train_bytes = (data_dir / "mine" / "train.txt").read_bytes()
    assert recorded["train"] == {
        "file": "mine/train.txt",
        "points": 3,
        "features": 6,
        "labels": 7,
        "bytes": len(train_bytes),
        "sha256": hashlib.sha256(train_bytes).hexdigest(),
    }
    assert recorded["test"]["points"] == 2 and recorded["test"]["file"] == "mine/test.txt"
    again = workload.RunSpec.from_dict(json.loads(spec.canonical()))
    assert again == spec and again.run_id == spec.run_id
    train, test = data.load(again.dataset)
    assert (train.num_points, test.num_points, train.num_labels) == (3, 2, 7)
    # An absolute path needs no data directory.
    absolute = parse(with_files(train=str(data_dir / "mine" / "train.txt")))
    assert absolute.dataset.train.sha256 == recorded["train"]["sha256"]
    # Other bytes make another run, and the old spec no longer loads.
    (data_dir / "mine" / "train.txt").write_bytes(train_bytes.replace(b"2:0.5", b"2:0.7"))
    assert parse(with_files()).expand()[0].run_id != spec.run_id
    with pytest.raises(data.DataError, match="sha256"):
        data.load(again.dataset)


@pytest.mark.parametrize(
    "dataset, message",
    [
        ({"name": "delicious", "train": "mine/train.txt", "test": "mine/test.txt"}, r"\[dataset\] train: .*not both"),
        ({"synthetic": "tiny", "train": "mine/train.txt", "test": "mine/test.txt"}, r"\[dataset\] train: .*not both"),
        ({"train": "mine/train.txt"}, r"\[dataset\] test: is required"),
        ({"train": "mine/train.txt", "test": "mine/test.txt", "seed": 1}, r"\[dataset\] scale"),
        ({"train": "mine/train.txt", "test": "mine/nope.txt"}, r"\[dataset\] test: file not found: .*mine/nope.txt"),
        ({"train": "mine/headerless.txt", "test": "mine/test.txt"}, r"\[dataset\] train: .*headerless.txt:1: bad header"),
        ({"train": "mine/train.txt", "test": "mine/wider.txt"}, r"\[dataset\] test: .*wider.txt declares 9 features"),
    ],
)
def test_dataset_files_are_refused_naming_file_and_key(data_dir: Path, dataset: dict, message: str) -> None:
    write_xmc_file(data_dir / "mine" / "headerless.txt", "0 1:1", ["1 2:1"])
    write_xmc_file(data_dir / "mine" / "wider.txt", "1 9 7", ["0 8:1"])
    with pytest.raises(WorkloadError, match=message) as info:
        parse(mutated("dataset", dataset))
    assert str(PATH) in str(info.value)


def test_dataset_files_need_a_data_directory_when_relative(data_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("SLIDEBENCH_DATA")
    with pytest.raises(WorkloadError, match=r"\[dataset\] train: 'mine/train.txt' is relative to the data directory"):
        parse(with_files())
    assert workload.parse(with_files(), PATH, data_dir=data_dir).dataset.train.points == 3


def test_k_is_checked_against_the_files_labels(data_dir: Path) -> None:
    raw = with_files()
    raw["evaluation"]["k"] = 8  # the files declare 7 labels
    with pytest.raises(WorkloadError, match=r"\[evaluation\] k: must be <= the 7 labels of files:mine/train.txt"):
        parse(raw)


# ---- engine variants ----------------------------------------------------------------------------


def _with_variant(**variant: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["variants"] = {"dense-wide": {"engine": "numpy_dense", **variant}}
    raw["matrix"]["engines"] = ["numpy_dense", "dense-wide"]
    return raw


def test_variant_runs_under_its_own_name_with_its_engine_params_over_the_engine_table() -> None:
    w = parse(_with_variant(init_scale=2.0))
    assert w.name == "w"
    specs = {s.engine: s for s in w.expand(threads=[1], seeds=[0])}
    assert {s.workload for s in specs.values()} == {"w"}
    plain, variant = specs["numpy_dense"], specs["dense-wide"]
    assert variant.base_engine == "numpy_dense" and variant.engine_class_name == "numpy_dense"
    assert plain.base_engine is None and plain.engine_class_name == "numpy_dense"
    assert plain.engine_params["init_scale"] == 0.5 and variant.engine_params["init_scale"] == 2.0
    # The spec round-trips, and plain engines' specs (so their run ids) do not grow a key.
    assert workload.RunSpec.from_dict(variant.to_dict()) == variant
    assert "base_engine" not in plain.to_dict() and variant.to_dict()["base_engine"] == "numpy_dense"
    assert variant.run_id != plain.run_id
    assert [s.engine for s in w.expand(engines=["dense-wide"], threads=[1], seeds=[0])] == ["dense-wide"]


def test_variant_inherits_what_it_does_not_name() -> None:
    w = parse(_with_variant())
    specs = {s.engine: s for s in w.expand(threads=[1], seeds=[0])}
    assert specs["dense-wide"].engine_params == specs["numpy_dense"].engine_params


@pytest.mark.parametrize(
    ("variants", "needle"),
    [
        ({"dense-wide": {"engine": "numpy_dense", "no_such_key": 1}}, "[variants.dense-wide]"),
        ({"dense-wide": {"engine": "nope"}}, "[variants.dense-wide] engine: must name a registered engine"),
        ({"dense-wide": {"init_scale": 1.0}}, "[variants.dense-wide] engine: must name a registered engine"),
        ({"numpy_dense": {"engine": "numpy_dense"}}, "is a registered engine; give the variant a name"),
        ({"../x": {"engine": "numpy_dense"}}, "a variant name must be a plain identifier"),
        ({"dense-wide": 3}, "[variants.dense-wide]: must be a table"),
    ],
)
def test_bad_variants_are_refused_naming_the_variant(variants: dict[str, Any], needle: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["variants"] = variants
    with pytest.raises(WorkloadError) as err:
        parse(raw)
    assert needle in str(err.value) and "w.toml" in str(err.value)


def test_unknown_variant_in_the_matrix_or_on_the_command_line_is_refused() -> None:
    raw = _with_variant()
    raw["matrix"]["engines"] = ["numpy_dense", "dense-narrow"]
    with pytest.raises(WorkloadError, match="unknown engine 'dense-narrow'.*variants of this workload: dense-wide"):
        parse(raw)
    w = parse(_with_variant())
    with pytest.raises(WorkloadError, match="unknown engine 'dense-narrow'"):
        w.expand(engines=["dense-narrow"])
