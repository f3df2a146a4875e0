// hitch/nn/linear.cpp: Linear (see linear.h).
#include "nn/linear.h"

#include <cmath>

#include "ops/ops.h"

namespace hitch::nn {

Linear::Linear(std::int64_t in, std::int64_t out, bool with_bias, Generator& gen)
    : in_features(in), out_features(out) {
  if (in < 0 || out < 0)
    throw Error(fmt::format("Linear: in_features and out_features must be >= 0, got {} and {}", in, out));
  // 1/sqrt(fan_in); with no inputs PyTorch leaves the bound at 0 rather than dividing by zero.
  const float bound = in > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(in))) : 0.0f;
  weight = Parameter("weight", Tensor::uniform({out, in}, -bound, bound, gen));
  if (with_bias) bias = Parameter("bias", Tensor::uniform({out}, -bound, bound, gen));
}

Tensor Linear::forward(const Tensor& x) const {
  if (x.dim() != 2 || x.size(1) != in_features)
    throw Error(fmt::format("Linear: expected input of shape [B,{}], got {}", in_features, shape_str(x.shape())));
  Tensor y = matmul(x, weight, false, true);  // [B,in] x [out,in]^T -> [B,out]
  return bias.defined() ? add(y, bias) : y;
}

void Linear::members(Members& m) const {
  m.param("weight", weight);
  if (bias.defined()) m.param("bias", bias);
}

}  // namespace hitch::nn
