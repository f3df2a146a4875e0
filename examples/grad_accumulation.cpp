// examples/grad_accumulation.cpp: gradient accumulation with a tied table.
//
// Gradients in hitch are only ever added, so k micro-batches that each call backward() before
// one optimizer step leave the SUM of their gradients in every Parameter. With a mean-reduced
// loss the whole batch's gradient is the mean over all B examples, so micro-batch i's loss must
// be scaled by n_i / B (1/k for equal sizes) for the sum to equal it. This program trains four
// copies of one small model from identical weights on identical batches:
//
//   full batch        one backward on all B examples, step, zero_grad
//   accumulated       k backward calls on loss_i * n_i / B, step, zero_grad
//   no 1/k scaling    k backward calls on loss_i, step, zero_grad: a k-times larger gradient
//   no zero_grad      one backward on all B examples, step, and no zero_grad: every step adds
//                     the new gradient to all the old ones
//
// and prints the max difference of the accumulated gradient and weights from the full batch's.
// The model: an item table [N, D] used by an Embedding (the item) and an EmbeddingBag (the
// user's history, 2-D form [B, L], mean) - one Parameter - then Linear(D -> 1) on user * item;
// loss = mse_loss(prediction, label). Exits with status 1 if the accumulated run differs from
// the full batch by more than --tolerance (gradient at the first step, or weights at the end).
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "chart.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct Config {
  std::int64_t items = 50, dim = 8, batch = 32, history = 5;
  int micro_batches = 4, steps = 30;
  std::string optimizer = "sgd";
  double lr = 0.3;
  std::uint64_t seed = 0;
  float init_std = 1.0f;
  int distinct = 1;
  double tolerance = 1e-5;
  std::string chart = "grad_accumulation.svg";
  std::string csv = "grad_accumulation.csv";
};

struct Batch {
  IndexTensor item;     // [B]
  IndexTensor history;  // [B, L]
  Tensor label;         // [B, 1]
};

class Model : public nn::Module {
 public:
  Model(const Tensor& table, std::int64_t dim, Generator gen)  // gen by value: every copy starts alike
      : item(Parameter("items", table)), history(item.weight, {.mode = BagMode::Mean}), head(dim, 1, true, gen) {}
  // Mean squared error over the examples [first, last) of the batch.
  Tensor loss(const Batch& b, std::int64_t first, std::int64_t last) const {
    const IndexTensor it = slice(b.item, first, last), hist = slice(b.history, first, last);
    const Tensor label = Tensor({last - first, 1}, {b.label.data() + first, b.label.data() + last});
    return mse_loss(head(item(it) * history(hist)), label);
  }
  void members(Members& m) const override {
    m.module("item", item);
    m.module("history", history);
    m.module("head", head);
  }
  nn::Embedding item;
  nn::EmbeddingBag history;
  nn::Linear head;

 private:
  static IndexTensor slice(const IndexTensor& t, std::int64_t first, std::int64_t last) {
    const std::int64_t w = t.numel() / t.size(0);
    Shape shape = t.shape();
    shape[0] = last - first;
    return IndexTensor(shape, {t.data() + first * w, t.data() + last * w});
  }
};

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& cfg, const std::vector<Parameter>& params) {
  if (cfg.optimizer == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = cfg.lr});
  return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = cfg.lr});
}

enum class Variant { Full, Accumulated, NoScaling, NoZeroGrad };

struct Run {
  std::vector<double> losses;       // whole-batch loss before each step
  std::vector<float> first_grad;    // the table's gradient at the first step (what step() saw)
  std::vector<float> final_weights; // table, then head weight and bias
};

std::vector<float> flatten(const std::vector<Parameter>& params) {
  std::vector<float> out;
  for (const auto& p : params) out.insert(out.end(), p.data(), p.data() + p.numel());
  return out;
}

Run train(const Config& cfg, const Tensor& table, const std::vector<Batch>& batches, Variant v) {
  Model model(table, cfg.dim, Generator(cfg.seed + 1));
  const auto params = model.parameters();
  auto opt = make_optimizer(cfg, params);
  Run run;
  const std::int64_t B = cfg.batch, k = cfg.micro_batches;
  for (int step = 0; step < cfg.steps; ++step) {
    const Batch& b = batches[static_cast<std::size_t>(step % cfg.distinct)];
    if (v == Variant::Full || v == Variant::NoZeroGrad) {
      const Tensor loss = model.loss(b, 0, B);
      run.losses.push_back(loss.item());
      backward(loss);
    } else {
      double whole = 0.0;
      for (std::int64_t i = 0; i < k; ++i) {  // micro-batch i = examples [i*B/k, (i+1)*B/k)
        const std::int64_t first = i * B / k, last = (i + 1) * B / k;
        const Tensor micro = model.loss(b, first, last);
        const float share = static_cast<float>(last - first) / static_cast<float>(B);
        whole += static_cast<double>(micro.item()) * static_cast<double>(share);
        backward(v == Variant::Accumulated ? micro * share : micro);  // each backward ADDS
      }
      run.losses.push_back(whole);
    }
    if (run.first_grad.empty()) run.first_grad = model.item.weight.grad().to_vector();
    opt->step();
    if (v != Variant::NoZeroGrad) opt->zero_grad();
  }
  run.final_weights = flatten(params);
  return run;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, float scale_b = 1.0f) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(scale_b * b[i]));
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();  // a run that diverged
    m = std::max(m, d);
  }
  return m;
}

int run(const Config& cfg) {
  Generator gen(cfg.seed);
  const Tensor table = Tensor::randn({cfg.items, cfg.dim}, 0.0f, cfg.init_std, gen);
  const Tensor teacher = Tensor::randn({cfg.items, cfg.dim}, 0.0f, 1.0f, gen);
  std::vector<Batch> batches;
  for (int s = 0; s < cfg.distinct; ++s) {
    Batch b;
    std::vector<std::int64_t> it(static_cast<std::size_t>(cfg.batch)), hist(static_cast<std::size_t>(cfg.batch * cfg.history));
    for (auto& x : it) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(cfg.items)));
    for (auto& x : hist) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(cfg.items)));
    b.item = IndexTensor({cfg.batch}, it);
    b.history = IndexTensor({cfg.batch, cfg.history}, hist);
    // Labels a model of this form can learn: a teacher table's score, squashed into (-1, 1).
    std::vector<float> label(static_cast<std::size_t>(cfg.batch));
    for (std::int64_t e = 0; e < cfg.batch; ++e) {
      double score = 0.0;
      for (std::int64_t d = 0; d < cfg.dim; ++d) {
        double user = 0.0;
        for (std::int64_t j = 0; j < cfg.history; ++j) user += teacher.at({hist[static_cast<std::size_t>(e * cfg.history + j)], d});
        score += static_cast<double>(teacher.at({it[static_cast<std::size_t>(e)], d})) * user / static_cast<double>(cfg.history);
      }
      label[static_cast<std::size_t>(e)] = static_cast<float>(std::tanh(score));
    }
    b.label = Tensor({cfg.batch, 1}, label);
    batches.push_back(std::move(b));
  }

  const Run full = train(cfg, table, batches, Variant::Full);
  const Run acc = train(cfg, table, batches, Variant::Accumulated);
  const Run raw = train(cfg, table, batches, Variant::NoScaling);
  const Run stale = train(cfg, table, batches, Variant::NoZeroGrad);

  const bool equal_sizes = cfg.batch % cfg.micro_batches == 0;
  fmt::print("batch {} split into {} micro-batches ({}), {} steps of {} lr {}\n\n", cfg.batch, cfg.micro_batches,
             equal_sizes ? fmt::format("{} examples each, loss scaled by 1/{}", cfg.batch / cfg.micro_batches,
                                       cfg.micro_batches)
                         : std::string("unequal sizes, loss i scaled by n_i / B"),
             cfg.steps, cfg.optimizer, cfg.lr);
  const double grad_diff = max_abs_diff(acc.first_grad, full.first_grad);
  const double weight_diff = max_abs_diff(acc.final_weights, full.final_weights);
  fmt::print("accumulated vs full batch: max |grad diff| at step 1 = {:.3g}, max |weight diff| after {} steps = {:.3g}\n",
             grad_diff, cfg.steps, weight_diff);
  if (equal_sizes)
    fmt::print("no 1/k scaling:            gradient = {} x the full batch's (max |g - {} g_full| = {:.3g}), "
               "max |weight diff| = {:.3g}\n",
               cfg.micro_batches, cfg.micro_batches,
               max_abs_diff(raw.first_grad, full.first_grad, static_cast<float>(cfg.micro_batches)),
               max_abs_diff(raw.final_weights, full.final_weights));
  else
    fmt::print("no scaling:                max |weight diff| = {:.3g}\n", max_abs_diff(raw.final_weights, full.final_weights));
  fmt::print("no zero_grad:              step s uses the sum of the gradients of steps 1..s: max |weight diff| = {:.3g}\n\n",
             max_abs_diff(stale.final_weights, full.final_weights));

  fmt::print("| step | full batch | accumulated | no 1/k scaling | no zero_grad |\n|---|---|---|---|---|\n");
  for (std::size_t s = 0; s < full.losses.size(); ++s)
    fmt::print("| {} | {:.6f} | {:.6f} | {:.6f} | {:.6f} |\n", s + 1, full.losses[s], acc.losses[s], raw.losses[s],
               stale.losses[s]);
  if (cfg.optimizer == "adam")
    fmt::print("\n(Adam divides by the root of its second moment, so a constant factor k on every gradient\n"
               "barely changes its steps: forgetting 1/k matters far less than with SGD, where it multiplies lr by k.)\n");

  fmt::print("\n");
  std::vector<examples::Series> series;
  for (const auto& [name, r] : {std::pair<const char*, const Run*>{"full batch", &full}, {"accumulated (1/k)", &acc},
                                {"no 1/k scaling", &raw}, {"no zero_grad", &stale}}) {
    // A run that blew up is drawn until it leaves 10x the starting loss (or stops being finite).
    examples::Series s{name, {}, {}};
    for (std::size_t i = 0; i < r->losses.size(); ++i) {
      if (!std::isfinite(r->losses[i]) || r->losses[i] > 10.0 * r->losses[0]) {
        fmt::print("{} diverged: loss {:.3g} at step {}\n", name, r->losses[i], i + 1);
        break;
      }
      s.x.push_back(static_cast<double>(i + 1));
      s.y.push_back(r->losses[i]);
    }
    series.push_back(std::move(s));
  }
  if (!cfg.chart.empty()) {
    examples::write_file(cfg.chart, examples::line_chart_svg(series, {.title = fmt::format("whole-batch loss before each step ({} lr {})", cfg.optimizer, cfg.lr),
                                                                      .x_label = "step",
                                                                      .y_label = "loss",
                                                                      .log_y = true}));
    fmt::print("\nwrote {}\n", cfg.chart);
  }
  if (!cfg.csv.empty()) {
    examples::write_file(cfg.csv, examples::series_csv(series, {.title = "", .x_label = "step", .y_label = "loss"}));
    fmt::print("wrote {}\n", cfg.csv);
  }
  const bool ok = grad_diff <= cfg.tolerance && weight_diff <= cfg.tolerance;
  fmt::print("\n{}\n", ok ? fmt::format("Accumulation matches the full batch within {:.0e}.", cfg.tolerance)
                          : fmt::format("FAILED: accumulation differs from the full batch by more than {:.0e}",
                                        cfg.tolerance));
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"k micro-batches with backward each, then one step, equal one step on the whole batch."};
  app.add_option("--items", cfg.items, "rows of the tied item table")->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--dim", cfg.dim, "embedding dimension")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--batch", cfg.batch, "examples per step (B)")->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--history", cfg.history, "items per user history (bag length)")->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("-k,--micro-batches", cfg.micro_batches, "micro-batches per step (k <= B)")->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--steps", cfg.steps, "optimizer steps")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--distinct-batches", cfg.distinct, "distinct batches, used in turn")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--init-std", cfg.init_std, "std of the table's initial values")->capture_default_str();
  app.add_option("--optimizer", cfg.optimizer, "sgd or adam")->capture_default_str()->check(CLI::IsMember({"sgd", "adam"}));
  app.add_option("--lr", cfg.lr, "learning rate")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  app.add_option("--seed", cfg.seed, "seed for the weights and the batches")->capture_default_str();
  app.add_option("--tolerance", cfg.tolerance, "largest accepted difference from the full batch")->capture_default_str();
  app.add_option("--chart", cfg.chart, "SVG chart of the losses (empty: none)")->capture_default_str();
  app.add_option("--csv", cfg.csv, "CSV of the losses (empty: none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (cfg.micro_batches > cfg.batch) {
    fmt::print(stderr, "grad_accumulation: --micro-batches {} must be at most --batch {}\n", cfg.micro_batches, cfg.batch);
    return 2;
  }
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    fmt::print(stderr, "grad_accumulation: {}\n", e.what());
    return 2;
  }
}
