// With a seed, two runs give bit-identical losses and weights: with one thread (the contract), and
// also with two threads, which this design guarantees too (network.h: race-free grouping).
#include <cstring>
#include <vector>

#include "test_util.h"

using namespace slide;
using slide_test::Csr;

namespace {

std::vector<double> run(int threads, std::vector<float>* out_w) {
  NetworkConfig cfg = slide_test::small_config(60, 16, 50, false, false);
  cfg.threads = threads;
  cfg.schedule.rebuild_n0 = 3;
  cfg.schedule.rebuild_decay = 0.2;
  cfg.schedule.rehash_m = 7;
  cfg.optimizer.lr = 0.01f;
  Network net(cfg);
  Rng rng(5);
  std::vector<double> losses;
  for (int i = 0; i < 25; ++i) {
    Csr x, y;
    slide_test::make_batch(rng, 32, 60, 50, 8, x, y);
    losses.push_back(net.train_batch(x.view(), y.view()).loss);
  }
  out_w->clear();
  for (int l = 0; l < net.num_layers(); ++l) {
    Layer& L = net.layer(l);
    for (int r = 0; r < L.n_rows(); ++r) out_w->insert(out_w->end(), L.row(r), L.row(r) + L.row_len());
    out_w->insert(out_w->end(), L.bias(), L.bias() + L.n_out());
  }
  return losses;
}

}  // namespace

int main() {
  std::vector<float> w1, w2, w3;
  const auto l1 = run(1, &w1);
  const auto l2 = run(1, &w2);
  CHECK(l1 == l2, "one thread: losses differ between runs");
  CHECK(w1.size() == w2.size() && std::memcmp(w1.data(), w2.data(), w1.size() * sizeof(float)) == 0,
        "one thread: weights differ between runs");
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += l1[i] / 5;
    last += l1[l1.size() - 1 - i] / 5;
  }
  CHECK(last < 0.95 * first, "loss did not decrease: mean of first 5 %g, of last 5 %g", first, last);
  const auto l3 = run(2, &w3);
  CHECK(l1 == l3, "two threads: losses differ from one thread");
  CHECK(w1.size() == w3.size() && std::memcmp(w1.data(), w3.data(), w1.size() * sizeof(float)) == 0,
        "two threads: weights differ from one thread");
  std::printf("losses: first %.5f last %.5f\n", l1.front(), l1.back());
  return slide_test::finish("test_determinism");
}
