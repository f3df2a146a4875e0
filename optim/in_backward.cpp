// hitch/optim/in_backward.cpp: an optimizer applied inside backward (see in_backward.h). The
// tape (core/tape.cpp) calls the hook's three phases; they are step()'s own phases, split so
// that a refusal by any hook leaves every Parameter and optimizer state as it was.
#include <hitch/optim/in_backward.h>

#include <fmt/format.h>

namespace hitch::optim {

namespace {
// The optimizer's own refusal, said to come from backward(): the user called backward(), not step().
template <class Fn>
void refused_in_backward(const Optimizer& opt, Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    throw Error(fmt::format("backward: InBackward({}) refused the step: {}", opt.name(), e.what()));
  }
}
}  // namespace

struct InBackward::Hook final : InBackwardHook {
  Optimizer* opt = nullptr;  // null once the optimizer is gone
  std::int64_t steps = 0;

  void before() override {
    if (opt != nullptr) refused_in_backward(*opt, [&] { InBackward::check(*opt); });
  }
  void prepare() override {
    if (opt == nullptr) return;
    refused_in_backward(*opt, [&] {
      InBackward::check(*opt);
      InBackward::prepare(*opt);
    });
  }
  void apply() noexcept override {
    if (opt == nullptr) return;
    InBackward::update(*opt);
    ++steps;
  }
};

void InBackward::check(Optimizer& opt) {
  opt.check_held();
  opt.check_step();
}

void InBackward::prepare(Optimizer& opt) { opt.prepare(); }

void InBackward::update(Optimizer& opt) noexcept {
  opt.update();
  // The gradients were applied: drop them, so the next backward starts from none (the state a
  // refused backward restores) and nothing is kept between steps.
  opt.zero_grad();
}

InBackward::InBackward(Optimizer& opt) {
  const std::string who = fmt::format("InBackward({})", opt.name());
  if (opt.in_backward_ != nullptr) throw Error(who + ": this optimizer is already applied in backward by another InBackward");
  for (std::size_t g = 0; g < opt.num_groups(); ++g)
    for (std::size_t i = 0; i < opt.params(g).size(); ++i) {
      const Parameter& p = opt.params(g)[i];
      const std::string at = fmt::format("{}: Parameter {} (group {} position {})", who, param_label(p), g, i);
      if (p.impl().in_backward)
        throw Error(at + " is already applied in backward by another optimizer; a Parameter is updated by one");
      if (p.impl().sharding)
        throw Error(at + " is a shard of a sharded table (dist::shard_rows): its gradients reach their owners "
                         "through DataParallel::reduce_gradients() after backward, so use step()");
      if (p.has_grad())
        throw Error(at + " holds a gradient from an earlier backward; call zero_grad() first (in this mode each "
                         "backward's gradient is applied and dropped)");
    }
  // Nothing below throws but allocation, and nothing is visible until the loop that cannot throw.
  auto hook = std::make_shared<Hook>();
  hook->opt = &opt;
  std::vector<std::weak_ptr<TensorImpl>> params;
  for (std::size_t g = 0; g < opt.num_groups(); ++g)
    for (const Parameter& p : opt.params(g)) params.push_back(p.value().impl_ptr());
  for (std::size_t g = 0; g < opt.num_groups(); ++g)
    for (const Parameter& p : opt.params(g)) p.impl().in_backward = hook;
  hook_ = std::move(hook);
  params_ = std::move(params);
  opt.in_backward_ = this;
}

InBackward::~InBackward() { detach(); }

void InBackward::detach() noexcept {
  if (hook_ == nullptr) return;
  for (const auto& w : params_)
    if (auto t = w.lock(); t && t->in_backward == hook_) t->in_backward.reset();
  params_.clear();
  if (hook_->opt != nullptr) hook_->opt->in_backward_ = nullptr;
  hook_->opt = nullptr;  // a backward still holding the hook does nothing with it
}

void InBackward::retarget(Optimizer& moved_to) noexcept {
  if (hook_ != nullptr) hook_->opt = &moved_to;
}

std::int64_t InBackward::steps() const { return hook_ == nullptr ? 0 : hook_->steps; }

Optimizer* InBackward::optimizer() const { return hook_ == nullptr ? nullptr : hook_->opt; }

}  // namespace hitch::optim
