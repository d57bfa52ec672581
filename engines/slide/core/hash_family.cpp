// LSH hash families: SimHash, WTA, DWTA, DOPH. See hash_family.h for the contract.
#include "hash_family.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "kernels.h"
#include "rng.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace slide {
namespace {

// Densification probes this many random bins before falling back to a linear scan; the attempt
// number is folded into the borrowed code so a borrowed code never equals a native one.
constexpr int kMaxProbes = 32;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int bits_for(uint64_t n_values) {  // bits to represent values 0..n_values-1
  int b = 0;
  while ((uint64_t{1} << b) < n_values) ++b;
  return std::max(b, 1);
}

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw std::invalid_argument("HashConfig." + field + ": " + why);
}

// Thread-local scratch so that const hashing methods stay thread-safe without locks.
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}
thread_local std::vector<uint32_t> tl_codes;
thread_local std::vector<uint32_t> tl_codes2;
thread_local std::vector<float> tl_floats;
thread_local std::vector<float> tl_dense;
thread_local std::vector<int32_t> tl_ints;

// ---------------------------------------------------------------------------------------------
// Bins cut from successive random permutations of the input dims: n_bins bins of `width` slots.
// Used by WTA/DWTA (windows) and DOPH (one-permutation min-hash bins).
struct BinLayout {
  int n_bins = 0, width = 0;
  std::vector<int32_t> slot_dim;   // [n_bins * width]: input dim of each slot, -1 = no dim
  std::vector<int32_t> dim_off;    // CSR by input dim: entries dim_off[d] .. dim_off[d+1]
  std::vector<uint32_t> dim_slot;  // global slot index (bin * width + position)

  // full_bins_only: drop the tail of a permutation that cannot fill a whole bin (WTA windows must
  // all have `width` candidates); otherwise the last bin of each permutation may be partial.
  void build(int dim, int bins, int w, bool full_bins_only, Rng& rng) {
    n_bins = bins;
    width = w;
    slot_dim.assign(static_cast<size_t>(bins) * w, -1);
    std::vector<int32_t> perm(dim);
    int bin = 0;
    while (bin < bins) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int i = dim - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<uint32_t>(i + 1))]);
      const int usable = full_bins_only ? (dim / w) * w : dim;
      for (int p = 0; p < usable && bin < bins; p += w, ++bin)
        for (int j = 0; j < w && p + j < usable; ++j) slot_dim[static_cast<size_t>(bin) * w + j] = perm[p + j];
    }
    dim_off.assign(dim + 1, 0);
    for (int32_t d : slot_dim)
      if (d >= 0) ++dim_off[d + 1];
    for (int d = 0; d < dim; ++d) dim_off[d + 1] += dim_off[d];
    dim_slot.assign(dim_off[dim], 0);
    std::vector<int32_t> fill(dim_off.begin(), dim_off.end() - 1);
    for (size_t s = 0; s < slot_dim.size(); ++s)
      if (slot_dim[s] >= 0) dim_slot[fill[slot_dim[s]]++] = static_cast<uint32_t>(s);
  }
  size_t bytes() const {
    return slot_dim.size() * 4 + dim_off.size() * 4 + dim_slot.size() * 4;
  }
};

// Hot loops of a rebuild (670K neurons x K*L codes). The library is built without -mavx2, so each
// loop exists as a baseline version and an AVX2+FMA version (function target attribute); use_avx2()
// picks one per call from the core's kernel selection (kernels.h), on CPUs with AVX2 and FMA.
constexpr uint32_t kEmptyCode = 0xFFFFFFFFu;

// Arg-max position per window for 8 windows at a time (lanes), windows given lane-interleaved:
// T[(g*w + j)*8 + lane] = input dim of slot j of window g*8+lane. Branch-free select, so random
// data costs no mispredictions; strict '>' keeps the first maximum. skip_zero (DWTA): zeros are
// absent and a window without a non-zero entry yields kEmptyCode.
inline void argmax_windows_base(const float* __restrict x, const int32_t* __restrict T, int groups, int w,
                                bool skip_zero, uint32_t* __restrict out) {
  for (int g = 0; g < groups; ++g) {
    float best[8];
    uint32_t pos[8];
    for (int l = 0; l < 8; ++l) {
      best[l] = -std::numeric_limits<float>::infinity();
      pos[l] = skip_zero ? kEmptyCode : 0u;
    }
    const int32_t* t = T + static_cast<size_t>(g) * w * 8;
    for (int j = 0; j < w; ++j, t += 8) {
      for (int l = 0; l < 8; ++l) {
        const float v = x[t[l]];
        const bool take = (v > best[l]) & (!skip_zero | (v != 0.f));
        best[l] = take ? v : best[l];
        pos[l] = take ? static_cast<uint32_t>(j) : pos[l];
      }
    }
    for (int l = 0; l < 8; ++l) out[g * 8 + l] = pos[l];
  }
}

// acc[0..n) = sum_d x[d] * W[d][0..n) with W rows of n (a multiple of 32) floats, in register
// blocks of 32 outputs so each W entry is loaded once and acc never round-trips to memory.
// Sparse form: rows idx[i] scaled by val[i].
inline void project_base(const int32_t* __restrict idx, const float* __restrict x, int m, const float* __restrict W,
                         int n, float* __restrict acc) {
  for (int j0 = 0; j0 < n; j0 += 32) {
    float a[32] = {};
    for (int i = 0; i < m; ++i) {
      const float xd = x[i];
      const float* wr = W + static_cast<size_t>(idx ? idx[i] : i) * n + j0;
      for (int jj = 0; jj < 32; ++jj) a[jj] += xd * wr[jj];
    }
    for (int jj = 0; jj < 32; ++jj) acc[j0 + jj] = a[jj];
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define SLIDE_LSH_HAVE_AVX2 1
__attribute__((target("avx2,fma"))) void argmax_windows_avx2(const float* __restrict x, const int32_t* __restrict T,
                                                             int groups, int w, bool skip_zero,
                                                             uint32_t* __restrict out) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 zero = _mm256_setzero_ps();
  const __m256 empty = _mm256_castsi256_ps(_mm256_set1_epi32(skip_zero ? -1 : 0));
  for (int g = 0; g < groups; ++g) {
    __m256 best = ninf, pos = empty;
    const int32_t* t = T + static_cast<size_t>(g) * w * 8;
    for (int j = 0; j < w; ++j, t += 8) {
      const __m256i id = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t));
      const __m256 v = _mm256_i32gather_ps(x, id, 4);
      __m256 take = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      if (skip_zero) take = _mm256_and_ps(take, _mm256_cmp_ps(v, zero, _CMP_NEQ_OQ));
      best = _mm256_blendv_ps(best, v, take);
      pos = _mm256_blendv_ps(pos, _mm256_castsi256_ps(_mm256_set1_epi32(j)), take);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * 8), _mm256_castps_si256(pos));
  }
}

__attribute__((target("avx2,fma"))) void project_avx2(const int32_t* __restrict idx, const float* __restrict x, int m,
                                                      const float* __restrict W, int n, float* __restrict acc) {
  for (int j0 = 0; j0 < n; j0 += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < m; ++i) {
      const __m256 xd = _mm256_set1_ps(x[i]);
      const float* wr = W + static_cast<size_t>(idx ? idx[i] : i) * n + j0;
      a0 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(wr), a0);
      a1 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(wr + 8), a1);
      a2 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(wr + 16), a2);
      a3 = _mm256_fmadd_ps(xd, _mm256_loadu_ps(wr + 24), a3);
    }
    _mm256_storeu_ps(acc + j0, a0);
    _mm256_storeu_ps(acc + j0 + 8, a1);
    _mm256_storeu_ps(acc + j0 + 16, a2);
    _mm256_storeu_ps(acc + j0 + 24, a3);
  }
}
#endif

// The same arg-max for 8 rows at once (lanes = rows): xT is the rows transposed, xT[d*8 + r], so
// each window slot is one contiguous 8-float load instead of a gather. Output outT[b*8 + r].
inline void argmax_rows8_base(const float* __restrict xT, const int32_t* __restrict slot_dim, int n_bins, int w,
                              bool skip_zero, uint32_t* __restrict outT) {
  for (int b = 0; b < n_bins; ++b) {
    float best[8];
    uint32_t pos[8];
    for (int l = 0; l < 8; ++l) {
      best[l] = -std::numeric_limits<float>::infinity();
      pos[l] = skip_zero ? kEmptyCode : 0u;
    }
    const int32_t* sd = slot_dim + static_cast<size_t>(b) * w;
    for (int j = 0; j < w; ++j) {
      const float* v = xT + static_cast<size_t>(sd[j]) * 8;
      for (int l = 0; l < 8; ++l) {
        const bool take = (v[l] > best[l]) & (!skip_zero | (v[l] != 0.f));
        best[l] = take ? v[l] : best[l];
        pos[l] = take ? static_cast<uint32_t>(j) : pos[l];
      }
    }
    for (int l = 0; l < 8; ++l) outT[static_cast<size_t>(b) * 8 + l] = pos[l];
  }
}

#ifdef SLIDE_LSH_HAVE_AVX2
__attribute__((target("avx2,fma"))) void argmax_rows8_avx2(const float* __restrict xT, const int32_t* __restrict slot_dim,
                                                           int n_bins, int w, bool skip_zero, uint32_t* __restrict outT) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 zero = _mm256_setzero_ps();
  const __m256 empty = _mm256_castsi256_ps(_mm256_set1_epi32(skip_zero ? -1 : 0));
  for (int b = 0; b < n_bins; ++b) {
    __m256 best = ninf, pos = empty;
    const int32_t* sd = slot_dim + static_cast<size_t>(b) * w;
    for (int j = 0; j < w; ++j) {
      const __m256 v = _mm256_loadu_ps(xT + static_cast<size_t>(sd[j]) * 8);
      __m256 take = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      if (skip_zero) take = _mm256_and_ps(take, _mm256_cmp_ps(v, zero, _CMP_NEQ_OQ));
      best = _mm256_blendv_ps(best, v, take);
      pos = _mm256_blendv_ps(pos, _mm256_castsi256_ps(_mm256_set1_epi32(j)), take);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(outT + static_cast<size_t>(b) * 8), _mm256_castps_si256(pos));
  }
}
#endif

// SimHash bits of 8 rows at once from per-bit sign lists: bit j reads entries off[j]..off[j+1]-1,
// each an offset dim*8 into xT (ascending dim) and a sign +-1, and sums sign*xT[dim*8 + r]. In
// IEEE arithmetic this is exactly the single-row FMA path (x*(+-1) is exact, x*0 adds zero), so
// batch == single bitwise.
inline void signsum_rows8_base(const float* __restrict xT, const int32_t* __restrict off,
                               const int32_t* __restrict at, const float* __restrict sg, int n_bits,
                               uint32_t* __restrict outT) {
  for (int j = 0; j < n_bits; ++j) {
    float a[8] = {};
    for (int e = off[j]; e < off[j + 1]; ++e) {
      const float* v = xT + at[e];
      for (int l = 0; l < 8; ++l) a[l] += sg[e] * v[l];
    }
    for (int l = 0; l < 8; ++l) outT[static_cast<size_t>(j) * 8 + l] = a[l] > 0.f;
  }
}

#ifdef SLIDE_LSH_HAVE_AVX2
__attribute__((target("avx2,fma"))) void signsum_rows8_avx2(const float* __restrict xT, const int32_t* __restrict off,
                                                            const int32_t* __restrict at, const float* __restrict sg,
                                                            int n_bits, uint32_t* __restrict outT) {
  // fma(v, +-1, a) == a +- v exactly. Four bits advance in lockstep so four independent chains
  // hide the FMA latency; each bit's own summation order is unchanged.
  const __m256 zero = _mm256_setzero_ps();
  const __m256i one = _mm256_set1_epi32(1);
#define SLIDE_ACC(a, e) a = _mm256_fmadd_ps(_mm256_loadu_ps(xT + at[e]), _mm256_broadcast_ss(sg + (e)), a)
#define SLIDE_STORE(j, a)                                                              \
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(outT + static_cast<size_t>(j) * 8), \
                      _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps((a), zero, _CMP_GT_OQ)), one))
  int j = 0;
  for (; j + 4 <= n_bits; j += 4) {
    __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    const int e0 = off[j], e1 = off[j + 1], e2 = off[j + 2], e3 = off[j + 3], f3 = off[j + 4];
    const int common = std::min(std::min(e1 - e0, e2 - e1), std::min(e3 - e2, f3 - e3));
    for (int k = 0; k < common; ++k) {
      SLIDE_ACC(a0, e0 + k);
      SLIDE_ACC(a1, e1 + k);
      SLIDE_ACC(a2, e2 + k);
      SLIDE_ACC(a3, e3 + k);
    }
    for (int e = e0 + common; e < e1; ++e) SLIDE_ACC(a0, e);
    for (int e = e1 + common; e < e2; ++e) SLIDE_ACC(a1, e);
    for (int e = e2 + common; e < e3; ++e) SLIDE_ACC(a2, e);
    for (int e = e3 + common; e < f3; ++e) SLIDE_ACC(a3, e);
    SLIDE_STORE(j, a0);
    SLIDE_STORE(j + 1, a1);
    SLIDE_STORE(j + 2, a2);
    SLIDE_STORE(j + 3, a3);
  }
  for (; j < n_bits; ++j) {
    __m256 a = zero;
    for (int e = off[j]; e < off[j + 1]; ++e) SLIDE_ACC(a, e);
    SLIDE_STORE(j, a);
  }
#undef SLIDE_ACC
#undef SLIDE_STORE
}
#endif

// The hashing loops follow the core's kernel selection (kernels.h: SLIDE_KERNEL, select_kernels),
// so choosing the scalar kernels makes hashing scalar too. The AVX-512 table hashes with the AVX2
// loops (there are no AVX-512 hashing loops).
bool use_avx2() {
#ifdef SLIDE_LSH_HAVE_AVX2
  static const bool cpu = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return cpu && std::strcmp(kernels().name, "scalar") != 0;
#else
  return false;
#endif
}

}  // namespace

const char* hash_kernel() { return use_avx2() ? "avx2" : "scalar"; }

namespace {

void argmax_windows(const float* x, const int32_t* T, int groups, int w, bool skip_zero, uint32_t* out) {
#ifdef SLIDE_LSH_HAVE_AVX2
  if (use_avx2()) return argmax_windows_avx2(x, T, groups, w, skip_zero, out);
#endif
  argmax_windows_base(x, T, groups, w, skip_zero, out);
}

void argmax_rows8(const float* xT, const int32_t* slot_dim, int n_bins, int w, bool skip_zero, uint32_t* outT) {
#ifdef SLIDE_LSH_HAVE_AVX2
  if (use_avx2()) return argmax_rows8_avx2(xT, slot_dim, n_bins, w, skip_zero, outT);
#endif
  argmax_rows8_base(xT, slot_dim, n_bins, w, skip_zero, outT);
}

// The largest of n codes, n a multiple of 8 (a rebuild asks this of every 8 rows' codes).
#ifdef SLIDE_LSH_HAVE_AVX2
__attribute__((target("avx2"))) uint32_t max_code_avx2(const uint32_t* codes, size_t n) {
  __m256i top = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 8)
    top = _mm256_max_epu32(top, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i)));
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), top);
  return *std::max_element(lanes, lanes + 8);
}
#endif

uint32_t max_code(const uint32_t* codes, size_t n) {
#ifdef SLIDE_LSH_HAVE_AVX2
  if (use_avx2()) return max_code_avx2(codes, n);
#endif
  return *std::max_element(codes, codes + n);
}

void signsum_rows8(const float* xT, const int32_t* off, const int32_t* at, const float* sg, int n_bits,
                   uint32_t* outT) {
#ifdef SLIDE_LSH_HAVE_AVX2
  if (use_avx2()) return signsum_rows8_avx2(xT, off, at, sg, n_bits, outT);
#endif
  signsum_rows8_base(xT, off, at, sg, n_bits, outT);
}

void project(const int32_t* idx, const float* x, int m, const float* W, int n, float* acc) {
#ifdef SLIDE_LSH_HAVE_AVX2
  if (use_avx2()) return project_avx2(idx, x, m, W, n, acc);
#endif
  project_base(idx, x, m, W, n, acc);
}

thread_local std::vector<float> tl_rowsT;
thread_local std::vector<uint32_t> tl_codesT;

// Up to 8 rows (m <= 8) transposed into thread-local xT[d*8 + r]; missing rows read as zero.
float* transpose_rows8(const float* rows, int m, size_t stride, int dim) {
  float* xT = scratch(tl_rowsT, static_cast<size_t>(dim) * 8);
  for (int r = 0; r < m; ++r) {
    const float* row = rows + r * stride;
    for (int d = 0; d < dim; ++d) xT[static_cast<size_t>(d) * 8 + r] = row[d];
  }
  for (int r = m; r < 8; ++r)
    for (int d = 0; d < dim; ++d) xT[static_cast<size_t>(d) * 8 + r] = 0.f;
  return xT;
}

// Raw window codes of up to 8 rows (m <= 8), lane-interleaved: returns codesT[b*8 + r]
// (thread-local; valid until the next call).
const uint32_t* window_codes_rows8T(const BinLayout& bins, int dim, const float* rows, int m, size_t stride,
                                    bool skip_zero) {
  float* xT = transpose_rows8(rows, m, stride, dim);
  uint32_t* outT = scratch(tl_codesT, static_cast<size_t>(bins.n_bins) * 8);
  argmax_rows8(xT, bins.slot_dim.data(), bins.n_bins, bins.width, skip_zero, outT);
  return outT;
}

// The same codes one row after another: codes[r*n_bins + b].
void unpack_rows8(const uint32_t* codesT, int n_bins, int m, uint32_t* codes) {
  for (int r = 0; r < m; ++r)
    for (int b = 0; b < n_bins; ++b) codes[static_cast<size_t>(r) * n_bins + b] = codesT[static_cast<size_t>(b) * 8 + r];
}

// Lane-interleaved copy of a BinLayout's windows for argmax_windows (padding lanes read dim 0;
// their results are discarded).
std::vector<int32_t> interleave(const BinLayout& b) {
  const int groups = (b.n_bins + 7) / 8, w = b.width;
  std::vector<int32_t> T(static_cast<size_t>(groups) * w * 8, 0);
  for (int bin = 0; bin < b.n_bins; ++bin)
    for (int j = 0; j < w; ++j) {
      const int32_t d = b.slot_dim[static_cast<size_t>(bin) * w + j];
      T[(static_cast<size_t>(bin / 8) * w + j) * 8 + bin % 8] = d < 0 ? 0 : d;
    }
  return T;
}

// Fill empty bins (code == kEmpty) by borrowing the code of the first non-empty bin on a fixed,
// data-independent probe sequence, adding width*attempt so that a borrowed code cannot match a
// native one. Two vectors then collide on bin b with probability equal to the collision rate of
// the first bin, in probe order, that is non-empty for either (optimal densification,
// Shrivastava 2017). A vector with no non-empty bin gets all_empty_code everywhere.
constexpr uint32_t kEmpty = std::numeric_limits<uint32_t>::max();
static_assert(kEmpty == kEmptyCode, "one empty marker");

class Densifier {
 public:
  void build(int n_bins, int width, uint64_t seed) {
    n_bins_ = n_bins;
    width_ = static_cast<uint32_t>(width);
    probe_.resize(static_cast<size_t>(n_bins) * kMaxProbes);
    for (int b = 0; b < n_bins; ++b)
      for (int a = 0; a < kMaxProbes; ++a)
        probe_[static_cast<size_t>(b) * kMaxProbes + a] =
            static_cast<uint32_t>(derive_seed(seed, static_cast<uint64_t>(b), static_cast<uint64_t>(a)) %
                                  static_cast<uint64_t>(n_bins));
  }
  // Codes < width are native; borrowed ones lie in [width, width*(kMaxProbes+2)).
  uint32_t code_range() const { return width_ * (kMaxProbes + 2) + 1; }
  uint32_t all_empty_code() const { return width_ * (kMaxProbes + 2); }

  void densify(uint32_t* codes) const {
    int n_empty = 0;
    for (int b = 0; b < n_bins_; ++b) n_empty += codes[b] == kEmpty;
    if (n_empty == 0) return;
    if (n_empty == n_bins_) {
      std::fill(codes, codes + n_bins_, all_empty_code());
      return;
    }
    // Borrow only from natively non-empty bins: read `codes` but never a bin filled in this pass.
    // Borrowed codes are >= width, native ones < width, so the test `< width_` tells them apart.
    for (int b = 0; b < n_bins_; ++b) {
      if (codes[b] != kEmpty) continue;
      const uint32_t* pr = &probe_[static_cast<size_t>(b) * kMaxProbes];
      uint32_t got = kEmpty;
      for (int a = 0; a < kMaxProbes; ++a) {
        const uint32_t c = codes[pr[a]];
        if (c < width_) {
          got = c + width_ * static_cast<uint32_t>(a + 1);
          break;
        }
      }
      if (got == kEmpty) {  // rare: scan forward for the next native bin
        for (int s = 1; s < n_bins_; ++s) {
          const uint32_t c = codes[(b + s) % n_bins_];
          if (c < width_) {
            got = c + width_ * static_cast<uint32_t>(kMaxProbes + 1);
            break;
          }
        }
      }
      codes[b] = got;
    }
  }
  size_t bytes() const { return probe_.size() * 4; }

 private:
  int n_bins_ = 0;
  uint32_t width_ = 1;
  std::vector<uint32_t> probe_;
};

// ---------------------------------------------------------------------------------------------
// SimHash: bit = sign(<w, x>) with w sparse, entries +-1 on a random ~density fraction of dims.
// Stored as a dense [dim][K*L] float matrix so hashing is a row-accumulation the compiler
// vectorises; zero inputs (ReLU outputs) are skipped.
class SimHash final : public HashFamily {
 public:
  explicit SimHash(const HashConfig& c)
      : HashFamily(c), n_(c.K * c.L), n_pad_((c.K * c.L + 31) / 32 * 32), w_(static_cast<size_t>(c.dim) * n_pad_, 0.f) {
    Rng rng(derive_seed(c.seed, 0x51u));
    for (int j = 0; j < n_; ++j) {
      int nz = 0;
      for (int d = 0; d < c.dim; ++d) {
        if (rng.uniform() < c.simhash_density) {
          w_[static_cast<size_t>(d) * n_pad_ + j] = (rng.next() >> 63) ? 1.f : -1.f;
          ++nz;
        }
      }
      if (nz == 0)  // a bit that reads no dim would be constant: give it one
        w_[static_cast<size_t>(rng.below(static_cast<uint32_t>(c.dim))) * n_pad_ + j] = (rng.next() >> 63) ? 1.f : -1.f;
    }
    // Sign lists per bit for the 8-row batch path, ascending dim (see signsum_rows8).
    off_.assign(n_ + 1, 0);
    for (int j = 0; j < n_; ++j) {
      for (int d = 0; d < c.dim; ++d) {
        const float wv = w_[static_cast<size_t>(d) * n_pad_ + j];
        if (wv != 0.f) {
          at_.push_back(d * 8);
          sg_.push_back(wv);
        }
      }
      off_[j + 1] = static_cast<int32_t>(at_.size());
    }
    set_code_bits(1);
  }
  void hash_dense_batch(const float* rows, int n, size_t stride, uint32_t* out) const override {
    const int dim = cfg_.dim;
    uint32_t* outT = scratch(tl_codesT, static_cast<size_t>(n_) * 8);
    uint32_t* codes = scratch(tl_codes, static_cast<size_t>(n_));
    for (int i0 = 0; i0 < n; i0 += 8) {
      const int m = std::min(8, n - i0);
      float* xT = transpose_rows8(rows + static_cast<size_t>(i0) * stride, m, stride, dim);
      signsum_rows8(xT, off_.data(), at_.data(), sg_.data(), n_, outT);
      for (int r = 0; r < m; ++r) {
        for (int j = 0; j < n_; ++j) codes[j] = outT[static_cast<size_t>(j) * 8 + r];
        for (int t = 0; t < cfg_.L; ++t) out[static_cast<size_t>(i0 + r) * cfg_.L + t] = combine(t, codes + t * cfg_.K);
      }
    }
  }
  void codes_dense(const float* x, uint32_t* out) const override {
    float* acc = scratch(tl_floats, static_cast<size_t>(n_pad_));
    project(nullptr, x, cfg_.dim, w_.data(), n_pad_, acc);
    for (int j = 0; j < n_; ++j) out[j] = acc[j] > 0.f;
  }
  void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out) const override {
    float* acc = scratch(tl_floats, static_cast<size_t>(n_pad_));
    project(idx, val, nnz, w_.data(), n_pad_, acc);
    for (int j = 0; j < n_; ++j) out[j] = acc[j] > 0.f;
  }
  size_t memory_bytes() const override { return (w_.size() + off_.size() + at_.size() + sg_.size()) * 4; }

 private:
  int n_, n_pad_;         // codes, and codes rounded up to the 32-wide register block
  std::vector<float> w_;  // [dim][n_pad] projection signs (0 = dim not read)
  std::vector<int32_t> off_;  // per bit: its entries in at_/sg_
  std::vector<int32_t> at_;   // dim * 8: the dim's offset in the 8-row transposed block
  std::vector<float> sg_;     // +-1
};

// ---------------------------------------------------------------------------------------------
// WTA: code = position of the maximum inside a window of wta_bin_size randomly permuted dims
// (first position wins ties). Sparse inputs are treated as dense with zeros.
class WTA final : public HashFamily {
 public:
  explicit WTA(const HashConfig& c) : HashFamily(c) {
    Rng rng(derive_seed(c.seed, 0x77u));
    bins_.build(c.dim, c.K * c.L, c.wta_bin_size, /*full_bins_only=*/true, rng);
    lanes_ = interleave(bins_);
    set_code_bits(bits_for(static_cast<uint64_t>(c.wta_bin_size)));
  }
  void codes_dense(const float* x, uint32_t* out) const override {
    const int groups = (bins_.n_bins + 7) / 8;
    uint32_t* pos = scratch(tl_codes2, static_cast<size_t>(groups) * 8);
    argmax_windows(x, lanes_.data(), groups, bins_.width, /*skip_zero=*/false, pos);
    std::copy(pos, pos + bins_.n_bins, out);
  }
  void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out) const override {
    // Scatter into a thread-local dense copy (kept all-zero between calls), hash, then zero only
    // what was written: O(nnz + K*L*w), with one O(dim) allocation per thread.
    float* x = scratch(tl_dense, static_cast<size_t>(cfg_.dim));
    for (int i = 0; i < nnz; ++i) x[idx[i]] = val[i];
    codes_dense(x, out);
    for (int i = 0; i < nnz; ++i) x[idx[i]] = 0.f;
  }
  void hash_dense_batch(const float* rows, int n, size_t stride, uint32_t* out) const override {
    const int nb = bins_.n_bins;
    uint32_t* codes = scratch(tl_codes, static_cast<size_t>(nb) * 8);
    for (int i0 = 0; i0 < n; i0 += 8) {
      const int m = std::min(8, n - i0);
      const uint32_t* codesT = window_codes_rows8T(bins_, cfg_.dim, rows + static_cast<size_t>(i0) * stride, m, stride, false);
      if (combine_rows8(codesT, m, out + static_cast<size_t>(i0) * cfg_.L)) continue;
      unpack_rows8(codesT, nb, m, codes);
      for (int r = 0; r < m; ++r)
        for (int t = 0; t < cfg_.L; ++t)
          out[static_cast<size_t>(i0 + r) * cfg_.L + t] = combine(t, codes + static_cast<size_t>(r) * nb + t * cfg_.K);
    }
  }
  size_t memory_bytes() const override { return bins_.bytes() + lanes_.size() * 4; }

 private:
  BinLayout bins_;
  std::vector<int32_t> lanes_;
};

// ---------------------------------------------------------------------------------------------
// DWTA: WTA where zero entries are absent; a window with no non-zero entry borrows a code
// through densification. Equals WTA on vectors without zeros.
class DWTA final : public HashFamily {
 public:
  explicit DWTA(const HashConfig& c) : HashFamily(c) {
    Rng rng(derive_seed(c.seed, 0xD7u));
    bins_.build(c.dim, c.K * c.L, c.wta_bin_size, /*full_bins_only=*/true, rng);
    dens_.build(c.K * c.L, c.wta_bin_size, derive_seed(c.seed, 0xDEu));
    lanes_ = interleave(bins_);
    set_code_bits(bits_for(dens_.code_range()), static_cast<uint32_t>(bins_.width));
  }
  // Inputs are assumed finite: -inf counts as absent, like zero.
  void codes_dense(const float* x, uint32_t* out) const override {
    const int groups = (bins_.n_bins + 7) / 8;
    uint32_t* pos = scratch(tl_codes2, static_cast<size_t>(groups) * 8);
    argmax_windows(x, lanes_.data(), groups, bins_.width, /*skip_zero=*/true, pos);
    std::copy(pos, pos + bins_.n_bins, out);
    dens_.densify(out);
  }
  void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out) const override {
    const int nb = bins_.n_bins;
    const uint32_t w = static_cast<uint32_t>(bins_.width);
    float* best = scratch(tl_floats, static_cast<size_t>(nb));
    std::fill(out, out + nb, kEmpty);
    for (int i = 0; i < nnz; ++i) {
      const float v = val[i];
      if (v == 0.f) continue;
      const int d = idx[i];
      for (int e = bins_.dim_off[d]; e < bins_.dim_off[d + 1]; ++e) {
        const uint32_t s = bins_.dim_slot[e];
        const uint32_t b = s / w, pos = s % w;
        // same winner as the dense scan: larger value, or equal value at an earlier position
        if (out[b] == kEmpty || v > best[b] || (v == best[b] && pos < out[b])) {
          best[b] = v;
          out[b] = pos;
        }
      }
    }
    dens_.densify(out);
  }
  void hash_dense_batch(const float* rows, int n, size_t stride, uint32_t* out) const override {
    const int nb = bins_.n_bins;
    uint32_t* codes = scratch(tl_codes, static_cast<size_t>(nb) * 8);
    for (int i0 = 0; i0 < n; i0 += 8) {
      const int m = std::min(8, n - i0);
      const uint32_t* codesT = window_codes_rows8T(bins_, cfg_.dim, rows + static_cast<size_t>(i0) * stride, m, stride, true);
      // No empty window (usual for weight rows) means nothing to densify: all codes are native.
      if (combine_rows8(codesT, m, out + static_cast<size_t>(i0) * cfg_.L)) continue;
      unpack_rows8(codesT, nb, m, codes);
      for (int r = 0; r < m; ++r) {
        uint32_t* c = codes + static_cast<size_t>(r) * nb;
        dens_.densify(c);
        for (int t = 0; t < cfg_.L; ++t) out[static_cast<size_t>(i0 + r) * cfg_.L + t] = combine(t, c + t * cfg_.K);
      }
    }
  }
  size_t memory_bytes() const override { return bins_.bytes() + dens_.bytes() + lanes_.size() * 4; }

 private:
  BinLayout bins_;
  Densifier dens_;
  std::vector<int32_t> lanes_;
};

// ---------------------------------------------------------------------------------------------
// Densified one-permutation MinHash over the set of non-zero dims (or the doph_top_k largest
// values). Each bin's code is the smallest in-bin offset of a set member, so two vectors agree
// on a bin exactly when they share its minimum; densified, P[agree] = Jaccard similarity.
class DOPH final : public HashFamily {
 public:
  explicit DOPH(const HashConfig& c) : HashFamily(c) {
    const int bins = c.K * c.L;
    // One permutation when the dims suffice for bins of >= 2 slots; otherwise several.
    const int w = std::max(2, c.dim / bins);
    Rng rng(derive_seed(c.seed, 0xD0u));
    bins_.build(c.dim, bins, w, /*full_bins_only=*/false, rng);
    dens_.build(bins, w, derive_seed(c.seed, 0xDFu));
    set_code_bits(bits_for(dens_.code_range()), static_cast<uint32_t>(bins_.width));
  }
  void codes_dense(const float* x, uint32_t* out) const override {
    int32_t* ids = scratch(tl_ints, static_cast<size_t>(cfg_.dim));
    int n = 0;
    for (int d = 0; d < cfg_.dim; ++d)
      if (x[d] != 0.f) ids[n++] = d;
    if (cfg_.doph_top_k > 0 && n > cfg_.doph_top_k) {
      // keep the top_k largest values; ties broken by lower dim so dense == sparse
      auto cmp = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
      std::nth_element(ids, ids + cfg_.doph_top_k, ids + n, cmp);
      n = cfg_.doph_top_k;
    }
    from_set(ids, n, out);
  }
  void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out) const override {
    int32_t* ord = scratch(tl_ints, static_cast<size_t>(nnz) * 2);
    int n = 0;
    for (int i = 0; i < nnz; ++i)
      if (val[i] != 0.f) ord[n++] = i;
    if (cfg_.doph_top_k > 0 && n > cfg_.doph_top_k) {
      auto cmp = [idx, val](int32_t a, int32_t b) {
        return val[a] > val[b] || (val[a] == val[b] && idx[a] < idx[b]);
      };
      std::nth_element(ord, ord + cfg_.doph_top_k, ord + n, cmp);
      n = cfg_.doph_top_k;
    }
    int32_t* ids = ord + nnz;
    for (int i = 0; i < n; ++i) ids[i] = idx[ord[i]];
    from_set(ids, n, out);
  }
  size_t memory_bytes() const override { return bins_.bytes() + dens_.bytes(); }

 private:
  void from_set(const int32_t* ids, int n, uint32_t* out) const {
    const uint32_t w = static_cast<uint32_t>(bins_.width);
    std::fill(out, out + bins_.n_bins, kEmpty);
    for (int i = 0; i < n; ++i) {
      const int d = ids[i];
      for (int e = bins_.dim_off[d]; e < bins_.dim_off[d + 1]; ++e) {
        const uint32_t s = bins_.dim_slot[e];
        const uint32_t b = s / w, pos = s % w;
        if (out[b] == kEmpty || pos < out[b]) out[b] = pos;
      }
    }
    dens_.densify(out);
  }
  BinLayout bins_;
  Densifier dens_;
};

// SimHash on the asymmetric transform (see HashKind::SimHashMips). The projections are +-1 signs,
// whose sums behave like Gaussian projections (the angle law 1 - theta/pi) only when no single
// coordinate dominates a vector; the bias and the completion coordinate can be the largest of a
// key, so each is spread over kSpread coordinates of value v / sqrt(kSpread): inner products and
// norms are unchanged, and every projection sums many small terms again.
constexpr int kSpread = 16;
constexpr float kSpreadScale = 0.25f;  // 1 / sqrt(kSpread)
thread_local std::vector<float> tl_mips_x;
thread_local std::vector<int32_t> tl_mips_idx;
thread_local std::vector<float> tl_mips_keys;

HashConfig widened(HashConfig c) {
  c.kind = HashKind::SimHash;
  c.dim += 2 * kSpread;
  return c;
}

class MipsSimHash final : public HashFamily {
 public:
  explicit MipsSimHash(const HashConfig& c) : HashFamily(c), inner_(widened(c)) { set_code_bits(1); }
  bool asymmetric() const override { return true; }
  void codes_dense(const float* x, uint32_t* out) const override {
    const int d = cfg_.dim;
    float* q = scratch(tl_mips_x, static_cast<size_t>(d) + 2 * kSpread);
    std::copy(x, x + d, q);
    std::fill(q + d, q + d + kSpread, kSpreadScale);           // the bias coordinate, 1
    std::fill(q + d + kSpread, q + d + 2 * kSpread, 0.0f);     // the completion coordinate, 0
    inner_.codes_dense(q, out);
  }
  void codes_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out) const override {
    int32_t* qi = scratch(tl_mips_idx, static_cast<size_t>(nnz) + kSpread);
    float* qv = scratch(tl_mips_x, static_cast<size_t>(nnz) + kSpread);
    std::copy(idx, idx + nnz, qi);
    std::copy(val, val + nnz, qv);
    for (int j = 0; j < kSpread; ++j) {
      qi[nnz + j] = cfg_.dim + j;
      qv[nnz + j] = kSpreadScale;
    }
    inner_.codes_sparse(qi, qv, nnz + kSpread, out);
  }
  void hash_keys_batch(const float* rows, const float* bias, const float* bound, int n, size_t row_stride,
                       uint32_t* out_nL) const override {
    if (bound == nullptr) throw std::invalid_argument("simhash_mips: keys need their norm bounds");
    const int d = cfg_.dim;
    const size_t w = static_cast<size_t>(d) + 2 * kSpread;
    float* keys = scratch(tl_mips_keys, w * static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      const double m2 = static_cast<double>(bound[i]) * bound[i];
      const float* r = rows + static_cast<size_t>(i) * row_stride;
      float* k = keys + w * static_cast<size_t>(i);
      double sq = 0.0;
      for (int j = 0; j < d; ++j) {
        k[j] = r[j];
        sq += static_cast<double>(r[j]) * r[j];
      }
      const float b = bias != nullptr ? bias[i] : 0.0f;
      sq += static_cast<double>(b) * b;
      // A bound a little low (rounding) must not make the root imaginary.
      const float c = static_cast<float>(std::sqrt(std::max(0.0, m2 - sq)));
      std::fill(k + d, k + d + kSpread, b * kSpreadScale);
      std::fill(k + d + kSpread, k + d + 2 * kSpread, c * kSpreadScale);
    }
    inner_.hash_dense_batch(keys, n, w, out_nL);
  }
  size_t memory_bytes() const override { return inner_.memory_bytes(); }

 private:
  SimHash inner_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
HashKind parse_hash_kind(const std::string& name) {
  const std::string n = lower(name);
  if (n == "simhash") return HashKind::SimHash;
  if (n == "wta") return HashKind::WTA;
  if (n == "dwta") return HashKind::DWTA;
  if (n == "doph") return HashKind::DOPH;
  if (n == "simhash_mips") return HashKind::SimHashMips;
  throw std::invalid_argument("unknown hash kind '" + name + "' (expected simhash, wta, dwta, doph or simhash_mips)");
}

const char* hash_kind_name(HashKind kind) {
  switch (kind) {
    case HashKind::SimHash: return "simhash";
    case HashKind::WTA: return "wta";
    case HashKind::DWTA: return "dwta";
    case HashKind::DOPH: return "doph";
    case HashKind::SimHashMips: return "simhash_mips";
  }
  return "?";
}

void validate(const HashConfig& c) {
  auto num = [](auto v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  if (c.K < 1) bad("K", "must be >= 1, got " + num(c.K));
  if (c.L < 1) bad("L", "must be >= 1, got " + num(c.L));
  if (c.dim < 1) bad("dim", "must be >= 1, got " + num(c.dim));
  if (c.bucket_bits < 1 || c.bucket_bits > 24) bad("bucket_bits", "must be in 1..24, got " + num(c.bucket_bits));
  if (static_cast<int64_t>(c.K) * c.L > (1 << 20))
    bad("K", "K*L = " + num(static_cast<int64_t>(c.K) * c.L) + " exceeds 2^20 codes");
  switch (c.kind) {
    case HashKind::SimHash:
    case HashKind::SimHashMips: {
      if (!(c.simhash_density > 0.f && c.simhash_density <= 1.f))
        bad("simhash_density", "must be in (0, 1], got " + num(c.simhash_density));
      const double bytes = 4.0 * c.dim * c.K * c.L;
      if (bytes > double(1u << 30))
        bad("dim", "SimHash projections need dim*K*L*4 = " + num(bytes) + " bytes (> 1 GiB); reduce dim, K or L");
      break;
    }
    case HashKind::WTA:
    case HashKind::DWTA:
      if (c.wta_bin_size < 2 || c.wta_bin_size > 256)
        bad("wta_bin_size", "must be in 2..256, got " + num(c.wta_bin_size));
      if (c.wta_bin_size > c.dim)
        bad("wta_bin_size", "must be <= dim (" + num(c.dim) + "), got " + num(c.wta_bin_size));
      break;
    case HashKind::DOPH:
      if (c.dim < 2) bad("dim", "DOPH needs dim >= 2, got " + num(c.dim));
      if (c.doph_top_k < 0 || c.doph_top_k > c.dim)
        bad("doph_top_k", "must be in 0..dim (" + num(c.dim) + "), got " + num(c.doph_top_k));
      break;
  }
}

HashFamily::HashFamily(const HashConfig& cfg) : cfg_(cfg) {
  table_salt_.resize(cfg.L);
  for (int t = 0; t < cfg.L; ++t) table_salt_[t] = derive_seed(cfg.seed, 0xB0C4u, static_cast<uint64_t>(t));
}

void HashFamily::set_code_bits(int bits, uint32_t native_limit) {
  code_bits_ = bits;
  native_limit_ = native_limit == 0 ? UINT32_MAX : native_limit;
  concat_bits_ = native_limit == 0 ? bits : bits_for(native_limit);
  concat_ = static_cast<int64_t>(concat_bits_) * cfg_.K <= cfg_.bucket_bits;
  pack64_ = static_cast<int64_t>(bits) * cfg_.K <= 64;
}

std::unique_ptr<HashFamily> HashFamily::create(const HashConfig& cfg) {
  validate(cfg);
  switch (cfg.kind) {
    case HashKind::SimHash: return std::unique_ptr<HashFamily>(new SimHash(cfg));
    case HashKind::WTA: return std::unique_ptr<HashFamily>(new WTA(cfg));
    case HashKind::DWTA: return std::unique_ptr<HashFamily>(new DWTA(cfg));
    case HashKind::DOPH: return std::unique_ptr<HashFamily>(new DOPH(cfg));
    case HashKind::SimHashMips: return std::unique_ptr<HashFamily>(new MipsSimHash(cfg));
  }
  throw std::invalid_argument("HashConfig.kind: unknown value");
}

bool HashFamily::combine_rows8(const uint32_t* codes_T, int m, uint32_t* out) const {
  if (!concat_) return false;
  const int K = cfg_.K, L = cfg_.L;
  const size_t n = static_cast<size_t>(K) * L * 8;
  // Any borrowed code among the m real lanes (padding lanes are ignored)? With all 8 lanes real
  // (every block but a layer's last) a vectorised max.
  uint32_t borrowed = 0;
  if (m == 8) {
    borrowed = max_code(codes_T, n) >= native_limit_;
  } else {
    for (size_t i = 0; i < n; ++i)
      borrowed |= static_cast<uint32_t>(codes_T[i] >= native_limit_) & static_cast<uint32_t>((i & 7) < static_cast<size_t>(m));
  }
  if (borrowed) return false;
  for (int t = 0; t < L; ++t) {
    uint32_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < K; ++k) {
      const uint32_t* c = codes_T + (static_cast<size_t>(t) * K + k) * 8;
      for (int r = 0; r < 8; ++r) b[r] = (b[r] << concat_bits_) | c[r];
    }
    for (int r = 0; r < m; ++r) out[static_cast<size_t>(r) * L + t] = b[r];
  }
  return true;
}

uint32_t HashFamily::combine(int table, const uint32_t* codes) const {
  const int K = cfg_.K;
  if (concat_) {
    // Exact concatenation of native codes: injective, so the buckets are used fully. (DWTA/DOPH
    // tuples holding a borrowed code are mixed below instead; they spread over all buckets.)
    uint32_t b = 0, all_native = 1;
    for (int k = 0; k < K; ++k) {
      b = (b << concat_bits_) | codes[k];
      all_native &= codes[k] < native_limit_;
    }
    if (all_native) return b;
  }
  uint64_t h;
  if (pack64_) {
    // The K codes fit in 64 bits: pack them (injective), then one seeded bijective mix
    // (splitmix64 finaliser); distinct K-tuples differ in h, and its top bits are well mixed.
    uint64_t p = 0;
    for (int k = 0; k < K; ++k) p = (p << code_bits_) | codes[k];
    h = p ^ table_salt_[table];
  } else {
    // Longer tuples: fold each code in with a multiply-xorshift step, seeded per table.
    h = table_salt_[table];
    for (int k = 0; k < K; ++k) {
      h = (h ^ codes[k]) * 0x9E3779B97F4A7C15ull;
      h ^= h >> 32;
    }
  }
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return static_cast<uint32_t>(h >> (64 - cfg_.bucket_bits));
}

void HashFamily::hash_dense(const float* x, uint32_t* out_L) const {
  const int K = cfg_.K;
  uint32_t* codes = scratch(tl_codes, static_cast<size_t>(K) * cfg_.L);
  codes_dense(x, codes);
  for (int t = 0; t < cfg_.L; ++t) out_L[t] = combine(t, codes + static_cast<size_t>(t) * K);
}

void HashFamily::hash_dense_batch(const float* rows, int n, size_t row_stride, uint32_t* out_nL) const {
  for (int i = 0; i < n; ++i) hash_dense(rows + static_cast<size_t>(i) * row_stride, out_nL + static_cast<size_t>(i) * cfg_.L);
}

void HashFamily::hash_sparse(const int32_t* idx, const float* val, int nnz, uint32_t* out_L) const {
  const int K = cfg_.K;
  for (int i = 0; i < nnz; ++i)
    if (idx[i] < 0 || idx[i] >= cfg_.dim)
      throw std::out_of_range("hash_sparse: index " + std::to_string(idx[i]) + " at position " +
                              std::to_string(i) + " outside [0, " + std::to_string(cfg_.dim) + ")");
  uint32_t* codes = scratch(tl_codes, static_cast<size_t>(K) * cfg_.L);
  codes_sparse(idx, val, nnz, codes);
  for (int t = 0; t < cfg_.L; ++t) out_L[t] = combine(t, codes + static_cast<size_t>(t) * K);
}

}  // namespace slide
