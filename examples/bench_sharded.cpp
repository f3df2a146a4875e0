// hitch/examples/bench_sharded.cpp: memory and speed of a row-wise sharded table (dist/sharded.h)
// on the C workload of bench_embedding (docs/performance.md): a tied Embedding + EmbeddingBag on
// one table of N rows of D = 64, made with dist::shard_rows(..., dist::uniform_rows(...)) so that
// no rank ever holds the whole table; a global batch of B = 4,096 single lookups and 4,096 bags
// of L = 40 (sum), loss = mean_b (<e_b, bag_b>)^2, sparse gradients, SGD or SparseAdam.
//
//   bench_sharded --rows 2000000 --optimizer sparse_adam              one rank: the whole table
//   mpirun -np 2 bench_sharded --rows 2000000 --optimizer sparse_adam  two ranks, each N / 2 rows
//   bench_sharded --smoke                                              tiny sizes, two steps (ctest)
//
// One workload per process, so that the peak RSS (getrusage ru_maxrss, /proc/self/status VmHWM)
// is that workload's. scripts/bench_sharded.sh runs N = 2,000,000 and 8,000,000, both optimizers,
// at R = 1 and R = 2, and prints the table of docs/sharding.md.
//
// Rank r of R trains on positions [B r / R, B (r + 1) / R) of every global batch (the same 4
// batches, generated before the table, on every rank), so every R does the same global work. A
// step is: forward (both lookups, which fetch their rows from the owners, and the loss), backward,
// DataParallel::reduce_gradients (the lookups' gradient rows to their owners; also at R = 1,
// where it is a local merge) and zero_grad + optimizer step. Per rank it reports:
//  * memory: the shard's bytes (local_rows x D x 4) and the optimizer state's (the typed state's
//    buffers), their ratio to (whole table + whole state) / R, the resident growth (VmHWM minus
//    VmRSS before the table was made: the table, the state and every transient buffer of a step
//    at its highest) and the step's rows (below), and the peak RSS of the process;
//  * time: the median of each phase over the timed steps, and steps/s;
//  * bytes sent per step to other ranks (the largest of the 4 batches), counted from the batch
//    under the protocol of dist/sharded.h: forward, the distinct ids of each lookup this rank asks
//    other ranks for (8 bytes each) and the rows it returns to them (4 D bytes each); backward,
//    each lookup's distinct gradient rows it sends to their other owners (8 + 4 D bytes each).
//    The count with the rank's own rows included must equal DataParallel::last_stats()
//    .sharded_bytes at every step (the same MPI_Alltoallv also carries a rank's share to itself,
//    as a local copy): checked, the run fails otherwise.
// "The step's rows" (the allowance of issue 17's memory goal) are the row-sized buffers a step
// needs on this rank: the rows it fetches (distinct ids of each lookup), one gradient row per
// id occurrence (what the unsharded sparse backward makes) and the gradient rows its owned rows
// receive in the reduction, each 4 D bytes (the largest of the 4 batches).
// Left out on purpose: other workloads, several machines, statistics beyond the median.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <hitch/dist/dist.h>
#include <hitch/dist/sharded.h>
#include <hitch/hitch.h>

using namespace hitch;

namespace {

using i64 = std::int64_t;
using Clock = std::chrono::steady_clock;

struct Size {
  i64 n, d, b, l;  // table rows, row width, global batch, bag length
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"; the file gives kB), 0 if absent.
double status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) * 1024.0;
  return 0.0;
}

double max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024.0;  // Linux: kB
}

// The bytes of p's optimizer state (every buffer of the typed state, counts included).
template <class Opt>
double state_bytes(const Opt& opt, const Parameter& p) {
  const auto* s = opt.state(p);
  if (s == nullptr) return 0.0;
  double bytes = 0.0;
  std::remove_cvref_t<decltype(*s)>::for_each_field(*s, [&](const char*, const auto& field, auto, auto) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(field)>, std::vector<float>>)
      bytes += static_cast<double>(field.capacity() * sizeof(float));
    else
      bytes += sizeof(field);
  });
  return bytes;
}

// One global batch: the ids of every rank's slice (singles[r], bags[r]).
struct GlobalBatch {
  std::vector<std::vector<i64>> singles, bags;
};

std::vector<i64> distinct(std::vector<i64> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// Per rank, for one global batch, under the protocol of dist/sharded.h (each lookup sends its
// distinct ids, increasing, to their owners and gets their rows back; reduce_gradients() sends each
// lookup's coalesced gradient rows to their owners, 8 + 4 D bytes a row). "cross": to other ranks
// only (what crosses a wire); "all": with the rank's own share, which goes through the same
// MPI_Alltoallv as a local copy (what ReduceStats::sharded_bytes counts). step_rows: below.
struct Traffic {
  std::vector<double> forward_cross, backward_cross, backward_all, step_rows;
};

Traffic traffic(const GlobalBatch& g, i64 world, i64 d) {
  const auto R = static_cast<std::size_t>(world);
  Traffic t{std::vector<double>(R, 0.0), std::vector<double>(R, 0.0), std::vector<double>(R, 0.0),
            std::vector<double>(R, 0.0)};
  const double row = static_cast<double>(4 * d);
  for (const auto* lookup : {&g.singles, &g.bags}) {
    std::vector<i64> received(R, 0);  // gradient rows an owner receives from this lookup
    for (std::size_t q = 0; q < R; ++q) {
      const auto& ids = (*lookup)[q];
      const std::vector<i64> mine = distinct(ids);
      t.step_rows[q] += static_cast<double>(mine.size() + ids.size()) * row;  // fetched + one gradient row per id
      t.backward_all[q] += static_cast<double>(mine.size()) * (8.0 + row);
      for (i64 id : mine) {
        const auto owner = static_cast<std::size_t>(id % world);
        received[owner] += 1;
        if (owner == q) continue;
        t.forward_cross[q] += 8.0;          // the request, to the owner
        t.forward_cross[owner] += row;      // the reply, from the owner
        t.backward_cross[q] += 8.0 + row;   // the gradient row, to the owner
      }
    }
    for (std::size_t k = 0; k < R; ++k) t.step_rows[k] += static_cast<double>(received[k]) * row;
  }
  return t;
}

// The columns each rank reports (rank 0 prints them for every rank).
enum Col : std::size_t {
  kLocalRows, kShard, kState, kRssBefore, kHwm, kMaxRss, kGrowth, kStepRows, kForwardBytes, kBackwardBytes,
  kStepMs, kForwardMs, kBackwardMs, kReduceMs, kOptimizerMs, kStepsPerS, kCols
};

struct Options {
  Size size{2000000, 64, 4096, 40};
  std::string optimizer = "sparse_adam";
  int threads = 1, max_steps = 200;
  double min_seconds = 3.0;
};

int run(const Options& o) {
  const Size& s = o.size;
  const i64 world = dist::world_size(), rank = dist::rank();
  // The same global batches on every rank (same seed); this rank keeps its slice. Made before
  // the table, so the resident growth below is the table's, the state's and the steps'.
  constexpr int kBatches = 4;
  Generator gen(2);
  std::vector<GlobalBatch> global(kBatches);
  for (auto& g : global) {
    g.singles.resize(static_cast<std::size_t>(world));
    g.bags.resize(static_cast<std::size_t>(world));
    for (i64 q = 0; q < world; ++q) {
      const i64 lo = s.b * q / world, hi = s.b * (q + 1) / world;
      g.singles[static_cast<std::size_t>(q)].reserve(static_cast<std::size_t>(hi - lo));
      g.bags[static_cast<std::size_t>(q)].reserve(static_cast<std::size_t>((hi - lo) * s.l));
    }
    for (i64 q = 0, i = 0; i < s.b; ++i) {
      while (i >= s.b * (q + 1) / world) ++q;
      g.singles[static_cast<std::size_t>(q)].push_back(static_cast<i64>(gen.below(static_cast<std::uint64_t>(s.n))));
    }
    for (i64 q = 0, i = 0; i < s.b * s.l; ++i) {
      while (i / s.l >= s.b * (q + 1) / world) ++q;
      g.bags[static_cast<std::size_t>(q)].push_back(static_cast<i64>(gen.below(static_cast<std::uint64_t>(s.n))));
    }
  }
  const auto me = static_cast<std::size_t>(rank);
  std::vector<IndexTensor> singles, bags;
  std::vector<Traffic> traffics;
  for (const auto& g : global) {
    const i64 mine = static_cast<i64>(g.singles[me].size());
    singles.emplace_back(Shape{mine}, g.singles[me]);
    bags.emplace_back(Shape{mine, s.l}, g.bags[me]);
    traffics.push_back(traffic(g, world, s.d));
  }
  double forward_bytes = 0.0, backward_bytes = 0.0, step_rows = 0.0;  // the largest of the batches
  for (const Traffic& t : traffics) {
    forward_bytes = std::max(forward_bytes, t.forward_cross[me]);
    backward_bytes = std::max(backward_bytes, t.backward_cross[me]);
    step_rows = std::max(step_rows, t.step_rows[me]);
  }
  global.clear();
  global.shrink_to_fit();

  if (world > 1) dist::barrier();
  const double rss_before = status_bytes("VmRSS");
  Parameter table = dist::shard_rows("table", s.n, s.d, dist::uniform_rows(-0.05f, 0.05f, /*seed=*/1));
  const dist::ShardInfo info = *dist::sharding(table);
  nn::Embedding emb(table, {.sparse = true});
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  dist::DataParallel dp(std::vector<Parameter>{table});  // also at R = 1: the owner merges the rows
  std::unique_ptr<optim::SGD> sgd;
  std::unique_ptr<optim::SparseAdam> adam;
  optim::Optimizer* opt = nullptr;
  if (o.optimizer == "sgd") opt = (sgd = std::make_unique<optim::SGD>(std::vector<Parameter>{table}, optim::SGDOptions{.lr = 0.01})).get();
  else opt = (adam = std::make_unique<optim::SparseAdam>(std::vector<Parameter>{table}, optim::SparseAdamOptions{.lr = 0.001})).get();

  std::vector<double> forward, backward_ms, reduce, update, total;
  // The count above checked against the library's own: sharded_bytes of every step.
  std::string mismatch;
  auto step = [&](int k) {
    const auto i = static_cast<std::size_t>(k % kBatches);
    const auto t0 = Clock::now();
    Tensor loss = mean(square(sum(mul(emb(singles[i]), bag(bags[i])), 1)));
    const auto t1 = Clock::now();
    backward(loss);
    const auto t2 = Clock::now();
    dp.reduce_gradients();
    const auto t3 = Clock::now();
    opt->step();
    opt->zero_grad();
    const auto t4 = Clock::now();
    const double counted = traffics[i].backward_all[me], sent = static_cast<double>(dp.last_stats().sharded_bytes);
    if (counted != sent && mismatch.empty())
      mismatch = fmt::format("rank {}: reduce_gradients() sent {} bytes, the count from the batch says {}", rank, sent, counted);
    forward.push_back(ms_between(t0, t1));
    backward_ms.push_back(ms_between(t1, t2));
    reduce.push_back(ms_between(t2, t3));
    update.push_back(ms_between(t3, t4));
    total.push_back(ms_between(t0, t4));
  };
  for (int k = 0; k < 2; ++k) step(k);  // warm-up: optimizer state, buffers, caches
  forward.clear(), backward_ms.clear(), reduce.clear(), update.clear(), total.clear();
  if (world > 1) dist::barrier();
  const auto start = Clock::now();
  int steps = 0;
  // Every rank stops at the same step: rank 0's clock, broadcast.
  for (bool more = true; more;) {
    step(steps++);
    const double elapsed = ms_between(start, Clock::now()) / 1e3;
    Tensor go({1}, std::vector<float>{steps < o.max_steps && (steps < 5 || elapsed < o.min_seconds) ? 1.0f : 0.0f});
    if (world > 1) dist::broadcast(go, 0);
    more = go.item() != 0.0f;
  }
  const double seconds = ms_between(start, Clock::now()) / 1e3;
  dist::agree(mismatch.empty() ? std::nullopt : std::optional<std::string>(mismatch));

  // Every rank's columns, gathered (a sum of rows that are zero but for their own rank's).
  const double state = sgd ? state_bytes(*sgd, table) : state_bytes(*adam, table);
  const double hwm = status_bytes("VmHWM");
  std::vector<float> cols(static_cast<std::size_t>(world) * kCols, 0.0f);
  const auto put = [&](Col c, double v) { cols[me * kCols + c] = static_cast<float>(v); };
  constexpr double MB = 1e6;
  put(kLocalRows, static_cast<double>(info.local_rows));
  put(kShard, static_cast<double>(info.local_rows * info.dim * 4) / MB);
  put(kState, state / MB);
  put(kRssBefore, rss_before / MB);
  put(kHwm, hwm / MB);
  put(kMaxRss, max_rss_bytes() / MB);
  put(kGrowth, (hwm - rss_before) / MB);
  put(kStepRows, step_rows / MB);
  put(kForwardBytes, forward_bytes / MB);
  put(kBackwardBytes, backward_bytes / MB);
  put(kStepMs, median(total));
  put(kForwardMs, median(forward));
  put(kBackwardMs, median(backward_ms));
  put(kReduceMs, median(reduce));
  put(kOptimizerMs, median(update));
  put(kStepsPerS, steps / seconds);
  Tensor all({world, static_cast<i64>(kCols)}, std::move(cols));
  dist::all_reduce_sum(all);
  if (rank != 0) return 0;

  const std::vector<float> v = all.to_vector();
  const auto at = [&](i64 q, Col c) { return static_cast<double>(v[static_cast<std::size_t>(q) * kCols + c]); };
  double whole = 0.0;  // table + state over all ranks, MB
  for (i64 q = 0; q < world; ++q) whole += at(q, kShard) + at(q, kState);
  fmt::print("N {} D {} global batch {} (+ {} bags of {}), {}, {} rank{}, {} step{} timed; whole table + state {:.1f} MB\n",
             s.n, s.d, s.b, s.b, s.l, o.optimizer, world, world == 1 ? "" : "s", steps, steps == 1 ? "" : "s", whole);
  for (i64 q = 0; q < world; ++q) {
    const double share = whole / static_cast<double>(world);
    const double held = at(q, kShard) + at(q, kState);
    const double bound = 1.1 * share + at(q, kStepRows);
    fmt::print("rank {}: {} rows, shard {:.1f} MB + state {:.1f} MB = {:.3f} x (whole / R); resident growth {:.1f} MB "
               "(allowed 1.1 x whole / R + step rows {:.1f} MB = {:.1f} MB: {}); peak RSS {:.1f} MB (VmHWM {:.1f})\n",
               q, static_cast<i64>(at(q, kLocalRows)), at(q, kShard), at(q, kState), held / share, at(q, kGrowth),
               at(q, kStepRows), bound, at(q, kGrowth) <= bound ? "ok" : "OVER", at(q, kMaxRss), at(q, kHwm));
    fmt::print("rank {}: step {:.1f} ms (median: forward {:.1f}, backward {:.1f}, reduce {:.1f}, optimizer {:.1f}), "
               "{:.2f} steps/s; sends {:.2f} MB forward + {:.2f} MB backward per step to other ranks\n",
               q, at(q, kStepMs), at(q, kForwardMs), at(q, kBackwardMs), at(q, kReduceMs), at(q, kOptimizerMs),
               at(q, kStepsPerS), at(q, kForwardBytes), at(q, kBackwardBytes));
    // For scripts/bench_sharded.sh: RESULT N optimizer R rank, then the columns in Col order.
    fmt::print("RESULT {} {} {} {} {:.4f}", s.n, o.optimizer, world, q, whole);
    for (std::size_t c = 0; c < kCols; ++c) fmt::print(" {:.4f}", at(q, static_cast<Col>(c)));
    fmt::print("\n");
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_sharded: memory and speed of a row-wise sharded tied table (C workload) over MPI"};
  Options o;
  bool smoke = false;
  app.add_flag("--smoke", smoke, "tiny sizes, two timed steps (ctest)");
  app.add_option("--rows", o.size.n, "table rows N")->check(CLI::Range(i64{1}, i64{1} << 40));
  app.add_option("--dim", o.size.d, "row width D")->check(CLI::Range(i64{1}, i64{65536}));
  app.add_option("--optimizer", o.optimizer, "sgd or sparse_adam")->check(CLI::IsMember({"sgd", "sparse_adam"}));
  app.add_option("--threads", o.threads, "hitch threads per process")->check(CLI::Range(1, 256));
  app.add_option("--min-seconds", o.min_seconds, "time at least this long (after 5 steps)");
  app.add_option("--max-steps", o.max_steps, "at most this many timed steps")->check(CLI::Range(1, 1000000));
  try {
    dist::Session mpi(&argc, &argv);
    const bool main_rank = dist::rank() == 0;
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return main_rank ? app.exit(e) : e.get_exit_code();  // every rank sees the same arguments
    }
    if (smoke) o.size = {5000, 16, 64, 6}, o.max_steps = 2, o.min_seconds = 0.0;
    if (o.size.b < dist::world_size()) {
      if (main_rank) fmt::print(stderr, "bench_sharded: the batch ({}) is smaller than the number of ranks\n", o.size.b);
      return 2;
    }
    set_num_threads(o.threads);
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_sharded: {}\n", e.what());
    return 1;
  }
}
