"""Parse speed of the XMC text reader on a generated Amazon-670K-sized file.

asv: `ParseAmazon670k.time_parse` (seconds to parse the train file, cache off) and
`track_parse_lines_per_s`. `setup_cache` generates the synthetic amazon-670k train split at full
scale (490,449 lines, ~73 nnz, ~5.45 labels, tf-idf values) and writes it as XMC text once.

Plain script:

    python benchmarks/bench_data.py [--scale 1.0] [--repeat 1] [--keep PATH]

prints lines/s, MB/s, the generation and writing time, and a cache-hit load time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without install. Only then: under `asv continuous` the installed commit's
# harness must be the one timed, not the working tree's.
if importlib.util.find_spec("harness") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESET = "amazon-670k"


def build_file(path: Path, scale: float = 1.0, seed: int = 0) -> int:
    """Write the synthetic preset's train split as XMC text at `path`; returns its line count."""
    from harness.datasets import synth
    from harness.datasets.xmc_text import write_xmc

    train, _ = synth.generate(PRESET, scale, seed)
    write_xmc(
        path,
        train.labels.indptr,
        train.labels.indices,
        train.features.indptr,
        train.features.indices,
        train.features.values,
        train.num_features,
        train.num_labels,
    )
    return train.num_points


def parse_once(path: Path):
    from harness.datasets.data import read_xmc

    return read_xmc(path, use_cache=False)


class ParseAmazon670k:
    """Full-size parse; one `setup_cache` builds the file (about a minute), benchmarks reuse it."""

    timeout = 900
    number = 1
    repeat = 3

    def setup_cache(self) -> tuple[str, int]:
        # asv runs setup_cache in a scratch directory that it keeps for the benchmarks and removes
        # afterwards: the 560 MB file lives there, not in /tmp.
        path = Path.cwd() / "amazon670k_train.txt"
        lines = build_file(path)
        return str(path), lines

    def time_parse(self, cache: tuple[str, int]) -> None:
        parse_once(Path(cache[0]))

    def track_parse_lines_per_s(self, cache: tuple[str, int]) -> float:
        started = time.perf_counter()
        parse_once(Path(cache[0]))
        return cache[1] / (time.perf_counter() - started)

    track_parse_lines_per_s.unit = "lines/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Amazon-670K's 490,449 train lines")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="write the text file here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="slidebench-bench-data-") as tmp:
        path = args.keep or Path(tmp) / "amazon670k_train.txt"
        started = time.perf_counter()
        lines = build_file(path, args.scale)
        built = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        print(f"generated + wrote {lines:,} lines ({size_mb:,.0f} MB) in {built:.1f} s")
        for _ in range(args.repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            ds = parse_once(path)
            dt, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            # CPU seconds too: on a shared, loaded machine they say more than the wall clock.
            print(
                f"parse: {dt:.2f} s wall, {cpu:.2f} s CPU  {lines / dt:,.0f} lines/s  "
                f"({lines / cpu:,.0f} per CPU-second)  {size_mb / dt:,.1f} MB/s  "
                f"({ds.features.nnz / ds.num_points:.1f} nnz/line, {ds.labels.nnz / ds.num_points:.2f} labels/line)"
            )
        # Cache round: the first cached read parses and stores, the second is a cache hit.
        os.environ["SLIDEBENCH_CACHE"] = str(Path(tmp) / "cache")  # never touch the user's cache
        from harness.datasets.data import read_xmc

        read_xmc(path)
        started = time.perf_counter()
        read_xmc(path)
        print(f"cache-hit load (sha256 of the file + npz read): {time.perf_counter() - started:.2f} s")
        print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
