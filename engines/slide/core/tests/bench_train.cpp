// Timing program (not a test): training steps of a whole SLIDE network at the Amazon-670K shape
// (135,909 features, 75 non-zeros per sample -> 128 ReLU -> 670,091 outputs, DWTA K=6 L=50, batch
// 128), without Python, so a profiler sees named C++ frames only. Prints samples/s and, for the
// step and its phases, the median and the minimum over steps. Data are uniform random (the shape
// is what matters for speed).
//
// usage: bench_train [threads=2] [min_active=2000] [steps=20] [warmup=3] [bf16_moments=0]
//                    [batch_padding=0]
// Profile the training region only, e.g.:
//   perf record -e cpu-clock -g --delay 10000 build/ctest/engines/slide/bench_train 1 2000 60
// (the delay, in ms, skips the ~5 s initialisation of the 1.8 GB model).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "network.h"
#include "rng.h"
#include "test_util.h"

using namespace slide;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kFeatures = 135909, kLabels = 670091;

struct Batch {
  std::vector<int64_t> x_ptr{0}, y_ptr{0};
  std::vector<int32_t> x_idx, y_idx;
  std::vector<float> x_val;
  CsrView x() const { return {x_ptr.data(), x_idx.data(), x_val.data(), static_cast<int64_t>(x_ptr.size() - 1), kFeatures}; }
  CsrView y() const { return {y_ptr.data(), y_idx.data(), nullptr, static_cast<int64_t>(y_ptr.size() - 1), kLabels}; }
};

Batch random_batch(Rng& rng, int n) {
  Batch b;
  for (int s = 0; s < n; ++s) {
    for (int t = 0; t < 75; ++t) {
      b.x_idx.push_back(static_cast<int32_t>(rng.below(kFeatures)));
      b.x_val.push_back(0.1f + rng.uniform());
    }
    const int n_lab = 1 + static_cast<int>(rng.below(9));  // ~5 labels per sample
    for (int t = 0; t < n_lab; ++t) b.y_idx.push_back(static_cast<int32_t>(rng.below(kLabels)));
    b.x_ptr.push_back(static_cast<int64_t>(b.x_idx.size()));
    b.y_ptr.push_back(static_cast<int64_t>(b.y_idx.size()));
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  auto arg = [&](int i, int dflt) { return argc > i ? std::stoi(argv[i]) : dflt; };
  const int threads = arg(1, 2), min_active = arg(2, 2000), steps = arg(3, 20), warmup = arg(4, 3);
  NetworkConfig cfg;
  slide_test::set_training(cfg);
  cfg.num_features = kFeatures;
  LayerSettings hidden, out;
  hidden.size = 128;
  out.size = kLabels;
  out.sampled = true;
  out.lsh = slide_test::lsh_settings(min_active);
  out.lsh.bucket_capacity = 8;  // the engine's auto sizing at this width
  out.lsh.min_active = min_active;
  cfg.layers = {hidden, out};
  cfg.optimizer.lr = 1e-4f;
  cfg.optimizer.bf16_moments = arg(5, 0) != 0;
  cfg.batch_padding = arg(6, 0) != 0;
  cfg.threads = threads;
  cfg.schedule.rebuild_n0 = 1 << 30;  // rebuilds are timed by bench_rebuild

  const auto t0 = Clock::now();
  Network net(cfg);
  std::printf("init %.2f s\n", std::chrono::duration<double>(Clock::now() - t0).count());
  Rng rng(7);
  std::vector<Batch> batches;
  for (int i = 0; i < warmup + steps; ++i) batches.push_back(random_batch(rng, 128));
  for (int i = 0; i < warmup; ++i) net.train_batch(batches[i].x(), batches[i].y());

  // Per-step phase times: on a shared machine the median and the minimum over steps say more than
  // the mean (a neighbour's burst inflates a few steps).
  std::vector<double> step_ms, fb_ms, uo_ms;
  double active = 0;
  const auto t1 = Clock::now();
  for (int i = warmup; i < warmup + steps; ++i) {
    const Network::PhaseTimes p0 = net.phase_times();
    const auto s0 = Clock::now();
    active += net.train_batch(batches[i].x(), batches[i].y()).mean_active;
    step_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s0).count());
    const Network::PhaseTimes& p = net.phase_times();
    fb_ms.push_back((p.forward_backward - p0.forward_backward) * 1e3);
    uo_ms.push_back((p.update_output - p0.update_output) * 1e3);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t1).count();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto least = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  std::printf("threads %d min_active %d bf16_moments %d batch_padding %d: %.0f samples/s, %.1f ms/step, mean active %.0f\n",
              threads, min_active, cfg.optimizer.bf16_moments, cfg.batch_padding, steps * 128 / secs,
              secs * 1000.0 / steps, active / steps);
  std::printf("  ms/step, median (min) over steps: step %.1f (%.1f), forward_backward %.1f (%.1f), update_output %.1f (%.1f)\n",
              median(step_ms), least(step_ms), median(fb_ms), least(fb_ms), median(uo_ms), least(uo_ms));
  return 0;
}
