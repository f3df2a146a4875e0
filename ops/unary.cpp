// hitch/ops/unary.cpp: elementwise functions of one tensor: square, pow, exp, log, sqrt, relu,
// tanh, sigmoid, abs, clamp. Output shape = input shape.
//
// Each op is one forward loop and one backward loop; the derivative is written in terms of the
// input x and/or the output y, whichever is cheaper (exp, sqrt, tanh and sigmoid reuse y).
// Domain errors are not checked: log and sqrt of negative numbers give NaN and log(0) = -inf,
// as in PyTorch; those are values, not user mistakes that a shape check could catch.
// Under DetectAnomalyGuard the op that makes one from finite inputs throws (core/anomaly.h).
#include <cmath>
#include <optional>

#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

// out[i] = f(a[i]); backward: da[i] = g[i] * dfdx(x = a[i], y = out[i]). Backward reads the
// values of both a and out (shared storage, not copies) and records both as saved, so an
// in-place write to either before backward is reported.
template <class F, class D>
Tensor unary(const char* op, const Tensor& a, F f, D dfdx) {
  Tensor out = Tensor::empty(a.shape());
  const float* x = a.data();
  float* y = out.data();
  const i64 n = a.numel();
  for (i64 i = 0; i < n; ++i) y[i] = f(x[i]);
  if (will_record({a})) {
    const Tensor av = a.detach(), yv = out.detach();  // never `out` itself: that would be a cycle
    record(
        op, {a}, out,
        [av, yv, dfdx](const Tensor& g, GradSink& sink) {
          Tensor ga = Tensor::empty(av.shape());
          const float *G = g.data(), *X = av.data(), *Y = yv.data();
          float* d = ga.data();
          for (i64 i = 0, m = ga.numel(); i < m; ++i) d[i] = G[i] * dfdx(X[i], Y[i]);
          sink.add(0, ga);
        },
        {a, out});
  } else {
    check_forward(op, {a}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

}  // namespace

// a^2. d/da = 2a.
Tensor square(const Tensor& a) {
  return unary("square", a, [](float x) { return x * x; }, [](float x, float) { return 2.0f * x; });
}

// a^p (std::pow: a negative base with a non-integer p gives NaN). d/da = p * a^(p-1), and 0
// for p = 0 (so that 0^0 = 1 has gradient 0 rather than 0 * inf).
Tensor pow(const Tensor& a, float p) {
  const AnomalyExtraInput exponent(p);  // anomaly mode: a non-finite p is the caller's
  if (p == 0.0f) return unary("pow", a, [](float) { return 1.0f; }, [](float, float) { return 0.0f; });
  if (p == 2.0f) return unary("pow", a, [](float x) { return x * x; }, [](float x, float) { return 2.0f * x; });
  return unary("pow", a, [p](float x) { return std::pow(x, p); },
               [p](float x, float) { return p * std::pow(x, p - 1.0f); });
}

// e^a. d/da = e^a = y.
Tensor exp(const Tensor& a) {
  return unary("exp", a, [](float x) { return std::exp(x); }, [](float, float y) { return y; });
}

// ln a. d/da = 1/a.
Tensor log(const Tensor& a) {
  return unary("log", a, [](float x) { return std::log(x); }, [](float x, float) { return 1.0f / x; });
}

// sqrt a. d/da = 1 / (2 y).
Tensor sqrt(const Tensor& a) {
  return unary("sqrt", a, [](float x) { return std::sqrt(x); }, [](float, float y) { return 0.5f / y; });
}

// max(a, 0). d/da = 1 where a > 0, else 0 (0 at a = 0, as PyTorch).
Tensor relu(const Tensor& a) {
  return unary("relu", a, [](float x) { return x > 0.0f ? x : 0.0f; },
               [](float x, float) { return x > 0.0f ? 1.0f : 0.0f; });
}

// tanh a. d/da = 1 - y^2.
Tensor tanh(const Tensor& a) {
  return unary("tanh", a, [](float x) { return std::tanh(x); }, [](float, float y) { return 1.0f - y * y; });
}

// 1 / (1 + e^-a), computed without overflow for large |a|. d/da = y (1 - y).
Tensor sigmoid(const Tensor& a) {
  return unary(
      "sigmoid", a,
      [](float x) {
        if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
        const float e = std::exp(x);
        return e / (1.0f + e);
      },
      [](float, float y) { return y * (1.0f - y); });
}

// |a|. d/da = sign(a): 1 for a > 0, -1 for a < 0, 0 at a = 0 (torch.abs: sgn(a)).
Tensor abs(const Tensor& a) {
  return unary("abs", a, [](float x) { return std::fabs(x); },
               [](float x, float) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); });
}

// min(max(a, lo), hi), either bound optional (torch.clamp). With lo > hi every value is hi
// (max first, then min, as torch); NaN in a stays NaN. d/da = 1 where lo <= a <= hi (bounds
// included, torch's clamp_backward), else 0 (so 0 everywhere when lo > hi, and at NaN).
Tensor clamp(const Tensor& a, std::optional<float> min, std::optional<float> max) {
  if (!min && !max) throw Error("clamp: at least one of min and max must be given, but both are absent");
  if ((min && std::isnan(*min)) || (max && std::isnan(*max)))
    throw Error(fmt::format("clamp: bounds must not be NaN, but got min = {} and max = {}",
                            min ? fmt::format("{}", *min) : "none", max ? fmt::format("{}", *max) : "none"));
  const float lo = min.value_or(-INFINITY), hi = max.value_or(INFINITY);
  const AnomalyExtraInput low(min.value_or(0.0f)), high(max.value_or(0.0f));  // anomaly mode: a bound of +-inf
  return unary("clamp", a,
               [lo, hi](float x) {
                 const float y = x < lo ? lo : x;  // NaN compares false and stays
                 return hi < y ? hi : y;
               },
               [lo, hi](float x, float) { return x >= lo && x <= hi ? 1.0f : 0.0f; });
}

}  // namespace hitch
