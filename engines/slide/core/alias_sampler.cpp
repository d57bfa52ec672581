// Walker's alias table, built with Vose's two-worklist method (numerically stable: each slot is
// finished exactly once, leftovers are set to 1).
#include "alias_sampler.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace slide {

AliasSampler::AliasSampler(const std::vector<double>& weights) {
  const size_t n = weights.size();
  if (n == 0) throw std::invalid_argument("AliasSampler: no weights");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument("AliasSampler: more than 2^31 - 1 weights");
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double w = weights[i];
    if (!(std::isfinite(w) && w > 0.0))
      throw std::invalid_argument("AliasSampler: weight " + std::to_string(i) + " is " + std::to_string(w) +
                                  "; every weight must be finite and > 0");
    sum += w;
  }
  if (!std::isfinite(sum)) throw std::invalid_argument("AliasSampler: the weights' sum overflows");
  prob_.resize(n);
  accept_.assign(n, 1.0);
  alias_.resize(n);
  std::vector<double> scaled(n);
  std::vector<uint32_t> small, large;
  for (size_t i = 0; i < n; ++i) {
    prob_[i] = weights[i] / sum;
    scaled[i] = prob_[i] * static_cast<double>(n);
    alias_[i] = static_cast<uint32_t>(i);
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back(), l = large.back();
    small.pop_back();
    accept_[s] = scaled[s];
    alias_[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // What is left holds (up to rounding) exactly one slot's mass: keep its own id.
  for (uint32_t i : small) accept_[i] = 1.0;
  for (uint32_t i : large) accept_[i] = 1.0;
}

}  // namespace slide
