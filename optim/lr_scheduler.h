// hitch/optim/lr_scheduler.h: learning-rate schedules that set each group's lr (PyTorch's
// StepLR and CosineAnnealingLR, closed forms).
//
//   StepLR:            lr_e = base_lr * gamma^floor(e / step_size)
//   CosineAnnealingLR: lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2
// where e = last_epoch (0 after construction, +1 per step()) and base_lr is each group's lr when
// the scheduler was built. As in PyTorch, construction sets the epoch-0 lr, step() is called
// after optimizer.step(), and the cosine keeps going past T_max (period 2 T_max). Because the
// closed form is used, an lr changed by hand between steps is overwritten at the next step()
// (PyTorch's chainable form would build on it).
// State: state_dict() / load_state_dict() carry what the closed forms need, PyTorch's names:
// last_epoch, base_lrs and the kind's own hyper-parameters (checked on load, never taken from the
// state: a StepLR state loaded into a CosineAnnealingLR, or one saved with another step_size,
// is refused naming them; PyTorch's load_state_dict would silently overwrite the attributes).
// _last_lr is not stored: it is lr_at(base_lrs[group], last_epoch), recomputed bit for bit. Like PyTorch's,
// loading does not touch the optimizer's lrs (its own state restores them; load_checkpoint does
// both). Left out: last_epoch passed to the constructor (load a state instead), chaining.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

// A scheduler's state, as PyTorch's scheduler.state_dict() holds it (its attribute names): the
// kind ("StepLR"), its hyper-parameters ({"step_size": 30, "gamma": 0.1} or {"T_max": 10,
// "eta_min": 0}; integer ones as doubles, exact up to 2^53), last_epoch and one base_lr per group.
struct LRSchedulerState {
  std::string kind;
  std::map<std::string, double> hyper;
  std::int64_t last_epoch = 0;
  std::vector<double> base_lrs;
};

// The optimizer must outlive the scheduler and keep its number of groups.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // last_epoch += 1, then every group's lr = lr_at(base_lrs[group], last_epoch). All-or-nothing: an lr the
  // optimizer refuses (e.g. gamma > 1 grown past the largest double) changes no lr and no epoch.
  void step();
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  std::int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  const std::string& name() const { return name_; }  // "StepLR", "CosineAnnealingLR"

  LRSchedulerState state_dict() const;
  // Requires: state.kind is this scheduler's kind, state.hyper holds exactly its hyper-parameters
  // with its values, last_epoch in [0, 2^53], one base_lr per group of the optimizer, each finite
  // and >= 0, and each group's lr at last_epoch finite (StepLR with gamma > 1 overflows: step()
  // never gets there) (otherwise a hitch::Error "<kind>.load_state_dict: ..." naming the field,
  // and nothing changes). Ensures: last_epoch, base_lrs and get_last_lr() are the saved scheduler's,
  // so the following step()s set the lrs it would have set. The optimizer's lrs are not touched.
  void load_state_dict(const LRSchedulerState& state);
  // The checks of load_state_dict alone (load_checkpoint runs them before it writes anything).
  void check_state_dict(const LRSchedulerState& state) const;

 protected:
  LRScheduler(Optimizer& optimizer, std::string name);
  // The kind's hyper-parameters, as state_dict() stores them.
  virtual std::map<std::string, double> hyper() const = 0;
  // Sets the lrs for epoch, then last_epoch_ = epoch (derived constructors: 0; step(): +1).
  void apply(std::int64_t epoch);
  // The lr of a group whose base lr is base_lr, at epoch (the closed form above).
  virtual double lr_at(double base_lr, std::int64_t epoch) const = 0;

 private:
  Optimizer& optimizer_;
  std::string name_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  std::int64_t last_epoch_ = 0;
};

class StepLR : public LRScheduler {
 public:
  // Requires step_size >= 1, gamma finite and >= 0.
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 protected:
  std::map<std::string, double> hyper() const override;
  double lr_at(double base_lr, std::int64_t epoch) const override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  // Requires T_max >= 1, eta_min finite and >= 0.
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min = 0.0);

 protected:
  std::map<std::string, double> hyper() const override;
  double lr_at(double base_lr, std::int64_t epoch) const override;

 private:
  std::int64_t t_max_;
  double eta_min_;
};

}  // namespace hitch::optim
