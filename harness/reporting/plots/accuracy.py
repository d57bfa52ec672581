"""Accuracy plots of one workload: P@1 against the train clock (log axis) and against epochs, and,
where the workload has GPU records, the seed claim's comparison (slide on the CPU against tf_dense
on the GPU)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.reporting.plots import resources, style
from harness.reporting.plots.output import save_figure
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import band, flag_counts, popularity_of, spread


def _label(engine: str, runs: Sequence[Run], used: int) -> str:
    failed = sum(1 for r in runs if not r.ok)
    extra = f", {failed} failed/diverged excluded" if failed else ""
    flagged = flag_counts(runs)
    if flagged:
        extra += "; flagged: " + ", ".join(f"{f} x{n}" for f, n in sorted(flagged.items()))
    return f"{engine} ({used} seed{'s' if used != 1 else ''}{extra})"


def _draw(ax, by_engine: Mapping[str, Sequence[Run]], axis: str, log: bool, colours, names=None) -> int:
    """Median P@1 curve per label; `names` (label -> legend text) replaces the label in the legend."""
    names = names or {}
    drawn = 0
    for engine in style.engine_order(by_engine):
        runs = by_engine[engine]
        # Diverged and failed runs are left out of the median: their curves stop or go to NaN.
        usable = [r for r in runs if r.ok and r.curve]
        b = band(usable, axis, log=log)
        if b is None:
            # Still named in the legend, so a missing line reads as "failed", not "forgotten".
            ax.plot(
                [],
                [],
                color=colours(engine),
                lw=2,
                ls=":",
                label=f"{names.get(engine, engine)}: no usable run ({len(runs)} failed)",
            )
            continue
        colour = colours(engine)
        ls = style.LINESTYLES[style.variant(engine, by_engine) % len(style.LINESTYLES)]
        ax.plot(
            b.x,
            b.median,
            color=colour,
            ls=ls,
            lw=2,
            drawstyle="steps-post",
            label=_label(names.get(engine, engine), runs, b.seeds),
        )
        # A dot at each line's last evaluation: where the runs stopped, and the only visible mark of
        # a run that met its target at its first evaluation (a one-point step line draws nothing).
        ax.plot(b.x[-1:], b.median[-1:], color=colour, ls="none", marker="o", ms=5)
        if b.seeds > 1:
            ax.fill_between(b.x, b.low, b.high, color=colour, alpha=0.2, step="post", lw=0)
        drawn += 1
    return drawn


def _target(ax, target: float | None, by_engine: Mapping[str, Sequence[Run]] | None = None) -> None:
    """The target line, and the label-popularity floor every engine has to beat."""
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target P@1 = {target:g}")
    popularity = popularity_of([r for rs in (by_engine or {}).values() for r in rs])
    if popularity is not None:
        ax.axhline(popularity, color="grey", ls=":", lw=1.5, label=f"label popularity P@1 = {popularity:.3f}")


def _plain_log_ticks(ax) -> None:
    """Seconds as plain numbers (0.5, 2, 100), not 5x10^-1; minor labels only on short spans."""
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    low, high = ax.get_xlim()
    if high / max(low, 1e-12) < 100:
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def _finish(ax, drawn: int, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("P@1 (evaluation subset)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        # Below the axes: curves rise from lower left to upper right, so no corner is reliably free.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, fontsize=8, frameon=False)
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "no usable runs (all failed or no evaluations)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )


def time_to_accuracy(
    workload: str,
    by_engine: Mapping[str, Sequence[Run]],
    target: float | None,
    machine: str,
    colours,
    out_dir: Path,
) -> dict[str, Path]:
    fig, (ax,) = style.new_figure()
    drawn = _draw(ax, by_engine, "train_s", True, colours)
    _target(ax, target, by_engine)
    if drawn:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
    _finish(ax, drawn, "train clock (s, fit_step only; log scale)")
    style.title(fig, "Time to accuracy (median over seeds, band = min-max)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-time-to-accuracy")


def p1_vs_epochs(
    workload: str,
    by_engine: Mapping[str, Sequence[Run]],
    target: float | None,
    machine: str,
    colours,
    out_dir: Path,
) -> dict[str, Path]:
    fig, (ax,) = style.new_figure()
    drawn = _draw(ax, by_engine, "epoch", False, colours)
    _target(ax, target, by_engine)
    _finish(ax, drawn, "epochs")
    style.title(fig, "P@1 against epochs (median over seeds, band = min-max)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-p1-vs-epochs")


# The seed claim: SLIDE on a CPU against TensorFlow's full softmax on a GPU.
SEED_SERIES = (("slide", "cpu"), ("tf_dense", "gpu"))


def device_name(runs: Sequence[Run], device: str) -> str:
    """The hardware a series ran on: the GPU's model, or the CPU's, from its records."""
    for run in runs:
        if device == "gpu":
            gpu = run.engine_info.get("gpu")
            if isinstance(gpu, Mapping) and gpu.get("name"):
                return str(gpu["name"])
            listed = run.environment.get("gpus")
            if isinstance(listed, list) and listed and isinstance(listed[0], Mapping):
                return str(listed[0].get("name") or "GPU")
        elif run.environment.get("cpu_model"):
            return str(run.environment["cpu_model"])
    return device.upper()


def legend_name(label: str, runs: Sequence[Run]) -> str:
    """'slide on CPU (Xeon ..., 16 threads)', 'tf_dense on GPU (NVIDIA H200)'."""
    engine, device, _ = style.parse_label(label)
    device = device or (runs[0].device if runs else "cpu")
    threads = sorted({r.threads for r in runs})
    on_cpu = f", {'/'.join(map(str, threads))} thread(s)" if device == "cpu" and threads else ""
    return f"{engine} on {device.upper()} ({device_name(runs, device)}{on_cpu})"


def seed_comparison(
    workload: str,
    by_engine: Mapping[str, Sequence[Run]],
    target: float | None,
    machine: str,
    colours,
    out_dir: Path,
) -> dict[str, Path]:
    """Left: P@1 against the train clock, slide on the CPU and tf_dense on the GPU only.
    Right: samples/s of every engine on every device of the workload."""
    fig, (ax, ax_tp) = style.new_figure(style.FIGSIZE_WIDE, ncols=2)
    pair = {
        label: runs
        for label, runs in by_engine.items()
        if (style.base_engine(label), runs[0].device if runs else None) in SEED_SERIES
    }
    names = {label: legend_name(label, runs) for label, runs in pair.items()}
    drawn = _draw(ax, pair, "train_s", True, colours, names)
    _target(ax, target, by_engine)
    if drawn:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
    missing = [f"{e} on {d.upper()}" for e, d in SEED_SERIES if not any(
        style.base_engine(lb) == e and rs and rs[0].device == d for lb, rs in pair.items())]  # fmt: skip
    _finish(ax, drawn, "train clock (s, fit_step only; log scale)")
    ax.set_title(
        "time to accuracy" + (f" (no records of {', '.join(missing)})" if missing else ""), fontsize=10
    )
    labels, spreads = [], []
    for label in style.engine_order(by_engine):
        sp = spread([r.samples_per_s for r in by_engine[label] if r.ok])
        if sp is not None:
            labels.append(label)
            spreads.append(sp)
    if labels:
        resources._bars(ax_tp, labels, spreads, colours, "{:,.0f}")
        ax_tp.set_yscale("log")  # a GPU and a CPU can be orders of magnitude apart
        ax_tp.tick_params(axis="x", labelsize=8, labelrotation=20)
    else:
        ax_tp.text(0.5, 0.5, "no throughput recorded", ha="center", va="center", transform=ax_tp.transAxes)
    ax_tp.set_ylabel("samples / s (train clock, log scale)")
    ax_tp.set_title("throughput per engine and device", fontsize=10)
    style.title(fig, "slide on the CPU against tf_dense on the GPU (median over seeds)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-seed-comparison")
