"""Data sets: the parsed-file cache, the manifest, and `load(spec) -> (train, test)`.

Contract (docs/design.md): `Dataset(name, features: Csr, labels: Csr, source)`; `read_xmc(path)`
parses the Extreme Classification Repository format (parser in `harness.xmc_text`) and caches the
result as binary CSR keyed by the file's sha256; `load(DatasetSpec, data_dir)` resolves a manifest
entry (files under the data directory, verified by size, shape and sha256) or generates synthetic
data (`harness.synth`, cached the same way), or a pair of users' own files named by path (verified
by the shape and sha256 recorded when the workload was loaded). `Progress` reports long parses
and generations on a terminal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from harness import REPO_ROOT
from harness.results import open_atomic
from harness.sparse import Csr
from harness.xmc_text import DataError, parse_xmc, read_header

__all__ = [
    "DataError",
    "Dataset",
    "DatasetSpec",
    "DatasetStats",
    "ManifestEntry",
    "Progress",
    "SplitFile",
    "cache_dir",
    "describe_file",
    "file_sha256",
    "load",
    "load_manifest",
    "read_toml",
    "read_xmc",
    "resolve_data_dir",
    "user_file_path",
]

log = logging.getLogger(__name__)

MANIFEST_PATH = REPO_ROOT / "datasets" / "manifest.toml"
# Bump when the parser's output for the same bytes changes, so stale cache entries are not reused.
# 2: control characters (form feed, vertical tab, ...) are refused instead of read as spaces.
PARSER_VERSION = 2
CACHE_FORMAT = 1


# --------------------------------------------------------------------------------------------------
# Dataset


@dataclass(frozen=True)
class DatasetStats:
    """Measured statistics of one split (what `slidebench data info` prints)."""

    points: int
    features: int
    labels: int
    nnz: int
    nnz_per_point: float
    labels_per_point: float
    points_without_labels: int
    points_without_features: int
    labels_used: int  # labels with at least one point in this split


@dataclass(frozen=True)
class Dataset:
    """One split: sparse features (with values) and labels (ids only), same number of rows."""

    name: str
    features: Csr
    labels: Csr
    source: str

    def __post_init__(self) -> None:
        if self.features.n_rows != self.labels.n_rows:
            raise ValueError(
                f"dataset {self.name}: {self.features.n_rows} feature rows but {self.labels.n_rows} label rows"
            )
        if self.features.values is None:
            raise ValueError(f"dataset {self.name}: features must carry values")

    @property
    def num_points(self) -> int:
        return self.features.n_rows

    @property
    def num_features(self) -> int:
        return self.features.n_cols

    @property
    def num_labels(self) -> int:
        return self.labels.n_cols

    def stats(self) -> DatasetStats:
        n = max(self.num_points, 1)
        f_counts = np.diff(self.features.indptr)
        l_counts = np.diff(self.labels.indptr)
        return DatasetStats(
            points=self.num_points,
            features=self.num_features,
            labels=self.num_labels,
            nnz=self.features.nnz,
            nnz_per_point=self.features.nnz / n,
            labels_per_point=self.labels.nnz / n,
            points_without_labels=int(np.count_nonzero(l_counts == 0)),
            points_without_features=int(np.count_nonzero(f_counts == 0)),
            labels_used=int(np.count_nonzero(np.bincount(self.labels.indices, minlength=1))),
        )


# --------------------------------------------------------------------------------------------------
# Cache: uncompressed .npz of the CSR arrays, written atomically, validated on read.


def cache_dir() -> Path:
    """`$SLIDEBENCH_CACHE`, else `<repo>/datasets/cache/` in a checkout, else `~/.cache/slidebench`.

    An installed wheel (asv's environments) has no `datasets/` folder beside the package; writing
    one into site-packages would shadow the Hugging Face `datasets` package.
    """
    env = os.environ.get("SLIDEBENCH_CACHE")
    if env:
        return Path(env)
    if (REPO_ROOT / "datasets" / "manifest.toml").is_file():
        return REPO_ROOT / "datasets" / "cache"
    return Path.home() / ".cache" / "slidebench"


def _save_arrays(path: Path, train: Dataset, test: Dataset | None = None) -> None:
    arrays: dict[str, np.ndarray] = {"format": np.asarray([CACHE_FORMAT])}
    for prefix, ds in (("train", train), ("test", test)):
        if ds is None:
            continue
        arrays.update(
            {
                f"{prefix}_f_indptr": ds.features.indptr,
                f"{prefix}_f_indices": ds.features.indices,
                f"{prefix}_f_values": ds.features.values,
                f"{prefix}_l_indptr": ds.labels.indptr,
                f"{prefix}_l_indices": ds.labels.indices,
                f"{prefix}_shape": np.asarray([ds.num_points, ds.num_features, ds.num_labels], dtype=np.int64),
            }
        )
    # Streamed into a temporary file and renamed: readers never see a half-written entry, and an
    # entry of hundreds of MB is never held in memory a second time as one bytes object.
    with open_atomic(path) as fh:
        np.savez(fh, **arrays)


def _dataset_from(arrays: Mapping[str, np.ndarray], prefix: str, name: str, source: str) -> Dataset:
    n, d, l = (int(x) for x in arrays[f"{prefix}_shape"])
    features = Csr(arrays[f"{prefix}_f_indptr"], arrays[f"{prefix}_f_indices"], arrays[f"{prefix}_f_values"], d)
    labels = Csr(arrays[f"{prefix}_l_indptr"], arrays[f"{prefix}_l_indices"], None, l)
    for what, m in (("features", features), ("labels", labels)):
        if m.n_rows != n:
            raise ValueError(f"{what}: {m.n_rows} rows, expected {n}")
        if m.nnz and (int(m.indices.min()) < 0 or int(m.indices.max()) >= m.n_cols):
            raise ValueError(f"{what}: ids out of range")
        if np.any(np.diff(m.indptr) < 0):
            raise ValueError(f"{what}: indptr not monotone")
    return Dataset(name, features, labels, source)


def _load_cached(path: Path, prefixes: tuple[str, ...], name: str, source: str) -> list[Dataset] | None:
    """The cached splits, or None when absent; a corrupt entry is logged, removed and reported absent."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        if int(arrays["format"][0]) != CACHE_FORMAT:
            raise ValueError(f"cache format {int(arrays['format'][0])}, expected {CACHE_FORMAT}")
        return [_dataset_from(arrays, p, name, source) for p in prefixes]
    except Exception as exc:  # noqa: BLE001 -- any damage at all (truncated zip, missing key, bad arrays): rebuild
        log.warning("ignoring corrupt cache entry %s (%s); rebuilding", path, exc)
        path.unlink(missing_ok=True)
        return None


# --------------------------------------------------------------------------------------------------
# Progress of long data work


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
            text += f" ({100 * min(fraction, 1.0):.0f}%, ETA {_duration(elapsed * (1 - fraction) / fraction)})"
        print(text, file=self.stream, flush=True)
        self.printed = True

    def close(self) -> None:
        """A closing line, only when progress lines were printed."""
        if self.printed:
            print(f"{self.what}: done in {_duration(self.clock() - self.started)}", file=self.stream, flush=True)
            self.printed = False


# --------------------------------------------------------------------------------------------------
# Reading files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_xmc(
    path: str | Path,
    *,
    name: str | None = None,
    header: bool | None = None,
    num_features: int | None = None,
    num_labels: int | None = None,
    use_cache: bool = True,
    expected_sha256: str | None = None,
) -> Dataset:
    """Parse one XMC / multi-label LIBSVM file (see `harness.xmc_text.parse_xmc`), through the cache.

    Raises DataError naming file and line for malformed input, and FileNotFoundError when absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    sha = file_sha256(path)  # streamed: a cache hit never holds the text in memory
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise DataError(f"{path}: sha256 {sha} does not match the expected {expected_sha256} (wrong or changed file?)")
    name = name or path.stem
    options = f"v{PARSER_VERSION}-h{header}-d{num_features}-l{num_labels}"
    entry = cache_dir() / f"xmc-{sha[:40]}-{hashlib.sha256(options.encode()).hexdigest()[:12]}.npz"
    if use_cache:
        cached = _load_cached(entry, ("train",), name, str(path))
        if cached is not None:
            log.debug("%s: cache hit %s", path, entry)
            return cached[0]
    progress = Progress(f"parsing {path}")
    parsed = parse_xmc(
        path.read_bytes(),
        path,
        header=header,
        num_features=num_features,
        num_labels=num_labels,
        progress=progress.update,
    )
    progress.close()
    dataset = Dataset(
        name,
        Csr(parsed.f_indptr, parsed.f_indices, parsed.f_values, parsed.num_features),
        Csr(parsed.l_indptr, parsed.l_indices, None, parsed.num_labels),
        str(path),
    )
    if use_cache:
        try:
            _save_arrays(entry, dataset)
        except OSError as exc:  # a read-only cache must not stop anyone from reading data
            log.warning("could not write cache entry %s: %s", entry, exc)
    return dataset


# --------------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class SplitFile:
    """One file of a manifest entry and what it must contain."""

    file: str  # relative to the data directory
    points: int
    features: int
    labels: int
    bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    title: str
    source: str  # provenance
    get: str  # where users get the files
    train: SplitFile
    test: SplitFile
    published: Mapping[str, float]  # published statistics (avg labels/point etc.), for reference


_ENTRY_KEYS = {"title", "source", "get", "train", "test", "published"}
_SPLIT_KEYS = {"file", "points", "features", "labels", "bytes", "sha256"}


def _split_from(raw: Any, where: str) -> SplitFile:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _SPLIT_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("file", "points", "features", "labels"):
        if key not in raw:
            raise DataError(f"{where}: missing key {key!r}")
    if not isinstance(raw["file"], str):
        raise DataError(f"{where}.file: must be a string")
    for key in ("points", "features", "labels", "bytes"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] <= 0):
            raise DataError(f"{where}.{key}: must be a positive integer")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise DataError(f"{where}.sha256: must be 64 hex digits")
    return SplitFile(raw["file"], raw["points"], raw["features"], raw["labels"], raw.get("bytes"), sha)


def read_toml(path: str | Path, error: type[ValueError] = DataError) -> dict[str, Any]:
    """The table of a TOML file; `error` naming the file when it is not UTF-8 or not valid TOML.

    tomllib's own errors name neither the file nor, for bytes that are not UTF-8, the line.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
            "TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def load_manifest(path: Path | None = None) -> dict[str, ManifestEntry]:
    """All entries of `datasets/manifest.toml`; DataError naming the key for a malformed one."""
    path = Path(path) if path else MANIFEST_PATH
    doc = read_toml(path)
    entries: dict[str, ManifestEntry] = {}
    for name, raw in doc.get("datasets", {}).items():
        where = f"{path}: datasets.{name}"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: must be a table")
        unknown = sorted(set(raw) - _ENTRY_KEYS)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("title", "source", "get", "train", "test"):
            if key not in raw:
                raise DataError(f"{where}: missing key {key!r}")
        published = raw.get("published", {})
        if not all(isinstance(v, int | float) for v in published.values()):
            raise DataError(f"{where}.published: values must be numbers")
        entries[name] = ManifestEntry(
            name,
            str(raw["title"]),
            str(raw["source"]),
            str(raw["get"]),
            _split_from(raw["train"], f"{where}.train"),
            _split_from(raw["test"], f"{where}.test"),
            dict(published),
        )
    return entries


# --------------------------------------------------------------------------------------------------
# Specs and load()


@dataclass(frozen=True)
class DatasetSpec:
    """A manifest entry (`name`), synthetic data (`synthetic` preset, `scale`, `seed`), or users' own
    files (`train` and `test`: what each must contain, as `describe_file` measured it)."""

    name: str | None = None
    synthetic: str | None = None
    scale: float = 1.0
    seed: int = 0
    train: SplitFile | None = None
    test: SplitFile | None = None

    def __post_init__(self) -> None:
        if (self.train is None) != (self.test is None):
            raise ValueError("dataset: 'train' and 'test' files are given together")
        kinds = [self.name is not None, self.synthetic is not None, self.train is not None]
        if sum(kinds) != 1:
            raise ValueError(
                "dataset: give exactly one of 'name' (manifest entry), 'synthetic' (preset) "
                "and 'train' + 'test' (files)"
            )
        if self.synthetic is None and (self.scale != 1.0 or self.seed != 0):
            raise ValueError("dataset: 'scale' and 'seed' apply to synthetic data only")
        if not (isinstance(self.scale, int | float) and not isinstance(self.scale, bool) and 0 < self.scale <= 1000):
            raise ValueError(f"dataset.scale: must be a number in (0, 1000], got {self.scale!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"dataset.seed: must be a non-negative integer, got {self.seed!r}")

    @property
    def label(self) -> str:
        """Short human-readable identity, e.g. 'delicious' or 'synthetic:amazon-670k@0.02/s0'."""
        if self.name is not None:
            return self.name
        if self.train is not None and self.test is not None:
            return f"files:{self.train.file},{self.test.file}"
        return f"synthetic:{self.synthetic}@{self.scale:g}/s{self.seed}"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the argument, else `$SLIDEBENCH_DATA`."""
    chosen = explicit if explicit is not None else os.environ.get("SLIDEBENCH_DATA")
    if not chosen:
        raise DataError("no data directory: pass --data-dir or set SLIDEBENCH_DATA")
    path = Path(chosen)
    if not path.is_dir():
        raise FileNotFoundError(f"data directory not found: {path}")
    return path


def user_file_path(file: str, data_dir: str | Path | None = None) -> Path:
    """Where a user's data file named in a workload is: an absolute path as is, a relative one under
    the data directory (`data_dir`, else `$SLIDEBENCH_DATA`)."""
    path = Path(file).expanduser()
    return path if path.is_absolute() else resolve_data_dir(data_dir) / path


# sha256 of users' files by (path, inode, size, mtime, ctime): validating a workload and expanding it again (or a
# suite of workloads sharing files) hashes each file once per process, not once per look.
_SHA_MEMO: dict[tuple[str, int, int, int, int], str] = {}


def describe_file(file: str, data_dir: str | Path | None = None) -> SplitFile:
    """A user's data file as a `SplitFile`: the path as given, the shape from its ``N D L`` header,
    its size and sha256 (streamed). FileNotFoundError / DataError name the file."""
    path = user_file_path(file, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    points, features, labels = read_header(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return SplitFile(file, points, features, labels, st.st_size, _SHA_MEMO[key])


def _load_split(
    name: str, split: SplitFile, path: Path, which: str, get: str | None, expects: str = "the manifest expects"
) -> Dataset:
    if not path.is_file():
        hint = f". Get it from: {get} (place it at <data dir>/{split.file})" if get else ""
        raise FileNotFoundError(f"{name} {which} file not found: {path}{hint}")
    size = path.stat().st_size
    if split.bytes is not None and size != split.bytes:
        raise DataError(f"{path}: {size} bytes, {expects} {split.bytes} (wrong or damaged file?)")
    dataset = read_xmc(path, name=name, header=True, expected_sha256=split.sha256)
    got = (dataset.num_points, dataset.num_features, dataset.num_labels)
    want = (split.points, split.features, split.labels)
    if got != want:
        raise DataError(f"{path}: shape (points, features, labels) = {got}, {expects} {want}")
    return dataset


def load(spec: DatasetSpec, data_dir: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """(train, test) for a spec. Real data comes from the data directory; synthetic data is
    generated (or read from the cache)."""
    if spec.synthetic is not None:
        from harness import synth  # numpy only, but keeps the module graph one-directional

        return synth.load_synthetic(spec.synthetic, spec.scale, spec.seed)
    if spec.train is not None and spec.test is not None:
        # Users' own files: verified against the size, shape and sha256 recorded in the run's spec
        # when the workload was loaded, so a file edited since then is refused, not silently used.
        expects = "the workload's spec recorded"
        train = _load_split(
            spec.label, spec.train, user_file_path(spec.train.file, data_dir), "train", None, expects
        )
        test = _load_split(spec.label, spec.test, user_file_path(spec.test.file, data_dir), "test", None, expects)
    else:
        manifest = load_manifest()
        assert spec.name is not None
        if spec.name not in manifest:
            raise DataError(f"unknown data set {spec.name!r}; the manifest has: {', '.join(sorted(manifest))}")
        entry = manifest[spec.name]
        directory = resolve_data_dir(data_dir)
        train = _load_split(entry.name, entry.train, directory / entry.train.file, "train", entry.get)
        test = _load_split(entry.name, entry.test, directory / entry.test.file, "test", entry.get)
    if (train.num_features, train.num_labels) != (test.num_features, test.num_labels):
        raise DataError(f"{spec.label}: train and test disagree on the number of features or labels")
    return train, test


def save_pair(path: Path, train: Dataset, test: Dataset) -> None:
    """Cache a (train, test) pair in one atomic entry (used by the synthetic generator)."""
    _save_arrays(path, train, test)


def load_pair(path: Path, name: str, source: str) -> tuple[Dataset, Dataset] | None:
    """A cached (train, test) pair, or None when absent or corrupt."""
    got = _load_cached(path, ("train", "test"), name, source)
    return None if got is None else (got[0], got[1])
