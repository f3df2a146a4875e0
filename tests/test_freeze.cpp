// Freezing a tied table mid-training (issue 14, "Freezing that freezes"): a Parameter with
// requires_grad() == false is never moved by an optimizer step, whatever gradient it still holds
// (none after zero_grad(true), a zero one after zero_grad(false), or the non-zero one left by the
// last backward before it was frozen), and its optimizer state stays as it was. Every optimizer
// runs with weight decay and momentum (or their equivalents) on, which is what moved a "frozen"
// table before: AdamW decayed it and Adam, SGD momentum kept stepping it from their moments.
// Then the table is unfrozen and trains again. Also: zero_grad() defaults to set_to_none = true
// (PyTorch >= 2.0), Parameter::requires_grad_ as in PyTorch.
#include <bit>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

// One item table tied three ways (docs/tying.md): the candidate lookup (Embedding), the history
// bag (EmbeddingBag) and, for dense gradients, the output projection (Linear around the table).
// A user table trains beside it.
struct TiedModel : nn::Module {
  Parameter items, users;
  nn::Embedding item;
  nn::EmbeddingBag history;
  nn::Embedding user;
  nn::Linear head;
  bool sparse;

  explicit TiedModel(bool sparse_grads)
      : items(make("items", {6, 4}, 3)),
        users(make("users", {4, 4}, 4)),
        item(items, {.sparse = sparse_grads}),
        history(items, {.mode = BagMode::Mean, .sparse = sparse_grads}),
        user(users, {.sparse = sparse_grads}),
        head(items),
        sparse(sparse_grads) {}

  static Parameter make(const char* name, Shape shape, std::uint64_t seed) {
    Generator gen(seed);
    return Parameter(name, Tensor::randn(shape, gen));
  }

  void members(Members& m) const override {
    m.module("item", item);
    m.module("history", history);
    m.module("user", user);
    if (!sparse) m.module("head", head);
  }

  // A batch of 3: candidate item, history bag of 3 items, user. SparseAdam needs every gradient
  // sparse, so the projection (a matmul: a dense gradient) is only used with dense lookups.
  Tensor loss() const {
    const Tensor e = item(IndexTensor{1, 4, 2});
    const Tensor b = history(IndexTensor({3, 3}, {0, 1, 1, 3, 5, 2, 4, 4, 0}));
    const Tensor u = user(IndexTensor{0, 3, 2});
    Tensor l = mean(square(sum(e * b * u, 1) - 1.0f));
    if (!sparse) l = l + mean(square(head(u)));
    return l;
  }
};

std::vector<std::uint32_t> bits(const Parameter& p) {
  std::vector<std::uint32_t> out;
  for (std::int64_t i = 0; i < p.numel(); ++i) out.push_back(std::bit_cast<std::uint32_t>(p.data()[i]));
  return out;
}

// p's optimizer state as comparable bits (counts, then each buffer), empty if p has none.
std::vector<std::uint64_t> state_bits(const optim::Optimizer& opt, const Parameter& p) {
  std::vector<std::uint64_t> out;
  for (const auto& [q, record] : opt.export_state()) {
    if (!q.is_same(p)) continue;
    out.push_back(1);  // has state
    for (const auto& [name, count] : record.counts) out.push_back(static_cast<std::uint64_t>(count));
    for (const auto& [name, buffer] : record.buffers) {
      out.push_back(buffer.size());
      for (const float v : buffer) out.push_back(std::bit_cast<std::uint32_t>(v));
    }
  }
  return out;
}

using MakeOptimizer = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Parameter>&)>;
struct OptimizerCase {
  const char* name;
  bool sparse;
  MakeOptimizer make;
};

// Every optimizer, with weight decay and momentum (or their equivalents) on where it has them.
std::vector<OptimizerCase> optimizer_cases() {
  using namespace optim;
  return {
      {"SGD momentum + weight_decay", false,
       [](const auto& ps) { return std::make_unique<SGD>(ps, SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.05}); }},
      {"SGD nesterov + weight_decay", false,
       [](const auto& ps) {
         return std::make_unique<SGD>(ps, SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.05, .nesterov = true});
       }},
      {"SGD momentum, sparse", true,
       [](const auto& ps) { return std::make_unique<SGD>(ps, SGDOptions{.lr = 0.1, .momentum = 0.9}); }},
      {"Adam + weight_decay", false,
       [](const auto& ps) { return std::make_unique<Adam>(ps, AdamOptions{.lr = 0.01, .weight_decay = 0.05}); }},
      {"Adam amsgrad + weight_decay", false,
       [](const auto& ps) {
         return std::make_unique<Adam>(ps, AdamOptions{.lr = 0.01, .weight_decay = 0.05, .amsgrad = true});
       }},
      {"Adam, sparse", true, [](const auto& ps) { return std::make_unique<Adam>(ps, AdamOptions{.lr = 0.01}); }},
      {"AdamW + weight_decay", false,
       [](const auto& ps) { return std::make_unique<AdamW>(ps, AdamWOptions{.lr = 0.01, .weight_decay = 0.1}); }},
      {"Adagrad + weight_decay + lr_decay", false,
       [](const auto& ps) {
         return std::make_unique<Adagrad>(
             ps, AdagradOptions{.lr = 0.1, .lr_decay = 0.01, .weight_decay = 0.05, .initial_accumulator_value = 0.1});
       }},
      {"Adagrad, sparse", true, [](const auto& ps) { return std::make_unique<Adagrad>(ps, AdagradOptions{.lr = 0.1}); }},
      {"SparseAdam", true, [](const auto& ps) { return std::make_unique<SparseAdam>(ps, SparseAdamOptions{.lr = 0.01}); }},
  };
}

// How the gradients are cleared while the table is frozen.
enum class Clear { ToNone, InPlace, StaleTable };
const char* to_string(Clear c) {
  switch (c) {
    case Clear::ToNone: return "zero_grad(true)";
    case Clear::InPlace: return "zero_grad(false)";
    case Clear::StaleTable: return "table keeps its last gradient";
  }
  return "";
}

}  // namespace

TEST_CASE("freeze: a tied table frozen mid-training stays bitwise unchanged under every optimizer, then trains again") {
  for (const OptimizerCase& oc : optimizer_cases())
    for (const Clear clear : {Clear::ToNone, Clear::InPlace, Clear::StaleTable}) {
      const std::string label = std::string(oc.name) + ", " + to_string(clear);
      INFO(label);
      TiedModel model(oc.sparse);
      const std::vector<Parameter> params = model.parameters();
      REQUIRE(params.size() == 2);  // the tied table once, the user table
      auto opt = oc.make(params);
      // Each step: clear, forward, backward, step (so a backward's gradient is there at freezing).
      auto train_step = [&](Clear how) {
        if (how == Clear::StaleTable) {
          model.users.zero_grad(true);  // the table's gradient is left as the last backward made it
        } else {
          opt->zero_grad(how == Clear::ToNone);
        }
        backward(model.loss());
        opt->step();
      };
      for (int i = 0; i < 3; ++i) train_step(Clear::InPlace);
      REQUIRE(model.items.has_grad());  // a non-zero gradient from the last backward

      const std::vector<std::uint32_t> table = bits(model.items);
      const std::vector<std::uint64_t> table_state = state_bits(*opt, model.items);
      REQUIRE(!table_state.empty());
      const std::vector<std::uint32_t> users = bits(model.users);
      model.items.set_requires_grad(false);  // frozen: every module holding it sees the same flag
      for (int i = 0; i < 10; ++i) {
        train_step(clear);
        CHECK(bits(model.items) == table);
        CHECK(state_bits(*opt, model.items) == table_state);
      }
      CHECK(bits(model.users) != users);  // the rest of the model still trains

      model.items.set_requires_grad(true);
      for (int i = 0; i < 3; ++i) train_step(Clear::InPlace);
      CHECK(bits(model.items) != table);
      CHECK(state_bits(*opt, model.items) != table_state);
    }
}

TEST_CASE("freeze: zero_grad() defaults to set_to_none = true (PyTorch >= 2.0) on Parameter, Module and Optimizer") {
  TiedModel model(false);
  optim::AdamW opt(model.parameters(), {.lr = 0.01, .weight_decay = 0.1});
  backward(model.loss());
  REQUIRE(model.items.has_grad());
  model.items.zero_grad();
  CHECK_FALSE(model.items.has_grad());
  CHECK(model.users.has_grad());

  backward(model.loss());
  model.zero_grad();
  CHECK_FALSE(model.items.has_grad());
  CHECK_FALSE(model.users.has_grad());

  backward(model.loss());
  opt.zero_grad();
  CHECK_FALSE(model.items.has_grad());
  CHECK_FALSE(model.users.has_grad());

  // The loop, with the defaults: train, freeze the tied table, keep training.
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    backward(model.loss());
    opt.step();
  }
  const std::vector<std::uint32_t> table = bits(model.items);
  model.items.set_requires_grad(false);
  for (int i = 0; i < 10; ++i) {
    opt.zero_grad();
    backward(model.loss());
    opt.step();
  }
  CHECK(bits(model.items) == table);
}

TEST_CASE("freeze: Parameter::requires_grad_ is PyTorch's spelling of set_requires_grad and returns *this") {
  TiedModel model(false);
  Parameter& same = model.items.requires_grad_(false);
  CHECK(&same == &model.items);
  CHECK_FALSE(model.items.requires_grad());
  CHECK_FALSE(model.head.weight.requires_grad());  // one Parameter: every holder sees the flag
  CHECK(model.items.requires_grad_().requires_grad());
  model.items.set_requires_grad(false);  // kept
  CHECK_FALSE(model.item.weight.requires_grad());
}

TEST_CASE("freeze: SparseAdam's refusal of a dense gradient names the op that made it dense") {
  SUBCASE("a tied output projection (matmul): dense by nature, use Adam") {
    Parameter table("items", Tensor::randn({5, 3}, default_generator()));
    nn::Embedding item(table, {.sparse = true});
    nn::Linear head(table);
    optim::SparseAdam opt({table});
    const std::vector<std::uint32_t> before = bits(table);
    const Tensor logits = head(item(IndexTensor{1, 3}));  // [2, 5]: a matmul with the table
    backward(sum(logits));
    REQUIRE(table.grad_store() != nullptr);
    CHECK_THROWS_WITH_AS(
        opt.step(),
        fmt::format("SparseAdam: Parameter {} has a dense gradient, made dense by node #{} (matmul), but SparseAdam "
                    "does not support dense gradients; a matmul gives every row a gradient, so this one is dense by "
                    "nature (a tied output projection is): use Adam instead",
                    optim::param_label(table), logits.impl().grad_fn->seq)
            .c_str(),
        hitch::Error);
    CHECK(bits(table) == before);
    CHECK(opt.state(table) == nullptr);
  }
  SUBCASE("a lookup with sparse = false: make it sparse") {
    Parameter table("items", Tensor::randn({5, 3}, default_generator()));
    nn::Embedding sparse_item(table, {.sparse = true});
    nn::EmbeddingBag dense_bag(table, {.mode = BagMode::Sum});
    optim::SparseAdam opt({table});
    const std::vector<std::uint32_t> before = bits(table);
    const Tensor b = dense_bag(IndexTensor({1, 2}, {0, 4}));
    backward(sum(sparse_item(IndexTensor{2})) + sum(b));
    CHECK_THROWS_WITH_AS(
        opt.step(),
        fmt::format("SparseAdam: Parameter {} has a dense gradient, made dense by node #{} (embedding_bag: a lookup "
                    "with sparse = false), but SparseAdam does not support dense gradients; make that lookup sparse "
                    "(.sparse = true) or use Adam instead",
                    optim::param_label(table), b.impl().grad_fn->seq)
            .c_str(),
        hitch::Error);
    CHECK(bits(table) == before);
    CHECK(opt.state(table) == nullptr);
  }
  SUBCASE("a frozen Parameter's dense gradient is not refused: it is skipped") {
    Parameter table("items", Tensor::randn({5, 3}, default_generator()));
    nn::Linear head(table);
    optim::SparseAdam opt({table});
    backward(sum(head(Tensor::ones({2, 3}))));
    table.set_requires_grad(false);
    const std::vector<std::uint32_t> before = bits(table);
    CHECK_NOTHROW(opt.step());
    CHECK(bits(table) == before);
    CHECK(opt.state(table) == nullptr);
  }
}
