// examples/support/recommender.h: the recommender of examples/recommend.cpp (the main example),
// shared with examples/recommend_dist.cpp and examples/recommend_sharded.cpp, which run the same
// four trainings over MPI (data-parallel; and with the item tables sharded row-wise) and print the
// same table (docs/examples/recommend.md, docs/distributed.md, docs/sharding.md).
//
// The data is generated here (no download) with a known structure: items fall into clusters,
// each user prefers one or two of them and picks items there (popular ones more often), with
// some noise. Two interactions per user are held out. The model scores a (user, item) pair as
//   score = <bag(user's other items), item(candidate)> + bias(candidate)
// where bag is an EmbeddingBag (mean) and item an Embedding. Tied: both hold ONE Parameter, so
// the table gets the sum of both paths' gradients and the optimizer one state for it. Untied:
// two tables. Training: each positive against `negatives` uniformly sampled items, binary
// cross-entropy with logits.
//
// Nothing here knows about MPI: the training loop talks to a Replicas object, which is one
// process on its own (recommend) or one rank of several (recommend_dist: rank r trains on its
// slice of every global batch and DataParallel averages the gradients before each step;
// recommend_sharded: the same, with the item tables sharded row-wise over the ranks).
// Left out on purpose: real data, mini-batch evaluation, early stopping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <hitch/hitch.h>

namespace hitch::examples::recommend {

using i64 = std::int64_t;

struct Config {
  i64 users = 2000, items = 1000, clusters = 20, dim = 32;
  i64 min_history = 8, max_history = 24;
  double noise = 0.15;  // share of interactions outside the user's clusters
  i64 steps = 2000, batch = 256, negatives = 4;
  double lr = 0.005;
  std::uint64_t seed = 1;
  std::string out = "example-output";
};

// The flags of docs/examples/recommend.md, and their cross-checks (a message, empty if fine).
void add_options(CLI::App& app, Config& c);
std::string check(const Config& c);

// The processes that train one model together. The default is one process on its own: every
// hook is a no-op. recommend_dist overrides them with hitch::dist (MPI).
class Replicas {
 public:
  virtual ~Replicas() = default;
  virtual int rank() const { return 0; }        // only rank 0 evaluates, prints and writes files
  virtual int world_size() const { return 1; }  // the global batch is split this many ways
  // Once per training run, after the model and before its optimizer are built (the place to
  // broadcast the initial Parameters).
  virtual void attach(const nn::Module& /*model*/) {}
  // After backward, before the optimizer step: the gradients become the global batch's.
  virtual void reduce_gradients() {}
  // The sum of `local` over the processes (the same value on every one).
  virtual float sum(float local) { return local; }
  // A note for the report header (empty: none).
  virtual std::string describe(const Config& /*c*/) const { return {}; }

  // The item tables ([N, D], initial values the same on every process). The default is an
  // ordinary Parameter; recommend_sharded returns a row-wise sharded one (dist::shard_rows: each
  // process keeps its rows, every lookup fetches rows from their owners).
  virtual Parameter table(std::string name, const Tensor& initial) { return Parameter(std::move(name), initial); }
  // The whole [N, D] values of a table made by table(), for the all-items scores of the
  // evaluation (a sharded table is gathered: collective).
  virtual Tensor whole(const Parameter& p) { return p.value(); }
  // Elements of p as a whole (a shard counts its whole table).
  virtual i64 numel(const Parameter& p) const { return p.numel(); }
  // True when lookups are collective (sharded tables): every process then evaluates along with
  // rank 0 (rank 0 still prints alone).
  virtual bool collective_lookups() const { return false; }
};

// Generates the data, runs the four trainings (tied/untied x Adam/SparseAdam), and on rank 0
// prints the table and writes loss.csv and loss.svg. Returns the exit status: 0, or 1 when a run
// has not the parameter and optimizer-state counts tying promises (on every rank alike).
int run(const Config& c, Replicas& replicas);

}  // namespace hitch::examples::recommend
