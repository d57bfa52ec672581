// Per-sample active-set selection from LSH buckets. See active_set.h.
#include "active_set.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace slide {
namespace {
// High bit of count_: the neuron is already in `out` (forced, selected or padding).
constexpr uint32_t kMark = 1u << 31;
constexpr uint32_t kCount = kMark - 1;
}  // namespace

float inclusion_log_q_retrieved(int count, int L, double keep, double r) {
  const double p = std::min(1.0, static_cast<double>(count) / static_cast<double>(L));
  const double q_lsh = (1.0 - std::pow(1.0 - p, static_cast<double>(L))) * keep;
  return static_cast<float>(std::log(q_lsh + (1.0 - q_lsh) * r));
}

SelectionKind parse_selection_kind(const std::string& name) {
  std::string n = name;
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "vanilla") return SelectionKind::Vanilla;
  if (n == "threshold") return SelectionKind::Threshold;
  if (n == "topk") return SelectionKind::TopK;
  if (n == "random") return SelectionKind::Random;
  if (n == "rerank") return SelectionKind::Rerank;
  throw std::invalid_argument("unknown selection kind '" + name +
                              "' (expected vanilla, threshold, topk, random or rerank)");
}

ActiveSetSelector::ActiveSetSelector(int n_neurons, SelectionConfig cfg, uint64_t seed)
    : n_(n_neurons), cfg_(cfg), rng_(seed) {
  const std::string p = "SelectionConfig.";
  if (n_neurons < 1) throw std::invalid_argument("ActiveSetSelector: n_neurons must be >= 1, got " + std::to_string(n_neurons));
  if (cfg.min_active < 0) throw std::invalid_argument(p + "min_active: must be >= 0, got " + std::to_string(cfg.min_active));
  if (cfg.max_active < 0) throw std::invalid_argument(p + "max_active: must be >= 0 (0 = no cap), got " + std::to_string(cfg.max_active));
  if (cfg.max_active > 0 && cfg.min_active > cfg.max_active)
    throw std::invalid_argument(p + "min_active (" + std::to_string(cfg.min_active) + ") exceeds max_active (" +
                                std::to_string(cfg.max_active) + ")");
  if (cfg.pad_below < 0) throw std::invalid_argument(p + "pad_below: must be >= 0, got " + std::to_string(cfg.pad_below));
  if (cfg.kind == SelectionKind::Threshold && cfg.threshold < 1)
    throw std::invalid_argument(p + "threshold: must be >= 1, got " + std::to_string(cfg.threshold));
  if (cfg.kind == SelectionKind::TopK && cfg.max_active < 1)
    throw std::invalid_argument(p + "max_active: TopK selection needs max_active >= 1");
  if (cfg.kind == SelectionKind::Rerank && cfg.max_active < 1)
    throw std::invalid_argument(p + "max_active: Rerank selection needs max_active >= 1");
  if (cfg.max_retrieved < 0 || (cfg.max_active > 0 && cfg.max_retrieved > cfg.max_active))
    throw std::invalid_argument(p + "max_retrieved: must be >= 0 (0 = no cap) and at most max_active (" +
                                std::to_string(cfg.max_active) + "), got " + std::to_string(cfg.max_retrieved));
  if (cfg.max_retrieved > 0 && cfg.kind == SelectionKind::Random)
    throw std::invalid_argument(p + "max_retrieved: Random selection retrieves nothing; set it to 0");
  if (cfg.rerank_pool < 0 || (cfg.rerank_pool > 0 && cfg.rerank_pool < cfg.max_active))
    throw std::invalid_argument(p + "rerank_pool: must be 0 (the whole union) or >= max_active (" +
                                std::to_string(cfg.max_active) + "), got " + std::to_string(cfg.rerank_pool));
  count_.assign(n_neurons, 0);
  touched_.reserve(1024);
  cand_.reserve(1024);
}

void ActiveSetSelector::add_forced(const int32_t* forced, int n_forced, std::vector<int32_t>& out) {
  // Validate before touching the counters, so an error leaves the scratch clean.
  for (int i = 0; i < n_forced; ++i)
    if (forced[i] < 0 || forced[i] >= n_)
      throw std::out_of_range("ActiveSetSelector::select: forced id " + std::to_string(forced[i]) + " at position " +
                              std::to_string(i) + " outside [0, " + std::to_string(n_) + ")");
  for (int i = 0; i < n_forced; ++i) {
    const int32_t id = forced[i];
    if (count_[id] & kMark) continue;  // duplicate label
    count_[id] = kMark;
    touched_.push_back(id);
    out.push_back(id);
  }
}

void ActiveSetSelector::select_random(const int32_t* forced, int n_forced, std::vector<int32_t>& out,
                                      std::vector<float>* log_q) {
  out.clear();
  touched_.clear();
  add_forced(forced, n_forced, out);
  last_.forced = static_cast<int>(out.size());
  const size_t target = std::min<size_t>(static_cast<size_t>(cfg_.min_active), static_cast<size_t>(n_));
  if (out.size() < target && below_pad_limit(out.size())) pad_random(out, target);
  last_.retrieved = 0;
  last_.padded = static_cast<int>(out.size()) - last_.forced;
  if (log_q != nullptr) fill_log_q(out, static_cast<size_t>(last_.forced), 0, 0, 1, *log_q);
  for (int32_t id : touched_) count_[id] = 0;
}

void ActiveSetSelector::select(const HashTables& tables, const uint32_t* buckets_L, const int32_t* forced,
                               int n_forced, std::vector<int32_t>& out, bool pad, std::vector<float>* log_q) {
  out.clear();
  touched_.clear();
  cand_.clear();
  const int L = tables.L();
  if (log_q != nullptr && cfg_.kind != SelectionKind::Vanilla)
    throw std::invalid_argument("ActiveSetSelector: inclusion probabilities are defined for vanilla and random "
                                "selection only");
  if (cfg_.kind == SelectionKind::Threshold && cfg_.threshold > L)
    throw std::invalid_argument("SelectionConfig.threshold: " + std::to_string(cfg_.threshold) + " exceeds L = " +
                                std::to_string(L));
  for (int t = 0; t < L; ++t)
    if (buckets_L[t] >= tables.num_buckets())
      throw std::out_of_range("ActiveSetSelector::select: bucket " + std::to_string(buckets_L[t]) + " of table " +
                              std::to_string(t) + " >= " + std::to_string(tables.num_buckets()));

  add_forced(forced, n_forced, out);
  last_.forced = static_cast<int>(out.size());

  // Gather the L buckets' items. The buckets are L cache misses in a large table (and the
  // counters another one per item): prefetch everything first so the misses overlap.
  for (int t = 0; t < L; ++t) tables.prefetch(t, buckets_L[t]);
  retrieved_.clear();
  bool bad_id = false;
  for (int t = 0; t < L; ++t) {
    const auto [items, c] = tables.bucket(t, buckets_L[t]);
    for (int j = 0; j < c; ++j) {
      const uint32_t id = items[j];
      if (id >= static_cast<uint32_t>(n_)) {
        bad_id = true;
        continue;
      }
#if defined(__GNUC__)
      __builtin_prefetch(&count_[id], 1);
#endif
      retrieved_.push_back(static_cast<int32_t>(id));
    }
  }
  // Count, per neuron, the tables whose bucket holds it; first sightings form the candidates.
  if (!bad_id) {
    for (const int32_t id : retrieved_) {
      uint32_t& cnt = count_[id];
      if (cnt == 0) {
        touched_.push_back(static_cast<int32_t>(id));
        cand_.push_back(static_cast<int32_t>(id));
      }
      ++cnt;
    }
  }
  if (bad_id) {
    for (int32_t id : touched_) count_[id] = 0;
    throw std::out_of_range("ActiveSetSelector::select: the tables hold a neuron id >= n_neurons (" +
                            std::to_string(n_) + "); were they built for another layer?");
  }

  if (cfg_.kind == SelectionKind::Threshold) {
    const uint32_t th = static_cast<uint32_t>(cfg_.threshold);
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&](int32_t id) { return (count_[id] & kCount) < th; }),
                cand_.end());
  }

  const bool rerank = cfg_.kind == SelectionKind::Rerank;
  // Rerank caps the pool it scores (forced ids aside), not the active set: keep_best cuts that.
  const size_t cap = cfg_.max_active > 0 ? static_cast<size_t>(cfg_.max_active) : SIZE_MAX;
  const size_t pool = cfg_.rerank_pool > 0 ? static_cast<size_t>(cfg_.rerank_pool) : SIZE_MAX;
  const size_t room = rerank ? pool : std::min(cap > out.size() ? cap - out.size() : 0, retrieved_cap());
  if (cand_.size() <= room) {
    for (int32_t id : cand_) {
      count_[id] |= kMark;
      out.push_back(id);
    }
  } else if (cfg_.kind == SelectionKind::Vanilla) {
    // Uniform random subset of the union (partial Fisher-Yates), so no table is favoured.
    const size_t m = cand_.size();
    for (size_t i = 0; i < room; ++i) {
      const size_t j = i + rng_.below(static_cast<uint32_t>(m - i));
      std::swap(cand_[i], cand_[j]);
      count_[cand_[i]] |= kMark;
      out.push_back(cand_[i]);
    }
  } else {
    keep_most_found(out, room, L);
  }

  last_.retrieved = static_cast<int>(out.size()) - last_.forced;
  const size_t target = std::min<size_t>(static_cast<size_t>(cfg_.min_active), static_cast<size_t>(n_));
  const size_t before_pad = out.size();
  if (pad && !rerank && out.size() < target && below_pad_limit(out.size())) pad_random(out, target);
  last_.padded = static_cast<int>(out.size()) - last_.forced - last_.retrieved;
  // (before the reset: fill_log_q reads the retrieved neurons' table counts)
  if (log_q != nullptr) fill_log_q(out, before_pad, cand_.size(), room, L, *log_q);

  for (int32_t id : touched_) count_[id] = 0;
}

void ActiveSetSelector::keep_most_found(std::vector<int32_t>& out, size_t room, int L) {
  // Highest table counts first: a histogram over counts 1..L finds the cut-off count in
  // O(candidates + L); ties at the cut-off go to the first retrieved.
  hist_.assign(static_cast<size_t>(L) + 2, 0);
  auto cnt_of = [&](int32_t id) { return std::min<uint32_t>(count_[id] & kCount, static_cast<uint32_t>(L)); };
  for (int32_t id : cand_) ++hist_[cnt_of(id)];
  size_t above = 0;
  uint32_t cut = static_cast<uint32_t>(L);
  while (cut > 0 && above + hist_[cut] < room) above += hist_[cut--];
  size_t at_cut = room - above;
  for (int32_t id : cand_) {
    const uint32_t c = cnt_of(id);
    if (c > cut || (c == cut && at_cut > 0)) {
      if (c == cut) --at_cut;
      count_[id] |= kMark;
      out.push_back(id);
    }
  }
}

void ActiveSetSelector::keep_best(std::vector<int32_t>& out, std::vector<float>& val, bool pad) {
  if (cfg_.kind != SelectionKind::Rerank)
    throw std::logic_error("ActiveSetSelector::keep_best: for Rerank selection only");
  const size_t forced = static_cast<size_t>(last_.forced);
  if (val.size() != out.size() || out.size() < forced)
    throw std::invalid_argument("ActiveSetSelector::keep_best: " + std::to_string(val.size()) + " scores for " +
                                std::to_string(out.size()) + " neurons (the last select() kept " +
                                std::to_string(forced) + " forced)");
  const size_t cap = static_cast<size_t>(cfg_.max_active);
  const size_t room = std::min(cap > forced ? cap - forced : 0, retrieved_cap());
  const size_t n_ret = out.size() - forced;
  if (n_ret > room) {
    // NaN ranks last, so the order stays a strict weak ordering whatever the weights hold.
    auto key = [&](int32_t p) { return std::isnan(val[p]) ? -std::numeric_limits<float>::infinity() : val[p]; };
    auto better = [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); };
    order_.resize(n_ret);
    for (size_t i = 0; i < n_ret; ++i) order_[i] = static_cast<int32_t>(forced + i);
    std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(room), order_.end(), better);
    order_.resize(room);
    std::sort(order_.begin(), order_.end());
    // Ascending positions, each >= its destination: an in-place forward copy is safe.
    for (size_t i = 0; i < room; ++i) {
      out[forced + i] = out[order_[i]];
      val[forced + i] = val[order_[i]];
    }
    out.resize(forced + room);
    val.resize(forced + room);
  }
  last_.retrieved = static_cast<int>(out.size() - forced);
  last_.padded = 0;
  const size_t target = std::min<size_t>(static_cast<size_t>(cfg_.min_active), static_cast<size_t>(n_));
  if (pad && out.size() < target && below_pad_limit(out.size())) {
    // Mark what is kept so that padding draws other neurons; select() already reset its marks.
    touched_.clear();
    for (int32_t id : out) {
      count_[id] = kMark;
      touched_.push_back(id);
    }
    pad_random(out, target);
    for (int32_t id : touched_) count_[id] = 0;
    last_.padded = static_cast<int>(out.size()) - last_.forced - last_.retrieved;
  }
}

double ActiveSetSelector::padding_inclusion(int32_t id, size_t n_pad, size_t n_before_pad) const {
  if (n_pad == 0) return 0.0;
  if (!cfg_.padding_sampler)
    return static_cast<double>(n_pad) / static_cast<double>(static_cast<size_t>(n_) - n_before_pad);
  const double p = cfg_.padding_sampler->prob(id);
  return -std::expm1(static_cast<double>(pad_draws_) * std::log1p(-p));
}

void ActiveSetSelector::fill_log_q(const std::vector<int32_t>& out, size_t n_before_pad, size_t n_cand, size_t room,
                                   int L, std::vector<float>& log_q) const {
  const size_t forced = static_cast<size_t>(last_.forced);
  const size_t n_pad = out.size() - n_before_pad;
  const double keep = n_cand > room ? static_cast<double>(room) / static_cast<double>(n_cand) : 1.0;
  log_q.assign(out.size(), 0.0f);
  for (size_t p = forced; p < n_before_pad; ++p)
    log_q[p] = inclusion_log_q_retrieved(static_cast<int>(count_[out[p]] & kCount), L, keep,
                                         padding_inclusion(out[p], n_pad, n_before_pad));
  for (size_t p = n_before_pad; p < out.size(); ++p)
    log_q[p] = static_cast<float>(std::log(padding_inclusion(out[p], n_pad, n_before_pad)));
}

template <typename Draw>
size_t ActiveSetSelector::draw_distinct(std::vector<int32_t>& out, size_t target, size_t max_draws, Draw draw_one) {
  // Each draw's counter is a cache miss on a wide layer: draw a chunk, prefetch its counters, then
  // test them. A chunk never exceeds the ids still needed, so exactly the draws of a one-at-a-time
  // loop are consumed (same ids, same random stream).
  constexpr size_t kChunk = 32;
  int32_t draw[kChunk];
  size_t draws = 0;
  while (out.size() < target && draws < max_draws) {
    const size_t m = std::min({kChunk, target - out.size(), max_draws - draws});
    for (size_t i = 0; i < m; ++i) {
      draw[i] = static_cast<int32_t>(draw_one());
      __builtin_prefetch(&count_[draw[i]], 1);
    }
    draws += m;
    for (size_t i = 0; i < m; ++i) {
      uint32_t& c = count_[draw[i]];
      if (c & kMark) continue;
      if (c == 0) touched_.push_back(draw[i]);
      c |= kMark;
      out.push_back(draw[i]);
    }
  }
  return draws;
}

void ActiveSetSelector::pad_random(std::vector<int32_t>& out, size_t target) {
  pad_draws_ = 0;
  if (cfg_.padding_sampler) {
    pad_weighted(out, target);
    return;
  }
  const size_t need = target - out.size();
  const size_t free_ids = static_cast<size_t>(n_) - out.size();
  if (need * 2 <= free_ids) {
    // Rejection sampling: at least half the draws succeed, so O(need) expected work.
    draw_distinct(out, target, SIZE_MAX, [&] { return rng_.below(static_cast<uint32_t>(n_)); });
    return;
  }
  // Most of the layer is needed: list the unused ids and draw a uniform subset of them.
  cand_.clear();
  for (int32_t id = 0; id < n_; ++id)
    if (!(count_[id] & kMark)) cand_.push_back(id);
  for (size_t i = 0; i < need; ++i) {
    const size_t j = i + rng_.below(static_cast<uint32_t>(cand_.size() - i));
    std::swap(cand_[i], cand_[j]);
    const int32_t id = cand_[i];
    if (count_[id] == 0) touched_.push_back(id);
    count_[id] |= kMark;
    out.push_back(id);
  }
}

void ActiveSetSelector::pad_weighted(std::vector<int32_t>& out, size_t target) {
  // Successive sampling: draw by weight, skip ids already chosen. Padding a few thousand of
  // hundreds of thousands of labels, nearly every draw is new. Should the draws run far past the
  // count needed (a heavy head, or most of the layer wanted), the rest comes from
  // Efraimidis-Spirakis keys over the ids still free: the same successive sampling, continued
  // exactly, in O(n log n) once.
  const AliasSampler& sampler = *cfg_.padding_sampler;
  const size_t max_draws = 4 * (target - out.size()) + 64;
  pad_draws_ = draw_distinct(out, target, max_draws, [&] { return sampler.draw(rng_); });
  if (out.size() >= target) return;
  // Key log(u) / p per free id (u uniform in (0, 1], p its draw probability, proportional to its
  // weight); the largest keys, in order, are the next successive draws. Each one taken counts as
  // one draw for the inclusion probabilities.
  std::vector<std::pair<double, int32_t>> keyed;
  keyed.reserve(static_cast<size_t>(n_) - out.size());
  for (int32_t id = 0; id < n_; ++id) {
    if (count_[id] & kMark) continue;
    const double u = static_cast<double>((rng_.next() >> 11) + 1) * 0x1.0p-53;
    keyed.emplace_back(std::log(u) / sampler.prob(id), id);
  }
  const size_t take = target - out.size();
  std::partial_sort(keyed.begin(), keyed.begin() + static_cast<std::ptrdiff_t>(take), keyed.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  for (size_t i = 0; i < take; ++i) {
    const int32_t id = keyed[i].second;
    if (count_[id] == 0) touched_.push_back(id);
    count_[id] |= kMark;
    out.push_back(id);
  }
  pad_draws_ += take;
}

}  // namespace slide
