// hitch/optim/lr_scheduler.cpp: StepLR and CosineAnnealingLR (see lr_scheduler.h).
#include "optim/lr_scheduler.h"

#include <cmath>
#include <numbers>

#include <fmt/format.h>

namespace hitch::optim {

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer) {
  for (std::size_t g = 0; g < optimizer.num_groups(); ++g) base_lrs_.push_back(optimizer.lr(g));
}

void LRScheduler::apply(std::int64_t epoch) {
  if (optimizer_.num_groups() != base_lrs_.size())
    throw Error(fmt::format("LRScheduler: the optimizer had {} parameter groups when the scheduler was built and "
                            "has {} now; build a new scheduler after add_param_group",
                            base_lrs_.size(), optimizer_.num_groups()));
  std::vector<double> lrs;
  for (std::size_t g = 0; g < base_lrs_.size(); ++g) lrs.push_back(lr_at(g, epoch));
  optimizer_.set_lrs(lrs);  // all checked before any is set
  // Nothing below throws.
  last_lr_.swap(lrs);
  last_epoch_ = epoch;
}

void LRScheduler::step() { apply(last_epoch_ + 1); }

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) throw Error(fmt::format("StepLR: step_size must be >= 1, but got {}", step_size));
  check_hyper("StepLR", "gamma", gamma, kNonNegative, "");
  apply(0);
}

double StepLR::lr_at(std::size_t group, std::int64_t epoch) const {
  return base_lrs()[group] * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min)
    : LRScheduler(optimizer), t_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) throw Error(fmt::format("CosineAnnealingLR: T_max must be >= 1, but got {}", T_max));
  check_hyper("CosineAnnealingLR", "eta_min", eta_min, kNonNegative, "");
  apply(0);
}

double CosineAnnealingLR::lr_at(std::size_t group, std::int64_t epoch) const {
  const double angle = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max_);
  return eta_min_ + (base_lrs()[group] - eta_min_) * (1.0 + std::cos(angle)) / 2.0;
}

}  // namespace hitch::optim
