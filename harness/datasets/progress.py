"""Progress of long data work: a line on stderr every few seconds (done/total, percent, ETA)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A line on stderr every few seconds while long data work runs: done/total, percent, ETA.

    Quiet when stderr is not a terminal (a worker's captured stderr, CI logs: they want results, not
    a ticker) and during the first AFTER_S seconds, so work that ends quickly says nothing.
    Used by the parser (`read_xmc`) and the synthetic generator.
    """

    AFTER_S = 2.0  # silent before this: most loads are cache hits or small files
    EVERY_S = 5.0  # then a line this often

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "points",
        stream: TextIO | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.next_at = self.started + self.AFTER_S
        self.printed = False

    def update(self, done: int, total: int | None = None, fraction: float | None = None) -> None:
        """`done` units so far (of `total`, when known); `fraction` of the work done, when the units
        do not measure it (a file without a header: its bytes do)."""
        if not self.enabled:
            return
        now = self.clock()
        if now < self.next_at:
            return
        self.next_at = now + self.EVERY_S
        total = self.total if total is None else total
        if fraction is None and total:
            fraction = done / total
        text = f"{self.what}: {done:,}" + (f"/{total:,}" if total else "") + f" {self.unit}"
        if fraction is not None and fraction > 0:
            elapsed = now - self.started
            text += (
                f" ({100 * min(fraction, 1.0):.0f}%, ETA {_duration(elapsed * (1 - fraction) / fraction)})"
            )
        print(text, file=self.stream, flush=True)
        self.printed = True

    def close(self) -> None:
        """A closing line, only when progress lines were printed."""
        if self.printed:
            print(
                f"{self.what}: done in {_duration(self.clock() - self.started)}", file=self.stream, flush=True
            )
            self.printed = False
