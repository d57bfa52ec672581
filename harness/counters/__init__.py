"""Hardware counters of a run: perf, the cachegrind slice, and which of them a record gets."""
