"""Accuracy plots of one workload: P@1 against the train clock (log axis) and against epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.plots import style
from harness.plots.output import save_figure
from harness.plots.records import Run
from harness.plots.stats import band


def _label(engine: str, runs: Sequence[Run], used: int) -> str:
    failed = sum(1 for r in runs if not r.ok)
    extra = f", {failed} failed/diverged excluded" if failed else ""
    return f"{engine} ({used} seed{'s' if used != 1 else ''}{extra})"


def _draw(ax, by_engine: Mapping[str, Sequence[Run]], axis: str, log: bool, colours) -> int:
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
                label=f"{engine}: no usable run ({len(runs)} failed)",
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
            label=_label(engine, runs, b.seeds),
        )
        # A dot at each line's last evaluation: where the runs stopped, and the only visible mark of
        # a run that met its target at its first evaluation (a one-point step line draws nothing).
        ax.plot(b.x[-1:], b.median[-1:], color=colour, ls="none", marker="o", ms=5)
        if b.seeds > 1:
            ax.fill_between(b.x, b.low, b.high, color=colour, alpha=0.2, step="post", lw=0)
        drawn += 1
    return drawn


def _target(ax, target: float | None) -> None:
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target P@1 = {target:g}")


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
    _target(ax, target)
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
    _target(ax, target)
    _finish(ax, drawn, "epochs")
    style.title(fig, "P@1 against epochs (median over seeds, band = min-max)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-p1-vs-epochs")
