// hitch/optim/sparse_adam.cpp: SparseAdam (see sparse_adam.h). Element order follows PyTorch
// 1.13's sparse_adam in float32: the moments are updated in the "old += (1-b)(new-old)" form,
// and p gets (m / (sqrt(v) + eps)) * (-step_size). Only the gradient's rows are read or written.
#include <hitch/optim/sparse_adam.h>

#include <cmath>

#include <fmt/format.h>

namespace hitch::optim {

namespace {

struct SparseAdamScalars {
  float sign, one_minus_beta1, one_minus_beta2, eps, neg_step;
};

// Bound by sqrt/division throughput: compiled for AVX2 and baseline (same bits, see optimizer.h).
HITCH_TARGET_CLONES void sparse_adam_kernel(float* p, const float* g, float* m, float* v, std::size_t n,
                                            const SparseAdamScalars& s) {
  for (std::size_t i = 0; i < n; ++i) {
    const float gi = g[i] * s.sign;
    const float m_old = m[i];
    const float v_old = v[i];
    const float m_upd = (gi - m_old) * s.one_minus_beta1;
    const float v_upd = (gi * gi - v_old) * s.one_minus_beta2;
    m[i] = m_old + m_upd;
    v[i] = v_old + v_upd;
    const float den = std::sqrt(v_upd + v_old) + s.eps;
    p[i] = p[i] + (m_upd + m_old) / den * s.neg_step;
  }
}

}  // namespace

SparseAdam::SparseAdam(const std::vector<Parameter>& params, const SparseAdamOptions& options)
    : OptimizerWith("SparseAdam") {
  install(params, options);
}
SparseAdam::SparseAdam(std::vector<ParamGroup<SparseAdamOptions>> groups) : OptimizerWith("SparseAdam") {
  install(std::move(groups));
}

void SparseAdam::check_options(const SparseAdamOptions& o, const std::string& where) const {
  // lr > 0 when built (PyTorch's rule); a schedule may later take it down to 0.
  check_hyper(name(), "lr", o.lr, constructed_ ? kNonNegative : kPositive, where);
  check_hyper(name(), "eps", o.eps, kPositive, where);
  check_hyper(name(), "betas[0]", o.betas.first, kUnitInterval, where);
  check_hyper(name(), "betas[1]", o.betas.second, kUnitInterval, where);
}

void SparseAdam::check_group(const ParamGroup<SparseAdamOptions>& group, const std::string& where) const {
  for (std::size_t i = 0; i < group.params.size(); ++i)
    if (group.params[i].shape().empty())
      throw Error(fmt::format("SparseAdam: Parameter {} (position {}) has shape [], but SparseAdam needs a "
                              "Parameter with rows (rank >= 1){}",
                              param_label(group.params[i]), i, where));
}

std::optional<SparseAdamState> SparseAdam::prepare_param(const Parameter& p, const SparseAdamOptions&,
                                                         const SparseAdamState* current) const {
  step_grad(p)->prepare_walk();  // the fused row walk (a no-op for an empty gradient)
  if (current != nullptr) return std::nullopt;
  const auto numel = static_cast<std::size_t>(p.numel());
  return SparseAdamState{0, std::vector<float>(numel), std::vector<float>(numel)};
}

namespace {
// What a dense gradient's refusal says: which node made it dense (Grad::dense_op) and what to do.
// A lookup with sparse = false can be made sparse; any other op (a tied output projection's
// matmul reads every row) makes the gradient dense by nature, so only Adam fits.
std::string dense_gradient_advice(const Grad& grad) {
  const std::string& op = grad.dense_op();
  if (op.empty())
    return ", but SparseAdam does not support dense gradients; please consider Adam instead (or make every lookup of "
           "this Parameter sparse: .sparse = true)";
  if (op == "embedding" || op == "embedding_bag")
    return fmt::format(", made dense by node #{} ({}: a lookup with sparse = false), but SparseAdam does not support "
                       "dense gradients; make that lookup sparse (.sparse = true) or use Adam instead",
                       grad.dense_node(), op);
  return fmt::format(", made dense by node #{} ({}), but SparseAdam does not support dense gradients; a {} gives every "
                     "row a gradient, so this one is dense by nature (a tied output projection is): use Adam instead",
                     grad.dense_node(), op, op);
}
}  // namespace

void SparseAdam::check_step() const {
  check_all_options();
  for (std::size_t gi = 0; gi < groups_.size(); ++gi)
    for (const Parameter& p : groups_[gi].params) {
      const Grad* grad = step_grad(p);  // a frozen Parameter is skipped, whatever its gradient
      if (grad != nullptr && !grad->empty() && !grad->is_sparse())
        throw Error(fmt::format("SparseAdam: Parameter {}{} has a dense gradient{}", param_label(p),
                                group_suffix(gi), dense_gradient_advice(*grad)));
    }
}

void SparseAdam::update() {
  for (auto& group : groups_) {
    const SparseAdamOptions& o = group.options;
    for (Parameter& p : group.params) {
      Grad* grad = step_grad(p);
      if (grad == nullptr) continue;
      SparseAdamState& st = state_at(p);  // made by prepare_param
      st.step += 1;  // per Parameter, also for an empty gradient
      if (grad->empty() || grad->num_blocks() == 0) continue;
      const auto t = static_cast<double>(st.step);
      const double bc1 = 1.0 - std::pow(o.betas.first, t);
      const double bc2 = 1.0 - std::pow(o.betas.second, t);
      const SparseAdamScalars s{o.maximize ? -1.0f : 1.0f, static_cast<float>(1.0 - o.betas.first),
                                static_cast<float>(1.0 - o.betas.second), static_cast<float>(o.eps),
                                static_cast<float>(-(o.lr * std::sqrt(bc2) / bc1))};
      const auto width = static_cast<std::size_t>(grad->row_width());
      float* data = p.data();
      float* m = st.exp_avg.data();
      float* v = st.exp_avg_sq.data();
      // The fused walk: each distinct row summed on the fly (no coalesced copy) and updated once.
      grad->for_each_row(
          [&](std::int64_t row, const float* g) {
            const std::size_t at = static_cast<std::size_t>(row) * width;
            sparse_adam_kernel(data + at, g, m + at, v + at, width, s);
          },
          [&](std::int64_t row) HITCH_ALWAYS_INLINE {
              prefetch_row(data, row, width);
              prefetch_row(m, row, width);
              prefetch_row(v, row, width);
            });
      p.bump_version();
    }
  }
}

}  // namespace hitch::optim
