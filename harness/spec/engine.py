"""The one interface every engine implements. No optional methods.

The harness owns batching, data order, clocks, evaluation and the stop rule; an engine only
trains on the batches it is given and returns top-k label ids. Engines never time themselves and
never touch files. Heavy imports (TensorFlow, the native extension) happen inside `set_threads`
or `prepare`, never at module import, so that the worker can fix thread settings first and so
that `check_params` is cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.datasets.sparse import Csr


@dataclass(frozen=True)
class Batch:
    """One minibatch: sparse features (with values) and sparse labels (ids only)."""

    features: Csr
    labels: Csr

    def __len__(self) -> int:
        return self.features.n_rows


@dataclass(frozen=True)
class ModelSpec:
    """Sparse input -> hidden layers (ReLU) -> output over all labels."""

    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"


@dataclass(frozen=True)
class OptimizerSpec:
    """Adam hyper-parameters, shared by every engine of a workload."""

    name: str = "adam"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainMeta:
    """Everything an engine may know before training: shapes, model, optimizer, seed, own params."""

    num_features: int
    num_labels: int
    num_train: int
    batch_size: int
    model: ModelSpec = field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    seed: int = 0
    # How many training rows carry each label (length num_labels), for samplers that draw by
    # frequency; None when the caller does not know them. Data statistics, not a label leak.
    label_counts: Any = field(default=None, compare=False, repr=False)


def require_label_counts(meta: TrainMeta, who: str, setting: str, fallback: str) -> np.ndarray:
    """meta.label_counts as float64, for a sampler that draws labels by frequency; a ValueError
    naming the engine (`who`), the setting that needs them and the way out (`fallback`) when they
    are missing, of the wrong length, negative or not finite."""
    counts = meta.label_counts
    if counts is None or len(counts) != meta.num_labels:
        got = "none" if counts is None else f"{len(counts)} of them"
        raise ValueError(
            f"{who}: {setting} needs the training rows per label (TrainMeta.label_counts, one per "
            f"label: {meta.num_labels}), got {got}; give them, or set {fallback}"
        )
    counts = np.asarray(counts, dtype=np.float64)
    if not (np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError(f"{who}: TrainMeta.label_counts must be finite and >= 0")
    return counts


@dataclass(frozen=True)
class StepStats:
    """What one `fit_step` reports. `loss` is the mean over the batch's samples."""

    loss: float
    active_outputs: float | None = None  # mean output neurons computed per sample, where known


class Engine(ABC):
    """Base class of every engine. Subclasses set `name` and implement every method."""

    name: ClassVar[str]

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = type(self).check_params(dict(params or {}))

    @classmethod
    @abstractmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the engine's own workload parameters and fill defaults.

        Raises ValueError naming the offending key. Must be cheap and import nothing heavy: the
        workload loader calls it to refuse a bad spec before any run starts.
        """

    @abstractmethod
    def set_threads(self, n: int) -> int:
        """Use `n` threads; called once, before `prepare`. Returns the count actually in effect."""

    @abstractmethod
    def prepare(self, meta: TrainMeta) -> None:
        """Allocate and initialise the model (untimed)."""

    @abstractmethod
    def fit_step(self, batch: Batch) -> StepStats:
        """Exactly one minibatch update."""

    @abstractmethod
    def predict_topk(self, features: Csr, k: int) -> np.ndarray:
        """int32 array of shape (n_rows, k): label ids, best first."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Version, build flags or framework version, device, effective thread count."""

    def diagnostics(self, features: Csr, labels: Csr) -> dict[str, Any] | None:
        """Optional: what the engine's output sampler did since the previous call, and how well it
        retrieves on these points (see `harness.run.metrics.candidate_quality`). Called at evaluations,
        off the train clock. None (the default) for engines that do not sample their outputs."""
        return None


def check_keys(params: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Shared helper for `check_params`: refuse unknown keys and wrong types, fill defaults.

    A default's type is the expected type (an int is accepted where a float is expected).
    """
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    out = dict(defaults)
    for key, value in params.items():
        expected = type(defaults[key])
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"{where}: parameter {key!r} must be {expected.__name__}, got {value!r}")
        out[key] = value
    return out
