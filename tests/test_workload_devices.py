"""[matrix] devices: the TF engines once per device, in the spec and the run id (harness/spec/workload.py)."""

from __future__ import annotations

import copy
import json
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
    "evaluation": {"every_steps": 5, "subset": 100, "target_p1": 0.5},
    "matrix": {"engines": ["numpy_dense", "tf_dense", "tf_sampled"], "threads": [2], "seeds": [0, 1]},
    "engines": {"tf_sampled": {"num_sampled": 64}},
}


def parse(devices: Any = None, **engines: dict[str, Any]) -> workload.Workload:
    raw = copy.deepcopy(BASE)
    if devices is not None:
        raw["matrix"]["devices"] = devices
    raw["engines"].update(engines)
    return workload.parse(raw, Path("w.toml"))


def test_devices_expand_the_engines_that_have_a_device():
    specs = parse(["gpu", "cpu"]).expand()
    runs = sorted((s.engine, s.engine_params.get("device"), s.seed) for s in specs)
    assert runs == sorted(
        [("numpy_dense", None, seed) for seed in (0, 1)]  # no device parameter: runs once
        + [(e, d, seed) for e in ("tf_dense", "tf_sampled") for d in ("gpu", "cpu") for seed in (0, 1)]
    )
    # The engine's own parameters stay, next to the device.
    assert {s.engine_params["num_sampled"] for s in specs if s.engine == "tf_sampled"} == {64}
    # The device is in the spec (so in the record) and makes the run id.
    ids = {s.run_id for s in specs}
    assert len(ids) == len(specs)
    gpu = next(s for s in specs if s.engine == "tf_dense" and s.engine_params["device"] == "gpu")
    assert json.loads(gpu.canonical())["engine_params"]["device"] == "gpu"
    assert workload.RunSpec.from_dict(json.loads(gpu.canonical())).run_id == gpu.run_id


def test_without_devices_nothing_changes():
    specs = parse().expand()
    assert len(specs) == 3 * 2
    assert {s.engine_params["device"] for s in specs if s.engine != "numpy_dense"} == {"auto"}
    # Each engine's parameters exactly as before the axis existed, so old workloads keep their run ids.
    for s in specs:
        given = BASE["engines"].get(s.engine, {})
        assert s.engine_params == registry.engine_class(s.engine).check_params(dict(given))


def test_engine_overrides_follow_the_device_axis():
    specs = parse(["gpu"]).expand(engines=["tf_dense"], seeds=[3])
    assert [(s.engine, s.engine_params["device"], s.seed) for s in specs] == [("tf_dense", "gpu", 3)]


@pytest.mark.parametrize(
    "devices,match",
    [(["tpu"], "must be 'cpu' or 'gpu'"), (["gpu", "gpu"], "duplicates"), ([], "non-empty"), ("gpu", "list")],
)
def test_bad_devices_are_refused(devices, match):
    with pytest.raises(WorkloadError, match=rf"\[matrix\] devices.*{match}"):
        parse(devices)


def test_device_given_twice_is_refused():
    with pytest.raises(WorkloadError, match=r"\[engines.tf_dense\] device: conflicts with \[matrix\] devices"):
        parse(["gpu"], tf_dense={"device": "cpu"})
    # Alone, an engine's own device setting is fine.
    assert {s.engine_params["device"] for s in parse(tf_dense={"device": "gpu"}).expand(engines=["tf_dense"])} == {
        "gpu"
    }
