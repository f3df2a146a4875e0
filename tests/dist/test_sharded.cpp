// tests/dist/test_sharded.cpp: row-wise sharding over MPI (dist/sharded.h, issue 17), run by ctest
// under mpirun -np 2 and -np 3 (tests/CMakeLists.txt: sharded_<part>_np2/_np3).
//   modes, features: sharded training under R ranks == one process on the whole global batch,
//     within 1e-6 relative, after every step: the whole table (dist::gather_table), its reduced
//     gradient and the optimizer state (dist::gather_rows) (tied and bag-only; SGD, SGD with
//     momentum, Adagrad, SparseAdam, dense Adam; sum, mean, max; padding_idx, per_sample_weights,
//     max_norm, an idle rank, every looked-up row on one owner; N = 1001; two micro-batches);
//   bitwise: the same sharded run twice gives the same bits; a lookup's output is bitwise the
//     unsharded op's on the same values;
//   errors: bad input on one rank throws the same hitch::Error on every rank, nothing changed;
//   info: ShardInfo and the row initialisers.
// The tolerance, per value: |got - want| <= 1e-6 * max(|want|, min(1, m)), m the largest |want|
// of the tensor compared. That is the stricter of the issue's form (1e-6 * max(1, |want|)) and
// the data-parallel tests' form (1e-6 * m): relative for large values, and for small ones
// relative to the tensor's scale when that is below 1.
// Expected values come from single-process runs inside this program (every rank runs the
// reference on the whole global batch), never from numbers copied from a run. Checks that decide
// whether a case goes on are collective (everywhere()), so that no rank is left in a collective.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <hitch/dist/dist.h>
#include <hitch/dist/sharded.h>
#include <hitch/hitch.h>

#include "dist/collective_checks.h"
#include "state_snapshot.h"

using namespace hitch;

namespace {

int R() { return dist::world_size(); }
int me() { return dist::rank(); }
using i64 = std::int64_t;
std::size_t sz(i64 n) { return static_cast<std::size_t>(n); }

// ---- collective checks ----------------------------------------------------------------------

using hitch_test::bits_equal;
using hitch_test::error_of;
using hitch_test::everywhere;
using hitch_test::same_bits_everywhere;
using hitch_test::same_string_everywhere;

// ---- the tolerance ----------------------------------------------------------------------------

constexpr double kRtol = 1e-6;

// The worst |got - want| / max(|want|, min(1, m)) over the values (see the file's header); an
// empty string when it is <= kRtol, else where and how far.
std::string mismatch(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return fmt::format("{}: {} values, want {}", what, got.size(), want.size());
  double m = 0;
  for (const float w : want) m = std::max(m, std::fabs(static_cast<double>(w)));
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    const double scale = std::max(std::fabs(static_cast<double>(want[i])), std::min(1.0, m));
    const double ratio = diff == 0 ? 0 : scale == 0 ? INFINITY : diff / scale;
    if (!(ratio <= worst)) worst = ratio, at = i;
  }
  if (worst <= kRtol) return "";
  return fmt::format("{}: value {} is {} but {} in the reference (relative error {:.3g} > {})", what, at, got[at],
                     want[at], worst, kRtol);
}

// ---- the initial table -------------------------------------------------------------------------

constexpr float kLo = -0.5f, kHi = 0.5f;

// The whole [n, d] table init gives, built here row by row (R = 1 semantics).
std::vector<float> whole_table(const dist::RowInit& init, i64 n, i64 d) {
  std::vector<float> out(sz(n * d));
  for (i64 r = 0; r < n; ++r) init(r, std::span<float>(out.data() + r * d, sz(d)));
  return out;
}

// ---- the training setups -------------------------------------------------------------------

enum class Kind { tied, bag_only };  // tied: Embedding x EmbeddingBag; bag-only: two bag lookups
enum class Opt { sgd, momentum, adagrad, sparse_adam, adam };

const char* to_string(Opt o) {
  switch (o) {
    case Opt::sgd: return "SGD";
    case Opt::momentum: return "SGD momentum";
    case Opt::adagrad: return "Adagrad";
    case Opt::sparse_adam: return "SparseAdam";
    case Opt::adam: return "Adam";
  }
  return "?";
}

std::unique_ptr<optim::Optimizer> make_opt(Opt o, const std::vector<Parameter>& ps) {
  switch (o) {
    case Opt::sgd: return std::make_unique<optim::SGD>(ps, optim::SGDOptions{.lr = 0.1});
    case Opt::momentum: return std::make_unique<optim::SGD>(ps, optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
    case Opt::adagrad: return std::make_unique<optim::Adagrad>(ps, optim::AdagradOptions{.lr = 0.1});
    case Opt::sparse_adam: return std::make_unique<optim::SparseAdam>(ps, optim::SparseAdamOptions{.lr = 0.01});
    case Opt::adam: return std::make_unique<optim::Adam>(ps, optim::AdamOptions{.lr = 0.01});
  }
  return nullptr;
}

struct Setup {
  Kind kind = Kind::tied;
  BagMode mode = BagMode::Mean;
  bool sparse = true;  // row-sparse lookups (the bag stays dense in mode max, which refuses sparse)
  Opt opt = Opt::sgd;
  std::optional<i64> padding_idx{};
  std::optional<float> max_norm{};
  bool weights = false;  // per_sample_weights on every bag (sum, mean)
  i64 rows = 1001;       // divisible by neither 2 nor 3
  i64 dim = 6;
  i64 batch = 13;           // split 6/7 and 4/4/5: unequal slices
  int idle_rank = -1;       // this rank's slice is empty every step (the others split the batch)
  bool rank0_rows = false;  // every id a multiple of R: rank 0 owns every looked-up row
  std::uint64_t seed = 1;
  // Before step 2's zero_grad(), a micro-batch whose backward is then dropped by zero_grad()
  // without a reduction (a skipped batch, e.g. on a non-finite loss).
  bool abandoned = false;

  std::string name() const {
    std::string s = fmt::format("{}, {}, {} lookups, {}", kind == Kind::tied ? "tied" : "bag-only", to_string(mode),
                                sparse ? "sparse" : "dense", to_string(opt));
    if (padding_idx) s += fmt::format(", padding_idx {}", *padding_idx);
    if (max_norm) s += fmt::format(", max_norm {}", *max_norm);
    if (weights) s += ", per_sample_weights";
    if (idle_rank >= 0) s += fmt::format(", rank {} idle", idle_rank);
    if (rank0_rows) s += ", every row on rank 0";
    if (abandoned) s += ", a micro-batch dropped by zero_grad()";
    return s + fmt::format(", N = {}, {} ranks", rows, R());
  }
  bool bag_sparse() const { return sparse && mode != BagMode::Max; }
  dist::RowInit init() const { return dist::uniform_rows(kLo, kHi, seed); }
};

// One sample of a global batch: a token (tied) or a first bag (bag-only), and a bag.
struct Sample {
  i64 token = 0;
  std::vector<i64> first, bag;  // bag ids (first: bag-only's first lookup)
  std::vector<float> first_w, bag_w;
};

// The global batch of a step's micro-batch: the same on every rank and in the reference.
std::vector<Sample> global_batch(const Setup& s, int step, int micro) {
  Generator gen(900 + 2 * static_cast<std::uint64_t>(step) + static_cast<std::uint64_t>(micro));
  const auto world = static_cast<i64>(R());
  auto id = [&] {
    i64 r = static_cast<i64>(gen.below(static_cast<std::uint64_t>(s.rows)));
    if (s.rank0_rows) r -= r % world;
    if (s.padding_idx && gen.below(4) == 0) r = *s.padding_idx;
    return r;
  };
  auto bag = [&](std::vector<i64>& ids, std::vector<float>& w, std::uint64_t min_len) {
    const std::uint64_t len = min_len + gen.below(5 - min_len);  // [min_len, 4]: empty bags too
    for (std::uint64_t k = 0; k < len; ++k) {
      ids.push_back(id());
      w.push_back(static_cast<float>(0.5 + gen.uniform()));
    }
  };
  std::vector<Sample> out(sz(s.batch));
  for (Sample& x : out) {
    x.token = id();
    bag(x.first, x.first_w, 1);
    bag(x.bag, x.bag_w, 0);
  }
  return out;
}

// Samples [lo, hi) of rank r's slice: positions [B r / R, B (r + 1) / R), or, with an idle rank,
// nothing for it and the batch split over the others.
std::pair<i64, i64> slice(const Setup& s, int r, int world) {
  const i64 b = s.batch;
  if (s.idle_rank < 0 || world == 1) return {b * r / world, b * (r + 1) / world};
  if (r == s.idle_rank) return {0, 0};
  const i64 active = world - 1, j = r < s.idle_rank ? r : r - 1;
  return {b * j / active, b * (j + 1) / active};
}

struct Lookups {
  std::optional<nn::Embedding> emb;
  nn::EmbeddingBag bag;
  Lookups(const Setup& s, const Parameter& table)
      : bag(table, {.mode = s.mode, .padding_idx = s.padding_idx, .max_norm = s.max_norm, .sparse = s.bag_sparse()}) {
    if (s.kind == Kind::tied)
      emb.emplace(table, EmbeddingOptions{.padding_idx = s.padding_idx, .max_norm = s.max_norm, .sparse = s.sparse});
  }
};

// Forward and backward of samples [lo, hi): loss = scale * sum_i (<first_i, pooled_i> - 1)^2,
// first_i the token's row (tied) or a first bag (bag-only). scale = 1 / B in the reference and
// R / B on a rank, so the owners' average over ranks (sum / R) is the gradient of the mean over
// the global batch, whatever the slice sizes (R n_r / B times the slice mean, as
// examples/support/recommender.cpp scales for DataParallel).
void micro_batch(const Setup& s, const Lookups& m, const std::vector<Sample>& batch, i64 lo, i64 hi, float scale) {
  std::vector<i64> tokens, first, first_off, in, off;
  std::vector<float> first_w, w;
  for (i64 i = lo; i < hi; ++i) {
    const Sample& x = batch[sz(i)];
    tokens.push_back(x.token);
    first_off.push_back(static_cast<i64>(first.size()));
    first.insert(first.end(), x.first.begin(), x.first.end());
    first_w.insert(first_w.end(), x.first_w.begin(), x.first_w.end());
    off.push_back(static_cast<i64>(in.size()));
    in.insert(in.end(), x.bag.begin(), x.bag.end());
    w.insert(w.end(), x.bag_w.begin(), x.bag_w.end());
  }
  const Tensor a = s.kind == Kind::tied
                       ? (*m.emb)(IndexTensor(tokens))
                       : m.bag(IndexTensor(first), IndexTensor(first_off), s.weights ? Tensor(first_w) : Tensor{});
  const Tensor b = m.bag(IndexTensor(in), IndexTensor(off), s.weights ? Tensor(w) : Tensor{});
  backward(sum(square(sum(mul(a, b), 1) - 1.0f)) * scale);
}

constexpr int kSteps = 3;

// What is compared after a step, for the whole table (gathered on every rank).
struct StepRecord {
  std::vector<float> table, grad;  // [N, D]; grad empty when there is none
  bool has_grad = false, sparse = false;
  std::string layout_error;                         // the ranks disagree on layout or state fields
  std::map<std::string, std::int64_t> counts;        // this rank's step counts
  std::map<std::string, std::vector<float>> buffers;  // [N, D] each

  std::vector<float> flat() const {
    std::vector<float> out = table;
    out.insert(out.end(), grad.begin(), grad.end());
    out.push_back(has_grad ? 1.0f : 0.0f);
    out.push_back(sparse ? 1.0f : 0.0f);
    for (const auto& [name, c] : counts) out.push_back(static_cast<float>(c));
    for (const auto& [name, b] : buffers) out.insert(out.end(), b.begin(), b.end());
    return out;
  }
};

// One process, the whole global batch, an ordinary Parameter with the same initial values.
std::vector<StepRecord> run_reference(const Setup& s, int drop_rank = -1) {
  const Parameter table("table", Tensor(Shape{s.rows, s.dim}, whole_table(s.init(), s.rows, s.dim)));
  const Lookups m(s, table);
  const auto opt = make_opt(s.opt, {table});
  std::vector<StepRecord> out;
  for (int step = 0; step < kSteps; ++step) {
    if (s.abandoned && step == 1) micro_batch(s, m, global_batch(s, 50, 0), 0, s.batch, 1.0f / static_cast<float>(s.batch));
    opt->zero_grad();
    for (int micro = 0; micro < 2; ++micro) {
      const std::vector<Sample> batch = global_batch(s, step, micro);
      const float scale = 1.0f / static_cast<float>(s.batch);
      if (drop_rank < 0) {
        micro_batch(s, m, batch, 0, s.batch, scale);
      } else {  // the control: one rank's slice lost
        for (int r = 0; r < R(); ++r)
          if (r != drop_rank) micro_batch(s, m, batch, slice(s, r, R()).first, slice(s, r, R()).second, scale);
      }
    }
    opt->step();
    StepRecord rec;
    rec.table = table.value().to_vector();
    rec.has_grad = table.has_grad();
    if (rec.has_grad) rec.grad = table.grad().to_vector();
    rec.sparse = table.grad_store() != nullptr && table.grad_store()->is_sparse();
    const optim::StateRecords state = opt->export_state();
    if (!state.empty()) rec.counts = state[0].second.counts, rec.buffers = state[0].second.buffers;
    out.push_back(std::move(rec));
  }
  return out;
}

// Collective: the record of the sharded table after a step.
StepRecord record_sharded(const Parameter& table, const optim::Optimizer& opt) {
  const dist::ShardInfo info = *dist::sharding(table);
  StepRecord rec;
  rec.table = dist::gather_table(table).to_vector();
  const bool mine = table.has_grad();
  const bool mine_sparse = mine && table.grad_store()->is_sparse();
  rec.has_grad = everywhere(mine);
  if (!rec.has_grad && !everywhere(!mine)) rec.layout_error = "a gradient on some ranks only";
  rec.sparse = everywhere(mine_sparse);
  if (!rec.sparse && !everywhere(!mine_sparse)) rec.layout_error = "row-sparse on some ranks, dense on others";
  if (!everywhere(!mine)) {
    const Tensor local = mine ? table.grad() : Tensor::zeros({info.local_rows, info.dim});
    rec.grad = dist::gather_rows(table, local).to_vector();
  }
  const optim::StateRecords state = opt.export_state();
  const bool has_state = state.size() == 1;
  if (!everywhere(state.size() <= 1)) rec.layout_error = "state for more than one Parameter";
  if (has_state) rec.counts = state[0].second.counts;
  for (const optim::StateField& f : opt.state_fields()) {
    if (f.kind == optim::FieldKind::Count) continue;
    const std::vector<float>* buffer = nullptr;
    if (has_state) {
      const auto it = state[0].second.buffers.find(f.name);
      if (it != state[0].second.buffers.end()) buffer = &it->second;
    }
    const bool ok = buffer == nullptr || buffer->size() == sz(info.local_rows * info.dim);
    if (!everywhere(ok)) {
      rec.layout_error = fmt::format("state buffer '{}' is not [local_rows, D] on some rank", f.name);
      continue;
    }
    if (everywhere(buffer != nullptr)) {
      rec.buffers[f.name] = dist::gather_rows(table, Tensor(Shape{info.local_rows, info.dim}, *buffer)).to_vector();
    } else if (!everywhere(buffer == nullptr)) {
      rec.layout_error = fmt::format("state buffer '{}' on some ranks only", f.name);
    }
  }
  return rec;
}

// Every rank its slice, DataParallel over the sharded table, one reduce_gradients() per step.
// shards: if given, gets this rank's shard values after every step (for the bitwise test).
std::vector<StepRecord> run_sharded(const Setup& s, std::vector<std::vector<float>>* shards = nullptr) {
  const Parameter table = dist::shard_rows("table", s.rows, s.dim, s.init());
  const Lookups m(s, table);
  dist::DataParallel dp(std::vector<Parameter>{table});
  const auto opt = make_opt(s.opt, {table});
  const auto [lo, hi] = slice(s, me(), R());
  std::vector<StepRecord> out;
  const float scale = static_cast<float>(R()) / static_cast<float>(s.batch);
  for (int step = 0; step < kSteps; ++step) {
    if (s.abandoned && step == 1) micro_batch(s, m, global_batch(s, 50, 0), lo, hi, scale);
    opt->zero_grad();
    for (int micro = 0; micro < 2; ++micro) micro_batch(s, m, global_batch(s, step, micro), lo, hi, scale);
    dp.reduce_gradients();
    opt->step();
    out.push_back(record_sharded(table, *opt));
    if (shards != nullptr) shards->push_back(table.value().to_vector());
  }
  return out;
}

// "" when run matches the reference after every step (layouts, step counts exactly; values,
// gradients and state buffers within the tolerance), else the first difference.
std::string compare(const std::vector<StepRecord>& run, const std::vector<StepRecord>& ref) {
  if (run.size() != ref.size()) return "different step counts";
  for (std::size_t k = 0; k < run.size(); ++k) {
    const StepRecord& a = run[k];
    const StepRecord& b = ref[k];
    const std::string at = fmt::format("after step {}: ", k + 1);
    if (!a.layout_error.empty()) return at + a.layout_error;
    if (a.has_grad != b.has_grad) return at + (a.has_grad ? "a gradient, none in the reference" : "no gradient");
    if (a.sparse != b.sparse)
      return at + fmt::format("gradient {} but {} in the reference", a.sparse ? "row-sparse" : "dense",
                              b.sparse ? "row-sparse" : "dense");
    if (a.counts != b.counts) {
      std::string c;
      for (const auto& [n, v] : a.counts) c += fmt::format(" {}={}", n, v);
      c += " (reference:";
      for (const auto& [n, v] : b.counts) c += fmt::format(" {}={}", n, v);
      return at + "step counts on rank " + std::to_string(me()) + ":" + c + ")";
    }
    if (std::string e = mismatch("table", a.table, b.table); !e.empty()) return at + e;
    if (std::string e = mismatch("gradient", a.grad, b.grad); !e.empty()) return at + e;
    if (a.buffers.size() != b.buffers.size()) return at + "other optimizer state fields";
    for (const auto& [name, buffer] : b.buffers) {
      const auto it = a.buffers.find(name);
      if (it == a.buffers.end()) return at + "no optimizer state '" + name + "'";
      if (std::string e = mismatch(name.c_str(), it->second, buffer); !e.empty()) return at + e;
    }
  }
  return "";
}

// Collective: the sharded run equals the reference; and the comparison catches a lost slice.
void check_equivalent(const Setup& s) {
  INFO(s.name());
  const std::vector<StepRecord> reference = run_reference(s);
  const std::string diff = compare(run_sharded(s), reference);
  INFO(diff);
  CHECK(everywhere(diff.empty()));
}

std::vector<Opt> optimizers(bool sparse) {
  if (sparse) return {Opt::sgd, Opt::momentum, Opt::adagrad, Opt::sparse_adam};
  return {Opt::sgd, Opt::momentum, Opt::adagrad, Opt::adam};
}

}  // namespace

// ---- equivalence: R ranks == one process ---------------------------------------------------

TEST_CASE("sharded modes: tied and bag-only, sum/mean/max, every optimizer equal one process within 1e-6") {
  for (const Kind kind : {Kind::tied, Kind::bag_only})
    for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max})
      for (const bool sparse : {true, false}) {
        // Bag-only in mode max has no sparse lookup (max refuses sparse gradients).
        if (kind == Kind::bag_only && mode == BagMode::Max && sparse) continue;
        // The tied max model with a sparse Embedding has a dense gradient (the bag's): SparseAdam
        // refuses it, so its optimizers are the dense ones.
        const bool grad_sparse = sparse && mode != BagMode::Max;
        for (const Opt opt : optimizers(grad_sparse))
          check_equivalent({.kind = kind, .mode = mode, .sparse = sparse, .opt = opt});
      }
}

TEST_CASE("sharded modes: the comparison catches one rank's slice lost") {
  // The control: a reference without rank R-1's slice is not the reference.
  for (const Opt opt : {Opt::sgd, Opt::sparse_adam}) {
    const Setup s{.opt = opt};
    INFO(s.name());
    CHECK_FALSE(compare(run_reference(s, R() - 1), run_reference(s)).empty());
  }
}

TEST_CASE("sharded features: padding_idx, per_sample_weights, max_norm, an idle rank, rows on one owner equal one process") {
  const std::vector<Setup> setups = {
      {.mode = BagMode::Mean, .opt = Opt::sparse_adam, .padding_idx = 7},
      {.mode = BagMode::Sum, .sparse = false, .opt = Opt::adam, .padding_idx = 1000},
      {.kind = Kind::bag_only, .mode = BagMode::Max, .sparse = false, .opt = Opt::adagrad, .padding_idx = 3},
      {.mode = BagMode::Sum, .opt = Opt::adagrad, .weights = true},
      {.kind = Kind::bag_only, .mode = BagMode::Mean, .opt = Opt::sparse_adam, .weights = true},
      {.mode = BagMode::Mean, .sparse = false, .opt = Opt::adam, .padding_idx = 2, .weights = true},
      // max_norm: row norms of U[-0.5, 0.5)^6 are about 0.7, so most looked-up rows renormalise.
      {.mode = BagMode::Sum, .opt = Opt::sgd, .max_norm = 0.5f},
      {.mode = BagMode::Mean, .opt = Opt::sparse_adam, .max_norm = 0.6f},
      {.kind = Kind::bag_only, .mode = BagMode::Max, .sparse = false, .opt = Opt::adam, .max_norm = 0.5f},
      {.mode = BagMode::Sum, .sparse = false, .opt = Opt::momentum, .padding_idx = 5, .max_norm = 0.6f, .weights = true},
      // A rank whose slice is empty of lookups (it still looks up, with no ids, and owns rows).
      {.mode = BagMode::Mean, .opt = Opt::sparse_adam, .idle_rank = 0},
      {.mode = BagMode::Sum, .sparse = false, .opt = Opt::adam, .idle_rank = 1},
      {.kind = Kind::bag_only, .mode = BagMode::Sum, .opt = Opt::momentum, .idle_rank = 1},
      // Every looked-up row on rank 0: the other owners receive no row in any step.
      {.mode = BagMode::Mean, .opt = Opt::sparse_adam, .rank0_rows = true},
      {.mode = BagMode::Sum, .opt = Opt::adagrad, .rank0_rows = true},
      {.mode = BagMode::Mean, .opt = Opt::momentum, .rank0_rows = true},
      {.mode = BagMode::Mean, .sparse = false, .opt = Opt::adam, .rank0_rows = true},
      // Tables smaller than the world and barely bigger.
      {.mode = BagMode::Sum, .opt = Opt::sparse_adam, .rows = 2},
      {.mode = BagMode::Mean, .sparse = false, .opt = Opt::adam, .rows = 4},
  };
  for (const Setup& s : setups) check_equivalent(s);
}

// zero_grad() drops the gradients of lookups not yet reduced, as it drops a replicated
// Parameter's (optim/optimizer.h: "drops every gradient"): a batch skipped after its backward (no
// reduction, zero_grad()) leaves nothing behind for the next step.
TEST_CASE("sharded usage: zero_grad() drops a backward that was not reduced, as for a replicated Parameter") {
  const std::vector<Setup> setups = {
      {.mode = BagMode::Mean, .opt = Opt::sgd, .abandoned = true},
      {.mode = BagMode::Sum, .sparse = false, .opt = Opt::adam, .abandoned = true},
  };
  for (const Setup& s : setups) check_equivalent(s);
}

// Lookups see the whole table; every other op would see value(), this rank's shard. A tied output
// head (nn::Linear around the table: logits = x table^T, the tie of tied_lm) is refused with the
// tape's message, on every rank, instead of giving logits over this rank's rows only; so is
// clip_grad_norm, whose norm would be this rank's rows only.
TEST_CASE("sharded usage: a dense op on a sharded table (a tied nn::Linear head) and clip_grad_norm are refused") {
  Parameter table = dist::shard_rows("t", 1001, 4, dist::uniform_rows(kLo, kHi, 5));
  const Tensor x = Tensor::ones({2, 4});
  const nn::Linear head(table);
  const std::string got = error_of([&] { (void)head(x); });
  CHECK(same_string_everywhere(got));
  CHECK(got.ends_with(": input 1 ('t') is a shard of a table split over processes (dist::shard_rows): it holds this "
                      "rank's rows only, so only embedding and embedding_bag may read it (a tied output projection or "
                      "any other op on a sharded table is not supported)"));
  // The lookups still work on it, and its gradient is refused by clip_grad_norm, unchanged.
  const nn::Embedding emb(table, {.sparse = true});
  dist::DataParallel dp(std::vector<Parameter>{table});
  backward(sum(emb(IndexTensor{static_cast<i64>(me()), 1000})));
  dp.reduce_gradients();
  REQUIRE(everywhere(table.has_grad()));
  const std::vector<float> grad_before = table.grad().to_vector();
  const std::string clip = error_of([&] { (void)optim::clip_grad_norm({table}, 0.1); });
  CHECK(clip == "clip_grad_norm: Parameter 't' (position 0) is a shard of a table split over processes "
                "(dist::shard_rows): this rank holds only its rows' gradient, so the norm here is not the total "
                "norm; clipping sharded tables is not supported");
  CHECK(bits_equal(table.grad().to_vector(), grad_before));
  CHECK(everywhere(true));
}

// The likeliest newcomer mistake (found by a new user following docs/sharding.md): backward,
// then step() without reduce_gradients(). The table's own gradient is empty, so the step would
// silently do nothing; it is refused instead, with the fix in the message, and nothing changes.
TEST_CASE("sharded usage: step() without reduce_gradients() is refused, changing nothing") {
  Parameter table = dist::shard_rows("t", 1001, 4, dist::uniform_rows(kLo, kHi, 5));
  const nn::Embedding emb(table, {.sparse = true});
  dist::DataParallel dp(std::vector<Parameter>{table});
  optim::SparseAdam opt({table}, {.lr = 0.1});
  backward(sum(emb(IndexTensor{static_cast<i64>(me()), 1000})));
  const std::vector<float> before = table.value().to_vector();
  const std::string got = error_of([&] { opt.step(); });
  CHECK(same_string_everywhere(got));
  CHECK(got == "SparseAdam::step: Parameter 't' (group 0 position 0) is a sharded table whose lookups hold gradients "
               "not yet sent to their owners: call DataParallel::reduce_gradients() after backward and before step() "
               "(docs/sharding.md)");
  CHECK(bits_equal(table.value().to_vector(), before));
  // The fix works, and moves the table.
  dp.reduce_gradients();
  CHECK_NOTHROW(opt.step());
  // Rows me() and 1000 have owners on every rank at R = 2 and 3, so every shard moves.
  CHECK(everywhere(!bits_equal(table.value().to_vector(), before)));
}

TEST_CASE("sharded usage: an optimizer applied in backward is refused on a shard and by DataParallel") {
  Parameter table = dist::shard_rows("t", 1001, 4, dist::uniform_rows(kLo, kHi, 5));
  optim::SGD on_shard({table}, {.lr = 0.1});
  const std::string got = error_of([&] { optim::InBackward fused(on_shard); });
  CHECK(same_string_everywhere(got));
  CHECK(got == "InBackward(SGD): Parameter 't' (group 0 position 0) is a shard of a sharded table (dist::shard_rows): "
               "its gradients reach their owners through DataParallel::reduce_gradients() after backward, so use step()");
  CHECK(on_shard.in_backward() == nullptr);
  // A replicated table: DataParallel refuses it when built, and at reduce_gradients() when the
  // InBackward came after it (the gradient would be applied before it is reduced), on every rank.
  Parameter replicated("r", Tensor::zeros({6, 4}));
  optim::SGD opt({replicated}, {.lr = 0.1});
  dist::DataParallel dp(std::vector<Parameter>{replicated});
  {
    optim::InBackward fused(opt);
    const std::string built = error_of([&] { dist::DataParallel again(std::vector<Parameter>{replicated}); });
    CHECK(same_string_everywhere(built));
    CHECK(built == "rank 0: dist::DataParallel: Parameter 'r' (position 0) is updated inside backward by an optim::InBackward, "
                   "before its gradient could be reduced over the ranks; use step() after reduce_gradients()");
    const std::string reduced = error_of([&] { dp.reduce_gradients(); });
    CHECK(same_string_everywhere(reduced));
    CHECK(reduced == "rank 0: dist::DataParallel::reduce_gradients: Parameter 'r' (position 0) is updated inside backward by "
                     "an optim::InBackward, before its gradient could be reduced over the ranks; use step() after "
                     "reduce_gradients()");
  }
  CHECK_NOTHROW(dp.reduce_gradients());  // the InBackward is gone
}

// ---- bitwise --------------------------------------------------------------------------------

TEST_CASE("sharded bitwise: the same sharded run twice gives the same table and state bits") {
  const std::vector<Setup> setups = {
      {.mode = BagMode::Mean, .opt = Opt::sparse_adam, .padding_idx = 7, .max_norm = 0.6f, .weights = true},
      {.kind = Kind::bag_only, .mode = BagMode::Max, .sparse = false, .opt = Opt::adam},
      {.mode = BagMode::Sum, .opt = Opt::adagrad, .idle_rank = 1},
  };
  for (const Setup& s : setups) {
    INFO(s.name());
    std::vector<std::vector<float>> shards1, shards2;
    const std::vector<StepRecord> first = run_sharded(s, &shards1);
    const std::vector<StepRecord> second = run_sharded(s, &shards2);
    bool same = first.size() == second.size() && shards1 == shards2;
    for (std::size_t k = 0; same && k < first.size(); ++k)
      same = bits_equal(first[k].flat(), second[k].flat()) && bits_equal(shards1[k], shards2[k]);
    CHECK(everywhere(same));
    // Every rank gathered the same table (the gather is collective, not a local view).
    CHECK(same_bits_everywhere(first.back().flat()));
    // The runs trained (so the comparison compares something).
    CHECK_FALSE(bits_equal(first.back().table, whole_table(s.init(), s.rows, s.dim)));
  }
}

TEST_CASE("sharded bitwise: a lookup on a sharded table returns bitwise the unsharded op's output") {
  constexpr i64 N = 1001, D = 6;
  Generator gen(3);
  const Tensor full = Tensor::uniform({N, D}, -1.0f, 1.0f, gen);  // the same on every rank
  const Parameter table = dist::shard_rows("fwd", full);
  REQUIRE(everywhere(bits_equal(dist::gather_table(table).to_vector(), full.to_vector())));
  const Tensor plain = full.clone();
  // Rank-dependent ids with repeats; the last rank looks nothing up in the first lookups.
  Generator ids_gen(100 + static_cast<std::uint64_t>(me()));
  auto ids = [&](std::size_t n) {
    std::vector<i64> v;
    for (std::size_t k = 0; k < n; ++k) v.push_back(static_cast<i64>(ids_gen.below(N)));
    if (n > 2) v[1] = v[0];  // a repeat
    return v;
  };
  auto same = [](const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && bits_equal(a.to_vector(), b.to_vector()); };
  const bool idle = me() == R() - 1;
  {
    INFO("embedding");
    const IndexTensor x(Shape{3, 4}, ids(12));
    CHECK(everywhere(same(embedding(x, table), embedding(x, plain))));
    const IndexTensor empty_or_not = idle ? IndexTensor(std::vector<i64>{}) : IndexTensor(ids(5));
    CHECK(everywhere(same(embedding(empty_or_not, table), embedding(empty_or_not, plain))));
    const EmbeddingOptions pad{.padding_idx = x[0]};
    CHECK(everywhere(same(embedding(x, table, pad), embedding(x, plain, pad))));
    NoGradGuard no_grad;
    CHECK(everywhere(same(embedding(x, table), embedding(x, plain))));
  }
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max, BagMode::Sqrtn}) {
    INFO("embedding_bag, mode " << to_string(mode));
    const std::vector<i64> in = idle ? std::vector<i64>{} : ids(9);
    // Bags [0, 3), [3, 3) (empty), [3, 9); or one empty bag on the idle rank.
    const IndexTensor input(in), offsets = idle ? IndexTensor{0} : IndexTensor{0, 3, 3};
    std::vector<float> w;
    for (std::size_t k = 0; k < in.size(); ++k) w.push_back(0.25f * static_cast<float>(k + 1));
    const Tensor psw = mode == BagMode::Max ? Tensor{} : Tensor(w);
    const EmbeddingBagOptions o{.mode = mode};
    CHECK(everywhere(same(embedding_bag(input, offsets, table, o), embedding_bag(input, offsets, plain, o))));
    CHECK(everywhere(same(embedding_bag(input, offsets, table, o, psw), embedding_bag(input, offsets, plain, o, psw))));
    const EmbeddingBagOptions pad{.mode = mode, .padding_idx = idle ? 0 : in[2]};
    CHECK(everywhere(same(embedding_bag(input, offsets, table, pad), embedding_bag(input, offsets, plain, pad))));
    const IndexTensor last = idle ? IndexTensor{0} : IndexTensor{0, 3, 9};
    const EmbeddingBagOptions inc{.mode = mode, .include_last_offset = true};
    CHECK(everywhere(same(embedding_bag(input, last, table, inc), embedding_bag(input, last, plain, inc))));
    const IndexTensor two_d(Shape{2, 3}, ids(6));  // the 2-D form
    CHECK(everywhere(same(embedding_bag(two_d, table, o), embedding_bag(two_d, plain, o))));
  }
  {
    // max_norm: every rank's rows renormalised by their owners, in place, as the unsharded op
    // does; the reference applies the ranks' lookups in rank order to the plain table (a row
    // renormalised once is left alone by a second renormalisation: its norm is below max_norm).
    INFO("max_norm");
    const EmbeddingOptions o{.max_norm = 0.8f};
    std::vector<IndexTensor> all;
    for (int r = 0; r < R(); ++r) {
      Generator g(700 + static_cast<std::uint64_t>(r));
      std::vector<i64> v;
      for (int k = 0; k < 20; ++k) v.push_back(static_cast<i64>(g.below(N)));
      all.emplace_back(v);
    }
    const Tensor got = embedding(all[sz(me())], table, o);
    std::vector<Tensor> want;
    for (int r = 0; r < R(); ++r) want.push_back(embedding(all[sz(r)], plain, o));
    CHECK(everywhere(same(got, want[sz(me())])));
    const std::vector<float> after = dist::gather_table(table).to_vector();
    CHECK(everywhere(bits_equal(after, plain.to_vector())));
    CHECK_FALSE(bits_equal(after, full.to_vector()));  // rows were renormalised (the check can fail)
    // The shard's storage version moved on the owners of renormalised rows only if rows changed;
    // the values are the gathered table's.
  }
}

// ---- bad input --------------------------------------------------------------------------------

namespace {

constexpr i64 kN = 1001, kD = 4;

// A sharded tied model in mid-training: one step taken (optimizer state exists), then a second
// step's lookups and backward (gradient rows pending until reduce_gradients()).
struct Mid {
  Parameter table = dist::shard_rows("t", kN, kD, dist::uniform_rows(kLo, kHi, 5));
  nn::Embedding emb{table, {.max_norm = 0.6f, .sparse = true}};  // a refused call must renormalise nothing
  nn::EmbeddingBag bag{table, {.mode = BagMode::Sum, .max_norm = 0.6f, .sparse = true}};
  dist::DataParallel dp{std::vector<Parameter>{table}};
  optim::SparseAdam opt{std::vector<Parameter>{table}, {.lr = 0.01}};

  void lookups(int step) {
    Generator g(40 + 10 * static_cast<std::uint64_t>(step) + static_cast<std::uint64_t>(me()));
    std::vector<i64> a, b;
    for (int k = 0; k < 6; ++k) a.push_back(static_cast<i64>(g.below(kN))), b.push_back(static_cast<i64>(g.below(kN)));
    const Tensor e = emb(IndexTensor(a));
    const Tensor p = bag(IndexTensor(Shape{2, 3}, b));
    backward(sum(square(sum(mul(e, cat({p, p, p}, 0)), 1) - 1.0f)));
  }
  Mid() {
    opt.zero_grad();
    lookups(0);
    dp.reduce_gradients();
    opt.step();
    opt.zero_grad();
    lookups(1);
  }
  // Collective: finishes step 1 and takes step 2; the gathered table and state after it.
  std::vector<float> finish() {
    dp.reduce_gradients();
    opt.step();
    opt.zero_grad();
    lookups(2);
    dp.reduce_gradients();
    opt.step();
    std::vector<float> out = dist::gather_table(table).to_vector();
    const optim::StateRecords st = opt.export_state();
    const bool one = st.size() == 1;
    REQUIRE(everywhere(one));
    const dist::ShardInfo info = *dist::sharding(table);
    for (const auto& [name, buffer] : st[0].second.buffers) {
      const std::vector<float> g = dist::gather_rows(table, Tensor(Shape{info.local_rows, kD}, buffer)).to_vector();
      out.insert(out.end(), g.begin(), g.end());
    }
    for (const auto& [name, c] : st[0].second.counts) out.push_back(static_cast<float>(c));
    return out;
  }
};

// Collective: call() throws `want` on every rank (exactly), and the same message everywhere;
// nothing of m changed (shard values and version, gradient, optimizer state, tape); and the run
// then goes on bitwise as one that never made the call.
void check_refused(const std::function<void(Mid&)>& call, const std::string& want) {
  Mid m, twin;
  {
    const hitch_test::StateSnapshot before(std::vector<Parameter>{m.table}, &m.opt, nullptr);
    const std::string got = error_of([&] { call(m); });
    CHECK(got == want);
    CHECK(same_string_everywhere(got));
    before.check();
  }
  const std::vector<float> after = m.finish();
  const std::vector<float> control = twin.finish();
  CHECK(everywhere(bits_equal(after, control)));
}

}  // namespace

TEST_CASE("sharded errors: an id out of range or negative on one rank throws the op's Error on every rank, nothing changed") {
  const int odd = R() - 1;
  const std::string prefix = fmt::format("rank {}: ", odd);
  SUBCASE("embedding, too large") {
    check_refused([&](Mid& m) { (void)m.emb(me() == odd ? IndexTensor{1, 2, 3, kN, 4} : IndexTensor{1, 2, 3, 4, 5}); },
                  prefix + "embedding: indices[3] = 1001 is out of range for a table of 1001 rows (valid: [0, 1001))");
  }
  SUBCASE("embedding, negative") {
    check_refused([&](Mid& m) { (void)m.emb(me() == odd ? IndexTensor{-1, 2} : IndexTensor{0, 2}); },
                  prefix + "embedding: indices[0] = -1 is out of range for a table of 1001 rows (valid: [0, 1001))");
  }
  SUBCASE("embedding, 2-D indices") {
    check_refused(
        [&](Mid& m) { (void)m.emb(IndexTensor(Shape{2, 2}, {1, 2, 3, me() == odd ? 5000 : 4})); },
        prefix + "embedding: indices[1,1] = 5000 is out of range for a table of 1001 rows (valid: [0, 1001))");
  }
  SUBCASE("embedding_bag, 1-D input") {
    check_refused([&](Mid& m) { (void)m.bag(IndexTensor{5, me() == odd ? kN : 6, 7}, IndexTensor{0, 2}); },
                  prefix + "embedding_bag: input[1] = 1001 is out of range for a table of 1001 rows (valid: [0, 1001))");
  }
  SUBCASE("embedding_bag, 2-D input, negative") {
    check_refused([&](Mid& m) { (void)m.bag(IndexTensor(Shape{2, 2}, {5, 6, 7, me() == odd ? -3 : 8})); },
                  prefix + "embedding_bag: input[1,1] = -3 is out of range for a table of 1001 rows (valid: [0, 1001))");
  }
  SUBCASE("several ranks wrong: the lowest one's message") {
    // R = 2: ranks 0 and 1; R = 3: ranks 1 and 2 (rank 0 fine).
    const int first = R() == 2 ? 0 : 1;
    check_refused(
        [&](Mid& m) { (void)m.emb(me() >= first ? IndexTensor{me() == first ? kN + 1 : -2} : IndexTensor{0}); },
        fmt::format("rank {}: embedding: indices[0] = 1002 is out of range for a table of 1001 rows (valid: [0, 1001))", first));
  }
}

TEST_CASE("sharded errors: other argument errors on one rank (padding_idx, per_sample_weights, offsets) throw everywhere, nothing changed") {
  const int odd = R() - 1;
  const std::string prefix = fmt::format("rank {}: ", odd);
  SUBCASE("padding_idx out of range on one rank (the op)") {
    check_refused(
        [&](Mid& m) { (void)embedding(IndexTensor{1, 2}, m.table, {.padding_idx = me() == odd ? kN : 3}); },
        prefix + "embedding: padding_idx = 1001 is out of range for a table of 1001 rows (valid: [-1001, 1001))");
  }
  SUBCASE("padding_idx out of range on one rank (embedding_bag)") {
    check_refused(
        [&](Mid& m) {
          (void)embedding_bag(IndexTensor{1, 2}, IndexTensor{0}, m.table, {.mode = BagMode::Sum, .padding_idx = me() == odd ? -kN - 1 : 3});
        },
        prefix + "embedding_bag: padding_idx = -1002 is out of range for a table of 1001 rows (valid: [-1001, 1001))");
  }
  SUBCASE("per_sample_weights of the wrong shape on one rank") {
    check_refused(
        [&](Mid& m) { (void)m.bag(IndexTensor{1, 2, 3}, IndexTensor{0}, Tensor::ones({me() == odd ? 2 : 3})); },
        prefix + "embedding_bag: per_sample_weights must have the shape of input [3], but has shape [2]");
  }
  SUBCASE("decreasing offsets on one rank") {
    check_refused(
        [&](Mid& m) { (void)m.bag(IndexTensor{1, 2, 3}, me() == odd ? IndexTensor{0, 2, 1} : IndexTensor{0, 1, 2}); },
        prefix + "embedding_bag: offsets must be non-decreasing, but offsets[2] = 1 < offsets[1] = 2");
  }
}

TEST_CASE("sharded errors: modules around a sharded table check padding_idx against the whole table") {
  const Parameter table = dist::shard_rows("t", kN, kD, dist::uniform_rows(kLo, kHi, 5));
  const hitch_test::StateSnapshot before(std::vector<Parameter>{table}, nullptr, nullptr);
  // Valid for the whole table although beyond this rank's local rows (334 to 501 of them).
  CHECK_NOTHROW((void)nn::Embedding(table, {.padding_idx = 900}));
  CHECK_NOTHROW((void)nn::EmbeddingBag(table, {.padding_idx = -kN}));
  CHECK(nn::Embedding(table).num_embeddings() == kN);
  CHECK(nn::EmbeddingBag(table).num_embeddings() == kN);
  CHECK(nn::Embedding(table).embedding_dim() == kD);
  CHECK_THROWS_WITH_AS((void)nn::Embedding(table, {.padding_idx = kN}),
                       "Embedding: padding_idx = 1001 is out of range for a table of 1001 rows (valid: [-1001, 1001))", Error);
  CHECK_THROWS_WITH_AS((void)nn::EmbeddingBag(table, {.padding_idx = -kN - 1}),
                       "EmbeddingBag: padding_idx = -1002 is out of range for a table of 1001 rows (valid: [-1001, 1001))",
                       Error);
  before.check();
}

TEST_CASE("sharded errors: a shard configuration that differs on one rank throws the same Error everywhere") {
  const int odd = R() - 1;
  const std::string prefix = fmt::format("rank {}: ", odd);
  const dist::RowInit init = dist::uniform_rows(kLo, kHi, 5);
  const std::size_t tape = tape_size();
  auto refused = [&](const std::function<void()>& fn, const std::string& want) {
    const std::string got = error_of(fn);
    CHECK(got == want);
    CHECK(same_string_everywhere(got));
  };
  // The contract's example reads "[1000, 64] here but [1000, 32] on rank 0"; the implementation
  // names the tables too, which the checks below expect.
  refused([&] { (void)dist::shard_rows("t", me() == odd ? 1000 : kN, kD, init); },
          prefix + "dist::shard_rows: table 't' [1000, 4] here but 't' [1001, 4] on rank 0");
  refused([&] { (void)dist::shard_rows("t", kN, me() == odd ? 5 : kD, init); },
          prefix + "dist::shard_rows: table 't' [1001, 5] here but 't' [1001, 4] on rank 0");
  refused([&] { (void)dist::shard_rows(me() == odd ? "u" : "t", kN, kD, init); },
          prefix + "dist::shard_rows: table 'u' [1001, 4] here but 't' [1001, 4] on rank 0");
  refused([&] { (void)dist::shard_rows("t", me() == odd ? -1 : kN, kD, init); },
          prefix + "dist::shard_rows: num_rows and dim must be >= 0, but are -1 and 4");
  refused([&] { (void)dist::shard_rows("t", kN, me() == odd ? -2 : kD, init); },
          prefix + "dist::shard_rows: num_rows and dim must be >= 0, but are 1001 and -2");
  // From a whole table: its shape must agree (the values are not compared).
  refused([&] { (void)dist::shard_rows("t", Tensor::zeros({kN, me() == odd ? 3 : kD})); },
          prefix + "dist::shard_rows: table 't' [1001, 3] here but 't' [1001, 4] on rank 0");
  refused([&] { (void)dist::shard_rows("t", me() == odd ? Tensor::zeros({kN}) : Tensor::zeros({kN, kD})); },
          prefix + "dist::shard_rows: full must be a 2-D table [N, D], but has shape [1001]");
  // An init that throws on one rank: refused everywhere.
  const dist::RowInit throwing = [&](i64 row, std::span<float> out) {
    if (me() == odd && row >= 500) throw Error("no values for this row");
    init(row, out);
  };
  refused([&] { (void)dist::shard_rows("t", kN, kD, throwing); },
          prefix + "dist::shard_rows: init failed: no values for this row");
  // The init was not called for a table refused for its shape: a counting init sees no call.
  int calls = 0;
  const dist::RowInit counting = [&](i64, std::span<float>) { ++calls; };
  refused([&] { (void)dist::shard_rows("t", me() == odd ? 1000 : kN, kD, counting); },
          prefix + "dist::shard_rows: table 't' [1000, 4] here but 't' [1001, 4] on rank 0");
  CHECK(calls == 0);
  CHECK(tape_size() == tape);
  // And a good one still works afterwards (no rank left in a collective).
  // And a good one still works afterwards (no rank left in a collective, the ranks still agree
  // on which table is which): a lookup, backward, reduction and step.
  const Parameter ok = dist::shard_rows("t", kN, kD, init);
  CHECK(everywhere(dist::sharding(ok).has_value()));
  const nn::Embedding emb(ok, {.sparse = true});
  dist::DataParallel dp(std::vector<Parameter>{ok});
  optim::SGD sgd(std::vector<Parameter>{ok}, {.lr = 0.1});
  const Tensor e = emb(IndexTensor{static_cast<i64>(me()), 500, 1000});
  CHECK(bits_equal(e.to_vector(), embedding(IndexTensor{static_cast<i64>(me()), 500, 1000},
                                            Tensor(Shape{kN, kD}, whole_table(init, kN, kD)))
                                       .to_vector()));
  backward(sum(e));
  dp.reduce_gradients();
  sgd.step();
  CHECK(everywhere(ok.has_grad()));
}

TEST_CASE("sharded errors: lookups on different tables or of different kinds at one point throw the same Error everywhere") {
  const int odd = R() - 1;
  Parameter a = dist::shard_rows("a", kN, kD, dist::uniform_rows(kLo, kHi, 5));
  Parameter b = dist::shard_rows("b", kN, kD, dist::uniform_rows(kLo, kHi, 6));  // the same shape as a
  const nn::Embedding emb_a(a, {.max_norm = 0.6f, .sparse = true}), emb_b(b, {.max_norm = 0.6f, .sparse = true});
  const nn::EmbeddingBag bag_a(a, {.mode = BagMode::Sum, .max_norm = 0.6f, .sparse = true});
  const hitch_test::StateSnapshot before(std::vector<Parameter>{a, b}, nullptr, nullptr);
  const IndexTensor ids{1, 2, 3};
  // The messages name the tables by an internal serial number ("#n", in creation order, the same
  // on every rank): read a's from the first message; b, made next, is a's + 1.
  const std::string other_kind = error_of([&] { (void)(me() == odd ? bag_a(ids, IndexTensor{0}) : emb_a(ids)); });
  CHECK(same_string_everywhere(other_kind));
  const std::string head = fmt::format("rank {}: embedding_bag: ranks are not making the same lookup: embedding_bag on sharded table #", odd);
  REQUIRE(everywhere(other_kind.starts_with(head)));
  const long serial = std::stol(other_kind.substr(head.size()));
  CHECK(other_kind == fmt::format("{}{} ('a') here, but embedding on sharded table #{} ('a') on rank 0 (every rank must "
                                  "look up the same tables in the same order)",
                                  head, serial, serial));
  const std::string other_table = error_of([&] { (void)(me() == odd ? emb_b(ids) : emb_a(ids)); });
  CHECK(same_string_everywhere(other_table));
  CHECK(other_table == fmt::format("rank {}: embedding: ranks are not making the same lookup: embedding on sharded table #{} "
                                   "('b') here, but embedding on sharded table #{} ('a') on rank 0 (every rank must look "
                                   "up the same tables in the same order)",
                                   odd, serial + 1, serial));
  // An argument error and a mismatch at once (the contract does not say which is reported): the
  // same Error everywhere, no hang.
  const std::string both = error_of([&] { (void)(me() == odd ? emb_b(IndexTensor{kN}) : emb_a(ids)); });
  CHECK(same_string_everywhere(both));
  CHECK(both.starts_with(fmt::format("rank {}: embedding: ", odd)));
  before.check();
  // Both tables still work, and nothing was left pending by the refused calls: a lookup, backward
  // and reduce give a's gradient only its own rows.
  dist::DataParallel dp(std::vector<Parameter>{a, b});
  backward(sum(emb_a(ids)));
  dp.reduce_gradients();
  CHECK(everywhere(a.has_grad()));
  CHECK(everywhere(!b.has_grad()));
}

// ---- ShardInfo and the initialisers -------------------------------------------------------------

TEST_CASE("sharded info: ShardInfo maps rows cyclically for N = 0, 1, R - 1, 1001 at R = 2, 3") {
  // The struct alone, for both world sizes (whatever this run's R is).
  for (const int world : {2, 3})
    for (const i64 n : {i64{0}, i64{1}, i64{world - 1}, i64{1001}}) {
      i64 total = 0;
      for (int k = 0; k < world; ++k) {
        INFO("R = " << world << ", N = " << n << ", rank " << k);
        i64 mine = 0;
        for (i64 r = 0; r < n; ++r) mine += r % world == k ? 1 : 0;
        const dist::ShardInfo info{.num_rows = n, .dim = 3, .rank = k, .world_size = world, .local_rows = mine};
        CHECK(mine == (n - k + world - 1) / world);  // the header's formula
        total += mine;
        for (i64 l = 0; l < mine; ++l) {
          const i64 row = info.global_row(l);
          CHECK(row == l * world + k);
          CHECK(info.owner(row) == k);
          CHECK(info.local_index(row) == l);
        }
        for (i64 r = 0; r < n; ++r) {
          CHECK(info.owner(r) == static_cast<int>(r % world));
          CHECK(info.local_index(r) == r / world);
        }
      }
      CHECK(total == n);
    }
  // What shard_rows fills in at this run's R.
  for (const i64 n : {i64{0}, i64{1}, i64{R() - 1}, i64{1001}}) {
    INFO("N = " << n << ", R = " << R() << ", rank " << me());
    std::vector<i64> called;
    const dist::RowInit uniform = dist::uniform_rows(-1.0f, 1.0f, 9);
    const dist::RowInit init = [&](i64 row, std::span<float> out) {
      called.push_back(row);
      uniform(row, out);
    };
    const Parameter t = dist::shard_rows("t", n, 3, init);
    const std::optional<dist::ShardInfo> info = dist::sharding(t);
    REQUIRE(everywhere(info.has_value()));
    CHECK(info->num_rows == n);
    CHECK(info->dim == 3);
    CHECK(info->rank == me());
    CHECK(info->world_size == R());
    std::vector<i64> owned;
    for (i64 r = me(); r < n; r += R()) owned.push_back(r);
    CHECK(info->local_rows == static_cast<i64>(owned.size()));
    CHECK(t.shape() == Shape{info->local_rows, 3});
    CHECK(t.requires_grad());
    CHECK(called == owned);  // once per owned row, in increasing order, on the owner only
    Tensor count = Tensor::scalar(static_cast<float>(info->local_rows));
    dist::all_reduce_sum(count);
    CHECK(count.item() == static_cast<float>(n));
    // The shard holds its rows' init values; the gathered table is the whole table built here.
    const std::vector<float> whole = whole_table(uniform, n, 3);
    std::vector<float> shard;
    for (const i64 r : owned) shard.insert(shard.end(), whole.begin() + r * 3, whole.begin() + r * 3 + 3);
    CHECK(bits_equal(t.value().to_vector(), shard));
    const Tensor gathered = dist::gather_table(t);
    CHECK(gathered.shape() == Shape{n, 3});
    CHECK(bits_equal(gathered.to_vector(), whole));
  }
  CHECK_FALSE(dist::sharding(Parameter("plain", Tensor::zeros({4, 3}))).has_value());
  CHECK_FALSE(dist::sharding(Parameter()).has_value());
}

TEST_CASE("sharded info: uniform_rows and normal_rows give a table that does not depend on R") {
  constexpr i64 N = 50, D = 5;
  for (const bool normal : {false, true}) {
    INFO((normal ? "normal_rows" : "uniform_rows"));
    const dist::RowInit init = normal ? dist::normal_rows(0.5f, 2.0f, 4) : dist::uniform_rows(-2.0f, 3.0f, 4);
    const std::vector<float> whole = whole_table(init, N, D);  // R = 1: every row here
    const Parameter t = dist::shard_rows("t", N, D, init);
    CHECK(everywhere(bits_equal(dist::gather_table(t).to_vector(), whole)));
    // Row r's values depend on r alone: rows built in another order are the same.
    std::vector<float> backwards(sz(N * D));
    for (i64 r = N; r-- > 0;) init(r, std::span<float>(backwards.data() + r * D, sz(D)));
    CHECK(bits_equal(backwards, whole));
    // In range (uniform) or spread (normal); another seed gives another table.
    const float lo = *std::min_element(whole.begin(), whole.end()), hi = *std::max_element(whole.begin(), whole.end());
    if (!normal) CHECK((lo >= -2.0f && hi < 3.0f));
    CHECK(hi - lo > 1.0f);
    const dist::RowInit other = normal ? dist::normal_rows(0.5f, 2.0f, 5) : dist::uniform_rows(-2.0f, 3.0f, 5);
    CHECK_FALSE(bits_equal(whole_table(other, N, D), whole));
  }
  // gather_rows: any [local_rows, ...] tensor, in global row order.
  const Parameter t = dist::shard_rows("t", N, D, dist::uniform_rows(0.0f, 1.0f, 1));
  const i64 local = dist::sharding(t)->local_rows;
  std::vector<float> row_ids;
  for (i64 l = 0; l < local; ++l)
    for (int k = 0; k < 2; ++k) row_ids.push_back(static_cast<float>(dist::sharding(t)->global_row(l)));
  const Tensor g = dist::gather_rows(t, Tensor(Shape{local, 2}, row_ids));
  std::vector<float> want;
  for (i64 r = 0; r < N; ++r) want.push_back(static_cast<float>(r)), want.push_back(static_cast<float>(r));
  CHECK(g.shape() == Shape{N, 2});
  CHECK(bits_equal(g.to_vector(), want));
}

int main(int argc, char** argv) { return hitch_test::run_doctest_on_every_rank(argc, argv); }
