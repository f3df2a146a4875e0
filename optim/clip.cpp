// hitch/optim/clip.cpp: clip_grad_norm (see clip.h).
#include <hitch/optim/clip.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <unordered_map>

#include <fmt/format.h>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

namespace {

// sum |x|^p (or max |x| for p = inf) over values, in double.
double accumulate_norm(std::span<const float> values, double norm_type) {
  double acc = 0.0;
  if (std::isinf(norm_type)) {
    for (float x : values) {
      const double a = std::fabs(static_cast<double>(x));
      if (a > acc || std::isnan(a)) acc = a;
    }
  } else if (norm_type == 2.0) {
    for (float x : values) acc += static_cast<double>(x) * static_cast<double>(x);
  } else if (norm_type == 1.0) {
    for (float x : values) acc += std::fabs(static_cast<double>(x));
  } else {
    for (float x : values) acc += std::pow(std::fabs(static_cast<double>(x)), norm_type);
  }
  return acc;
}

std::span<const float> values_of(Grad& grad) {
  if (grad.is_sparse()) {
    grad.coalesce();
    return grad.row_values();
  }
  if (grad.empty()) return {};
  const Tensor dense = grad.dense();  // the stored tensor, not a copy
  return {dense.data(), static_cast<std::size_t>(dense.numel())};
}

}  // namespace

double clip_grad_norm(const std::vector<Parameter>& params, double max_norm, double norm_type,
                      bool error_if_nonfinite) {
  if (!(max_norm >= 0.0)) throw Error(fmt::format("clip_grad_norm: max_norm must be >= 0, but got {}", max_norm));
  if (!(norm_type > 0.0))
    throw Error(fmt::format("clip_grad_norm: norm_type must be > 0 (or infinity), but got {}", norm_type));
  std::unordered_map<const void*, std::size_t> seen;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined()) throw Error(fmt::format("clip_grad_norm: position {} is an empty Parameter handle", i));
    if (params[i].impl().sharding)
      throw Error(fmt::format("clip_grad_norm: Parameter {} (position {}) is a shard of a table split over processes "
                              "(dist::shard_rows): this rank holds only its rows' gradient, so the norm here is not the "
                              "total norm; clipping sharded tables is not supported",
                              param_label(params[i]), i));
    auto [it, fresh] = seen.emplace(params[i].id(), i);
    if (!fresh)
      throw Error(fmt::format("clip_grad_norm: Parameter {} appears twice: position {} and position {}; pass each "
                              "Parameter once (a tied Parameter is one Parameter)",
                              param_label(params[i]), it->second, i));
  }

  const bool inf_norm = std::isinf(norm_type);
  double total_acc = 0.0;  // sum over Parameters of ||g||_p^p, or the max for inf
  for (const Parameter& p : params) {
    Grad* grad = p.grad_store();
    if (grad == nullptr) continue;
    const double acc = accumulate_norm(values_of(*grad), norm_type);
    if (inf_norm) {
      if (acc > total_acc || std::isnan(acc)) total_acc = acc;
    } else {
      total_acc += acc;
    }
  }
  const double total = inf_norm ? total_acc : norm_type == 2.0 ? std::sqrt(total_acc) : std::pow(total_acc, 1.0 / norm_type);
  if (error_if_nonfinite && !std::isfinite(total))
    throw Error(fmt::format("clip_grad_norm: the total norm of order {} of the gradients is {}, so it cannot be "
                            "clipped; pass error_if_nonfinite = false to scale the gradients by it anyway",
                            norm_type, total));
  const double clip_coef = max_norm / (total + 1e-6);
  if (clip_coef < 1.0 || std::isnan(clip_coef)) {
    const auto coef = static_cast<float>(clip_coef);
    for (const Parameter& p : params) {
      Grad* grad = p.grad_store();
      if (grad == nullptr || grad->empty()) continue;
      if (grad->is_sparse()) {
        for (float& x : grad->row_values_mut()) x *= coef;
      } else {
        Tensor dense = grad->dense();
        float* d = dense.data();
        const auto n = static_cast<std::size_t>(dense.numel());
        for (std::size_t i = 0; i < n; ++i) d[i] *= coef;
      }
    }
  }
  return total;
}

}  // namespace hitch::optim
