// hitch/ops/loss.cpp: log_softmax, the losses and cosine_similarity.
//
//   log_softmax(a, dim)                           any shape, normalised along dim  -> a's shape
//   cross_entropy(logits [B,C], targets [B], o)   targets in [0, C) or ignored     -> [] or [B]
//   nll_loss(log_probs [B,C], targets [B], o)     as cross_entropy, no smoothing   -> [] or [B]
//   cosine_similarity(x1, x2, dim, eps)           x1, x2 broadcast to S            -> S without dim
//   mse_loss(input, target)                       same shapes                      -> []
//   binary_cross_entropy_with_logits(x, y)        same shapes, y not differentiated -> []
//
// Numerics: log-sum-exp subtracts the maximum before exponentiating and sums in double, so
// logits of any magnitude give finite results; bce uses max(x,0) - x*y + log1p(exp(-|x|)),
// which never exponentiates a positive number. Left out: inputs of other ranks for
// cross_entropy / nll_loss ([C] or [B,C,d...]: reshape first), probability targets, a
// differentiable class weight; mse_loss and bce reduce by the mean only.
#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <vector>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/exp_kernel.h>
#include <hitch/ops/ops.h>

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

// out[k] = scale * exp(x[k] - shift), x[k] - shift <= 0: the softmax's exponentials, vectorised
// for the CPU at hand (the same bits at every width: core/runtime/prefetch.h, HITCH_TARGET_CLONES).
HITCH_TARGET_CLONES void scaled_exp(const float* x, float shift, float scale, float* out, i64 n) {
  for (i64 k = 0; k < n; ++k) out[k] = scale * detail::exp_nonpositive(x[k] - shift);
}

// The same for one contiguous row, fast: the max and the sum run in 8 lanes (a fixed order, so
// the bits do not depend on the machine), exp by detail::exp_nonpositive into scratch (which
// vectorises), the sum in double. Agrees with log_sum_exp to float rounding.
double row_log_sum_exp(const float* x, i64 n, float* scratch) {
  constexpr int L = 8;
  float lane_max[L];
  for (float& v : lane_max) v = -std::numeric_limits<float>::infinity();
  i64 k = 0;
  for (; k + L <= n; k += L)
    for (int j = 0; j < L; ++j) lane_max[j] = std::max(lane_max[j], x[k + j]);
  float m = -std::numeric_limits<float>::infinity();
  for (; k < n; ++k) m = std::max(m, x[k]);
  for (float v : lane_max) m = std::max(m, v);
  if (std::isinf(m)) return m;  // all -inf (or an +inf): the max is the answer
  scaled_exp(x, m, 1.0f, scratch, n);
  double lane_sum[L] = {};
  for (k = 0; k + L <= n; k += L)
    for (int j = 0; j < L; ++j) lane_sum[j] += static_cast<double>(scratch[k + j]);
  double sum = 0.0;
  for (; k < n; ++k) sum += static_cast<double>(scratch[k]);
  for (double v : lane_sum) sum += v;
  return m + std::log(sum);
}

// Rows per parallel_for chunk for rows of C floats: at least kParallelMinFloats floats each.
std::size_t rows_per_chunk(i64 C) {
  return std::max<std::size_t>(1, kParallelMinFloats / static_cast<std::size_t>(std::max<i64>(C, 1)));
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
  } else {
    check_forward("log_softmax", {a}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

// ---- cross_entropy and nll_loss ---------------------------------------------------------------
//
// logits / log_probs [B,C], targets [B], weight [C] (w_c = 1 when absent), s = label_smoothing.
// lp = log_softmax(logits) for cross_entropy, the input itself for nll_loss. Per row b with
// t = targets[b] (PyTorch 1.13, aten/src/ATen/native/LossNLL.cpp: nll_loss_nd and
// cross_entropy_loss_label_smoothing; checked against torch 1.13 in scripts/parity/ops_loss.py):
//
//   ignored (t == ignore_index): loss_b = 0, and the row counts for nothing in the mean;
//   nll_b    = -w_t lp[b,t]
//   smooth_b = -sum_c w_c lp[b,c]                        (only when s > 0)
//   loss_b   = (1 - s) nll_b + (s / C) smooth_b           (= nll_b when s = 0)
//
// reduction None -> [B] of loss_b; Sum -> sum_b loss_b; Mean -> sum_b loss_b / sum_b' w_t(b'),
// the sum over non-ignored rows only; both terms divide by the same weight sum, so with weights
// and smoothing the smoothing term is divided by the weights of the targets too (PyTorch's rule;
// 0 / 0 = NaN when every target is ignored). That is the target distribution
// (1 - s) one_hot + s / C of Szegedy et al. 2016 with each class's term weighted by w_c.
//
// Backward, with f_b = g_b (None), g (Sum) or g / sum w_t (Mean), p = softmax(logits[b]) and
// W = sum_c w_c:
//   cross_entropy: dlogits[b,c] = f_b ((1 - s) w_t (p_c - [c == t]) + (s / C) (W p_c - w_c))
//   nll_loss:      dlog_probs[b,t] = -f_b w_t (other entries 0)
// and 0 for ignored rows. The 2-argument cross_entropy is this with the default options; with
// every w_c = 1 and s = 0 the arithmetic is, operation for operation, that of the loss before
// the options existed (lse in double, kept as float for backward; g / B scaled per row).

namespace {

// Everything cross_entropy and nll_loss check, in this order, before anything is computed.
// input_name is how the messages call the first argument ("logits" / "log_probs").
void check_class_loss(const char* op, const char* input_name, const Tensor& input, const IndexTensor& targets,
                      const CrossEntropyOptions& o, bool smoothing_allowed) {
  if (input.dim() != 2)
    throw Error(fmt::format("{}: expected {} of shape [B,C], got {}", op, input_name, shape_str(input.shape())));
  const i64 B = input.size(0), C = input.size(1);
  if (targets.dim() != 1 || targets.numel() != B)
    throw Error(fmt::format("{}: expected targets of shape [{}] (one per row of {} {}), got {}", op, B, input_name,
                            shape_str(input.shape()), shape_str(targets.shape())));
  if (o.weight.defined()) {
    if (o.weight.dim() != 1 || o.weight.numel() != C)
      throw Error(fmt::format("{}: weight must have shape [{}] (one per class of {} {}), got {}", op, C, input_name,
                              shape_str(input.shape()), shape_str(o.weight.shape())));
    if (grad_enabled() && o.weight.requires_grad())
      throw Error(fmt::format("{}: weight requires grad, but its gradient is not implemented; pass weight.detach()", op));
  }
  if (!smoothing_allowed) {
    if (o.label_smoothing != 0.0f)
      throw Error(fmt::format("{}: label_smoothing must be 0 (smoothing is an option of cross_entropy), got {}", op,
                              o.label_smoothing));
  } else if (!(o.label_smoothing >= 0.0f && o.label_smoothing <= 1.0f)) {
    throw Error(fmt::format("{}: label_smoothing must be in [0, 1], got {}", op, o.label_smoothing));
  }
  if (o.reduction != Reduction::None && o.reduction != Reduction::Mean && o.reduction != Reduction::Sum)
    throw Error(fmt::format("{}: reduction = {} is not a Reduction (valid: 0 None, 1 Mean, 2 Sum)", op,
                            static_cast<int>(o.reduction)));
  for (i64 b = 0; b < B; ++b) {
    const i64 t = targets[b];
    if (t != o.ignore_index && (t < 0 || t >= C))
      throw Error(fmt::format("{}: target {} at position {} is out of range for {} classes (valid: [0, {}))", op, t, b,
                              C, C));
  }
}

// cross_entropy (from_logits) and nll_loss, after check_class_loss.
Tensor class_loss(const char* op, const Tensor& input, const IndexTensor& targets, const CrossEntropyOptions& o,
                  bool from_logits) {
  const i64 B = input.size(0), C = input.size(1);
  const i64 ignore = o.ignore_index;
  const Reduction reduction = o.reduction;
  const double s = from_logits ? static_cast<double>(o.label_smoothing) : 0.0;
  std::vector<double> w;  // empty: every class weight 1
  if (o.weight.defined()) w.assign(o.weight.values().begin(), o.weight.values().end());
  const auto weight_of = [&w](i64 c) { return w.empty() ? 1.0 : w[static_cast<std::size_t>(c)]; };
  double W = 0.0;  // sum of all class weights (smoothing only)
  for (i64 c = 0; c < C; ++c) W += weight_of(c);

  const float* x = input.data();
  std::vector<float> lse(from_logits ? static_cast<std::size_t>(B) : 0);
  std::vector<double> per_row(static_cast<std::size_t>(B), 0.0);
  // Rows are independent: computed in parallel (each by one thread), then added in row order,
  // so the result does not depend on the thread count.
  parallel_for(static_cast<std::size_t>(B), rows_per_chunk(C), [&](std::size_t lo, std::size_t hi) {
    std::vector<float> scratch(from_logits ? static_cast<std::size_t>(C) : 0);
    for (auto b = static_cast<i64>(lo); b < static_cast<i64>(hi); ++b) {
      const i64 t = targets[b];
      if (t == ignore) continue;
      const double wt = weight_of(t);
      double loss;
      if (from_logits) {
        const double l = row_log_sum_exp(x + b * C, C, scratch.data());
        lse[static_cast<std::size_t>(b)] = static_cast<float>(l);
        loss = wt * (l - x[b * C + t]);
        if (s > 0.0) {
          double smooth = 0.0;
          for (i64 c = 0; c < C; ++c) smooth += weight_of(c) * (l - x[b * C + c]);
          loss = (1.0 - s) * loss + s / static_cast<double>(C) * smooth;
        }
      } else {
        loss = -(wt * x[b * C + t]);
      }
      per_row[static_cast<std::size_t>(b)] = loss;
    }
  });
  double total = 0.0, divisor = 0.0;
  for (i64 b = 0; b < B; ++b) {
    if (targets[b] == ignore) continue;
    total += per_row[static_cast<std::size_t>(b)];
    divisor += weight_of(targets[b]);
  }

  Tensor out;
  if (reduction == Reduction::None) {
    out = Tensor::empty({B});
    for (i64 b = 0; b < B; ++b) out.data()[b] = static_cast<float>(per_row[static_cast<std::size_t>(b)]);
  } else {
    out = Tensor::scalar(static_cast<float>(reduction == Reduction::Sum ? total : total / divisor));
  }

  const AnomalyExtraInput class_weights(o.weight);  // anomaly mode: an Inf weight is the caller's
  if (will_record({input})) {
    record(
        op, {input}, out,
        [xv = input.detach(), targets, lse = std::move(lse), w = std::move(w), W, s, ignore, reduction, divisor, B, C,
         from_logits](const Tensor& g, GradSink& sink) {
          Tensor ga = from_logits ? Tensor::empty({B, C}) : Tensor::zeros({B, C});
          const float *X = xv.data(), *G = g.data();
          float* dx = ga.data();
          parallel_for(static_cast<std::size_t>(B), rows_per_chunk(C), [&](std::size_t lo, std::size_t hi) {
            for (auto b = static_cast<i64>(lo); b < static_cast<i64>(hi); ++b) {
              const i64 t = targets[b];
              float* row = dx + b * C;
              if (t == ignore) {
                if (from_logits) std::fill(row, row + C, 0.0f);
                continue;
              }
              const double f = reduction == Reduction::None  ? static_cast<double>(G[b])
                               : reduction == Reduction::Sum ? static_cast<double>(G[0])
                                                             : static_cast<double>(G[0]) / divisor;
              const double wt = w.empty() ? 1.0 : w[static_cast<std::size_t>(t)];
              const double scale = f * wt;
              if (!from_logits) {
                row[t] = static_cast<float>(-scale);
                continue;
              }
              const double l = lse[static_cast<std::size_t>(b)];
              // softmax = exp(x - lse), by the vectorised exp (x - lse <= 0: lse >= the row's max).
              const float* xr = X + b * C;
              const auto lf = static_cast<float>(l);
              if (s == 0.0) {
                const auto sc = static_cast<float>(scale);
                scaled_exp(xr, lf, sc, row, C);
                row[t] -= sc;
              } else {
                const double a = scale * (1.0 - s), sm = f * s / static_cast<double>(C);
                for (i64 c = 0; c < C; ++c) {
                  const auto p = static_cast<double>(detail::exp_nonpositive(xr[c] - lf));
                  const double wc = w.empty() ? 1.0 : w[static_cast<std::size_t>(c)];
                  row[c] = static_cast<float>(a * (p - (c == t ? 1.0 : 0.0)) + sm * (W * p - wc));
                }
              }
            }
          });
          sink.add(0, ga);
        },
        {input});
  } else {
    check_forward(op, {input}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets) {
  return cross_entropy(logits, targets, CrossEntropyOptions{});
}

Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets, const CrossEntropyOptions& options) {
  check_class_loss("cross_entropy", "logits", logits, targets, options, true);
  return class_loss("cross_entropy", logits, targets, options, true);
}

Tensor nll_loss(const Tensor& log_probs, const IndexTensor& targets, const CrossEntropyOptions& options) {
  check_class_loss("nll_loss", "log_probs", log_probs, targets, options, false);
  return class_loss("nll_loss", log_probs, targets, options, false);
}

// ---- cosine_similarity -------------------------------------------------------------------------
//
// x1, x2 broadcast (NumPy rule) to S; along dim of S (wrapped against S's rank), out = S without
// dim. PyTorch 1.13's formula (aten/src/ATen/native/Distance.cpp, cosine_similarity after
// pytorch/pytorch#31378: the squared norms are clamped to eps^2 under NoGradGuard, then
// square-rooted, and each input is divided by its own clamped norm):
//
//   c1 = sqrt(max(sum x1^2, eps^2)),  c2 = sqrt(max(sum x2^2, eps^2))
//   out = sum_k (x1_k / c1) (x2_k / c2)
//
// so each norm is clamped to eps, not their product (checked numerically against torch 1.13:
// ||x1|| = ||x2|| = 1e-5 with eps = 1e-8 gives the true cosine, where a clamped product would
// give 1/100 of it). Backward is what torch's autograd computes from that graph (the clamp is
// invisible to it, the square root's backward reads the clamped value):
//
//   dx1_k = g (x2_k / (c1 c2) - out x1_k / c1^2),  dx2_k = g (x1_k / (c1 c2) - out x2_k / c2^2)
//
// the true derivative wherever no norm is clamped; each then summed back to its input's shape
// over the broadcast dims.

namespace {

// The NumPy broadcast of x1's and x2's shapes, or an Error naming the first clashing dim
// (counted from the end, as the shapes are right-aligned).
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const std::size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (std::size_t k = 0; k < r; ++k) {
    const i64 da = k < a.size() ? a[a.size() - 1 - k] : 1;
    const i64 db = k < b.size() ? b[b.size() - 1 - k] : 1;
    if (da != db && da != 1 && db != 1)
      throw Error(fmt::format("{}: x1 {} and x2 {} cannot be broadcast: dim {} has sizes {} and {} (each pair must "
                              "be equal or one of them 1)",
                              op, shape_str(a), shape_str(b), -static_cast<i64>(k) - 1, da, db));
    out[r - 1 - k] = da == 1 ? db : da;
  }
  return out;
}

// For each element of shape `to` (row-major), the flat offset of the element of a tensor of
// shape `from` that broadcasting reads there (from's dims right-aligned, size-1 dims read at 0).
std::vector<i64> broadcast_offsets(const Shape& from, const Shape& to) {
  const std::size_t r = to.size(), lead = r - from.size();
  std::vector<i64> stride(r, 0);
  i64 step = 1;
  for (std::size_t k = from.size(); k-- > 0;) {
    stride[lead + k] = from[k] == 1 ? 0 : step;
    step *= from[k];
  }
  const i64 n = numel_of(to);
  std::vector<i64> offsets(static_cast<std::size_t>(n));
  std::vector<i64> index(r, 0);
  i64 cur = 0;
  for (i64 j = 0; j < n; ++j) {
    offsets[static_cast<std::size_t>(j)] = cur;
    for (std::size_t k = r; k-- > 0;) {  // odometer: the last dim moves fastest
      if (++index[k] < to[k]) {
        cur += stride[k];
        break;
      }
      cur -= stride[k] * (to[k] - 1);
      index[k] = 0;
    }
  }
  return offsets;
}

}  // namespace

Tensor cosine_similarity(const Tensor& x1, const Tensor& x2, std::int64_t dim, float eps) {
  const char* op = "cosine_similarity";
  const Shape S = broadcast_shapes(op, x1.shape(), x2.shape());
  checked_numel(op, S);  // the broadcast shape is a tensor's shape too (below 2^48 elements)
  const i64 d = wrap_dim(op, dim, static_cast<i64>(S.size()));
  if (!(std::isfinite(eps) && eps >= 0.0f)) throw Error(fmt::format("{}: eps must be finite and >= 0, got {}", op, eps));

  i64 outer = 1, inner = 1;
  for (i64 k = 0; k < d; ++k) outer *= S[static_cast<std::size_t>(k)];
  for (i64 k = d + 1; k < static_cast<i64>(S.size()); ++k) inner *= S[static_cast<std::size_t>(k)];
  const i64 n = S[static_cast<std::size_t>(d)];
  if (inner == 0) outer = 0;  // no output element: the loops below must not run over outer alone (2^40)
  Shape out_shape = S;
  out_shape.erase(out_shape.begin() + d);
  // The output first (AllocationError when it does not fit), then the bookkeeping: 8 bytes per
  // element of S for each offset table, 24 per output element for the norms, whose
  // std::bad_alloc becomes an AllocationError too (x1 [2^24, 1] with x2 [1, 2^24]).
  Tensor out = Tensor::empty(out_shape);
  std::vector<i64> off1, off2;
  std::vector<double> c1, c2, cs;
  const std::size_t m = static_cast<std::size_t>(outer * inner);
  try {
    off1 = broadcast_offsets(x1.shape(), S);
    off2 = broadcast_offsets(x2.shape(), S);
    c1.resize(m);
    c2.resize(m);
    cs.resize(m);
  } catch (const std::bad_alloc&) {
    throw AllocationError(fmt::format("{}: cannot allocate the offsets of the broadcast shape {} ({} elements) and "
                                      "the norms of {} outputs: out of memory",
                                      op, shape_str(S), numel_of(S), m));
  }

  const double e2 = static_cast<double>(eps) * static_cast<double>(eps);
  const float *A = x1.data(), *Bv = x2.data();
  for (i64 o = 0; o < outer; ++o)
    for (i64 i = 0; i < inner; ++i) {
      const i64 base = o * n * inner + i;
      const auto at = static_cast<std::size_t>(o * inner + i);
      double s1 = 0.0, s2 = 0.0;
      for (i64 k = 0; k < n; ++k) {
        const auto j = static_cast<std::size_t>(base + k * inner);
        const double a = A[off1[j]], b = Bv[off2[j]];
        s1 += a * a;
        s2 += b * b;
      }
      c1[at] = std::sqrt(std::max(s1, e2));
      c2[at] = std::sqrt(std::max(s2, e2));
      double v = 0.0;
      for (i64 k = 0; k < n; ++k) {
        const auto j = static_cast<std::size_t>(base + k * inner);
        v += (A[off1[j]] / c1[at]) * (Bv[off2[j]] / c2[at]);
      }
      cs[at] = v;
      out.data()[at] = static_cast<float>(v);
    }

  if (will_record({x1, x2})) {
    record(
        op, {x1, x2}, out,
        [x1v = x1.detach(), x2v = x2.detach(), off1 = std::move(off1), off2 = std::move(off2), c1 = std::move(c1),
         c2 = std::move(c2), cs = std::move(cs), outer, n, inner](const Tensor& g, GradSink& sink) {
          const float *P1 = x1v.data(), *P2 = x2v.data(), *G = g.data();
          for (std::size_t which = 0; which < 2; ++which) {
            if (!sink.wants(which)) continue;
            // this input's values / the other's, and its offsets / the other's
            const float *self = which == 0 ? P1 : P2, *other = which == 0 ? P2 : P1;
            const std::vector<i64>& so = which == 0 ? off1 : off2;
            const std::vector<i64>& oo = which == 0 ? off2 : off1;
            const std::vector<double>& cself = which == 0 ? c1 : c2;
            const Tensor& shape_of = which == 0 ? x1v : x2v;
            std::vector<double> acc(static_cast<std::size_t>(shape_of.numel()), 0.0);
            for (i64 o = 0; o < outer; ++o)
              for (i64 i = 0; i < inner; ++i) {
                const auto at = static_cast<std::size_t>(o * inner + i);
                const double gv = G[at], cc = c1[at] * c2[at], cq = cself[at] * cself[at];
                for (i64 k = 0; k < n; ++k) {
                  const auto j = static_cast<std::size_t>(o * n * inner + i + k * inner);
                  acc[static_cast<std::size_t>(so[j])] += gv * (other[oo[j]] / cc - cs[at] * self[so[j]] / cq);
                }
              }
            Tensor gx = Tensor::empty(shape_of.shape());
            for (std::size_t k = 0; k < acc.size(); ++k) gx.data()[k] = static_cast<float>(acc[k]);
            sink.add(which, gx);
          }
        },
        {x1, x2});
  } else {
    check_forward(op, {x1, x2}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
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
  } else {
    check_forward("mse_loss", {input, target}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
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
  const AnomalyExtraInput target_values(target);  // anomaly mode: not among the recorded inputs
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
  } else {
    check_forward(op, {logits}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
  }
  return out;
}

}  // namespace hitch
