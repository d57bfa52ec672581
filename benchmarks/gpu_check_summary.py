"""Summary of benchmarks/gpu_check.sh's records, and its verdict.

    python benchmarks/gpu_check_summary.py RESULTS_DIR [RESULTS_DIR ...]

Prints one line per record (workload, engine, device it ran on, batch, state, steps, samples/s,
time to target, final P@1, TF's peak GPU memory) and exits 1 when the GPU path did not do what
the check is for: no tf_dense record on the GPU at batch 128 or at batch 1,024, a run that ended
in an error, or a run that asked for the GPU and reports another device.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.reporting.plots.records import Run, load_runs

BATCHES = (128, 1024)  # the two batch sizes the check measures tf_dense at on the GPU


def _batch(run: Run) -> int | None:
    training = run.spec.get("training")
    return training.get("batch_size") if isinstance(training, dict) else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def line(run: Run) -> str:
    gpu = run.engine_info.get("gpu") if isinstance(run.engine_info.get("gpu"), dict) else {}
    peak = gpu.get("memory_peak_mb")
    return (
        f"{run.workload:22} {run.engine:10} {run.device:4} {_batch(run) or '?':>5} {run.state:14} "
        f"{run.raw.get('timing', {}).get('steps', '?'):>6} {_fmt(run.samples_per_s, ',.0f'):>10} "
        f"{_fmt(run.time_to_target_s, '.2f'):>8} {_fmt(run.final.get('p1'), '.3f'):>6} "
        f"{_fmt(peak, ',.0f'):>8}"
    )


def problems(runs: list[Run]) -> list[str]:
    """What is wrong with a GPU check's records; empty when it did its job."""
    found = []
    for batch in BATCHES:
        if not any(r.engine == "tf_dense" and r.device == "gpu" and _batch(r) == batch for r in runs):
            found.append(f"no tf_dense record on the GPU at batch {batch}")
    for r in runs:
        if r.state == "error":
            found.append(f"{r.path}: error: {r.message}")
        params = r.spec.get("engine_params")
        asked = params.get("device") if isinstance(params, dict) else None
        if asked in ("cpu", "gpu") and asked != r.device:
            found.append(f"{r.path}: asked for device {asked}, ran on {r.device}")
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs: list[Run] = []
    for folder in argv:
        try:
            runs += [r for r in load_runs(Path(folder)) if r.kind == "train"]
        except (FileNotFoundError, ValueError) as exc:
            print(f"{folder}: {exc}", file=sys.stderr)
    print(
        f"{'workload':22} {'engine':10} {'dev':4} {'batch':>5} {'state':14} {'steps':>6} "
        f"{'samples/s':>10} {'ttt (s)':>8} {'P@1':>6} {'GPU MB':>8}"
    )
    for run in sorted(runs, key=lambda r: (r.workload, r.engine, r.device, str(r.path))):
        print(line(run))
    found = problems(runs)
    for p in found:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print("GPU check: " + ("FAILED" if found else "ok"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
