"""Seconds per training step of tf_dense and tf_sampled at the Amazon-670K shape, and peak RSS.

    python benchmarks/tf_step_time.py [--threads 1,2] [--engines tf_dense,tf_sampled] [--steps 5]
                                      [--warmup 2] [--xla] [--scale 1.0]

A plain script, not an asv benchmark (asv imports this module and finds nothing to run). Each
(engine, threads) pair runs in a fresh process, because TensorFlow's thread pools are fixed for
the life of a process and peak RSS is per process. Batches are random but Amazon-shaped:
670,091 labels, 135,909 features, hidden 128, batch 128, about 75 features (value 1) and about
5 labels per sample, label ids drawn from a power law (few frequent labels, a long tail).
`--scale` shrinks both the feature and the label count for a quick look.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AMAZON = {"num_features": 135_909, "num_labels": 670_091, "hidden": 128, "batch": 128, "nnz": 75, "labels": 5}


def _batches(n_batches: int, num_features: int, num_labels: int, seed: int):
    from harness.datasets.sparse import Csr
    from harness.spec.engine import Batch

    rng = np.random.default_rng(seed)
    b = AMAZON["batch"]
    out = []
    for _ in range(n_batches):
        f_rows, y_rows = [], []
        for _ in range(b):
            nnz = max(1, int(rng.poisson(AMAZON["nnz"])))
            f_rows.append(np.unique(rng.integers(0, num_features, nnz)))
            k = max(1, int(rng.poisson(AMAZON["labels"])))
            # Zipf-like label ids: id = floor(L * u^3) puts most mass on small ids.
            y_rows.append(np.unique((num_labels * rng.random(k) ** 3).astype(np.int64)))

        def pack(rows, n_cols, values):
            indptr = np.zeros(len(rows) + 1, np.int64)
            np.cumsum([len(r) for r in rows], out=indptr[1:])
            idx = np.concatenate(rows).astype(np.int32)
            return Csr(indptr, idx, np.ones(len(idx), np.float32) if values else None, n_cols)

        out.append(Batch(pack(f_rows, num_features, True), pack(y_rows, num_labels, False)))
    return out


def child(engine_name: str, threads: int, steps: int, warmup: int, xla: bool, scale: float) -> dict:
    """Runs in a fresh process: set threads, prepare, time `steps` steps after `warmup`."""
    from harness.run.loop import Loop, prepare_engine
    from harness.spec.engine import ModelSpec, OptimizerSpec, TrainMeta

    num_features = max(1000, int(AMAZON["num_features"] * scale))
    num_labels = max(1000, int(AMAZON["num_labels"] * scale))
    params = {"xla": xla}
    if engine_name == "tf_sampled" and xla:
        params["remove_accidental_hits"] = False
    batches = _batches(warmup + steps, num_features, num_labels, seed=0)
    labels = np.concatenate([b.labels.indices for b in batches])
    meta = TrainMeta(
        num_features=num_features,
        num_labels=num_labels,
        num_train=490_449,
        batch_size=AMAZON["batch"],
        model=ModelSpec(hidden=(AMAZON["hidden"],)),
        optimizer=OptimizerSpec(lr=1e-4),
        label_counts=np.bincount(labels, minlength=num_labels),  # tf_sampled's unigram sampler
    )
    prepared = prepare_engine(engine_name, params, threads, meta)
    engine, got = prepared.engine, prepared.threads_in_effect
    loop = Loop(engine, iter(batches))
    for _ in range(warmup):  # tracing / compilation happens here
        loop.step()
    times, cpu = [], []
    for _ in range(steps):
        c = time.process_time()
        loss = loop.step().loss
        times.append(loop.clock.last_step_s)
        cpu.append(time.process_time() - c)
    t = time.perf_counter()
    engine.predict_topk(batches[0].features, 5)
    predict_s = time.perf_counter() - t
    info = engine.info()
    return {
        "engine": engine_name,
        "threads": got,
        "xla": xla,
        "num_features": num_features,
        "num_labels": num_labels,
        "prepare_s": prepared.prepare_s,
        "step_s_median": float(np.median(times)),
        "step_s_min": float(np.min(times)),
        # CPU seconds (all threads) per step: less sensitive than wall time to a loaded machine.
        "cpu_s_per_step": float(np.median(cpu)),
        "steps": steps,
        "samples_per_s": AMAZON["batch"] / float(np.median(times)),
        "predict_128_rows_s": predict_s,
        "last_loss": float(loss),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": info.get("device"),
        "tensorflow": info.get("tensorflow"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--engines", default="tf_dense,tf_sampled")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or not 0 < args.scale <= 1:
        parser.error("--steps and --warmup must be >= 1, --scale in (0, 1]")
    if args.child:
        result = child(args.child[0], int(args.child[1]), args.steps, args.warmup, args.xla, args.scale)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"{'engine':<11} {'thr':>3} {'s/step':>8} {'min':>8} {'cpu s':>7} {'samples/s':>10} {'peak RSS MB':>12}"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in args.engines.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                name,
                str(threads),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--scale",
                str(args.scale),
            ] + (["--xla"] if args.xla else [])
            # Thread counts through the environment too, before TF is imported in the child.
            env_run = {**env, "OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads)}
            proc = subprocess.run(cmd, cwd=ROOT, env=env_run, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{name:<11} {threads:>3} FAILED (rc {proc.returncode}): {proc.stderr.strip()[-400:]}")
                continue
            r = json.loads(lines[-1][len("RESULT ") :])
            print(
                f"{name:<11} {r['threads']:>3} {r['step_s_median']:>8.3f} {r['step_s_min']:>8.3f} "
                f"{r['cpu_s_per_step']:>7.3f} {r['samples_per_s']:>10.0f} {r['peak_rss_mb']:>12.0f}"
            )
            print("  " + json.dumps(r))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
