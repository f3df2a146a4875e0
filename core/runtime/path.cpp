// hitch/core/runtime/path.cpp: the kernel path switch (see path.h).
#include <hitch/core/runtime/path.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#include <hitch/core/error.h>

namespace hitch {

namespace {
constexpr int kUnset = -1;
std::atomic<int> chosen{kUnset};  // a KernelPath once set_kernel_path was called
}  // namespace

void set_kernel_path(KernelPath path) { chosen.store(static_cast<int>(path), std::memory_order_relaxed); }

KernelPath kernel_path() {
  const int c = chosen.load(std::memory_order_relaxed);
  if (c != kUnset) return static_cast<KernelPath>(c);
  static const char* const env = std::getenv("HITCH_KERNELS");  // read once: getenv is not cheap
  const std::string_view v = env == nullptr ? "" : env;
  if (v.empty() || v == "fast") return KernelPath::fast;
  if (v == "reference") return KernelPath::reference;
  throw Error(fmt::format("HITCH_KERNELS: got \"{}\", but the valid values are \"fast\" and \"reference\" (or unset: "
                          "fast)",
                          v));
}

}  // namespace hitch
