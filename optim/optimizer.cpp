// hitch/optim/optimizer.cpp: the shared optimizer machinery (see optimizer.h).
#include "optim/optimizer.h"

#include <fmt/format.h>

namespace hitch::optim {

void Optimizer::step() {
  check_step();  // may throw; nothing has been written yet
  update();
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
        if (record.counts.count(f.name) == 0) throw Error(fmt::format("{} has no count '{}'", who, f.name));
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
    }
    if (known_counts != record.counts.size() || known_buffers != record.buffers.size()) {
      std::string names;
      for (const StateField& f : fields) names += (names.empty() ? "" : ", ") + f.name;
      throw Error(fmt::format("{} has a field that {} does not keep; its fields are: {}", who, name(), names));
    }
  }
}

void check_at_least(std::string_view who, std::string_view arg, double value, double low, const std::string& where) {
  if (!(value >= low)) throw Error(fmt::format("{}: {} must be >= {}, but got {}{}", who, arg, low, value, where));
}

void check_positive(std::string_view who, std::string_view arg, double value, const std::string& where) {
  if (!(value > 0.0)) throw Error(fmt::format("{}: {} must be > 0, but got {}{}", who, arg, value, where));
}

void check_unit_interval(std::string_view who, std::string_view arg, double value, const std::string& where) {
  if (!(value >= 0.0 && value < 1.0))
    throw Error(fmt::format("{}: {} must be in [0, 1), but got {}{}", who, arg, value, where));
}

std::int64_t row_count(const Parameter& p) { return p.shape().empty() ? 1 : p.shape()[0]; }

std::string param_label(const Parameter& p) { return p.name().empty() ? "(unnamed)" : "'" + p.name() + "'"; }

}  // namespace hitch::optim
