// hitch/optim/adagrad.h: Adagrad with lr_decay, L2 weight decay, initial accumulator and
// maximize (PyTorch 1.13, docs/optim.md).
//
//   t += 1;  g = maximize ? -g : g;  g += wd * p
//   clr = lr / (1 + (t - 1) * lr_decay);  S += g * g;  p -= clr * g / (sqrt(S) + eps)
//
// The state (t and S = initial_accumulator_value everywhere) is created eagerly, when a
// Parameter joins (constructor or add_param_group), as in PyTorch; unlike PyTorch, a group
// added later gets its state too (PyTorch: KeyError 'sum', issue #53712).
// Sparse gradients are coalesced first (duplicates summed BEFORE squaring) and only their rows
// of S and p change, which equals the dense result. weight_decay with a sparse gradient is an
// error, as in PyTorch.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  bool maximize = false;
};

struct AdagradState {
  std::int64_t step = 0;
  std::vector<float> sum;  // S

  // The checkpoint's view (see OptimizerWith::export_state).
  template <class Self, class F>
  static void for_each_field(Self& s, F&& f) {
    f("step", s.step, FieldKind::Count, FieldValues::Finite);
    f("sum", s.sum, FieldKind::Buffer, FieldValues::NonNegative);
  }
};

// Contract: each Parameter given once (see optimizer.h). step() updates each Parameter that has
// a gradient once and advances its t; a Parameter without a gradient keeps t.
class Adagrad : public OptimizerWith<AdagradOptions, AdagradState> {
 public:
  Adagrad(const std::vector<Parameter>& params, const AdagradOptions& options = {});
  explicit Adagrad(std::vector<ParamGroup<AdagradOptions>> groups);

 protected:
  void check_options(const AdagradOptions& o, const std::string& where) const override;
  void initial_state(const ParamGroup<AdagradOptions>& group, StateMap& out) const override;
  void check_step() const override;
  std::optional<AdagradState> prepare_param(const Parameter& p, const AdagradOptions& o,
                                            const AdagradState* current) const override;
  void update() override;
};

}  // namespace hitch::optim
