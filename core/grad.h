// hitch/core/grad.h: the gradient held by one tensor.
//
// A Grad is empty, dense (a Tensor of the owner's shape) or row-sparse over dim 0. A sparse
// Grad is a list of blocks in arrival order, one per add_rows call; each block holds
// (row, row_width values) entries. Embedding ops hand in blocks whose rows are sorted and
// unique, with the values deferred (RowSums: the recipe, summed per row when read, so no entry
// per occurrence and no U x width array is stored); other callers may pass any rows. The value
// of row r is the sum of r's entries, blocks summed in arrival order (an entry's own block
// first).
//
// Every write is an addition. Layout rules mirror PyTorch: sparse + sparse stays sparse, any
// dense contribution makes the whole gradient dense. Ops that don't know about rows only ever
// call add(); embedding ops call add_rows(), which scatters into a dense gradient or appends a
// block to a sparse one, or add_lookup() for a small dense table (no sort; the same bits).
//
// Optimizers read a sparse Grad either coalesced (coalesce(), then rows() / row_values(): one
// sorted block, a copy when there were several) or through for_each_row(), which walks the
// blocks' union in row order and sums a row's entries on the fly: the fused path, no coalesced
// copy, split over threads by row range. Both give bitwise the same row values.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <hitch/core/parallel.h>
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
// RowSums and Grad::add_lookup give the same bits.
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
// a copy; or rows and their unsummed values (sums set, values empty).
struct RowBlock {
  RowBuffer rows;
  FloatBuffer values;
  std::shared_ptr<const RowSums> sums;
};

// Turns a block with sums into one with values (split over threads by row); no-op otherwise.
void materialize(RowBlock& block);

// One embedding lookup's gradient, not grouped by row: each position p in `positions`
// (increasing) sends coef[p] * g[src[p]] (width floats; coef empty: 1, src empty: p) to row
// keys[p]. Grad::add_lookup() takes it into a dense gradient without sorting.
struct Lookup {
  std::span<const std::int64_t> keys;
  std::span<const std::uint32_t> positions;
  const float* g = nullptr;
  std::size_t width = 0;
  std::span<const std::uint32_t> src;
  std::span<const float> coef;
};

// A block of `rows` rows of `width` floats, contents unspecified. Its buffers are recycled from
// sparse gradients that were zeroed or destroyed (a few are kept), so a training loop does not
// allocate (and page-fault) a fresh gradient every step.
RowBlock make_row_block(std::size_t rows, std::size_t width);

class Grad {
 public:
  explicit Grad(Shape shape) : shape_(std::move(shape)) {}
  ~Grad();
  Grad(const Grad&) = delete;
  Grad& operator=(const Grad&) = delete;

  bool empty() const { return layout_ == Layout::Empty; }
  bool is_sparse() const { return layout_ == Layout::Sparse; }
  bool is_dense() const { return layout_ == Layout::Dense; }

  // Which recorded op first made this (leaf's) gradient dense: its name ("matmul", "embedding"
  // for a lookup with sparse = false) and node number, set by GradSink when a contribution turns
  // the layout dense; empty op if it became dense otherwise (Grad::add by hand). Kept while the
  // gradient lives (zero() keeps the dense layout); SparseAdam's refusal names it.
  void set_dense_origin(std::string_view op, std::uint64_t node) {
    dense_op_ = op;
    dense_node_ = node;
  }
  const std::string& dense_op() const { return dense_op_; }
  std::uint64_t dense_node() const { return dense_node_; }
  const Shape& shape() const { return shape_; }
  std::int64_t row_width() const;  // numel / shape[0]

  // g must have this gradient's shape. Makes the gradient dense.
  void add(const Tensor& g);
  // values holds rows.size() rows of row_width() floats; entry m is added to row rows[m].
  // sparse = true keeps a sparse (or empty) gradient sparse; a dense one stays dense.
  void add_rows(std::span<const std::int64_t> rows, std::span<const float> values, bool sparse);
  // The same, taking the block over (no copy when it is kept sparse).
  void add_rows(RowBlock&& block, bool sparse);

  // Dense layout (densifies): adds a lookup's gradient, each row's occurrences summed first in
  // position order and the sum then added once, so the bits equal add_rows() of the grouped,
  // summed block (RowSums). Uses a per-thread scratch of the gradient's size instead of a sort;
  // only for gradients of at most kLookupMaxFloats floats (lookup_fits()).
  static constexpr std::size_t kLookupMaxFloats = std::size_t{1} << 18;
  static bool lookup_fits(const Shape& shape) {
    return numel_of(shape) <= static_cast<std::int64_t>(kLookupMaxFloats) && !shape.empty();
  }
  void add_lookup(const Lookup& lookup);

  // Dense view: the values for a dense gradient, the scattered sum for a sparse one, zeros if
  // empty. A fresh tensor except for the dense layout, where it is the stored tensor itself.
  Tensor dense() const;
  // Dense storage for in-place accumulation by a kernel (creates zeros; densifies).
  float* dense_data();

  // Row-sparse access. coalesce() leaves one block, rows sorted and unique (repeated rows summed
  // as described above). rows() / row_values() coalesce first, so they always see that block.
  void coalesce();
  std::span<const std::int64_t> rows() const;
  std::span<const float> row_values() const;
  std::span<float> row_values_mut();
  std::size_t num_blocks() const { return blocks_.size(); }

  // Sparse layout only: calls fn(row, const float* values) once per distinct row, rows in
  // increasing order, values summed exactly as coalesce() would, without building the coalesced
  // copy. Chunks of rows run on get_num_threads() threads (fn must only touch state of its row).
  // ahead(row), if given, is called a few rows before fn reaches row: a place to prefetch the
  // parameter and state rows the update will touch (they are random accesses into a big table).
  template <class Fn, class Ahead>
  void for_each_row(Fn&& fn, Ahead&& ahead);
  template <class Fn>
  void for_each_row(Fn&& fn) {
    for_each_row(fn, [](std::int64_t) {});
  }
  // Does everything for_each_row allocates (sorting the blocks, the row scratch of every chunk)
  // and changes no value. After it, for_each_row allocates nothing and cannot fail, which is how
  // an optimizer step allocates first and then writes (all-or-nothing, optim/optimizer.h).
  void prepare_walk() const;

  // Zero in place, keeping the layout (dense keeps its tensor, sparse becomes nnz 0).
  void zero();

 private:
  enum class Layout { Empty, Dense, Sparse };
  struct Block {
    RowBuffer rows;
    FloatBuffer values;
    bool sorted_unique = true;
    std::shared_ptr<const RowSums> sums;  // set: values not computed yet (see RowSums)
    // Row k's values: in place, or summed into scratch (width floats).
    const float* at(std::size_t k, std::size_t width, float* scratch) const {
      return sums ? sums->row_or_scratch(k, scratch) : values.data() + k * width;
    }
  };
  void sort_blocks() const;  // makes every block sorted and unique (sums repeats in place)
  void merge_blocks() const;  // coalesce(): leaves one sorted block
  void scatter_into(float* dst, const Block& block) const;
  void materialize_blocks() const;  // computes every deferred block's values
  void release_blocks();  // clears blocks_, recycling their buffers
  // scratch: 3 * row_width() floats; at: one cursor per block (used with more than two blocks).
  template <class Fn, class Ahead>
  void visit_range(std::int64_t lo, std::int64_t hi, Fn& fn, Ahead& ahead, float* scratch, std::size_t* at) const;
  static constexpr std::size_t kAhead = 16;  // rows between ahead(row) and fn(row)

  Shape shape_;
  Layout layout_ = Layout::Empty;
  Tensor dense_;
  std::string dense_op_;  // see set_dense_origin
  std::uint64_t dense_node_ = 0;
  mutable std::vector<Block> blocks_;  // sparse layout; normalised lazily (values unchanged)
  // for_each_row's per-chunk scratch, sized by prepare_walk() for get_num_threads() chunks.
  mutable std::vector<float> walk_scratch_;
  mutable std::vector<std::size_t> walk_at_;
};

// Walks rows in [lo, hi) of every (sorted) block at once: a row present in one block is passed
// straight from it (or summed into scratch, for a deferred block); a row in several is summed in
// block order, each block's own value first.
template <class Fn, class Ahead>
void Grad::visit_range(std::int64_t lo, std::int64_t hi, Fn& fn, Ahead& ahead, float* scratch, std::size_t* at) const {
  const auto width = static_cast<std::size_t>(row_width());
  float* const own = scratch;                   // a deferred block's row
  float* const other = own + width;             // the second block's row
  float* const total = other + width;           // a row summed over blocks
  auto bound = [&](const Block& b, std::int64_t row) {
    return static_cast<std::size_t>(std::lower_bound(b.rows.begin(), b.rows.end(), row) - b.rows.begin());
  };
  if (blocks_.size() == 1) {
    const Block& b = blocks_[0];
    std::size_t k = bound(b, lo);
    const std::size_t end = bound(b, hi);
    for (std::size_t j = k; j < std::min(end, k + kAhead); ++j) ahead(b.rows[j]);
    for (; k < end; ++k) {
      if (k + kAhead < end) ahead(b.rows[k + kAhead]);
      fn(b.rows[k], b.at(k, width, own));
    }
    return;
  }
  if (blocks_.size() == 2) {  // the tied case (two lookups): a plain two-way merge
    const Block& x = blocks_[0];
    const Block& y = blocks_[1];
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
  for (std::size_t j = 0; j < blocks_.size(); ++j) at[j] = bound(blocks_[j], lo);
  for (;;) {
    std::int64_t row = hi;
    std::size_t count = 0, only = 0;
    for (std::size_t j = 0; j < blocks_.size(); ++j) {
      if (at[j] >= blocks_[j].rows.size()) continue;
      const std::int64_t r = blocks_[j].rows[at[j]];
      if (r < row) {
        row = r;
        count = 1;
        only = j;
      } else if (r == row) {
        ++count;
      }
    }
    if (row >= hi) return;
    for (std::size_t j = 0; j < blocks_.size(); ++j)
      if (at[j] + kAhead < blocks_[j].rows.size() && blocks_[j].rows[at[j]] == row) ahead(blocks_[j].rows[at[j] + kAhead]);
    if (count == 1) {
      fn(row, blocks_[only].at(at[only], width, own));
      ++at[only];
      continue;
    }
    bool first = true;
    for (std::size_t j = 0; j < blocks_.size(); ++j) {
      if (at[j] >= blocks_[j].rows.size() || blocks_[j].rows[at[j]] != row) continue;
      const float* v = blocks_[j].at(at[j], width, own);
      if (first) std::copy_n(v, width, total);  // not memcpy: null pointers for D = 0
      else for (std::size_t d = 0; d < width; ++d) total[d] += v[d];
      first = false;
      ++at[j];
    }
    fn(row, static_cast<const float*>(total));
  }
}

template <class Fn, class Ahead>
void Grad::for_each_row(Fn&& fn, Ahead&& ahead) {
  if (layout_ != Layout::Sparse || blocks_.empty()) return;
  prepare_walk();  // nothing left to do if the caller did it
  // Split the row space at quantiles of the largest block, so chunks get similar work.
  const Block* largest = &blocks_[0];
  std::size_t total = 0;
  for (const Block& b : blocks_) {
    total += b.rows.size();
    if (b.rows.size() > largest->rows.size()) largest = &b;
  }
  const std::size_t n = largest->rows.size();
  const std::int64_t end = shape_.empty() ? 1 : shape_[0];
  // At least kParallelMinFloats gradient floats per chunk: below that a thread costs more than it saves.
  const std::size_t floats = std::max<std::size_t>(1, total * static_cast<std::size_t>(std::max<std::int64_t>(1, row_width())));
  const std::size_t min_chunk = std::max<std::size_t>(1, n * kParallelMinFloats / floats);
  // Each chunk takes its own slot of the scratch prepare_walk() sized (at most get_num_threads()
  // chunks run; more only if the thread count changed in between, which then allocates).
  const std::size_t per_slot = 3 * static_cast<std::size_t>(row_width());
  const std::size_t cursors = blocks_.size();
  std::size_t slots = walk_at_.size() / cursors;
  if (per_slot != 0) slots = std::min(slots, walk_scratch_.size() / per_slot);
  std::atomic<std::size_t> next_slot{0};
  const auto chunk = [&](std::size_t b, std::size_t e) {
    const std::int64_t lo = b == 0 ? 0 : largest->rows[b];
    const std::int64_t hi = e == n ? end : largest->rows[e];
    const std::size_t k = next_slot.fetch_add(1, std::memory_order_relaxed);
    if (k < slots) {
      visit_range(lo, hi, fn, ahead, walk_scratch_.data() + k * per_slot, walk_at_.data() + k * cursors);
    } else {
      std::vector<float> scratch(per_slot);
      std::vector<std::size_t> at(cursors);
      visit_range(lo, hi, fn, ahead, scratch.data(), at.data());
    }
  };
  parallel_for(n, min_chunk, std::cref(chunk));  // by reference: no allocation
}

}  // namespace hitch
