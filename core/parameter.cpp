// hitch/core/parameter.cpp: Parameter handles and the hidden-alias check.
#include <hitch/core/parameter.h>

#include <algorithm>

namespace hitch {

Parameter::Parameter(std::string name, const Tensor& initial) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = initial.shape();
  impl->storage = std::make_shared<Storage>();
  impl->storage->data.assign(initial.values().begin(), initial.values().end());
  impl->requires_grad = true;
  impl->is_parameter = true;
  impl->name = std::move(name);
  impl_ = std::move(impl);
}

Parameter::Parameter(std::string name, Tensor&& initial) {
  const bool sole = initial.defined() && initial.impl_ptr().use_count() == 1 &&
                    initial.impl().storage.use_count() == 1 && !initial.impl().grad_fn && !initial.impl().grad &&
                    !initial.impl().is_parameter;
  if (!sole) {
    *this = Parameter(std::move(name), static_cast<const Tensor&>(initial));
    return;
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = initial.shape();
  impl->storage = std::move(initial.impl().storage);
  impl->requires_grad = true;
  impl->is_parameter = true;
  impl->name = std::move(name);
  impl_ = std::move(impl);
  initial = Tensor();  // the moved-from handle no longer refers to the storage
}

Parameter Parameter::alias_of(const Parameter& other, std::string name) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = other.impl().shape;
  impl->storage = other.impl().storage;  // the same values: the pitfall, on purpose
  impl->requires_grad = true;
  impl->is_parameter = true;
  impl->name = std::move(name);
  return Parameter(std::move(impl));
}

TensorImpl& Parameter::impl() const {
  if (!impl_) throw Error("Parameter: use of an empty Parameter handle");
  return *impl_;
}

bool Parameter::has_grad() const { return impl().grad != nullptr; }

Tensor Parameter::grad() const {
  if (!impl().grad) return {};
  return impl().grad->dense();
}

void Parameter::zero_grad(bool set_to_none) {
  if (set_to_none)
    impl().grad.reset();
  else if (impl().grad)
    impl().grad->zero();
  if (impl().sharding) impl().sharding->zero_grad(set_to_none);  // lookups not yet reduced (dist/sharded.h)
}

int Parameter::add_grad_hook(GradHook hook) {
  const int id = impl().next_hook_id++;
  impl().grad_hooks.emplace_back(id, std::move(hook));
  return id;
}

void Parameter::remove_grad_hook(int id) {
  std::erase_if(impl().grad_hooks, [id](const auto& h) { return h.first == id; });
}

bool Parameter::shares_storage_with(const Parameter& other) const { return impl().storage == other.impl().storage; }

void Parameter::record_module_paths(std::vector<std::string> paths) {
  TensorImpl& t = impl();
  // One undotted path: the walk began at the module that holds it directly (an Embedding on its
  // own): "weight" says less than the name it was made with, which stays.
  if (paths.empty() || (paths.size() == 1 && paths[0].find('.') == std::string::npos)) return;
  auto proper_dot_suffix = [](const std::string& longer, const std::string& path) {
    return longer.size() > path.size() && longer.ends_with(path) && longer[longer.size() - path.size() - 1] == '.';
  };
  const bool from_submodule = std::all_of(paths.begin(), paths.end(), [&](const std::string& path) {
    return std::any_of(t.module_paths.begin(), t.module_paths.end(),
                       [&](const std::string& known) { return proper_dot_suffix(known, path); });
  });
  if (from_submodule) return;  // keep the whole model's longer paths
  if (t.module_paths == paths) return;  // unchanged (every walk of one model): a read only
  t.name = fmt::format("{}", fmt::join(paths, " = "));
  t.module_paths = std::move(paths);
}

void check_no_hidden_aliases(std::string_view who, const std::vector<Parameter>& params,
                             const std::vector<std::string>& names) {
  auto name_of = [&](std::size_t i) -> const std::string& {
    return names.size() == params.size() ? names[i] : params[i].name();
  };
  for (std::size_t i = 0; i < params.size(); ++i)
    for (std::size_t j = i + 1; j < params.size(); ++j) {
      const Parameter& a = params[i];
      const Parameter& b = params[j];
      if (a.is_same(b) || !a.shares_storage_with(b) || a.alias_opt_in() || b.alias_opt_in()) continue;
      throw Error(fmt::format(
          "{}: Parameters '{}' (position {}) and '{}' (position {}) are two distinct Parameters over the same "
          "storage, so they would get two gradients and two optimizer states; to tie them, pass the same Parameter "
          "to both modules (to study the pitfall on purpose, call allow_alias() on the alias)",
          who, name_of(i), i, name_of(j), j));
    }
}

}  // namespace hitch
