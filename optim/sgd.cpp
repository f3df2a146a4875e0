// hitch/optim/sgd.cpp: SGD (see sgd.h). Element order follows PyTorch 1.13's single-tensor
// path in float32, with every scalar computed in double and rounded to float once.
#include <hitch/optim/sgd.h>

#include <fmt/format.h>

namespace hitch::optim {

namespace {

struct SgdScalars {
  float sign;                 // -1 for maximize
  float weight_decay;         // used only if use_weight_decay
  float momentum;             // mu
  float one_minus_dampening;  // 1 - tau
  float neg_lr;               // -lr
  bool use_weight_decay;
  bool nesterov;
};

// p, g, buf: n floats. buf null: no momentum. first: the buffer is created by this step
// (b = d, without the (1 - dampening) factor). kZeroGrad: g is all zero and not read.
template <bool kZeroGrad>
void sgd_kernel(float* p, const float* g, float* buf, bool first, std::size_t n, const SgdScalars& s) {
  for (std::size_t i = 0; i < n; ++i) {
    float d = kZeroGrad ? 0.0f : g[i] * s.sign;
    if (s.use_weight_decay) d = d + s.weight_decay * p[i];
    if (buf != nullptr) {
      buf[i] = first ? d : buf[i] * s.momentum + s.one_minus_dampening * d;
      d = s.nesterov ? d + s.momentum * buf[i] : buf[i];
    }
    p[i] = p[i] + s.neg_lr * d;
  }
}

}  // namespace

SGD::SGD(const std::vector<Parameter>& params, const SGDOptions& options) : OptimizerWith("SGD") {
  install(params, options);
}

SGD::SGD(std::vector<ParamGroup<SGDOptions>> groups) : OptimizerWith("SGD") { install(std::move(groups)); }

void SGD::check_options(const SGDOptions& o, const std::string& where) const {
  check_hyper(name(), "lr", o.lr, kNonNegative, where);
  check_hyper(name(), "momentum", o.momentum, kNonNegative, where);
  check_hyper(name(), "dampening", o.dampening, kClosedUnitInterval, where);
  check_hyper(name(), "weight_decay", o.weight_decay, kNonNegative, where);
  if (o.nesterov && !(o.momentum > 0.0 && o.dampening == 0.0))
    throw Error(fmt::format("SGD: nesterov requires momentum > 0 and dampening = 0, but got momentum = {} and "
                            "dampening = {}{}",
                            o.momentum, o.dampening, where));
}

void SGD::check_step() const {
  check_all_options();
  check_no_sparse_weight_decay();
}

std::optional<SGDState> SGD::prepare_param(const Parameter& p, const SGDOptions& o, const SGDState* current) const {
  Grad& grad = *step_grad(p);
  if (o.momentum == 0.0) {
    if (grad.is_sparse()) grad.prepare_walk();  // the fused row walk
    return std::nullopt;
  }
  if (grad.is_sparse()) grad.coalesce();  // walked as if dense
  if (current != nullptr && !current->momentum_buffer.empty()) return std::nullopt;
  SGDState s;
  s.momentum_buffer.assign(static_cast<std::size_t>(p.numel()), 0.0f);
  s.buffer_unset = true;
  return s;
}

void SGD::update() {
  for (auto& group : groups_) {
    const SGDOptions& o = group.options;
    const SgdScalars s{o.maximize ? -1.0f : 1.0f,
                       static_cast<float>(o.weight_decay),
                       static_cast<float>(o.momentum),
                       static_cast<float>(1.0 - o.dampening),
                       static_cast<float>(-o.lr),
                       o.weight_decay != 0.0,
                       o.nesterov};
    for (Parameter& p : group.params) {
      Grad* grad = step_grad(p);
      if (grad == nullptr) continue;  // no gradient this step: skipped entirely
      const auto numel = static_cast<std::size_t>(p.numel());
      float* data = p.data();
      if (o.momentum == 0.0) {
        if (grad->is_sparse()) {
          // Only the rows present in the gradient move (weight decay is refused for sparse): the
          // fused walk, each distinct row summed on the fly and updated once.
          const auto width = static_cast<std::size_t>(grad->row_width());
          grad->for_each_row(
              [&](std::int64_t row, const float* g) {
                sgd_kernel<false>(data + static_cast<std::size_t>(row) * width, g, nullptr, false, width, s);
              },
              [&](std::int64_t row) HITCH_ALWAYS_INLINE { prefetch_row(data, row, width); });
        } else {
          for_each_dense_run(
              *grad, numel,
              [&](std::size_t at, const float* g, std::size_t n) {
                parallel_elements(n, [&](std::size_t b, std::size_t e) {
                  sgd_kernel<false>(data + at + b, g + b, nullptr, false, e - b, s);
                });
              },
              [&](std::size_t at, std::size_t n) {
                parallel_elements(n, [&](std::size_t b, std::size_t e) {
                  sgd_kernel<true>(data + at + b, nullptr, nullptr, false, e - b, s);
                });
              });
        }
      } else {
        // Momentum: dense buffer; a sparse gradient is walked as if dense (absent rows have g = 0),
        // which is exactly PyTorch's sparse-buffer result.
        SGDState& st = state_at(p);  // the buffer was allocated by prepare_param
        const bool first = st.buffer_unset;
        st.buffer_unset = false;
        float* b = st.momentum_buffer.data();
        for_each_dense_run(
            *grad, numel,
            [&](std::size_t at, const float* g, std::size_t n) {
              parallel_elements(n, [&](std::size_t lo, std::size_t hi) {
                sgd_kernel<false>(data + at + lo, g + lo, b + at + lo, first, hi - lo, s);
              });
            },
            [&](std::size_t at, std::size_t n) {
              parallel_elements(n, [&](std::size_t lo, std::size_t hi) {
                sgd_kernel<true>(data + at + lo, nullptr, b + at + lo, first, hi - lo, s);
              });
            });
      }
      p.bump_version();
    }
  }
}

}  // namespace hitch::optim
