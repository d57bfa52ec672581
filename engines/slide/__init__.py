"""SLIDE: the native sparse engine (C++17 core in core/, pybind11 module `_slide`).

`SlideEngine` adapts the native `Network` to `harness.spec.engine.Engine`. The compiled module is
imported lazily (in `set_threads` / `prepare`), so `check_params` works without the extension
built and the worker can fix thread settings before anything native loads.

Model: sparse input -> hidden layers (ReLU; dense, or LSH-sampled with `hidden_sampled`) ->
output layer over all labels whose active neurons are chosen per sample by LSH (true labels always
included during training). Loss: softmax cross-entropy over the active outputs against 1/|y| on
each true label; Adam (lazy "sparse" over touched rows, or the paper's "dense").
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, Engine, StepStats, TrainMeta, check_keys, require_label_counts

__all__ = ["DEFAULTS", "SlideEngine"]

# Engine parameters (workload `[engines.slide]`). 0 for the "auto" ones means: derived from the
# label count in `prepare` (see `_resolve`).
DEFAULTS: dict[str, Any] = {
    "hash": "dwta",  # simhash | wta | dwta | doph | simhash_mips (SimHash on the bias-aware inner-product transform)
    "K": 6,  # codes per table
    "L": 50,  # tables
    "bucket_bits": 0,  # 0: auto = clamp(ceil(log2(num_labels)), 6, 18)
    "bucket_capacity": 0,  # 0: auto = max(8, 2 * num_labels / 2^bucket_bits), at most 256
    "insertion": "fifo",  # fifo | reservoir
    # vanilla | threshold | topk | random (no hashing: the ablation control) | rerank (the union
    # scored exactly, the best max_active kept)
    "selection": "vanilla",
    "min_active": 1024,  # output neurons per sample at least (random padding); >= num_labels: all
    "padding": "sample",  # sample: random padding drawn per sample (paper) | batch: shared by the batch
    # unigram: padding drawn by training label frequency, (rows per label + 1)^unigram_power, the
    # noise tf_sampled's default sampler draws (TrainMeta.label_counts, which the harness always
    # gives) | uniform: drawn uniformly, as the SLIDE paper's code does (fidelity mode). Uniform
    # padding let slide fall from P@1 0.25 to 0.15 at the Delicious-200K shape, where frequency-drawn
    # padding reached 0.60 (engines/slide/README.md).
    "padding_sampler": "unigram",
    "unigram_power": 0.75,
    "pad_below": 0,  # pad to min_active only when fewer than this many chosen (0: always); >= min_active
    # none | log_q: sampled softmax's correction, each active output's logit minus the log of its
    # inclusion probability (uniform padding: exact; frequency-drawn padding: its expected count;
    # LSH candidates: estimated from their table counts)
    "logit_correction": "none",
    "max_active": 0,  # cap on output neurons per sample (0: none); needed by selection = topk, rerank
    "rerank_pool": 0,  # selection = rerank: most retrieved outputs scored, by table hits (0: the whole union)
    # most outputs taken from the tables per sample, labels aside, by the selection's own rule; the
    # rest up to min_active is padding (0: up to max_active). Mixes retrieved (hard) negatives with
    # frequency-drawn ones in a fixed ratio.
    "max_retrieved": 0,
    "threshold": 1,  # selection = threshold: present in at least this many tables
    "simhash_density": 1.0 / 3.0,
    "wta_bin_size": 8,
    "rebuild_n0": 50,  # first table rebuild after this many batches ...
    "rebuild_decay": 0.0,  # ... the i-th interval is rebuild_n0 * exp(rebuild_decay * i)
    "rehash_m": 0,  # new hash functions every M batches (0: never)
    "adam_state": "fp32",  # fp32 | bf16: Adam moments stored as BF16 (stochastic rounding); weights fp32
    "adam": "sparse",  # sparse (lazy, touched rows) | dense (every parameter every batch, the paper's)
    "hidden_sampled": False,  # LSH-sample hidden layers too
    "hidden_min_active": 32,  # with hidden_sampled: hidden neurons per sample at least
    "inference": "exact",  # exact (every label scored) | lsh (only retrieved candidates)
    "kernel": "auto",  # auto | scalar | avx2 | avx512
    "bf16": False,  # BF16 weights with fp32 master copy: not implemented in this build
    "debug_serialize": False,  # CI only: a global mutex serialises every training work item
    "init_std": 0.0,  # 0: Glorot-normal scale
}

_CHOICES = {
    "hash": ("simhash", "wta", "dwta", "doph", "simhash_mips"),
    "insertion": ("fifo", "reservoir"),
    "selection": ("vanilla", "threshold", "topk", "random", "rerank"),
    "padding": ("sample", "batch"),
    "padding_sampler": ("uniform", "unigram"),
    "logit_correction": ("none", "log_q"),
    "adam": ("sparse", "dense"),
    "adam_state": ("fp32", "bf16"),
    "inference": ("exact", "lsh"),
    "kernel": ("auto", "scalar", "avx2", "avx512"),
}


# Largest values of the integer parameters, so that check_params refuses what the core would only
# refuse (or fail to allocate) in prepare. The core holds every count in a 32-bit int; K, L and the
# bucket sizes have tighter bounds that no real configuration comes near (defaults: K 6, L 50,
# buckets of at most 256 slots).
_INT32_MAX = 2**31 - 1
_MAX_K = 1024  # codes per table; K*L is further capped at 2^20 codes, as the core does
_MAX_L = 65536
_MAX_CODES = 2**20
_MAX_BUCKET_CAPACITY = 65536
_MAX_WTA_BIN_SIZE = 256  # the core's window sizes: 2..256


def max_threads() -> int:
    """The most threads the engine accepts here: 4 per logical CPU, never above 1024.

    More threads than that only queue for a core (4x still leaves room for deliberate
    oversubscription experiments), while each costs a stack (8 MiB of address space by default)
    and per-thread scratch; and when libgomp cannot create a thread (under a memory or thread
    limit) it exits the process rather than report an error, so the count is refused up front.
    The native module applies the same bound (core/validate.h, max_threads).
    """
    return min(1024, 4 * (os.cpu_count() or 1))


def _native() -> Any:
    """The compiled module, with a clear message when it has not been built."""
    # Passive OpenMP waiting unless the caller chose: threads that spin at barriers collapse
    # throughput on a shared or oversubscribed machine (measured on the 2-core dev box under load:
    # Bibtex, 2 threads, 840 samples/s spinning vs 17,600 passive). libgomp reads this once, when it
    # loads, which is on this import unless something loaded OpenMP earlier.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    try:
        from engines.slide import _slide
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise RuntimeError(
            "the native SLIDE module engines.slide._slide is not built: run `make install`"
        ) from exc
    return _slide


class SlideEngine(Engine):
    name = "slide"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._threads = 1
        self._net: Any = None
        self._meta: TrainMeta | None = None
        self._composition: dict[str, int] | None = None  # active_composition() at the last diagnostics
        self._score_buf: np.ndarray | None = None  # exact logits of the diagnostic points, reused

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(params, DEFAULTS, "engines.slide")
        for key, choices in _CHOICES.items():
            if p[key] not in choices:
                raise ValueError(
                    f"engines.slide: parameter {key!r} must be one of {', '.join(choices)}, got {p[key]!r}"
                )
        positive = ("K", "L", "rebuild_n0", "wta_bin_size", "threshold")
        for key in positive:
            if p[key] < 1:
                raise ValueError(f"engines.slide: parameter {key!r} must be >= 1, got {p[key]!r}")
        upper = {
            "K": _MAX_K,
            "L": _MAX_L,
            "bucket_capacity": _MAX_BUCKET_CAPACITY,
            "threshold": _MAX_L,
            "wta_bin_size": _MAX_WTA_BIN_SIZE,
        }
        for key, value in p.items():
            bound = upper.get(key, _INT32_MAX)
            if isinstance(value, int) and not isinstance(value, bool) and value > bound:
                raise ValueError(f"engines.slide: parameter {key!r} must be <= {bound}, got {value}")
        if p["K"] * p["L"] > _MAX_CODES:
            raise ValueError(
                f"engines.slide: parameters 'K' * 'L' must be <= {_MAX_CODES} hash codes, "
                f"got {p['K']} * {p['L']} = {p['K'] * p['L']}"
            )
        if p["wta_bin_size"] < 2:
            raise ValueError(
                f"engines.slide: parameter 'wta_bin_size' must be in 2..{_MAX_WTA_BIN_SIZE}, "
                f"got {p['wta_bin_size']}"
            )
        non_negative = (
            "bucket_bits",
            "bucket_capacity",
            "min_active",
            "max_active",
            "rehash_m",
            "hidden_min_active",
            "pad_below",
            "rerank_pool",
            "max_retrieved",
        )
        for key in non_negative:
            if p[key] < 0:
                raise ValueError(f"engines.slide: parameter {key!r} must be >= 0, got {p[key]!r}")
        if p["bucket_bits"] > 24:
            raise ValueError(
                f"engines.slide: parameter 'bucket_bits' must be in 1..24 (0: auto), got {p['bucket_bits']}"
            )
        if p["max_active"] and p["min_active"] > p["max_active"]:
            raise ValueError("engines.slide: 'min_active' must not exceed 'max_active'")
        if p["pad_below"] and p["pad_below"] < p["min_active"]:
            raise ValueError(
                f"engines.slide: 'pad_below' ({p['pad_below']}) must be 0 or >= 'min_active' ({p['min_active']})"
            )
        if p["logit_correction"] == "log_q" and p["selection"] not in ("vanilla", "random"):
            raise ValueError(
                "engines.slide: logit_correction 'log_q' needs selection 'vanilla' or 'random' "
                f"(inclusion probabilities of {p['selection']!r} selection are not defined)"
            )
        if p["selection"] == "random" and p["inference"] == "lsh":
            raise ValueError(
                "engines.slide: selection 'random' builds no tables, so inference must be 'exact'"
            )
        if p["selection"] in ("topk", "rerank") and p["max_active"] == 0:
            raise ValueError(f"engines.slide: selection {p['selection']!r} needs 'max_active' > 0")
        if p["max_retrieved"] and p["max_active"] and p["max_retrieved"] > p["max_active"]:
            raise ValueError(
                f"engines.slide: 'max_retrieved' ({p['max_retrieved']}) must not exceed 'max_active' "
                f"({p['max_active']})"
            )
        if p["max_retrieved"] and p["selection"] == "random":
            raise ValueError(
                f"engines.slide: 'max_retrieved' ({p['max_retrieved']}) caps what the tables give; "
                "selection 'random' builds none, so set it to 0"
            )
        if p["rerank_pool"] and p["selection"] != "rerank":
            raise ValueError(
                f"engines.slide: 'rerank_pool' ({p['rerank_pool']}) is used by selection 'rerank' only; "
                f"set it to 0 for selection {p['selection']!r}"
            )
        if p["rerank_pool"] and p["rerank_pool"] < p["max_active"]:
            raise ValueError(
                f"engines.slide: 'rerank_pool' ({p['rerank_pool']}) must be 0 (the whole union) or >= "
                f"'max_active' ({p['max_active']})"
            )
        if p["selection"] in ("topk", "rerank") and p["hidden_sampled"]:
            # Sampled hidden layers share the selection but have no cap (max_active 0).
            raise ValueError(
                f"engines.slide: selection {p['selection']!r} needs hidden_sampled = false "
                "(sampled hidden layers have no max_active)"
            )
        if p["selection"] == "threshold" and p["threshold"] > p["L"]:
            raise ValueError(f"engines.slide: 'threshold' ({p['threshold']}) must not exceed 'L' ({p['L']})")
        if not (math.isfinite(p["unigram_power"]) and 0.0 <= p["unigram_power"] <= 4.0):
            raise ValueError(f"engines.slide: 'unigram_power' must be in [0, 4], got {p['unigram_power']}")
        if not (0.0 < p["simhash_density"] <= 1.0):
            raise ValueError("engines.slide: 'simhash_density' must be in (0, 1]")
        if not (math.isfinite(p["rebuild_decay"]) and 0.0 <= p["rebuild_decay"] <= 10.0):
            raise ValueError("engines.slide: 'rebuild_decay' must be in [0, 10]")
        if not (math.isfinite(p["init_std"]) and p["init_std"] >= 0.0):
            raise ValueError("engines.slide: 'init_std' must be >= 0 (0: Glorot scale)")
        if p["bf16"]:
            raise ValueError(
                "engines.slide: 'bf16' weights are not implemented in this build (use bf16 = false)"
            )
        return p

    # -- Engine interface -------------------------------------------------------------------

    def set_threads(self, n: int) -> int:
        bound = max_threads()
        if not 1 <= n <= bound:
            raise ValueError(f"threads must be in 1..{bound} (4 per logical CPU, at most 1024), got {n}")
        self._threads = int(n)
        native = _native()
        self._apply_kernel(native)
        if self._net is not None:
            self._net.set_threads(self._threads)
        return self._threads

    def prepare(self, meta: TrainMeta) -> None:
        native = _native()
        self._apply_kernel(native)
        self._meta = meta
        self._composition = None
        self._net = native.Network(self.native_config(meta))

    def fit_step(self, batch: Batch) -> StepStats:
        net = self._require_net()
        f, y = batch.features, batch.labels
        loss, active = net.train_batch(
            f.indptr, f.indices, _values(f), y.indptr, y.indices, n_cols=f.n_cols, label_n_cols=y.n_cols
        )
        return StepStats(loss=float(loss), active_outputs=float(active))

    def predict_topk(self, features: Csr, k: int) -> np.ndarray:
        net = self._require_net()
        return net.predict_topk(
            features.indptr,
            features.indices,
            _values(features),
            int(k),
            self.params["inference"],
            n_cols=features.n_cols,
        )

    def info(self) -> dict[str, Any]:
        native = _native()
        out: dict[str, Any] = {
            "engine": self.name,
            "threads": self._threads,
            "params": dict(self.params),
            "build": dict(native.build_info()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        }
        if self._net is not None:
            out["memory_bytes"] = int(self._net.memory_bytes)
            out["layers"] = [list(s) for s in self._net.layer_shapes()]
            out["step"] = int(self._net.step)
            # Where the train clock went (seconds since prepare) and the latest full table
            # rebuild's duration: the record shows what a rebuild costs at this width.
            out["phase_seconds"] = {k: float(v) for k, v in self._net.phase_times().items()}
            out["table_rebuilds"] = int(self._net.rebuilds)
        if self._meta is not None:
            out["resolved"] = self._resolve(self._meta.num_labels)
        return out

    def diagnostics(self, features: Csr, labels: Csr) -> dict[str, Any] | None:
        """The output layer's active sets since the previous call, per training sample, by origin
        (`active`: labels, lsh, random), and the retrieval quality of the tables' candidates on
        these points (`lsh`, None when the output layer is not hashed)."""
        from harness.run.metrics import candidate_quality

        net = self._require_net()
        now = {k: int(v) for k, v in net.active_composition().items()}
        before = self._composition or dict.fromkeys(now, 0)
        self._composition = now
        samples = now["samples"] - before["samples"]
        active = {k: (now[k] - before[k]) / samples if samples else None for k in ("labels", "lsh", "random")}
        lsh = None
        meta = self._meta
        hashed = (
            meta is not None
            and self.params["selection"] != "random"
            and self.params["min_active"] < meta.num_labels
        )
        if hashed and features.n_rows:
            indptr, ids = net.lsh_candidates(
                features.indptr, features.indices, _values(features), n_cols=features.n_cols
            )
            # Exact logits of every point in one call (its blocked scorer reads each output row
            # once per block of samples, not once per small chunk of them), into a buffer kept
            # from one call to the next: a fresh 64 x 670K array costs ~1 s of page faults.
            shape = (features.n_rows, meta.num_labels)
            if self._score_buf is None or self._score_buf.shape != shape:
                self._score_buf = np.empty(shape, dtype=np.float32)
            scores = net.predict_scores(
                features.indptr, features.indices, _values(features), n_cols=features.n_cols, out=self._score_buf
            )
            lsh = candidate_quality(indptr, ids, scores, labels)
        return {"active": active, "lsh": lsh}

    # -- weights (tests and cross-engine checks) ----------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Copies [W_1, b_1, ..., W_out, b_out] in the dense reference's convention: hidden W_k is
        (n_in, n_out) (used as x @ W), W_out is (num_labels, n_in) (used as h @ W_out.T)."""
        net = self._require_net()
        shapes = net.layer_shapes()
        out: list[np.ndarray] = []
        for i, (_, _, layout) in enumerate(shapes):
            w, b = net.get_weights(i)
            want_neuron_major = i == len(shapes) - 1
            if (layout == "neuron_major") != want_neuron_major:
                w = np.ascontiguousarray(w.T)
            out += [w, b]
        return out

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Inverse of `get_weights` (same convention); hash tables are rebuilt from the new weights."""
        net = self._require_net()
        shapes = net.layer_shapes()
        if len(weights) != 2 * len(shapes):
            raise ValueError(
                f"set_weights: expected {2 * len(shapes)} arrays (W, b per layer), got {len(weights)}"
            )
        for i, (_, _, layout) in enumerate(shapes):
            w = np.asarray(weights[2 * i], dtype=np.float32)
            want_neuron_major = i == len(shapes) - 1
            if (layout == "neuron_major") != want_neuron_major:
                w = w.T
            b = np.ascontiguousarray(weights[2 * i + 1], dtype=np.float32)
            net.set_weights(i, np.ascontiguousarray(w), b)

    # -- helpers ----------------------------------------------------------------------------

    def native_config(self, meta: TrainMeta) -> dict[str, Any]:
        """The config dict `_slide.Network` takes (public for tests and benchmarks)."""
        if meta.model.activation != "relu":
            raise ValueError(f"engines.slide supports activation 'relu' only, got {meta.model.activation!r}")
        if meta.optimizer.name != "adam":
            raise ValueError(f"engines.slide supports optimizer 'adam' only, got {meta.optimizer.name!r}")
        p = self.params
        r = self._resolve(meta.num_labels)
        lsh = {
            "hash": p["hash"],
            "K": p["K"],
            "L": p["L"],
            "bucket_bits": r["bucket_bits"],
            "bucket_capacity": r["bucket_capacity"],
            "insertion": p["insertion"],
            "selection": p["selection"],
            "max_active": p["max_active"],
            "threshold": p["threshold"],
            "simhash_density": float(p["simhash_density"]),
            "wta_bin_size": p["wta_bin_size"],
            "pad_below": p["pad_below"],
            "rerank_pool": p["rerank_pool"],
            "max_retrieved": p["max_retrieved"],
        }
        layers: list[dict[str, Any]] = []
        for size in meta.model.hidden:
            layer: dict[str, Any] = {"size": int(size), "sampled": bool(p["hidden_sampled"])}
            if p["hidden_sampled"]:
                layer.update(
                    lsh,
                    min_active=p["hidden_min_active"],
                    max_active=0,
                    pad_below=0,
                    max_retrieved=0,
                    padding_weights=None,
                )
            layers.append(layer)
        output = {"size": int(meta.num_labels), "sampled": True, **lsh, "min_active": p["min_active"]}
        # None: uniform padding (or none at all, when every output is active).
        unigram = p["padding_sampler"] == "unigram" and p["min_active"] < meta.num_labels
        output["padding_weights"] = self._unigram_weights(meta) if unigram else None
        layers.append(output)
        opt = meta.optimizer
        return {
            "num_features": int(meta.num_features),
            "layers": layers,
            "lr": float(opt.lr),
            "beta1": float(opt.beta1),
            "beta2": float(opt.beta2),
            "eps": float(opt.eps),
            "adam": p["adam"],
            "adam_state": p["adam_state"],
            "rebuild_n0": p["rebuild_n0"],
            "rebuild_decay": float(p["rebuild_decay"]),
            "rehash_m": p["rehash_m"],
            "seed": int(meta.seed),
            "threads": self._threads,
            "debug_serialize": bool(p["debug_serialize"]),
            "init_std": float(p["init_std"]),
            "batch_padding": p["padding"] == "batch",
            "logit_correction": p["logit_correction"],
        }

    def _unigram_weights(self, meta: TrainMeta) -> np.ndarray:
        """(training rows per label + 1) ^ unigram_power: every label drawable, the frequent ones
        more often (TensorFlow's fixed-unigram sampler with the same counts and distortion)."""
        counts = require_label_counts(
            meta, "engines.slide", "padding_sampler 'unigram'", "padding_sampler = 'uniform'"
        )
        return np.power(counts + 1.0, float(self.params["unigram_power"]))

    def _resolve(self, num_labels: int) -> dict[str, int]:
        """Fill the 'auto' (0) table sizes from the label count.

        bucket_bits ~ log2(labels) keeps a few neurons per bucket; capacity twice the mean load
        (at least 8) keeps buckets from overflowing much. Table memory is L * 2^bits * (cap+1) * 4 B:
        at 670K labels, L=50: 2^18 buckets x 9 slots = 472 MB.
        """
        p = self.params
        bits = p["bucket_bits"] or min(18, max(6, math.ceil(math.log2(max(2, num_labels)))))
        cap = p["bucket_capacity"] or min(256, max(8, math.ceil(2 * num_labels / 2**bits)))
        return {"bucket_bits": int(bits), "bucket_capacity": int(cap)}

    def _apply_kernel(self, native: Any) -> None:
        env = os.environ.get("SLIDE_KERNEL")
        if env is not None and env not in native.kernels_supported() and env != "auto":
            raise ValueError(
                f"SLIDE_KERNEL={env!r} is not usable here; this build and CPU support: "
                f"{', '.join(native.kernels_supported())}"
            )
        if self.params["kernel"] != "auto":
            native.select_kernel(self.params["kernel"])

    def _require_net(self) -> Any:
        if self._net is None:
            raise RuntimeError("SlideEngine: prepare() must be called before training or prediction")
        return self._net




def _values(m: Csr) -> np.ndarray:
    """Feature values (ones for binary rows), float32."""
    return m.values if m.values is not None else np.ones(m.nnz, dtype=np.float32)
