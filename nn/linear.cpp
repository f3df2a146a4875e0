// hitch/nn/linear.cpp: Linear (see linear.h).
#include <hitch/nn/linear.h>

#include <cmath>

#include <hitch/ops/ops.h>

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

Linear::Linear(Parameter w, Parameter b) {
  if (!w.defined()) throw Error("Linear: the weight Parameter is an empty handle");
  if (w.shape().size() != 2)
    throw Error(fmt::format("Linear: weight must be 2-D [out_features, in_features], but has shape {}",
                            shape_str(w.shape())));
  if (b.defined() && b.shape() != Shape{w.shape()[0]})
    throw Error(fmt::format("Linear: bias must have shape [{}] (out_features of weight {}), but has shape {}",
                            w.shape()[0], shape_str(w.shape()), shape_str(b.shape())));
  out_features = w.shape()[0];
  in_features = w.shape()[1];
  weight = std::move(w);
  bias = std::move(b);
}

Tensor Linear::forward(const Tensor& x) const {
  if (!weight.defined())  // a moved-from Linear (its Parameters went with the move)
    throw Error("Linear: the weight Parameter is an empty handle (was this Linear moved from?)");
  if (x.dim() == 0 || x.size(-1) != in_features)
    throw Error(fmt::format("Linear: expected input of shape [*,{}] (any leading dims), got {}", in_features,
                            shape_str(x.shape())));
  const bool flat = x.dim() == 2;
  Shape lead(x.shape().begin(), x.shape().end() - 1);
  std::int64_t rows = 1;
  for (std::int64_t s : lead) rows *= s;
  const Tensor x2 = flat ? x : reshape(x, {rows, in_features});
  Tensor y = matmul(x2, weight, false, true);  // [N,in] x [out,in]^T -> [N,out]
  if (bias.defined()) y = add(y, bias);
  if (flat) return y;
  lead.push_back(out_features);
  return reshape(y, lead);
}

void Linear::members(Members& m) const {
  m.param("weight", weight);
  if (bias.defined()) m.param("bias", bias);
}

}  // namespace hitch::nn
