// Parameter identity, Module::parameters() deduplication and the hidden-alias refusal; Tensor
// basics and the generator.
#include <doctest/doctest.h>

#include <cmath>

#include <hitch/hitch.h>

using namespace hitch;

namespace {
struct Holder : nn::Module {
  Parameter a, b;
  void members(Members& m) const override {
    m.param("a", a);
    m.param("b", b);
  }
};
struct Outer : nn::Module {
  Holder left, right;
  Parameter own;
  void members(Members& m) const override {
    m.module("left", left);
    m.module("right", right);
    m.param("own", own);
  }
};
}  // namespace

TEST_CASE("Parameter: copies of the handle are one Parameter") {
  Parameter p("p", Tensor({2}, {1.0f, 2.0f}));
  Parameter q = p;
  CHECK(q.is_same(p));
  q.data()[0] = 7.0f;
  CHECK(p.data()[0] == 7.0f);
  backward(sum(mul(q, 2.0f)));
  CHECK(p.grad().at({0}) == 2.0f);
}

TEST_CASE("Parameter: construction copies the initial values") {
  Tensor init({2}, {1.0f, 2.0f});
  Parameter p("p", init);
  init.set({0}, 9.0f);
  CHECK(p.data()[0] == 1.0f);
}

TEST_CASE("Module: parameters() lists a shared Parameter once, first-seen order") {
  Parameter shared("shared", Tensor::ones({2}));
  Outer m;
  m.left.a = shared;
  m.left.b = Parameter("lb", Tensor::ones({1}));
  m.right.a = Parameter("ra", Tensor::ones({1}));
  m.right.b = shared;
  m.own = shared;
  const auto named = m.named_parameters();
  REQUIRE(named.size() == 3);
  CHECK(named[0].first == "left.a");
  CHECK(named[0].second.is_same(shared));
  CHECK(named[1].first == "left.b");
  CHECK(named[2].first == "right.a");
  CHECK(m.parameters().size() == 3);
}

TEST_CASE("Module: two distinct Parameters over one storage are refused unless allowed") {
  Holder h;
  h.a = Parameter("emb.weight", Tensor::ones({3, 2}));
  h.b = Parameter::alias_of(h.a, "bag.weight");
  CHECK(h.b.shares_storage_with(h.a));
  CHECK_FALSE(h.b.is_same(h.a));
  CHECK_THROWS_WITH_AS(
      h.parameters(),
      "Module::parameters: Parameters 'a' (position 0) and 'b' (position 1) are two distinct "  // their paths
      "Parameters over the same storage, so they would get two gradients and two optimizer states; to tie them, pass "
      "the same Parameter to both modules (to study the pitfall on purpose, call allow_alias() on the alias)",
      Error);
  h.b.allow_alias();
  CHECK(h.parameters().size() == 2);
}

TEST_CASE("Module: train/eval reach submodules, zero_grad reaches every Parameter") {
  Outer m;
  m.left.a = Parameter("x", Tensor::ones({1}));
  m.left.b = Parameter("y", Tensor::ones({1}));
  m.right.a = m.left.a;
  m.right.b = m.left.b;
  m.own = Parameter("z", Tensor::ones({1}));
  m.eval();
  CHECK_FALSE(m.is_training());
  CHECK_FALSE(m.left.is_training());
  m.train();
  CHECK(m.right.is_training());
  backward(sum(mul(m.left.a, m.own)));
  m.zero_grad(false);
  REQUIRE(m.left.a.has_grad());
  CHECK(m.left.a.grad().to_vector() == std::vector<float>{0.0f});
  m.zero_grad();  // set_to_none = true by default (PyTorch >= 2.0)
  CHECK_FALSE(m.left.a.has_grad());
  CHECK_FALSE(m.own.has_grad());
}

TEST_CASE("Tensor: creation, element access and errors") {
  Tensor t = Tensor::arange(0.0f, 6.0f);
  CHECK(t.shape() == Shape{6});
  Tensor m({2, 3}, t.to_vector());
  CHECK(m.at({1, 2}) == 5.0f);
  CHECK(m.size(-1) == 3);
  CHECK_THROWS_WITH_AS(Tensor({2, 3}, {1.0f}), "Tensor: shape [2,3] needs 6 values, got 1", Error);
  CHECK_THROWS_WITH_AS(m.at({2, 0}), "at: index 2 at dim 0 is out of range for shape [2,3] (valid: [0, 2))", Error);
  CHECK_THROWS_WITH_AS(m.size(2), "size: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])", Error);
  CHECK_THROWS_WITH_AS(m.item(), "item: the tensor must have one element, but has shape [2,3]", Error);
  CHECK(Tensor::full({2}, 3.5f).at({1}) == 3.5f);
  CHECK(fmt::format("{}", Tensor({2}, {1.0f, 2.5f})) == "tensor([1, 2.5], shape=[2])");
  CHECK(fmt::format("{}", IndexTensor{3, 4}) == "index_tensor([3, 4], shape=[2])");
}

TEST_CASE("Generator: same seed same numbers, distributions have the right moments") {
  Generator g1(42), g2(42), g3(43);
  CHECK(g1.next_u64() == g2.next_u64());
  CHECK(g1.next_u64() != g3.next_u64());
  Generator g(7);
  const Tensor n = Tensor::randn({200000}, g);
  double s = 0, s2 = 0;
  for (float x : n.values()) {
    s += x;
    s2 += static_cast<double>(x) * x;
  }
  const double mean = s / 200000, var = s2 / 200000 - mean * mean;
  CHECK(std::abs(mean) < 0.01);
  CHECK(std::abs(var - 1.0) < 0.02);
  const Tensor u = Tensor::uniform({10000}, -2.0f, 3.0f, g);
  for (float x : u.values()) {
    REQUIRE(x >= -2.0f);
    REQUIRE(x < 3.0f);
  }
  for (int i = 0; i < 1000; ++i) REQUIRE(g.below(7) < 7);
}

TEST_CASE("Parameter: grad hook ids are never reused, so a stale remove cannot drop a newer hook") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  int calls = 0;
  const int first = w.add_grad_hook([&](const GradContribution&) { ++calls; });
  w.remove_grad_hook(first);
  const int second = w.add_grad_hook([&](const GradContribution&) { ++calls; });
  CHECK(second != first);
  w.remove_grad_hook(first);  // stale: must not remove the second hook
  backward(sum(mul(w, 2.0f)));
  CHECK(calls == 1);
}
