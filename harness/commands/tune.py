"""`slidebench tune WORKLOAD [--engines a,b] [--no-reference] [--data-dir D]`.

Runs the workload's declared search (`[tuning]`) with the same trials and budget for every engine,
scored on a validation split of the training data, then the reference run that sets the target;
writes `workloads/tuning/<workload>.json`, which later runs of the workload use. Trial records go
under `<results>/tuning/`; an interrupted tuning resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.commands import common
from harness.run import tune
from harness.spec import workload


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="equal hyper-parameter search for every engine of a workload; pins the chosen values",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workload", help="workload name (workloads/<name>.toml) or path")
    p.add_argument(
        "--engines", type=common.comma_list, default=None,
        help="comma-separated engines to (re)tune (default: every engine of the matrix)",
    )  # fmt: skip
    p.add_argument("--no-reference", action="store_true", help="skip the reference run that sets the target")
    p.add_argument("--data-dir", type=Path, default=None, help="real data sets (default: $SLIDEBENCH_DATA)")
    p.add_argument("--timeout", type=common.positive_seconds, default=None, help="per trial, seconds")
    common.add_results_dir(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # A stored tuning that misses engines (a variant added since) is what this command completes.
    w = workload.load(args.workload, data_dir=args.data_dir, partial_tuning=True)
    path = tune.tune(
        w,
        common.results_dir(args),
        engines=args.engines,
        data_dir=args.data_dir,
        timeout_s=args.timeout,
        reference=not args.no_reference,
    )
    doc = json.loads(path.read_text(encoding="utf-8"))
    for engine, entry in sorted(doc["engines"].items()):
        tried = ", ".join(f"{t['p1']:.3f}" if t["p1"] is not None else t["state"] for t in entry["trials"])
        print(
            f"{w.name} {engine}: chosen {entry['chosen']} (validated P@1 {entry['p1']:.3f}; trials {tried})"
        )
    if doc.get("target"):
        t = doc["target"]
        ref = t["reference"]
        print(
            f"{w.name} target P@1 {t['p1']:.4f} = {t['fraction']:g} x best {ref['best_p1']:.4f} of {ref['engine']} "
            f"over {ref['budget_s']:g} s (last {ref['last_p1']:.4f})"
        )
    print(f"wrote {path}")
    return 0
