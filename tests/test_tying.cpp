// Weight tying: an Embedding and an EmbeddingBag built on ONE Parameter. Its gradient is the sum
// of what each path gives alone (every bag mode, with and without per_sample_weights), repeated
// indices inside a bag and across the two paths accumulate, a module holding both lists the
// table once and an optimizer keeps one state for it. Then the seed pitfall
// (Parameter::alias_of, PyTorch's `EmbeddingBag.from_pretrained(emb.weight)`): refused by
// parameters() unless opted into, and with the opt-in two Parameters whose gradients only add up
// to the tied one.
#include <doctest/doctest.h>

#include "embedding_test_util.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct TwoLookups : nn::Module {
  nn::Embedding emb;
  nn::EmbeddingBag bag;
  TwoLookups(nn::Embedding e, nn::EmbeddingBag b) : emb(std::move(e)), bag(std::move(b)) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
  }
};

const IndexTensor kTokens({2, 3}, {1, 3, 1, 0, 1, 4});  // row 1 three times
const IndexTensor kBagInput{1, 1, 3, 0, 1, 2, 2};      // row 1 twice in bag 0, again in bag 2
const IndexTensor kOffsets{0, 3, 3, 5};                 // bag 1 empty
const Tensor kPsw({7}, {0.5f, 2.0f, -1.0f, 1.5f, 0.25f, 3.0f, 1.0f});

Tensor table_values() {
  Generator gen(11);
  return Tensor::randn({5, 3}, gen);
}
Tensor emb_grad_out() { return Tensor({2, 3, 3}, Tensor::arange(0, 18, 1).to_vector()); }
Tensor bag_grad_out() { return Tensor({4, 3}, Tensor::arange(-6, 6, 1).to_vector()); }

// loss = <e, Ge> + <b, Gb>: both paths in one graph, one backward.
void both_paths(const TwoLookups& m, const Tensor& psw) {
  const Tensor e = m.emb(kTokens);
  const Tensor b = m.bag(kBagInput, kOffsets, psw);
  backward(sum(e * emb_grad_out()) + sum(b * bag_grad_out()));
}

}  // namespace

TEST_CASE("tying: the shared gradient is the sum of the per-path gradients, in every bag mode") {
  struct Config {
    BagMode mode;
    bool psw;
  };
  for (const Config cfg : {Config{BagMode::Sum, false}, Config{BagMode::Mean, false}, Config{BagMode::Max, false},
                           Config{BagMode::Sqrtn, false}, Config{BagMode::Sum, true}, Config{BagMode::Mean, true},
                           Config{BagMode::Sqrtn, true}}) {
    const std::string name = fmt::format("{}{}", to_string(cfg.mode), cfg.psw ? " + per_sample_weights" : "");
    INFO("mode ", name);
    const EmbeddingBagOptions options{.mode = cfg.mode};
    auto psw_leaf = [&] { return cfg.psw ? emb_test::leaf({7}, kPsw.to_vector()) : Tensor(); };

    Parameter table("table", table_values());
    TwoLookups tied(nn::Embedding(table), nn::EmbeddingBag(table, options));
    const Tensor psw = psw_leaf();
    both_paths(tied, psw);

    Parameter emb_only("emb_only", table_values());
    backward(sum(nn::Embedding(emb_only)(kTokens) * emb_grad_out()));
    Parameter bag_only("bag_only", table_values());
    const Tensor psw_alone = psw_leaf();
    backward(sum(nn::EmbeddingBag(bag_only, options)(kBagInput, kOffsets, psw_alone) * bag_grad_out()));

    CHECK(tied.emb.weight.is_same(tied.bag.weight));
    const std::string msg = emb_test::diff(table.grad(), emb_only.grad() + bag_only.grad(), 1e-5, 1e-6);
    CHECK_MESSAGE(msg.empty(), name, ": ", msg);
    if (cfg.psw) CHECK(psw.grad().to_vector() == psw_alone.grad().to_vector());
    const auto params = tied.parameters();
    REQUIRE(params.size() == 1);
    CHECK(params[0].is_same(table));
    CHECK(tied.named_parameters()[0].first == "emb.weight");
  }
}

TEST_CASE("tying: repeated indices inside a bag and across the two paths accumulate (exact)") {
  Parameter table("table", Tensor::zeros({4, 2}));
  TwoLookups m(nn::Embedding(table), nn::EmbeddingBag(table, {.mode = BagMode::Sum}));
  const Tensor e = m.emb(IndexTensor{1, 1, 2});
  const Tensor b = m.bag(IndexTensor{1, 1, 3}, IndexTensor{0});
  backward(sum(e * Tensor({3, 2}, {1, 2, 3, 4, 5, 6})) + sum(b * Tensor({1, 2}, {10, 20})));
  // row1: emb 1+3, 2+4 plus bag 2*10, 2*20; row2: emb 5, 6; row3: bag 10, 20.
  CHECK(table.grad().to_vector() == std::vector<float>{0, 0, 24, 46, 5, 6, 10, 20});
}

TEST_CASE("tying: one optimizer state, one update per step") {
  Parameter table("table", table_values());
  TwoLookups m(nn::Embedding(table), nn::EmbeddingBag(table, {.mode = BagMode::Sum}));
  const std::vector<float> before = table.value().to_vector();
  optim::Adam adam(m.parameters(), {.lr = 0.1});
  both_paths(m, {});
  adam.step();
  CHECK(adam.state_size() == 1);
  // Adam's first step moves each element with a gradient by lr (≈ lr·sign(g)): rows used by both
  // paths move 0.1 once, not twice as with the alias pitfall (REFERENCE 2.9).
  const std::vector<float> after = table.value().to_vector();
  const Tensor g = table.grad();
  for (std::size_t i = 0; i < after.size(); ++i) {
    const double moved = std::abs(static_cast<double>(after[i]) - before[i]);
    if (g.data()[i] != 0.0f) CHECK(moved == doctest::Approx(0.1).epsilon(1e-4));
    else CHECK(moved == 0.0);
  }
}

TEST_CASE("tying: sparse + sparse stays sparse, one dense path makes the shared gradient dense") {
  Parameter table("table", table_values());
  TwoLookups m(nn::Embedding(table, {.sparse = true}), nn::EmbeddingBag(table, {.mode = BagMode::Sum, .sparse = true}));
  both_paths(m, {});
  REQUIRE(table.grad_store() != nullptr);
  CHECK(table.grad_store()->is_sparse());
  // One block per lookup, each with one entry per distinct row (tokens {0,1,3,4}, bag {0,1,2,3}),
  // never one per occurrence; coalescing merges them into the 5 distinct rows.
  CHECK(table.grad_store()->num_blocks() == 2);
  CHECK(table.grad_store()->rows().size() == 5);
  CHECK(table.grad_store()->num_blocks() == 1);

  Parameter dense_table("dense", table_values());
  TwoLookups mixed(nn::Embedding(dense_table, {.sparse = true}), nn::EmbeddingBag(dense_table, {.mode = BagMode::Sum}));
  both_paths(mixed, {});
  CHECK_FALSE(dense_table.grad_store()->is_sparse());
  EMB_CHECK_CLOSE(dense_table.grad(), table.grad());
}

TEST_CASE("tying: the alias_of pitfall is refused, opt-in lists two Parameters, the tie lists one") {
  SUBCASE("alias without allow_alias: parameters() throws") {
    nn::Embedding emb(5, 3);
    Parameter alias = Parameter::alias_of(emb.weight, "bag.weight");
    TwoLookups m(std::move(emb), nn::EmbeddingBag(alias, {.mode = BagMode::Sum}));
    CHECK_THROWS_WITH_AS(m.parameters(),
                         "Module::parameters: Parameters 'emb.weight' (position 0) and 'bag.weight' (position 1) are two "
                         "distinct Parameters over the same storage, so they would get two gradients and two "
                         "optimizer states; to tie them, pass the same Parameter to both modules (to study the "
                         "pitfall on purpose, call allow_alias() on the alias)",
                         hitch::Error);
  }
  SUBCASE("alias with allow_alias: two Parameters, whose gradients add up to the tied one") {
    Parameter shared("weight", table_values());
    Parameter alias = Parameter::alias_of(shared, "bag.weight");
    alias.allow_alias();
    TwoLookups m(nn::Embedding(shared), nn::EmbeddingBag(alias, {.mode = BagMode::Sum}));
    const auto params = m.parameters();
    REQUIRE(params.size() == 2);
    CHECK(params[0].shares_storage_with(params[1]));
    both_paths(m, {});

    Parameter tied_table("tied", table_values());
    TwoLookups tied(nn::Embedding(tied_table), nn::EmbeddingBag(tied_table, {.mode = BagMode::Sum}));
    both_paths(tied, {});
    EMB_CHECK_CLOSE(shared.grad() + alias.grad(), tied_table.grad());
    CHECK(emb_test::diff(shared.grad(), tied_table.grad()) != "");  // each alias saw only its path
  }
  SUBCASE("the correct tie: one Parameter") {
    nn::Embedding emb(5, 3);
    nn::EmbeddingBag bag(emb.weight, {.mode = BagMode::Sum});
    TwoLookups m(std::move(emb), std::move(bag));
    CHECK(m.parameters().size() == 1);
  }
}

namespace {

// Embedding, EmbeddingBag and the output projection (Linear around the same Parameter): the
// three-way tie of a seq2seq model's shared vocabulary table.
struct ThreeWay : nn::Module {
  nn::Embedding emb;
  nn::EmbeddingBag bag;
  nn::Linear head;
  explicit ThreeWay(const Parameter& table)
      : emb(table), bag(table, {.mode = BagMode::Mean}), head(table) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    m.module("head", head);
  }
};

const Tensor kHidden({2, 3}, {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f});  // [B, D] read by the head
Tensor head_grad_out() { return Tensor({2, 5}, Tensor::arange(-4, 6, 1).to_vector()); }

}  // namespace

TEST_CASE("tying: a three-way tie (Embedding, EmbeddingBag, Linear head) gets the sum of the three paths") {
  Parameter table("table", table_values());
  ThreeWay tied(table);
  CHECK(tied.head.weight.is_same(table));
  const Tensor logits = tied.head(kHidden);  // [2, 3] x [5, 3]^T -> [2, 5]
  backward(sum(tied.emb(kTokens) * emb_grad_out()) + sum(tied.bag(kBagInput, kOffsets) * bag_grad_out()) +
           sum(logits * head_grad_out()));

  // Each path alone, on its own copy of the same values.
  Parameter a("a", table_values()), b("b", table_values()), c("c", table_values());
  backward(sum(nn::Embedding(a)(kTokens) * emb_grad_out()));
  backward(sum(nn::EmbeddingBag(b, {.mode = BagMode::Mean})(kBagInput, kOffsets) * bag_grad_out()));
  backward(sum(nn::Linear(c)(kHidden) * head_grad_out()));
  // The head's own contribution is g^T h: check it against the formula, so the sum below is not
  // checked against Linear's backward alone.
  const Tensor want_head = matmul(head_grad_out(), kHidden, true, false);  // [5, 2] x [2, 3]
  CHECK_MESSAGE(emb_test::diff(c.grad(), want_head).empty(), emb_test::diff(c.grad(), want_head));
  const std::string msg = emb_test::diff(table.grad(), a.grad() + b.grad() + c.grad(), 1e-5, 1e-6);
  CHECK_MESSAGE(msg.empty(), msg);

  // Listed once, one optimizer state, one update.
  const auto named = tied.named_parameters();
  REQUIRE(named.size() == 1);
  CHECK(named[0].first == "emb.weight");
  optim::Adam adam(tied.parameters(), {.lr = 0.1});
  const std::vector<float> before = table.value().to_vector();
  adam.step();
  CHECK(adam.state_size() == 1);
  const std::vector<float> after = table.value().to_vector();
  const Tensor g = table.grad();
  for (std::size_t i = 0; i < after.size(); ++i)
    if (g.data()[i] != 0.0f) CHECK(std::abs(static_cast<double>(after[i]) - before[i]) == doctest::Approx(0.1).epsilon(1e-4));
}

TEST_CASE("tying: an optimizer built before a re-tie refuses to step, names the orphan and changes nothing") {
  nn::Embedding emb(Parameter("emb.weight", table_values()));
  nn::Linear head(3, 5, /*bias=*/false);
  head.weight.set_name("head.weight");
  optim::Adam adam(std::vector<Parameter>{emb.weight, head.weight}, {.lr = 0.1});
  backward(sum(emb(kTokens) * emb_grad_out()));
  adam.step();  // both held by modules: fine (head.weight has no gradient and is skipped)
  REQUIRE(adam.state_size() == 1);
  const optim::AdamState before_state = *adam.state(emb.weight);

  head.weight = emb.weight;  // tied after the optimizer was built: the old head.weight is orphaned
  backward(sum(head(kHidden) * head_grad_out()));
  const std::vector<float> values = emb.weight.value().to_vector();
  const std::uint64_t version = emb.weight.impl().storage->version;
  CHECK_THROWS_WITH_AS(adam.step(),
                       "Adam::step: Parameter 'head.weight' (group 0 position 1) is held by this optimizer only: no "
                       "module or tensor holds it any more, so it can never get a gradient (was it re-tied or "
                       "replaced after the optimizer was built? build the optimizer after tying, from "
                       "model.parameters())",
                       Error);
  CHECK(emb.weight.value().to_vector() == values);
  CHECK(emb.weight.impl().storage->version == version);
  CHECK(adam.state(emb.weight)->step == before_state.step);
  CHECK(adam.state(emb.weight)->exp_avg == before_state.exp_avg);
  CHECK(adam.state_size() == 1);

  // Built after tying: holds only what the modules hold, and steps.
  optim::Adam fresh(std::vector<Parameter>{emb.weight}, {.lr = 0.1});
  fresh.step();
  CHECK(fresh.state_size() == 1);
  CHECK(emb.weight.value().to_vector() != values);
}
