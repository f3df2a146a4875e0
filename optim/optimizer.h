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
//  * a Parameter without a gradient (`!has_grad()`, e.g. after zero_grad(), whose default is
//    set_to_none = true as in PyTorch >= 2.0) is skipped: no decay, no step count. A gradient
//    that is present but all zero (zero_grad(false)) is processed like any other (PyTorch does
//    the same): Adam keeps moving it from its moments, AdamW decays it, t advances;
//  * a frozen Parameter (`requires_grad() == false`) is skipped the same way by every optimizer,
//    whatever gradient it still holds (zero, or non-zero from before it was frozen): no update,
//    no weight decay, no momentum, its state (step counts, buffers) untouched, its gradient not
//    checked. PyTorch's optimizers only look at `p.grad is None`, so there a frozen tensor with a
//    leftover gradient keeps moving (docs/pytorch-differences.md). Unfrozen, it trains again from
//    the state it had;
//  * every call is all-or-nothing, allocation failure included. step() is three phases: check
//    (every group and gradient), prepare (allocate every state buffer and ready every gradient,
//    throwing std::bad_alloc or hitch::Error with nothing visible changed), update (writes only;
//    allocates nothing and cannot fail). add_param_group, set_lr(s), import_state and restore
//    check and build everything first and then commit with operations that cannot throw.
//    Values are written in place and the storage version is bumped; no Parameter is ever rebound
//    to new storage;
//  * an optimizer holds its Parameters by handle, fixed at construction (and add_param_group).
//    Tying or replacing a module's Parameter afterwards does not reach it: step() refuses to run
//    while one of its Parameters is held by nothing but the optimizer itself (the module dropped
//    it, so it can never get a gradient again), naming it; the fix is to build the optimizer after
//    tying (docs/tying.md, "Tying after construction");
//  * every hyper-parameter is checked by one helper, check_hyper (finite and in range), wherever
//    it comes from (constructor, set_lr, options_mut at the next step, add_param_group,
//    checkpoint); every imported state by check_records (only a state the optimizer can reach:
//    counts in [0, kMaxStep], buffers finite, second moments and sums >= 0).
// Checkpoints (nn/checkpoint.h) read and replace the state through export_state/restore.
// Left out on purpose: closures, state_dict, foreach/fused paths, options left "unset" in a group
// (a group carries a complete Options value; the struct's defaults are PyTorch's defaults).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <hitch/core/grad.h>
#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/parameter.h>

namespace hitch::optim {

std::string param_label(const Parameter& p);  // "'emb.weight'" or "(unnamed)"

// The gradient a step uses for p: null if p has none or is frozen (requires_grad() == false),
// so every check, prepare and update of every optimizer skips it. The one place that rule lives.
inline Grad* step_grad(const Parameter& p) { return p.requires_grad() ? p.grad_store() : nullptr; }

// One parameter group: its Parameters and the hyper-parameters that apply to them.
// Adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}, .options = {.lr = 0.1}}, ...}).
template <class Options>
struct ParamGroup {
  std::vector<Parameter> params;
  Options options{};
};

// The largest step count a state holds: 2^53, so t is exact as a double (bias corrections) and
// t + 1 never overflows. A step that would take a Parameter past it is refused (hitch::Error).
constexpr std::int64_t kMaxStep = std::int64_t{1} << 53;

// One field of a Parameter's optimizer state, as a checkpoint stores it: a step count, a float
// buffer of the Parameter's numel, or such a buffer that may be absent (empty in the state).
enum class FieldKind { Count, Buffer, OptionalBuffer };
// The values a reachable state holds in a field: a Count is in [0, kMaxStep]; buffer values are
// finite (Finite) or finite and >= 0 (NonNegative: second moments, Adagrad's sum).
enum class FieldValues { Finite, NonNegative };
struct StateField {
  std::string name;
  FieldKind kind;
  FieldValues values;
};
// One Parameter's state by field name (Count fields in counts, the others in buffers).
struct StateRecord {
  std::map<std::string, std::int64_t> counts;
  std::map<std::string, std::vector<float>> buffers;
};
using StateRecords = std::vector<std::pair<Parameter, StateRecord>>;

class InBackward;  // optim/in_backward.h

// The untyped interface: what zero_grad, clip_grad_norm and the LR schedulers need.
class Optimizer {
 public:
  virtual ~Optimizer();  // an InBackward applying it lets go of its Parameters
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Requires: every hyper-parameter valid, every gradient acceptable to this optimizer (checked
  // before anything is written); not applied in backward (optim/in_backward.h: then backward()
  // steps it, and step() is a hitch::Error). Ensures: each Parameter with a gradient is updated once.
  void step();
  // The InBackward applying this optimizer inside backward, or null (optim/in_backward.h).
  const InBackward* in_backward() const { return in_backward_; }
  // Drops every gradient (set_to_none = true, the default as in PyTorch >= 2.0), so the next
  // step skips the Parameter unless a new gradient arrives; or, with false (PyTorch 1.13's
  // default), zeroes it in place keeping its layout, and the next step still moves the
  // Parameter (momentum, weight decay) unless it is frozen.
  void zero_grad(bool set_to_none = true);

  const std::string& name() const { return name_; }
  virtual std::size_t num_groups() const = 0;
  virtual const std::vector<Parameter>& params(std::size_t group) const = 0;
  virtual double lr(std::size_t group) const = 0;
  virtual void set_lr(std::size_t group, double lr) = 0;  // lr must be valid for this optimizer
  // Every group's lr at once (lrs.size() == num_groups()): all are checked before any is set.
  virtual void set_lrs(const std::vector<double>& lrs) = 0;
  // Number of Parameters that have optimizer state (a tied table counts once).
  virtual std::size_t state_size() const = 0;

  // Checkpoint hooks. The fields of one Parameter's state, in a fixed order.
  virtual std::vector<StateField> state_fields() const = 0;
  // A copy of the state of every Parameter that has one, in group order.
  virtual StateRecords export_state() const = 0;
  // Replaces all state by records. Requires: each record's Parameter is in this optimizer and
  // appears once; Count and Buffer fields present, OptionalBuffer fields absent or present, every
  // buffer of the Parameter's numel, no other field; every value one the optimizer can reach
  // (StateField::values). Checked, and the new state built, before anything changes. A Parameter
  // without a record starts afresh (Adagrad: its initial accumulator; the others: no state).
  virtual void import_state(const StateRecords& records) = 0;
  // set_lrs and import_state as one all-or-nothing call (what load_checkpoint does).
  virtual void restore(const std::vector<double>& lrs, const StateRecords& records) = 0;
  // restore()'s checks alone, in its order and with its messages; changes nothing (what
  // nn::check_checkpoint_from_bytes runs, so every rank of a sharded load can agree first).
  virtual void check_restore(const std::vector<double>& lrs, const StateRecords& records) const = 0;

 protected:
  explicit Optimizer(std::string name) : name_(std::move(name)) {}
  Optimizer(Optimizer&& other) noexcept;  // an InBackward follows the optimizer to its new place
  // Throws while an InBackward applies this optimizer: "SGD::add_param_group: ...".
  void refuse_in_backward(std::string_view call) const;

  // Throws unless `incoming` can join the existing groups as group `group`: no undefined handle,
  // no Parameter given twice (here or in an earlier group), no hidden alias among all of them.
  void check_new_group(const std::vector<Parameter>& incoming, std::size_t group) const;
  // " (group 1)" when the options came from a list of groups, "" for a plain parameter list.
  std::string group_suffix(std::size_t group) const;
  // import_state, part 1: throws hitch::Error naming the Parameter, the field and, for a value
  // out of range, its position, value and the valid range; writes nothing.
  void check_records(const StateRecords& records) const;
  // prepare(): "Adam: Parameter 'w' has step = 2^53 ..., so it cannot take another step".
  [[noreturn]] void step_limit_error(const Parameter& p, const char* field, std::int64_t value,
                                     std::size_t group) const;
  // set_lrs / restore, part 1: lrs.size() == num_groups(); each lr is checked by the caller.
  void check_lr_count(std::string_view call, const std::vector<double>& lrs) const;
  // step(), part 1: throws if this step must be refused; writes nothing.
  virtual void check_step() const = 0;
  // step()'s first check: every Parameter is still held by something besides this optimizer.
  void check_held() const;
  // step(), part 2: allocates everything the update needs (state buffers, gradient walks). May
  // throw (std::bad_alloc, or hitch::Error at kMaxStep) with nothing visible changed.
  virtual void prepare() = 0;
  // step(), part 3: the update of every Parameter that has a gradient. Allocates nothing and
  // cannot fail.
  virtual void update() = 0;

  bool from_groups_ = false;  // set by constructors that took a list of groups
  bool constructed_ = false;  // set once the constructor's groups are installed

 private:
  friend class InBackward;  // runs the check / prepare / update phases from inside backward()
  std::string name_;
  InBackward* in_backward_ = nullptr;
};

// The typed layer: groups with their Options, and one State per Parameter, keyed by identity.
// A derived optimizer provides check_options (hyper-parameter validation), check_step and update.
template <class Options, class State>
class OptimizerWith : public Optimizer {
 public:
  std::size_t num_groups() const override { return groups_.size(); }
  const std::vector<Parameter>& params(std::size_t group) const override { return group_at("params", group).params; }
  double lr(std::size_t group) const override { return group_at("lr", group).options.lr; }
  void set_lr(std::size_t group, double lr) override {
    Options o = group_at("set_lr", group).options;
    o.lr = lr;
    check_options(o, group_suffix(group));
    groups_[group].options.lr = lr;
  }
  void set_lrs(const std::vector<double>& lrs) override {
    check_lrs("set_lrs", lrs);
    for (std::size_t g = 0; g < groups_.size(); ++g) groups_[g].options.lr = lrs[g];
  }
  std::size_t state_size() const override { return state_.size(); }

  // Checkpoint hooks, generic over State::for_each_field(state, f), which calls
  // f(name, field, FieldKind) for each field (std::int64_t for a Count, std::vector<float> else).
  std::vector<StateField> state_fields() const override {
    std::vector<StateField> out;
    State probe;
    State::for_each_field(probe, [&](const char* name, auto&, FieldKind kind, FieldValues values) {
      out.push_back({name, kind, values});
    });
    return out;
  }
  StateRecords export_state() const override {
    StateRecords out;
    for (const auto& group : groups_)
      for (const Parameter& p : group.params) {
        auto it = state_.find(p.id());
        if (it == state_.end()) continue;
        StateRecord record;
        State::for_each_field(it->second, [&](const char* name, const auto& field, FieldKind kind, FieldValues) {
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
    StateMap fresh = built_state(records);  // checks and allocates; nothing changed if it throws
    state_.swap(fresh);
  }
  void check_restore(const std::vector<double>& lrs, const StateRecords& records) const override {
    check_lrs("restore", lrs);
    check_records(records);
  }
  void restore(const std::vector<double>& lrs, const StateRecords& records) override {
    check_lrs("restore", lrs);
    StateMap fresh = built_state(records);
    for (std::size_t g = 0; g < groups_.size(); ++g) groups_[g].options.lr = lrs[g];  // cannot throw
    state_.swap(fresh);
  }

  // The options in force for a group. Changes made through options_mut() are validated again
  // at the next step().
  const Options& options(std::size_t group = 0) const { return group_at("options", group).options; }
  Options& options_mut(std::size_t group = 0) {
    return const_cast<ParamGroup<Options>&>(group_at("options_mut", group)).options;
  }

  // Requires: the options are valid and no Parameter is already in this optimizer (nor one this
  // optimizer cannot take, e.g. a 0-d Parameter for SparseAdam). All-or-nothing: checks, then
  // builds the group's state (Adagrad), then commits with operations that cannot throw.
  void add_param_group(ParamGroup<Options> group) {
    refuse_in_backward("add_param_group");
    const std::size_t index = groups_.size();
    const std::string where = " (group " + std::to_string(index) + ")";
    check_options(group.options, where);
    check_new_group(group.params, index);
    check_group(group, where);
    StateMap fresh;
    initial_state(group, fresh);
    groups_.reserve(index + 1);
    state_.reserve(state_.size() + fresh.size());
    // Nothing below throws: a move into reserved capacity, nodes spliced into reserved buckets.
    from_groups_ = true;
    groups_.push_back(std::move(group));
    state_.merge(fresh);
  }

  // The state of p, or null if p has none yet (no step with a gradient so far).
  const State* state(const Parameter& p) const {
    auto it = state_.find(p.id());
    return it == state_.end() ? nullptr : &it->second;
  }

 protected:
  explicit OptimizerWith(std::string name) : Optimizer(std::move(name)) {}
  // groups_[group], or hitch::Error naming the call, the group and the valid range.
  const ParamGroup<Options>& group_at(const char* call, std::size_t group) const {
    if (group >= groups_.size())
      throw Error(fmt::format("{}::{}: group {} is out of range (valid: [0, {}))", name(), call, group, groups_.size()));
    return groups_[group];
  }
  // Derived constructors call one of these (a virtual check_options is not reachable from the
  // base constructor). Requires: a non-empty list; valid options; each Parameter once.
  void install(const std::vector<Parameter>& params, const Options& options) {
    if (params.empty()) throw Error(name() + ": got an empty parameter list");
    check_options(options, "");
    check_new_group(params, 0);
    ParamGroup<Options> group{params, options};
    check_group(group, "");
    initial_state(group, state_);
    groups_.push_back(std::move(group));
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
      check_group(g, group_suffix(groups_.size()));
      groups_.push_back(std::move(g));
    }
    for (const auto& g : groups_) initial_state(g, state_);
    constructed_ = true;
  }

  using StateMap = std::unordered_map<const void*, State>;

  // Throws hitch::Error naming this optimizer, the argument, its value and the valid range
  // (each hyper-parameter through check_hyper).
  virtual void check_options(const Options& options, const std::string& where) const = 0;
  // Throws unless this optimizer can take every Parameter of group (SparseAdam: rank >= 1).
  virtual void check_group(const ParamGroup<Options>&, const std::string& /*where*/) const {}
  // The state a Parameter gets when it joins, into out (Adagrad: eagerly, like PyTorch; the
  // others create theirs at the first step with a gradient, in prepare_param).
  virtual void initial_state(const ParamGroup<Options>&, StateMap& /*out*/) const {}
  // step(), part 2 for one Parameter that has a gradient: readies the gradient for update()'s
  // walk (coalesce or prepare_walk: its representation, never its value) and returns the state
  // the update needs if `current` (null: none yet) lacks a buffer, or nothing. Only allocates.
  virtual std::optional<State> prepare_param(const Parameter& p, const Options& options,
                                             const State* current) const = 0;

  void prepare() override {
    (void)get_num_threads();  // creates the thread pool, if this is hitch's first parallel work
    StateMap fresh;                                  // for Parameters without state
    std::vector<std::pair<State*, State>> replaced;  // for state that lacks a buffer
    for (std::size_t gi = 0; gi < groups_.size(); ++gi)
      for (const Parameter& p : groups_[gi].params) {
        if (step_grad(p) == nullptr) continue;
        auto it = state_.find(p.id());
        State* current = it == state_.end() ? nullptr : &it->second;
        if (current != nullptr) check_step_limit(p, *current, gi);
        std::optional<State> needed = prepare_param(p, groups_[gi].options, current);
        if (!needed) continue;
        if (current != nullptr) replaced.emplace_back(current, std::move(*needed));
        else fresh.emplace(p.id(), std::move(*needed));
      }
    state_.reserve(state_.size() + fresh.size());  // rehashing keeps the State* above valid
    // Nothing below throws: moves of vectors, nodes spliced into the buckets reserved above.
    for (auto& [to, from] : replaced) *to = std::move(from);
    state_.merge(fresh);
  }
  void check_all_options() const {
    for (std::size_t g = 0; g < groups_.size(); ++g) check_options(groups_[g].options, group_suffix(g));
  }
  // For options with weight_decay (SGD, Adagrad): L2 decay reads the whole tensor, so a sparse
  // gradient with weight_decay != 0 is refused, as PyTorch does.
  void check_no_sparse_weight_decay() const {
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      const double wd = groups_[gi].options.weight_decay;
      for (const Parameter& p : groups_[gi].params) {
        const Grad* grad = step_grad(p);
        if (grad != nullptr && grad->is_sparse() && wd != 0.0)
          throw Error(fmt::format("{}: weight_decay is not supported with sparse gradients, but Parameter {} has a "
                                  "sparse gradient and weight_decay = {}{}; use weight_decay = 0 or dense lookups "
                                  "(sparse = false)",
                                  name(), param_label(p), wd, group_suffix(gi)));
      }
    }
  }

  // update(): the state prepare() made for p (never allocates).
  State& state_at(const Parameter& p) {
    auto it = state_.find(p.id());
    if (it == state_.end()) throw InternalError(name() + ": update() reached a Parameter without state");
    return it->second;
  }

  std::vector<ParamGroup<Options>> groups_;
  StateMap state_;

 private:
  void check_lrs(std::string_view call, const std::vector<double>& lrs) const {
    check_lr_count(call, lrs);
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      Options o = groups_[g].options;
      o.lr = lrs[g];
      check_options(o, group_suffix(g));
    }
  }
  // The state import_state installs: every group's initial state, then the records (checked).
  StateMap built_state(const StateRecords& records) const {
    check_records(records);
    StateMap out;
    for (const auto& g : groups_) initial_state(g, out);
    for (const auto& entry : records) {
      const StateRecord& record = entry.second;  // not a structured binding: clang-14 cannot capture one
      State s;
      State::for_each_field(s, [&](const char* name, auto& field, FieldKind, FieldValues) {
        if constexpr (std::is_same_v<std::decay_t<decltype(field)>, std::int64_t>) {
          field = record.counts.at(name);
        } else {
          auto it = record.buffers.find(name);
          if (it != record.buffers.end()) field = it->second;
        }
      });
      out.insert_or_assign(entry.first.id(), std::move(s));
    }
    return out;
  }
  // A Parameter whose count is at kMaxStep cannot take another step.
  void check_step_limit(const Parameter& p, const State& s, std::size_t group) const {
    State::for_each_field(s, [&](const char* field_name, const auto& field, FieldKind, FieldValues) {
      if constexpr (std::is_same_v<std::decay_t<decltype(field)>, std::int64_t>)
        if (field >= kMaxStep) step_limit_error(p, field_name, field, group);
    });
  }
};

// ---- helpers shared by the update kernels (check_hyper is in optim/optimizer.cpp) ------------

// The valid values of a hyper-parameter: finite and in [low, high] (low_open / high_open make
// that end exclusive). NaN and infinities are outside every range.
struct Range {
  double low;
  double high = std::numeric_limits<double>::max();
  bool low_open = false;
  bool high_open = false;
};
inline constexpr Range kNonNegative{0.0};                                          // finite, >= 0
inline constexpr Range kPositive{0.0, std::numeric_limits<double>::max(), true};   // finite, > 0
inline constexpr Range kUnitInterval{0.0, 1.0, false, true};                      // [0, 1)
inline constexpr Range kClosedUnitInterval{0.0, 1.0};                             // [0, 1]
// The one hyper-parameter check, used by every optimizer's check_options (so by constructors,
// set_lr(s), add_param_group, step() and checkpoint loads) and by the LR schedulers:
// "Adam: lr must be finite and >= 0, but got inf (group 1)", "Adam: betas[0] must be in [0, 1),
// but got 1".
void check_hyper(std::string_view who, std::string_view arg, double value, const Range& range, const std::string& where);

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
// fn is passed by reference, so this allocates nothing (see parallel_for).
template <class Fn>
void parallel_elements(std::size_t n, Fn&& fn) {
  parallel_for(n, kParallelMinFloats, std::ref(fn));
}

// Rows of p as a parameter [rows, width]: shape[0] rows (1 for a 0-d Parameter).
std::int64_t row_count(const Parameter& p);

}  // namespace hitch::optim
