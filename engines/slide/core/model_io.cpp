// Save/load of a Network: a versioned little-endian binary file.
//
//   "SLIDEMDL" | u32 version | config | i64 step | i64 rebuilds | i64 next_rebuild
//   (config: per layer its settings, then i64 n and n f64 padding weights; n is 0 or the layer size)
//   per layer: i32 n_rows, i32 row_len, then w, m, v (n_rows x row_len, unpadded), b, mb, vb (n_out)
//   "ENDSLIDE"
// Hash tables are not stored: they are rebuilt from the loaded weights.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "network.h"
#include "validate.h"

namespace slide {
namespace {

constexpr char kMagic[8] = {'S', 'L', 'I', 'D', 'E', 'M', 'D', 'L'};
constexpr char kEnd[8] = {'E', 'N', 'D', 'S', 'L', 'I', 'D', 'E'};
constexpr uint32_t kVersion = 6;  // 2: batch_padding, bf16_moments; 3: pad_below, logit_correction; 4: rerank_pool;
                                  // 5: padding_weights; 6: max_retrieved

class Writer {
 public:
  explicit Writer(const std::string& path) : out_(path, std::ios::binary | std::ios::trunc), path_(path) {
    if (!out_) throw std::runtime_error("cannot open '" + path + "' for writing");
  }
  template <typename T>
  void put(const T& v) { bytes(&v, sizeof(T)); }
  void bytes(const void* p, size_t n) {
    out_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    if (!out_) throw std::runtime_error("write to '" + path_ + "' failed");
  }
  void close() {
    out_.close();
    if (!out_) throw std::runtime_error("closing '" + path_ + "' failed");
  }

 private:
  std::ofstream out_;
  std::string path_;
};

class Reader {
 public:
  explicit Reader(const std::string& path) : in_(path, std::ios::binary), path_(path) {
    if (!in_) throw std::runtime_error("cannot open model file '" + path + "'");
  }
  template <typename T>
  T get(const char* what) {
    T v;
    bytes(&v, sizeof(T), what);
    return v;
  }
  void bytes(void* p, size_t n, const char* what) {
    in_.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in_.gcount()) != n)
      throw std::runtime_error("model file '" + path_ + "' is truncated (while reading " + what + ")");
  }
  const std::string& path() const { return path_; }

 private:
  std::ifstream in_;
  std::string path_;
};

void put_config(Writer& w, const NetworkConfig& c) {
  w.put<int32_t>(c.num_features);
  w.put<int32_t>(static_cast<int32_t>(c.layers.size()));
  for (const LayerSettings& l : c.layers) {
    w.put<int32_t>(l.size);
    w.put<int32_t>(l.sampled ? 1 : 0);
    const LshSettings& s = l.lsh;
    for (int32_t v : {static_cast<int32_t>(s.hash), s.K, s.L, s.bucket_bits, s.bucket_capacity,
                      static_cast<int32_t>(s.insertion), static_cast<int32_t>(s.selection), s.min_active,
                      s.max_active, s.threshold, s.wta_bin_size, s.pad_below, s.rerank_pool, s.max_retrieved})
      w.put<int32_t>(v);
    w.put<float>(s.simhash_density);
    w.put<int64_t>(static_cast<int64_t>(s.padding_weights.size()));
    if (!s.padding_weights.empty()) w.bytes(s.padding_weights.data(), sizeof(double) * s.padding_weights.size());
  }
  const OptimizerSettings& o = c.optimizer;
  for (float v : {o.lr, o.beta1, o.beta2, o.eps}) w.put<float>(v);
  w.put<int32_t>(static_cast<int32_t>(o.mode));
  w.put<int32_t>(o.bf16_moments ? 1 : 0);
  w.put<int32_t>(c.schedule.rebuild_n0);
  w.put<double>(c.schedule.rebuild_decay);
  w.put<int32_t>(c.schedule.rehash_m);
  w.put<uint64_t>(c.seed);
  w.put<float>(c.init_std);
  w.put<int32_t>(c.batch_padding ? 1 : 0);
  w.put<int32_t>(c.logit_correction_log_q ? 1 : 0);
}

NetworkConfig get_config(Reader& r) {
  NetworkConfig c;
  c.num_features = r.get<int32_t>("num_features");
  const int32_t n_layers = r.get<int32_t>("layer count");
  if (n_layers < 1 || n_layers > 64)
    throw std::runtime_error("model file '" + r.path() + "' has an implausible layer count " + std::to_string(n_layers));
  for (int32_t i = 0; i < n_layers; ++i) {
    LayerSettings l;
    l.size = r.get<int32_t>("layer size");
    l.sampled = r.get<int32_t>("layer kind") != 0;
    LshSettings& s = l.lsh;
    const int32_t hash = r.get<int32_t>("hash kind");
    if (hash < 0 || hash > static_cast<int32_t>(HashKind::SimHashMips))
      throw std::runtime_error("model file '" + r.path() + "' has an unknown hash kind " + std::to_string(hash));
    s.hash = static_cast<HashKind>(hash);
    s.K = r.get<int32_t>("K");
    s.L = r.get<int32_t>("L");
    s.bucket_bits = r.get<int32_t>("bucket_bits");
    s.bucket_capacity = r.get<int32_t>("bucket_capacity");
    const int32_t ins = r.get<int32_t>("insertion");
    const int32_t sel = r.get<int32_t>("selection");
    if (ins < 0 || ins > 1 || sel < 0 || sel > static_cast<int32_t>(SelectionKind::Rerank))
      throw std::runtime_error("model file '" + r.path() + "' has an unknown insertion or selection kind");
    s.insertion = static_cast<Insertion>(ins);
    s.selection = static_cast<SelectionKind>(sel);
    s.min_active = r.get<int32_t>("min_active");
    s.max_active = r.get<int32_t>("max_active");
    s.threshold = r.get<int32_t>("threshold");
    s.wta_bin_size = r.get<int32_t>("wta_bin_size");
    s.pad_below = r.get<int32_t>("pad_below");
    s.rerank_pool = r.get<int32_t>("rerank_pool");
    s.max_retrieved = r.get<int32_t>("max_retrieved");
    s.simhash_density = r.get<float>("simhash_density");
    const int64_t n_weights = r.get<int64_t>("padding weight count");
    if (n_weights != 0 && n_weights != l.size)
      throw std::runtime_error("model file '" + r.path() + "' holds " + std::to_string(n_weights) +
                               " padding weights for a layer of " + std::to_string(l.size));
    // In chunks, so that a corrupt count in a short file fails on reading, not on a huge allocation.
    for (int64_t done = 0; done < n_weights;) {
      const size_t part = static_cast<size_t>(std::min<int64_t>(n_weights - done, 1 << 20));
      s.padding_weights.resize(static_cast<size_t>(done) + part);
      r.bytes(s.padding_weights.data() + done, sizeof(double) * part, "padding weights");
      done += static_cast<int64_t>(part);
    }
    c.layers.push_back(l);
  }
  OptimizerSettings& o = c.optimizer;
  o.lr = r.get<float>("lr");
  o.beta1 = r.get<float>("beta1");
  o.beta2 = r.get<float>("beta2");
  o.eps = r.get<float>("eps");
  const int32_t mode = r.get<int32_t>("optimizer mode");
  if (mode < 0 || mode > 1) throw std::runtime_error("model file '" + r.path() + "' has an unknown optimizer mode");
  o.mode = static_cast<AdamMode>(mode);
  o.bf16_moments = r.get<int32_t>("bf16_moments") != 0;
  c.schedule.rebuild_n0 = r.get<int32_t>("rebuild_n0");
  c.schedule.rebuild_decay = r.get<double>("rebuild_decay");
  c.schedule.rehash_m = r.get<int32_t>("rehash_m");
  c.seed = r.get<uint64_t>("seed");
  c.init_std = r.get<float>("init_std");
  c.batch_padding = r.get<int32_t>("batch_padding") != 0;
  c.logit_correction_log_q = r.get<int32_t>("logit_correction") != 0;
  c.threads = 1;  // not part of the model: a loaded network starts on one thread (set_threads changes it)
  return c;
}

// Row r of layer l's weights (which 0), first (1) or second (2) moments, as stored: fp32, or BF16
// moments with bf16_moments (the file holds what the layer holds, so a round trip is exact).
std::pair<void*, size_t> stored_row(Layer& l, int which, int r) {
  const size_t n = static_cast<size_t>(l.row_len());
  if (which == 0) return {l.row(r), n * sizeof(float)};
  if (l.bf16_moments()) return {which == 1 ? l.m16_row(r) : l.v16_row(r), n * sizeof(uint16_t)};
  return {which == 1 ? l.m_row(r) : l.v_row(r), n * sizeof(float)};
}

}  // namespace

void Network::save(const std::string& path) const {
  Writer w(path);
  w.bytes(kMagic, sizeof(kMagic));
  w.put<uint32_t>(kVersion);
  put_config(w, cfg_);
  w.put<int64_t>(step_);
  w.put<int64_t>(rebuilds_);
  w.put<int64_t>(next_rebuild_);
  for (const auto& lp : layers_) {
    Layer& l = const_cast<Layer&>(*lp);  // row accessors are non-const for the moments
    w.put<int32_t>(l.n_rows());
    w.put<int32_t>(l.row_len());
    for (int which = 0; which < 3; ++which)
      for (int r = 0; r < l.n_rows(); ++r) {
        const auto [p, bytes] = stored_row(l, which, r);
        w.bytes(p, bytes);
      }
    w.bytes(l.bias(), sizeof(float) * l.n_out());
    w.bytes(l.bias_m(), sizeof(float) * l.n_out());
    w.bytes(l.bias_v(), sizeof(float) * l.n_out());
  }
  w.bytes(kEnd, sizeof(kEnd));
  w.close();
}

std::unique_ptr<Network> Network::load(const std::string& path) {
  Reader r(path);
  char magic[8];
  r.bytes(magic, sizeof(magic), "magic");
  if (std::memcmp(magic, kMagic, sizeof(magic)) != 0)
    throw std::runtime_error("'" + path + "' is not a SLIDE model file (bad magic)");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kVersion)
    throw std::runtime_error("model file '" + path + "' has format version " + std::to_string(version) +
                             "; this build reads version " + std::to_string(kVersion));
  NetworkConfig cfg = get_config(r);
  const std::string err = validate_config(cfg);
  if (!err.empty()) throw std::runtime_error("model file '" + path + "' holds an invalid configuration: " + err);
  const int64_t step = r.get<int64_t>("step");
  const int64_t rebuilds = r.get<int64_t>("rebuild count");
  const int64_t next_rebuild = r.get<int64_t>("next rebuild");
  auto net = std::make_unique<Network>(cfg);
  for (int i = 0; i < net->num_layers(); ++i) {
    Layer& l = net->layer(i);
    const int32_t rows = r.get<int32_t>("layer shape"), len = r.get<int32_t>("layer shape");
    if (rows != l.n_rows() || len != l.row_len())
      throw std::runtime_error("model file '" + path + "': layer " + std::to_string(i) + " is " + std::to_string(rows) +
                               " x " + std::to_string(len) + ", the configuration implies " +
                               std::to_string(l.n_rows()) + " x " + std::to_string(l.row_len()));
    for (int which = 0; which < 3; ++which)
      for (int row = 0; row < l.n_rows(); ++row) {
        const auto [p, bytes] = stored_row(l, which, row);
        r.bytes(p, bytes, "weights");
      }
    r.bytes(l.bias(), sizeof(float) * l.n_out(), "biases");
    r.bytes(l.bias_m(), sizeof(float) * l.n_out(), "biases");
    r.bytes(l.bias_v(), sizeof(float) * l.n_out(), "biases");
  }
  char end[8];
  r.bytes(end, sizeof(end), "end marker");
  if (std::memcmp(end, kEnd, sizeof(end)) != 0)
    throw std::runtime_error("model file '" + path + "' is corrupt (end marker missing)");
  net->step_ = step;
  net->rebuilds_ = rebuilds;
  net->next_rebuild_ = next_rebuild;
  net->rebuild_tables();
  return net;
}

}  // namespace slide
