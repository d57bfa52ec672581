"""`slidebench data twin | compare`: synthetic twins of real XMC sets, and real-versus-twin reports.

Registered under the `data` group by `harness.commands.data`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from harness.commands import common
from harness.datasets import data as hdata
from harness.datasets import twin
from harness.datasets.data import write_dataset
from harness.run import calibrate


def register(sub: argparse._SubParsersAction) -> None:
    tw = sub.add_parser(
        "twin",
        help="fit the twin generator to a real XMC set and write a synthetic set of its shape at any scale",
        description="PATH_OR_NAME: a manifest entry, a folder holding one *train* and one *test* file, or a "
        "train file whose test file (same name with train -> test) sits beside it. Writes "
        "NAME_train.txt, NAME_test.txt and NAME_knobs.json into --out.",
    )
    tw.add_argument("source", metavar="PATH_OR_NAME")
    tw.add_argument(
        "--scale",
        type=common.positive_number,
        default=1.0,
        help="multiplies points, features and labels (default 1)",
    )
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--out", type=Path, required=True)
    tw.add_argument(
        "--knobs",
        type=Path,
        default=None,
        help="use these fitted knobs (a *_knobs.json) instead of fitting again",
    )
    tw.add_argument(
        "--structure-from",
        type=Path,
        default=None,
        metavar="KNOBS",
        help="measure only the shape and distributions of PATH_OR_NAME and take the fitted "
        "structure knobs (" + ", ".join(calibrate.FITTED_KNOBS) + ") from this *_knobs.json "
        "of another set: a twin that holds PATH_OR_NAME out of the calibration",
    )
    tw.add_argument(
        "--free",
        type=_free_knob,
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="fit with this free knob changed (repeatable; free knobs: "
        + ", ".join(calibrate.FREE_KNOBS)
        + ")",
    )
    tw.add_argument(
        "--fit",
        choices=tuple(calibrate.FIT_PROCEDURES),
        default=calibrate.DEFAULT_FIT,
        help="fit procedure: paced (default: plain's knobs, then background_topical, the common words' "
        "topic, to the dense reference's P@1 after one epoch, at each cluster ratio, see --cluster-ratio), "
        "plain (no topical background) or topical "
        "(background_topical to the centroid on the common words); see docs/twins.md",
    )
    tw.add_argument(
        "--cluster-ratio",
        type=common.positive_number,
        default=None,
        metavar="R",
        help="label clusters of R x the mean labels per point (default: paced chooses among "
        + ", ".join(f"{r:g}" for r in calibrate.PACED_CLUSTER_RATIOS)
        + f" by the dense P@1 after {calibrate.SELECT_EPOCHS} epochs; plain and topical use "
        + f"{calibrate.CLUSTER_RATIO:g})",
    )
    tw.add_argument(
        "--data-dir", type=Path, default=None, help="for manifest names; default $SLIDEBENCH_DATA"
    )
    tw.set_defaults(func=_twin)

    cmp = sub.add_parser(
        "compare",
        help="side-by-side statistics and baselines of a real set and its twin (or any two sets)",
        description="REAL and TWIN: each a manifest entry, a folder with one *train* and one *test* file, or a "
        "train file with its test file beside it. Reports quartiles of labels/point, points/label and "
        "nnz/point, P@1 of label popularity, label centroids, 10-NN and the dense reference after 1, 5, "
        "20 epochs, and the co-occurrence ratio of the dense model's top-10 wrong labels.",
    )
    cmp.add_argument("real")
    cmp.add_argument("twin")
    cmp.add_argument(
        "--draws",
        type=_positive_int,
        default=1,
        help="N > 1: TWIN is a `data twin` folder; regenerate it from its *_knobs.json with seeds 0..N-1 "
        "and report each twin statistic as median [min-max] over the draws (criteria judged on the "
        "median): how much of a mismatch is the draw",
    )
    _profile_options(cmp)
    cmp.set_defaults(func=_compare)

    prof = sub.add_parser(
        "profile",
        help="the statistics and baselines of `data compare` for one set (e.g. a paper preset)",
        description="SOURCE: a manifest entry, a folder with one *train* and one *test* file, a train file "
        "with its test file beside it, or synthetic:PRESET@SCALE (e.g. synthetic:amazon-670k@0.02).",
    )
    prof.add_argument("source")
    _profile_options(prof)
    prof.set_defaults(func=_profile)


def _free_knob(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or key not in calibrate.FREE_KNOBS:
        raise argparse.ArgumentTypeError(
            f"--free: expected KNOB=VALUE with KNOB one of {', '.join(calibrate.FREE_KNOBS)}, got {text!r}"
        )
    try:
        number = type(calibrate.FREE_KNOBS[key])(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--free {key}: not a number: {value!r}") from None
    return key, number


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _epochs(text: str) -> tuple[int, ...]:
    try:
        epochs = tuple(sorted({int(x) for x in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"epochs: a comma-separated list of integers, got {text!r}"
        ) from None
    if not epochs or epochs[0] < 1:
        raise argparse.ArgumentTypeError(f"epochs must be >= 1, got {text!r}")
    return epochs


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-dense", action="store_true", help="skip the dense reference (fast)")
    p.add_argument(
        "--epochs",
        type=_epochs,
        default=calibrate.DENSE_EPOCHS,
        help="evaluate the dense reference after these epochs (default 1,5,20)",
    )
    p.add_argument(
        "--engine",
        choices=calibrate.DENSE_ENGINES,
        default=calibrate.DENSE_ENGINE,
        help="the dense reference: numpy_dense (default) or tf_dense (faster at wide outputs)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the profile(s) here")
    p.add_argument("--data-dir", type=Path, default=None)


def resolve_pair(source: str, data_dir: Path | None) -> tuple[str, Path | None, Path | None]:
    """(name, train file, test file); files are None for a manifest entry."""
    path = Path(source)
    if not path.exists():
        manifest = hdata.load_manifest()
        if source in manifest:
            return source, None, None
        raise FileNotFoundError(
            f"{source}: neither a file, a folder nor a manifest entry (manifest: {', '.join(sorted(manifest))})"
        )
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        trains = [p for p in files if "train" in p.name]
        tests = [p for p in files if "test" in p.name]
        if len(trains) != 1 or len(tests) != 1:
            raise ValueError(
                f"{path}: need exactly one *train* and one *test* file, found "
                f"{[p.name for p in trains]} and {[p.name for p in tests]}"
            )
        return path.name, trains[0], tests[0]
    if "train" not in path.name:
        raise ValueError(f"{path}: a train file's name must contain 'train' (its test file is found by it)")
    test = path.with_name(path.name.replace("train", "test"))
    if not test.is_file():
        raise FileNotFoundError(f"{path}: no test file beside it (looked for {test})")
    return path.stem.replace("_train", "").replace("train", "") or path.stem, path, test


def _synthetic_spec(source: str) -> hdata.DatasetSpec:
    """synthetic:PRESET@SCALE[/sSEED] -> the spec of that generated set."""
    body = source.removeprefix("synthetic:")
    preset, _, rest = body.partition("@")
    scale_text, _, seed_text = rest.partition("/s")
    try:
        scale = float(scale_text) if scale_text else 1.0
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise ValueError(
            f"{source}: expected synthetic:PRESET@SCALE or synthetic:PRESET@SCALE/sSEED"
        ) from None
    if not preset or not scale > 0:
        raise ValueError(f"{source}: expected synthetic:PRESET@SCALE with a positive scale")
    return hdata.DatasetSpec(synthetic=preset, scale=scale, seed=seed)


def load_pair(source: str, data_dir: Path | None) -> tuple[str, hdata.Dataset, hdata.Dataset]:
    if source.startswith("synthetic:"):
        spec = _synthetic_spec(source)
        train, test = hdata.load(spec, data_dir)
        return spec.label, train, test
    name, train_path, test_path = resolve_pair(source, data_dir)
    if train_path is None:
        train, test = hdata.load(hdata.DatasetSpec(name=name), data_dir)
        return name, train, test
    train = hdata.read_xmc(train_path, name=name)
    test = hdata.read_xmc(test_path, name=name, num_features=train.num_features, num_labels=train.num_labels)
    return name, train, test


def _twin(args: argparse.Namespace) -> int:
    if (args.knobs or args.structure_from) and (args.free or args.cluster_ratio is not None):
        raise ValueError("--free and --cluster-ratio set up a fit: not with --knobs or --structure-from")
    started = time.perf_counter()
    if args.knobs is not None:
        knobs = twin.load_knobs(args.knobs)
        name = knobs.name
    else:
        name, train, test = load_pair(args.source, args.data_dir)
        if args.structure_from is not None:
            donor = twin.load_knobs(args.structure_from)
            knobs = calibrate.transfer_knobs(calibrate.measured_knobs(name, train, test), donor)
            print(
                f"measured {name}; structure knobs from the fit to {donor.name}: "
                + ", ".join(f"{k} {getattr(knobs, k)}" for k in calibrate.FITTED_KNOBS)
            )
        else:
            print(
                f"fitting knobs to {name} ({train.num_points:,} train / {test.num_points:,} test points) ..."
            )
            knobs = calibrate.fit_knobs(
                name, train, test, seed=args.seed, free=dict(args.free), fit=args.fit,
                cluster_ratio=args.cluster_ratio,
            )
            print(
                f"fitted in {time.perf_counter() - started:.1f} s: "
                + ", ".join(f"{k} {getattr(knobs, k)}" for k in calibrate.FITTED_KNOBS)
                + f"; cluster_size {knobs.notes['cluster_size']}"
            )
            print(f"fit check {knobs.notes['fit check']}")
    scaled = knobs.scaled(args.scale)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-twin" + ("" if args.scale == 1 else f"-x{args.scale:g}")
    twin.save_knobs(scaled, args.out / f"{stem}_knobs.json")
    started = time.perf_counter()
    train, test = twin.generate(scaled, args.seed)
    print(
        f"generated {train.num_points:,} train / {test.num_points:,} test points, "
        f"{scaled.num_features:,} features, {scaled.num_labels:,} labels in {time.perf_counter() - started:.1f} s"
    )
    for split, ds in (("train", train), ("test", test)):
        path = args.out / f"{stem}_{split}.txt"
        write_dataset(path, ds)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"wrote {args.out / (stem + '_knobs.json')}")
    return 0


COOCCURRENCE_ROWS = (
    ("ratio_uniform", "top-10 wrong labels: co-occurrence / uniform random labels"),
    ("ratio_frequency", "top-10 wrong labels: co-occurrence / frequency-drawn labels"),
)


def _fmt_q(q: tuple[float, float, float]) -> str:
    return "/".join(f"{x:g}" for x in q)


def _within(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), 1e-12)


def _summary(values: list[float], digits: int) -> tuple[float, str]:
    """(median, text): the value alone for one draw, else "median [min-max]"."""
    mid = float(np.median(values))
    if len(values) == 1:
        return mid, f"{mid:.{digits}f}"
    return mid, f"{mid:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def render(real: calibrate.Profile, *twins: calibrate.Profile) -> str:
    """Markdown table of a real set's profile against its twin's (P@1 within 0.05, quartiles
    within 25 %). Several twin profiles (draws of one twin) are shown as median [min-max], and the
    criteria are judged on the median."""
    other = twins[0]
    draws = f" ({len(twins)} draws)" if len(twins) > 1 else ""
    lines = [
        f"| statistic | real: {real.name} | twin: {other.name}{draws} | criterion | holds |",
        "|---|---|---|---|---|",
    ]
    lines.append(
        f"| shape (train/test/features/labels) | {'/'.join(f'{x:,}' for x in real.shape)} | "
        f"{'/'.join(f'{x:,}' for x in other.shape)} | | |"
    )
    for key, q in real.distributions.items():
        t = tuple(float(np.median([tw.distributions[key][i] for tw in twins])) for i in range(len(q)))
        ok = all(_within(a, b, 0.25) for a, b in zip(q, t, strict=True))
        lines.append(
            f"| {key} quartiles | {_fmt_q(q)} | {_fmt_q(t)} | each within 25 % | {'yes' if ok else 'NO'} |"
        )
    rows = [
        ("popularity P@1", lambda p: p.popularity_p1),
        ("label-centroid P@1", lambda p: p.centroid_p1),
        (f"{calibrate.KNN_K}-NN P@1", lambda p: p.knn_p1),
    ]
    rows += [
        (f"dense P@1 after {e} epoch{'s' if e > 1 else ''}", lambda p, e=e: p.dense_p1[e])
        for e in sorted(real.dense_p1)
        if all(e in tw.dense_p1 for tw in twins)
    ]
    for title, get in rows:
        a = get(real)
        b, text = _summary([get(tw) for tw in twins], 3)
        lines.append(f"| {title} | {a:.3f} | {text} | within 0.05 | {'yes' if abs(a - b) <= 0.05 else 'NO'} |")
    checks = [
        (
            f"label-centroid P@1 on the {calibrate.HEAD_FEATURES:.0%} most frequent features",
            lambda p: p.head_centroid_p1,
            3,
        ),
        (
            f"label-centroid P@1 from {calibrate.FEW_SHOT_SHARE:.0%} of the train points",
            lambda p: p.few_shot_centroid_p1,
            3,
        ),
        ("label-pair lift (mean log(1+lift))", lambda p: p.pair_lift, 3),
        ("mean cosine to nearest train point", lambda p: p.nn_similarity, 3),
        ("feature occurrences in the top 1 % of features", lambda p: p.feature_head_share, 3),
    ]
    if real.cooccurrence and all(tw.cooccurrence for tw in twins):
        checks += [(title, lambda p, key=key: p.cooccurrence[key], 2) for key, title in COOCCURRENCE_ROWS]
    for title, get, digits in checks:
        lines.append(f"| {title} | {get(real):.{digits}f} | {_summary([get(tw) for tw in twins], digits)[1]} | | |")
    return "\n".join(lines)


def render_one(p: calibrate.Profile) -> str:
    """Markdown table of one profile."""
    lines = [
        f"| statistic | {p.name} |",
        "|---|---|",
        f"| shape (train/test/features/labels) | {'/'.join(f'{x:,}' for x in p.shape)} |",
    ]
    lines += [f"| {key} quartiles | {_fmt_q(q)} |" for key, q in p.distributions.items()]
    lines += [
        f"| popularity P@1 | {p.popularity_p1:.3f} |",
        f"| label-centroid P@1 | {p.centroid_p1:.3f} |",
        f"| {calibrate.KNN_K}-NN P@1 | {p.knn_p1:.3f} |",
    ]
    lines += [
        f"| dense ({p.dense_engine}) P@1 after {e} epoch{'s' if e > 1 else ''} | {v:.3f} |"
        for e, v in sorted(p.dense_p1.items())
    ]
    lines += [
        f"| label-centroid P@1 on the {calibrate.HEAD_FEATURES:.0%} most frequent features | {p.head_centroid_p1:.3f} |",
        f"| label-centroid P@1 from {calibrate.FEW_SHOT_SHARE:.0%} of the train points | {p.few_shot_centroid_p1:.3f} |",
        f"| label-pair lift (mean log(1+lift)) | {p.pair_lift:.3f} |",
        f"| mean cosine to nearest train point | {p.nn_similarity:.3f} |",
        f"| feature occurrences in the top 1 % of features | {p.feature_head_share:.3f} |",
    ]
    if p.cooccurrence:
        lines += [f"| {title} | {p.cooccurrence[key]:.2f} |" for key, title in COOCCURRENCE_ROWS]
    return "\n".join(lines)


def _footer() -> str:
    load = os.getloadavg()
    return (
        f"(evaluation on up to {calibrate.EVAL_POINTS} test points, seed 0; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
    )


def _write_json(path: Path, profiles: list[calibrate.Profile], **extra) -> None:
    doc = {
        "profiles": [p.to_dict() for p in profiles],
        **extra,
        "eval_points": calibrate.EVAL_POINTS,
        "load_average": list(os.getloadavg()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


def _profile_of(
    args: argparse.Namespace, name: str, train: hdata.Dataset, test: hdata.Dataset, shown: str
) -> calibrate.Profile:
    """The profile of one set, with the options of `compare` / `profile`, timed."""
    started = time.perf_counter()
    p = calibrate.profile(name, train, test, dense=not args.no_dense, epochs=args.epochs, engine=args.engine)
    print(f"profiled {shown} in {time.perf_counter() - started:.1f} s")
    return p


def _profiles(args: argparse.Namespace, sources: list[str]) -> list[calibrate.Profile]:
    profiles = []
    for source in sources:
        name, train, test = load_pair(source, args.data_dir)
        profiles.append(_profile_of(args, name, train, test, name))
    return profiles


def _twin_knobs(folder: str) -> Path:
    """The one *_knobs.json of a `data twin` output folder (what --draws regenerates from)."""
    path = Path(folder)
    found = sorted(path.glob("*_knobs.json")) if path.is_dir() else []
    if len(found) != 1:
        raise ValueError(
            f"--draws needs TWIN to be a `data twin` folder with exactly one *_knobs.json; "
            f"{folder} has {len(found)}"
        )
    return found[0]


def _drawn_profiles(args: argparse.Namespace, knobs_path: Path) -> list[calibrate.Profile]:
    knobs = twin.load_knobs(knobs_path)
    shown = f"{knobs.name} (draw {{}} of {args.draws}, seed {{}})"
    return [
        _profile_of(args, knobs.name, *twin.generate(knobs, seed), shown.format(seed + 1, seed))
        for seed in range(args.draws)
    ]


def _compare(args: argparse.Namespace) -> int:
    if args.draws > 1:
        knobs_path = _twin_knobs(args.twin)  # refused before any work
        profiles = _profiles(args, [args.real]) + _drawn_profiles(args, knobs_path)
    else:
        profiles = _profiles(args, [args.real, args.twin])
    print()
    print(render(*profiles))
    print("\n" + _footer())
    if args.json is not None:
        _write_json(args.json, profiles, twin_draws=args.draws)
    return 0


def _profile(args: argparse.Namespace) -> int:
    profiles = _profiles(args, [args.source])
    print()
    print(render_one(profiles[0]))
    print("\n" + _footer())
    if args.json is not None:
        _write_json(args.json, profiles)
    return 0
