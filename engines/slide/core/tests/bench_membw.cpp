// Timing program (not a test): the memory bandwidth this machine gives the SLIDE engine's access
// patterns, to set against the traffic its kernels imply per sample (engines/slide/README.md,
// "Memory traffic").
//
// usage: bench_membw [threads=2] [mib=1024] [reps=5]
//
// Patterns, each over a buffer of `mib` MiB (far larger than the caches), split over the threads:
//   read     sequential sum                                   (bytes read)
//   copy     sequential a -> b                                (bytes read + bytes written)
//   rows-r   random 512-byte rows, read (forward pass)        (bytes read)
//   rows-rw  random 1536-byte rows, read and written (Adam on one [w | m | v] row)  (read + written)
//   sorted-rw  the same, but 31.6% of the rows visited once each in ascending order: phase 2 of a
//            batch at Amazon-670K width, min_active 2000 (1 - e^(-128 x 2000 / 670,091) of the
//            rows are touched; each thread sweeps its own rows in order)   (read + written)
// The row patterns prefetch a few rows ahead like the engine does. Prints the median over `reps`.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "aligned_buffer.h"
#include "rng.h"

using namespace slide;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <typename Body>
double median_gbs(int reps, double bytes, Body&& body) {
  std::vector<double> gbs;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    body();
    gbs.push_back(bytes / seconds_since(t0) / 1e9);
  }
  std::sort(gbs.begin(), gbs.end());
  return gbs[gbs.size() / 2];
}

inline void prefetch_span(const float* p, size_t floats) {
  for (size_t i = 0; i < floats; i += 16) __builtin_prefetch(p + i);
}

// Sum of p[0..n), n a multiple of 16, with 16 independent accumulators: the compiler vectorises
// it, so the loop is limited by memory rather than by the latency of one chain of additions.
inline float sum16(const float* p, size_t n) {
  float acc[16] = {};
  for (size_t i = 0; i < n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
  float s = 0.0f;
  for (float v : acc) s += v;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::stoi(argv[1]) : 2;
  const size_t mib = argc > 2 ? std::stoul(argv[2]) : 1024;
  const int reps = argc > 3 ? std::stoi(argv[3]) : 5;
  const size_t n = mib * (size_t{1} << 20) / sizeof(float);
  AlignedBuffer<float> a(n), b(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) a[i] = b[i] = 1.0f;  // fault the pages in
  volatile float sink = 0.0f;

  const double read = median_gbs(reps, 4.0 * n, [&] {
    const int64_t blocks = static_cast<int64_t>(n / 4096);
    float total = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
    for (int64_t k = 0; k < blocks; ++k) total += sum16(a.data() + k * 4096, 4096);
    sink = total;
  });
  const double copy = median_gbs(reps, 8.0 * n, [&] {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) b[i] = a[i];
  });

  // Random rows: as many visits as the buffer holds rows / 4, in a fixed random order; sorted:
  // draws for 38% of the rows, deduplicated and ascending (a 31.6% subset).
  auto random_rows = [&](size_t row_floats, bool write, int ahead, bool sorted = false) {
    const size_t rows = n / row_floats;
    std::vector<uint32_t> order(sorted ? rows * 38 / 100 : rows / 4);
    Rng rng(7);
    for (auto& r : order) r = rng.below(static_cast<uint32_t>(rows));
    if (sorted) {
      std::sort(order.begin(), order.end());
      order.erase(std::unique(order.begin(), order.end()), order.end());
    }
    const size_t visits = order.size();
    const double bytes = (write ? 2.0 : 1.0) * 4.0 * static_cast<double>(row_floats * visits);
    return median_gbs(reps, bytes, [&] {
      float total = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
      for (int64_t v = 0; v < static_cast<int64_t>(visits); ++v) {
        if (v + ahead < static_cast<int64_t>(visits)) prefetch_span(a.data() + order[v + ahead] * row_floats, row_floats);
        float* row = a.data() + order[v] * row_floats;
        if (write) {
          for (size_t i = 0; i < row_floats; ++i) row[i] = row[i] * 0.5f + 0.5f;  // stays 1.0
        } else {
          total += sum16(row, row_floats);
        }
      }
      sink = total;
    });
  };
  const double rows_r = random_rows(128, false, 4);
  const double rows_rw = random_rows(384, true, 8);
  const double sorted_rw = random_rows(384, true, 8, true);

  std::printf("memory bandwidth, %d thread(s), %zu MiB buffers, median of %d (GB/s = 1e9 bytes/s)\n", threads, mib,
              reps);
  std::printf("  read %.1f  copy %.1f  rows-r(512 B) %.1f  rows-rw(1536 B) %.1f  sorted-rw(1536 B) %.1f\n", read,
              copy, rows_r, rows_rw, sorted_rw);
  return sink == 12345.0f ? 1 : 0;
}
