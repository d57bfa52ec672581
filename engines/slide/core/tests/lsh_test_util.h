#pragma once
// Minimal checking helpers for the LSH tests: each test is one executable whose main() returns
// the number of failed checks (non-zero = failure), so ctest needs no framework.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "rng.h"

namespace lsh_test {

inline int& failures() {
  static int n = 0;
  return n;
}

#define LSH_CHECK(cond, ...)                                          \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                              \
      std::fprintf(stderr, "\n");                                     \
      ++lsh_test::failures();                                         \
    }                                                                 \
  } while (0)

// Expect `expr` to throw exception type E whose what() contains `needle`.
#define LSH_CHECK_THROWS(E, needle, expr)                                                        \
  do {                                                                                           \
    bool thrown_ = false;                                                                        \
    try {                                                                                        \
      expr;                                                                                      \
    } catch (const E& e_) {                                                                      \
      thrown_ = true;                                                                            \
      LSH_CHECK(std::string(e_.what()).find(needle) != std::string::npos, "message '%s' lacks '%s'", \
                e_.what(), needle);                                                              \
    }                                                                                            \
    LSH_CHECK(thrown_, "expected %s from %s", #E, #expr);                                        \
  } while (0)

inline std::vector<float> random_unit(slide::Rng& rng, int dim) {
  std::vector<float> v(dim);
  double n2 = 0;
  for (auto& x : v) {
    x = rng.normal();
    n2 += double(x) * x;
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(n2));
  for (auto& x : v) x *= inv;
  return v;
}

// A unit vector at cosine `c` to unit x, in a uniformly random direction orthogonal to x: pairs
// (x, y) built from isotropic x are isotropic, so their LSH collision rates are exact in theory.
inline std::vector<float> at_cosine(slide::Rng& rng, const std::vector<float>& x, double c) {
  std::vector<float> z = random_unit(rng, static_cast<int>(x.size()));
  double dot = 0;
  for (size_t i = 0; i < x.size(); ++i) dot += double(z[i]) * x[i];
  double n2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    z[i] = static_cast<float>(z[i] - dot * x[i]);
    n2 += double(z[i]) * z[i];
  }
  const double s = std::sqrt(std::max(0.0, 1 - c * c)) / std::sqrt(n2);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(c * x[i] + s * z[i]);
  return y;
}

// Mean and standard error of per-pair rates (pairs are i.i.d., so SE = sd / sqrt(n)).
struct MeanSe {
  double mean = 0, se = 0;
};
inline MeanSe mean_se(const std::vector<double>& r) {
  double m = 0;
  for (double v : r) m += v;
  m /= r.size();
  double var = 0;
  for (double v : r) var += (v - m) * (v - m);
  var /= (r.size() - 1);
  return {m, std::sqrt(var / r.size())};
}

inline int finish(const char* name) {
  if (failures() == 0) std::printf("%s: all checks passed\n", name);
  else std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace lsh_test
