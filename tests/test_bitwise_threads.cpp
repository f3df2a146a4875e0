// The bitwise promise (docs/reliability.md, "Determinism") at the chunk boundaries: every
// optimizer and the embedding kernels give the same bits at 1, 2, 3 and 256 threads, on sizes
// whose chunks end at odd places (16414 floats: two chunks [0, 8207) and [8207, 16414);
// 8192 * 3 + 5: two or three chunks). A chunk's vectorised loop then ends elsewhere than the
// single-thread loop does, so an element is computed by the vector body in one run and by the
// scalar or narrower tail in another: with contracted FMA in one and not the other (issue 12,
// finding 3) the bits differ. Each test reports the first differing element.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <hitch/hitch.h>
#include "reliability_model.h"

using namespace hitch;

namespace {

constexpr int kThreadCounts[] = {2, 3, 256};
constexpr std::int64_t kDenseSizes[] = {16414, 8192 * 3 + 5};

// Fails with the first element whose bits differ (a float == compare: NaNs would differ, and
// none is expected here).
void check_same_bits(const std::vector<float>& want, const std::vector<float>& got, const std::string& what) {
  REQUIRE(want.size() == got.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    if (!(want[i] == got[i])) FAIL(what << ": element " << i << " is " << got[i] << ", want " << want[i] << " (1 thread)");
}

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(Parameter&)>;

template <class Opt, class Options>
MakeOpt make(Options o) {
  return [o](Parameter& p) { return std::make_unique<Opt>(std::vector<Parameter>{p}, o); };
}

// 10 steps on a [n] Parameter with loss sum(c * (p - t)^2): every element gets its own gradient.
// Returns the parameter after the last step.
std::vector<float> train_dense(int threads, std::int64_t n, const MakeOpt& make_opt) {
  reliability::ThreadCount guard(threads);
  Generator gen(11);
  Parameter p("p", Tensor::randn({n}, gen));
  const Tensor target = Tensor::randn({n}, gen);
  const Tensor coef = Tensor::uniform({n}, 0.5f, 2.0f, gen);
  auto opt = make_opt(p);
  for (int step = 0; step < 10; ++step) {
    opt->zero_grad();
    backward(sum(mul(square(sub(p.value(), target)), coef)));
    opt->step();
  }
  return p.value().to_vector();
}

// Index batches for a [rows, width] table: many repeated rows, most rows touched.
IndexTensor some_rows(std::uint64_t seed, std::int64_t rows, Shape shape) {
  Generator gen(seed);
  std::int64_t count = 1;
  for (const std::int64_t s : shape) count *= s;
  std::vector<std::int64_t> x(static_cast<std::size_t>(count));
  for (auto& v : x) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(rows)));
  return IndexTensor(std::move(shape), std::move(x));
}

// 4 steps of a sparse (or dense) Embedding, a mean EmbeddingBag and a sum EmbeddingBag with
// per-sample weights, all on one table; returns the table, the last step's pooled bag output and
// the last gradient (as dense values).
struct TableRun {
  std::vector<float> table, pooled, grad;
};
TableRun train_table(int threads, std::int64_t rows, std::int64_t width, bool sparse, const MakeOpt& make_opt) {
  reliability::ThreadCount guard(threads);
  Generator gen(5);
  Parameter table("table", Tensor::randn({rows, width}, 0.0f, 0.1f, gen));
  nn::Embedding emb(table, {.sparse = sparse});
  nn::EmbeddingBag mean_bag(table, {.mode = BagMode::Mean, .sparse = sparse});
  nn::EmbeddingBag weighted_bag(table, {.mode = BagMode::Sum, .sparse = sparse});
  auto opt = make_opt(table);
  TableRun run;
  for (std::uint64_t step = 0; step < 4; ++step) {
    const std::int64_t b = 4096, l = 6;
    const IndexTensor singles = some_rows(step + 1, rows, {b});
    const IndexTensor bags = some_rows(step + 100, rows, {b, l});
    const Tensor psw = Tensor::uniform({b, l}, 0.1f, 1.0f, gen);
    opt->zero_grad();
    const Tensor pooled = add(mean_bag(bags), weighted_bag(bags, psw));
    backward(mean(square(sum(mul(emb(singles), pooled), 1))));
    run.pooled = pooled.to_vector();
    run.grad = table.grad().to_vector();
    opt->step();
  }
  run.table = table.value().to_vector();
  return run;
}

}  // namespace

TEST_CASE("bitwise: dense optimizers give the same bits at 1, 2, 3 and 256 threads across chunk boundaries") {
  const std::pair<const char*, MakeOpt> configs[] = {
      {"Adam", make<optim::Adam>(optim::AdamOptions{.lr = 0.01})},
      {"Adam amsgrad weight_decay", make<optim::Adam>(optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true})},
      {"AdamW", make<optim::AdamW>(optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1})},
      {"SGD momentum", make<optim::SGD>(optim::SGDOptions{.lr = 0.01, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01})},
      {"SGD nesterov", make<optim::SGD>(optim::SGDOptions{.lr = 0.01, .momentum = 0.9, .nesterov = true})},
      {"Adagrad", make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.05, .weight_decay = 0.01})}};
  for (const auto& [name, make_opt] : configs)
    for (const std::int64_t n : kDenseSizes) {
      const std::vector<float> one = train_dense(1, n, make_opt);
      for (const int threads : kThreadCounts)
        check_same_bits(one, train_dense(threads, n, make_opt),
                        std::string(name) + " on [" + std::to_string(n) + "] at " + std::to_string(threads) + " threads");
    }
}

TEST_CASE("bitwise: sparse optimizer walks and embedding kernels give the same bits at 1, 2, 3 and 256 threads") {
  // Width 4: the row walks split by rows of 4 floats, so chunks end at 2052 / 2051 rows
  // (4103 rows) and 2048 rows + 1 (6145 rows), never on a vector multiple of the single run.
  // The dense table of 70001 rows is above Grad::add_lookup's small-table limit: its gradient
  // takes the grouped, thread-split path.
  struct Config {
    const char* name;
    std::int64_t rows;
    bool sparse;
    MakeOpt opt;
  };
  const Config configs[] = {
      {"sparse SGD", 4103, true, make<optim::SGD>(optim::SGDOptions{.lr = 0.05})},
      {"sparse SGD momentum", 6145, true, make<optim::SGD>(optim::SGDOptions{.lr = 0.05, .momentum = 0.9})},
      {"sparse Adagrad", 4103, true, make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.05})},
      {"SparseAdam", 4103, true, make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01})},
      {"SparseAdam", 6145, true, make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01})},
      {"dense Adam (small table, add_lookup)", 4103, false, make<optim::Adam>(optim::AdamOptions{.lr = 0.01})},
      {"dense Adam (grouped gradient)", 70001, false, make<optim::Adam>(optim::AdamOptions{.lr = 0.01})}};
  for (const Config& c : configs) {
    const TableRun one = train_table(1, c.rows, 4, c.sparse, c.opt);
    for (const int threads : kThreadCounts) {
      const std::string what = std::string(c.name) + " on [" + std::to_string(c.rows) + ", 4] at " +
                               std::to_string(threads) + " threads";
      const TableRun other = train_table(threads, c.rows, 4, c.sparse, c.opt);
      check_same_bits(one.pooled, other.pooled, what + ", bag forward");
      check_same_bits(one.grad, other.grad, what + ", gradient");
      check_same_bits(one.table, other.table, what + ", table");
    }
  }
}

namespace {

// The tied language-model step (bench_embedding's LM row, smaller): lookup, output projection
// through the same table (one sgemm each way, with OpenBLAS kept at hitch's thread count),
// cross_entropy whose rows are split over threads, Adam. Odd sizes so chunks end mid-vector.
std::vector<float> tied_lm_steps(int threads) {
  reliability::ThreadCount guard(threads);
  Generator gen(5);
  Parameter table("table", Tensor::uniform({1003, 67}, -0.1f, 0.1f, gen));
  nn::Embedding emb(table);
  const nn::Linear head(table);
  optim::Adam adam(std::vector<Parameter>{table}, {.lr = 0.01});
  std::vector<std::int64_t> tokens(301), next(301);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<std::int64_t>(gen.below(1003));
    next[i] = static_cast<std::int64_t>(gen.below(1003));
  }
  for (int step = 0; step < 3; ++step) {
    adam.zero_grad(true);
    backward(cross_entropy(head(emb(IndexTensor({301}, tokens))), IndexTensor({301}, next),
                           {.label_smoothing = step == 1 ? 0.1f : 0.0f}));
    adam.step();
  }
  return table.value().to_vector();
}

}  // namespace

TEST_CASE("bitwise: the tied LM step (matmul, cross_entropy, Adam) gives the same bits at 1, 2, 3 and 256 threads") {
  const std::vector<float> want = tied_lm_steps(1);
  for (const int threads : kThreadCounts) check_same_bits(want, tied_lm_steps(threads), fmt::format("{} threads", threads));
}
