// Portable kernels: the reference every vector path is tested against, and the fallback.
#include <cmath>

#include "bf16.h"
#include "kernels.h"

namespace slide {
namespace {

float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

float dot_gather(const float* w, const int32_t* idx, const float* val, int nnz) {
  float s = 0.0f;
  for (int i = 0; i < nnz; ++i) s += w[idx[i]] * val[i];
  return s;
}

void adam(float* w, float* m, float* v, const float* g, int n, const AdamScalars& s) {
  for (int i = 0; i < n; ++i) {
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * g[i];
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * g[i] * g[i];
    w[i] -= s.lr * (m[i] * s.bc1) / (std::sqrt(v[i] * s.bc2) + s.eps);
  }
}

void adam_zero_grad(float* w, float* m, float* v, int n, const AdamScalars& s) {
  for (int i = 0; i < n; ++i) {
    m[i] = s.beta1 * m[i];
    v[i] = s.beta2 * v[i];
    w[i] -= s.lr * (m[i] * s.bc1) / (std::sqrt(v[i] * s.bc2) + s.eps);
  }
}

void adam_bf16(float* w, uint16_t* m, uint16_t* v, const float* g, int n, const AdamScalars& s, uint32_t seed) {
  for (int i = 0; i < n; ++i)
    adam_bf16_element(w[i], m[i], v[i], g ? g[i] : 0.0f, mix32(seed + static_cast<uint32_t>(i)), s);
}

void dot_tiles(const float* wt, int n_tiles, const float* h, int n_h, int dim, float* out, int out_pitch) {
  for (int i = 0; i < n_h; ++i)
    for (int t = 0; t < n_tiles; ++t) {
      float acc[kTileRows] = {};
      const float* tile = wt + static_cast<size_t>(t) * dim * kTileRows;
      for (int k = 0; k < dim; ++k)
        for (int r = 0; r < kTileRows; ++r) acc[r] += tile[k * kTileRows + r] * h[static_cast<size_t>(i) * dim + k];
      for (int r = 0; r < kTileRows; ++r) out[static_cast<size_t>(i) * out_pitch + t * kTileRows + r] = acc[r];
    }
}

const KernelTable kTable{"scalar", dot, axpy, dot_gather, adam, adam_zero_grad, adam_bf16, dot_tiles};

}  // namespace

const KernelTable* kernel_table_scalar() { return &kTable; }

}  // namespace slide
