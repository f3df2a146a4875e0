// hitch/optim/adam.h: Adam (L2 weight decay folded into the gradient) and AdamW (decoupled decay
// applied to p before the update), PyTorch 1.13's single-tensor path (docs/optim.md).
//
//   t += 1;  g = maximize ? -g : g;  Adam: g += wd * p  |  AdamW: p *= 1 - lr * wd
//   m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g;  amsgrad: vmax = max(vmax, v)
//   p -= (lr / bc1) * m / (sqrt(v or vmax) / sqrt(bc2) + eps),  bc_i = 1 - b_i^t (in double)
//
// eps is added AFTER dividing by sqrt(bc2) (SparseAdam differs). amsgrad keeps the max of the raw
// v and bias-corrects it with the current bc2.
// Sparse gradients: PyTorch refuses them; hitch runs the exact dense math on them (rows absent
// from the gradient have g = 0, so their moments decay and they keep moving), without building a
// dense gradient. For lazy updates of only the touched rows use SparseAdam.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

struct AdamOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2: added to the gradient
  bool amsgrad = false;
  bool maximize = false;
};

struct AdamWOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled; note the default differs from Adam's
  bool amsgrad = false;
  bool maximize = false;
};

struct AdamState {
  std::int64_t step = 0;
  std::vector<float> exp_avg;         // m
  std::vector<float> exp_avg_sq;      // v
  std::vector<float> max_exp_avg_sq;  // vmax, amsgrad only (empty otherwise)

  // The checkpoint's view (see OptimizerWith::export_state).
  template <class Self, class F>
  static void for_each_field(Self& s, F&& f) {
    f("step", s.step, FieldKind::Count, FieldValues::Finite);
    f("exp_avg", s.exp_avg, FieldKind::Buffer, FieldValues::Finite);
    f("exp_avg_sq", s.exp_avg_sq, FieldKind::Buffer, FieldValues::NonNegative);
    f("max_exp_avg_sq", s.max_exp_avg_sq, FieldKind::OptionalBuffer, FieldValues::NonNegative);
  }
};

// Contract: each Parameter given once (see optimizer.h). step() updates each Parameter that has
// a gradient once and advances its own t; state is created at its first step with a gradient.
class Adam : public OptimizerWith<AdamOptions, AdamState> {
 public:
  Adam(const std::vector<Parameter>& params, const AdamOptions& options = {});
  explicit Adam(std::vector<ParamGroup<AdamOptions>> groups);

 protected:
  void check_options(const AdamOptions& o, const std::string& where) const override;
  void check_step() const override { check_all_options(); }
  std::optional<AdamState> prepare_param(const Parameter& p, const AdamOptions& o,
                                         const AdamState* current) const override;
  void update() override;
};

class AdamW : public OptimizerWith<AdamWOptions, AdamState> {
 public:
  AdamW(const std::vector<Parameter>& params, const AdamWOptions& options = {});
  explicit AdamW(std::vector<ParamGroup<AdamWOptions>> groups);

 protected:
  void check_options(const AdamWOptions& o, const std::string& where) const override;
  void check_step() const override { check_all_options(); }
  std::optional<AdamState> prepare_param(const Parameter& p, const AdamWOptions& o,
                                         const AdamState* current) const override;
  void update() override;
};

}  // namespace hitch::optim
