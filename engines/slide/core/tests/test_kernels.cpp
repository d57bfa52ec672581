// Every kernel table this CPU supports agrees with the scalar reference (dot, axpy, gather-dot,
// Adam, Adam with BF16 moments) on lengths around the vector widths, including the 128-wide rows of
// the paper's model; tiled dots against double precision.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bf16.h"
#include "kernels.h"
#include "test_util.h"

using namespace slide;

namespace {

bool close(float a, float b, float rel) { return std::fabs(a - b) <= rel * (1.0f + std::fabs(a) + std::fabs(b)); }

void check_table(const KernelTable& t) {
  const KernelTable& ref = *kernel_table_scalar();
  Rng rng(42);
  for (int n : {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 300}) {
    std::vector<float> a(n), b(n), y1(n), y2(n);
    for (int i = 0; i < n; ++i) {
      a[i] = rng.normal();
      b[i] = rng.normal();
      y1[i] = y2[i] = rng.normal();
    }
    // Dot products differ only by summation order: relative tolerance ~ n * float epsilon.
    CHECK(close(t.dot(a.data(), b.data(), n), ref.dot(a.data(), b.data(), n), 1e-5f * n), "%s dot n=%d", t.name, n);
    t.axpy(0.37f, a.data(), y1.data(), n);
    ref.axpy(0.37f, a.data(), y2.data(), n);
    for (int i = 0; i < n; ++i) CHECK(close(y1[i], y2[i], 1e-6f), "%s axpy n=%d i=%d", t.name, n, i);

    // Gather-dot against a wide row.
    const int width = 1000;
    std::vector<float> w(width);
    for (float& v : w) v = rng.normal();
    std::vector<int32_t> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(rng.below(width));
    CHECK(close(t.dot_gather(w.data(), idx.data(), a.data(), n), ref.dot_gather(w.data(), idx.data(), a.data(), n),
                1e-5f * n),
          "%s dot_gather n=%d", t.name, n);

    // Adam: elementwise, so the vector paths must match the scalar one to rounding.
    AdamScalars s{1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f / (1.0f - 0.9f * 0.9f), 1.0f / (1.0f - 0.999f * 0.999f)};
    std::vector<float> w1(a), w2(a), m1(n), m2(n), v1(n), v2(n);
    for (int i = 0; i < n; ++i) {
      m1[i] = m2[i] = 0.1f * rng.normal();
      v1[i] = v2[i] = 0.01f * rng.uniform();
    }
    t.adam(w1.data(), m1.data(), v1.data(), b.data(), n, s);
    ref.adam(w2.data(), m2.data(), v2.data(), b.data(), n, s);
    for (int i = 0; i < n; ++i) {
      CHECK(close(w1[i], w2[i], 1e-6f) && close(m1[i], m2[i], 1e-6f) && close(v1[i], v2[i], 1e-6f), "%s adam n=%d i=%d",
            t.name, n, i);
    }
    t.adam_zero_grad(w1.data(), m1.data(), v1.data(), n, s);
    ref.adam_zero_grad(w2.data(), m2.data(), v2.data(), n, s);
    for (int i = 0; i < n; ++i)
      CHECK(close(w1[i], w2[i], 1e-6f) && close(m1[i], m2[i], 1e-6f), "%s adam_zero_grad n=%d i=%d", t.name, n, i);

    // Adam with BF16 moments, from moments that BF16 holds exactly: the weights move as in the
    // fp32 step (the update uses the unrounded moments), and the stored moments lie within one
    // BF16 step (2^-7 relative) of the fp32 ones. Same with a zero gradient (g == nullptr).
    for (const float* grad : {static_cast<const float*>(b.data()), static_cast<const float*>(nullptr)}) {
      std::vector<uint16_t> m16(n), v16(n);
      std::vector<float> w3(a), w4(a), m4(n), v4(n);
      for (int i = 0; i < n; ++i) {
        m16[i] = float_to_bf16_rne(0.1f * rng.normal());
        v16[i] = float_to_bf16_rne(0.01f * rng.uniform());
        m4[i] = bf16_to_float(m16[i]);
        v4[i] = bf16_to_float(v16[i]);
      }
      t.adam_bf16(w3.data(), m16.data(), v16.data(), grad, n, s, 1234u);
      if (grad)
        ref.adam(w4.data(), m4.data(), v4.data(), grad, n, s);
      else
        ref.adam_zero_grad(w4.data(), m4.data(), v4.data(), n, s);
      for (int i = 0; i < n; ++i) {
        CHECK(close(w3[i], w4[i], 1e-6f), "%s adam_bf16 w n=%d i=%d", t.name, n, i);
        CHECK(std::fabs(bf16_to_float(m16[i]) - m4[i]) <= std::fabs(m4[i]) / 128 &&
                  std::fabs(bf16_to_float(v16[i]) - v4[i]) <= std::fabs(v4[i]) / 128,
              "%s adam_bf16 moments n=%d i=%d", t.name, n, i);
      }
    }
  }

  // Tiled dots: tile counts and input counts around the unroll widths (1-9 tiles of 16 rows,
  // 1-6 inputs), input lengths around the vector widths, against double-precision dots.
  for (int dim : {1, 7, 16, 33, 128}) {
    for (int n_tiles = 1; n_tiles <= 9; ++n_tiles) {
      for (int n_h = 1; n_h <= 6; ++n_h) {
        const int rows = n_tiles * kTileRows, pitch = rows + 3;
        std::vector<float> w(static_cast<size_t>(rows) * dim), h(static_cast<size_t>(n_h) * dim), wt(w.size());
        std::vector<float> out(static_cast<size_t>(n_h) * pitch, -1.0f);
        for (float& x : w) x = rng.normal();
        for (float& x : h) x = rng.normal();
        for (int j = 0; j < rows; ++j)
          for (int k = 0; k < dim; ++k)
            wt[(static_cast<size_t>(j / kTileRows) * dim + k) * kTileRows + j % kTileRows] =
                w[static_cast<size_t>(j) * dim + k];
        t.dot_tiles(wt.data(), n_tiles, h.data(), n_h, dim, out.data(), pitch);
        for (int i = 0; i < n_h; ++i) {
          for (int j = 0; j < rows; ++j) {
            double want = 0.0;
            for (int k = 0; k < dim; ++k)
              want += static_cast<double>(w[static_cast<size_t>(j) * dim + k]) * h[static_cast<size_t>(i) * dim + k];
            CHECK(close(out[static_cast<size_t>(i) * pitch + j], static_cast<float>(want), 1e-5f * dim),
                  "%s dot_tiles dim=%d tiles=%d inputs=%d input=%d row=%d", t.name, dim, n_tiles, n_h, i, j);
          }
          for (int j = rows; j < pitch; ++j)
            CHECK(out[static_cast<size_t>(i) * pitch + j] == -1.0f, "%s dot_tiles wrote past its rows", t.name);
        }
      }
    }
  }

  // Stochastic rounding keeps a decaying second moment unbiased: 500 zero-gradient steps scale v
  // by 0.999^500 = 0.606. Each step's change (0.1%) is far below BF16's resolution (0.4-0.8%),
  // so round-to-nearest would never move it; with stochastic rounding the mean over 4,096
  // elements follows the decay (per-element noise ~0.3% after 500 steps, mean to ~0.01%).
  {
    const int n = 4096;
    AdamScalars s{0.0f, 0.9f, 0.999f, 1e-8f, 1.0f, 1.0f};
    std::vector<float> w(n, 0.0f);
    std::vector<uint16_t> m(n, 0), v(n, float_to_bf16_rne(1.0f));
    for (uint32_t step = 0; step < 500; ++step) t.adam_bf16(w.data(), m.data(), v.data(), nullptr, n, s, step * 7919u);
    double mean = 0.0;
    for (uint16_t h : v) mean += bf16_to_float(h);
    mean /= n;
    CHECK(std::fabs(mean / std::pow(0.999, 500) - 1.0) < 0.002, "%s adam_bf16 decay: mean v %.5f, expected %.5f",
          t.name, mean, std::pow(0.999, 500));
  }
}

}  // namespace

int main() {
  const std::vector<std::string> supported = kernels_supported();
  for (const std::string& name : supported) {
    std::string err;
    CHECK(select_kernels(name, &err), "select %s: %s", name.c_str(), err.c_str());
    CHECK(kernels().name == name, "selected %s, got %s", name.c_str(), kernels().name);
    check_table(kernels());
    std::printf("kernel %s: checked against scalar\n", name.c_str());
  }
  std::string err;
  CHECK(!select_kernels("sse9", &err) && err.find("unknown kernel") != std::string::npos, "bad name: %s", err.c_str());
  // A compiled table the CPU lacks must be refused, never run.
  for (const std::string& name : kernels_compiled()) {
    bool ok = false;
    for (const auto& s : supported) ok = ok || s == name;
    if (!ok) CHECK(!select_kernels(name, &err), "%s selected on a CPU without it", name.c_str());
  }
  return slide_test::finish("test_kernels");
}
