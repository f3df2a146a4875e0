// hitch/nn/linear.h: Linear, the affine layer y = x W^T + b.
//
// Shapes: weight [out, in], bias [out], x [B, in] -> [B, out]. forward is matmul(x, weight,
// transpose_b = true) (one sgemm, no transposed copy of W) plus bias broadcast over rows.
// Initialisation is PyTorch's: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)]
// (kaiming_uniform with a = sqrt(5) gives that bound), weight drawn first, then bias.
// Left out: inputs of rank other than 2 (reshape to [B, in] first).
#pragma once

#include <cstdint>

#include "core/parameter.h"
#include "core/tensor.h"
#include "nn/module.h"

namespace hitch::nn {

// Requires: in_features >= 0, out_features >= 0 (checked; hitch::Error otherwise).
// Ensures: weight is a Parameter named "weight" of shape [out, in]; bias, when requested, a
// Parameter named "bias" of shape [out], otherwise undefined. Both are listed by parameters().
// A Linear owns its Parameters by handle: share one with another module by copying the
// Parameter (tying), never by copying the module (modules are not copyable).
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Generator& gen = default_generator());

  // x [B, in] -> [B, out]. Throws hitch::Error naming both shapes if x is not [B, in].
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  void members(Members& m) const override;

  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  Parameter weight;  // [out, in]
  Parameter bias;    // [out], or undefined without bias
};

}  // namespace hitch::nn
