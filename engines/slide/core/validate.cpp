#include "validate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace slide {
namespace {

// Refuse configurations whose weights and Adam moments alone would not fit any machine we run on,
// instead of failing deep inside an allocation.
constexpr double kMaxModelBytes = 256.0 * (1ull << 30);

std::string lsh_error(const LayerSettings& ls, int n_in, const std::string& where) {
  const LshSettings& s = ls.lsh;
  std::ostringstream e;
  if (s.min_active < 0) e << where << ".min_active must be >= 0, got " << s.min_active;
  else if (s.max_active < 0) e << where << ".max_active must be >= 0, got " << s.max_active;
  else if (s.max_active > 0 && s.min_active > s.max_active)
    e << where << ".min_active (" << s.min_active << ") must not exceed max_active (" << s.max_active << ")";
  else if (s.pad_below < 0) e << where << ".pad_below must be >= 0 (0: pad whenever below min_active), got " << s.pad_below;
  else if (s.pad_below > 0 && s.pad_below < s.min_active)
    e << where << ".pad_below (" << s.pad_below << ") must be 0 or >= min_active (" << s.min_active << ")";
  else if (s.rerank_pool < 0)
    e << where << ".rerank_pool must be >= 0 (0: the whole union), got " << s.rerank_pool;
  else if (s.rerank_pool > 0 && s.selection != SelectionKind::Rerank)
    e << where << ".rerank_pool (" << s.rerank_pool << ") is used by selection 'rerank' only; set it to 0";
  else if (s.max_retrieved < 0)
    e << where << ".max_retrieved must be >= 0 (0: no cap beyond max_active), got " << s.max_retrieved;
  else if (s.max_active > 0 && s.max_retrieved > s.max_active)
    e << where << ".max_retrieved (" << s.max_retrieved << ") must not exceed max_active (" << s.max_active << ")";
  else if (s.max_retrieved > 0 && s.selection == SelectionKind::Random)
    e << where << ".max_retrieved (" << s.max_retrieved << ") caps retrieval, which selection 'random' does not do; "
      << "set it to 0";
  else if (!s.padding_weights.empty() && s.padding_weights.size() != static_cast<size_t>(ls.size))
    e << where << ".padding_weights holds " << s.padding_weights.size() << " weights for " << ls.size
      << " neurons (one per neuron, or none for uniform padding)";
  if (!e.str().empty()) return e.str();
  double weight_sum = 0.0;
  for (size_t i = 0; i < s.padding_weights.size(); ++i) {
    if (!(std::isfinite(s.padding_weights[i]) && s.padding_weights[i] > 0.0)) {
      e << where << ".padding_weights[" << i << "] is " << s.padding_weights[i]
        << "; every weight must be finite and > 0 (every neuron drawable)";
      return e.str();
    }
    weight_sum += s.padding_weights[i];
  }
  if (!std::isfinite(weight_sum)) return where + ".padding_weights: their sum overflows a double";
  if (s.min_active >= ls.size) return "";  // every neuron active: no hashing, nothing else to check
  if (s.selection == SelectionKind::TopK && s.max_active <= 0)
    return where + ".max_active must be > 0 for selection 'topk'";
  if (s.selection == SelectionKind::Rerank && s.max_active <= 0)
    return where + ".max_active must be > 0 for selection 'rerank'";
  if (s.selection == SelectionKind::Rerank && s.rerank_pool > 0 && s.rerank_pool < s.max_active) {
    e << where << ".rerank_pool (" << s.rerank_pool << ") must be 0 (the whole union) or >= max_active ("
      << s.max_active << ")";
    return e.str();
  }
  if (s.selection == SelectionKind::Threshold && (s.threshold < 1 || s.threshold > s.L)) {
    e << where << ".threshold must be in 1..L (" << s.L << "), got " << s.threshold;
    return e.str();
  }
  if (s.bucket_capacity < 1) {
    e << where << ".bucket_capacity must be >= 1, got " << s.bucket_capacity;
    return e.str();
  }
  HashConfig hc;
  hc.kind = s.hash;
  hc.K = s.K;
  hc.L = s.L;
  hc.dim = n_in;
  hc.bucket_bits = s.bucket_bits;
  hc.simhash_density = s.simhash_density;
  hc.wta_bin_size = s.wta_bin_size;
  try {
    validate(hc);
  } catch (const std::exception& ex) {
    return where + ": " + ex.what();
  }
  if (s.bucket_bits >= 1 && s.bucket_bits <= 24 && s.L >= 1) {
    const double bytes = static_cast<double>(HashTables::bytes_for(s.L, s.bucket_bits, s.bucket_capacity));
    if (bytes > kMaxModelBytes) {
      e << where << ": hash tables would take " << bytes / (1 << 30) << " GiB (L * 2^bucket_bits * capacity too large)";
      return e.str();
    }
  }
  return "";
}

}  // namespace

int max_threads() {
  const unsigned cpus = std::thread::hardware_concurrency();  // 0: unknown
  return static_cast<int>(std::min(1024u, 4 * std::max(1u, cpus)));
}

std::string validate_threads(int n) {
  if (n >= 1 && n <= max_threads()) return "";
  return "threads must be in 1.." + std::to_string(max_threads()) + " (4 per logical CPU, at most 1024), got " +
         std::to_string(n);
}

std::string validate_finite(const float* values, size_t n, const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      std::ostringstream e;
      e << what << " has a non-finite value (" << values[i] << ") at flat index " << i;
      return e.str();
    }
  }
  return "";
}

std::string validate_config(const NetworkConfig& cfg) {
  std::ostringstream e;
  if (cfg.num_features < 1) {
    e << "num_features must be >= 1, got " << cfg.num_features;
    return e.str();
  }
  if (cfg.layers.empty()) return "layers: at least the output layer is required";
  const std::string threads_err = validate_threads(cfg.threads);
  if (!threads_err.empty()) return threads_err;
  const OptimizerSettings& o = cfg.optimizer;
  if (!(std::isfinite(o.lr) && o.lr > 0.0f)) {
    e << "optimizer.lr must be a finite number > 0, got " << o.lr;
    return e.str();
  }
  if (!(o.beta1 >= 0.0f && o.beta1 < 1.0f)) {
    e << "optimizer.beta1 must be in [0, 1), got " << o.beta1;
    return e.str();
  }
  if (!(o.beta2 >= 0.0f && o.beta2 < 1.0f)) {
    e << "optimizer.beta2 must be in [0, 1), got " << o.beta2;
    return e.str();
  }
  if (!(std::isfinite(o.eps) && o.eps > 0.0f)) {
    e << "optimizer.eps must be a finite number > 0, got " << o.eps;
    return e.str();
  }
  const ScheduleSettings& s = cfg.schedule;
  if (s.rebuild_n0 < 1) {
    e << "schedule.rebuild_n0 must be >= 1, got " << s.rebuild_n0;
    return e.str();
  }
  if (!(std::isfinite(s.rebuild_decay) && s.rebuild_decay >= 0.0 && s.rebuild_decay <= 10.0)) {
    e << "schedule.rebuild_decay must be in [0, 10], got " << s.rebuild_decay;
    return e.str();
  }
  if (s.rehash_m < 0) {
    e << "schedule.rehash_m must be >= 0 (0: never), got " << s.rehash_m;
    return e.str();
  }
  if (!(std::isfinite(cfg.init_std) && cfg.init_std >= 0.0f)) {
    e << "init_std must be >= 0 (0: Glorot scale), got " << cfg.init_std;
    return e.str();
  }
  double bytes = 0.0;
  int n_in = cfg.num_features;
  for (size_t i = 0; i < cfg.layers.size(); ++i) {
    const LayerSettings& ls = cfg.layers[i];
    const std::string where = "layers[" + std::to_string(i) + "]";
    if (ls.size < 1) {
      e << where << ".size must be >= 1, got " << ls.size;
      return e.str();
    }
    if (ls.sampled) {
      const std::string err = lsh_error(ls, n_in, where);
      if (!err.empty()) return err;
    } else if (!ls.lsh.padding_weights.empty()) {
      return where + ".padding_weights: a dense layer computes every neuron and draws no padding";
    }
    bytes += 3.0 * 4.0 * static_cast<double>(n_in) * static_cast<double>(ls.size);
    n_in = ls.size;
  }
  if (cfg.logit_correction_log_q) {
    const LshSettings& out = cfg.layers.back().lsh;
    if (out.selection != SelectionKind::Vanilla && out.selection != SelectionKind::Random)
      return "logit_correction 'log_q' needs the output layer's selection 'vanilla' or 'random' (inclusion "
             "probabilities of threshold, top-k and rerank selection are not defined)";
  }
  if (bytes > kMaxModelBytes) {
    e << "model too large: weights and Adam moments would take " << bytes / (1 << 30) << " GiB";
    return e.str();
  }
  return "";
}

std::string validate_csr(const CsrView& m, int64_t nnz, const std::string& what, bool need_values) {
  std::ostringstream e;
  if (m.n_rows < 0) return what + ": negative number of rows";
  if (m.indptr == nullptr) return what + ": indptr missing";
  if (m.indptr[0] != 0) {
    e << what << ": indptr[0] must be 0, got " << m.indptr[0];
    return e.str();
  }
  if (m.indptr[m.n_rows] != nnz) {
    e << what << ": indptr[-1] (" << m.indptr[m.n_rows] << ") must equal the number of indices (" << nnz << ")";
    return e.str();
  }
  if (need_values && m.values == nullptr && nnz > 0) return what + ": values are required";
  for (int64_t r = 0; r < m.n_rows; ++r) {
    const int64_t b = m.indptr[r], end = m.indptr[r + 1];
    if (end < b || end > nnz) {
      e << what << ": indptr must be non-decreasing and within [0, nnz]; row " << r << " spans [" << b << ", " << end << ")";
      return e.str();
    }
    if (end - b > std::numeric_limits<int32_t>::max()) {
      e << what << ": row " << r << " has too many entries";
      return e.str();
    }
    for (int64_t i = b; i < end; ++i) {
      const int32_t id = m.indices[i];
      if (id < 0 || id >= m.n_cols) {
        e << what << ": row " << r << " has id " << id << " outside [0, " << m.n_cols << ")";
        return e.str();
      }
      if (i > b && id <= m.indices[i - 1]) {
        e << what << ": row " << r << " ids must be strictly increasing (sorted, no duplicates); " << m.indices[i - 1]
          << " is followed by " << id;
        return e.str();
      }
      if (m.values != nullptr && !std::isfinite(m.values[i])) {
        e << what << ": row " << r << " id " << id << " has a non-finite value (" << m.values[i] << ")";
        return e.str();
      }
    }
  }
  return "";
}

std::string validate_batch(const NetworkConfig& cfg, const CsrView& features, int64_t features_nnz,
                           const CsrView* labels, int64_t labels_nnz) {
  std::ostringstream e;
  if (features.n_rows < 1) return "features: the batch is empty (0 rows)";
  if (features.n_rows > std::numeric_limits<int32_t>::max()) return "features: batch too large";
  if (features.n_cols != cfg.num_features) {
    e << "features: " << features.n_cols << " columns, but the network has num_features = " << cfg.num_features;
    return e.str();
  }
  std::string err = validate_csr(features, features_nnz, "features", true);
  if (!err.empty()) return err;
  if (labels != nullptr) {
    if (labels->n_rows != features.n_rows) {
      e << "labels: " << labels->n_rows << " rows, but features have " << features.n_rows;
      return e.str();
    }
    if (labels->n_cols != cfg.num_labels()) {
      e << "labels: " << labels->n_cols << " columns, but the network has num_labels = " << cfg.num_labels();
      return e.str();
    }
    err = validate_csr(*labels, labels_nnz, "labels", false);
    if (!err.empty()) return err;
  }
  return "";
}

}  // namespace slide
