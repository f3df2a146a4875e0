// tests/dist/test_dist_guarantees.cpp: the guarantees of issue 16 for hitch::dist (dist/dist.h),
// run by ctest under mpirun -np 2 and -np 3 (tests/CMakeLists.txt: dist_guarantees_np2/_np3).
//   1. after every step all ranks hold bitwise-identical Parameters, gradients and optimizer state;
//   2. R ranks on a global batch split R ways == one process on the whole batch, within 1e-6
//      relative (dense, sparse and tied lookups, every optimizer, two micro-batches per step);
//   3. the four public failures: pytorch#46140, pytorch#85671, pytorch#17356, Megatron-LM#844;
//   4. bad input on one rank: the same hitch::Error on every rank, nothing changed anywhere;
//   5. checkpoints: rank 0 saves, every rank loads, the resumed run is bitwise the uninterrupted one.
// An MPI program with doctest's runner: every rank runs every case in the same order, so the
// collectives inside the cases meet. Checks that decide whether a case goes on are made
// collective (everywhere()), so a failure on one rank fails every rank instead of leaving the
// others waiting in a collective. Expected values come from single-process runs inside this
// program (every rank can rebuild every rank's shard), never from numbers copied from a run. The
// comparisons run a control that they must catch: the same run without reduce_gradients()
// (guarantees 1 and 2), a resume without the optimizer's state (5), the partial sums (#844).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <hitch/dist/dist.h>
#include <hitch/hitch.h>

#include "dist/collective_checks.h"
#include "state_snapshot.h"

using namespace hitch;

namespace {

int R() { return dist::world_size(); }
int me() { return dist::rank(); }

// ---- collective checks ----------------------------------------------------------------------

using hitch_test::bits_equal;
using hitch_test::everywhere;
using hitch_test::same_bits_everywhere;

// |got - want| <= rtol * max|want|, elementwise, relative to the tensor's largest magnitude (a
// per-element ratio would be meaningless for the entries that are 0 up to rounding). Returns the
// worst ratio.
double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 0, worst = 0;
  for (const float w : want) scale = std::max(scale, std::fabs(static_cast<double>(w)));
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
  return worst == 0 ? 0 : worst / std::max(scale, 1e-30);
}
constexpr double kRtol = 1e-6;

// ---- the model: one table tied across an Embedding, an EmbeddingBag and a Linear head --------

// dense: every lookup dense, plus the tied head and a dense projection. sparse: row-sparse
// lookups only (the table's gradient stays row-sparse: SparseAdam). mixed: row-sparse lookups and
// the tied head, whose matmul makes the table's gradient dense.
enum class Lookups { dense, sparse, mixed };
const char* to_string(Lookups l) { return l == Lookups::dense ? "dense" : l == Lookups::sparse ? "sparse" : "mixed"; }

constexpr std::int64_t kRows = 40, kDim = 8, kBatch = 12, kBagLen = 4;  // kBatch: divisible by 2 and 3
constexpr auto kTableSize = static_cast<std::size_t>(kRows * kDim);

struct TiedModel : nn::Module {
  Parameter table;
  nn::Embedding emb;
  nn::EmbeddingBag bag;
  std::optional<nn::Linear> proj;  // dense D -> D (dense and mixed)
  std::optional<nn::Linear> head;  // the tie: weight = table, own bias (dense and mixed)

  TiedModel(std::uint64_t seed, Lookups lookups)
      : table(make_table(seed)),
        emb(table, {.sparse = lookups != Lookups::dense}),
        bag(table, {.mode = BagMode::Mean, .sparse = lookups != Lookups::dense}) {
    if (lookups != Lookups::sparse) {
      Generator gen(seed + 1);
      proj.emplace(kDim, kDim, true, gen);
      head.emplace(table, Parameter("bias", Tensor::uniform({kRows}, -0.1f, 0.1f, gen)));
    }
  }
  static Parameter make_table(std::uint64_t seed) {
    Generator gen(seed);
    return Parameter("table", Tensor::uniform({kRows, kDim}, -0.5f, 0.5f, gen));
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    if (proj) m.module("proj", *proj);
    if (head) m.module("head", *head);
  }
};

// The global batch of one micro-batch (the same on every rank: drawn from a generator seeded by
// step and micro-batch, so a resumed run sees the same data).
struct Batch {
  std::vector<std::int64_t> tokens, bags, targets;  // [kBatch], [kBatch, kBagLen], [kBatch]
};
Batch global_batch(int step, int micro) {
  Generator gen(1000 + static_cast<std::uint64_t>(step) * 2 + static_cast<std::uint64_t>(micro));
  Batch b;
  auto row = [&] { return static_cast<std::int64_t>(gen.below(kRows)); };
  for (std::int64_t i = 0; i < kBatch; ++i) b.tokens.push_back(row());
  for (std::int64_t i = 0; i < kBatch * kBagLen; ++i) b.bags.push_back(row());
  for (std::int64_t i = 0; i < kBatch; ++i) b.targets.push_back(row());
  return b;
}

// Samples [lo, hi) of the global batch: loss = mean((<e, pooled> - 1)^2)
// [+ cross_entropy(head(tanh(proj(e + pooled))), targets)], both means over the shard, then
// backward. With equal shards the average over ranks of the shard means is the global mean.
void micro_batch(const TiedModel& m, int step, int micro, std::int64_t lo, std::int64_t hi) {
  const Batch b = global_batch(step, micro);
  const auto l = static_cast<std::size_t>(lo), h = static_cast<std::size_t>(hi);
  const std::int64_t n = hi - lo;
  const IndexTensor tokens(std::vector<std::int64_t>(b.tokens.begin() + static_cast<std::ptrdiff_t>(l),
                                                     b.tokens.begin() + static_cast<std::ptrdiff_t>(h)));
  const IndexTensor bags(Shape{n, kBagLen},
                         std::vector<std::int64_t>(b.bags.begin() + static_cast<std::ptrdiff_t>(l * kBagLen),
                                                   b.bags.begin() + static_cast<std::ptrdiff_t>(h * kBagLen)));
  const IndexTensor targets(std::vector<std::int64_t>(b.targets.begin() + static_cast<std::ptrdiff_t>(l),
                                                      b.targets.begin() + static_cast<std::ptrdiff_t>(h)));
  const Tensor e = m.emb(tokens);
  const Tensor pooled = m.bag(bags);
  Tensor loss = mean(square(sum(mul(e, pooled), 1) - 1.0f));
  if (m.head) loss = add(loss, cross_entropy((*m.head)(tanh((*m.proj)(add(e, pooled)))), targets));
  backward(loss);
}

// ---- training runs ----------------------------------------------------------------------------

// What is compared after a step: every Parameter's values and (reduced) gradient with its layout,
// and the optimizer's state.
struct StepRecord {
  std::vector<std::vector<float>> values, grads;
  std::vector<float> sparse;  // 1 where the gradient was row-sparse
  optim::StateRecords state;

  // Everything as one vector of floats, for the bitwise comparisons across ranks.
  std::vector<float> flat() const {
    std::vector<float> out;
    for (const auto& v : values) out.insert(out.end(), v.begin(), v.end());
    for (const auto& g : grads) out.insert(out.end(), g.begin(), g.end());
    out.insert(out.end(), sparse.begin(), sparse.end());
    for (const auto& [p, rec] : state) {
      for (const auto& [name, count] : rec.counts) out.push_back(static_cast<float>(count));
      for (const auto& [name, buffer] : rec.buffers) out.insert(out.end(), buffer.begin(), buffer.end());
    }
    return out;
  }
};

StepRecord record(const std::vector<Parameter>& params, const optim::Optimizer& opt) {
  StepRecord s;
  for (const Parameter& p : params) {
    s.values.push_back(p.value().to_vector());
    s.grads.push_back(p.grad().defined() ? p.grad().to_vector() : std::vector<float>{});
    s.sparse.push_back(p.grad_store() != nullptr && p.grad_store()->is_sparse() ? 1.0f : 0.0f);
  }
  s.state = opt.export_state();
  return s;
}

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Parameter>&)>;
template <class Opt, class Options>
MakeOpt make(Options o) {
  return [o](const std::vector<Parameter>& ps) { return std::make_unique<Opt>(ps, o); };
}

struct Config {
  const char* name;
  MakeOpt make_opt;
  std::vector<Lookups> lookups;  // those the optimizer accepts
};

// SGD, SGD with momentum, Adam, AdamW, Adagrad, SparseAdam (only row-sparse gradients).
std::vector<Config> every_optimizer() {
  const std::vector<Lookups> all = {Lookups::dense, Lookups::sparse, Lookups::mixed};
  return {
      {"SGD", make<optim::SGD>(optim::SGDOptions{.lr = 0.1}), all},
      {"SGD momentum", make<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9}), all},
      {"Adam", make<optim::Adam>(optim::AdamOptions{.lr = 0.01}), all},
      {"AdamW", make<optim::AdamW>(optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1}), all},
      {"Adagrad", make<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1}), all},
      {"SparseAdam", make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01}), {Lookups::sparse}},
  };
}

enum class Mode {
  reference,    // one process, the whole global batch, no MPI
  distributed,  // this rank's shard, DataParallel, reduce_gradients() once per step
  unreduced,    // this rank's shard, DataParallel, reduce_gradients() never called (the control)
};
constexpr int kSteps = 3;

// Trains steps [first, last) on a fresh model (every rank its own initial values: DataParallel must
// broadcast rank 0's, which are the reference's) and records every step. Two micro-batches (two
// backward calls) per step before the reduction.
std::vector<StepRecord> train(Mode mode, Lookups lookups, const MakeOpt& make_opt, int steps = kSteps) {
  const bool local = mode == Mode::reference;
  const TiedModel model(local || me() == 0 ? 7 : 7 + 100 * static_cast<std::uint64_t>(me()), lookups);
  std::optional<dist::DataParallel> dp;
  if (!local) dp.emplace(model);
  const std::vector<Parameter> params = model.parameters();
  const auto opt = make_opt(params);
  const std::int64_t shard = local ? kBatch : kBatch / R();
  const std::int64_t lo = local ? 0 : shard * me();
  std::vector<StepRecord> out;
  for (int step = 0; step < steps; ++step) {
    opt->zero_grad();
    micro_batch(model, step, 0, lo, lo + shard);
    micro_batch(model, step, 1, lo, lo + shard);
    if (mode == Mode::distributed) dp->reduce_gradients();
    opt->step();
    out.push_back(record(params, *opt));
  }
  return out;
}

// Collective: every step's record has rank 0's bits on every rank.
bool bitwise_same_everywhere(const std::vector<StepRecord>& run) {
  bool all = true;
  for (const StepRecord& s : run) all = same_bits_everywhere(s.flat()) && all;
  return all;
}

// The worst relative error of run against the reference over every step, Parameter value,
// gradient and optimizer buffer; INFINITY when the layouts or the state's shape differ.
double worst_error(const std::vector<StepRecord>& run, const std::vector<StepRecord>& ref) {
  if (run.size() != ref.size()) return INFINITY;
  double worst = 0;
  for (std::size_t k = 0; k < run.size(); ++k) {
    const StepRecord& a = run[k];
    const StepRecord& b = ref[k];
    if (a.values.size() != b.values.size() || a.sparse != b.sparse || a.state.size() != b.state.size()) return INFINITY;
    for (std::size_t p = 0; p < a.values.size(); ++p) {
      worst = std::max(worst, relative_error(a.values[p], b.values[p]));
      worst = std::max(worst, relative_error(a.grads[p], b.grads[p]));
    }
    for (std::size_t p = 0; p < a.state.size(); ++p) {
      if (a.state[p].second.counts != b.state[p].second.counts) return INFINITY;
      for (const auto& [name, buffer] : b.state[p].second.buffers) {
        const auto it = a.state[p].second.buffers.find(name);
        if (it == a.state[p].second.buffers.end()) return INFINITY;
        worst = std::max(worst, relative_error(it->second, buffer));
      }
    }
  }
  return worst;
}

// ---- gradients of one rank's shard, computed locally (for the expected values of section 3) --

// The gradient each Parameter of a fresh model (seed 7) gets from samples [lo, hi) of step 0's
// two micro-batches; only the given paths contribute when restricted (Megatron-LM#844).
std::vector<std::vector<float>> shard_grads(Lookups lookups, std::int64_t lo, std::int64_t hi) {
  const TiedModel model(7, lookups);
  micro_batch(model, 0, 0, lo, hi);
  micro_batch(model, 0, 1, lo, hi);
  std::vector<std::vector<float>> out;
  for (const Parameter& p : model.parameters()) out.push_back(p.grad().to_vector());
  return out;
}

}  // namespace

// ---- 1. bitwise-identical state on every rank ------------------------------------------------

TEST_CASE("dist guarantee 1: after every step every rank holds bitwise the same Parameters, gradients and optimizer state") {
  for (const Config& c : every_optimizer())
    for (const Lookups lookups : c.lookups) {
      const std::string what = fmt::format("{}, {} lookups, {} ranks", c.name, to_string(lookups), R());
      INFO(what);
      // Each rank trains on its own shard; reduce_gradients() makes every rank's step the same.
      CHECK(bitwise_same_everywhere(train(Mode::distributed, lookups, c.make_opt)));
      // The check can fail: without the reduction the ranks' shards drive them apart.
      CHECK_FALSE(bitwise_same_everywhere(train(Mode::unreduced, lookups, c.make_opt)));
    }
}

// ---- 2. R ranks == one process on the whole batch ---------------------------------------------

TEST_CASE("dist guarantee 2: R ranks on a global batch split R ways equal one process on the whole batch within 1e-6 relative") {
  for (const Config& c : every_optimizer())
    for (const Lookups lookups : c.lookups) {
      const std::string what = fmt::format("{}, {} lookups, {} ranks", c.name, to_string(lookups), R());
      INFO(what);
      const std::vector<StepRecord> reference = train(Mode::reference, lookups, c.make_opt);
      // The runs train, and the table's gradient has the layout the lookups ask for.
      REQUIRE(reference.size() == static_cast<std::size_t>(kSteps));
      CHECK(reference.back().values[0] != TiedModel::make_table(7).value().to_vector());
      for (const StepRecord& s : reference) CHECK(s.sparse[0] == (lookups == Lookups::sparse ? 1.0f : 0.0f));
      const double err = worst_error(train(Mode::distributed, lookups, c.make_opt), reference);
      INFO("worst relative error of the distributed run: " << err);
      CHECK(err <= kRtol);
      // The comparison can fail: one rank's shard alone (no reduction) is not the whole batch.
      const double unreduced = worst_error(train(Mode::unreduced, lookups, c.make_opt), reference);
      INFO("worst relative error without reduce_gradients(): " << unreduced);
      CHECK(unreduced > 1e3 * kRtol);
    }
}

// ---- 3. the four public failures --------------------------------------------------------------

// pytorch#46140: DDP with a Parameter shared by several modules failed in backward with "Expected
// to mark a variable ready only once" (one autograd hook per use, each marking it ready). Here the
// table is held by an Embedding, an EmbeddingBag and the tied Linear head, gets gradients from
// all three in each of two backward calls, and is reduced once: listed once, all-reduced once
// (its bytes counted once), and its value is the average of the ranks' local gradients.
TEST_CASE("dist guarantee 3, pytorch#46140: a Parameter shared by three modules is reduced once, without error") {
  const TiedModel model(7, Lookups::dense);
  const dist::DataParallel dp(model);
  CHECK(dp.parameters().size() == 4);  // table, proj.weight, proj.bias, head.bias: the table once
  CHECK(dp.parameters()[0].is_same(model.table));
  CHECK(std::count_if(dp.parameters().begin(), dp.parameters().end(),
                      [&](const Parameter& p) { return p.is_same(model.table); }) == 1);
  dist::DataParallel reducer(model);  // a second wrapper of the same model: nothing registered twice
  const std::int64_t shard = kBatch / R();
  micro_batch(model, 0, 0, shard * me(), shard * (me() + 1));
  micro_batch(model, 0, 1, shard * me(), shard * (me() + 1));
  CHECK_NOTHROW(reducer.reduce_gradients());
  const dist::ReduceStats& stats = reducer.last_stats();
  std::size_t bytes = 0;
  for (const Parameter& p : model.parameters()) bytes += static_cast<std::size_t>(p.numel()) * sizeof(float);
  CHECK(stats.dense_bytes == bytes);  // each Parameter's values all-reduced once, the table too
  CHECK(stats.sparse_parameters == 0);
  // Expected: the average of every rank's local gradient (each rebuilt here from its shard).
  std::vector<std::vector<double>> sum;
  for (int r = 0; r < R(); ++r) {
    const auto g = shard_grads(Lookups::dense, shard * r, shard * (r + 1));
    sum.resize(g.size());
    for (std::size_t p = 0; p < g.size(); ++p) {
      sum[p].resize(g[p].size());
      for (std::size_t i = 0; i < g[p].size(); ++i) sum[p][i] += g[p][i];
    }
  }
  const std::vector<Parameter> params = model.parameters();
  for (std::size_t p = 0; p < params.size(); ++p) {
    std::vector<float> want;
    for (const double v : sum[p]) want.push_back(static_cast<float>(v / R()));
    INFO("Parameter " << params[p].name());
    CHECK(relative_error(params[p].grad().to_vector(), want) <= kRtol);
    CHECK(same_bits_everywhere(params[p].grad().to_vector()));
  }
  // Reduced twice (once per holding module), a sum would be R times too large: caught above.
}

// pytorch#85671: with an nn.Embedding and an nn.Linear that the forward never uses, DDP stopped
// syncing the embedding: each process updated its rows from its own data only. Here: an
// Embedding (dense, then row-sparse) next to a Linear that is never used; after SGD steps the
// table is the same on every rank and equals the single-process update on the whole batch, and the
// unused Linear has no gradient and has not moved.
TEST_CASE("dist guarantee 3, pytorch#85671: an embedding's rows are synced although the model has an unused Parameter") {
  struct WithUnused : nn::Module {
    Generator gen;
    nn::Embedding emb;
    nn::Linear unused;
    WithUnused(bool sparse, std::uint64_t seed)
        : gen(seed), emb(Parameter("emb", Tensor::zeros({4, 3})), {.sparse = sparse}), unused(1, 1, true, gen) {}
    void members(Members& m) const override {
      m.module("embedding", emb);
      m.module("fc", unused);
    }
  };
  // The data: every rank looks up its own ids, targets id + 1; loss = mean over the shard
  // of (mean of the row - target)^2. Global batch: ids 0..R*2-1 (two per rank) mod 4.
  auto step_on = [](const WithUnused& m, std::int64_t lo, std::int64_t hi) {
    std::vector<std::int64_t> ids;
    std::vector<float> targets;
    for (std::int64_t i = lo; i < hi; ++i) ids.push_back(i % 4), targets.push_back(static_cast<float>(i % 4 + 1));
    const Tensor rows = mean(m.emb(IndexTensor(ids)), 1);
    backward(mse_loss(rows, Tensor(targets)));
  };
  for (const bool sparse : {false, true}) {
    INFO((sparse ? "row-sparse" : "dense") << " embedding, " << R() << " ranks");
    const WithUnused model(sparse, 11 + static_cast<std::uint64_t>(me()));
    const WithUnused reference(sparse, 11);
    dist::DataParallel dp(model);
    optim::SGD opt(model.parameters(), {.lr = 0.1});
    optim::SGD ref_opt(reference.parameters(), {.lr = 0.1});
    const std::vector<float> unused_before = model.unused.weight.value().to_vector();
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      ref_opt.zero_grad();
      step_on(model, 2 * me(), 2 * me() + 2);
      step_on(reference, 0, 2 * R());
      dp.reduce_gradients();
      CHECK(model.emb.weight.grad_store()->is_sparse() == sparse);
      CHECK_FALSE(model.unused.weight.has_grad());  // no gradient anywhere: it stays without one
      CHECK_FALSE(model.unused.bias.has_grad());
      opt.step();
      ref_opt.step();
      CHECK(same_bits_everywhere(model.emb.weight.value().to_vector()));
      CHECK(relative_error(model.emb.weight.value().to_vector(), reference.emb.weight.value().to_vector()) <= kRtol);
    }
    CHECK(model.unused.weight.value().to_vector() == unused_before);
    // Rows 0..2R-1 mod 4 all moved (each rank's rows reached every rank).
    for (std::int64_t row = 0; row < std::min<std::int64_t>(4, 2 * R()); ++row)
      CHECK(model.emb.weight.value().at({row, 0}) != 0.0f);
  }
}

// pytorch#17356: DDP raised "sparse tensors do not have is_contiguous" in backward for
// nn.Embedding(sparse=True). Here the row-sparse gradient is accepted and reduced as rows: it stays
// row-sparse, holds the union of the ranks' rows, each row the rank-order merge divided by R (the
// contract's rule, so bitwise), and SparseAdam steps with it.
TEST_CASE("dist guarantee 3, pytorch#17356: sparse embedding gradients are accepted and reduced row-sparse") {
  const TiedModel model(7, Lookups::sparse);
  dist::DataParallel dp(model);
  optim::SparseAdam opt(model.parameters(), {.lr = 0.01});
  const std::int64_t shard = kBatch / R();
  micro_batch(model, 0, 0, shard * me(), shard * (me() + 1));
  micro_batch(model, 0, 1, shard * me(), shard * (me() + 1));
  REQUIRE(everywhere(model.table.grad_store() != nullptr && model.table.grad_store()->is_sparse()));
  CHECK_NOTHROW(dp.reduce_gradients());
  Grad& g = *model.table.grad_store();
  CHECK(g.is_sparse());
  CHECK(dp.last_stats().sparse_parameters == 1);
  CHECK(dp.last_stats().dense_bytes == 0);
  // Expected: each rank's coalesced rows (rebuilt here), summed per row in rank order, / R.
  std::vector<std::vector<float>> sum(static_cast<std::size_t>(kRows));
  for (int r = 0; r < R(); ++r) {
    const TiedModel local(7, Lookups::sparse);
    micro_batch(local, 0, 0, shard * r, shard * (r + 1));
    micro_batch(local, 0, 1, shard * r, shard * (r + 1));
    Grad& lg = *local.table.grad_store();
    lg.coalesce();
    const auto rows = lg.rows();
    const auto values = lg.row_values();
    for (std::size_t k = 0; k < rows.size(); ++k) {
      auto& acc = sum[static_cast<std::size_t>(rows[k])];
      const float* v = values.data() + k * static_cast<std::size_t>(kDim);
      if (acc.empty())
        acc.assign(v, v + kDim);
      else
        for (std::size_t j = 0; j < acc.size(); ++j) acc[j] += v[j];
    }
  }
  std::vector<std::int64_t> want_rows;
  std::vector<float> want_values;
  for (std::size_t row = 0; row < sum.size(); ++row) {
    if (sum[row].empty()) continue;
    want_rows.push_back(static_cast<std::int64_t>(row));
    for (const float v : sum[row]) want_values.push_back(v / static_cast<float>(R()));
  }
  g.coalesce();
  CHECK(std::vector<std::int64_t>(g.rows().begin(), g.rows().end()) == want_rows);
  CHECK(bits_equal(std::vector<float>(g.row_values().begin(), g.row_values().end()), want_values));
  CHECK(same_bits_everywhere(std::vector<float>(g.row_values().begin(), g.row_values().end())));
  CHECK_NOTHROW(opt.step());
  CHECK(same_bits_everywhere(model.table.value().to_vector()));
}

// NVIDIA/Megatron-LM#844: with the distributed optimizer, the word embedding's gradient and the
// tied output layer's gradient sat in different partitions, were reduce-scattered to different
// data-parallel ranks, and the later embedding all-reduce added partial sums: wrong gradients.
// Here the embedding lookup and the tied head add into one gradient, which is reduced once as the
// full sum over ranks of both paths' contributions, the same bits on every rank.
TEST_CASE("dist guarantee 3, NVIDIA/Megatron-LM#844: a tied embedding/output gradient is reduced once as the full sum") {
  // Per rank r: the lookup path's and the head path's contributions to the table, taken apart
  // with a grad hook (it sees each contribution before it is added).
  struct Paths {
    std::vector<double> lookup, head;
  };
  const std::int64_t shard = kBatch / R();
  auto paths_of = [&](std::int64_t lo, std::int64_t hi, const TiedModel& m) {
    Paths out{std::vector<double>(kTableSize), std::vector<double>(kTableSize)};
    Parameter table = m.table;
    const int id = table.add_grad_hook([&](const GradContribution& c) {
      // The lookups (embedding, embedding_bag) arrive as rows or dense; the head's matmul dense.
      std::vector<double>& into = c.node.op.starts_with("embedding") ? out.lookup : out.head;
      if (c.dense != nullptr) {
        const std::vector<float> dense = c.dense->to_vector();
        for (std::size_t i = 0; i < dense.size(); ++i) into[i] += dense[i];
      } else {
        const auto w = static_cast<std::size_t>(c.row_width);
        for (std::size_t k = 0; k < c.rows.size(); ++k)
          for (std::size_t d = 0; d < w; ++d) into[static_cast<std::size_t>(c.rows[k]) * w + d] += c.values[k * w + d];
      }
    });
    micro_batch(m, 0, 0, lo, hi);
    micro_batch(m, 0, 1, lo, hi);
    table.remove_grad_hook(id);
    return out;
  };
  const TiedModel model(7, Lookups::mixed);
  dist::DataParallel dp(model);
  const Paths mine = paths_of(shard * me(), shard * (me() + 1), model);
  dp.reduce_gradients();
  CHECK(dp.last_stats().sparse_parameters == 0);  // the head made it dense: one dense reduction
  std::vector<double> full(kTableSize, 0.0), lookups_only(kTableSize, 0.0), megatron(kTableSize, 0.0);
  for (int r = 0; r < R(); ++r) {
    const TiedModel local(7, Lookups::mixed);
    const Paths p = r == me() ? mine : paths_of(shard * r, shard * (r + 1), local);
    for (std::size_t i = 0; i < full.size(); ++i) {
      full[i] += (p.lookup[i] + p.head[i]) / R();
      lookups_only[i] += p.lookup[i] / R();
    }
  }
  // Megatron's wrong result on rank 0 of two partitions: its own lookup part plus the average head part.
  for (std::size_t i = 0; i < full.size(); ++i) megatron[i] = mine.lookup[i] + (full[i] - lookups_only[i]);
  auto as_float = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::vector<float> got = model.table.grad().to_vector();
  CHECK(relative_error(got, as_float(full)) <= kRtol);
  CHECK(same_bits_everywhere(got));
  // The expected values tell the full sum from the partial ones (so the check can fail).
  CHECK(relative_error(as_float(lookups_only), as_float(full)) > 1e3 * kRtol);
  CHECK(relative_error(as_float(megatron), as_float(full)) > 1e3 * kRtol);
}

// ---- 4. bad input on one rank --------------------------------------------------------------

TEST_CASE("dist guarantee 4: a DataParallel over a different Parameter list on one rank throws the same Error everywhere, nothing changed") {
  const int odd = R() - 1;  // the last rank differs
  const TiedModel model(7 + static_cast<std::uint64_t>(me()), Lookups::dense);
  const std::vector<Parameter> all = model.parameters();
  const hitch_test::StateSnapshot before(all, nullptr, nullptr);

  // One Parameter fewer on the odd rank.
  std::vector<Parameter> fewer = all;
  if (me() == odd) fewer.pop_back();
  CHECK_THROWS_WITH_AS((void)dist::DataParallel(fewer),
                       fmt::format("rank {}: dist::DataParallel: 3 Parameters here but 4 on rank 0", odd).c_str(), Error);
  before.check();  // nothing broadcast: every rank keeps its own values and versions

  // The same count, another shape at position 1 on the odd rank.
  std::vector<Parameter> other = all;
  const Parameter wide("wide", Tensor::zeros({kDim, kDim + 1}));
  if (me() == odd) other[1] = wide;
  CHECK_THROWS_WITH_AS((void)dist::DataParallel(other),
                       fmt::format("rank {}: dist::DataParallel: Parameter 1 ('wide') has shape [8,9] here but [8,8] on rank 0", odd).c_str(),
                       Error);
  before.check();
  CHECK(everywhere(true));  // every rank got here: no one hangs
}

TEST_CASE("dist guarantee 4: a gradient of the wrong shape on one rank throws the same Error everywhere, no gradient changed") {
  const int odd = R() - 1;
  const TiedModel model(7, Lookups::dense);
  dist::DataParallel dp(model);
  const std::int64_t shard = kBatch / R();
  micro_batch(model, 0, 0, shard * me(), shard * (me() + 1));
  Parameter proj_bias = model.proj->bias;
  if (me() == odd) {  // a gradient of shape [9] for the [8] bias, as a buggy op could leave it
    proj_bias.impl().grad = std::make_shared<Grad>(Shape{kDim + 1});
    proj_bias.impl().grad->add(Tensor::ones({kDim + 1}));
  }
  const hitch_test::StateSnapshot before(model.parameters(), nullptr, nullptr);
  CHECK_THROWS_WITH_AS(dp.reduce_gradients(),
                       fmt::format("rank {}: dist::DataParallel::reduce_gradients: Parameter 2 ('proj.bias') has a gradient "
                                   "of shape [9]; it must have the Parameter's shape [8]",
                                   odd)
                           .c_str(),
                       Error);
  before.check();  // no gradient changed on any rank (the other ranks' too)
  // Fixed, the same wrapper reduces (the failed call left nothing half done).
  if (me() == odd) proj_bias.impl().grad.reset();
  CHECK_NOTHROW(dp.reduce_gradients());
  CHECK(same_bits_everywhere(model.table.grad().to_vector()));
}

// ---- 5. checkpoints --------------------------------------------------------------------------

// Rank 0 saves the model and the optimizer after 2 of 4 steps, barrier, every rank loads into a
// fresh model (its own initial values) and a fresh optimizer, and the run goes on: steps 3 and 4
// are bitwise those of the uninterrupted run, on every rank.
TEST_CASE("dist guarantee 5: rank 0 saves, every rank loads, the resumed run is bitwise the uninterrupted one") {
  const std::string path = fmt::format("dist_guarantees_np{}.safetensors", R());
  struct Case {
    const char* name;
    Lookups lookups;
    MakeOpt make_opt;
  };
  const std::vector<Case> cases = {
      {"Adam", Lookups::mixed, make<optim::Adam>(optim::AdamOptions{.lr = 0.01})},
      {"SparseAdam", Lookups::sparse, make<optim::SparseAdam>(optim::SparseAdamOptions{.lr = 0.01})},
      {"SGD momentum", Lookups::dense, make<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9})},
  };
  constexpr int kSaveAt = 2, kTotal = 4;
  for (const Case& c : cases) {
    INFO(c.name << ", " << to_string(c.lookups) << " lookups, " << R() << " ranks");
    const std::vector<StepRecord> uninterrupted = train(Mode::distributed, c.lookups, c.make_opt, kTotal);
    const std::int64_t shard = kBatch / R();
    auto run_steps = [&](const TiedModel& m, dist::DataParallel& dp, optim::Optimizer& opt, int from, int to) {
      std::vector<StepRecord> out;
      const std::vector<Parameter> params = m.parameters();
      for (int step = from; step < to; ++step) {
        opt.zero_grad();
        micro_batch(m, step, 0, shard * me(), shard * (me() + 1));
        micro_batch(m, step, 1, shard * me(), shard * (me() + 1));
        dp.reduce_gradients();
        opt.step();
        out.push_back(record(params, opt));
      }
      return out;
    };
    {  // the first run: steps 1-2, then rank 0 saves
      const TiedModel model(me() == 0 ? 7 : 7 + 100 * static_cast<std::uint64_t>(me()), c.lookups);
      dist::DataParallel dp(model);
      const auto opt = c.make_opt(model.parameters());
      run_steps(model, dp, *opt, 0, kSaveAt);
      if (me() == 0) nn::save_checkpoint(path, model, {.optimizer = opt.get()});
      dist::barrier();
    }
    for (const bool with_optimizer : {true, false}) {
      // The resumed run: a fresh model with other values on every rank, loaded from the file.
      TiedModel model(500 + static_cast<std::uint64_t>(me()), c.lookups);
      const auto opt = c.make_opt(model.parameters());
      nn::CheckpointParts parts;
      if (with_optimizer) parts.optimizer = opt.get();
      nn::load_checkpoint(path, model, parts);
      dist::DataParallel dp(model);
      const std::vector<StepRecord> resumed = run_steps(model, dp, *opt, kSaveAt, kTotal);
      bool same = true;
      for (int k = 0; k < kTotal - kSaveAt; ++k)
        same = bits_equal(resumed[static_cast<std::size_t>(k)].flat(),
                          uninterrupted[static_cast<std::size_t>(kSaveAt + k)].flat()) && same;
      if (with_optimizer) {
        CHECK(everywhere(same));
        CHECK(bitwise_same_everywhere(resumed));
      } else {
        // The check can fail: resuming without the optimizer's state (step counts, moments,
        // momentum buffers) is another run.
        CHECK_FALSE(everywhere(same));
      }
    }
  }
  dist::barrier();
  if (me() == 0) std::filesystem::remove(path);
}

int main(int argc, char** argv) { return hitch_test::run_doctest_on_every_rank(argc, argv); }
