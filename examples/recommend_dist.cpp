// examples/recommend_dist.cpp: the main example (recommend.cpp) trained data-parallel over MPI.
//
//   mpirun -np 2 build/release/examples/recommend_dist      (as root: add --allow-run-as-root)
//
// Every rank generates the same data, builds the same model and draws the same global batches;
// rank r of R trains on users [B r / R, B (r + 1) / R) of each batch of B, and
// hitch::dist::DataParallel averages the gradients before each optimizer step (dense for Adam,
// row-sparse all-gathers for SparseAdam; the tied table is one Parameter, reduced once). The
// global batch is the single-process batch, so rank 0 prints the table recommend prints, the
// same numbers within the printed precision (the time column aside): float sums in another
// order are the only difference. ctest example_recommend_dist compares the two tables.
// Left out on purpose: splitting the evaluation over the ranks (rank 0 evaluates alone).
#include <exception>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <hitch/dist/dist.h>

#include "recommender.h"

namespace {

namespace rec = hitch::examples::recommend;

// One rank of hitch::dist's world; a DataParallel per training run.
class MpiReplicas : public rec::Replicas {
 public:
  int rank() const override { return hitch::dist::rank(); }
  int world_size() const override { return hitch::dist::world_size(); }
  void attach(const hitch::nn::Module& model) override { dp_.emplace(model); }  // broadcasts rank 0's values
  void reduce_gradients() override { dp_->reduce_gradients(); }
  float sum(float local) override {
    hitch::Tensor t({1}, std::vector<float>{local});
    hitch::dist::all_reduce_sum(t);
    return t.item();
  }
  std::string describe(const rec::Config& c) const override {
    const rec::i64 world = world_size(), least = c.batch / world;
    const std::string each = c.batch % world ? fmt::format("{} or {}", least, least + 1) : std::to_string(least);
    return fmt::format("data-parallel: {} processes (hitch::dist::DataParallel), each {} of the {} users of every "
                       "step; rank 0 evaluates",
                       world, each, c.batch);
  }

 private:
  std::optional<hitch::dist::DataParallel> dp_;
};

}  // namespace

int main(int argc, char** argv) {
  rec::Config c;
  CLI::App app{
      "recommend_dist: the recommend example trained data-parallel over MPI (run it with mpirun -np R).\n"
      "Each rank trains on a slice of every global batch; rank 0 prints the table recommend prints."};
  rec::add_options(app, c);
  try {
    hitch::dist::Session mpi(&argc, &argv);
    const bool main_rank = hitch::dist::rank() == 0;
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return main_rank ? app.exit(e) : e.get_exit_code();  // every rank sees the same arguments
    }
    std::string bad = rec::check(c);
    if (bad.empty() && c.batch < hitch::dist::world_size())
      bad = fmt::format("--batch ({}) must be at least the number of processes ({})", c.batch,
                        hitch::dist::world_size());
    if (!bad.empty()) {
      if (main_rank) fmt::print(stderr, "recommend_dist: {}\n", bad);
      return 2;
    }
    MpiReplicas replicas;
    return rec::run(c, replicas);
  } catch (const std::exception& e) {
    fmt::print(stderr, "recommend_dist: {}\n", e.what());
    return 1;
  }
}
