// hitch/core/gradcheck.cpp: central-difference gradient check (see gradcheck.h).
#include <hitch/core/gradcheck.h>

#include <cmath>

#include <hitch/core/grad.h>
#include <hitch/core/tape.h>

namespace hitch {

static double projected(const Tensor& out, const Tensor& r) {
  double s = 0.0;
  for (std::int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(out.data()[i]) * r.data()[i];
  return s;
}

GradcheckResult gradcheck(std::string_view op, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  GradcheckResult result;
  // Keep the callers' gradients: check with fresh ones, put the old ones back at the end.
  std::vector<std::shared_ptr<Grad>> kept;
  for (const auto& t : inputs) {
    kept.push_back(t.impl().grad);
    t.impl().grad.reset();
  }
  Tensor out = f(inputs);
  Generator gen(options.seed);
  const Tensor r = Tensor::uniform(out.shape(), -1.0f, 1.0f, gen);
  backward(out, r);
  std::vector<Tensor> analytic;
  for (const auto& t : inputs) analytic.push_back(t.impl().grad ? t.impl().grad->dense() : Tensor::zeros(t.shape()));

  NoGradGuard no_grad;
  for (std::size_t k = 0; k < inputs.size() && result.ok; ++k) {
    if (!inputs[k].requires_grad()) continue;
    float* x = inputs[k].impl().storage->data.data();
    for (std::int64_t i = 0; i < inputs[k].numel(); ++i) {
      const float orig = x[i];
      x[i] = static_cast<float>(orig + options.eps);
      const double plus = projected(f(inputs), r);
      x[i] = static_cast<float>(orig - options.eps);
      const double minus = projected(f(inputs), r);
      x[i] = orig;
      // The perturbation actually applied in float32 is what the difference divides by.
      const double step = static_cast<double>(static_cast<float>(orig + options.eps)) -
                          static_cast<double>(static_cast<float>(orig - options.eps));
      const double numeric = (plus - minus) / step;
      const double got = analytic[k].data()[i];
      ++result.checked;
      if (!(std::abs(got - numeric) <= options.atol + options.rtol * std::abs(numeric))) {
        result.ok = false;
        result.message = fmt::format("gradcheck: {}: input {} element {} (of shape {}): analytic {:.6g}, numeric {:.6g}",
                                     op, k, i, shape_str(inputs[k].shape()), got, numeric);
        break;
      }
    }
  }
  for (std::size_t k = 0; k < inputs.size(); ++k) inputs[k].impl().grad = kept[k];
  return result;
}

}  // namespace hitch
