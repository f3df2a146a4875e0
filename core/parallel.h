// hitch/core/parallel.h: the thread count hitch's kernels use, and the one loop that splits work.
//
//   hitch::set_num_threads(2);   // process-wide; 1 (the default) runs everything on the caller
//
// Kernels that pay off on large inputs (embedding gathers and row reductions, optimizer row
// walks) split their OUTPUT items (bags, unique rows, parameter elements) into contiguous
// chunks, one per thread. Every item is computed by one thread in a fixed order, so results are
// bitwise identical for any thread count: no floating-point atomics, no reductions across
// chunks. Small inputs stay on the calling thread (waking a thread costs microseconds).
// std::thread workers, created on first use and parked between calls; OpenBLAS's own threads
// are not touched (hitch calls sgemm from the caller only). Left out on purpose: nested
// parallelism (a parallel_for inside a chunk runs serially), work stealing.
#pragma once

#include <cstddef>
#include <functional>

namespace hitch {

// Requires 1 <= n <= 256 (hitch::Error otherwise). Takes effect for the next parallel_for.
void set_num_threads(int n);
int get_num_threads();

// Runs fn(begin, end) over contiguous chunks covering [0, n), at most get_num_threads() of them
// and none smaller than min_chunk items (so n < 2 * min_chunk runs as one call on this thread).
// The caller runs the first chunk; returns when all are done; rethrows the first exception.
// fn must not depend on where the chunk boundaries fall.
void parallel_for(std::size_t n, std::size_t min_chunk, const std::function<void(std::size_t, std::size_t)>& fn);

}  // namespace hitch
