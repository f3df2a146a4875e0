// hitch/nn/checkpoint.cpp: module checkpoints on top of nn/safetensors (see checkpoint.h).
//
// Loading is two phases: match everything in the file against the module, the optimizer and the
// generator, collecting what to write (and every problem); then write. The only step of the
// second phase that can still refuse is the optimizer's own check of the lrs and the state values
// (Optimizer::restore, all-or-nothing); it runs first, and the writes after it (memcpy into the
// Parameters, the generator's state) cannot fail, so a refused load changes nothing.
#include <hitch/nn/checkpoint.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include <hitch/nn/safetensors.h>
#include <hitch/nn/tie_match.h>

namespace hitch::nn {

namespace {

constexpr std::string_view kOptimPrefix = "optim.";
constexpr std::string_view kGeneratorPrefix = "generator.";
constexpr std::string_view kTiePrefix = "hitch.tie.";

bool reserved(std::string_view name) { return name.starts_with(kOptimPrefix) || name.starts_with(kGeneratorPrefix); }

template <class T>
std::span<const std::byte> bytes_of(const T* data, std::size_t n) {
  return std::as_bytes(std::span<const T>(data, n));
}

template <class T>
T read_scalar(std::span<const std::byte> bytes) {
  T value{};
  std::memcpy(&value, bytes.data(), sizeof value);
  return value;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

using detail::ModuleNames;

// The module's names and ties (nn/tie_match.h), refusing names checkpoints reserve.
ModuleNames module_names(std::string_view who, const Module& module) {
  ModuleNames names = detail::module_names(module);
  for (const auto& [name, p] : names.first) {
    if (reserved(name))
      throw Error(fmt::format("{}: the module's Parameter '{}' has a name starting with '{}' or '{}', which "
                              "checkpoints reserve for optimizer and generator state",
                              who, name, kOptimPrefix, kGeneratorPrefix));
  }
  return names;
}

// Every Parameter of the optimizer must have a name in the module.
void check_optimizer_in_module(std::string_view who, const optim::Optimizer& opt, const ModuleNames& names) {
  for (std::size_t g = 0; g < opt.num_groups(); ++g)
    for (std::size_t i = 0; i < opt.params(g).size(); ++i)
      if (names.name_of.count(opt.params(g)[i].id()) == 0)
        throw Error(fmt::format("{}: the optimizer's Parameter {} (group {} position {}) is not a Parameter of the "
                                "module, so its state has no name in the file",
                                who, optim::param_label(opt.params(g)[i]), g, i));
}

// ---- matching a file against the module, the generator and the optimizer --------------------

struct ParamWrite {
  Parameter p;
  std::span<const std::byte> bytes;
};

struct ModuleWrite {
  std::vector<ParamWrite> writes;
  IncompatibleKeys keys;  // missing and unexpected keys (a non-strict load returns them)
};

std::string dtype_shape(const SafetensorsEntry& e) { return e.dtype + " " + shape_str(e.shape); }

// hitch's own ties: "hitch.tie.<further name>" -> stored name.
std::map<std::string, std::string> hitch_ties(const std::string& who, const Safetensors& st,
                                              const std::map<std::string, const SafetensorsEntry*>& tensors) {
  std::map<std::string, std::string> ties;
  for (const auto& [key, target] : st.metadata) {
    if (!key.starts_with(kTiePrefix)) continue;
    const std::string alias = key.substr(kTiePrefix.size());
    if (tensors.count(target) == 0)
      throw Error(fmt::format("{}: the metadata ties '{}' to '{}', which is not a tensor in the file", who, alias,
                              target));
    if (tensors.count(alias) != 0)
      throw Error(fmt::format("{}: the file holds '{}' both as a tensor and as a tie of '{}'", who, alias, target));
    ties.emplace(alias, target);
  }
  return ties;
}

// The aliases of a file another tool wrote (safetensors.torch.save_model: "<removed name>":
// "<kept name>"). An entry is an alias when its key is a name of the module or its value names a
// tensor of the file; other entries ("format": "pt", notes) are left alone. Each alias must name
// a stored Parameter tensor directly; an alias whose name is also stored must agree with it
// bitwise (then it adds nothing and is dropped).
std::map<std::string, std::string> foreign_ties(const std::string& who, const Safetensors& st,
                                                const std::map<std::string, const SafetensorsEntry*>& tensors,
                                                const ModuleNames& names) {
  std::set<std::string> module_names;
  for (const auto& [first, p] : names.first)
    for (const std::string& n : names.all_names(first)) module_names.insert(n);
  auto is_alias = [&](const std::string& key, const std::string& value) {
    return !key.starts_with("hitch.") && key != value && (module_names.count(key) != 0 || st.find(value) != nullptr);
  };
  std::map<std::string, std::string> ties;
  for (const auto& [key, value] : st.metadata) {
    if (!is_alias(key, value)) continue;
    if (auto next = st.metadata.find(value); next != st.metadata.end() && is_alias(value, next->second))
      throw Error(fmt::format("{}: the metadata maps '{}' to '{}', which it maps on to '{}': an alias chain (each "
                              "alias must name a stored tensor directly, as save_model writes them)",
                              who, key, value, next->second));
    auto target = tensors.find(value);
    if (target == tensors.end()) {
      const std::string what = st.find(value) != nullptr        ? "optimizer or generator state, not a Parameter"
                               : value == "__metadata__"        ? "the header's metadata, not a tensor"
                               : st.metadata.count(value) != 0 ? "a metadata key, not a tensor"
                                                                : "not a tensor in the file";
      throw Error(fmt::format("{}: the metadata maps '{}' to '{}', which is {}", who, key, value, what));
    }
    if (auto same = tensors.find(key); same != tensors.end()) {
      const SafetensorsEntry& a = *same->second;
      const SafetensorsEntry& b = *target->second;
      const std::string diff = a.dtype != b.dtype || a.shape != b.shape
                                   ? fmt::format("of {}, where '{}' is {}", dtype_shape(a), value, dtype_shape(b))
                                   : detail::first_difference(a.bytes, b.bytes);
      if (!diff.empty())
        throw Error(fmt::format("{}: the metadata maps '{}' to '{}', but the file also holds '{}' as a tensor {}", who,
                                key, value, key,
                                diff.starts_with("of ") ? diff : "whose values differ (" + diff + ")"));
      continue;  // the same tensor twice: (d) covers it
    }
    ties.emplace(key, value);
  }
  return ties;
}

ModuleWrite match_module(const std::string& who, const Safetensors& st, const ModuleNames& names, bool strict) {
  std::map<std::string, const SafetensorsEntry*> tensors;  // the module section of the file
  for (const SafetensorsEntry& e : st.tensors)
    if (!reserved(e.name)) tensors.emplace(e.name, &e);
  const std::map<std::string, std::string> file_ties = st.metadata.count("hitch.checkpoint") != 0
                                                           ? hitch_ties(who, st, tensors)
                                                           : foreign_ties(who, st, tensors, names);
  std::map<std::string, detail::StoredTensor> stored;
  for (const auto& [name, e] : tensors) stored.emplace(name, detail::StoredTensor{e->dtype, e->shape, e->bytes});
  detail::TieMatch m = detail::match_ties(names, stored, file_ties, "the file");
  for (const SafetensorsEntry& e : st.tensors)
    if (e.name.starts_with(kGeneratorPrefix) && e.name != "generator.state" && e.name != "generator.spare")
      m.unexpected.push_back(e.name);
  if (const std::string problems = m.problems(strict); !problems.empty())
    throw Error(who + " does not match the module: " + problems);
  ModuleWrite out;
  for (const auto& [p, name] : m.writes) out.writes.push_back({p, tensors.at(name)->bytes});
  out.keys = {m.missing, m.unexpected};
  return out;
}

struct GeneratorWrite {
  std::array<std::uint64_t, 4> state{};
  std::optional<double> spare;
};

GeneratorWrite match_generator(const std::string& who, const Safetensors& st) {
  const SafetensorsEntry* state = st.find("generator.state");
  const SafetensorsEntry* spare = st.find("generator.spare");
  if (state == nullptr || spare == nullptr)
    throw Error(who + ": the file has no generator state ('generator.state' and 'generator.spare'); it was saved "
                      "without a generator");
  if (state->dtype != "U64" || state->shape != Shape{4})
    throw Error(fmt::format("{}: 'generator.state' must be U64 [4], but it is {} {}", who, state->dtype,
                            shape_str(state->shape)));
  if (spare->dtype != "F64" || spare->shape.size() != 1 || spare->shape[0] > 1)
    throw Error(fmt::format("{}: 'generator.spare' must be F64 [0] or F64 [1], but it is {} {}", who, spare->dtype,
                            shape_str(spare->shape)));
  GeneratorWrite out;
  std::memcpy(out.state.data(), state->bytes.data(), sizeof out.state);
  if (out.state == std::array<std::uint64_t, 4>{})
    throw Error(who + ": 'generator.state' is all zero, a state xoshiro256** never reaches");
  if (spare->shape[0] == 1) out.spare = read_scalar<double>(spare->bytes);
  return out;
}

struct OptimizerWrite {
  optim::StateRecords records;
  std::vector<double> lrs;
};

std::string metadata_value(const std::string& who, const Safetensors& st, const std::string& key) {
  auto it = st.metadata.find(key);
  if (it == st.metadata.end()) throw Error(fmt::format("{}: the metadata has no '{}'", who, key));
  return it->second;
}

template <class T>
T parse_number(const std::string& who, const std::string& key, const std::string& text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    throw Error(fmt::format("{}: metadata '{}' = '{}' is not a number", who, key, text));
  return value;
}

OptimizerWrite match_optimizer(const std::string& who, const Safetensors& st, const ModuleNames& names,
                               const optim::Optimizer& opt) {
  if (st.metadata.count("hitch.optimizer") == 0)
    throw Error(who + ": the file has no optimizer state; it was saved without an optimizer");
  const std::string kind = st.metadata.at("hitch.optimizer");
  if (kind != opt.name())
    throw Error(fmt::format("{}: the file holds {} state, but the optimizer is {}", who, kind, opt.name()));
  const auto groups =
      parse_number<std::size_t>(who, "hitch.optimizer.groups", metadata_value(who, st, "hitch.optimizer.groups"));
  if (groups != opt.num_groups())
    throw Error(fmt::format("{}: the file's {} has {} parameter groups, but the optimizer has {}", who, kind, groups,
                            opt.num_groups()));
  check_optimizer_in_module(who, opt, names);
  OptimizerWrite out;
  for (std::size_t g = 0; g < groups; ++g) {
    const std::string key = fmt::format("hitch.optimizer.lr.{}", g);
    out.lrs.push_back(parse_number<double>(who, key, metadata_value(who, st, key)));
  }

  // The optimizer's Parameters under EVERY module name, so a tied Parameter's state is found
  // whichever of its names the saving module listed first.
  std::map<std::string, Parameter> mine;
  for (std::size_t g = 0; g < opt.num_groups(); ++g)
    for (const Parameter& p : opt.params(g))
      for (const std::string& n : names.all_names(names.name_of.at(p.id()))) mine.emplace(n, p);
  const std::vector<optim::StateField> fields = opt.state_fields();
  std::vector<std::string> field_names, problems;
  for (const auto& f : fields) field_names.push_back(f.name);
  std::map<std::string, optim::StateRecord> by_name;     // by the name the file uses
  std::map<const void*, std::string> name_in_file;       // Parameter -> that name
  std::set<std::string> reported;
  for (const SafetensorsEntry& e : st.tensors) {
    if (!e.name.starts_with(kOptimPrefix)) continue;
    const std::string rest = e.name.substr(kOptimPrefix.size());
    const auto dot = rest.rfind('.');
    const std::string pname = dot == std::string::npos ? rest : rest.substr(0, dot);
    const std::string fname = dot == std::string::npos ? std::string() : rest.substr(dot + 1);
    auto p = mine.find(pname);
    auto f = std::find_if(fields.begin(), fields.end(), [&](const optim::StateField& x) { return x.name == fname; });
    if (p == mine.end()) {
      problems.push_back(fmt::format("'{}' names '{}', which is not a Parameter of the optimizer", e.name, pname));
      continue;
    }
    const auto [seen, fresh] = name_in_file.emplace(p->second.id(), pname);
    if (!fresh && seen->second != pname) {
      if (reported.insert(pname).second)
        problems.push_back(fmt::format("the file holds state for {} under two of its names, '{}{}' and '{}{}'",
                                       names.label(names.name_of.at(p->second.id())), kOptimPrefix, seen->second,
                                       kOptimPrefix, pname));
    } else if (f == fields.end()) {
      problems.push_back(fmt::format("'{}': {} keeps no field '{}' (its fields: {})", e.name, kind, fname,
                                     join(field_names, ", ")));
    } else if (f->kind == optim::FieldKind::Count) {
      if (e.dtype != "I64" || !e.shape.empty())
        problems.push_back(fmt::format("'{}' must be I64 [], but it is {} {}", e.name, e.dtype, shape_str(e.shape)));
      else
        by_name[pname].counts[fname] = read_scalar<std::int64_t>(e.bytes);
    } else if (e.dtype != "F32" || e.shape != p->second.shape()) {
      problems.push_back(fmt::format("'{}' must be F32 {} (the Parameter's shape), but it is {} {}", e.name,
                                     shape_str(p->second.shape()), e.dtype, shape_str(e.shape)));
    } else {
      std::vector<float> values(e.bytes.size() / sizeof(float));
      std::memcpy(values.data(), e.bytes.data(), e.bytes.size());
      by_name[pname].buffers[fname] = std::move(values);
    }
  }
  for (auto& [pname, record] : by_name) {
    for (const auto& f : fields) {
      const bool present = f.kind == optim::FieldKind::Count ? record.counts.count(f.name) != 0
                                                             : record.buffers.count(f.name) != 0;
      if (!present && f.kind != optim::FieldKind::OptionalBuffer)
        problems.push_back(fmt::format("'{}' has optimizer state but no '{}{}.{}'", pname, kOptimPrefix, pname, f.name));
    }
    out.records.emplace_back(mine.at(pname), std::move(record));
  }
  if (!problems.empty()) throw Error(who + ": the optimizer state does not match: " + join(problems, "; "));
  return out;
}

constexpr std::string_view kSchedulerKey = "hitch.scheduler";

// The scheduler's state from "hitch.scheduler*" metadata, checked by the scheduler itself (kind,
// hyper-parameters, last_epoch, base_lrs) before anything is written.
optim::LRSchedulerState match_scheduler(const std::string& who, const Safetensors& st,
                                        const optim::LRScheduler& scheduler) {
  auto kind = st.metadata.find(std::string(kSchedulerKey));
  if (kind == st.metadata.end())
    throw Error(who + ": the file has no LR scheduler state; it was saved without a scheduler");
  optim::LRSchedulerState state;
  state.kind = kind->second;
  const std::string prefix = std::string(kSchedulerKey) + ".";
  const std::string epoch_key = prefix + "last_epoch", groups_key = prefix + "groups", lr_prefix = prefix + "base_lrs.";
  state.last_epoch = parse_number<std::int64_t>(who, epoch_key, metadata_value(who, st, epoch_key));
  const auto groups = parse_number<std::size_t>(who, groups_key, metadata_value(who, st, groups_key));
  for (std::size_t g = 0; g < groups; ++g) {  // stops at the first missing key: no huge allocation
    const std::string key = lr_prefix + std::to_string(g);
    state.base_lrs.push_back(parse_number<double>(who, key, metadata_value(who, st, key)));
  }
  for (const auto& [key, value] : st.metadata)
    if (key.starts_with(prefix) && key != epoch_key && key != groups_key && !key.starts_with(lr_prefix))
      state.hyper[key.substr(prefix.size())] = parse_number<double>(who, key, value);
  try {
    scheduler.check_state_dict(state);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what());
  }
  return state;
}

}  // namespace

void save_checkpoint(const std::string& path, const Module& module, const CheckpointParts& parts,
                     const std::map<std::string, std::string>& extra_metadata) {
  const std::string who = fmt::format("save_checkpoint: '{}'", path);
  for (const auto& [key, value] : extra_metadata)
    if (key.starts_with("hitch.checkpoint") || key.starts_with(kTiePrefix) || key.starts_with("hitch.optimizer") ||
        key.starts_with(kSchedulerKey))
      throw Error(fmt::format("{}: the metadata key '{}' starts with 'hitch.checkpoint', 'hitch.tie.', "
                              "'hitch.optimizer' or 'hitch.scheduler', which the checkpoint writes itself",
                              who, key));
  const ModuleNames names = module_names(who, module);
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata["hitch.checkpoint"] = "1";
  for (const auto& [first, others] : names.others)
    for (const std::string& other : others) metadata[std::string(kTiePrefix) + other] = first;

  // 8-byte dtypes first, then F32, so every tensor is aligned for its dtype in the file.
  std::vector<SafetensorsTensor> wide, narrow;
  for (const auto& [name, p] : names.first)
    narrow.push_back({name, "F32", p.shape(), bytes_of(p.data(), static_cast<std::size_t>(p.numel()))});

  optim::StateRecords records;  // what the optimizer's tensors point into
  std::vector<std::int64_t> counts;
  if (parts.optimizer != nullptr) {
    const optim::Optimizer& opt = *parts.optimizer;
    check_optimizer_in_module(who, opt, names);
    metadata["hitch.optimizer"] = opt.name();
    metadata["hitch.optimizer.groups"] = std::to_string(opt.num_groups());
    for (std::size_t g = 0; g < opt.num_groups(); ++g)
      metadata[fmt::format("hitch.optimizer.lr.{}", g)] = fmt::format("{}", opt.lr(g));  // shortest exact form
    records = opt.export_state();
    std::size_t total = 0;
    for (const auto& [p, r] : records) total += r.counts.size();
    counts.reserve(total);  // no reallocation: the spans below stay valid
    for (const auto& [p, r] : records) {
      const std::string prefix = fmt::format("{}{}.", kOptimPrefix, names.name_of.at(p.id()));
      for (const auto& [field, value] : r.counts) {
        counts.push_back(value);
        wide.push_back({prefix + field, "I64", {}, bytes_of(&counts.back(), 1)});
      }
      for (const auto& [field, values] : r.buffers)
        narrow.push_back({prefix + field, "F32", p.shape(), bytes_of(values.data(), values.size())});
    }
  }
  if (parts.scheduler != nullptr) {
    const optim::LRSchedulerState state = parts.scheduler->state_dict();
    const std::string prefix = std::string(kSchedulerKey) + ".";
    metadata[std::string(kSchedulerKey)] = state.kind;
    metadata[prefix + "last_epoch"] = std::to_string(state.last_epoch);
    metadata[prefix + "groups"] = std::to_string(state.base_lrs.size());
    for (std::size_t g = 0; g < state.base_lrs.size(); ++g)
      metadata[fmt::format("{}base_lrs.{}", prefix, g)] = fmt::format("{}", state.base_lrs[g]);  // shortest exact
    for (const auto& [key, value] : state.hyper) metadata[prefix + key] = fmt::format("{}", value);
  }
  std::array<std::uint64_t, 4> gen_state{};
  double spare = 0.0;
  if (parts.generator != nullptr) {
    gen_state = parts.generator->state();
    const std::optional<double> pending = parts.generator->spare();
    spare = pending.value_or(0.0);
    wide.push_back({"generator.state", "U64", {4}, bytes_of(gen_state.data(), 4)});
    wide.push_back({"generator.spare", "F64", {pending ? 1 : 0}, bytes_of(&spare, pending ? 1 : 0)});
  }
  wide.insert(wide.end(), narrow.begin(), narrow.end());
  std::string header;
  try {
    header = safetensors_header(wide, metadata);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what());
  }
  write_file_atomically("save_checkpoint", path, header, wide);
}

IncompatibleKeys load_checkpoint(const std::string& path, Module& module, const CheckpointParts& parts,
                                 bool strict) {
  const std::vector<std::byte> bytes = read_whole_file("load_checkpoint", path);
  return load_checkpoint_from_bytes(bytes, module, parts, "'" + path + "'", strict);
}

namespace {

// What a load will write, every check made but the optimizer's own (restore / check_restore).
struct LoadPlan {
  std::string who;
  ModuleWrite module_write;
  std::optional<GeneratorWrite> gen;
  std::optional<OptimizerWrite> opt;
  std::optional<optim::LRSchedulerState> sched;
};

LoadPlan plan_load(std::span<const std::byte> file, const Module& module, const CheckpointParts& parts,
                   std::string_view source, bool strict) {
  LoadPlan plan;
  plan.who = fmt::format("load_checkpoint: {}", source);
  const std::string& who = plan.who;
  Safetensors st;
  try {
    st = parse_safetensors(file);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what());
  }
  const ModuleNames names = module_names(who, module);
  plan.module_write = match_module(who, st, names, strict);
  if (parts.generator != nullptr) plan.gen = match_generator(who, st);
  if (parts.optimizer != nullptr) plan.opt = match_optimizer(who, st, names, *parts.optimizer);
  if (parts.scheduler != nullptr) plan.sched = match_scheduler(who, st, *parts.scheduler);
  return plan;
}

}  // namespace

void check_checkpoint_from_bytes(std::span<const std::byte> file, const Module& module, const CheckpointParts& parts,
                                 std::string_view source, bool strict) {
  const LoadPlan plan = plan_load(file, module, parts, source, strict);
  if (plan.opt) {
    try {
      parts.optimizer->check_restore(plan.opt->lrs, plan.opt->records);
    } catch (const Error& e) {
      throw Error(plan.who + ": " + e.what());
    }
  }
}

IncompatibleKeys load_checkpoint_from_bytes(std::span<const std::byte> file, Module& module,
                                            const CheckpointParts& parts, std::string_view source, bool strict) {
  LoadPlan plan = plan_load(file, module, parts, source, strict);
  const std::string& who = plan.who;
  ModuleWrite& module_write = plan.module_write;
  std::optional<GeneratorWrite>& gen = plan.gen;
  std::optional<OptimizerWrite>& opt = plan.opt;
  std::optional<optim::LRSchedulerState>& sched = plan.sched;

  // Everything matched: write. The optimizer first, as it can still refuse (an lr or a state
  // value out of range, or no memory for the new state); restore() is all-or-nothing, and
  // nothing after it can fail (the scheduler's state was checked above, and loading it copies
  // into vectors of the size they already have).
  if (opt) {
    try {
      parts.optimizer->restore(opt->lrs, opt->records);
    } catch (const Error& e) {
      throw Error(who + ": " + e.what());
    }
  }
  for (const ParamWrite& w : module_write.writes) {
    Parameter p = w.p;
    if (!w.bytes.empty()) std::memcpy(p.data(), w.bytes.data(), w.bytes.size());
    p.bump_version();
  }
  if (gen) {
    parts.generator->set_state(gen->state);
    parts.generator->set_spare(gen->spare);
  }
  if (sched) parts.scheduler->load_state_dict(*sched);
  return std::move(module_write.keys);
}

}  // namespace hitch::nn
