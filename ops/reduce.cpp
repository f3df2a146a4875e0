// hitch/ops/reduce.cpp: sum and mean, over all elements (-> shape []) or along one dim; max,
// min, argmax, argmin and logsumexp along one dim.
//
//   sum(a), mean(a)                  a of any shape              -> []
//   sum(a, dim, keepdim)             a [..., n, ...] (n at dim)  -> a's shape without dim
//   mean(a, dim, keepdim)                                           (or with 1 there if keepdim)
//   max / min (values, indices), argmax / argmin, logsumexp (a, dim, keepdim): the same shapes
//
// dim may be negative (counted from the end). Along a dim, a is viewed as [outer, n, inner];
// the sums run in double. mean divides by n (by numel for the full mean); the mean of zero
// elements is NaN, as in PyTorch. Backward spreads g (divided by n for mean) back over the
// reduced dim.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

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
  // No output element (inner = 0): nothing to sum, and n alone may be 2^40 ([2^40, 0] along dim
  // 0), so the loops below (and backward's) must not run over it.
  if (inner == 0) outer = 0;
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

namespace {

// A reduction along dim: a viewed as [outer, n, inner] and the output's shape.
struct Along {
  i64 outer = 1, n = 0, inner = 1;
  Shape out;
};

Along along(const char* op, const Tensor& a, std::int64_t dim, bool keepdim) {
  const i64 d = wrap_dim(op, dim, a.dim());
  const Shape& shape = a.shape();
  Along v;
  for (i64 k = 0; k < d; ++k) v.outer *= shape[static_cast<std::size_t>(k)];
  for (i64 k = d + 1; k < a.dim(); ++k) v.inner *= shape[static_cast<std::size_t>(k)];
  v.n = shape[static_cast<std::size_t>(d)];
  // No output element (inner = 0): every loop over [outer, inner] is empty, and must not run
  // over outer alone, which may be 2^40 ([2^40, 3, 0] along dim 1).
  if (v.inner == 0) v.outer = 0;
  v.out = shape;
  if (keepdim)
    v.out[static_cast<std::size_t>(d)] = 1;
  else
    v.out.erase(v.out.begin() + d);
  return v;
}

// The index along dim of the first maximum (want_max) or minimum of every [outer, inner] slice,
// as torch.max / torch.min / argmax: ties go to the first index, and NaN beats every number (the
// first NaN is picked, so NaN propagates into the values as in torch). n >= 1.
IndexTensor pick(const Tensor& a, const Along& v, bool want_max) {
  IndexTensor idx(v.out, std::vector<std::int64_t>(static_cast<std::size_t>(v.outer * v.inner)));
  const float* x = a.data();
  std::int64_t* out = idx.data();
  for (i64 o = 0; o < v.outer; ++o)
    for (i64 i = 0; i < v.inner; ++i) {
      const float* col = x + o * v.n * v.inner + i;
      i64 best = 0;
      float b = col[0];
      for (i64 k = 1; k < v.n && !std::isnan(b); ++k) {
        const float c = col[k * v.inner];
        if (std::isnan(c) || (want_max ? c > b : c < b)) {
          best = k;
          b = c;
        }
      }
      out[o * v.inner + i] = best;
    }
  return idx;
}

Along checked_pick(const char* op, const Tensor& a, std::int64_t dim, bool keepdim) {
  Along v = along(op, a, dim, keepdim);
  if (v.n == 0)
    throw Error(fmt::format("{}: dim {} has size 0 in a tensor of shape {}, and a reduction without identity needs "
                            "at least one element",
                            op, dim, shape_str(a.shape())));
  return v;
}

// max / min along dim: values[o, i] = a[o, indices[o, i], i]. Backward: g goes to the picked
// element only (torch's value_selecting_reduction_backward), so a tie sends it to the first.
ValuesIndices extreme(const char* op, const Tensor& a, std::int64_t dim, bool keepdim, bool want_max) {
  const Along v = checked_pick(op, a, dim, keepdim);
  IndexTensor idx = pick(a, v, want_max);
  Tensor values = Tensor::empty(v.out);
  const float* x = a.data();
  float* y = values.data();
  const std::int64_t* k = idx.data();
  for (i64 o = 0; o < v.outer; ++o)
    for (i64 i = 0; i < v.inner; ++i)
      y[o * v.inner + i] = x[(o * v.n + k[o * v.inner + i]) * v.inner + i];
  if (will_record({a}))
    record(op, {a}, values, [v, idx, shape = a.shape()](const Tensor& g, GradSink& sink) {
      Tensor ga = Tensor::zeros(shape);
      const float* G = g.data();
      float* dx = ga.data();
      const std::int64_t* K = idx.data();
      for (i64 o = 0; o < v.outer; ++o)
        for (i64 i = 0; i < v.inner; ++i) dx[(o * v.n + K[o * v.inner + i]) * v.inner + i] = G[o * v.inner + i];
      sink.add(0, ga);
    });
  else
    check_forward(op, {a}, values);  // anomaly mode (core/anomaly.h); record() does it otherwise
  return {values, std::move(idx)};
}

}  // namespace

ValuesIndices max(const Tensor& a, std::int64_t dim, bool keepdim) { return extreme("max", a, dim, keepdim, true); }
ValuesIndices min(const Tensor& a, std::int64_t dim, bool keepdim) { return extreme("min", a, dim, keepdim, false); }
IndexTensor argmax(const Tensor& a, std::int64_t dim, bool keepdim) {
  return pick(a, checked_pick("argmax", a, dim, keepdim), true);
}
IndexTensor argmin(const Tensor& a, std::int64_t dim, bool keepdim) {
  return pick(a, checked_pick("argmin", a, dim, keepdim), false);
}

namespace {

// The shift m (the maximum, NaN if any, 0 when infinite, as torch) and sum_k exp(a - m) in double of
// one slice col[k * stride], k < n.
std::pair<double, double> lse_parts(const float* col, i64 n, i64 stride) {
  float m = -INFINITY;
  for (i64 k = 0; k < n; ++k) {
    const float c = col[k * stride];
    if (std::isnan(c)) {  // NaN in, NaN out
      m = c;
      break;
    }
    m = c > m ? c : m;
  }
  const double shift = std::isinf(m) ? 0.0 : static_cast<double>(m);
  double s = 0.0;
  for (i64 k = 0; k < n; ++k) s += std::exp(static_cast<double>(col[k * stride]) - shift);
  return {shift, s};
}

}  // namespace

// log(sum_k exp(a[o, k, i])) along dim, stable: out = m + log(sum exp(a - m)) with m the maximum
// taken as 0 when infinite (as torch), so all -inf gives log 0 = -inf and any +inf gives +inf;
// the sum runs in double. Size 0 along dim gives -inf (the log of an empty sum), as torch.
// Backward (torch's logsumexp_backward, g * exp(a - out)): da = g * softmax(a) along dim, with
// softmax = exp(a - m) / sum recomputed in double rather than from the float out (whose rounding
// at |out| ~ 1000 would cost 4 digits). A slice of all -inf gets NaN (0 / 0), as in torch.
Tensor logsumexp(const Tensor& a, std::int64_t dim, bool keepdim) {
  const Along v = along("logsumexp", a, dim, keepdim);
  Tensor out = Tensor::empty(v.out);
  const float* x = a.data();
  float* y = out.data();
  for (i64 o = 0; o < v.outer; ++o)
    for (i64 i = 0; i < v.inner; ++i) {
      const auto [shift, s] = lse_parts(x + o * v.n * v.inner + i, v.n, v.inner);
      y[o * v.inner + i] = static_cast<float>(shift + std::log(s));
    }
  if (will_record({a})) {
    const Tensor av = a.detach();
    record(
        "logsumexp", {a}, out,
        [v, av](const Tensor& g, GradSink& sink) {
          Tensor ga = Tensor::empty(av.shape());
          const float *G = g.data(), *X = av.data();
          float* dx = ga.data();
          for (i64 o = 0; o < v.outer; ++o)
            for (i64 i = 0; i < v.inner; ++i) {
              const i64 first = o * v.n * v.inner + i;
              const auto [shift, s] = lse_parts(X + first, v.n, v.inner);
              const double gs = static_cast<double>(G[o * v.inner + i]) / s;
              for (i64 k = 0; k < v.n; ++k) {
                const i64 at = first + k * v.inner;
                dx[at] = static_cast<float>(gs * std::exp(static_cast<double>(X[at]) - shift));
              }
            }
          sink.add(0, ga);
        },
        {a});
  } else {
    check_forward("logsumexp", {a}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

}  // namespace hitch
