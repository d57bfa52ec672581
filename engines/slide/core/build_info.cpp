#include "build_info.h"

#include <omp.h>

#include "hash_family.h"
#include "kernels.h"

#include "build_config.h"

namespace slide {

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
}  // namespace

std::vector<std::pair<std::string, std::string>> build_info() {
  return {
      {"compiler", SLIDE_COMPILER},
      {"build_type", SLIDE_BUILD_TYPE},
      {"cxx_flags", SLIDE_CXX_FLAGS},
      {"kernel_flags", SLIDE_KERNEL_FLAGS},
      {"openmp", std::to_string(_OPENMP)},
      {"kernels_compiled", join(kernels_compiled())},
      {"kernels_supported", join(kernels_supported())},
      {"kernel_selected", kernels().name},
      {"hash_kernel", hash_kernel()},
      {"max_threads", std::to_string(omp_get_max_threads())},
  };
}

}  // namespace slide
