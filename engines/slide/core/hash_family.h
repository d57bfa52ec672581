#pragma once
// LSH hash families for SLIDE: map a vector (dense or sparse) to one bucket id per hash table.
//
// One HashFamily object holds the functions of all L tables. Each table uses K raw codes
// (SimHash: sign bits; WTA/DWTA: arg-max positions inside a window; DOPH: min-hash offsets) that
// are combined into a bucket id in [0, 2^bucket_bits). When the K codes fit in bucket_bits they are
// concatenated exactly (no extra collisions; e.g. DWTA K=6, window 8 -> 18 bits); otherwise, and
// for DWTA/DOPH tuples holding a code borrowed by densification, they are mixed by a seeded hash
// and the top bucket_bits bits are kept.
//
// Inputs must be finite (NaN/inf are not meaningful to any family). The hot loops have a
// baseline and an AVX2+FMA version; the core's kernel selection (kernels.h) chooses between them,
// so SLIDE_KERNEL=scalar or select_kernels("scalar") makes hashing scalar too.
//
// All hashing methods are const and thread-safe (any scratch lives on the caller's stack or in
// thread_local storage), so many threads may hash with one family at once.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace slide {

// SimHashMips: SimHash after an asymmetric transform for maximum inner product search: keys (a
// layer's rows w with bias b) are hashed as [w, b, sqrt(M^2 - |w|^2 - b^2)] for a bound M on
// |[w, b]|, queries x as [x, 1, 0]. Every key then has norm M, and the angle between a query and a
// key falls as the logit w.x + b rises, so the neurons a softmax weighs most collide most often.
enum class HashKind { SimHash, WTA, DWTA, DOPH, SimHashMips };

// The instruction set the hashing loops run with now: "avx2" or "scalar" (it follows the core's
// kernel selection, kernels.h; the AVX-512 table hashes with the AVX2 loops).
const char* hash_kernel();

// Parse "simhash" | "wta" | "dwta" | "doph" | "simhash_mips" (case-insensitive); throws
// std::invalid_argument.
HashKind parse_hash_kind(const std::string& name);
const char* hash_kind_name(HashKind kind);

struct HashConfig {
  HashKind kind = HashKind::DWTA;
  int K = 6;                // codes per table, >= 1
  int L = 50;               // tables, >= 1
  int dim = 0;              // input dimension, >= 1
  int bucket_bits = 18;     // buckets per table = 2^bucket_bits, 1..24. Concatenated codes reach
                            // only 2^(K*code_bits) of them (SimHash K=6: 64), so pick K to match
  // family-specific
  float simhash_density = 1.0f / 3;  // SimHash: fraction of dims (with random sign) each bit sums, (0, 1]
  int wta_bin_size = 8;              // WTA/DWTA: window size, 2..256 and <= dim
  int doph_top_k = 0;                // DOPH: 0 = the set is the non-zero dims; t > 0 = the t largest values
  uint64_t seed = 0;
};

// Throws std::invalid_argument naming the offending field if cfg is unusable.
void validate(const HashConfig& cfg);

class HashFamily {
 public:
  virtual ~HashFamily() = default;

  // Validates cfg (see validate) and builds the family's random functions from cfg.seed.
  static std::unique_ptr<HashFamily> create(const HashConfig& cfg);

  const HashConfig& config() const { return cfg_; }
  int K() const { return cfg_.K; }
  int L() const { return cfg_.L; }
  int dim() const { return cfg_.dim; }
  int bucket_bits() const { return cfg_.bucket_bits; }
  uint32_t num_buckets() const { return 1u << cfg_.bucket_bits; }

  // Bucket id per table. x has dim() entries; out_L has L() entries.
  void hash_dense(const float* x, uint32_t* out_L) const;
  // Sparse input: nnz (index, value) pairs, indices in [0, dim()), any order, no duplicates
  // (an index outside [0, dim()) throws std::out_of_range). Gives the same buckets as hash_dense
  // on the equivalent dense vector (SimHash: exactly so when indices are ascending; otherwise
  // float summation order may flip a bit whose projection is within rounding of zero).
  void hash_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out_L) const;

  // Bucket ids of n dense rows (row i at rows + i*row_stride, dim() floats): out_nL[i*L() + t].
  // Same result as n calls of hash_dense; families override it to share work across rows
  // (HashTables::build uses it). Thread-safe like hash_dense.
  virtual void hash_dense_batch(const float* rows, int n, size_t row_stride, uint32_t* out_nL) const;

  // Whether keys (the rows put in the tables) and queries are hashed differently (SimHashMips).
  virtual bool asymmetric() const { return false; }
  // Bucket ids of n keys: rows as in hash_dense_batch, with their biases and, per key, a bound on
  // its |[row, bias]| (n entries each, or nullptr; asymmetric families need both). Symmetric
  // families hash the rows alone, as hash_dense_batch does.
  virtual void hash_keys_batch(const float* rows, const float* bias, const float* bound, int n, size_t row_stride,
                               uint32_t* out_nL) const {
    (void)bias;
    (void)bound;
    hash_dense_batch(rows, n, row_stride, out_nL);
  }

  // The K raw codes of every table before combination, table-major: out_KL[t*K + k].
  virtual void codes_dense(const float* x, uint32_t* out_KL) const = 0;
  virtual void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out_KL) const = 0;

  // Combine one table's K codes into its bucket id (exposed for tests and batch hashing).
  uint32_t combine(int table, const uint32_t* codes_K) const;
  // combine() for 8 rows at once from lane-interleaved codes, codes_T[(t*K + k)*8 + r], writing
  // out_nL[r*L + t] for r < m. Only when every code is native and the K codes concatenate into
  // the bucket id (combine's exact branch, the common case when hashing dense weight rows);
  // returns false, writing nothing, otherwise.
  bool combine_rows8(const uint32_t* codes_T, int m, uint32_t* out_nL) const;

  // Bytes held by the family's random functions.
  virtual size_t memory_bytes() const = 0;

 protected:
  explicit HashFamily(const HashConfig& cfg);
  // Bits a single raw code needs (codes lie in [0, 2^code_bits)); set by each family.
  // native_limit (DWTA/DOPH): codes below it are native, the rest borrowed by densification;
  // 0 = every code is native.
  void set_code_bits(int bits, uint32_t native_limit = 0);

  HashConfig cfg_;

 private:
  int code_bits_ = 32;
  int concat_bits_ = 32;            // bits per native code
  uint32_t native_limit_ = UINT32_MAX;
  bool concat_ = false;             // K*concat_bits <= bucket_bits: concatenate native codes exactly
  bool pack64_ = false;             // K*code_bits <= 64: pack, then one mix
  std::vector<uint64_t> table_salt_;  // per-table seed for the mixing hash
};

}  // namespace slide
