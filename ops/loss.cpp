// hitch/ops/loss.cpp: log_softmax and the losses. Every loss reduces by the mean to shape [].
//
//   log_softmax(a, dim)                           any shape, normalised along dim  -> a's shape
//   cross_entropy(logits [B,C], targets [B])      targets in [0, C)                -> []
//   mse_loss(input, target)                       same shapes                      -> []
//   binary_cross_entropy_with_logits(x, y)        same shapes, y not differentiated -> []
//
// Numerics: log-sum-exp subtracts the maximum before exponentiating and sums in double, so
// logits of any magnitude give finite results; bce uses max(x,0) - x*y + log1p(exp(-|x|)),
// which never exponentiates a positive number. Left out: class weights, label smoothing,
// ignore_index (every target must be a valid class), reductions other than the mean.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/tape.h"
#include "ops/ops.h"

namespace hitch {

namespace {

using i64 = std::int64_t;

// log(sum_k exp(x[k * stride])) over n values, stable.
double log_sum_exp(const float* x, i64 n, i64 stride) {
  float m = -std::numeric_limits<float>::infinity();
  for (i64 k = 0; k < n; ++k) m = std::max(m, x[k * stride]);
  if (std::isinf(m)) return m;  // all -inf (or an +inf): the max is the answer
  double s = 0.0;
  for (i64 k = 0; k < n; ++k) s += std::exp(static_cast<double>(x[k * stride]) - m);
  return m + std::log(s);
}

void check_same_shape(const char* op, const Tensor& input, const Tensor& target) {
  if (input.shape() != target.shape())
    throw Error(fmt::format("{}: input {} and target {} must have the same shape", op, shape_str(input.shape()),
                            shape_str(target.shape())));
}

}  // namespace

// a viewed as [outer, n, inner] with n at dim: out = x - log(sum_k exp(x_k)) along n.
// Backward: dx = g - softmax * sum_k g, with softmax = exp(out).
Tensor log_softmax(const Tensor& a, std::int64_t dim) {
  const i64 d = wrap_dim("log_softmax", dim, a.dim());
  i64 outer = 1, inner = 1;
  for (i64 k = 0; k < d; ++k) outer *= a.shape()[static_cast<std::size_t>(k)];
  for (i64 k = d + 1; k < a.dim(); ++k) inner *= a.shape()[static_cast<std::size_t>(k)];
  const i64 n = a.size(d);

  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  if (out.numel() == 0) outer = 0;  // nothing to write (and x may be null: no offsets from it)
  for (i64 o = 0; o < outer; ++o)
    for (i64 i = 0; i < inner; ++i) {
      const i64 base = o * n * inner + i;
      const auto lse = static_cast<float>(log_sum_exp(x + base, n, inner));
      for (i64 k = 0; k < n; ++k) y[base + k * inner] = x[base + k * inner] - lse;
    }

  if (will_record({a})) {
    const Tensor yv = out.detach();
    record(
        "log_softmax", {a}, out,
        [yv, outer, n, inner](const Tensor& g, GradSink& sink) {
          Tensor ga = Tensor::empty(yv.shape());
          const float *G = g.data(), *Y = yv.data();
          float* dx = ga.data();
          for (i64 o = 0; o < outer; ++o)
            for (i64 i = 0; i < inner; ++i) {
              const i64 base = o * n * inner + i;
              double gs = 0.0;
              for (i64 k = 0; k < n; ++k) gs += G[base + k * inner];
              for (i64 k = 0; k < n; ++k) {
                const i64 j = base + k * inner;
                dx[j] = static_cast<float>(G[j] - std::exp(static_cast<double>(Y[j])) * gs);
              }
            }
          sink.add(0, ga);
        },
        {out});
  }
  return out;
}

// loss = mean_b (lse(logits[b]) - logits[b, t_b]). Backward: dlogits[b,c] = g/B (softmax[b,c] -
// [c == t_b]); the softmax is recomputed from the logits and the per-row lse kept from forward.
Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets) {
  if (logits.dim() != 2)
    throw Error(fmt::format("cross_entropy: expected logits of shape [B,C], got {}", shape_str(logits.shape())));
  const i64 B = logits.size(0), C = logits.size(1);
  if (targets.dim() != 1 || targets.numel() != B)
    throw Error(fmt::format("cross_entropy: expected targets of shape [{}] (one per row of logits {}), got {}", B,
                            shape_str(logits.shape()), shape_str(targets.shape())));
  for (i64 b = 0; b < B; ++b)
    if (targets[b] < 0 || targets[b] >= C)
      throw Error(fmt::format("cross_entropy: target {} at position {} is out of range for {} classes (valid: [0, {}))",
                              targets[b], b, C, C));

  const float* x = logits.data();
  std::vector<float> lse(static_cast<std::size_t>(B));
  double total = 0.0;
  for (i64 b = 0; b < B; ++b) {
    const double l = log_sum_exp(x + b * C, C, 1);
    lse[static_cast<std::size_t>(b)] = static_cast<float>(l);
    total += l - x[b * C + targets[b]];
  }
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(B)));

  if (will_record({logits})) {
    record(
        "cross_entropy", {logits}, out,
        [xv = logits.detach(), targets, lse = std::move(lse), B, C](const Tensor& g, GradSink& sink) {
          Tensor ga = Tensor::empty({B, C});
          const float* X = xv.data();
          float* dx = ga.data();
          const double scale = static_cast<double>(g.item()) / static_cast<double>(B);
          for (i64 b = 0; b < B; ++b) {
            const double l = lse[static_cast<std::size_t>(b)];
            for (i64 c = 0; c < C; ++c)
              dx[b * C + c] = static_cast<float>(scale * std::exp(static_cast<double>(X[b * C + c]) - l));
            dx[b * C + targets[b]] -= static_cast<float>(scale);
          }
          sink.add(0, ga);
        },
        {logits});
  }
  return out;
}

// loss = mean((input - target)^2). Backward: dinput = 2 (input - target) g / n, dtarget = -dinput.
Tensor mse_loss(const Tensor& input, const Tensor& target) {
  check_same_shape("mse_loss", input, target);
  const i64 n = input.numel();
  const float *x = input.data(), *t = target.data();
  double s = 0.0;
  for (i64 i = 0; i < n; ++i) {
    const double diff = static_cast<double>(x[i]) - t[i];
    s += diff * diff;
  }
  Tensor out = Tensor::scalar(static_cast<float>(s / static_cast<double>(n)));
  if (will_record({input, target})) {
    record(
        "mse_loss", {input, target}, out,
        [xv = input.detach(), tv = target.detach()](const Tensor& g, GradSink& sink) {
          const i64 m = xv.numel();
          const float scale = 2.0f * g.item() / static_cast<float>(m);
          const float *X = xv.data(), *T = tv.data();
          for (std::size_t k = 0; k < 2; ++k) {
            if (!sink.wants(k)) continue;
            const float sign = k == 0 ? scale : -scale;
            Tensor gk = Tensor::empty(xv.shape());
            float* d = gk.data();
            for (i64 i = 0; i < m; ++i) d[i] = sign * (X[i] - T[i]);
            sink.add(k, gk);
          }
        },
        {input, target});
  }
  return out;
}

// loss = mean(max(x,0) - x*y + log1p(exp(-|x|))). Backward: dx = (sigmoid(x) - y) g / n.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target) {
  const char* op = "binary_cross_entropy_with_logits";
  check_same_shape(op, logits, target);
  if (grad_enabled() && target.requires_grad())
    throw Error(fmt::format("{}: target requires grad, but its gradient is not implemented; pass target.detach()", op));
  const i64 n = logits.numel();
  const float *x = logits.data(), *y = target.data();
  double s = 0.0;
  for (i64 i = 0; i < n; ++i) {
    const double xi = x[i];
    s += std::max(xi, 0.0) - xi * y[i] + std::log1p(std::exp(-std::abs(xi)));
  }
  Tensor out = Tensor::scalar(static_cast<float>(s / static_cast<double>(n)));
  if (will_record({logits})) {
    record(
        op, {logits}, out,
        [xv = logits.detach(), yv = target.detach()](const Tensor& g, GradSink& sink) {
          const i64 m = xv.numel();
          const double scale = static_cast<double>(g.item()) / static_cast<double>(m);
          Tensor gx = Tensor::empty(xv.shape());
          const float *X = xv.data(), *Y = yv.data();
          float* d = gx.data();
          for (i64 i = 0; i < m; ++i) {
            const double xi = X[i];
            const double sig = xi >= 0.0 ? 1.0 / (1.0 + std::exp(-xi)) : std::exp(xi) / (1.0 + std::exp(xi));
            d[i] = static_cast<float>(scale * (sig - Y[i]));
          }
          sink.add(0, gx);
        },
        {logits, target});
  }
  return out;
}

}  // namespace hitch
