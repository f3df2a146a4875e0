// hitch/ops/elementwise.cpp: add, sub, mul, div with NumPy broadcasting, scalar add and mul,
// neg, and the selections where and masked_fill (abs and clamp, one-input maps, are in unary.cpp).
//
// Broadcasting (NumPy's rule, as torch): the shapes are right-aligned, the shorter padded with
// leading 1s; each pair of dims must be equal or one of them 1, and the result takes the larger.
// Both sides may be stretched ([B,1] with [1,D] -> [B,D]). where broadcasts its three operands
// together; masked_fill's mask broadcasts to a's shape only (a is never stretched to the mask's).
//
// Backward: an operand's gradient is the output gradient (times the local derivative) summed,
// in double, over the dims along which that operand was broadcast, so it has the operand's shape.
// Equal shapes skip all of that: one flat loop each way, and add passes g through unchanged.
#include <algorithm>
#include <initializer_list>
#include <utility>
#include <vector>

#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

// The output's index space, with neighbouring dims merged where every operand is contiguous
// across them, and each operand's stride per merged dim (0 = broadcast along it). The innermost
// strides are 0 or 1, so the inner loops below run over plain contiguous arrays.
struct Broadcast {
  Shape out;
  std::vector<i64> sizes;                         // merged dims of out, outermost first
  std::vector<i64> stride_a, stride_b, stride_c;  // per operand (stride_c: where's condition)
};

// shape right-aligned to rank, padded with leading 1s.
Shape padded(const Shape& shape, std::size_t rank) {
  Shape p(rank, 1);
  std::copy(shape.begin(), shape.end(), p.begin() + static_cast<std::ptrdiff_t>(rank - shape.size()));
  return p;
}

// NumPy's result shape of operands, into out; false when some pair of dims is neither equal nor 1.
bool broadcast_shape(std::initializer_list<const Shape*> operands, Shape& out) {
  std::size_t rank = 0;
  for (const Shape* s : operands) rank = std::max(rank, s->size());
  out.assign(rank, 1);
  for (const Shape* s : operands) {
    const Shape p = padded(*s, rank);
    for (std::size_t d = 0; d < rank; ++d) {
      if (p[d] == 1) continue;
      if (out[d] == 1)
        out[d] = p[d];
      else if (out[d] != p[d])
        return false;
    }
  }
  return true;
}

// The plan for operands (a, b[, condition]) known to broadcast to out. Each padded operand gets
// contiguous strides, zeroed along its size-1 dims; dims of size 1 in the output are dropped,
// then neighbours contiguous in every operand are merged.
Broadcast make_plan(const Shape& out, std::initializer_list<const Shape*> operands) {
  Broadcast p;
  p.out = out;
  const std::size_t rank = out.size();
  std::vector<std::vector<i64>> full, merged(operands.size());
  for (const Shape* s : operands) {
    const Shape ps = padded(*s, rank);
    std::vector<i64> st(rank);
    i64 n = 1;
    for (std::size_t d = rank; d-- > 0;) {
      st[d] = ps[d] == 1 ? 0 : n;
      n *= ps[d];
    }
    full.push_back(std::move(st));
  }
  for (std::size_t d = 0; d < rank; ++d) {
    if (out[d] == 1) continue;
    bool fuse = !p.sizes.empty();
    for (std::size_t j = 0; j < full.size() && fuse; ++j) fuse = merged[j].back() == full[j][d] * out[d];
    if (fuse) {
      p.sizes.back() *= out[d];
      for (std::size_t j = 0; j < full.size(); ++j) merged[j].back() = full[j][d];
    } else {
      p.sizes.push_back(out[d]);
      for (std::size_t j = 0; j < full.size(); ++j) merged[j].push_back(full[j][d]);
    }
  }
  p.stride_a = std::move(merged[0]);
  p.stride_b = std::move(merged[1]);
  if (merged.size() > 2) p.stride_c = std::move(merged[2]);
  return p;
}

// add, sub, mul, div (and masked_fill, with b the mask): checks, then plans.
Broadcast plan_broadcast(const char* op, const Shape& as, const Shape& bs) {
  if (as == bs) {  // the common case: one flat loop
    Broadcast p;
    p.out = as;
    p.sizes = {numel_of(as)};
    p.stride_a = p.stride_b = {1};
    return p;
  }
  Shape out;
  if (!broadcast_shape({&as, &bs}, out))
    throw Error(fmt::format("{}: shapes {} and {} cannot be broadcast (trailing dims must match or be 1)", op,
                            shape_str(as), shape_str(bs)));
  return make_plan(out, {&as, &bs});
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

// Three operands (where): f(io, ia, ib, ic) for every output element, an odometer over all the
// merged dims (where is not a hot path; the two-operand loop above is).
template <class F>
void for_each_index3(const Broadcast& p, F&& f) {
  const std::size_t nd = p.sizes.size();
  const i64 total = numel_of(p.out);
  if (total == 0) return;
  std::vector<i64> idx(nd, 0);
  i64 ia = 0, ib = 0, ic = 0;
  for (i64 io = 0; io < total; ++io) {
    f(io, ia, ib, ic);
    for (std::size_t d = nd; d-- > 0;) {
      ia += p.stride_a[d];
      ib += p.stride_b[d];
      ic += p.stride_c[d];
      if (++idx[d] < p.sizes[d]) break;
      ia -= p.stride_a[d] * p.sizes[d];
      ib -= p.stride_b[d] * p.sizes[d];
      ic -= p.stride_c[d] * p.sizes[d];
      idx[d] = 0;
    }
  }
}

}  // namespace

// a + b. Backward: da = g, db = g (each summed over its broadcast dims).
Tensor add(const Tensor& a, const Tensor& b) {
  Broadcast p = plan_broadcast("add", a.shape(), b.shape());
  Tensor out = forward(p, a, b, [](float x, float y) { return x + y; });
  if (!will_record({a, b})) {
    check_forward("add", {a, b}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
    return out;
  }
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
  if (!will_record({a, b})) {
    check_forward("sub", {a, b}, out);
    return out;
  }
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
  if (!will_record({a, b})) {
    check_forward("mul", {a, b}, out);
    return out;
  }
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
  if (!will_record({a, b})) {
    check_forward("div", {a, b}, out);
    return out;
  }
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
  const AnomalyExtraInput scalar(s);  // a non-finite s is the caller's, not this op's doing
  record("add_scalar", {a}, out, [](const Tensor& g, GradSink& sink) { sink.add(0, g); });
  return out;
}

// a * s for a float s. Backward: da = g * s.
Tensor mul(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* o = out.data();
  for (i64 i = 0, n = a.numel(); i < n; ++i) o[i] = x[i] * s;
  const AnomalyExtraInput scalar(s);  // a non-finite s is the caller's, not this op's doing
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

// where(condition, a, b): condition, a and b broadcast together (NumPy's rule) to out; out[i] =
// a[i] where condition[i] != 0 (NaN counts as true, as NaN != 0), else b[i]. As torch.where,
// with a float mask in place of a bool tensor. Backward: da = g where true, db = g where false,
// each summed over its broadcast dims; condition gets no gradient (it is piecewise constant) and
// is saved, since backward reads it.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  const Shape &cs = condition.shape(), &as = a.shape(), &bs = b.shape();
  Shape out_shape;
  if (!broadcast_shape({&cs, &as, &bs}, out_shape))
    throw Error(fmt::format("where: condition {}, a {} and b {} cannot be broadcast (trailing dims must match or be 1)",
                            shape_str(cs), shape_str(as), shape_str(bs)));
  Broadcast p = make_plan(out_shape, {&as, &bs, &cs});
  Tensor out = Tensor::empty(out_shape);
  {
    const float *x = a.data(), *y = b.data(), *c = condition.data();
    float* o = out.data();
    for_each_index3(p, [&](i64 io, i64 ia, i64 ib, i64 ic) { o[io] = c[ic] != 0.0f ? x[ia] : y[ib]; });
  }
  if (!will_record({a, b})) {
    check_forward("where", {a, b}, out);
    return out;
  }
  const Tensor cv = condition.detach();
  record(
      "where", {a, b}, out,
      [p = std::move(p), cv, as, bs](const Tensor& g, GradSink& sink) {
        const float *G = g.data(), *c = cv.data();
        // Operand `which` (0 = a, 1 = b) takes g where the condition selects it.
        auto grad = [&](int which, const Shape& shape) {
          Tensor t = Tensor::empty(shape);
          float* dst = t.data();
          const i64 n = t.numel();
          const bool take_true = which == 0;
          if (n == numel_of(p.out)) {  // not broadcast: one value per output element
            for_each_index3(p, [&](i64 io, i64, i64, i64 ic) { dst[io] = (c[ic] != 0.0f) == take_true ? G[io] : 0.0f; });
            return t;
          }
          std::vector<double> acc(static_cast<std::size_t>(n), 0.0);
          for_each_index3(p, [&](i64 io, i64 ia, i64 ib, i64 ic) {
            if ((c[ic] != 0.0f) == take_true) acc[static_cast<std::size_t>(take_true ? ia : ib)] += G[io];
          });
          for (i64 i = 0; i < n; ++i) dst[i] = static_cast<float>(acc[static_cast<std::size_t>(i)]);
          return t;
        };
        if (sink.wants(0)) sink.add(0, grad(0, as));
        if (sink.wants(1)) sink.add(1, grad(1, bs));
      },
      {condition});
  return out;
}

// masked_fill(a, mask, value): a with value wherever mask != 0 (NaN counts as set). mask
// broadcasts to a's shape and never stretches a (torch.Tensor.masked_fill_'s rule), so out has
// a's shape. Backward: da = g where mask == 0, else 0; mask gets no gradient and is saved.
Tensor masked_fill(const Tensor& a, const Tensor& mask, float value) {
  const Shape &as = a.shape(), &ms = mask.shape();
  bool fits = ms.size() <= as.size();
  for (std::size_t d = 0; fits && d < ms.size(); ++d) {
    const i64 m = ms[ms.size() - 1 - d];
    fits = m == 1 || m == as[as.size() - 1 - d];
  }
  if (!fits)
    throw Error(fmt::format("masked_fill: mask {} cannot be broadcast to a's shape {} (mask's rank must be at most "
                            "a's and its trailing dims must equal a's or be 1)",
                            shape_str(ms), shape_str(as)));
  Broadcast p = plan_broadcast("masked_fill", as, ms);
  Tensor out = forward(p, a, mask, [value](float x, float m) { return m != 0.0f ? value : x; });
  const AnomalyExtraInput fill(value);  // masked_fill(-inf) for attention is intended, not blamed
  if (!will_record({a})) {
    check_forward("masked_fill", {a}, out);
    return out;
  }
  const Tensor mv = mask.detach();
  record(
      "masked_fill", {a}, out,
      [p = std::move(p), mv, as](const Tensor& g, GradSink& sink) {
        const float *G = g.data(), *M = mv.data();
        sink.add(0, reduce_grad(p, 0, as, [=](i64 io, i64, i64 ib) { return M[ib] != 0.0f ? 0.0f : G[io]; }));
      },
      {mask});
  return out;
}

}  // namespace hitch
