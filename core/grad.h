// hitch/core/grad.h: what a gradient is.
//
// The gradient held by one tensor is empty, dense (a Tensor of the tensor's shape) or row-sparse
// over dim 0: a list of blocks, each a list of (row, row_width values) entries, kept in the
// order they arrived. Every write is an addition; nothing is ever assigned over. The value of
// row r is the sum of r's entries: within a block in entry order (the first entry starts the
// sum), then block by block in arrival order. That one rule fixes the float rounding, so every
// way of reading the gradient (dense(), coalesce(), for_each_row) gives the same bits.
//
// Layouts follow PyTorch: sparse + sparse stays sparse; any dense contribution makes the whole
// gradient dense. Ops that do not know about rows call add(); embedding lookups call add_rows().
//
// The plain versions of these operations are in core/grad.cpp (KernelPath::reference). The
// fast ones (deferred row sums, recycled buffers, the threaded row walk) are behind one door,
// core/runtime/rows.h; they give the same bits.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <hitch/core/runtime/path.h>
#include <hitch/core/runtime/rows.h>
#include <hitch/core/tensor.h>

namespace hitch {

class Grad {
 public:
  explicit Grad(Shape shape) : shape_(std::move(shape)) {}
  ~Grad();
  Grad(const Grad&) = delete;
  Grad& operator=(const Grad&) = delete;

  bool empty() const { return layout_ == Layout::Empty; }
  bool is_sparse() const { return layout_ == Layout::Sparse; }
  bool is_dense() const { return layout_ == Layout::Dense; }
  const Shape& shape() const { return shape_; }
  std::int64_t row_width() const;  // numel / shape[0] (0 for a table of no rows)

  // g has this gradient's shape (else InternalError). Makes the gradient dense.
  void add(const Tensor& g);
  // values holds rows.size() rows of row_width() floats; entry m is added to row rows[m]. With
  // sparse = true an empty or sparse gradient stays sparse (the block is kept); otherwise, or
  // when already dense, the rows are added into the dense values.
  void add_rows(std::span<const std::int64_t> rows, std::span<const float> values, bool sparse);
  void add_rows(RowBlock&& block, bool sparse);  // the same, taking the block over (no copy)

  // The values as a dense tensor: the stored tensor when dense, else a fresh one (zeros when empty).
  Tensor dense() const;
  // The dense values for in-place accumulation (makes the gradient dense, zeros when empty).
  float* dense_data();

  // Row-sparse reading. coalesce() leaves one block, rows sorted and unique, each row summed by
  // the rule above; rows() and row_values() coalesce first.
  void coalesce();
  std::span<const std::int64_t> rows() const;
  std::span<const float> row_values() const;
  std::span<float> row_values_mut();
  std::size_t num_blocks() const { return blocks_.size(); }

  // Sparse layout: fn(row, const float* values) once per distinct row, rows increasing, values
  // as coalesce() gives them. fn may run for different rows at once, so it must only touch its
  // row's state; ahead(row), called before fn(row), is a hint (the fast path prefetches there).
  // The plain version is below: coalesce(), then a loop.
  template <class Fn, class Ahead>
  void for_each_row(Fn&& fn, Ahead&& ahead);
  template <class Fn>
  void for_each_row(Fn&& fn) {
    for_each_row(fn, [](std::int64_t) {});
  }
  // Allocates everything for_each_row needs and changes no value: after it, for_each_row
  // allocates nothing and cannot fail (how an optimizer step stays all-or-nothing).
  void prepare_walk();

  // Zero in place, keeping the layout (dense keeps its tensor, sparse drops its blocks).
  void zero();

  // Which recorded op first made this (leaf's) gradient dense, for SparseAdam's refusal: set by
  // GradSink ("matmul", "embedding" with sparse = false) with its node number; op empty when it
  // became dense otherwise. Kept while the gradient lives.
  void set_dense_origin(std::string_view op, std::uint64_t node) {
    dense_op_ = op;
    dense_node_ = node;
  }
  const std::string& dense_op() const { return dense_op_; }
  std::uint64_t dense_node() const { return dense_node_; }

 private:
  enum class Layout { Empty, Dense, Sparse };
  void coalesce_blocks() const;  // coalesce(): representation only, never a value

  Shape shape_;
  Layout layout_ = Layout::Empty;
  Tensor dense_;
  mutable std::vector<RowBlock> blocks_;  // sparse layout
  RowWalk walk_;                          // fast path: for_each_row's scratch
  std::string dense_op_;
  std::uint64_t dense_node_ = 0;
};

template <class Fn, class Ahead>
void Grad::for_each_row(Fn&& fn, Ahead&& ahead) {
  if (layout_ != Layout::Sparse || blocks_.empty()) return;
  const auto width = static_cast<std::size_t>(row_width());
  if (reference_kernels()) {  // the plain version
    coalesce();
    const RowBlock& b = blocks_[0];
    for (std::size_t k = 0; k < b.rows.size(); ++k) fn(b.rows[k], static_cast<const float*>(b.values.data() + k * width));
    return;
  }
  walk_.prepare(blocks_, width);  // nothing left to do if the caller did it
  walk_.run(blocks_, width, fn, ahead);
}

}  // namespace hitch
