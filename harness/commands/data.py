"""`slidebench data info | synth | verify` (and `twin | compare | profile`, in harness.commands.twin): look at, generate and check data sets."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from harness.commands import common
from harness.datasets import data as hdata
from harness.datasets import synth
from harness.datasets.data import write_dataset

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect, generate and verify data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = sub.add_parser(
        "info",
        help="measured statistics of a data set, per split",
        description="NAME is a manifest entry (datasets/manifest.toml) or synthetic:PRESET "
        f"(presets: {', '.join(sorted(synth.PRESETS))}).",
    )
    info.add_argument("name")
    info.add_argument("--data-dir", type=Path, default=None, help="default: $SLIDEBENCH_DATA")
    info.add_argument("--scale", type=common.positive_number, default=1.0, help="synthetic only: fraction of the points")
    info.add_argument("--seed", type=int, default=0, help="synthetic only")
    info.set_defaults(func=_info)

    gen = sub.add_parser("synth", help="generate a synthetic data set (cached); optionally write XMC text files")
    gen.add_argument("preset", choices=sorted(synth.PRESETS))
    gen.add_argument("--scale", type=common.positive_number, default=1.0, help="fraction of the preset's points (default 1)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, default=None, help="write PRESET_train.txt / PRESET_test.txt here")
    gen.set_defaults(func=_synth)

    verify = sub.add_parser(
        "verify",
        help="check data files against the manifest (size, sha256, shape, full parse)",
        description="Without NAMEs, checks every manifest entry and reports missing files without failing; "
        "a NAME given explicitly must be present.",
    )
    verify.add_argument("names", nargs="*")
    verify.add_argument("--data-dir", type=Path, default=None, help="default: $SLIDEBENCH_DATA")
    verify.set_defaults(func=_verify)

    from harness.commands import twin  # data twin / data compare (kept in their own module)

    twin.register(sub)


def _spec_for(name: str, scale: float, seed: int) -> hdata.DatasetSpec:
    if name.startswith("synthetic:"):
        return hdata.DatasetSpec(synthetic=synth.preset(name.split(":", 1)[1]).name, scale=scale, seed=seed)
    return hdata.DatasetSpec(name=name)


def _print_stats(title: str, splits: list[tuple[str, hdata.Dataset]]) -> None:
    print(title)
    header = (
        f"  {'split':<6} {'points':>10} {'features':>10} {'labels':>10} {'nnz/point':>10} "
        f"{'labels/pt':>10} {'no-label':>9} {'no-feat':>8} {'labels used':>12}"
    )
    print(header)
    for split, ds in splits:
        s = ds.stats()
        print(
            f"  {split:<6} {s.points:>10,} {s.features:>10,} {s.labels:>10,} {s.nnz_per_point:>10.2f} "
            f"{s.labels_per_point:>10.2f} {s.points_without_labels:>9,} {s.points_without_features:>8,} "
            f"{s.labels_used:>12,}"
        )
    total_points = sum(ds.num_points for _, ds in splits)
    total_labels = sum(ds.labels.nnz for _, ds in splits)
    print(f"  whole set: {total_points:,} points, {total_labels / max(total_points, 1):.2f} labels/point")


def _info(args: argparse.Namespace) -> int:
    spec = _spec_for(args.name, args.scale, args.seed)
    started = time.perf_counter()
    train, test = hdata.load(spec, args.data_dir)
    elapsed = time.perf_counter() - started
    _print_stats(f"{spec.label}  ({train.source})", [("train", train), ("test", test)])
    if spec.name is not None:
        entry = hdata.load_manifest()[spec.name]
        if entry.published:
            pub = ", ".join(f"{k} {v:g}" for k, v in entry.published.items())
            print(f"  published (whole set): {pub}")
    print(f"  loaded in {elapsed:.2f} s")
    return 0


def _synth(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    train, test = synth.load_synthetic(args.preset, args.scale, args.seed)
    print(f"generated or loaded in {time.perf_counter() - started:.1f} s")
    _print_stats(train.name, [("train", train), ("test", test)])
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for split, ds in (("train", train), ("test", test)):
            path = args.out / f"{args.preset}_{split}.txt"
            started = time.perf_counter()
            write_dataset(path, ds)
            print(f"wrote {path} ({path.stat().st_size:,} bytes, {time.perf_counter() - started:.1f} s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    manifest = hdata.load_manifest()
    names = args.names or sorted(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise ValueError(f"unknown data set(s) {', '.join(unknown)}; the manifest has: {', '.join(sorted(manifest))}")
    directory = hdata.resolve_data_dir(args.data_dir)
    failures = 0
    for name in names:
        entry = manifest[name]
        for split in (entry.train, entry.test):
            path = directory / split.file
            if not path.is_file():
                print(f"MISSING  {name}: {path}  (get it from: {entry.get})")
                failures += bool(args.names)
                continue
            try:
                ds = hdata.read_xmc(path, name=name, header=True, expected_sha256=split.sha256)
                got = (ds.num_points, ds.num_features, ds.num_labels)
                want = (split.points, split.features, split.labels)
                size = path.stat().st_size
                if split.bytes is not None and size != split.bytes:
                    raise hdata.DataError(f"{path}: {size} bytes, the manifest expects {split.bytes}")
                if got != want:
                    raise hdata.DataError(f"{path}: shape {got}, the manifest expects {want}")
            except hdata.DataError as exc:
                print(f"BAD      {name}: {exc}")
                failures += 1
                continue
            checked = "sha256, size, shape" if split.sha256 else "shape (no sha256 known)"
            print(f"OK       {name}: {path}  ({checked}; parsed)")
    return 1 if failures else 0
