// hitch/ops/embedding.cpp: embedding (a row gather) and its backward, plus the argument checks
// and max_norm renormalisation shared with embedding_bag (ops/embedding_detail.h).
//
//   weight [N, D], indices of any shape S -> out [S..., D],  out[s] = weight[indices[s]]
//
// Semantics are PyTorch 1.13's F.embedding (REFERENCE §1): padding_idx does not change the
// forward (the stored row is returned) but that row gets no gradient; max_norm renormalises the
// referenced rows in place before the lookup; scale_grad_by_freq divides row r's gradient by
// r's count in the whole index tensor. Left out on purpose: index dtypes other than int64,
// weight dtypes other than float32, double backward.
//
// The plain loops here (gather_rows_plain, the reference backward) are the definition and run
// when reference_kernels() (core/runtime/path.h); otherwise the fast kernels behind
// ops/kernels/embedding_kernels.h run, with the same bits.
//
// The backward saves only the indices and the table's row count, never the weight: an optimizer
// step (or another max_norm lookup) between forward and backward is therefore allowed, unlike
// PyTorch 1.13, whose node saves the whole weight (REFERENCE 1.5 calls this an allowed
// improvement).
#include <algorithm>
#include <cmath>
#include <limits>

#include <hitch/core/anomaly.h>
#include <hitch/core/runtime/path.h>
#include <hitch/core/tape.h>
#include <hitch/ops/embedding.h>
#include <hitch/ops/embedding_detail.h>
#include <hitch/ops/sharding.h>
#include <hitch/ops/kernels/embedding_kernels.h>

namespace hitch {

// ---- shared checks and renormalisation (ops/embedding_detail.h) --------------------------------

namespace detail {

void check_bag_mode(std::string_view op, BagMode mode) {
  switch (mode) {
    case BagMode::Sum:
    case BagMode::Mean:
    case BagMode::Max:
    case BagMode::Sqrtn: return;
  }
  throw Error(fmt::format("{}: mode = {} is not a BagMode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)", op,
                          static_cast<int>(mode)));
}

void check_weight_2d(std::string_view op, const Tensor& weight) {
  if (!weight.defined()) throw Error(fmt::format("{}: weight is an undefined Tensor", op));
  if (weight.dim() != 2)
    throw Error(fmt::format("{}: weight must be 2-D [num_embeddings, embedding_dim], but has shape {}", op,
                            shape_str(weight.shape())));
}

std::optional<std::int64_t> normalise_padding_idx(std::string_view op, std::optional<std::int64_t> padding_idx,
                                                  std::int64_t num_rows) {
  if (!padding_idx) return std::nullopt;
  const std::int64_t p = *padding_idx;
  if (p < -num_rows || p >= num_rows)
    throw Error(fmt::format("{}: padding_idx = {} is out of range for a table of {} rows (valid: [{}, {}))", op, p,
                            num_rows, -num_rows, num_rows));
  return p < 0 ? p + num_rows : p;
}

void check_max_norm(std::string_view op, std::optional<float> max_norm, float norm_type) {
  if (max_norm && !(*max_norm > 0.0f))
    throw Error(fmt::format("{}: max_norm must be > 0, but is {}", op, *max_norm));
  if (max_norm && !(norm_type > 0.0f))
    throw Error(fmt::format("{}: norm_type must be > 0 (inf allowed), but is {}", op, norm_type));
}

static std::string position_str(const Shape& shape, std::int64_t flat) {
  if (shape.size() <= 1) return shape.empty() ? "" : fmt::format("[{}]", flat);
  std::vector<std::int64_t> pos(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    pos[d] = flat % shape[d];
    flat /= shape[d];
  }
  return fmt::format("[{}]", fmt::join(pos, ","));
}

void check_index_range(std::string_view op, std::string_view what, const IndexTensor& indices, std::int64_t num_rows) {
  constexpr std::int64_t kMaxIndices = std::numeric_limits<std::uint32_t>::max();  // the backward's sort keys
  if (indices.numel() > kMaxIndices)
    throw Error(fmt::format("{}: {} has {} entries, more than the {} supported", op, what, indices.numel(), kMaxIndices));
  const std::int64_t* x = indices.data();
  for (std::int64_t i = 0; i < indices.numel(); ++i)
    if (x[i] < 0 || x[i] >= num_rows)
      throw Error(fmt::format("{}: {}{} = {} is out of range for a table of {} rows (valid: [0, {}))", op, what,
                              position_str(indices.shape(), i), x[i], num_rows, num_rows));
}

static double row_norm(const float* row, std::int64_t width, float p) {
  double acc = 0.0;
  if (std::isinf(p)) {
    for (std::int64_t d = 0; d < width; ++d) acc = std::max(acc, std::abs(static_cast<double>(row[d])));
    return acc;
  }
  if (p == 1.0f) {
    for (std::int64_t d = 0; d < width; ++d) acc += std::abs(static_cast<double>(row[d]));
    return acc;
  }
  if (p == 2.0f) {
    for (std::int64_t d = 0; d < width; ++d) acc += static_cast<double>(row[d]) * row[d];
    return std::sqrt(acc);
  }
  for (std::int64_t d = 0; d < width; ++d) acc += std::pow(std::abs(static_cast<double>(row[d])), static_cast<double>(p));
  return std::pow(acc, 1.0 / static_cast<double>(p));
}

void renorm_rows(const Tensor& weight, std::span<const std::int64_t> indices, float max_norm, float norm_type) {
  std::vector<std::int64_t> rows(indices.begin(), indices.end());
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());  // a repeated row is scaled once
  const std::int64_t width = weight.size(1);
  float* w = weight.impl().storage->data.data();
  for (const std::int64_t r : rows) {
    float* row = w + r * width;
    // The norm in the weight's dtype (float), the scale in double rounded to float, the multiply
    // in float: PyTorch's recipe, bit for bit.
    const auto norm = static_cast<float>(row_norm(row, width, norm_type));
    if (!(norm > max_norm)) continue;  // a norm exactly max_norm is left alone
    const auto scale = static_cast<float>(static_cast<double>(max_norm) / (static_cast<double>(norm) + 1e-7));
    for (std::int64_t d = 0; d < width; ++d) row[d] *= scale;
  }
  ++weight.impl().storage->version;  // on every call, as PyTorch: a saved weight is now stale
}

std::vector<std::int64_t> index_counts(std::span<const std::int64_t> indices) {
  std::vector<std::int64_t> sorted(indices.begin(), indices.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int64_t> counts(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const auto [lo, hi] = std::equal_range(sorted.begin(), sorted.end(), indices[i]);
    counts[i] = hi - lo;
  }
  return counts;
}

}  // namespace detail

// ---- embedding -------------------------------------------------------------------------------

namespace {

// What embedding_backward needs: values only (no tensor handles, so no reference cycle and no
// version hazard).
struct EmbeddingSaved {
  std::vector<std::int64_t> indices;  // flattened
  std::int64_t dim = 0;
  std::int64_t num_rows = 0;
  std::optional<std::int64_t> pad;    // normalised
  bool scale_grad_by_freq = false;
  bool sparse = false;
};

// The forward as a plain loop (the reference path): out[i] = weight[indices[i]], D floats each.
void gather_rows_plain(const float* w, std::span<const std::int64_t> indices, std::size_t width, float* out) {
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(w + static_cast<std::size_t>(indices[i]) * width, width, out + i * width);  // not memcpy: null for D = 0
}

// dW[r] += Σ_{i: x_i = r, x_i != pad} g_i * s(x_i), s = 1 or 1/count(x_i).
// Reference path: one entry per non-padding position, in position order (row x_i, value
// s(x_i) * g_i, or g_i itself without scale_grad_by_freq); the Grad sums each row's entries in
// that order (core/grad.h). Fast path (ops/kernels/rows.cpp): the positions grouped by row by a
// radix sort, so the Grad receives one deferred sum per unique row, rows sorted; a small dense
// table skips the sort (GradSink::add_lookup). The same bits.
void embedding_backward(const EmbeddingSaved& s, const Tensor& grad_out, GradSink& sink) {
  if (!sink.wants(0)) return;
  const auto width = static_cast<std::size_t>(s.dim);
  std::vector<float> coef;  // s(x_i), only with scale_grad_by_freq
  if (s.scale_grad_by_freq) {
    const std::vector<std::int64_t> counts = detail::index_counts(s.indices);
    coef.resize(s.indices.size());
    for (std::size_t i = 0; i < coef.size(); ++i) coef[i] = 1.0f / static_cast<float>(counts[i]);
  }
  if (!reference_kernels()) {
    kernels::embedding_backward(sink, s.indices, s.pad, grad_out, width, std::move(coef), s.num_rows, s.sparse);
    return;
  }
  const float* g = grad_out.data();
  std::vector<std::int64_t> rows;
  std::vector<float> values;
  for (std::size_t i = 0; i < s.indices.size(); ++i) {
    if (s.pad && s.indices[i] == *s.pad) continue;
    rows.push_back(s.indices[i]);
    const float* gi = g + i * width;
    if (coef.empty()) values.insert(values.end(), gi, gi + width);
    else for (std::size_t d = 0; d < width; ++d) values.push_back(coef[i] * gi[d]);
  }
  sink.add_rows(0, rows, values, s.sparse);
}

}  // namespace

Tensor embedding(const IndexTensor& indices, const Tensor& weight, const EmbeddingOptions& options) {
  constexpr std::string_view op = "embedding";
  // 1. Check everything; nothing is written before the last check.
  detail::check_weight_2d(op, weight);
  auto check = [&](std::int64_t n) {  // n: the table's rows (the whole table's, when sharded)
    auto pad = detail::normalise_padding_idx(op, options.padding_idx, n);
    detail::check_max_norm(op, options.max_norm, options.norm_type);
    if (options.sparse && options.scale_grad_by_freq)
      throw Error(fmt::format("{}: scale_grad_by_freq is not supported with sparse gradients (sparse = true)", op));
    detail::check_index_range(op, "indices", indices, n);
    return pad;
  };
  if (RowSharding* sharding = sharding_of(weight)) {  // rows on several processes: ops/sharding.h
    auto run = [&](const IndexTensor& ids, const Tensor& rows, std::optional<std::int64_t> pad) {
      EmbeddingOptions local = options;
      local.padding_idx = pad;
      local.max_norm.reset();  // the owners applied it
      return embedding(ids, rows, local);
    };
    return detail::sharded_lookup(op, *sharding, weight, indices, options.max_norm, options.norm_type, options.sparse,
                                  [&] { return check(sharding->num_rows()); }, run);
  }
  const std::int64_t num_rows = weight.size(0);
  const std::int64_t dim = weight.size(1);
  const std::optional<std::int64_t> pad = check(num_rows);

  // 2. max_norm: renormalise the referenced rows in place (no gradient flows through this).
  if (options.max_norm) detail::renorm_rows(weight, indices.values(), *options.max_norm, options.norm_type);

  // 3. Gather.
  Shape out_shape = indices.shape();
  out_shape.push_back(dim);
  Tensor out = Tensor::empty(std::move(out_shape));
  if (reference_kernels()) gather_rows_plain(weight.data(), indices.values(), static_cast<std::size_t>(dim), out.data());
  else kernels::gather_rows(weight.data(), indices.values(), static_cast<std::size_t>(dim), out.data());  // ops/kernels/rows.cpp

  // 4. Record: the backward keeps the indices, never the weight.
  if (!will_record({weight})) {
    check_forward("embedding", {weight}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
    return out;
  }
  EmbeddingSaved saved{.indices = {indices.values().begin(), indices.values().end()},
                       .dim = dim,
                       .num_rows = num_rows,
                       .pad = pad,
                       .scale_grad_by_freq = options.scale_grad_by_freq,
                       .sparse = options.sparse};
  record("embedding", {weight}, out,
         [s = std::move(saved)](const Tensor& g, GradSink& sink) { embedding_backward(s, g, sink); });
  return out;
}

}  // namespace hitch
