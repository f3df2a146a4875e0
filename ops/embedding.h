// hitch/ops/embedding.h: embedding and embedding_bag, PyTorch's semantics with its bugs fixed
// (see docs/embedding.md and shared REFERENCE §1-2).
//
//   embedding:      weight [N,D], indices of any shape S            -> [S..., D]
//   embedding_bag:  weight [N,D], input [L] + offsets [B] (1-D form) -> [B,D]
//                   weight [N,D], input [B,L], no offsets (2-D form)  -> [B,D]
//
// Gradients go to weight's rows only (GradSink::add_rows): dense by default, row-sparse with
// .sparse = true. Every argument is validated before anything is written, so a rejected call
// with max_norm has renormalised nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <hitch/core/tensor.h>

namespace hitch {

struct EmbeddingOptions {
  std::optional<std::int64_t> padding_idx{};  // none, or in [-N, N) (negative counts from the end)
  std::optional<float> max_norm{};            // renormalise looked-up rows in place; must be > 0
  float norm_type = 2.0f;                     // p of the p-norm for max_norm (inf allowed)
  bool scale_grad_by_freq = false;            // divide row r's gradient by r's count in indices
  bool sparse = false;                        // row-sparse gradient for weight
};

Tensor embedding(const IndexTensor& indices, const Tensor& weight, const EmbeddingOptions& options = {});

// sum, mean, max as in PyTorch; sqrtn (TensorFlow's combiner): sum of w*row / sqrt(sum of w^2).
enum class BagMode { Sum, Mean, Max, Sqrtn };
BagMode parse_bag_mode(std::string_view name);  // "sum", "mean", "max", "sqrtn"
std::string_view to_string(BagMode mode);

struct EmbeddingBagOptions {
  BagMode mode = BagMode::Mean;  // PyTorch's default
  std::optional<std::int64_t> padding_idx{};
  std::optional<float> max_norm{};
  float norm_type = 2.0f;
  bool scale_grad_by_freq = false;   // sum, mean, sqrtn; count over the whole input
  bool include_last_offset = false;  // 1-D form: offsets has B+1 entries, the last one ends bag B-1
  bool sparse = false;
};

// 1-D form. per_sample_weights: undefined, or a tensor of input's shape (modes sum, mean as a
// weighted mean, sqrtn); it gets its own gradient when it requires grad.
Tensor embedding_bag(const IndexTensor& input, const IndexTensor& offsets, const Tensor& weight,
                     const EmbeddingBagOptions& options = {}, const Tensor& per_sample_weights = {});
// 2-D form: one bag per row of input.
Tensor embedding_bag(const IndexTensor& input, const Tensor& weight, const EmbeddingBagOptions& options = {},
                     const Tensor& per_sample_weights = {});

}  // namespace hitch
