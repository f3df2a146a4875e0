// The fast paths of issue 5 keep the semantics: 1 and 2 threads give bitwise the same values,
// the fused optimizer walk (Grad::for_each_row over several blocks) equals the coalesced walk,
// and sparse and dense gradients agree where the math is the same.
// Sizes are chosen above parallel_for's chunk thresholds, so 2 threads really split the work.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>
#include <memory>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

// Restores the thread count when a test ends, also on failure.
struct Threads {
  explicit Threads(int n) : previous(get_num_threads()) { set_num_threads(n); }
  ~Threads() { set_num_threads(previous); }
  int previous;
};

struct Batch {
  IndexTensor singles, bags;
};

Batch make_batch(std::uint64_t seed, std::int64_t n, std::int64_t b, std::int64_t l) {
  Generator gen(seed);
  std::vector<std::int64_t> x(static_cast<std::size_t>(b)), y(static_cast<std::size_t>(b * l));
  for (auto& v : x) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(n)));
  for (auto& v : y) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(n / 4)));  // many repeats
  return {IndexTensor({b}, std::move(x)), IndexTensor({b, l}, std::move(y))};
}

// Three tied steps (Embedding + EmbeddingBag on one table) with the given optimizer; returns the
// table and the last forward output.
std::pair<std::vector<float>, std::vector<float>> train(int threads, BagMode mode, bool sparse,
                                                        const std::function<std::unique_ptr<optim::Optimizer>(Parameter&)>& make_opt) {
  Threads guard(threads);
  constexpr std::int64_t n = 3000, d = 64, b = 512, l = 24;
  Generator gen(7);
  Parameter table("table", Tensor::randn({n, d}, 0.0f, 0.1f, gen));
  nn::Embedding emb(table, {.sparse = sparse});
  nn::EmbeddingBag bag(table, {.mode = mode, .sparse = sparse && mode != BagMode::Max});
  auto opt = make_opt(table);
  std::vector<float> out;
  for (std::uint64_t step = 0; step < 3; ++step) {
    const Batch batch = make_batch(step + 1, n, b, l);
    opt->zero_grad();
    const Tensor pooled = bag(batch.bags);
    out = pooled.to_vector();
    backward(mean(square(sum(mul(emb(batch.singles), pooled), 1))));
    opt->step();
  }
  return {table.value().to_vector(), out};
}

std::unique_ptr<optim::Optimizer> sgd(Parameter& p) { return std::make_unique<optim::SGD>(std::vector<Parameter>{p}, optim::SGDOptions{.lr = 0.05}); }
std::unique_ptr<optim::Optimizer> sgd_momentum(Parameter& p) {
  return std::make_unique<optim::SGD>(std::vector<Parameter>{p}, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
}
std::unique_ptr<optim::Optimizer> adagrad(Parameter& p) {
  return std::make_unique<optim::Adagrad>(std::vector<Parameter>{p}, optim::AdagradOptions{.lr = 0.05});
}
std::unique_ptr<optim::Optimizer> sparse_adam(Parameter& p) {
  return std::make_unique<optim::SparseAdam>(std::vector<Parameter>{p}, optim::SparseAdamOptions{.lr = 0.01});
}
std::unique_ptr<optim::Optimizer> adam(Parameter& p) {
  return std::make_unique<optim::Adam>(std::vector<Parameter>{p}, optim::AdamOptions{.lr = 0.01});
}

}  // namespace

TEST_CASE("threads: set_num_threads checks its argument and get_num_threads reports it") {
  Threads guard(1);
  CHECK(get_num_threads() == 1);
  set_num_threads(2);
  CHECK(get_num_threads() == 2);
  CHECK_THROWS_WITH_AS(set_num_threads(0), "set_num_threads: n = 0 is out of range (valid: [1, 256])", Error);
  CHECK(get_num_threads() == 2);  // a rejected call changes nothing
}

TEST_CASE("threads: parallel_for covers every item once and rethrows a chunk's exception") {
  Threads guard(2);
  std::vector<int> seen(100000, 0);
  parallel_for(seen.size(), 1000, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) ++seen[i];
  });
  CHECK(std::count(seen.begin(), seen.end(), 1) == 100000);
  CHECK_THROWS_WITH_AS(parallel_for(100000, 1000,
                                    [](std::size_t b, std::size_t) {
                                      if (b > 0) throw Error("second chunk failed");
                                    }),
                       "second chunk failed", Error);
}

TEST_CASE("threads: back-to-back jobs with changing chunk counts run every item exactly once") {
  // Three threads and jobs of 1, 2 or 3 chunks in turn: a worker left out of one job must not
  // run a chunk of the next one twice or miss it (the job word pairs generation and count).
  Threads guard(3);
  std::vector<int> seen(3000, 0);
  for (int job = 0; job < 3000; ++job) {
    const std::size_t n = 1000 * static_cast<std::size_t>(1 + job % 3);
    parallel_for(n, 1000, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) ++seen[i];
    });
  }
  for (std::size_t i = 0; i < seen.size(); ++i) {
    const int want = i < 1000 ? 3000 : i < 2000 ? 2000 : 1000;
    if (seen[i] != want) FAIL("item " << i << " ran " << seen[i] << " times, want " << want);
  }
}

TEST_CASE("parallel_for in a forked child uses the child's own threads") {
  // The parent's workers do not exist in a child. The child gets a fresh pool: its two chunks
  // run at the same time on two threads (each waits, up to 5 s, to see the other one start;
  // run one after the other, the first would time out).
  Threads guard(2);
  std::vector<int> seen(100000, 0);
  parallel_for(seen.size(), 1000, [&](std::size_t b, std::size_t e) {  // the parent's pool has a worker
    for (std::size_t i = b; i < e; ++i) ++seen[i];
  });
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::atomic<int> started{0}, saw_both{0};
    std::vector<int> child(100000, 0);
    parallel_for(child.size(), child.size() / 2, [&](std::size_t b, std::size_t e) {
      started.fetch_add(1);
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (started.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
      if (started.load() == 2) saw_both.fetch_add(1);
      for (std::size_t i = b; i < e; ++i) ++child[i];
    });
    const bool ok = std::count(child.begin(), child.end(), 1) == 100000 && saw_both.load() == 2 && get_num_threads() == 2;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("threads: parallel_for called from two threads at once runs both jobs completely") {
  // The pool runs one job at a time (a second caller waits for the first job to finish); each
  // job still covers every item exactly once, whichever threads claimed its chunks.
  Threads guard(2);
  std::vector<int> a(200000, 0), b(200000, 0);
  std::thread other([&] {
    parallel_for(a.size(), 1000, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) ++a[i];
    });
  });
  parallel_for(b.size(), 1000, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) ++b[i];
  });
  other.join();
  CHECK(std::count(a.begin(), a.end(), 1) == 200000);
  CHECK(std::count(b.begin(), b.end(), 1) == 200000);
}

TEST_CASE("threads: 1 and 2 threads give bitwise identical forward values and trained tables") {
  using Make = std::function<std::unique_ptr<optim::Optimizer>(Parameter&)>;
  struct Config {
    const char* name;
    BagMode mode;
    bool sparse;
    Make opt;
  };
  const Config configs[] = {{"sparse sum SGD", BagMode::Sum, true, sgd},
                            {"sparse mean SGD momentum", BagMode::Mean, true, sgd_momentum},
                            {"sparse sum Adagrad", BagMode::Sum, true, adagrad},
                            {"sparse sum SparseAdam", BagMode::Sum, true, sparse_adam},
                            {"dense mean Adam", BagMode::Mean, false, adam},
                            {"dense max Adam", BagMode::Max, false, adam},
                            {"dense sqrtn SGD", BagMode::Sqrtn, false, sgd}};
  for (const auto& c : configs) {
    INFO(c.name);
    const auto one = train(1, c.mode, c.sparse, c.opt);
    const auto two = train(2, c.mode, c.sparse, c.opt);
    CHECK(one.second == two.second);  // forward, exactly
    CHECK(one.first == two.first);    // every table value after three steps, exactly
  }
}

TEST_CASE("fused sparse step equals the coalesced one (tied gradient of two blocks)") {
  // for_each_row sums a row's entries from both lookups on the fly; coalesce() first merges them
  // into one block. Same additions, same order: bitwise equal updates.
  for (const auto& make : {std::function(sgd), std::function(adagrad), std::function(sparse_adam)}) {
    std::vector<float> result[2];
    for (int coalesced = 0; coalesced < 2; ++coalesced) {
      Generator gen(3);
      Parameter table("table", Tensor::randn({500, 16}, gen));
      nn::Embedding emb(table, {.sparse = true});
      nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
      auto opt = make(table);
      for (std::uint64_t step = 0; step < 2; ++step) {
        const Batch batch = make_batch(step + 10, 500, 64, 6);
        opt->zero_grad();
        backward(mean(square(sum(mul(emb(batch.singles), bag(batch.bags)), 1))));
        REQUIRE(table.grad_store()->num_blocks() == 2);
        if (coalesced) table.grad_store()->coalesce();
        CHECK(table.grad_store()->num_blocks() == (coalesced ? 1u : 2u));
        opt->step();
      }
      result[coalesced] = table.value().to_vector();
    }
    CHECK(result[0] == result[1]);
  }
}

TEST_CASE("sparse and dense gradients agree: SGD exactly, Adagrad within rounding") {
  for (int threads : {1, 2}) {
    INFO("threads ", threads);
    const auto sparse_sgd = train(threads, BagMode::Sum, true, sgd);
    const auto dense_sgd = train(threads, BagMode::Sum, false, sgd);
    CHECK(sparse_sgd.first == dense_sgd.first);  // untouched rows: p + (-lr) * 0 == p
    const auto sparse_ada = train(threads, BagMode::Sum, true, adagrad);
    const auto dense_ada = train(threads, BagMode::Sum, false, adagrad);
    REQUIRE(sparse_ada.first.size() == dense_ada.first.size());
    // PyTorch's two Adagrad paths round differently (dense (-clr*g)/std, sparse -clr*(g/std)).
    for (std::size_t i = 0; i < sparse_ada.first.size(); ++i)
      CHECK(sparse_ada.first[i] == doctest::Approx(dense_ada.first[i]).epsilon(1e-5));
  }
}

TEST_CASE("sparse backward hands the Grad one entry per distinct row, merged across micro-batches") {
  Parameter table("table", Tensor::zeros({10, 2}));
  nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});
  backward(sum(bag(IndexTensor({2, 3}, {4, 4, 1, 4, 1, 1}))));  // micro-batch 1: rows 1, 4
  backward(sum(bag(IndexTensor({1, 2}, {4, 9}))));             // micro-batch 2: rows 4, 9
  Grad* g = table.grad_store();
  REQUIRE(g->is_sparse());
  CHECK(g->num_blocks() == 2);
  CHECK(std::vector<std::int64_t>(g->rows().begin(), g->rows().end()) == std::vector<std::int64_t>{1, 4, 9});
  CHECK(std::vector<float>(g->row_values().begin(), g->row_values().end()) == std::vector<float>{3, 3, 4, 4, 1, 1});
}

TEST_CASE("dense lookup gradients: the unsorted small-table path equals the grouped path bitwise") {
  // A small dense table takes its embedding gradients through Grad::add_lookup (no sort); a
  // grad hook makes the same ops hand over grouped, summed row blocks instead. Both must give
  // the same bits, for every mode, with per-sample weights, frequency scaling and padding.
  struct Config {
    BagMode mode;
    bool weighted, freq;
    std::optional<std::int64_t> pad;
  };
  const Config configs[] = {{BagMode::Sum, false, false, {}}, {BagMode::Mean, false, false, 3},
                            {BagMode::Sqrtn, true, false, {}}, {BagMode::Sum, true, true, 5},
                            {BagMode::Mean, false, true, {}}};
  constexpr std::int64_t n = 40, d = 16, b = 64, l = 12;
  for (const Config& c : configs) {
    INFO("mode ", static_cast<int>(c.mode), " weighted ", c.weighted, " freq ", c.freq);
    std::vector<std::vector<float>> grads;
    for (const bool hooked : {false, true}) {
      Generator gen(3);
      Parameter table("table", Tensor::randn({n, d}, gen));
      REQUIRE(lookup_fits(table.value().shape()));
      if (hooked) table.add_grad_hook([](const GradContribution&) {});
      const Batch batch = make_batch(9, n, b, l);  // many repeated rows
      const Tensor psw = c.weighted ? Tensor::uniform({b, l}, 0.1f, 1.0f, gen) : Tensor();
      nn::Embedding emb(table, {.padding_idx = c.pad, .scale_grad_by_freq = c.freq});
      nn::EmbeddingBag bag(table, {.mode = c.mode, .padding_idx = c.pad, .scale_grad_by_freq = c.freq});
      const Tensor pooled = bag(batch.bags, psw);
      backward(mean(square(sum(mul(emb(batch.singles), pooled), 1))));
      grads.push_back(table.grad().to_vector());
    }
    REQUIRE(grads[0].size() == grads[1].size());
    std::size_t nonzero = 0;
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
      REQUIRE(grads[0][i] == grads[1][i]);
      if (grads[0][i] != 0.0f) ++nonzero;
    }
    CHECK(nonzero > grads[0].size() / 2);
  }
}
