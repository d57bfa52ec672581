#pragma once
// Configuration of a SLIDE network. Plain data; validate_config() (validate.h) checks it and says
// what is wrong before anything is allocated.
//
// No engine defaults live here: the engine's defaults are DEFAULTS in engines/slide/__init__.py,
// and the binding requires every key. A setting that has a default there starts here as kUnset
// (integers) or kUnsetF (NaN), values validate_config() refuses, so a configuration built in C++
// (tests, benchmarks) must set each of them and cannot silently run on a second set of defaults.
// Enumerations and switches start at their first value / false and are always set by the binding.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "active_set.h"
#include "hash_family.h"
#include "hash_tables.h"

namespace slide {

constexpr int kUnset = -1;
constexpr float kUnsetF = std::numeric_limits<float>::quiet_NaN();

// LSH settings of one sampled layer: the LSH module's own types (hash_family.h, hash_tables.h,
// active_set.h). dim and seed of the hash family are filled in by the layer.
struct LshSettings {
  HashKind hash{};
  int K = kUnset;
  int L = kUnset;
  int bucket_bits = kUnset;
  int bucket_capacity = kUnset;
  Insertion insertion{};
  SelectionKind selection{};
  int min_active = kUnset;  // random padding up to this many neurons (>= layer size: all neurons, no LSH)
  int max_active = kUnset;  // cap (0: none)
  int threshold = kUnset;   // SelectionKind::Threshold: present in at least this many of the L tables
  int pad_below = kUnset;   // pad to min_active only when fewer than this many chosen (0: always)
  int rerank_pool = kUnset; // SelectionKind::Rerank: most retrieved neurons scored (0: the whole union)
  int max_retrieved = kUnset; // most neurons taken from the tables, labels aside (0: up to max_active)
  float simhash_density = kUnsetF;
  int wta_bin_size = kUnset;
  // Padding drawn by these weights, one per neuron (finite, > 0), instead of uniformly; empty:
  // uniform. For the output layer: label frequencies, so that padding gives sampled softmax's
  // frequency-drawn negatives.
  std::vector<double> padding_weights;
};

struct LayerSettings {
  int size = 0;          // neurons
  bool sampled = false;  // LSH-sampled (row per neuron) or dense (every neuron computed)
  LshSettings lsh;
};

enum class AdamMode { Sparse, Dense };

struct OptimizerSettings {
  float lr = kUnsetF;
  float beta1 = kUnsetF;
  float beta2 = kUnsetF;
  float eps = kUnsetF;
  // Sparse: lazy Adam, one update per touched row per batch. Dense: every parameter every batch
  // (the SLIDE paper's code), moments of untouched rows decaying with a zero gradient.
  AdamMode mode{};
  // Moments stored as BF16 with stochastic rounding (bf16.h) instead of fp32: a touched row's
  // optimizer traffic drops from 3 to 2 KB (128 inputs); weights and arithmetic stay fp32.
  bool bf16_moments = false;
};

struct ScheduleSettings {
  // Hash tables are rebuilt from the current weights after intervals that grow exponentially:
  // the i-th interval (i = 0, 1, ...) is rebuild_n0 * exp(rebuild_decay * i) batches.
  int rebuild_n0 = kUnset;
  double rebuild_decay = std::numeric_limits<double>::quiet_NaN();
  // New hash functions every rehash_m batches (0: never); a rehash implies a rebuild.
  int rehash_m = kUnset;
};

struct NetworkConfig {
  int num_features = 0;
  std::vector<LayerSettings> layers;  // hidden layers (ReLU) then the output layer (num_labels)
  OptimizerSettings optimizer;
  ScheduleSettings schedule;
  uint64_t seed = 0;
  int threads = kUnset;
  // Every work item of a training step (each sample's forward/backward, each phase-2 part and row
  // block) holds one global mutex, and table rebuilds run on one thread: the whole step is
  // serialised, so parallel efficiency is at most ~1/threads by construction on any CPU. The
  // negative control of CI's scaling check (it must fail with this on). Never on in real runs.
  bool debug_serialize = false;
  float init_std = kUnsetF;  // 0: Glorot-uniform-like scale sqrt(2/(fan_in+fan_out))
  // Random padding of sampled layers while training (up to min_active): drawn per sample (the
  // SLIDE paper's scheme) or one draw per batch and layer, shared by every sample of the batch
  // (sampled softmax's shared negatives). Shared padding makes the batch touch a few thousand
  // padding rows instead of up to batch x min_active, so far fewer rows are read and updated.
  bool batch_padding = false;
  // Sampled softmax's correction of the output layer's training loss: each active output's logit
  // minus the log of its inclusion probability (active_set.h, inclusion_log_q_retrieved), labels
  // uncorrected (they are always included). Off: the plain softmax over the active set.
  bool logit_correction_log_q = false;

  int num_labels() const { return layers.empty() ? 0 : layers.back().size; }
};

}  // namespace slide
