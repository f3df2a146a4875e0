// hitch/optim/optimizer.h: what every optimizer shares: parameter groups, the per-Parameter state
// map, the duplicate and alias checks, step() = check everything, then update, and zero_grad().
//
// The rules that make weight tying work (docs/optim.md has the formulas and every difference
// from PyTorch 1.13):
//  * each Parameter is given once. The same Parameter twice, in one group or across groups, is a
//    hitch::Error naming both positions (PyTorch only warns inside a group and then updates the
//    Parameter twice). Two distinct Parameters over one storage (Parameter::alias_of) are refused
//    unless the alias carries allow_alias();
//  * state is keyed by Parameter identity (Parameter::id()), never kept in a vector parallel to a
//    parameter list, so a tied table has one state however many modules hold it;
//  * a Parameter without a gradient (`!has_grad()`, e.g. after zero_grad(true)) is skipped: no
//    decay, no step count. A gradient that is present but all zero is processed like any other
//    (PyTorch does the same): Adam keeps moving it from its moments, AdamW decays it, t advances;
//  * step() checks every group and every gradient before it writes anything, so a rejected step
//    changes nothing. Values are written in place and the storage version is bumped; no
//    Parameter is ever rebound to new storage.
// Checkpoints (nn/checkpoint.h) read and replace the state through export_state/import_state.
// Left out on purpose: closures, state_dict, foreach/fused paths, options left "unset" in a group
// (a group carries a complete Options value; the struct's defaults are PyTorch's defaults).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/grad.h"
#include "core/parallel.h"
#include "core/parameter.h"

namespace hitch::optim {

std::string param_label(const Parameter& p);  // "'emb.weight'" or "(unnamed)"

// One parameter group: its Parameters and the hyper-parameters that apply to them.
// Adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}, .options = {.lr = 0.1}}, ...}).
template <class Options>
struct ParamGroup {
  std::vector<Parameter> params;
  Options options{};
};

// One field of a Parameter's optimizer state, as a checkpoint stores it: a step count, a float
// buffer of the Parameter's numel, or such a buffer that may be absent (empty in the state).
enum class FieldKind { Count, Buffer, OptionalBuffer };
struct StateField {
  std::string name;
  FieldKind kind;
};
// One Parameter's state by field name (Count fields in counts, the others in buffers).
struct StateRecord {
  std::map<std::string, std::int64_t> counts;
  std::map<std::string, std::vector<float>> buffers;
};
using StateRecords = std::vector<std::pair<Parameter, StateRecord>>;

// The untyped interface: what zero_grad, clip_grad_norm and the LR schedulers need.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Requires: every hyper-parameter valid, every gradient acceptable to this optimizer (checked
  // before anything is written). Ensures: each Parameter with a gradient is updated once.
  void step();
  // Zeroes every gradient in place (keeping its layout) or, with set_to_none, drops it so the
  // next step skips the Parameter unless a new gradient arrives.
  void zero_grad(bool set_to_none = false);

  const std::string& name() const { return name_; }
  virtual std::size_t num_groups() const = 0;
  virtual const std::vector<Parameter>& params(std::size_t group) const = 0;
  virtual double lr(std::size_t group) const = 0;
  virtual void set_lr(std::size_t group, double lr) = 0;  // lr must be valid for this optimizer
  // Number of Parameters that have optimizer state (a tied table counts once).
  virtual std::size_t state_size() const = 0;

  // Checkpoint hooks. The fields of one Parameter's state, in a fixed order.
  virtual std::vector<StateField> state_fields() const = 0;
  // A copy of the state of every Parameter that has one, in group order.
  virtual StateRecords export_state() const = 0;
  // Replaces all state by records. Requires: each record's Parameter is in this optimizer and
  // appears once; Count and Buffer fields present, OptionalBuffer fields absent or present, every
  // buffer of the Parameter's numel, no other field. Checked before anything changes. A Parameter
  // without a record starts afresh (Adagrad: its initial accumulator; the others: no state).
  virtual void import_state(const StateRecords& records) = 0;

 protected:
  explicit Optimizer(std::string name) : name_(std::move(name)) {}
  Optimizer(Optimizer&&) = default;

  // Throws unless `incoming` can join the existing groups as group `group`: no undefined handle,
  // no Parameter given twice (here or in an earlier group), no hidden alias among all of them.
  void check_new_group(const std::vector<Parameter>& incoming, std::size_t group) const;
  // " (group 1)" when the options came from a list of groups, "" for a plain parameter list.
  std::string group_suffix(std::size_t group) const;
  // import_state, part 1: throws hitch::Error naming the Parameter and the field; writes nothing.
  void check_records(const StateRecords& records) const;
  // step(), part 1: throws if this step must be refused; writes nothing.
  virtual void check_step() const = 0;
  // step(), part 2: the update, for one group's Parameters that have a gradient.
  virtual void update() = 0;

  bool from_groups_ = false;  // set by constructors that took a list of groups
  bool constructed_ = false;  // set once the constructor's groups are installed

 private:
  std::string name_;
};

// The typed layer: groups with their Options, and one State per Parameter, keyed by identity.
// A derived optimizer provides check_options (hyper-parameter validation), check_step and update.
template <class Options, class State>
class OptimizerWith : public Optimizer {
 public:
  std::size_t num_groups() const override { return groups_.size(); }
  const std::vector<Parameter>& params(std::size_t group) const override { return groups_.at(group).params; }
  double lr(std::size_t group) const override { return groups_.at(group).options.lr; }
  void set_lr(std::size_t group, double lr) override {
    Options o = groups_.at(group).options;
    o.lr = lr;
    check_options(o, group_suffix(group));
    groups_[group].options.lr = lr;
  }
  std::size_t state_size() const override { return state_.size(); }

  // Checkpoint hooks, generic over State::for_each_field(state, f), which calls
  // f(name, field, FieldKind) for each field (std::int64_t for a Count, std::vector<float> else).
  std::vector<StateField> state_fields() const override {
    std::vector<StateField> out;
    State probe;
    State::for_each_field(probe, [&](const char* name, auto&, FieldKind kind) { out.push_back({name, kind}); });
    return out;
  }
  StateRecords export_state() const override {
    StateRecords out;
    for (const auto& group : groups_)
      for (const Parameter& p : group.params) {
        auto it = state_.find(p.id());
        if (it == state_.end()) continue;
        StateRecord record;
        State::for_each_field(it->second, [&](const char* name, const auto& field, FieldKind kind) {
          if constexpr (std::is_same_v<std::decay_t<decltype(field)>, std::int64_t>)
            record.counts[name] = field;
          else if (kind == FieldKind::Buffer || !field.empty())
            record.buffers[name] = field;
        });
        out.emplace_back(p, std::move(record));
      }
    return out;
  }
  void import_state(const StateRecords& records) override {
    check_records(records);
    state_.clear();
    for (const auto& g : groups_) on_group_added(g);  // Adagrad's eager state
    for (const auto& entry : records) {
      const StateRecord& record = entry.second;  // not a structured binding: clang-14 cannot capture one
      State s;
      State::for_each_field(s, [&](const char* name, auto& field, FieldKind) {
        if constexpr (std::is_same_v<std::decay_t<decltype(field)>, std::int64_t>) {
          field = record.counts.at(name);
        } else {
          auto it = record.buffers.find(name);
          if (it != record.buffers.end()) field = it->second;
        }
      });
      state_[entry.first.id()] = std::move(s);
    }
  }

  // The options in force for a group. Changes made through options_mut() are validated again
  // at the next step().
  const Options& options(std::size_t group = 0) const { return groups_.at(group).options; }
  Options& options_mut(std::size_t group = 0) { return groups_.at(group).options; }

  // Requires: the options are valid and no Parameter is already in this optimizer.
  void add_param_group(ParamGroup<Options> group) {
    check_options(group.options, " (group " + std::to_string(groups_.size()) + ")");
    check_new_group(group.params, groups_.size());
    from_groups_ = true;
    groups_.push_back(std::move(group));
    on_group_added(groups_.back());
  }

  // The state of p, or null if p has none yet (no step with a gradient so far).
  const State* state(const Parameter& p) const {
    auto it = state_.find(p.id());
    return it == state_.end() ? nullptr : &it->second;
  }

 protected:
  explicit OptimizerWith(std::string name) : Optimizer(std::move(name)) {}
  // Derived constructors call one of these (a virtual check_options is not reachable from the
  // base constructor). Requires: a non-empty list; valid options; each Parameter once.
  void install(const std::vector<Parameter>& params, const Options& options) {
    if (params.empty()) throw Error(name() + ": got an empty parameter list");
    check_options(options, "");
    check_new_group(params, 0);
    groups_.push_back(ParamGroup<Options>{params, options});
    on_group_added(groups_.back());
    constructed_ = true;
  }
  void install(std::vector<ParamGroup<Options>> groups) {
    from_groups_ = true;
    std::size_t total = 0;
    for (const auto& g : groups) total += g.params.size();
    if (total == 0) throw Error(name() + ": got an empty parameter list");
    for (auto& g : groups) {
      check_options(g.options, group_suffix(groups_.size()));
      check_new_group(g.params, groups_.size());
      groups_.push_back(std::move(g));
    }
    for (const auto& g : groups_) on_group_added(g);
    constructed_ = true;
  }

  // Throws hitch::Error naming this optimizer, the argument, its value and the valid range.
  virtual void check_options(const Options& options, const std::string& where) const = 0;
  // Adagrad creates its state here (eagerly, like PyTorch); the others create it lazily.
  virtual void on_group_added(const ParamGroup<Options>&) {}
  void check_all_options() const {
    for (std::size_t g = 0; g < groups_.size(); ++g) check_options(groups_[g].options, group_suffix(g));
  }
  // For options with weight_decay (SGD, Adagrad): L2 decay reads the whole tensor, so a sparse
  // gradient with weight_decay != 0 is refused, as PyTorch does.
  void check_no_sparse_weight_decay() const {
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      const double wd = groups_[gi].options.weight_decay;
      for (const Parameter& p : groups_[gi].params) {
        const Grad* grad = p.grad_store();
        if (grad != nullptr && grad->is_sparse() && wd != 0.0)
          throw Error(fmt::format("{}: weight_decay is not supported with sparse gradients, but Parameter {} has a "
                                  "sparse gradient and weight_decay = {}{}; use weight_decay = 0 or dense lookups "
                                  "(sparse = false)",
                                  name(), param_label(p), wd, group_suffix(gi)));
      }
    }
  }

  State& state_for(const Parameter& p) { return state_[p.id()]; }
  bool has_state(const Parameter& p) const { return state_.count(p.id()) != 0; }

  std::vector<ParamGroup<Options>> groups_;
  std::unordered_map<const void*, State> state_;
};

// ---- helpers shared by the update kernels (optim/optimizer.cpp) --------------------------------

// Validation: "Adam: lr must be >= 0, but got -0.1 (group 1)". NaN fails every check.
void check_at_least(std::string_view who, std::string_view arg, double value, double low, const std::string& where);
void check_positive(std::string_view who, std::string_view arg, double value, const std::string& where);
void check_unit_interval(std::string_view who, std::string_view arg, double value, const std::string& where);

// Row-wise walk of a dense parameter [rows, width] against a coalesced row-sparse gradient (rows
// sorted and unique): touched(first_row, values, count) for each run of consecutive rows present
// in the gradient (values = their count*width gradient floats), untouched(first_row, count) for
// each run of absent rows. Lets a kernel run "as if dense" without building an N x D temporary.
template <class Touched, class Untouched>
void for_each_row_run(std::span<const std::int64_t> grad_rows, const float* grad_values, std::int64_t rows,
                      std::size_t width, Touched&& touched, Untouched&& untouched) {
  std::int64_t next = 0;  // first row not yet visited
  std::size_t k = 0;
  while (k < grad_rows.size()) {
    const std::int64_t first = grad_rows[k];
    if (first > next) untouched(next, first - next);
    std::size_t end = k + 1;
    while (end < grad_rows.size() && grad_rows[end] == grad_rows[end - 1] + 1) ++end;
    touched(first, grad_values + k * width, static_cast<std::int64_t>(end - k));
    next = first + static_cast<std::int64_t>(end - k);
    k = end;
  }
  if (next < rows) untouched(next, rows - next);
}

// The gradient of p "as if dense", without building a dense copy: dense(offset, g, n) for ranges
// that have gradient values, zero(offset, n) for ranges whose gradient is 0 (rows absent from a
// sparse gradient, or all of an empty one). Offsets and counts are in floats. Coalesces a sparse
// gradient first (duplicates summed).
template <class DenseRun, class ZeroRun>
void for_each_dense_run(Grad& grad, std::size_t numel, DenseRun&& dense, ZeroRun&& zero) {
  if (grad.empty()) {
    zero(std::size_t{0}, numel);
  } else if (!grad.is_sparse()) {
    dense(std::size_t{0}, static_cast<const float*>(grad.dense().data()), numel);  // the stored tensor, no copy
  } else {
    grad.coalesce();
    const auto width = static_cast<std::size_t>(grad.row_width());
    const std::int64_t rows = width == 0 ? 0 : static_cast<std::int64_t>(numel / width);
    for_each_row_run(
        grad.rows(), grad.row_values().data(), rows, width,
        [&](std::int64_t first, const float* g, std::int64_t count) {
          dense(static_cast<std::size_t>(first) * width, g, static_cast<std::size_t>(count) * width);
        },
        [&](std::int64_t first, std::int64_t count) {
          zero(static_cast<std::size_t>(first) * width, static_cast<std::size_t>(count) * width);
        });
  }
}

// fn(begin, end) over [0, n) elements, split over get_num_threads() threads when n is large
// (chunks of at least kParallelMinFloats elements). Elementwise kernels give the same bits for any split.
template <class Fn>
void parallel_elements(std::size_t n, Fn&& fn) {
  parallel_for(n, kParallelMinFloats, fn);
}

// Rows of p as a parameter [rows, width]: shape[0] rows (1 for a 0-d Parameter).
std::int64_t row_count(const Parameter& p);

}  // namespace hitch::optim
