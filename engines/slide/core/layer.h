#pragma once
// One fully connected layer: its weights, biases, Adam moments and, when LSH-sampled, its hash
// tables. Plain storage plus table maintenance; the arithmetic lives in network.cpp.
//
// Layout (one contiguous 64-byte aligned matrix per layer, rows padded to whole cache lines):
//  - sampled layers are *neuron-major*: row j holds neuron j's n_in input weights, so computing an
//    active neuron reads one contiguous row, and the row is exactly what the hash tables index;
//  - dense layers are *input-major*: row k holds the n_out weights leaving input k. Every neuron
//    is computed anyway, and with a sparse input (the first layer) the forward pass and the weight
//    gradient become one n_out-wide axpy per non-zero input instead of n_out gathers.
//  - each row's Adam moments sit right after it: [w | m | v], one stride each (half a stride
//    each with BF16 moments). The optimizer touches a few hundred thousand random rows per batch;
//    interleaved, each is one contiguous 1.5 KB block (one DRAM page, one prefetch stream)
//    instead of three blocks in three matrices.
//    Reads of w alone (forward, backward, hashing) are unaffected: a row's w is still contiguous.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "aligned_buffer.h"
#include "config.h"
#include "rng.h"

namespace slide {

class Layer {
 public:
  Layer(int n_in, const LayerSettings& settings, bool bf16_moments, uint64_t seed);

  int n_in() const { return n_in_; }
  int n_out() const { return n_out_; }
  bool sampled() const { return sampled_; }
  // A sampled layer whose minimum budget covers every neuron: no hashing, all neurons active.
  bool all_active() const { return all_active_; }
  // Sampled through hash tables: not all active, and not the random-selection control (which
  // builds no tables at all, so it pays neither their memory nor their maintenance).
  bool hashed() const { return sampled_ && !all_active_ && settings_.lsh.selection != SelectionKind::Random; }
  bool neuron_major() const { return sampled_; }
  int n_rows() const { return neuron_major() ? n_out_ : n_in_; }
  int row_len() const { return neuron_major() ? n_in_ : n_out_; }
  size_t stride() const { return stride_; }
  const LayerSettings& settings() const { return settings_; }

  // Distance between consecutive rows of w (and of m, of v) in floats: one [w | m | v] block.
  size_t row_pitch() const { return bf16_ ? 2 * stride_ : 3 * stride_; }
  float* row(int r) { return wmv_.data() + static_cast<size_t>(r) * row_pitch(); }
  const float* row(int r) const { return wmv_.data() + static_cast<size_t>(r) * row_pitch(); }
  // Moments: fp32 (m_row, v_row) or, with bf16_moments(), BF16 (m16_row, v16_row); use only
  // the pair that matches the layer's storage.
  bool bf16_moments() const { return bf16_; }
  float* m_row(int r) { return row(r) + stride_; }
  float* v_row(int r) { return row(r) + 2 * stride_; }
  uint16_t* m16_row(int r) { return reinterpret_cast<uint16_t*>(row(r) + stride_); }
  uint16_t* v16_row(int r) { return m16_row(r) + stride_; }
  float* bias() { return b_.data(); }
  const float* bias() const { return b_.data(); }
  float* bias_m() { return mb_.data(); }
  float* bias_v() { return vb_.data(); }

  void init_weights(uint64_t seed, float init_std, int threads);

  // LSH (sampled layers only). rebuild: re-insert every neuron's current weights; rehash: draw new
  // hash functions from `seed` (the caller rebuilds afterwards).
  void rebuild_tables(int threads);
  void rehash(uint64_t seed);
  const HashFamily* family() const { return family_.get(); }
  const HashTables* tables() const { return tables_.get(); }
  // Per-thread selectors, created on demand for `threads` threads (not on the hot path).
  void ensure_selectors(int threads);
  ActiveSetSelector& selector(int tid) { return *selectors_[tid]; }

  size_t memory_bytes() const;

 private:
  int n_in_, n_out_;
  bool sampled_, all_active_, bf16_;
  LayerSettings settings_;
  uint64_t seed_;
  size_t stride_;
  AlignedBuffer<float> wmv_;  // n_rows x [w | m | v], each stride floats
  AlignedBuffer<float> b_, mb_, vb_;  // n_out
  std::unique_ptr<HashFamily> family_;
  std::unique_ptr<HashTables> tables_;
  std::vector<std::unique_ptr<ActiveSetSelector>> selectors_;
  std::shared_ptr<const AliasSampler> padding_sampler_;  // weighted padding; null: uniform
};

}  // namespace slide
