// hitch/optim/in_backward.h: an optimizer applied inside backward (opt-in), as TorchRec's
// apply_optimizer_in_backward and FBGEMM's fused embedding backward do it.
//
//   optim::SGD opt(model.parameters(), {.lr = 0.01});
//   optim::InBackward fused(opt);       // from here on, backward() is the step
//   for (...) backward(loss(batch));    // no zero_grad(), no step()
//
// What it does: every backward() that reaches one of opt's Parameters runs every node first
// (so every path into a table has added its contribution: both lookups of a tied Embedding and
// EmbeddingBag, a tied output projection), then takes opt's step, then drops the gradients. The
// step boundary is the backward() call: one backward = one step, the tie updated once with the
// sum of its paths, exactly as zero_grad(); backward(); step() would (bitwise; the tests compare).
// For a row-sparse table the update reads the lookups' sorted row blocks as the backward left
// them (each row's sum computed as it is applied, core/runtime/rows.h).
//
// What it gives up (docs/optim.md, "Optimizer in backward"):
//  * no gradient after backward: nothing to inspect, clip (clip_grad_norm sees none) or log;
//  * gradient accumulation over several backward() calls: each one is a step;
//  * opt.step() and opt.add_param_group() are hitch::Errors while the InBackward lives;
//  * hitch::dist: a sharded table, or data-parallel gradients that must be reduced between
//    backward and step, cannot be applied in backward (refused here and by DataParallel).
// Grad hooks (Parameter::add_grad_hook) still see every contribution; anomaly mode still checks.
//
// Errors: backward() refuses before any node runs what the optimizer can tell without the
// gradients (its hyper-parameters, e.g. an lr set to -1 through options_mut; a Parameter that no
// module holds any more, step()'s check_held): nothing changed. Every such message starts
// "backward: InBackward(SGD) refused the step: " followed by the optimizer's own. What needs
// the gradients (e.g. SparseAdam given a dense gradient, weight_decay with a sparse one) is
// refused after the nodes ran: the Parameters and optimizer state are unchanged, the hooked
// Parameters have no gradient (as before the call), other leaves keep what backward added, and
// the graph is kept: fix the optimizer's settings and run backward on it again. A refusal caused
// by the graph itself (a dense lookup given to SparseAdam) needs a new forward, or the ordinary
// loop (destroy the InBackward, then backward and step).
// Why at the end of backward() rather than right after a table's last reader: several tables, or
// several in-backward optimizers, are then checked together before any is written, so a refusal
// leaves all of their Parameters as they were. (One gap: when a second optimizer refuses, a first
// one that had already prepared keeps the fresh, zero state it made for a Parameter's first step.)
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <hitch/optim/optimizer.h>

namespace hitch::optim {

class InBackward {
 public:
  // Requires: opt not applied in backward already; no Parameter of opt applied in backward by
  // another optimizer, holding a gradient (call zero_grad() first) or a shard of a sharded table
  // (dist::shard_rows). Throws hitch::Error naming the Parameter (group, position), changing
  // nothing. opt must outlive this object or be destroyed first (either order is safe).
  explicit InBackward(Optimizer& opt);
  ~InBackward();  // opt's Parameters go back to step()
  InBackward(const InBackward&) = delete;
  InBackward& operator=(const InBackward&) = delete;

  // Number of backward() calls that stepped opt.
  std::int64_t steps() const;
  // The optimizer applied; null once it was destroyed.
  Optimizer* optimizer() const;

 private:
  friend class Optimizer;
  struct Hook;
  void detach() noexcept;             // removes the hooks (~InBackward, ~Optimizer)
  void retarget(Optimizer& moved_to) noexcept;  // Optimizer's move constructor
  // The optimizer's phases (Hook reaches them through these: InBackward is its friend).
  static void check(Optimizer& opt);
  static void prepare(Optimizer& opt);
  static void update(Optimizer& opt) noexcept;

  std::shared_ptr<Hook> hook_;
  std::vector<std::weak_ptr<TensorImpl>> params_;  // weak: an optimizer's own hold is checked by step
};

}  // namespace hitch::optim
