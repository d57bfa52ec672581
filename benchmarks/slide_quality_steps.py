"""P@1 and the sampler's diagnostics of one slide configuration against training steps (a plain
script, not an asv benchmark).

Trains on a workload's data in the worker's batch order (same seed, same batches as a campaign
run) and, at the given steps, prints and appends to a JSON-lines file: exact P@1 on the workload's
evaluation subset and `SlideEngine.diagnostics` on its first points (the active set's composition
since the previous point, the LSH candidates' recall of the exact top-10/100 wrong labels and their
softmax-mass enrichment), the train clock (training only, no evaluation) and the peak RSS so far.
Steps, not seconds, so the quality figures do not depend on the machine's load; samples/s between
two points is batch x steps / train_s difference, which does.

    .venv/bin/python benchmarks/slide_quality_steps.py amazon670k slide-mips --seeds 0 1 2 \\
        --param logit_correction=log_q --out /tmp/q.jsonl

Parameters are those a campaign run of the listed engine or variant gets (the workload's, with
the tuned values of workloads/tuning/), then each --param KEY=VALUE (VALUE read as JSON when it
parses, else as a string). The learning rate is the tuned one too.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.datasets import data
from harness.run.loop import EpochFeed, Loop, eval_rows, prepare_engine
from harness.run.metrics import ranking_metrics
from harness.run.worker import DIAGNOSTIC_POINTS
from harness.spec import workload


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(
    wl: Any, name: str, overrides: dict[str, Any], seed: int, steps: list[int], threads: int, out: Any
) -> None:
    spec = wl.expand(engines=[name], threads=[threads], seeds=[seed])[0]
    # The campaign's parameters (the workload's with its tuned values, e.g. init_std), then the
    # overrides: without the tuned values a run would not be the one the campaign makes.
    params = {**spec.engine_params, **overrides}
    train, test = data.load(spec.dataset, None)
    ev = spec.evaluation
    rows = eval_rows(test.features.n_rows, ev.subset, ev.seed)
    eval_labels = test.labels.take(rows)
    chunks = [test.features.take(rows[i : i + ev.batch_size]) for i in range(0, len(rows), ev.batch_size)]
    diag_rows = rows[:DIAGNOSTIC_POINTS]
    diag_x, diag_y = test.features.take(diag_rows), test.labels.take(diag_rows)
    counts = np.bincount(train.labels.indices, minlength=train.labels.n_cols)
    meta = spec.train_meta(train.features.n_cols, train.labels.n_cols, train.features.n_rows, counts)
    engine = prepare_engine("slide", params, threads, meta).engine
    loop = Loop(engine, EpochFeed(train.features, train.labels, spec.training.batch_size, seed))
    while loop.clock.step < steps[-1]:
        loop.step()
        step = loop.clock.step
        if step not in steps:
            continue
        top = np.concatenate([engine.predict_topk(c, ev.k) for c in chunks])
        p1 = ranking_metrics(top, eval_labels, (1,))["p1"]
        record = {
            "engine": name,
            "params": params,
            "seed": seed,
            "step": step,
            "p1": p1,
            "train_s": loop.clock.train_s,
            # The process's peak so far (Linux: KiB): data, model, tables and the scoring buffers.
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "diagnostics": engine.diagnostics(diag_x, diag_y),
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
        d = record["diagnostics"] or {}
        lsh = d.get("lsh") or {}
        print(
            f"{name} seed {seed} step {step}: P@1 {p1:.3f}, candidates {lsh.get('candidates')}, "
            f"recall@10 {lsh.get('recall_top10')}, enrichment {lsh.get('enrichment')}, "
            f"active {d.get('active')}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload")
    ap.add_argument("engine", help="slide or a variant of it in the workload")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600, 700])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    args = ap.parse_args()
    wl = workload.load(args.workload)
    if wl.base_of(args.engine) != "slide":
        ap.error(f"{args.engine!r} is not slide or a variant of it in {args.workload}")
    overrides: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--param takes KEY=VALUE, got {item!r}")
        overrides[key] = _value(value)
    steps = sorted(set(args.steps))
    if not steps or steps[0] < 1:
        ap.error("--steps must be positive")
    with args.out.open("a") as out:
        for seed in args.seeds:
            run(wl, args.engine, overrides, seed, steps, args.threads, out)


if __name__ == "__main__":
    main()
