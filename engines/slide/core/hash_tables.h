#pragma once
// L hash tables of fixed-capacity buckets holding neuron ids.
//
// Storage is ONE flat uint32 array [L][2^bucket_bits][capacity] plus one uint32 per bucket counting
// the items ever offered to it, so memory is fixed at construction and reused by every rebuild.
// Memory is L * 2^bucket_bits * (capacity + 1) * 4 bytes: choose bucket_bits and capacity so that
// the neurons per bucket (n / 2^bucket_bits) is near capacity.
//
// Full buckets follow the insertion policy:
//   FIFO      - a ring: the newest item replaces the oldest.
//   Reservoir - reservoir sampling: after n offers each offered item is held with probability
//               capacity / n.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "aligned_buffer.h"
#include "hash_family.h"
#include "rng.h"

namespace slide {

enum class Insertion { FIFO, Reservoir };

// Parse "fifo" | "reservoir" (case-insensitive); throws std::invalid_argument.
Insertion parse_insertion(const std::string& name);

class HashTables {
 public:
  // Throws std::invalid_argument if L < 1, bucket_bits not in 1..24, capacity < 1, or the table
  // would exceed 2^40 bytes.
  HashTables(int L, int bucket_bits, int capacity, Insertion policy, uint64_t seed);

  static size_t bytes_for(int L, int bucket_bits, int capacity);

  int L() const { return L_; }
  int bucket_bits() const { return bucket_bits_; }
  uint32_t num_buckets() const { return 1u << bucket_bits_; }
  int capacity() const { return capacity_; }
  Insertion policy() const { return policy_; }

  // Empty every bucket (keeps the memory).
  void clear();

  // Offer one item to its bucket in each table (buckets_L[t] < num_buckets()). Not thread-safe.
  void insert(uint32_t id, const uint32_t* buckets_L);

  // clear(), then hash rows 0..n-1 (row i at rows + i*row_stride, family.dim() floats) and insert
  // id i into every table, in increasing id order. Hashing and insertion run on n_threads OpenMP
  // threads; the result does not depend on n_threads. The family must have the same L and
  // bucket_bits as the tables (else std::invalid_argument). Scratch memory is kept for reuse.
  // bias / bound: per row, its bias and a bound on its |[row, bias]|, for asymmetric families
  // (HashFamily::hash_keys_batch); ignored by the others.
  void build(const HashFamily& family, const float* rows, int n, size_t row_stride, int n_threads,
             const float* bias = nullptr, const float* bound = nullptr);

  // Items currently held by bucket b of table t: pointer and count (<= capacity). Reads may run
  // on many threads at once, but not concurrently with clear(), insert() or build().
  std::pair<const uint32_t*, int> bucket(int table, uint32_t b) const {
    const size_t slot = static_cast<size_t>(table) * num_buckets() + b;
    const uint32_t offered = offered_[slot];
    return {items_.data() + slot * capacity_,
            offered < static_cast<uint32_t>(capacity_) ? static_cast<int>(offered) : capacity_};
  }
  // Hint the cache to fetch bucket b of table t (count and first items): queries prefetch all L
  // buckets before reading any, so the L memory misses overlap instead of queueing.
  void prefetch(int table, uint32_t b) const {
    const size_t slot = static_cast<size_t>(table) * num_buckets() + b;
#if defined(__GNUC__)
    __builtin_prefetch(offered_.data() + slot);
    __builtin_prefetch(items_.data() + slot * capacity_);
#endif
  }
  // Items ever offered to a bucket since the last clear (saturates at 2^32-1).
  uint32_t offered(int table, uint32_t b) const {
    return offered_[static_cast<size_t>(table) * num_buckets() + b];
  }

  // Bytes of the tables plus rebuild scratch currently held.
  size_t memory_bytes() const;

 private:
  void offer(size_t slot, uint32_t id, Rng& rng);

  int L_, bucket_bits_, capacity_;
  Insertion policy_;
  uint64_t seed_;
  uint64_t builds_ = 0;                // rebuild counter: fresh reservoir randomness per build
  Rng rng_;                            // for single-item insert()
  // Hundreds of MB at 670K neurons, and a query reads 50 random buckets: AlignedBuffer puts
  // arrays of 8 MB or more on huge pages, so those reads stop missing the TLB.
  AlignedBuffer<uint32_t> items_;      // [L][buckets][capacity]
  AlignedBuffer<uint32_t> offered_;    // [L][buckets]
  AlignedBuffer<uint32_t> scratch_;    // build(): bucket ids, table-major [L][n]
  std::vector<std::vector<uint64_t>> part_;  // build(): per-thread (bucket, id) pairs of one table
};

}  // namespace slide
