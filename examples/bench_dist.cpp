// hitch/examples/bench_dist.cpp: data-parallel training speed of the C workload of
// bench_embedding (docs/performance.md): a tied Embedding + EmbeddingBag on one table of
// N = 2,000,000 rows of D = 64, a global batch of B = 4,096 single lookups and 4,096 bags of
// L = 40 (sum), loss = mean_b (<e_b, bag_b>)^2, sparse gradients, SGD or SparseAdam.
//
//   bench_dist --threads 1                 one process (no DataParallel: nothing to reduce)
//   bench_dist --threads 2                 one process on two threads
//   mpirun -np 2 bench_dist --threads 1    two processes, each B / 2 of every global batch
//   bench_dist --smoke                     tiny sizes, two steps (ctest bench_dist_smoke, -np 2)
//
// scripts/bench_dist.sh runs the three and prints the table of docs/distributed.md. Rank r of R
// trains on positions [B r / R, B (r + 1) / R) of every global batch (the same 4 batches,
// generated before timing, on every rank), so every configuration does the same global work.
// A step is zero_grad, forward, backward, DataParallel::reduce_gradients (R > 1), optimizer
// step; rank 0 reports steps/s over the timed loop (the ranks move in lock-step), the median
// of each phase, and the bytes its last reduce_gradients() sent (DataParallel::last_stats()).
// Left out on purpose: other workloads, several machines, statistics beyond the median.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <hitch/dist/dist.h>
#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct Size {
  std::int64_t n, d, b, l;  // table rows, row width, global batch, bag length
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Result {
  double steps_per_s = 0, step_ms = 0, compute_ms = 0, reduce_ms = 0, update_ms = 0;
  std::size_t sent_bytes = 0, sparse_bytes = 0, dense_bytes = 0;
  int steps = 0;
};

// One workload on this rank's slice; every rank calls it with the same arguments.
Result run_workload(const std::string& optimizer, const Size& s, int max_steps, double min_seconds) {
  const std::int64_t world = dist::world_size(), rank = dist::rank();
  const std::int64_t lo = s.b * rank / world, hi = s.b * (rank + 1) / world, mine = hi - lo;
  Generator gen(1);
  Parameter table("table", Tensor::uniform({s.n, s.d}, -0.05f, 0.05f, gen));
  // The same global batches on every rank (same seed); this rank keeps its slice.
  constexpr int kBatches = 4;
  std::vector<IndexTensor> singles, bags;
  for (int k = 0; k < kBatches; ++k) {
    std::vector<std::int64_t> x, y;
    for (std::int64_t i = 0; i < s.b; ++i) {
      const auto v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(s.n)));
      if (i >= lo && i < hi) x.push_back(v);
    }
    for (std::int64_t i = 0; i < s.b * s.l; ++i) {
      const auto v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(s.n)));
      if (i / s.l >= lo && i / s.l < hi) y.push_back(v);
    }
    singles.emplace_back(Shape{mine}, std::move(x));
    bags.emplace_back(Shape{mine, s.l}, std::move(y));
  }
  nn::Embedding emb(table, {.sparse = true});
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  std::optional<dist::DataParallel> dp;
  if (world > 1) dp.emplace(std::vector<Parameter>{table});
  std::unique_ptr<optim::Optimizer> opt;
  if (optimizer == "sgd") opt = std::make_unique<optim::SGD>(std::vector<Parameter>{table}, optim::SGDOptions{.lr = 0.01});
  else opt = std::make_unique<optim::SparseAdam>(std::vector<Parameter>{table}, optim::SparseAdamOptions{.lr = 0.001});

  std::vector<double> compute, reduce, update, total;
  auto step = [&](int k) {
    const auto i = static_cast<std::size_t>(k % kBatches);
    const auto t0 = std::chrono::steady_clock::now();
    opt->zero_grad();
    backward(mean(square(sum(mul(emb(singles[i]), bag(bags[i])), 1))));
    const auto t1 = std::chrono::steady_clock::now();
    if (dp) dp->reduce_gradients();
    const auto t2 = std::chrono::steady_clock::now();
    opt->step();
    const auto t3 = std::chrono::steady_clock::now();
    compute.push_back(std::chrono::duration<double>(t1 - t0).count());
    reduce.push_back(std::chrono::duration<double>(t2 - t1).count());
    update.push_back(std::chrono::duration<double>(t3 - t2).count());
    total.push_back(std::chrono::duration<double>(t3 - t0).count());
  };
  for (int k = 0; k < 2; ++k) step(k);  // warm-up: optimizer state, buffers, caches
  compute.clear(), reduce.clear(), update.clear(), total.clear();
  if (world > 1) dist::barrier();
  const auto start = std::chrono::steady_clock::now();
  int steps = 0;
  // Every rank decides to stop at the same step: rank 0's clock, broadcast.
  for (bool more = true; more; ) {
    step(steps++);
    Tensor go({1}, std::vector<float>{steps < max_steps && (steps < 5 || seconds_since(start) < min_seconds) ? 1.0f : 0.0f});
    if (world > 1) dist::broadcast(go, 0);
    more = go.item() != 0.0f;
  }
  const double elapsed = seconds_since(start);
  Result r;
  r.steps = steps;
  r.steps_per_s = steps / elapsed;
  r.step_ms = median(total) * 1e3;
  r.compute_ms = median(compute) * 1e3;
  r.reduce_ms = median(reduce) * 1e3;
  r.update_ms = median(update) * 1e3;
  if (dp) {
    const dist::ReduceStats& st = dp->last_stats();
    r.sparse_bytes = st.sparse_bytes;
    r.dense_bytes = st.dense_bytes;
    r.sent_bytes = st.sparse_bytes + st.dense_bytes;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_dist: the C workload (tied, sparse SGD and SparseAdam) data-parallel over MPI"};
  bool smoke = false;
  int threads = 1, max_steps = 200;
  double min_seconds = 3.0;
  std::vector<std::string> optimizers = {"sgd", "sparse_adam"};
  app.add_flag("--smoke", smoke, "tiny sizes, two timed steps (ctest)");
  app.add_option("--threads", threads, "hitch threads per process")->check(CLI::Range(1, 256));
  app.add_option("--optimizers", optimizers, "sgd and/or sparse_adam")
      ->check(CLI::IsMember({"sgd", "sparse_adam"}));
  app.add_option("--min-seconds", min_seconds, "time each workload at least this long (after 5 steps)");
  app.add_option("--max-steps", max_steps, "at most this many timed steps per workload")->check(CLI::Range(1, 1000000));
  try {
    dist::Session mpi(&argc, &argv);
    const bool main_rank = dist::rank() == 0;
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return main_rank ? app.exit(e) : e.get_exit_code();  // every rank sees the same arguments
    }
    if (smoke) max_steps = 2, min_seconds = 0.0;
    const Size s = smoke ? Size{5000, 16, 64, 6} : Size{2000000, 64, 4096, 40};
    set_num_threads(threads);
    const int world = dist::world_size();
    const std::string config = fmt::format("{}p x {}t", world, threads);
    if (main_rank)
      fmt::print("C workload: N {} D {} global batch {} (+ {} bags of {}), {} process{} x {} thread{}, {} per rank\n",
                 s.n, s.d, s.b, s.b, s.l, world, world == 1 ? "" : "es", threads, threads == 1 ? "" : "s",
                 s.b / world);
    for (const auto& o : optimizers) {
      const Result r = run_workload(o, s, max_steps, min_seconds);
      if (!main_rank) continue;
      fmt::print("{:<12} {:>7.2f} steps/s  step {:>7.1f} ms (median: forward+backward {:.1f}, reduce {:.1f}, "
                 "optimizer {:.1f})  sent {:.1f} MB/step  ({} steps)\n",
                 o, r.steps_per_s, r.step_ms, r.compute_ms, r.reduce_ms, r.update_ms,
                 static_cast<double>(r.sent_bytes) / 1e6, r.steps);
      // For scripts/bench_dist.sh.
      fmt::print("RESULT {} {} {} {} {} {} {} {} {}\n", config, o, r.steps_per_s, r.step_ms, r.compute_ms,
                 r.reduce_ms, r.update_ms, r.sparse_bytes, r.dense_bytes);
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_dist: {}\n", e.what());
    return 1;
  }
}
