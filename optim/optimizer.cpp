// hitch/optim/optimizer.cpp: the shared optimizer machinery (see optimizer.h).
#include <hitch/optim/optimizer.h>

#include <cmath>
#include <utility>

#include <hitch/optim/in_backward.h>

#include <fmt/format.h>

namespace hitch::optim {

Optimizer::~Optimizer() {
  if (in_backward_ != nullptr) in_backward_->detach();
}

Optimizer::Optimizer(Optimizer&& other) noexcept
    : from_groups_(other.from_groups_),
      constructed_(other.constructed_),
      name_(std::move(other.name_)),
      in_backward_(std::exchange(other.in_backward_, nullptr)) {
  if (in_backward_ != nullptr) in_backward_->retarget(*this);
}

void Optimizer::refuse_in_backward(std::string_view call) const {
  if (in_backward_ != nullptr)
    throw Error(fmt::format("{}::{}: this optimizer is applied in backward (optim::InBackward), so backward() "
                            "updates its Parameters; destroy the InBackward before calling {}()",
                            name_, call, call));
}

void Optimizer::step() {
  refuse_in_backward("step");
  check_held();  // may throw; nothing has been written yet
  check_step();
  prepare();     // may throw (allocation, kMaxStep); nothing visible has changed yet
  update();      // cannot fail
}

void Optimizer::check_held() const {
  for (std::size_t g = 0; g < num_groups(); ++g)
    for (std::size_t i = 0; i < params(g).size(); ++i)
      if (const Parameter& p = params(g)[i]; p.handle_count() <= 1)
        throw Error(fmt::format("{}::step: Parameter {} (group {} position {}) is held by this optimizer only: no "
                                "module or tensor holds it any more, so it can never get a gradient (was it re-tied "
                                "or replaced after the optimizer was built? build the optimizer after tying, from "
                                "model.parameters())",
                                name(), param_label(p), g, i));
      else if (p.impl().sharding && p.impl().sharding->has_unreduced_gradients())
        throw Error(fmt::format("{}::step: Parameter {} (group {} position {}) is a sharded table whose lookups hold "
                                "gradients not yet sent to their owners: call DataParallel::reduce_gradients() after "
                                "backward and before step() (docs/sharding.md)",
                                name(), param_label(p), g, i));
}

void Optimizer::zero_grad(bool set_to_none) {
  for (std::size_t g = 0; g < num_groups(); ++g)
    for (const Parameter& p : params(g)) {
      Parameter handle = p;
      handle.zero_grad(set_to_none);
    }
}

std::string Optimizer::group_suffix(std::size_t group) const {
  return from_groups_ ? fmt::format(" (group {})", group) : std::string();
}

void Optimizer::check_new_group(const std::vector<Parameter>& incoming, std::size_t group) const {
  // Positions of every Parameter already held, by identity.
  std::unordered_map<const void*, std::pair<std::size_t, std::size_t>> seen;
  std::vector<Parameter> all;
  for (std::size_t g = 0; g < num_groups(); ++g)
    for (std::size_t i = 0; i < params(g).size(); ++i) {
      seen.emplace(params(g)[i].id(), std::make_pair(g, i));
      all.push_back(params(g)[i]);
    }
  for (std::size_t i = 0; i < incoming.size(); ++i) {
    const Parameter& p = incoming[i];
    if (!p.defined()) throw Error(fmt::format("{}: group {} position {} is an empty Parameter handle", name(), group, i));
    auto [it, fresh] = seen.emplace(p.id(), std::make_pair(group, i));
    if (!fresh)
      throw Error(fmt::format(
          "{}: Parameter {} appears twice: group {} position {} and group {} position {}; pass each Parameter once "
          "(a tied Parameter is one Parameter)",
          name(), param_label(p), it->second.first, it->second.second, group, i));
    all.push_back(p);
  }
  check_no_hidden_aliases(name(), all);
}

void Optimizer::check_records(const StateRecords& records) const {
  std::unordered_map<const void*, bool> mine;  // Parameter identity -> has a record already
  for (std::size_t g = 0; g < num_groups(); ++g)
    for (const Parameter& p : params(g)) mine.emplace(p.id(), false);
  const std::vector<StateField> fields = state_fields();
  for (std::size_t r = 0; r < records.size(); ++r) {
    const auto& [p, record] = records[r];
    const std::string who = fmt::format("{}: import_state: record {} (Parameter {})", name(), r,
                                        p.defined() ? param_label(p) : "(empty handle)");
    auto it = p.defined() ? mine.find(p.id()) : mine.end();
    if (it == mine.end()) throw Error(who + " is not a Parameter of this optimizer");
    if (it->second) throw Error(who + " appears twice; give each Parameter one record");
    it->second = true;
    std::size_t known_counts = 0, known_buffers = 0;
    for (const StateField& f : fields) {
      if (f.kind == FieldKind::Count) {
        auto c = record.counts.find(f.name);
        if (c == record.counts.end()) throw Error(fmt::format("{} has no count '{}'", who, f.name));
        if (c->second < 0 || c->second > kMaxStep)
          throw Error(fmt::format("{}: count '{}' = {} is out of range (valid: [0, {}] = [0, 2^53])", who, f.name,
                                  c->second, kMaxStep));
        ++known_counts;
        continue;
      }
      auto b = record.buffers.find(f.name);
      if (b == record.buffers.end()) {
        if (f.kind == FieldKind::Buffer) throw Error(fmt::format("{} has no buffer '{}'", who, f.name));
        continue;
      }
      ++known_buffers;
      if (b->second.size() != static_cast<std::size_t>(p.numel()))
        throw Error(fmt::format("{}: buffer '{}' has {} values, but the Parameter has {}", who, f.name,
                                b->second.size(), p.numel()));
      const bool non_negative = f.values == FieldValues::NonNegative;
      for (std::size_t i = 0; i < b->second.size(); ++i) {
        const float v = b->second[i];
        if (!std::isfinite(v) || (non_negative && v < 0.0f))
          throw Error(fmt::format("{}: buffer '{}' has {} at element {}, a value {} never holds (valid: {})", who,
                                  f.name, v, i, name(), non_negative ? "finite and >= 0" : "finite"));
      }
    }
    if (known_counts != record.counts.size() || known_buffers != record.buffers.size()) {
      std::string names;
      for (const StateField& f : fields) names += (names.empty() ? "" : ", ") + f.name;
      throw Error(fmt::format("{} has a field that {} does not keep; its fields are: {}", who, name(), names));
    }
  }
}

void Optimizer::step_limit_error(const Parameter& p, const char* field, std::int64_t value, std::size_t group) const {
  throw Error(fmt::format("{}: Parameter {}{} has {} = {}, the most a state counts (2^53), so it cannot take another "
                          "step",
                          name(), param_label(p), group_suffix(group), field, value));
}

void Optimizer::check_lr_count(std::string_view call, const std::vector<double>& lrs) const {
  if (lrs.size() != num_groups())
    throw Error(fmt::format("{}: {}: got {} lrs, but the optimizer has {} parameter groups", name(), call, lrs.size(),
                            num_groups()));
}

void check_hyper(std::string_view who, std::string_view arg, double value, const Range& range, const std::string& where) {
  const bool above = range.low_open ? value > range.low : value >= range.low;
  const bool below = range.high_open ? value < range.high : value <= range.high;
  if (std::isfinite(value) && above && below) return;
  const std::string valid =
      range.high == std::numeric_limits<double>::max()
          ? fmt::format("finite and {} {}", range.low_open ? ">" : ">=", range.low)
          : fmt::format("in {}{:g}, {:g}{}", range.low_open ? "(" : "[", range.low, range.high, range.high_open ? ")" : "]");
  throw Error(fmt::format("{}: {} must be {}, but got {}{}", who, arg, valid, value, where));
}

std::int64_t row_count(const Parameter& p) { return p.shape().empty() ? 1 : p.shape()[0]; }

std::string param_label(const Parameter& p) { return p.name().empty() ? "(unnamed)" : "'" + p.name() + "'"; }

}  // namespace hitch::optim
