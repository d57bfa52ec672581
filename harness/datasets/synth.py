"""Seeded, deterministic, learnable synthetic multi-label data of a given shape.

The paper-scale sets (Amazon-670K, Delicious-200K) are not shipped; this generator makes data of
the same shape so that the paper-scale workloads run anywhere. The model of a "document":

- Label frequencies follow a Zipf-like power law over a seeded random order of the label ids
  (XMC label frequencies are heavy-tailed: few head labels, a long tail of rare ones).
- Each label owns a small random set of "signature" features (its topic words). A point draws its
  labels, then most of its feature draws from its labels' signatures and the rest as noise from a
  Zipf-distributed vocabulary (common words, shared by everything).
- Values are tf-idf-like: (1 + log count) times an idf that is low for common noise words, rows
  L2-normalised (positive, finite).

So a feature->label association exists to be learned (a label-centroid model reaches a P@1 far
above the majority-label baseline; tests check this), and the sparsity and label statistics match
the preset. (This describes `small` and `tiny`; since generator v5 the paper-scale presets
amazon-670k and delicious-200k come from `harness.datasets.twin`, which adds label clusters that co-occur and
share features, and takes its difficulty from fits to real sets.) Everything is vectorised over blocks of points; a block's random stream depends only on
(seed, split, block index), so results do not depend on memory-driven choices elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from harness.datasets import twin
from harness.datasets.dataset import Dataset, cache_dir, load_pair, save_pair
from harness.datasets.progress import Progress
from harness.datasets.sparse import Csr, vstack

log = logging.getLogger(__name__)

# Bump whenever the output for the same (preset, scale, seed) changes: it is part of the cache key.
# 5: amazon-670k and delicious-200k come from the clustered twin generator (harness.datasets.twin).
GENERATOR_VERSION = 5
BLOCK_POINTS = 32_768
CALIBRATION_POINTS = 4_000


@dataclass(frozen=True)
class Preset:
    """The shape of a synthetic set and the knobs of its generative model."""

    name: str
    num_features: int
    num_labels: int
    train_points: int
    test_points: int
    labels_per_point: float  # target mean after removing duplicate draws
    nnz_per_point: float  # target mean number of distinct features per point
    signature_size: int = 16  # features owned by each label
    signal_fraction: float = 0.7  # share of feature draws taken from the point's labels' signatures
    label_zipf: float = 1.0  # exponent of the label-frequency power law
    label_zipf_offset: float = 5.0  # flattens the extreme head a little (Zipf-Mandelbrot)
    feature_zipf: float = 1.0  # exponent of the noise-vocabulary power law
    description: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "amazon-670k", 135_909, 670_091, 490_449, 153_025, 5.45, 75.0,
            description="shape of Amazon-670K (SLIDE paper; Extreme Classification Repository)",
        ),
        Preset(
            "delicious-200k", 782_585, 205_443, 196_606, 100_095, 75.5, 300.0, signature_size=24,
            # 75 label draws per point: with the default offset the top labels would sit in two thirds
            # of all points (always predicting them scored P@1 0.68); a flatter head keeps it a
            # learning problem rather than a popularity contest.
            signal_fraction=0.6, label_zipf_offset=60.0,
            description="shape of Delicious-200K (SLIDE paper; Extreme Classification Repository)",
        ),
        Preset(
            "small", 20_000, 5_000, 20_000, 5_000, 4.0, 40.0,
            description="small: quick experiments and benchmarks on a laptop",
        ),
        Preset(
            "tiny", 2_000, 500, 2_000, 500, 3.0, 20.0, signature_size=10,
            description="tiny: unit tests and CI smoke runs",
        ),
    )
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def split_points(p: Preset, scale: float) -> tuple[int, int]:
    """(train, test) point counts at `scale` (at least one point each)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    return max(1, round(p.train_points * scale)), max(1, round(p.test_points * scale))


@dataclass(frozen=True)
class _World:
    """What train and test share: label frequencies, signatures, vocabulary and idf."""

    label_law: _PowerLaw  # label frequencies
    signatures: np.ndarray  # int32[L, S]
    noise_law: _PowerLaw  # noise-word frequencies
    idf: np.ndarray  # float32[D]
    label_draws: float  # mean label draws per point (before removing duplicates)
    feature_draws: float  # mean feature draws per point (before merging repeats)


@dataclass(frozen=True)
class _PowerLaw:
    """A Zipf-Mandelbrot-like law over ids: rank r has mass proportional to the integral of
    x**-exponent over [r + 1 + offset, r + 2 + offset], and rank r is id order[r] (a seeded random
    order). Defined through its continuous CDF so that sampling is an O(1) closed-form inverse
    (a binary search over a CDF of 10**5-10**6 entries is cache-hostile and was the bottleneck)."""

    n: int
    exponent: float
    offset: float
    order: np.ndarray  # int64[n]: order[rank] = id

    def _lo_hi(self) -> tuple[float, float]:
        return 1.0 + self.offset, self.n + 1.0 + self.offset

    def _cdf_x(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self._lo_hi()
        if self.exponent == 1.0:
            return np.log(x / lo) / np.log(hi / lo)
        e = 1.0 - self.exponent
        return (x**e - lo**e) / (hi**e - lo**e)

    def prob_by_id(self) -> np.ndarray:
        lo, _ = self._lo_hi()
        edges = self._cdf_x(lo + np.arange(self.n + 1, dtype=np.float64))
        prob = np.empty(self.n, dtype=np.float64)
        prob[self.order] = np.diff(edges)
        return prob

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        lo, hi = self._lo_hi()
        u = rng.random(size)
        if self.exponent == 1.0:
            x = lo * np.exp(u * np.log(hi / lo))
        else:
            e = 1.0 - self.exponent
            x = (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)
        rank = np.minimum((x - lo).astype(np.int64), self.n - 1)
        return self.order[rank]


def _power_law(n: int, exponent: float, offset: float, rng: np.random.Generator) -> _PowerLaw:
    return _PowerLaw(n, float(exponent), float(offset), rng.permutation(n).astype(np.int64))


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and their multiplicities (sort + diff: faster here than np.unique)."""
    keys = np.sort(keys)
    if len(keys) == 0:
        return keys, np.zeros(0, dtype=np.int64)
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(keys)))
    return keys[starts], counts


def _solve_draws(prob: np.ndarray, target: float) -> float:
    """Draws per point whose expected number of distinct ids is `target` (duplicates are removed
    later): solves sum_i 1 - (1 - p_i)^draws = target by bisection."""
    log_miss = np.log1p(-np.minimum(prob, 1 - 1e-12))

    def distinct(draws: float) -> float:
        return float(-np.expm1(draws * log_miss).sum())

    lo, hi = target, target * 4 + 10
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if distinct(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _world(p: Preset, seed: int) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    label_law = _power_law(p.num_labels, p.label_zipf, p.label_zipf_offset, rng)
    label_prob = label_law.prob_by_id()
    signatures = rng.integers(0, p.num_features, size=(p.num_labels, p.signature_size), dtype=np.int32)
    noise_law = _power_law(p.num_features, p.feature_zipf, 0.0, rng)
    noise_prob = noise_law.prob_by_id()
    # idf: common noise words weigh little, rare (signature) words a lot; bounded to [1, ~log D].
    idf = (1.0 + np.log(noise_prob.max() / noise_prob)).astype(np.float32)
    target_labels = min(p.labels_per_point, p.num_labels)
    label_draws = _solve_draws(label_prob, target_labels)
    # Repeated feature draws merge into counts; estimate the merge rate on a mixture (signature
    # draws spread over a point's labels, noise draws over the vocabulary) by solving with the
    # point's effective distribution: signature words are near-uniform over labels*S ids.
    sig_ids = max(1.0, target_labels * p.signature_size)
    mix = np.concatenate([np.full(int(min(sig_ids, 1e6)), p.signal_fraction / min(sig_ids, 1e6)),
                          (1 - p.signal_fraction) * noise_prob])
    target_nnz = min(p.nnz_per_point, p.num_features * 0.5)
    feature_draws = _solve_draws(mix, target_nnz)
    world = _World(label_law, signatures, noise_law, idf, label_draws, feature_draws)
    # The mixture estimate ignores how labels per point vary; calibrate the draws on a small seeded
    # sample so that the mean nnz per point lands on the target (two fixed-point steps suffice).
    for step in range(2):
        sample_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, step)))
        features, _ = _block(p, world, CALIBRATION_POINTS, sample_rng)
        measured = features.nnz / CALIBRATION_POINTS
        world = replace(world, feature_draws=world.feature_draws * target_nnz / measured)
    return world


def _block(p: Preset, world: _World, n: int, rng: np.random.Generator) -> tuple[Csr, Csr]:
    """`n` points: (features, labels)."""
    L, D = p.num_labels, p.num_features
    # Labels: at least one draw per point, the rest Poisson, duplicates removed.
    k = 1 + rng.poisson(max(world.label_draws - 1.0, 0.0), size=n)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    drawn = world.label_law.sample(rng, len(rows))
    key, _ = _unique_counts(rows * L + drawn)
    l_rows, l_ids = key // L, (key % L).astype(np.int32)
    l_counts = np.bincount(l_rows, minlength=n)
    l_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(l_counts, out=l_indptr[1:])
    # Features: m draws per point, each from a signature (of a random one of the point's labels)
    # with probability signal_fraction, else a noise word.
    m = np.maximum(1, rng.poisson(world.feature_draws, size=n))
    f_rows = np.repeat(np.arange(n, dtype=np.int64), m)
    total = len(f_rows)
    signal = rng.random(total) < p.signal_fraction
    s_rows = f_rows[signal]
    pick = l_indptr[s_rows] + (rng.random(len(s_rows)) * l_counts[s_rows]).astype(np.int64)
    owner = l_ids[pick]
    feats = np.empty(total, dtype=np.int64)
    feats[signal] = world.signatures[owner, rng.integers(0, p.signature_size, size=len(s_rows))]
    n_noise = total - len(s_rows)
    feats[~signal] = world.noise_law.sample(rng, n_noise)
    fkey, counts = _unique_counts(f_rows * D + feats)
    fr, fid = fkey // D, fkey % D
    values = (1.0 + np.log(counts)) * world.idf[fid]
    norms = np.sqrt(np.bincount(fr, weights=values * values, minlength=n))
    values = (values / norms[fr]).astype(np.float32)
    f_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(fr, minlength=n), out=f_indptr[1:])
    return Csr(f_indptr, fid.astype(np.int32), values, D), Csr(l_indptr, l_ids, None, L)




def _split(
    p: Preset,
    world: _World,
    n: int,
    seed: int,
    split_id: int,
    name: str,
    on_block: Callable[[int], None] | None = None,
) -> Dataset:
    """`n` points of one split; `on_block(points)` after each block (progress)."""
    feats: list[Csr] = []
    labels: list[Csr] = []
    for b, start in enumerate(range(0, n, BLOCK_POINTS)):
        size = min(BLOCK_POINTS, n - start)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, split_id, b)))
        f, lab = _block(p, world, size, rng)
        feats.append(f)
        labels.append(lab)
        if on_block is not None:
            on_block(size)
    return Dataset(
        name,
        vstack(feats, p.num_features, True),
        vstack(labels, p.num_labels, False),
        f"synthetic:{p.name} generator v{GENERATOR_VERSION}",
    )


def generate(name: str | Preset, scale: float = 1.0, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of a preset at `scale` (scales the number of points only). No cache."""
    p = name if isinstance(name, Preset) else preset(name)
    n_train, n_test = split_points(p, scale)
    if not isinstance(name, Preset) and p.name in twin.PRESET_NAMES:
        return _twin_preset(p, scale, seed)
    started = time.perf_counter()
    label = f"synthetic:{p.name}@{scale:g}/s{seed}"
    progress = Progress(f"generating {label}", n_train + n_test)
    done = 0

    def on_block(points: int) -> None:
        nonlocal done
        done += points
        progress.update(done)

    world = _world(p, seed)
    train = _split(p, world, n_train, seed, 0, label, on_block)
    test = _split(p, world, n_test, seed, 1, label, on_block)
    progress.close()
    log.info("generated %s: %d train / %d test points in %.1f s", label, n_train, n_test,
             time.perf_counter() - started)
    return train, test


def _twin_preset(p: Preset, scale: float, seed: int) -> tuple[Dataset, Dataset]:
    """A paper-scale preset from the structured generator: label clusters that co-occur and share
    words, difficulty knobs fitted on the real sets (harness.datasets.twin). `scale` scales the points only,
    as for every preset here."""
    n_train, n_test = split_points(p, scale)
    knobs = replace(twin.preset_knobs(p.name), train_points=n_train, test_points=n_test)
    train, test = twin.generate(knobs, seed)
    label = f"synthetic:{p.name}@{scale:g}/s{seed}"
    source = f"synthetic:{p.name} generator v{GENERATOR_VERSION}"
    return (Dataset(label, train.features, train.labels, source),
            Dataset(label, test.features, test.labels, source))


def cache_key(name: str, scale: float, seed: int) -> str:
    version = f"g{GENERATOR_VERSION}" + (f"t{twin.TWIN_GENERATOR_VERSION}" if name in twin.PRESET_NAMES else "")
    return f"synth-{name}-x{scale:g}-s{seed}-{version}.npz"


def load_synthetic(name: str, scale: float = 1.0, seed: int = 0, use_cache: bool = True) -> tuple[Dataset, Dataset]:
    """Like `generate`, through the cache (key: preset, scale, seed, generator version)."""
    p = preset(name)
    path = cache_dir() / cache_key(p.name, scale, seed)
    label = f"synthetic:{p.name}@{scale:g}/s{seed}"
    source = f"synthetic:{p.name} generator v{GENERATOR_VERSION}"
    if use_cache:
        cached = load_pair(path, label, source)
        if cached is not None:
            return cached
    # By name, not the Preset object: `generate` sends named paper presets to the twin generator.
    train, test = generate(p.name, scale, seed)
    if use_cache:
        try:
            save_pair(path, train, test)
        except OSError as exc:
            log.warning("could not write cache entry %s: %s", path, exc)
    return train, test


__all__ = ["GENERATOR_VERSION", "PRESETS", "Preset", "generate", "load_synthetic", "preset"]
