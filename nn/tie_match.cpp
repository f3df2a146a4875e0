// hitch/nn/tie_match.cpp: module names with ties, and matching stored tensors against them
// (see tie_match.h).
#include <hitch/nn/tie_match.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>

#include <fmt/format.h>

namespace hitch::nn::detail {

namespace {

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
  // Every name, member order (refuses hidden aliases); the first one reaching a Parameter is its key.
  for (const auto& [name, p] : module.named_parameters(/*remove_duplicate=*/false)) {
    auto [it, fresh] = names.name_of.emplace(p.id(), name);
    if (fresh)
      names.first.emplace_back(name, p);
    else
      names.others[it->second].push_back(name);
  }
  return names;
}

std::vector<std::string> ModuleNames::all_names(const std::string& first_name) const {
  std::vector<std::string> all{first_name};
  if (auto it = others.find(first_name); it != others.end())
    all.insert(all.end(), it->second.begin(), it->second.end());
  return all;
}

std::string ModuleNames::label(const std::string& first_name) const {
  std::vector<std::string> q;
  for (const std::string& n : all_names(first_name)) q.push_back("'" + n + "'");
  return join(q, " = ");
}

std::string TieMatch::problems(bool strict) const {
  std::vector<std::string> out;
  if (strict && !missing.empty()) out.push_back("missing keys " + quoted_list(missing));
  if (strict && !unexpected.empty()) out.push_back("unexpected keys " + quoted_list(unexpected));
  out.insert(out.end(), mismatches.begin(), mismatches.end());
  return join(out, "; ");
}

std::string first_difference(std::span<const std::byte> a, std::span<const std::byte> b) {
  if (a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0)) return {};
  for (std::size_t i = 0; i + sizeof(float) <= std::min(a.size(), b.size()); i += sizeof(float)) {
    if (std::memcmp(a.data() + i, b.data() + i, sizeof(float)) == 0) continue;
    float x = 0.0f, y = 0.0f;
    std::memcpy(&x, a.data() + i, sizeof x);
    std::memcpy(&y, b.data() + i, sizeof y);
    // Values that print alike (NaNs with other payloads) are told apart by their bits.
    if (fmt::format("{}", x) == fmt::format("{}", y)) {
      std::uint32_t bx = 0, by = 0;
      std::memcpy(&bx, &x, sizeof bx);
      std::memcpy(&by, &y, sizeof by);
      return fmt::format("element {}: {} (bits {:#010x}) and {} (bits {:#010x})", i / sizeof(float), x, bx, y, by);
    }
    return fmt::format("element {}: {} and {}", i / sizeof(float), x, y);
  }
  return fmt::format("{} and {} bytes", a.size(), b.size());  // unreachable for equal shapes
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
    const std::vector<std::string> all = names.all_names(first);
    // The distinct stored tensors this Parameter's names lead to, each with the first module name
    // that led there. A further name of a tie that is absent from the file is filled from the tie
    // (transformers' layout); the Parameter is missing only if no name is found.
    std::vector<std::pair<std::string, std::string>> reached;  // stored name, via
    for (const std::string& name : all) {
      const std::string s = stored_name(name);
      if (s.empty()) continue;
      used.insert(name);
      if (std::none_of(reached.begin(), reached.end(), [&](const auto& r) { return r.first == s; }))
        reached.emplace_back(s, name);
    }
    if (reached.empty()) {
      m.missing.insert(m.missing.end(), all.begin(), all.end());
      continue;
    }
    bool ok = true;
    for (const auto& [stored, via] : reached) {
      used.insert(stored);
      if (auto [it, fresh] = reached_from.emplace(stored, via); !fresh) {
        m.mismatches.push_back(fmt::format("{} ties '{}' and '{}' to one tensor '{}', but in the module they are "
                                           "two separate Parameters",
                                           where, it->second, via, stored));
        ok = false;
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
        continue;
      ok = false;
    }
    if (!ok) continue;
    // One Parameter stored under two names (PyTorch's state_dict layout): accepted when bitwise
    // equal, since either copy then gives the same model.
    for (std::size_t k = 1; k < reached.size(); ++k) {
      const std::string diff = first_difference(tensors.at(reached[0].first).bytes, tensors.at(reached[k].first).bytes);
      if (diff.empty()) continue;
      m.mismatches.push_back(fmt::format("'{}' and '{}' are one Parameter in the module, but two tensors in {} "
                                         "whose values differ ({})",
                                         reached[0].second, reached[k].second, where, diff));
      ok = false;
    }
    if (ok) m.writes.emplace_back(p, reached[0].first);
  }
  for (const auto& [name, e] : tensors)
    if (used.count(name) == 0) m.unexpected.push_back(name);
  for (const auto& [alias, target] : ties)
    if (used.count(alias) == 0) m.unexpected.push_back(alias);
  return m;
}

}  // namespace hitch::nn::detail
