"""A synthetic XMC generator with label structure, and its knobs' fit to a real data set ("twin").

Why a second generator: `harness.datasets.synth` gives each label an independent random signature, so no
two labels are confusable and labels never co-occur beyond chance; its difficulty does not follow
any real set. This one is a topic model whose knobs are measurable statistics of real data:

- Labels are grouped into clusters ("topics": related tags, product categories). Cluster sizes are
  geometric with mean `cluster_size`. A point picks `topics_per_point` clusters (on average),
  each with probability proportional to the cluster's label mass, and draws each of its labels
  from one of its clusters with probability `coherence`, else from the whole label set. So labels
  of one cluster co-occur.
- Every cluster has a vocabulary of `topic_vocab` words; every label has `signature_size`
  signature words of which a share `signature_sharing` comes from its cluster's vocabulary (the
  rest are words of its own: uniform over the vocabulary, so mostly rare ones, except a share
  `signature_common` drawn like background words). So labels of one cluster share features and are confusable: a
  model must find the label-specific words to tell them apart.
- A point's feature draws: with probability `signal * label_share` a signature word of one of its
  labels, with probability `signal * (1 - label_share)` a word of one of its clusters, else a
  background word from a Zipf law over the vocabulary (common words, no information). With
  `background_topical` > 0 that share of the background draws uses the point's first cluster's own
  ordering of the TOPICAL_HEAD most common ranks: which common words a document uses then depends
  on its topic, as in real text, and the most frequent features carry (topic-level) information.
- Label frequencies follow `label_profile` (relative frequency against rank fraction, log-log
  interpolated; measured from a real set or a Zipf law for a preset), labels per point and
  features per point follow quantile tables (`labels_quantiles`, `nnz_quantiles`, 101 points from
  p=0 to p=1), so whole distributions are reproduced, not only means. Repeated draws merge:
  each point keeps its first k distinct labels and first n distinct features, so the tables hold
  exactly (up to tiny clusters running out of labels).
- Near-duplicates: a share `duplicate_rate` of the points are copies of prototypes shared by both
  splits (same labels, each feature kept with probability `duplicate_keep`), as re-posted pages or
  product variants are in real sets; kNN-like methods gain most from them.
- Values are binary (when the real set is) or tf-idf-like: (1 + log count) * idf, rows L2-normalised.

Scaling a twin by S multiplies points, features, labels and the number of clusters by S; the
per-point distributions, cluster size and the frequency profile (over rank fractions) stay.

Deterministic per seed: every random stream is keyed by (seed, purpose, block), vectorised numpy
over blocks of points.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.datasets.dataset import Dataset
from harness.datasets.progress import Progress
from harness.datasets.sparse import Csr, vstack

# Part of every twin's identity (and of the synth cache key of presets built on this generator):
# bump whenever the output for the same knobs and seed changes.
TWIN_GENERATOR_VERSION = 1
BLOCK_POINTS = 32_768
QUANTILE_POINTS = 101  # p = 0, 0.01, ..., 1
PROFILE_POINTS = 64
CALIBRATION_POINTS = 6_000
TOPICAL_HEAD = 1_000  # most common background ranks a cluster reorders (background_topical)


@dataclass(frozen=True)
class TwinKnobs:
    """Everything the generator needs. Shapes first, then measured distributions, then structure."""

    name: str
    num_features: int
    num_labels: int
    train_points: int
    test_points: int
    labels_quantiles: tuple[float, ...]  # labels per point at p = 0, 0.01, ..., 1
    nnz_quantiles: tuple[float, ...]  # distinct features per point at p = 0, 0.01, ..., 1
    # Label frequency against rank: pairs (rank fraction, frequency / mean frequency), increasing
    # rank fraction; interpolated in log-log.
    label_profile: tuple[tuple[float, float], ...]
    binary: bool = False  # values all 1 (as in the Mulan sets) instead of tf-idf-like
    cluster_size: float = 8.0  # mean labels per cluster (geometric sizes)
    topics_per_point: float = 1.1  # mean clusters a point is about
    coherence: float = 0.7  # share of label draws taken from the point's clusters
    signal: float = 0.6  # share of feature draws that carry information (signature or topic words)
    label_share: float = 0.5  # of the informative draws, the share from label signatures
    signature_size: int = 8  # words per label
    signature_sharing: float = 0.1  # share of a label's signature taken from its cluster's vocabulary
    topic_vocab: int = 40  # words per cluster
    signature_common: float = 0.0  # share of own and cluster words drawn by the background law
    feature_zipf: float = 1.0  # exponent of the background vocabulary's power law
    duplicate_rate: float = 0.0  # share of points that are near-copies of a shared prototype
    duplicate_copies: float = 3.0  # mean copies per prototype (over both splits)
    duplicate_keep: float = 0.8  # share of a prototype's features a copy keeps
    # Share of background draws taken from the point's first cluster's own ordering of the common
    # words (its permutation of the TOPICAL_HEAD most common background ranks): in real text which
    # common words a document uses depends on its topic. 0 (the default) leaves the output as before.
    background_topical: float = 0.0
    fitted_from: str = ""  # provenance: the real set, or the published figures of a preset
    notes: dict[str, str] = field(default_factory=dict)

    def scaled(self, scale: float) -> TwinKnobs:
        """The same knobs at `scale` times the points, features and labels."""
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        return replace(
            self,
            num_features=max(2, round(self.num_features * scale)),
            num_labels=max(2, round(self.num_labels * scale)),
            train_points=max(1, round(self.train_points * scale)),
            test_points=max(1, round(self.test_points * scale)),
        )

    def to_json(self) -> str:
        doc = asdict(self)
        doc["generator_version"] = TWIN_GENERATOR_VERSION
        # One knob per line, tables on one line each: readable and diffable.
        body = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in doc.items())
        return "{\n" + body + "\n}"

    @classmethod
    def from_json(cls, text: str, where: str = "knobs") -> TwinKnobs:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
        doc.pop("generator_version", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"{where}: unknown knob(s) {', '.join(unknown)}")
        required = {n for n, f in cls.__dataclass_fields__.items()
                    if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(doc))
        if missing:
            raise ValueError(f"{where}: missing knob(s) {', '.join(missing)}")
        try:
            doc["labels_quantiles"] = tuple(float(x) for x in doc["labels_quantiles"])
            doc["nnz_quantiles"] = tuple(float(x) for x in doc["nnz_quantiles"])
            doc["label_profile"] = tuple((float(a), float(b)) for a, b in doc["label_profile"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed table ({exc})") from None
        return cls(**doc)

    def check(self) -> None:
        for what, table in (("labels_quantiles", self.labels_quantiles), ("nnz_quantiles", self.nnz_quantiles)):
            if len(table) != QUANTILE_POINTS or np.any(np.diff(table) < 0) or table[0] < 0:
                raise ValueError(f"{self.name}: {what} must be {QUANTILE_POINTS} non-decreasing values >= 0")
        for what, x in (("coherence", self.coherence), ("signal", self.signal), ("label_share", self.label_share),
                        ("signature_sharing", self.signature_sharing),
                        ("signature_common", self.signature_common), ("duplicate_rate", self.duplicate_rate),
                        ("background_topical", self.background_topical),
                        ("duplicate_keep", self.duplicate_keep)):
            if not 0 <= x <= 1:
                raise ValueError(f"{self.name}: {what} must be in [0, 1], got {x}")
        if self.cluster_size < 1 or self.topics_per_point < 1:
            raise ValueError(f"{self.name}: cluster_size and topics_per_point must be >= 1")
        if self.signature_size < 1 or self.topic_vocab < 1:
            raise ValueError(f"{self.name}: signature_size and topic_vocab must be >= 1")


# --------------------------------------------------------------------------------------------------
# Measured distributions -> tables


def quantile_table(counts: np.ndarray) -> tuple[float, ...]:
    p = np.linspace(0.0, 1.0, QUANTILE_POINTS)
    return tuple(float(x) for x in np.quantile(np.asarray(counts, dtype=np.float64), p))


def frequency_profile(freq: np.ndarray) -> tuple[tuple[float, float], ...]:
    """(rank fraction, frequency / mean) at log-spaced ranks: dense at the head, where the few most
    frequent labels decide the popularity baseline."""
    freq = np.asarray(freq)
    s = np.sort(freq.astype(np.float64))[::-1]
    n = len(s)
    ranks = np.unique(np.round(np.geomspace(1, n, PROFILE_POINTS)).astype(np.int64)) - 1
    mean = max(s.mean(), 1e-12)
    # Labels unused in train (count 0) are kept at a quarter of a point: log-log needs positives.
    # Real-valued weights (a Zipf law) need no floor beyond a tiny one.
    floor = 0.25 if np.issubdtype(freq.dtype, np.integer) else s[0] * 1e-12
    rel = np.maximum(s[ranks], floor) / mean
    return tuple((float((r + 0.5) / n), float(v)) for r, v in zip(ranks, rel, strict=True))


def _sample_table(table: tuple[float, ...], u: np.ndarray) -> np.ndarray:
    """Integers from a quantile table: interpolate at u, round to nearest."""
    p = np.linspace(0.0, 1.0, len(table))
    return np.floor(np.interp(u, p, np.asarray(table)) + 0.5).astype(np.int64)


def _profile_weights(profile: tuple[tuple[float, float], ...], n: int) -> np.ndarray:
    """Relative weight of rank 0..n-1 (log-log interpolation, clamped at the ends)."""
    xs = np.log([x for x, _ in profile])
    ys = np.log([y for _, y in profile])
    rank_frac = np.log((np.arange(n) + 0.5) / n)
    return np.exp(np.interp(rank_frac, xs, ys))


# --------------------------------------------------------------------------------------------------
# The world: what train and test share


@dataclass(frozen=True)
class _World:
    label_order: np.ndarray  # int64[L]: labels laid out cluster by cluster (position -> label id)
    label_cdf: np.ndarray  # float64[L + 1]: cumulative draw probability over the layout
    cluster_start: np.ndarray  # int64[C + 1]: layout positions of each cluster
    cluster_cdf: np.ndarray  # float64[C + 1]: cumulative cluster probability (label mass)
    label_cluster: np.ndarray  # int64[L]: cluster of each label id
    signatures: np.ndarray  # int32[L, S]
    topic_words: np.ndarray  # int32[C, V]
    background_cdf: np.ndarray  # float64[D + 1] over background ranks
    background_order: np.ndarray  # int64[D]: rank -> feature id
    idf: np.ndarray  # float32[D]
    # int64[C, H]: each cluster's feature ids for background ranks 0..H-1 (background_topical > 0)
    topical_head: np.ndarray | None = None


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _world(k: TwinKnobs, seed: int, label_weight: np.ndarray | None = None) -> _World:
    L, D = k.num_labels, k.num_features
    rng = _rng(seed, 0)
    # Clusters: geometric sizes with the knob's mean, cut to cover exactly L labels.
    sizes = rng.geometric(1.0 / k.cluster_size, size=int(L / k.cluster_size * 2) + 16)
    ends = np.cumsum(sizes)
    n_clusters = int(np.searchsorted(ends, L)) + 1
    cluster_start = np.concatenate(([0], np.minimum(ends[:n_clusters], L))).astype(np.int64)
    cluster_start[-1] = L
    label_order = rng.permutation(L).astype(np.int64)
    label_cluster = np.empty(L, dtype=np.int64)
    label_cluster[label_order] = np.repeat(np.arange(n_clusters), np.diff(cluster_start))
    # Frequencies: the profile's weight of rank r goes to a random label (popular labels are spread
    # over clusters, as popular tags are over topics).
    spread = rng.permutation(L)  # drawn even when weights are given: later streams stay the same
    if label_weight is None:
        label_weight = np.empty(L)
        label_weight[spread] = _profile_weights(k.label_profile, L)
    w_layout = label_weight[label_order]
    label_cdf = np.concatenate(([0.0], np.cumsum(w_layout)))
    label_cdf /= label_cdf[-1]
    cluster_cdf = label_cdf[cluster_start]
    # Vocabulary: background ranks are a random order of the features; cluster vocabularies and
    # label-own signature words are uniform over the features (rare words, on the whole).
    background_order = rng.permutation(D).astype(np.int64)
    ranks = np.arange(1, D + 1, dtype=np.float64)
    bg = ranks ** -k.feature_zipf
    background_cdf = np.concatenate(([0.0], np.cumsum(bg)))
    background_cdf /= background_cdf[-1]
    V, S = min(k.topic_vocab, D), min(k.signature_size, D)
    topic_words = rng.integers(0, D, size=(n_clusters, V), dtype=np.int32)
    # Cluster words too may be common words ("design", "python" in tags; "theory" in titles).
    common_t = rng.random((n_clusters, V)) < k.signature_common
    t_rank = np.clip(np.searchsorted(background_cdf, rng.random((n_clusters, V)), side="right") - 1, 0, D - 1)
    topic_words = np.where(common_t, background_order[t_rank], topic_words).astype(np.int32)
    shared = rng.random((L, S)) < k.signature_sharing
    own = rng.integers(0, D, size=(L, S), dtype=np.int32)
    # A share of the own words are common ones (drawn by the background law): in real text the
    # telling words of popular labels are often frequent words too.
    common = rng.random((L, S)) < k.signature_common
    bg_rank = np.clip(np.searchsorted(background_cdf, rng.random((L, S)), side="right") - 1, 0, D - 1)
    own = np.where(common, background_order[bg_rank], own).astype(np.int32)
    from_topic = topic_words[label_cluster[:, None], rng.integers(0, V, size=(L, S))]
    signatures = np.where(shared, from_topic, own).astype(np.int32)
    topical_head = None
    if k.background_topical > 0:
        # Its own stream: the default's output must not change.
        head = min(TOPICAL_HEAD, D)
        trng = _rng(seed, 6)
        topical_head = background_order[np.argsort(trng.random((n_clusters, head)), axis=1)]
    return _World(label_order, label_cdf, cluster_start, cluster_cdf, label_cluster, signatures,
                  topic_words, background_cdf, background_order, np.ones(D, dtype=np.float32), topical_head)


def _first_distinct(rows: np.ndarray, ids: np.ndarray, width: int, want: np.ndarray):
    """Per row, the first `want[row]` distinct ids in draw order, returned sorted by (row, id), with
    how often each kept id was drawn. `rows` must be non-decreasing (draws are row-major)."""
    key = rows * np.int64(width) + ids
    order = np.argsort(key, kind="stable")  # equal keys keep draw order: the first comes first
    sk = key[order]
    first = np.ones(len(sk), dtype=bool)
    first[1:] = sk[1:] != sk[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(sk)))
    pos = order[starts]
    back = np.argsort(pos, kind="stable")  # distinct ids back in draw order
    ukey, counts, pos = sk[starts][back], counts[back], pos[back]
    urow = rows[pos]
    row_first = np.searchsorted(urow, np.arange(len(want)))
    rank = np.arange(len(urow)) - row_first[urow]
    keep = rank < want[urow]
    ukey, counts = ukey[keep], counts[keep]
    final = np.argsort(ukey, kind="stable")
    ukey, counts = ukey[final], counts[final]
    return ukey // width, ukey % width, counts


def _labels(k: TwinKnobs, w: _World, n: int, rng: np.random.Generator):
    """Labels of `n` points: (indptr, ids, clusters per point as (indptr, ids))."""
    want = _sample_table(k.labels_quantiles, rng.random(n))
    want = np.minimum(want, k.num_labels)
    # The point's clusters, chosen by label mass.
    t = 1 + rng.poisson(k.topics_per_point - 1.0, size=n)
    t_rows = np.repeat(np.arange(n, dtype=np.int64), t)
    clusters = np.searchsorted(w.cluster_cdf, rng.random(len(t_rows)), side="right") - 1
    clusters = np.clip(clusters, 0, len(w.cluster_start) - 2)
    t_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(t, out=t_indptr[1:])
    # Candidate draws: more than wanted, so that the first `want` distinct ones exist. The first
    # half follows the mixture; the second half is global only, so that a point whose clusters run
    # out of labels still gets its count (it is rarely reached: it only fills deficits).
    half = 2 * want + 4
    rows = np.repeat(np.arange(n, dtype=np.int64), 2 * half)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(2 * half, out=starts[1:])
    within = np.arange(len(rows)) - starts[rows]
    u = rng.random(len(rows))
    local = (rng.random(len(rows)) < k.coherence) & (within < half[rows])
    pick = t_indptr[rows[local]] + (rng.random(int(local.sum())) * t[rows[local]]).astype(np.int64)
    c = clusters[pick]
    lo, hi = w.cluster_cdf[c], w.cluster_cdf[c + 1]
    u[local] = lo + u[local] * (hi - lo)
    pos = np.searchsorted(w.label_cdf, u, side="right") - 1
    pos = np.clip(pos, 0, k.num_labels - 1)
    ids = w.label_order[pos]
    l_rows, l_ids, _ = _first_distinct(rows, ids, k.num_labels, want)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(l_rows, minlength=n), out=indptr[1:])
    return indptr, l_ids.astype(np.int32), t_indptr, clusters


def _block(k: TwinKnobs, w: _World, n: int, rng: np.random.Generator) -> tuple[Csr, Csr]:
    D = k.num_features
    l_indptr, l_ids, t_indptr, clusters = _labels(k, w, n, rng)
    l_counts = np.diff(l_indptr)
    t_counts = np.diff(t_indptr)
    want = np.minimum(_sample_table(k.nnz_quantiles, rng.random(n)), D)
    m = (want * 3 + 1) // 2 + 4
    rows = np.repeat(np.arange(n, dtype=np.int64), m)
    total = len(rows)
    u = rng.random(total)
    feats = np.empty(total, dtype=np.int64)
    is_label = (u < k.signal * k.label_share) & (l_counts[rows] > 0)
    is_topic = (u >= k.signal * k.label_share) & (u < k.signal)
    is_bg = ~(is_label | is_topic)
    r = rows[is_label]
    owner = l_ids[l_indptr[r] + (rng.random(len(r)) * l_counts[r]).astype(np.int64)]
    feats[is_label] = w.signatures[owner, rng.integers(0, w.signatures.shape[1], size=len(r))]
    r = rows[is_topic]
    c = clusters[t_indptr[r] + (rng.random(len(r)) * t_counts[r]).astype(np.int64)]
    feats[is_topic] = w.topic_words[c, rng.integers(0, w.topic_words.shape[1], size=len(r))]
    rank = np.clip(np.searchsorted(w.background_cdf, rng.random(int(is_bg.sum())), side="right") - 1, 0, D - 1)
    bg = w.background_order[rank]
    if w.topical_head is not None:
        r = rows[is_bg]
        head = w.topical_head.shape[1]
        topical = (rng.random(len(r)) < k.background_topical) & (rank < head)
        first_cluster = clusters[t_indptr[r[topical]]]
        bg[topical] = w.topical_head[first_cluster, rank[topical]]
    feats[is_bg] = bg
    f_rows, f_ids, counts = _first_distinct(rows, feats, D, want)
    if k.binary:
        values = np.ones(len(f_ids), dtype=np.float32)
    else:
        values = (1.0 + np.log(counts)) * w.idf[f_ids]
        norms = np.sqrt(np.bincount(f_rows, weights=values * values, minlength=n))
        values = (values / norms[f_rows]).astype(np.float32)
    f_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(f_rows, minlength=n), out=f_indptr[1:])
    return (Csr(f_indptr, f_ids.astype(np.int32), values.astype(np.float32), D),
            Csr(l_indptr, l_ids, None, k.num_labels))


def _calibrated_world(k: TwinKnobs, seed: int) -> _World:
    """The world, with two corrections measured on a seeded sample of points:
    - label draw weights: keeping distinct labels only (and drawing within clusters) flattens the
      head of the frequency law; the weights are corrected per rank bucket until the sample's
      frequencies follow the profile;
    - idf from the sample's document frequencies (tf-idf values need it; binary ones do not)."""
    w = _world(k, seed)
    L = k.num_labels
    target = np.empty(L)
    target[w.label_order] = np.diff(w.label_cdf)  # the profile's weights, by label id
    weight = target.copy()
    rank_of = np.empty(L, dtype=np.int64)
    rank_of[np.argsort(-target, kind="stable")] = np.arange(L)
    # Rank buckets: single labels at the head, growing geometrically (sample noise averages out).
    edges = np.unique(np.concatenate(([0], np.round(np.geomspace(1, L, 48)).astype(np.int64), [L])))
    bucket = np.searchsorted(edges, rank_of, side="right") - 1
    n_sample = max(CALIBRATION_POINTS, min(40_000, 20 * L // max(1, int(np.mean(k.labels_quantiles)))))
    for step in range(3):
        _, l_ids, _, _ = _labels(k, w, n_sample, _rng(seed, 3, step))
        got = np.bincount(l_ids, minlength=L).astype(np.float64)
        got_b = np.bincount(bucket, weights=got, minlength=len(edges) - 1)
        want_b = np.bincount(bucket, weights=target, minlength=len(edges) - 1)
        want_b *= got.sum() / max(want_b.sum(), 1e-12)
        ratio = np.where(got_b > 0, want_b / np.maximum(got_b, 1e-12), 1.0)
        weight = weight * np.clip(ratio, 0.2, 5.0)[bucket]
        w = _world(k, seed, label_weight=weight)
    if not k.binary:
        f, _ = _block(k, w, min(CALIBRATION_POINTS, 4 * k.num_features), _rng(seed, 4))
        df = np.bincount(f.indices, minlength=k.num_features)
        idf = (1.0 + np.log((f.n_rows + 1.0) / (df + 1.0))).astype(np.float32)
        w = replace(w, idf=idf)
    return w


def _prototypes(k: TwinKnobs, w: _World, seed: int) -> tuple[Csr, Csr] | None:
    """The pool that near-duplicate points copy: about `duplicate_copies` copies per prototype over
    both splits, so that a test point's siblings usually sit in train (as re-posted pages, product
    variants and re-tagged bookmarks do in real sets)."""
    if k.duplicate_rate <= 0:
        return None
    size = max(1, round(k.duplicate_rate * (k.train_points + k.test_points) / k.duplicate_copies))
    feats, labels = [], []
    for b, start in enumerate(range(0, size, BLOCK_POINTS)):
        f, lab = _block(k, w, min(BLOCK_POINTS, size - start), _rng(seed, 5, b))
        feats.append(f)
        labels.append(lab)
    return vstack(feats, k.num_features, True), vstack(labels, k.num_labels, False)


def _stack(a: Csr, b: Csr) -> Csr:
    values = None if a.values is None else np.concatenate([a.values, b.values])
    return Csr(np.concatenate([a.indptr, b.indptr[1:] + a.nnz]), np.concatenate([a.indices, b.indices]),
               values, a.n_cols)


def _duplicate(k: TwinKnobs, f: Csr, lab: Csr, protos: tuple[Csr, Csr], rng: np.random.Generator):
    """Replace a `duplicate_rate` share of the rows by copies of random prototypes: same labels,
    each feature kept with probability `duplicate_keep` (at least one), values renormalised."""
    n = f.n_rows
    dup = rng.random(n) < k.duplicate_rate
    pick = rng.integers(0, protos[0].n_rows, size=int(dup.sum()))
    src = np.arange(n, dtype=np.int64)
    src[dup] = n + pick
    f2, lab2 = _stack(f, protos[0]).take(src), _stack(lab, protos[1]).take(src)
    rows = np.repeat(np.arange(n), np.diff(f2.indptr))
    keep = (rng.random(f2.nnz) < k.duplicate_keep) | ~dup[rows]
    first = f2.indptr[:-1][np.diff(f2.indptr) > 0]
    keep[first] = True
    rows, ids, values = rows[keep], f2.indices[keep], f2.values[keep].astype(np.float64)
    if not k.binary:
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n))
        values = values / norms[rows]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return Csr(indptr, ids, values.astype(np.float32), f.n_cols), lab2


def _split(k: TwinKnobs, w: _World, n: int, seed: int, split_id: int, label: str, shown: str,
           protos: tuple[Csr, Csr] | None = None) -> Dataset:
    feats, labels = [], []
    progress = Progress(shown, n)
    for b, start in enumerate(range(0, n, BLOCK_POINTS)):
        rng = _rng(seed, 1, split_id, b)
        f, lab = _block(k, w, min(BLOCK_POINTS, n - start), rng)
        if protos is not None:
            f, lab = _duplicate(k, f, lab, protos, rng)
        feats.append(f)
        labels.append(lab)
        progress.update(start + f.n_rows)
    progress.close()
    return Dataset(label, vstack(feats, k.num_features, True), vstack(labels, k.num_labels, False),
                   f"twin:{k.name} generator t{TWIN_GENERATOR_VERSION}")




def generate(k: TwinKnobs, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) of the knobs' shape."""
    k.check()
    w = _calibrated_world(k, seed)
    label = f"twin:{k.name}/s{seed}"
    protos = _prototypes(k, w, seed)
    train = _split(k, w, k.train_points, seed, 0, label, f"{k.name} train", protos)
    test = _split(k, w, k.test_points, seed, 1, label, f"{k.name} test", protos)
    return train, test


# --------------------------------------------------------------------------------------------------
# Parametric tables for the presets (no real data to measure)


def negbin_quantiles(mean: float, dispersion: float, minimum: int = 1) -> tuple[float, ...]:
    """Quantiles of minimum + NegBin(mean - minimum, r = dispersion), computed from a large seeded
    sample (exact enough at 101 points)."""
    rng = _rng(12345, 9)
    mu = max(mean - minimum, 1e-9)
    p = dispersion / (dispersion + mu)
    x = minimum + rng.negative_binomial(dispersion, p, size=400_000)
    return quantile_table(x)


def lognormal_quantiles(mean: float, log_std: float, minimum: int = 1) -> tuple[float, ...]:
    """Quantiles of a log-normal count with the given mean and log-scale spread (at least `minimum`)."""
    rng = _rng(12345, 10)
    mu = math.log(mean) - log_std**2 / 2
    x = np.maximum(minimum, np.round(rng.lognormal(mu, log_std, size=400_000)))
    return quantile_table(x)


def zipf_profile(n: int, exponent: float, offset: float) -> tuple[tuple[float, float], ...]:
    """The profile of frequencies proportional to (rank + 1 + offset) ** -exponent."""
    f = (np.arange(n) + 1.0 + offset) ** -exponent
    return frequency_profile(f)


def save_knobs(k: TwinKnobs, path: Path) -> None:
    Path(path).write_text(k.to_json() + "\n")


def load_knobs(path: Path) -> TwinKnobs:
    return TwinKnobs.from_json(Path(path).read_text(), str(path))




# --------------------------------------------------------------------------------------------------
# Presets of the paper-scale sets, which cannot be shipped or measured here. Shapes and means are the
# published figures; distribution shapes and structural knobs are borrowed from the real set here
# that is most alike, fitted by `slidebench data twin` (calibrate.fit_knobs) with the FREE_KNOBS of
# harness.run.calibrate; see docs/twins.md.


def _paper_presets() -> dict[str, TwinKnobs]:
    amazon = TwinKnobs(
        # Published figures (Extreme Classification Repository table): 490,449 train / 153,025 test
        # points, 135,909 features, 670,091 labels, 5.45 labels per point, 3.99 points per label;
        # about 75 features per point (SLIDE paper, table 1: sparsity 0.055 %).
        name="amazon-670k", num_features=135_909, num_labels=670_091,
        train_points=490_449, test_points=153_025,
        # Spreads borrowed from Bibtex (text, few labels per point): labels per point 1 + NegBin with
        # Bibtex's dispersion (r = 1.4); nnz log-normal with Bibtex's log-scale spread (0.79).
        labels_quantiles=negbin_quantiles(5.45, 1.4),
        nnz_quantiles=lognormal_quantiles(75.0, 0.79),
        # Label frequencies: Zipf with the previous generator's exponent and offset (mean 3.99
        # points per label follows from the shape); no measured profile exists here.
        label_profile=zipf_profile(670_091, 1.0, 5.0),
        binary=False,
        cluster_size=round(2.0 * 5.45, 2),
        # Structure fitted on Bibtex (`slidebench data twin bibtex`, seed 0); free knobs as in
        # harness.run.calibrate.FREE_KNOBS.
        topics_per_point=1.1, coherence=0.918, duplicate_rate=0.2496, signal=0.1914, label_share=0.0977,
        signature_size=8, signature_sharing=0.1, topic_vocab=40,
        fitted_from="published Amazon-670K figures; spreads and structure from the Bibtex fit",
    )
    delicious = TwinKnobs(
        # Published figures (Extreme Classification Repository table): 196,606 train / 100,095 test
        # points, 782,585 features, 205,443 labels, 75.54 labels per point, 72.29 points per label;
        # about 300 features per point (SLIDE paper, table 1: sparsity 0.038 %).
        name="delicious-200k", num_features=782_585, num_labels=205_443,
        train_points=196_606, test_points=100_095,
        # Spreads borrowed from Delicious (the same source, del.icio.us tags): its labels-per-point
        # dispersion relative to the mean (r = 46 for 1 + NegBin) and its nnz log-scale spread (1.36).
        labels_quantiles=negbin_quantiles(75.54, 46.0),
        nnz_quantiles=lognormal_quantiles(300.0, 1.36),
        # Zipf with the previous generator's flattened head (offset 60): with 75 labels per point a
        # steeper head makes a few tags cover most points.
        label_profile=zipf_profile(205_443, 1.0, 60.0),
        binary=False,
        cluster_size=round(2.0 * 75.54, 2),
        # Structure fitted on Delicious (`slidebench data twin delicious`, seed 0).
        topics_per_point=1.1, coherence=0.957, duplicate_rate=0.4184, signal=0.6289, label_share=0.918,
        signature_size=8, signature_sharing=0.1, topic_vocab=40,
        fitted_from="published Delicious-200K figures; spreads and structure from the Delicious fit",
    )
    return {k.name: k for k in (amazon, delicious)}


_PRESETS: dict[str, TwinKnobs] | None = None


def preset_knobs(name: str) -> TwinKnobs:
    """Knobs of a paper-scale preset (built on first use: the quantile tables take a moment)."""
    global _PRESETS
    if _PRESETS is None:
        _PRESETS = _paper_presets()
    if name not in _PRESETS:
        raise ValueError(f"no twin preset {name!r}; known: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


PRESET_NAMES = ("amazon-670k", "delicious-200k")


__all__ = ["PRESET_NAMES", "TWIN_GENERATOR_VERSION", "TwinKnobs", "frequency_profile", "generate", "load_knobs",
           "lognormal_quantiles", "negbin_quantiles", "preset_knobs", "quantile_table", "save_knobs",
           "zipf_profile"]
