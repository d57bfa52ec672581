"""Throughput (samples/s on the train clock) and peak memory (RSS) per engine for one workload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.reporting.plots import style
from harness.reporting.plots.output import save_figure
from harness.reporting.plots.records import Run
from harness.reporting.plots.stats import spread


def _bars(ax, engines, spreads, colours, fmt: str) -> None:
    xs = range(len(engines))
    med = [s.median for s in spreads]
    bars = ax.bar(
        xs,
        med,
        yerr=[[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]],
        capsize=4,
        color=[colours(e) for e in engines],
        edgecolor="white",
        linewidth=0,
    )
    for bar, engine in zip(bars, engines, strict=True):
        bar.set_hatch(style.HATCHES[style.variant(engine, engines) % len(style.HATCHES)])
    ax.set_xticks(list(xs), engines)
    for x, s in zip(xs, spreads, strict=True):
        ax.annotate(
            fmt.format(s.median),
            (x, s.high),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)


def throughput_memory(
    workload: str, by_engine: Mapping[str, Sequence[Run]], machine: str, colours, out_dir: Path
) -> dict[str, Path]:
    fig, (ax_tp, ax_mem) = style.new_figure(style.FIGSIZE_WIDE, ncols=2)
    for ax, attr, ylabel, fmt in (
        (ax_tp, "samples_per_s", "samples / s (train clock)", "{:,.0f}"),
        (ax_mem, "peak_rss_mb", "peak RSS (MB)", "{:,.0f}"),
    ):
        engines, spreads = [], []
        for engine in style.engine_order(by_engine):
            s = spread([getattr(r, attr) for r in by_engine[engine] if r.state != "error"])
            if s is not None:
                engines.append(engine)
                spreads.append(s)
        if engines:
            _bars(ax, engines, spreads, colours, fmt)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
    failed = [e for e in style.engine_order(by_engine) if all(r.state == "error" for r in by_engine[e])]
    if failed:
        fig.supxlabel(f"not shown, every run failed: {', '.join(failed)}", fontsize=8)
    threads = sorted({r.threads for runs in by_engine.values() for r in runs})
    ax_tp.set_title(f"throughput ({', '.join(map(str, threads))} thread(s))", fontsize=10)
    ax_mem.set_title("peak memory of the run's process", fontsize=10)
    style.title(fig, "Throughput and peak memory (median over seeds, bars = min-max)", workload, machine)
    return save_figure(fig, out_dir, f"{workload}-throughput-memory")
