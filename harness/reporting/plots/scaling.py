"""Thread scaling of one workload: speedup and parallel efficiency against ideal, per engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.reporting.plots import style
from harness.reporting.plots.output import save_figure
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import scaling_points


def thread_scaling(
    workload: str, by_engine: Mapping[str, Sequence[Run]], machine: str, colours, out_dir: Path
) -> dict[str, Path]:
    fig, (ax_speed, ax_eff) = style.new_figure(style.FIGSIZE_WIDE, ncols=2)
    all_threads: set[int] = set()
    for engine in style.engine_order(by_engine):
        points = scaling_points(by_engine[engine])
        if not points:
            continue
        threads = [p.threads for p in points]
        all_threads.update(threads)
        colour = colours(engine)
        base = points[0].samples_per_s.median
        ax_speed.plot(
            threads,
            [p.speedup for p in points],
            "o-",
            color=colour,
            label=f"{engine} (base {base:,.0f} samples/s at {threads[0]} thr)",
        )
        # Min-max over seeds as error bars, scaled by the same base as the median.
        lows = [p.speedup - p.samples_per_s.low / base for p in points]
        highs = [p.samples_per_s.high / base - p.speedup for p in points]
        ax_speed.errorbar(
            threads, [p.speedup for p in points], yerr=[lows, highs], fmt="none", ecolor=colour, capsize=3
        )
        ax_eff.plot(threads, [p.efficiency for p in points], "o-", color=colour, label=engine)
    if all_threads:
        ts = sorted(all_threads)
        ax_speed.plot(ts, [t / ts[0] for t in ts], "k--", lw=1, label="ideal (linear)")
        ax_eff.axhline(1.0, color="black", ls="--", lw=1, label="ideal")
        for ax in (ax_speed, ax_eff):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ts, [str(t) for t in ts])
            ax.minorticks_off()
            ax.set_xlabel("threads")
            ax.grid(True, alpha=0.3)
        ax_speed.legend(fontsize=8, loc="upper left")
        ax_eff.legend(fontsize=8, loc="lower left")
        ax_eff.set_ylim(0, max(1.15, ax_eff.get_ylim()[1]))
    else:
        for ax in (ax_speed, ax_eff):
            ax.text(0.5, 0.5, "no scaling measurements", ha="center", va="center", transform=ax.transAxes)
    ax_speed.set_ylabel("speedup over fewest threads (train clock)")
    ax_speed.set_title("speedup", fontsize=10)
    ax_eff.set_ylabel("parallel efficiency (speedup / ideal)")
    ax_eff.set_title("parallel efficiency", fontsize=10)
    style.title(fig, "Thread scaling (median samples/s over seeds)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-thread-scaling")
