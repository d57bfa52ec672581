#include "network.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>

#include "topk.h"
#include "validate.h"

namespace slide {

// One layer's output for one sample. dense: every neuron, val[j] is neuron j (ids unused);
// otherwise the active neurons ids[p] with values val[p]. delta: d loss / d pre-activation.
struct LayerState {
  std::vector<int32_t> ids;
  std::vector<float> val, delta;
  std::vector<float> log_q;  // output layer, training with the log-q correction: per active neuron
  bool dense = true;
};

struct Network::SampleState {
  std::vector<LayerState> layer;
  double loss = 0.0;
  bool has_grad = false;  // false for samples without labels: they contribute nothing
};

// One gradient contribution to weight row `row`: coef times a vector of sample `sample`.
struct Contribution {
  int32_t row;
  int32_t sample;
  float coef;
};

// alignas(64): each thread's scratch header sits on its own cache lines (no false sharing); the
// vectors' heap blocks are separate allocations anyway.
struct alignas(64) Network::ThreadScratch {
  int tid = 0;
  std::vector<uint32_t> buckets;
  std::vector<float> grad;
  std::vector<float> bias_grad;
  std::vector<TopK> topk;
  // Exact scoring (score_outputs_blocked): a chunk of output rows packed into dot_tiles' tiles,
  // the block's inputs written out dense, and their scores of that chunk.
  std::vector<float> tiles, tile_scores, dense_inputs;
  // Phase 2 (update_layer): scratch_[i] holds part i of the batch's contributions grouped by block
  // (block_begin, in sample order); then, for the block a thread works on, its touched rows
  // (ascending) and their contributions grouped by row: those of touched[j] are
  // by_row[row_begin[j], row_begin[j + 1]).
  std::vector<Contribution> contrib, by_row;
  std::vector<int64_t> block_begin, cursor;
  std::vector<int32_t> row_count, touched, row_begin;
  // Output neurons of training samples, by origin, summed since construction.
  ActiveComposition composition;
};

namespace {

// A layer's input for one sample: the raw sparse features, or the previous layer's state.
struct InView {
  const int32_t* idx;  // nullptr when dense
  const float* val;
  int n;               // dense: the dimension; sparse: nnz
  bool dense() const { return idx == nullptr; }
};

InView view_of(const LayerState& s) {
  if (s.dense) return {nullptr, s.val.data(), static_cast<int>(s.val.size())};
  return {s.ids.data(), s.val.data(), static_cast<int>(s.ids.size())};
}

// A query's bucket in every table of a layer's family.
void hash_query(const HashFamily& fam, const InView& in, std::vector<uint32_t>& buckets) {
  buckets.resize(fam.L());
  if (in.dense())
    fam.hash_dense(in.val, buckets.data());
  else
    fam.hash_sparse(in.idx, in.val, in.n, buckets.data());
}

InView feature_row(const CsrView& x, int64_t row) {
  const int64_t b = x.indptr[row];
  return {x.indices + b, x.values + b, static_cast<int>(x.indptr[row + 1] - b)};
}

// Rows of sampled layers are visited in random order: fetch every cache line of a row a few rows
// ahead, so the memory latency of the next rows overlaps the arithmetic on this one.
constexpr int kPrefetchAhead = 4;
// Widest input that exact scoring writes out dense for dot_tiles (a hidden layer; not raw features).
constexpr int kDensifyMax = 4096;
inline void prefetch_row(const float* p, int n) {
  for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i);
}

inline float dot_in(const KernelTable& k, const float* w, const InView& in) {
  return in.dense() ? k.dot(w, in.val, in.n) : k.dot_gather(w, in.idx, in.val, in.n);
}

// Pre-activations of neuron-major layer L's neurons ids[val.size()..) for input `in`, appended
// to val (the ones already in val are kept).
void score_active(const Layer& L, const InView& in, const std::vector<int32_t>& ids, std::vector<float>& val) {
  const KernelTable& k = kernels();
  const int first = static_cast<int>(val.size());
  const int n_act = static_cast<int>(ids.size());
  if (first >= n_act) return;
  val.resize(n_act);
  const float* b = L.bias();
  const int row_len = L.row_len();
  // The biases are random reads too (a 2.7 MB array at 670K outputs): gather them first, in
  // a loop of independent loads that keeps many misses in flight, then score the rows.
  for (int p = first; p < n_act; ++p) val[p] = b[ids[p]];
  for (int p = first; p < std::min(n_act, first + kPrefetchAhead); ++p) prefetch_row(L.row(ids[p]), row_len);
  for (int p = first; p < n_act; ++p) {
    if (p + kPrefetchAhead < n_act) prefetch_row(L.row(ids[p + kPrefetchAhead]), row_len);
    val[p] = val[p] + dot_in(k, L.row(ids[p]), in);
  }
}

AdamScalars adam_scalars(const OptimizerSettings& o, int64_t t) {
  AdamScalars a;
  a.lr = o.lr;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.bc1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(t))));
  a.bc2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(t))));
  return a;
}

// One Adam step of weight row r (g == nullptr: zero gradient), with fp32 or BF16 moments. The
// BF16 rounding noise is keyed by (step, layer, row): independent of the thread that runs it.
inline void adam_row(Layer& L, const KernelTable& k, int32_t r, const float* g, const AdamScalars& a,
                     uint64_t sr_seed) {
  const int n = L.row_len();
  if (L.bf16_moments())
    k.adam_bf16(L.row(r), L.m16_row(r), L.v16_row(r), g, n, a, static_cast<uint32_t>(derive_seed(sr_seed, r)));
  else if (g != nullptr)
    k.adam(L.row(r), L.m_row(r), L.v_row(r), g, n, a);
  else
    k.adam_zero_grad(L.row(r), L.m_row(r), L.v_row(r), n, a);
}

// Scalar Adam for one bias (same formula as the kernels).
inline void adam1(float& w, float& m, float& v, float g, const AdamScalars& a) {
  m = a.beta1 * m + (1.0f - a.beta1) * g;
  v = a.beta2 * v + (1.0f - a.beta2) * g * g;
  w -= a.lr * (m * a.bc1) / (std::sqrt(v * a.bc2) + a.eps);
}

// Runs body(i, scratch) for i in [0, n) on `threads` OpenMP threads; the first exception thrown by
// any iteration is re-thrown after the loop (an exception must never leave an OpenMP region).
// With `serial` given, every iteration holds that mutex: the threads stay up and contend, but no
// two iterations overlap (the debug_serialize negative control).
template <typename Body>
void parallel_for(int64_t n, int threads, int chunk,
                  std::vector<std::unique_ptr<Network::ThreadScratch>>& scratch, Body&& body,
                  std::mutex* serial = nullptr) {
  std::exception_ptr error = nullptr;
#pragma omp parallel num_threads(threads)
  {
    Network::ThreadScratch& ts = *scratch[omp_get_thread_num()];
#pragma omp for schedule(dynamic, chunk)
    for (int64_t i = 0; i < n; ++i) {
      try {
        std::unique_lock<std::mutex> lock;
        if (serial != nullptr) lock = std::unique_lock<std::mutex>(*serial);
        body(i, ts);
      } catch (...) {
#pragma omp critical(slide_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// Phase 2 splits a layer's rows into blocks of 2^shift rows: at most 1,024 (so one block's row
// counters stay in L1), at least 64, and small enough that there are 16 or more blocks per thread.
// Threads take blocks dynamically, so one slowed by a neighbour on its core, or given busier
// blocks, does not hold the others up at the end of the phase.
class RowBlocks {
 public:
  RowBlocks(int32_t n_rows, int threads) : n_rows_(n_rows) {
    while (shift_ > 6 && (n_rows >> shift_) < 16 * threads) --shift_;
    count_ = (static_cast<int64_t>(n_rows) + (1 << shift_) - 1) >> shift_;
  }
  int64_t count() const { return count_; }
  int64_t of(int32_t row) const { return row >> shift_; }
  int32_t begin(int64_t b) const { return static_cast<int32_t>(b << shift_); }
  int32_t end(int64_t b) const { return static_cast<int32_t>(std::min<int64_t>(n_rows_, (b + 1) << shift_)); }

 private:
  int32_t n_rows_;
  int shift_ = 10;
  int64_t count_ = 0;
};

}  // namespace

Network::Network(const NetworkConfig& cfg) : cfg_(cfg) {
  const std::string err = validate_config(cfg);
  if (!err.empty()) throw std::invalid_argument(err);
  int n_in = cfg.num_features;
  for (size_t i = 0; i < cfg.layers.size(); ++i) {
    layers_.push_back(std::make_unique<Layer>(n_in, cfg.layers[i], cfg.optimizer.bf16_moments, derive_seed(cfg.seed, 0x1A7E5, i)));
    layers_.back()->init_weights(derive_seed(cfg.seed, 0x1417, i), cfg.init_std, cfg.threads);
    n_in = cfg.layers[i].size;
  }
  set_threads(cfg.threads);
  rebuild_tables();
  next_rebuild_ = cfg_.schedule.rebuild_n0;
}

Network::~Network() = default;

void Network::set_threads(int n) {
  if (n < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(n));
  cfg_.threads = n;
  while (static_cast<int>(scratch_.size()) < n) {
    scratch_.push_back(std::make_unique<ThreadScratch>());
    scratch_.back()->tid = static_cast<int>(scratch_.size()) - 1;
  }
  for (auto& l : layers_) l->ensure_selectors(n);
}

size_t Network::memory_bytes() const {
  size_t b = 0;
  for (const auto& l : layers_) b += l->memory_bytes();
  return b;
}

void Network::rebuild_tables() {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& l : layers_) l->rebuild_tables(cfg_.debug_serialize ? 1 : cfg_.threads);
  times_.last_rebuild = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Network::forward(const CsrView& x, int64_t row, const int32_t* labels, int n_labels, bool use_lsh,
                      bool force_labels, uint64_t stream, SampleState& st, ThreadScratch& ts, int upto) {
  const KernelTable& k = kernels();
  const int nl = num_layers();
  st.layer.resize(nl);
  if (upto < 0 || upto > nl) upto = nl;
  InView in = feature_row(x, row);
  for (int l = 0; l < upto; ++l) {
    Layer& L = *layers_[l];
    LayerState& o = st.layer[l];
    const int n_out = L.n_out();
    const float* b = L.bias();
    if (!L.sampled()) {
      // Input-major: out = b + sum over non-zero inputs of x_k * row_k.
      o.dense = true;
      o.val.assign(b, b + n_out);
      for (int t = 0; t < in.n; ++t) {
        const float xv = in.val[t];
        if (xv != 0.0f) k.axpy(xv, L.row(in.dense() ? t : in.idx[t]), o.val.data(), n_out);
      }
    } else if (L.all_active() || !use_lsh) {
      o.dense = true;
      o.log_q.clear();
      o.val.resize(n_out);
      for (int j = 0; j < n_out; ++j) o.val[j] = b[j] + dot_in(k, L.row(j), in);
    } else {
      o.dense = false;
      ActiveSetSelector& sel = L.selector(ts.tid);
      // Per-sample stream: the random padding does not depend on which thread runs the sample.
      sel.reseed(derive_seed(stream, static_cast<uint64_t>(l)));
      const bool force = force_labels && l + 1 == nl;
      std::vector<float>* log_q = force && cfg_.logit_correction_log_q ? &o.log_q : nullptr;
      if (log_q == nullptr) o.log_q.clear();
      if (L.hashed()) {
        hash_query(*L.family(), in, ts.buckets);
        sel.select(*L.tables(), ts.buckets.data(), force ? labels : nullptr, force ? n_labels : 0, o.ids, true, log_q);
      } else {
        sel.select_random(force ? labels : nullptr, force ? n_labels : 0, o.ids, log_q);
      }
      o.val.clear();
      score_active(L, in, o.ids, o.val);
      if (L.settings().lsh.selection == SelectionKind::Rerank) {
        // The pool is scored: keep the best, then score the padding (if any) drawn after the cut.
        sel.keep_best(o.ids, o.val, /*pad=*/true);
        score_active(L, in, o.ids, o.val);
      }
      if (force) {
        const ActiveSetSelector::Composition& c = sel.last();
        ts.composition.samples += 1;
        ts.composition.labels += c.forced;
        ts.composition.retrieved += c.retrieved;
        ts.composition.padded += c.padded;
      }
    }
    if (l + 1 < nl)
      for (float& v : o.val) v = v > 0.0f ? v : 0.0f;  // ReLU on hidden layers
    in = view_of(o);
  }
}

double Network::backward(int64_t /*row*/, const int32_t* labels, int n_labels, double inv_batch,
                         SampleState& st, ThreadScratch& /*ts*/) {
  const KernelTable& k = kernels();
  const int nl = num_layers();
  LayerState& o = st.layer[nl - 1];
  const int n = static_cast<int>(o.val.size());
  for (auto& ls : st.layer) ls.delta.assign(ls.val.size(), 0.0f);
  st.has_grad = n_labels > 0;
  if (!st.has_grad) return 0.0;  // no target mass: zero loss, zero gradient (as the dense reference)

  // Softmax cross-entropy over the active outputs against 1/|y| on each true label. Training puts
  // the labels first in a sampled output's active list; in a dense list label y sits at index y.
  // With the log-q correction the softmax runs over z - log q (labels: log q = 0); the shift is a
  // constant of the weights, so d loss / d z is that softmax minus the targets, as without it.
  double lse;
  if (o.log_q.empty()) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int p = 0; p < n; ++p) mx = std::max(mx, o.val[p]);
    double sum = 0.0;
    for (int p = 0; p < n; ++p) sum += std::exp(static_cast<double>(o.val[p] - mx));
    lse = mx + std::log(sum);
    for (int p = 0; p < n; ++p) o.delta[p] = static_cast<float>(std::exp(static_cast<double>(o.val[p]) - lse) * inv_batch);
  } else {
    auto logit = [&](int p) { return static_cast<double>(o.val[p]) - static_cast<double>(o.log_q[p]); };
    double mx = -std::numeric_limits<double>::infinity();
    for (int p = 0; p < n; ++p) mx = std::max(mx, logit(p));
    double sum = 0.0;
    for (int p = 0; p < n; ++p) sum += std::exp(logit(p) - mx);
    lse = mx + std::log(sum);
    for (int p = 0; p < n; ++p) o.delta[p] = static_cast<float>(std::exp(logit(p) - lse) * inv_batch);
  }
  const double t = 1.0 / n_labels;
  double loss = lse;
  for (int i = 0; i < n_labels; ++i) {
    const int pos = o.dense ? labels[i] : i;
    loss -= t * o.val[pos];
    o.delta[pos] -= static_cast<float>(t * inv_batch);
  }

  // Back-propagate deltas to every hidden layer (through ReLU). Weights are only read here.
  for (int l = nl - 1; l >= 1; --l) {
    const Layer& L = *layers_[l];
    const LayerState& cur = st.layer[l];
    LayerState& prev = st.layer[l - 1];
    float* d = prev.delta.data();
    if (L.neuron_major()) {
      const int n_cur = static_cast<int>(cur.val.size());
      // The forward pass read these rows, but a sample's active rows (1 MB at 2,000 x 128) can
      // outgrow L2: fetch ahead again, now from L3.
      auto row_of = [&](int p) { return L.row(cur.dense ? p : cur.ids[p]); };
      for (int p = 0; p < std::min(n_cur, kPrefetchAhead); ++p) prefetch_row(row_of(p), L.n_in());
      for (int p = 0; p < n_cur; ++p) {
        if (p + kPrefetchAhead < n_cur) prefetch_row(row_of(p + kPrefetchAhead), L.n_in());
        const float dp = cur.delta[p];
        if (dp == 0.0f) continue;
        const float* w = row_of(p);
        if (prev.dense) {
          k.axpy(dp, w, d, L.n_in());
        } else {
          for (size_t q = 0; q < prev.ids.size(); ++q) d[q] += dp * w[prev.ids[q]];
        }
      }
    } else {
      const int n_prev = static_cast<int>(prev.val.size());
      for (int q = 0; q < n_prev; ++q) {
        if (prev.val[q] <= 0.0f) continue;  // ReLU: no gradient through inactive units
        d[q] = k.dot(L.row(prev.dense ? q : prev.ids[q]), cur.delta.data(), L.n_out());
      }
    }
    for (size_t q = 0; q < prev.val.size(); ++q)
      if (prev.val[q] <= 0.0f) d[q] = 0.0f;
  }
  return loss;
}

void Network::update_layer(int l, const CsrView& x, int64_t n_samples, std::vector<float>* sink_w,
                           std::vector<float>* sink_b) {
  Layer& L = *layers_[l];
  const bool nm = L.neuron_major();
  const int row_len = L.row_len();
  const KernelTable& k = kernels();
  const AdamScalars a = adam_scalars(cfg_.optimizer, step_);
  const uint64_t sr_seed = derive_seed(derive_seed(cfg_.seed, 0xBF16), static_cast<uint64_t>(step_), l);  // BF16 rounding
  const bool dense_adam = cfg_.optimizer.mode == AdamMode::Dense && sink_w == nullptr;
  if (sink_w) sink_w->assign(static_cast<size_t>(L.n_rows()) * row_len, 0.0f);
  if (sink_b) sink_b->assign(L.n_out(), 0.0f);

  // A contribution to row r is coef * (a vector of its sample): neuron-major rows take delta[p] *
  // the layer's input, input-major rows take input[t] * the sample's delta.
  auto input_of = [&](int64_t s) -> InView {
    return l == 0 ? feature_row(x, s) : view_of(samples_[s].layer[l - 1]);
  };
  std::vector<InView> vec_of(n_samples);
  for (int64_t s = 0; s < n_samples; ++s) {
    const std::vector<float>& delta = samples_[s].layer[l].delta;
    if (samples_[s].has_grad) vec_of[s] = nm ? input_of(s) : InView{nullptr, delta.data(), static_cast<int>(delta.size())};
  }
  // Calls fn(row, coef) for each contribution of sample s, skipping zero coefficients.
  auto for_each_contribution = [&](int64_t s, auto&& fn) {
    const SampleState& st = samples_[s];
    if (!st.has_grad) return;
    const LayerState& cur = st.layer[l];
    if (nm) {
      for (size_t p = 0; p < cur.val.size(); ++p)
        if (cur.delta[p] != 0.0f) fn(cur.dense ? static_cast<int32_t>(p) : cur.ids[p], cur.delta[p]);
    } else {
      const InView in = input_of(s);
      for (int t = 0; t < in.n; ++t)
        if (in.val[t] != 0.0f) fn(in.dense() ? t : in.idx[t], in.val[t]);
    }
  };

  // Two stable counting sorts, so each row's gradient is summed in sample order and results do
  // not depend on the thread count. 1: each part of the batch (consecutive samples) groups its
  // contributions by block, with sequential writes. 2: per block (taken dynamically), the parts'
  // lists in sample order are grouped by row (counters in L1), summed, and each row updated.
  const int threads = cfg_.threads;
  const RowBlocks blocks(L.n_rows(), threads);
  const int parts = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(n_samples, 1)));
  // Part i's lists live in scratch_[i], whichever thread builds them.
  parallel_for(parts, threads, 1, scratch_, [&](int64_t i, ThreadScratch&) {
    ThreadScratch& part = *scratch_[i];
    const int64_t s0 = n_samples * i / parts, s1 = n_samples * (i + 1) / parts;
    part.block_begin.assign(blocks.count() + 1, 0);
    for (int64_t s = s0; s < s1; ++s)
      for_each_contribution(s, [&](int32_t r, float) { ++part.block_begin[blocks.of(r) + 1]; });
    for (int64_t b = 0; b < blocks.count(); ++b) part.block_begin[b + 1] += part.block_begin[b];
    part.contrib.resize(part.block_begin[blocks.count()]);
    part.cursor.assign(part.block_begin.begin(), part.block_begin.end() - 1);
    for (int64_t s = s0; s < s1; ++s)
      for_each_contribution(s, [&](int32_t r, float coef) {
        part.contrib[part.cursor[blocks.of(r)]++] = {r, static_cast<int32_t>(s), coef};
      });
  }, serial_lock());
  // Calls fn(contribution) for each contribution to block b, in sample order.
  auto for_each_in_block = [&](int64_t b, auto&& fn) {
    for (int i = 0; i < parts; ++i) {
      const ThreadScratch& part = *scratch_[i];
      for (int64_t e = part.block_begin[b]; e < part.block_begin[b + 1]; ++e) fn(part.contrib[e]);
    }
  };
  parallel_for(blocks.count(), threads, 1, scratch_, [&](int64_t b, ThreadScratch& ts) {
    const int32_t b0 = blocks.begin(b), b1 = blocks.end(b);
    // This block's touched rows (ascending) and their contributions grouped by row.
    ts.row_count.assign(b1 - b0, 0);
    for_each_in_block(b, [&](const Contribution& c) { ++ts.row_count[c.row - b0]; });
    ts.touched.clear();
    ts.row_begin.clear();
    int32_t total = 0;
    for (int32_t r = 0; r < b1 - b0; ++r) {
      const int32_t n_r = ts.row_count[r];
      if (n_r == 0) continue;
      ts.touched.push_back(b0 + r);
      ts.row_begin.push_back(total);
      ts.row_count[r] = total;  // from here on: the row's next free position
      total += n_r;
    }
    ts.row_begin.push_back(total);
    ts.by_row.resize(total);
    for_each_in_block(b, [&](const Contribution& c) { ts.by_row[ts.row_count[c.row - b0]++] = c; });
    // Sum each row's contributions, then one Adam step (or store the sum: tests). Adam reads and
    // writes a whole [w | m | v] block per touched row: fetch a few rows ahead.
    ts.grad.resize(L.stride());
    float* g = ts.grad.data();
    const int64_t n_touched = static_cast<int64_t>(ts.touched.size());
    constexpr int kAhead = 2 * kPrefetchAhead;
    if (sink_w == nullptr)
      for (int64_t j = 0; j < std::min<int64_t>(kAhead, n_touched); ++j)
        prefetch_row(L.row(ts.touched[j]), static_cast<int>(L.row_pitch()));
    for (int64_t j = 0; j < n_touched; ++j) {
      const int32_t r = ts.touched[j];
      if (j + kAhead < n_touched && sink_w == nullptr)
        prefetch_row(L.row(ts.touched[j + kAhead]), static_cast<int>(L.row_pitch()));  // w, m and v: one block
      std::memset(g, 0, sizeof(float) * row_len);
      float gb = 0.0f;
      for (int32_t e = ts.row_begin[j]; e < ts.row_begin[j + 1]; ++e) {
        const Contribution& ce = ts.by_row[e];
        const InView& v = vec_of[ce.sample];
        if (v.dense())
          k.axpy(ce.coef, v.val, g, row_len);
        else
          for (int t = 0; t < v.n; ++t) g[v.idx[t]] += ce.coef * v.val[t];
        gb += ce.coef;
      }
      if (sink_w) {
        std::memcpy(sink_w->data() + static_cast<size_t>(r) * row_len, g, sizeof(float) * row_len);
        if (nm && sink_b) (*sink_b)[r] = gb;
        continue;
      }
      adam_row(L, k, r, g, a, sr_seed);
      if (nm) adam1(L.bias()[r], L.bias_m()[r], L.bias_v()[r], gb, a);
    }
    if (dense_adam) {
      // The paper's optimizer: every parameter moves every batch; untouched ones with zero gradient.
      int64_t j = 0;
      for (int32_t r = b0; r < b1; ++r) {
        if (j < n_touched && ts.touched[j] == r) {
          ++j;
          continue;
        }
        adam_row(L, k, r, nullptr, a, sr_seed);
        if (nm) adam1(L.bias()[r], L.bias_m()[r], L.bias_v()[r], 0.0f, a);
      }
    }
  }, serial_lock());
  if (!nm) {
    // Input-major layers: every sample contributes to every bias, in sample order.
    std::vector<float>& gb = scratch_[0]->bias_grad;
    gb.assign(L.n_out(), 0.0f);
    for (int64_t s = 0; s < n_samples; ++s)
      if (samples_[s].has_grad) k.axpy(1.0f, samples_[s].layer[l].delta.data(), gb.data(), L.n_out());
    if (sink_b)
      *sink_b = gb;
    else if (!sink_w)
      k.adam(L.bias(), L.bias_m(), L.bias_v(), gb.data(), L.n_out(), a);
  }
}

void Network::advance_schedule() {
  const ScheduleSettings& s = cfg_.schedule;
  const bool rehash = s.rehash_m > 0 && step_ % s.rehash_m == 0;
  if (rehash)
    for (size_t i = 0; i < layers_.size(); ++i)
      layers_[i]->rehash(derive_seed(cfg_.seed, 0x4A5B, static_cast<uint64_t>(step_) * 131 + i));
  if (rehash || step_ >= next_rebuild_) {
    rebuild_tables();
    if (step_ >= next_rebuild_) {
      ++rebuilds_;
      // The i-th interval is N0 * exp(decay * i): rebuilds get rarer as training settles.
      const double interval = static_cast<double>(s.rebuild_n0) * std::exp(s.rebuild_decay * static_cast<double>(rebuilds_));
      next_rebuild_ = step_ + static_cast<int64_t>(std::clamp(std::llround(std::min(interval, 1e15)), 1LL, (1LL << 50)));
    }
  }
}

TrainStats Network::forward_backward_batch(const CsrView& x, const CsrView& y) {
  const int64_t n = x.n_rows;
  if (static_cast<int64_t>(samples_.size()) < n) samples_.resize(n);
  const double inv_batch = 1.0 / static_cast<double>(n);
  const uint64_t step_seed = derive_seed(cfg_.seed, 0x57E9, static_cast<uint64_t>(step_));
  parallel_for(n, cfg_.threads, 2, scratch_, [&](int64_t s, ThreadScratch& ts) {
    const int32_t* lab = y.indices + y.indptr[s];
    const int n_lab = static_cast<int>(y.indptr[s + 1] - y.indptr[s]);
    SampleState& st = samples_[s];
    // The padding stream: per sample, or one per batch (every sample draws the same sequence).
    const uint64_t stream = cfg_.batch_padding ? step_seed : derive_seed(step_seed, static_cast<uint64_t>(s));
    forward(x, s, lab, n_lab, true, true, stream, st, ts);
    st.loss = backward(s, lab, n_lab, inv_batch, st, ts);
  }, serial_lock());
  TrainStats out;
  double active = 0.0;
  for (int64_t s = 0; s < n; ++s) {
    out.loss += samples_[s].loss;
    active += static_cast<double>(samples_[s].layer.back().val.size());
  }
  out.loss /= static_cast<double>(n);
  out.mean_active = active / static_cast<double>(n);
  return out;
}

TrainStats Network::train_batch(const CsrView& x, const CsrView& y) {
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  ++step_;
  const auto t0 = clock::now();
  const TrainStats out = forward_backward_batch(x, y);
  const auto t1 = clock::now();
  update_layer(num_layers() - 1, x, x.n_rows);
  const auto t2 = clock::now();
  for (int l = num_layers() - 2; l >= 0; --l) update_layer(l, x, x.n_rows);
  const auto t3 = clock::now();
  advance_schedule();
  const auto t4 = clock::now();
  times_.forward_backward += secs(t0, t1);
  times_.update_output += secs(t1, t2);
  times_.update_hidden += secs(t2, t3);
  times_.tables += secs(t3, t4);
  return out;
}

double Network::loss_and_gradients(const CsrView& x, const CsrView& y, std::vector<std::vector<float>>* grad_w,
                                   std::vector<std::vector<float>>* grad_b) {
  const TrainStats out = forward_backward_batch(x, y);
  grad_w->resize(layers_.size());
  grad_b->resize(layers_.size());
  for (int l = 0; l < num_layers(); ++l) update_layer(l, x, x.n_rows, &(*grad_w)[l], &(*grad_b)[l]);
  return out.loss;
}

ActiveComposition Network::active_composition() const {
  ActiveComposition sum;
  for (const auto& ts : scratch_) {
    sum.samples += ts->composition.samples;
    sum.labels += ts->composition.labels;
    sum.retrieved += ts->composition.retrieved;
    sum.padded += ts->composition.padded;
  }
  return sum;
}

void Network::lsh_candidates(const CsrView& x, std::vector<std::vector<int32_t>>* out) {
  const int64_t n = x.n_rows;
  const int nl = num_layers();
  out->assign(n, {});
  Layer& Lo = *layers_[nl - 1];
  if (!Lo.hashed()) return;
  if (static_cast<int64_t>(samples_.size()) < n) samples_.resize(n);
  parallel_for(n, cfg_.threads, 4, scratch_, [&](int64_t s, ThreadScratch& ts) {
    SampleState& st = samples_[s];
    forward(x, s, nullptr, 0, false, false, 0, st, ts, nl - 1);  // hidden layers, exact
    const InView in = nl > 1 ? view_of(st.layer[nl - 2]) : feature_row(x, s);
    hash_query(*Lo.family(), in, ts.buckets);
    ActiveSetSelector& sel = Lo.selector(ts.tid);
    sel.reseed(derive_seed(cfg_.seed, 0xCA9D, static_cast<uint64_t>(s)));
    sel.select(*Lo.tables(), ts.buckets.data(), nullptr, 0, (*out)[s], /*pad=*/false);
    if (Lo.settings().lsh.selection == SelectionKind::Rerank) {
      std::vector<float>& val = st.layer[nl - 1].val;  // scratch: the pool's exact scores
      val.clear();
      score_active(Lo, in, (*out)[s], val);
      sel.keep_best((*out)[s], val, /*pad=*/false);
    }
  });
}

void Network::last_output(int64_t s, std::vector<int32_t>* ids, std::vector<float>* log_q) const {
  if (s < 0 || s >= static_cast<int64_t>(samples_.size()) || samples_[s].layer.empty())
    throw std::out_of_range("last_output: no sample " + std::to_string(s) + " in the latest batch");
  const LayerState& o = samples_[s].layer.back();
  *ids = o.ids;
  *log_q = o.log_q;
}

template <class Start, class Score, class Finish>
void Network::score_outputs_blocked(const CsrView& x, Start&& start, Score&& score, Finish&& finish) {
  // Hidden layers per sample, then every output scored. Samples are taken in blocks and labels in
  // chunks, so a chunk of output rows (kChunk x 128 floats, L2-sized) is read from memory once per
  // block of samples rather than once per sample (and packed into tiles once per block). Blocks
  // of up to kMaxBlock samples, their count a multiple of the thread count so that every thread
  // gets the same share.
  const int64_t n = x.n_rows;
  const int nl = num_layers();
  Layer& Lo = *layers_[nl - 1];
  const int n_labels = Lo.n_out();
  const int kChunk = 512;
  const int64_t threads = cfg_.threads;
  constexpr int64_t kMaxBlock = 256;
  const int64_t n_blocks = std::max<int64_t>(1, ((n + kMaxBlock - 1) / kMaxBlock + threads - 1) / threads * threads);
  const int64_t kBlock = std::max<int64_t>(1, (n + n_blocks - 1) / n_blocks);
  const KernelTable& kt = kernels();
  parallel_for(n_blocks, cfg_.threads, 1, scratch_, [&](int64_t blk, ThreadScratch& ts) {
    const int64_t s0 = blk * kBlock, s1 = std::min(n, s0 + kBlock);
    if (s0 >= s1) return;  // more blocks than samples (tiny batches): nothing here
    std::vector<InView> ins(static_cast<size_t>(s1 - s0));
    for (int64_t s = s0; s < s1; ++s) {
      SampleState& st = samples_[s];
      forward(x, s, nullptr, 0, false, false, 0, st, ts, nl - 1);  // hidden layers only
      ins[s - s0] = nl > 1 ? view_of(st.layer[nl - 2]) : feature_row(x, s);
      start(s, s - s0, ts);
    }
    const float* b = Lo.bias();
    const int row_len = Lo.row_len();
    // Inputs as wide as a hidden layer (kept sparse after ReLU: only the nonzero activations) are
    // written out dense and scored against the chunk packed into k-major tiles: one broadcast per
    // input element feeds 16 rows, no horizontal sum per dot (kernel dot_tiles); ~2-3x faster
    // exact scoring at the Amazon-670K shape than a gather-dot per row, zeros included. A wide
    // sparse input (the raw features, when there is no hidden layer) keeps the gather-dot. The
    // path depends on the sample alone, so its scores do not depend on the block it falls in.
    // dense[q] is the local index of the block's q-th densified sample, row q of ts.dense_inputs.
    std::vector<int64_t> dense;
    std::vector<char> is_dense(static_cast<size_t>(s1 - s0), 0);
    if (row_len <= kDensifyMax) {
      ts.dense_inputs.assign(static_cast<size_t>(s1 - s0) * row_len, 0.0f);
      for (int64_t i = 0; i < s1 - s0; ++i) {
        const InView& in = ins[i];
        if (in.dense() && in.n != row_len) continue;
        bool fits = true;
        for (int p = 0; p < in.n && !in.dense(); ++p) fits = fits && in.idx[p] >= 0 && in.idx[p] < row_len;
        if (!fits) continue;
        float* d = ts.dense_inputs.data() + dense.size() * row_len;
        if (in.dense())
          std::copy(in.val, in.val + row_len, d);
        else
          for (int p = 0; p < in.n; ++p) d[in.idx[p]] += in.val[p];
        dense.push_back(i);
        is_dense[i] = 1;
      }
    }
    const int max_tiles = (kChunk + kTileRows - 1) / kTileRows;
    const int pitch = max_tiles * kTileRows;
    if (!dense.empty()) {
      ts.tiles.assign(static_cast<size_t>(max_tiles) * row_len * kTileRows, 0.0f);
      ts.tile_scores.resize(dense.size() * pitch);
    }
    for (int j0 = 0; j0 < n_labels; j0 += kChunk) {
      const int j1 = std::min(n_labels, j0 + kChunk);
      const int n_tiles = (j1 - j0 + kTileRows - 1) / kTileRows;
      // The first pass over the chunk brings it in from memory: rows are 1.5 KB apart
      // (w | m | v), too sparse for the hardware prefetcher, so fetch a few rows ahead by hand.
      for (int j = j0; j < std::min(j1, j0 + kPrefetchAhead); ++j) prefetch_row(Lo.row(j), row_len);
      if (!dense.empty()) {
        // Rows past j1 in the last tile keep the zeros they were given: their scores are unused.
        for (int j = j0; j < j1; ++j) {
          if (j + kPrefetchAhead < j1) prefetch_row(Lo.row(j + kPrefetchAhead), row_len);
          const float* w = Lo.row(j);
          const int t = (j - j0) / kTileRows, r = (j - j0) % kTileRows;
          float* dst = ts.tiles.data() + static_cast<size_t>(t) * row_len * kTileRows + r;
          for (int k = 0; k < row_len; ++k) dst[static_cast<size_t>(k) * kTileRows] = w[k];
        }
        kt.dot_tiles(ts.tiles.data(), n_tiles, ts.dense_inputs.data(), static_cast<int>(dense.size()), row_len,
                     ts.tile_scores.data(), pitch);
        for (size_t q = 0; q < dense.size(); ++q) {
          const float* sc = ts.tile_scores.data() + q * pitch;
          const int64_t s = s0 + dense[q];
          for (int j = j0; j < j1; ++j) score(s, dense[q], j, b[j] + sc[j - j0], ts);
        }
      }
      if (dense.size() == static_cast<size_t>(s1 - s0)) continue;
      for (int64_t s = s0; s < s1; ++s) {
        if (is_dense[s - s0]) continue;
        const InView& in = ins[s - s0];
        for (int j = j0; j < j1; ++j) {
          if (dense.empty() && s == s0 && j + kPrefetchAhead < j1) prefetch_row(Lo.row(j + kPrefetchAhead), row_len);
          score(s, s - s0, j, b[j] + dot_in(kt, Lo.row(j), in), ts);
        }
      }
    }
    for (int64_t s = s0; s < s1; ++s) finish(s, s - s0, ts);
  });
}

void Network::predict_scores(const CsrView& x, float* out) {
  const int64_t n = x.n_rows;
  if (static_cast<int64_t>(samples_.size()) < n) samples_.resize(n);
  const int64_t nlab = cfg_.num_labels();
  if (layers_.back()->neuron_major()) {
    score_outputs_blocked(
        x, [](int64_t, int64_t, ThreadScratch&) {},
        [&](int64_t s, int64_t, int j, float v, ThreadScratch&) { out[s * nlab + j] = v; },
        [](int64_t, int64_t, ThreadScratch&) {});
    return;
  }
  parallel_for(n, cfg_.threads, 4, scratch_, [&](int64_t s, ThreadScratch& ts) {
    SampleState& st = samples_[s];
    forward(x, s, nullptr, 0, false, false, 0, st, ts);
    std::memcpy(out + s * nlab, st.layer.back().val.data(), sizeof(float) * nlab);
  });
}

void Network::predict_topk(const CsrView& x, int k_top, InferenceMode mode, int32_t* out) {
  const int64_t n = x.n_rows;
  if (static_cast<int64_t>(samples_.size()) < n) samples_.resize(n);
  const int nl = num_layers();
  Layer& Lo = *layers_[nl - 1];
  const int n_labels = Lo.n_out();
  const uint64_t infer_seed = derive_seed(cfg_.seed, 0x1F3E);

  auto emit = [&](TopK& heap, int64_t s, const std::vector<int32_t>* present) {
    const std::vector<Scored>& best = heap.sorted();
    int32_t* o = out + s * k_top;
    int c = 0;
    for (; c < static_cast<int>(best.size()); ++c) o[c] = best[c].second;
    // Fewer candidates than k (LSH mode): fill with the lowest ids not already listed.
    for (int32_t j = 0; c < k_top && j < n_labels; ++j)
      if (present == nullptr || !std::binary_search(present->begin(), present->end(), j)) o[c++] = j;
  };

  if (mode == InferenceMode::Lsh || !Lo.neuron_major()) {
    // Per sample: forward every layer (LSH-sampled where configured), rank what was computed.
    const bool lsh = mode == InferenceMode::Lsh;
    parallel_for(n, cfg_.threads, 4, scratch_, [&](int64_t s, ThreadScratch& ts) {
      SampleState& st = samples_[s];
      forward(x, s, nullptr, 0, lsh, false, derive_seed(infer_seed, static_cast<uint64_t>(s)), st, ts);
      const LayerState& o = st.layer.back();
      ts.topk.resize(1);
      TopK& heap = ts.topk[0];
      heap.reset(k_top);
      for (size_t p = 0; p < o.val.size(); ++p) heap.push(o.val[p], o.dense ? static_cast<int32_t>(p) : o.ids[p]);
      if (o.dense || static_cast<int>(o.val.size()) >= k_top) {
        emit(heap, s, nullptr);
      } else {
        std::vector<int32_t> present(o.ids);
        std::sort(present.begin(), present.end());
        emit(heap, s, &present);
      }
    });
    return;
  }

  // Exact: every output scored, blocks of samples sharing each chunk of output rows.
  score_outputs_blocked(
      x,
      [&](int64_t, int64_t local, ThreadScratch& ts) {
        if (static_cast<int64_t>(ts.topk.size()) <= local) ts.topk.resize(local + 1);
        ts.topk[local].reset(k_top);
      },
      [&](int64_t, int64_t local, int j, float v, ThreadScratch& ts) { ts.topk[local].push(v, j); },
      [&](int64_t s, int64_t local, ThreadScratch& ts) { emit(ts.topk[local], s, nullptr); });
}

}  // namespace slide
