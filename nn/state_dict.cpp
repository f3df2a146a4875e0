// hitch/nn/state_dict.cpp: state_dict / load_state_dict (see state_dict.h). Matching is
// nn/tie_match.h's, shared with checkpoint files; as there, everything is checked before the
// first write, and the writes (copies into existing storage) cannot fail.
#include <hitch/nn/state_dict.h>

#include <cstring>
#include <set>
#include <span>
#include <vector>

#include <fmt/format.h>

#include <hitch/nn/tie_match.h>

namespace hitch::nn {

namespace {

std::span<const std::byte> as_bytes(const Tensor& t) {
  return std::as_bytes(t.values());
}

}  // namespace

StateDict state_dict(const Module& module) {
  const detail::ModuleNames names = detail::module_names(module);
  StateDict sd;
  for (const auto& [name, p] : names.first) sd.tensors.emplace(name, p.value().clone());
  for (const auto& [first, others] : names.others)
    for (const std::string& other : others) sd.ties.emplace(other, first);
  return sd;
}

IncompatibleKeys load_state_dict(Module& module, const StateDict& sd, bool strict) {
  for (const auto& [alias, target] : sd.ties) {
    if (sd.tensors.count(target) == 0)
      throw Error(fmt::format("load_state_dict: the state dict ties '{}' to '{}', which is not one of its tensors",
                              alias, target));
    if (sd.tensors.count(alias) != 0)
      throw Error(fmt::format("load_state_dict: the state dict holds '{}' both as a tensor and as a tie of '{}'",
                              alias, target));
  }
  const detail::ModuleNames names = detail::module_names(module);
  std::map<std::string, detail::StoredTensor> stored;
  for (const auto& [name, t] : sd.tensors)
    stored.emplace(name, t.defined() ? detail::StoredTensor{"F32", t.shape(), as_bytes(t)} : detail::StoredTensor{});
  const detail::TieMatch m = detail::match_ties(names, stored, sd.ties, "the state dict");
  if (const std::string problems = m.problems(strict); !problems.empty())
    throw Error("load_state_dict: the state dict does not match the module: " + problems);

  // A hand-built StateDict may hold the module's own storages, even under swapped names
  // ({"a": b.weight, "b": a.weight}): a source that is the storage of another Parameter written
  // here is copied before the first write, so no write reads a value an earlier one replaced.
  std::set<const Storage*> written;
  for (const auto& [p, name] : m.writes) written.insert(p.impl().storage.get());
  std::vector<Tensor> sources;
  for (const auto& [p, name] : m.writes) {
    const Tensor& src = sd.tensors.at(name);
    const Storage* from = src.impl().storage.get();
    sources.push_back(written.count(from) != 0 && from != p.impl().storage.get() ? src.clone() : src);
  }
  for (std::size_t i = 0; i < m.writes.size(); ++i) {
    const Tensor& src = sources[i];
    Parameter dst = m.writes[i].first;
    // memmove: sd may hold the Parameter's own storage (a hand-built StateDict).
    if (src.numel() > 0) std::memmove(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(float));
    dst.bump_version();
  }
  return {m.missing, m.unexpected};
}

}  // namespace hitch::nn
