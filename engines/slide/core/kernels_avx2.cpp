// AVX2 + FMA kernels. Compiled with -mavx2 -mfma for this file only; entered only after the
// dispatcher checked the CPU (kernels.cpp).
#include "bf16.h"
#include "kernels.h"

#if defined(SLIDE_HAVE_AVX2) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cmath>

namespace slide {
namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

float dot(const float* a, const float* b, int n) {
  // Four independent accumulators hide the FMA latency (a 128-wide row is exactly 4 x 4 x 8).
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float alpha, const float* x, float* y, int n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

float dot_gather(const float* w, const int32_t* idx, const float* val, int nnz) {
  __m256 s0 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= nnz; i += 8) {
    const __m256i ix = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
    s0 = _mm256_fmadd_ps(_mm256_i32gather_ps(w, ix, 4), _mm256_loadu_ps(val + i), s0);
  }
  float s = hsum(s0);
  for (; i < nnz; ++i) s += w[idx[i]] * val[i];
  return s;
}

void adam(float* w, float* m, float* v, const float* g, int n, const AdamScalars& s) {
  const __m256 b1 = _mm256_set1_ps(s.beta1), c1 = _mm256_set1_ps(1.0f - s.beta1);
  const __m256 b2 = _mm256_set1_ps(s.beta2), c2 = _mm256_set1_ps(1.0f - s.beta2);
  const __m256 lr = _mm256_set1_ps(s.lr), eps = _mm256_set1_ps(s.eps);
  const __m256 bc1 = _mm256_set1_ps(s.bc1), bc2 = _mm256_set1_ps(s.bc2);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gi));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, bc2)), eps);
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(mi, bc1)), den);
    _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), step));
  }
  for (; i < n; ++i) {
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * g[i];
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * g[i] * g[i];
    w[i] -= s.lr * (m[i] * s.bc1) / (std::sqrt(v[i] * s.bc2) + s.eps);
  }
}

void adam_zero_grad(float* w, float* m, float* v, int n, const AdamScalars& s) {
  const __m256 b1 = _mm256_set1_ps(s.beta1), b2 = _mm256_set1_ps(s.beta2);
  const __m256 lr = _mm256_set1_ps(s.lr), eps = _mm256_set1_ps(s.eps);
  const __m256 bc1 = _mm256_set1_ps(s.bc1), bc2 = _mm256_set1_ps(s.bc2);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 mi = _mm256_mul_ps(b1, _mm256_loadu_ps(m + i));
    const __m256 vi = _mm256_mul_ps(b2, _mm256_loadu_ps(v + i));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, bc2)), eps);
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(mi, bc1)), den);
    _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), step));
  }
  for (; i < n; ++i) {
    m[i] = s.beta1 * m[i];
    v[i] = s.beta2 * v[i];
    w[i] -= s.lr * (m[i] * s.bc1) / (std::sqrt(v[i] * s.bc2) + s.eps);
  }
}

// mix32 (bf16.h) on 8 lanes.
inline __m256i mix32x8(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846ca68bu)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

inline __m256 load_bf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Stochastic rounding of 8 floats with 16-bit noise per lane, stored as 8 BF16.
inline void store_bf16x8_sr(uint16_t* p, __m256 x, __m256i noise16) {
  const __m256i b = _mm256_srli_epi32(_mm256_add_epi32(_mm256_castps_si256(x), noise16), 16);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

// Inputs i..i+NH-1 against one 16-row tile (two registers): 2 x NH accumulators, each tile
// vector loaded once per k for NH inputs.
template <int NH>
inline void tiles_block(const float* tile, const float* h, int i, int dim, float* out, int out_pitch) {
  __m256 a[NH][2];
  for (int q = 0; q < NH; ++q) a[q][0] = a[q][1] = _mm256_setzero_ps();
  for (int k = 0; k < dim; ++k) {
    const __m256 x0 = _mm256_loadu_ps(tile + k * kTileRows), x1 = _mm256_loadu_ps(tile + k * kTileRows + 8);
    for (int q = 0; q < NH; ++q) {
      const __m256 hk = _mm256_set1_ps(h[static_cast<size_t>(i + q) * dim + k]);
      a[q][0] = _mm256_fmadd_ps(x0, hk, a[q][0]);
      a[q][1] = _mm256_fmadd_ps(x1, hk, a[q][1]);
    }
  }
  for (int q = 0; q < NH; ++q) {
    _mm256_storeu_ps(out + static_cast<size_t>(i + q) * out_pitch, a[q][0]);
    _mm256_storeu_ps(out + static_cast<size_t>(i + q) * out_pitch + 8, a[q][1]);
  }
}

void dot_tiles(const float* wt, int n_tiles, const float* h, int n_h, int dim, float* out, int out_pitch) {
  const size_t stride = static_cast<size_t>(dim) * kTileRows;
  for (int t = 0; t < n_tiles; ++t) {
    int i = 0;
    for (; i + 4 <= n_h; i += 4) tiles_block<4>(wt + t * stride, h, i, dim, out + t * kTileRows, out_pitch);
    for (; i < n_h; ++i) tiles_block<1>(wt + t * stride, h, i, dim, out + t * kTileRows, out_pitch);
  }
}

const KernelTable kTable{"avx2", dot, axpy, dot_gather, adam, adam_zero_grad, adam_bf16_avx2, dot_tiles};

}  // namespace

void adam_bf16_avx2(float* w, uint16_t* m, uint16_t* v, const float* g, int n, const AdamScalars& s, uint32_t seed) {
  const __m256 b1 = _mm256_set1_ps(s.beta1), c1 = _mm256_set1_ps(1.0f - s.beta1);
  const __m256 b2 = _mm256_set1_ps(s.beta2), c2 = _mm256_set1_ps(1.0f - s.beta2);
  const __m256 lr = _mm256_set1_ps(s.lr), eps = _mm256_set1_ps(s.eps);
  const __m256 bc1 = _mm256_set1_ps(s.bc1), bc2 = _mm256_set1_ps(s.bc2);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = g ? _mm256_loadu_ps(g + i) : _mm256_setzero_ps();
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, load_bf16x8(m + i)), _mm256_mul_ps(c1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, load_bf16x8(v + i)), _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
    const __m256i h = mix32x8(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(seed + static_cast<uint32_t>(i))), lanes));
    store_bf16x8_sr(m + i, mi, _mm256_and_si256(h, low16));
    store_bf16x8_sr(v + i, vi, _mm256_srli_epi32(h, 16));
    const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, bc2)), eps);
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(lr, _mm256_mul_ps(mi, bc1)), den);
    _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), step));
  }
  for (; i < n; ++i) adam_bf16_element(w[i], m[i], v[i], g ? g[i] : 0.0f, mix32(seed + static_cast<uint32_t>(i)), s);
}

const KernelTable* kernel_table_avx2() { return &kTable; }

}  // namespace slide
#else
namespace slide {
const KernelTable* kernel_table_avx2() { return nullptr; }
}  // namespace slide
#endif
