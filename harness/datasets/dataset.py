"""What a data set is: the spec that names one, the (train, test) splits in memory, and their cache.

Below every other data module (`harness.datasets.data`, `harness.datasets.synth`, `harness.datasets.twin` import it; it imports
none of them), and light: validating a workload builds a `DatasetSpec` without loading data code.
The cache is uncompressed `.npz` of the CSR arrays, written atomically and validated on read: parsed
files (`harness.datasets.data.read_xmc`) and generated presets (`harness.datasets.synth.load_synthetic`) share it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import REPO_ROOT
from harness.datasets.sparse import Csr
from harness.store.results import open_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


# --------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class SplitFile:
    """One file of a data set (a manifest entry's or a user's) and what it must contain."""

    file: str  # relative to the data directory
    points: int
    features: int
    labels: int
    bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A manifest entry (`name`), synthetic data (`synthetic` preset, `scale`, `seed`), or users' own
    files (`train` and `test`: what each must contain, as `harness.datasets.data.describe_file` measured it:
    path as written, header shape, bytes, sha256). The files' checksums are part of a run's spec, so
    its id and record say exactly which bytes it trained on, as for a manifest entry."""

    name: str | None = None
    synthetic: str | None = None
    scale: float = 1.0
    seed: int = 0
    train: SplitFile | None = None
    test: SplitFile | None = None

    def __post_init__(self) -> None:
        # A spec read back from JSON (a worker's SPEC.json) carries the files as tables.
        for key in ("train", "test"):
            value = getattr(self, key)
            if isinstance(value, Mapping):
                object.__setattr__(self, key, SplitFile(**value))
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
        if not (
            isinstance(self.scale, int | float)
            and not isinstance(self.scale, bool)
            and 0 < self.scale <= 1000
        ):
            raise ValueError(f"dataset.scale: must be a number in (0, 1000], got {self.scale!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"dataset.seed: must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """The run spec's `dataset` table: only the keys of its kind."""
        if self.name is not None:
            return {"name": self.name}
        if self.train is not None and self.test is not None:
            return {"train": asdict(self.train), "test": asdict(self.test)}
        return {"synthetic": self.synthetic, "scale": self.scale, "seed": self.seed}

    @property
    def label(self) -> str:
        """Short human-readable identity, e.g. 'delicious' or 'synthetic:amazon-670k@0.02/s0'."""
        if self.name is not None:
            return self.name
        if self.train is not None and self.test is not None:
            return f"files:{self.train.file},{self.test.file}"
        return f"synthetic:{self.synthetic}@{self.scale:g}/s{self.seed}"


# --------------------------------------------------------------------------------------------------
# Splits in memory


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
# Cache


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


def save_arrays(path: Path, train: Dataset, test: Dataset | None = None) -> None:
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
                f"{prefix}_shape": np.asarray(
                    [ds.num_points, ds.num_features, ds.num_labels], dtype=np.int64
                ),
            }
        )
    # Streamed into a temporary file and renamed: readers never see a half-written entry, and an
    # entry of hundreds of MB is never held in memory a second time as one bytes object.
    with open_atomic(path) as fh:
        np.savez(fh, **arrays)


def _dataset_from(arrays: Mapping[str, np.ndarray], prefix: str, name: str, source: str) -> Dataset:
    n, d, l = (int(x) for x in arrays[f"{prefix}_shape"])
    features = Csr(
        arrays[f"{prefix}_f_indptr"], arrays[f"{prefix}_f_indices"], arrays[f"{prefix}_f_values"], d
    )
    labels = Csr(arrays[f"{prefix}_l_indptr"], arrays[f"{prefix}_l_indices"], None, l)
    for what, m in (("features", features), ("labels", labels)):
        if m.n_rows != n:
            raise ValueError(f"{what}: {m.n_rows} rows, expected {n}")
        if m.nnz and (int(m.indices.min()) < 0 or int(m.indices.max()) >= m.n_cols):
            raise ValueError(f"{what}: ids out of range")
        if np.any(np.diff(m.indptr) < 0):
            raise ValueError(f"{what}: indptr not monotone")
    return Dataset(name, features, labels, source)


def load_cached(path: Path, prefixes: tuple[str, ...], name: str, source: str) -> list[Dataset] | None:
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


def save_pair(path: Path, train: Dataset, test: Dataset) -> None:
    """Cache a (train, test) pair in one atomic entry (used by the synthetic generator)."""
    save_arrays(path, train, test)


def load_pair(path: Path, name: str, source: str) -> tuple[Dataset, Dataset] | None:
    """A cached (train, test) pair, or None when absent or corrupt."""
    got = load_cached(path, ("train", "test"), name, source)
    return None if got is None else (got[0], got[1])
