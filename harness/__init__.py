"""slidebench harness: engine-agnostic data, workloads, runs, records, counters and reports."""

from pathlib import Path

__version__ = "0.1.0"

# The checkout this package was imported from: workloads/, datasets/, results/ and .ci/ live here.
REPO_ROOT = Path(__file__).resolve().parent.parent
