// hitch/core/parameter.h: Parameter, a trainable leaf with one identity.
//
// A Parameter is a shared handle: copying it shares the same TensorImpl, and that is how tying
// is expressed (two modules holding copies of one Parameter use one table, one gradient and,
// in an optimizer, one state). Optimizers write the values in place; nothing rebinds a
// Parameter to new storage. Its gradient accumulates across backward calls until zero_grad().
//
// alias_of() is the one way to make a second Parameter over the same storage: PyTorch's
// `from_pretrained(emb.weight)` pitfall, kept for teaching. Module::parameters() and every
// optimizer refuse two distinct Parameters sharing storage unless the alias was also marked
// with allow_alias(): studying the pitfall takes two deliberate steps.
#pragma once

#include <string>
#include <vector>

#include <hitch/core/grad.h>
#include <hitch/core/tensor.h>

namespace hitch {

class Parameter {
 public:
  Parameter() = default;
  // Copies the values of initial into new storage. The result requires grad.
  Parameter(std::string name, const Tensor& initial);
  // The same, but takes initial's storage over (no copy) when nothing else can see it: a
  // temporary with one handle, its storage unshared, no gradient, not recorded. A big table is
  // then never in memory twice. Otherwise copies, as above.
  Parameter(std::string name, Tensor&& initial);
  // A new Parameter (own identity, own gradient) over other's storage: the pitfall. Modules and
  // optimizers refuse it until allow_alias() is called on it.
  static Parameter alias_of(const Parameter& other, std::string name);
  Parameter& allow_alias() { impl().alias_opt_in = true; return *this; }

  bool defined() const { return impl_ != nullptr; }
  Tensor value() const { return Tensor(impl_); }  // the leaf itself, for ops
  operator Tensor() const { return value(); }
  const Shape& shape() const { return impl().shape; }
  std::int64_t numel() const { return value().numel(); }
  float* data() { return value().data(); }
  const float* data() const { return impl().storage->data.data(); }

  // The name every message, format_graph and anomaly report uses. It starts as the name the
  // Parameter was made with ("weight" for a module-made one) and stays that until a module walk
  // (nn/module.h: parameters(), named_parameters() and everything built on them: optimizers
  // given model.parameters(), state_dict, checkpoints, zero_grad, requires_grad_) records the
  // dotted paths under which the module tree holds it. From then on it is those paths joined by
  // " = " in the module's member order: "emb.weight", or for a tie "emb.weight = head.weight".
  // It is a label, never a key: named_parameters(), state_dict and checkpoint keys are single
  // dotted paths. set_name() replaces it until the next walk that records different paths.
  const std::string& name() const { return impl().name; }
  void set_name(std::string name) { impl().name = std::move(name); }
  // The dotted paths the last recording walk found (member order), empty if no walk saw it.
  const std::vector<std::string>& module_paths() const { return impl().module_paths; }
  // Called by module walks. Records paths (each a full dotted path from the walk's root) and
  // renames the Parameter to them joined by " = ", unless every one of them is a proper dot-suffix
  // of a path already recorded ("weight" of "emb.weight"): that is a walk from a submodule
  // (model.emb.parameters()), which must not replace the longer names the whole model gave. A
  // walk from another root (a second model holding the same table) replaces them. A walk that
  // finds one undotted path (it began at the module holding the Parameter directly, e.g. an
  // Embedding on its own) records nothing: "weight" would say less than the made-with name. Writes only
  // when something changes, so repeated walks of one model are reads; a walk that renames is a
  // write to the Parameter, so do not walk one module tree from two threads at once.
  void record_module_paths(std::vector<std::string> paths);
  bool requires_grad() const { return impl().requires_grad; }
  // false freezes it: ops record nothing for it and no optimizer step moves it, whatever
  // gradient it still holds (optim/optimizer.h). Every module holding it sees the same flag.
  void set_requires_grad(bool on) { impl().requires_grad = on; }
  Parameter& requires_grad_(bool on = true) {  // PyTorch's spelling; returns *this
    set_requires_grad(on);
    return *this;
  }

  bool has_grad() const;   // something was accumulated since the last zero_grad(true)
  Tensor grad() const;     // densified; undefined if none
  Grad* grad_store() const { return impl().grad.get(); }  // null if none
  // set_to_none = true (the default, as in PyTorch >= 2.0) drops the gradient, so an optimizer
  // skips this Parameter until a new one arrives; false (PyTorch 1.13's default) zeroes it in
  // place and keeps the layout (an optimizer then still steps it: Adam from its moments, decay).
  void zero_grad(bool set_to_none = true);

  // hook sees every contribution to this Parameter's gradient during backward, with the node
  // it came from, before it is added (PyTorch's leaf hooks only see the sum). Returns an id for
  // remove_grad_hook.
  int add_grad_hook(GradHook hook);
  void remove_grad_hook(int id);

  bool is_same(const Parameter& other) const { return impl_ == other.impl_; }
  const void* id() const { return impl_.get(); }
  // How many handles (Parameter copies, tensors, graph nodes) share this Parameter. An optimizer
  // refuses to step a Parameter that only it still holds (optim/optimizer.h: re-tied or replaced).
  long handle_count() const { return impl_.use_count(); }
  bool shares_storage_with(const Parameter& other) const;
  bool alias_opt_in() const { return impl().alias_opt_in; }
  // In-place writes by optimizers and renormalisation go through here so the version moves.
  void bump_version() { ++impl().storage->version; }

  TensorImpl& impl() const;

 private:
  explicit Parameter(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<TensorImpl> impl_;
};

// Throws hitch::Error naming where (who) and both names if two distinct Parameters in params
// share storage without the alias_of opt-in. Used by Module::parameters() and optimizers. names,
// if given (one per Parameter), replaces their name() in the message: Module::parameters() passes
// the dotted paths it found, as it refuses before recording them.
void check_no_hidden_aliases(std::string_view who, const std::vector<Parameter>& params,
                             const std::vector<std::string>& names = {});

}  // namespace hitch

// fmt::print("{}", p): PyTorch's print(nn.Parameter) with the name first,
// "Parameter 'items' containing:\ntensor([...], shape=[2,3], requires_grad)" (the values as
// to_string(Tensor) prints them, summarised past 1,000 elements); "Parameter(undefined)".
template <>
struct fmt::formatter<hitch::Parameter> : fmt::formatter<std::string_view> {
  auto format(const hitch::Parameter& p, fmt::format_context& ctx) const {
    const std::string s = p.defined()
                              ? fmt::format("Parameter '{}' containing:\n{}", p.name(), hitch::to_string(p.value()))
                              : std::string("Parameter(undefined)");
    return fmt::formatter<std::string_view>::format(s, ctx);
  }
};
