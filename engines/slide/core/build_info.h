#pragma once
// How this core was built and what it runs with: compiler, flags, OpenMP, kernels.
#include <string>
#include <utility>
#include <vector>

namespace slide {

// Key/value pairs: compiler, build_type, cxx_flags, kernel_flags, openmp (version yyyymm),
// kernels_compiled, kernels_supported, kernel_selected, max_threads.
std::vector<std::pair<std::string, std::string>> build_info();

}  // namespace slide
