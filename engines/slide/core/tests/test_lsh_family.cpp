// Hash families: config validation, dense/sparse agreement, and collision rates against theory.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "hash_family.h"
#include "lsh_test_util.h"

using namespace slide;
using lsh_test::MeanSe;

namespace {

constexpr double kPi = 3.14159265358979323846;

HashConfig cfg(HashKind kind, int K, int L, int dim, int bb, uint64_t seed = 7) {
  HashConfig c;
  c.kind = kind;
  c.K = K;
  c.L = L;
  c.dim = dim;
  c.bucket_bits = bb;
  c.seed = seed;
  return c;
}

// Per-pair fraction of equal raw codes.
double code_agreement(const HashFamily& f, const float* x, const float* y) {
  const int n = f.K() * f.L();
  std::vector<uint32_t> a(n), b(n);
  f.codes_dense(x, a.data());
  f.codes_dense(y, b.data());
  int same = 0;
  for (int i = 0; i < n; ++i) same += a[i] == b[i];
  return double(same) / n;
}

void test_validation() {
  auto make = [](HashConfig c) { return HashFamily::create(c); };
  LSH_CHECK_THROWS(std::invalid_argument, "HashConfig.K", make(cfg(HashKind::SimHash, 0, 4, 8, 8)));
  LSH_CHECK_THROWS(std::invalid_argument, "HashConfig.L", make(cfg(HashKind::SimHash, 2, 0, 8, 8)));
  LSH_CHECK_THROWS(std::invalid_argument, "HashConfig.dim", make(cfg(HashKind::DWTA, 2, 4, 0, 8)));
  LSH_CHECK_THROWS(std::invalid_argument, "HashConfig.bucket_bits", make(cfg(HashKind::WTA, 2, 4, 16, 0)));
  LSH_CHECK_THROWS(std::invalid_argument, "HashConfig.bucket_bits", make(cfg(HashKind::WTA, 2, 4, 16, 25)));
  HashConfig c = cfg(HashKind::SimHash, 2, 4, 16, 8);
  c.simhash_density = 0.f;
  LSH_CHECK_THROWS(std::invalid_argument, "simhash_density", make(c));
  c = cfg(HashKind::WTA, 2, 4, 16, 8);
  c.wta_bin_size = 32;  // > dim
  LSH_CHECK_THROWS(std::invalid_argument, "wta_bin_size", make(c));
  c.wta_bin_size = 1;
  LSH_CHECK_THROWS(std::invalid_argument, "wta_bin_size", make(c));
  c = cfg(HashKind::DOPH, 2, 4, 16, 8);
  c.doph_top_k = 17;
  LSH_CHECK_THROWS(std::invalid_argument, "doph_top_k", make(c));
  LSH_CHECK_THROWS(std::invalid_argument, "unknown hash kind", parse_hash_kind("minhash"));
  LSH_CHECK(parse_hash_kind("DWTA") == HashKind::DWTA, "parse is case-insensitive");
  auto f = make(cfg(HashKind::SimHash, 3, 2, 8, 8));
  std::vector<int32_t> idx{0, 8};
  std::vector<float> val{1.f, 1.f};
  uint32_t out[2];
  LSH_CHECK_THROWS(std::out_of_range, "index 8", f->hash_sparse(idx.data(), val.data(), 2, out));
}

// Every family: buckets in range, deterministic per seed, different seeds differ, and a sparse
// input hashes exactly like the same vector written densely (zeros included).
void test_dense_sparse_agree() {
  Rng rng(11);
  for (HashKind kind : {HashKind::SimHash, HashKind::WTA, HashKind::DWTA, HashKind::DOPH}) {
    for (int bb : {6, 20}) {  // 6: codes are mixed; 20: SimHash/WTA codes are concatenated
      HashConfig c = cfg(kind, 3, 16, 300, bb);
      auto f = HashFamily::create(c);
      auto f_same = HashFamily::create(c);
      c.seed = 8;
      auto f_other = HashFamily::create(c);
      int differ_other = 0;
      for (int trial = 0; trial < 40; ++trial) {
        std::vector<float> x(300, 0.f);
        std::vector<int32_t> idx;
        std::vector<float> val;
        const int nnz = trial == 0 ? 0 : 1 + static_cast<int>(rng.below(60));
        while (static_cast<int>(idx.size()) < nnz) {
          const int d = static_cast<int>(rng.below(300));
          if (x[d] != 0.f) continue;
          // some exact ties to exercise the tie rules
          x[d] = (rng.below(4) == 0) ? 0.5f : rng.normal();
          if (x[d] == 0.f) continue;
          idx.push_back(d);
          val.push_back(x[d]);
        }
        // unsorted indices on purpose
        std::vector<uint32_t> hd(16), hs(16), h2(16), h3(16);
        f->hash_dense(x.data(), hd.data());
        f->hash_sparse(idx.data(), val.data(), nnz, hs.data());
        f_same->hash_dense(x.data(), h2.data());
        f_other->hash_dense(x.data(), h3.data());
        LSH_CHECK(hd == hs, "%s bb=%d trial %d: dense and sparse buckets differ", hash_kind_name(kind), bb, trial);
        LSH_CHECK(hd == h2, "%s: same seed, different buckets", hash_kind_name(kind));
        differ_other += hd != h3;
        for (uint32_t b : hd) LSH_CHECK(b < f->num_buckets(), "%s: bucket %u out of range", hash_kind_name(kind), b);
        // bucket ids are combine() of the raw codes
        std::vector<uint32_t> codes(3 * 16);
        f->codes_dense(x.data(), codes.data());
        for (int t = 0; t < 16; ++t)
          LSH_CHECK(f->combine(t, &codes[3 * t]) == hd[t], "%s: combine mismatch", hash_kind_name(kind));
      }
      LSH_CHECK(differ_other > 30, "%s: a different seed gave the same buckets in %d of 40 cases", hash_kind_name(kind),
                40 - differ_other);
    }
  }
}

// hash_dense_batch (used by HashTables::build) equals row-by-row hash_dense, for row counts that
// are not a multiple of the families' 8-row blocks, padded row strides and rows with zeros.
void test_batch_equals_single() {
  Rng rng(12);
  for (HashKind kind : {HashKind::SimHash, HashKind::WTA, HashKind::DWTA, HashKind::DOPH}) {
    HashConfig c = cfg(kind, 5, 12, 40, 16);
    auto f = HashFamily::create(c);
    for (int n : {1, 7, 8, 9, 30}) {
      const size_t stride = 44;
      std::vector<float> rows(n * stride, 123.f);
      for (int i = 0; i < n; ++i)
        for (int d = 0; d < 40; ++d) rows[i * stride + d] = rng.below(3) == 0 ? 0.f : rng.normal();
      std::vector<uint32_t> batch(n * 12), one(12);
      f->hash_dense_batch(rows.data(), n, stride, batch.data());
      for (int i = 0; i < n; ++i) {
        f->hash_dense(&rows[i * stride], one.data());
        LSH_CHECK(std::equal(one.begin(), one.end(), batch.begin() + i * 12), "%s n=%d row %d: batch != single",
                  hash_kind_name(kind), n, i);
      }
    }
  }
}

// With K codes of b bits and K*b <= bucket_bits the bucket is the exact concatenation.
void test_concatenation() {
  auto f = HashFamily::create(cfg(HashKind::SimHash, 5, 3, 32, 5));
  Rng rng(3);
  auto x = lsh_test::random_unit(rng, 32);
  std::vector<uint32_t> codes(15), out(3);
  f->codes_dense(x.data(), codes.data());
  f->hash_dense(x.data(), out.data());
  for (int t = 0; t < 3; ++t) {
    uint32_t b = 0;
    for (int k = 0; k < 5; ++k) b = (b << 1) | codes[5 * t + k];
    LSH_CHECK(out[t] == b, "table %d: %u != concatenated %u", t, out[t], b);
  }
}

// SimHash: a single bit collides with probability 1 - angle/pi. Pairs are isotropic, so given the
// (fixed) projections the expected per-pair rate is exactly that; pairs are i.i.d., so the
// tolerance is 4 standard errors of the mean of per-pair rates (two-sided, ~6e-5 false alarm).
void test_simhash_angle() {
  for (float density : {1.0f / 3, 1.0f}) {
    HashConfig c = cfg(HashKind::SimHash, 8, 32, 64, 16, 21);
    c.simhash_density = density;
    auto f = HashFamily::create(c);
    Rng rng(99);
    for (double theta : {0.2, 0.6, 1.0, 1.571, 2.2, 2.9}) {
      std::vector<double> rates;
      for (int p = 0; p < 1500; ++p) {
        auto x = lsh_test::random_unit(rng, 64);
        auto y = lsh_test::at_cosine(rng, x, std::cos(theta));
        rates.push_back(code_agreement(*f, x.data(), y.data()));
      }
      const MeanSe m = lsh_test::mean_se(rates);
      const double expect = 1 - theta / kPi;
      std::printf("simhash density %.2f angle %.3f: collision %.4f theory %.4f se %.4f\n", density, theta, m.mean,
                  expect, m.se);
      LSH_CHECK(std::fabs(m.mean - expect) <= 4 * m.se,
                "density %.2f angle %.2f: collision %.4f, theory %.4f, 4 SE = %.4f", density, theta, m.mean, expect,
                4 * m.se);
    }
  }
}

// WTA and DWTA: the code collision rate rises with cosine similarity, each rung of the ladder
// above the previous by more than 4 combined standard errors.
void test_wta_monotone() {
  for (HashKind kind : {HashKind::WTA, HashKind::DWTA}) {
    auto f = HashFamily::create(cfg(kind, 4, 32, 128, 18, 5));
    Rng rng(17);
    MeanSe prev{-1, 0};
    for (double cosv : {0.0, 0.3, 0.6, 0.8, 0.9, 0.97}) {
      std::vector<double> rates;
      for (int p = 0; p < 600; ++p) {
        auto x = lsh_test::random_unit(rng, 128);
        auto y = lsh_test::at_cosine(rng, x, cosv);
        rates.push_back(code_agreement(*f, x.data(), y.data()));
      }
      const MeanSe m = lsh_test::mean_se(rates);
      std::printf("%s cos %.2f: collision %.4f se %.4f\n", hash_kind_name(kind), cosv, m.mean, m.se);
      LSH_CHECK(m.mean - prev.mean > 4 * std::hypot(m.se, prev.se), "%s cos %.2f: %.4f not above %.4f",
                hash_kind_name(kind), cosv, m.mean, prev.mean);
      prev = m;
    }
    LSH_CHECK(prev.mean > 0.8, "%s: near-identical vectors collide only %.3f", hash_kind_name(kind), prev.mean);
  }
}

// DWTA on sparse vectors: pairs share a fraction s of their non-zeros (same index and value);
// more sharing means more collisions.
void test_dwta_sparse_monotone() {
  const int dim = 2000, nnz = 80;
  auto f = HashFamily::create(cfg(HashKind::DWTA, 4, 32, dim, 18, 6));
  Rng rng(23);
  MeanSe prev{-1, 0};
  for (double share : {0.0, 0.25, 0.5, 0.75, 0.95}) {
    std::vector<double> rates;
    for (int p = 0; p < 400; ++p) {
      std::vector<float> x(dim, 0.f), y(dim, 0.f);
      const int n_shared = static_cast<int>(share * nnz);
      int placed = 0;
      while (placed < nnz) {  // shared entries: same index, same value
        const int d = static_cast<int>(rng.below(dim));
        if (x[d] != 0.f) continue;
        x[d] = std::fabs(rng.normal()) + 0.01f;
        if (placed < n_shared) y[d] = x[d];
        ++placed;
      }
      placed = n_shared;
      while (placed < nnz) {
        const int d = static_cast<int>(rng.below(dim));
        if (y[d] != 0.f || x[d] != 0.f) continue;
        y[d] = std::fabs(rng.normal()) + 0.01f;
        ++placed;
      }
      rates.push_back(code_agreement(*f, x.data(), y.data()));
    }
    const MeanSe m = lsh_test::mean_se(rates);
    std::printf("dwta sparse share %.2f: collision %.4f se %.4f\n", share, m.mean, m.se);
    LSH_CHECK(m.mean - prev.mean > 4 * std::hypot(m.se, prev.se), "DWTA sparse share %.2f: %.4f not above %.4f",
              share, m.mean, prev.mean);
    prev = m;
  }
}

// DOPH: a raw code collides with probability equal to the Jaccard similarity of the non-zero sets
// (one-permutation min-hash with optimal densification). Tolerance: 4 standard errors of the
// per-pair mean plus 0.005 for the densification's rare linear-scan fallback.
void test_doph_jaccard() {
  const int dim = 6000;
  for (int set_size : {400, 60}) {  // 60: most bins empty, densification does most of the work
    auto f = HashFamily::create(cfg(HashKind::DOPH, 4, 100, dim, 18, 31));
    Rng rng(41);
    for (double target_j : {0.1, 0.3, 0.5, 0.8}) {
      // |A| = |B| = m, |A n B| = s: J = s / (2m - s)  =>  s = 2mJ / (1 + J)
      const int m = set_size;
      const int s = static_cast<int>(std::lround(2.0 * m * target_j / (1 + target_j)));
      const double j = double(s) / (2 * m - s);
      std::vector<double> rates;
      for (int p = 0; p < 500; ++p) {
        std::vector<float> x(dim, 0.f), y(dim, 0.f);
        std::vector<int32_t> perm(dim);
        for (int i = 0; i < dim; ++i) perm[i] = i;
        for (int i = 0; i < 2 * m - s; ++i) std::swap(perm[i], perm[i + rng.below(dim - i)]);
        for (int i = 0; i < s; ++i) x[perm[i]] = y[perm[i]] = 1.f;
        for (int i = s; i < m; ++i) x[perm[i]] = 1.f;
        for (int i = m; i < 2 * m - s; ++i) y[perm[i]] = 1.f;
        rates.push_back(code_agreement(*f, x.data(), y.data()));
      }
      const MeanSe r = lsh_test::mean_se(rates);
      std::printf("doph |set| %d jaccard %.4f: collision %.4f se %.4f\n", set_size, j, r.mean, r.se);
      LSH_CHECK(std::fabs(r.mean - j) <= 4 * r.se + 0.005, "DOPH |set| %d J %.3f: collision %.4f (4 SE %.4f)",
                set_size, j, r.mean, 4 * r.se);
    }
  }
  // doph_top_k: only the k largest values form the set, so the rest of the vector is irrelevant.
  HashConfig c = cfg(HashKind::DOPH, 2, 8, 100, 18, 3);
  c.doph_top_k = 5;
  auto f = HashFamily::create(c);
  std::vector<float> x(100, 0.f), y(100, 0.f);
  for (int d = 0; d < 100; ++d) x[d] = y[d] = 0.01f * (d % 7 + 1);
  for (int d : {3, 17, 40, 66, 91}) x[d] = y[d] = 5.f + d;
  y[50] = 0.02f;  // a change below the top 5
  std::vector<uint32_t> a(8), b(8);
  f->hash_dense(x.data(), a.data());
  f->hash_dense(y.data(), b.data());
  LSH_CHECK(a == b, "doph_top_k: a change outside the top-k altered the buckets");
}


// SimHashMips: a key's collision rate with a query is 1 - theta/pi of the angle between the
// transformed vectors [x, 1, 0] and [w, b, sqrt(M^2 - |w|^2 - b^2)], so it rises with the logit
// w.x + b; queries hash alike from dense and sparse input.
void test_simhash_mips_inner_product() {
  const int dim = 32, n = 300, L = 4096;
  HashConfig c = cfg(HashKind::SimHashMips, 1, L, dim, 1, 17);  // one sign bit per table
  c.simhash_density = 1.0f;
  auto f = HashFamily::create(c);
  LSH_CHECK(f->asymmetric(), "simhash_mips must hash keys and queries differently");
  Rng rng(5);
  std::vector<float> q(dim), w(static_cast<size_t>(n) * dim), b(n);
  for (float& v : q) v = static_cast<float>(rng.normal());
  double m2 = 0;
  for (int i = 0; i < n; ++i) {
    const double scale = 0.2 + 1.8 * rng.uniform();  // keys of different norms
    double sq = 0;
    for (int d = 0; d < dim; ++d) {
      w[static_cast<size_t>(i) * dim + d] = static_cast<float>(scale * rng.normal() / std::sqrt(dim));
      sq += double(w[static_cast<size_t>(i) * dim + d]) * w[static_cast<size_t>(i) * dim + d];
    }
    b[i] = static_cast<float>(2.0 * rng.normal());
    m2 = std::max(m2, sq + double(b[i]) * b[i]);
  }
  const float M = static_cast<float>(std::sqrt(m2));
  std::vector<uint32_t> qb(L), kb(static_cast<size_t>(n) * L);
  f->hash_dense(q.data(), qb.data());
  {
    // A key that is the query itself ([q, 1] at the bound: completion 0) collides everywhere.
    double qq = 1.0;
    for (float v : q) qq += double(v) * v;
    const float one = 1.0f;
    std::vector<uint32_t> self(L);
    const float qb_norm = static_cast<float>(std::sqrt(qq));
    f->hash_keys_batch(q.data(), &one, &qb_norm, 1, dim, self.data());
    int same = 0;
    for (int t = 0; t < L; ++t) same += self[t] == qb[t];
    LSH_CHECK(same >= L - 2, "a key equal to the query's transform collides in %d of %d tables", same, L);
  }
  const std::vector<float> bounds(n, M);
  f->hash_keys_batch(w.data(), b.data(), bounds.data(), n, dim, kb.data());
  double q2 = 1.0;
  for (float v : q) q2 += double(v) * v;
  std::vector<std::pair<double, double>> logit_rate;
  for (int i = 0; i < n; ++i) {
    double dot = b[i];
    for (int d = 0; d < dim; ++d) dot += double(q[d]) * w[static_cast<size_t>(i) * dim + d];
    int same = 0;
    for (int t = 0; t < L; ++t) same += qb[t] == kb[static_cast<size_t>(i) * L + t];
    const double rate = double(same) / L;
    const double theta = std::acos(std::clamp(dot / (std::sqrt(q2) * M), -1.0, 1.0));
    const double expect = 1 - theta / kPi;
    const double se = std::sqrt(std::max(expect * (1 - expect), 1e-4) / L);
    LSH_CHECK(std::fabs(rate - expect) <= 5 * se, "key %d (logit %.3f): collision %.4f, theory %.4f, 5 SE = %.4f", i,
              dot, rate, expect, 5 * se);
    logit_rate.emplace_back(dot, rate);
  }
  // Ranked by logit, the top tenth of the keys collides far more often than the bottom tenth.
  std::sort(logit_rate.begin(), logit_rate.end());
  double low = 0, high = 0;
  for (int i = 0; i < n / 10; ++i) {
    low += logit_rate[i].second;
    high += logit_rate[n - 1 - i].second;
  }
  std::printf("simhash_mips: mean collision of the top-logit tenth %.3f, bottom tenth %.3f\n", high / (n / 10),
              low / (n / 10));
  // The spread of logits here moves the angle by ~16 degrees: theory puts the tenths ~0.08 apart.
  LSH_CHECK(high > low + 0.05 * (n / 10), "top tenth %.3f vs bottom tenth %.3f", high / (n / 10), low / (n / 10));
  // Sparse queries (ascending indices) hash as dense ones.
  std::vector<int32_t> idx(dim);
  for (int d = 0; d < dim; ++d) idx[d] = d;
  std::vector<uint32_t> sb(L);
  f->hash_sparse(idx.data(), q.data(), dim, sb.data());
  LSH_CHECK(sb == qb, "simhash_mips: sparse and dense queries hash differently");
  // A symmetric family hashes keys as plain rows, whatever the biases.
  auto g = HashFamily::create(cfg(HashKind::SimHash, 4, 8, dim, 16, 3));
  std::vector<uint32_t> a(8 * 2), k(8 * 2);
  g->hash_dense_batch(w.data(), 2, dim, a.data());
  g->hash_keys_batch(w.data(), b.data(), bounds.data(), 2, dim, k.data());
  LSH_CHECK(a == k, "a symmetric family's keys must not depend on the biases");
}

}  // namespace

int main() {
  test_validation();
  test_dense_sparse_agree();
  test_concatenation();
  test_batch_equals_single();
  test_simhash_angle();
  test_wta_monotone();
  test_dwta_sparse_monotone();
  test_doph_jaccard();
  test_simhash_mips_inner_product();
  return lsh_test::finish("test_lsh_family");
}
