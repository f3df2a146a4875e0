// Model building blocks: dropout, layer_norm and gelu (gradcheck table, values recomputed
// independently, exact errors recording nothing), Linear around an existing Parameter with any
// leading dims, Sequential, Dropout, LayerNorm, GELU and train/eval.
// init, requires_grad_ and state dicts are in test_nn_init_state.cpp.
#include <cmath>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include <hitch/nn/nn.h>
#include "op_table.h"
#include <hitch/ops/ops.h>
#include "state_snapshot.h"

using namespace hitch;
using namespace op_test;

namespace {

void check_close(const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(static_cast<std::size_t>(got.numel()) == want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    CHECK_MESSAGE(std::abs(got.data()[i] - want[i]) <= tol * (1.0 + std::abs(want[i])),
                  fmt::format("element {}: got {}, want {}", i, got.data()[i], want[i]));
}

// Normalised shapes and the trailing dims they must match.
Shape tail(const Shape& s, std::size_t k) { return Shape(s.end() - static_cast<std::ptrdiff_t>(k), s.end()); }

}  // namespace

TEST_CASE("nn blocks: gradcheck table of dropout, layer_norm and gelu") {
  std::vector<OpCase> table;
  // dropout: a fresh generator of a fixed seed in every evaluation, so each call draws the same mask.
  for (float p : {0.0f, 0.3f, 0.5f, 1.0f})
    table.push_back({fmt::format("dropout p={}", p), {{{7}}, {{3, 4}}, {{2, 3, 2}}}, [p](const Inputs& in) {
                       Generator g(5);
                       return dropout(in[0], p, true, g);
                     }});
  table.push_back({"dropout eval", {{{3, 4}}}, [](const Inputs& in) {
                     Generator g(5);
                     return dropout(in[0], 0.5f, false, g);
                   }});
  // layer_norm over one and two trailing dims, with weight and bias, weight only, neither.
  const std::vector<std::pair<Shape, std::size_t>> ln = {{{5}, 1}, {{3, 4}, 1}, {{2, 3, 4}, 1}, {{2, 3, 4}, 2},
                                                         {{2, 2, 3}, 3}, {{3, 1}, 1}, {{4, 2}, 2}};
  for (const auto& [shape, k] : ln) {
    const Shape ns = tail(shape, k);
    table.push_back({"layer_norm affine", {{shape, ns, ns}}, [ns](const Inputs& in) {
                       return layer_norm(in[0], ns, in[1], in[2]);
                     }});
    table.push_back({"layer_norm weight only", {{shape, ns}}, [ns](const Inputs& in) {
                       return layer_norm(in[0], ns, in[1], {}, 1e-3f);
                     }});
    table.push_back({"layer_norm plain", {{shape}}, [ns](const Inputs& in) { return layer_norm(in[0], ns); }});
  }
  for (const char* approx : {"none", "tanh"})
    table.push_back({fmt::format("gelu {}", approx), {{{6}}, {{2, 3}}, {{2, 1, 3}}}, [approx](const Inputs& in) {
                       return gelu(in[0], approx);
                     }});
  CHECK(run_table(table, 42) == 13 + 3 * 7 + 6);
}

TEST_CASE("nn blocks: dropout draws one uniform per element and scales the kept ones by 1/(1-p)") {
  Generator g0(3);
  const Tensor a = Tensor::randn({4, 5}, g0);
  for (float p : {0.2f, 0.5f, 0.9f}) {
    Generator gen(11), replay(11);
    const Tensor out = dropout(a, p, true, gen);
    int kept = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) {
      const bool keep = replay.uniform() >= static_cast<double>(p);
      kept += keep;
      CHECK(out.data()[i] == (keep ? a.data()[i] * static_cast<float>(1.0 / (1.0 - static_cast<double>(p))) : 0.0f));
    }
    CHECK(gen.state() == replay.state());  // exactly numel draws
    CHECK(kept > 0);
  }
  // p = 1: all zero (no division by zero); p = 0 or eval: a copy, nothing drawn, gradients pass.
  Generator gen(1);
  CHECK(dropout(a, 1.0f, true, gen).to_vector() == std::vector<float>(20, 0.0f));
  const auto state = gen.state();
  Tensor x = Tensor({3}, {1, 2, 3}).requires_grad_();
  const Tensor y = dropout(x, 0.7f, false, gen);
  CHECK(y.to_vector() == x.to_vector());
  CHECK_FALSE(y.is_same(x));
  CHECK(dropout(x, 0.0f, true, gen).to_vector() == x.to_vector());
  CHECK(gen.state() == state);
  backward(sum(y));
  CHECK(x.grad().to_vector() == std::vector<float>{1, 1, 1});
  // The mean over many elements stays near the input's (the point of the 1/(1-p) scale).
  Generator big(9);
  const Tensor ones = Tensor::ones({20000});
  CHECK(std::abs(mean(dropout(ones, 0.25f, true, big)).item() - 1.0f) < 0.03f);
}

TEST_CASE("nn blocks: layer_norm values against a direct computation, and torch's edge cases") {
  const Tensor a({2, 2, 3}, {1, 2, 3, -4, 0, 2.5f, 7, 7, 7, 0.5f, -0.25f, 1});
  const Tensor w2({2, 3}, {1, 2, 3, -1, 0.5f, 0.25f}), b2({2, 3}, {0, 1, 0, -1, 0, 2});
  const Tensor w1({3}, {-1, 0.5f, 0.25f}), b1({3}, {-1, 0, 2});
  for (std::size_t k : {1u, 2u}) {
    const Shape ns = tail(a.shape(), k);
    const Tensor& w = k == 2 ? w2 : w1;
    const Tensor& b = k == 2 ? b2 : b1;
    const std::int64_t n = numel_of(ns);
    std::vector<double> want, plain;
    for (std::int64_t r = 0; r < a.numel() / n; ++r) {
      double mu = 0, var = 0;
      for (std::int64_t j = 0; j < n; ++j) mu += a.data()[r * n + j] / static_cast<double>(n);
      for (std::int64_t j = 0; j < n; ++j) var += std::pow(a.data()[r * n + j] - mu, 2) / static_cast<double>(n);
      for (std::int64_t j = 0; j < n; ++j) {
        const double xhat = (a.data()[r * n + j] - mu) / std::sqrt(var + 1e-5);
        plain.push_back(xhat);
        want.push_back(xhat * w.data()[j] + b.data()[j]);
      }
    }
    check_close(layer_norm(a, ns, w, b), want);
    check_close(layer_norm(a, ns), plain);
  }
  // A constant row normalises to 0 (var = 0: 0 * 1/sqrt(eps)), so the output is the bias.
  check_close(layer_norm(Tensor({1, 3}, {7, 7, 7}), {3}, {}, b1), {-1, 0, 2});
  // Empty leading dims and an empty normalised dim are legal and give empty outputs.
  CHECK(layer_norm(Tensor::zeros({0, 3}), {3}).shape() == Shape{0, 3});
  CHECK(layer_norm(Tensor::zeros({2, 0}), {0}).shape() == Shape{2, 0});
}

TEST_CASE("nn blocks: gelu at known points, both forms") {
  // Phi(1) = 0.841344746..., Phi(-1) = 0.158655253...; the tanh form at 1 is
  // 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.841191990...
  const Tensor x({4}, {0, 1, -1, 3});
  check_close(gelu(x), {0, 0.8413447460685429, -0.15865525393145707, 3 * 0.9986501019683699});
  check_close(gelu(x, "tanh"), {0, 0.8411919906082768, -0.15880800939172324, 2.996362607918227});
  // The derivative at 0 is 1/2 for both.
  for (const char* approx : {"none", "tanh"}) {
    Tensor z = Tensor({1}, {0}).requires_grad_();
    backward(sum(gelu(z, approx)));
    CHECK(z.grad().item() == doctest::Approx(0.5));
  }
}

TEST_CASE("nn blocks: bad arguments of dropout, layer_norm and gelu are refused, recording nothing") {
  Tensor a = Tensor::ones({2, 3}).requires_grad_();
  Generator gen(4);
  const hitch_test::StateSnapshot before({a}, nullptr, &gen);
  CHECK_REJECTS(dropout(a, 1.5f, true, gen), "dropout: p must be in [0, 1], got 1.5");
  CHECK_REJECTS(dropout(a, -0.1f, false, gen), "dropout: p must be in [0, 1], got -0.1");
  CHECK_REJECTS(dropout(a, NAN, true, gen), "dropout: p must be in [0, 1], got nan");
  CHECK_REJECTS(layer_norm(a, {}), "layer_norm: normalized_shape must have at least one dim, got []");
  CHECK_REJECTS(layer_norm(a, {2}), "layer_norm: input of shape [2,3] does not end with normalized_shape [2]");
  CHECK_REJECTS(layer_norm(a, {1, 2, 3}), "layer_norm: input of shape [2,3] does not end with normalized_shape [1,2,3]");
  CHECK_REJECTS(layer_norm(a, {3}, Tensor::ones({2, 3})),
                "layer_norm: weight has shape [2,3], but normalized_shape is [3]");
  CHECK_REJECTS(layer_norm(a, {3}, {}, Tensor::ones({4})), "layer_norm: bias has shape [4], but normalized_shape is [3]");
  CHECK_REJECTS(layer_norm(a, {3}, {}, {}, 0.0f), "layer_norm: eps must be finite and > 0, got 0");
  CHECK_REJECTS(layer_norm(a, {3}, {}, {}, INFINITY), "layer_norm: eps must be finite and > 0, got inf");
  CHECK_REJECTS(gelu(a, "erf"), "gelu: approximate must be \"none\" or \"tanh\", got \"erf\"");
  before.check();
}

TEST_CASE("nn blocks: backward refuses a layer_norm whose input or weight was written in place") {
  Parameter w("w", Tensor::ones({3}));
  Tensor x = Tensor({2, 3}, {1, 2, 3, 0, 1, 5}).requires_grad_();
  const Tensor y = layer_norm(x, {3}, w.value());
  w.data()[0] = 2.0f;
  w.bump_version();
  CHECK_THROWS_AS(backward(sum(y)), Error);
}

// ---- Linear ----------------------------------------------------------------------------------

namespace {
// A tied language-model head: the output projection IS the embedding table.
struct TiedLM : nn::Module {
  nn::Embedding emb;
  nn::Linear head;
  explicit TiedLM(Generator& gen) : emb(5, 3, {}, gen), head(emb.weight) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("head", head);
  }
};
}  // namespace

TEST_CASE("nn blocks: Linear around an existing Parameter ties an output projection to an embedding") {
  Generator gen(2);
  TiedLM lm(gen);
  CHECK(lm.head.weight.is_same(lm.emb.weight));
  CHECK(lm.head.in_features == 3);
  CHECK(lm.head.out_features == 5);
  CHECK_FALSE(lm.head.bias.defined());
  const auto named = lm.named_parameters();
  REQUIRE(named.size() == 1);
  CHECK(named[0].first == "emb.weight");

  // logits[b, v] = <emb(ids)[b], W[v]>; the table's gradient is the sum of both paths.
  const IndexTensor ids{1, 4};
  const Tensor logits = lm.head(lm.emb(ids));
  REQUIRE(logits.shape() == Shape{2, 5});
  const Tensor W = lm.emb.weight.value();
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t v = 0; v < 5; ++v) {
      double dot = 0;
      for (std::int64_t d = 0; d < 3; ++d) dot += W.at({ids[b], d}) * W.at({v, d});
      CHECK(logits.at({b, v}) == doctest::Approx(dot).epsilon(1e-6));
    }
  backward(sum(logits));
  // d/dW[v,d] of sum_{b,v'} <W[ids b], W[v']>: sum_b W[ids b, d] for every v (head path) plus
  // sum_v' W[v', d] for each looked-up row (embedding path).
  const Tensor g = lm.emb.weight.grad();
  for (std::int64_t v = 0; v < 5; ++v)
    for (std::int64_t d = 0; d < 3; ++d) {
      double want = W.at({1, d}) + W.at({4, d});
      double col = 0;
      for (std::int64_t u = 0; u < 5; ++u) col += W.at({u, d});
      want += (v == 1 || v == 4 ? col : 0.0);
      CHECK(g.at({v, d}) == doctest::Approx(want).epsilon(1e-5));
    }
}

TEST_CASE("nn blocks: Linear takes any number of leading dims, also none") {
  Generator gen(3);
  nn::Linear lin(3, 2, true, gen);
  Tensor x = Tensor::randn({2, 4, 3}, gen).requires_grad_();
  const Tensor y = lin(x);
  REQUIRE(y.shape() == Shape{2, 4, 2});
  const Tensor flat = lin(reshape(x.detach(), {8, 3}));
  CHECK(y.to_vector() == flat.to_vector());
  const Tensor one = lin(Tensor({3}, {1, -2, 0.5f}));
  REQUIRE(one.shape() == Shape{2});
  CHECK(one.to_vector() == lin(Tensor({1, 3}, {1, -2, 0.5f})).to_vector());
  CHECK(lin(Tensor::zeros({0, 5, 3})).shape() == Shape{0, 5, 2});
  const GradcheckResult r = gradcheck("linear [2,4,3]", [&](const std::vector<Tensor>& in) { return lin(in[0]); },
                                      {x, lin.weight.value(), lin.bias.value()});
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("nn blocks: Linear(weight, bias) checks its Parameters, and forward names the shapes") {
  const std::size_t tape_start = tape_size();
  CHECK_THROWS_WITH_AS(nn::Linear{Parameter()}, "Linear: the weight Parameter is an empty handle", Error);
  CHECK_THROWS_WITH_AS(nn::Linear(Parameter("w", Tensor::ones({4}))),
                       "Linear: weight must be 2-D [out_features, in_features], but has shape [4]", Error);
  CHECK_THROWS_WITH_AS(nn::Linear(Parameter("w", Tensor::ones({2, 3})), Parameter("b", Tensor::ones({3}))),
                       "Linear: bias must have shape [2] (out_features of weight [2,3]), but has shape [3]", Error);
  const Parameter w("w", Tensor::ones({2, 3})), b("b", Tensor::zeros({2}));
  const nn::Linear lin(w, b);
  CHECK(lin.bias.is_same(b));
  CHECK_REJECTS(lin(Tensor::ones({4, 2})), "Linear: expected input of shape [*,3] (any leading dims), got [4,2]");
  CHECK_REJECTS(lin(Tensor::scalar(1.0f)), "Linear: expected input of shape [*,3] (any leading dims), got []");
  CHECK(tape_size() == tape_start);
}

// ---- Sequential and the small modules -----------------------------------------------------------

TEST_CASE("nn blocks: Sequential chains its children, names them 0, 1, ... and train/eval reaches them") {
  Generator gen(8);
  nn::Sequential mlp(nn::Linear(4, 8, true, gen), nn::ReLU(), nn::Dropout(0.5f, gen), nn::Linear(8, 2, true, gen),
                     nn::Tanh());
  REQUIRE(mlp.size() == 5);
  std::vector<std::string> names;
  for (const auto& [name, p] : mlp.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias"});

  auto& l0 = dynamic_cast<nn::Linear&>(mlp[0]);
  auto& l3 = dynamic_cast<nn::Linear&>(mlp[3]);
  const Tensor x = Tensor::randn({3, 4}, gen);
  mlp.eval();
  CHECK_FALSE(mlp[2].is_training());
  CHECK(mlp(x).to_vector() == tanh(l3(relu(l0(x)))).to_vector());
  mlp.train();
  CHECK(mlp[2].is_training());
  // In training the dropout draws from gen: replaying its state gives the same output.
  const auto state = gen.state();
  const Tensor y = mlp(x);
  gen.set_state(state);
  CHECK(y.to_vector() == tanh(l3(dropout(relu(l0(x)), 0.5f, true, gen))).to_vector());

  // Nesting with push_back / append; the nested parameters are prefixed; a tie is listed once.
  nn::Sequential outer;
  outer.append(std::move(mlp)).push_back(std::make_unique<nn::Linear>(l3.weight));
  CHECK(outer.size() == 2);
  names.clear();
  for (const auto& [name, p] : outer.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"0.0.weight", "0.0.bias", "0.3.weight", "0.3.bias"});
  outer.eval();
  CHECK_FALSE(dynamic_cast<nn::Sequential&>(outer[0])[2].is_training());
  // An empty Sequential is the identity.
  CHECK(nn::Sequential()(x).to_vector() == x.to_vector());

  CHECK_THROWS_WITH_AS(outer[2], "Sequential: index 2 is out of range for 2 modules (valid: [0, 2))", Error);
  CHECK_THROWS_WITH_AS(outer.push_back(nullptr), "Sequential::push_back: the module is a null pointer (position 2)",
                       Error);
  CHECK(outer.size() == 2);
}

TEST_CASE("nn blocks: Dropout, LayerNorm, GELU modules hold their options and call the ops") {
  Generator gen(6);
  nn::Dropout drop(0.25f, gen);
  const Tensor x = Tensor::randn({4, 3}, gen);
  const auto state = gen.state();
  drop.eval();
  CHECK(drop(x).to_vector() == x.to_vector());
  CHECK(gen.state() == state);  // eval draws nothing
  drop.train();
  Generator replay(0);
  replay.set_state(state);
  CHECK(drop(x).to_vector() == dropout(x, 0.25f, true, replay).to_vector());

  nn::LayerNorm ln({3});
  REQUIRE(ln.named_parameters().size() == 2);
  CHECK(ln.named_parameters()[0].first == "weight");
  CHECK(ln.weight.value().to_vector() == std::vector<float>{1, 1, 1});
  CHECK(ln.bias.value().to_vector() == std::vector<float>{0, 0, 0});
  CHECK(ln(x).to_vector() == layer_norm(x, {3}).to_vector());
  nn::LayerNorm bare({4, 3}, 1e-3f, false);
  CHECK(bare.parameters().empty());
  CHECK(bare(x).to_vector() == layer_norm(x, {4, 3}, {}, {}, 1e-3f).to_vector());

  CHECK(nn::GELU("tanh")(x).to_vector() == gelu(x, "tanh").to_vector());
  CHECK(nn::GELU()(x).to_vector() == gelu(x).to_vector());

  const auto gen_before = gen.state();
  CHECK_THROWS_WITH_AS(nn::Dropout(2.0f, gen), "Dropout: p must be in [0, 1], got 2", Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm({}), "LayerNorm: normalized_shape must have at least one dim, got []", Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm({3}, -1.0f), "LayerNorm: eps must be finite and > 0, got -1", Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm({-3}), "Tensor::ones: shape [-3] has a negative size -3 at dim 0", Error);
  CHECK_THROWS_WITH_AS(nn::GELU("exact"), "GELU: approximate must be \"none\" or \"tanh\", got \"exact\"", Error);
  CHECK(gen.state() == gen_before);
}
