// hitch/nn/linear.h: Linear, the affine layer y = x W^T + b.
//
// Shapes: weight [out, in], bias [out], x [*, in] -> [*, out] (any number of leading dims,
// also none: [in] -> [out]). forward views x as [N, in] (a reshape, which copies), calls
// matmul(x, weight, transpose_b = true) (one sgemm, no transposed copy of W), adds bias
// broadcast over rows and reshapes to [*, out]; a 2-D x skips both reshapes.
// Initialisation is PyTorch's: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)]
// (kaiming_uniform with a = sqrt(5) gives that bound), weight drawn first, then bias.
//
// Tying an output projection to an embedding table (Press & Wolf 2017):
//
//   nn::Embedding emb(V, D);
//   nn::Linear head(emb.weight);   // weight [V, D]: in = D, out = V, no bias
//
// head.weight IS emb.weight (one Parameter, one gradient, listed once).
#pragma once

#include <cstdint>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>
#include <hitch/nn/module.h>

namespace hitch::nn {

// Requires: in_features >= 0, out_features >= 0 (checked; hitch::Error otherwise).
// Ensures: weight is a Parameter named "weight" of shape [out, in]; bias, when requested, a
// Parameter named "bias" of shape [out], otherwise undefined. Both are listed by parameters().
// A Linear owns its Parameters by handle: share one with another module by copying the
// Parameter (tying), never by copying the module (modules are not copyable).
class Linear : public TensorModule {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Generator& gen = default_generator());
  // Around existing Parameters (the tie): no copy, no rename, nothing drawn. Requires weight
  // 2-D [out, in] and bias undefined or [out] (checked; hitch::Error naming the shapes).
  // in_features and out_features are read from weight.
  explicit Linear(Parameter weight, Parameter bias = {});

  // x [*, in] -> [*, out]. Throws hitch::Error naming both shapes if x's last dim is not in
  // (or x is a scalar).
  Tensor forward(const Tensor& x) const override;

  void members(Members& m) const override;

  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  Parameter weight;  // [out, in]
  Parameter bias;    // [out], or undefined without bias
};

}  // namespace hitch::nn
