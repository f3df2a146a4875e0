// Optimizer bookkeeping: duplicates and aliases refused, hyper-parameter messages, groups, state
// keyed by identity (one state for a tied table), skipping Parameters without a gradient, and
// step() checking everything before it writes anything.
#include <doctest/doctest.h>

#include <hitch/hitch.h>
#include "optim_helpers.h"

using namespace hitch;
using namespace hitch::optim;
using namespace optim_test;

namespace {

Parameter make(const std::string& name, std::vector<float> values) {
  const auto n = static_cast<std::int64_t>(values.size());
  return Parameter(name, Tensor({n / 2, 2}, std::move(values)));
}

// Two submodules holding one Parameter: the correct tie.
struct Holder : nn::Module {
  Parameter weight;
  explicit Holder(Parameter w) : weight(std::move(w)) {}
  void members(Members& m) const override { m.param("weight", weight); }
};
struct TiedModel : nn::Module {
  Holder emb, bag;
  explicit TiedModel(const Parameter& w) : emb(w), bag(w) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
  }
};

}  // namespace

TEST_CASE("Optimizer: the same Parameter twice is an error naming both positions") {
  Parameter w = make("emb.weight", {1, 2, 3, 4});
  Parameter b = make("b", {1, 2});
  Parameter c = make("c", {1, 2});
  CHECK_THROWS_WITH_AS(Adam({w, b, w}),
                       "Adam: Parameter 'emb.weight' appears twice: group 0 position 0 and group 0 position 2; pass "
                       "each Parameter once (a tied Parameter is one Parameter)",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(Adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}}, {.params = {b, c, w}}}),
                       "Adam: Parameter 'emb.weight' appears twice: group 0 position 0 and group 1 position 2; pass "
                       "each Parameter once (a tied Parameter is one Parameter)",
                       hitch::Error);
  SGD sgd({w, b});
  CHECK_THROWS_WITH_AS(sgd.add_param_group({.params = {c, b}}),
                       "SGD: Parameter 'b' appears twice: group 0 position 1 and group 1 position 1; pass each "
                       "Parameter once (a tied Parameter is one Parameter)",
                       hitch::Error);
  CHECK(sgd.num_groups() == 1);  // the rejected group was not added
  sgd.add_param_group({.params = {c}, .options = {.lr = 0.5}});
  CHECK(sgd.num_groups() == 2);
}

TEST_CASE("Optimizer: two Parameters over one storage are refused unless the alias opted in") {
  Parameter w = make("emb.weight", {1, 2, 3, 4});
  Parameter alias = Parameter::alias_of(w, "bag.weight");
  CHECK_THROWS_WITH_AS(
      SGD({w, alias}),
      "SGD: Parameters 'emb.weight' (position 0) and 'bag.weight' (position 1) are two distinct Parameters over the "
      "same storage, so they would get two gradients and two optimizer states; to tie them, pass the same "
      "Parameter to both modules (to study the pitfall on purpose, call allow_alias() on the alias)",
      hitch::Error);
  Adagrad separate({w});
  CHECK_THROWS_AS(separate.add_param_group({.params = {alias}}), hitch::Error);  // across groups too
  alias.allow_alias();
  SGD ok({w, alias});
  CHECK(ok.params(0).size() == 2);
}

TEST_CASE("Optimizer: hyper-parameter messages name the optimizer, argument, value and range") {
  Parameter w = make("w", {1, 2});
  CHECK_THROWS_WITH_AS(SGD({w}, {.lr = -0.1}), "SGD: lr must be finite and >= 0, but got -0.1", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.momentum = -1}), "SGD: momentum must be finite and >= 0, but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.weight_decay = -0.5}), "SGD: weight_decay must be finite and >= 0, but got -0.5", hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.nesterov = true}),
                       "SGD: nesterov requires momentum > 0 and dampening = 0, but got momentum = 0 and dampening = 0",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                       "SGD: nesterov requires momentum > 0 and dampening = 0, but got momentum = 0.9 and dampening = 0.1",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.lr = -1}), "Adam: lr must be finite and >= 0, but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.betas = {1.0, 0.999}}), "Adam: betas[0] must be in [0, 1), but got 1", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.betas = {0.9, -0.1}}), "Adam: betas[1] must be in [0, 1), but got -0.1", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.eps = -1e-8}), "Adam: eps must be finite and >= 0, but got -1e-08", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w}, {.weight_decay = -1}), "Adam: weight_decay must be finite and >= 0, but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(AdamW({w}, {.betas = {0.9, 1.0}}), "AdamW: betas[1] must be in [0, 1), but got 1", hitch::Error);
  CHECK_THROWS_WITH_AS(AdamW({w}, {.weight_decay = -0.01}), "AdamW: weight_decay must be finite and >= 0, but got -0.01",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(Adagrad({w}, {.lr_decay = -0.1}), "Adagrad: lr_decay must be finite and >= 0, but got -0.1", hitch::Error);
  CHECK_THROWS_WITH_AS(Adagrad({w}, {.initial_accumulator_value = -1}),
                       "Adagrad: initial_accumulator_value must be in [0, 3.40282e+38], but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(Adagrad({w}, {.eps = -1}), "Adagrad: eps must be finite and >= 0, but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(SparseAdam({w}, {.lr = 0}), "SparseAdam: lr must be finite and > 0, but got 0", hitch::Error);
  CHECK_THROWS_WITH_AS(SparseAdam({w}, {.eps = 0}), "SparseAdam: eps must be finite and > 0, but got 0", hitch::Error);
  CHECK_THROWS_WITH_AS(SparseAdam({w}, {.betas = {0.9, 1.5}}), "SparseAdam: betas[1] must be in [0, 1), but got 1.5",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(SGD({w}, {.lr = std::nan("")}), "SGD: lr must be finite and >= 0, but got nan", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam(std::vector<Parameter>{}), "Adam: got an empty parameter list", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam(std::vector<ParamGroup<AdamOptions>>{{.params = {}}}), "Adam: got an empty parameter list",
                       hitch::Error);
  Parameter v = make("v", {1, 2});
  CHECK_THROWS_WITH_AS(Adam(std::vector<ParamGroup<AdamOptions>>{{.params = {w}}, {.params = {v}, .options = {.lr = -1}}}),
                       "Adam: lr must be finite and >= 0, but got -1 (group 1)", hitch::Error);
  CHECK_THROWS_WITH_AS(Adam({w, Parameter()}), "Adam: group 0 position 1 is an empty Parameter handle", hitch::Error);
  SGD sgd({w});
  CHECK_THROWS_WITH_AS(sgd.set_lr(0, -2), "SGD: lr must be finite and >= 0, but got -2", hitch::Error);
}

TEST_CASE("Optimizer: groups carry their own hyper-parameters") {
  Parameter a = make("a", {1, 1});
  Parameter b = make("b", {1, 1});
  SGD opt(std::vector<ParamGroup<SGDOptions>>{{.params = {a}, .options = {.lr = 0.1}},
                                              {.params = {b}, .options = {.lr = 0.5, .weight_decay = 1.0}}});
  set_dense_grad(a, {1, 1});
  set_dense_grad(b, {1, 1});
  opt.step();
  CHECK(a.data()[0] == doctest::Approx(0.9));
  CHECK(b.data()[0] == doctest::Approx(0.0));  // 1 - 0.5 * (1 + 1 * 1)
  CHECK(opt.lr(1) == 0.5);
  CHECK(opt.options(1).weight_decay == 1.0);
}

TEST_CASE("Optimizer: a tied Parameter reached by two modules gets one state and one update") {
  Parameter w = make("table", {1, 2, 3, 4});
  TiedModel model(w);
  const auto params = model.parameters();
  REQUIRE(params.size() == 1);
  Adam opt(params, {.lr = 0.1});
  set_dense_grad(w, {1, 1, 1, 1});
  opt.step();
  CHECK(opt.state_size() == 1);
  CHECK(opt.state(w)->step == 1);
  CHECK(w.data()[0] == doctest::Approx(0.9).epsilon(1e-6));  // moved lr once, not twice
  CHECK(opt.state(model.bag.weight) == opt.state(model.emb.weight));  // the same entry
}

TEST_CASE("Optimizer: a Parameter without a gradient is skipped, a zero gradient is processed (as PyTorch)") {
  Parameter a = make("a", {1, 1});
  Parameter b = make("b", {1, 1});
  AdamW opt({a, b}, {.lr = 0.1, .weight_decay = 0.1});
  set_dense_grad(a, {1, 1});
  opt.step();
  CHECK(opt.state(b) == nullptr);  // no grad: no state, no decay
  CHECK(b.data()[0] == 1.0f);
  CHECK(opt.state_size() == 1);

  opt.zero_grad(false);  // zero in place, a keeps a (zero) gradient
  REQUIRE(a.has_grad());
  const float before = a.data()[0];
  opt.step();
  CHECK(opt.state(a)->step == 2);  // t advances
  CHECK(a.data()[0] != before);    // decays and keeps moving from its moments

  opt.zero_grad();  // set_to_none = true by default (PyTorch >= 2.0): the next step skips a entirely
  CHECK_FALSE(a.has_grad());
  const float dropped = a.data()[0];
  opt.step();
  CHECK(opt.state(a)->step == 2);
  CHECK(a.data()[0] == dropped);
}

TEST_CASE("Optimizer: zero_grad(false) keeps a sparse gradient sparse with no rows") {
  Parameter w = make("w", {1, 2, 3, 4});
  SGD opt({w});
  set_sparse_grad(w, {1}, {1, 1});
  opt.zero_grad(false);
  REQUIRE(w.grad_store() != nullptr);
  CHECK(w.grad_store()->is_sparse());
  CHECK(w.grad_store()->rows().empty());
}

TEST_CASE("Optimizer: a rejected step changes nothing") {
  Parameter a = make("a", {1, 2});
  Parameter b = make("emb", {1, 2, 3, 4});
  SUBCASE("SGD weight decay with a sparse gradient") {
    SGD opt({a, b}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
    set_dense_grad(a, {1, 1});
    set_sparse_grad(b, {0}, {1, 1});
    CHECK_THROWS_WITH_AS(opt.step(),
                         "SGD: weight_decay is not supported with sparse gradients, but Parameter 'emb' has a sparse "
                         "gradient and weight_decay = 0.01; use weight_decay = 0 or dense lookups (sparse = false)",
                         hitch::Error);
    CHECK(values_of(a) == std::vector<float>{1, 2});
    CHECK(opt.state_size() == 0);
  }
  SUBCASE("Adagrad weight decay with a sparse gradient") {
    Adagrad opt({a, b}, {.weight_decay = 0.1});
    set_dense_grad(a, {1, 1});
    set_sparse_grad(b, {0}, {1, 1});
    CHECK_THROWS_WITH_AS(opt.step(),
                         "Adagrad: weight_decay is not supported with sparse gradients, but Parameter 'emb' has a "
                         "sparse gradient and weight_decay = 0.1; use weight_decay = 0 or dense lookups (sparse = false)",
                         hitch::Error);
    CHECK(values_of(a) == std::vector<float>{1, 2});
    CHECK(opt.state(a)->step == 0);
  }
  SUBCASE("SparseAdam with a dense gradient") {
    SparseAdam opt({b, a});
    set_sparse_grad(b, {0}, {1, 1});
    set_dense_grad(a, {1, 1});
    CHECK_THROWS_WITH_AS(opt.step(),
                         "SparseAdam: Parameter 'a' has a dense gradient, but SparseAdam does not support dense "
                         "gradients; please consider Adam instead (or make every lookup of this Parameter sparse: "
                         ".sparse = true)",
                         hitch::Error);
    CHECK(values_of(b) == std::vector<float>{1, 2, 3, 4});
    CHECK(opt.state(b) == nullptr);
  }
  SUBCASE("options made invalid after construction") {
    Adam opt({a});
    opt.options_mut().betas.first = 1.0;
    set_dense_grad(a, {1, 1});
    CHECK_THROWS_WITH_AS(opt.step(), "Adam: betas[0] must be in [0, 1), but got 1", hitch::Error);
    CHECK(values_of(a) == std::vector<float>{1, 2});
  }
}

TEST_CASE("Optimizer: a step writes in place and bumps the storage version") {
  Parameter w = make("w", {1, 2});
  const float* before = w.data();
  const auto version = w.impl().storage->version;
  SGD opt({w}, {.lr = 0.1});
  set_dense_grad(w, {1, 1});
  opt.step();
  CHECK(w.data() == before);
  CHECK(w.impl().storage->version == version + 1);
}

TEST_CASE("Adagrad: state is created eagerly, also for a group added later (PyTorch: KeyError 'sum')") {
  Parameter a = make("a", {1, 2});
  Parameter b = make("b", {1, 2});
  Adagrad opt({a}, {.lr = 0.1, .initial_accumulator_value = 0.5});
  CHECK(opt.state_size() == 1);
  CHECK(opt.state(a)->sum == std::vector<float>{0.5f, 0.5f});
  opt.add_param_group({.params = {b}, .options = {.lr = 0.1}});
  CHECK(opt.state_size() == 2);
  set_dense_grad(b, {1, 1});
  opt.step();
  CHECK(opt.state(b)->step == 1);
  CHECK(opt.state(a)->step == 0);
}

TEST_CASE("SparseAdam: a Parameter without rows is refused") {
  Parameter s("s", Tensor::scalar(1.0f));
  CHECK_THROWS_WITH_AS(SparseAdam({s}),
                       "SparseAdam: Parameter 's' (position 0) has shape [], but SparseAdam needs a Parameter with rows "
                       "(rank >= 1)",
                       hitch::Error);
}

TEST_CASE("Optimizer: a group index out of range is refused by name") {
  hitch::Parameter w("w", hitch::Tensor({2}, {1, 2}));
  hitch::optim::SGD sgd({w}, {.lr = 0.1});
  CHECK_THROWS_WITH_AS(sgd.set_lr(1, 0.5), "SGD::set_lr: group 1 is out of range (valid: [0, 1))", hitch::Error);
  CHECK_THROWS_WITH_AS((void)sgd.lr(7), "SGD::lr: group 7 is out of range (valid: [0, 1))", hitch::Error);
  CHECK_THROWS_WITH_AS((void)sgd.params(1), "SGD::params: group 1 is out of range (valid: [0, 1))", hitch::Error);
  CHECK_THROWS_WITH_AS((void)sgd.options(2), "SGD::options: group 2 is out of range (valid: [0, 1))", hitch::Error);
  CHECK_THROWS_WITH_AS((void)sgd.options_mut(1), "SGD::options_mut: group 1 is out of range (valid: [0, 1))",
                       hitch::Error);
  CHECK(sgd.lr(0) == 0.1);
}
