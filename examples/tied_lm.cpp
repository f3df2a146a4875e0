// examples/tied_lm.cpp: does tying the output projection to the input embedding help a small
// language model? Press & Wolf (2017), "Using the Output Embedding to Improve Language Models":
// logits = h Wᵀ with W the token embedding, instead of a second [V, D] matrix.
//
// Data: the glosses of WordNet 3.0 (Debian: wordnet-base, /usr/share/wordnet), about 117,000
// definitions and usage examples, tokenized into lowercase words. Each gloss is one sequence
// <bos> w1 ... wn <eos>; the vocabulary is the V - 3 most frequent training words plus <unk>,
// <bos> and <eos>. 5 % of the glosses (seeded shuffle) are held out.
//
// Model (a fixed-window neural LM, Bengio et al. 2003, with today's blocks): the previous
// `context` tokens are looked up in W [V, D] (nn::Embedding), concatenated ([B, context * D]),
// encoded by Sequential(Linear(context * D, D), GELU, LayerNorm(D), Dropout(p)) into h [B, D], and
// projected to logits [B, V] by the head: tied, nn::Linear(embed.weight, own bias) (no new matrix,
// one gradient and one Adam state for W); untied, nn::Linear(D, V) (a second matrix). Loss:
// cross_entropy; optimizer: Adam. Both runs start from the same seed and see the same batches.
//
// Prints the parameter counts and the held-out perplexity (exp of the mean cross-entropy per held-
// out token) of both; writes loss.csv and loss.svg (training loss and held-out loss per evaluation
// point). Exits non-zero if the tie does not hold as promised (head.weight is embed.weight, one
// [V, D] matrix and one Adam state fewer than untied).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <hitch/hitch.h>

#include "chart.h"
#include "progress.h"
#include "wordnet.h"

namespace {

using hitch::IndexTensor;
using hitch::Parameter;
using hitch::Tensor;
using i64 = std::int64_t;
namespace fs = std::filesystem;
namespace nn = hitch::nn;

struct Config {
  std::string data;  // folder with WordNet's data files
  i64 vocab = 4000, dim = 64, context = 3, steps = 600, batch = 512, eval_every = 100, eval_tokens = 20000;
  double lr = 0.003, dropout = 0.1, test_fraction = 0.05;
  std::uint64_t seed = 1;
  std::string out = "tied_lm-output";
};

constexpr i64 kUnk = 0, kBos = 1, kEos = 2;

// ---- data --------------------------------------------------------------------------------------

struct Corpus {
  std::vector<std::string> words;  // id -> word; 0..2 are <unk>, <bos>, <eos>
  // Every (context, next) pair of a split: contexts row-major [n, context], next [n].
  std::vector<i64> train_context, train_next, test_context, test_next;
  i64 train_glosses = 0, test_glosses = 0;
};

Corpus build_corpus(const std::vector<hitch::examples::Synset>& synsets, const Config& c) {
  std::vector<std::size_t> order(synsets.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  hitch::Generator gen(c.seed);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);  // Fisher-Yates
  const auto n_test = std::max<std::size_t>(1, static_cast<std::size_t>(c.test_fraction * static_cast<double>(order.size())));

  std::vector<std::vector<std::string>> tokens(synsets.size());
  std::unordered_map<std::string, i64> counts;
  for (std::size_t k = 0; k < order.size(); ++k) {
    tokens[order[k]] = hitch::examples::tokenize(synsets[order[k]].gloss);
    if (k >= n_test)
      for (const auto& w : tokens[order[k]]) ++counts[w];
  }
  std::vector<std::pair<std::string, i64>> by_count(counts.begin(), counts.end());
  std::sort(by_count.begin(), by_count.end(),
            [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  Corpus d;
  d.words = {"<unk>", "<bos>", "<eos>"};
  std::unordered_map<std::string, i64> id;
  for (const auto& [w, n] : by_count) {
    if (static_cast<i64>(d.words.size()) >= c.vocab) break;
    id.emplace(w, static_cast<i64>(d.words.size()));
    d.words.push_back(w);
  }
  for (std::size_t k = 0; k < order.size(); ++k) {
    const bool test = k < n_test;
    auto& ctx = test ? d.test_context : d.train_context;
    auto& next = test ? d.test_next : d.train_next;
    ++(test ? d.test_glosses : d.train_glosses);
    std::vector<i64> seq(static_cast<std::size_t>(c.context), kBos);  // left padding with <bos>
    for (const auto& w : tokens[order[k]]) {
      auto it = id.find(w);
      seq.push_back(it == id.end() ? kUnk : it->second);
    }
    seq.push_back(kEos);
    for (std::size_t t = static_cast<std::size_t>(c.context); t < seq.size(); ++t) {
      ctx.insert(ctx.end(), seq.begin() + static_cast<std::ptrdiff_t>(t) - c.context,
                 seq.begin() + static_cast<std::ptrdiff_t>(t));
      next.push_back(seq[t]);
    }
  }
  return d;
}

// ---- model -------------------------------------------------------------------------------------

struct LanguageModel : nn::Module {
  i64 context, dim;
  nn::Embedding embed;
  nn::Sequential encoder;
  nn::Linear head;

  // init draws the initial weights (the untied head before the final re-draw of the table, so the
  // tables differ between the variants but come from one distribution), drop the dropout masks.
  LanguageModel(bool tied, const Config& c, i64 vocab, hitch::Generator& init, hitch::Generator& drop)
      : context(c.context),
        dim(c.dim),
        embed(vocab, c.dim, {}, init),
        encoder(nn::Linear(c.context * c.dim, c.dim, true, init), nn::GELU(), nn::LayerNorm({c.dim}),
                nn::Dropout(static_cast<float>(c.dropout), drop)),
        head(tied ? nn::Linear(embed.weight, Parameter("bias", Tensor::zeros({vocab})))
                  : nn::Linear(c.dim, vocab, true, init)) {
    // Small embeddings, as LMs initialise them (uniform in [-0.1, 0.1]: Zaremba et al. 2014,
    // Press & Wolf 2017): with nn::Embedding's N(0, 1) a tied head would start with logits of
    // order sqrt(D) and a loss far above log V.
    nn::init::uniform_(embed.weight, -0.1, 0.1, init);
  }

  // contexts [B, context] -> logits [B, V].
  Tensor forward(const IndexTensor& contexts) const {
    const i64 B = contexts.size(0);
    return head(encoder(hitch::reshape(embed(contexts), {B, context * dim})));
  }
  void members(Members& m) const override {
    m.module("embed", embed);
    m.module("encoder", encoder);
    m.module("head", head);
  }
};

IndexTensor rows_of(const std::vector<i64>& flat, i64 width, i64 first, i64 count) {
  return IndexTensor({count, width}, std::vector<i64>(flat.begin() + first * width, flat.begin() + (first + count) * width));
}

// Mean cross-entropy (nats per token) over the first `limit` held-out pairs, in eval mode and
// without recording, in chunks so the [chunk, V] logits stay small.
double held_out_loss(LanguageModel& model, const Corpus& d, i64 limit) {
  hitch::NoGradGuard no_grad;
  model.eval();
  const i64 n = std::min<i64>(limit, static_cast<i64>(d.test_next.size()));
  double total = 0.0;
  for (i64 first = 0; first < n; first += 2048) {
    const i64 count = std::min<i64>(2048, n - first);
    const Tensor logits = model.forward(rows_of(d.test_context, model.context, first, count));
    const IndexTensor next({count}, std::vector<i64>(d.test_next.begin() + first, d.test_next.begin() + first + count));
    total += static_cast<double>(hitch::cross_entropy(logits, next, {.reduction = hitch::Reduction::Sum}).item());
  }
  model.train();
  return total / static_cast<double>(n);
}

struct RunResult {
  std::string label;
  i64 params = 0;
  std::size_t adam_states = 0;
  bool tie_holds = false;
  double perplexity = 0.0, seconds = 0.0;
  hitch::examples::Series train_curve, test_curve;
};

RunResult train(const Corpus& d, const Config& c, bool tied) {
  const auto start = std::chrono::steady_clock::now();
  RunResult r;
  r.label = tied ? "tied" : "untied";
  // Three streams, so both runs get the same initial tables, dropout masks and batches.
  hitch::Generator init(c.seed), drop(c.seed + 1), batches(c.seed + 2);
  LanguageModel model(tied, c, static_cast<i64>(d.words.size()), init, drop);
  for (const auto& p : model.parameters()) r.params += p.numel();
  hitch::optim::Adam adam(model.parameters(), {.lr = c.lr});
  r.train_curve = {.label = r.label + " training", .x = {}, .y = {}, .dashed = false, .color = tied ? 0 : 1};
  r.test_curve = {.label = r.label + " held-out", .x = {}, .y = {}, .dashed = true, .color = tied ? 0 : 1};
  hitch::examples::Progress progress(r.label, c.steps);
  const auto n_train = static_cast<std::uint64_t>(d.train_next.size());
  std::vector<i64> ctx(static_cast<std::size_t>(c.batch * c.context)), next(static_cast<std::size_t>(c.batch));
  double running = 0.0;
  i64 since = 0;
  for (i64 step = 1; step <= c.steps; ++step) {
    for (i64 b = 0; b < c.batch; ++b) {
      const auto i = static_cast<i64>(batches.below(n_train));
      std::copy_n(d.train_context.begin() + i * c.context, c.context, ctx.begin() + b * c.context);
      next[static_cast<std::size_t>(b)] = d.train_next[static_cast<std::size_t>(i)];
    }
    adam.zero_grad(true);
    const Tensor loss = hitch::cross_entropy(model.forward(IndexTensor({c.batch, c.context}, ctx)),
                                             IndexTensor({c.batch}, next));
    hitch::backward(loss);
    adam.step();
    running += static_cast<double>(loss.item());
    ++since;
    if (step % c.eval_every == 0 || step == c.steps) {
      r.train_curve.x.push_back(static_cast<double>(step));
      r.train_curve.y.push_back(running / static_cast<double>(since));
      r.test_curve.x.push_back(static_cast<double>(step));
      r.test_curve.y.push_back(held_out_loss(model, d, c.eval_tokens));
      running = 0.0;
      since = 0;
    }
    progress.update(step, fmt::format("loss {:.3f}", loss.item()));
  }
  r.perplexity = std::exp(held_out_loss(model, d, static_cast<i64>(d.test_next.size())));
  r.adam_states = adam.state_size();
  r.tie_holds = model.head.weight.is_same(model.embed.weight) == tied;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.finish(fmt::format("held-out perplexity {:.1f}", r.perplexity));
  return r;
}

int run(const Config& c) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path dir = hitch::examples::find_wordnet(c.data, "tied_lm");
  if (dir.empty()) return 2;
  const Corpus d = build_corpus(hitch::examples::read_wordnet(dir), c);
  if (d.train_next.empty() || d.test_next.empty()) throw std::runtime_error("too few glosses for a training and a held-out split");
  const i64 V = static_cast<i64>(d.words.size());
  fmt::print("data: WordNet glosses from {}: {} training glosses ({} tokens), {} held out ({} tokens); vocabulary {} "
             "words (incl. <unk>, <bos>, <eos>)\n",
             dir.string(), d.train_glosses, d.train_next.size(), d.test_glosses, d.test_next.size(), V);
  fmt::print("model: {} previous tokens -> Embedding [{}, {}] -> Linear({}, {}), GELU, LayerNorm, Dropout({}) -> "
             "head [{}, {}]; Adam lr {}, {} steps of {} tokens\n\n",
             c.context, V, c.dim, c.context * c.dim, c.dim, c.dropout, V, c.dim, c.lr, c.steps, c.batch);

  std::vector<RunResult> results;
  for (bool tied : {false, true}) results.push_back(train(d, c, tied));

  fmt::print("\n{:<8} {:>11} {:>12} {:>21} {:>8}\n", "head", "parameters", "Adam states", "held-out perplexity", "time");
  for (const auto& r : results)
    fmt::print("{:<8} {:>11} {:>12} {:>21.2f} {:>7.1f}s\n", r.label, r.params, r.adam_states, r.perplexity, r.seconds);
  fmt::print("(a uniform guess over the vocabulary has perplexity {})\n", V);

  const RunResult &untied = results[0], &tied = results[1];
  if (!untied.tie_holds || !tied.tie_holds || tied.params != untied.params - V * c.dim ||
      tied.adam_states + 1 != untied.adam_states) {
    fmt::print(stderr, "tied_lm: check failed: parameters {} / {} (expected a difference of {}), Adam states {} / {}\n",
               untied.params, tied.params, V * c.dim, untied.adam_states, tied.adam_states);
    return 1;
  }
  std::vector<hitch::examples::Series> curves;
  for (const auto& r : results) {
    curves.push_back(r.train_curve);
    curves.push_back(r.test_curve);
  }
  const hitch::examples::ChartOptions chart{.title = "tied_lm: cross-entropy per token (nats)",
                                            .x_label = "step",
                                            .y_label = "loss (nats per token)"};
  const auto [csv, svg] = hitch::examples::write_chart_files(c.out, "loss", curves, chart);
  fmt::print("\nwrote {} and {}\ntotal time {:.1f}s\n", csv, svg,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{
      "tied_lm: a small next-token language model on WordNet's glosses, with the output projection\n"
      "tied to the input embedding (nn::Linear(embed.weight)) and untied (its own matrix). Needs WordNet's\n"
      "data files: Debian's wordnet-base package (/usr/share/wordnet) or --data DIR. Writes loss.csv and loss.svg."};
  app.add_option("--data", c.data, "folder with data.noun, data.verb, data.adj, data.adv (default: $WNSEARCHDIR, "
                                   "else /usr/share/wordnet)");
  app.add_option("--vocab", c.vocab, "vocabulary size V, incl. <unk>, <bos>, <eos>")->check(CLI::Range(i64{4}, i64{1000000}))->capture_default_str();
  app.add_option("--dim", c.dim, "embedding size D")->check(CLI::Range(i64{1}, i64{4096}))->capture_default_str();
  app.add_option("--context", c.context, "previous tokens the model reads")->check(CLI::Range(i64{1}, i64{64}))->capture_default_str();
  app.add_option("--steps", c.steps, "training steps per run")->check(CLI::Range(i64{1}, i64{100000000}))->capture_default_str();
  app.add_option("--batch", c.batch, "tokens per step")->check(CLI::Range(i64{1}, i64{1000000}))->capture_default_str();
  app.add_option("--eval-every", c.eval_every, "steps between evaluations")->check(CLI::Range(i64{1}, i64{100000000}))->capture_default_str();
  app.add_option("--eval-tokens", c.eval_tokens, "held-out tokens per evaluation point (the final perplexity uses all)")
      ->check(CLI::Range(i64{1}, i64{100000000}))
      ->capture_default_str();
  app.add_option("--lr", c.lr, "Adam learning rate")->check(CLI::Range(1e-8, 10.0))->capture_default_str();
  app.add_option("--dropout", c.dropout, "dropout probability after the encoder")->check(CLI::Range(0.0, 0.99))->capture_default_str();
  app.add_option("--test-fraction", c.test_fraction, "share of glosses held out")->check(CLI::Range(0.001, 0.5))->capture_default_str();
  app.add_option("--seed", c.seed, "seed of the split, the initial weights, dropout and the batches")->capture_default_str();
  app.add_option("--out", c.out, "output folder")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(c);
  } catch (const std::exception& e) {
    fmt::print(stderr, "tied_lm: {}\n", e.what());
    return 1;
  }
}
