// Hash tables: FIFO keeps the newest, reservoir keeps each offered item with probability
// capacity/n, build() equals sequential insertion, is thread-count independent and reuses memory.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <vector>

#include "hash_family.h"
#include "hash_tables.h"
#include "lsh_test_util.h"

using namespace slide;

namespace {

std::vector<uint32_t> contents(const HashTables& t, int table, uint32_t b) {
  auto [p, c] = t.bucket(table, b);
  std::vector<uint32_t> v(p, p + c);
  std::sort(v.begin(), v.end());
  return v;
}

void test_validation() {
  LSH_CHECK_THROWS(std::invalid_argument, "L must be", HashTables(0, 4, 4, Insertion::FIFO, 1));
  LSH_CHECK_THROWS(std::invalid_argument, "bucket_bits", HashTables(2, 25, 4, Insertion::FIFO, 1));
  LSH_CHECK_THROWS(std::invalid_argument, "capacity", HashTables(2, 4, 0, Insertion::FIFO, 1));
  LSH_CHECK_THROWS(std::invalid_argument, "unknown insertion", parse_insertion("lru"));
  HashTables t(2, 4, 4, Insertion::FIFO, 1);
  uint32_t bad[2] = {1, 16};
  LSH_CHECK_THROWS(std::out_of_range, "table 1", t.insert(3, bad));
  auto fam = HashFamily::create([] {
    HashConfig c;
    c.kind = HashKind::SimHash;
    c.K = 2;
    c.L = 3;
    c.dim = 4;
    c.bucket_bits = 4;
    return c;
  }());
  std::vector<float> rows(8, 1.f);
  LSH_CHECK_THROWS(std::invalid_argument, "family has L=3", t.build(*fam, rows.data(), 2, 4, 1));
}

// FIFO: after n offers to one bucket of capacity c it holds exactly the newest min(n, c) items.
void test_fifo_newest() {
  for (int n : {3, 8, 9, 50}) {
    HashTables t(3, 5, 8, Insertion::FIFO, 2);
    for (int i = 0; i < n; ++i) {
      uint32_t b[3] = {7, 0, static_cast<uint32_t>(i % 2 ? 31 : 30)};
      t.insert(static_cast<uint32_t>(i), b);
    }
    std::vector<uint32_t> expect;
    for (int i = std::max(0, n - 8); i < n; ++i) expect.push_back(i);
    LSH_CHECK(contents(t, 0, 7) == expect, "FIFO n=%d: bucket does not hold the newest items", n);
    LSH_CHECK(t.offered(0, 7) == static_cast<uint32_t>(n), "offered count %u != %d", t.offered(0, 7), n);
    LSH_CHECK(contents(t, 0, 6).empty(), "an untouched bucket is not empty");
    std::vector<uint32_t> odd;
    for (int i = 1; i < n; i += 2) odd.push_back(i);
    if (odd.size() > 8) odd.erase(odd.begin(), odd.end() - 8);
    LSH_CHECK(contents(t, 2, 31) == odd, "FIFO n=%d: table 2 bucket 31 wrong", n);
  }
  HashTables t(1, 2, 4, Insertion::FIFO, 2);
  uint32_t b = 1;
  t.insert(5, &b);
  t.clear();
  LSH_CHECK(contents(t, 0, 1).empty() && t.offered(0, 1) == 0, "clear() left items");
}

// Reservoir: each of n items offered to a bucket of capacity c is held with probability c/n.
// R independent repetitions give hold counts per item with mean R*c/n and variance
// R*p*(1-p); the statistic sum((o-e)^2 / (R p (1-p))) over the n items is ~chi-square with n-1
// degrees of freedom (the holds sum to R*c). Bound: the 0.999 quantile of chi2(19) = 43.8.
void test_reservoir_uniform() {
  const int n = 20, cap = 4, R = 20000;
  HashTables t(1, 1, cap, Insertion::Reservoir, 12345);
  std::vector<int> held(n, 0);
  uint32_t b = 0;
  for (int r = 0; r < R; ++r) {
    t.clear();
    for (int i = 0; i < n; ++i) t.insert(static_cast<uint32_t>(i), &b);
    auto v = contents(t, 0, 0);
    LSH_CHECK(static_cast<int>(v.size()) == cap, "reservoir holds %zu items, expected %d", v.size(), cap);
    LSH_CHECK(std::adjacent_find(v.begin(), v.end()) == v.end(), "reservoir holds a duplicate");
    for (uint32_t id : v) ++held[id];
  }
  const double p = double(cap) / n, e = R * p, var = R * p * (1 - p);
  double chi2 = 0;
  for (int i = 0; i < n; ++i) chi2 += (held[i] - e) * (held[i] - e) / var;
  std::printf("reservoir (insert): chi2 = %.2f over %d items (bound 43.8)\n", chi2, n);
  LSH_CHECK(chi2 < 43.8, "reservoir insert: chi2 %.2f >= 43.8; first item held %d, last %d, expected %.0f", chi2,
            held[0], held[n - 1], e);

  // The same property through build(): identical rows land in one bucket per table, and every
  // table fills its reservoir from its own random stream.
  const int rows_n = 30, L = 64, dim = 8, cap2 = 5;
  HashConfig c;
  c.kind = HashKind::DWTA;
  c.K = 2;
  c.L = L;
  c.dim = dim;
  c.bucket_bits = 10;
  auto fam = HashFamily::create(c);
  HashTables bt(L, 10, cap2, Insertion::Reservoir, 77);
  std::vector<float> rows(static_cast<size_t>(rows_n) * dim, 0.25f);
  std::vector<int> held2(rows_n, 0);
  std::vector<uint32_t> buckets(L);
  fam->hash_dense(rows.data(), buckets.data());
  const int builds = 100;
  for (int k = 0; k < builds; ++k) {
    bt.build(*fam, rows.data(), rows_n, dim, 2);
    for (int tb = 0; tb < L; ++tb)
      for (uint32_t id : contents(bt, tb, buckets[tb])) ++held2[id];
  }
  const double R2 = double(builds) * L, p2 = double(cap2) / rows_n;
  double chi2b = 0;
  for (int i = 0; i < rows_n; ++i) chi2b += (held2[i] - R2 * p2) * (held2[i] - R2 * p2) / (R2 * p2 * (1 - p2));
  // 0.999 quantile of chi2(29) = 58.3
  std::printf("reservoir (build): chi2 = %.2f over %d items (bound 58.3)\n", chi2b, rows_n);
  LSH_CHECK(chi2b < 58.3, "reservoir build: chi2 %.2f >= 58.3", chi2b);
}

// build() == clear() + insert() in id order (FIFO), independent of the thread count, and a second
// build reuses the same memory.
void test_build() {
  for (HashKind kind : {HashKind::DWTA, HashKind::SimHash}) {
    const int n = 3000, dim = 24, L = 6, bb = 8;  // ~12 items per bucket, capacity 8: FIFO evicts
    HashConfig c;
    c.kind = kind;
    c.K = kind == HashKind::SimHash ? 8 : 4;  // SimHash: 8 bits fill the 2^8 buckets exactly
    c.L = L;
    c.dim = dim;
    c.bucket_bits = bb;
    c.seed = 4;
    auto fam = HashFamily::create(c);
    Rng rng(5);
    const size_t stride = 32;  // padded rows
    std::vector<float> rows(n * stride, -99.f);
    for (int i = 0; i < n; ++i)
      for (int d = 0; d < dim; ++d) rows[i * stride + d] = rng.normal();

    HashTables seq(L, bb, 8, Insertion::FIFO, 1);
    std::vector<uint32_t> b(L);
    for (int i = 0; i < n; ++i) {
      fam->hash_dense(&rows[i * stride], b.data());
      seq.insert(static_cast<uint32_t>(i), b.data());
    }
    HashTables one(L, bb, 8, Insertion::FIFO, 1), two(L, bb, 8, Insertion::FIFO, 1);
    one.build(*fam, rows.data(), n, stride, 1);
    two.build(*fam, rows.data(), n, stride, 2);
    HashTables r1(L, bb, 8, Insertion::Reservoir, 3), r2(L, bb, 8, Insertion::Reservoir, 3);
    r1.build(*fam, rows.data(), n, stride, 1);
    r2.build(*fam, rows.data(), n, stride, 2);
    int mismatch = 0, rmismatch = 0;
    size_t held = 0;
    for (int t = 0; t < L; ++t)
      for (uint32_t k = 0; k < (1u << bb); ++k) {
        auto s = contents(seq, t, k);
        mismatch += s != contents(one, t, k) || s != contents(two, t, k);
        rmismatch += contents(r1, t, k) != contents(r2, t, k);
        held += s.size();
        mismatch += seq.offered(t, k) != two.offered(t, k);
      }
    LSH_CHECK(mismatch == 0, "%s: build differs from sequential insert in %d buckets", hash_kind_name(kind), mismatch);
    LSH_CHECK(rmismatch == 0, "%s: reservoir build depends on thread count (%d buckets)", hash_kind_name(kind),
              rmismatch);
    LSH_CHECK(held > static_cast<size_t>(L) * n / 2, "%s: only %zu items held", hash_kind_name(kind), held);

    // Rebuild after the weights moved: same buffers, contents follow the new rows.
    const uint32_t* before = two.bucket(0, 0).first;
    const size_t bytes = two.memory_bytes();
    for (auto& v : rows) v = -v;
    two.build(*fam, rows.data(), n, stride, 2);
    LSH_CHECK(two.bucket(0, 0).first == before && two.memory_bytes() == bytes, "rebuild reallocated");
    fam->hash_dense(&rows[17 * stride], b.data());
    for (int t = 0; t < L; ++t) {
      auto v = contents(two, t, b[t]);
      const bool has17 = std::binary_search(v.begin(), v.end(), 17u);
      LSH_CHECK(has17 || static_cast<int>(two.offered(t, b[t])) > 8, "row 17 missing from its new bucket in table %d",
                t);
    }
  }
  // n = 0 is an empty build
  HashConfig c;
  c.kind = HashKind::WTA;
  c.K = 2;
  c.L = 2;
  c.dim = 8;
  c.bucket_bits = 6;
  auto fam = HashFamily::create(c);
  HashTables t(2, 6, 4, Insertion::FIFO, 1);
  t.build(*fam, nullptr, 0, 8, 2);
  LSH_CHECK(t.offered(0, 0) == 0, "empty build left items");
  LSH_CHECK(HashTables::bytes_for(50, 18, 128) == size_t{50} * 262144 * 129 * 4, "bytes_for");
}

}  // namespace

int main() {
  test_validation();
  test_fifo_newest();
  test_reservoir_uniform();
  test_build();
  return lsh_test::finish("test_lsh_tables");
}
