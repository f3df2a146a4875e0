// examples/wordnet_supersenses.cpp: real data. Can a bag of gloss words tell a WordNet synset's
// supersense (its lexicographer file: noun.animal, verb.motion, ... 45 classes), and does a tied
// auxiliary word-prediction objective help?
//
// Data: WordNet 3.0's data.noun, data.verb, data.adj and data.adv (Debian: wordnet-base, in
// /usr/share/wordnet), about 117,000 synsets. Each line reads
//   synset_offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers ... | gloss
// and lex_filenum is the class. Only the gloss is used (not the synset's own words).
//
// Model: a word table W [V, D]. Classifier: Linear(EmbeddingBag(W, mean)(gloss)) -> 45 logits,
// cross-entropy. Auxiliary objective (CBOW with negative sampling): hide one gloss word, bag the
// others through the same EmbeddingBag, and score the hidden word and `negatives` sampled words
// through an Embedding: tied, that Embedding holds W itself (one Parameter, both paths' gradients
// added, one SparseAdam state); untied, a second table of the same size (word2vec's two tables).
// Three runs on the same split: classifier only, + auxiliary untied, + auxiliary tied.
// Tables train with SparseAdam (sparse gradients), the Linear layer with Adam.
// Left out on purpose: the synset words, pointers and POS as features; subsampling; stop words.
#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
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

struct Config {
  std::string data;  // folder with the four data files
  i64 dim = 64, steps = 1500, batch = 256, negatives = 5, min_count = 2;
  double lr = 0.01, aux_weight = 1.0, test_fraction = 0.1;
  std::uint64_t seed = 1;
  std::string out = "wordnet-output";
};

using hitch::examples::kLexnames;
using hitch::examples::Synset;
using hitch::examples::tokenize;
constexpr i64 kClasses = hitch::examples::kLexClasses;

// ---- the data set ------------------------------------------------------------------------------

struct Example {
  int label = 0;
  std::vector<i64> words;  // in-vocabulary gloss words, in order, repeats kept
};

struct Dataset {
  std::vector<std::string> vocab;
  std::vector<double> noise_cdf;  // negatives are drawn with probability ~ count^0.75
  std::vector<Example> train, test;
  std::vector<std::string> test_glosses;
};

Dataset build_dataset(const std::vector<Synset>& synsets, const Config& c) {
  std::vector<std::size_t> order(synsets.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  hitch::Generator gen(c.seed);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
  const auto n_test = std::max<std::size_t>(
      1, static_cast<std::size_t>(std::lround(c.test_fraction * static_cast<double>(synsets.size()))));
  const std::size_t n_train = synsets.size() - std::min(n_test, synsets.size() - 1);

  // The vocabulary comes from the training glosses only.
  std::map<std::string, i64> counts;
  for (std::size_t i = 0; i < n_train; ++i)
    for (auto& w : tokenize(synsets[order[i]].gloss)) ++counts[w];
  Dataset d;
  std::unordered_map<std::string, i64> id;
  double total = 0;
  for (const auto& [w, n] : counts)
    if (n >= c.min_count) {
      id.emplace(w, static_cast<i64>(d.vocab.size()));
      d.vocab.push_back(w);
      d.noise_cdf.push_back(total += std::pow(static_cast<double>(n), 0.75));
    }
  for (std::size_t i = 0; i < synsets.size(); ++i) {
    const Synset& s = synsets[order[i]];
    Example e{s.label, {}};
    for (auto& w : tokenize(s.gloss))
      if (auto it = id.find(w); it != id.end()) e.words.push_back(it->second);
    if (i < n_train) {
      d.train.push_back(std::move(e));
    } else {
      d.test.push_back(std::move(e));
      d.test_glosses.push_back(s.gloss);
    }
  }
  return d;
}

// ---- the model ---------------------------------------------------------------------------------

enum class Aux { None, Untied, Tied };

const char* to_string(Aux a) { return a == Aux::None ? "classifier only" : a == Aux::Untied ? "+ CBOW, untied" : "+ CBOW, tied"; }

class SupersenseModel : public hitch::nn::Module {
 public:
  SupersenseModel(i64 vocab, i64 dim, Aux aux, hitch::Generator& gen)
      : words_(Parameter("words", Tensor::randn({vocab, dim}, 0.0f, 0.1f, gen))),
        bag_(words_, {.mode = hitch::BagMode::Mean, .sparse = true}),
        target_(aux == Aux::Untied ? Parameter("output_words", Tensor::randn({vocab, dim}, 0.0f, 0.1f, gen)) : words_,
                {.sparse = true}),
        classifier_(dim, kClasses, true, gen),
        aux_(aux) {}

  Tensor bag(const IndexTensor& words, const IndexTensor& offsets) const { return bag_(words, offsets); }
  Tensor logits(const Tensor& bags) const { return classifier_(bags); }
  // context bags [B, D] and candidates [B, C] -> scores [B, C].
  Tensor word_scores(const Tensor& context, const IndexTensor& candidates) const {
    return hitch::sum(target_(candidates) * hitch::reshape(context, {candidates.size(0), 1, -1}), 2);
  }

  void members(Members& m) const override {
    m.module("bag", bag_);
    if (aux_ != Aux::None) m.module("target", target_);
    m.module("classifier", classifier_);
  }
  // The tables (for SparseAdam) and the dense layer (for Adam).
  std::vector<Parameter> tables() const {
    std::vector<Parameter> t{words_};
    if (aux_ == Aux::Untied) t.push_back(target_.weight);
    return t;
  }
  std::vector<Parameter> dense() const { return classifier_.parameters(); }
  Aux aux() const { return aux_; }

 private:
  Parameter words_;
  hitch::nn::EmbeddingBag bag_;
  hitch::nn::Embedding target_;
  hitch::nn::Linear classifier_;
  Aux aux_;
};

// Bags in EmbeddingBag's 1-D form: all words back to back, offsets[b] where bag b starts.
struct Bags {
  std::vector<i64> words, offsets;
  void add(const std::vector<i64>& w, std::size_t skip = SIZE_MAX) {
    offsets.push_back(static_cast<i64>(words.size()));
    for (std::size_t i = 0; i < w.size(); ++i)
      if (i != skip) words.push_back(w[i]);
  }
  IndexTensor input() const { return IndexTensor({static_cast<i64>(words.size())}, words); }
  IndexTensor offsets_tensor() const { return IndexTensor({static_cast<i64>(offsets.size())}, offsets); }
};

// The predicted class of every example in set, and the share that is right.
std::pair<double, std::vector<i64>> evaluate(const SupersenseModel& model, const std::vector<Example>& set) {
  hitch::NoGradGuard no_grad;
  Bags b;
  for (const auto& e : set) b.add(e.words);
  const std::vector<float> logits = model.logits(model.bag(b.input(), b.offsets_tensor())).to_vector();
  std::vector<i64> predicted;
  i64 right = 0;
  for (std::size_t i = 0; i < set.size(); ++i) {
    const float* row = logits.data() + i * kClasses;
    predicted.push_back(std::max_element(row, row + kClasses) - row);
    right += predicted.back() == set[i].label;
  }
  return {static_cast<double>(right) / static_cast<double>(std::max<std::size_t>(1, set.size())), predicted};
}

struct RunResult {
  Aux aux = Aux::None;
  i64 params = 0;
  std::size_t table_states = 0;  // SparseAdam's: one per distinct table
  double accuracy = 0, seconds = 0;
  std::vector<i64> predicted;
  hitch::examples::Series curve;
};

RunResult train(const Dataset& d, const Config& c, Aux aux) {
  const auto start = std::chrono::steady_clock::now();
  hitch::Generator init(c.seed + 1), batches(c.seed + 2);
  SupersenseModel model(static_cast<i64>(d.vocab.size()), c.dim, aux, init);
  RunResult r{aux, 0, 0, 0, 0, {}, {.label = to_string(aux), .x = {}, .y = {}}};
  for (const auto& p : model.parameters()) r.params += p.numel();
  hitch::optim::SparseAdam sparse_adam(model.tables(), {.lr = c.lr});
  hitch::optim::Adam adam(model.dense(), {.lr = c.lr});

  const i64 every = std::max<i64>(1, c.steps / 30);
  hitch::examples::Progress progress(to_string(aux), c.steps);
  for (i64 step = 1; step <= c.steps; ++step) {
    Bags gloss, context;
    std::vector<i64> labels, candidates;
    std::vector<float> targets;
    for (i64 b = 0; b < c.batch; ++b) {
      const Example& e = d.train[batches.below(d.train.size())];
      gloss.add(e.words);
      labels.push_back(e.label);
      if (aux == Aux::None || e.words.size() < 2) continue;
      const std::size_t hidden = batches.below(e.words.size());
      context.add(e.words, hidden);
      candidates.push_back(e.words[hidden]);
      targets.push_back(1.0f);
      for (i64 k = 0; k < c.negatives; ++k) {
        const double u = batches.uniform() * d.noise_cdf.back();
        candidates.push_back(std::upper_bound(d.noise_cdf.begin(), d.noise_cdf.end(), u) - d.noise_cdf.begin());
        targets.push_back(0.0f);
      }
    }
    Tensor loss = hitch::cross_entropy(model.logits(model.bag(gloss.input(), gloss.offsets_tensor())),
                                       IndexTensor({c.batch}, labels));
    if (!context.offsets.empty()) {
      const i64 rows = static_cast<i64>(context.offsets.size());
      Tensor scores = model.word_scores(model.bag(context.input(), context.offsets_tensor()),
                                        IndexTensor({rows, c.negatives + 1}, candidates));
      loss = loss + static_cast<float>(c.aux_weight) *
                        hitch::binary_cross_entropy_with_logits(scores, Tensor({rows, c.negatives + 1}, targets));
    }
    hitch::backward(loss);
    sparse_adam.step();
    adam.step();
    sparse_adam.zero_grad();
    adam.zero_grad();
    if (step % every == 0 || step == c.steps) {
      r.curve.x.push_back(static_cast<double>(step));
      r.curve.y.push_back(evaluate(model, d.test).first);
    }
    progress.update(step, fmt::format("loss {:.3f}", loss.item()));
  }
  std::tie(r.accuracy, r.predicted) = evaluate(model, d.test);
  r.table_states = sparse_adam.state_size();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.finish(fmt::format("held-out accuracy {:.3f}", r.accuracy));
  return r;
}

int run(const Config& c) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path dir = hitch::examples::find_wordnet(c.data, "wordnet_supersenses");
  if (dir.empty()) return 2;
  const std::vector<Synset> synsets = hitch::examples::read_wordnet(dir);
  if (synsets.size() < 2) throw std::runtime_error(fmt::format("{}: fewer than 2 synsets", dir.string()));
  const Dataset d = build_dataset(synsets, c);
  if (d.vocab.empty())
    throw std::runtime_error(fmt::format("no gloss word occurs --min-count = {} times in the training glosses", c.min_count));
  std::vector<i64> per_class(kClasses, 0);
  for (const auto& e : d.train) ++per_class[static_cast<std::size_t>(e.label)];
  const auto majority = std::max_element(per_class.begin(), per_class.end()) - per_class.begin();
  i64 majority_right = 0;
  for (const auto& e : d.test) majority_right += e.label == majority;
  fmt::print("data: {} synsets from {} ({} training, {} held out), {} classes, vocabulary {} words (min count {})\n",
             synsets.size(), dir.string(), d.train.size(), d.test.size(), kClasses, d.vocab.size(), c.min_count);
  fmt::print("model: dim {}, EmbeddingBag(mean) -> Linear({}, {}); CBOW weight {}, {} negatives; {} steps of batch {}, "
             "lr {}\n\n",
             c.dim, c.dim, kClasses, c.aux_weight, c.negatives, c.steps, c.batch, c.lr);

  std::vector<RunResult> results;
  for (Aux aux : {Aux::None, Aux::Untied, Aux::Tied}) results.push_back(train(d, c, aux));

  fmt::print("\n{:<20} {:>10} {:>13} {:>18} {:>7}\n", "run", "parameters", "table states", "held-out accuracy",
             "time");
  for (const auto& r : results)
    fmt::print("{:<20} {:>10} {:>13} {:>18.3f} {:>6.1f}s\n", to_string(r.aux), r.params, r.table_states, r.accuracy,
               r.seconds);
  fmt::print("{:<20} {:>10} {:>13} {:>18.3f}   (always {})\n", "majority class", "-", "-",
             static_cast<double>(majority_right) / static_cast<double>(d.test.size()),
             kLexnames[static_cast<std::size_t>(majority)]);

  // The tie as the library promises it: tied adds no parameters and no optimizer state, untied
  // adds one table and its state.
  const i64 table = static_cast<i64>(d.vocab.size()) * c.dim;
  if (results[2].params != results[0].params || results[1].params != results[0].params + table ||
      results[0].table_states != 1 || results[1].table_states != 2 || results[2].table_states != 1) {
    fmt::print(stderr,
               "wordnet_supersenses: check failed: parameters {}, {}, {} (expected {}, {}, {}); SparseAdam states {}, "
               "{}, {} (expected 1, 2, 1)\n",
               results[0].params, results[1].params, results[2].params, results[0].params, results[0].params + table,
               results[0].params, results[0].table_states, results[1].table_states, results[2].table_states);
    return 1;
  }

  fmt::print("\nheld-out examples ({}):\n", to_string(results.back().aux));
  for (std::size_t i = 0; i < std::min<std::size_t>(6, d.test.size()); ++i) {
    const auto truth = static_cast<std::size_t>(d.test[i].label);
    const auto guess = static_cast<std::size_t>(results.back().predicted[i]);
    fmt::print("  {:<18} {:<26} {:.64}\n", kLexnames[guess], truth == guess ? "(right)" : fmt::format("(is {})", kLexnames[truth]),
               d.test_glosses[i]);
  }

  std::vector<hitch::examples::Series> curves;
  for (const auto& r : results) curves.push_back(r.curve);
  const hitch::examples::ChartOptions chart{.title = "wordnet_supersenses: held-out accuracy (45 supersenses)",
                                            .x_label = "step",
                                            .y_label = "held-out accuracy"};
  const auto [csv, svg] = hitch::examples::write_chart_files(c.out, "accuracy", curves, chart);
  fmt::print("\nwrote {} and {}\ntotal time {:.1f}s\n", csv, svg,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{
      "wordnet_supersenses: classify WordNet 3.0 synsets into their 45 supersenses (lexicographer files)\n"
      "from the bag of words of their gloss (EmbeddingBag), with and without a CBOW auxiliary objective\n"
      "whose word lookup (Embedding) is tied to the same table. Needs WordNet's data files: Debian's\n"
      "wordnet-base package (/usr/share/wordnet) or --data DIR. Writes accuracy.csv and accuracy.svg."};
  app.add_option("--data", c.data, "folder with data.noun, data.verb, data.adj, data.adv (default: $WNSEARCHDIR, "
                                   "else /usr/share/wordnet)");
  app.add_option("--dim", c.dim, "embedding size")->check(CLI::Range(i64{1}, i64{4096}))->capture_default_str();
  app.add_option("--steps", c.steps, "training steps per run")->check(CLI::Range(i64{1}, i64{100000000}))->capture_default_str();
  app.add_option("--batch", c.batch, "synsets per step")->check(CLI::Range(i64{1}, i64{1000000}))->capture_default_str();
  app.add_option("--negatives", c.negatives, "sampled words per hidden word (CBOW)")
      ->check(CLI::Range(i64{1}, i64{10000}))
      ->capture_default_str();
  app.add_option("--aux-weight", c.aux_weight, "weight of the CBOW loss")->check(CLI::Range(0.0, 1000.0))->capture_default_str();
  app.add_option("--min-count", c.min_count, "keep words seen at least this often in training glosses")
      ->check(CLI::Range(i64{1}, i64{1000000}))
      ->capture_default_str();
  app.add_option("--test-fraction", c.test_fraction, "share of synsets held out")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--lr", c.lr, "learning rate (SparseAdam for the tables, Adam for the Linear layer)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", c.seed, "seed for the split, the initial weights and the batches")->capture_default_str();
  app.add_option("--out", c.out, "output folder for accuracy.csv and accuracy.svg (created)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(c);
  } catch (const std::exception& e) {
    fmt::print(stderr, "wordnet_supersenses: {}\n", e.what());
    return 1;
  }
}
