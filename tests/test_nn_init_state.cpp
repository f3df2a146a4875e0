// nn::init (formulas recomputed from a replayed generator, bounds and statistics, the version
// bump that makes a stale backward fail, argument errors), Module::requires_grad_, and in-memory
// state dicts (round trip with a tied model, every mismatch reported, nothing changed on error).
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <hitch/core/tape.h>
#include <hitch/nn/nn.h>
#include <hitch/ops/ops.h>
#include "state_snapshot.h"

using namespace hitch;

namespace {

double mean_of(const Tensor& t) {
  double s = 0;
  for (float v : t.values()) s += v;
  return s / static_cast<double>(t.numel());
}
double std_of(const Tensor& t) {
  const double m = mean_of(t);
  double s = 0;
  for (float v : t.values()) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(t.numel()));
}
std::uint64_t version(const Tensor& t) { return t.impl().storage->version; }

// Values a + (b - a) u drawn from a generator in the given state, as torch's uniform_.
std::vector<float> replay_uniform(std::uint64_t seed, std::int64_t n, double a, double b) {
  Generator g(seed);
  std::vector<float> out;
  for (std::int64_t i = 0; i < n; ++i) out.push_back(static_cast<float>(a + (b - a) * g.uniform()));
  return out;
}

}  // namespace

TEST_CASE("init: uniform_, normal_, constant_, zeros_, ones_ write in place from the formula") {
  Parameter w("w", Tensor::zeros({30, 40}));
  const std::uint64_t v0 = version(w.value());
  Generator gen(5);
  const Tensor r = nn::init::uniform_(w, -0.5, 2.0, gen);
  CHECK(r.is_same(w.value()));  // returns the same handle
  CHECK(w.value().to_vector() == replay_uniform(5, 1200, -0.5, 2.0));
  CHECK(version(w.value()) == v0 + 1);
  CHECK(w.requires_grad());

  Generator gn(7), replay(7);
  nn::init::normal_(w, 3.0, 0.5, gn);
  for (std::int64_t i = 0; i < 1200; ++i) CHECK(w.data()[i] == static_cast<float>(3.0 + 0.5 * replay.normal()));
  CHECK(mean_of(w.value()) == doctest::Approx(3.0).epsilon(0.01));
  CHECK(std_of(w.value()) == doctest::Approx(0.5).epsilon(0.05));

  nn::init::constant_(w, -1.25);
  CHECK(w.value().to_vector() == std::vector<float>(1200, -1.25f));
  nn::init::zeros_(w);
  CHECK(w.value().to_vector() == std::vector<float>(1200, 0.0f));
  nn::init::ones_(w);
  CHECK(w.value().to_vector() == std::vector<float>(1200, 1.0f));
  CHECK(version(w.value()) == v0 + 5);

  // No elements: nothing drawn, version unchanged.
  Tensor empty = Tensor::zeros({0, 3});
  const auto state = gen.state();
  nn::init::uniform_(empty, 0, 1, gen);
  nn::init::xavier_uniform_(empty, 1.0, gen);
  nn::init::kaiming_uniform_(empty, 0.0, "fan_in", "leaky_relu", gen);
  CHECK(gen.state() == state);
  CHECK(version(empty) == 0);
}

TEST_CASE("init: fans and gains are torch's, and xavier and kaiming bounds follow them") {
  const Tensor t4 = Tensor::zeros({6, 4, 3, 2});  // receptive field 6
  const nn::init::Fans f = nn::init::calculate_fan_in_and_fan_out(t4);
  CHECK(f.fan_in == 24);
  CHECK(f.fan_out == 36);
  CHECK(nn::init::calculate_fan_in_and_fan_out(Tensor::zeros({5, 7})).fan_in == 7);
  CHECK(nn::init::calculate_gain("linear") == 1.0);
  CHECK(nn::init::calculate_gain("sigmoid") == 1.0);
  CHECK(nn::init::calculate_gain("tanh") == doctest::Approx(5.0 / 3.0));
  CHECK(nn::init::calculate_gain("relu") == doctest::Approx(std::sqrt(2.0)));
  CHECK(nn::init::calculate_gain("selu") == 0.75);
  CHECK(nn::init::calculate_gain("leaky_relu") == doctest::Approx(std::sqrt(2.0 / (1 + 0.01 * 0.01))));
  CHECK(nn::init::calculate_gain("leaky_relu", std::sqrt(5.0)) == doctest::Approx(std::sqrt(1.0 / 3.0)));

  // xavier_uniform_: bound = gain sqrt(6 / (fan_in + fan_out)).
  Tensor w = Tensor::zeros({6, 4, 3, 2});
  Generator gen(3);
  nn::init::xavier_uniform_(w, 2.0, gen);
  const double xb = 2.0 * std::sqrt(6.0 / 60.0);
  CHECK(w.to_vector() == replay_uniform(3, w.numel(), -xb, xb));

  // kaiming_uniform_: bound = sqrt(3) gain / sqrt(fan).
  for (const char* mode : {"fan_in", "fan_out"})
    for (const char* nl : {"leaky_relu", "relu", "tanh", "linear"}) {
      Generator g(9);
      nn::init::kaiming_uniform_(w, 0.2, mode, nl, g);
      const double fan = std::string(mode) == "fan_in" ? 24.0 : 36.0;
      const double gain = std::string(nl) == "leaky_relu" ? std::sqrt(2.0 / 1.04)
                          : std::string(nl) == "relu"     ? std::sqrt(2.0)
                          : std::string(nl) == "tanh"     ? 5.0 / 3.0
                                                          : 1.0;
      const double kb = std::sqrt(3.0) * gain / std::sqrt(fan);
      CHECK_MESSAGE(w.to_vector() == replay_uniform(9, w.numel(), -kb, kb), mode, " ", nl);
    }

  // nn::Linear's init is kaiming_uniform_(a = sqrt(5)): bound 1/sqrt(in). Same draws, same values.
  Generator g1(4), g2(4);
  nn::Linear lin(16, 8, false, g1);
  Tensor k = Tensor::zeros({8, 16});
  nn::init::kaiming_uniform_(k, std::sqrt(5.0), "fan_in", "leaky_relu", g2);
  const std::vector<float> a = lin.weight.value().to_vector(), b = k.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-6));
  // The bounds hold and are nearly reached over many draws.
  Tensor big = Tensor::zeros({200, 50});
  Generator g3(1);
  nn::init::xavier_uniform_(big, 1.0, g3);
  const double bb = std::sqrt(6.0 / 250.0);
  float lo = 1, hi = -1;
  for (float v : big.values()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -bb);
  CHECK(hi <= bb);
  CHECK(lo < -0.99 * bb);
  CHECK(hi > 0.99 * bb);
  CHECK(std::abs(mean_of(big)) < 0.01 * bb);
  CHECK(std_of(big) == doctest::Approx(bb / std::sqrt(3.0)).epsilon(0.02));
}

TEST_CASE("init: a backward that saved the old values is refused after an init") {
  Parameter w("w", Tensor::ones({2, 2}));
  const Tensor y = w.value() * w.value();
  Generator gen(1);
  nn::init::uniform_(w, -1, 1, gen);
  std::string message;
  try {
    backward(sum(y));
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK_MESSAGE(message.find("(mul) reads a value that was modified in place after it was recorded (version 1, "
                             "recorded at 0)") != std::string::npos,
                message);
  CHECK_FALSE(w.has_grad());
}

TEST_CASE("init: bad arguments are refused before anything is written or drawn") {
  Tensor w = Tensor::ones({3, 4});
  Generator gen(2);
  const hitch_test::StateSnapshot before({w}, nullptr, &gen);
  CHECK_THROWS_WITH_AS(nn::init::uniform_(w, 1, 0, gen),
                       "init::uniform_: a and b must be finite with a <= b, got a 1 and b 0", Error);
  CHECK_THROWS_WITH_AS(nn::init::uniform_(w, 0, INFINITY, gen),
                       "init::uniform_: a and b must be finite with a <= b, got a 0 and b inf", Error);
  CHECK_THROWS_WITH_AS(nn::init::normal_(w, 0, -1, gen),
                       "init::normal_: mean and std must be finite and std >= 0, got mean 0 and std -1", Error);
  CHECK_THROWS_WITH_AS(nn::init::normal_(w, NAN, 1, gen),
                       "init::normal_: mean and std must be finite and std >= 0, got mean nan and std 1", Error);
  CHECK_THROWS_WITH_AS(nn::init::constant_(w, INFINITY), "init::constant_: val must be finite, got inf", Error);
  CHECK_THROWS_WITH_AS(nn::init::xavier_uniform_(w, -1.0, gen),
                       "init::xavier_uniform_: gain must be finite and >= 0, got -1", Error);
  CHECK_THROWS_WITH_AS(nn::init::kaiming_uniform_(w, 0.0, "fan_avg", "relu", gen),
                       "init::kaiming_uniform_: mode must be \"fan_in\" or \"fan_out\", got \"fan_avg\"", Error);
  CHECK_THROWS_WITH_AS(nn::init::kaiming_uniform_(w, NAN, "fan_in", "relu", gen),
                       "init::kaiming_uniform_: a must be finite, got nan", Error);
  CHECK_THROWS_WITH_AS(nn::init::kaiming_uniform_(w, 0.0, "fan_in", "gelu", gen),
                       "calculate_gain: unsupported nonlinearity \"gelu\" (valid: linear, conv1d, conv2d, conv3d, "
                       "conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu, leaky_relu, selu)",
                       Error);
  CHECK_THROWS_WITH_AS(nn::init::calculate_gain("leaky_relu", INFINITY),
                       "calculate_gain: the negative slope of leaky_relu must be finite, got inf", Error);
  Tensor v = Tensor::ones({5});
  const hitch_test::StateSnapshot v_before({v}, nullptr, &gen);
  CHECK_THROWS_WITH_AS(nn::init::xavier_uniform_(v, 1.0, gen),
                       "init::xavier_uniform_: fan in and fan out need a tensor of rank >= 2, but the shape is [5]",
                       Error);
  CHECK_THROWS_WITH_AS(nn::init::kaiming_uniform_(v, 0.0, "fan_in", "relu", gen),
                       "init::kaiming_uniform_: fan in and fan out need a tensor of rank >= 2, but the shape is [5]",
                       Error);
  before.check();
  v_before.check();
}

// ---- requires_grad_ ------------------------------------------------------------------------------

namespace {
struct TiedLM : nn::Module {
  nn::Embedding emb;
  nn::Linear head;
  nn::LayerNorm norm{{3}};
  explicit TiedLM(Generator& gen, bool tied = true)
      : emb(5, 3, {}, gen), head(tied ? nn::Linear(emb.weight) : nn::Linear(3, 5, false, gen)) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("norm", norm);
    m.module("head", head);
  }
};
}  // namespace

TEST_CASE("Module::requires_grad_ freezes and unfreezes every Parameter, ties once") {
  Generator gen(1);
  TiedLM lm(gen);
  nn::Module& r = lm.requires_grad_(false);
  CHECK(&r == &lm);
  for (const Parameter& p : lm.parameters()) CHECK_FALSE(p.requires_grad());
  CHECK_FALSE(lm.head.weight.requires_grad());
  const std::size_t before = tape_size();
  const Tensor y = lm.head(lm.norm(lm.emb(IndexTensor{1, 2})));
  CHECK_FALSE(y.requires_grad());  // nothing to differentiate: nothing recorded
  CHECK(tape_size() == before);
  lm.requires_grad_();
  for (const Parameter& p : lm.parameters()) CHECK(p.requires_grad());
  backward(sum(lm.head(lm.norm(lm.emb(IndexTensor{1, 2})))));
  CHECK(lm.emb.weight.has_grad());
  CHECK(lm.norm.bias.has_grad());
}

// ---- state dicts -------------------------------------------------------------------------------

TEST_CASE("state_dict: a tied model round-trips, holding the table once plus its tie") {
  Generator gen(2);
  TiedLM lm(gen);
  nn::init::normal_(lm.norm.weight, 1.0, 0.1, gen);
  const nn::StateDict sd = nn::state_dict(lm);
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd.tensors) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"emb.weight", "norm.bias", "norm.weight"});
  CHECK(sd.ties == std::map<std::string, std::string>{{"head.weight", "emb.weight"}});
  CHECK(sd.tensors.at("emb.weight").to_vector() == lm.emb.weight.value().to_vector());
  CHECK_FALSE(sd.tensors.at("emb.weight").requires_grad());

  // A copy: training on does not change the snapshot, and loading restores in place.
  const std::vector<float> saved = lm.emb.weight.value().to_vector(), saved_w = lm.norm.weight.value().to_vector();
  const Tensor storage_before = lm.emb.weight.value();
  nn::init::zeros_(lm.emb.weight);
  nn::init::ones_(lm.norm.weight);
  CHECK(sd.tensors.at("emb.weight").to_vector() == saved);
  const std::uint64_t v = version(lm.emb.weight.value());
  nn::load_state_dict(lm, sd);
  CHECK(lm.emb.weight.value().to_vector() == saved);
  CHECK(lm.norm.weight.value().to_vector() == saved_w);
  CHECK(lm.head.weight.is_same(lm.emb.weight));
  CHECK(lm.emb.weight.value().is_same(storage_before));  // no rebinding
  CHECK(version(lm.emb.weight.value()) == v + 1);

  // Into another model of the same structure.
  Generator other_gen(99);
  TiedLM other(other_gen);
  nn::load_state_dict(other, sd);
  CHECK(other.emb.weight.value().to_vector() == saved);
  CHECK(other.head.weight.value().to_vector() == saved);
  // A hand-built dict holding the module's own tensors loads (onto itself).
  nn::StateDict self{{{"emb.weight", lm.emb.weight.value()}, {"norm.weight", lm.norm.weight.value()},
                      {"norm.bias", lm.norm.bias.value()}},
                     {{"head.weight", "emb.weight"}}};
  nn::load_state_dict(lm, self);
  CHECK(lm.emb.weight.value().to_vector() == saved);
}

TEST_CASE("state_dict: every mismatch is reported together and nothing changes") {
  Generator gen(3);
  TiedLM tied(gen), untied(gen, false);
  const nn::StateDict from_tied = nn::state_dict(tied), from_untied = nn::state_dict(untied);
  CHECK(from_untied.ties.empty());
  CHECK(from_untied.tensors.count("head.weight") == 1);

  const hitch_test::StateSnapshot tied_before(tied.parameters(), nullptr, nullptr);
  const hitch_test::StateSnapshot untied_before(untied.parameters(), nullptr, nullptr);
  CHECK_THROWS_WITH_AS(nn::load_state_dict(tied, from_untied),
                       fmt::format("load_state_dict: the state dict does not match the module: 'emb.weight' and "
                                   "'head.weight' are one Parameter in the module, but two tensors in the state dict "
                                   "whose values differ (element 0: {} and {})",
                                   untied.emb.weight.data()[0], untied.head.weight.data()[0])
                           .c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(nn::load_state_dict(untied, from_tied),
                       "load_state_dict: the state dict does not match the module: the state dict ties 'emb.weight' "
                       "and 'head.weight' to one tensor 'emb.weight', but in the module they are two separate "
                       "Parameters",
                       Error);

  nn::StateDict bad = from_tied;
  bad.tensors.erase("norm.bias");
  bad.tensors["extra"] = Tensor::zeros({1});
  bad.tensors["norm.weight"] = Tensor::zeros({4});
  bad.ties["head.bias"] = "emb.weight";
  bad.tensors["emb.weight"] = Tensor();
  CHECK_THROWS_WITH_AS(nn::load_state_dict(tied, bad),
                       "load_state_dict: the state dict does not match the module: missing keys 'norm.bias'; "
                       "unexpected keys 'extra', 'head.bias'; 'emb.weight' is an undefined tensor; 'norm.weight' has "
                       "shape [4] in the state dict and [3] in the module",
                       Error);

  nn::StateDict dangling = from_tied;
  dangling.ties["head.weight"] = "nowhere";
  CHECK_THROWS_WITH_AS(nn::load_state_dict(tied, dangling),
                       "load_state_dict: the state dict ties 'head.weight' to 'nowhere', which is not one of its "
                       "tensors",
                       Error);
  nn::StateDict both = from_tied;
  both.tensors["head.weight"] = Tensor::zeros({5, 3});
  CHECK_THROWS_WITH_AS(nn::load_state_dict(tied, both),
                       "load_state_dict: the state dict holds 'head.weight' both as a tensor and as a tie of "
                       "'emb.weight'",
                       Error);
  tied_before.check();
  untied_before.check();
}
