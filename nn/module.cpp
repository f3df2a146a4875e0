// hitch/nn/module.cpp: parameter listing with deduplication by identity.
#include "nn/module.h"

#include <unordered_set>

namespace hitch::nn {

namespace {
struct Collector final : Module::Members {
  std::string prefix;
  std::vector<std::pair<std::string, Parameter>> out;
  std::unordered_set<const void*> seen;
  void param(std::string_view name, const Parameter& p) override {
    if (!p.defined() || !seen.insert(p.id()).second) return;
    out.emplace_back(prefix + std::string(name), p);
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

std::vector<std::pair<std::string, Parameter>> Module::named_parameters() const {
  Collector c;
  members(c);
  std::vector<Parameter> params;
  for (const auto& [name, p] : c.out) params.push_back(p);
  check_no_hidden_aliases("Module::parameters", params);
  return std::move(c.out);
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
