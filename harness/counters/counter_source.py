"""Where a run's ``counters`` section comes from: perf, a cachegrind slice, or nowhere.

The one place that decides between the sources, in the order a run meets them:

1. before the worker starts, :func:`harness.counters.perf.wrap_command` wraps it in ``perf stat`` when the
   workload asks for perf (``[counters] perf = true``) and the machine allows it; after it exits,
   ``WrappedCommand.collect`` reads what perf counted (or why nothing was);
2. then, as a step of its own that the runner calls, :func:`needs_slice` says whether a short
   training slice must be replayed under valgrind: only when the workload asks for cache behaviour
   (``cachegrind = true``), the run trained something, and perf counts no hardware events here
   (off, missing, forbidden, or a virtual machine without a PMU). :func:`cachegrind_slice` runs it;
3. :func:`combine` makes the record's section: ``source`` is ``"cachegrind"`` when a slice
   succeeded (perf's software counts kept under ``cachegrind.perf``), else what perf said
   (``"perf"`` or ``"unavailable"``), with a failed slice's error added to the reason.

Counters never make a run fail: neither step raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.counters import cachegrind
from harness.counters.perf import PerfSupport, join_reasons

log = logging.getLogger("slidebench.counters")

PERF, CACHEGRIND, UNAVAILABLE = "perf", "cachegrind", "unavailable"


def needs_slice(counters_cfg: Mapping[str, Any], support: PerfSupport | None, samples: int) -> bool:
    """Whether the run's cache behaviour must be simulated: asked for, trained, and perf can't count it."""
    if samples <= 0:  # the run died or trained nothing: there is no slice to simulate
        return False
    wanted = bool(counters_cfg.get("cachegrind", False))
    return wanted and (support is None or not support.hardware)


def cachegrind_slice(
    worker_argv: Sequence[str], workdir: Path, counters_cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """Replay the run's first steps under valgrind (``cachegrind.run_slice``); never raises.

    Returns the ``counters.cachegrind`` section; its ``error`` says why a slice gave no counts.
    """
    try:
        return cachegrind.run_slice(
            worker_argv,
            workdir,
            int(counters_cfg.get("cachegrind_steps", 20)),
            timeout_s=float(counters_cfg.get("cachegrind_timeout_s", cachegrind.SLICE_TIMEOUT_S)),
        )
    except Exception as exc:  # a simulation bug must not cost the run its record
        log.exception("cachegrind slice crashed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def combine(perf_section: Mapping[str, Any], slice_result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's ``counters`` section from perf's and, when one ran, the slice's."""
    section = dict(perf_section)
    if slice_result is None:
        return section
    if slice_result.get("error"):
        section["reason"] = join_reasons(
            section["reason"], f"cachegrind slice failed: {slice_result['error']}"
        )
        section["cachegrind"] = dict(slice_result)
        return section
    perf_part = None
    if section["source"] == PERF:
        perf_part = {k: section[k] for k in ("scope", "events", "per_sample", "running_pct")}
    return {
        "source": CACHEGRIND,
        "scope": "training_region",
        "reason": join_reasons(
            section["reason"], f"cache behaviour simulated by cachegrind ({slice_result['method']})"
        ),
        "events": slice_result["events"],
        "per_sample": slice_result["per_sample"],
        "running_pct": {},
        "cachegrind": {**slice_result, "perf": perf_part},
    }
