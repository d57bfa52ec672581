// A saved model loads back bit-identical (weights, moments, step) and predicts the same; files
// that are not models, of another version, or truncated are refused with a reason.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

#include "test_util.h"

using namespace slide;
using slide_test::Csr;

namespace {

bool same_weights(Network& a, Network& b) {
  if (a.num_layers() != b.num_layers()) return false;
  for (int l = 0; l < a.num_layers(); ++l) {
    Layer &x = a.layer(l), &y = b.layer(l);
    if (x.n_rows() != y.n_rows() || x.row_len() != y.row_len()) return false;
    for (int r = 0; r < x.n_rows(); ++r)
      if (std::memcmp(x.row(r), y.row(r), sizeof(float) * x.row_len()) != 0 ||
          std::memcmp(x.m_row(r), y.m_row(r), sizeof(float) * x.row_len()) != 0 ||
          std::memcmp(x.v_row(r), y.v_row(r), sizeof(float) * x.row_len()) != 0)
        return false;
    if (std::memcmp(x.bias(), y.bias(), sizeof(float) * x.n_out()) != 0) return false;
  }
  return true;
}

std::string load_error(const std::string& path) {
  try {
    Network::load(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

int main() {
  const std::string path = "test_save_load.model";
  NetworkConfig cfg = slide_test::small_config(40, 16, 30, false, true);
  Network net(cfg);
  Rng rng(11);
  for (int i = 0; i < 7; ++i) {
    Csr x, y;
    slide_test::make_batch(rng, 16, 40, 30, 6, x, y);
    net.train_batch(x.view(), y.view());
  }
  net.save(path);
  auto back = Network::load(path);
  CHECK(back->step() == net.step(), "step %lld vs %lld", (long long)back->step(), (long long)net.step());
  CHECK(same_weights(net, *back), "weights differ after load");
  Csr x, y;
  slide_test::make_batch(rng, 10, 40, 30, 6, x, y);
  std::vector<int32_t> p1(10 * 5), p2(10 * 5);
  net.predict_topk(x.view(), 5, InferenceMode::Exact, p1.data());
  back->predict_topk(x.view(), 5, InferenceMode::Exact, p2.data());
  CHECK(p1 == p2, "predictions differ after load");
  // Training continues identically from the loaded copy (tables rebuilt from the same weights).
  Csr x2, y2;
  slide_test::make_batch(rng, 16, 40, 30, 6, x2, y2);
  const double l1 = net.train_batch(x2.view(), y2.view()).loss;
  const double l2 = back->train_batch(x2.view(), y2.view()).loss;
  CHECK(l1 == l2, "loss after load %.9g vs %.9g", l2, l1);

  // Refusals.
  { std::ofstream(path, std::ios::binary) << "definitely not a model"; }
  std::string e = load_error(path);
  CHECK(e.find("not a SLIDE model") != std::string::npos, "bad magic: '%s'", e.c_str());
  net.save(path);
  {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(8);
    const uint32_t v = 99;
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  e = load_error(path);
  CHECK(e.find("version 99") != std::string::npos, "bad version: '%s'", e.c_str());
  net.save(path);
  {
    std::ifstream in(path, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << all.substr(0, all.size() / 2);
  }
  e = load_error(path);
  CHECK(e.find("truncated") != std::string::npos, "truncated: '%s'", e.c_str());
  e = load_error("/nonexistent/dir/model");
  CHECK(e.find("cannot open") != std::string::npos, "missing: '%s'", e.c_str());
  std::remove(path.c_str());
  return slide_test::finish("test_save_load");
}
