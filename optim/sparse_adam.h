// hitch/optim/sparse_adam.h: SparseAdam, PyTorch's "lazy Adam" for row-sparse gradients
// (embedding lookups with .sparse = true). docs/optim.md has the formulas.
//
// Per step, with g coalesced (duplicate rows summed) and R its rows, t counted per Parameter:
//   t += 1;  for r in R:  m[r] += (1-b1) * (g[r] - m[r]);  v[r] += (1-b2) * (g[r]^2 - v[r])
//                         p[r] -= lr * sqrt(1-b2^t)/(1-b1^t) * m[r] / (sqrt(v[r]) + eps)
// Rows not in R: m, v and p untouched (no decay of their moments). A row present with zero
// values still moves. eps is added to the raw sqrt(v) (Adam adds it after bias correction).
// An empty sparse gradient (every index was padding) advances t and changes nothing else
// (PyTorch 1.13 crashes there, issue #82486). A dense gradient is an error, checked for every
// Parameter before anything is written. No weight decay (PyTorch has none either).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

struct SparseAdamOptions {
  double lr = 1e-3;  // must be > 0 at construction (>= 0 later, for LR schedules)
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;  // must be > 0
  bool maximize = false;
};

struct SparseAdamState {
  std::int64_t step = 0;
  std::vector<float> exp_avg;     // m, dense [rows, D]
  std::vector<float> exp_avg_sq;  // v, dense [rows, D]

  // The checkpoint's view (see OptimizerWith::export_state).
  template <class Self, class F>
  static void for_each_field(Self& s, F&& f) {
    f("step", s.step, FieldKind::Count, FieldValues::Finite);
    f("exp_avg", s.exp_avg, FieldKind::Buffer, FieldValues::Finite);
    f("exp_avg_sq", s.exp_avg_sq, FieldKind::Buffer, FieldValues::NonNegative);
  }
};

// Contract: each Parameter given once and of rank >= 1 (rows). step() requires every gradient
// present to be row-sparse; it touches only the gradient's rows.
class SparseAdam : public OptimizerWith<SparseAdamOptions, SparseAdamState> {
 public:
  SparseAdam(const std::vector<Parameter>& params, const SparseAdamOptions& options = {});
  explicit SparseAdam(std::vector<ParamGroup<SparseAdamOptions>> groups);

 protected:
  void check_options(const SparseAdamOptions& o, const std::string& where) const override;
  void check_group(const ParamGroup<SparseAdamOptions>& group, const std::string& where) const override;
  void check_step() const override;
  std::optional<SparseAdamState> prepare_param(const Parameter& p, const SparseAdamOptions& o,
                                               const SparseAdamState* current) const override;
  void update() override;
};

}  // namespace hitch::optim
