// examples/support/recommender.cpp: the data, model, training loop and report of the recommend
// example (recommender.h says what it is; docs/examples/recommend.md what it shows).
#include "recommender.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <optional>

#include <fmt/format.h>

#include "chart.h"
#include "progress.h"

namespace hitch::examples::recommend {
namespace {

using hitch::IndexTensor;
using hitch::Parameter;
using hitch::Tensor;

// ---- the data ----------------------------------------------------------------------------------

struct Data {
  i64 users = 0, items = 0;
  std::vector<std::vector<i64>> train, test;  // per user: item ids
  // The known structure, for the oracle.
  std::vector<std::vector<std::size_t>> liked;  // per user: preferred clusters
  std::vector<std::size_t> cluster;             // per item
  std::vector<double> popularity;               // per item: its probability inside its cluster
};

// Draws an index in [0, cdf.size()) with probabilities given by the cumulative weights cdf.
i64 draw(const std::vector<double>& cdf, hitch::Generator& gen) {
  const double u = gen.uniform() * cdf.back();
  return static_cast<i64>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
}

Data make_data(const Config& c, hitch::Generator& gen) {
  // Items are dealt into clusters in a random order; inside a cluster the r-th item is drawn
  // with weight 1 / (r + 1)^0.7.
  std::vector<i64> order(static_cast<std::size_t>(c.items));
  std::iota(order.begin(), order.end(), i64{0});
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
  std::vector<std::vector<i64>> members(static_cast<std::size_t>(c.clusters));
  for (std::size_t i = 0; i < order.size(); ++i) members[i % members.size()].push_back(order[i]);
  std::vector<std::vector<double>> cdf(members.size());
  for (std::size_t k = 0; k < members.size(); ++k) {
    double total = 0;
    for (std::size_t r = 0; r < members[k].size(); ++r) cdf[k].push_back(total += std::pow(static_cast<double>(r + 1), -0.7));
  }

  Data d{c.users, c.items, {}, {}, {}, std::vector<std::size_t>(order.size()), std::vector<double>(order.size())};
  for (std::size_t k = 0; k < members.size(); ++k)
    for (std::size_t r = 0; r < members[k].size(); ++r) {
      const auto item = static_cast<std::size_t>(members[k][r]);
      d.cluster[item] = k;
      d.popularity[item] = (cdf[k][r] - (r ? cdf[k][r - 1] : 0.0)) / cdf[k].back();
    }
  const auto clusters = static_cast<std::uint64_t>(c.clusters);
  for (i64 u = 0; u < c.users; ++u) {
    std::vector<std::size_t> liked{gen.below(clusters)};
    if (gen.uniform() < 0.5 && clusters > 1) {
      std::size_t second = gen.below(clusters - 1);
      liked.push_back(second >= liked[0] ? second + 1 : second);
    }
    const i64 n = c.min_history + static_cast<i64>(gen.below(static_cast<std::uint64_t>(c.max_history - c.min_history + 1)));
    std::vector<i64> seen;
    for (int tries = 0; static_cast<i64>(seen.size()) < n + 2 && tries < 100 * (n + 2); ++tries) {
      const std::size_t k = gen.uniform() < c.noise ? gen.below(clusters) : liked[gen.below(liked.size())];
      const i64 item = members[k][static_cast<std::size_t>(draw(cdf[k], gen))];
      if (std::find(seen.begin(), seen.end(), item) == seen.end()) seen.push_back(item);
    }
    // Two random ones (at most all but one) are held out: moved to the end, then split off.
    const std::size_t held = std::min<std::size_t>(2, seen.size() - 1);
    for (std::size_t h = 0; h < held; ++h) std::swap(seen[seen.size() - 1 - h], seen[gen.below(seen.size() - h)]);
    const auto split = seen.end() - static_cast<std::ptrdiff_t>(held);
    d.test.emplace_back(split, seen.end());
    d.train.emplace_back(seen.begin(), split);
    d.liked.push_back(std::move(liked));
  }
  return d;
}

// ---- the model ---------------------------------------------------------------------------------

// score(user, item) = <bag(history), item(candidate)> + bias(candidate). With tied = true the bag
// and the lookup hold the same Parameter; parameters() then lists it once.
class Recommender : public hitch::nn::Module {
 public:
  // The tables come from replicas.table() (ordinary or sharded Parameters); the bias is ordinary.
  Recommender(i64 items, i64 dim, bool tied, bool sparse, hitch::Generator& gen, Replicas& replicas)
      : items_(replicas.table("items", Tensor::randn({items, dim}, 0.0f, 0.1f, gen))),
        history_(tied ? items_ : replicas.table("history", Tensor::randn({items, dim}, 0.0f, 0.1f, gen)),
                 {.mode = hitch::BagMode::Mean, .sparse = sparse}),
        item_(items_, {.sparse = sparse}),
        bias_(Parameter("item_bias", Tensor::zeros({items, 1})), {.sparse = sparse}) {}

  // The user vectors [B, D] for bags of items (1-D input with offsets).
  Tensor users(const IndexTensor& history, const IndexTensor& offsets) const { return history_(history, offsets); }

  // candidates [B, C] -> scores [B, C].
  Tensor scores(const Tensor& user_vectors, const IndexTensor& candidates) const {
    const i64 b = candidates.size(0), c = candidates.size(1);
    Tensor u = hitch::reshape(user_vectors, {b, 1, -1});
    Tensor dot = hitch::sum(item_(candidates) * u, 2);              // [B, C, D] * [B, 1, D] -> [B, C]
    return dot + hitch::reshape(bias_(candidates), {b, c});
  }

  // All items for each user vector: [U, D] x [N, D]^T + bias^T -> [U, N], where items is the
  // whole candidate table (Replicas::whole(item_table())). Evaluation only.
  Tensor all_scores(const Tensor& user_vectors, const Tensor& items) const {
    return hitch::matmul(user_vectors, items, false, true) + hitch::reshape(bias_.weight, {1, -1});
  }
  const Parameter& item_table() const { return item_.weight; }

  void members(Members& m) const override {
    m.module("history", history_);
    m.module("item", item_);
    m.module("bias", bias_);
  }

 private:
  Parameter items_;
  hitch::nn::EmbeddingBag history_;
  hitch::nn::Embedding item_;
  hitch::nn::Embedding bias_;
};

// ---- training and evaluation -------------------------------------------------------------------

struct Batch {
  IndexTensor history, offsets, candidates;
  Tensor labels;
};

// For each of B random users: one training item is the positive, the user's other training items
// the history, and `negatives` uniformly drawn items the negatives. Returns the users [lo, hi) of
// the batch: every process draws the whole global batch from the same generator (so the draws
// and the batch are the same at any process count) and keeps its slice; [0, batch) is all of it.
Batch sample_batch(const Data& d, const Config& c, hitch::Generator& gen, i64 lo, i64 hi) {
  std::vector<i64> history, offsets, candidates;
  std::vector<float> labels;
  for (i64 b = 0; b < c.batch; ++b) {
    const auto& items = d.train[gen.below(static_cast<std::uint64_t>(d.users))];
    const std::size_t pos = gen.below(items.size());
    const bool mine = b >= lo && b < hi;
    if (mine) {
      offsets.push_back(static_cast<i64>(history.size()));
      for (std::size_t i = 0; i < items.size(); ++i)
        if (i != pos) history.push_back(items[i]);
      candidates.push_back(items[pos]);
      labels.push_back(1.0f);
    }
    for (i64 k = 0; k < c.negatives; ++k) {
      const auto negative = static_cast<i64>(gen.below(static_cast<std::uint64_t>(d.items)));
      if (!mine) continue;
      candidates.push_back(negative);
      labels.push_back(0.0f);
    }
  }
  const i64 n = static_cast<i64>(history.size()), b = hi - lo;
  return {IndexTensor({n}, std::move(history)), IndexTensor({b}, std::move(offsets)),
          IndexTensor({b, c.negatives + 1}, std::move(candidates)), Tensor({b, c.negatives + 1}, std::move(labels))};
}

// Every held-out interaction: the user's whole training history, the held-out item and
// `negatives` items drawn once (from seed + 3), so every evaluation sees the same batch.
Batch heldout_batch(const Data& d, const Config& c) {
  hitch::Generator gen(c.seed + 3);
  std::vector<i64> history, offsets, candidates;
  std::vector<float> labels;
  for (i64 u = 0; u < d.users; ++u)
    for (i64 item : d.test[static_cast<std::size_t>(u)]) {
      const auto& items = d.train[static_cast<std::size_t>(u)];
      offsets.push_back(static_cast<i64>(history.size()));
      history.insert(history.end(), items.begin(), items.end());
      candidates.push_back(item);
      labels.push_back(1.0f);
      for (i64 k = 0; k < c.negatives; ++k) {
        candidates.push_back(static_cast<i64>(gen.below(static_cast<std::uint64_t>(d.items))));
        labels.push_back(0.0f);
      }
    }
  const i64 n = static_cast<i64>(history.size()), b = static_cast<i64>(offsets.size());
  return {IndexTensor({n}, std::move(history)), IndexTensor({b}, std::move(offsets)),
          IndexTensor({b, c.negatives + 1}, std::move(candidates)), Tensor({b, c.negatives + 1}, std::move(labels))};
}

float loss_on(const Recommender& model, const Batch& b) {
  return hitch::binary_cross_entropy_with_logits(model.scores(model.users(b.history, b.offsets), b.candidates), b.labels)
      .item();
}

// Mean over users of |top-10 among items not in train ∩ test| / |test|; scores [U, N].
double recall_at_10(const Data& d, const std::vector<float>& scores) {
  double total = 0;
  i64 counted = 0;
  std::vector<i64> ids(static_cast<std::size_t>(d.items));
  for (i64 u = 0; u < d.users; ++u) {
    const auto& test = d.test[static_cast<std::size_t>(u)];
    if (test.empty()) continue;
    const float* s = scores.data() + u * d.items;
    std::vector<char> excluded(static_cast<std::size_t>(d.items), 0);
    for (i64 i : d.train[static_cast<std::size_t>(u)]) excluded[static_cast<std::size_t>(i)] = 1;
    ids.clear();
    for (i64 i = 0; i < d.items; ++i)
      if (!excluded[static_cast<std::size_t>(i)]) ids.push_back(i);
    const auto top = std::min<std::size_t>(10, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(top), ids.end(),
                      [&](i64 a, i64 b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
    i64 hits = 0;
    for (std::size_t k = 0; k < top; ++k) hits += std::count(test.begin(), test.end(), ids[k]);
    total += static_cast<double>(hits) / static_cast<double>(test.size());
    ++counted;
  }
  return counted ? total / static_cast<double>(counted) : 0.0;
}

// The baseline every recommender must beat: each user gets the most popular unseen items.
double popularity_recall(const Data& d) {
  std::vector<float> count(static_cast<std::size_t>(d.items), 0.0f);
  for (const auto& items : d.train)
    for (i64 i : items) count[static_cast<std::size_t>(i)] += 1.0f;
  std::vector<float> scores;
  for (i64 u = 0; u < d.users; ++u) scores.insert(scores.end(), count.begin(), count.end());
  return recall_at_10(d, scores);
}

// The ceiling: ranks by each user's true drawing probability (the generator's own model).
double oracle_recall(const Data& d, double noise) {
  const double clusters = static_cast<double>(1 + *std::max_element(d.cluster.begin(), d.cluster.end()));
  std::vector<float> scores;
  for (i64 u = 0; u < d.users; ++u) {
    const auto& liked = d.liked[static_cast<std::size_t>(u)];
    for (i64 i = 0; i < d.items; ++i) {
      const auto item = static_cast<std::size_t>(i);
      const bool in_liked = std::find(liked.begin(), liked.end(), d.cluster[item]) != liked.end();
      const double p = noise / clusters + (in_liked ? (1.0 - noise) / static_cast<double>(liked.size()) : 0.0);
      scores.push_back(static_cast<float>(p * d.popularity[item]));
    }
  }
  return recall_at_10(d, scores);
}

double model_recall(const Data& d, const Recommender& model, Replicas& replicas) {
  hitch::NoGradGuard no_grad;
  std::vector<i64> history, offsets;
  for (const auto& items : d.train) {
    offsets.push_back(static_cast<i64>(history.size()));
    history.insert(history.end(), items.begin(), items.end());
  }
  const i64 n = static_cast<i64>(history.size());
  Tensor users = model.users(IndexTensor({n}, std::move(history)), IndexTensor({d.users}, std::move(offsets)));
  return recall_at_10(d, model.all_scores(users, replicas.whole(model.item_table())).to_vector());
}

struct RunResult {
  std::string label;
  i64 params = 0;
  std::size_t optimizer_states = 0;
  double final_loss = 0, heldout_loss = 0, recall = 0, seconds = 0;
  hitch::examples::Series curve, heldout;
};

// One training run. Every process builds the same model (same seed) and draws the same global
// batches; process r of R trains on users [B r / R, B (r + 1) / R) of each. Its loss is the mean
// over its slice times R n_r / B (1 when R divides B), so that the average of the processes'
// gradients, which Replicas::reduce_gradients() computes, is the gradient of the mean over the
// whole batch: the single-process run's, up to float rounding. Rank 0 evaluates.
RunResult train(const Data& d, const Config& c, const Batch& heldout, bool tied, bool sparse, int color,
                Replicas& replicas) {
  const auto start = std::chrono::steady_clock::now();
  const bool main_rank = replicas.rank() == 0;
  const i64 world = replicas.world_size();
  const i64 lo = c.batch * replicas.rank() / world, hi = c.batch * (replicas.rank() + 1) / world;
  const float scale = static_cast<float>(world * (hi - lo)) / static_cast<float>(c.batch);
  const float loss_share = static_cast<float>(hi - lo) / static_cast<float>(c.batch);  // of the global mean
  RunResult r;
  r.label = fmt::format("{} / {}", tied ? "tied" : "untied", sparse ? "SparseAdam" : "Adam");
  r.curve = {.label = r.label, .x = {}, .y = {}, .dashed = false, .color = color};
  r.heldout = {.label = r.label + " held-out", .x = {}, .y = {}, .dashed = true, .color = color};
  // Same seeds in every run: the same initial candidate table and the same batches.
  hitch::Generator init(c.seed + 1), batches(c.seed + 2);
  Recommender model(d.items, c.dim, tied, sparse, init, replicas);
  replicas.attach(model);
  const std::vector<Parameter> params = model.parameters();
  for (const auto& p : params) r.params += replicas.numel(p);
  // Rank 0 evaluates; with collective lookups (sharded tables) every rank evaluates along.
  const bool evaluates = main_rank || replicas.collective_lookups();

  std::unique_ptr<hitch::optim::Optimizer> opt;
  if (sparse) {
    auto o = std::make_unique<hitch::optim::SparseAdam>(params, hitch::optim::SparseAdamOptions{.lr = c.lr});
    opt = std::move(o);
  } else {
    auto o = std::make_unique<hitch::optim::Adam>(params, hitch::optim::AdamOptions{.lr = c.lr});
    opt = std::move(o);
  }

  // The chart shows the loss averaged over windows of `every` steps (about 100 points).
  const i64 every = std::max<i64>(1, c.steps / 100);
  double window = 0, last_window = 0;
  std::optional<hitch::examples::Progress> progress;
  if (main_rank) progress.emplace(r.label, c.steps);
  for (i64 step = 1; step <= c.steps; ++step) {
    Batch b = sample_batch(d, c, batches, lo, hi);
    Tensor loss = hitch::binary_cross_entropy_with_logits(model.scores(model.users(b.history, b.offsets), b.candidates),
                                                           b.labels);
    hitch::backward(scale == 1.0f ? loss : loss * scale);
    replicas.reduce_gradients();
    opt->step();
    opt->zero_grad();
    const float step_loss = world == 1 ? loss.item() : replicas.sum(loss.item() * loss_share);
    window += step_loss;
    if (step % every == 0 || step == c.steps) {
      const i64 n = step % every == 0 ? every : step % every;
      last_window = window / static_cast<double>(n);
      r.curve.x.push_back(static_cast<double>(step));
      r.curve.y.push_back(last_window);
      window = 0;
      if (evaluates) {
        hitch::NoGradGuard no_grad;
        r.heldout.x.push_back(static_cast<double>(step));
        r.heldout.y.push_back(loss_on(model, heldout));
      }
    }
    if (progress) progress->update(step, fmt::format("loss {:.4f}", r.curve.y.empty() ? step_loss : last_window));
  }
  r.final_loss = last_window;
  r.optimizer_states = opt->state_size();
  if (evaluates) {
    r.heldout_loss = r.heldout.y.back();
    r.recall = model_recall(d, model, replicas);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (progress) progress->finish(fmt::format("recall@10 {:.3f}", r.recall));
  return r;
}

}  // namespace

void add_options(CLI::App& app, Config& c) {
  app.add_option("--users", c.users, "number of users")->check(CLI::Range(i64{1}, i64{1000000}))->capture_default_str();
  app.add_option("--items", c.items, "number of items")->check(CLI::Range(i64{2}, i64{1000000}))->capture_default_str();
  app.add_option("--clusters", c.clusters, "item clusters")->check(CLI::Range(i64{1}, i64{100000}))->capture_default_str();
  app.add_option("--dim", c.dim, "embedding size")->check(CLI::Range(i64{1}, i64{4096}))->capture_default_str();
  app.add_option("--min-history", c.min_history, "fewest training interactions per user")
      ->check(CLI::Range(i64{1}, i64{10000}))
      ->capture_default_str();
  app.add_option("--max-history", c.max_history, "most training interactions per user")
      ->check(CLI::Range(i64{1}, i64{10000}))
      ->capture_default_str();
  app.add_option("--noise", c.noise, "share of interactions outside a user's clusters")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--steps", c.steps, "training steps per run")->check(CLI::Range(i64{1}, i64{100000000}))->capture_default_str();
  app.add_option("--batch", c.batch, "users per step")->check(CLI::Range(i64{1}, i64{1000000}))->capture_default_str();
  app.add_option("--negatives", c.negatives, "sampled negatives per positive")
      ->check(CLI::Range(i64{1}, i64{10000}))
      ->capture_default_str();
  app.add_option("--lr", c.lr, "learning rate (Adam and SparseAdam)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", c.seed, "seed for the data, the initial tables and the batches")->capture_default_str();
  app.add_option("--out", c.out, "output folder for loss.csv and loss.svg (created; the last one given wins)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->capture_default_str();
}

std::string check(const Config& c) {
  if (c.max_history < c.min_history)
    return fmt::format("--max-history ({}) must be >= --min-history ({})", c.max_history, c.min_history);
  if (c.clusters > c.items) return fmt::format("--clusters ({}) must be <= --items ({})", c.clusters, c.items);
  if (c.items < c.max_history + 2)
    return fmt::format("--items ({}) must be at least --max-history + 2 ({})", c.items, c.max_history + 2);
  return {};
}

int run(const Config& c, Replicas& replicas) {
  const auto start = std::chrono::steady_clock::now();
  const bool main_rank = replicas.rank() == 0;
  hitch::Generator data_gen(c.seed);
  const Data d = make_data(c, data_gen);
  i64 train_count = 0, test_count = 0;
  for (i64 u = 0; u < d.users; ++u) {
    train_count += static_cast<i64>(d.train[static_cast<std::size_t>(u)].size());
    test_count += static_cast<i64>(d.test[static_cast<std::size_t>(u)].size());
  }
  if (main_rank) {
    fmt::print("data: {} users, {} items in {} clusters, {} training and {} held-out interactions (seed {})\n",
               d.users, d.items, c.clusters, train_count, test_count, c.seed);
    fmt::print("model: dim {}, EmbeddingBag(mean) history . Embedding candidate + bias; {} negatives per positive; "
               "{} steps of batch {}, lr {}\n",
               c.dim, c.negatives, c.steps, c.batch, c.lr);
    const std::string note = replicas.describe(c);
    if (!note.empty()) fmt::print("{}\n", note);
    fmt::print("\n");
    std::fflush(stdout);
  }

  const Batch heldout = heldout_batch(d, c);
  std::vector<RunResult> results;
  for (bool sparse : {false, true})
    for (bool tied : {true, false})
      results.push_back(train(d, c, heldout, tied, sparse, static_cast<int>(results.size()), replicas));

  if (main_rank) {
    fmt::print("\n{:<20} {:>10} {:>6} {:>10} {:>10} {:>9} {:>7}\n", "run", "parameters", "states", "train loss",
               "held-out", "recall@10", "time");
    for (const auto& r : results)
      fmt::print("{:<20} {:>10} {:>6} {:>10.4f} {:>10.4f} {:>9.3f} {:>6.1f}s\n", r.label, r.params, r.optimizer_states,
                 r.final_loss, r.heldout_loss, r.recall, r.seconds);
    const auto baseline = [](const char* name, double recall) {
      fmt::print("{:<20} {:>10} {:>6} {:>10} {:>10} {:>9.3f}\n", name, "-", "-", "-", "-", recall);
    };
    baseline("oracle (true model)", oracle_recall(d, c.noise));
    baseline("most popular unseen", popularity_recall(d));
    baseline("random", 10.0 / static_cast<double>(std::max<i64>(1, d.items - train_count / std::max<i64>(1, d.users))));
  }

  // The tie as the library promises it: one table (and one optimizer state) fewer when tied.
  for (const auto& r : results) {
    const bool tied = r.label.rfind("tied", 0) == 0;
    const i64 expected = (tied ? 1 : 2) * d.items * c.dim + d.items;
    if (r.params != expected || r.optimizer_states != (tied ? 2u : 3u)) {
      fmt::print(stderr, "recommend: check failed: {} has {} parameters and {} optimizer states, expected {} and {}\n",
                 r.label, r.params, r.optimizer_states, expected, tied ? 2 : 3);
      return 1;
    }
  }
  if (!main_rank) return 0;

  std::vector<hitch::examples::Series> curves;
  for (const auto& r : results) {
    curves.push_back(r.curve);
    curves.push_back(r.heldout);
  }
  const hitch::examples::ChartOptions chart{.title = "recommend: loss of tied vs untied item table (dashed: held-out)",
                                            .x_label = "step",
                                            .y_label = "binary cross-entropy"};
  const auto [csv, svg] = hitch::examples::write_chart_files(c.out, "loss", curves, chart);
  fmt::print("\nwrote {} and {}\ntotal time {:.1f}s\n", csv, svg,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace hitch::examples::recommend
