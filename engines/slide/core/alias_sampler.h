#pragma once
// Draws ids 0..n-1 with probability proportional to fixed positive weights in O(1) per draw
// (Walker's alias method). Used for frequency-drawn padding: the output layer's random negatives
// drawn by label frequency, as sampled softmax's unigram sampler draws them, instead of uniformly.
#include <cstdint>
#include <vector>

#include "rng.h"

namespace slide {

class AliasSampler {
 public:
  // Throws std::invalid_argument for no weights, more than INT32_MAX of them, or a weight that is
  // not finite and > 0 (every id must stay drawable, so that padding can always finish).
  explicit AliasSampler(const std::vector<double>& weights);

  int size() const { return static_cast<int>(prob_.size()); }
  // The probability of id in one draw: its weight over the sum.
  double prob(int id) const { return prob_[static_cast<size_t>(id)]; }

  uint32_t draw(Rng& rng) const {
    const uint32_t slot = rng.below(static_cast<uint32_t>(accept_.size()));
    const double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
    return u < accept_[slot] ? slot : alias_[slot];
  }

 private:
  std::vector<double> prob_;
  std::vector<double> accept_;   // per slot: keep the slot's own id with this probability ...
  std::vector<uint32_t> alias_;  // ... else take this one
};

}  // namespace slide
