// hitch/core/runtime/rows.h: the fast machinery behind a row-sparse gradient (core/grad.h).
//
// Part of the runtime (docs/architecture.md). core/grad.h says what a row-sparse gradient is:
// blocks of (row, values) entries, every write an addition, a row's value the sum of its entries
// in arrival order. Everything here computes exactly that, faster:
//  * deferred row sums (RowSums): an embedding backward hands over the recipe of each unique
//    row's sum instead of the summed rows; whoever reads the values sums them (the fused
//    optimizer walk never writes them to memory);
//  * recycled block buffers (make_row_block), so a training loop does not page-fault fresh
//    gradient memory every step;
//  * the small-table path (add_lookup: a dense gradient summed in a per-thread scratch, no sort);
//  * merging sorted blocks and walking their union in row order over threads (RowWalk), with
//    prefetches of the rows an optimizer will touch.
// The reference versions (KernelPath::reference, core/runtime/path.h) are the plain loops in
// core/grad.cpp; both give the same bits.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/tensor.h>

namespace hitch {

// std::allocator that leaves new elements uninitialised (resize() of a float buffer that is
// about to be overwritten should not write it twice).
template <class T>
struct UninitAllocator : std::allocator<T>, DefaultInitConstruct {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) {}
  using DefaultInitConstruct::construct;
};
using FloatBuffer = std::vector<float, UninitAllocator<float>>;
using RowBuffer = std::vector<std::int64_t, UninitAllocator<std::int64_t>>;

// One occurrence's part of a row's running sum: the first occurrence assigns, later ones add;
// scaled: times c (a lookup with coefficients). The one place this rounding is written, so
// RowSums and add_lookup give the same bits.
HITCH_ALWAYS_INLINE inline void add_occurrence(float* acc, const float* gp, bool first, bool scaled, float c,
                                               std::size_t n) {
  if (first) {
    if (scaled) for (std::size_t d = 0; d < n; ++d) acc[d] = c * gp[d];
    else for (std::size_t d = 0; d < n; ++d) acc[d] = gp[d];
  } else {
    if (scaled) for (std::size_t d = 0; d < n; ++d) acc[d] += c * gp[d];
    else for (std::size_t d = 0; d < n; ++d) acc[d] += gp[d];
  }
}

// The values of a block of sorted unique rows that are not summed yet (embedding backward):
// row u's value is the sum over k in [starts[u], starts[u+1]) of coef[p] * g[src[p]] with
// p = order[k], in k order (coef empty: 1; src empty: p itself), width floats per g row. A sparse
// Grad keeps this instead of the U x width values, and the fused optimizer walk sums each row
// as it updates it: the gradient rows are never written to memory and read back. Anything that
// needs the values as an array (coalesce, dense, hooks, anomaly checks) computes them first,
// with the same row() and so the same bits.
struct RowSums {
  std::vector<std::uint32_t> starts, order, src;
  std::vector<float> coef;
  Tensor g;  // the upstream gradient, shared: the tape hands it over and never writes it again
  std::size_t width = 0;

  // Row u's values: a pointer into g when the row has one occurrence and no coefficient (most
  // rows of a big table), else summed into scratch (width floats).
  const float* row_or_scratch(std::size_t u, float* scratch) const {
    if (coef.empty() && starts[u + 1] - starts[u] == 1) {
      const std::uint32_t p = order[starts[u]];
      return g.data() + static_cast<std::size_t>(src.empty() ? p : src[p]) * width;
    }
    row(u, scratch);
    return scratch;
  }

  void row(std::size_t u, float* out) const {
    switch (width) {  // common widths: the row's sum stays in registers, written once
      case 16: return row_w<16>(u, out);
      case 32: return row_w<32>(u, out);
      case 64: return row_w<64>(u, out);
      case 128: return row_w<128>(u, out);
      default: return row_w<0>(u, out);
    }
  }

 private:
  // The same additions in the same order for every W (W = 0: width read at run time, summed in out).
  template <std::size_t W>
  void row_w(std::size_t u, float* out) const {
    const std::size_t n = W != 0 ? W : width;
    float local[W != 0 ? W : 1];
    float* acc = W != 0 ? local : out;
    const float* gd = g.data();
    auto at = [&](std::uint32_t k, float& c) {
      const std::uint32_t p = order[k];
      c = coef.empty() ? 1.0f : coef[p];
      return gd + static_cast<std::size_t>(src.empty() ? p : src[p]) * n;
    };
    const std::uint32_t lo = starts[u], hi = starts[u + 1];  // hi > lo: a row has an occurrence
    float c = 1.0f;
    const float* gp = at(lo, c);
    add_occurrence(acc, gp, true, !coef.empty(), c, n);  // peeled: acc is fully written first
    for (std::uint32_t k = lo + 1; k < hi; ++k) {
      gp = at(k, c);
      add_occurrence(acc, gp, false, !coef.empty(), c, n);
    }
    if (W != 0) for (std::size_t d = 0; d < n; ++d) out[d] = acc[d];
  }
};

// Rows and their values (rows.size() * row_width floats), for handing a block to a Grad without
// a copy; or rows and their unsummed values (sums set, values empty). sorted_unique: rows
// strictly increasing (Grad sets it when it takes the block).
struct RowBlock {
  RowBuffer rows;
  FloatBuffer values;
  std::shared_ptr<const RowSums> sums;
  bool sorted_unique = true;
  // Row k's values: in place, or summed into scratch (width floats).
  const float* at(std::size_t k, std::size_t width, float* scratch) const {
    return sums ? sums->row_or_scratch(k, scratch) : values.data() + k * width;
  }
};

// One embedding lookup's gradient, not grouped by row: each position p in `positions`
// (increasing) sends coef[p] * g[src[p]] (width floats; coef empty: 1, src empty: p) to row
// keys[p]. add_lookup() takes it into a dense gradient without sorting.
struct Lookup {
  std::span<const std::int64_t> keys;
  std::span<const std::uint32_t> positions;
  const float* g = nullptr;
  std::size_t width = 0;
  std::span<const std::uint32_t> src;
  std::span<const float> coef;
};

// Turns a block with sums into one with values (split over threads by row); no-op otherwise.
void materialize(RowBlock& block);

// A block of `rows` rows of `width` floats, contents unspecified. Its buffers are recycled from
// sparse gradients that were zeroed or destroyed (a few are kept), so a training loop does not
// allocate (and page-fault) a fresh gradient every step.
RowBlock make_row_block(std::size_t rows, std::size_t width);

// Hands a block's buffers back to make_row_block's pool (a few are kept).
void recycle(RowBlock&& block);

// dst[rows[m]] += value of entry m, for a dense [N, width] gradient dst. A sorted unique block is
// split over threads by position (its rows are independent); any other block is added serially.
void scatter_rows(float* dst, const RowBlock& block, std::size_t width);

// Sorts a block's rows, summing repeated rows in arrival order (stable); no-op when sorted_unique.
void sort_block(RowBlock& block, std::size_t width);

// Leaves one sorted block: the blocks sorted, then merged, a row in several summed in block order.
void merge_blocks(std::vector<RowBlock>& blocks, std::size_t width);

// Whether a gradient of this shape takes the small-table path (add_lookup): at most
// kLookupMaxFloats floats (the per-thread scratch is the table's size), rank >= 1.
inline constexpr std::size_t kLookupMaxFloats = std::size_t{1} << 18;
inline bool lookup_fits(const Shape& shape) {
  return !shape.empty() && numel_of(shape) <= static_cast<std::int64_t>(kLookupMaxFloats);
}
// The small-table path of a dense gradient dst ([rows, width]): each row's occurrences summed
// first, in position order, in a per-thread scratch of the table's size, then added once (the
// same bits as grouping the lookup by row and scattering it).
void add_lookup(float* dst, std::size_t rows, std::size_t width, const Lookup& lookup);

// Walks the union of sorted blocks in row order, calling fn(row, values) once per distinct row,
// over get_num_threads() chunks of the row space; owns the chunks' scratch, so that after
// prepare() a walk allocates nothing and cannot fail (an optimizer step's all-or-nothing rule).
class RowWalk {
 public:
  // Sorts every block (sort_block) and sizes the scratch for get_num_threads() chunks.
  void prepare(std::vector<RowBlock>& blocks, std::size_t width);
  template <class Fn, class Ahead>
  void run(const std::vector<RowBlock>& blocks, std::size_t width, Fn& fn, Ahead& ahead);
  // Rows in [lo, hi) of every block at once (also merge_blocks' walk). scratch: 3 * width floats;
  // at: one cursor per block.
  template <class Fn, class Ahead>
  static void visit_range(const std::vector<RowBlock>& blocks, std::size_t width, std::int64_t lo, std::int64_t hi,
                          Fn& fn, Ahead& ahead, float* scratch, std::size_t* at);
  static constexpr std::size_t kAhead = 16;  // rows between ahead(row) and fn(row)

 private:
  std::vector<float> scratch_;
  std::vector<std::size_t> at_;
};

// Walks rows in [lo, hi) of every (sorted) block at once: a row present in one block is passed
// straight from it (or summed into scratch, for a deferred block); a row in several is summed in
// block order, each block's own value first.
template <class Fn, class Ahead>
void RowWalk::visit_range(const std::vector<RowBlock>& blocks, std::size_t width, std::int64_t lo, std::int64_t hi,
                          Fn& fn, Ahead& ahead, float* scratch, std::size_t* at) {
  float* const own = scratch;                   // a deferred block's row
  float* const other = own + width;             // the second block's row
  float* const total = other + width;           // a row summed over blocks
  auto bound = [&](const RowBlock& b, std::int64_t row) {
    return static_cast<std::size_t>(std::lower_bound(b.rows.begin(), b.rows.end(), row) - b.rows.begin());
  };
  if (blocks.size() == 1) {
    const RowBlock& b = blocks[0];
    std::size_t k = bound(b, lo);
    const std::size_t end = bound(b, hi);
    for (std::size_t j = k; j < std::min(end, k + kAhead); ++j) ahead(b.rows[j]);
    for (; k < end; ++k) {
      if (k + kAhead < end) ahead(b.rows[k + kAhead]);
      fn(b.rows[k], b.at(k, width, own));
    }
    return;
  }
  if (blocks.size() == 2) {  // the tied case (two lookups): a plain two-way merge
    const RowBlock& x = blocks[0];
    const RowBlock& y = blocks[1];
    std::size_t i = bound(x, lo), j = bound(y, lo);
    const std::size_t i_end = bound(x, hi), j_end = bound(y, hi);
    for (std::size_t k = i; k < std::min(i_end, i + kAhead); ++k) ahead(x.rows[k]);
    for (std::size_t k = j; k < std::min(j_end, j + kAhead); ++k) ahead(y.rows[k]);
    while (i < i_end || j < j_end) {
      const bool take_x = i < i_end && (j == j_end || x.rows[i] <= y.rows[j]);
      const bool take_y = j < j_end && (i == i_end || y.rows[j] <= x.rows[i]);
      if (take_x && i + kAhead < i_end) ahead(x.rows[i + kAhead]);
      if (take_y && j + kAhead < j_end) ahead(y.rows[j + kAhead]);
      if (take_x && take_y) {  // in both: x's value first, then y's, as coalesce() sums them
        const float* a = x.at(i, width, own);
        const float* b = y.at(j, width, other);
        for (std::size_t d = 0; d < width; ++d) total[d] = a[d];
        for (std::size_t d = 0; d < width; ++d) total[d] += b[d];
        fn(x.rows[i], static_cast<const float*>(total));
        ++i;
        ++j;
      } else if (take_x) {
        fn(x.rows[i], x.at(i, width, own));
        ++i;
      } else {
        fn(y.rows[j], y.at(j, width, own));
        ++j;
      }
    }
    return;
  }
  for (std::size_t j = 0; j < blocks.size(); ++j) at[j] = bound(blocks[j], lo);
  for (;;) {
    std::int64_t row = hi;
    std::size_t count = 0, only = 0;
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      if (at[j] >= blocks[j].rows.size()) continue;
      const std::int64_t r = blocks[j].rows[at[j]];
      if (r < row) {
        row = r;
        count = 1;
        only = j;
      } else if (r == row) {
        ++count;
      }
    }
    if (row >= hi) return;
    for (std::size_t j = 0; j < blocks.size(); ++j)
      if (at[j] + kAhead < blocks[j].rows.size() && blocks[j].rows[at[j]] == row) ahead(blocks[j].rows[at[j] + kAhead]);
    if (count == 1) {
      fn(row, blocks[only].at(at[only], width, own));
      ++at[only];
      continue;
    }
    bool first = true;
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      if (at[j] >= blocks[j].rows.size() || blocks[j].rows[at[j]] != row) continue;
      const float* v = blocks[j].at(at[j], width, own);
      if (first) std::copy_n(v, width, total);  // not memcpy: null pointers for D = 0
      else for (std::size_t d = 0; d < width; ++d) total[d] += v[d];
      first = false;
      ++at[j];
    }
    fn(row, static_cast<const float*>(total));
  }
}

template <class Fn, class Ahead>
void RowWalk::run(const std::vector<RowBlock>& blocks, std::size_t width, Fn& fn, Ahead& ahead) {
  if (blocks.empty()) return;
  // Split the row space at quantiles of the largest block, so chunks get similar work.
  const RowBlock* largest = &blocks[0];
  std::size_t total = 0;
  for (const RowBlock& b : blocks) {
    total += b.rows.size();
    if (b.rows.size() > largest->rows.size()) largest = &b;
  }
  const std::size_t n = largest->rows.size();
  const std::int64_t end = std::numeric_limits<std::int64_t>::max();  // past every row
  // At least kParallelMinFloats gradient floats per chunk: below that a thread costs more than it saves.
  const std::size_t floats = std::max<std::size_t>(1, total * std::max<std::size_t>(1, width));
  const std::size_t min_chunk = std::max<std::size_t>(1, n * kParallelMinFloats / floats);
  // Each chunk takes its own slot of the scratch prepare() sized (at most get_num_threads()
  // chunks run; more only if the thread count changed in between, which then allocates).
  const std::size_t per_slot = 3 * width;
  const std::size_t cursors = blocks.size();
  std::size_t slots = at_.size() / cursors;
  if (per_slot != 0) slots = std::min(slots, scratch_.size() / per_slot);
  std::atomic<std::size_t> next_slot{0};
  const auto chunk = [&](std::size_t b, std::size_t e) {
    const std::int64_t lo = b == 0 ? 0 : largest->rows[b];
    const std::int64_t hi = e == n ? end : largest->rows[e];
    const std::size_t k = next_slot.fetch_add(1, std::memory_order_relaxed);
    if (k < slots) {
      visit_range(blocks, width, lo, hi, fn, ahead, scratch_.data() + k * per_slot, at_.data() + k * cursors);
    } else {
      std::vector<float> scratch(per_slot);
      std::vector<std::size_t> at(cursors);
      visit_range(blocks, width, lo, hi, fn, ahead, scratch.data(), at.data());
    }
  };
  parallel_for(n, min_chunk, std::cref(chunk));  // by reference: no allocation
}

}  // namespace hitch
