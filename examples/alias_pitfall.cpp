// examples/alias_pitfall.cpp: the seed recipe's `EmbeddingBag.from_pretrained(emb.weight,
// freeze=False)` (two Parameters over one storage) against true tying (one Parameter), trained
// side by side from identical weights on identical batches under six optimizers.
//
// The model is REFERENCE 2.9's measurement setup: a table [10, 4]; an Embedding over tokens
// [4, 3] summed over the sequence, plus an EmbeddingBag(sum) over 8 indices with offsets
// [0, 3, 5, 5]; their sum goes through Linear(4 -> 1); loss = mean((out / 10 - 1)^2). The
// pitfall's alias is made with Parameter::alias_of(...).allow_alias(): hitch's modules and
// optimizers refuse it without that explicit opt-in.
//
// Printed: a table of max |w_tied - w_pitfall| over the table after the last step, and the final
// losses (the loss of the last batch, computed before its step, as a training loop reports it).
// Under plain SGD and SGD+momentum the two agree (the update is linear in the gradient); weight
// decay is applied once per alias (twice); Adam, AdamW and Adagrad normalise each alias's
// gradient separately, so rows used by both paths take two steps per iteration.
// --dump-inputs writes the initial weights and the batches as JSON for
// scripts/alias_pitfall_pytorch.py, which builds the same table with PyTorch.
// The program exits with status 1 if SGD (with or without momentum) does not agree within 1e-4,
// or if Adam does not show the pitfall (> 1e-3).
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chart.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

constexpr std::int64_t kRows = 10, kDim = 4, kBatch = 4, kSeqLen = 3, kBagLen = 8;

struct Config {
  int steps = 20;
  std::uint64_t seed = 0;
  std::string dump_inputs;
  std::string chart = "alias_pitfall.svg";
  std::string csv = "alias_pitfall.csv";
};

// Everything both variants start from: one draw of the weights, one list of batches.
struct Inputs {
  Tensor table, linear_weight, linear_bias;
  std::vector<IndexTensor> tokens;     // per step, [4, 3]
  std::vector<IndexTensor> bag_input;  // per step, [8]
  IndexTensor offsets{0, 3, 5, 5};     // bags of 3, 2, 0 and 3 indices
};

Inputs make_inputs(const Config& cfg) {
  Generator gen(cfg.seed);
  Inputs in;
  in.table = Tensor::randn({kRows, kDim}, gen);  // nn.Embedding's N(0, 1)
  nn::Linear linear(kDim, 1, true, gen);          // PyTorch's uniform(-1/2, 1/2) init
  in.linear_weight = linear.weight.value().clone();
  in.linear_bias = linear.bias.value().clone();
  auto draw = [&](Shape shape) {
    std::vector<std::int64_t> v(static_cast<std::size_t>(numel_of(shape)));
    for (auto& x : v) x = static_cast<std::int64_t>(gen.below(kRows));
    return IndexTensor(std::move(shape), std::move(v));
  };
  for (int s = 0; s < cfg.steps; ++s) {
    in.tokens.push_back(draw({kBatch, kSeqLen}));
    in.bag_input.push_back(draw({kBagLen}));
  }
  return in;
}

void dump_inputs(const Inputs& in, const std::string& path) {
  auto floats = [](const Tensor& t) {
    std::vector<std::string> v;
    for (float x : t.values()) v.push_back(fmt::format("{:.9g}", x));  // 9 digits: exact float round trip
    return fmt::format("[{}]", fmt::join(v, ", "));
  };
  auto ints = [](const IndexTensor& t) { return fmt::format("[{}]", fmt::join(t.values(), ", ")); };
  std::vector<std::string> tokens, bags;
  for (const auto& t : in.tokens) tokens.push_back(ints(t));
  for (const auto& b : in.bag_input) bags.push_back(ints(b));
  const std::string json = fmt::format(
      "{{\n  \"rows\": {}, \"dim\": {}, \"batch\": {}, \"seq_len\": {}, \"steps\": {},\n"
      "  \"offsets\": {},\n  \"table\": {},\n  \"linear_weight\": {},\n  \"linear_bias\": {},\n"
      "  \"tokens\": [\n    {}\n  ],\n  \"bag_input\": [\n    {}\n  ]\n}}\n",
      kRows, kDim, kBatch, kSeqLen, in.tokens.size(), ints(in.offsets), floats(in.table), floats(in.linear_weight),
      floats(in.linear_bias), fmt::join(tokens, ",\n    "), fmt::join(bags, ",\n    "));
  examples::write_file(path, json);
}

// Embedding + EmbeddingBag + Linear. Tied: both lookups hold one Parameter. Pitfall: the bag
// holds an alias of the Embedding's Parameter (same storage, own identity and gradient).
class Model : public nn::Module {
 public:
  Model(const Inputs& in, bool pitfall)
      : emb(Parameter("emb.weight", in.table)),
        bag(pitfall ? Parameter::alias_of(emb.weight, "bag.weight").allow_alias() : emb.weight,
            {.mode = BagMode::Sum}),
        linear(kDim, 1) {
    std::copy_n(in.linear_weight.data(), kDim, linear.weight.data());
    linear.bias.data()[0] = in.linear_bias.data()[0];
  }
  // tokens [4, 3], bag_input [8] + offsets [4] -> loss []
  Tensor loss(const IndexTensor& tokens, const IndexTensor& bag_input, const IndexTensor& offsets) const {
    const Tensor h = sum(emb(tokens), 1) + bag(bag_input, offsets);  // [4, 4]
    const Tensor out = linear(h);                                   // [4, 1]
    return mean(square(out / 10.0f - 1.0f));
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    m.module("linear", linear);
  }

  nn::Embedding emb;
  nn::EmbeddingBag bag;
  nn::Linear linear;
};

struct Setting {
  std::string name;
  std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Parameter>&)> make;
};

std::vector<Setting> settings() {
  using namespace hitch::optim;
  auto p = [](auto opt) { return std::unique_ptr<Optimizer>(std::move(opt)); };
  return {
      {"SGD lr 0.005", [=](const auto& ps) { return p(std::make_unique<SGD>(ps, SGDOptions{.lr = 0.005})); }},
      {"SGD+momentum 0.9 lr 0.002",
       [=](const auto& ps) { return p(std::make_unique<SGD>(ps, SGDOptions{.lr = 0.002, .momentum = 0.9})); }},
      {"SGD+weight_decay 0.1 lr 0.005",
       [=](const auto& ps) { return p(std::make_unique<SGD>(ps, SGDOptions{.lr = 0.005, .weight_decay = 0.1})); }},
      {"Adam lr 0.05", [=](const auto& ps) { return p(std::make_unique<Adam>(ps, AdamOptions{.lr = 0.05})); }},
      {"AdamW lr 0.05 wd 0.01",
       [=](const auto& ps) { return p(std::make_unique<AdamW>(ps, AdamWOptions{.lr = 0.05, .weight_decay = 1e-2})); }},
      {"Adagrad lr 0.1", [=](const auto& ps) { return p(std::make_unique<Adagrad>(ps, AdagradOptions{.lr = 0.1})); }},
  };
}

struct Run {
  std::vector<double> losses;                  // per step, before the step
  std::vector<std::vector<float>> tables;      // the table after each step
  std::size_t num_params = 0, num_states = 0;  // as the optimizer sees them
};

Run train(const Inputs& in, const Setting& setting, bool pitfall) {
  Model model(in, pitfall);
  const auto params = model.parameters();
  auto opt = setting.make(params);
  Run run;
  run.num_params = params.size();
  for (std::size_t s = 0; s < in.tokens.size(); ++s) {
    const Tensor loss = model.loss(in.tokens[s], in.bag_input[s], in.offsets);
    run.losses.push_back(loss.item());
    backward(loss);
    opt->step();
    opt->zero_grad();
    run.tables.push_back(model.emb.weight.value().to_vector());
  }
  run.num_states = opt->state_size();
  return run;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

int run(const Config& cfg) {
  const Inputs in = make_inputs(cfg);
  if (!cfg.dump_inputs.empty()) {
    dump_inputs(in, cfg.dump_inputs);
    fmt::print("wrote the initial weights and {} batches to {}\n\n", cfg.steps, cfg.dump_inputs);
  }

  fmt::print("Tied (one Parameter) vs the from_pretrained pitfall (two Parameters over one storage),\n"
             "{} steps from identical weights on identical batches (seed {}).\n\n", cfg.steps, cfg.seed);
  fmt::print("| optimizer | parameters / states, tied | parameters / states, pitfall | max abs dw | rel. L2 dw | "
             "final loss, tied | final loss, pitfall |\n");
  fmt::print("|---|---|---|---|---|---|---|\n");
  std::vector<examples::Series> drift, losses;
  bool ok = true;
  for (const Setting& s : settings()) {
    const Run tied = train(in, s, false);
    const Run pit = train(in, s, true);
    examples::Series d{s.name, {}, {}};
    for (std::size_t k = 0; k < tied.tables.size(); ++k) {
      d.x.push_back(static_cast<double>(k + 1));
      d.y.push_back(max_abs_diff(tied.tables[k], pit.tables[k]));
    }
    const double dw = d.y.back();
    fmt::print("| {} | {} / {} | {} / {} | {:.3g} | {:.3g} | {:.4f} | {:.4f} |\n", s.name, tied.num_params,
               tied.num_states, pit.num_params, pit.num_states, dw, relative_l2(tied.tables.back(), pit.tables.back()),
               tied.losses.back(), pit.losses.back());
    drift.push_back(std::move(d));
    for (const auto* r : {&tied, &pit}) {
      examples::Series l{s.name + (r == &tied ? " (tied)" : " (pitfall)"), {}, r->losses};
      for (std::size_t k = 0; k < r->losses.size(); ++k) l.x.push_back(static_cast<double>(k + 1));
      losses.push_back(std::move(l));
    }
    if (s.name.rfind("SGD lr", 0) == 0 || s.name.rfind("SGD+momentum", 0) == 0) ok &= dw < 1e-4;
    if (s.name.rfind("Adam lr", 0) == 0) ok &= dw > 1e-3;
  }

  fmt::print(
      "\nWhy: the pitfall's two Parameters each get the gradient of one path (their sum is the tied\n"
      "gradient) and each gets its own optimizer state; both updates land in the one storage.\n"
      " * SGD, SGD+momentum: the update is linear in the gradient, so two half-updates make one\n"
      "   whole one: the same weights up to float rounding (but twice the state for momentum).\n"
      " * SGD+weight_decay: each alias adds wd * w to its own gradient, so the decay is applied twice.\n"
      " * Adam, AdamW: each alias normalises its own gradient by its own second moment, so a row\n"
      "   used by both paths moves about 2 lr per step instead of lr (AdamW also decays twice).\n"
      " * Adagrad: two accumulators, each seeing part of the gradient: larger steps for shared rows.\n");

  if (!cfg.chart.empty()) {
    examples::write_file(cfg.chart, examples::line_chart_svg(drift, {.title = "max |w_tied - w_pitfall| per step",
                                                                     .x_label = "step",
                                                                     .y_label = "max |dw|"}));
    fmt::print("\nwrote {}\n", cfg.chart);
  }
  if (!cfg.csv.empty()) {
    examples::write_file(cfg.csv, examples::series_csv(losses, {.title = "", .x_label = "step", .y_label = "loss"}));
    fmt::print("wrote {} (loss per step, both variants, every optimizer)\n", cfg.csv);
  }
  if (!ok) fmt::print("FAILED: SGD did not match tying within 1e-4, or Adam did not show the pitfall\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"The from_pretrained aliasing pitfall against true weight tying, under six optimizers."};
  app.add_option("--steps", cfg.steps, "training steps per run")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--seed", cfg.seed, "seed for the initial weights and the batches")->capture_default_str();
  app.add_option("--dump-inputs", cfg.dump_inputs,
                 "write the initial weights and batches as JSON (for scripts/alias_pitfall_pytorch.py)");
  app.add_option("--chart", cfg.chart, "SVG chart of max |dw| per step (empty: none)")->capture_default_str();
  app.add_option("--csv", cfg.csv, "CSV of the loss per step (empty: none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    fmt::print(stderr, "alias_pitfall: {}\n", e.what());
    return 2;
  }
}
