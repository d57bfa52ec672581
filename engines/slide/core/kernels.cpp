// Run-time choice of the kernel table: the widest one this CPU supports, unless SLIDE_KERNEL
// (scalar | avx2 | avx512 | auto) or select_kernels() says otherwise.
#include "kernels.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace slide {
namespace {

bool cpu_has(const std::string& name) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512") return __builtin_cpu_supports("avx512f");
#endif
  return name == "scalar";
}

const KernelTable* table_by_name(const std::string& name) {
  if (name == "scalar") return kernel_table_scalar();
  if (name == "avx2") return kernel_table_avx2();
  if (name == "avx512") return kernel_table_avx512();
  return nullptr;
}

const KernelTable* best_table() {
  for (const char* n : {"avx512", "avx2"})
    if (table_by_name(n) != nullptr && cpu_has(n)) return table_by_name(n);
  return kernel_table_scalar();
}

std::atomic<const KernelTable*> g_table{nullptr};
std::once_flag g_once;

bool try_select(const std::string& name, std::string* error) {
  // An empty name is refused like any other unknown one: it is a caller's mistake, never a choice.
  if (name == "auto") {
    g_table.store(best_table());
    return true;
  }
  if (name != "scalar" && name != "avx2" && name != "avx512") {
    if (error) *error = "unknown kernel '" + name + "' (expected scalar, avx2, avx512 or auto)";
    return false;
  }
  const KernelTable* t = table_by_name(name);
  if (t == nullptr) {
    if (error) *error = "kernel '" + name + "' is not compiled into this build";
    return false;
  }
  if (!cpu_has(name)) {
    if (error) *error = "kernel '" + name + "' is not supported by this CPU";
    return false;
  }
  g_table.store(t);
  return true;
}

void init_from_env() {
  const char* env = std::getenv("SLIDE_KERNEL");
  std::string err;
  // A bad SLIDE_KERNEL falls back to auto here; the engine adapter validates the variable and
  // refuses it with a message before any work, so this fallback is never silent in practice.
  if (env == nullptr || !try_select(env, &err)) g_table.store(best_table());
}

}  // namespace

const KernelTable& kernels() {
  std::call_once(g_once, init_from_env);
  return *g_table.load(std::memory_order_acquire);
}

bool select_kernels(const std::string& name, std::string* error) {
  std::call_once(g_once, init_from_env);
  return try_select(name, error);
}

std::vector<std::string> kernels_compiled() {
  std::vector<std::string> out;
  for (const char* n : {"scalar", "avx2", "avx512"})
    if (table_by_name(n) != nullptr) out.emplace_back(n);
  return out;
}

std::vector<std::string> kernels_supported() {
  std::vector<std::string> out;
  for (const char* n : {"scalar", "avx2", "avx512"})
    if (table_by_name(n) != nullptr && cpu_has(n)) out.emplace_back(n);
  return out;
}

}  // namespace slide
