// The optimizer applied inside backward (optim/in_backward.h, issue 18): a training run with
// optim::InBackward must give the same bits as zero_grad(); backward(); step(), for tied and
// untied tables, every bag mode, sparse and dense lookups, SGD (with and without momentum),
// Adagrad, SparseAdam and Adam, at 1 and 2 threads; the tie is updated once per backward with
// both paths' sum (a control that steps after each path is caught); and every refusal leaves
// the Parameters, gradients and optimizer state as they were.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <hitch/hitch.h>
#include "reliability_model.h"
#include "state_snapshot.h"

using namespace hitch;

namespace {

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Parameter>&)>;

template <class Opt, class Options>
MakeOpt make(Options o) {
  return [o](const std::vector<Parameter>& ps) { return std::make_unique<Opt>(ps, o); };
}

struct Setup {
  BagMode mode = BagMode::Sum;
  bool sparse = true;
  bool tied = true;               // the Embedding path reads the table too
  bool weights = false;           // per_sample_weights on the bag (sum mode)
  std::optional<std::int64_t> padding_idx{};
  bool head = false;              // a tied nn::Linear output projection (logits over the table's rows)
  std::int64_t rows = 300;        // table rows (above kLookupMaxFloats / D with rows = 5000, D = 64)
  std::int64_t width = 8;
};

// Index batches with repeated rows.
IndexTensor batch(Generator& gen, std::int64_t rows, Shape shape) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(numel_of(shape)));
  for (auto& x : v) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(rows / 2)));  // half the rows: repeats
  return IndexTensor(std::move(shape), std::move(v));
}

struct Run {
  std::vector<float> table;
  optim::StateRecords state;
  std::int64_t in_backward_steps = 0;
};

// `steps` training steps of a tied model. in_backward: through optim::InBackward (backward is
// the step); else zero_grad(), backward(), step(). split: two backward calls per step (the bag
// path's loss, then the Embedding path's), the ordinary path stepping after each.
Run train(const Setup& s, const MakeOpt& make_opt, bool in_backward, int threads, int steps = 6, bool split = false) {
  reliability::ThreadCount guard(threads);
  Generator gen(5);
  Parameter table("table", Tensor::uniform({s.rows, s.width}, -0.5f, 0.5f, gen));
  nn::Embedding emb(table, {.padding_idx = s.padding_idx, .sparse = s.sparse});
  nn::EmbeddingBag bag(table, {.mode = s.mode, .padding_idx = s.padding_idx, .sparse = s.sparse});
  const nn::Linear head(table);
  auto opt = make_opt({table});
  std::unique_ptr<optim::InBackward> fused;
  if (in_backward) fused = std::make_unique<optim::InBackward>(*opt);
  const Tensor u = Tensor::uniform({4, s.width}, -1.0f, 1.0f, gen);
  for (int k = 0; k < steps; ++k) {
    const IndexTensor singles = batch(gen, s.rows, {4});
    const IndexTensor bags = batch(gen, s.rows, {4, 5});
    const Tensor w = s.weights ? Tensor::uniform({4, 5}, 0.5f, 1.5f, gen) : Tensor();
    if (!in_backward) opt->zero_grad();
    const Tensor b = bag(bags, w);
    const Tensor e = s.tied ? emb(singles) : u;
    if (split) {
      backward(mean(square(sum(mul(u, b), 1))));
      if (!in_backward) {
        opt->step();
        opt->zero_grad();
      }
      backward(mean(square(sum(mul(e, u), 1))));
    } else if (s.head) {
      backward(add(mean(square(sum(mul(e, b), 1))), cross_entropy(head(e), singles)));
    } else {
      backward(mean(square(sum(mul(e, b), 1))));
    }
    if (!in_backward) opt->step();
    if (in_backward) CHECK_FALSE(table.has_grad());  // applied and dropped
  }
  Run r{table.value().to_vector(), opt->export_state(), fused ? fused->steps() : 0};
  return r;
}

void check_same_bits(const Run& want, const Run& got) {
  REQUIRE(want.table.size() == got.table.size());
  for (std::size_t i = 0; i < want.table.size(); ++i)
    if (!(want.table[i] == got.table[i])) FAIL("table element " << i << " is " << got.table[i] << ", want " << want.table[i]);
  REQUIRE(want.state.size() == got.state.size());
  for (std::size_t i = 0; i < want.state.size(); ++i) {
    CHECK(want.state[i].second.counts == got.state[i].second.counts);
    CHECK(want.state[i].second.buffers == got.state[i].second.buffers);
  }
}

struct Case {
  std::string name;
  MakeOpt make_opt;
  bool sparse_only = false;  // SparseAdam: sparse lookups only
  bool dense_only = false;   // Adam: refuses sparse gradients
};

std::vector<Case> cases() {
  return {
      {"SGD", make<optim::SGD>(optim::SGDOptions{.lr = 0.1})},
      {"SGD momentum", make<optim::SGD>(optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true})},
      {"Adagrad", make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1})},
      {"SparseAdam", make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01}), true},
      {"Adam", make<optim::Adam>(optim::AdamOptions{.lr = 0.01}), false, true},
  };
}

}  // namespace

TEST_CASE("in backward: the same bits as zero_grad, backward, step (every optimizer, mode and layout, 1 and 2 threads)") {
  for (const Case& c : cases())
    for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max})
      for (const bool sparse : {true, false})
        for (const bool tied : {true, false})
          for (const int threads : {1, 2}) {
            if ((c.sparse_only && !sparse) || (c.dense_only && sparse)) continue;
            if (mode == BagMode::Max && sparse) continue;  // EmbeddingBag refuses it, as PyTorch does
            Setup s{.mode = mode, .sparse = sparse, .tied = tied, .weights = mode == BagMode::Sum,
                    .padding_idx = mode == BagMode::Mean ? std::optional<std::int64_t>(3) : std::nullopt};
            CAPTURE(c.name);
            CAPTURE(to_string(mode));
            CAPTURE(sparse);
            CAPTURE(tied);
            CAPTURE(threads);
            const Run ordinary = train(s, c.make_opt, false, threads);
            const Run fused = train(s, c.make_opt, true, threads);
            check_same_bits(ordinary, fused);
            CHECK(fused.in_backward_steps == 6);
          }
}

TEST_CASE("in backward: a table above the small-table size and a tied Linear head, the same bits") {
  const Setup big{.rows = 5000, .width = 64};  // 320,000 floats: above kLookupMaxFloats
  for (const Case& c : cases()) {
    if (c.dense_only) continue;
    CAPTURE(c.name);
    for (const int threads : {1, 2}) check_same_bits(train(big, c.make_opt, false, threads), train(big, c.make_opt, true, threads));
  }
  const Setup with_head{.sparse = false, .head = true};
  for (const Case& c : cases()) {
    if (c.sparse_only) continue;
    CAPTURE(c.name);
    check_same_bits(train(with_head, c.make_opt, false, 1), train(with_head, c.make_opt, true, 1));
  }
}

TEST_CASE("in backward: the tie is updated once per backward, with both paths' sum") {
  const Setup s{};
  const MakeOpt sgd = make<optim::SGD>(optim::SGDOptions{.lr = 0.1});
  const Run once = train(s, sgd, false, 1);
  // Control: stepping after each path (two backward calls per step) is a different training run,
  // so the bitwise comparison above would catch an update that did not wait for both paths.
  const Run per_path = train(s, sgd, false, 1, 6, true);
  bool differs = false;
  for (std::size_t i = 0; i < once.table.size(); ++i) differs = differs || once.table[i] != per_path.table[i];
  CHECK(differs);
  // The step boundary is the backward() call: two backward calls are two steps, as the ordinary
  // loop that steps after each of them.
  const Run fused_split = train(s, sgd, true, 1, 6, true);
  check_same_bits(per_path, fused_split);
  CHECK(fused_split.in_backward_steps == 12);
}

TEST_CASE("in backward: step() and add_param_group are refused while it lives, and destroying it restores step()") {
  Generator gen(1);
  Parameter table("table", Tensor::uniform({10, 4}, -1.0f, 1.0f, gen));
  Parameter other("other", Tensor::uniform({3}, -1.0f, 1.0f, gen));
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  optim::SGD opt({table}, {.lr = 0.1});
  const IndexTensor ids(Shape{2, 3}, {1, 2, 3, 3, 4, 5});
  {
    optim::InBackward fused(opt);
    CHECK(opt.in_backward() == &fused);
    CHECK(fused.optimizer() == &opt);
    const hitch_test::StateSnapshot before(std::vector<Parameter>{table, other}, &opt, nullptr);
    CHECK_THROWS_WITH_AS(opt.step(),
                         "SGD::step: this optimizer is applied in backward (optim::InBackward), so backward() updates its "
                         "Parameters; destroy the InBackward before calling step()",
                         Error);
    CHECK_THROWS_WITH_AS(opt.add_param_group({.params = {other}, .options = {.lr = 0.1}}),
                         "SGD::add_param_group: this optimizer is applied in backward (optim::InBackward), so backward() "
                         "updates its Parameters; destroy the InBackward before calling add_param_group()",
                         Error);
    before.check();
    CHECK(opt.num_groups() == 1);
    const std::vector<float> start = table.value().to_vector();
    backward(sum(bag(ids)));
    CHECK(table.value().to_vector() != start);
    CHECK_FALSE(table.has_grad());
    CHECK(fused.steps() == 1);
  }
  CHECK(opt.in_backward() == nullptr);
  CHECK(table.impl().in_backward == nullptr);
  const std::vector<float> start = table.value().to_vector();
  backward(sum(bag(ids)));  // back to the ordinary loop: the gradient is kept, nothing moves
  CHECK(table.has_grad());
  CHECK(table.value().to_vector() == start);
  opt.step();
  CHECK(table.value().to_vector() != start);
}

TEST_CASE("in backward: construction refusals change nothing") {
  Generator gen(1);
  Parameter table("table", Tensor::uniform({10, 4}, -1.0f, 1.0f, gen));
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  optim::SGD opt({table}, {.lr = 0.1});
  backward(sum(bag(IndexTensor(Shape{1, 2}, {1, 2}))));
  CHECK_THROWS_WITH_AS(optim::InBackward{opt},
                       "InBackward(SGD): Parameter 'table' (group 0 position 0) holds a gradient from an earlier "
                       "backward; call zero_grad() first (in this mode each backward's gradient is applied and "
                       "dropped)",
                       Error);
  CHECK(table.impl().in_backward == nullptr);
  CHECK(opt.in_backward() == nullptr);
  CHECK(table.has_grad());
  opt.zero_grad();
  optim::InBackward fused(opt);
  CHECK_THROWS_WITH_AS(optim::InBackward{opt},
                       "InBackward(SGD): this optimizer is already applied in backward by another InBackward", Error);
  optim::Adagrad second({table}, {.lr = 0.1});
  CHECK_THROWS_WITH_AS(optim::InBackward{second},
                       "InBackward(Adagrad): Parameter 'table' (group 0 position 0) is already applied in backward by "
                       "another optimizer; a Parameter is updated by one",
                       Error);
  CHECK(second.in_backward() == nullptr);
  CHECK(opt.in_backward() == &fused);
}

TEST_CASE("in backward: a refusal before the nodes run changes nothing, other leaves included") {
  Generator gen(2);
  Parameter table("table", Tensor::uniform({10, 4}, -1.0f, 1.0f, gen));
  Parameter scale("scale", Tensor::uniform({2, 4}, 0.5f, 1.5f, gen));  // not in the optimizer
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  optim::SGD opt({table}, {.lr = 0.1});
  optim::InBackward fused(opt);
  const Tensor loss = sum(mul(bag(IndexTensor(Shape{2, 2}, {1, 2, 2, 3})), scale.value()));
  opt.options_mut().lr = -1.0;
  const hitch_test::StateSnapshot before(std::vector<Parameter>{table, scale}, &opt, nullptr);
  CHECK_THROWS_WITH_AS(backward(loss), "backward: InBackward(SGD) refused the step: SGD: lr must be finite and >= 0, but got -1", Error);
  before.check();
  CHECK(fused.steps() == 0);
  opt.options_mut().lr = 0.1;  // fixed: the graph is still there
  backward(loss);
  CHECK(fused.steps() == 1);
  CHECK(scale.has_grad());
  CHECK_FALSE(table.has_grad());
}

TEST_CASE("in backward: a refusal that needs the gradients leaves the table, its state and the graph as they were") {
  Generator gen(3);
  Parameter table("table", Tensor::uniform({10, 4}, -1.0f, 1.0f, gen));
  nn::Embedding dense_lookup(table, {.sparse = false});  // SparseAdam refuses a dense gradient
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  optim::SparseAdam opt({table}, {.lr = 0.01});
  auto fused = std::make_unique<optim::InBackward>(opt);
  backward(sum(bag(IndexTensor(Shape{1, 2}, {4, 5}))));  // one good step: state exists
  REQUIRE(fused->steps() == 1);
  const Tensor loss = add(sum(bag(IndexTensor(Shape{1, 2}, {1, 2}))), sum(dense_lookup(IndexTensor(Shape{2}, {1, 7}))));
  const hitch_test::StateSnapshot before(std::vector<Parameter>{table}, &opt, nullptr);
  std::string message;
  try {
    backward(loss);
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK(message.rfind("backward: InBackward(SparseAdam) refused the step: SparseAdam: Parameter 'table' has a dense gradient, made dense by node #", 0) == 0);
  CHECK(message.find("(embedding: a lookup with sparse = false), but SparseAdam does not support dense gradients") !=
        std::string::npos);
  before.check();  // no gradient before, none after; values, version and state unchanged
  CHECK(fused->steps() == 1);
  // The graph was kept: without the InBackward, the same loss backpropagates (a dense gradient).
  fused.reset();
  backward(loss);
  REQUIRE(table.has_grad());
  CHECK(table.grad_store()->is_dense());
}

TEST_CASE("in backward: either may be destroyed first, and a moved optimizer stays applied") {
  Generator gen(4);
  Parameter table("table", Tensor::uniform({10, 4}, -1.0f, 1.0f, gen));
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  const IndexTensor ids(Shape{1, 3}, {1, 2, 3});
  auto opt = std::make_unique<optim::SGD>(std::vector<Parameter>{table}, optim::SGDOptions{.lr = 0.1});
  optim::InBackward fused(*opt);
  opt.reset();  // the optimizer first
  CHECK(fused.optimizer() == nullptr);
  CHECK(table.impl().in_backward == nullptr);
  const std::vector<float> start = table.value().to_vector();
  backward(sum(bag(ids)));  // nothing applies it any more: an ordinary gradient
  CHECK(table.has_grad());
  CHECK(table.value().to_vector() == start);
  table.zero_grad();

  optim::SGD a({table}, {.lr = 0.1});
  optim::InBackward on_a(a);
  optim::SGD b(std::move(a));
  CHECK(on_a.optimizer() == &b);
  CHECK(b.in_backward() == &on_a);
  CHECK(a.in_backward() == nullptr);
  backward(sum(bag(ids)));
  CHECK(on_a.steps() == 1);
  CHECK(table.value().to_vector() != start);
}
