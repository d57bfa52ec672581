"""What every plot shares: one colour per engine, engine order, the machine named in titles.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so rendering needs no display, keeps no global figure state, and cannot pick up an
interactive backend from the user's matplotlib configuration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from matplotlib.figure import Figure

# A fixed mapping (Okabe-Ito, colour-blind safe) so an engine looks the same in every figure of
# every report; engines not listed take the palette below in name order.
ENGINE_COLOURS: Mapping[str, str] = {
    "slide": "#D55E00",
    "tf_dense": "#0072B2",
    "tf_sampled": "#009E73",
    "numpy_dense": "#7F7F7F",
}
EXTRA_PALETTE: tuple[str, ...] = ("#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442", "#882255")
ENGINE_ORDER: tuple[str, ...] = tuple(ENGINE_COLOURS)

FIGSIZE_WIDE = (11.0, 4.6)
FIGSIZE_SINGLE = (7.5, 4.8)


def series_label(engine: str, device: str | None = None, threads: int | None = None) -> str:
    """A plot/table label: 'slide', 'slide@4' (one of several thread counts), 'tf_dense[gpu]'
    (in a workload with GPU records), 'tf_dense[cpu]@4'."""
    return engine + (f"[{device}]" if device else "") + (f"@{threads}" if threads is not None else "")


def parse_label(label: str) -> tuple[str, str | None, int | None]:
    """(engine, device or None, threads or None) of a `series_label`."""
    rest, _, threads = label.partition("@")
    engine, _, device = rest.partition("[")
    return engine, device.rstrip("]") or None, int(threads) if threads.isdigit() else None


def base_engine(label: str) -> str:
    """The engine of a plot label: 'slide@4' (slide at 4 threads, when a workload ran several) -> 'slide'."""
    return parse_label(label)[0]


def engine_order(labels: Iterable[str]) -> list[str]:
    """Known engines first in their fixed order, then the rest alphabetically; GPU before CPU;
    thread counts ascending."""

    def key(label: str) -> tuple[int, str, int, int]:
        engine, device, threads = parse_label(label)
        rank = ENGINE_ORDER.index(engine) if engine in ENGINE_ORDER else len(ENGINE_ORDER)
        return (rank, engine, 0 if device == "gpu" else 1, threads or 0)

    return sorted(set(labels), key=key)


LINESTYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx")


def variant(label: str, labels: Iterable[str]) -> int:
    """Index of `label` among the thread-count series of its engine ('slide@2' 0, 'slide@4' 1, ...).

    One engine keeps one colour; its thread counts differ by line style or hatch instead.
    """
    engine = base_engine(label)
    siblings = [x for x in engine_order(labels) if base_engine(x) == engine]
    return siblings.index(label) if label in siblings else 0


class EngineColours:
    """Colour per engine; unknown engines get palette colours by sorted name across the report."""

    def __init__(self, all_engines: Iterable[str]) -> None:
        extras = sorted({base_engine(e) for e in all_engines} - set(ENGINE_COLOURS))
        self._map = dict(ENGINE_COLOURS)
        for i, name in enumerate(extras):
            self._map[name] = EXTRA_PALETTE[i % len(EXTRA_PALETTE)]

    def __call__(self, engine: str) -> str:
        return self._map.get(base_engine(engine), "#333333")


def _cores_text(cores: Any) -> str:
    if isinstance(cores, Mapping):
        physical, logical = cores.get("physical"), cores.get("logical")
        if physical and logical and physical != logical:
            return f"{physical} cores / {logical} threads"
        return f"{physical or logical} cores"
    return f"{cores} cores" if cores not in (None, "") else "? cores"


def machine_type(env: Mapping[str, Any]) -> str:
    """'CPU model, N cores' of one record's environment: runs of one type have comparable speeds."""
    return f"{env.get('cpu_model') or 'unknown CPU'}, {_cores_text(env.get('cores'))}"


def machine_label(environments: Iterable[Mapping[str, Any]]) -> str:
    """'CPU model, N cores' of the records; the most common one, flagged when records disagree."""
    labels = Counter(machine_type(env) for env in environments)
    if not labels:
        return "unknown machine"
    (label, _), *others = labels.most_common()
    return f"{label} (+{len(others)} other machine(s))" if others else label


def new_figure(figsize: tuple[float, float] = FIGSIZE_SINGLE, ncols: int = 1) -> tuple[Figure, list[Any]]:
    """A figure with `ncols` side-by-side axes, laid out so titles and labels do not overlap."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def title(fig: Figure, what: str, workload: str, machine: str) -> None:
    fig.suptitle(f"{what}: {workload}\n{machine}", fontsize=11)
