#pragma once
// Vector kernels of the SLIDE core with run-time CPU dispatch.
//
// Each instruction set lives in its own translation unit compiled with its own flags
// (kernels_scalar.cpp, kernels_avx2.cpp, kernels_avx512.cpp); kernels.cpp picks one table at run
// time with __builtin_cpu_supports, overridable by the environment variable SLIDE_KERNEL
// (scalar | avx2 | avx512) or by select_kernels(). The rest of the core calls only through
// kernels(), so no AVX instruction can execute on a CPU that lacks it.
#include <cstdint>
#include <string>
#include <vector>

namespace slide {

// One Adam step's scalars. Bias correction uses the global step t: bc1 = 1/(1-beta1^t),
// bc2 = 1/(1-beta2^t); the update is w -= lr * (m*bc1) / (sqrt(v*bc2) + eps).
struct AdamScalars {
  float lr, beta1, beta2, eps, bc1, bc2;
};

struct KernelTable {
  const char* name;
  // sum_i a[i]*b[i]
  float (*dot)(const float* a, const float* b, int n);
  // y[i] += alpha*x[i]
  void (*axpy)(float alpha, const float* x, float* y, int n);
  // sum_i w[idx[i]]*val[i]  (a dense row against a sparse vector)
  float (*dot_gather)(const float* w, const int32_t* idx, const float* val, int nnz);
  // In place Adam on n parameters with gradient g (m, v: first and second moments).
  void (*adam)(float* w, float* m, float* v, const float* g, int n, const AdamScalars& s);
  // Adam for parameters whose gradient is zero this step (dense-Adam mode, untouched rows).
  void (*adam_zero_grad)(float* w, float* m, float* v, int n, const AdamScalars& s);
  // Adam with BF16 moments (bf16.h): g == nullptr means a zero gradient; `seed` keys the
  // stochastic rounding of element i as mix32(seed + i).
  void (*adam_bf16)(float* w, uint16_t* m, uint16_t* v, const float* g, int n, const AdamScalars& s, uint32_t seed);
  // Dots of every row of n_tiles tiles with each of n_h dense inputs (h: n_h x dim, row-major).
  // Rows are packed k-major in tiles of kTileRows: row r of tile t, element k, at
  // wt[(t * dim + k) * kTileRows + r]. Writes out[i * out_pitch + t * kTileRows + r]. A broadcast
  // of h[i][k] feeds a whole tile's lanes (no horizontal sum per dot) and each loaded tile vector
  // serves several inputs (a small GEMM): exact scoring of every output.
  void (*dot_tiles)(const float* wt, int n_tiles, const float* h, int n_h, int dim, float* out, int out_pitch);
};
// Rows per tile of dot_tiles: one AVX-512 register, two AVX2 ones.
constexpr int kTileRows = 16;

// The table in use (selected once at first call, thread-safe).
const KernelTable& kernels();
// Force a table by name ("scalar", "avx2", "avx512", or "auto"); false + reason if it is not
// compiled in or the CPU lacks the instructions. Not for use while training runs.
bool select_kernels(const std::string& name, std::string* error);
// Names of the tables compiled into this build, and of those this CPU can run.
std::vector<std::string> kernels_compiled();
std::vector<std::string> kernels_supported();

// Per-ISA tables (nullptr where not compiled in). Used by the dispatcher and by the tests.
const KernelTable* kernel_table_scalar();
const KernelTable* kernel_table_avx2();
const KernelTable* kernel_table_avx512();
// The AVX2 BF16-moment Adam, shared by the AVX-512 table (the kernel is memory-bound; 256-bit
// lanes are enough). Only called on CPUs with AVX2 + FMA.
void adam_bf16_avx2(float* w, uint16_t* m, uint16_t* v, const float* g, int n, const AdamScalars& s, uint32_t seed);

}  // namespace slide
