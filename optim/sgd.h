// hitch/optim/sgd.h: stochastic gradient descent with momentum, dampening, Nesterov, L2 weight
// decay and maximize (PyTorch 1.13's SGD, formulas in docs/optim.md).
//
//   d = maximize ? -g : g;  d += wd * p;
//   momentum: b = (first step) d  |  mu * b + (1 - dampening) * d;  d = nesterov ? d + mu * b : b
//   p -= lr * d
//
// Sparse (row) gradients: without momentum only the rows present in the (coalesced) gradient
// change; with momentum the buffer is dense and the result is exactly the dense one (PyTorch
// keeps a sparse buffer with the same values). weight_decay with a sparse gradient is an error,
// as in PyTorch.
#pragma once

#include <optional>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

struct SGDOptions {
  double lr = 1e-3;  // PyTorch 1.13 requires lr; 2.x defaults it to 1e-3, as here
  double momentum = 0.0;      // finite, >= 0
  double dampening = 0.0;     // in [0, 1] (PyTorch takes any value)
  double weight_decay = 0.0;  // finite, >= 0
  bool nesterov = false;  // requires momentum > 0 and dampening = 0
  bool maximize = false;
};

struct SGDState {
  std::vector<float> momentum_buffer;  // empty until the first step with momentum > 0
  // Set by step() when it allocates the buffer, cleared by the update that first writes it
  // (b = d at that step). Not part of the saved state.
  bool buffer_unset = false;

  // The checkpoint's view (see OptimizerWith::export_state).
  template <class Self, class F>
  static void for_each_field(Self& s, F&& f) {
    f("momentum_buffer", s.momentum_buffer, FieldKind::OptionalBuffer, FieldValues::Finite);
  }
};

// Contract: each Parameter given once (see optimizer.h). step() updates each Parameter that has
// a gradient, in place; state (the momentum buffer) is keyed by Parameter identity.
class SGD : public OptimizerWith<SGDOptions, SGDState> {
 public:
  SGD(const std::vector<Parameter>& params, const SGDOptions& options = {});
  explicit SGD(std::vector<ParamGroup<SGDOptions>> groups);

 protected:
  void check_options(const SGDOptions& o, const std::string& where) const override;
  void check_step() const override;
  std::optional<SGDState> prepare_param(const Parameter& p, const SGDOptions& o,
                                        const SGDState* current) const override;
  void update() override;
};

}  // namespace hitch::optim
