#pragma once
// The SLIDE network: sparse input -> hidden layers (ReLU; dense or LSH-sampled) -> output layer
// whose active neurons are chosen per sample by LSH. Training and inference; no Python here.
//
// Threading (OpenMP): a batch is processed in two phases.
//  1. Samples in parallel: forward, loss, and backward to every layer's deltas. Weights are only
//     read in this phase, each sample writes only its own state, and per-sample random streams
//     (active-set padding) are derived from (seed, step, sample), so this phase is race-free and its
//     result does not depend on the thread count.
//  2. Rows in parallel: every weight row has one owning thread (rows are dealt out in blocks).
//     Each thread groups the batch's gradient contributions to its own rows, then sums and
//     Adam-updates them in ascending row order (a near-sequential sweep through the matrices that
//     hardware prefetchers can follow). No dense gradient matrix, no locks, no atomics, and no
//     serial step between the phases.
// This keeps SLIDE's HOGWILD spirit (no synchronisation between samples, one update per touched
// neuron per batch) without its data races: the gradient accumulation that the original code does
// with racy `+=` into per-neuron buffers is done here by grouping, so results are bit-identical
// for any thread count (summation order is the sample order).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config.h"
#include "kernels.h"
#include "layer.h"

namespace slide {

// A CSR matrix owned elsewhere (numpy arrays in the binding). values == nullptr: all ones.
struct CsrView {
  const int64_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  const float* values = nullptr;
  int64_t n_rows = 0;
  int64_t n_cols = 0;
};

struct TrainStats {
  double loss = 0.0;         // mean over the batch's samples
  double mean_active = 0.0;  // mean output neurons computed per sample
};

// Output neurons computed for training samples, by where they came from; sums over samples.
struct ActiveComposition {
  int64_t samples = 0, labels = 0, retrieved = 0, padded = 0;
};

enum class InferenceMode { Exact, Lsh };

class Network {
 public:
  // Throws std::invalid_argument with validate_config()'s message for a bad configuration.
  explicit Network(const NetworkConfig& cfg);
  ~Network();

  const NetworkConfig& config() const { return cfg_; }
  int64_t step() const { return step_; }
  int threads() const { return cfg_.threads; }
  void set_threads(int n);

  // One minibatch update. Inputs must have passed validate_batch (validate.h).
  TrainStats train_batch(const CsrView& features, const CsrView& labels);
  // out: n_rows x k label ids, best first (ties: lower id first).
  void predict_topk(const CsrView& features, int k, InferenceMode mode, int32_t* out);
  // Logits of every output neuron for each sample (exact forward), n_rows x num_labels. For tests.
  void predict_scores(const CsrView& features, float* out);

  // For tests: the batch's mean loss and its exact gradient, without changing anything. Every
  // sampled layer must have all neurons active (min_active >= size) so the loss is the full one.
  // grad_w[l] is n_rows x row_len of layer l (its storage layout), grad_b[l] has n_out entries.
  double loss_and_gradients(const CsrView& features, const CsrView& labels, std::vector<std::vector<float>>* grad_w,
                            std::vector<std::vector<float>>* grad_b);

  // Output neurons of the training samples so far, by origin (labels, retrieved from the tables,
  // random padding): what the sampler actually contributed.
  ActiveComposition active_composition() const;
  // For each sample: the output layer's candidates as training would retrieve them (exact hidden
  // layers, same selection, no labels, no random padding). Empty when the output is not hashed.
  void lsh_candidates(const CsrView& features, std::vector<std::vector<int32_t>>* out);

  // For tests: the output layer's active ids of sample s of the latest training batch, and their
  // log inclusion probabilities (empty without the log-q correction).
  void last_output(int64_t s, std::vector<int32_t>* ids, std::vector<float>* log_q) const;

  // Rebuild every sampled layer's tables now (also done on construction and by the schedule).
  void rebuild_tables();
  int64_t rebuilds() const { return rebuilds_; }
  int64_t next_rebuild_step() const { return next_rebuild_; }

  // Seconds spent in each phase of train_batch since construction (for benchmarks): forward and
  // backward over samples, grouping + Adam per layer (output layer last), table maintenance; and
  // the duration of the latest full rebuild of every sampled layer's tables (the initial build
  // counts).
  struct PhaseTimes {
    double forward_backward = 0, update_hidden = 0, update_output = 0, tables = 0, last_rebuild = 0;
  };
  const PhaseTimes& phase_times() const { return times_; }

  int num_layers() const { return static_cast<int>(layers_.size()); }
  Layer& layer(int i) { return *layers_[i]; }
  const Layer& layer(int i) const { return *layers_[i]; }
  size_t memory_bytes() const;

  // Versioned binary format: magic, version, config, step, every layer's weights and moments.
  // save throws std::runtime_error on I/O failure; load throws std::runtime_error with the reason
  // (not a model file, unsupported version, truncated, shapes inconsistent).
  void save(const std::string& path) const;
  static std::unique_ptr<Network> load(const std::string& path);
  void set_step(int64_t step) { step_ = step; }

  struct SampleState;
  struct ThreadScratch;

 private:
  void forward(const CsrView& x, int64_t row, const int32_t* labels, int n_labels, bool use_lsh,
               bool force_labels, uint64_t stream, SampleState& st, ThreadScratch& ts, int upto = -1);
  double backward(int64_t row, const int32_t* labels, int n_labels, double inv_batch, SampleState& st,
                  ThreadScratch& ts);
  // Phase 1 of a training step: forward and backward of every sample (parallel). Returns stats.
  TrainStats forward_backward_batch(const CsrView& x, const CsrView& y);
  // Phase 2 for one layer: group the contributions by row; Adam-update each touched row, or with
  // sink_w/sink_b given, store the summed gradient there instead (tests).
  void update_layer(int l, const CsrView& x, int64_t n_samples, std::vector<float>* sink_w = nullptr,
                    std::vector<float>* sink_b = nullptr);
  void advance_schedule();
  // Exact scores of every output for samples taken in blocks (neuron-major output layer only):
  // start(s, local, ts) once per sample, score(s, local, j, logit, ts) for each of its outputs j,
  // finish(s, local, ts) after its last; `local` is the sample's index in its block, `ts` the
  // thread's scratch. Output chunks are outermost, so a chunk of rows is read once per block.
  template <class Start, class Score, class Finish>
  void score_outputs_blocked(const CsrView& x, Start&& start, Score&& score, Finish&& finish);
  // The mutex every training work item holds when debug_serialize is on, else nullptr.
  std::mutex* serial_lock() { return cfg_.debug_serialize ? &serialize_mutex_ : nullptr; }

  NetworkConfig cfg_;
  std::vector<std::unique_ptr<Layer>> layers_;
  int64_t step_ = 0;
  int64_t rebuilds_ = 0;        // rebuilds done by the schedule (i in N0*exp(decay*i))
  int64_t next_rebuild_ = 0;
  std::vector<SampleState> samples_;                     // one per sample of the current batch
  std::vector<std::unique_ptr<ThreadScratch>> scratch_;  // one per thread, cache-line aligned
  std::mutex serialize_mutex_;
  PhaseTimes times_;
};

}  // namespace slide
