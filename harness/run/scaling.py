"""Thread scaling: throughput of each engine at 1..N threads, speedup and parallel efficiency.

Each measurement runs in a fresh process (``python -m harness.run.scaling SPEC.json OUT.json``) with
every thread pool fixed through the environment before any engine import, exactly as a training
run (:func:`harness.run.worker.thread_env`). The child loads the data, prepares the engine (untimed),
runs ``warmup`` steps (untimed: first-step costs such as graph tracing, page faults of fresh
weights, hash-table warm-up) and then times ``steps`` calls of ``fit_step`` (more, with
``min_seconds``, until that much train clock is timed at one thread; the other thread counts
then time the same steps, so a speedup never compares two phases of training) with the same batches,
in the same order, as the worker feeds them (:class:`harness.run.loop.EpochFeed`). The clock runs
only around ``fit_step``, as the worker's train clock does (:class:`harness.run.loop.Loop`).

:func:`measure_throughput` is the reusable unit (the CI check ``slidebench check-scaling`` uses it);
:func:`run_sweep` sweeps engines x thread counts, derives speedup and efficiency against one
thread, attaches time-to-target from existing training records of the same workload and thread
count (``results/runs/<workload>/<engine>/``), and writes one ``kind: "scaling"`` record per
(engine, threads) under ``results/runs/<workload>-scaling/<engine>/``.

Scaling record (built by `harness.store.records.build`; the common keys as in docs/design.md)::

    scaling {threads, threads_in_effect, samples_per_s, steps, warmup_steps, samples, train_s,
             step_s_median, speedup, efficiency, baseline_threads, baseline_samples_per_s,
             time_to_target_s, time_to_target_runs, load_avg_before, foreign_cpus, oversubscribed}

``foreign_cpus`` is the CPU time other processes (and hypervisor steal) took during the timed steps,
in CPUs: a measurement with a large value shared its cores and says little about scaling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import REPO_ROOT

log = logging.getLogger("slidebench.scaling")

DEFAULT_STEPS = 50
DEFAULT_WARMUP = 5
MAX_STEPS_FOR_MIN_SECONDS = 2000  # a bound on `min_seconds`' extra steps for engines of ~1 ms/step
MEASURE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Throughput:
    """One measurement: `steps` timed fit_step calls at `threads` threads, after `warmup_steps`."""

    threads: int
    threads_in_effect: int | None
    steps: int
    warmup_steps: int
    samples: int
    train_s: float
    samples_per_s: float
    step_s_median: float
    load_avg_before: tuple[float, float, float]
    engine_info: dict[str, Any]
    wall_s: float
    # Median over steps of (samples / seconds) of one step: a step slowed by a neighbour, or a
    # table rebuild, moves it far less than it moves samples / total seconds.
    samples_per_s_median: float = math.nan
    # CPUs' worth of time that other processes (and the hypervisor, as steal) took on this machine
    # while the steps ran; None where /proc/stat cannot be read.
    foreign_cpus: float | None = None


def cpu_busy_s() -> float | None:
    """Seconds of CPU time every process of the machine has used since boot, steal included.

    From the first line of /proc/stat (user nice system idle iowait irq softirq steal ...); None
    where it cannot be read (not Linux).
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:9]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process has used (all its threads)."""
    t = os.times()
    return t.user + t.system


def core_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> list[int]:
    """Powers of two up to the core count, plus the core count itself: 1, 2, 4, ..., cores."""
    cores = cores or core_count()
    out = [1 << i for i in range(cores.bit_length()) if (1 << i) <= cores]
    if cores not in out:
        out.append(cores)
    return out


def check_threads(threads: Sequence[int], cores: int, allow_oversubscribe: bool) -> list[int]:
    """Validated, de-duplicated, sorted thread counts; more than `cores` refused unless allowed."""
    if not threads:
        raise ValueError("threads: give at least one thread count")
    bad = [t for t in threads if not isinstance(t, int) or isinstance(t, bool) or t < 1]
    if bad:
        raise ValueError(f"threads: every count must be an integer >= 1, got {bad}")
    over = sorted({t for t in threads if t > cores})
    if over:
        msg = f"threads {over} exceed the {cores} cores available: oversubscribed measurements say nothing about scaling"
        if not allow_oversubscribe:
            raise ValueError(msg + " (pass --allow-oversubscribe to measure anyway)")
        log.warning("%s; measuring anyway (--allow-oversubscribe)", msg)
    return sorted(set(threads))


# --------------------------------------------------------------------------------------------
# One measurement in a fresh process


def measure_throughput(
    spec: Any,
    threads: int,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    *,
    min_seconds: float = 0.0,
    data_dir: str | Path | None = None,
    timeout_s: float = MEASURE_TIMEOUT_S,
    python: str = sys.executable,
) -> Throughput:
    """Training throughput of `spec`'s engine at `threads` threads, in a fresh process.

    `spec` is a :class:`harness.spec.workload.RunSpec` (its own thread count is replaced by `threads`).
    Times `steps` fit_step calls after `warmup` untimed ones, and more until `min_seconds` of
    train clock are timed (at most MAX_STEPS_FOR_MIN_SECONDS); samples/s = timed samples / timed
    seconds. Raises RuntimeError with the child's last error line if the measurement fails, and
    ValueError for steps < 1, warmup < 0 or threads < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    from harness.run.worker import thread_env

    spec = replace(spec, threads=threads)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slidebench-scaling-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        doc = {
            "spec": spec.to_dict(),
            "steps": steps,
            "warmup": warmup,
            "min_seconds": min_seconds,
            "data_dir": str(data_dir) if data_dir else None,
        }
        spec_file.write_text(json.dumps(doc), encoding="utf-8")
        env = {**os.environ, **thread_env(threads)}
        # Make the repository importable from the child even when slidebench is not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        t0 = time.perf_counter()
        try:
            res = subprocess.run(
                [python, "-m", "harness.run.scaling", str(spec_file), str(out_file)],
                env=env,
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{spec.engine} at {threads} threads: no result within {timeout_s:g} s"
            ) from None
        wall = time.perf_counter() - t0
        if res.returncode != 0 or not out_file.exists():
            lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
            raise RuntimeError(
                f"{spec.engine} at {threads} threads: measurement failed: {lines[-1] if lines else res.returncode}"
            )
        out = json.loads(out_file.read_text(encoding="utf-8"))
    return Throughput(
        threads=threads,
        threads_in_effect=out["threads_in_effect"],
        steps=out["steps"],
        warmup_steps=warmup,
        samples=out["samples"],
        train_s=out["train_s"],
        samples_per_s=out["samples"] / out["train_s"] if out["train_s"] > 0 else math.inf,
        step_s_median=statistics.median(out["step_s"]),
        load_avg_before=tuple(load),  # type: ignore[arg-type]
        engine_info=out["engine_info"],
        wall_s=wall,
        samples_per_s_median=statistics.median(
            n / t if t > 0 else math.inf for n, t in zip(out["step_samples"], out["step_s"], strict=True)
        ),
        foreign_cpus=out["foreign_cpus"],
    )


def _child(spec_path: Path, out_path: Path) -> int:
    """The measuring process: see the module docstring. Thread variables are already set."""
    from harness.datasets import data
    from harness.run.loop import EpochFeed, Loop, prepare_for_spec
    from harness.spec.workload import RunSpec

    doc = json.loads(spec_path.read_text(encoding="utf-8"))
    spec = RunSpec.from_dict(doc["spec"])
    steps, warmup, min_seconds = int(doc["steps"]), int(doc["warmup"]), float(doc.get("min_seconds", 0.0))
    train, _test = data.load(spec.dataset, doc.get("data_dir"))
    prepared = prepare_for_spec(spec, train.features, train.labels)
    engine, in_effect = prepared.engine, prepared.threads_in_effect
    loop = Loop(engine, EpochFeed(train.features, train.labels, spec.training.batch_size, spec.seed))
    for _ in range(warmup):
        loop.step()
    step_s: list[float] = []
    step_samples: list[int] = []
    # Wall, machine busy and own CPU at the first timed step.
    region = (time.perf_counter(), cpu_busy_s(), own_cpu_s())
    while len(step_s) < steps or (sum(step_s) < min_seconds and len(step_s) < MAX_STEPS_FOR_MIN_SECONDS):
        samples = loop.clock.samples
        loop.step()
        step_s.append(loop.clock.last_step_s)
        step_samples.append(loop.clock.samples - samples)
    busy_end, wall = cpu_busy_s(), time.perf_counter() - region[0]
    foreign = None
    if region[1] is not None and busy_end is not None and wall > 0:
        # What the machine's CPUs did in the timed region, less what this process did: others' work.
        foreign = max(0.0, ((busy_end - region[1]) - (own_cpu_s() - region[2])) / wall)
    out = {
        "threads_in_effect": in_effect,
        "steps": len(step_s),
        "samples": sum(step_samples),
        "train_s": sum(step_s),
        "step_s": step_s,
        "step_samples": step_samples,
        "foreign_cpus": foreign,
        "engine_info": dict(engine.info()),
    }
    out_path.write_text(json.dumps(out, default=str), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# The sweep


def scaling_run_id(spec: Any, steps: int, warmup: int, min_seconds: float = 0.0) -> str:
    """Hash of the spec at its thread count, the measurement protocol and the engine build."""
    from harness.spec.workload import build_id

    protocol = f"steps={steps} warmup={warmup}" + (f" min_seconds={min_seconds:g}" if min_seconds else "")
    key = f"scaling\n{spec.canonical()}\n{protocol}\n{build_id(spec.engine_class_name)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def time_to_target(
    results_dir: Path, workload: str, engine: str, threads: int
) -> tuple[float | None, list[str]]:
    """Median time to target of existing training records at `threads`, and their run ids."""
    from harness.store import records
    from harness.store.results import run_dir

    times, ids = [], []
    folder = run_dir(results_dir, workload, engine)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.endswith(".draft.json"):
            continue
        try:
            rec = records.read(path)
        except ValueError as exc:
            log.warning("skipping %s", exc)
            continue
        if rec["kind"] != records.TRAIN or rec.get("spec", {}).get("threads") != threads:
            continue
        ttt = rec["timing"].get("time_to_target_s")
        if rec["status"].get("state") == records.TARGET_REACHED and ttt is not None:
            times.append(float(ttt))
            ids.append(str(rec.get("run_id")))
    return (statistics.median(times) if times else None), ids


def _record(
    spec: Any, run_id: str, steps: int, warmup: int, m: Throughput | None, error: str | None, cores: int
) -> dict[str, Any]:
    from harness.run import env
    from harness.store import records

    info = m.engine_info if m else {}
    scaling = {
        "threads": spec.threads,
        "threads_in_effect": m.threads_in_effect if m else None,
        "samples_per_s": m.samples_per_s if m else None,
        "steps": steps,
        "warmup_steps": warmup,
        "samples": m.samples if m else None,
        "train_s": m.train_s if m else None,
        "step_s_median": m.step_s_median if m else None,
        "load_avg_before": list(m.load_avg_before) if m else list(os.getloadavg()),
        "foreign_cpus": m.foreign_cpus if m else None,
        "oversubscribed": spec.threads > cores,
        "cores": cores,
    }
    return dict(
        records.build(
            records.SCALING,
            run_id,
            spec.to_dict(),
            records.ERROR if error else records.BUDGET_SPENT,
            error or f"{steps} steps timed after {warmup} warm-up steps",
            timing={
                "train_s": m.train_s if m else None,
                "wall_s": m.wall_s if m else None,
                "steps": m.steps if m else 0,
                "samples": m.samples if m else 0,
            },
            throughput={"samples_per_s": m.samples_per_s if m else None},
            scaling=scaling,
            engine_info=info,
            environment=env.capture(info),
        )
    )


def _derive(records: list[dict[str, Any]], results_dir: Path, workload: str, engine: str) -> None:
    """Speedup/efficiency against the one-thread record, and time to target, in place."""
    from harness.store.flags import scaling_flags

    base = next((r for r in records if r["scaling"]["threads"] == 1 and r["scaling"]["samples_per_s"]), None)
    base_sps = base["scaling"]["samples_per_s"] if base else None
    for rec in records:
        s = rec["scaling"]
        sps = s["samples_per_s"]
        s["baseline_threads"] = 1 if base else None
        s["baseline_samples_per_s"] = base_sps
        s["speedup"] = sps / base_sps if sps and base_sps else None
        s["efficiency"] = s["speedup"] / s["threads"] if s["speedup"] is not None else None
        rec["flags"] = scaling_flags(s["efficiency"])
        s["time_to_target_s"], s["time_to_target_runs"] = time_to_target(
            results_dir, workload, engine, s["threads"]
        )


def run_sweep(
    workload: Any,
    engines: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    data_dir: str | Path | None = None,
    results_dir: str | Path = Path("results"),
    *,
    min_seconds: float = 0.0,
    allow_oversubscribe: bool = False,
    force: bool = False,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Measure every engine at every thread count; write and return the scaling records.

    `workload`: a Workload, or a name/path for :func:`harness.spec.workload.load`. `threads` defaults
    to :func:`default_threads`; one thread is always measured too (the speedup baseline). Counts
    above the core count are refused unless `allow_oversubscribe`. A record that exists (same spec,
    protocol and engine build) is reused unless `force`. A failed measurement is recorded with
    status ``error`` and the sweep goes on. The machine's load average is recorded before each
    measurement.
    """
    from harness.spec import workload as workload_mod
    from harness.store import records
    from harness.store.results import record_path

    wl = workload if isinstance(workload, workload_mod.Workload) else workload_mod.load(workload)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not (min_seconds >= 0 and math.isfinite(min_seconds)):
        raise ValueError(f"min_seconds must be a finite number >= 0, got {min_seconds}")
    cores = core_count()
    counts = check_threads(
        list(threads) if threads is not None else default_threads(cores), cores, allow_oversubscribe
    )
    if 1 not in counts:
        counts = [1, *counts]
    seed = wl.seeds[0] if seed is None else seed
    # expand() validates the engine names and their parameters before anything runs.
    base_specs = wl.expand(engines=engines, threads=[1], seeds=[seed])
    results_dir = Path(results_dir)
    sweep_name = f"{wl.name}-scaling"
    out: list[dict[str, Any]] = []
    for base in base_specs:
        measured, paths = [], []
        # The first count (one thread) may take more steps to fill `min_seconds`; the others then
        # time exactly as many, the same batches at the same point of training.
        engine_steps, floor = steps, min_seconds
        for t in sorted(counts):
            spec = replace(base, threads=t)
            run_id = scaling_run_id(spec, steps, warmup, min_seconds)
            path = record_path(results_dir, sweep_name, spec.engine, run_id)
            if path.exists() and not force:
                log.info("%s %d threads: record exists (%s), reused", spec.engine, t, path)
                rec = dict(records.read(path))
                measured.append(rec)
                paths.append(None)
                if floor and rec["scaling"].get("steps"):
                    engine_steps, floor = int(rec["scaling"]["steps"]), 0.0
                continue
            log.info(
                "%s %d threads: %d steps after %d warm-up (load %.2f)",
                spec.engine,
                t,
                engine_steps,
                warmup,
                os.getloadavg()[0],
            )
            try:
                m = measure_throughput(spec, t, engine_steps, warmup, min_seconds=floor, data_dir=data_dir)
                if floor:
                    engine_steps, floor = m.steps, 0.0
                rec = _record(spec, run_id, m.steps, warmup, m, None, cores)
                log.info("%s %d threads: %.1f samples/s", spec.engine, t, m.samples_per_s)
            except RuntimeError as exc:
                log.error("%s", exc)
                rec = _record(spec, run_id, steps, warmup, None, str(exc), cores)
            measured.append(rec)
            paths.append(path)
        _derive(measured, results_dir, wl.name, base.engine)
        for rec, path in zip(measured, paths, strict=True):
            if path is not None:
                records.write(path, rec)
        out.extend(measured)
    return out


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of a sweep (engine, threads, samples/s, speedup, efficiency, load)."""
    rows = [f"{'engine':<14}{'threads':>8}{'samples/s':>12}{'speedup':>9}{'eff.':>7}{'load':>7}  status"]
    for r in records:
        s = r["scaling"]

        def fmt(v: Any, spec: str) -> str:
            return format(v, spec) if isinstance(v, (int, float)) else "-"

        rows.append(
            f"{r['spec']['engine']:<14}{s['threads']:>8}{fmt(s['samples_per_s'], '12.1f')}{fmt(s.get('speedup'), '9.2f')}"
            f"{fmt(s.get('efficiency'), '7.2f')}{fmt(s['load_avg_before'][0], '7.2f')}  {r['status']['state']}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write(
            "usage: python -m harness.run.scaling SPEC.json OUT.json  (one measurement; see run_sweep)\n"
        )
        return 2
    logging.basicConfig(level=logging.WARNING)
    return _child(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
