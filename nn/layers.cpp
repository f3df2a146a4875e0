// hitch/nn/layers.cpp: Sequential, Dropout, LayerNorm, ReLU, Tanh, GELU (see layers.h).
#include <hitch/nn/layers.h>

#include <cmath>

#include <hitch/ops/ops.h>

namespace hitch::nn {

Sequential& Sequential::push_back(std::unique_ptr<TensorModule> module) {
  if (!module)
    throw Error(fmt::format("Sequential::push_back: the module is a null pointer (position {})", children_.size()));
  children_.push_back(std::move(module));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) const {
  Tensor y = x;
  for (const auto& child : children_) y = child->forward(y);
  return y;
}

TensorModule& Sequential::operator[](std::size_t i) const {
  if (i >= children_.size())
    throw Error(fmt::format("Sequential: index {} is out of range for {} modules (valid: [0, {}))", i,
                            children_.size(), children_.size()));
  return *children_[i];
}

void Sequential::members(Members& m) const {
  for (std::size_t i = 0; i < children_.size(); ++i) m.module(std::to_string(i), *children_[i]);
}

Dropout::Dropout(float p, Generator& gen) : p_(p), gen_(&gen) {
  if (!(p >= 0.0f && p <= 1.0f)) throw Error(fmt::format("Dropout: p must be in [0, 1], got {}", p));
}

Tensor Dropout::forward(const Tensor& x) const { return dropout(x, p_, is_training(), *gen_); }

LayerNorm::LayerNorm(Shape shape, float eps_, bool elementwise_affine) : normalized_shape(std::move(shape)), eps(eps_) {
  if (normalized_shape.empty()) throw Error("LayerNorm: normalized_shape must have at least one dim, got []");
  if (!(std::isfinite(eps) && eps > 0.0f)) throw Error(fmt::format("LayerNorm: eps must be finite and > 0, got {}", eps));
  if (elementwise_affine) {
    weight = Parameter("weight", Tensor::ones(normalized_shape));  // checks the sizes ("Tensor::ones: ...")
    bias = Parameter("bias", Tensor::zeros(normalized_shape));
  } else {
    checked_numel("LayerNorm", normalized_shape);  // the same check, with no Parameter to make
  }
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, normalized_shape, weight.defined() ? weight.value() : Tensor(),
                    bias.defined() ? bias.value() : Tensor(), eps);
}

void LayerNorm::members(Members& m) const {
  m.param("weight", weight);
  m.param("bias", bias);
}

Tensor ReLU::forward(const Tensor& x) const { return relu(x); }
Tensor Tanh::forward(const Tensor& x) const { return tanh(x); }

GELU::GELU(std::string_view approximate) : approximate_(approximate) {
  if (approximate != "none" && approximate != "tanh")
    throw Error(fmt::format("GELU: approximate must be \"none\" or \"tanh\", got \"{}\"", approximate));
}

Tensor GELU::forward(const Tensor& x) const { return gelu(x, approximate_); }

}  // namespace hitch::nn
