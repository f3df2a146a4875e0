// hitch/ops/elementwise.cpp: add, sub, mul, div (with one-sided broadcasting), scalar add and
// mul, neg.
//
// Broadcasting: both shapes are right-aligned (the shorter one padded with leading 1s). It is
// accepted when either side has one element, or when one side already has the output's shape
// and every dim of the other equals the output's or is 1 ([B,D] with [D], [B,1], [1,D], [1]).
// General NumPy broadcasting, where both sides are stretched ([B,1] with [1,D]), is left out
// on purpose: it is rarely what a model means, and refusing it keeps gradients' shapes obvious.
//
// Backward: an operand's gradient is the output gradient (times the local derivative) summed,
// in double, over the dims along which that operand was broadcast, so it has the operand's shape.
#include <algorithm>
#include <utility>
#include <vector>

#include "core/tape.h"
#include "ops/ops.h"

namespace hitch {

namespace {

using i64 = std::int64_t;

// The output's index space, with neighbouring dims merged where both operands are contiguous
// across them, and each operand's stride per merged dim (0 = broadcast along it). The innermost
// strides are 0 or 1, so the inner loops below run over plain contiguous arrays.
struct Broadcast {
  Shape out;
  std::vector<i64> sizes, stride_a, stride_b;  // outermost first
};

Broadcast plan_broadcast(const char* op, const Shape& as, const Shape& bs) {
  Broadcast p;
  if (as == bs) {
    p.out = as;
    p.sizes = {numel_of(as)};
    p.stride_a = p.stride_b = {1};
    return p;
  }
  const std::size_t rank = std::max(as.size(), bs.size());
  Shape pa(rank, 1), pb(rank, 1);
  std::copy(as.begin(), as.end(), pa.begin() + static_cast<std::ptrdiff_t>(rank - as.size()));
  std::copy(bs.begin(), bs.end(), pb.begin() + static_cast<std::ptrdiff_t>(rank - bs.size()));
  p.out.resize(rank);
  bool fits = true;
  for (std::size_t d = 0; d < rank; ++d) {
    p.out[d] = pa[d] == 1 ? pb[d] : pa[d];
    if ((pa[d] != p.out[d] && pa[d] != 1) || (pb[d] != p.out[d] && pb[d] != 1)) fits = false;
  }
  if (!fits)
    throw Error(fmt::format("{}: shapes {} and {} cannot be broadcast (trailing dims must match or be 1)", op,
                            shape_str(as), shape_str(bs)));
  if (numel_of(as) != 1 && numel_of(bs) != 1 && pa != p.out && pb != p.out)
    throw Error(fmt::format("{}: shapes {} and {} cannot be broadcast (only one side may be stretched: the other "
                            "must have the result's shape {})",
                            op, shape_str(as), shape_str(bs), shape_str(p.out)));
  // Contiguous strides of each padded operand, zeroed along broadcast dims; dims of size 1 in
  // the output are dropped, then neighbours contiguous in both operands are merged.
  std::vector<i64> sa(rank), sb(rank);
  i64 na = 1, nb = 1;
  for (std::size_t d = rank; d-- > 0;) {
    sa[d] = pa[d] == 1 ? 0 : na;
    sb[d] = pb[d] == 1 ? 0 : nb;
    na *= pa[d];
    nb *= pb[d];
  }
  for (std::size_t d = 0; d < rank; ++d) {
    if (p.out[d] == 1) continue;
    if (!p.sizes.empty() && p.stride_a.back() == sa[d] * p.out[d] && p.stride_b.back() == sb[d] * p.out[d]) {
      p.sizes.back() *= p.out[d];
      p.stride_a.back() = sa[d];
      p.stride_b.back() = sb[d];
    } else {
      p.sizes.push_back(p.out[d]);
      p.stride_a.push_back(sa[d]);
      p.stride_b.push_back(sb[d]);
    }
  }
  return p;
}

// Calls f(io, ia, ib) for every output element io, with the operand elements it reads.
template <class F>
void for_each_index(const Broadcast& p, F&& f) {
  const std::size_t nd = p.sizes.size();
  if (nd == 0) {  // every dim is 1: one element
    f(i64{0}, i64{0}, i64{0});
    return;
  }
  const i64 total = numel_of(p.out);
  const i64 inner = p.sizes.back(), sa = p.stride_a.back(), sb = p.stride_b.back();
  if (total == 0) return;
  std::vector<i64> idx(nd - 1, 0);
  i64 ia = 0, ib = 0;
  for (i64 io = 0; io < total; io += inner) {
    if (sa == 1 && sb == 1)
      for (i64 j = 0; j < inner; ++j) f(io + j, ia + j, ib + j);
    else if (sa == 1 && sb == 0)
      for (i64 j = 0; j < inner; ++j) f(io + j, ia + j, ib);
    else if (sa == 0 && sb == 1)
      for (i64 j = 0; j < inner; ++j) f(io + j, ia, ib + j);
    else
      for (i64 j = 0; j < inner; ++j) f(io + j, ia + j * sa, ib + j * sb);
    for (std::size_t d = nd - 1; d-- > 0;) {  // odometer over the outer dims
      ia += p.stride_a[d];
      ib += p.stride_b[d];
      if (++idx[d] < p.sizes[d]) break;
      ia -= p.stride_a[d] * p.sizes[d];
      ib -= p.stride_b[d] * p.sizes[d];
      idx[d] = 0;
    }
  }
}

// The gradient of operand `which` (0 = a, 1 = b) of the given shape: contribution(io, ia, ib)
// summed over the output elements that read each of its elements. Without broadcasting on that
// side it is a plain map; otherwise the sums run in double.
template <class F>
Tensor reduce_grad(const Broadcast& p, int which, const Shape& shape, F&& contribution) {
  Tensor g = Tensor::empty(shape);
  float* dst = g.data();
  const i64 n = g.numel();
  if (n == numel_of(p.out)) {
    for_each_index(p, [&](i64 io, i64 ia, i64 ib) { dst[io] = contribution(io, ia, ib); });
    return g;
  }
  std::vector<double> acc(static_cast<std::size_t>(n), 0.0);
  if (which == 0)
    for_each_index(p, [&](i64 io, i64 ia, i64 ib) { acc[static_cast<std::size_t>(ia)] += contribution(io, ia, ib); });
  else
    for_each_index(p, [&](i64 io, i64 ia, i64 ib) { acc[static_cast<std::size_t>(ib)] += contribution(io, ia, ib); });
  for (i64 i = 0; i < n; ++i) dst[i] = static_cast<float>(acc[static_cast<std::size_t>(i)]);
  return g;
}

template <class F>
Tensor forward(const Broadcast& p, const Tensor& a, const Tensor& b, F&& f) {
  Tensor out = Tensor::empty(p.out);
  float* o = out.data();
  const float* x = a.data();
  const float* y = b.data();
  for_each_index(p, [&](i64 io, i64 ia, i64 ib) { o[io] = f(x[ia], y[ib]); });
  return out;
}

}  // namespace

// a + b. Backward: da = g, db = g (each summed over its broadcast dims).
Tensor add(const Tensor& a, const Tensor& b) {
  Broadcast p = plan_broadcast("add", a.shape(), b.shape());
  Tensor out = forward(p, a, b, [](float x, float y) { return x + y; });
  if (!will_record({a, b})) return out;
  record("add", {a, b}, out, [p = std::move(p), sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& sink) {
    const float* G = g.data();
    auto pass = [G](i64 io, i64, i64) { return G[io]; };
    if (sink.wants(0)) sink.add(0, sa == g.shape() ? g : reduce_grad(p, 0, sa, pass));
    if (sink.wants(1)) sink.add(1, sb == g.shape() ? g : reduce_grad(p, 1, sb, pass));
  });
  return out;
}

// a - b. Backward: da = g, db = -g.
Tensor sub(const Tensor& a, const Tensor& b) {
  Broadcast p = plan_broadcast("sub", a.shape(), b.shape());
  Tensor out = forward(p, a, b, [](float x, float y) { return x - y; });
  if (!will_record({a, b})) return out;
  record("sub", {a, b}, out, [p = std::move(p), sa = a.shape(), sb = b.shape()](const Tensor& g, GradSink& sink) {
    const float* G = g.data();
    if (sink.wants(0)) sink.add(0, sa == g.shape() ? g : reduce_grad(p, 0, sa, [G](i64 io, i64, i64) { return G[io]; }));
    if (sink.wants(1)) sink.add(1, reduce_grad(p, 1, sb, [G](i64 io, i64, i64) { return -G[io]; }));
  });
  return out;
}

// a * b. Backward: da = g * b, db = g * a; reads both inputs' values.
Tensor mul(const Tensor& a, const Tensor& b) {
  Broadcast p = plan_broadcast("mul", a.shape(), b.shape());
  Tensor out = forward(p, a, b, [](float x, float y) { return x * y; });
  if (!will_record({a, b})) return out;
  const Tensor av = a.detach(), bv = b.detach();
  record(
      "mul", {a, b}, out,
      [p = std::move(p), av, bv](const Tensor& g, GradSink& sink) {
        const float *G = g.data(), *x = av.data(), *y = bv.data();
        if (sink.wants(0)) sink.add(0, reduce_grad(p, 0, av.shape(), [=](i64 io, i64, i64 ib) { return G[io] * y[ib]; }));
        if (sink.wants(1)) sink.add(1, reduce_grad(p, 1, bv.shape(), [=](i64 io, i64 ia, i64) { return G[io] * x[ia]; }));
      },
      {a, b});
  return out;
}

// a / b. Backward: da = g / b, db = -g * a / b^2; reads both inputs' values.
Tensor div(const Tensor& a, const Tensor& b) {
  Broadcast p = plan_broadcast("div", a.shape(), b.shape());
  Tensor out = forward(p, a, b, [](float x, float y) { return x / y; });
  if (!will_record({a, b})) return out;
  const Tensor av = a.detach(), bv = b.detach();
  record(
      "div", {a, b}, out,
      [p = std::move(p), av, bv](const Tensor& g, GradSink& sink) {
        const float *G = g.data(), *x = av.data(), *y = bv.data();
        if (sink.wants(0)) sink.add(0, reduce_grad(p, 0, av.shape(), [=](i64 io, i64, i64 ib) { return G[io] / y[ib]; }));
        if (sink.wants(1))
          sink.add(1, reduce_grad(p, 1, bv.shape(), [=](i64 io, i64 ia, i64 ib) {
                     return -G[io] * x[ia] / (y[ib] * y[ib]);
                   }));
      },
      {a, b});
  return out;
}

// a + s for a float s. Backward: da = g.
Tensor add(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* o = out.data();
  for (i64 i = 0, n = a.numel(); i < n; ++i) o[i] = x[i] + s;
  record("add_scalar", {a}, out, [](const Tensor& g, GradSink& sink) { sink.add(0, g); });
  return out;
}

// a * s for a float s. Backward: da = g * s.
Tensor mul(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* o = out.data();
  for (i64 i = 0, n = a.numel(); i < n; ++i) o[i] = x[i] * s;
  record("mul_scalar", {a}, out, [s](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty(g.shape());
    const float* G = g.data();
    float* d = ga.data();
    for (i64 i = 0, n = g.numel(); i < n; ++i) d[i] = G[i] * s;
    sink.add(0, ga);
  });
  return out;
}

// -a. Backward: da = -g.
Tensor neg(const Tensor& a) {
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* o = out.data();
  for (i64 i = 0, n = a.numel(); i < n; ++i) o[i] = -x[i];
  record("neg", {a}, out, [](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty(g.shape());
    const float* G = g.data();
    float* d = ga.data();
    for (i64 i = 0, n = g.numel(); i < n; ++i) d[i] = -G[i];
    sink.add(0, ga);
  });
  return out;
}

}  // namespace hitch
