"""`TFDenseEngine` (full softmax) and `TFSampledEngine` (sampled softmax, lazy Adam).

Both train the same model as the SLIDE engine from the same `TrainMeta` (see engines/tf/graph.py
for the model, loss and Adam formulas). TensorFlow is imported lazily, in `set_threads` or
`prepare`, so `check_params` stays cheap and thread pools are fixed before TF runs any op.

Weights (`get_weights` / `set_weights`), the layout shared with the SLIDE and reference engines:
    [W1 (num_features x hidden[0]), b1 (hidden[0]),
     (W_k (hidden[k-1] x hidden[k]), b_k (hidden[k]))  for each further hidden layer,
     W_out (num_labels x hidden[-1]) -- one row per label --, b_out (num_labels)]
all float32. Initialisation: matrices N(0, 0.01^2) by default (SLIDE's scheme; `init = "glorot"`
for Glorot-uniform), biases zero, from numpy's PCG64 seeded with seed + seed_offset.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from engines.tf import feed
from harness.datasets.sparse import Csr
from harness.spec.engine import Batch, Engine, StepStats, TrainMeta, check_keys, require_label_counts

log = logging.getLogger(__name__)

_COMMON_DEFAULTS: dict[str, Any] = {
    "xla": False,  # compile steps with XLA (jit_compile); shapes padded to power-of-two buckets
    "eval_chunk": 0,  # rows scored per predict chunk; 0 = as many as keep logits under ~1 GiB
    "seed_offset": 0,  # added to the run seed for initialisation and candidate sampling
    "init": "normal",  # "normal" (N(0, init_std^2), SLIDE's scheme) or "glorot" (uniform)
    "init_std": 0.01,
    "device": "auto",  # "auto" (GPU when TF sees one), "cpu" or "gpu"
    # TensorFloat-32 matmuls on GPUs that have them (Ampere and later; TF's default is on). Off:
    # every engine computes in float32, as the SLIDE paper's V100 (no TF32) did; on: faster
    # matmuls with 10-bit mantissa inputs. No effect on the CPU.
    "tf32": False,
    "inter_op_threads": 1,  # TF's inter-op pool schedules ops; compute runs on the intra-op pool
    # TF's pooling BFC allocator for host memory (TF_CPU_ALLOCATOR_USE_BFC). Without it every step's
    # 343 MB logits are fresh mmap'd pages: at the Amazon-670K shape, page faults cost ~1.1 s of
    # system time per dense step (2.8 -> 1.55 CPU-s/step with it, 1 thread). Only takes effect
    # when set before TensorFlow is first imported in the process (the harness's fresh worker).
    "bfc_allocator": True,
    # oneDNN kernels (TF_ENABLE_ONEDNN_OPTS). TF turns them on by default only on CPUs with
    # AVX512_VNNI/BF16/AMX; on this AVX2 EPYC "on" cut the Amazon-670K dense step from ~1.6 to
    # ~1.4 CPU-s (logit matmul 0.52 -> 0.33 s, 1 thread). "auto" leaves TF's own choice.
    "onednn": "on",
}
_SAMPLED_DEFAULTS: dict[str, Any] = {
    "num_sampled": 4096,  # candidates per batch (clamped to num_labels - 1)
    # "unigram" (TF's fixed-unigram sampler): by the training rows per label, plus one, to the
    # power unigram_power (word2vec's unigram^0.75 noise), so the frequent labels, the ones a
    # collapse promotes over every input, are negatives in almost every step; it needs
    # TrainMeta.label_counts, which the harness always gives. "uniform" (TF's uniform sampler: the
    # same-size step collapsed at the Delicious-200K shape, engines/tf/README.md); "log_uniform"
    # (Zipf over ids: only right when ids are sorted by frequency).
    "sampler": "unigram",
    "unigram_power": 0.75,
    "remove_accidental_hits": True,
    # "tf_nn": tf.nn.sampled_softmax_loss, one example per (sample, label) pair. "shared": the same
    # loss with candidate logits computed once per sample, |y| times fewer FLOPs. "per_sample": one
    # softmax per sample over all its labels and the candidates (tf.nn's num_true > 1 form) (graph.py).
    "sampled_loss": "per_sample",
    # "batch": num_sampled unique candidates shared by the batch (TF's samplers). "sample": each
    # sample draws num_sampled uniform candidates of its own, with replacement, as SLIDE pads its
    # active set: a step then pushes down up to n x num_sampled distinct rows, not num_sampled.
    # Only with sampled_loss = "per_sample" and sampler = "uniform".
    "candidates": "batch",
}
SAMPLED_LOSSES = ("tf_nn", "shared", "per_sample")
SAMPLERS = ("uniform", "log_uniform", "unigram")
CANDIDATE_SCOPES = ("batch", "sample")
# Logits held per predict chunk (exact scoring of every label). Every chunk streams the whole output
# matrix (343 MB at 670,091 labels x 128), so narrow chunks pay that read again and again: on a
# 2-core Xeon, 500 points at 670K took 2.9 s in chunks of 25 rows and 0.9 s in one. 1 GiB is 400
# rows at that width, on the CPU and on a GPU alike.
_EVAL_CHUNK_BYTES = {"cpu": 1 << 30, "gpu": 1 << 30}

# TF's thread pools and host allocator are process-wide and frozen once TF starts.
_threads_in_effect: int | None = None
_env_note: str | None = None
_env_configured = False


def _configure_tf_env(params: Mapping[str, Any]) -> None:
    """Set TF's allocator and oneDNN switches (environment variables read at TF's import)."""
    global _env_note, _env_configured
    if _env_configured:
        return
    _env_configured = True
    if "tensorflow" in sys.modules:
        _env_note = (
            "TensorFlow was imported before the engine configured it: allocator and oneDNN left as found"
        )
        return
    if params["bfc_allocator"]:
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    if params["onednn"] != "auto":
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1" if params["onednn"] == "on" else "0")


def _validate_common(p: dict[str, Any], where: str) -> None:
    if p["eval_chunk"] < 0:
        raise ValueError(
            f"{where}: parameter 'eval_chunk' must be >= 0 (0 = automatic), got {p['eval_chunk']}"
        )
    if p["init"] not in ("normal", "glorot"):
        raise ValueError(f"{where}: parameter 'init' must be 'normal' or 'glorot', got {p['init']!r}")
    if not (p["init_std"] > 0 and np.isfinite(p["init_std"])):
        raise ValueError(f"{where}: parameter 'init_std' must be a positive number, got {p['init_std']}")
    if p["device"] not in ("auto", "cpu", "gpu"):
        raise ValueError(f"{where}: parameter 'device' must be 'auto', 'cpu' or 'gpu', got {p['device']!r}")
    if p["inter_op_threads"] < 1:
        raise ValueError(f"{where}: parameter 'inter_op_threads' must be >= 1, got {p['inter_op_threads']}")
    if p["onednn"] not in ("auto", "on", "off"):
        raise ValueError(f"{where}: parameter 'onednn' must be 'auto', 'on' or 'off', got {p['onednn']!r}")
    if p["seed_offset"] < 0:
        raise ValueError(f"{where}: parameter 'seed_offset' must be >= 0, got {p['seed_offset']}")


def _logical_devices(tf, kind: str) -> list[str]:
    """Names of the logical devices of `kind` ("GPU" or "CPU") TensorFlow sees, e.g.
    '/job:localhost/replica:0/task:0/device:GPU:0'. A function of its own so that tests can fake
    a GPU list on machines without one."""
    return [d.name for d in tf.config.list_logical_devices(kind)]


def _tf_build_name() -> str:
    """Which TensorFlow distribution is installed, for error messages (no TF import)."""
    import importlib.metadata

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "an unknown TensorFlow build"


def _build_info(tf) -> dict[str, Any]:
    """CUDA and cuDNN versions TensorFlow was built with (tf.sysconfig.get_build_info())."""
    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception as exc:  # noqa: BLE001 - a missing field must not cost the run its record
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "is_cuda_build": bool(build.get("is_cuda_build", False)),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
    }


def _gpu_details(tf, device: str) -> dict[str, Any]:
    """Model, compute capability and TF's peak allocation on the GPU the run used."""
    out: dict[str, Any] = {}
    try:
        index = int(device.rsplit(":", 1)[-1])
        physical = tf.config.list_physical_devices("GPU")[index]
        details = tf.config.experimental.get_device_details(physical)
        out["name"] = details.get("device_name")
        cc = details.get("compute_capability")
        out["compute_capability"] = ".".join(map(str, cc)) if cc else None
        # Peak bytes TF's GPU allocator held: the device-side counterpart of peak RSS.
        peak = tf.config.experimental.get_memory_info(f"GPU:{index}")["peak"]
        out["memory_peak_mb"] = peak / (1 << 20)
    except Exception as exc:  # noqa: BLE001 - the run's numbers matter more than these details
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def choose_device(want: str, gpus: list[str], cpus: list[str]) -> str:
    """The TF device name a run uses: `want` is "auto" (first GPU if any, else CPU), "cpu" or "gpu"."""
    if want not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {want!r}")
    if want == "gpu" and not gpus:
        raise RuntimeError(
            f"device = 'gpu' requested but TensorFlow sees no GPU (installed: {_tf_build_name()}). "
            "On a machine with an NVIDIA GPU, `make install` installs the CUDA build (TF_VARIANT=cuda "
            "forces it); check `nvidia-smi -L` lists the GPU."
        )
    if want != "cpu" and gpus:
        return gpus[0]
    if not cpus:
        raise RuntimeError("TensorFlow lists no CPU device")
    return cpus[0]


def device_kind(device: str) -> str:
    """'gpu' or 'cpu' for a TF device name ('/job:localhost/replica:0/task:0/device:GPU:0' -> 'gpu')."""
    return "gpu" if ":GPU:" in device.upper() or device.upper().startswith("GPU") else "cpu"


class _TFEngine(Engine):
    """What both TF engines share: threads, device, weights, feeding, chunked exact top-k."""

    sampled: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self._threads: int | None = None
        self._model = None
        self._meta: TrainMeta | None = None
        self._device = ""

    # ---- threads and device --------------------------------------------------------------------
    def set_threads(self, n: int) -> int:
        global _threads_in_effect
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        inter = self.params["inter_op_threads"]
        _configure_tf_env(self.params)
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
            _threads_in_effect = n
        except RuntimeError:
            # TF already ran an op in this process with other settings (e.g. several engines in one
            # test process); the harness itself always starts a fresh process per run.
            current = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
            log.warning(
                "TensorFlow already initialised with %d intra-op threads; cannot switch to %d", current, n
            )
            _threads_in_effect = current
        self._threads = _threads_in_effect
        return self._threads

    def _pick_device(self, tf) -> str:
        return choose_device(
            self.params["device"], _logical_devices(tf, "GPU"), _logical_devices(tf, "CPU")
        )

    # ---- lifecycle -----------------------------------------------------------------------------
    def prepare(self, meta: TrainMeta) -> None:
        if not meta.model.hidden:
            raise ValueError("the TF engines need at least one hidden layer (model.hidden is empty)")
        # Checked before TensorFlow is imported: oneDNN aborts the process (SIGABRT, no Python
        # exception) when asked for a matmul with a zero-sized dimension.
        shapes = {"num_features": meta.num_features, "num_labels": meta.num_labels}
        shapes.update({f"model.hidden[{i}]": size for i, size in enumerate(meta.model.hidden)})
        for what, size in shapes.items():
            if size < 1:
                raise ValueError(f"{self.name}: {what} must be >= 1, got {size}")
        if meta.model.activation != "relu":
            raise ValueError(f"model.activation {meta.model.activation!r} unsupported: only 'relu'")
        if meta.optimizer.name != "adam":
            raise ValueError(f"optimizer {meta.optimizer.name!r} unsupported: only 'adam'")
        if self._threads is None:
            # Not told: TF's defaults stay; info() then reports intra-op threads 0 (= TF's choice).
            log.info("set_threads was not called before prepare; using TensorFlow's default thread pools")
        _configure_tf_env(self.params)
        import tensorflow as tf

        from engines.tf import graph  # imports TensorFlow

        self._meta = meta
        self._device = self._pick_device(tf)
        tf.config.experimental.enable_tensor_float_32_execution(bool(self.params["tf32"]))
        cfg = graph.config_from_meta(meta, self.params, self.sampled)
        if cfg.sampled and cfg.sampler == "unigram":
            require_label_counts(meta, self.name, "sampler 'unigram'", "sampler = 'uniform'")
        seed = meta.seed + self.params["seed_offset"]
        weights = graph.initial_weights(
            meta.num_features, meta.num_labels, cfg.hidden, self.params["init"], self.params["init_std"], seed
        )
        self._model = graph.TFModel(cfg, weights, self._device, meta.label_counts)
        self._cfg = cfg
        # XLA buckets start at 64 entries (engines/tf/feed.py); padding entries have value/weight 0.
        self._model.warm_up(pad=64 if cfg.xla else 0)
        log.info("%s prepared on %s (xla=%s)", self.name, self._device, cfg.xla)

    def _require_model(self):
        if self._model is None or self._meta is None:
            raise RuntimeError(f"{self.name}: prepare() must be called first")
        return self._model, self._meta

    def fit_step(self, batch: Batch) -> StepStats:
        model, meta = self._require_model()
        pad = self._cfg.xla
        f = feed.feature_arrays(batch.features, meta.num_features, pad=pad)
        y = feed.label_arrays(batch.labels, meta.num_labels, f.n_rows, pad=pad)
        loss = model.train_step(f.idx, f.val, f.row, y.idx, y.row, y.weight, np.int32(f.n_rows))
        return StepStats(loss=float(loss), active_outputs=self._active_outputs(batch))

    def _active_outputs(self, batch: Batch) -> float:
        return float(self._require_model()[1].num_labels)

    def predict_topk(self, features: Csr, k: int) -> np.ndarray:
        model, meta = self._require_model()
        if not 1 <= k <= meta.num_labels:
            raise ValueError(f"k must be in [1, {meta.num_labels}], got {k}")
        n = features.n_rows
        budget = _EVAL_CHUNK_BYTES[device_kind(self._device)]
        chunk = self.params["eval_chunk"] or max(1, budget // (4 * meta.num_labels))
        out = np.empty((n, k), dtype=np.int32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            part = features.take(np.arange(start, stop))
            f = feed.feature_arrays(part, meta.num_features, pad=self._cfg.xla)
            out[start:stop] = model.predict(f.idx, f.val, f.row, np.int32(f.n_rows), np.int32(k)).numpy()
        return out

    # ---- weights -------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, layout in the module docstring."""
        return self._require_model()[0].get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Replace every weight (layout in the module docstring) and restart Adam from zero state."""
        model, meta = self._require_model()
        from engines.tf.graph import weight_shapes

        expected = weight_shapes(meta.num_features, meta.num_labels, tuple(meta.model.hidden))
        if len(weights) != len(expected):
            raise ValueError(f"expected {len(expected)} weight arrays, got {len(weights)}")
        arrays = []
        for i, (w, shape) in enumerate(zip(weights, expected)):
            w = np.asarray(w)
            if w.shape != shape:
                raise ValueError(f"weight {i}: expected shape {shape}, got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"weight {i}: contains non-finite values")
            arrays.append(w.astype(np.float32, copy=False))
        model.set_weights(arrays)

    def info(self) -> dict[str, Any]:
        import tensorflow as tf

        info: dict[str, Any] = {
            "engine": self.name,
            "tensorflow": tf.__version__,
            "device": self._device or None,
            "device_kind": device_kind(self._device) if self._device else None,
            "gpus_visible": [d.name for d in tf.config.list_physical_devices("GPU")],
            # What this TF was built against (tensorflow-cpu: no CUDA); the driver is in environment.gpus.
            "tf_build": _build_info(tf),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "threads": self._threads,
            "xla": bool(self.params["xla"]),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "tf default"),
            "cpu_allocator": "bfc"
            if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true")
            else "default",
            "tf_env_note": _env_note,
            "optimizer": "adam (lazy rows for W1, W_out, b_out)" if self.sampled else "adam (dense, fused)",
            "params": dict(self.params),
        }
        if self.sampled and self._model is not None:
            info["num_sampled_effective"] = self._cfg.num_sampled
        if self._device and device_kind(self._device) == "gpu":
            info["gpu"] = _gpu_details(tf, self._device)
        return info


class TFDenseEngine(_TFEngine):
    """Full softmax over every label, dense Adam (TF's fused kernel) on every weight."""

    name: ClassVar[str] = "tf_dense"
    sampled: ClassVar[bool] = False

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        p = check_keys(params, _COMMON_DEFAULTS, "engines.tf_dense")
        _validate_common(p, "engines.tf_dense")
        return p


class TFSampledEngine(_TFEngine):
    """Sampled softmax (tf.nn.sampled_softmax_loss) with lazy Adam on the rows a step touched."""

    name: ClassVar[str] = "tf_sampled"
    sampled: ClassVar[bool] = True

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        where = "engines.tf_sampled"
        p = check_keys(params, {**_COMMON_DEFAULTS, **_SAMPLED_DEFAULTS}, where)
        _validate_common(p, where)
        if p["num_sampled"] < 1:
            raise ValueError(f"{where}: parameter 'num_sampled' must be >= 1, got {p['num_sampled']}")
        if p["sampler"] not in SAMPLERS:
            raise ValueError(
                f"{where}: parameter 'sampler' must be one of {', '.join(SAMPLERS)}, got {p['sampler']!r}"
            )
        if not 0.0 <= p["unigram_power"] <= 1.0:
            raise ValueError(f"{where}: parameter 'unigram_power' must be in [0, 1], got {p['unigram_power']}")
        if p["sampled_loss"] not in SAMPLED_LOSSES:
            raise ValueError(
                f"{where}: parameter 'sampled_loss' must be one of {', '.join(SAMPLED_LOSSES)}, "
                f"got {p['sampled_loss']!r}"
            )
        if p["candidates"] not in CANDIDATE_SCOPES:
            raise ValueError(
                f"{where}: parameter 'candidates' must be one of {', '.join(CANDIDATE_SCOPES)}, "
                f"got {p['candidates']!r}"
            )
        if p["candidates"] == "sample" and (p["sampled_loss"], p["sampler"]) != ("per_sample", "uniform"):
            raise ValueError(
                f"{where}: parameter 'candidates' = 'sample' needs 'sampled_loss' = 'per_sample' and "
                f"'sampler' = 'uniform', got {p['sampled_loss']!r} and {p['sampler']!r}"
            )
        if p["xla"] and p["remove_accidental_hits"] and p["sampled_loss"] == "tf_nn":
            raise ValueError(
                f"{where}: parameter 'xla' = true needs 'remove_accidental_hits' = false or "
                "'sampled_loss' = 'shared' (tf.nn's ComputeAccidentalHits op has no XLA kernel)"
            )
        return p

    def _active_outputs(self, batch: Batch) -> float:
        # Each (sample, label) pair scores its true label and the shared candidates.
        n = max(1, len(batch))
        return float(self._cfg.num_sampled + batch.labels.nnz / n)
