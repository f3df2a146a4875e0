// hitch/ops/softmax.cpp: softmax and log_sigmoid (log_softmax lives with the losses in
// ops/loss.cpp, which use its log-sum-exp).
//
//   softmax(a, dim)     any rank >= 1, normalised along dim  -> a's shape
//   log_sigmoid(a)      any shape, elementwise                -> a's shape
//
// Numerics: softmax subtracts the row maximum before exponentiating and sums in double, so
// logits like 1000 give finite results (a row of all -inf gives NaN, as PyTorch); log_sigmoid
// never exponentiates a positive number. Left out: softmax of a rank-0 tensor (PyTorch accepts
// dim 0 or -1 there; here it is the usual dim error, as for log_softmax).
#include <algorithm>
#include <cmath>
#include <limits>

#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

// a viewed as [outer, n, inner] with n at dim d.
struct Rows {
  i64 outer = 1, n = 1, inner = 1;
};

Rows rows_of(const Tensor& a, i64 d) {
  Rows r;
  for (i64 k = 0; k < d; ++k) r.outer *= a.shape()[static_cast<std::size_t>(k)];
  for (i64 k = d + 1; k < a.dim(); ++k) r.inner *= a.shape()[static_cast<std::size_t>(k)];
  r.n = a.size(d);
  if (a.numel() == 0) r.outer = 0;  // nothing to read or write (and data() may be null)
  return r;
}

}  // namespace

// y_k = exp(x_k - m) / sum_j exp(x_j - m) along dim, m the row maximum (the shift cancels).
// Backward (PyTorch's softmax_backward_data): dx_k = y_k (g_k - sum_j g_j y_j).
Tensor softmax(const Tensor& a, std::int64_t dim) {
  const i64 d = wrap_dim("softmax", dim, a.dim());
  const Rows r = rows_of(a, d);
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  for (i64 o = 0; o < r.outer; ++o)
    for (i64 i = 0; i < r.inner; ++i) {
      const i64 base = o * r.n * r.inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (i64 k = 0; k < r.n; ++k) m = std::max(m, x[base + k * r.inner]);
      double s = 0.0;
      for (i64 k = 0; k < r.n; ++k) s += std::exp(static_cast<double>(x[base + k * r.inner]) - m);
      for (i64 k = 0; k < r.n; ++k) {
        const i64 j = base + k * r.inner;
        y[j] = static_cast<float>(std::exp(static_cast<double>(x[j]) - m) / s);
      }
    }

  if (will_record({a})) {
    const Tensor yv = out.detach();
    record(
        "softmax", {a}, out,
        [yv, r](const Tensor& g, GradSink& sink) {
          Tensor ga = Tensor::empty(yv.shape());
          const float *G = g.data(), *Y = yv.data();
          float* dx = ga.data();
          for (i64 o = 0; o < r.outer; ++o)
            for (i64 i = 0; i < r.inner; ++i) {
              const i64 base = o * r.n * r.inner + i;
              double gy = 0.0;
              for (i64 k = 0; k < r.n; ++k) gy += static_cast<double>(G[base + k * r.inner]) * Y[base + k * r.inner];
              for (i64 k = 0; k < r.n; ++k) {
                const i64 j = base + k * r.inner;
                dx[j] = static_cast<float>(Y[j] * (G[j] - gy));
              }
            }
          sink.add(0, ga);
        },
        {out});
  } else {
    check_forward("softmax", {a}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

// log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|)) (PyTorch's log_sigmoid_forward
// uses the same split). d/dx = 1 - sigmoid(x) = sigmoid(-x), evaluated without overflow:
// exp(-x) / (1 + exp(-x)) for x >= 0, 1 / (1 + exp(x)) below.
Tensor log_sigmoid(const Tensor& a) {
  const i64 n = a.numel();
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  for (i64 i = 0; i < n; ++i) {
    const double xi = x[i];
    y[i] = static_cast<float>(std::min(xi, 0.0) - std::log1p(std::exp(-std::abs(xi))));
  }
  if (will_record({a})) {
    record(
        "log_sigmoid", {a}, out,
        [xv = a.detach()](const Tensor& g, GradSink& sink) {
          const i64 m = xv.numel();
          Tensor ga = Tensor::empty(xv.shape());
          const float *G = g.data(), *X = xv.data();
          float* dx = ga.data();
          for (i64 i = 0; i < m; ++i) {
            const double xi = X[i];
            const double s = xi >= 0.0 ? std::exp(-xi) / (1.0 + std::exp(-xi)) : 1.0 / (1.0 + std::exp(xi));
            dx[i] = static_cast<float>(G[i] * s);
          }
          sink.add(0, ga);
        },
        {a});
  } else {
    check_forward("log_sigmoid", {a}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

}  // namespace hitch
