// Timing program (not a test): full LSH rebuild of one output layer, e.g. Amazon-670K's
// 670,091 neurons x 128 dims. Prints the time of hashing alone and of full build() calls.
//
// usage: bench_rebuild [kind=dwta] [threads=2] [n=670091] [dim=128] [K=6] [L=50] [bucket_bits=18]
//                      [capacity=16] [reps=3]
// Table memory is L * 2^bucket_bits * (capacity+1) * 4 bytes (0.87 GB at the defaults).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "hash_family.h"
#include "active_set.h"
#include "hash_tables.h"
#include "rng.h"

using namespace slide;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  auto arg = [&](int i, const char* dflt) { return std::string(argc > i ? argv[i] : dflt); };
  HashConfig c;
  c.kind = parse_hash_kind(arg(1, "dwta"));
  const int threads = std::stoi(arg(2, "2"));
  const int n = std::stoi(arg(3, "670091"));
  c.dim = std::stoi(arg(4, "128"));
  c.K = std::stoi(arg(5, "6"));
  c.L = std::stoi(arg(6, "50"));
  c.bucket_bits = std::stoi(arg(7, "18"));
  const int capacity = std::stoi(arg(8, "16"));
  const int reps = std::stoi(arg(9, "3"));
  c.seed = 1;

  auto fam = HashFamily::create(c);
  std::vector<float> rows(static_cast<size_t>(n) * c.dim);
  Rng rng(2);
  for (auto& v : rows) v = 0.05f * rng.normal();
  HashTables tables(c.L, c.bucket_bits, capacity, Insertion::FIFO, 3);

  // Hashing alone, the same parallel split as build()'s first phase (blocks of 64 rows).
  auto t0 = Clock::now();
  const std::clock_t c0 = std::clock();
  const int n_blocks = (n + 63) / 64;
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint32_t> out(64 * static_cast<size_t>(c.L));
    uint64_t sink = 0;
#pragma omp for schedule(static)
    for (int b = 0; b < n_blocks; ++b) {
      const int m = std::min(64, n - b * 64);
      fam->hash_dense_batch(&rows[static_cast<size_t>(b) * 64 * c.dim], m, c.dim, out.data());
      sink += out[0];
    }
    if (sink == 42) std::printf(" ");
  }
  const double hash_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double hash_cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;

  // CPU seconds are reported too: on a shared, loaded machine wall time overstates the cost.
  std::vector<double> times, cpu;
  for (int r = 0; r < reps; ++r) {
    auto t1 = Clock::now();
    const std::clock_t c1 = std::clock();
    tables.build(*fam, rows.data(), n, c.dim, threads);
    times.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
    cpu.push_back(double(std::clock() - c1) / CLOCKS_PER_SEC);
  }
  std::sort(cpu.begin(), cpu.end());
  std::sort(times.begin(), times.end());
  size_t nonempty = 0;
  for (uint32_t b = 0; b < tables.num_buckets(); ++b) nonempty += tables.bucket(0, b).second > 0;
  std::printf("rebuild %s K=%d L=%d dim=%d n=%d bucket_bits=%d capacity=%d threads=%d\n", hash_kind_name(c.kind), c.K,
              c.L, c.dim, n, c.bucket_bits, capacity, threads);
  std::printf("  hash only: %.3f s wall, %.3f s CPU (all threads)\n", hash_s, hash_cpu);
  std::printf("  build(): min %.3f s, median %.3f s, max %.3f s over %d reps\n", times.front(), times[times.size() / 2],
              times.back(), reps);
  std::printf("  build() CPU (all threads): min %.3f s, median %.3f s\n", cpu.front(), cpu[cpu.size() / 2]);
  std::printf("  table memory %.1f MB (with scratch), family %.1f KB, table 0 non-empty buckets %zu\n",
              tables.memory_bytes() / 1e6, fam->memory_bytes() / 1e3, nonempty);

  // The per-sample hot path after a rebuild: hash one query, select its active set (vanilla, no
  // budget) on one thread.
  SelectionConfig sc;
  ActiveSetSelector sel(n, sc, 4);
  std::vector<uint32_t> qb(c.L);
  std::vector<int32_t> active;
  const int n_q = 2000;
  std::vector<float> q(c.dim);
  double t_hash = 0, t_sel = 0, total_active = 0;
  for (int i = 0; i < n_q; ++i) {
    for (auto& v : q) v = rng.normal();
    auto a = Clock::now();
    fam->hash_dense(q.data(), qb.data());
    auto b = Clock::now();
    sel.select(tables, qb.data(), nullptr, 0, active);
    auto e = Clock::now();
    t_hash += std::chrono::duration<double>(b - a).count();
    t_sel += std::chrono::duration<double>(e - b).count();
    total_active += active.size();
  }
  std::printf("  per query: hash %.2f us, select %.2f us, mean active %.0f neurons\n", t_hash / n_q * 1e6,
              t_sel / n_q * 1e6, total_active / n_q);
  return 0;
}
