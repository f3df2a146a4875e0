// hitch/ops/embedding_bag.cpp: embedding_bag (a gather followed by a per-bag reduction) and
// its backward.
//
//   1-D form: weight [N, D], input [L], offsets [K]  -> out [B, D]
//             B = K (bag b = input[offsets[b] : offsets[b+1]], offsets[K] := L), or
//             B = K-1 with include_last_offset (positions >= offsets[K-1] are in no bag)
//   2-D form: weight [N, D], input [B, L]            -> out [B, D], bag b = row b
//
// Both forms become one list `bounds` of B+1 positions (bag b = [bounds[b], bounds[b+1])), and
// from there on one kernel serves them. With w_i the per-sample weight (1 when none) and P(b)
// the positions of bag b whose index is not padding_idx:
//
//   sum    out[b] = Σ_{P(b)} w_i W[x_i]
//   mean   out[b] = Σ_{P(b)} w_i W[x_i] / Σ_{P(b)} w_i          (0 and no gradient if Σ w_i = 0)
//   sqrtn  out[b] = Σ_{P(b)} w_i W[x_i] / sqrt(Σ_{P(b)} w_i²)   (0 and no gradient if Σ w_i² = 0)
//   max    out[b,d] = max_{P(b)} W[x_i, d]; ties -> earliest position; NaN anywhere -> NaN
//                   (the first NaN position gets the gradient); empty -> 0, no gradient
//
// The plain loops below (*_plain) are the definition and run when reference_kernels()
// (core/runtime/path.h); otherwise the fast kernels behind ops/kernels/embedding_kernels.h run
// (ops/kernels/bags.cpp), with the same bits. The per_sample_weights gradient and max's weight
// gradient are plain loops on both paths.
//
// Deliberate differences from PyTorch 1.13 are listed in docs/embedding.md (scale_grad_by_freq
// counts over the whole input; 2-D input ignores include_last_offset; strict offsets checks;
// weighted mean and sqrtn; NaN in max propagates).
#include <algorithm>
#include <cmath>

#include <hitch/core/anomaly.h>
#include <hitch/core/runtime/path.h>
#include <hitch/core/tape.h>
#include <hitch/ops/embedding.h>
#include <hitch/ops/embedding_detail.h>
#include <hitch/ops/sharding.h>
#include <hitch/ops/kernels/embedding_kernels.h>

namespace hitch {

BagMode parse_bag_mode(std::string_view name) {
  if (name == "sum") return BagMode::Sum;
  if (name == "mean") return BagMode::Mean;
  if (name == "max") return BagMode::Max;
  if (name == "sqrtn") return BagMode::Sqrtn;
  throw Error(fmt::format("embedding_bag: unknown mode \"{}\" (valid: sum, mean, max, sqrtn)", name));
}

std::string_view to_string(BagMode mode) {
  switch (mode) {
    case BagMode::Sum: return "sum";
    case BagMode::Mean: return "mean";
    case BagMode::Max: return "max";
    case BagMode::Sqrtn: return "sqrtn";
  }
  throw Error(fmt::format("to_string: BagMode value {} is not a mode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)",
                          static_cast<int>(mode)));
}

namespace {

constexpr std::string_view kOp = "embedding_bag";

// What embedding_bag_backward needs; values only, plus the detached weight when (and only when)
// the per_sample_weights gradient reads the table.
struct BagSaved {
  BagMode mode = BagMode::Sum;
  std::int64_t dim = 0;
  std::int64_t num_rows = 0;
  std::optional<std::int64_t> pad;
  bool scale_grad_by_freq = false;
  bool sparse = false;
  std::vector<std::int64_t> input;   // flattened; copied only when a backward is recorded
  std::vector<std::int64_t> bounds;  // B+1
  std::vector<float> psw;            // flattened copy; empty when no per_sample_weights
  Shape psw_shape;
  std::vector<double> denom;         // sum/mean/sqrtn: per bag; 0 = the bag sends no gradient
  std::vector<std::int64_t> argmax;  // max: [B, D] row per (bag, feature); -1 = no gradient
  Tensor weight;                     // detached table, for the psw gradient only
};

bool is_pad(const std::optional<std::int64_t>& pad, std::int64_t r) { return pad && r == *pad; }

// ---- argument checks (read only) -------------------------------------------------------------

// Checks shared by both forms; returns the normalised padding row.
std::optional<std::int64_t> check_options(const EmbeddingBagOptions& o, std::int64_t num_rows,
                                          const IndexTensor& input, const Tensor& psw) {
  detail::check_bag_mode(kOp, o.mode);
  if (o.mode == BagMode::Max) {
    if (psw.defined())
      throw Error(fmt::format("{}: per_sample_weights is not supported with mode max (supported: sum, mean, sqrtn)", kOp));
    if (o.scale_grad_by_freq) throw Error(fmt::format("{}: scale_grad_by_freq is not supported with mode max", kOp));
    if (o.sparse) throw Error(fmt::format("{}: sparse gradients are not supported with mode max", kOp));
  }
  if (o.sparse && o.scale_grad_by_freq)
    throw Error(fmt::format("{}: scale_grad_by_freq is not supported with sparse gradients (sparse = true)", kOp));
  if (psw.defined() && psw.shape() != input.shape())
    throw Error(fmt::format("{}: per_sample_weights must have the shape of input {}, but has shape {}", kOp,
                            shape_str(input.shape()), shape_str(psw.shape())));
  detail::check_max_norm(kOp, o.max_norm, o.norm_type);
  return detail::normalise_padding_idx(kOp, o.padding_idx, num_rows);
}

// Which overload: with offsets, input must not be 2-D; without, it must not be 1-D.
void check_form_with_offsets(const IndexTensor& input) {
  if (input.dim() == 2)
    throw Error(fmt::format("{}: input is 2-D (shape {}), so offsets must not be given: each row is one bag (use "
                            "the overload without offsets)",
                            kOp, shape_str(input.shape())));
}
void check_form_without_offsets(const IndexTensor& input) {
  if (input.dim() == 1)
    throw Error(fmt::format("{}: input is 1-D (shape {}) but no offsets were given: pass offsets for 1-D input, "
                            "or a 2-D input [B, L] with one bag per row",
                            kOp, shape_str(input.shape())));
}

// The options of the unsharded op run on a sharded lookup's fetched rows: padding renumbered,
// max_norm dropped (the owners applied it).
EmbeddingBagOptions local_options(const EmbeddingBagOptions& o, std::optional<std::int64_t> pad) {
  EmbeddingBagOptions local = o;
  local.padding_idx = pad;
  local.max_norm.reset();
  return local;
}

void check_rank(const IndexTensor& input) {
  if (input.dim() != 1 && input.dim() != 2)
    throw Error(fmt::format("{}: input must be 1-D (with offsets) or 2-D (one bag per row), but has shape {}", kOp,
                            shape_str(input.shape())));
}

// The 1-D form's offsets -> bounds. offsets must start at 0, never decrease and stay <= L.
std::vector<std::int64_t> bounds_from_offsets(const IndexTensor& offsets, std::int64_t length,
                                              bool include_last_offset) {
  if (offsets.dim() != 1)
    throw Error(fmt::format("{}: offsets must be 1-D, but has shape {}", kOp, shape_str(offsets.shape())));
  const std::int64_t k = offsets.numel();
  if (include_last_offset && k == 0)
    throw Error(fmt::format("{}: include_last_offset needs at least one offset (the end of the last bag), but "
                            "offsets is empty",
                            kOp));
  if (k == 0 && length > 0)
    throw Error(fmt::format("{}: offsets is empty but input has {} entries; pass offsets = {{0}} for one bag", kOp,
                            length));
  const std::int64_t* o = offsets.data();
  for (std::int64_t i = 0; i < k; ++i) {
    if (i == 0 && o[0] != 0)
      throw Error(fmt::format("{}: offsets[0] must be 0 (the first bag starts at input[0]), but is {}", kOp, o[0]));
    if (o[i] > length)
      throw Error(fmt::format("{}: offsets[{}] = {} is beyond the end of input (valid: [0, {}])", kOp, i, o[i], length));
    if (i > 0 && o[i] < o[i - 1])
      throw Error(fmt::format("{}: offsets must be non-decreasing, but offsets[{}] = {} < offsets[{}] = {}", kOp, i,
                              o[i], i - 1, o[i - 1]));
  }
  std::vector<std::int64_t> bounds(o, o + k);
  if (!include_last_offset) bounds.push_back(length);
  return bounds;
}

// ---- the plain loops: what embedding_bag computes (the reference path) -------------------------
//
// The fast versions (ops/kernels/bags.cpp, called when !reference_kernels()) compute the same
// float operations in the same order, so both paths give the same bits.

// sum / mean / sqrtn, bag by bag, position by position: the bag's sum starts at 0 and adds
// w_i * W[x_i] (W[x_i] itself without weights); mean and sqrtn then divide it by the divisor
// (Σ w_i or sqrt(Σ w_i²), summed in double) rounded to float. denom[b] = that divisor (1 for
// sum), or 0 when the bag sends no gradient (no non-padding entry, or a zero divisor: the zero row).
void weighted_bags_forward_plain(const BagSaved& s, const std::int64_t* x, const float* w, const float* psw,
                                 float* out, std::vector<double>& denom) {
  const auto width = static_cast<std::size_t>(s.dim);
  const std::size_t num_bags = s.bounds.size() - 1;
  denom.assign(num_bags, 0.0);
  for (std::size_t b = 0; b < num_bags; ++b) {
    float* ob = out + b * width;
    std::fill(ob, ob + width, 0.0f);
    double acc = 0.0;  // Σ w_i (mean) or Σ w_i² (sqrtn); 1 per position without weights
    std::int64_t n = 0;
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (is_pad(s.pad, x[i])) continue;
      const float* row = w + static_cast<std::size_t>(x[i]) * width;
      ++n;
      if (psw) {
        const float wi = psw[i];
        acc += s.mode == BagMode::Sqrtn ? static_cast<double>(wi) * wi : static_cast<double>(wi);
        for (std::size_t d = 0; d < width; ++d) ob[d] += wi * row[d];
      } else {
        acc += 1.0;
        for (std::size_t d = 0; d < width; ++d) ob[d] += row[d];
      }
    }
    if (n == 0) continue;  // empty or all padding: the zero row, no gradient
    if (s.mode == BagMode::Sum) {
      denom[b] = 1.0;
      continue;
    }
    const double den = s.mode == BagMode::Mean ? acc : std::sqrt(acc);
    if (den == 0.0) {  // weighted mean with Σ w = 0, or sqrtn with all weights 0: defined as 0
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    denom[b] = den;
    for (std::size_t d = 0; d < width; ++d) ob[d] /= static_cast<float>(den);
  }
}

// max, per bag and feature: the first non-padding position sets the running max; a later one
// replaces it when strictly greater (ties -> earliest) or when it is NaN and the running max is
// not (a NaN anywhere wins; the first NaN is the argmax). argmax[b, d] = the row that set the
// max (-1 for an empty bag), filled only when with_argmax.
void max_bags_forward_plain(const BagSaved& s, const std::int64_t* x, const float* w, float* out,
                            std::vector<std::int64_t>& argmax, bool with_argmax) {
  const auto width = static_cast<std::size_t>(s.dim);
  const std::size_t num_bags = s.bounds.size() - 1;
  if (with_argmax) argmax.assign(num_bags * width, -1);
  std::vector<std::int64_t> arg(width);
  for (std::size_t b = 0; b < num_bags; ++b) {
    float* ob = out + b * width;
    bool first = true;
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (is_pad(s.pad, x[i])) continue;
      const float* row = w + static_cast<std::size_t>(x[i]) * width;
      for (std::size_t d = 0; d < width; ++d) {
        if (first || row[d] > ob[d] || (std::isnan(row[d]) && !std::isnan(ob[d]))) {
          ob[d] = row[d];
          arg[d] = x[i];
        }
      }
      first = false;
    }
    if (first) {  // empty or all padding: the zero row, no gradient
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    if (with_argmax) std::copy(arg.begin(), arg.end(), argmax.begin() + static_cast<std::ptrdiff_t>(b * width));
  }
}

// The weight gradient of sum / mean / sqrtn: one entry per non-padding position of a bag with a
// gradient, in position order: row x_i, value c_i * g[b] with c_i = w_i / denom[b] (1 / denom[b]
// without weights), divided by count(x_i) with scale_grad_by_freq, rounded to float once; for
// sum without weights or counts the value is g[b] itself. The Grad sums each row's entries in
// this order (core/grad.h).
void weighted_bags_weight_grad_plain(const BagSaved& s, std::span<const std::int64_t> counts, const float* g,
                                     GradSink& sink) {
  const auto width = static_cast<std::size_t>(s.dim);
  const bool unit = s.mode == BagMode::Sum && s.psw.empty() && !s.scale_grad_by_freq;
  std::vector<std::int64_t> rows;
  std::vector<float> values;
  for (std::size_t b = 0; b + 1 < s.bounds.size(); ++b) {
    if (s.denom[b] == 0.0) continue;
    const float* gb = g + b * width;
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (is_pad(s.pad, s.input[i])) continue;
      rows.push_back(s.input[i]);
      if (unit) {
        values.insert(values.end(), gb, gb + width);
        continue;
      }
      double c = s.psw.empty() ? 1.0 / s.denom[b] : static_cast<double>(s.psw[i]) / s.denom[b];
      if (s.scale_grad_by_freq) c /= static_cast<double>(counts[i]);
      const auto cf = static_cast<float>(c);
      for (std::size_t d = 0; d < width; ++d) values.push_back(cf * gb[d]);
    }
  }
  sink.add_rows(0, rows, values, s.sparse);
}

// The kernels' view of the bags (ops/kernels/embedding_kernels.h).
kernels::Bags bags_view(const BagSaved& s, std::span<const std::int64_t> input) {
  return kernels::Bags{.mode = s.mode, .dim = s.dim, .pad = s.pad, .input = input, .bounds = s.bounds};
}

// ---- backward --------------------------------------------------------------------------------

// dW[r] += Σ_{i: x_i = r} c_i g[bag(i)], c_i = w_i / denom[b] (times 1/count(x_i) with
// scale_grad_by_freq), over the non-padding positions of bags with a gradient. Fast path: the
// positions grouped by row (one deferred sum per unique row) or, for a small dense table,
// summed through GradSink::add_lookup; the same bits.
void weighted_bags_weight_grad(const BagSaved& s, const Tensor& g, GradSink& sink) {
  const std::vector<std::int64_t> counts =
      s.scale_grad_by_freq ? detail::index_counts(s.input) : std::vector<std::int64_t>{};
  if (reference_kernels()) {
    weighted_bags_weight_grad_plain(s, counts, g.data(), sink);
    return;
  }
  kernels::weighted_bags_backward(sink, bags_view(s, s.input), s.denom, s.psw, counts, g, s.num_rows, s.sparse);
}

// Exact derivatives of the three weighted formulas, with dot_i = <g[b], W[x_i]>:
//   sum    dpsw_i = dot_i
//   mean   dpsw_i = (dot_i - <g[b], out[b]>) / S,      <g[b], out[b]> = Σ_j w_j dot_j / S
//   sqrtn  dpsw_i = dot_i / Q - w_i Σ_j w_j dot_j / Q³
// Padding positions, positions in no bag and bags without gradient get 0.
void weighted_bags_psw_grad(const BagSaved& s, const float* g, GradSink& sink) {
  const auto width = static_cast<std::size_t>(s.dim);
  const float* w = s.weight.data();
  std::vector<float> dpsw(s.input.size(), 0.0f);
  std::vector<double> dots;
  for (std::size_t b = 0; b + 1 < s.bounds.size(); ++b) {
    if (s.denom[b] == 0.0) continue;
    const float* gb = g + b * width;
    const auto lo = static_cast<std::size_t>(s.bounds[b]);
    const auto hi = static_cast<std::size_t>(s.bounds[b + 1]);
    dots.assign(hi - lo, 0.0);
    double weighted = 0.0;  // Σ_j w_j dot_j
    for (std::size_t i = lo; i < hi; ++i) {
      if (is_pad(s.pad, s.input[i])) continue;
      const float* row = w + static_cast<std::size_t>(s.input[i]) * width;
      double dot = 0.0;
      for (std::size_t d = 0; d < width; ++d) dot += static_cast<double>(gb[d]) * row[d];
      dots[i - lo] = dot;
      weighted += static_cast<double>(s.psw[i]) * dot;
    }
    const double den = s.denom[b];
    for (std::size_t i = lo; i < hi; ++i) {
      if (is_pad(s.pad, s.input[i])) continue;
      const double dot = dots[i - lo];
      double v = dot;
      if (s.mode == BagMode::Mean) v = (dot - weighted / den) / den;
      if (s.mode == BagMode::Sqrtn) v = dot / den - static_cast<double>(s.psw[i]) * weighted / (den * den * den);
      dpsw[i] = static_cast<float>(v);
    }
  }
  sink.add(1, Tensor(s.psw_shape, std::move(dpsw)));
}

// dW[argmax(b,d), d] += g[b,d]. Entries are grouped per bag by distinct argmax row, so a bag
// sends at most min(D, bag length) rows.
void max_bags_weight_grad(const BagSaved& s, const float* g, GradSink& sink) {
  const auto width = static_cast<std::size_t>(s.dim);
  std::vector<std::int64_t> rows;
  std::vector<float> values;
  for (std::size_t b = 0; b + 1 < s.bounds.size(); ++b) {
    const std::size_t first = rows.size();
    for (std::size_t d = 0; d < width; ++d) {
      const std::int64_t r = s.argmax[b * width + d];
      if (r < 0) continue;
      std::size_t e = first;
      while (e < rows.size() && rows[e] != r) ++e;
      if (e == rows.size()) {
        rows.push_back(r);
        values.resize(values.size() + width, 0.0f);
      }
      values[e * width + d] += g[b * width + d];
    }
  }
  sink.add_rows(0, rows, values, false);
}

void embedding_bag_backward(const BagSaved& s, const Tensor& grad_out, GradSink& sink) {
  const float* g = grad_out.data();
  if (s.mode == BagMode::Max) {
    if (sink.wants(0)) max_bags_weight_grad(s, g, sink);
    return;
  }
  if (sink.wants(0)) weighted_bags_weight_grad(s, grad_out, sink);
  if (sink.wants(1)) weighted_bags_psw_grad(s, g, sink);
}

// ---- the shared body of both forms, after every check passed ----------------------------------

Tensor embedding_bag_impl(const IndexTensor& input, std::vector<std::int64_t> bounds, const Tensor& weight,
                          const EmbeddingBagOptions& o, std::optional<std::int64_t> pad, const Tensor& psw) {
  detail::check_index_range(kOp, "input", input, weight.size(0));
  // Every argument is valid: from here on the call succeeds and may write.
  if (o.max_norm) detail::renorm_rows(weight, input.values(), *o.max_norm, o.norm_type);

  BagSaved s;
  s.mode = o.mode;
  s.dim = weight.size(1);
  s.num_rows = weight.size(0);
  s.pad = pad;
  s.scale_grad_by_freq = o.scale_grad_by_freq;
  s.sparse = o.sparse;
  s.bounds = std::move(bounds);
  const auto num_bags = static_cast<std::int64_t>(s.bounds.size()) - 1;
  Tensor out = Tensor::empty({num_bags, s.dim});  // every kernel writes every row
  const float* w = weight.data();
  const float* psw_data = psw.defined() ? psw.data() : nullptr;
  if (reference_kernels()) {  // the plain loops above
    if (o.mode == BagMode::Max) max_bags_forward_plain(s, input.data(), w, out.data(), s.argmax, will_record({weight}));
    else weighted_bags_forward_plain(s, input.data(), w, psw_data, out.data(), s.denom);
  } else {  // the fast kernels (ops/kernels/bags.cpp), the same bits
    const kernels::Bags bags = bags_view(s, input.values());
    if (o.mode == BagMode::Max) kernels::max_bags_forward(bags, w, out.data(), s.argmax, will_record({weight}));
    else kernels::weighted_bags_forward(bags, w, psw_data, out.data(), s.denom);
  }

  if (!will_record({weight, psw})) {  // a forward-only call never copies the indices
    check_forward(kOp, {weight, psw}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
    return out;
  }
  s.input.assign(input.values().begin(), input.values().end());  // the caller's may be gone by backward
  if (psw.defined()) {
    s.psw = psw.to_vector();
    s.psw_shape = psw.shape();
  }
  // The psw gradient reads the table: only then is the weight saved (and version-checked).
  const bool psw_grad = psw.defined() && psw.requires_grad();
  if (psw_grad) s.weight = weight.detach();
  const Tensor saved[] = {weight};
  const Tensor inputs[] = {weight, psw};
  record("embedding_bag", inputs, out,
         [s = std::move(s)](const Tensor& g, GradSink& sink) { embedding_bag_backward(s, g, sink); },
         psw_grad ? std::span<const Tensor>(saved) : std::span<const Tensor>());
  return out;
}

}  // namespace

Tensor embedding_bag(const IndexTensor& input, const IndexTensor& offsets, const Tensor& weight,
                     const EmbeddingBagOptions& options, const Tensor& per_sample_weights) {
  detail::check_weight_2d(kOp, weight);
  if (RowSharding* sharding = sharding_of(weight)) {  // rows on several processes: ops/sharding.h
    auto checks = [&]() {
      check_form_with_offsets(input);
      check_rank(input);
      auto pad = check_options(options, sharding->num_rows(), input, per_sample_weights);
      bounds_from_offsets(offsets, input.numel(), options.include_last_offset);
      detail::check_index_range(kOp, "input", input, sharding->num_rows());
      return pad;
    };
    auto run = [&](const IndexTensor& ids, const Tensor& rows, std::optional<std::int64_t> pad) {
      return embedding_bag(ids, offsets, rows, local_options(options, pad), per_sample_weights);
    };
    return detail::sharded_lookup(kOp, *sharding, weight, input, options.max_norm, options.norm_type, options.sparse,
                                  checks, run);
  }
  check_form_with_offsets(input);
  check_rank(input);
  const auto pad = check_options(options, weight.size(0), input, per_sample_weights);
  auto bounds = bounds_from_offsets(offsets, input.numel(), options.include_last_offset);
  return embedding_bag_impl(input, std::move(bounds), weight, options, pad, per_sample_weights);
}

Tensor embedding_bag(const IndexTensor& input, const Tensor& weight, const EmbeddingBagOptions& options,
                     const Tensor& per_sample_weights) {
  detail::check_weight_2d(kOp, weight);
  if (RowSharding* sharding = sharding_of(weight)) {  // rows on several processes: ops/sharding.h
    auto checks = [&]() {
      check_form_without_offsets(input);
      check_rank(input);
      auto pad = check_options(options, sharding->num_rows(), input, per_sample_weights);
      detail::check_index_range(kOp, "input", input, sharding->num_rows());
      return pad;
    };
    auto run = [&](const IndexTensor& ids, const Tensor& rows, std::optional<std::int64_t> pad) {
      return embedding_bag(ids, rows, local_options(options, pad), per_sample_weights);
    };
    return detail::sharded_lookup(kOp, *sharding, weight, input, options.max_norm, options.norm_type, options.sparse,
                                  checks, run);
  }
  check_form_without_offsets(input);
  check_rank(input);
  const auto pad = check_options(options, weight.size(0), input, per_sample_weights);
  // One bag per row; include_last_offset does not apply (PyTorch 1.13 drops the last row here).
  const std::int64_t num_bags = input.size(0);
  const std::int64_t length = input.size(1);
  std::vector<std::int64_t> bounds(static_cast<std::size_t>(num_bags) + 1);
  for (std::size_t b = 0; b < bounds.size(); ++b) bounds[b] = static_cast<std::int64_t>(b) * length;
  return embedding_bag_impl(input, std::move(bounds), weight, options, pad, per_sample_weights);
}

}  // namespace hitch
