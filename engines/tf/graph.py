"""TensorFlow model, losses, optimisers and compiled step functions (imports TensorFlow).

Imported only from `prepare`, after `set_threads` has configured TensorFlow's thread pools.

Model (identical to the SLIDE engine's, and to `engines/reference`):
    h_1 = relu(x W_1 + b_1)              x sparse [n, features] with values
    h_k = relu(h_{k-1} W_k + b_k)        further hidden layers, if any
    o   = h_last W_out^T + b_out         W_out stored row-per-label, [labels, h_last]

Loss of sample i with true label set y_i (multi-label softmax, soft target 1/|y_i|):
    loss_i = sum_{j in y_i} (1/|y_i|) * (logsumexp(o_i) - o_ij)      (0 when y_i is empty)
and the batch loss is the mean over the batch's samples (empty ones included).

Adam is Kingma & Ba's Algorithm 1 with the global step t for bias correction:
    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
    w <- w - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
The dense variant runs TF's fused ResourceApplyAdam kernel, whose update is
w -= lr_t m / (sqrt(v) + eps_t) with lr_t = lr sqrt(1-b2^t)/(1-b1^t); passing
eps_t = eps sqrt(1-b2^t) makes it exactly the formula above. The lazy variant gathers the touched
rows of w, m, v, applies the same formula to them and scatters them back; untouched rows keep
stale moments (they neither decay nor move), the usual "lazy Adam" semantics.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from harness.spec.engine import TrainMeta

log = logging.getLogger(__name__)

_VEC_I32 = tf.TensorSpec([None], tf.int32)
_VEC_F32 = tf.TensorSpec([None], tf.float32)
_SCALAR_I32 = tf.TensorSpec([], tf.int32)
# Every step takes the same flat arrays (see engines/tf/feed.py), so one trace serves every batch.
STEP_SIGNATURE = [_VEC_I32, _VEC_F32, _VEC_I32, _VEC_I32, _VEC_I32, _VEC_F32, _SCALAR_I32]
PREDICT_SIGNATURE = [_VEC_I32, _VEC_F32, _VEC_I32, _SCALAR_I32, _SCALAR_I32]


@dataclass(frozen=True)
class ModelConfig:
    num_features: int
    num_labels: int
    hidden: tuple[int, ...]
    lr: float
    beta1: float
    beta2: float
    eps: float
    xla: bool
    sampled: bool
    num_sampled: int  # effective (clamped below num_labels); unused when not sampled
    sampler: str
    unigram_power: float
    sampled_loss: str  # "tf_nn" (tf.nn.sampled_softmax_loss per pair), "shared" or "per_sample"
    candidates: str  # "batch" (one unique set for the batch) or "sample" (each sample draws its own)
    remove_accidental_hits: bool
    sampler_seed: int


def weight_shapes(num_features: int, num_labels: int, hidden: tuple[int, ...]) -> list[tuple[int, ...]]:
    """[W1 (features x h1), b1, W2 (h1 x h2), b2, ..., W_out (labels x h_last), b_out]."""
    shapes: list[tuple[int, ...]] = [(num_features, hidden[0]), (hidden[0],)]
    for a, b in itertools.pairwise(hidden):
        shapes += [(a, b), (b,)]
    shapes += [(num_labels, hidden[-1]), (num_labels,)]
    return shapes


def initial_weights(
    num_features: int, num_labels: int, hidden: tuple[int, ...], scheme: str, std: float, seed: int
) -> list[np.ndarray]:
    """Matrices N(0, std^2) ("normal", SLIDE's scheme) or Glorot-uniform; biases zero. Seeded numpy."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for shape in weight_shapes(num_features, num_labels, hidden):
        if len(shape) == 1:
            out.append(np.zeros(shape, dtype=np.float32))
        elif scheme == "normal":
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(std)  # in place: no second copy of a 343 MB matrix
            out.append(w)
        else:
            limit = np.float32(np.sqrt(6.0 / (shape[0] + shape[1])))
            w = rng.random(shape, dtype=np.float32)
            w *= 2 * limit
            w -= limit
            out.append(w)
    return out


class TFModel:
    """Variables, Adam state and the compiled train/predict functions of one engine instance."""

    def __init__(
        self,
        cfg: ModelConfig,
        weights: list[np.ndarray | None],
        device: str,
        label_counts: np.ndarray | None = None,
    ) -> None:
        """Takes ownership of `weights`: its entries are set to None as they are copied into TF.

        `label_counts` (training rows per label) feeds the "unigram" sampler only.
        """
        self.cfg = cfg
        # Add-one smoothing: a label unseen in training still has a chance to be a negative.
        self._unigrams = (
            (np.asarray(label_counts, np.float64) + 1.0).tolist() if cfg.sampler == "unigram" else None
        )
        self.device = device
        # One array at a time, the caller's copy released as soon as TF holds its own: at the
        # Amazon-670K shape each output-layer matrix is 343 MB, and peak RSS is recorded.
        self.vars, self.m, self.v = [], [], []
        with tf.device(device):
            for i in range(len(weights)):
                w, weights[i] = weights[i], None
                shape = w.shape
                self.vars.append(tf.Variable(w, name=f"w{i}"))
                del w
                self.m.append(tf.Variable(tf.zeros(shape), trainable=False, name=f"m{i}"))
                self.v.append(tf.Variable(tf.zeros(shape), trainable=False, name=f"v{i}"))
            self.t = tf.Variable(0, dtype=tf.int64, trainable=False, name="adam_step")
            # Per-sample candidates come from a seeded generator of our own (TF's candidate
            # samplers draw one set per call, for the whole batch).
            self._rng = (
                tf.random.Generator.from_seed(cfg.sampler_seed) if cfg.candidates == "sample" else None
            )
        n = len(self.vars)
        # Which variables get the lazy (row-wise) update in the sampled engine: the input
        # embedding W1 and the output layer (W_out, b_out), i.e. the ones indexed by ids.
        self.lazy = {0, n - 2, n - 1} if cfg.sampled else set()
        # XLA: the dense step compiles whole. The sampled step cannot (candidate sampling and the
        # lazy update's tf.unique have no XLA kernels), so there only the loss+gradient is compiled,
        # and with tf.nn's loss only without accidental-hit removal (no XLA kernel for
        # ComputeAccidentalHits; the "shared" loss masks hits with XLA-friendly ops).
        if cfg.sampled:
            grads = tf.function(self._loss_and_grads_sampled, jit_compile=cfg.xla or None)
            self._grads_sampled = grads
            self.train_step = tf.function(self._train_step_sampled, input_signature=STEP_SIGNATURE)
        else:
            self.train_step = tf.function(
                self._train_step_dense, input_signature=STEP_SIGNATURE, jit_compile=cfg.xla or None
            )
        self.predict = tf.function(self._topk, input_signature=PREDICT_SIGNATURE, jit_compile=cfg.xla or None)

    def warm_up(self, pad: int) -> None:
        """Trace and run both functions once, untimed, on a batch that cannot change the model.

        One sample with no features and no labels has zero loss, so every gradient is zero:
        dense Adam then leaves m = v = 0 and moves nothing (0 / (0 + eps)), lazy Adam touches no
        row. Only the step counter advances, and it is put back. Without this the first timed
        fit_step would pay for tracing and graph optimisation.
        """
        i32 = np.zeros(pad, np.int32)
        f32 = np.zeros(pad, np.float32)
        self.train_step(i32, f32, i32, i32, i32, f32, np.int32(1))
        self.t.assign(0)
        self.predict(i32, f32, i32, np.int32(1), np.int32(1))

    # ---- weights -------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        return [v.numpy().copy() for v in self.vars]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Assign weights and restart Adam (zero moments, t = 0): a fresh optimiser on new weights."""
        for var, w, m, v in zip(self.vars, weights, self.m, self.v):
            var.assign(w)
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
        self.t.assign(0)

    # ---- model ---------------------------------------------------------------------------------
    def _hidden(self, f_idx, f_val, f_row, n_rows):
        w1, b1 = self.vars[0], self.vars[1]
        # Embedding-style sparse product: gather the rows of W1 named by the features, scale by the
        # values, sum per sample. Its gradient w.r.t. W1 is an IndexedSlices over those rows only.
        rows = tf.gather(w1, f_idx) * f_val[:, None]
        h = tf.nn.relu(tf.math.unsorted_segment_sum(rows, f_row, n_rows) + b1)
        for k in range(2, len(self.vars) - 2, 2):
            h = tf.nn.relu(tf.matmul(h, self.vars[k]) + self.vars[k + 1])
        return h

    def _dense_loss(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows):
        h = self._hidden(f_idx, f_val, f_row, n_rows)
        logits = tf.matmul(h, self.vars[-2], transpose_b=True) + self.vars[-1]
        lse = tf.reduce_logsumexp(logits, axis=1)
        # sum_j t_ij (lse_i - o_ij) with t_ij = 1/|y_i|: the per-sample target mass s_i is 1, or 0
        # for a sample without labels, so such samples contribute exactly nothing.
        mass = tf.math.unsorted_segment_sum(l_w, l_row, n_rows)
        true_logits = tf.gather_nd(logits, tf.stack([l_row, l_idx], axis=1))
        per_sample = mass * lse - tf.math.unsorted_segment_sum(l_w * true_logits, l_row, n_rows)
        return tf.reduce_sum(per_sample) / tf.cast(n_rows, tf.float32)

    def _sampled_loss(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values):
        if self.cfg.sampled_loss == "shared":
            return self._shared_sampled_loss(f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values)
        if self.cfg.sampled_loss == "per_sample":
            return self._per_sample_sampled_loss(
                f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values
            )
        return self._tf_nn_sampled_loss(f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values)

    def _per_sample_sampled_loss(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values):
        """One softmax per sample over all its true labels and the candidates.

        loss_i = sum_{j in y_i} (1/|y_i|) (lse_i - t_ij), lse_i the logsumexp of the sample's true
        logits t_ij and its candidate logits, each corrected by - log(expected count), candidates
        equal to any of the sample's labels removed. This is tf.nn.sampled_softmax_loss's
        num_true > 1 form (uniform target over the true labels) for label sets of any size, and
        the estimate of the full loss that SLIDE's own active set makes: the full softmax's
        normaliser contains every true label of the sample, the per-pair form's holds only one.
        Per pair, a sample's true labels only ever rise against the few candidates; here they
        share one normaliser, so a label already above 1/|y_i| of the mass is pushed down.
        The candidates are the batch's shared set ([S]) or, with candidates = "sample", each
        sample's own ([n, S]), as SLIDE's random padding draws them.
        """
        s_ids, true_expected, sampled_expected = sampled_values
        w_out, b_out = self.vars[-2], self.vars[-1]
        h = self._hidden(f_idx, f_val, f_row, n_rows)
        if self.cfg.candidates == "sample":
            # s_ids is [n, S]: each sample's own candidates, scored against its own hidden vector.
            s_logits = tf.einsum("nd,nsd->ns", h, tf.gather(w_out, s_ids)) + tf.gather(b_out, s_ids)
        else:
            s_logits = tf.matmul(h, tf.gather(w_out, s_ids), transpose_b=True) + tf.gather(b_out, s_ids)
        s_logits -= tf.math.log(sampled_expected)
        true_logits = tf.reduce_sum(tf.gather(h, l_row) * tf.gather(w_out, l_idx), axis=1)
        true_logits += tf.gather(b_out, l_idx) - tf.math.log(true_expected[:, 0])
        if self.cfg.remove_accidental_hits and self.cfg.candidates == "sample":
            s_logits = self._mask_own_labels(s_logits, s_ids, l_idx, l_row)
        elif self.cfg.remove_accidental_hits:
            # Candidate ids are unique: find each (sample, label) pair's label among the sorted
            # candidates (O(pairs log S), no [pairs, S] comparison) and mask that one entry.
            order = tf.argsort(s_ids)
            sorted_ids = tf.gather(s_ids, order)
            pos = tf.searchsorted(sorted_ids, tf.cast(l_idx, tf.int64))
            pos = tf.minimum(pos, tf.size(s_ids, out_type=pos.dtype) - 1)
            hit = tf.equal(tf.gather(sorted_ids, pos), tf.cast(l_idx, tf.int64))
            # Every pair scatters into its (sample, nearest candidate) cell, a miss adding 0: no
            # boolean_mask, so no shape that depends on the data (XLA and GPUs keep it whole).
            where = tf.stack([l_row, tf.cast(tf.gather(order, pos), tf.int32)], axis=1)
            count = tf.scatter_nd(where, tf.cast(hit, tf.float32), tf.shape(s_logits))
            s_logits = tf.where(count > 0, tf.fill(tf.shape(s_logits), tf.float32.min), s_logits)
        # logsumexp over [candidates of i] + [true labels of i], stabilised by the joint maximum.
        peak = tf.maximum(
            tf.reduce_max(s_logits, axis=1),
            tf.math.unsorted_segment_max(true_logits, l_row, n_rows),
        )
        peak = tf.stop_gradient(peak)
        total = tf.reduce_sum(tf.exp(s_logits - peak[:, None]), axis=1)
        # XLA's padding pairs (weight 0) repeat a real pair: they must not enter the normaliser.
        real = tf.cast(l_w > 0, tf.float32)
        true_terms = real * tf.exp(true_logits - tf.gather(peak, l_row))
        total += tf.math.unsorted_segment_sum(true_terms, l_row, n_rows)
        lse = peak + tf.math.log(total)
        per_pair = tf.gather(lse, l_row) - true_logits
        return tf.reduce_sum(l_w * per_pair) / tf.cast(n_rows, tf.float32)

    def _mask_own_labels(self, s_logits, s_ids, l_idx, l_row):
        """Per-sample candidates: drop every candidate equal to one of its own sample's labels.

        Each (sample, id) becomes the key sample * num_labels + id; a candidate is a hit when its
        key is among the sorted label keys (O(n S log pairs), no [pairs, S] comparison). Exact
        with repeated candidates too: drawn with replacement, a label may be drawn twice.
        """
        width = tf.constant(self.cfg.num_labels, tf.int64)
        # A leading -1 (no key is negative) keeps the gather valid for a batch without labels.
        keys = tf.sort(tf.concat([[-1], tf.cast(l_row, tf.int64) * width + tf.cast(l_idx, tf.int64)], 0))
        rows = tf.range(tf.shape(s_ids, out_type=tf.int64)[0])[:, None]
        cand = tf.reshape(rows * width + s_ids, [-1])
        pos = tf.minimum(tf.searchsorted(keys, cand), tf.size(keys, out_type=tf.int32) - 1)
        hit = tf.reshape(tf.equal(tf.gather(keys, pos), cand), tf.shape(s_logits))
        return tf.where(hit, tf.fill(tf.shape(s_logits), tf.float32.min), s_logits)

    def _shared_sampled_loss(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values):
        """The same per-pair sampled softmax as `_tf_nn_sampled_loss`, candidate logits shared.

        tf.nn.sampled_softmax_loss multiplies every (sample, label) pair's hidden vector by all
        candidates: |y| times the work of scoring each *sample* once, which dominates on
        label-dense data (Delicious: 19 labels per sample). Here candidates are scored once per
        sample ([n, S]) and gathered per pair; log-Q correction and accidental-hit removal follow
        TF's _compute_sampled_logits, so the loss is the same function of the same candidates.
        """
        s_ids, true_expected, sampled_expected = sampled_values
        w_out, b_out = self.vars[-2], self.vars[-1]
        h = self._hidden(f_idx, f_val, f_row, n_rows)
        s_logits = tf.matmul(h, tf.gather(w_out, s_ids), transpose_b=True) + tf.gather(b_out, s_ids)
        s_logits -= tf.math.log(sampled_expected)
        pair_h = tf.gather(h, l_row)
        true_logits = tf.reduce_sum(pair_h * tf.gather(w_out, l_idx), axis=1) + tf.gather(b_out, l_idx)
        true_logits -= tf.math.log(true_expected[:, 0])
        pair_s = tf.gather(s_logits, l_row)  # [P, S]: elementwise work only, no matmul per pair
        if self.cfg.remove_accidental_hits:
            hit = tf.equal(tf.cast(l_idx, tf.int64)[:, None], s_ids[None, :])
            pair_s = tf.where(hit, tf.fill(tf.shape(pair_s), tf.float32.min), pair_s)
        logits = tf.concat([true_logits[:, None], pair_s], axis=1)
        per_pair = tf.reduce_logsumexp(logits, axis=1) - true_logits
        return tf.reduce_sum(l_w * per_pair) / tf.cast(n_rows, tf.float32)

    def _tf_nn_sampled_loss(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, sampled_values):
        """Sampled softmax, one (sample, true label) pair at a time, weighted by 1/|y|.

        The full-softmax loss decomposes exactly as sum_j (1/|y_i|) * (-log softmax(o_i)_j); each
        term is estimated by tf.nn.sampled_softmax_loss with num_true=1 on the pair, the batch
        sharing one candidate set. Accidental hits (a candidate equal to the pair's own label) are
        removed; a sample's *other* true labels drawn as candidates act as negatives for that pair.
        """
        h = self._hidden(f_idx, f_val, f_row, n_rows)
        pair_inputs = tf.gather(h, l_row)
        per_pair = tf.nn.sampled_softmax_loss(
            weights=self.vars[-2],
            biases=self.vars[-1],
            labels=tf.cast(l_idx, tf.int64)[:, None],
            inputs=pair_inputs,
            num_sampled=self.cfg.num_sampled,
            num_classes=self.cfg.num_labels,
            num_true=1,
            sampled_values=sampled_values,
            remove_accidental_hits=self.cfg.remove_accidental_hits,
        )
        return tf.reduce_sum(l_w * per_pair) / tf.cast(n_rows, tf.float32)

    # ---- optimiser -----------------------------------------------------------------------------
    def _bias_terms(self):
        t = tf.cast(self.t, tf.float32)
        c1 = 1.0 - tf.pow(self.cfg.beta1, t)
        c2 = 1.0 - tf.pow(self.cfg.beta2, t)
        return c1, c2

    def _dense_adam(self, i, grad, c1, c2):
        cfg = self.cfg
        if isinstance(grad, tf.IndexedSlices):
            grad = tf.convert_to_tensor(grad)  # dense Adam moves every row: it needs the full gradient
        tf.raw_ops.ResourceApplyAdam(
            var=self.vars[i].handle,
            m=self.m[i].handle,
            v=self.v[i].handle,
            beta1_power=1.0 - c1,
            beta2_power=1.0 - c2,
            lr=tf.constant(cfg.lr, tf.float32),
            beta1=tf.constant(cfg.beta1, tf.float32),
            beta2=tf.constant(cfg.beta2, tf.float32),
            epsilon=cfg.eps * tf.sqrt(c2),  # turns the fused kernel's eps-hat form into Algorithm 1
            grad=grad,
            use_locking=False,
        )

    def _lazy_adam(self, i, grad, c1, c2):
        """Adam on the rows named by an IndexedSlices gradient only: gather, update, scatter."""
        cfg = self.cfg
        if not isinstance(grad, tf.IndexedSlices):
            self._dense_adam(i, grad, c1, c2)
            return
        rows, pos = tf.unique(grad.indices)  # duplicate ids (repeated features/labels) sum first
        g = tf.math.unsorted_segment_sum(grad.values, pos, tf.shape(rows)[0])
        var, m, v = self.vars[i], self.m[i], self.v[i]
        m_rows = cfg.beta1 * tf.gather(m, rows) + (1.0 - cfg.beta1) * g
        v_rows = cfg.beta2 * tf.gather(v, rows) + (1.0 - cfg.beta2) * tf.square(g)
        step = cfg.lr * (m_rows / c1) / (tf.sqrt(v_rows / c2) + cfg.eps)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        var.scatter_sub(tf.IndexedSlices(step, rows))

    def _apply(self, grads) -> None:
        self.t.assign_add(1)
        c1, c2 = self._bias_terms()
        for i, g in enumerate(grads):
            if i in self.lazy:
                self._lazy_adam(i, g, c1, c2)
            else:
                self._dense_adam(i, g, c1, c2)

    # ---- compiled steps ------------------------------------------------------------------------
    # Every compiled function opens the engine's device scope itself: the variables live there,
    # but without the scope ops built from the step's (host) inputs could be placed elsewhere, and
    # device = "cpu" on a machine with a GPU would still run on the GPU, TF's default choice.
    def _train_step_dense(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows):
        with tf.device(self.device):
            with tf.GradientTape() as tape:
                loss = self._dense_loss(f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows)
            self._apply(tape.gradient(loss, self.vars))
        return loss

    def _draw_candidates(self, l_idx, n_rows):
        cfg = self.cfg
        if cfg.candidates == "sample":
            # num_sampled uniform ids per sample, with replacement: each id's expected count in a
            # sample's draw is exactly S / L, the log-Q correction (a constant under uniform).
            with tf.device(self.device):
                shape = tf.stack([n_rows, cfg.num_sampled])
                ids = self._rng.uniform(shape, minval=0, maxval=cfg.num_labels, dtype=tf.int64)
                q = tf.constant(cfg.num_sampled / cfg.num_labels, tf.float32)
                return ids, tf.fill([tf.size(l_idx), 1], q), tf.fill(tf.shape(ids), q)
        true = tf.cast(l_idx, tf.int64)[:, None]
        common = {
            "true_classes": true,
            "num_true": 1,
            "num_sampled": cfg.num_sampled,
            "unique": True,
            "range_max": cfg.num_labels,
        }
        # TF's candidate samplers have CPU kernels only: placed there on purpose rather than left to
        # soft placement. They draw num_sampled ids per batch; the ids then go to the step's device.
        with tf.device("/device:CPU:0"):
            if cfg.sampler == "unigram":
                return tf.random.fixed_unigram_candidate_sampler(
                    **common, unigrams=self._unigrams, distortion=cfg.unigram_power, seed=cfg.sampler_seed
                )
            sampler = (
                tf.random.uniform_candidate_sampler
                if cfg.sampler == "uniform"
                else tf.random.log_uniform_candidate_sampler
            )
            return sampler(**common, seed=cfg.sampler_seed)

    def _loss_and_grads_sampled(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, s_ids, s_true, s_exp):
        # A function of its own (compiled alone with XLA), so it needs its own device scope.
        with tf.device(self.device):
            with tf.GradientTape() as tape:
                loss = self._sampled_loss(
                    f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, (s_ids, s_true, s_exp)
                )
            return loss, tape.gradient(loss, self.vars)

    def _train_step_sampled(self, f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows):
        s_ids, s_true, s_exp = self._draw_candidates(l_idx, n_rows)
        with tf.device(self.device):
            loss, grads = self._grads_sampled(
                f_idx, f_val, f_row, l_idx, l_row, l_w, n_rows, s_ids, s_true, s_exp
            )
            self._apply(grads)
        return loss

    def _topk(self, f_idx, f_val, f_row, n_rows, k):
        # Exact: every label scored and the top k taken on the device; only [n, k] ids come back.
        with tf.device(self.device):
            h = self._hidden(f_idx, f_val, f_row, n_rows)
            logits = tf.matmul(h, self.vars[-2], transpose_b=True) + self.vars[-1]
            return tf.math.top_k(logits, k=k, sorted=True).indices


def config_from_meta(meta: TrainMeta, params: dict, sampled: bool) -> ModelConfig:
    num_sampled = int(params.get("num_sampled", 0))
    if sampled and num_sampled >= meta.num_labels:
        # Unique sampling cannot draw more distinct candidates than there are labels.
        clamped = meta.num_labels - 1
        log.warning("num_sampled=%d >= num_labels=%d: using %d", num_sampled, meta.num_labels, clamped)
        num_sampled = clamped
    opt = meta.optimizer
    return ModelConfig(
        num_features=meta.num_features,
        num_labels=meta.num_labels,
        hidden=tuple(meta.model.hidden),
        lr=opt.lr,
        beta1=opt.beta1,
        beta2=opt.beta2,
        eps=opt.eps,
        xla=bool(params["xla"]),
        sampled=sampled,
        num_sampled=num_sampled,
        sampler=str(params.get("sampler", "uniform")),
        unigram_power=float(params.get("unigram_power", 0.75)),
        sampled_loss=str(params.get("sampled_loss", "tf_nn")),
        candidates=str(params.get("candidates", "batch")),
        remove_accidental_hits=bool(params.get("remove_accidental_hits", True)),
        sampler_seed=meta.seed + int(params["seed_offset"]),
    )
