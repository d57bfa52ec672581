"""Paired A/B of one evaluation's cost: the workload's evaluation subset scored in predict calls of
two sizes (a plain script, not an asv benchmark).

Every predict call scores every label, so it reads the whole output matrix (343 MB at 670K labels
x 128); the call size decides how often. Prepares one engine on the workload's data, trains a few
steps (so the weights are not the initial ones), then alternates the two arms in one process,
round after round, and prints the median [min-max] seconds of each over the rounds after a warm-up
round. For TF engines, `--a-chunk` / `--b-chunk` also set the engine's `eval_chunk` (rows per
device call inside predict_topk; 0: automatic).

    .venv/bin/python benchmarks/eval_batch_ab.py amazon670k tf_sampled --a-batch 64 --a-chunk 25
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.datasets import data
from harness.run.loop import batch_order, eval_rows, prepare_for_spec
from harness.spec import workload
from harness.spec.engine import Batch
from harness.spec.registry import engine_class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload")
    ap.add_argument("engine")
    ap.add_argument("--a-batch", type=int, default=64, help="rows per predict call, arm A (default 64)")
    ap.add_argument("--b-batch", type=int, default=0, help="rows per predict call, arm B (0: the workload's)")
    ap.add_argument("--a-chunk", type=int, default=0, help="TF eval_chunk, arm A (0: automatic)")
    ap.add_argument("--b-chunk", type=int, default=0, help="TF eval_chunk, arm B (0: automatic)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, the first one a warm-up (default 6)")
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()
    if args.rounds < 2 or min(args.a_batch, args.train_steps) < 1 or min(args.b_batch, args.a_chunk, args.b_chunk) < 0:
        ap.error("--rounds must be >= 2, --a-batch and --train-steps >= 1, the others >= 0")

    spec = workload.load(args.workload).expand(engines=[args.engine], seeds=[0])[0]
    has_chunk = "eval_chunk" in engine_class(spec.engine_class_name).check_params(spec.engine_params)
    if (args.a_chunk or args.b_chunk) and not has_chunk:
        ap.error(f"--a-chunk / --b-chunk: engine {args.engine!r} has no eval_chunk parameter")
    train, test = data.load(spec.dataset)
    engine = prepare_for_spec(spec, train.features, train.labels).engine
    for rows in batch_order(train.features.n_rows, spec.training.batch_size, 0, 0)[: args.train_steps]:
        engine.fit_step(Batch(train.features.take(rows), train.labels.take(rows)))
    rows = eval_rows(test.features.n_rows, spec.evaluation.subset, spec.evaluation.seed)
    arms = {
        "A": (args.a_batch, args.a_chunk),
        "B": (args.b_batch or spec.evaluation.batch_size, args.b_chunk),
    }
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(args.rounds):
        for arm, (size, chunk) in arms.items():
            if has_chunk:
                engine.params["eval_chunk"] = chunk
            calls = [test.features.take(rows[i : i + size]) for i in range(0, len(rows), size)]
            t0 = time.perf_counter()
            for call in calls:
                engine.predict_topk(call, spec.evaluation.k)
            if r:
                seconds[arm].append(time.perf_counter() - t0)
    for arm, (size, chunk) in arms.items():
        s = seconds[arm]
        tf_chunk = f" (eval_chunk {chunk})" if has_chunk else ""
        print(
            f"{args.workload} {args.engine} arm {arm}: {len(rows)} points in calls of {size} rows{tf_chunk}:"
            f" median {statistics.median(s):.3f} s [{min(s):.3f}-{max(s):.3f}] over {len(s)} rounds"
        )


if __name__ == "__main__":
    main()
