"""slidebench harness: engine-agnostic data, workloads, runs, records, counters and reports."""

__version__ = "0.1.0"
