#pragma once
// Checks of everything that crosses the Python boundary. Each returns "" when the input is fine,
// otherwise a message naming what is wrong (field, row, position). The binding turns a non-empty
// message into ValueError before any work starts; the loops live here, not in the binding.
#include <string>

#include "config.h"
#include "network.h"

namespace slide {

std::string validate_config(const NetworkConfig& cfg);

// Structure of a CSR matrix: indptr starts at 0, never decreases, ends at nnz; indices in
// [0, n_cols), strictly increasing within each row; values (if required) present and finite.
std::string validate_csr(const CsrView& m, int64_t nnz, const std::string& what, bool need_values);

// A training batch (labels != nullptr) or an inference batch against the network's shapes.
std::string validate_batch(const NetworkConfig& cfg, const CsrView& features, int64_t features_nnz,
                           const CsrView* labels, int64_t labels_nnz);

}  // namespace slide
