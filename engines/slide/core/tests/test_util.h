#pragma once
// Minimal helpers for the core's C++ tests: CHECK that counts failures, and small synthetic data.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "network.h"
#include "rng.h"

namespace slide_test {

inline int g_failures = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++slide_test::g_failures;                                            \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
    }                                                                      \
  } while (0)

inline int finish(const char* name) {
  if (g_failures == 0) std::printf("%s: all checks passed\n", name);
  else std::fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// A CSR batch that owns its arrays.
struct Csr {
  std::vector<int64_t> indptr{0};
  std::vector<int32_t> indices;
  std::vector<float> values;
  int64_t n_cols = 0;
  slide::CsrView view() const {
    slide::CsrView v;
    v.indptr = indptr.data();
    v.indices = indices.data();
    v.values = values.empty() ? nullptr : values.data();
    v.n_rows = static_cast<int64_t>(indptr.size()) - 1;
    v.n_cols = n_cols;
    return v;
  }
};

// Learnable synthetic data: each sample picks a "topic" label; its features are drawn mostly from
// that topic's feature block, and its labels are the topic plus a neighbour.
inline void make_batch(slide::Rng& rng, int n, int n_features, int n_labels, int nnz, Csr& x, Csr& y) {
  x = Csr{};
  y = Csr{};
  x.n_cols = n_features;
  y.n_cols = n_labels;
  for (int i = 0; i < n; ++i) {
    const int topic = static_cast<int>(rng.below(n_labels));
    std::vector<int32_t> f;
    for (int j = 0; j < nnz; ++j) {
      const int block = n_features / n_labels > 0 ? n_features / n_labels : 1;
      int32_t id = rng.uniform() < 0.8f ? (topic * block + static_cast<int>(rng.below(block))) % n_features
                                        : static_cast<int32_t>(rng.below(n_features));
      f.push_back(id);
    }
    std::sort(f.begin(), f.end());
    f.erase(std::unique(f.begin(), f.end()), f.end());
    for (int32_t id : f) {
      x.indices.push_back(id);
      x.values.push_back(0.5f + rng.uniform());
    }
    x.indptr.push_back(static_cast<int64_t>(x.indices.size()));
    std::vector<int32_t> l{topic, (topic + 1) % n_labels};
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    for (int32_t id : l) y.indices.push_back(id);
    y.indptr.push_back(static_cast<int64_t>(y.indices.size()));
  }
}

}  // namespace slide_test

namespace slide_test {

// config.h holds no engine defaults (they live in the Python adapter's DEFAULTS): C++ programs set
// every setting. These are small-model values for the tests and benchmarks.
inline slide::LshSettings lsh_settings(int min_active) {
  slide::LshSettings s;
  s.hash = slide::HashKind::DWTA;
  s.K = 6;
  s.L = 50;
  s.bucket_bits = 18;
  s.bucket_capacity = 128;
  s.insertion = slide::Insertion::FIFO;
  s.selection = slide::SelectionKind::Vanilla;
  s.min_active = min_active;
  s.max_active = 0;
  s.threshold = 1;
  s.pad_below = 0;
  s.rerank_pool = 0;
  s.max_retrieved = 0;
  s.simhash_density = 1.0f / 3.0f;
  s.wta_bin_size = 8;
  return s;
}

// Adam's usual constants, lazy updates, fp32 moments; tables rebuilt every 50 batches, never rehashed.
inline void set_training(slide::NetworkConfig& c) {
  c.optimizer.lr = 1e-3f;
  c.optimizer.beta1 = 0.9f;
  c.optimizer.beta2 = 0.999f;
  c.optimizer.eps = 1e-8f;
  c.optimizer.mode = slide::AdamMode::Sparse;
  c.optimizer.bf16_moments = false;
  c.schedule.rebuild_n0 = 50;
  c.schedule.rebuild_decay = 0.0;
  c.schedule.rehash_m = 0;
  c.init_std = 0.0f;
  c.threads = 1;
}

// features -> hidden (dense, ReLU) [-> hidden2 (sampled, all active, ReLU)] -> output (sampled).
// all_active_output: min_active = num_labels, so every output neuron is computed.
inline slide::NetworkConfig small_config(int n_features, int hidden, int n_labels, bool all_active_output,
                                         bool second_hidden_sampled = false) {
  slide::NetworkConfig c;
  set_training(c);
  c.num_features = n_features;
  slide::LayerSettings h;
  h.size = hidden;
  c.layers.push_back(h);
  if (second_hidden_sampled) {
    slide::LayerSettings h2;
    h2.size = hidden;
    h2.sampled = true;
    h2.lsh = lsh_settings(hidden);  // all active: exact gradients through a neuron-major hidden layer
    c.layers.push_back(h2);
  }
  slide::LayerSettings o;
  o.size = n_labels;
  o.sampled = true;
  o.lsh = lsh_settings(all_active_output ? n_labels : 8);
  o.lsh.hash = slide::HashKind::SimHash;
  o.lsh.K = 4;
  o.lsh.L = 8;
  o.lsh.bucket_bits = 4;
  o.lsh.bucket_capacity = 16;
  o.lsh.min_active = all_active_output ? n_labels : 8;
  c.layers.push_back(o);
  c.seed = 7;
  c.threads = 1;
  c.schedule.rebuild_n0 = 5;
  return c;
}

}  // namespace slide_test
