// hitch/core/runtime/parallel.h: the thread count hitch's kernels use, and the one loop that splits work.
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
// worker delays nothing. On a busy machine (a core shared with another process), jobs during
// which the calling thread is kept off its core (preempted, or waiting for a preempted worker)
// switch hitch to the caller alone for a while (20 ms, doubling to 640 ms while it stays busy),
// so 2 threads do not run much slower than 1 there (parallel.cpp, docs/performance.md). OpenBLAS's own pool is pinned to one thread (ops/blas.cpp: its bits
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
// The reference path (core/runtime/path.h) runs everything as one call on this thread. The caller
// runs the first chunk; returns when all are done; rethrows the first exception.
// fn must not depend on where the chunk boundaries fall. Once the pool exists (any earlier call,
// or get_num_threads()), allocates nothing and cannot fail by itself when fn is passed as
// std::ref / std::cref (a worker that cannot be started is replaced by the caller), so code that
// must not fail half-way (an optimizer's update) can use it.
void parallel_for(std::size_t n, std::size_t min_chunk, const std::function<void(std::size_t, std::size_t)>& fn);

}  // namespace hitch
