// The one binding of the SLIDE core: copies numpy CSR arrays, converts a config dict, checks them,
// releases the GIL around all work, and does nothing else. Every loop (validation included) lives
// in the core; every error becomes a Python exception (ValueError for bad input, MemoryError when
// an allocation fails: pybind11's translation of std::bad_alloc), never a crash.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "build_info.h"
#include "kernels.h"
#include "network.h"
#include "validate.h"

namespace py = pybind11;
using namespace slide;

namespace {

// ---- config dict -> NetworkConfig -------------------------------------------------------------

// Every key is required: the engine's defaults live in one place, DEFAULTS in
// engines/slide/__init__.py, which builds the whole dict (SlideEngine.native_config).
template <typename T>
T get(const py::dict& d, const char* key, const std::string& where) {
  if (!d.contains(key))
    throw py::value_error(where + "missing key '" + key +
                          "' (every setting is required; SlideEngine.native_config builds the full dict from DEFAULTS)");
  py::handle v = d[key];
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!py::isinstance<py::bool_>(v)) throw py::cast_error();
      return v.cast<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (py::isinstance<py::bool_>(v) || !py::isinstance<py::int_>(v)) throw py::cast_error();
      const long long x = v.cast<long long>();  // cast_error beyond 64 bits
      if constexpr (std::is_same_v<T, uint64_t>) {
        if (x < 0) throw py::value_error(where + key + " = " + std::to_string(x) + " must be >= 0");
        return static_cast<T>(x);
      }
      if (x < static_cast<long long>(std::numeric_limits<T>::min()) ||
          x > static_cast<long long>(std::numeric_limits<T>::max()))
        throw py::value_error(where + key + " = " + std::to_string(x) + " is out of range");
      return static_cast<T>(x);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v)))
        throw py::cast_error();
      return v.cast<T>();
    } else {
      if (!py::isinstance<py::str>(v)) throw py::cast_error();
      return v.cast<T>();
    }
  } catch (const py::cast_error&) {
    throw py::value_error(where + key + " has the wrong type (" + std::string(py::str(v.get_type().attr("__name__"))) +
                          ")");
  }
}

void refuse_unknown(const py::dict& d, const std::set<std::string>& known, const std::string& where) {
  for (auto item : d) {
    const std::string k = py::str(item.first);
    if (!known.count(k)) throw py::value_error(where + "unknown key '" + k + "'");
  }
}

template <typename Parse>
auto parse_enum(Parse parse, const std::string& value, const std::string& key) {
  try {
    return parse(value);
  } catch (const std::exception& e) {
    throw py::value_error(key + ": " + e.what());
  }
}

NetworkConfig config_from_dict(const py::dict& d) {
  static const std::set<std::string> kTop{"num_features", "layers", "lr", "beta1", "beta2", "eps", "adam",
                                          "rebuild_n0", "rebuild_decay", "rehash_m", "seed", "threads",
                                          "debug_serialize", "init_std", "batch_padding", "adam_state",
                                          "logit_correction"};
  static const std::set<std::string> kLayer{"size", "sampled", "hash", "K", "L", "bucket_bits", "bucket_capacity",
                                            "insertion", "selection", "min_active", "max_active", "threshold",
                                            "simhash_density", "wta_bin_size", "pad_below", "rerank_pool",
                                            "max_retrieved", "padding_weights"};
  refuse_unknown(d, kTop, "config: ");
  NetworkConfig c;
  c.num_features = get<int>(d, "num_features", "config: ");
  if (!d.contains("layers") || !py::isinstance<py::list>(d["layers"]))
    throw py::value_error("config: 'layers' must be a list of layer dicts (hidden layers, then the output layer)");
  int i = 0;
  for (py::handle h : d["layers"].cast<py::list>()) {
    const std::string where = "config: layers[" + std::to_string(i++) + "].";
    if (!py::isinstance<py::dict>(h)) throw py::value_error(where.substr(0, where.size() - 1) + " must be a dict");
    const py::dict ld = h.cast<py::dict>();
    refuse_unknown(ld, kLayer, where);
    LayerSettings l;
    LshSettings& s = l.lsh;
    l.size = get<int>(ld, "size", where);
    l.sampled = get<bool>(ld, "sampled", where);
    if (!l.sampled) {
      // A dense layer computes every neuron: sampling settings would be ignored, so they are refused.
      if (ld.size() != 2) throw py::value_error(where + "a dense layer ('sampled': False) takes only 'size' and 'sampled'");
      c.layers.push_back(l);
      continue;
    }
    s.hash = parse_enum(parse_hash_kind, get<std::string>(ld, "hash", where), where + "hash");
    s.K = get<int>(ld, "K", where);
    s.L = get<int>(ld, "L", where);
    s.bucket_bits = get<int>(ld, "bucket_bits", where);
    s.bucket_capacity = get<int>(ld, "bucket_capacity", where);
    s.insertion = parse_enum(parse_insertion, get<std::string>(ld, "insertion", where), where + "insertion");
    s.selection =
        parse_enum(parse_selection_kind, get<std::string>(ld, "selection", where), where + "selection");
    s.min_active = get<int>(ld, "min_active", where);
    s.max_active = get<int>(ld, "max_active", where);
    s.threshold = get<int>(ld, "threshold", where);
    s.simhash_density = get<float>(ld, "simhash_density", where);
    s.wta_bin_size = get<int>(ld, "wta_bin_size", where);
    s.pad_below = get<int>(ld, "pad_below", where);
    s.rerank_pool = get<int>(ld, "rerank_pool", where);
    s.max_retrieved = get<int>(ld, "max_retrieved", where);
    if (!ld.contains("padding_weights"))
      throw py::value_error(where + "missing key 'padding_weights' (every setting is required; "
                                    "SlideEngine.native_config builds the full dict from DEFAULTS)");
    if (!ld["padding_weights"].is_none()) {
      // None: uniform padding. Copied here; validate_config checks the values.
      py::handle v = ld["padding_weights"];
      if (!py::isinstance<py::array>(v))
        throw py::value_error(where + "padding_weights must be None or a 1-dimensional numpy array of float64");
      const py::array a = v.cast<py::array>();
      if (!a.dtype().is(py::dtype::of<double>()) || a.ndim() != 1 || !(a.flags() & py::array::c_style))
        throw py::value_error(where + "padding_weights must be a 1-dimensional C-contiguous numpy array of float64, got " +
                              std::string(py::str(a.dtype())) + " with " + std::to_string(a.ndim()) + " dims");
      const auto* p = static_cast<const double*>(a.data());
      s.padding_weights.assign(p, p + a.size());
    }
    c.layers.push_back(l);
  }
  OptimizerSettings& o = c.optimizer;
  o.lr = get<float>(d, "lr", "config: ");
  o.beta1 = get<float>(d, "beta1", "config: ");
  o.beta2 = get<float>(d, "beta2", "config: ");
  o.eps = get<float>(d, "eps", "config: ");
  const std::string adam = get<std::string>(d, "adam", "config: ");
  if (adam != "sparse" && adam != "dense")
    throw py::value_error("config: adam must be 'sparse' or 'dense', got '" + adam + "'");
  o.mode = adam == "sparse" ? AdamMode::Sparse : AdamMode::Dense;
  const std::string state = get<std::string>(d, "adam_state", "config: ");
  if (state != "fp32" && state != "bf16")
    throw py::value_error("config: adam_state must be 'fp32' or 'bf16', got '" + state + "'");
  o.bf16_moments = state == "bf16";
  c.schedule.rebuild_n0 = get<int>(d, "rebuild_n0", "config: ");
  c.schedule.rebuild_decay = get<double>(d, "rebuild_decay", "config: ");
  c.schedule.rehash_m = get<int>(d, "rehash_m", "config: ");
  c.seed = get<uint64_t>(d, "seed", "config: ");
  c.threads = get<int>(d, "threads", "config: ");
  c.debug_serialize = get<bool>(d, "debug_serialize", "config: ");
  c.init_std = get<float>(d, "init_std", "config: ");
  c.batch_padding = get<bool>(d, "batch_padding", "config: ");
  const std::string corr = get<std::string>(d, "logit_correction", "config: ");
  if (corr != "none" && corr != "log_q")
    throw py::value_error("config: logit_correction must be 'none' or 'log_q', got '" + corr + "'");
  c.logit_correction_log_q = corr == "log_q";
  const std::string err = validate_config(c);
  if (!err.empty()) throw py::value_error("config: " + err);
  return c;
}

// A C path ends at its first NUL: "a\0b" would silently write or read the file "a".
void refuse_nul(const std::string& path) {
  if (path.find('\0') != std::string::npos)
    throw py::value_error("path must not contain a NUL byte, got " + std::string(py::repr(py::str(path))));
}

// ---- numpy CSR -> CsrView ---------------------------------------------------------------------

// Checks dtype, dimensionality and contiguity of one array (no copies, no conversions: a wrong
// dtype is the caller's bug and is refused with its name).
template <typename T>
py::array_t<T> require(const py::object& obj, const std::string& name, const char* dtype) {
  if (!py::isinstance<py::array>(obj)) throw py::value_error(name + " must be a numpy array of " + dtype);
  py::array a = obj.cast<py::array>();
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::value_error(name + " must have dtype " + dtype + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 1) throw py::value_error(name + " must be 1-dimensional, got " + std::to_string(a.ndim()) + " dims");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(name + " must be C-contiguous");
  return py::array_t<T>(a);
}

// A CSR batch copied out of the numpy arrays. The core works without the GIL, so another Python
// thread could change the arrays while it runs: ids validated in range could be read back out of
// range (a crash, not an error). Copies made while the GIL is held, and validated
// afterwards, cannot change under the core. The cost is one allocation and memcpy per array, 8
// bytes per feature non-zero and 4 per label: measured on the 2-core dev box, a Delicious-shaped
// batch (128 rows, 18 features and 19 labels each, 30 KiB) copies in ~1.5 us against a ~9 ms
// 2-thread training step (hidden 128, 983 labels), and a 256-row batch of 100 non-zeros each
// (209 KiB) in ~5 us against ~50 ms (20K labels, min_active 2000): 0.01-0.02% of a step.
struct CsrArrays {
  std::vector<int64_t> indptr;
  std::vector<int32_t> indices;
  std::vector<float> values;
  bool has_values = false;
  CsrView view;
  int64_t nnz = 0;
};

template <typename T>
std::vector<T> copy_of(const py::array_t<T>& a) {
  return std::vector<T>(a.data(), a.data() + a.size());
}

// n_cols: the width the caller declares for the batch (checked against the network's by
// validate_batch); none declared: the network's own.
CsrArrays csr_from(const std::string& what, const py::object& indptr, const py::object& indices,
                   const py::object& values, std::optional<int64_t> n_cols, int64_t model_cols) {
  CsrArrays c;
  const py::array_t<int64_t> ptr = require<int64_t>(indptr, what + ".indptr", "int64");
  const py::array_t<int32_t> idx = require<int32_t>(indices, what + ".indices", "int32");
  if (ptr.size() < 1) throw py::value_error(what + ".indptr must have at least one entry");
  c.nnz = idx.size();
  if (!values.is_none()) {
    const py::array_t<float> val = require<float>(values, what + ".values", "float32");
    if (val.size() != c.nnz)
      throw py::value_error(what + ".values has " + std::to_string(val.size()) + " entries, indices has " +
                            std::to_string(c.nnz));
    c.values = copy_of(val);
    c.has_values = true;
  }
  c.indptr = copy_of(ptr);
  c.indices = copy_of(idx);
  c.view.indptr = c.indptr.data();
  c.view.indices = c.indices.data();
  c.view.values = c.has_values ? c.values.data() : nullptr;
  c.view.n_rows = static_cast<int64_t>(c.indptr.size()) - 1;
  c.view.n_cols = n_cols.value_or(model_cols);
  return c;
}

// ---- the Python-facing object -----------------------------------------------------------------

class PyNetwork {
 public:
  explicit PyNetwork(std::unique_ptr<Network> net) : net_(std::move(net)) {}

  py::tuple train_batch(const py::object& x_ptr, const py::object& x_idx, const py::object& x_val,
                        const py::object& y_ptr, const py::object& y_idx, std::optional<int64_t> x_cols,
                        std::optional<int64_t> y_cols) {
    const NetworkConfig& cfg = net_->config();
    CsrArrays x = csr_from("features", x_ptr, x_idx, x_val, x_cols, cfg.num_features);
    CsrArrays y = csr_from("labels", y_ptr, y_idx, py::none(), y_cols, cfg.num_labels());
    TrainStats st;
    std::string err;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      err = validate_batch(cfg, x.view, x.nnz, &y.view, y.nnz);
      if (err.empty()) st = net_->train_batch(x.view, y.view);
    }
    if (!err.empty()) throw py::value_error(err);
    return py::make_tuple(st.loss, st.mean_active);
  }

  py::array_t<int32_t> predict_topk(const py::object& x_ptr, const py::object& x_idx, const py::object& x_val, int k,
                                    const std::string& mode, std::optional<int64_t> x_cols) {
    if (mode != "exact" && mode != "lsh") throw py::value_error("mode must be 'exact' or 'lsh', got '" + mode + "'");
    const NetworkConfig& cfg = net_->config();
    if (k < 1 || k > cfg.num_labels())
      throw py::value_error("k must be in 1..num_labels (" + std::to_string(cfg.num_labels()) + "), got " +
                            std::to_string(k));
    CsrArrays x = csr_from("features", x_ptr, x_idx, x_val, x_cols, cfg.num_features);
    py::array_t<int32_t> out({x.view.n_rows, static_cast<int64_t>(k)});
    int32_t* o = out.mutable_data();
    std::string err;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      err = validate_batch(cfg, x.view, x.nnz, nullptr, 0);
      if (err.empty()) net_->predict_topk(x.view, k, mode == "exact" ? InferenceMode::Exact : InferenceMode::Lsh, o);
    }
    if (!err.empty()) throw py::value_error(err);
    return out;
  }

  // `out`: None (a new array) or a C-contiguous, writeable float32 array of the result's shape,
  // written in place and returned: a caller scoring often (diagnostics at every evaluation) keeps
  // one, instead of paying page faults on a fresh array per call (172 MB for 64 x 670K scores).
  py::array_t<float> predict_scores(const py::object& x_ptr, const py::object& x_idx, const py::object& x_val,
                                    std::optional<int64_t> x_cols, const py::object& out_obj) {
    const NetworkConfig& cfg = net_->config();
    CsrArrays x = csr_from("features", x_ptr, x_idx, x_val, x_cols, cfg.num_features);
    const int64_t n_rows = x.view.n_rows, n_labels = static_cast<int64_t>(cfg.num_labels());
    py::array_t<float> out;
    if (out_obj.is_none()) {
      out = py::array_t<float>({n_rows, n_labels});
    } else {
      const std::string want = "predict_scores: out must be a C-contiguous, writeable float32 array of shape (" +
                               std::to_string(n_rows) + ", " + std::to_string(n_labels) + ")";
      if (!py::isinstance<py::array>(out_obj)) throw py::value_error(want);
      py::array oa = out_obj.cast<py::array>();
      if (!oa.dtype().is(py::dtype::of<float>()) || oa.ndim() != 2 || !(oa.flags() & py::array::c_style) ||
          !oa.writeable() || oa.shape(0) != n_rows || oa.shape(1) != n_labels)
        throw py::value_error(want);
      out = py::reinterpret_borrow<py::array_t<float>>(oa);
    }
    float* o = out.mutable_data();
    std::string err;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      err = validate_batch(cfg, x.view, x.nnz, nullptr, 0);
      if (err.empty()) net_->predict_scores(x.view, o);
    }
    if (!err.empty()) throw py::value_error(err);
    return out;
  }

  // (indptr, ids): each sample's output candidates from the tables, before random padding.
  py::tuple lsh_candidates(const py::object& x_ptr, const py::object& x_idx, const py::object& x_val,
                           std::optional<int64_t> x_cols) {
    const NetworkConfig& cfg = net_->config();
    CsrArrays x = csr_from("features", x_ptr, x_idx, x_val, x_cols, cfg.num_features);
    std::vector<std::vector<int32_t>> cand;
    std::string err;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      err = validate_batch(cfg, x.view, x.nnz, nullptr, 0);
      if (err.empty()) net_->lsh_candidates(x.view, &cand);
    }
    if (!err.empty()) throw py::value_error(err);
    py::array_t<int64_t> indptr(static_cast<py::ssize_t>(cand.size() + 1));
    int64_t* ip = indptr.mutable_data();
    ip[0] = 0;
    for (size_t s = 0; s < cand.size(); ++s) ip[s + 1] = ip[s] + static_cast<int64_t>(cand[s].size());
    py::array_t<int32_t> ids(static_cast<py::ssize_t>(ip[cand.size()]));
    int32_t* o = ids.mutable_data();
    for (const auto& c : cand) o = std::copy(c.begin(), c.end(), o);
    return py::make_tuple(indptr, ids);
  }

  // (ids, log_q) of the output layer for sample s of the latest training batch (tests).
  py::tuple last_output(int64_t s) {
    std::vector<int32_t> ids;
    std::vector<float> log_q;
    {
      std::lock_guard<std::mutex> lock(mu_);
      net_->last_output(s, &ids, &log_q);
    }
    py::array_t<int32_t> a(static_cast<py::ssize_t>(ids.size()));
    std::copy(ids.begin(), ids.end(), a.mutable_data());
    py::array_t<float> b(static_cast<py::ssize_t>(log_q.size()));
    std::copy(log_q.begin(), log_q.end(), b.mutable_data());
    return py::make_tuple(a, b);
  }

  py::dict active_composition() {
    std::lock_guard<std::mutex> lock(mu_);
    const ActiveComposition c = net_->active_composition();
    py::dict d;
    d["samples"] = c.samples;
    d["labels"] = c.labels;
    d["lsh"] = c.retrieved;
    d["random"] = c.padded;
    return d;
  }

  Layer& layer_at(int i) {
    if (i < 0 || i >= net_->num_layers())
      throw py::value_error("layer index " + std::to_string(i) + " out of range 0.." +
                            std::to_string(net_->num_layers() - 1));
    return net_->layer(i);
  }

  // (weights [n_rows, row_len] in the layer's storage layout, bias [n_out]) as copies.
  py::tuple get_weights(int i) {
    Layer& l = layer_at(i);
    py::array_t<float> w({static_cast<int64_t>(l.n_rows()), static_cast<int64_t>(l.row_len())});
    py::array_t<float> b(static_cast<int64_t>(l.n_out()));
    float* wp = w.mutable_data();
    float* bp = b.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      copy_rows(l, wp, true);
      std::copy(l.bias(), l.bias() + l.n_out(), bp);
    }
    return py::make_tuple(w, b);
  }

  void set_weights(int i, const py::object& w_obj, const py::object& b_obj) {
    Layer& l = layer_at(i);
    const std::string where = "set_weights: layer " + std::to_string(i);
    if (!py::isinstance<py::array>(w_obj)) throw py::value_error(where + ": weights must be a numpy float32 array");
    py::array wa = w_obj.cast<py::array>();
    if (!wa.dtype().is(py::dtype::of<float>()) || wa.ndim() != 2 || !(wa.flags() & py::array::c_style) ||
        wa.shape(0) != l.n_rows() || wa.shape(1) != l.row_len())
      throw py::value_error("weights of layer " + std::to_string(i) + " must be C-contiguous float32 of shape (" +
                            std::to_string(l.n_rows()) + ", " + std::to_string(l.row_len()) + ")");
    py::array_t<float> b = require<float>(b_obj, "bias", "float32");
    if (b.size() != l.n_out()) throw py::value_error("bias must have " + std::to_string(l.n_out()) + " entries");
    // Copies, for the reason CsrArrays copies: what is checked is what gets stored.
    std::vector<float> w = copy_of(py::array_t<float>(wa));
    const std::vector<float> bias = copy_of(b);
    std::string err;
    {
      py::gil_scoped_release release;
      // A NaN or inf weight would poison every score it touches and the hash tables built from it.
      err = validate_finite(w.data(), w.size(), where + " weights");
      if (err.empty()) err = validate_finite(bias.data(), bias.size(), where + " bias");
      if (err.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        copy_rows(l, w.data(), false);
        std::copy(bias.begin(), bias.end(), l.bias());
        net_->rebuild_tables();  // the tables index the weights: keep them consistent
      }
    }
    if (!err.empty()) throw py::value_error(err);
  }

  void save(const std::string& path) {
    refuse_nul(path);
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    net_->save(path);
  }

  void set_threads(int n) {
    const std::string err = validate_threads(n);
    if (!err.empty()) throw py::value_error(err);
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    net_->set_threads(n);
  }

  void rebuild_tables() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    net_->rebuild_tables();
  }

  py::list layer_shapes() {
    py::list out;
    for (int i = 0; i < net_->num_layers(); ++i) {
      const Layer& l = net_->layer(i);
      out.append(py::make_tuple(l.n_rows(), l.row_len(), l.neuron_major() ? "neuron_major" : "input_major"));
    }
    return out;
  }

  Network& net() { return *net_; }

 private:
  // Copies between the padded storage and a dense [n_rows, row_len] buffer (core loop).
  static void copy_rows(Layer& l, float* dense, bool out) {
    for (int r = 0; r < l.n_rows(); ++r) {
      float* row = l.row(r);
      float* d = dense + static_cast<size_t>(r) * l.row_len();
      if (out)
        std::copy(row, row + l.row_len(), d);
      else
        std::copy(d, d + l.row_len(), row);
    }
  }

  std::unique_ptr<Network> net_;
  std::mutex mu_;  // one call at a time per network (the GIL is released inside)
};

std::unique_ptr<PyNetwork> make_network(const py::dict& cfg) {
  NetworkConfig c = config_from_dict(cfg);
  std::unique_ptr<Network> net;
  {
    py::gil_scoped_release release;
    net = std::make_unique<Network>(c);
  }
  return std::make_unique<PyNetwork>(std::move(net));
}

std::unique_ptr<PyNetwork> load_network(const std::string& path) {
  refuse_nul(path);
  std::unique_ptr<Network> net;
  std::string err;
  {
    py::gil_scoped_release release;
    try {
      net = Network::load(path);
    } catch (const std::runtime_error& e) {
      err = e.what();
    }
  }
  if (!err.empty()) throw py::value_error(err);
  return std::make_unique<PyNetwork>(std::move(net));
}

}  // namespace

PYBIND11_MODULE(_slide, m) {
  m.doc() = "Native SLIDE engine (C++17 core, OpenMP). Use engines.slide.SlideEngine.";
  py::class_<PyNetwork>(m, "Network")
      .def(py::init(&make_network), py::arg("config"))
      .def_static("load", &load_network, py::arg("path"))
      .def("train_batch", &PyNetwork::train_batch, py::arg("indptr"), py::arg("indices"), py::arg("values"),
           py::arg("label_indptr"), py::arg("label_indices"), py::arg("n_cols") = py::none(),
           py::arg("label_n_cols") = py::none(),
           "One minibatch update; returns (mean loss, mean active outputs per sample). n_cols, label_n_cols: "
           "the batch's declared widths (refused unless equal to the network's); None: the network's.")
      .def("predict_topk", &PyNetwork::predict_topk, py::arg("indptr"), py::arg("indices"), py::arg("values"),
           py::arg("k"), py::arg("mode") = "exact", py::arg("n_cols") = py::none())
      .def("predict_scores", &PyNetwork::predict_scores, py::arg("indptr"), py::arg("indices"), py::arg("values"),
           py::arg("n_cols") = py::none(), py::arg("out") = py::none())
      .def("lsh_candidates", &PyNetwork::lsh_candidates, py::arg("indptr"), py::arg("indices"), py::arg("values"),
           py::arg("n_cols") = py::none())
      .def("last_output", &PyNetwork::last_output, py::arg("sample"),
           "(ids, log_q): the output layer's active ids of a sample of the latest training batch and their log "
           "inclusion probabilities (empty without logit_correction 'log_q')")
      .def("active_composition", &PyNetwork::active_composition,
           "Output neurons of the training samples so far, summed by origin: labels, lsh, random.")
      .def("get_weights", &PyNetwork::get_weights, py::arg("layer"))
      .def("set_weights", &PyNetwork::set_weights, py::arg("layer"), py::arg("weights"), py::arg("bias"))
      .def("save", &PyNetwork::save, py::arg("path"))
      .def("set_threads", &PyNetwork::set_threads, py::arg("n"))
      .def("rebuild_tables", &PyNetwork::rebuild_tables)
      .def("layer_shapes", &PyNetwork::layer_shapes)
      .def_property_readonly("step", [](PyNetwork& p) { return p.net().step(); })
      .def_property_readonly("threads", [](PyNetwork& p) { return p.net().threads(); })
      .def_property_readonly("memory_bytes", [](PyNetwork& p) { return p.net().memory_bytes(); })
      .def("phase_times",
           [](PyNetwork& p) {
             const Network::PhaseTimes& t = p.net().phase_times();
             py::dict d;
             d["forward_backward"] = t.forward_backward;
             d["update_output"] = t.update_output;
             d["update_hidden"] = t.update_hidden;
             d["tables"] = t.tables;
             d["last_rebuild"] = t.last_rebuild;
             return d;
           })
      .def_property_readonly("rebuilds", [](PyNetwork& p) { return p.net().rebuilds(); });
  m.def("build_info", []() {
    py::dict d;
    for (const auto& [k, v] : build_info()) d[py::str(k)] = v;
    return d;
  });
  m.def(
      "select_kernel",
      [](const std::string& name) {
        std::string err;
        if (!select_kernels(name, &err)) throw py::value_error(err);
        return std::string(kernels().name);
      },
      py::arg("name"), "Force scalar | avx2 | avx512 | auto; returns the kernel now in use.");
  m.def("kernel", []() { return std::string(kernels().name); });
  m.def("hash_kernel", []() { return std::string(hash_kernel()); },
        "The instruction set of the hashing loops now: avx2 or scalar (follows select_kernel).");
  m.def("kernels_supported", &kernels_supported);
  m.def("kernels_compiled", &kernels_compiled);
}
