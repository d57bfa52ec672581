"""The hashing ablation: does the LSH sampler beat labels plus random negatives?

A workload holds an ablation when it has runs of an engine whose output selection is `random`
(the control: no hash tables) and runs of the same registered engine with any other selection (the
treatment), e.g. `slide` and its variant `slide-random`. A control draws its negatives uniformly
or, with `padding_sampler = "unigram"`, by training label frequency (the negatives a sampled
softmax draws); every treatment is compared with every control. For each pair this module draws P@1
against steps and against the train clock, with the sampler's diagnostics (recall of the exact
top-10 wrong labels among the LSH candidates, softmax-mass enrichment over a random set of the same
size), and states the measured effect in one sentence. Records only: nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.reporting.plots import style
from harness.reporting.plots.accuracy import _draw, _finish
from harness.reporting.plots.markup import Block, Heading, Para, Table
from harness.reporting.plots.output import save_figure
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import Spread, spread


def _base(run: Run) -> str:
    return str(run.spec.get("base_engine") or run.spec.get("engine"))


def _selection(run: Run) -> str | None:
    params = run.spec.get("engine_params") or {}
    return params.get("selection") if isinstance(params, Mapping) else None


def _negatives(run: Run) -> str:
    """How a control draws its negatives, in words."""
    params = run.spec.get("engine_params") or {}
    if isinstance(params, Mapping) and params.get("padding_sampler") == "unigram":
        return "random negatives drawn by training label frequency"
    return "uniform random negatives"


def pairs(by_engine: Mapping[str, Sequence[Run]]) -> list[tuple[str, str]]:
    """(treatment, control) engine labels of one workload: same registered engine, control random."""
    out = []
    for control, c_runs in sorted(by_engine.items()):
        if not c_runs or _selection(c_runs[0]) != "random":
            continue
        for treat, t_runs in sorted(by_engine.items()):
            if treat != control and t_runs and _base(t_runs[0]) == _base(c_runs[0]) and _selection(t_runs[0]) not in (
                None, "random",
            ):  # fmt: skip
                out.append((treat, control))
    return out


def _usable(runs: Sequence[Run]) -> list[Run]:
    return [r for r in runs if r.ok and r.curve]


def _p1_at_step(run: Run, step: int) -> float | None:
    """P@1 at `step`, interpolated linearly between the evaluations either side of it. Engines are
    evaluated on the train clock, so two runs rarely share a step; taking each run's last point at
    or before the step would compare one run's fresh value with another's up to a cadence older.
    None outside the run's evaluated range."""
    before = after = None
    for p in run.curve:
        if p.step <= step and (before is None or p.step >= before.step):
            before = p
        if p.step >= step and (after is None or p.step <= after.step):
            after = p
    if before is None or after is None:
        return None
    if after.step == before.step:
        return before.p1
    w = (step - before.step) / (after.step - before.step)
    return before.p1 + w * (after.p1 - before.p1)


def _fmt(s: Spread | None, digits: int = 3) -> str:
    if s is None:
        return "n/a"
    if s.n == 1:
        return f"{s.median:.{digits}f}"
    return f"{s.median:.{digits}f} [{s.low:.{digits}f}–{s.high:.{digits}f}]"


def _last_diag(run: Run, *keys: str) -> float | None:
    """A diagnostics value of the run's last evaluation that has one (e.g. 'lsh', 'recall_top10')."""
    for point in reversed(run.raw.get("curve") or []):
        node = point.get("diagnostics") if isinstance(point, Mapping) else None
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


def verdict(treat: str, control: str, t_runs: Sequence[Run], c_runs: Sequence[Run]) -> str:
    """One sentence with the measured effect of hashing, at the last step every run reached."""
    t, c = _usable(t_runs), _usable(c_runs)
    if not t or not c:
        return f"No comparison: `{treat}` has {len(t)} and `{control}` {len(c)} usable run(s)."
    step = min(r.curve[-1].step for r in t + c)
    t_p1 = spread([_p1_at_step(r, step) for r in t])
    c_p1 = spread([_p1_at_step(r, step) for r in c])
    if t_p1 is None or c_p1 is None:
        return "No comparison: no evaluation of both at a common step."
    diff = t_p1.median - c_p1.median
    overlap = t_p1.low <= c_p1.high and c_p1.low <= t_p1.high
    if min(t_p1.n, c_p1.n) < 2:
        effect = f"difference {diff:+.3f} P@1, from one seed: no spread to judge it by (run more seeds)"
    elif overlap:
        effect = "no measurable effect of hashing (the ranges over seeds overlap)"
    elif diff > 0:
        effect = f"hashing helps: +{diff:.3f} P@1"
    else:
        effect = f"hashing hurts: {diff:.3f} P@1"
    return (
        f"At step {step}, `{treat}` (LSH candidates) reaches P@1 {_fmt(t_p1)} and `{control}` (labels + "
        f"{_negatives(c[0])}, no tables) {_fmt(c_p1)}, medians [min–max] over {t_p1.n} and {c_p1.n} "
        f"seed(s): {effect}.{_along_the_way(t, c, step)}"
    )


ALONG_THE_WAY_POINTS = 10


def _along_the_way(t: Sequence[Run], c: Sequence[Run], last: int) -> str:
    """How the two compare at ten evenly spaced steps up to `last` (a sampler can matter early and
    not at the end), P@1 interpolated in each run; empty with one seed on either side."""
    if last < ALONG_THE_WAY_POINTS or min(len(t), len(c)) < 2:
        return ""
    steps = [round(last * (i + 1) / ALONG_THE_WAY_POINTS) for i in range(ALONG_THE_WAY_POINTS)]
    ahead, behind = [], []
    for step in steps:
        ts, cs = spread([_p1_at_step(r, step) for r in t]), spread([_p1_at_step(r, step) for r in c])
        if ts is None or cs is None:
            continue
        if ts.low > cs.high:
            ahead.append(step)
        elif ts.high < cs.low:
            behind.append(step)
    return (
        f" At steps {steps[0]}, {steps[1]}, ... {steps[-1]} (P@1 interpolated between each run's "
        f"evaluations), the treatment is ahead of the control with disjoint ranges {_at(ahead)} "
        f"and behind {_at(behind)}."
    )


def _at(steps: Sequence[int]) -> str:
    return f"at steps {', '.join(str(s) for s in steps)}" if steps else "at no step"


def diagnostics_table(by_engine: Mapping[str, Sequence[Run]], engines: Sequence[str]) -> Table:
    """Per engine, the last evaluation's sampler diagnostics, medians [min–max] over seeds."""
    cols = (
        ("labels / sample", ("active", "labels")),
        ("LSH / sample", ("active", "lsh")),
        ("random / sample", ("active", "random")),
        ("LSH candidates", ("lsh", "candidates")),
        ("recall top-10", ("lsh", "recall_top10")),
        ("recall top-100", ("lsh", "recall_top100")),
        ("enrichment", ("lsh", "enrichment")),
    )
    rows = []
    for engine in engines:
        runs = _usable(by_engine.get(engine, []))
        cells = [_fmt(spread([_last_diag(r, *keys) for r in runs]), 2) for _, keys in cols]
        rows.append((f"`{engine}`", *cells))
    return Table(("engine", *(name for name, _ in cols)), tuple(rows))


def _diag_series(run: Run, *keys: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for point in run.raw.get("curve") or []:
        node = point.get("diagnostics") if isinstance(point, Mapping) else None
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            xs.append(int(point.get("step", 0)))
            ys.append(float(node))
    return xs, ys


def plot(
    workload: str,
    by_engine: Mapping[str, Sequence[Run]],
    pair: tuple[str, str],
    machine: str,
    colours,
    out_dir: Path,
) -> dict[str, Path]:
    """P@1 against steps and train clock for the pair; recall and enrichment of the treatment."""
    treat, control = pair
    sub = {e: by_engine[e] for e in pair}
    fig, (ax_step, ax_time, ax_diag) = style.new_figure(figsize=(15, 4.2), ncols=3)
    _finish(ax_step, _draw(ax_step, sub, "step", False, colours), "training steps")
    _finish(ax_time, _draw(ax_time, sub, "train_s", False, colours), "train clock (s, fit_step only)")
    twin = ax_diag.twinx()
    for run in _usable(by_engine[treat]):
        xs, ys = _diag_series(run, "lsh", "recall_top10")
        ax_diag.plot(xs, ys, color=colours(treat), lw=1.5, alpha=0.8)
        xs, ys = _diag_series(run, "lsh", "enrichment")
        twin.plot(xs, ys, color=colours(treat), lw=1.5, ls="--", alpha=0.8)
    ax_diag.set_xlabel("training steps")
    ax_diag.set_ylabel("recall of the exact top-10 wrong labels (solid)")
    twin.set_ylabel("enrichment over random (dashed)")
    ax_diag.set_ylim(0, 1)
    ax_diag.grid(alpha=0.3)
    style.title(fig, f"Hashing ablation: {treat} vs {control}", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-ablation-{treat}-vs-{control}")


def section(workload: str, by_engine: Mapping[str, Sequence[Run]], images: Sequence[Block]) -> list[Block]:
    """The report's ablation section of one workload (empty when it holds no ablation)."""
    found = pairs(by_engine)
    if not found:
        return []
    blocks: list[Block] = [
        Heading(3, "Hashing ablation"),
        Para(
            "The control computes the true labels plus random outputs up to the same active-set size (drawn "
            "uniformly, or by training label frequency for a control with `padding_sampler = \"unigram\"`) "
            "and builds no hash tables; the treatment fills the set from its LSH candidates first. Recall is of "
            "the exact top-10 / top-100 wrong labels among the candidates (before random padding), enrichment "
            "the softmax mass the candidates cover over a uniform random set of the same size (1 = no better "
            "than random), on the first points of the evaluation subset, at the last evaluation."
        ),
    ]
    for treat, control in found:
        blocks.append(Para(verdict(treat, control, by_engine[treat], by_engine[control])))
    engines = sorted({e for p in found for e in p})
    blocks.append(diagnostics_table(by_engine, engines))
    blocks += list(images)
    return blocks
