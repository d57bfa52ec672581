"""Data sets: the parsed-file cache, the manifest, and `load(spec) -> (train, test)`.

Contract (docs/design.md): `Dataset(name, features: Csr, labels: Csr, source)` and `DatasetSpec`
(both defined in `harness.datasets.dataset`, re-exported here); `read_xmc(path)`
parses the Extreme Classification Repository format (parser in `harness.datasets.xmc_text`) and caches the
result as binary CSR keyed by the file's sha256; `load(DatasetSpec, data_dir)` resolves a manifest
entry (files under the data directory, verified by size, shape and sha256) or generates synthetic
data (`harness.datasets.synth`, cached the same way), or a pair of users' own files named by path (verified
by the shape and sha256 recorded when the workload was loaded). `Progress` reports long parses
and generations on a terminal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT
from harness.datasets import synth
from harness.datasets.dataset import (
    Dataset,
    DatasetSpec,
    DatasetStats,
    SplitFile,
    cache_dir,
    load_cached,
    save_arrays,
)
from harness.datasets.progress import Progress
from harness.datasets.sparse import Csr
from harness.datasets.xmc_text import DataError, parse_xmc, read_header, write_xmc

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


# --------------------------------------------------------------------------------------------------
# Reading files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_dataset(path: Path, ds: Dataset) -> Path:
    """One split in the XMC text format (atomically, see harness.datasets.xmc_text.write_xmc)."""
    write_xmc(
        path, ds.labels.indptr, ds.labels.indices, ds.features.indptr, ds.features.indices,
        ds.features.values, ds.num_features, ds.num_labels,
    )  # fmt: skip
    return path


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
    """Parse one XMC / multi-label LIBSVM file (see `harness.datasets.xmc_text.parse_xmc`), through the cache.

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
        cached = load_cached(entry, ("train",), name, str(path))
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
            save_arrays(entry, dataset)
        except OSError as exc:  # a read-only cache must not stop anyone from reading data
            log.warning("could not write cache entry %s: %s", entry, exc)
    return dataset


# --------------------------------------------------------------------------------------------------
# Manifest


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
# load()


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
