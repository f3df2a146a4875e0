// tests/checkpoint/ckpt_tool.cpp: the checkpoint tests that need more than one process, run by
// ctest (tests/CMakeLists.txt). Each mode prints what it did and exits 0 on success, 1 on
// failure (77: skipped).
//
//   kill <dir>                 save a good checkpoint, then SIGKILL a child process while it
//                              writes a 200 MB checkpoint to the same path; the old file must
//                              still load, and the child's temporary file must not be mistaken for it
//   resume <dir> <optimizer>   train n steps in one process; train k, save model + optimizer +
//                              generator, load in a fresh process and train to n: the final
//                              Parameters must be bitwise equal (optimizer: adam, sparse_adam, ...)
//   numpy <dir> <python> <script>  write a checkpoint and a sidecar of expected values, then run
//                              scripts/read_checkpoint_numpy.py on them (77 if NumPy is missing)
// The other modes (save-large, run) are what the modes above start in child processes.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "../checkpoint_model.h"
#include <hitch/hitch.h>

extern char** environ;

namespace fs = std::filesystem;
using namespace hitch;
using ckpt_test::TiedModel;

namespace {

std::string self_exe;

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    fmt::print(stderr, "cannot start {}\n", args[0]);
    std::exit(1);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int fail(const std::string& message) {
  fmt::print(stderr, "FAILED: {}\n", message);
  return 1;
}

// ---- kill ---------------------------------------------------------------------------------

struct Big : nn::Module {
  Parameter weight;
  void members(Members& m) const override { m.param("weight", weight); }
};

constexpr std::int64_t kBigFloats = 50'000'000;  // 200 MB

int save_large(const std::string& path) {
  Big big;
  big.weight = Parameter("weight", Tensor::full({kBigFloats}, 0.5f));
  nn::save_checkpoint(path, big);
  return 0;
}

std::vector<fs::path> temporaries(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path());
  return out;
}

int kill_test(const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  Generator gen(7);
  TiedModel good(6, 3, false, gen);
  nn::save_checkpoint(path, good);
  int mid_write_kills = 0;
  for (int attempt = 0; attempt < 5 && mid_write_kills < 2; ++attempt) {
    const pid_t child = spawn({self_exe, "save-large", path});
    // Wait until the child's temporary file holds some MB (but not all of it), then kill.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    std::uintmax_t seen = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      for (const fs::path& t : temporaries(dir)) {
        std::error_code ec;
        seen = std::max(seen, fs::file_size(t, ec));
      }
      if (seen > (std::uintmax_t{16} << 20)) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    kill(child, SIGKILL);
    const int code = wait_exit_code(child);
    const bool killed = code == 128 + SIGKILL;
    const std::vector<fs::path> left = temporaries(dir);
    fmt::print("attempt {}: temporary file reached {} MB, child {}, {} temporary file(s) left\n", attempt,
               seen >> 20, killed ? "killed" : fmt::format("exited with {}", code), left.size());
    // Whatever the moment, path holds a complete checkpoint: the old one unless the rename happened.
    Generator other(99);
    TiedModel loaded(6, 3, false, other);
    if (!left.empty()) {
      if (!killed) return fail("the child exited but left a temporary file");
      try {
        nn::load_checkpoint(path, loaded);
      } catch (const std::exception& e) {
        return fail(fmt::format("the previous checkpoint no longer loads: {}", e.what()));
      }
      if (loaded.emb.weight.value().to_vector() != good.emb.weight.value().to_vector() ||
          loaded.proj.value().to_vector() != good.proj.value().to_vector())
        return fail("the previous checkpoint loads with other values");
      // The stray temporary file is not a checkpoint anyone loads by mistake: it has another
      // name, and its content is cut short.
      try {
        nn::load_checkpoint(left.front().string(), loaded);
        return fail("a cut-short temporary file loaded");
      } catch (const Error& e) {
        fmt::print("  the temporary file is rejected: {}\n", e.what());
      }
      ++mid_write_kills;
      for (const fs::path& t : left) fs::remove(t);
    } else {
      // Killed after the rename (or finished): the new checkpoint is complete; restore the old one.
      Big big;
      big.weight = Parameter("weight", Tensor::zeros({kBigFloats}));
      nn::load_checkpoint(path, big);
      if (big.weight.data()[kBigFloats - 1] != 0.5f) return fail("the new checkpoint is incomplete");
      nn::save_checkpoint(path, good);
    }
  }
  fs::remove_all(dir);
  if (mid_write_kills == 0) return fail("never managed to kill the child in the middle of its write");
  fmt::print("kill: {} kill(s) mid-write, the previous checkpoint loaded every time\n", mid_write_kills);
  return 0;
}

// ---- resume -------------------------------------------------------------------------------

constexpr int kSteps = 12, kSaveAt = 5;

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, TiedModel& m) {
  if (kind == "adam") return std::make_unique<optim::Adam>(m.parameters(), optim::AdamOptions{.lr = 0.05, .amsgrad = true});
  if (kind == "adamw") return std::make_unique<optim::AdamW>(m.parameters(), optim::AdamWOptions{.lr = 0.05});
  if (kind == "sparse_adam") return std::make_unique<optim::SparseAdam>(m.parameters(), optim::SparseAdamOptions{.lr = 0.05});
  if (kind == "sgd") return std::make_unique<optim::SGD>(m.parameters(), optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  if (kind == "adagrad") return std::make_unique<optim::Adagrad>(m.parameters(), optim::AdagradOptions{.lr = 0.05});
  throw Error("ckpt_tool: unknown optimizer " + kind);
}

// run <optimizer> <from_checkpoint or -> <first step> <last step> <save_to> <with_state 0|1>
int run(const std::string& kind, const std::string& from, int first, int last, const std::string& to, bool state) {
  const bool sparse = kind == "sparse_adam";
  Generator init(from == "-" ? 1 : 2);  // a resumed run starts from other values: the load must fix them
  TiedModel model(10, 4, sparse, init);
  auto opt = make_optimizer(kind, model);
  Generator data(1234);
  const nn::CheckpointParts parts{.optimizer = opt.get(), .generator = &data};
  if (from != "-") nn::load_checkpoint(from, model, parts);
  for (int step = first; step < last; ++step) ckpt_test::train_step(model, *opt, data);
  nn::save_checkpoint(to, model, state ? parts : nn::CheckpointParts{});
  return 0;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int resume_test(const fs::path& dir, const std::string& kind) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string whole = (dir / "whole.safetensors").string(), half = (dir / "half.safetensors").string(),
                    resumed = (dir / "resumed.safetensors").string();
  const std::string n = std::to_string(kSteps), k = std::to_string(kSaveAt);
  if (wait_exit_code(spawn({self_exe, "run", kind, "-", "0", n, whole, "0"})) != 0) return fail("the whole run failed");
  if (wait_exit_code(spawn({self_exe, "run", kind, "-", "0", k, half, "1"})) != 0) return fail("the first half failed");
  if (wait_exit_code(spawn({self_exe, "run", kind, half, k, n, resumed, "0"})) != 0) return fail("the resume failed");
  // Both files hold only the model: equal Parameters give equal bytes.
  const std::string a = read_bytes(whole), b = read_bytes(resumed);
  Generator g1(0), g2(0);
  TiedModel ma(10, 4, kind == "sparse_adam", g1), mb(10, 4, kind == "sparse_adam", g2);
  nn::load_checkpoint(whole, ma);
  nn::load_checkpoint(resumed, mb);
  const auto va = ma.emb.weight.value().to_vector(), vb = mb.emb.weight.value().to_vector();
  Generator fresh(1);
  TiedModel start(10, 4, kind == "sparse_adam", fresh);
  if (va == start.emb.weight.value().to_vector()) return fail("training did not move the table");
  if (a != b || va != vb) {
    for (std::size_t i = 0; i < va.size(); ++i)
      if (va[i] != vb[i]) fmt::print(stderr, "emb.weight[{}]: uninterrupted {} resumed {}\n", i, va[i], vb[i]);
    return fail(fmt::format("{}: the resumed run differs from the uninterrupted one", kind));
  }
  fmt::print("resume {}: {} steps == {} steps, save, fresh process, {} more steps (bitwise, {} bytes)\n", kind, n,
             k, kSteps - kSaveAt, a.size());
  fs::remove_all(dir);
  return 0;
}

// ---- numpy --------------------------------------------------------------------------------

std::string json_floats(const float* p, std::size_t n) {
  std::string out = "[";
  for (std::size_t i = 0; i < n; ++i) out += fmt::format("{}{}", i == 0 ? "" : ", ", p[i]);
  return out + "]";
}

int numpy_test(const fs::path& dir, const std::string& python, const std::string& script) {
  if (::access(python.c_str(), X_OK) != 0) {
    fmt::print("SKIPPED: {} is not there\n", python);
    return 77;
  }
  fs::create_directories(dir);
  const std::string file = (dir / "interop.safetensors").string(), expect = (dir / "interop.expected.json").string();
  Generator init(3);
  TiedModel model(5, 3, false, init);
  optim::Adam opt(model.parameters(), {.lr = 0.1});
  Generator data(42);
  ckpt_test::train_step(model, opt, data);
  nn::save_checkpoint(file, model, {.optimizer = &opt, .generator = &data});
  // Every value the script must find: the tensors as floats, and the tie.
  std::string json = "{\"tensors\": {";
  const auto add = [&](const std::string& name, const Shape& shape, const float* p, std::size_t n) {
    json += fmt::format("{}\"{}\": {{\"shape\": [{}], \"values\": {}}}", json.back() == '{' ? "" : ", ", name,
                        fmt::join(shape, ", "), json_floats(p, n));
  };
  for (const auto& [name, p] : model.named_parameters()) {
    add(name, p.shape(), p.data(), static_cast<std::size_t>(p.numel()));
    const optim::AdamState* st = opt.state(p);
    add("optim." + name + ".exp_avg", p.shape(), st->exp_avg.data(), st->exp_avg.size());
    add("optim." + name + ".exp_avg_sq", p.shape(), st->exp_avg_sq.data(), st->exp_avg_sq.size());
    const float step = static_cast<float>(st->step);
    add("optim." + name + ".step", {}, &step, 1);
  }
  json += "}, \"ties\": {\"bag.weight\": \"emb.weight\"}}\n";
  std::ofstream(expect) << json;
  const int code = wait_exit_code(spawn({python, script, file, "--expect", expect}));
  if (code == 0) fs::remove_all(dir);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  self_exe = fs::canonical("/proc/self/exe").string();
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 2 && a[0] == "kill") return kill_test(a[1]);
    if (a.size() == 2 && a[0] == "save-large") return save_large(a[1]);
    if (a.size() == 3 && a[0] == "resume") return resume_test(a[1], a[2]);
    if (a.size() == 7 && a[0] == "run")
      return run(a[1], a[2], std::stoi(a[3]), std::stoi(a[4]), a[5], a[6] == "1");
    if (a.size() == 4 && a[0] == "numpy") return numpy_test(a[1], a[2], a[3]);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  fmt::print(stderr, "usage: ckpt_tool kill DIR | resume DIR OPTIMIZER | numpy DIR PYTHON SCRIPT\n");
  return 2;
}
