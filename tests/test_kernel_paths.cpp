// The rule of core/runtime/path.h: the fast and the reference kernels give bitwise the same
// results. Whole training runs of one tied table (an Embedding and EmbeddingBags on one
// Parameter, plus a Linear output projection tied to it where the gradient may be dense) are
// compared bit for bit (memcmp) after every step: fast at 1 thread and at 2 threads against the
// reference path, for every optimizer and mode, dense, sparse and mixed lookups, two micro-batches
// per step, on a table below and one above the small-table limit (2^18 floats, lookup_fits in
// core/runtime/rows.h). Then how the path is chosen: HITCH_KERNELS, set_kernel_path overriding
// it, and a bad value (that case runs in its own process, with HITCH_KERNELS=turbo: see
// tests/CMakeLists.txt). The parity and tying tests run again on the reference path as ctest
// tests "reference: ..." (tests/CMakeLists.txt).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/path.h>
#include <hitch/hitch.h>

using namespace hitch;

namespace {

// Selects a kernel path and a thread count for a scope and restores the previous ones (fast and
// 1 thread unless HITCH_KERNELS says otherwise), also when a check throws.
class KernelPathGuard {
 public:
  KernelPathGuard(KernelPath path, int threads) : path_(kernel_path()), threads_(get_num_threads()) {
    set_kernel_path(path);
    set_num_threads(threads);
  }
  ~KernelPathGuard() {
    set_kernel_path(path_);
    set_num_threads(threads_);
  }
  KernelPathGuard(const KernelPathGuard&) = delete;
  KernelPathGuard& operator=(const KernelPathGuard&) = delete;

 private:
  KernelPath path_;
  int threads_;
};

// How the table is looked up. Dense: every lookup dense, plus a max bag and the tied head.
// Sparse: every lookup sparse, no head (the gradient stays row-sparse). Mixed: sparse lookups
// and the tied head, whose matmul makes the gradient dense.
enum class Lookups { dense, sparse, mixed };
const char* to_string(Lookups l) { return l == Lookups::dense ? "dense" : l == Lookups::sparse ? "sparse" : "mixed"; }

// One table tied across an Embedding, a mean bag, a weighted sum bag, a max bag (dense only) and
// a Linear head with its own bias (dense and mixed).
struct TiedModel : nn::Module {
  Parameter table;
  nn::Embedding emb;
  nn::EmbeddingBag mean_bag, sum_bag;
  std::optional<nn::EmbeddingBag> max_bag;
  std::optional<nn::Linear> head;

  TiedModel(Parameter t, Lookups lookups)
      : table(t),
        emb(t, {.sparse = lookups != Lookups::dense}),
        mean_bag(t, {.mode = BagMode::Mean, .sparse = lookups != Lookups::dense}),
        sum_bag(t, {.mode = BagMode::Sum, .sparse = lookups != Lookups::dense}) {
    if (lookups == Lookups::dense) max_bag.emplace(t, EmbeddingBagOptions{.mode = BagMode::Max});
    if (lookups != Lookups::sparse) head.emplace(t, Parameter("bias", Tensor::zeros({t.shape()[0]})));
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("mean_bag", mean_bag);
    m.module("sum_bag", sum_bag);
    if (max_bag) m.module("max_bag", *max_bag);
    if (head) m.module("head", *head);
  }
};

// Indices into [0, rows): every other one from the first 40 rows, so that rows repeat within a
// lookup and across the lookups and micro-batches of a step (three or more contributions to one
// row make the order of additions matter), also in the large table.
IndexTensor some_rows(Generator& gen, std::int64_t rows, Shape shape) {
  std::vector<std::int64_t> x(static_cast<std::size_t>(numel_of(shape)));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const auto range = static_cast<std::uint64_t>(i % 2 == 0 ? std::min<std::int64_t>(rows, 40) : rows);
    x[i] = static_cast<std::int64_t>(gen.below(range));
  }
  return IndexTensor(std::move(shape), std::move(x));
}

// One micro-batch: loss = mean((<e, pooled> - 1)^2) [+ cross_entropy(head(e + pooled), next)],
// backward (adds into the table's gradient).
void micro_batch(const TiedModel& m, Generator& gen) {
  const std::int64_t rows = m.table.shape()[0], batch = 24, bag_len = 5;
  const IndexTensor tokens = some_rows(gen, rows, {batch});
  const IndexTensor bags = some_rows(gen, rows, {batch, bag_len});
  const Tensor psw = Tensor::uniform({batch, bag_len}, 0.1f, 1.0f, gen);
  const Tensor e = m.emb(tokens);
  Tensor pooled = add(m.mean_bag(bags), m.sum_bag(bags, psw));
  if (m.max_bag) pooled = add(pooled, (*m.max_bag)(bags));
  Tensor loss = mean(square(sum(mul(e, pooled), 1) - 1.0f));
  if (m.head) loss = add(loss, cross_entropy((*m.head)(add(e, pooled)), some_rows(gen, rows, {batch})));
  backward(loss);
}

// What is compared after a step: every Parameter's values, the table's gradient of the step (taken
// after the step: Grad::dense() may coalesce a sparse gradient, which must not change what the
// step sees), whether it was row-sparse, and the optimizer's state.
struct Snapshot {
  std::vector<std::vector<float>> values;
  std::vector<float> grad;
  bool sparse_grad = false;
  optim::StateRecords state;
};

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Parameter>&)>;

struct Run {
  std::int64_t rows, width;
  Lookups lookups;
  const MakeOpt& make_opt;
};

constexpr int kSteps = 3;

std::vector<Snapshot> train(KernelPath path, int threads, const Run& run) {
  KernelPathGuard guard(path, threads);
  Generator gen(7);
  const Parameter table("table", Tensor::uniform({run.rows, run.width}, -0.1f, 0.1f, gen));
  const TiedModel model(table, run.lookups);
  const std::vector<Parameter> params = model.parameters();
  const auto opt = run.make_opt(params);
  std::vector<Snapshot> out;
  for (int step = 0; step < kSteps; ++step) {
    opt->zero_grad();
    micro_batch(model, gen);  // two backward calls add into one gradient, then one step
    micro_batch(model, gen);
    Snapshot s;
    s.sparse_grad = table.grad_store()->is_sparse();
    opt->step();
    for (const Parameter& p : params) s.values.push_back(p.value().to_vector());
    s.grad = table.grad().to_vector();
    s.state = opt->export_state();
    out.push_back(std::move(s));
  }
  return out;
}

// Fails naming the first element whose bits differ (memcmp: -0.0 vs 0.0 and NaN payloads count).
void check_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what, ": ", got.size(), " elements, want ", want.size());
  if (got.empty() || std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0) return;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0)
      FAIL(what, ": element ", i, " is ", fmt::format("{:.9g}", got[i]), ", the reference path gives ",
           fmt::format("{:.9g}", want[i]));
}

void check_same(const std::vector<Snapshot>& got, const std::vector<Snapshot>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t step = 0; step < got.size(); ++step) {
    const std::string at = fmt::format("{}, step {}", what, step + 1);
    const Snapshot& g = got[step];
    const Snapshot& w = want[step];
    CHECK_MESSAGE(g.sparse_grad == w.sparse_grad, at, ": the gradient's layout differs");
    REQUIRE(g.values.size() == w.values.size());
    for (std::size_t p = 0; p < g.values.size(); ++p) check_bits(g.values[p], w.values[p], fmt::format("{}, Parameter {}", at, p));
    check_bits(g.grad, w.grad, at + ", the table's gradient");
    REQUIRE_MESSAGE(g.state.size() == w.state.size(), at, ": state for ", g.state.size(), " Parameters, want ", w.state.size());
    for (std::size_t p = 0; p < g.state.size(); ++p) {
      const optim::StateRecord& gs = g.state[p].second;
      const optim::StateRecord& ws = w.state[p].second;
      CHECK_MESSAGE(gs.counts == ws.counts, at, ", state of Parameter ", p, ": the step counts differ");
      REQUIRE_MESSAGE(gs.buffers.size() == ws.buffers.size(), at, ", state of Parameter ", p, ": other buffers");
      for (const auto& buffer : ws.buffers) {
        const auto it = gs.buffers.find(buffer.first);
        REQUIRE_MESSAGE(it != gs.buffers.end(), at, ", state of Parameter ", p, ": no buffer ", buffer.first);
        check_bits(it->second, buffer.second, fmt::format("{}, state of Parameter {}, {}", at, p, buffer.first));
      }
    }
  }
}

struct OptConfig {
  const char* name;
  MakeOpt make;
  std::vector<Lookups> lookups;  // those the optimizer accepts
};

template <class Opt, class Options>
MakeOpt make(Options o) {
  return [o](const std::vector<Parameter>& ps) { return std::make_unique<Opt>(ps, o); };
}

const std::vector<Lookups> kAll = {Lookups::dense, Lookups::sparse, Lookups::mixed};

// Every configuration on a small table (300 x 16 floats, the small-table path of a dense lookup
// gradient) and a large one (5000 x 64 = 320,000 floats > 2^18, the grouped path; big enough that
// the optimizers' walks split over 2 threads): fast at 1 and 2 threads == reference, every step.
void check_all_paths(const std::vector<OptConfig>& configs) {
  struct Size {
    std::int64_t rows, width;
  };
  for (const OptConfig& c : configs)
    for (const Size size : {Size{300, 16}, Size{5000, 64}})
      for (const Lookups lookups : c.lookups) {
        const Run run{size.rows, size.width, lookups, c.make};
        const std::string what = fmt::format("{}, [{}, {}], {} lookups", c.name, size.rows, size.width, to_string(lookups));
        INFO(what);
        const std::vector<Snapshot> reference = train(KernelPath::reference, 1, run);
        REQUIRE(reference.size() == static_cast<std::size_t>(kSteps));
        // The runs train: the table moves, and the gradient has the layout the lookups ask for.
        CHECK(reference.back().values[0] != reference.front().values[0]);
        for (const Snapshot& s : reference) CHECK(s.sparse_grad == (lookups == Lookups::sparse));
        check_same(train(KernelPath::fast, 1, run), reference, what + ", fast at 1 thread");
        check_same(train(KernelPath::fast, 2, run), reference, what + ", fast at 2 threads");
      }
}

}  // namespace

TEST_CASE("kernel paths: SGD (plain, momentum, nesterov, weight decay, dense and sparse) trains bitwise the same on both paths") {
  check_all_paths({
      {"SGD", make<optim::SGD>(optim::SGDOptions{.lr = 0.1}), kAll},
      {"SGD momentum", make<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1}), kAll},
      {"SGD nesterov", make<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true}), kAll},
      {"SGD momentum weight_decay", make<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}),
       {Lookups::dense, Lookups::mixed}},  // weight decay refuses sparse gradients (docs/optim.md)
  });
}

TEST_CASE("kernel paths: Adam (amsgrad, weight decay) and AdamW train bitwise the same on both paths") {
  check_all_paths({
      {"Adam", make<optim::Adam>(optim::AdamOptions{.lr = 0.01}), kAll},
      {"Adam amsgrad", make<optim::Adam>(optim::AdamOptions{.lr = 0.01, .amsgrad = true}), kAll},
      {"Adam weight_decay", make<optim::Adam>(optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1}), kAll},
      {"AdamW amsgrad", make<optim::AdamW>(optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true}), kAll},
  });
}

TEST_CASE("kernel paths: Adagrad (dense, sparse) and SparseAdam train bitwise the same on both paths") {
  check_all_paths({
      {"Adagrad lr_decay weight_decay",
       make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1, .lr_decay = 0.01, .weight_decay = 0.01, .initial_accumulator_value = 0.1}),
       {Lookups::dense, Lookups::mixed}},
      {"Adagrad", make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1}), kAll},
      {"SparseAdam", make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01}), {Lookups::sparse}},
  });
}

// Registered twice by tests/CMakeLists.txt: once as it is (HITCH_KERNELS unset: fast) and once in
// the "reference: " runs (HITCH_KERNELS=reference).
TEST_CASE("kernel paths: the path comes from HITCH_KERNELS until set_kernel_path overrides it") {
  const char* env = std::getenv("HITCH_KERNELS");
  const std::string_view v = env == nullptr ? "" : env;
  REQUIRE((v.empty() || v == "fast" || v == "reference"));
  const KernelPath from_env = v == "reference" ? KernelPath::reference : KernelPath::fast;
  CHECK(kernel_path() == from_env);
  CHECK(reference_kernels() == (from_env == KernelPath::reference));
  for (const KernelPath p : {KernelPath::reference, KernelPath::fast}) {
    KernelPathGuard guard(p, 1);
    CHECK(kernel_path() == p);
    CHECK(reference_kernels() == (p == KernelPath::reference));
  }
  CHECK(kernel_path() == from_env);  // the guard restored it
}

// Skipped in the normal runs: ctest "kernel_paths_bad_env" runs it alone with --no-skip and
// HITCH_KERNELS=turbo (the variable is read once per process).
TEST_CASE("kernel paths: a bad HITCH_KERNELS value throws naming it, set_kernel_path overrides it" * doctest::skip()) {
  const char* env = std::getenv("HITCH_KERNELS");
  REQUIRE(env != nullptr);
  REQUIRE(std::string_view(env) == "turbo");
  const char* const msg = R"(HITCH_KERNELS: got "turbo", but the valid values are "fast" and "reference" (or unset: fast))";
  CHECK_THROWS_WITH_AS(kernel_path(), msg, Error);
  CHECK_THROWS_WITH_AS(reference_kernels(), msg, Error);
  CHECK_THROWS_WITH_AS(kernel_path(), msg, Error);  // at every call, not only the first

  // set_kernel_path wins over the environment; then a tied step runs on either path.
  for (const KernelPath p : {KernelPath::reference, KernelPath::fast}) {
    set_kernel_path(p);
    CHECK(kernel_path() == p);
    Generator gen(3);
    const Parameter table("table", Tensor::uniform({50, 4}, -0.1f, 0.1f, gen));
    const TiedModel model(table, Lookups::mixed);
    optim::Adam adam(model.parameters(), {.lr = 0.01});
    const std::vector<float> before = table.value().to_vector();
    micro_batch(model, gen);
    adam.step();
    CHECK(table.value().to_vector() != before);
  }
}
