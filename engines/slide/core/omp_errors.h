#pragma once
// Carries exceptions out of OpenMP regions. An exception that leaves a parallel region (or a
// worksharing loop) calls std::terminate: under a memory limit a std::bad_alloc in one thread would
// abort the whole process instead of reaching Python as MemoryError. Every region wraps its work in
// run(), then calls rethrow() after the region; the first exception wins, the rest are dropped.
//
//   OmpErrors errors;
//   #pragma omp parallel for
//   for (int i = 0; i < n; ++i) errors.run([&] { work(i); });
//   errors.rethrow();
//
// Once something failed, later run() calls skip their work: the result is discarded anyway, and
// an allocation that failed once would most likely fail again in every remaining iteration.
#include <atomic>
#include <exception>

namespace slide {

class OmpErrors {
 public:
  template <typename F>
  void run(F&& f) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
#pragma omp critical(slide_omp_errors)
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr error_ = nullptr;
};

}  // namespace slide
