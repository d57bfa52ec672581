#include "layer.h"

#include <algorithm>
#include <cmath>

#include "omp_errors.h"

namespace slide {
namespace {
// Norm bands of the inner-product transform's keys (Layer::rebuild_tables). The rows a query
// ranks highest are mostly the largest (popular labels' rows grow), so they sit in the top bands;
// a band's keys are hashed with its largest norm, so a wide top band adds a large completion to
// exactly those keys and hides them. Measured on amazon670k's output layer at step 300: with 8
// bands the top one spans norms 2.0-2.9 (the top-10 logits' rows ~2.1), and the expected share of
// a query's top-10 found by 50 tables of 10 bits is 0.49; with 64 bands (the top one 2.3-2.9), 0.67.
constexpr int kMipsBands = 64;
}  // namespace

Layer::Layer(int n_in, const LayerSettings& settings, bool bf16_moments, uint64_t seed)
    : n_in_(n_in),
      n_out_(settings.size),
      sampled_(settings.sampled),
      all_active_(settings.sampled && settings.lsh.min_active >= settings.size),
      bf16_(bf16_moments),
      settings_(settings),
      seed_(seed),
      stride_(static_cast<size_t>(padded_row(settings.sampled ? n_in : settings.size))) {
  wmv_.resize(static_cast<size_t>(n_rows()) * row_pitch());
  b_.resize(n_out_);
  mb_.resize(n_out_);
  vb_.resize(n_out_);
  if (hashed()) {
    rehash(derive_seed(seed_, 0x4A5B, 0));
    const LshSettings& s = settings_.lsh;
    tables_ = std::make_unique<HashTables>(s.L, s.bucket_bits, s.bucket_capacity, s.insertion,
                                           derive_seed(seed_, 0x7AB1E5));
  }
  if (sampled_ && !all_active_ && !settings_.lsh.padding_weights.empty())
    padding_sampler_ = std::make_shared<const AliasSampler>(settings_.lsh.padding_weights);
}

void Layer::init_weights(uint64_t seed, float init_std, int threads) {
  // Glorot-normal scale unless given: keeps activations of order one for any layer width.
  const float std = init_std > 0.0f ? init_std : std::sqrt(2.0f / static_cast<float>(n_in_ + n_out_));
  // One random stream per row: the same weights for any thread count, and the ~100M draws of the
  // Amazon-670K shape spread over the threads.
  // Nothing here allocates today; the guard keeps any future exception from aborting the process.
  const int rows = n_rows(), len = row_len();
  OmpErrors errors;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int r = 0; r < rows; ++r) {
    errors.run([&] {
      Rng rng(derive_seed(seed, static_cast<uint64_t>(r)));
      float* w = row(r);
      for (int c = 0; c < len; ++c) w[c] = std * rng.normal();
    });
  }
  errors.rethrow();
}

void Layer::rehash(uint64_t seed) {
  if (!hashed()) return;
  const LshSettings& s = settings_.lsh;
  HashConfig hc;
  hc.kind = s.hash;
  hc.K = s.K;
  hc.L = s.L;
  hc.dim = n_in_;
  hc.bucket_bits = s.bucket_bits;
  hc.simhash_density = s.simhash_density;
  hc.wta_bin_size = s.wta_bin_size;
  hc.seed = seed;
  family_ = HashFamily::create(hc);
}

void Layer::rebuild_tables(int threads) {
  if (!hashed()) return;
  if (!family_->asymmetric()) {
    tables_->build(*family_, row(0), n_out_, row_pitch(), threads);
    return;
  }
  // Each key's bound is the largest |[w, b]| of its norm band (rows split into kMipsBands bands by
  // norm quantile). One global bound would make the completion coordinate dominate every key but
  // the few largest (popular labels' rows grow): those keys would pile into a few buckets and the
  // query's buckets would hold almost nothing. Within a band the keys' norms are close, so their
  // angles to a query still order them by logit.
  const int len = row_len();
  std::vector<float> norm(n_out_), bound(n_out_);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int r = 0; r < n_out_; ++r) {
    const float* w = row(r);
    double sq = static_cast<double>(b_[r]) * b_[r];
    for (int c = 0; c < len; ++c) sq += static_cast<double>(w[c]) * w[c];
    norm[r] = static_cast<float>(std::sqrt(sq));
  }
  const int bands = std::min(kMipsBands, n_out_);
  std::vector<float> edge(bands - 1);
  {
    std::vector<float> sorted(norm);
    std::sort(sorted.begin(), sorted.end());
    for (int k = 1; k < bands; ++k) edge[k - 1] = sorted[static_cast<size_t>(n_out_) * k / bands];
  }
  std::vector<float> band_max(bands, 0.0f);
  std::vector<int> band(n_out_);
  for (int r = 0; r < n_out_; ++r) {
    band[r] = static_cast<int>(std::upper_bound(edge.begin(), edge.end(), norm[r]) - edge.begin());
    band_max[band[r]] = std::max(band_max[band[r]], norm[r]);
  }
  for (int r = 0; r < n_out_; ++r) bound[r] = band_max[band[r]];
  tables_->build(*family_, row(0), n_out_, row_pitch(), threads, b_.data(), bound.data());
}

void Layer::ensure_selectors(int threads) {
  if (!sampled_ || all_active_) return;
  SelectionConfig sc;
  sc.kind = settings_.lsh.selection;
  sc.min_active = settings_.lsh.min_active;
  sc.max_active = settings_.lsh.max_active;
  sc.threshold = settings_.lsh.threshold;
  sc.pad_below = settings_.lsh.pad_below;
  sc.rerank_pool = settings_.lsh.rerank_pool;
  sc.max_retrieved = settings_.lsh.max_retrieved;
  sc.padding_sampler = padding_sampler_;
  while (static_cast<int>(selectors_.size()) < threads)
    selectors_.push_back(std::make_unique<ActiveSetSelector>(n_out_, sc, derive_seed(seed_, 0x5E1, selectors_.size())));
}

size_t Layer::memory_bytes() const {
  size_t bytes = (wmv_.size() + 3 * b_.size()) * sizeof(float);
  if (tables_) bytes += tables_->memory_bytes();
  if (family_) bytes += family_->memory_bytes();
  return bytes;
}

}  // namespace slide
