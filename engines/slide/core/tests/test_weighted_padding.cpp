// Frequency-drawn padding: the alias table's draw frequencies against its weights, and the
// selector's weighted padding (successive sampling without replacement) against exact inclusion
// probabilities enumerated for small layers, on both of its paths (rejection, and the
// Efraimidis-Spirakis keys it falls back to); its log-q against the expected-count formula.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <stdexcept>
#include <vector>

#include "active_set.h"
#include "alias_sampler.h"
#include "lsh_test_util.h"

using namespace slide;

namespace {

// Exact inclusion probabilities of drawing m distinct ids successively, each draw by weight
// among the ids not drawn yet (what rejection of repeats amounts to). Enumerates every ordered
// prefix: small n only.
void enumerate(const std::vector<double>& w, std::vector<bool>& used, int left, double prob, std::vector<double>& incl) {
  if (left == 0) return;
  double free_mass = 0.0;
  for (size_t i = 0; i < w.size(); ++i)
    if (!used[i]) free_mass += w[i];
  for (size_t i = 0; i < w.size(); ++i) {
    if (used[i]) continue;
    const double p = prob * w[i] / free_mass;
    incl[i] += p;
    used[i] = true;
    enumerate(w, used, left - 1, p, incl);
    used[i] = false;
  }
}

std::vector<double> exact_inclusion(const std::vector<double>& w, int m) {
  std::vector<double> incl(w.size(), 0.0);
  std::vector<bool> used(w.size(), false);
  enumerate(w, used, m, 1.0, incl);
  return incl;
}

void test_alias_frequencies() {
  // A heavy head and a long flat tail, as label frequencies have.
  std::vector<double> w = {500.0, 120.0, 30.0, 7.5};
  for (int i = 0; i < 60; ++i) w.push_back(1.0 + (i % 3));
  AliasSampler s(w);
  double sum = 0.0;
  for (double x : w) sum += x;
  const int draws = 2000000;
  std::vector<int> hits(w.size(), 0);
  Rng rng(7);
  for (int i = 0; i < draws; ++i) ++hits[s.draw(rng)];
  for (size_t i = 0; i < w.size(); ++i) {
    const double p = w[i] / sum;
    LSH_CHECK(std::fabs(s.prob(static_cast<int>(i)) - p) < 1e-12, "prob(%zu) = %g, want %g", i, s.prob(static_cast<int>(i)), p);
    const double sigma = std::sqrt(draws * p * (1.0 - p));
    LSH_CHECK(std::fabs(hits[i] - draws * p) < 5.0 * sigma + 1.0, "id %zu drawn %d times, want %.0f +- %.0f", i, hits[i],
              draws * p, sigma);
  }
  // One weight: always that id.
  AliasSampler one({3.0});
  for (int i = 0; i < 100; ++i) LSH_CHECK(one.draw(rng) == 0, "a one-id sampler drew another id");
}

void test_alias_refuses_bad_weights() {
  LSH_CHECK_THROWS(std::invalid_argument, "no weights", AliasSampler(std::vector<double>{}));
  LSH_CHECK_THROWS(std::invalid_argument, "weight 1", AliasSampler(std::vector<double>{1.0, 0.0}));
  LSH_CHECK_THROWS(std::invalid_argument, "weight 0", AliasSampler(std::vector<double>{-1.0, 1.0}));
  LSH_CHECK_THROWS(std::invalid_argument, "weight 2",
                   AliasSampler(std::vector<double>{1.0, 1.0, std::numeric_limits<double>::quiet_NaN()}));
  LSH_CHECK_THROWS(std::invalid_argument, "weight 0",
                   AliasSampler(std::vector<double>{std::numeric_limits<double>::infinity()}));
  LSH_CHECK_THROWS(std::invalid_argument, "overflows",
                   AliasSampler(std::vector<double>{1e308, 1e308}));
}

SelectionConfig weighted(const std::vector<double>& w, int min_active) {
  SelectionConfig c;
  c.kind = SelectionKind::Random;
  c.min_active = min_active;
  c.padding_sampler = std::make_shared<const AliasSampler>(w);
  return c;
}

// Selector frequencies against the enumeration. `path` names the case in messages.
void check_inclusion(const std::vector<double>& w, int m, const int32_t* forced, int n_forced, const char* path) {
  const int n = static_cast<int>(w.size());
  ActiveSetSelector sel(n, weighted(w, m + n_forced), 11);
  // The forced ids are not drawable: padding chooses among the others.
  std::vector<double> free_w;
  std::vector<int> free_id;
  for (int i = 0; i < n; ++i) {
    bool f = false;
    for (int j = 0; j < n_forced; ++j) f = f || forced[j] == i;
    if (!f) {
      free_w.push_back(w[i]);
      free_id.push_back(i);
    }
  }
  const std::vector<double> want = exact_inclusion(free_w, m);
  const int rounds = 200000;
  std::vector<int> hits(n, 0);
  std::vector<int32_t> out;
  for (int r = 0; r < rounds; ++r) {
    sel.select_random(forced, n_forced, out);
    std::set<int32_t> seen(out.begin(), out.end());
    if (seen.size() != out.size() || static_cast<int>(out.size()) != m + n_forced) {
      LSH_CHECK(false, "%s: %zu ids (%zu distinct), want %d", path, out.size(), seen.size(), m + n_forced);
      return;
    }
    for (int j = 0; j < n_forced; ++j) LSH_CHECK(out[j] == forced[j], "%s: forced ids must come first", path);
    for (int32_t id : out) ++hits[id];
  }
  for (size_t k = 0; k < free_id.size(); ++k) {
    const double p = want[k];
    const double sigma = std::sqrt(rounds * p * (1.0 - p));
    const int got = hits[free_id[k]];
    LSH_CHECK(std::fabs(got - rounds * p) < 5.0 * sigma + 1.0, "%s: id %d included %d times, want %.0f +- %.0f", path,
              free_id[k], got, rounds * p, sigma);
  }
}

void test_selector_inclusion() {
  // Rejection path: few of several ids, mild skew.
  check_inclusion({1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0}, 3, nullptr, 0, "rejection");
  const int32_t forced[1] = {6};
  check_inclusion({1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0}, 3, forced, 1, "rejection, one forced");
  // Fallback path: a head so heavy that the light ids take far more than 4 * need + 64 draws.
  check_inclusion({100000.0, 1.0, 2.0, 3.0, 4.0, 5.0}, 4, nullptr, 0, "fallback");
}

void test_log_q_formula() {
  // A wide, skewed layer: log_q of every padded id is log(1 - (1 - p_i)^T), T the draws taken.
  const int n = 5000;
  std::vector<double> w(n);
  for (int i = 0; i < n; ++i) w[i] = std::pow(static_cast<double>(n - i), 0.75);
  AliasSampler ref(w);
  ActiveSetSelector sel(n, weighted(w, 400), 3);
  const int32_t forced[2] = {0, 17};
  std::vector<int32_t> out;
  std::vector<float> log_q;
  sel.select_random(forced, 2, out, &log_q);
  LSH_CHECK(out.size() == 400 && log_q.size() == 400, "400 active, got %zu (log_q %zu)", out.size(), log_q.size());
  const double T = static_cast<double>(sel.last_pad_draws());
  LSH_CHECK(T >= 398.0, "398 ids need at least 398 draws, got %g", T);
  LSH_CHECK(log_q[0] == 0.0f && log_q[1] == 0.0f, "forced ids are always included (log_q 0)");
  for (size_t p = 2; p < out.size(); ++p) {
    const double want = std::log(-std::expm1(T * std::log1p(-ref.prob(out[p]))));
    LSH_CHECK(std::fabs(log_q[p] - want) < 1e-5 * (1.0 + std::fabs(want)), "log_q[%zu] = %g, want %g", p, log_q[p], want);
  }
  const ActiveSetSelector::Composition& c = sel.last();
  LSH_CHECK(c.forced == 2 && c.retrieved == 0 && c.padded == 398, "composition %d/%d/%d", c.forced, c.retrieved,
            c.padded);
}

}  // namespace

int main() {
  test_alias_frequencies();
  test_alias_refuses_bad_weights();
  test_selector_inclusion();
  test_log_q_formula();
  return lsh_test::finish("test_weighted_padding");
}
