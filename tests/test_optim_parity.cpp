// Tied training parity with PyTorch 1.13: every `kind tied_training` case of tests/fixtures/parity
// (format in FORMAT.md). One table W is shared by an embedding and an embedding_bag; gradients of
// both lookups and of every micro-batch accumulate in W's one gradient; one optimizer step per
// `accumulate` micro-batches, then zero_grad. Losses and the final W must match within
// 1e-4 abs + 1e-4 rel.
#include <doctest/doctest.h>

#include <memory>

#include <hitch/hitch.h>
#include "parity.h"

using namespace hitch;
using namespace hitch::optim;

namespace {

std::unique_ptr<Optimizer> make_optimizer(const parity::Case& c, const Parameter& w) {
  const std::string& kind = c.attr("optimizer");
  auto num = [&](const std::string& key, double fallback) { return c.attr_float(key).value_or(fallback); };
  auto flag = [&](const std::string& key) { return c.attr_int(key).value_or(0) != 0; };
  const std::vector<Parameter> params = {w};
  if (kind == "sgd")
    return std::make_unique<SGD>(params, SGDOptions{.lr = num("lr", 1e-3),
                                                    .momentum = num("momentum", 0.0),
                                                    .dampening = num("dampening", 0.0),
                                                    .weight_decay = num("weight_decay", 0.0),
                                                    .nesterov = flag("nesterov")});
  if (kind == "adam")
    return std::make_unique<Adam>(params, AdamOptions{.lr = num("lr", 1e-3),
                                                      .betas = {num("beta1", 0.9), num("beta2", 0.999)},
                                                      .eps = num("eps", 1e-8),
                                                      .weight_decay = num("weight_decay", 0.0),
                                                      .amsgrad = flag("amsgrad")});
  if (kind == "adamw")
    return std::make_unique<AdamW>(params, AdamWOptions{.lr = num("lr", 1e-3),
                                                        .betas = {num("beta1", 0.9), num("beta2", 0.999)},
                                                        .eps = num("eps", 1e-8),
                                                        .weight_decay = num("weight_decay", 1e-2),
                                                        .amsgrad = flag("amsgrad")});
  if (kind == "adagrad")
    return std::make_unique<Adagrad>(params, AdagradOptions{.lr = num("lr", 1e-2),
                                                            .lr_decay = num("lr_decay", 0.0),
                                                            .weight_decay = num("weight_decay", 0.0),
                                                            .initial_accumulator_value = num("initial_accumulator_value", 0.0),
                                                            .eps = num("eps", 1e-10)});
  if (kind == "sparse_adam")
    return std::make_unique<SparseAdam>(params, SparseAdamOptions{.lr = num("lr", 1e-3),
                                                                  .betas = {num("beta1", 0.9), num("beta2", 0.999)},
                                                                  .eps = num("eps", 1e-8)});
  FAIL(c.name << ": unknown optimizer " << kind);
  return nullptr;
}

// Runs one case; returns the parity messages (empty when everything matches).
std::vector<std::string> run_case(const parity::Case& c) {
  Parameter w("W", c.f("weight"));
  auto opt = make_optimizer(c, w);
  const bool sparse = c.attr("optimizer") == "sparse_adam";
  const std::optional<std::int64_t> pad = c.attr_int("padding_idx");
  const EmbeddingOptions emb_options{.padding_idx = pad, .sparse = sparse};
  const EmbeddingBagOptions bag_options{.mode = parse_bag_mode(c.attr("mode")), .padding_idx = pad, .sparse = sparse};
  const std::int64_t steps = *c.attr_int("steps");
  const std::int64_t accumulate = *c.attr_int("accumulate");
  std::vector<float> losses;
  for (std::int64_t s = 0; s < steps; ++s) {
    for (std::int64_t a = 0; a < accumulate; ++a) {
      const std::string prefix = "step" + std::to_string(s) + "_micro" + std::to_string(a) + "_";
      const Tensor e = embedding(c.i(prefix + "indices"), w, emb_options);      // [B, D]
      const Tensor b = embedding_bag(c.i(prefix + "bags"), w, bag_options);     // [B, D]
      const Tensor diff = sub(sum(mul(e, b), 1), c.f(prefix + "target"));       // [B]
      const Tensor loss = mean(square(diff));
      losses.push_back(loss.item());
      backward(loss);
    }
    opt->step();
    opt->zero_grad();
  }
  std::vector<std::string> problems;
  const auto n = static_cast<std::int64_t>(losses.size());
  for (const std::string& m : {parity::compare(c, "losses", Tensor({n}, losses), c.f("expected_losses")),
                               parity::compare(c, "weight_final", w.value(), c.f("expected_weight_final"))})
    if (!m.empty()) problems.push_back(m);
  return problems;
}

}  // namespace

TEST_CASE("Optimizer parity: every tied_training case (Embedding + EmbeddingBag sharing one Parameter)") {
  const auto cases = parity::load_kind("tied_training");
  REQUIRE_FALSE(cases.empty());
  std::size_t passed = 0;
  for (const parity::Case& c : cases) {
    INFO(c.name << " (" << c.attr("optimizer") << ", mode " << c.attr("mode") << ")");
    const auto problems = run_case(c);
    for (const std::string& p : problems) FAIL_CHECK(p);
    if (problems.empty()) ++passed;
  }
  MESSAGE("tied_training parity: " << passed << "/" << cases.size());
  CHECK(passed == cases.size());
}
