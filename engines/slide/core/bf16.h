#pragma once
// BF16 storage for Adam moments (adam_state = "bf16"): the top 16 bits of an fp32.
//
// Rounding is stochastic: a moment decays by (1 - beta2) = 0.1% per step, far below BF16's 2^-8
// resolution, so round-to-nearest would leave it stuck; adding uniform 16-bit noise before
// truncating keeps every stored moment unbiased. The noise is a hash of (seed, element), so
// training stays deterministic and independent of the thread count (scalar and vector kernels
// draw the same noise for the same element).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace slide {

// A well-mixed 32-bit hash of x (lowbias32, a fixed integer mix).
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Stochastic rounding with 16 bits of noise (x finite).
inline uint16_t float_to_bf16_sr(float x, uint32_t noise16) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return static_cast<uint16_t>((b + (noise16 & 0xFFFFu)) >> 16);
}

// Round to nearest even (the tests use it to build BF16 values exactly).
inline uint16_t float_to_bf16_rne(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

// Adam with BF16 moments for one element: the scalar reference (and the vector kernels' tail).
// m and v are updated in fp32, w with those exact values, and the moments stored rounded with the
// element's hash h = mix32(seed + i): its low half is m's noise, its high half v's.
inline void adam_bf16_element(float& w, uint16_t& m16, uint16_t& v16, float g, uint32_t h, const AdamScalars& s) {
  const float m = s.beta1 * bf16_to_float(m16) + (1.0f - s.beta1) * g;
  const float v = s.beta2 * bf16_to_float(v16) + (1.0f - s.beta2) * g * g;
  m16 = float_to_bf16_sr(m, h);
  v16 = float_to_bf16_sr(v, h >> 16);
  w -= s.lr * (m * s.bc1) / (std::sqrt(v * s.bc2) + s.eps);
}

}  // namespace slide
