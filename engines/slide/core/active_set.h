#pragma once
// Active-set selection: turn a query's L bucket ids into the neurons to compute.
//
// One selector per thread: it owns a per-neuron counter array and a touched-list, and resets only
// the counters it touched, so a selection costs O(items retrieved + output), never O(n_neurons).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "alias_sampler.h"
#include "hash_tables.h"
#include "rng.h"

namespace slide {

enum class SelectionKind {
  Vanilla,    // union of the L buckets; over max_active: a uniform random subset is kept
  Threshold,  // neurons present in >= threshold of the L buckets
  TopK,       // the max_active neurons present in most buckets (ties: first retrieved)
  Random,     // no hashing: forced ids plus uniform random neurons (the ablation control)
  // The union of the L buckets (over rerank_pool: the rerank_pool present in most buckets) is
  // scored exactly by the caller and the max_active best by score kept (keep_best).
  Rerank,
};

// Parse "vanilla" | "threshold" | "topk" | "random" | "rerank" (case-insensitive); throws std::invalid_argument.
SelectionKind parse_selection_kind(const std::string& name);

struct SelectionConfig {
  SelectionKind kind = SelectionKind::Vanilla;
  int min_active = 0;   // fewer selected: pad with uniform random neurons up to this total
  int max_active = 0;   // total cap (forced ids included; forced ids are never dropped). 0 = no cap
  int threshold = 1;    // Threshold: minimum number of tables; 1..L
  // Pad only when fewer than this many neurons were chosen before padding (forced + retrieved);
  // 0: whenever fewer than min_active (the original SLIDE code pads to 1,000 below 1,500).
  int pad_below = 0;
  // Rerank: at most this many retrieved neurons (forced ids aside) are scored, those present in
  // most buckets; 0: the whole union. 0 or >= max_active.
  int rerank_pool = 0;
  // At most this many neurons from the tables (forced ids aside), chosen by the selection's own
  // rule; the rest up to min_active is padding. So an active set can mix retrieved (hard)
  // negatives with frequency-drawn ones in a fixed ratio. 0: no cap beyond max_active.
  int max_retrieved = 0;
  // Padding drawn by these weights (frequency-drawn negatives: labels by their training
  // frequency) instead of uniformly; null: uniform. Shared by the layer's selectors.
  std::shared_ptr<const AliasSampler> padding_sampler;
};

// Inclusion probability of a neuron in one selection, as sampled softmax's correction needs it:
//  - forced ids (labels): 1;
//  - uniform padding: m ids are chosen before padding and `need` more are drawn uniformly without
//    replacement from the n - m others, so each of those is included with probability
//    r = need / (n - m), exactly (given what was retrieved);
//  - weighted padding (padding_sampler): draws by weight until `need` new ids are found, T draws
//    in all; id i (one-draw probability p_i) is included with probability r_i ~ 1 - (1 - p_i)^T,
//    the expected-count approximation TensorFlow's unique candidate samplers report;
//  - a retrieved neuron found in c of the L tables: each table's bucket holds it with some
//    probability p (its collision probability times the bucket's keep rate under the capacity);
//    c / L is the unbiased estimate of p from this query's L independent tables, so the union of
//    the L buckets holds it with probability 1 - (1 - c/L)^L, estimated. (It is an estimate
//    conditioned on having been found, so biased up for rarely found neurons: their correction
//    is smaller than the exact one.) When the union exceeds max_active, a uniform `room` of its
//    `cand` neurons are kept: times room / cand. Had it not been retrieved, padding would have
//    included it with probability r, so q = q_lsh + (1 - q_lsh) r.
float inclusion_log_q_retrieved(int count, int L, double keep, double r);

class ActiveSetSelector {
 public:
  // Throws std::invalid_argument for n_neurons < 1, negative budgets, min_active > max_active
  // (when max_active > 0), threshold < 1, TopK or Rerank without max_active, a rerank_pool
  // that is negative or below max_active, or a max_retrieved that is negative, above max_active
  // or set for Random selection.
  ActiveSetSelector(int n_neurons, SelectionConfig cfg, uint64_t seed);

  // out = forced ids first (deduplicated, in the given order; ids outside [0, n_neurons) throw
  // std::out_of_range), then selected neurons; never duplicates. Total size is
  // max(n_forced_unique, min(selected, max_active)) padded to min(min_active, n_neurons), where at
  // most max_retrieved (when > 0) of the selected come from the tables.
  // buckets_L has tables.L() entries.
  // With pad = false the result stops before the random padding (what the tables retrieved).
  // With log_q given, log_q[p] is the log of out[p]'s inclusion probability (see inclusion_log_q;
  // forced ids: 0), for sampled softmax's logit correction. Vanilla and Random selection only.
  // Rerank: `out` is the pool to score (forced ids, then the retrieved ones), never padded; pass
  // it with its exact scores to keep_best.
  void select(const HashTables& tables, const uint32_t* buckets_L, const int32_t* forced,
              int n_forced, std::vector<int32_t>& out, bool pad = true, std::vector<float>* log_q = nullptr);
  // Rerank, after select(): val[p] is out[p]'s exact score. Keeps the forced ids and the
  // min(max_active - forced, max_retrieved) retrieved neurons of highest score (ties: the earlier in `out`, i.e. in
  // more tables), in their order in `out`, compacting out and val alike; then with pad, appends
  // random padding as select() would (val is not extended: the caller scores out[val.size()..)).
  void keep_best(std::vector<int32_t>& out, std::vector<float>& val, bool pad = true);
  // Selection without tables (SelectionKind::Random): forced ids, then uniform random padding.
  void select_random(const int32_t* forced, int n_forced, std::vector<int32_t>& out,
                     std::vector<float>* log_q = nullptr);

  // Where the last selection's neurons came from: forced (labels), tables, random padding.
  struct Composition {
    int forced = 0, retrieved = 0, padded = 0;
  };
  const Composition& last() const { return last_; }
  // Weighted padding: the draws the last padding took (what its inclusion probabilities use).
  size_t last_pad_draws() const { return pad_draws_; }

  int n_neurons() const { return n_; }
  const SelectionConfig& config() const { return cfg_; }
  void reseed(uint64_t seed) { rng_.reseed(seed); }

 private:
  void pad_random(std::vector<int32_t>& out, size_t target);
  void pad_weighted(std::vector<int32_t>& out, size_t target);
  // Appends draw_one() ids not in out yet until out has `target` ids or max_draws draws were
  // made; returns the draws made.
  template <typename Draw>
  size_t draw_distinct(std::vector<int32_t>& out, size_t target, size_t max_draws, Draw draw_one);
  // Probability that the last padding included `id` (r or r_i above; 0 when it drew nothing).
  double padding_inclusion(int32_t id, size_t n_pad, size_t n_before_pad) const;
  bool below_pad_limit(size_t chosen) const {
    return cfg_.pad_below == 0 || chosen < static_cast<size_t>(cfg_.pad_below);
  }
  size_t retrieved_cap() const {
    return cfg_.max_retrieved > 0 ? static_cast<size_t>(cfg_.max_retrieved) : SIZE_MAX;
  }
  // log_q for out[first..) (retrieved with their table counts, then padding); see select().
  void fill_log_q(const std::vector<int32_t>& out, size_t n_before_pad, size_t n_cand, size_t room, int L,
                  std::vector<float>& log_q) const;
  // Appends the `room` candidates of cand_ present in most buckets (ties: first retrieved).
  void keep_most_found(std::vector<int32_t>& out, size_t room, int L);
  void add_forced(const int32_t* forced, int n_forced, std::vector<int32_t>& out);

  int n_;
  SelectionConfig cfg_;
  Rng rng_;
  std::vector<uint32_t> count_;     // per neuron: tables it was found in; kMark bit = already in out
  std::vector<int32_t> touched_;    // neurons with non-zero count_, for the reset
  std::vector<int32_t> retrieved_;  // scratch: the L buckets' items, in table order
  std::vector<int32_t> cand_;       // scratch: retrieved, not forced
  std::vector<uint32_t> hist_;      // TopK, Rerank: count histogram, L+1 entries
  std::vector<int32_t> order_;      // Rerank: positions of out, ranked by score
  Composition last_;
  size_t pad_draws_ = 0;  // weighted padding: draws the last padding took (T above)
};

}  // namespace slide
