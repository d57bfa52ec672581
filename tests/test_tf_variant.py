"""The set-up's choice of TensorFlow build (tools/tf_variant.sh, used by the Makefile), GPU faked.

Each test runs the real script (or `make -n`, which evaluates the Makefile's choice and prints the
recipes without running them) with PATH pointing at a temporary folder holding a fake
`nvidia-smi`; nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "tf_variant.sh"
SH = shutil.which("sh") or "/bin/sh"

ONE_GPU = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0d1e2f30-4a5b-6c7d-8e9f-a0b1c2d3e4f5)"
# What nvidia-smi prints (exit status 9) on a machine whose driver is installed but cannot talk to a GPU.
NO_DEVICE = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."


def _bin_dir(tmp_path: Path, nvidia_smi: tuple[str, int] | None) -> Path:
    """A PATH folder with `grep` (which the script needs) and, if given, a fake nvidia-smi.

    Only this folder goes on PATH, so a real nvidia-smi of the machine running the tests can
    never answer in place of the fake (or of its absence).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    grep = shutil.which("grep")
    assert grep, "grep is needed to run tools/tf_variant.sh"
    (bin_dir / "grep").symlink_to(grep)
    if nvidia_smi is not None:
        text, status = nvidia_smi
        fake = bin_dir / "nvidia-smi"
        # The fake checks it was asked for the list (-L), as the script asks.
        fake.write_text(
            f'#!{SH}\n[ "$1" = "-L" ] || {{ echo "unexpected arguments: $*" >&2; exit 64; }}\n'
            f"printf '%s\\n' '{text}'\nexit {status}\n"
        )
        fake.chmod(0o755)
    return bin_dir


def _choose(tmp_path: Path, nvidia_smi: tuple[str, int] | None, variant: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "TF_VARIANT"}
    env["PATH"] = str(_bin_dir(tmp_path, nvidia_smi))
    if variant is not None:
        env["TF_VARIANT"] = variant
    return subprocess.run([SH, str(SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=30)


def test_a_listed_gpu_chooses_cuda(tmp_path):
    out = _choose(tmp_path, (ONE_GPU, 0))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cuda"
    assert "NVIDIA H100" in out.stderr  # the reason names the GPU it saw


def test_no_nvidia_smi_chooses_cpu(tmp_path):
    out = _choose(tmp_path, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cpu"
    assert "no NVIDIA GPU" in out.stderr


def test_a_failing_nvidia_smi_chooses_cpu(tmp_path):
    out = _choose(tmp_path, (NO_DEVICE, 9))
    assert out.stdout.strip() == "cpu", out.stderr


def test_nvidia_smi_listing_nothing_chooses_cpu(tmp_path):
    # Exit status 0 but no "GPU n:" line (e.g. "No devices were found"): still no GPU.
    out = _choose(tmp_path, ("No devices were found", 0))
    assert out.stdout.strip() == "cpu", out.stderr


@pytest.mark.parametrize(
    "smi,variant", [((ONE_GPU, 0), "cpu"), (None, "cuda"), ((ONE_GPU, 0), "cuda"), (None, "cpu")]
)
def test_tf_variant_overrides_detection(tmp_path, smi, variant):
    out = _choose(tmp_path, smi, variant)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == variant
    assert f"TF_VARIANT={variant}" in out.stderr


def test_bad_tf_variant_is_refused(tmp_path):
    out = _choose(tmp_path, (ONE_GPU, 0), "gpu")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "TF_VARIANT must be 'cpu' or 'cuda'" in out.stderr


def _make_dry_run(tmp_path: Path, nvidia_smi, variant: str | None = None, expect_lock: str = ""):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    fake = _bin_dir(tmp_path, nvidia_smi)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_VARIANT", "MAKEFLAGS", "MFLAGS")}
    # The fake folder first: make, sh and the rest still come from the real PATH, while a real
    # nvidia-smi further down is shadowed by the fake.
    env["PATH"] = os.pathsep.join([str(fake), env.get("PATH", "")])
    args = [make, "-n", "-C", str(ROOT), "install"]
    if variant is not None:
        args.append(f"TF_VARIANT={variant}")
    if expect_lock:
        # This checkout's venv may already carry the chosen variant's stamp; -W makes the lock
        # look newer, so the dry run prints the install recipe whichever stamps exist.
        args += ["-W", expect_lock]
    return subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=60)


def test_makefile_installs_the_cuda_lock_when_a_gpu_is_listed(tmp_path):
    out = _make_dry_run(tmp_path, (ONE_GPU, 0), expect_lock="requirements-cuda.lock")
    assert out.returncode == 0, out.stderr
    assert "TensorFlow variant: cuda" in out.stderr
    # The CPU build goes out before the CUDA build comes in (they share the tensorflow package).
    uninstall = out.stdout.index("pip uninstall --quiet --yes tensorflow-cpu")
    install = out.stdout.index("pip install --quiet -r requirements-cuda.lock")
    assert uninstall < install
    assert "touch .venv/.stamp-deps-cuda" in out.stdout
    assert "-r requirements.lock" not in out.stdout


def test_makefile_tf_variant_cpu_keeps_the_cpu_lock(tmp_path):
    out = _make_dry_run(tmp_path, (ONE_GPU, 0), "cpu", expect_lock="requirements.lock")
    assert out.returncode == 0, out.stderr
    assert "TensorFlow variant: cpu (TF_VARIANT=cpu)" in out.stderr
    uninstall = out.stdout.index("pip uninstall --quiet --yes tensorflow\n")
    install = out.stdout.index("pip install --quiet -r requirements.lock")
    assert uninstall < install
    assert "touch .venv/.stamp-deps\n" in out.stdout
    assert "requirements-cuda.lock" not in out.stdout


def test_makefile_refuses_a_bad_tf_variant(tmp_path):
    out = _make_dry_run(tmp_path, None, "rocm")
    assert out.returncode != 0
    assert "TF_VARIANT must be cpu or cuda" in out.stderr


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: unpinned line {line!r}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_cuda_lock_is_the_cpu_lock_with_the_cuda_build_of_the_same_tensorflow():
    cpu = _pins(ROOT / "requirements.lock")
    cuda = _pins(ROOT / "requirements-cuda.lock")
    assert cuda.pop("tensorflow[and-cuda]") == cpu.pop("tensorflow-cpu")
    nvidia = {name for name in cuda if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= nvidia
    assert {k: v for k, v in cuda.items() if k not in nvidia} == cpu
