// hitch/core/grad.h: the gradient held by one tensor.
//
// A Grad is empty, dense (a Tensor of the owner's shape) or row-sparse over dim 0: a list of
// (row, D values) entries, possibly repeated, in arrival order (PyTorch's uncoalesced COO).
// Every write is an addition. Layout rules mirror PyTorch: sparse + sparse stays sparse, any
// dense contribution makes the whole gradient dense. Ops that don't know about rows only ever
// call add(); embedding ops call add_rows(), which scatters into a dense gradient or appends
// to a sparse one.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace hitch {

class Grad {
 public:
  explicit Grad(Shape shape) : shape_(std::move(shape)) {}

  bool empty() const { return layout_ == Layout::Empty; }
  bool is_sparse() const { return layout_ == Layout::Sparse; }
  const Shape& shape() const { return shape_; }
  std::int64_t row_width() const;  // numel / shape[0]

  // g must have this gradient's shape. Makes the gradient dense.
  void add(const Tensor& g);
  // values holds rows.size() rows of row_width() floats; entry m is added to row rows[m].
  // sparse = true keeps a sparse (or empty) gradient sparse; a dense one stays dense.
  void add_rows(std::span<const std::int64_t> rows, std::span<const float> values, bool sparse);

  // Dense view: the values for a dense gradient, the scattered sum for a sparse one, zeros if
  // empty. A fresh tensor except for the dense layout, where it is the stored tensor itself.
  Tensor dense() const;
  // Dense storage for in-place accumulation by a kernel (creates zeros; densifies).
  float* dense_data();

  // Row-sparse access. coalesce() sorts the rows and sums repeated ones.
  void coalesce();
  std::span<const std::int64_t> rows() const { return rows_; }
  std::span<const float> row_values() const { return values_; }
  std::span<float> row_values_mut() { return values_; }

  // Zero in place, keeping the layout (dense keeps its tensor, sparse becomes nnz 0).
  void zero();

 private:
  enum class Layout { Empty, Dense, Sparse };
  Shape shape_;
  Layout layout_ = Layout::Empty;
  Tensor dense_;
  std::vector<std::int64_t> rows_;
  std::vector<float> values_;
  bool coalesced_ = true;
};

}  // namespace hitch
