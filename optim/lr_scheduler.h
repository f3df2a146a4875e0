// hitch/optim/lr_scheduler.h: learning-rate schedules that set each group's lr (PyTorch's
// StepLR and CosineAnnealingLR, closed forms).
//
//   StepLR:            lr_e = base_lr * gamma^floor(e / step_size)
//   CosineAnnealingLR: lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2
// where e = last_epoch (0 after construction, +1 per step()) and base_lr is each group's lr when
// the scheduler was built. As in PyTorch, construction sets the epoch-0 lr, step() is called
// after optimizer.step(), and the cosine keeps going past T_max (period 2 T_max). Because the
// closed form is used, an lr changed by hand between steps is overwritten at the next step()
// (PyTorch's chainable form would build on it). Left out: last_epoch resume, state_dict.
#pragma once

#include <cstdint>
#include <vector>

#include "optim/optimizer.h"

namespace hitch::optim {

// The optimizer must outlive the scheduler and keep its number of groups.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // last_epoch += 1, then every group's lr = lr_at(group, last_epoch). All-or-nothing: an lr the
  // optimizer refuses (e.g. gamma > 1 grown past the largest double) changes no lr and no epoch.
  void step();
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  std::int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  // Sets the lrs for epoch, then last_epoch_ = epoch (derived constructors: 0; step(): +1).
  void apply(std::int64_t epoch);
  virtual double lr_at(std::size_t group, std::int64_t epoch) const = 0;

 private:
  Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  std::int64_t last_epoch_ = 0;
};

class StepLR : public LRScheduler {
 public:
  // Requires step_size >= 1, gamma finite and >= 0.
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 protected:
  double lr_at(std::size_t group, std::int64_t epoch) const override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  // Requires T_max >= 1, eta_min finite and >= 0.
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min = 0.0);

 protected:
  double lr_at(std::size_t group, std::int64_t epoch) const override;

 private:
  std::int64_t t_max_;
  double eta_min_;
};

}  // namespace hitch::optim
