"""The environment a run happened in, captured cheaply and without importing heavy packages.

Enough to judge a number without rerunning it: CPU model and flags, core counts, kernel, package
versions (read from installed metadata, so TensorFlow is never imported just to learn its
version) and which TensorFlow build (cpu or cuda), the GPUs nvidia-smi lists (model, memory,
driver), the native build as the engine reports it, thread settings, git commit and dirty flag,
UTC time and load average.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import REPO_ROOT
from harness.store.results import utc_now

# Environment variables that decide how many threads anything uses.
THREAD_ENV_PREFIXES = (
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "TF_NUM_",
    "NUMEXPR_",
    "VECLIB_",
    "SLIDE_",
)


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def cpu_info() -> dict[str, Any]:
    """CPU model and flags from /proc/cpuinfo (Linux); platform fallbacks elsewhere."""
    model, flags = platform.processor() or None, []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in (None, "", platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    logical = os.cpu_count()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is a dependency, but a missing core count must not fail a run
        physical = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "cores": {"logical": logical, "physical": physical, "usable": usable},
    }


@functools.cache
def git_state(repo: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the source tree; (None, None) outside a git checkout. Read-only git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


# One CSV line per GPU; units stripped (memory in MiB). The CUDA and cuDNN versions that matter are
# the ones TensorFlow was built with: the TF engines report them (engine_info.tf_build).
_GPU_QUERY = ("index", "name", "memory.total", "driver_version", "pci.bus_id")


def parse_gpu_query(text: str) -> list[dict[str, Any]]:
    """Rows of `nvidia-smi --query-gpu=<_GPU_QUERY> --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(_GPU_QUERY):
            continue  # a warning or an error line, not a GPU
        index, name, memory, driver, bus = fields
        try:
            memory_mib: int | None = int(float(memory))
        except ValueError:
            memory_mib = None
        gpus.append(
            {
                "index": int(index) if index.isdigit() else index,
                "name": name,
                "memory_mib": memory_mib,
                "driver": driver,
                "pci_bus_id": bus,
            }
        )
    return gpus


@functools.cache
def gpu_info() -> list[dict[str, Any]]:
    """The machine's NVIDIA GPUs as nvidia-smi reports them; [] without nvidia-smi or a GPU."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(_GPU_QUERY)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_query(out.stdout) if out.returncode == 0 else []


def tf_variant() -> str | None:
    """Which TensorFlow build is installed: "cpu" (tensorflow-cpu), "cuda" (tensorflow with the
    NVIDIA wheels of its and-cuda extra), "tensorflow" (neither: e.g. CUDA from the system), None."""
    if _package_version("tensorflow-cpu"):
        return "cpu"
    if _package_version("tensorflow"):
        return "cuda" if _package_version("nvidia-cudnn-cu12", "nvidia-cudnn-cu13") else "tensorflow"
    return None


def thread_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}


def native_build(engine_info: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The build facts an engine reports (compiler, flags, kernel/ISA); None for pure-Python engines."""
    if not engine_info:
        return None
    if isinstance(engine_info.get("build"), Mapping):  # the native engine reports its build as one table
        return dict(engine_info["build"])
    wanted = ("build", "compiler", "flags", "kernel", "isa", "simd", "openmp")
    found = {k: v for k, v in engine_info.items() if any(w in k.lower() for w in wanted)}
    return found or None


def capture(engine_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record's `environment` section."""
    commit, dirty = git_state()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    env: dict[str, Any] = dict(cpu_info())
    env.update(
        {
            "kernel": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "numpy": _package_version("numpy"),
            "scipy": _package_version("scipy"),
            "tensorflow": _package_version("tensorflow-cpu", "tensorflow", "tf-nightly"),
            "tf_variant": tf_variant(),
            "gpus": gpu_info(),
            "slidebench": _package_version("slidebench"),
            "native_build": native_build(engine_info),
            "omp": thread_settings(),
            "git_commit": commit,
            "git_dirty": dirty,
            "utc_time": utc_now(),
            "load_avg": load,
            "hostname": platform.node(),
        }
    )
    return env
