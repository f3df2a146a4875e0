// examples/grad_ledger.cpp: where a tied Parameter's gradient comes from.
//
// One item table [N, D] is used four times in a small recommender:
//   call 1  embedding      the positive item of each example          item(target)     [B, D]
//   call 2  embedding      a sampled negative item                    item(negative)   [B, D]
//   call 3  embedding_bag  the user = mean of the items in a history  history(h, off)  [B, D]
//   call 4  matmul         scores of the user against every item      user x table^T   [B, N]
// loss = BCE(<user, positive>, 1) + BCE(<user, negative>, 0) + cross_entropy(scores, target).
//
// A grad hook on the table (Parameter::add_grad_hook) sees every contribution during backward,
// before it is added, with the tape node it came from: rows from the lookups, a dense [N, D]
// tensor from the matmul. The ledger adds them up per call, prints which call contributed how
// much to which row, and checks that the calls add up to the table's gradient. PyTorch's hooks
// on a leaf see only the sum, so this split is not available there.
// The program exits with status 1 if the ledger does not add up (or a call is missing).
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chart.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct Config {
  std::int64_t items = 12;
  std::int64_t dim = 4;
  std::int64_t batch = 3;
  std::int64_t history = 4;
  std::uint64_t seed = 0;
  std::int64_t show_rows = 20;
  double tolerance = 1e-5;
  std::string chart = "grad_ledger.svg";
  std::string csv = "grad_ledger.csv";
};

// Contributions to one Parameter, summed per tape node (= per call).
class Ledger {
 public:
  explicit Ledger(const Shape& shape) : rows_(shape[0]), width_(shape[1]) {}

  void add(const GradContribution& c) {
    Entry& e = entries_[c.node.seq];
    if (e.sum.empty()) {
      e.op = c.node.op;
      e.sum.assign(static_cast<std::size_t>(rows_ * width_), 0.0);
    }
    ++e.arrivals;
    if (c.dense != nullptr) {
      const float* g = c.dense->data();
      for (std::size_t i = 0; i < e.sum.size(); ++i) e.sum[i] += static_cast<double>(g[i]);
      e.kind = "dense [N,D]";
      return;
    }
    e.kind = "rows";
    e.row_entries += static_cast<std::int64_t>(c.rows.size());
    for (std::size_t m = 0; m < c.rows.size(); ++m)
      for (std::int64_t d = 0; d < c.row_width; ++d)
        e.sum[static_cast<std::size_t>(c.rows[m] * width_ + d)] +=
            static_cast<double>(c.values[m * static_cast<std::size_t>(c.row_width) + static_cast<std::size_t>(d)]);
  }

  struct Entry {
    std::string op, kind;
    std::int64_t arrivals = 0, row_entries = 0;
    std::vector<double> sum;  // [N, D], this node's total contribution
  };
  const std::map<std::uint64_t, Entry>& entries() const { return entries_; }
  double row_norm(const Entry& e, std::int64_t row) const {
    double s = 0.0;
    for (std::int64_t d = 0; d < width_; ++d) s += e.sum[static_cast<std::size_t>(row * width_ + d)] * e.sum[static_cast<std::size_t>(row * width_ + d)];
    return std::sqrt(s);
  }

 private:
  std::int64_t rows_, width_;
  std::map<std::uint64_t, Entry> entries_;
};

std::uint64_t node_of(const Tensor& t) { return t.impl().grad_fn->seq; }

IndexTensor draw(Shape shape, std::int64_t n, Generator& gen) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(numel_of(shape)));
  for (auto& x : v) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(n)));
  return IndexTensor(std::move(shape), std::move(v));
}

int run(const Config& cfg) {
  Generator gen(cfg.seed);
  Parameter table("items", Tensor::randn({cfg.items, cfg.dim}, 0.0f, 0.5f, gen));
  nn::Embedding item(table);
  nn::EmbeddingBag history(table, {.mode = BagMode::Mean});

  const IndexTensor target = draw({cfg.batch}, cfg.items, gen);
  const IndexTensor negative = draw({cfg.batch}, cfg.items, gen);
  const IndexTensor hist = draw({cfg.batch * cfg.history}, cfg.items, gen);
  const IndexTensor offsets = IndexTensor::arange(0, cfg.batch * cfg.history, cfg.history);

  Ledger ledger(table.shape());
  const int hook = table.add_grad_hook([&](const GradContribution& c) { ledger.add(c); });

  const Tensor pos = item(target);                         // call 1
  const Tensor neg = item(negative);                       // call 2
  const Tensor user = history(hist, offsets);              // call 3
  const Tensor scores = matmul(user, table, false, true);  // call 4: [B, D] x [N, D]^T
  const Tensor ones = Tensor::ones({cfg.batch}), zeros = Tensor::zeros({cfg.batch});
  const Tensor loss = binary_cross_entropy_with_logits(sum(user * pos, 1), ones) +
                      binary_cross_entropy_with_logits(sum(user * neg, 1), zeros) + cross_entropy(scores, target);
  const std::map<std::uint64_t, std::string> calls = {{node_of(pos), "call 1: item(target)"},
                                                      {node_of(neg), "call 2: item(negative)"},
                                                      {node_of(user), "call 3: history(items, offsets)"},
                                                      {node_of(scores), "call 4: matmul(user, items^T)"}};
  fmt::print("target {}  negative {}\nhistory {} offsets {}\nloss = {:.6f}\n\n", target, negative, hist, offsets,
             loss.item());
  fmt::print("The tape behind the loss (format_graph): the node numbers below are these.\n{}\n", format_graph(loss));
  backward(loss);
  table.remove_grad_hook(hook);

  fmt::print("Contributions to '{}' {}, one per tape node, as the hook saw them:\n\n", table.name(),
             shape_str(table.shape()));
  fmt::print("| node | op | which call | arrived as | row entries | L2 norm |\n|---|---|---|---|---|---|\n");
  std::vector<double> total(static_cast<std::size_t>(table.numel()), 0.0);
  bool ok = ledger.entries().size() == calls.size();
  for (const auto& [seq, e] : ledger.entries()) {
    double norm = 0.0;
    for (std::size_t i = 0; i < e.sum.size(); ++i) {
      total[i] += e.sum[i];
      norm += e.sum[i] * e.sum[i];
    }
    const auto label = calls.find(seq);
    ok &= label != calls.end();
    fmt::print("| #{} | {} | {} | {} | {} | {:.6f} |\n", seq, e.op, label == calls.end() ? "?" : label->second, e.kind,
               e.kind == "rows" ? fmt::format("{}", e.row_entries) : std::string("-"), std::sqrt(norm));
  }

  fmt::print("\nPer row: L2 norm of each call's contribution, and of the table's gradient.\n\n| row |");
  for (const auto& [seq, e] : ledger.entries()) fmt::print(" #{} {} |", seq, e.op);
  fmt::print(" gradient |\n|---|");
  for (std::size_t i = 0; i <= ledger.entries().size(); ++i) fmt::print("---|");
  fmt::print("\n");
  const Tensor grad = table.grad();
  std::vector<examples::Series> series;
  for (const auto& [seq, e] : ledger.entries()) series.push_back({fmt::format("#{} {}", seq, e.op), {}, {}});
  series.push_back({"gradient", {}, {}});
  for (std::int64_t r = 0; r < cfg.items; ++r) {
    const bool shown = r < cfg.show_rows;
    if (shown) fmt::print("| {} |", r);
    std::size_t k = 0;
    for (const auto& [seq, e] : ledger.entries()) {
      const double n = ledger.row_norm(e, r);
      if (shown) fmt::print(" {} |", n == 0.0 ? std::string("0") : fmt::format("{:.6f}", n));
      series[k].x.push_back(static_cast<double>(r));
      series[k++].y.push_back(n);
    }
    double g = 0.0;
    for (std::int64_t d = 0; d < cfg.dim; ++d) g += static_cast<double>(grad.at({r, d})) * static_cast<double>(grad.at({r, d}));
    if (shown) fmt::print(" {:.6f} |\n", std::sqrt(g));
    series[k].x.push_back(static_cast<double>(r));
    series[k].y.push_back(std::sqrt(g));
  }

  if (cfg.items > cfg.show_rows) fmt::print("(rows {} to {} left out; --show-rows)\n", cfg.show_rows, cfg.items - 1);
  // The row with the most contributors, written out in full.
  std::int64_t busiest = 0, most = -1;
  for (std::int64_t r = 0; r < cfg.items; ++r) {
    std::int64_t n = 0;
    for (const auto& [seq, e] : ledger.entries()) n += ledger.row_norm(e, r) > 0.0 ? 1 : 0;
    if (n > most) most = n, busiest = r;
  }
  auto row_str = [&](auto value_at) {
    std::vector<std::string> v;
    for (std::int64_t d = 0; d < std::min<std::int64_t>(cfg.dim, 8); ++d) v.push_back(fmt::format("{:+.5f}", value_at(d)));
    return fmt::format("[{}{}]", fmt::join(v, " "), cfg.dim > 8 ? " ..." : "");
  };
  fmt::print("\nRow {} in full (read by {} calls):\n", busiest, most);
  for (const auto& entry : ledger.entries()) {  // not a structured binding: clang-14 cannot capture one
    const Ledger::Entry& e = entry.second;
    if (ledger.row_norm(e, busiest) > 0.0)
      fmt::print("  #{} {:<14} {}\n", entry.first, e.op,
                 row_str([&](std::int64_t d) { return e.sum[static_cast<std::size_t>(busiest * cfg.dim + d)]; }));
  }
  fmt::print("  = table.grad()[{}] {}\n", busiest, row_str([&](std::int64_t d) { return grad.at({busiest, d}); }));

  double diff = 0.0;
  for (std::size_t i = 0; i < total.size(); ++i) diff = std::max(diff, std::abs(total[i] - static_cast<double>(grad.data()[i])));
  ok &= diff <= cfg.tolerance;
  fmt::print("\nCheck: max |sum of the calls' contributions - table.grad()| = {:.3g} (tolerance {:.0e}): {}\n", diff,
             cfg.tolerance, ok ? "the ledger adds up" : "FAILED");

  if (!cfg.chart.empty()) {
    examples::write_file(cfg.chart, examples::line_chart_svg(series, {.title = "who contributed to each row's gradient",
                                                                      .x_label = "row of the item table",
                                                                      .y_label = "L2 norm of the contribution"}));
    fmt::print("wrote {}\n", cfg.chart);
  }
  if (!cfg.csv.empty()) {
    examples::write_file(cfg.csv, examples::series_csv(series, {.title = "", .x_label = "row", .y_label = "l2_norm"}));
    fmt::print("wrote {}\n", cfg.csv);
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"Where a tied Parameter's gradient comes from: a per-call ledger built with a grad hook."};
  app.add_option("--items", cfg.items, "rows of the item table")->capture_default_str()->check(CLI::Range(2, 100000));
  app.add_option("--dim", cfg.dim, "embedding dimension")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--batch", cfg.batch, "examples in the batch")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--history", cfg.history, "items in each user's history bag")->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--seed", cfg.seed, "seed for the table and the indices")->capture_default_str();
  app.add_option("--show-rows", cfg.show_rows, "print the first this many rows")->capture_default_str();
  app.add_option("--tolerance", cfg.tolerance, "largest accepted |ledger total - gradient|")->capture_default_str();
  app.add_option("--chart", cfg.chart, "SVG chart of the per-row contributions (empty: none)")->capture_default_str();
  app.add_option("--csv", cfg.csv, "CSV of the per-row contributions (empty: none)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    fmt::print(stderr, "grad_ledger: {}\n", e.what());
    return 2;
  }
}
