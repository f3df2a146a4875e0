// hitch/optim/adam.cpp: Adam and AdamW (see adam.h). One kernel serves both; the element order
// is PyTorch 1.13's single-tensor path in float32 (REFERENCE §3.2's bit-exact recipe):
//   g + wd*p as one add-with-multiplier; m*b1 then + (1-b1)*g; v*b2 then + (1-b2)*g*g;
//   den = sqrt(v)/sqrt(bc2) + eps; p + (-lr/bc1)*m/den; scalars in double, rounded to float once.
#include <hitch/optim/adam.h>

#include <cmath>
#include <limits>

namespace hitch::optim {

namespace {

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize, decoupled;
};

struct AdamScalars {
  float sign, weight_decay, decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step;
  bool l2, decoupled, amsgrad;
};

// n floats of p, g, m, v (and vmax when amsgrad). kZeroGrad: g is zero and not read (rows absent
// from a sparse gradient, walked as if dense). The options are template parameters so that the
// loop has no branch and vectorises (the build passes -fno-math-errno, so sqrt is one instruction).
template <bool kZeroGrad, bool kDecoupled, bool kL2, bool kAmsgrad>
[[gnu::always_inline]] inline void adam_kernel(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n, const AdamScalars& s) {
  for (std::size_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (kDecoupled) pi = pi * s.decay_factor;  // AdamW: decay the pre-update value first
    float gi = kZeroGrad ? 0.0f : g[i] * s.sign;
    if (kL2) gi = gi + s.weight_decay * pi;
    const float mi = m[i] * s.beta1 + s.one_minus_beta1 * gi;
    const float vi = v[i] * s.beta2 + s.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if (kAmsgrad) {
      // torch.maximum: NaN in either operand propagates.
      const float old = vmax[i];
      second = (vi > old || vi != vi) ? vi : old;
      vmax[i] = second;
    }
    const float den = std::sqrt(second) / s.bc2_sqrt + s.eps;
    p[i] = pi + s.neg_step * mi / den;
  }
}

template <bool kZeroGrad>
[[gnu::always_inline]] inline void adam_options(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n,
                                                const AdamScalars& s) {
  if (s.amsgrad) {
    if (s.decoupled) adam_kernel<kZeroGrad, true, false, true>(p, g, m, v, vmax, n, s);
    else if (s.l2) adam_kernel<kZeroGrad, false, true, true>(p, g, m, v, vmax, n, s);
    else adam_kernel<kZeroGrad, false, false, true>(p, g, m, v, vmax, n, s);
  } else {
    if (s.decoupled) adam_kernel<kZeroGrad, true, false, false>(p, g, m, v, vmax, n, s);
    else if (s.l2) adam_kernel<kZeroGrad, false, true, false>(p, g, m, v, vmax, n, s);
    else adam_kernel<kZeroGrad, false, false, false>(p, g, m, v, vmax, n, s);
  }
}

// The loop is bound by the divider (one sqrt, two divisions per element), so it is compiled
// twice: for AVX2 (8 floats per instruction) and for baseline x86-64, chosen at load time.
// IEEE sqrt and division give the same bits either way (no FMA: nothing is contracted).
HITCH_TARGET_CLONES void adam_chunk(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n,
                                    const AdamScalars& s) {
  if (g == nullptr) adam_options<true>(p, g, m, v, vmax, n, s);
  else adam_options<false>(p, g, m, v, vmax, n, s);
}

template <bool kZeroGrad>
void adam_dispatch(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n, const AdamScalars& s) {
  parallel_elements(n, [&](std::size_t b, std::size_t e) {
    adam_chunk(p + b, kZeroGrad ? nullptr : g + b, m + b, v + b, vmax ? vmax + b : nullptr, e - b, s);
  });
}

// The state p needs for a step (prepare_param): zero moments at its first step, and a zero vmax
// when amsgrad is on and there is none yet (the moments are then copied: amsgrad turned on
// mid-training, a one-time cost). The sparse gradient, walked as if dense, is coalesced here.
std::optional<AdamState> adam_prepare(const Parameter& p, bool amsgrad, const AdamState* current) {
  Grad& grad = *step_grad(p);
  if (grad.is_sparse()) grad.coalesce();  // its representation, not its value
  const auto numel = static_cast<std::size_t>(p.numel());
  const bool needs_moments = current == nullptr;
  const bool needs_vmax = amsgrad && (current == nullptr || current->max_exp_avg_sq.size() != numel);
  if (!needs_moments && !needs_vmax) return std::nullopt;
  AdamState s = current != nullptr ? *current : AdamState{0, std::vector<float>(numel), std::vector<float>(numel), {}};
  if (needs_vmax) s.max_exp_avg_sq.assign(numel, 0.0f);
  return s;
}

// Writes only: the state was made by adam_prepare, the gradient coalesced (no allocation).
void adam_param_step(Parameter& p, AdamState& st, const AdamHyper& h) {
  const auto numel = static_cast<std::size_t>(p.numel());
  st.step += 1;
  const auto t = static_cast<double>(st.step);
  const double bc1 = 1.0 - std::pow(h.beta1, t);
  const double bc2 = 1.0 - std::pow(h.beta2, t);
  const AdamScalars s{h.maximize ? -1.0f : 1.0f,
                      static_cast<float>(h.weight_decay),
                      static_cast<float>(1.0 - h.lr * h.weight_decay),
                      static_cast<float>(h.beta1),
                      static_cast<float>(1.0 - h.beta1),
                      static_cast<float>(h.beta2),
                      static_cast<float>(1.0 - h.beta2),
                      static_cast<float>(std::sqrt(bc2)),
                      static_cast<float>(h.eps),
                      static_cast<float>(-(h.lr / bc1)),
                      !h.decoupled && h.weight_decay != 0.0,
                      h.decoupled,
                      h.amsgrad};
  float* data = p.data();
  float* m = st.exp_avg.data();
  float* v = st.exp_avg_sq.data();
  float* vmax = h.amsgrad ? st.max_exp_avg_sq.data() : nullptr;
  for_each_dense_run(
      *step_grad(p), numel,
      [&](std::size_t at, const float* g, std::size_t n) {
        adam_dispatch<false>(data + at, g, m + at, v + at, vmax ? vmax + at : nullptr, n, s);
      },
      [&](std::size_t at, std::size_t n) {
        adam_dispatch<true>(data + at, nullptr, m + at, v + at, vmax ? vmax + at : nullptr, n, s);
      });
  p.bump_version();
}

template <class Options>
void check_adam_options(std::string_view who, const Options& o, const std::string& where) {
  check_hyper(who, "lr", o.lr, kNonNegative, where);
  check_hyper(who, "eps", o.eps, kNonNegative, where);
  check_hyper(who, "betas[0]", o.betas.first, kUnitInterval, where);
  check_hyper(who, "betas[1]", o.betas.second, kUnitInterval, where);
  check_hyper(who, "weight_decay", o.weight_decay, kNonNegative, where);
}

template <class Options>
AdamHyper hyper_of(const Options& o, bool decoupled) {
  return AdamHyper{o.lr, o.betas.first, o.betas.second, o.eps, o.weight_decay, o.amsgrad, o.maximize, decoupled};
}

}  // namespace

Adam::Adam(const std::vector<Parameter>& params, const AdamOptions& options) : OptimizerWith("Adam") {
  install(params, options);
}
Adam::Adam(std::vector<ParamGroup<AdamOptions>> groups) : OptimizerWith("Adam") { install(std::move(groups)); }

void Adam::check_options(const AdamOptions& o, const std::string& where) const {
  check_adam_options(name(), o, where);
}

std::optional<AdamState> Adam::prepare_param(const Parameter& p, const AdamOptions& o, const AdamState* current) const {
  return adam_prepare(p, o.amsgrad, current);
}

void Adam::update() {
  for (auto& group : groups_) {
    const AdamHyper h = hyper_of(group.options, false);
    for (Parameter& p : group.params)
      if (step_grad(p) != nullptr) adam_param_step(p, state_at(p), h);
  }
}

AdamW::AdamW(const std::vector<Parameter>& params, const AdamWOptions& options) : OptimizerWith("AdamW") {
  install(params, options);
}
AdamW::AdamW(std::vector<ParamGroup<AdamWOptions>> groups) : OptimizerWith("AdamW") { install(std::move(groups)); }

void AdamW::check_options(const AdamWOptions& o, const std::string& where) const {
  check_adam_options(name(), o, where);
}

std::optional<AdamState> AdamW::prepare_param(const Parameter& p, const AdamWOptions& o,
                                               const AdamState* current) const {
  return adam_prepare(p, o.amsgrad, current);
}

void AdamW::update() {
  for (auto& group : groups_) {
    const AdamHyper h = hyper_of(group.options, true);
    for (Parameter& p : group.params)
      if (step_grad(p) != nullptr) adam_param_step(p, state_at(p), h);
  }
}

}  // namespace hitch::optim
