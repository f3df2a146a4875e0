// hitch/core/gradcheck.h: compares analytic gradients with central finite differences.
//
// For f(inputs) -> out, the checked scalar is L = sum(out * R) with R a fixed random tensor
// (so every output element matters), evaluated in double from float32 outputs. For every
// element x of every input that requires grad: numeric = (L(x+eps) - L(x-eps)) / (2 eps);
// analytic = the gradient backward() accumulates. It fails when
// |analytic - numeric| > atol + rtol * |numeric|. The defaults are PyTorch's float32 settings;
// they catch a missing factor of 2 or a missing term for values of order one.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <hitch/core/tensor.h>

namespace hitch {

struct GradcheckOptions {
  double eps = 1e-3;
  double atol = 1e-3;
  double rtol = 1e-2;
  std::uint64_t seed = 1234;  // for R
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // on failure: the op, the input, the element and both values
  int checked = 0;      // number of input elements compared
};

// inputs: leaves; those with requires_grad are checked (their values are restored afterwards
// and their gradients left as they were).
GradcheckResult gradcheck(std::string_view op, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace hitch
