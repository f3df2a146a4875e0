// hitch/nn/tie_match.cpp: module names with ties, and matching stored tensors against them
// (see tie_match.h).
#include "nn/tie_match.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace hitch::nn::detail {

namespace {

struct AllNames final : Module::Members {
  std::string prefix;
  std::vector<std::pair<std::string, Parameter>> out;
  void param(std::string_view name, const Parameter& p) override {
    if (p.defined()) out.emplace_back(prefix + std::string(name), p);
  }
  void module(std::string_view name, const Module& m) override {
    const std::string saved = prefix;
    prefix += std::string(name) + ".";
    m.members(*this);
    prefix = saved;
  }
};

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::vector<std::string> q;
  for (const std::string& n : names) q.push_back("'" + n + "'");
  return join(q, ", ");
}

}  // namespace

ModuleNames module_names(const Module& module) {
  ModuleNames names;
  names.first = module.named_parameters();  // refuses hidden aliases
  for (const auto& [name, p] : names.first) names.name_of.emplace(p.id(), name);
  AllNames all;
  module.members(all);
  for (const auto& [name, p] : all.out) {
    const std::string& first = names.name_of.at(p.id());
    auto& others = names.others[first];
    if (name != first && std::find(others.begin(), others.end(), name) == others.end()) others.push_back(name);
  }
  return names;
}

std::string TieMatch::problems() const {
  std::vector<std::string> out;
  if (!missing.empty()) out.push_back("missing keys " + quoted_list(missing));
  if (!unexpected.empty()) out.push_back("unexpected keys " + quoted_list(unexpected));
  out.insert(out.end(), mismatches.begin(), mismatches.end());
  return join(out, "; ");
}

TieMatch match_ties(const ModuleNames& names, const std::map<std::string, StoredTensor>& tensors,
                    const std::map<std::string, std::string>& ties, std::string_view where) {
  auto stored_name = [&](const std::string& name) -> std::string {
    if (tensors.count(name) != 0) return name;
    auto it = ties.find(name);
    return it == ties.end() ? std::string() : it->second;
  };

  TieMatch m;
  std::set<std::string> used;                       // stored tensors and tie names the module asked for
  std::map<std::string, std::string> reached_from;  // stored name -> module name that reached it
  for (const auto& [first, p] : names.first) {
    std::vector<std::string> all{first};
    if (auto it = names.others.find(first); it != names.others.end())
      all.insert(all.end(), it->second.begin(), it->second.end());
    std::string stored, via;  // the tensor this Parameter reads, and the module name that led there
    for (const std::string& name : all) {
      const std::string s = stored_name(name);
      if (s.empty()) {
        m.missing.push_back(name);
        continue;
      }
      used.insert(name);
      if (stored.empty()) {
        stored = s, via = name;
      } else if (s != stored) {
        m.mismatches.push_back(fmt::format(
            "'{}' and '{}' are one Parameter in the module, but two tensors in {}", via, name, where));
      }
    }
    if (stored.empty()) continue;
    used.insert(stored);
    if (auto [it, fresh] = reached_from.emplace(stored, via); !fresh) {
      m.mismatches.push_back(fmt::format("{} ties '{}' and '{}' to one tensor '{}', but in the module they are "
                                         "two separate Parameters",
                                         where, it->second, via, stored));
      continue;
    }
    const StoredTensor& e = tensors.at(stored);
    if (e.dtype.empty())
      m.mismatches.push_back(fmt::format("'{}' is an undefined tensor", stored));
    else if (e.dtype != "F32")
      m.mismatches.push_back(fmt::format("'{}' has dtype {}, but hitch Parameters are F32", stored, e.dtype));
    else if (e.shape != p.shape())
      m.mismatches.push_back(fmt::format("'{}' has shape {} in {} and {} in the module", stored,
                                         shape_str(e.shape), where, shape_str(p.shape())));
    else
      m.writes.emplace_back(p, stored);
  }
  for (const auto& [name, e] : tensors)
    if (used.count(name) == 0) m.unexpected.push_back(name);
  for (const auto& [alias, target] : ties)
    if (used.count(alias) == 0) m.unexpected.push_back(alias);
  return m;
}

}  // namespace hitch::nn::detail
