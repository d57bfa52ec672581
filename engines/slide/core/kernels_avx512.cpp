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

const KernelTable kTable{"avx512", dot, axpy, dot_gather, adam, adam_zero_grad, adam_bf16_avx2};

}  // namespace

const KernelTable* kernel_table_avx512() { return &kTable; }

}  // namespace slide
#else
namespace slide {
const KernelTable* kernel_table_avx512() { return nullptr; }
}  // namespace slide
#endif
