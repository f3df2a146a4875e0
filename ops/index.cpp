// hitch/ops/index.cpp: the shape ops that read a through an IndexTensor.
//
//   index_select(a, dim, index)   a [..., n, ...], index [k] (1-D)           -> [..., k, ...]
//   gather(a, dim, index)         a of rank r, index of rank r with
//                                 index.size(d) <= a.size(d) for d != dim    -> index's shape
//
// Semantics are PyTorch 1.13's torch.index_select and torch.gather
// (https://pytorch.org/docs/1.13/generated/torch.gather.html): every index value must lie in
// [0, a.size(dim)) (negative values are errors, as in torch); duplicates are allowed. Left out:
// torch's 0-d forms (a 0-d a or a 0-d index for index_select); use unsqueeze first.
//
// Backward is a scatter-add: ga starts at 0 and every output element's g is added at the
// element of a it was read from, so duplicate indices add up. The sums run in double, in the
// output's row-major order, and are rounded to float once: the result does not depend on the
// order of duplicates beyond double rounding, and is the same on every run.
#include <cstring>
#include <vector>

#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

// Every value of index in [0, n), checked before anything is computed; the message names the
// flat position in index, the value and the range.
void check_index_range(const char* op, const IndexTensor& index, i64 dim, i64 n) {
  for (i64 k = 0; k < index.numel(); ++k) {
    const i64 v = index[k];
    if (v < 0 || v >= n)
      throw Error(fmt::format("{}: index {} at position {} is out of range for dim {} of size {} (valid: [0, {}))", op,
                              v, k, dim, n, n));
  }
}

// Row-major strides of shape.
std::vector<i64> strides_of(const Shape& shape) {
  std::vector<i64> stride(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) stride[d - 1] = stride[d] * shape[d];
  return stride;
}

// The float tensor of shape from acc, rounded once.
Tensor to_float(const Shape& shape, const std::vector<double>& acc) {
  Tensor t = Tensor::empty(shape);
  for (std::size_t k = 0; k < acc.size(); ++k) t.data()[k] = static_cast<float>(acc[k]);
  return t;
}

// Calls f(p, offset) for every position p of index (row-major), with offset the flat position in
// a of the element that gather reads: a's strides applied to p's coordinates, except at dim,
// where index[p] takes the coordinate's place. An odometer over index's shape (no division).
template <class F>
void for_each_gathered(const Shape& a_shape, const IndexTensor& index, std::size_t dim, F f) {
  const Shape& shape = index.shape();
  const std::vector<i64> stride = strides_of(a_shape);
  Shape coord(shape.size(), 0);
  i64 base = 0;  // offset of coord with its dim coordinate taken as 0
  for (i64 p = 0; p < index.numel(); ++p) {
    f(p, base + index[p] * stride[dim]);
    for (std::size_t d = shape.size(); d-- > 0;) {
      const i64 step = d == dim ? 0 : stride[d];
      if (++coord[d] < shape[d]) {
        base += step;
        break;
      }
      base -= (shape[d] - 1) * step;
      coord[d] = 0;
    }
  }
}

}  // namespace

// a viewed as [outer, n, inner] around dim, index [k]: out [outer, k, inner] with
// out[o, j, :] = a[o, index[j], :] (one block of inner floats per j).
// Backward: ga[o, index[j], :] += g[o, j, :].
Tensor index_select(const Tensor& a, std::int64_t dim_arg, const IndexTensor& index) {
  const i64 dim = wrap_dim("index_select", dim_arg, a.dim());
  if (index.dim() != 1)
    throw Error(fmt::format("index_select: index must be 1-D, but has shape {}", shape_str(index.shape())));
  const Shape& a_shape = a.shape();
  const i64 n = a.size(dim), k = index.numel();
  check_index_range("index_select", index, dim, n);
  Shape shape = a_shape;
  shape[static_cast<std::size_t>(dim)] = k;
  checked_numel("index_select", shape);
  i64 outer = 1, inner = 1;
  for (i64 d = 0; d < dim; ++d) outer *= a.size(d);
  for (i64 d = dim + 1; d < a.dim(); ++d) inner *= a.size(d);
  Tensor out = Tensor::empty(std::move(shape));
  // An empty output reads nothing: skip the outer loop, whose size alone may be 2^40 (a [2^40, 0],
  // dim 1, no indices); backward likewise has nothing to add.
  if (out.numel() == 0) outer = 0;
  const float* x = a.data();
  float* y = out.data();
  for (i64 o = 0; o < outer; ++o)
    for (i64 j = 0; j < k; ++j)
      std::memcpy(y + (o * k + j) * inner, x + (o * n + index[j]) * inner, static_cast<std::size_t>(inner) * sizeof(float));
  record("index_select", {a}, out, [a_shape, index, outer, n, inner](const Tensor& g, GradSink& sink) {
    std::vector<double> acc(static_cast<std::size_t>(numel_of(a_shape)), 0.0);
    const float* gv = g.data();
    const i64 count = index.numel();
    for (i64 o = 0; o < outer; ++o)
      for (i64 j = 0; j < count; ++j) {
        double* row = acc.data() + (o * n + index[j]) * inner;
        const float* src = gv + (o * count + j) * inner;
        for (i64 c = 0; c < inner; ++c) row[c] += src[c];
      }
    sink.add(0, to_float(a_shape, acc));
  });
  return out;
}

// out[p] = a[p with its dim coordinate replaced by index[p]] for every position p of index
// (torch.gather: out[i][j][k] = a[index[i][j][k]][j][k] for dim 0).
// Backward: ga[p with index[p] at dim] += g[p] (torch.Tensor.scatter_add_).
Tensor gather(const Tensor& a, std::int64_t dim_arg, const IndexTensor& index) {
  const i64 dim = wrap_dim("gather", dim_arg, a.dim());
  const Shape& a_shape = a.shape();
  if (index.dim() != a.dim())
    throw Error(fmt::format("gather: index must have a's rank {}, but has shape {} (a has shape {})", a.dim(),
                            shape_str(index.shape()), shape_str(a_shape)));
  for (i64 d = 0; d < a.dim(); ++d)
    if (d != dim && index.size(d) > a.size(d))
      throw Error(fmt::format("gather: index has shape {} but a has shape {}: index's size {} at dim {} is larger than "
                              "a's size {} (only dim {}, the gathered dim, may be larger)",
                              shape_str(index.shape()), shape_str(a_shape), index.size(d), d, a.size(d), dim));
  check_index_range("gather", index, dim, a.size(dim));
  Tensor out = Tensor::empty(index.shape());
  const float* x = a.data();
  float* y = out.data();
  const auto d = static_cast<std::size_t>(dim);
  for_each_gathered(a_shape, index, d, [&](i64 p, i64 off) { y[p] = x[off]; });
  record("gather", {a}, out, [a_shape, index, d](const Tensor& g, GradSink& sink) {
    std::vector<double> acc(static_cast<std::size_t>(numel_of(a_shape)), 0.0);
    const float* gv = g.data();
    for_each_gathered(a_shape, index, d, [&](i64 p, i64 off) { acc[static_cast<std::size_t>(off)] += gv[p]; });
    sink.add(0, to_float(a_shape, acc));
  });
  return out;
}

}  // namespace hitch
