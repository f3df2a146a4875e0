// hitch/optim/adagrad.cpp: Adagrad (see adagrad.h). Element order follows PyTorch 1.13's
// single-tensor path in float32; the dense and sparse paths differ there in one place, kept here:
// dense p + (-clr * g) / std, sparse p + -clr * (g / std).
#include <hitch/optim/adagrad.h>

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace hitch::optim {

namespace {

struct AdagradScalars {
  float sign, weight_decay, eps, neg_clr;
  bool use_weight_decay;
};

template <bool kZeroGrad>
void adagrad_dense_kernel(float* p, const float* g, float* sum, std::size_t n, const AdagradScalars& s) {
  for (std::size_t i = 0; i < n; ++i) {
    float gi = kZeroGrad ? 0.0f : g[i] * s.sign;
    if (s.use_weight_decay) gi = gi + s.weight_decay * p[i];
    sum[i] = sum[i] + gi * gi;
    const float std_dev = std::sqrt(sum[i]) + s.eps;
    p[i] = p[i] + s.neg_clr * gi / std_dev;
  }
}

// One coalesced gradient row (no weight decay: refused for sparse gradients). Compiled for AVX2
// and baseline (same bits, see optimizer.h).
HITCH_TARGET_CLONES void adagrad_sparse_kernel(float* p, const float* g, float* sum, std::size_t n, const AdagradScalars& s) {
  for (std::size_t i = 0; i < n; ++i) {
    const float gi = g[i] * s.sign;
    sum[i] = sum[i] + gi * gi;
    const float std_dev = std::sqrt(sum[i]) + s.eps;
    p[i] = p[i] + s.neg_clr * (gi / std_dev);
  }
}

}  // namespace

Adagrad::Adagrad(const std::vector<Parameter>& params, const AdagradOptions& options) : OptimizerWith("Adagrad") {
  install(params, options);
}
Adagrad::Adagrad(std::vector<ParamGroup<AdagradOptions>> groups) : OptimizerWith("Adagrad") {
  install(std::move(groups));
}

void Adagrad::check_options(const AdagradOptions& o, const std::string& where) const {
  check_hyper(name(), "lr", o.lr, kNonNegative, where);
  check_hyper(name(), "lr_decay", o.lr_decay, kNonNegative, where);
  check_hyper(name(), "weight_decay", o.weight_decay, kNonNegative, where);
  // Also finite as a float: it becomes the float accumulator.
  check_hyper(name(), "initial_accumulator_value", o.initial_accumulator_value,
              Range{0.0, static_cast<double>(std::numeric_limits<float>::max())}, where);
  check_hyper(name(), "eps", o.eps, kNonNegative, where);
}

namespace {
AdagradState fresh_state(const Parameter& p, double initial_accumulator_value) {
  return AdagradState{0, std::vector<float>(static_cast<std::size_t>(p.numel()),
                                            static_cast<float>(initial_accumulator_value))};
}
}  // namespace

void Adagrad::initial_state(const ParamGroup<AdagradOptions>& group, StateMap& out) const {
  for (const Parameter& p : group.params)
    out.insert_or_assign(p.id(), fresh_state(p, group.options.initial_accumulator_value));
}

std::optional<AdagradState> Adagrad::prepare_param(const Parameter& p, const AdagradOptions& o,
                                                   const AdagradState* current) const {
  Grad& grad = *step_grad(p);
  if (grad.is_sparse()) grad.prepare_walk();  // the fused row walk
  if (current != nullptr) return std::nullopt;  // made when p joined
  return fresh_state(p, o.initial_accumulator_value);
}

void Adagrad::check_step() const {
  check_all_options();
  check_no_sparse_weight_decay();
}

void Adagrad::update() {
  for (auto& group : groups_) {
    const AdagradOptions& o = group.options;
    for (Parameter& p : group.params) {
      Grad* grad = step_grad(p);
      if (grad == nullptr) continue;
      AdagradState& st = state_at(p);  // created when p joined
      st.step += 1;
      const double clr = o.lr / (1.0 + static_cast<double>(st.step - 1) * o.lr_decay);
      const AdagradScalars s{o.maximize ? -1.0f : 1.0f, static_cast<float>(o.weight_decay), static_cast<float>(o.eps),
                             static_cast<float>(-clr), o.weight_decay != 0.0};
      float* data = p.data();
      float* sum = st.sum.data();
      if (grad->is_sparse()) {
        // The fused walk: each distinct row summed (duplicates before squaring) and updated once.
        const auto width = static_cast<std::size_t>(grad->row_width());
        grad->for_each_row(
            [&](std::int64_t row, const float* g) {
              const std::size_t at = static_cast<std::size_t>(row) * width;
              adagrad_sparse_kernel(data + at, g, sum + at, width, s);
            },
            [&](std::int64_t row) HITCH_ALWAYS_INLINE {
              prefetch_row(data, row, width);
              prefetch_row(sum, row, width);
            });
      } else {
        for_each_dense_run(
            *grad, static_cast<std::size_t>(p.numel()),
            [&](std::size_t at, const float* g, std::size_t n) {
              parallel_elements(n, [&](std::size_t b, std::size_t e) {
                adagrad_dense_kernel<false>(data + at + b, g + b, sum + at + b, e - b, s);
              });
            },
            [&](std::size_t at, std::size_t n) {
              parallel_elements(n, [&](std::size_t b, std::size_t e) {
                adagrad_dense_kernel<true>(data + at + b, nullptr, sum + at + b, e - b, s);
              });
            });
      }
      p.bump_version();
    }
  }
}

}  // namespace hitch::optim
