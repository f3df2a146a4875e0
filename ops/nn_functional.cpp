// hitch/ops/nn_functional.cpp: the building blocks of models that are functions, not modules:
//
//   dropout(a, p, training, gen)                       any shape              -> a's shape
//   layer_norm(a [*, S], S, weight [S], bias [S], eps)  normalised over the trailing dims S -> a's shape
//   gelu(a, approximate)                               any shape              -> a's shape
//
// Each op checks its arguments first, then computes in one loop (statistics in double) and
// records one node whose backward sits right below the forward. nn/layers.h wraps them as
// modules (Dropout, LayerNorm, GELU). Left out on purpose: in-place variants (PyTorch's
// inplace=True), dropout2d/alpha dropout, rms_norm, other GELU approximations.
#include <cmath>
#include <memory>
#include <numbers>
#include <vector>

#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

}  // namespace

// ---- dropout ------------------------------------------------------------------------------------
// Srivastava et al. 2014 ("inverted" dropout, as torch.nn.functional.dropout): out = a * m with
// m[i] = (u[i] >= p) / (1 - p), u[i] = gen.uniform() drawn in element order. m is kept by the
// node (not a tensor: nothing can write it), so backward is da = g * m. p = 1 drops everything
// (m = 0, no division by zero). Not training, or p = 0: out is a copy of a, nothing is drawn,
// and backward passes g through (the op still records, so gradients flow in eval mode).
Tensor dropout(const Tensor& a, float p, bool training, Generator& gen) {
  if (!(p >= 0.0f && p <= 1.0f)) throw Error(fmt::format("dropout: p must be in [0, 1], got {}", p));
  const i64 n = a.numel();
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  if (!training || p == 0.0f) {
    for (i64 i = 0; i < n; ++i) y[i] = x[i];
    record("dropout", {a}, out, [](const Tensor& g, GradSink& sink) { sink.add(0, g); });
    return out;
  }
  const float scale = p == 1.0f ? 0.0f : static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  auto mask = std::make_shared<std::vector<float>>(static_cast<std::size_t>(n));
  for (i64 i = 0; i < n; ++i) {
    const float m = gen.uniform() >= static_cast<double>(p) ? scale : 0.0f;
    (*mask)[static_cast<std::size_t>(i)] = m;
    y[i] = x[i] * m;
  }
  record("dropout", {a}, out, [mask](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty(g.shape());
    const float* G = g.data();
    float* d = ga.data();
    for (i64 i = 0, m = ga.numel(); i < m; ++i) d[i] = G[i] * (*mask)[static_cast<std::size_t>(i)];
    sink.add(0, ga);
  });
  return out;
}

// ---- layer_norm ---------------------------------------------------------------------------------
// Ba, Kiros & Hinton 2016, as torch.nn.functional.layer_norm. a viewed as [M, N], N = numel(S):
//   mu = mean_j x[j], var = mean_j (x[j] - mu)^2 (biased), rstd = 1 / sqrt(var + eps)
//   xhat[j] = (x[j] - mu) rstd,  y[j] = xhat[j] w[j] + b[j]   (w = 1, b = 0 when undefined)
// Backward (per row; the form of llm.c's layernorm_backward and of PyTorch's
// LayerNormBackwardKernel, aten/src/ATen/native/cpu/layer_norm_kernel.cpp):
//   dxhat[j] = g[j] w[j]
//   dx[j]    = rstd (dxhat[j] - mean_k dxhat[k] - xhat[j] mean_k (dxhat[k] xhat[k]))
//   dw[j]   += sum_rows g[j] xhat[j],   db[j] += sum_rows g[j]
// mu and rstd per row are kept by the node; backward recomputes xhat from a (saved, so an
// in-place write to a or weight before backward is refused).
Tensor layer_norm(const Tensor& a, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  float eps) {
  const auto k = static_cast<i64>(normalized_shape.size());
  if (k == 0) throw Error("layer_norm: normalized_shape must have at least one dim, got []");
  bool ends_with = a.dim() >= k;
  for (i64 d = 0; ends_with && d < k; ++d)
    ends_with = a.shape()[static_cast<std::size_t>(a.dim() - k + d)] == normalized_shape[static_cast<std::size_t>(d)];
  if (!ends_with)
    throw Error(fmt::format("layer_norm: input of shape {} does not end with normalized_shape {}",
                            shape_str(a.shape()), shape_str(normalized_shape)));
  if (weight.defined() && weight.shape() != normalized_shape)
    throw Error(fmt::format("layer_norm: weight has shape {}, but normalized_shape is {}", shape_str(weight.shape()),
                            shape_str(normalized_shape)));
  if (bias.defined() && bias.shape() != normalized_shape)
    throw Error(fmt::format("layer_norm: bias has shape {}, but normalized_shape is {}", shape_str(bias.shape()),
                            shape_str(normalized_shape)));
  if (!(std::isfinite(eps) && eps > 0.0f))
    throw Error(fmt::format("layer_norm: eps must be finite and > 0, got {}", eps));

  const i64 N = numel_of(normalized_shape);
  const i64 M = N == 0 ? 0 : a.numel() / N;
  Tensor out = Tensor::empty(a.shape());
  auto stats = std::make_shared<std::vector<double>>(static_cast<std::size_t>(2 * M));  // mu, rstd per row
  const float* x = a.data();
  const float* w = weight.defined() ? weight.data() : nullptr;
  const float* b = bias.defined() ? bias.data() : nullptr;
  float* y = out.data();
  for (i64 r = 0; r < M; ++r) {
    const float* xr = x + r * N;
    double mu = 0.0, var = 0.0;
    for (i64 j = 0; j < N; ++j) mu += xr[j];
    mu /= static_cast<double>(N);
    for (i64 j = 0; j < N; ++j) var += (xr[j] - mu) * (xr[j] - mu);
    var /= static_cast<double>(N);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    (*stats)[static_cast<std::size_t>(2 * r)] = mu;
    (*stats)[static_cast<std::size_t>(2 * r + 1)] = rstd;
    for (i64 j = 0; j < N; ++j) {
      double v = (xr[j] - mu) * rstd;
      if (w) v *= w[j];
      if (b) v += b[j];
      y[r * N + j] = static_cast<float>(v);
    }
  }

  std::vector<Tensor> inputs{a}, saved{a};
  if (weight.defined()) inputs.push_back(weight), saved.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  const std::size_t iw = 1, ib = weight.defined() ? 2 : 1;
  const Tensor av = a.detach(), wv = weight.defined() ? weight.detach() : Tensor();
  record(
      "layer_norm", inputs, out,
      [av, wv, has_bias = bias.defined(), shape = normalized_shape, stats, M, N, iw, ib](const Tensor& g, GradSink& sink) {
        const float* G = g.data();
        const float* X = av.data();
        const float* W = wv.defined() ? wv.data() : nullptr;
        const bool want_x = sink.wants(0), want_w = W && sink.wants(iw), want_b = has_bias && sink.wants(ib);
        Tensor gx = want_x ? Tensor::empty(av.shape()) : Tensor();
        std::vector<double> dw(want_w ? static_cast<std::size_t>(N) : 0), db(want_b ? static_cast<std::size_t>(N) : 0);
        std::vector<double> xhat(static_cast<std::size_t>(N)), dxhat(static_cast<std::size_t>(N));
        for (i64 r = 0; r < M; ++r) {
          const double mu = (*stats)[static_cast<std::size_t>(2 * r)], rstd = (*stats)[static_cast<std::size_t>(2 * r + 1)];
          double mean_d = 0.0, mean_dx = 0.0;
          for (i64 j = 0; j < N; ++j) {
            const auto u = static_cast<std::size_t>(j);
            const double gj = G[r * N + j];
            xhat[u] = (X[r * N + j] - mu) * rstd;
            dxhat[u] = W ? gj * W[j] : gj;
            mean_d += dxhat[u];
            mean_dx += dxhat[u] * xhat[u];
            if (want_w) dw[u] += gj * xhat[u];
            if (want_b) db[u] += gj;
          }
          if (!want_x) continue;
          mean_d /= static_cast<double>(N);
          mean_dx /= static_cast<double>(N);
          float* d = gx.data() + r * N;
          for (i64 j = 0; j < N; ++j) {
            const auto u = static_cast<std::size_t>(j);
            d[j] = static_cast<float>(rstd * (dxhat[u] - mean_d - xhat[u] * mean_dx));
          }
        }
        if (want_x) sink.add(0, gx);
        auto to_tensor = [&shape](const std::vector<double>& v) {
          Tensor t = Tensor::empty(shape);
          for (std::size_t j = 0; j < v.size(); ++j) t.data()[j] = static_cast<float>(v[j]);
          return t;
        };
        if (want_w) sink.add(iw, to_tensor(dw));
        if (want_b) sink.add(ib, to_tensor(db));
      },
      saved);
  return out;
}

// ---- gelu ---------------------------------------------------------------------------------------
// Hendrycks & Gimpel 2016, as torch.nn.functional.gelu (computed in double per element):
//   "none": y = x Phi(x) = x/2 (1 + erf(x / sqrt 2));   dy/dx = Phi(x) + x phi(x),
//           phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   "tanh": t = tanh(sqrt(2/pi) (x + 0.044715 x^3));  y = x/2 (1 + t);
//           dy/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Backward reads a (saved).
Tensor gelu(const Tensor& a, std::string_view approximate) {
  const bool tanh_form = approximate == "tanh";
  if (!tanh_form && approximate != "none")
    throw Error(fmt::format("gelu: approximate must be \"none\" or \"tanh\", got \"{}\"", approximate));
  constexpr double kC = 0.044715;
  const double k_sqrt_2_over_pi = std::sqrt(2.0 / std::numbers::pi);
  const double k_inv_sqrt_2pi = 1.0 / std::sqrt(2.0 * std::numbers::pi);
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  for (i64 i = 0, n = a.numel(); i < n; ++i) {
    const double v = x[i];
    y[i] = static_cast<float>(tanh_form ? 0.5 * v * (1.0 + std::tanh(k_sqrt_2_over_pi * (v + kC * v * v * v)))
                                        : 0.5 * v * (1.0 + std::erf(v * std::numbers::sqrt2 / 2.0)));
  }
  const Tensor av = a.detach();
  record(
      "gelu", {a}, out,
      [av, tanh_form, k_sqrt_2_over_pi, k_inv_sqrt_2pi](const Tensor& g, GradSink& sink) {
        Tensor ga = Tensor::empty(av.shape());
        const float *G = g.data(), *X = av.data();
        float* d = ga.data();
        for (i64 i = 0, n = ga.numel(); i < n; ++i) {
          const double v = X[i];
          double dydx;
          if (tanh_form) {
            const double t = std::tanh(k_sqrt_2_over_pi * (v + kC * v * v * v));
            dydx = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k_sqrt_2_over_pi * (1.0 + 3.0 * kC * v * v);
          } else {
            dydx = 0.5 * (1.0 + std::erf(v * std::numbers::sqrt2 / 2.0)) + v * k_inv_sqrt_2pi * std::exp(-0.5 * v * v);
          }
          d[i] = static_cast<float>(G[i] * dydx);
        }
        sink.add(0, ga);
      },
      {a});
  return out;
}

}  // namespace hitch
