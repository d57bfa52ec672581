// Active-set selection: forced labels first and always present, no duplicates, budgets, threshold
// and top-k semantics, checked against a brute-force reference on random tables.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

#include "active_set.h"
#include "hash_tables.h"
#include "lsh_test_util.h"

using namespace slide;

namespace {

SelectionConfig sel(SelectionKind k, int mn, int mx, int th = 1) {
  SelectionConfig c;
  c.kind = k;
  c.min_active = mn;
  c.max_active = mx;
  c.threshold = th;
  return c;
}

void test_validation() {
  LSH_CHECK_THROWS(std::invalid_argument, "n_neurons", ActiveSetSelector(0, sel(SelectionKind::Vanilla, 0, 0), 1));
  LSH_CHECK_THROWS(std::invalid_argument, "min_active", ActiveSetSelector(10, sel(SelectionKind::Vanilla, -1, 0), 1));
  LSH_CHECK_THROWS(std::invalid_argument, "exceeds max_active",
                   ActiveSetSelector(10, sel(SelectionKind::Vanilla, 5, 4), 1));
  LSH_CHECK_THROWS(std::invalid_argument, "threshold", ActiveSetSelector(10, sel(SelectionKind::Threshold, 0, 0, 0), 1));
  LSH_CHECK_THROWS(std::invalid_argument, "TopK", ActiveSetSelector(10, sel(SelectionKind::TopK, 0, 0), 1));
  LSH_CHECK_THROWS(std::invalid_argument, "unknown selection", parse_selection_kind("union"));

  HashTables t(2, 3, 4, Insertion::FIFO, 1);
  uint32_t b[2] = {1, 2};
  t.insert(3, b);
  ActiveSetSelector s(10, sel(SelectionKind::Threshold, 0, 0, 3), 1);
  std::vector<int32_t> out;
  LSH_CHECK_THROWS(std::invalid_argument, "exceeds L", s.select(t, b, nullptr, 0, out));
  ActiveSetSelector v(10, sel(SelectionKind::Vanilla, 0, 0), 1);
  const int32_t bad[2] = {2, 10};
  LSH_CHECK_THROWS(std::out_of_range, "forced id 10", v.select(t, b, bad, 2, out));
  t.insert(12, b);  // an id beyond this layer
  LSH_CHECK_THROWS(std::out_of_range, "n_neurons", v.select(t, b, nullptr, 0, out));
  // After the errors the scratch is clean: a valid call on tables without the bad id works.
  HashTables ok(2, 3, 4, Insertion::FIFO, 1);
  ok.insert(3, b);
  v.select(ok, b, nullptr, 0, out);
  LSH_CHECK(out == std::vector<int32_t>{3}, "selector state corrupted after an error");
}

// Random tables; compare every selection against a brute-force count of the L buckets.
void test_against_reference() {
  Rng rng(2024);
  const int n = 300, L = 8, bb = 4, cap = 6;
  for (int round = 0; round < 40; ++round) {
    HashTables t(L, bb, cap, round % 2 ? Insertion::Reservoir : Insertion::FIFO, round);
    std::vector<uint32_t> b(L);
    for (int i = 0; i < n; ++i) {
      for (auto& x : b) x = rng.below(1u << bb);
      t.insert(static_cast<uint32_t>(i), b.data());
    }
    const SelectionKind kinds[3] = {SelectionKind::Vanilla, SelectionKind::Threshold, SelectionKind::TopK};
    for (SelectionKind kind : kinds) {
      const int th = 1 + static_cast<int>(rng.below(3));
      const int mx = kind == SelectionKind::TopK || rng.below(2) ? 1 + static_cast<int>(rng.below(40)) : 0;
      const int mn = static_cast<int>(rng.below(static_cast<uint32_t>(mx > 0 ? mx + 1 : 60)));
      ActiveSetSelector s(n, sel(kind, mn, mx, th), round * 7 + 1);
      std::vector<int32_t> out;
      for (int q = 0; q < 25; ++q) {
        for (auto& x : b) x = rng.below(1u << bb);
        std::vector<int32_t> forced;
        const int nf = static_cast<int>(rng.below(5));
        for (int i = 0; i < nf; ++i) forced.push_back(static_cast<int32_t>(rng.below(n)));
        if (nf > 1) forced.push_back(forced[0]);  // a duplicate label
        s.select(t, b.data(), forced.data(), static_cast<int>(forced.size()), out);

        std::map<int32_t, int> cnt;  // reference: tables holding each neuron
        for (int tb = 0; tb < L; ++tb) {
          auto [p, c] = t.bucket(tb, b[tb]);
          for (int j = 0; j < c; ++j) ++cnt[static_cast<int32_t>(p[j])];
        }
        std::vector<int32_t> uforced;
        for (int32_t f : forced)
          if (std::find(uforced.begin(), uforced.end(), f) == uforced.end()) uforced.push_back(f);
        std::set<int32_t> eligible;  // what the kind admits, forced excluded
        for (auto [id, c] : cnt)
          if ((kind != SelectionKind::Threshold || c >= th) &&
              std::find(uforced.begin(), uforced.end(), id) == uforced.end())
            eligible.insert(id);

        const std::set<int32_t> uniq(out.begin(), out.end());
        LSH_CHECK(uniq.size() == out.size(), "round %d: duplicates in the active set", round);
        LSH_CHECK(std::equal(uforced.begin(), uforced.end(), out.begin()) && out.size() >= uforced.size(),
                  "round %d: forced ids are not first / missing", round);
        const size_t capn = mx > 0 ? static_cast<size_t>(mx) : SIZE_MAX;
        const size_t from_lsh = std::min(eligible.size(), capn > uforced.size() ? capn - uforced.size() : 0);
        const size_t expect = std::max(uforced.size() + from_lsh, static_cast<size_t>(mn));
        LSH_CHECK(out.size() == expect, "round %d kind %d: size %zu, expected %zu (mn %d mx %d eligible %zu forced %zu)",
                  round, static_cast<int>(kind), out.size(), expect, mn, mx, eligible.size(), uforced.size());
        // The LSH part comes from the eligible set; anything after it is padding.
        size_t i = uforced.size();
        for (; i < uforced.size() + from_lsh && i < out.size(); ++i)
          LSH_CHECK(eligible.count(out[i]) == 1, "round %d: id %d selected but not eligible", round, out[i]);
        for (; i < out.size(); ++i)
          LSH_CHECK(eligible.count(out[i]) == 0 || from_lsh == eligible.size(),
                    "round %d: padding %d was an eligible candidate", round, out[i]);
        for (int32_t id : out) LSH_CHECK(id >= 0 && id < n, "id %d out of range", id);
        if (kind == SelectionKind::TopK || (kind == SelectionKind::Threshold && from_lsh < eligible.size())) {
          // every chosen candidate is found in at least as many tables as every unchosen one
          int min_in = 1 << 30, max_out = 0;
          const std::set<int32_t> chosen(out.begin() + uforced.size(), out.begin() + uforced.size() + from_lsh);
          for (int32_t id : eligible) {
            if (chosen.count(id)) min_in = std::min(min_in, cnt[id]);
            else max_out = std::max(max_out, cnt[id]);
          }
          LSH_CHECK(chosen.empty() || min_in >= max_out, "round %d: top-k kept count %d but dropped count %d", round,
                    min_in, max_out);
        }
      }
    }
  }
}

// Forced labels survive a max budget smaller than their number; min_active = n gives everyone.
void test_budget_edges() {
  HashTables t(3, 2, 4, Insertion::FIFO, 1);
  uint32_t b[3] = {0, 1, 2};
  for (uint32_t id : {5u, 6u, 7u}) t.insert(id, b);
  std::vector<int32_t> out;
  ActiveSetSelector cap2(20, sel(SelectionKind::Vanilla, 0, 2), 1);
  const int32_t forced[4] = {9, 1, 9, 4};
  cap2.select(t, b, forced, 4, out);
  LSH_CHECK((out == std::vector<int32_t>{9, 1, 4}), "forced ids must all stay, deduplicated, over a max budget");
  ActiveSetSelector all(20, sel(SelectionKind::Vanilla, 20, 0), 1);
  all.select(t, b, forced, 4, out);
  std::vector<int32_t> sorted = out;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> everyone(20);
  for (int i = 0; i < 20; ++i) everyone[i] = i;
  LSH_CHECK(sorted == everyone, "min_active = n must give every neuron once");
  ActiveSetSelector over(20, sel(SelectionKind::Vanilla, 50, 0), 1);  // min above n: capped at n
  over.select(t, b, nullptr, 0, out);
  LSH_CHECK(out.size() == 20, "min_active > n: %zu neurons", out.size());
  // Threshold: 5,6,7 are in all three tables, 8 only in one.
  uint32_t b8[3] = {0, 3, 3};
  t.insert(8, b8);
  ActiveSetSelector th(20, sel(SelectionKind::Threshold, 0, 0, 2), 1);
  th.select(t, b, nullptr, 0, out);
  std::sort(out.begin(), out.end());
  LSH_CHECK((out == std::vector<int32_t>{5, 6, 7}), "threshold 2 must drop the neuron seen once");
  ActiveSetSelector van(20, sel(SelectionKind::Vanilla, 0, 0), 1);
  van.select(t, b, nullptr, 0, out);
  std::sort(out.begin(), out.end());
  LSH_CHECK((out == std::vector<int32_t>{5, 6, 7, 8}), "vanilla is the union");
}

// Vanilla truncation is a uniform subset: over many queries each of 40 candidates is kept about
// equally often (each kept with probability 10/40; 4-sigma band per neuron).
void test_vanilla_truncation_uniform() {
  const int L = 4;
  HashTables t(L, 3, 10, Insertion::FIFO, 1);
  for (int tb = 0; tb < L; ++tb)
    for (int j = 0; j < 10; ++j) {
      std::vector<uint32_t> b(L, 7);  // neuron tb*10+j only in table tb's bucket 0
      b[tb] = 0;
      t.insert(static_cast<uint32_t>(tb * 10 + j), b.data());
    }
  ActiveSetSelector s(40, sel(SelectionKind::Vanilla, 0, 10), 5);
  std::vector<int> kept(40, 0);
  std::vector<uint32_t> q(L, 0);
  std::vector<int32_t> out;
  const int R = 4000;
  for (int r = 0; r < R; ++r) {
    s.select(t, q.data(), nullptr, 0, out);
    for (int32_t id : out) ++kept[id];
  }
  const double e = R * 0.25, sd = std::sqrt(R * 0.25 * 0.75);
  for (int i = 0; i < 40; ++i)
    LSH_CHECK(std::fabs(kept[i] - e) < 4 * sd, "neuron %d kept %d times, expected %.0f +- %.0f", i, kept[i], e, 4 * sd);
}

// pad_below: padding up to min_active happens only when fewer than pad_below were chosen; log_q
// gives forced ids 0, padding log(need / (n - chosen)) and a neuron found in c of L tables
// log(1 - (1 - c/L)^L) (combined with the padding rate when padding happened).
void test_pad_below_and_log_q() {
  const int L = 4, n = 100;
  HashTables t(L, 3, 16, Insertion::FIFO, 1);
  uint32_t all[L] = {0, 0, 0, 0};
  uint32_t two[L] = {0, 0, 5, 5};
  for (uint32_t id = 10; id < 16; ++id) t.insert(id, all);  // 6 neurons in every table
  t.insert(20, two);                                        // 1 neuron in tables 0 and 1 only
  const int32_t forced[2] = {3, 4};
  std::vector<int32_t> out;
  std::vector<float> log_q;
  SelectionConfig c = sel(SelectionKind::Vanilla, 12, 0);
  c.pad_below = 9;  // 2 forced + 7 retrieved = 9 chosen: not below 9, so no padding
  ActiveSetSelector no_pad(n, c, 1);
  no_pad.select(t, all, forced, 2, out, true, &log_q);
  LSH_CHECK(out.size() == 9, "pad_below 9 with 9 chosen must not pad: %zu", out.size());
  LSH_CHECK(no_pad.last().padded == 0, "padded %d", no_pad.last().padded);
  LSH_CHECK(log_q.size() == out.size() && log_q[0] == 0.0f && log_q[1] == 0.0f, "forced ids: log q = 0");
  for (size_t p = 2; p < out.size(); ++p) {
    const double q = out[p] == 20 ? 1.0 - std::pow(0.5, L) : 1.0;
    LSH_CHECK(std::fabs(log_q[p] - std::log(q)) < 1e-6, "neuron %d: log q %g, want %g", out[p], log_q[p], std::log(q));
  }
  c.pad_below = 10;  // now 9 < 10: pad to 12, 3 of the 91 not chosen
  ActiveSetSelector pad(n, c, 1);
  pad.select(t, all, forced, 2, out, true, &log_q);
  LSH_CHECK(out.size() == 12 && pad.last().padded == 3, "pad_below 10 must pad to 12: %zu", out.size());
  const double r = 3.0 / 91.0;
  for (size_t p = 2; p < out.size(); ++p) {
    const double q_lsh = p >= 9 ? 0.0 : (out[p] == 20 ? 1.0 - std::pow(0.5, L) : 1.0);
    const double want = std::log(q_lsh + (1.0 - q_lsh) * r);
    LSH_CHECK(std::fabs(log_q[p] - want) < 1e-6, "position %zu: log q %g, want %g", p, log_q[p], want);
  }
  c.pad_below = 0;  // 0: pad whenever below min_active
  ActiveSetSelector always(n, c, 1);
  always.select(t, all, forced, 2, out);
  LSH_CHECK(out.size() == 12, "pad_below 0 must pad to min_active: %zu", out.size());
  SelectionConfig bad = sel(SelectionKind::Vanilla, 0, 0);
  bad.pad_below = -1;
  LSH_CHECK_THROWS(std::invalid_argument, "pad_below", ActiveSetSelector(10, bad, 1));
  ActiveSetSelector topk(n, sel(SelectionKind::TopK, 0, 5), 1);
  LSH_CHECK_THROWS(std::invalid_argument, "vanilla and random", topk.select(t, all, nullptr, 0, out, true, &log_q));
}

}  // namespace

// Rerank: select() returns forced ids then the pool (the union, or its rerank_pool most found),
// unpadded; keep_best keeps the forced ids and the best scores of the rest (ties: earlier
// position, NaN last), then pads without duplicates.
void test_rerank_keep_best() {
  SelectionConfig bad = sel(SelectionKind::Rerank, 0, 0);
  LSH_CHECK_THROWS(std::invalid_argument, "Rerank", ActiveSetSelector(10, bad, 1));
  bad = sel(SelectionKind::Rerank, 0, 4);
  bad.rerank_pool = 3;
  LSH_CHECK_THROWS(std::invalid_argument, "rerank_pool", ActiveSetSelector(10, bad, 1));
  LSH_CHECK(parse_selection_kind("ReRank") == SelectionKind::Rerank, "parse rerank");

  // Two tables of one bucket each: 1..6 in table 0, 4..9 in table 1 (4, 5, 6 in both).
  HashTables t(2, 1, 8, Insertion::FIFO, 1);
  uint32_t b[2] = {0, 0};
  for (uint32_t id = 1; id <= 9; ++id) {
    uint32_t where[2] = {id <= 6 ? 0u : 1u, id >= 4 ? 0u : 1u};
    t.insert(id, where);
  }
  SelectionConfig c = sel(SelectionKind::Rerank, 4, 4);
  ActiveSetSelector s(20, c, 3);
  std::vector<int32_t> out;
  const int32_t forced[2] = {5, 0};
  s.select(t, b, forced, 2, out, /*pad=*/true);
  // Forced 5, 0; then the union without them (8 ids), never padded and never cut by max_active.
  LSH_CHECK(out.size() == 10 && out[0] == 5 && out[1] == 0, "rerank pool: %zu", out.size());
  std::vector<float> val(out.size());
  for (size_t p = 0; p < out.size(); ++p) val[p] = static_cast<float>(out[p] % 4);  // 3, 7 score 3
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t p = 2; p < out.size(); ++p)
    if (out[p] == 9) val[p] = nan;
  std::vector<int32_t> pool = out;
  s.keep_best(out, val, /*pad=*/false);
  // Room 4 - 2 = 2: ids 3 and 7 (score 3), in their order in the pool.
  std::vector<int32_t> want = {5, 0};
  for (int32_t id : pool)
    if (id == 3 || id == 7) want.push_back(id);
  LSH_CHECK(out == want, "keep_best kept the wrong ids");
  LSH_CHECK(val.size() == out.size() && val[2] == 3.0f && val[3] == 3.0f, "scores follow their ids");
  LSH_CHECK(s.last().forced == 2 && s.last().retrieved == 2 && s.last().padded == 0, "composition");

  // Ties at the cut go to the earlier position; NaN never beats a number.
  s.select(t, b, nullptr, 0, out);
  pool = out;
  val.assign(out.size(), 1.0f);
  for (size_t p = 0; p < out.size(); ++p)
    if (out[p] == 9) val[p] = nan;
  s.keep_best(out, val, /*pad=*/true);
  LSH_CHECK(out.size() == 4 && std::equal(pool.begin(), pool.begin() + 4, out.begin()),
            "ties: the first four of the pool");

  // A pool below min_active: all kept, then padded to min_active without duplicates.
  ActiveSetSelector p(20, sel(SelectionKind::Rerank, 12, 12), 5);
  p.select(t, b, forced, 1, out, /*pad=*/true);
  LSH_CHECK(out.size() == 9, "forced 5 and the 8 others of the union, unpadded: %zu", out.size());
  val.assign(out.size(), 0.0f);
  p.keep_best(out, val, /*pad=*/true);
  LSH_CHECK(out.size() == 12 && p.last().retrieved == 8 && p.last().padded == 3, "padded to 12: %zu", out.size());
  std::set<int32_t> uniq(out.begin(), out.end());
  LSH_CHECK(uniq.size() == out.size(), "padding duplicated a kept id");
  LSH_CHECK(val.size() == 9, "keep_best leaves the padding's scores to the caller");

  // rerank_pool caps what is scored by table hits: 4, 5, 6 are in both tables.
  c.rerank_pool = 4;
  ActiveSetSelector capped(20, c, 3);
  capped.select(t, b, nullptr, 0, out);
  std::set<int32_t> got(out.begin(), out.end());
  LSH_CHECK(out.size() == 4 && got.count(4) && got.count(5) && got.count(6), "pool of 4: the 3 found twice + 1");

  ActiveSetSelector vanilla(20, sel(SelectionKind::Vanilla, 0, 0), 1);
  vanilla.select(t, b, nullptr, 0, out);
  std::vector<float> v(out.size(), 0.0f);
  LSH_CHECK_THROWS(std::logic_error, "Rerank", vanilla.keep_best(out, v));
  capped.select(t, b, nullptr, 0, out);
  v.assign(1, 0.0f);
  LSH_CHECK_THROWS(std::invalid_argument, "scores", capped.keep_best(out, v));
}

// max_retrieved: each selection keeps at most that many neurons from the tables, by its own rule
// (top-k: most found; rerank: best score; vanilla: a uniform subset, with log q's keep rate), and
// pads the rest up to min_active; forced ids are not counted against it.
void test_max_retrieved() {
  SelectionConfig bad = sel(SelectionKind::TopK, 0, 4);
  bad.max_retrieved = 5;
  LSH_CHECK_THROWS(std::invalid_argument, "max_retrieved", ActiveSetSelector(10, bad, 1));
  bad.max_retrieved = -1;
  LSH_CHECK_THROWS(std::invalid_argument, "max_retrieved", ActiveSetSelector(10, bad, 1));
  bad = sel(SelectionKind::Random, 4, 0);
  bad.max_retrieved = 2;
  LSH_CHECK_THROWS(std::invalid_argument, "Random", ActiveSetSelector(10, bad, 1));

  // Four tables of one bucket: 10..13 in all four, 14..17 in two, 18..25 in one.
  const int L = 4, n = 100;
  HashTables t(L, 1, 32, Insertion::FIFO, 1);
  uint32_t b[L] = {0, 0, 0, 0};
  for (uint32_t id = 10; id < 26; ++id) {
    uint32_t where[L];
    const int in = id < 14 ? 4 : id < 18 ? 2 : 1;
    for (int k = 0; k < L; ++k) where[k] = k < in ? 0u : 1u;
    t.insert(id, where);
  }
  const int32_t forced[2] = {3, 12};  // 12 is also in the tables: forced, not retrieved
  std::vector<int32_t> out;

  SelectionConfig c = sel(SelectionKind::TopK, 12, 12);
  c.max_retrieved = 5;
  ActiveSetSelector topk(n, c, 7);
  topk.select(t, b, forced, 2, out);
  LSH_CHECK(out.size() == 12, "topk: padded to min_active 12, got %zu", out.size());
  LSH_CHECK(topk.last().forced == 2 && topk.last().retrieved == 5 && topk.last().padded == 5, "topk composition");
  // The 5 most found without 12: 10, 11, 13 (four tables) and the first two of 14..17 (two).
  LSH_CHECK(out[2] == 10 && out[3] == 11 && out[4] == 13 && out[5] == 14 && out[6] == 15,
            "topk kept the wrong retrieved ids");
  std::set<int32_t> uniq(out.begin(), out.end());
  LSH_CHECK(uniq.size() == out.size(), "padding duplicated a kept id");
  topk.select(t, b, forced, 2, out, /*pad=*/false);
  LSH_CHECK(out.size() == 7, "topk without padding: forced + 5, got %zu", out.size());

  c = sel(SelectionKind::Rerank, 12, 12);
  c.max_retrieved = 3;
  ActiveSetSelector rerank(n, c, 7);
  rerank.select(t, b, forced, 2, out);
  LSH_CHECK(out.size() == 17, "rerank pool: forced + the 15 others, got %zu", out.size());
  std::vector<float> val(out.size());
  for (size_t p = 0; p < out.size(); ++p) val[p] = static_cast<float>(out[p]);  // higher id, higher score
  rerank.keep_best(out, val, /*pad=*/true);
  LSH_CHECK(out.size() == 12 && out[2] == 23 && out[3] == 24 && out[4] == 25, "rerank keeps the 3 best, then pads");
  LSH_CHECK(rerank.last().retrieved == 3 && rerank.last().padded == 7, "rerank composition");

  c = sel(SelectionKind::Vanilla, 12, 0);
  c.max_retrieved = 4;
  ActiveSetSelector vanilla(n, c, 7);
  std::vector<float> log_q;
  vanilla.select(t, b, forced, 2, out, true, &log_q);
  LSH_CHECK(out.size() == 12 && vanilla.last().retrieved == 4 && vanilla.last().padded == 6, "vanilla composition");
  for (size_t p = 2; p < 6; ++p)
    LSH_CHECK(out[p] >= 10 && out[p] < 26 && out[p] != 12, "vanilla: position %zu holds %d", p, out[p]);
  // A uniform 4 of the 15 candidates: each kept with 4/15, padding r = 6 / (100 - 6).
  const double r = 6.0 / 94.0;
  for (size_t p = 2; p < 6; ++p) {
    const int in = out[p] < 14 ? 4 : out[p] < 18 ? 2 : 1;
    const double q_lsh = (1.0 - std::pow(1.0 - static_cast<double>(in) / L, L)) * 4.0 / 15.0;
    const double want = std::log(q_lsh + (1.0 - q_lsh) * r);
    LSH_CHECK(std::fabs(log_q[p] - want) < 1e-6, "vanilla log q at %zu: %g, want %g", p, log_q[p], want);
  }
}

int main() {
  test_validation();
  test_against_reference();
  test_budget_edges();
  test_vanilla_truncation_uniform();
  test_pad_below_and_log_q();
  test_rerank_keep_best();
  test_max_retrieved();
  return lsh_test::finish("test_lsh_select");
}
