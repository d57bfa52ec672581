// AVX-512F kernels. Compiled with -mavx512f (and friends) for this file only; entered only after
// the dispatcher checked the CPU (kernels.cpp). Remainders use masked loads, so no scalar tail.
#include "kernels.h"

#if defined(SLIDE_HAVE_AVX512) && defined(__AVX512F__)
#include <immintrin.h>

namespace slide {
namespace {

inline __mmask16 tail_mask(int r) { return static_cast<__mmask16>((1u << r) - 1u); }

float dot(const float* a, const float* b, int n) {
  // Four accumulators: a 128-wide row is 2 iterations of 4 x 16 lanes.
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

void axpy(float alpha, const float* x, float* y, int n) {
  const __m512 a = _mm512_set1_ps(alpha);
  int i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i)));
  }
}

float dot_gather(const float* w, const int32_t* idx, const float* val, int nnz) {
  __m512 s0 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= nnz; i += 16) {
    const __m512i ix = _mm512_loadu_si512(idx + i);
    s0 = _mm512_fmadd_ps(_mm512_i32gather_ps(ix, w, 4), _mm512_loadu_ps(val + i), s0);
  }
  if (i < nnz) {
    const __mmask16 k = tail_mask(nnz - i);
    const __m512i ix = _mm512_maskz_loadu_epi32(k, idx + i);
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, ix, w, 4);
    s0 = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(k, val + i), s0);
  }
  return _mm512_reduce_add_ps(s0);
}

template <bool kZeroGrad>
inline void adam_block(float* w, float* m, float* v, const float* g, int i, __mmask16 k, const AdamScalars& s) {
  const __m512 b1 = _mm512_set1_ps(s.beta1), c1 = _mm512_set1_ps(1.0f - s.beta1);
  const __m512 b2 = _mm512_set1_ps(s.beta2), c2 = _mm512_set1_ps(1.0f - s.beta2);
  __m512 mi = _mm512_mul_ps(b1, _mm512_maskz_loadu_ps(k, m + i));
  __m512 vi = _mm512_mul_ps(b2, _mm512_maskz_loadu_ps(k, v + i));
  if (!kZeroGrad) {
    const __m512 gi = _mm512_maskz_loadu_ps(k, g + i);
    mi = _mm512_add_ps(mi, _mm512_mul_ps(c1, gi));
    vi = _mm512_add_ps(vi, _mm512_mul_ps(_mm512_mul_ps(c2, gi), gi));
  }
  _mm512_mask_storeu_ps(m + i, k, mi);
  _mm512_mask_storeu_ps(v + i, k, vi);
  const __m512 den = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, _mm512_set1_ps(s.bc2))), _mm512_set1_ps(s.eps));
  const __m512 step = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(s.lr), _mm512_mul_ps(mi, _mm512_set1_ps(s.bc1))), den);
  _mm512_mask_storeu_ps(w + i, k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, w + i), step));
}

void adam(float* w, float* m, float* v, const float* g, int n, const AdamScalars& s) {
  int i = 0;
  for (; i + 16 <= n; i += 16) adam_block<false>(w, m, v, g, i, 0xFFFF, s);
  if (i < n) adam_block<false>(w, m, v, g, i, tail_mask(n - i), s);
}

void adam_zero_grad(float* w, float* m, float* v, int n, const AdamScalars& s) {
  int i = 0;
  for (; i + 16 <= n; i += 16) adam_block<true>(w, m, v, nullptr, i, 0xFFFF, s);
  if (i < n) adam_block<true>(w, m, v, nullptr, i, tail_mask(n - i), s);
}

// Inputs i..i+NH-1 against tiles t, t+1: 2 x NH accumulators, each tile vector loaded once per k
// for NH inputs (L2 traffic per FMA divided by NH).
template <int NH>
inline void tiles_block(const float* wt, size_t stride, int t, int two, const float* h, int i, int dim, float* out,
                        int out_pitch) {
  __m512 a[NH][2];
  for (int q = 0; q < NH; ++q) a[q][0] = a[q][1] = _mm512_setzero_ps();
  const float* w0 = wt + t * stride;
  for (int k = 0; k < dim; ++k) {
    const __m512 x0 = _mm512_loadu_ps(w0 + k * kTileRows);
    const __m512 x1 = two == 2 ? _mm512_loadu_ps(w0 + stride + k * kTileRows) : x0;
    for (int q = 0; q < NH; ++q) {
      const __m512 hk = _mm512_set1_ps(h[static_cast<size_t>(i + q) * dim + k]);
      a[q][0] = _mm512_fmadd_ps(x0, hk, a[q][0]);
      if (two == 2) a[q][1] = _mm512_fmadd_ps(x1, hk, a[q][1]);
    }
  }
  for (int q = 0; q < NH; ++q) {
    float* o = out + static_cast<size_t>(i + q) * out_pitch + t * kTileRows;
    _mm512_storeu_ps(o, a[q][0]);
    if (two == 2) _mm512_storeu_ps(o + kTileRows, a[q][1]);
  }
}

void dot_tiles(const float* wt, int n_tiles, const float* h, int n_h, int dim, float* out, int out_pitch) {
  const size_t stride = static_cast<size_t>(dim) * kTileRows;
  for (int t = 0; t < n_tiles; t += 2) {
    const int two = n_tiles - t >= 2 ? 2 : 1;
    int i = 0;
    for (; i + 4 <= n_h; i += 4) tiles_block<4>(wt, stride, t, two, h, i, dim, out, out_pitch);
    for (; i < n_h; ++i) tiles_block<1>(wt, stride, t, two, h, i, dim, out, out_pitch);
  }
}

const KernelTable kTable{"avx512", dot, axpy, dot_gather, adam, adam_zero_grad, adam_bf16_avx2, dot_tiles};

}  // namespace

const KernelTable* kernel_table_avx512() { return &kTable; }

}  // namespace slide
#else
namespace slide {
const KernelTable* kernel_table_avx512() { return nullptr; }
}  // namespace slide
#endif
