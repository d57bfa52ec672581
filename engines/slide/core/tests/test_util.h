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

// features -> hidden (dense, ReLU) [-> hidden2 (sampled, all active, ReLU)] -> output (sampled).
// all_active_output: min_active = num_labels, so every output neuron is computed.
inline slide::NetworkConfig small_config(int n_features, int hidden, int n_labels, bool all_active_output,
                                         bool second_hidden_sampled = false) {
  slide::NetworkConfig c;
  c.num_features = n_features;
  slide::LayerSettings h;
  h.size = hidden;
  c.layers.push_back(h);
  if (second_hidden_sampled) {
    slide::LayerSettings h2;
    h2.size = hidden;
    h2.sampled = true;
    h2.lsh.min_active = hidden;  // all active: exact gradients through a neuron-major hidden layer
    c.layers.push_back(h2);
  }
  slide::LayerSettings o;
  o.size = n_labels;
  o.sampled = true;
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
