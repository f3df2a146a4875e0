// hitch/nn/module.cpp: parameter listing with deduplication by identity, and naming each
// Parameter by the dotted paths that reach it.
#include <hitch/nn/module.h>

#include <algorithm>
#include <unordered_map>

namespace hitch::nn {

namespace {
// Every (dotted path, Parameter) the members reach, each Parameter once in first-seen order with
// all the paths that reach it (a tied table: one entry, several paths).
struct Collector final : Module::Members {
  struct Entry {
    Parameter param;
    std::vector<std::string> paths;  // member order; paths[0] is its named_parameters() name
  };
  std::string prefix;
  std::vector<Entry> entries;
  std::unordered_map<const void*, std::size_t> index;  // identity -> position in entries
  std::vector<std::pair<std::string, std::size_t>> reached;  // every (path, entry), member order
  void param(std::string_view name, const Parameter& p) override {
    if (!p.defined()) return;
    std::string path = prefix + std::string(name);
    auto [it, fresh] = index.emplace(p.id(), entries.size());
    if (fresh) {
      reached.emplace_back(path, entries.size());
      entries.push_back({p, {std::move(path)}});
      return;
    }
    std::vector<std::string>& paths = entries[it->second].paths;
    if (std::find(paths.begin(), paths.end(), path) != paths.end()) return;
    reached.emplace_back(path, it->second);
    paths.push_back(std::move(path));
  }
  void module(std::string_view name, const Module& m) override {
    const std::string saved = prefix;
    prefix += std::string(name) + ".";
    m.members(*this);
    prefix = saved;
  }
};

struct ModuleWalker final : Module::Members {
  std::vector<const Module*> found;
  void param(std::string_view, const Parameter&) override {}
  void module(std::string_view, const Module& m) override {
    found.push_back(&m);
    m.members(*this);
  }
};
}  // namespace

std::vector<std::pair<std::string, Parameter>> Module::named_parameters(bool remove_duplicate) const {
  Collector c;
  members(c);
  std::vector<Parameter> params;
  std::vector<std::string> labels;  // the names the refusal below uses: the paths, not yet recorded
  for (const auto& e : c.entries) {
    params.push_back(e.param);
    labels.push_back(fmt::format("{}", fmt::join(e.paths, " = ")));
  }
  check_no_hidden_aliases("Module::parameters", params, labels);
  std::vector<std::pair<std::string, Parameter>> named;
  if (remove_duplicate)
    for (const auto& e : c.entries) named.emplace_back(e.paths.front(), e.param);
  else
    for (auto& [path, i] : c.reached) named.emplace_back(std::move(path), c.entries[i].param);
  for (auto& e : c.entries) e.param.record_module_paths(std::move(e.paths));  // every message's name from now on
  return named;
}

std::vector<Parameter> Module::parameters() const {
  std::vector<Parameter> params;
  for (auto& [name, p] : named_parameters()) params.push_back(p);
  return params;
}

void Module::zero_grad(bool set_to_none) {
  for (auto& p : parameters()) p.zero_grad(set_to_none);
}

Module& Module::requires_grad_(bool on) {
  const std::vector<Parameter> params = parameters();  // may throw (hidden aliases): nothing set yet
  for (Parameter p : params) p.set_requires_grad(on);
  return *this;
}

void Module::train(bool on) {
  ModuleWalker w;
  members(w);  // may throw (a user's members()); nothing is set before it returns
  training_ = on;
  // members() sees submodules as const; the flag is the one thing train() changes in them.
  for (const Module* m : w.found) const_cast<Module*>(m)->training_ = on;
}

}  // namespace hitch::nn
