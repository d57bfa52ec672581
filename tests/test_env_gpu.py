"""The GPU and TensorFlow-build facts every record's environment carries (harness.run.env)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from harness.run import env

QUERY_OUTPUT = """0, NVIDIA H200, 143771, 570.133.20, 00000000:19:00.0
1, NVIDIA H200, 143771, 570.133.20, 00000000:3B:00.0
"""


def test_parse_gpu_query_reads_every_gpu_and_skips_other_lines():
    text = "WARNING: infoROM is corrupted at gpu 0000:19:00.0\n" + QUERY_OUTPUT
    gpus = env.parse_gpu_query(text)
    assert gpus == [
        {"index": 0, "name": "NVIDIA H200", "memory_mib": 143771, "driver": "570.133.20",
         "pci_bus_id": "00000000:19:00.0"},
        {"index": 1, "name": "NVIDIA H200", "memory_mib": 143771, "driver": "570.133.20",
         "pci_bus_id": "00000000:3B:00.0"},
    ]  # fmt: skip
    assert env.parse_gpu_query("") == []
    assert env.parse_gpu_query("0, Tesla V100-SXM2-16GB, [N/A], 535.1, 0:0:0")[0]["memory_mib"] is None


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """A fake nvidia-smi that answers the query the harness makes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "args = sys.argv[1:]\n"
        "assert args[0].startswith('--query-gpu=index,name,memory.total,driver_version'), args\n"
        "assert args[1] == '--format=csv,noheader,nounits', args\n"
        f"sys.stdout.write({QUERY_OUTPUT!r})\n"
    )
    script.chmod(0o755)
    # First on PATH (shadowing any real one); the rest stays, since capture() also runs git.
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    env.gpu_info.cache_clear()
    yield
    env.gpu_info.cache_clear()


def test_gpu_info_asks_nvidia_smi(fake_nvidia_smi):
    gpus = env.gpu_info()
    assert [g["name"] for g in gpus] == ["NVIDIA H200", "NVIDIA H200"]
    assert env.capture(None)["gpus"] == gpus


def test_gpu_info_without_nvidia_smi_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("nvidia-smi") is None
    env.gpu_info.cache_clear()
    try:
        assert env.gpu_info() == []
    finally:
        env.gpu_info.cache_clear()


@pytest.mark.parametrize(
    "installed,variant",
    [
        ({"tensorflow-cpu": "2.21.0"}, "cpu"),
        ({"tensorflow": "2.21.0", "nvidia-cudnn-cu12": "9.28.0.42"}, "cuda"),
        ({"tensorflow": "2.21.0"}, "tensorflow"),
        ({}, None),
    ],
)
def test_tf_variant_follows_the_installed_distributions(monkeypatch, installed, variant):
    monkeypatch.setattr(env, "_package_version", lambda *names: next(
        (installed[n] for n in names if n in installed), None))  # fmt: skip
    assert env.tf_variant() == variant
    assert env.capture(None)["tf_variant"] == variant
