// Issue 12, findings 7 and 8 for the optimizers: every hyper-parameter is finite and in range
// wherever it enters (constructor, set_lr, set_lrs, add_param_group, options_mut at the next
// step, LR schedulers; checkpoints in test_checkpoint_catalog.cpp), an imported state must be one
// the optimizer can reach, and every refused call changes nothing (groups, lrs, state, values).
// Allocation failure inside step(): tests/alloc_failure/test_optim_alloc_failure.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <hitch/hitch.h>
#include "optim_helpers.h"

using namespace hitch;
using namespace hitch::optim;
using namespace optim_test;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Parameter make(const std::string& name, std::vector<float> values) {
  const auto n = static_cast<std::int64_t>(values.size());
  return Parameter(name, Tensor({n / 2, 2}, std::move(values)));
}

// Everything a refused call must leave as it was.
struct Snapshot {
  const Optimizer& opt;
  std::size_t groups;
  std::vector<double> lrs;
  StateRecords state;
  std::size_t state_size;
  std::vector<std::vector<float>> values;
  std::vector<Parameter> params;

  explicit Snapshot(const Optimizer& o)
      : opt(o), groups(o.num_groups()), state(o.export_state()), state_size(o.state_size()) {
    for (std::size_t g = 0; g < groups; ++g) {
      lrs.push_back(o.lr(g));
      for (const Parameter& p : o.params(g)) {
        params.push_back(p);
        values.push_back(values_of(p));
      }
    }
  }
  void check() const {
    REQUIRE(opt.num_groups() == groups);
    for (std::size_t g = 0; g < groups; ++g) CHECK(opt.lr(g) == lrs[g]);
    CHECK(opt.state_size() == state_size);
    const StateRecords now = opt.export_state();
    REQUIRE(now.size() == state.size());
    for (std::size_t i = 0; i < now.size(); ++i) {
      CHECK(now[i].first.is_same(state[i].first));
      CHECK(now[i].second.counts == state[i].second.counts);
      CHECK(now[i].second.buffers == state[i].second.buffers);
    }
    for (std::size_t i = 0; i < params.size(); ++i) CHECK(values_of(params[i]) == values[i]);
  }
};

#define CHECK_REFUSED(opt, expr, message)                \
  do {                                                   \
    const Snapshot snap_(opt);                           \
    CHECK_THROWS_WITH_AS(expr, message, hitch::Error);   \
    snap_.check();                                       \
  } while (false)

}  // namespace

TEST_CASE("optimizer validation: infinite and NaN hyper-parameters are refused by every entry point") {
  Parameter w = make("w", {1, 2, 3, 4});
  // Constructors.
  CHECK_THROWS_WITH_AS(SGD({w}, {.lr = kInf}), "SGD: lr must be finite and >= 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.momentum = kInf}), "SGD: momentum must be finite and >= 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.dampening = std::nan("")}), "SGD: dampening must be in [0, 1], but got nan",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.dampening = 1.5}), "SGD: dampening must be in [0, 1], but got 1.5", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.weight_decay = kInf}), "SGD: weight_decay must be finite and >= 0, but got inf",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.lr = -kInf}), "Adam: lr must be finite and >= 0, but got -inf", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.eps = kInf}), "Adam: eps must be finite and >= 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.weight_decay = kInf}), "Adam: weight_decay must be finite and >= 0, but got inf",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(AdamW({w}, {.lr = kInf}), "AdamW: lr must be finite and >= 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(Adagrad({w}, {.lr_decay = kInf}), "Adagrad: lr_decay must be finite and >= 0, but got inf",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(Adagrad({w}, {.initial_accumulator_value = 1e39}),
                       "Adagrad: initial_accumulator_value must be in [0, 3.40282e+38], but got 1e+39", hitch::Error);
  CHECK_THROWS_WITH_AS(SparseAdam({w}, {.lr = kInf}), "SparseAdam: lr must be finite and > 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(SparseAdam({w}, {.eps = std::nan("")}), "SparseAdam: eps must be finite and > 0, but got nan",
                       hitch::Error);

  // set_lr, set_lrs, add_param_group: refused, nothing changed.
  Parameter v = make("v", {5, 6, 7, 8});
  SGD sgd({w}, {.lr = 0.1, .momentum = 0.9});
  set_dense_grad(w, {1, 1, 1, 1});
  sgd.step();
  CHECK_REFUSED(sgd, sgd.set_lr(0, kInf), "SGD: lr must be finite and >= 0, but got inf");
  CHECK_REFUSED(sgd, sgd.add_param_group({.params = {v}, .options = {.momentum = kInf}}),
                "SGD: momentum must be finite and >= 0, but got inf (group 1)");
  CHECK_REFUSED(sgd, sgd.set_lrs({0.1, 0.2}), "SGD: set_lrs: got 2 lrs, but the optimizer has 1 parameter groups");

  // options_mut: checked again at the next step, which then writes nothing.
  Adagrad ada({w}, {.lr = 0.1});
  ada.options_mut().lr_decay = kInf;
  CHECK_REFUSED(ada, ada.step(), "Adagrad: lr_decay must be finite and >= 0, but got inf");
}

TEST_CASE("optimizer all-or-nothing: set_lrs and LR schedulers set every lr or none") {
  Parameter w = make("w", {1, 2, 3, 4});
  Parameter v = make("v", {5, 6, 7, 8});
  Adam adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}, .options = {.lr = 1.0}},
                                                 {.params = {v}, .options = {.lr = 1e308}}});
  CHECK_REFUSED(adam, adam.set_lrs({0.5, kInf}), "Adam: lr must be finite and >= 0, but got inf (group 1)");
  adam.set_lrs({0.5, 1e308});
  CHECK(adam.lr(0) == 0.5);

  // StepLR with gamma 10: epoch 1 would give group 1 an lr of 1e309 = inf. The refused step sets
  // neither group's lr and does not advance the epoch.
  StepLR sched(adam, 1, 10.0);
  CHECK(sched.last_epoch() == 0);
  CHECK_REFUSED(adam, sched.step(), "Adam: lr must be finite and >= 0, but got inf (group 1)");
  CHECK(sched.last_epoch() == 0);
  CHECK(sched.get_last_lr() == std::vector<double>{0.5, 1e308});

  CHECK_THROWS_WITH_AS(StepLR(adam, 1, kInf), "StepLR: gamma must be finite and >= 0, but got inf", hitch::Error);
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(adam, 10, kInf), "CosineAnnealingLR: eta_min must be finite and >= 0, but got inf",
                       hitch::Error);
}

TEST_CASE("optimizer all-or-nothing: a refused add_param_group changes nothing") {
  Parameter t("t", Tensor({3, 2}, {1, 2, 3, 4, 5, 6}));
  Parameter s("s", Tensor::scalar(1.0f));
  Parameter u("u", Tensor({2, 2}, {1, 2, 3, 4}));
  SparseAdam sparse({t});
  CHECK_REFUSED(sparse, sparse.add_param_group({.params = {u, s}}),
                "SparseAdam: Parameter 's' (position 1) has shape [], but SparseAdam needs a Parameter with rows "
                "(rank >= 1) (group 1)");
  CHECK(sparse.num_groups() == 1);
  sparse.add_param_group({.params = {u}});  // and the group can still be added
  CHECK(sparse.num_groups() == 2);

  // Adagrad builds its state when a group joins: a refused group builds none.
  Adagrad ada({t}, {.initial_accumulator_value = 0.5});
  CHECK_REFUSED(ada, ada.add_param_group({.params = {u}, .options = {.eps = -1}}),
                "Adagrad: eps must be finite and >= 0, but got -1 (group 1)");
  CHECK_REFUSED(ada, ada.add_param_group({.params = {u, t}}),
                "Adagrad: Parameter 't' appears twice: group 0 position 0 and group 1 position 1; pass each Parameter "
                "once (a tied Parameter is one Parameter)");
  CHECK(ada.state_size() == 1);
}

TEST_CASE("optimizer validation: import_state refuses a state the optimizer cannot reach") {
  Parameter w = make("w", {1, 2, 3, 4});
  const std::string who = "import_state: record 0 (Parameter 'w')";
  auto adam_record = [&](std::int64_t step, std::vector<float> m, std::vector<float> v) {
    StateRecord r;
    r.counts["step"] = step;
    r.buffers["exp_avg"] = std::move(m);
    r.buffers["exp_avg_sq"] = std::move(v);
    return StateRecords{{w, r}};
  };
  const float inf = std::numeric_limits<float>::infinity();
  Adam adam({w});
  set_dense_grad(w, {1, 1, 1, 1});
  adam.step();  // a state to keep
  CHECK_REFUSED(adam, adam.import_state(adam_record(-1, {0, 0, 0, 0}, {0, 0, 0, 0})),
                ("Adam: " + who + ": count 'step' = -1 is out of range (valid: [0, 9007199254740992] = [0, 2^53])").c_str());
  CHECK_REFUSED(adam, adam.import_state(adam_record(INT64_MAX, {0, 0, 0, 0}, {0, 0, 0, 0})),
                ("Adam: " + who + ": count 'step' = 9223372036854775807 is out of range (valid: [0, 9007199254740992] = "
                                  "[0, 2^53])").c_str());
  CHECK_REFUSED(adam, adam.import_state(adam_record(3, {0, 0, 0, 0}, {0, 0, -0.5f, 0})),
                ("Adam: " + who + ": buffer 'exp_avg_sq' has -0.5 at element 2, a value Adam never holds (valid: finite "
                                  "and >= 0)").c_str());
  CHECK_REFUSED(adam, adam.import_state(adam_record(3, {0, -inf, 0, 0}, {0, 0, 0, 0})),
                ("Adam: " + who + ": buffer 'exp_avg' has -inf at element 1, a value Adam never holds (valid: finite)")
                    .c_str());
  auto amsgrad = adam_record(3, {0, 0, 0, 0}, {0, 0, 0, 0});
  amsgrad[0].second.buffers["max_exp_avg_sq"] = {0, 0, 0, std::nanf("")};
  CHECK_REFUSED(adam, adam.import_state(amsgrad),
                ("Adam: " + who + ": buffer 'max_exp_avg_sq' has nan at element 3, a value Adam never holds (valid: "
                                  "finite and >= 0)").c_str());

  SGD sgd({w}, {.momentum = 0.9});
  StateRecord momentum;
  momentum.buffers["momentum_buffer"] = {0, inf, 0, 0};
  CHECK_REFUSED(sgd, sgd.import_state({{w, momentum}}),
                ("SGD: " + who + ": buffer 'momentum_buffer' has inf at element 1, a value SGD never holds (valid: "
                                 "finite)").c_str());

  Adagrad ada({w});
  StateRecord sum;
  sum.counts["step"] = 1;
  sum.buffers["sum"] = {1, 1, -1, 1};
  CHECK_REFUSED(ada, ada.import_state({{w, sum}}),
                ("Adagrad: " + who + ": buffer 'sum' has -1 at element 2, a value Adagrad never holds (valid: finite "
                                     "and >= 0)").c_str());

  SparseAdam sparse({w});
  CHECK_REFUSED(sparse, sparse.import_state(adam_record(kMaxStep + 1, {0, 0, 0, 0}, {0, 0, 0, 0})),
                ("SparseAdam: " + who + ": count 'step' = 9007199254740993 is out of range (valid: [0, "
                                        "9007199254740992] = [0, 2^53])").c_str());
}

TEST_CASE("optimizer validation: the step count stops at 2^53, refused with nothing changed") {
  Parameter w = make("w", {1, 2, 3, 4});
  StateRecord r;
  r.counts["step"] = kMaxStep - 1;
  r.buffers["exp_avg"] = {0.1f, 0.1f, 0.1f, 0.1f};
  r.buffers["exp_avg_sq"] = {0.01f, 0.01f, 0.01f, 0.01f};
  Adam adam({w});
  adam.import_state({{w, r}});
  set_dense_grad(w, {1, 1, 1, 1});
  adam.step();  // kMaxStep - 1 -> kMaxStep: allowed
  CHECK(adam.state(w)->step == kMaxStep);
  for (float x : values_of(w)) CHECK(std::isfinite(x));
  CHECK_REFUSED(adam, adam.step(),
                "Adam: Parameter 'w' has step = 9007199254740992, the most a state counts (2^53), so it cannot take "
                "another step");

  Adagrad ada({w});
  StateRecord s;
  s.counts["step"] = kMaxStep;
  s.buffers["sum"] = {0, 0, 0, 0};
  ada.import_state({{w, s}});
  CHECK_REFUSED(ada, ada.step(),
                "Adagrad: Parameter 'w' has step = 9007199254740992, the most a state counts (2^53), so it cannot take "
                "another step");
}

TEST_CASE("optimizer all-or-nothing: restore sets the lrs and the state together or neither") {
  Parameter w = make("w", {1, 2, 3, 4});
  Parameter v = make("v", {5, 6, 7, 8});
  Adam adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}, .options = {.lr = 0.1}},
                                                 {.params = {v}, .options = {.lr = 0.2}}});
  set_dense_grad(w, {1, 1, 1, 1});
  adam.step();
  StateRecord good;
  good.counts["step"] = 5;
  good.buffers["exp_avg"] = {1, 1, 1, 1};
  good.buffers["exp_avg_sq"] = {1, 1, 1, 1};
  StateRecord bad = good;
  bad.counts["step"] = -5;
  // A valid lr for group 0 and a valid record for w, but v's record is refused: nothing is set.
  CHECK_REFUSED(adam, adam.restore({0.5, 0.6}, {{w, good}, {v, bad}}),
                "Adam: import_state: record 1 (Parameter 'v'): count 'step' = -5 is out of range (valid: [0, "
                "9007199254740992] = [0, 2^53])");
  CHECK_REFUSED(adam, adam.restore({0.5, -1}, {{w, good}}), "Adam: lr must be finite and >= 0, but got -1 (group 1)");
  adam.restore({0.5, 0.6}, {{w, good}});
  CHECK(adam.lr(0) == 0.5);
  CHECK(adam.lr(1) == 0.6);
  CHECK(adam.state(w)->step == 5);
  CHECK(adam.state(v) == nullptr);
}
