// hitch/core/runtime/prefetch.h: the helpers of the fast kernels that are not loops of their own:
// row prefetches (random rows of a big table are the hot loads of every embedding kernel and
// sparse optimizer walk) and per-CPU clones of arithmetic-bound loops. Part of the runtime
// (docs/architecture.md): the reference kernels (core/runtime/path.h) use neither.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hitch {

#if defined(__GNUC__) || defined(__clang__)
#define HITCH_ALWAYS_INLINE __attribute__((always_inline))
#else
#define HITCH_ALWAYS_INLINE
#endif

// Prefetches the width floats of row `row` of a row-major array (a read hint: baseline x86-64
// has no prefetchw): random rows of a big table are the hot loads of every embedding kernel and
// sparse optimizer walk. Caution: GCC deletes a call to a function that does nothing but
// prefetch (it deduces the function is const and its result unused), so these functions and a
// callback made of prefetches must be inlined (HITCH_ALWAYS_INLINE, also on such a lambda).
// Every 64-byte line the row overlaps is requested: rows need not start on a line (a
// std::vector's data does not), and a missed last line would cost a full memory latency.
HITCH_ALWAYS_INLINE inline void prefetch_row_lines(const float* array, std::int64_t row, std::size_t width) {
  const auto begin = reinterpret_cast<std::uintptr_t>(array + static_cast<std::size_t>(row) * width);
  const std::uintptr_t end = begin + width * sizeof(float);
  for (std::uintptr_t line = begin & ~std::uintptr_t{63}; line < end; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line));
}
// The same for a compile-time width W: a row of a multiple of 16 floats that starts on a line
// (tensor storage is 64-byte aligned) is exactly W / 16 lines, requested by straight-line
// prefetches; this per-row arithmetic is a large share of a gather that hits in cache. Other
// rows (and W = 0, width known at run time) take the general loop.
template <std::size_t W>
HITCH_ALWAYS_INLINE inline void prefetch_row_w(const float* array, std::int64_t row, std::size_t width) {
  if constexpr (W != 0 && W % 16 == 0) {
    const float* begin = array + static_cast<std::size_t>(row) * W;
    if ((reinterpret_cast<std::uintptr_t>(begin) & 63) == 0) {
      for (std::size_t line = 0; line < W / 16; ++line) __builtin_prefetch(begin + line * 16);
      return;
    }
  }
  prefetch_row_lines(array, row, width);
}
// Run-time width: the common widths go to their straight-line form.
HITCH_ALWAYS_INLINE inline void prefetch_row(const float* array, std::int64_t row, std::size_t width) {
  switch (width) {
    case 16: return prefetch_row_w<16>(array, row, width);
    case 32: return prefetch_row_w<32>(array, row, width);
    case 64: return prefetch_row_w<64>(array, row, width);
    case 128: return prefetch_row_w<128>(array, row, width);
    default: return prefetch_row_lines(array, row, width);
  }
}
// Compiles a kernel for AVX-512, AVX2 and baseline x86-64 and picks one at load time (GCC
// target_clones; off under sanitizers and clang). For loops bound by arithmetic throughput (sqrt,
// division, in-cache sums). IEEE add, multiply, divide and sqrt round the same at any vector
// width, and the library is built with -ffp-contract=off (CMakeLists.txt; checked by the
// build_no_fma test) so nothing is contracted into FMA: results are bitwise the same either way.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && \
    !defined(__clang__)  // TSan: an ifunc resolver runs before its runtime starts and crashes
#define HITCH_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HITCH_TARGET_CLONES
#endif

}  // namespace hitch
