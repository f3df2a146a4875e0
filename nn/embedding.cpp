// hitch/nn/embedding.cpp: Embedding and EmbeddingBag construction (see nn/embedding.h).
// Every option is checked before the generator is drawn from, so a rejected construction
// leaves the generator's state as it was.
#include <hitch/nn/embedding.h>

#include <algorithm>

#include <hitch/ops/embedding_detail.h>
#include <hitch/ops/sharding.h>

namespace hitch::nn {

namespace {

void check_sizes(std::string_view who, std::int64_t num_embeddings, std::int64_t embedding_dim) {
  if (num_embeddings < 0) throw Error(fmt::format("{}: num_embeddings must be >= 0, but is {}", who, num_embeddings));
  if (embedding_dim < 0) throw Error(fmt::format("{}: embedding_dim must be >= 0, but is {}", who, embedding_dim));
  (void)checked_numel(who, {num_embeddings, embedding_dim});  // the table within the per-tensor limit
}

// The checks of the functional form that do not depend on the input, done once up front.
// Returns the options with padding_idx normalised to [0, N).
EmbeddingOptions checked(std::string_view who, EmbeddingOptions o, std::int64_t num_rows) {
  o.padding_idx = detail::normalise_padding_idx(who, o.padding_idx, num_rows);
  detail::check_max_norm(who, o.max_norm, o.norm_type);
  if (o.sparse && o.scale_grad_by_freq)
    throw Error(fmt::format("{}: scale_grad_by_freq is not supported with sparse gradients (sparse = true)", who));
  return o;
}

EmbeddingBagOptions checked(std::string_view who, EmbeddingBagOptions o, std::int64_t num_rows) {
  detail::check_bag_mode(who, o.mode);
  o.padding_idx = detail::normalise_padding_idx(who, o.padding_idx, num_rows);
  detail::check_max_norm(who, o.max_norm, o.norm_type);
  if (o.mode == BagMode::Max && o.scale_grad_by_freq)
    throw Error(fmt::format("{}: scale_grad_by_freq is not supported with mode max", who));
  if (o.mode == BagMode::Max && o.sparse)
    throw Error(fmt::format("{}: sparse gradients are not supported with mode max", who));
  if (o.sparse && o.scale_grad_by_freq)
    throw Error(fmt::format("{}: scale_grad_by_freq is not supported with sparse gradients (sparse = true)", who));
  return o;
}

// N(0, 1) values with the padding row zeroed: PyTorch's reset_parameters.
Parameter fresh_table(std::int64_t num_embeddings, std::int64_t embedding_dim, std::optional<std::int64_t> pad,
                      Generator& gen) {
  Tensor values = Tensor::randn({num_embeddings, embedding_dim}, gen);
  if (pad) std::fill_n(values.data() + *pad * embedding_dim, embedding_dim, 0.0f);
  return Parameter("weight", values);
}

const Parameter& checked_weight(std::string_view who, const Parameter& weight) {
  if (!weight.defined()) throw Error(fmt::format("{}: the weight Parameter is an empty handle", who));
  detail::check_weight_2d(who, weight.value());
  return weight;
}

Parameter copied_table(std::string_view who, const Tensor& values, bool freeze) {
  if (!values.defined() || values.dim() != 2)
    throw Error(fmt::format("{}: embeddings must be 2-D [num_embeddings, embedding_dim], but has shape {}", who,
                            values.defined() ? shape_str(values.shape()) : "(undefined)"));
  Parameter p("weight", values);  // a copy: see from_pretrained in nn/embedding.h
  p.set_requires_grad(!freeze);
  return p;
}

}  // namespace

// ---- Embedding -------------------------------------------------------------------------------

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, EmbeddingOptions opts, Generator& gen)
    : options((check_sizes("Embedding", num_embeddings, embedding_dim), checked("Embedding", opts, num_embeddings))) {
  weight = fresh_table(num_embeddings, embedding_dim, options.padding_idx, gen);
}

Embedding::Embedding(Parameter w, EmbeddingOptions opts)
    : weight(checked_weight("Embedding", w)), options(checked("Embedding", opts, table_rows(w))) {}

Embedding Embedding::from_pretrained(const Tensor& values, bool freeze, EmbeddingOptions opts) {
  return Embedding(copied_table("Embedding.from_pretrained", values, freeze), opts);
}

Tensor Embedding::forward(const IndexTensor& indices) const { return embedding(indices, weight, options); }

// weight is a public member: it may have been replaced by anything since construction.
std::int64_t Embedding::num_embeddings() const { return table_rows(checked_weight("Embedding", weight)); }
std::int64_t Embedding::embedding_dim() const { return checked_weight("Embedding", weight).shape()[1]; }

// ---- EmbeddingBag ----------------------------------------------------------------------------

EmbeddingBag::EmbeddingBag(std::int64_t num_embeddings, std::int64_t embedding_dim, EmbeddingBagOptions opts,
                           Generator& gen)
    : options((check_sizes("EmbeddingBag", num_embeddings, embedding_dim),
               checked("EmbeddingBag", opts, num_embeddings))) {
  weight = fresh_table(num_embeddings, embedding_dim, options.padding_idx, gen);
}

EmbeddingBag::EmbeddingBag(Parameter w, EmbeddingBagOptions opts)
    : weight(checked_weight("EmbeddingBag", w)), options(checked("EmbeddingBag", opts, table_rows(w))) {}

EmbeddingBag EmbeddingBag::from_pretrained(const Tensor& values, bool freeze, EmbeddingBagOptions opts) {
  return EmbeddingBag(copied_table("EmbeddingBag.from_pretrained", values, freeze), opts);
}

Tensor EmbeddingBag::forward(const IndexTensor& input, const IndexTensor& offsets,
                             const Tensor& per_sample_weights) const {
  return embedding_bag(input, offsets, weight, options, per_sample_weights);
}

Tensor EmbeddingBag::forward(const IndexTensor& input, const Tensor& per_sample_weights) const {
  return embedding_bag(input, weight, options, per_sample_weights);
}

std::int64_t EmbeddingBag::num_embeddings() const { return table_rows(checked_weight("EmbeddingBag", weight)); }
std::int64_t EmbeddingBag::embedding_dim() const { return checked_weight("EmbeddingBag", weight).shape()[1]; }

}  // namespace hitch::nn
