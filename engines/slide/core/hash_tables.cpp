// Fixed-capacity LSH buckets with FIFO or reservoir replacement. See hash_tables.h.
#include "hash_tables.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "omp_errors.h"

namespace slide {

Insertion parse_insertion(const std::string& name) {
  std::string n = name;
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "fifo") return Insertion::FIFO;
  if (n == "reservoir") return Insertion::Reservoir;
  throw std::invalid_argument("unknown insertion policy '" + name + "' (expected fifo or reservoir)");
}

size_t HashTables::bytes_for(int L, int bucket_bits, int capacity) {
  return static_cast<size_t>(L) * (size_t{1} << bucket_bits) * (static_cast<size_t>(capacity) + 1) * 4;
}

HashTables::HashTables(int L, int bucket_bits, int capacity, Insertion policy, uint64_t seed)
    : L_(L), bucket_bits_(bucket_bits), capacity_(capacity), policy_(policy), seed_(seed),
      rng_(derive_seed(seed, 0x1125u)) {
  if (L < 1) throw std::invalid_argument("HashTables: L must be >= 1, got " + std::to_string(L));
  if (bucket_bits < 1 || bucket_bits > 24)
    throw std::invalid_argument("HashTables: bucket_bits must be in 1..24, got " + std::to_string(bucket_bits));
  if (capacity < 1) throw std::invalid_argument("HashTables: capacity must be >= 1, got " + std::to_string(capacity));
  const size_t bytes = bytes_for(L, bucket_bits, capacity);
  if (bytes > (size_t{1} << 40))
    throw std::invalid_argument("HashTables: L*2^bucket_bits*(capacity+1)*4 = " + std::to_string(bytes) +
                                " bytes is too large; reduce L, bucket_bits or capacity");
  items_.resize(static_cast<size_t>(L) * num_buckets() * capacity);  // zeroed
  offered_.resize(static_cast<size_t>(L) * num_buckets());
}

void HashTables::clear() { std::fill(offered_.data(), offered_.data() + offered_.size(), 0u); }

inline void HashTables::offer(size_t slot, uint32_t id, Rng& rng) {
  uint32_t& n = offered_[slot];
  uint32_t* items = items_.data() + slot * capacity_;
  const uint32_t cap = static_cast<uint32_t>(capacity_);
  if (n == UINT32_MAX) return;  // saturated: 4 billion offers to one bucket, keep what is there
  const uint32_t seen = n++;    // items offered before this one
  if (seen < cap) {
    items[seen] = id;
  } else if (policy_ == Insertion::FIFO) {
    items[seen % cap] = id;  // ring: the slot of the oldest item
  } else {
    // Reservoir (Algorithm R): the (seen+1)-th item replaces a uniform slot with probability
    // cap/(seen+1); by induction each of n offered items is held with probability cap/n.
    const uint32_t r = rng.below(seen + 1);
    if (r < cap) items[r] = id;
  }
}

void HashTables::insert(uint32_t id, const uint32_t* buckets_L) {
  for (int t = 0; t < L_; ++t) {
    if (buckets_L[t] >= num_buckets())
      throw std::out_of_range("HashTables::insert: bucket " + std::to_string(buckets_L[t]) + " of table " +
                              std::to_string(t) + " >= " + std::to_string(num_buckets()));
    offer(static_cast<size_t>(t) * num_buckets() + buckets_L[t], id, rng_);
  }
}

void HashTables::build(const HashFamily& family, const float* rows, int n, size_t row_stride, int n_threads,
                       const float* bias, const float* bound) {
  if (family.L() != L_ || family.bucket_bits() != bucket_bits_)
    throw std::invalid_argument("HashTables::build: family has L=" + std::to_string(family.L()) +
                                ", bucket_bits=" + std::to_string(family.bucket_bits()) + " but tables have L=" +
                                std::to_string(L_) + ", bucket_bits=" + std::to_string(bucket_bits_));
  if (n < 0) throw std::invalid_argument("HashTables::build: n must be >= 0, got " + std::to_string(n));
  if (n > 0 && row_stride < static_cast<size_t>(family.dim()))
    throw std::invalid_argument("HashTables::build: row_stride " + std::to_string(row_stride) + " < dim " +
                                std::to_string(family.dim()));
  if (n_threads < 1) n_threads = 1;
  ++builds_;
  const size_t need = static_cast<size_t>(L_) * n;
  if (scratch_.size() < need) scratch_.resize(need);  // grows once (contents are rewritten); later rebuilds reuse it
  uint32_t* ids = scratch_.data();
  const int L = L_;
  const size_t nb = num_buckets();

  // Phase 1: hash every row (in blocks, so families can share work across rows); bucket ids are
  // stored table-major so phase 2 streams each table.
  constexpr int kBlock = 64;
  const int n_blocks = (n + kBlock - 1) / kBlock;
  // Allocations inside the regions (per-thread buffers, the families' thread-local scratch) may
  // throw std::bad_alloc: each is made inside errors.run, which carries the exception out of the
  // region (omp_errors.h). A failure in phase 1 is thrown before phase 2 touches any table, and
  // phase 2 allocates before it clears a table, so every table stays either rebuilt or as it was.
  OmpErrors errors;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<uint32_t> out;
#pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; ++blk) {
      errors.run([&] {
        if (out.empty()) out.resize(static_cast<size_t>(kBlock) * L);
        const int i0 = blk * kBlock, m = std::min(kBlock, n - i0);
        family.hash_keys_batch(rows + static_cast<size_t>(i0) * row_stride, bias != nullptr ? bias + i0 : nullptr,
                               bound != nullptr ? bound + i0 : nullptr, m, row_stride, out.data());
        for (int t = 0; t < L; ++t)
          for (int r = 0; r < m; ++r) ids[static_cast<size_t>(t) * n + i0 + r] = out[static_cast<size_t>(r) * L + t];
      });
    }
  }
  errors.rethrow();

  // Phase 2: each table is filled by one thread, ids in increasing order, with its own random
  // stream, so the tables do not depend on the thread count. Offering ids straight to their
  // buckets would miss the cache on every offer (a table is MBs); instead the table's (bucket, id)
  // pairs are first partitioned, stably, into chunks of buckets small enough for L2, then offered
  // chunk by chunk. Each bucket still sees its ids in increasing order, so FIFO contents equal
  // sequential insert().
  const size_t bucket_bytes = (static_cast<size_t>(capacity_) + 1) * 4;
  int chunk_shift = 0;  // buckets per chunk = 2^chunk_shift, about 256 KB of table per chunk
  while (chunk_shift < bucket_bits_ && (bucket_bytes << (chunk_shift + 1)) <= (size_t{1} << 18)) ++chunk_shift;
  const int n_chunks = 1 << (bucket_bits_ - chunk_shift);
  if (part_.size() < static_cast<size_t>(n_threads)) part_.resize(n_threads);
#pragma omp parallel num_threads(n_threads)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    std::vector<uint64_t>& pairs = part_[tid];
    std::vector<uint32_t> start;
    // Every thread sizes its buffers before taking tables, whether or not the dynamic schedule
    // then gives it any: the memory held does not depend on scheduling. (After a failed
    // allocation, errors.run skips the tables, and the error is rethrown below.)
    errors.run([&] {
      if (pairs.size() < static_cast<size_t>(n)) pairs.resize(n);  // grows once, reused by later builds
      start.resize(n_chunks + 1);
    });
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < L; ++t) {
      errors.run([&] {
        const size_t base = static_cast<size_t>(t) * nb;
        std::fill(offered_.data() + base, offered_.data() + base + nb, 0u);
        Rng rng(derive_seed(seed_, builds_, static_cast<uint64_t>(t)));
        const uint32_t* col = ids + static_cast<size_t>(t) * n;
        std::fill(start.begin(), start.end(), 0u);
        for (int i = 0; i < n; ++i) ++start[(col[i] >> chunk_shift) + 1];
        for (int c = 0; c < n_chunks; ++c) start[c + 1] += start[c];
        for (int i = 0; i < n; ++i)  // stable scatter: ids stay increasing within a chunk
          pairs[start[col[i] >> chunk_shift]++] = (static_cast<uint64_t>(col[i]) << 32) | static_cast<uint32_t>(i);
        // Now chunk c's pairs end at start[c]. Its items are overwritten from scratch (slots past a
        // bucket's count are never read), so clear them first: one sequential sweep brings the
        // chunk's lines into cache at streaming speed, where the offers' scattered stores would
        // each wait for a line of the old table (measured: the fill's share of a rebuild halved).
        const size_t chunk_items = (size_t{1} << chunk_shift) * capacity_;
        size_t k = 0;
        for (int c = 0; c < n_chunks; ++c) {
          std::memset(items_.data() + (base + (static_cast<size_t>(c) << chunk_shift)) * capacity_, 0,
                      chunk_items * sizeof(uint32_t));
          for (; k < start[c]; ++k) offer(base + (pairs[k] >> 32), static_cast<uint32_t>(pairs[k]), rng);
        }
      });
    }
  }
  errors.rethrow();
}

size_t HashTables::memory_bytes() const {
  size_t bytes = (items_.size() + offered_.size() + scratch_.size()) * sizeof(uint32_t);
  for (const auto& p : part_) bytes += p.capacity() * sizeof(uint64_t);
  return bytes;
}

}  // namespace slide
