#pragma once
// Bounded top-k selection of (score, id) pairs: best = higher score, ties to the lower id, NaN
// ranked below everything, so results are deterministic whatever the visiting order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace slide {

using Scored = std::pair<float, int32_t>;

inline bool better(const Scored& a, const Scored& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

class TopK {
 public:
  void reset(int k) {
    k_ = k;
    heap_.clear();
  }
  // The heap's front is the worst kept entry (min-heap under `better`).
  void push(float score, int32_t id) {
    if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
    const Scored e{score, id};
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back(e);
      std::push_heap(heap_.begin(), heap_.end(), better);
    } else if (k_ > 0 && better(e, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = e;
      std::push_heap(heap_.begin(), heap_.end(), better);
    }
  }
  int size() const { return static_cast<int>(heap_.size()); }
  // Kept entries best first (destroys the heap order).
  const std::vector<Scored>& sorted() {
    std::sort(heap_.begin(), heap_.end(), better);
    return heap_;
  }

 private:
  int k_ = 0;
  std::vector<Scored> heap_;
};

}  // namespace slide
