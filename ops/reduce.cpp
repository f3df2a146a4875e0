// hitch/ops/reduce.cpp: sum and mean, over all elements (-> shape []) or along one dim.
//
//   sum(a), mean(a)                  a of any shape              -> []
//   sum(a, dim, keepdim)             a [..., n, ...] (n at dim)  -> a's shape without dim
//   mean(a, dim, keepdim)                                           (or with 1 there if keepdim)
//
// dim may be negative (counted from the end). Along a dim, a is viewed as [outer, n, inner];
// the sums run in double. mean divides by n (by numel for the full mean); the mean of zero
// elements is NaN, as in PyTorch. Backward spreads g (divided by n for mean) back over the
// reduced dim.
#include <algorithm>
#include <vector>

#include "core/tape.h"
#include "ops/ops.h"

namespace hitch {

namespace {

using i64 = std::int64_t;

Tensor reduce_all(const char* op, const Tensor& a, bool mean) {
  const i64 n = a.numel();
  const float* x = a.data();
  double s = 0.0;
  for (i64 i = 0; i < n; ++i) s += x[i];
  const double scale = mean ? 1.0 / static_cast<double>(n) : 1.0;
  Tensor out = Tensor::scalar(static_cast<float>(s * scale));
  record(op, {a}, out, [shape = a.shape(), scale](const Tensor& g, GradSink& sink) {
    sink.add(0, Tensor::full(shape, static_cast<float>(g.item() * scale)));
  });
  return out;
}

Tensor reduce_dim(const char* op, const Tensor& a, std::int64_t dim, bool keepdim, bool mean) {
  const i64 d = wrap_dim(op, dim, a.dim());
  const Shape& shape = a.shape();
  i64 outer = 1, inner = 1;
  for (i64 k = 0; k < d; ++k) outer *= shape[static_cast<std::size_t>(k)];
  for (i64 k = d + 1; k < a.dim(); ++k) inner *= shape[static_cast<std::size_t>(k)];
  const i64 n = shape[static_cast<std::size_t>(d)];
  Shape out_shape = shape;
  if (keepdim)
    out_shape[static_cast<std::size_t>(d)] = 1;
  else
    out_shape.erase(out_shape.begin() + d);

  Tensor out = Tensor::empty(out_shape);
  const double scale = mean ? 1.0 / static_cast<double>(n) : 1.0;
  const float* x = a.data();
  float* y = out.data();
  std::vector<double> acc(static_cast<std::size_t>(inner));
  i64 first_general = 0;
  if (inner == 1) {
    // Reducing the last dim (e.g. a row-wise dot product): four rows at a time, each with its
    // own double accumulator in the same order as below, so the bits are the same; the four
    // independent add chains just keep the adder busy (one chain waits on each add's latency).
    for (; first_general + 4 <= outer; first_general += 4) {
      const float* r = x + first_general * n;
      double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
      for (i64 k = 0; k < n; ++k) {
        a0 += r[k];
        a1 += r[n + k];
        a2 += r[2 * n + k];
        a3 += r[3 * n + k];
      }
      y[first_general] = static_cast<float>(a0 * scale);
      y[first_general + 1] = static_cast<float>(a1 * scale);
      y[first_general + 2] = static_cast<float>(a2 * scale);
      y[first_general + 3] = static_cast<float>(a3 * scale);
    }
  }
  for (i64 o = first_general; o < outer; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const float* row = x + o * n * inner;
    for (i64 k = 0; k < n; ++k)
      for (i64 i = 0; i < inner; ++i) acc[static_cast<std::size_t>(i)] += row[k * inner + i];
    for (i64 i = 0; i < inner; ++i) y[o * inner + i] = static_cast<float>(acc[static_cast<std::size_t>(i)] * scale);
  }

  record(op, {a}, out, [shape, outer, n, inner, scale](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty(shape);
    const float* G = g.data();
    float* dx = ga.data();
    const auto s = static_cast<float>(scale);
    if (inner == 1) {  // the last dim (a row-wise dot product): one value per output row
      for (i64 o = 0; o < outer; ++o) std::fill_n(dx + o * n, n, G[o] * s);
      sink.add(0, ga);
      return;
    }
    for (i64 o = 0; o < outer; ++o)
      for (i64 k = 0; k < n; ++k)
        for (i64 i = 0; i < inner; ++i) dx[(o * n + k) * inner + i] = G[o * inner + i] * s;
    sink.add(0, ga);
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& a) { return reduce_all("sum", a, false); }
Tensor mean(const Tensor& a) { return reduce_all("mean", a, true); }
Tensor sum(const Tensor& a, std::int64_t dim, bool keepdim) { return reduce_dim("sum", a, dim, keepdim, false); }
Tensor mean(const Tensor& a, std::int64_t dim, bool keepdim) { return reduce_dim("mean", a, dim, keepdim, true); }

}  // namespace hitch
