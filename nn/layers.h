// hitch/nn/layers.h: the small modules models are built from, and Sequential to chain them.
//
//   nn::Sequential mlp(nn::Linear(4, 8), nn::ReLU(), nn::Dropout(0.1f), nn::Linear(8, 2));
//   Tensor y = mlp(x);        // children in order; children are named "0", "1", ... (torch)
//   mlp.eval();               // reaches every child (Module::train walks members())
//
// Each module is a thin holder of an op of ops/ops.h (dropout, layer_norm, relu, gelu, tanh):
// forward(x) == op(x, options). Left out on purpose: named children (torch's OrderedDict form),
// insert/erase, modules with more than one input.
#pragma once

#include <concepts>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>
#include <hitch/nn/module.h>

namespace hitch::nn {

// An ordered list of TensorModules, applied one after the other (an empty Sequential returns
// its input). Owns its children: they are moved in, never copied, so a child built around a
// shared Parameter (Linear(emb.weight)) keeps the tie. parameters() lists each Parameter once
// as for every Module. Requires: no null child (checked, hitch::Error).
// Note: a single Sequential argument is a move (the move constructor), not nesting; nest with
// push_back / append or among other arguments. When every argument is a default-constructed
// temporary, use braces: `nn::Sequential s{nn::ReLU(), nn::Tanh()};` (with parentheses C++
// reads a function declaration).
class Sequential : public TensorModule {
 public:
  Sequential() = default;
  template <class... M>
    requires(sizeof...(M) > 0 && (std::derived_from<std::remove_cvref_t<M>, TensorModule> && ...) &&
             (!std::is_lvalue_reference_v<M> && ...) &&
             !(sizeof...(M) == 1 && (std::same_as<std::remove_cvref_t<M>, Sequential> && ...)))
  explicit Sequential(M&&... modules) {
    (children_.push_back(std::make_unique<std::remove_cvref_t<M>>(std::move(modules))), ...);
  }

  Sequential& push_back(std::unique_ptr<TensorModule> module);
  template <class M>
    requires(std::derived_from<std::remove_cvref_t<M>, TensorModule> && !std::is_lvalue_reference_v<M>)
  Sequential& append(M&& module) {
    return push_back(std::make_unique<std::remove_cvref_t<M>>(std::move(module)));
  }

  Tensor forward(const Tensor& x) const override;
  std::size_t size() const { return children_.size(); }
  // The child at i; throws hitch::Error if i >= size().
  TensorModule& operator[](std::size_t i) const;
  void members(Members& m) const override;

 private:
  std::vector<std::unique_ptr<TensorModule>> children_;
};

// dropout(x, p, is_training(), gen): p in [0, 1] (checked at construction). Draws from gen,
// which must outlive the module (the default: this thread's default_generator()).
class Dropout : public TensorModule {
 public:
  explicit Dropout(float p = 0.5f, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) const override;
  void members(Members&) const override {}
  float p() const { return p_; }

 private:
  float p_;
  Generator* gen_;
};

// layer_norm(x, normalized_shape, weight, bias, eps). With elementwise_affine: Parameters
// "weight" (ones) and "bias" (zeros) of shape normalized_shape, as torch.nn.LayerNorm; without:
// none. Requires (checked at construction): normalized_shape of rank >= 1 with sizes >= 0,
// eps finite and > 0.
class LayerNorm : public TensorModule {
 public:
  explicit LayerNorm(Shape normalized_shape, float eps = 1e-5f, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) const override;
  void members(Members& m) const override;

  Shape normalized_shape;
  float eps;
  Parameter weight;  // normalized_shape, or undefined
  Parameter bias;    // normalized_shape, or undefined
};

class ReLU : public TensorModule {
 public:
  Tensor forward(const Tensor& x) const override;
  void members(Members&) const override {}
};

class Tanh : public TensorModule {
 public:
  Tensor forward(const Tensor& x) const override;
  void members(Members&) const override {}
};

// gelu(x, approximate): "none" (erf) or "tanh" (checked at construction).
class GELU : public TensorModule {
 public:
  explicit GELU(std::string_view approximate = "none");
  Tensor forward(const Tensor& x) const override;
  void members(Members&) const override {}
  const std::string& approximate() const { return approximate_; }

 private:
  std::string approximate_;
};

}  // namespace hitch::nn
