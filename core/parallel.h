// hitch/core/parallel.h: the thread count hitch's kernels use, and the one loop that splits work.
//
//   hitch::set_num_threads(2);   // process-wide; 1 (the default) runs everything on the caller
//
// Kernels that pay off on large inputs (embedding gathers and row reductions, optimizer row
// walks) split their OUTPUT items (bags, unique rows, parameter elements) into contiguous
// chunks, one per thread. Every item is computed by one thread in a fixed order, so results are
// bitwise identical for any thread count: no floating-point atomics, no reductions across
// chunks. Small inputs stay on the calling thread (kParallelMinFloats).
// std::thread workers, created on first use; after a job they spin 200 us for the next one,
// then park. Chunks are claimed by whichever thread is free (the caller included), so a late
// worker delays nothing. OpenBLAS's own pool is pinned to one thread (ops/blas.cpp: its bits
// would depend on its thread count); hitch calls sgemm from the caller only. Left out on
// purpose: nested parallelism (a parallel_for inside a chunk runs serially).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace hitch {

// The least work worth a second thread, in floats moved or computed per chunk (~1-3 us): handing
// a chunk to a spinning worker costs well under a microsecond, waking a parked one ~50 us on a VM
// (parallel.cpp). Kernels size their min_chunk from it.
constexpr std::size_t kParallelMinFloats = std::size_t{1} << 13;

// Requires 1 <= n <= 256 (hitch::Error otherwise). Takes effect for the next parallel_for.
void set_num_threads(int n);
int get_num_threads();

// Runs fn(begin, end) over contiguous chunks covering [0, n), at most get_num_threads() of them
// and none smaller than min_chunk items (so n < 2 * min_chunk runs as one call on this thread).
// The caller runs the first chunk; returns when all are done; rethrows the first exception.
// fn must not depend on where the chunk boundaries fall. Once the pool exists (any earlier call,
// or get_num_threads()), allocates nothing and cannot fail by itself when fn is passed as
// std::ref / std::cref (a worker that cannot be started is replaced by the caller), so code that
// must not fail half-way (an optimizer's update) can use it.
void parallel_for(std::size_t n, std::size_t min_chunk, const std::function<void(std::size_t, std::size_t)>& fn);

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
