// hitch/nn/embedding.h: the Embedding and EmbeddingBag modules, thin holders of one Parameter
// and the options of ops/embedding.h.
//
// Weight tying is the reason these exist in hitch: build both modules around ONE Parameter
//
//   nn::Embedding emb(1000, 64);
//   nn::EmbeddingBag bag(emb.weight, {.mode = BagMode::Sum});
//
// and both lookups add into that Parameter's one gradient, and a module holding both lists it
// once. Parameter is a shared handle, so `bag.weight` IS `emb.weight` (same identity), not a
// second Parameter over the same storage (PyTorch's `EmbeddingBag.from_pretrained(emb.weight)`
// pitfall; see Parameter::alias_of). Left out on purpose: dtypes and devices, state dicts.
#pragma once

#include <cstdint>

#include <hitch/core/parameter.h>
#include <hitch/nn/module.h>
#include <hitch/ops/embedding.h>

namespace hitch::nn {

// A lookup table [num_embeddings, embedding_dim].
// Requires: weight 2-D; options.padding_idx in [-N, N) (stored normalised to [0, N)); max_norm,
// if set, > 0; not sparse together with scale_grad_by_freq. Checked at construction (hitch::Error).
// Ensures: forward(indices) == embedding(indices, weight, options); parameters() == {weight}.
class Embedding : public Module {
 public:
  // Fresh table: N(0, 1) from gen, the padding row (if any) set to zero. The Parameter is
  // named "weight".
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, EmbeddingOptions options = {},
            Generator& gen = default_generator());
  // Around an existing Parameter (the tie): no copy, no rename, and the padding row is NOT
  // zeroed (as PyTorch's _weight path).
  explicit Embedding(Parameter weight, EmbeddingOptions options = {});
  // Copies values into a NEW Parameter "weight" with requires_grad = !freeze. Unlike PyTorch
  // (whose module weight aliases the given tensor's storage), later writes to either side are
  // not seen by the other. To share a table, pass the Parameter itself to the constructor above.
  static Embedding from_pretrained(const Tensor& values, bool freeze = true, EmbeddingOptions options = {});

  Tensor forward(const IndexTensor& indices) const;
  Tensor operator()(const IndexTensor& indices) const { return forward(indices); }

  // Throw hitch::Error if weight was replaced by one that is not 2-D (or an empty handle).
  std::int64_t num_embeddings() const;
  std::int64_t embedding_dim() const;
  void members(Members& m) const override { m.param("weight", weight); }

  Parameter weight;
  EmbeddingOptions options;
};

// A lookup table reduced per bag (sum, mean, max, sqrtn). Same contract as Embedding, plus:
// max mode rejects sparse and scale_grad_by_freq at construction (PyTorch: at forward).
// Ensures: forward(...) == embedding_bag(..., weight, options, per_sample_weights).
class EmbeddingBag : public Module {
 public:
  // Fresh table as Embedding. The default mode is mean, as in PyTorch.
  EmbeddingBag(std::int64_t num_embeddings, std::int64_t embedding_dim, EmbeddingBagOptions options = {},
               Generator& gen = default_generator());
  explicit EmbeddingBag(Parameter weight, EmbeddingBagOptions options = {});
  static EmbeddingBag from_pretrained(const Tensor& values, bool freeze = true, EmbeddingBagOptions options = {});

  // 1-D input [L] with offsets, or 2-D input [B, L] (one bag per row).
  Tensor forward(const IndexTensor& input, const IndexTensor& offsets, const Tensor& per_sample_weights = {}) const;
  Tensor forward(const IndexTensor& input, const Tensor& per_sample_weights = {}) const;
  Tensor operator()(const IndexTensor& input, const IndexTensor& offsets, const Tensor& per_sample_weights = {}) const {
    return forward(input, offsets, per_sample_weights);
  }
  Tensor operator()(const IndexTensor& input, const Tensor& per_sample_weights = {}) const {
    return forward(input, per_sample_weights);
  }

  // Throw hitch::Error if weight was replaced by one that is not 2-D (or an empty handle).
  std::int64_t num_embeddings() const;
  std::int64_t embedding_dim() const;
  void members(Members& m) const override { m.param("weight", weight); }

  Parameter weight;
  EmbeddingBagOptions options;
};

}  // namespace hitch::nn
