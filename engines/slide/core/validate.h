#pragma once
// Checks of everything that crosses the Python boundary. Each returns "" when the input is fine,
// otherwise a message naming what is wrong (field, row, position). The binding turns a non-empty
// message into ValueError before any work starts; the loops live here, not in the binding.
#include <string>

#include "config.h"
#include "network.h"

namespace slide {

std::string validate_config(const NetworkConfig& cfg);

// The most threads a network may use on this machine: 4 per logical CPU, never above 1024.
// More threads than that only queue for a core (4x still leaves room for deliberate
// oversubscription experiments), while each costs a stack (8 MiB of address space by default)
// and per-thread scratch; and when libgomp cannot create a thread (a memory limit, a thread
// limit) it exits the process instead of reporting an error, so the count is refused up front.
// engines/slide/__init__.py applies the same bound.
int max_threads();
// "" when n is in 1..max_threads(), else the message saying so.
std::string validate_threads(int n);

// "" when all n values are finite, else a message naming `what` and the first bad position.
std::string validate_finite(const float* values, size_t n, const std::string& what);

// Structure of a CSR matrix: indptr starts at 0, never decreases, ends at nnz; indices in
// [0, n_cols), strictly increasing within each row; values (if required) present and finite.
std::string validate_csr(const CsrView& m, int64_t nnz, const std::string& what, bool need_values);

// A training batch (labels != nullptr) or an inference batch against the network's shapes.
std::string validate_batch(const NetworkConfig& cfg, const CsrView& features, int64_t features_nnz,
                           const CsrView* labels, int64_t labels_nnz);

}  // namespace slide
