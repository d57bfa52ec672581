"""SLIDE training throughput at the Amazon-670K shape (a plain script, not an asv benchmark).

Prints, for each thread count, training samples/s (after warm-up steps), mean active outputs per
sample, one full hash-table rebuild's time, the peak RSS of the process, and samples/s with the
rebuilds that training does every `rebuild_n0` steps charged to the steps. Each thread count runs
in its own child process, so peak RSS and OpenMP settings are per configuration.

    .venv/bin/python benchmarks/slide_throughput.py                 # 1 and 2 threads
    .venv/bin/python benchmarks/slide_throughput.py --threads 2 --steps 30 --param min_active=3000

Data: 670,091 labels, 135,909 features, ~75 nnz and ~5.45 labels per point (harness.datasets.synth's
"amazon-670k" preset at a small scale: the shape is what matters here, not the point count),
model 135,909 -> 128 -> 670,091, batch 128.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, ModelSpec, OptimizerSpec, TrainMeta

log = logging.getLogger("slide_throughput")

N_FEATURES, N_LABELS, NNZ, LABELS_PER_POINT = 135_909, 670_091, 75, 5.45


def _random_batches(n_batches: int, batch: int, seed: int) -> list[Batch]:
    """Fallback data of the same shape when harness.datasets.synth is unavailable."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        f_ptr, f_idx, l_ptr, l_idx = [0], [], [0], []
        for _ in range(batch):
            f = np.unique(rng.integers(N_FEATURES, size=NNZ))
            lab = np.unique(rng.integers(N_LABELS, size=max(1, rng.poisson(LABELS_PER_POINT))))
            f_idx.extend(f.tolist())
            l_idx.extend(lab.tolist())
            f_ptr.append(len(f_idx))
            l_ptr.append(len(l_idx))
        vals = rng.random(len(f_idx)).astype(np.float32) + 0.1
        out.append(
            Batch(
                Csr(np.array(f_ptr, np.int64), np.array(f_idx, np.int32), vals, N_FEATURES),
                Csr(np.array(l_ptr, np.int64), np.array(l_idx, np.int32), None, N_LABELS),
            )
        )
    return out


def _batches(n_batches: int, batch: int, seed: int) -> tuple[list[Batch], str]:
    try:
        from harness.datasets import synth

        scale = (n_batches * batch + 1) / synth.preset("amazon-670k").train_points
        train, _ = synth.load_synthetic("amazon-670k", scale=scale, seed=seed)
        n = train.features.n_rows
        order = np.random.default_rng(seed).permutation(n)
        out = []
        for i in range(n_batches):
            rows = order[(np.arange(batch) + i * batch) % n]
            out.append(Batch(train.features.take(rows), train.labels.take(rows)))
        return out, f"harness.datasets.synth amazon-670k (scale {scale:.4f}, seed {seed})"
    except (ImportError, AttributeError, ValueError) as exc:  # pragma: no cover - depends on the harness
        log.warning("harness.datasets.synth unavailable (%s); using uniform random batches", exc)
        return _random_batches(n_batches, batch, seed), "uniform random batches"


def child(args: argparse.Namespace) -> None:
    from harness.run.loop import Loop, prepare_engine

    params = dict(args.param)
    batches, source = _batches(args.warmup + args.steps, args.batch, args.seed)
    # The label counts of the batches it trains on, for the default frequency-drawn padding.
    counts = np.bincount(np.concatenate([b.labels.indices for b in batches]), minlength=N_LABELS)
    meta = TrainMeta(
        N_FEATURES,
        N_LABELS,
        490_449,
        args.batch,
        ModelSpec((128,)),
        OptimizerSpec(lr=1e-4),
        seed=0,
        label_counts=counts,
    )
    prepared = prepare_engine("slide", params, args.threads[0], meta)
    engine, threads, init_s = prepared.engine, prepared.threads_in_effect, prepared.prepare_s
    loop = Loop(engine, iter(batches))
    for _ in range(args.warmup):
        loop.step()
    active, losses = [], []
    phases0 = engine._net.phase_times()
    cpu0 = time.process_time()
    train0 = loop.clock.train_s
    for _ in range(args.steps):
        st = loop.step()
        active.append(st.active_outputs)
        losses.append(st.loss)
    train_s = loop.clock.train_s - train0
    cpu_s = time.process_time() - cpu0
    phases = {
        k: 1000 * (v - phases0[k]) / args.steps
        for k, v in engine._net.phase_times().items()
        if k != "last_rebuild"  # a duration, not a running total
    }
    t0 = time.perf_counter()
    engine._net.rebuild_tables()
    rebuild_s = time.perf_counter() - t0
    # Inference on one batch: exact scores all 670K labels per sample, lsh only the candidates.
    feats = batches[0].features
    predict_ms = {}
    for mode in ("exact", "lsh"):
        t0 = time.perf_counter()
        engine._net.predict_topk(feats.indptr, feats.indices, feats.values, 5, mode)
        predict_ms[mode] = 1000 * (time.perf_counter() - t0) / feats.n_rows
    info = engine.info()
    # Real training also rebuilds the tables, first after rebuild_n0 steps (none falls in the timed
    # steps); charged at that first interval, which overstates the cost when rebuild_decay > 0.
    every = int(engine.params["rebuild_n0"])
    print(
        json.dumps(
            {
                "threads": threads,
                "samples_per_s": args.steps * args.batch / train_s,
                "samples_per_s_with_rebuilds": args.steps * args.batch / (train_s + rebuild_s * args.steps / every),
                "rebuild_every": every,
                "step_ms": 1000 * train_s / args.steps,
                # On a shared machine wall time includes waiting for a core; CPU time does not.
                "samples_per_cpu_s": args.steps * args.batch / cpu_s,
                "mean_active": float(np.mean(active)),
                "loss_first_last": [losses[0], losses[-1]],
                "rebuild_s": rebuild_s,
                "phase_ms_per_step": phases,
                "predict_ms_per_sample": predict_ms,
                "init_s": init_s,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "model_mb": info["memory_bytes"] / 2**20,
                "kernel": info["build"]["kernel_selected"],
                "params": params,
                "data": source,
            }
        )
    )


def _param(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        help="engine parameter KEY=VALUE (JSON value), repeatable; default min_active=2000",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not any(k == "min_active" for k, _ in args.param):
        args.param.append(("min_active", 2000))
    if args.child:
        child(args)
        return 0
    results = []
    for t in args.threads:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--threads",
            str(t),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--batch",
            str(args.batch),
            "--seed",
            str(args.seed),
        ]
        for k, v in args.param:
            cmd += ["--param", f"{k}={json.dumps(v)}"]
        env = dict(os.environ, OMP_NUM_THREADS=str(t))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            return out.returncode
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"SLIDE throughput, Amazon-670K shape; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"data: {results[0]['data']}; params: {results[0]['params']}; kernel {results[0]['kernel']}")
    print(
        f"{'threads':>7} {'samples/s':>10} {'per CPU-s':>9} {'step ms':>8} {'active':>7} {'rebuild s':>9} "
        f"{'peak RSS MB':>11} {'model MB':>8} {'samples/s with rebuilds':>23}"
    )
    for r in results:
        print(
            f"{r['threads']:>7} {r['samples_per_s']:>10.0f} {r['samples_per_cpu_s']:>9.0f} {r['step_ms']:>8.1f} "
            f"{r['mean_active']:>7.0f} "
            f"{r['rebuild_s']:>9.2f} {r['peak_rss_mb']:>11.0f} {r['model_mb']:>8.0f} "
            f"{r['samples_per_s_with_rebuilds']:>23.0f}"
        )
    print(f"(with rebuilds: one full rebuild every {results[0]['rebuild_every']} steps, training's first interval)")
    for r in results:
        print(
            f"  {r['threads']} thread(s), ms per step by phase: "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["phase_ms_per_step"].items())
            + "; predict_topk ms per sample: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["predict_ms_per_sample"].items())
        )
    if len(results) > 1:
        print(
            f"speed-up {results[-1]['threads']} vs {results[0]['threads']} threads: "
            f"{results[-1]['samples_per_s'] / results[0]['samples_per_s']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
