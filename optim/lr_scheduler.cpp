// hitch/optim/lr_scheduler.cpp: StepLR and CosineAnnealingLR (see lr_scheduler.h).
#include <hitch/optim/lr_scheduler.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace hitch::optim {

LRScheduler::LRScheduler(Optimizer& optimizer, std::string name) : optimizer_(optimizer), name_(std::move(name)) {
  for (std::size_t g = 0; g < optimizer.num_groups(); ++g) base_lrs_.push_back(optimizer.lr(g));
}

void LRScheduler::apply(std::int64_t epoch) {
  if (optimizer_.num_groups() != base_lrs_.size())
    throw Error(fmt::format("LRScheduler: the optimizer had {} parameter groups when the scheduler was built and "
                            "has {} now; build a new scheduler after add_param_group",
                            base_lrs_.size(), optimizer_.num_groups()));
  std::vector<double> lrs;
  for (const double base_lr : base_lrs_) lrs.push_back(lr_at(base_lr, epoch));
  optimizer_.set_lrs(lrs);  // all checked before any is set
  // Nothing below throws.
  last_lr_.swap(lrs);
  last_epoch_ = epoch;
}

void LRScheduler::step() { apply(last_epoch_ + 1); }

LRSchedulerState LRScheduler::state_dict() const { return {name_, hyper(), last_epoch_, base_lrs_}; }

void LRScheduler::check_state_dict(const LRSchedulerState& state) const {
  const std::string who = name_ + ".load_state_dict";
  if (state.kind != name_)
    throw Error(fmt::format("{}: the state was saved from a {}, but this scheduler is a {}", who, state.kind, name_));
  const std::map<std::string, double> mine = hyper();
  if (state.hyper != mine) {
    // Every hyper-parameter that differs, by name (bitwise: 0.1 and 0.1000000001 differ).
    std::vector<std::string> diffs;
    for (const auto& [key, value] : mine) {
      auto it = state.hyper.find(key);
      if (it == state.hyper.end())
        diffs.push_back(fmt::format("no {} in the state ({} here)", key, value));
      else if (!(it->second == value))
        diffs.push_back(fmt::format("{} = {} in the state, {} here", key, it->second, value));
    }
    for (const auto& [key, value] : state.hyper)
      if (mine.count(key) == 0)
        diffs.push_back(fmt::format("{} = {} in the state, which a {} does not have", key, value, name_));
    std::string text;
    for (const std::string& d : diffs) text += (text.empty() ? "" : "; ") + d;
    throw Error(fmt::format("{}: the state was saved with other hyper-parameters: {}", who, text));
  }
  if (state.last_epoch < 0 || state.last_epoch > kMaxStep)
    throw Error(fmt::format("{}: last_epoch = {} is out of range (valid: [0, 2^53])", who, state.last_epoch));
  if (state.base_lrs.size() != base_lrs_.size())
    throw Error(fmt::format("{}: the state has {} base_lrs, but this scheduler has {} (one per parameter group)", who,
                            state.base_lrs.size(), base_lrs_.size()));
  for (std::size_t g = 0; g < state.base_lrs.size(); ++g)
    check_hyper(who, fmt::format("base_lrs[{}]", g), state.base_lrs[g], kNonNegative, "");
  // The lrs the state stands for: step() refuses a non-finite one, so a saved scheduler never
  // reached it (StepLR's gamma^(e / step_size) overflows for gamma > 1 and a large e).
  for (std::size_t g = 0; g < state.base_lrs.size(); ++g) {
    const double lr = lr_at(state.base_lrs[g], state.last_epoch);
    if (!std::isfinite(lr))
      throw Error(fmt::format("{}: last_epoch = {} gives group {} an lr of {} (base_lrs[{}] = {}), which is not "
                              "finite; the saved scheduler could not have reached it",
                              who, state.last_epoch, g, std::isnan(lr) ? "nan" : fmt::format("{}", lr), g,
                              state.base_lrs[g]));
  }
}

void LRScheduler::load_state_dict(const LRSchedulerState& state) {
  check_state_dict(state);
  // Nothing below throws or allocates: base_lrs_ and last_lr_ already have one value per group
  // (the check above), so load_checkpoint can call this after the optimizer's restore.
  std::copy(state.base_lrs.begin(), state.base_lrs.end(), base_lrs_.begin());
  for (std::size_t g = 0; g < base_lrs_.size(); ++g) last_lr_[g] = lr_at(base_lrs_[g], state.last_epoch);
  last_epoch_ = state.last_epoch;
}

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer, "StepLR"), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) throw Error(fmt::format("StepLR: step_size must be >= 1, but got {}", step_size));
  check_hyper("StepLR", "gamma", gamma, kNonNegative, "");
  apply(0);
}

std::map<std::string, double> StepLR::hyper() const {
  return {{"step_size", static_cast<double>(step_size_)}, {"gamma", gamma_}};
}

double StepLR::lr_at(double base_lr, std::int64_t epoch) const {
  return base_lr * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min)
    : LRScheduler(optimizer, "CosineAnnealingLR"), t_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) throw Error(fmt::format("CosineAnnealingLR: T_max must be >= 1, but got {}", T_max));
  check_hyper("CosineAnnealingLR", "eta_min", eta_min, kNonNegative, "");
  apply(0);
}

std::map<std::string, double> CosineAnnealingLR::hyper() const {
  return {{"T_max", static_cast<double>(t_max_)}, {"eta_min", eta_min_}};
}

double CosineAnnealingLR::lr_at(double base_lr, std::int64_t epoch) const {
  const double angle = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max_);
  return eta_min_ + (base_lr - eta_min_) * (1.0 + std::cos(angle)) / 2.0;
}

}  // namespace hitch::optim
