// examples/recommend.cpp: the main example. Does tying the history table to the candidate table
// help a recommender, and does it work the same with dense Adam and with lazy SparseAdam?
//
// The data is generated here (no download) with a known structure: items fall into clusters,
// each user prefers one or two of them and picks items there (popular ones more often), with
// some noise. Two interactions per user are held out. The model scores a (user, item) pair as
//   score = <bag(user's other items), item(candidate)> + bias(candidate)
// where bag is an EmbeddingBag (mean) and item an Embedding. Tied: both hold ONE Parameter, so
// the table gets the sum of both paths' gradients and the optimizer one state for it. Untied:
// two tables. Training: each positive against `negatives` uniformly sampled items, binary
// cross-entropy with logits. Four runs (tied/untied x Adam/SparseAdam) on the same data, the
// same initial candidate table and the same batches; the report is recall@10 on the held-out
// interactions (all items ranked, the user's training items excluded), loss.csv and loss.svg.
// Left out on purpose: real data, mini-batch evaluation, early stopping.
//
// The data, the model, the training loop and the report live in support/recommender.{h,cpp},
// shared with recommend_dist.cpp (the same runs, data-parallel over MPI).
#include <exception>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "recommender.h"

int main(int argc, char** argv) {
  namespace rec = hitch::examples::recommend;
  rec::Config c;
  CLI::App app{
      "recommend: a recommender on generated data (item clusters that users prefer), with the item table\n"
      "tied between the history bag (EmbeddingBag) and the candidate lookup (Embedding) or not, trained\n"
      "with Adam and with SparseAdam. Prints recall@10 on held-out interactions; writes loss.csv and\n"
      "loss.svg to the output folder."};
  rec::add_options(app, c);
  CLI11_PARSE(app, argc, argv);
  if (const std::string bad = rec::check(c); !bad.empty()) {
    fmt::print(stderr, "recommend: {}\n", bad);
    return 2;
  }
  try {
    rec::Replicas alone;
    return rec::run(c, alone);
  } catch (const std::exception& e) {
    fmt::print(stderr, "recommend: {}\n", e.what());
    return 1;
  }
}
