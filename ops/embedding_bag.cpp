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
// Deliberate differences from PyTorch 1.13 are listed in docs/embedding.md (scale_grad_by_freq
// counts over the whole input; 2-D input ignores include_last_offset; strict offsets checks;
// weighted mean and sqrtn; NaN in max propagates).
#include <algorithm>
#include <cmath>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/embedding.h>
#include <hitch/ops/embedding_detail.h>

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
  const std::int64_t* forward_input = nullptr;  // the caller's indices, read by the forward only
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
std::optional<std::int64_t> check_options(const EmbeddingBagOptions& o, const Tensor& weight,
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
  return detail::normalise_padding_idx(kOp, o.padding_idx, weight.size(0));
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

// ---- forward kernels -------------------------------------------------------------------------

// Bags are split over threads (contiguous chunks of bags, each bag reduced by one thread in
// position order, so any thread count gives the same bits); rows are prefetched kAhead
// positions ahead.
constexpr std::size_t kAhead = 32;

template <class BagFn>
void for_each_bag_chunk(const BagSaved& s, BagFn&& fn) {
  const std::size_t num_bags = s.bounds.size() - 1;
  const auto width = static_cast<std::size_t>(s.dim);
  const auto positions = static_cast<std::size_t>(s.bounds.back());
  const std::size_t per_bag = width * std::max<std::size_t>(1, positions / std::max<std::size_t>(1, num_bags));
  parallel_for(num_bags, detail::min_chunk_for(per_bag), fn);
}

// Runs kernel.template operator()<W>() with W = the row width when it is one of the common
// widths (the row loops then have a constant trip count: fully unrolled, no per-row loop
// overhead), W = 0 otherwise (the kernel reads the width at run time).
template <class Kernel>
void with_width(std::int64_t width, Kernel&& kernel) {
  switch (width) {
    case 16: kernel.template operator()<16>(); return;
    case 32: kernel.template operator()<32>(); return;
    case 64: kernel.template operator()<64>(); return;
    case 128: kernel.template operator()<128>(); return;
    default: kernel.template operator()<0>();
  }
}

// sum / mean / sqrtn over bags [b0, b1). out is zero-filled [B, D]; denom[b] gets the bag's
// divisor (1 for sum), or 0 when the bag has no gradient (no non-padding entry, or a zero
// divisor). With a constant width W the bag's sum lives in a local array (registers), not in
// out: the same additions in the same order, without a load and store of out per row.
template <std::size_t W>
[[gnu::always_inline]] inline void weighted_bags_chunk(const BagSaved& s, const float* w, const float* psw, float* out,
                                                       double* denom, std::size_t b0, std::size_t b1) {
  const std::size_t width = W != 0 ? W : static_cast<std::size_t>(s.dim);
  const std::int64_t* x = s.forward_input;
  const auto end = static_cast<std::size_t>(s.bounds[b1]);  // prefetch no further than this chunk
  for (std::size_t b = b0; b < b1; ++b) {
    float* ob = out + b * width;
    float local[W != 0 ? W : 1] = {};
    float* sum = W != 0 ? local : ob;
    if (W == 0) std::fill(ob, ob + width, 0.0f);  // out is not zero-filled (Tensor::empty)
    double acc = 0.0;  // Σ w (mean) or Σ w² (sqrtn)
    std::int64_t n = 0;
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (i + kAhead < end) prefetch_row_w<W>(w, x[i + kAhead], width);
      const std::int64_t r = x[i];
      if (is_pad(s.pad, r)) continue;
      const float* row = w + static_cast<std::size_t>(r) * width;
      ++n;
      if (psw) {
        const float wi = psw[i];
        acc += s.mode == BagMode::Sqrtn ? static_cast<double>(wi) * wi : static_cast<double>(wi);
        for (std::size_t d = 0; d < width; ++d) sum[d] += wi * row[d];
      } else {
        acc += 1.0;
        for (std::size_t d = 0; d < width; ++d) sum[d] += row[d];
      }
    }
    if (n == 0) {  // empty or all padding: zero row, no gradient
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    if (s.mode == BagMode::Sum) {
      denom[b] = 1.0;
      if (W != 0) std::copy_n(sum, width, ob);
      continue;
    }
    const double den = s.mode == BagMode::Mean ? acc : std::sqrt(acc);
    if (den == 0.0) {  // weighted mean with Σ w = 0, or sqrtn with all weights 0: defined as 0
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    denom[b] = den;
    const auto fden = static_cast<float>(den);
    for (std::size_t d = 0; d < width; ++d) ob[d] = sum[d] / fden;
  }
}

// Compiled for AVX2 and baseline x86-64 (same bits: adds and divisions only, no FMA), so a table
// that sits in cache is read at cache speed.
HITCH_TARGET_CLONES void weighted_bags_chunk_any(const BagSaved& s, const float* w, const float* psw, float* out,
                                                 double* denom, std::size_t b0, std::size_t b1) {
  switch (s.dim) {
    case 16: weighted_bags_chunk<16>(s, w, psw, out, denom, b0, b1); return;
    case 32: weighted_bags_chunk<32>(s, w, psw, out, denom, b0, b1); return;
    case 64: weighted_bags_chunk<64>(s, w, psw, out, denom, b0, b1); return;
    case 128: weighted_bags_chunk<128>(s, w, psw, out, denom, b0, b1); return;
    default: weighted_bags_chunk<0>(s, w, psw, out, denom, b0, b1);
  }
}

void weighted_bags_forward(const BagSaved& s, const float* w, const float* psw, float* out, std::vector<double>& denom) {
  denom.assign(s.bounds.size() - 1, 0.0);
  for_each_bag_chunk(s, [&](std::size_t b0, std::size_t b1) {
    weighted_bags_chunk_any(s, w, psw, out, denom.data(), b0, b1);
  });
}

// max: per feature, the first candidate sets the running max, a later one replaces it only when
// strictly greater (ties -> earliest) or when it is NaN and the running max is not (so a NaN
// anywhere wins and the first NaN gets the gradient). The update is branch-free so it
// vectorises. argmax ([B, D], -1 for empty bags) is filled only when with_argmax (a backward
// will need it), by a second pass over the bag's rows (in cache by then): the first position
// whose value equals the max (or is NaN when the max is NaN) is the one that set it.
template <std::size_t W>
void max_bags_forward_w(const BagSaved& s, const float* w, float* out, std::vector<std::int64_t>& argmax,
                        bool with_argmax) {
  const std::size_t width = W != 0 ? W : static_cast<std::size_t>(s.dim);
  if (with_argmax) argmax.assign((s.bounds.size() - 1) * width, -1);
  const std::int64_t* x = s.forward_input;
  for_each_bag_chunk(s, [&](std::size_t b0, std::size_t b1) {
    const auto end = static_cast<std::size_t>(s.bounds[b1]);
    for (std::size_t b = b0; b < b1; ++b) {
      float* ob = out + b * width;
      const auto lo = static_cast<std::size_t>(s.bounds[b]);
      const auto hi = static_cast<std::size_t>(s.bounds[b + 1]);
      bool first = true;
      for (std::size_t i = lo; i < hi; ++i) {
        if (i + kAhead < end) prefetch_row_w<W>(w, x[i + kAhead], width);
        if (is_pad(s.pad, x[i])) continue;
        const float* row = w + static_cast<std::size_t>(x[i]) * width;
        if (first) {
          std::copy_n(row, width, ob);
          first = false;
          continue;
        }
        for (std::size_t d = 0; d < width; ++d) {
          const float v = row[d];
          const float o = ob[d];
          const bool take = (v > o) | ((v != v) & (o == o));
          ob[d] = take ? v : o;
        }
      }
      if (first) std::fill(ob, ob + width, 0.0f);  // empty or all padding: zero row
      if (!with_argmax || first) continue;
      std::int64_t* ab = argmax.data() + b * width;
      for (std::size_t i = lo; i < hi; ++i) {
        if (is_pad(s.pad, x[i])) continue;
        const float* row = w + static_cast<std::size_t>(x[i]) * width;
        for (std::size_t d = 0; d < width; ++d)
          if (ab[d] < 0 && (row[d] == ob[d] || (std::isnan(ob[d]) && std::isnan(row[d])))) ab[d] = x[i];
      }
    }
  });
}

void max_bags_forward(const BagSaved& s, const float* w, float* out, std::vector<std::int64_t>& argmax,
                      bool with_argmax) {
  with_width(s.dim, [&]<std::size_t W>() { max_bags_forward_w<W>(s, w, out, argmax, with_argmax); });
}

// ---- backward --------------------------------------------------------------------------------

// dW[r] += Σ_{i: x_i = r} c_i g[bag(i)], c_i = w_i / denom[b] (times 1/count(x_i) with
// scale_grad_by_freq), over the non-padding positions of bags with a gradient. Grouped by row
// first (ops/embedding_kernels.cpp): the Grad receives one entry per unique row, rows sorted;
// for a small table with a dense gradient, Grad::add_lookup sums rows in a scratch instead of
// sorting (the same bits).
void weighted_bags_weight_grad(const BagSaved& s, const Tensor& g, GradSink& sink) {
  const auto width = static_cast<std::size_t>(s.dim);
  const std::vector<std::int64_t> counts =
      s.scale_grad_by_freq ? detail::index_counts(s.input) : std::vector<std::int64_t>{};
  // c_i = 1 exactly for sum without weights or frequency scaling: no coefficient array then.
  const bool unit = s.mode == BagMode::Sum && s.psw.empty() && !s.scale_grad_by_freq;
  std::vector<std::uint32_t> positions;
  positions.reserve(s.input.size());
  std::vector<std::uint32_t> bag_of(s.input.size());
  std::vector<float> coef(unit ? 0 : s.input.size());
  for (std::size_t b = 0; b + 1 < s.bounds.size(); ++b) {
    if (s.denom[b] == 0.0) continue;
    const double unweighted = 1.0 / s.denom[b];  // the same bits as dividing per position
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (is_pad(s.pad, s.input[i])) continue;
      positions.push_back(static_cast<std::uint32_t>(i));
      bag_of[i] = static_cast<std::uint32_t>(b);
      if (unit) continue;
      double c = s.psw.empty() ? unweighted : static_cast<double>(s.psw[i]) / s.denom[b];
      if (s.scale_grad_by_freq) c /= static_cast<double>(counts[i]);
      coef[i] = static_cast<float>(c);
    }
  }
  if (!s.sparse && sink.takes_lookup(0)) {  // a small dense table: no sort (same bits)
    sink.add_lookup(0, Lookup{.keys = s.input, .positions = positions, .g = g.data(), .width = width, .src = bag_of,
                              .coef = coef});
    return;
  }
  detail::RowGroups groups = detail::group_by_row(s.input, std::move(positions), s.num_rows);
  sink.add_rows(0, detail::reduce_rows(std::move(groups), g, width, std::move(bag_of), std::move(coef)), s.sparse);
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
  s.forward_input = input.data();
  s.bounds = std::move(bounds);
  const auto num_bags = static_cast<std::int64_t>(s.bounds.size()) - 1;
  Tensor out = Tensor::empty({num_bags, s.dim});  // every kernel writes every row
  if (o.mode == BagMode::Max) {
    max_bags_forward(s, weight.data(), out.data(), s.argmax, will_record({weight}));
  } else {
    weighted_bags_forward(s, weight.data(), psw.defined() ? psw.data() : nullptr, out.data(), s.denom);
  }

  if (!will_record({weight, psw})) {  // a forward-only call never copies the indices
    check_forward(kOp, {weight, psw}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
    return out;
  }
  s.input.assign(input.values().begin(), input.values().end());
  s.forward_input = nullptr;  // the caller's indices may be gone by the time backward runs
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
  if (input.dim() == 2)
    throw Error(fmt::format("{}: input is 2-D (shape {}), so offsets must not be given: each row is one bag (use "
                            "the overload without offsets)",
                            kOp, shape_str(input.shape())));
  check_rank(input);
  const auto pad = check_options(options, weight, input, per_sample_weights);
  auto bounds = bounds_from_offsets(offsets, input.numel(), options.include_last_offset);
  return embedding_bag_impl(input, std::move(bounds), weight, options, pad, per_sample_weights);
}

Tensor embedding_bag(const IndexTensor& input, const Tensor& weight, const EmbeddingBagOptions& options,
                     const Tensor& per_sample_weights) {
  detail::check_weight_2d(kOp, weight);
  if (input.dim() == 1)
    throw Error(fmt::format("{}: input is 1-D (shape {}) but no offsets were given: pass offsets for 1-D input, "
                            "or a 2-D input [B, L] with one bag per row",
                            kOp, shape_str(input.shape())));
  check_rank(input);
  const auto pad = check_options(options, weight, input, per_sample_weights);
  // One bag per row; include_last_offset does not apply (PyTorch 1.13 drops the last row here).
  const std::int64_t num_bags = input.size(0);
  const std::int64_t length = input.size(1);
  std::vector<std::int64_t> bounds(static_cast<std::size_t>(num_bags) + 1);
  for (std::size_t b = 0; b < bounds.size(); ++b) bounds[b] = static_cast<std::int64_t>(b) * length;
  return embedding_bag_impl(input, std::move(bounds), weight, options, pad, per_sample_weights);
}

}  // namespace hitch
