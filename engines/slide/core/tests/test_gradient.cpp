// With every output neuron active, the network's loss gradient (as accumulated by the training
// step's row grouping) matches central finite differences of its loss, for every layer kind:
// input-major dense hidden layer, neuron-major hidden layer, neuron-major output layer, biases.
#include <cmath>
#include <vector>

#include "test_util.h"

using namespace slide;
using slide_test::Csr;

namespace {

void check_network(bool second_hidden) {
  NetworkConfig cfg = slide_test::small_config(30, 8, 12, /*all_active_output=*/true, second_hidden);
  cfg.init_std = 0.3f;  // large enough that ReLUs are not all on or all off
  Network net(cfg);
  Rng rng(3);
  Csr x, y;
  slide_test::make_batch(rng, 6, 30, 12, 5, x, y);
  // One sample without labels: contributes zero loss and zero gradient (as the dense reference).
  y.indptr.back() = y.indptr[y.indptr.size() - 2];
  y.indices.resize(y.indptr.back());

  std::vector<std::vector<float>> gw, gb;
  const double loss = net.loss_and_gradients(x.view(), y.view(), &gw, &gb);
  CHECK(std::isfinite(loss) && loss > 0.0, "loss %g", loss);

  auto loss_now = [&]() {
    std::vector<std::vector<float>> w2, b2;
    return net.loss_and_gradients(x.view(), y.view(), &w2, &b2);
  };
  // Central differences at h = 1e-3 (float32 weights; loss summed in double): truncation O(h^2),
  // rounding ~ 1e-7 / h. A ReLU kink inside [w-h, w+h] makes the loss non-differentiable there:
  // detected by the two one-sided differences disagreeing, skipped, and counted.
  const float h = 1e-3f;
  int checked = 0, kinks = 0;
  const double l0 = loss_now();
  auto agree = [&](double lp, double lm, double an, const char* what, int l, int r, int c) {
    const double fwd = (lp - l0) / h, bwd = (l0 - lm) / h, fd = (lp - lm) / (2.0 * h);
    if (std::fabs(fwd - bwd) > 1e-2 + 0.05 * std::fabs(fd)) {
      ++kinks;
      return;
    }
    CHECK(std::fabs(fd - an) <= 1e-3 + 1e-2 * std::fabs(fd), "layer %d %s[%d][%d]: fd %.6g analytic %.6g", l, what, r,
          c, fd, an);
    ++checked;
  };
  for (int l = 0; l < net.num_layers(); ++l) {
    Layer& L = net.layer(l);
    for (int r = 0; r < L.n_rows(); r += 3) {
      for (int c = 0; c < L.row_len(); c += 2) {
        float& w = L.row(r)[c];
        const float w0 = w;
        w = w0 + h;
        const double lp = loss_now();
        w = w0 - h;
        const double lm = loss_now();
        w = w0;
        agree(lp, lm, gw[l][static_cast<size_t>(r) * L.row_len() + c], "w", l, r, c);
      }
    }
    for (int j = 0; j < L.n_out(); ++j) {
      float& b = L.bias()[j];
      const float b0 = b;
      b = b0 + h;
      const double lp = loss_now();
      b = b0 - h;
      const double lm = loss_now();
      b = b0;
      agree(lp, lm, gb[l][j], "b", l, j, 0);
    }
  }
  std::printf("gradient check (%s): %d parameters compared, %d skipped at ReLU kinks, loss %.5f\n",
              second_hidden ? "dense + sampled hidden" : "dense hidden", checked, kinks, loss);
  CHECK(checked > 50 && kinks * 10 < checked, "too few parameters checked (%d, %d kinks)", checked, kinks);
}

}  // namespace

int main() {
  for (const std::string& name : kernels_supported()) {
    std::string err;
    select_kernels(name, &err);
    std::printf("kernel %s\n", name.c_str());
    check_network(false);
    check_network(true);
  }
  return slide_test::finish("test_gradient");
}
