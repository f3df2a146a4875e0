// hitch/ops/kernels/embedding_kernels.h: the one door to the fast kernels of embedding and
// embedding_bag. Internal: included by ops/embedding.cpp and ops/embedding_bag.cpp only.
//
// The ops hold the plain loops that define them (the reference path, core/runtime/path.h) and
// call these only when !reference_kernels(). Each kernel computes bitwise what its op's plain
// loop computes, the same float operations in the same order; it only adds threads (each output
// row computed by one thread), prefetches, compile-time row widths, per-CPU clones, a radix sort
// by row and deferred row sums (RowSums, core/runtime/rows.h). tests/test_kernel_paths_ops.cpp
// checks the equality bit for bit.
//
//   ops/kernels/rows.cpp  the row gather (embedding forward) and the lookup backward (positions
//                         grouped by row, one deferred sum per unique row, or add_lookup)
//   ops/kernels/bags.cpp  the bag forwards (sum / mean / sqrtn, max) and embedding_bag's
//                         lookup backward
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <hitch/core/runtime/rows.h>
#include <hitch/core/tensor.h>
#include <hitch/ops/embedding.h>

namespace hitch {
class GradSink;
}

namespace hitch::kernels {

// ---- rows (ops/kernels/rows.cpp) -----------------------------------------------------------------

// Items per parallel_for chunk so that a chunk moves at least kParallelMinFloats floats.
std::size_t min_chunk_for(std::size_t floats_per_item);

// out[i] = w[idx[i]] (width floats each), prefetching ahead, split over threads by position.
void gather_rows(const float* w, std::span<const std::int64_t> idx, std::size_t width, float* out);

// Positions grouped by row: order = the positions sorted by keys[position] (stable: increasing
// positions within a row); group u is order[starts[u] : starts[u+1]], all with row rows[u];
// rows strictly increasing.
struct RowGroups {
  std::vector<std::int64_t> rows;
  std::vector<std::uint32_t> starts;
  std::vector<std::uint32_t> order;
};
// positions: the positions that send a gradient, increasing; every keys[p] in [0, num_rows).
RowGroups group_by_row(std::span<const std::int64_t> keys, std::vector<std::uint32_t> positions, std::int64_t num_rows);

// The U unique rows with value[u] = Σ_{p in group u, increasing} coef[p] * g[src[p]] (width
// floats each; coef empty = 1, src empty = p itself), as a deferred block (RowSums,
// core/runtime/rows.h): the sums are computed by whoever reads the values (the fused optimizer
// walk, a dense scatter, coalesce), each row by one thread in position order.
RowBlock reduce_rows(RowGroups&& groups, const Tensor& g, std::size_t width, std::vector<std::uint32_t> src,
                     std::vector<float> coef);

// A lookup's weight gradient (input 0 of the sink's node): each position p in `positions`
// (increasing) sends coef[p] * g[src[p]] (coef empty: g itself; src empty: p) to row keys[p].
// A small dense table takes it through GradSink::add_lookup (no sort); otherwise the positions
// are grouped by row and handed over as one deferred block (group_by_row, reduce_rows).
void lookup_backward(GradSink& sink, std::span<const std::int64_t> keys, std::vector<std::uint32_t> positions,
                     const Tensor& g, std::size_t width, std::vector<std::uint32_t> src, std::vector<float> coef,
                     std::int64_t num_rows, bool sparse);

// embedding's weight gradient: every position whose index is not pad sends coef[p] * g[p]
// (coef: 1 / count, scale_grad_by_freq; empty: none).
void embedding_backward(GradSink& sink, std::span<const std::int64_t> indices, std::optional<std::int64_t> pad,
                        const Tensor& g, std::size_t width, std::vector<float> coef, std::int64_t num_rows,
                        bool sparse);

// ---- bags (ops/kernels/bags.cpp) -----------------------------------------------------------------

// One embedding_bag call as the kernels see it (ops/embedding_bag.cpp owns the data): bag b is
// positions [bounds[b], bounds[b+1]) of input; positions whose index is pad are skipped.
struct Bags {
  BagMode mode = BagMode::Sum;
  std::int64_t dim = 0;
  std::optional<std::int64_t> pad;
  std::span<const std::int64_t> input;   // flattened indices (all of them)
  std::span<const std::int64_t> bounds;  // B+1
};

// sum / mean / sqrtn: out [B, D] (every row written); denom[b] = the bag's divisor (1 for sum),
// or 0 when the bag has no gradient (no non-padding entry, or a zero divisor). psw: null or the
// per-sample weights.
void weighted_bags_forward(const Bags& s, const float* w, const float* psw, float* out, std::vector<double>& denom);

// max: out [B, D] (every row written); argmax [B, D] (the row that gave each max, -1 for an
// empty bag) filled only when with_argmax.
void max_bags_forward(const Bags& s, const float* w, float* out, std::vector<std::int64_t>& argmax, bool with_argmax);

// sum / mean / sqrtn weight gradient: position i of bag b (denom[b] != 0, index not pad) sends
// c_i g[b], c_i = psw_i / denom[b] (1 / denom[b] without psw) divided by counts[i] when counts is
// not empty (scale_grad_by_freq), rounded to float once; c_i = 1 exactly (no multiply) for sum
// without weights or counts.
void weighted_bags_backward(GradSink& sink, const Bags& s, std::span<const double> denom, std::span<const float> psw,
                            std::span<const std::int64_t> counts, const Tensor& g, std::int64_t num_rows, bool sparse);

}  // namespace hitch::kernels
