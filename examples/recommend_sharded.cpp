// examples/recommend_sharded.cpp: the main example (recommend.cpp) trained over MPI with its item
// tables sharded row-wise (dist/sharded.h, docs/sharding.md).
//
//   mpirun -np 2 build/release/examples/recommend_sharded      (as root: add --allow-run-as-root)
//
// As recommend_dist (every rank generates the same data and draws the same global batches; rank r
// of R trains on users [B r / R, B (r + 1) / R) of each batch of B; DataParallel reduces the
// gradients), but the item table, which the history bag (EmbeddingBag) and the candidate lookup
// (Embedding) share, is made with dist::shard_rows: rank k keeps rows k, k + R, k + 2R, ... and
// the optimizer state of those rows only. Each lookup fetches its rows from their owners;
// reduce_gradients() sends each looked-up row's gradient to its owner, which sums both paths'
// and all ranks' contributions and updates the row once. The untied runs shard both tables; the
// item bias ([N, 1]) stays an ordinary, replicated Parameter in the same DataParallel.
// The tables start from recommend's values (shard_rows(name, full): every rank makes the whole
// initial table once and keeps its rows, fine at 1,000 x 32; a table too big for one process is
// made with shard_rows(name, N, D, uniform_rows(...)) instead, as bench_sharded does). So rank 0
// prints the table recommend prints, the same numbers within the printed precision (the time
// column aside); ctest example_recommend_sharded_np2 and _np3 compare the two.
// Lookups on a sharded table are collective, so every rank takes part in the evaluation (the
// held-out loss and the all-items scores, which gather the candidate table); rank 0 prints.
#include <exception>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <hitch/dist/dist.h>
#include <hitch/dist/sharded.h>

#include "recommender.h"

namespace {

namespace rec = hitch::examples::recommend;
namespace dist = hitch::dist;

class ShardedReplicas : public rec::Replicas {
 public:
  int rank() const override { return dist::rank(); }
  int world_size() const override { return dist::world_size(); }
  // Lists each table once; a sharded one is not broadcast (each rank holds other rows), the
  // bias is.
  void attach(const hitch::nn::Module& model) override { dp_.emplace(model); }
  void reduce_gradients() override { dp_->reduce_gradients(); }
  float sum(float local) override {
    hitch::Tensor t({1}, std::vector<float>{local});
    dist::all_reduce_sum(t);
    return t.item();
  }
  hitch::Parameter table(std::string name, const hitch::Tensor& initial) override {
    return dist::shard_rows(std::move(name), initial);
  }
  hitch::Tensor whole(const hitch::Parameter& p) override { return dist::gather_table(p); }
  rec::i64 numel(const hitch::Parameter& p) const override {
    const std::optional<dist::ShardInfo> s = dist::sharding(p);
    return s ? s->num_rows * s->dim : p.numel();
  }
  bool collective_lookups() const override { return true; }
  std::string describe(const rec::Config& c) const override {
    const rec::i64 world = world_size(), least = c.batch / world;
    const std::string each = c.batch % world ? fmt::format("{} or {}", least, least + 1) : std::to_string(least);
    const rec::i64 most_rows = (c.items + world - 1) / world;
    return fmt::format("data-parallel: {} processes (hitch::dist::DataParallel), each {} of the {} users of every step\n"
                       "sharded: the item table (untied: both tables) row-wise (hitch::dist::shard_rows), rank k holds rows "
                       "k, k + {}, ... ({} or fewer of {}) and their optimizer state; every rank evaluates, rank 0 prints",
                       world, each, c.batch, world, most_rows, c.items);
  }

 private:
  std::optional<dist::DataParallel> dp_;
};

}  // namespace

int main(int argc, char** argv) {
  rec::Config c;
  CLI::App app{
      "recommend_sharded: the recommend example over MPI with the item table sharded row-wise (run it with\n"
      "mpirun -np R). Each rank holds 1/R of the table's rows and trains on a slice of every global batch;\n"
      "rank 0 prints the table recommend prints."};
  rec::add_options(app, c);
  try {
    dist::Session mpi(&argc, &argv);
    const bool main_rank = dist::rank() == 0;
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return main_rank ? app.exit(e) : e.get_exit_code();  // every rank sees the same arguments
    }
    std::string bad = rec::check(c);
    if (bad.empty() && c.batch < dist::world_size())
      bad = fmt::format("--batch ({}) must be at least the number of processes ({})", c.batch, dist::world_size());
    if (!bad.empty()) {
      if (main_rank) fmt::print(stderr, "recommend_sharded: {}\n", bad);
      return 2;
    }
    ShardedReplicas replicas;
    return rec::run(c, replicas);
  } catch (const std::exception& e) {
    fmt::print(stderr, "recommend_sharded: {}\n", e.what());
    return 1;
  }
}
