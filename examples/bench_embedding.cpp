// hitch/examples/bench_embedding.cpp: tied Embedding + EmbeddingBag training speed, hitch next to
// PyTorch (scripts/bench_pytorch.py, the same workloads) in one run, at 1 and 2 threads.
//
// Workloads (docs/performance.md): uniform random indices, and for every B and C training row a
// "-zipf" twin whose ids follow Zipf(1.05) (zipf_batches below: the same ids on both sides, passed
// to the PyTorch script as a file); batches generated before timing.
// "tied": an Embedding on B single indices and an EmbeddingBag on B bags of L indices from one
// table, loss = mean_b (<e_b, bag_b>)^2; "bag": the bag alone against a fixed tensor u,
// loss = mean_b (<u_b, bag_b>)^2. A step is zero_grad, forward, backward, optimizer step.
// Prints the median time per step, GB/s of rows touched (lookups x D x 4 bytes / time), the
// peak resident memory growth relative to table + optimizer state, a STREAM-style bandwidth
// probe, and the PyTorch/hitch ratio table. Each measurement runs in a forked child, so the
// memory numbers and the thread pools of different runs do not mix.
// The ceiling column (issue 18): per training row, the bytes a step must move at least
// (min_bytes, from the distinct rows of its actual batches) over the median step time, as a
// fraction of ceiling_probe's GB/s: the same least traffic as a bare loop on a table of the same
// size at the same thread count.
//
//   bench_embedding                      full run (needs /usr/bin/python3 with torch for the ratios)
//   bench_embedding --smoke --no-torch   tiny sizes, two steps each: what CI runs
//   bench_embedding --busy               the full run, then again beside a busy-loop neighbour
// Left out on purpose: GPUs, other index distributions, statistics beyond the median.
#include <malloc.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <hitch/hitch.h>

#include "bench_probes.h"

using namespace hitch;

namespace {

using bench::kBatches;
using bench::median;
using bench::Size;
using bench::bandwidth_probe;
using bench::ceiling_probe;
using bench::min_bytes;
struct Workload {
  std::string name;  // shared with scripts/bench_pytorch.py
  char size;         // 'A', 'B', 'C'
  bool forward_only;
  BagMode mode;
  bool tied, sparse;
  std::string optimizer;  // "sgd", "sparse_adam", "adam"
  double target = 0.0;    // PyTorch/hitch ratio asked for (0: none)
  double target_2t = 0.0;  // at 2 threads, when it differs
  bool zipf = false;       // ids from Zipf(kZipfAlpha) instead of uniform
  bool in_backward = false;  // the optimizer applied in backward (optim::InBackward): no zero_grad, no step()
};

constexpr double kZipfAlpha = 1.05;

std::vector<Workload> workloads() {
  std::vector<Workload> w = {
      {"A/adam-dense-tied", 'A', false, BagMode::Mean, true, false, "adam", 10},
      {"B/fwd-sum", 'B', true, BagMode::Sum, false, false, "", 1.0},
      {"B/fwd-mean", 'B', true, BagMode::Mean, false, false, ""},
      {"B/fwd-max", 'B', true, BagMode::Max, false, false, "", 5},
  };
  for (const char* kind : {"tied", "bag"}) {
    const bool tied = std::string(kind) == "tied";
    w.push_back({fmt::format("B/sgd-sparse-{}", kind), 'B', false, BagMode::Sum, tied, true, "sgd", 4});
    w.push_back({fmt::format("B/sparseadam-{}", kind), 'B', false, BagMode::Sum, tied, true, "sparse_adam", 5});
    w.push_back({fmt::format("B/adam-dense-{}", kind), 'B', false, BagMode::Sum, tied, false, "adam", 4});
  }
  w.push_back({"C/fwd-sum", 'C', true, BagMode::Sum, false, false, ""});
  w.push_back({"C/sgd-sparse-tied", 'C', false, BagMode::Sum, true, true, "sgd", 3, 5});
  w.push_back({"C/sparseadam-tied", 'C', false, BagMode::Sum, true, true, "sparse_adam", 5});
  // Sparse SGD with the optimizer applied in backward (issue 18: goal >= 5x at 1 and 2 threads);
  // PyTorch runs its ordinary loop for these rows.
  w.push_back({"B/sgd-sparse-inbwd-tied", 'B', false, BagMode::Sum, true, true, "sgd", 5, 0, false, true});
  w.push_back({"B/sgd-sparse-inbwd-bag", 'B', false, BagMode::Sum, false, true, "sgd", 5, 0, false, true});
  w.push_back({"C/sgd-sparse-inbwd-tied", 'C', false, BagMode::Sum, true, true, "sgd", 5, 0, false, true});
  // Every B and C training row again on skewed ids (issue 18): "B-zipf/sgd-sparse-tied", ...
  // with the uniform row's targets.
  std::vector<Workload> skewed;
  for (const Workload& u : w)
    if ((u.size == 'B' || u.size == 'C') && !u.forward_only) {
      Workload z = u;
      z.name = fmt::format("{}-zipf/{}", u.size, u.name.substr(2));
      z.zipf = true;
      skewed.push_back(z);
    }
  w.insert(w.end(), skewed.begin(), skewed.end());
  // The tied language-model step (issue 13): lookup of b tokens in W [V, D], the output
  // projection through the same W (nn::Linear(W)), cross_entropy over V classes, Adam.
  w.push_back({"LM/adam-tied", 'L', false, BagMode::Sum, true, false, "adam", 1.0});
  return w;
}

Size size_of(char s, bool smoke) {
  if (s == 'L') return smoke ? Size{200, 16, 32, 1} : Size{10000, 128, 512, 1};  // V, D, tokens
  if (smoke) return s == 'A' ? Size{100, 8, 4, 3} : s == 'B' ? Size{1000, 16, 32, 5} : Size{5000, 16, 64, 6};
  return s == 'A' ? Size{1000, 32, 64, 8} : s == 'B' ? Size{100000, 64, 1024, 20} : Size{2000000, 64, 4096, 40};
}

struct Measured {
  double median_s = 0.0;
  double mem_ratio = 0.0;  // peak RSS growth / (table + state); 0 for forward-only
  double distinct_rows = 0.0;  // table rows a step looks up, repeats counted once; mean over the batches
};

double status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size()));
  return 0.0;
}

// The batches of a Zipf workload: kBatches x (b single ids, then b x l bag ids), ids in [0, n)
// with P(rank k) proportional to 1 / k^alpha (k = 1..n), by inverse CDF on Generator(seed)'s
// uniforms; rank k is id perm[k - 1] for a seeded random permutation, so the hot rows are
// spread over the table as hashed ids are (not packed at its start). Deterministic: the same
// ids in the hitch child that trains and in the file the PyTorch script reads.
std::vector<std::int64_t> zipf_batches(const Size& s, double alpha, std::uint64_t seed) {
  const auto n = static_cast<std::size_t>(s.n);
  std::vector<double> cdf(n);
  double total = 0.0;
  for (std::size_t k = 0; k < n; ++k) cdf[k] = total += std::pow(static_cast<double>(k + 1), -alpha);
  Generator gen(seed);
  std::vector<std::int64_t> perm(n);
  for (std::size_t k = 0; k < n; ++k) perm[k] = static_cast<std::int64_t>(k);
  for (std::size_t k = n; k > 1; --k) std::swap(perm[k - 1], perm[gen.below(k)]);  // Fisher-Yates
  const auto per_batch = static_cast<std::size_t>(s.b + s.b * s.l);
  std::vector<std::int64_t> ids(kBatches * per_batch);
  for (auto& v : ids) {
    const double u = gen.uniform() * total;
    const auto k = static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    v = perm[std::min(k, n - 1)];
  }
  return ids;
}

Measured run_workload(const Workload& w, const Size& s, int max_steps, double min_seconds) {
  const double base_kb = status_kb("VmRSS:");
  Generator gen(1);
  Parameter table("table", Tensor::uniform({s.n, s.d}, -0.05f, 0.05f, gen));
  // The peak is taken over training only: building the table above briefly holds two copies.
  std::ofstream("/proc/self/clear_refs") << "5";  // reset the peak-RSS counter
  std::vector<IndexTensor> singles, bags;
  const std::vector<std::int64_t> skewed = w.zipf ? zipf_batches(s, kZipfAlpha, 1) : std::vector<std::int64_t>{};
  for (int k = 0; k < kBatches; ++k) {
    std::vector<std::int64_t> x(static_cast<std::size_t>(s.b)), y(static_cast<std::size_t>(s.b * s.l));
    if (w.zipf) {
      const auto* from = skewed.data() + static_cast<std::size_t>(k) * (x.size() + y.size());
      std::copy_n(from, x.size(), x.begin());
      std::copy_n(from + x.size(), y.size(), y.begin());
    } else {
      for (auto& v : x) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(s.n)));
      for (auto& v : y) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(s.n)));
    }
    singles.emplace_back(Shape{s.b}, std::move(x));
    bags.emplace_back(Shape{s.b, s.l}, std::move(y));
  }
  // U, the rows a step reads and updates: the bag ids, with the single ids when tied (LM: only
  // the single ids are looked up).
  double distinct_rows = 0.0;
  for (int k = 0; k < kBatches; ++k) {
    std::vector<std::int64_t> rows;
    if (w.size != 'L') {
      const auto y = bags[static_cast<std::size_t>(k)].values();
      rows.assign(y.begin(), y.end());
    }
    if (w.tied || w.size == 'L') {
      const auto x = singles[static_cast<std::size_t>(k)].values();
      rows.insert(rows.end(), x.begin(), x.end());
    }
    std::sort(rows.begin(), rows.end());
    distinct_rows += static_cast<double>(std::unique(rows.begin(), rows.end()) - rows.begin()) / kBatches;
  }
  const Tensor u = Tensor::uniform({s.b, s.d}, -1.0f, 1.0f, gen);
  nn::Embedding emb(table, {.sparse = w.sparse});
  const nn::Linear head(table);  // LM: logits = e W^T, the tied output projection
  nn::EmbeddingBag bag(table, {.mode = w.mode, .sparse = w.sparse});
  std::unique_ptr<optim::Optimizer> opt;
  if (w.optimizer == "sgd") opt = std::make_unique<optim::SGD>(std::vector<Parameter>{table}, optim::SGDOptions{.lr = 0.01});
  if (w.optimizer == "sparse_adam")
    opt = std::make_unique<optim::SparseAdam>(std::vector<Parameter>{table}, optim::SparseAdamOptions{.lr = 0.001});
  if (w.optimizer == "adam") opt = std::make_unique<optim::Adam>(std::vector<Parameter>{table}, optim::AdamOptions{.lr = 0.001});
  std::unique_ptr<optim::InBackward> fused;
  if (w.in_backward) fused = std::make_unique<optim::InBackward>(*opt);

  float keep = 0.0f;  // so the forward-only loop is not optimised away
  auto step = [&](int k) {
    const auto i = static_cast<std::size_t>(k % kBatches);
    if (w.forward_only) {
      NoGradGuard no_grad;
      keep += bag(bags[i]).data()[0];
      return;
    }
    // In place, as PyTorch 1.13's default zero_grad() that scripts/bench_pytorch.py runs: the same
    // workload on both sides (hitch's own default, set_to_none = true, drops the gradient).
    if (!fused) opt->zero_grad(false);  // in backward: backward() is the whole step
    if (w.size == 'L') {  // next-token targets: the first column of the bag batch
      const IndexTensor targets(Shape{s.b}, std::vector<std::int64_t>(bags[i].values().begin(), bags[i].values().begin() + s.b));
      backward(cross_entropy(head(emb(singles[i])), targets));
      opt->step();
      return;
    }
    const Tensor b = bag(bags[i]);
    const Tensor e = w.tied ? emb(singles[i]) : u;
    backward(mean(square(sum(mul(e, b), 1))));
    if (!fused) opt->step();
  };
  for (int k = 0; k < 2; ++k) step(k);  // warm-up: optimizer state, buffers, caches
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  for (int k = 0; k < max_steps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    step(k);
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (k >= 4 && std::chrono::duration<double>(t1 - start).count() > min_seconds) break;
  }
  if (keep == 12345.0f) std::puts("");
  Measured m{median(times), 0.0, distinct_rows};
  if (!w.forward_only) {
    const double table_bytes = static_cast<double>(s.n * s.d) * 4.0;
    const double state_bytes = w.optimizer == "sgd" ? 0.0 : 2.0 * table_bytes;
    m.mem_ratio = (status_kb("VmHWM:") - base_kb) * 1024.0 / (table_bytes + state_bytes);
  }
  return m;
}

// Runs fn in a forked child and returns the doubles it reports (fn's vector), or throws.
template <class Fn>
std::vector<double> in_child(Fn&& fn) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    try {
      for (double v : fn()) out += fmt::format("{} ", v);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_embedding: %s\n", e.what());
      _exit(1);
    }
    if (write(fds[1], out.data(), out.size()) < 0) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[256];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("a benchmark child failed");
  std::vector<double> values;
  std::istringstream in(text);
  for (double v; in >> v;) values.push_back(v);
  return values;
}

// name -> median seconds, from "RESULT <name> <seconds>" lines of the PyTorch script.
std::map<std::string, double> run_torch(const std::string& python, const std::string& script, int threads,
                                        bool smoke, const std::vector<std::string>& names, const std::string& ids_dir) {
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ",") + n;
  const std::string cmd = fmt::format("{} {} --threads {} --workloads {}{}{}", python, script, threads, list,
                                      smoke ? " --smoke" : "", ids_dir.empty() ? "" : " --ids-dir " + ids_dir);
  std::map<std::string, double> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char line[512];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    std::istringstream in(line);
    std::string tag, name;
    double seconds = 0.0;
    if (in >> tag >> name >> seconds && tag == "RESULT") out[name] = seconds;
  }
  if (pclose(p) != 0) std::fprintf(stderr, "bench_embedding: the PyTorch script failed: %s\n", cmd.c_str());
  return out;
}

double lookups(const Workload& w, const Size& s) {
  if (w.size == 'L') return static_cast<double>(s.b);
  return static_cast<double>(s.b * s.l + (w.tied ? s.b : 0));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hitch vs PyTorch: tied Embedding + EmbeddingBag training speed"};
  bool smoke = false, no_torch = false, no_probe = false, malloc_tuned = false, busy = false;
  std::vector<int> thread_counts = {1, 2};
  std::string only, python = "/usr/bin/python3", script = "scripts/bench_pytorch.py";
  double min_seconds = 1.0;
  int max_steps = 200;
  app.add_flag("--smoke", smoke, "tiny sizes, two timed steps each (CI)");
  app.add_flag("--no-torch", no_torch, "skip the PyTorch runs");
  app.add_flag("--no-probe", no_probe, "skip the bandwidth probe and the ceiling probe");
  app.add_flag("--busy", busy, "run everything twice: on the machine as it is, then beside a busy-loop process "
                               "pinned to the last CPU (started and stopped here)");
  app.add_flag("--malloc-tuned", malloc_tuned,
               "both programs keep freed memory (glibc mmap threshold 32 MB, trim threshold 512 MB)");
  app.add_option("--threads", thread_counts, "thread counts to run")->expected(1, 8);
  app.add_option("--only", only, "run only workloads whose name contains this");
  app.add_option("--python", python, "interpreter with torch");
  app.add_option("--script", script, "path of scripts/bench_pytorch.py");
  app.add_option("--min-seconds", min_seconds, "time each workload at least this long (after 5 steps)");
  app.add_option("--max-steps", max_steps, "at most this many timed steps per workload");
  CLI11_PARSE(app, argc, argv);
  if (malloc_tuned) {
    // Same-size tensors of 128 KB .. 32 MB are otherwise a fresh mmap (and page faults) every
    // step. Applied to this process (mallopt) and to the PyTorch one (environment) alike.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    setenv("MALLOC_MMAP_THRESHOLD_", "33554432", 1);
    setenv("MALLOC_TRIM_THRESHOLD_", "536870912", 1);
  }
  if (smoke) {
    max_steps = 2;
    min_seconds = 0.0;
  }
  std::vector<Workload> list;
  for (const auto& w : workloads())
    if (only.empty() || w.name.find(only) != std::string::npos) list.push_back(w);
  std::vector<std::string> names;
  for (const auto& w : list) names.push_back(w.name);
  // The Zipf workloads' ids, for the PyTorch script: <dir>/<B or C>-zipf.ids, int64 little-endian,
  // zipf_batches' order (the same ids the hitch runs train on).
  std::string ids_dir;
  if (!no_torch) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bench_embedding.XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    ids_dir = tmpl;
    for (const char size : {'B', 'C'}) {
      const bool wanted = std::any_of(list.begin(), list.end(), [&](const Workload& w) { return w.zipf && w.size == size; });
      if (!wanted) continue;
      const std::vector<std::int64_t> ids = zipf_batches(size_of(size, smoke), kZipfAlpha, 1);
      std::ofstream(fmt::format("{}/{}-zipf.ids", ids_dir, size), std::ios::binary)
          .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(std::int64_t)));
    }
  }

  // One whole run: every workload at every thread count, the ratio table and the checks.
  auto run_all = [&] {
    // results[threads][name]
    std::map<int, std::map<std::string, Measured>> hitch_res;
    std::map<int, std::map<std::string, double>> torch_res;
    std::map<int, std::pair<double, double>> bw;
    // The ceiling column: ceiling[threads][name] = {achieved GB/s, probe GB/s}; the probe's
    // result per (size, optimizer) at the current thread count, run once when first needed.
    std::map<int, std::map<std::string, std::pair<double, double>>> ceiling;
    for (const int t : thread_counts) {
      fmt::print("== {} thread{} ==\n", t, t == 1 ? "" : "s");
      if (!smoke && !no_probe) {
        const auto v = in_child([&] {
          set_num_threads(t);
          const auto [r, tr] = bandwidth_probe();
          return std::vector<double>{r, tr};
        });
        bw[t] = {v.at(0), v.at(1)};
        fmt::print("bandwidth probe: read {:.1f} GB/s, triad {:.1f} GB/s\n", v.at(0), v.at(1));
      }
      std::map<std::pair<char, std::string>, std::vector<double>> probes;
      fmt::print("{:<20} {:>10} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} {:>6}\n", "workload", "hitch ms", "GB/s", "mem",
                 "U rows", "min MB", "GB/s", "probe", "ceil");
      for (const auto& w : list) {
        const Size s = size_of(w.size, smoke);
        const auto v = in_child([&] {
          set_num_threads(t);
          const Measured m = run_workload(w, s, max_steps, min_seconds);
          return std::vector<double>{m.median_s, m.mem_ratio, m.distinct_rows};
        });
        hitch_res[t][w.name] = {v.at(0), v.at(1), v.at(2)};
        const double gbs = lookups(w, s) * static_cast<double>(s.d) * 4.0 / v.at(0) / 1e9;
        std::string ceil_cols = fmt::format(" | {:>8} {:>8} {:>8} {:>8} {:>6}", "-", "-", "-", "-", "-");
        if (!w.forward_only && w.size != 'L') {
          const double bytes = min_bytes(w.optimizer, s, v.at(2));
          const double achieved = bytes / v.at(0) / 1e9;
          std::string probe_col = "-", frac_col = "-";
          if (!no_probe) {
            const auto key = std::make_pair(w.size, w.optimizer);
            if (!probes.count(key))
              probes[key] = in_child([&] {
                set_num_threads(t);
                return ceiling_probe(s, w.optimizer, smoke ? 2 : 12);
              });
            const double probe = probes[key].at(0);
            ceiling[t][w.name] = {achieved, probe};
            probe_col = fmt::format("{:.2f}", probe);
            frac_col = fmt::format("{:.0f}%", 100.0 * achieved / probe);
          }
          ceil_cols = fmt::format(" | {:>8.0f} {:>8.2f} {:>8.2f} {:>8} {:>6}", v.at(2), bytes / 1e6, achieved, probe_col, frac_col);
        }
        fmt::print("{:<20} {:>10.3f} {:>8.2f} {:>6}{}\n", w.name, v.at(0) * 1e3, gbs,
                   w.forward_only ? std::string("-") : fmt::format("{:.2f}", v.at(1)), ceil_cols);
        std::fflush(stdout);
      }
      for (const auto& [key, p] : probes)
        fmt::print("ceiling probe {} {}: {:.2f} GB/s over {:.0f} distinct random rows per batch\n", key.first, key.second,
                   p.at(0), p.at(1));
      if (!no_torch) torch_res[t] = run_torch(python, script, t, smoke, names, ids_dir);
    }

    if (!no_torch) {
      fmt::print("\n== PyTorch / hitch (median time per step; ratio > 1: hitch faster) ==\n");
      fmt::print("{:<20}", "workload");
      for (const int t : thread_counts) fmt::print(" | {:>9} {:>9} {:>6}", fmt::format("torch {}t", t), fmt::format("hitch {}t", t), "ratio");
      fmt::print(" | target\n");
      for (const auto& w : list) {
        fmt::print("{:<20}", w.name);
        std::string verdict;
        for (const int t : thread_counts) {
          const double h = hitch_res[t][w.name].median_s;
          const auto it = torch_res[t].find(w.name);
          if (it == torch_res[t].end()) {
            fmt::print(" | {:>9} {:>9.3f} {:>6}", "n/a", h * 1e3, "-");
            continue;
          }
          const double ratio = it->second / h;
          fmt::print(" | {:>9.3f} {:>9.3f} {:>6.2f}", it->second * 1e3, h * 1e3, ratio);
          const double target = t >= 2 && w.target_2t > 0 ? w.target_2t : w.target;
          if (target > 0) verdict += fmt::format("{}{}t >= {}: {}", verdict.empty() ? "" : ", ", t, target, ratio >= target ? "met" : "MISSED");
        }
        fmt::print(" | {}\n", verdict.empty() ? "-" : verdict);
      }
    }
    fmt::print("\n== checks ==\n");
    for (const int t : thread_counts)
      for (const char* size : {"B", "B-zipf"})
        for (const char* opt : {"sgd-sparse", "sparseadam", "adam-dense", "sgd-sparse-inbwd"}) {
          const auto tied = hitch_res[t].find(fmt::format("{}/{}-tied", size, opt));
          const auto bag = hitch_res[t].find(fmt::format("{}/{}-bag", size, opt));
          if (tied == hitch_res[t].end() || bag == hitch_res[t].end()) continue;
          const double r = tied->second.median_s / bag->second.median_s;
          fmt::print("{}t {}/{}: tied / bag-only = {:.2f} (target <= 1.1: {})\n", t, size, opt, r,
                     r <= 1.1 ? "met" : "MISSED");
        }
    if (hitch_res.count(1) && hitch_res.count(2))
      for (const auto& w : list) {
        const double r = hitch_res[2][w.name].median_s / hitch_res[1][w.name].median_s;
        if (r > 1.0) fmt::print("2 threads slower than 1 on {}: {:.2f}x the 1-thread time\n", w.name, r);
      }
    for (const auto& [t, probe] : bw) {
      const auto c = hitch_res[t].find("C/fwd-sum");
      if (c == hitch_res[t].end()) continue;
      const Workload w{"C/fwd-sum", 'C', true, BagMode::Sum, false, false, ""};
      const Size s = size_of('C', smoke);
      const double gbs = lookups(w, s) * static_cast<double>(s.d) * 4.0 / c->second.median_s / 1e9;
      fmt::print("{}t C forward: {:.2f} GB/s = {:.0f}% of the read probe ({:.1f} GB/s), {:.0f}% of triad ({:.1f} GB/s)\n",
                 t, gbs, 100.0 * gbs / probe.first, probe.first, 100.0 * gbs / probe.second, probe.second);
    }
    for (const auto& [t, rows] : ceiling)
      for (const auto& w : list) {
        const auto it = rows.find(w.name);
        if (it == rows.end() || (w.size != 'B' && w.size != 'C')) continue;
        const double frac = it->second.first / it->second.second;
        fmt::print("{}t {}: ceiling {:.0f}% ({:.2f} of the probe's {:.2f} GB/s) (target >= 50 %: {})\n", t, w.name,
                   100.0 * frac, it->second.first, it->second.second, frac >= 0.5 ? "met" : "MISSED");
      }
    for (const auto& [t, res] : hitch_res)
      for (const auto& [name, m] : res)
        if (name.rfind("C", 0) == 0 && m.mem_ratio > 0)
          fmt::print("{}t {}: peak memory growth = {:.3f} x (table + optimizer state) (target <= 1.1: {})\n", t, name,
                     m.mem_ratio, m.mem_ratio <= 1.1 ? "met" : "MISSED");
  };
  run_all();
  if (busy) {
    // The same again beside a neighbour: a child process that spins, pinned to the last CPU,
    // started now and killed at the end (issue 18: "a busy-loop process pinned to the other core").
    const int cpus = static_cast<int>(std::thread::hardware_concurrency());
    const pid_t neighbour = fork();
    if (neighbour == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(static_cast<std::size_t>(std::max(0, cpus - 1)), &set);
      sched_setaffinity(0, sizeof set, &set);
      std::atomic<unsigned long> spin{0};
      for (;;) spin.fetch_add(1, std::memory_order_relaxed);
    }
    fmt::print("\n==== BUSY: the same runs beside a busy-loop process pinned to CPU {} (pid {}) ====\n",
               std::max(0, cpus - 1), neighbour);
    std::fflush(stdout);
    run_all();
    kill(neighbour, SIGKILL);
    waitpid(neighbour, nullptr, 0);
  }
  if (!ids_dir.empty()) std::filesystem::remove_all(ids_dir);
  return 0;
}
