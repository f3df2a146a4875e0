// tests/dist/test_dist_basic.cpp: hitch::dist under mpirun (ctest dist_basic_np2, dist_basic_np3).
// An MPI program with doctest's runner: every rank runs every case in the same order, so the
// collectives inside the cases meet. Expected values are computed here from each rank's inputs
// (every rank can rebuild every other rank's input from its number), never copied from a run.
// The process group itself (before init, init twice, init after finalize) is checked in main().
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <hitch/dist/dist.h>
#include <hitch/hitch.h>

using namespace hitch;

namespace {

int R() { return dist::world_size(); }
int me() { return dist::rank(); }

std::uint64_t version_of(const Tensor& t) { return t.impl().storage->version; }

// Collective: true on every rank iff v (the same length everywhere) has the same bits as rank 0's.
bool same_everywhere(const std::vector<float>& v) {
  Tensor mine(Shape{static_cast<std::int64_t>(v.size())}, v);
  Tensor r0 = mine.clone();
  dist::broadcast(r0, 0);
  const bool same = std::memcmp(r0.data(), mine.data(), v.size() * sizeof(float)) == 0;
  Tensor differ = Tensor::scalar(same ? 0.0f : 1.0f);
  dist::all_reduce_sum(differ);
  return differ.item() == 0.0f;
}

std::vector<float> rows_as_floats(const Grad& g) {
  std::vector<float> out;
  for (std::int64_t r : g.rows()) out.push_back(static_cast<float>(r));
  return out;
}

// A gradient set by hand, as a backward would leave it.
Grad& fresh_grad(Parameter& p, Shape shape) {
  p.impl().grad = std::make_shared<Grad>(std::move(shape));
  return *p.impl().grad;
}
void set_dense(Parameter& p, const std::vector<float>& values) { fresh_grad(p, p.shape()).add(Tensor(p.shape(), values)); }
void set_sparse(Parameter& p, const std::vector<std::int64_t>& rows, const std::vector<float>& values) {
  fresh_grad(p, p.shape()).add_rows(rows, values, true);
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct TwoLookups : nn::Module {
  nn::Embedding emb;
  nn::EmbeddingBag bag;
  TwoLookups(nn::Embedding e, nn::EmbeddingBag b) : emb(std::move(e)), bag(std::move(b)) {}
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
  }
};

}  // namespace

TEST_CASE("dist: rank and world_size match mpirun's") {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  REQUIRE(size != nullptr);
  REQUIRE(rank != nullptr);
  CHECK(R() == std::atoi(size));
  CHECK(me() == std::atoi(rank));
  CHECK(dist::is_initialized());
  // Each rank marks its own slot: the ranks are distinct and cover [0, R).
  Tensor seen = Tensor::zeros({R()});
  seen.set({me()}, 1.0f);
  dist::all_reduce_sum(seen);
  CHECK(seen.to_vector() == std::vector<float>(static_cast<std::size_t>(R()), 1.0f));
  dist::barrier();
}

TEST_CASE("dist: broadcast gives every rank root's values; all_reduce_sum the sum") {
  auto values_of = [](int r) { return std::vector<float>{0.5f * static_cast<float>(r + 1), -1.0f * static_cast<float>(r), 3.25f}; };
  for (int root = 0; root < R(); ++root) {
    Tensor t({3}, values_of(me()));
    const auto v0 = version_of(t);
    dist::broadcast(t, root);
    CHECK(t.to_vector() == values_of(root));
    CHECK(version_of(t) > v0);
  }
  Tensor s({3}, values_of(me()));
  dist::all_reduce_sum(s);
  std::vector<float> expected(3, 0.0f);  // small multiples of 0.25: exact in any order
  for (int r = 0; r < R(); ++r)
    for (std::size_t i = 0; i < 3; ++i) expected[i] += values_of(r)[i];
  CHECK(s.to_vector() == expected);
  CHECK(same_everywhere(s.to_vector()));
}

TEST_CASE("dist: agree throws the lowest failing rank's message on every rank") {
  CHECK_NOTHROW(dist::agree(std::nullopt));
  const int last = R() - 1;
  const auto mine = me() == last ? std::optional<std::string>("boom from " + std::to_string(me())) : std::nullopt;
  CHECK_THROWS_WITH_AS(dist::agree(mine), ("rank " + std::to_string(last) + ": boom from " + std::to_string(last)).c_str(),
                       Error);
  // Several failing: the lowest wins.
  const auto all = std::optional<std::string>("error " + std::to_string(me()));
  CHECK_THROWS_WITH_AS(dist::agree(all), "rank 0: error 0", Error);
  CHECK_NOTHROW(dist::agree(std::nullopt));  // still in step
}

TEST_CASE("dist: broadcast and all_reduce_sum refuse bad input on one rank, on every rank, changing nothing") {
  const int last = R() - 1;
  const std::string at_last = "rank " + std::to_string(last) + ": ";
  Tensor t({2}, {1.0f + static_cast<float>(me()), 2.0f});
  const auto before = t.to_vector();
  const auto v0 = version_of(t);
  CHECK_THROWS_WITH_AS(dist::broadcast(t, me() == last ? 7 : 0),
                       (at_last + "dist::broadcast: root = 7 is out of range (valid: [0, " + std::to_string(R()) + "))").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(dist::broadcast(t, me() == last ? 1 : 0), (at_last + "dist::broadcast: root = 1 here but 0 on rank 0").c_str(),
                       Error);
  Tensor other = me() == last ? Tensor::zeros({3}) : t;
  CHECK_THROWS_WITH_AS(dist::broadcast(other, 0),
                       (at_last + "dist::broadcast: a tensor of shape [3] here but [2] on rank 0").c_str(), Error);
  CHECK_THROWS_WITH_AS(dist::all_reduce_sum(other),
                       (at_last + "dist::all_reduce_sum: a tensor of shape [3] here but [2] on rank 0").c_str(), Error);
  Tensor undefined;
  Tensor& arg = me() == last ? undefined : t;
  CHECK_THROWS_WITH_AS(dist::all_reduce_sum(arg),
                       (at_last + "dist::all_reduce_sum: the tensor is undefined (a default-constructed handle)").c_str(), Error);
  CHECK(t.to_vector() == before);
  CHECK(version_of(t) == v0);
}

TEST_CASE("dist: DataParallel broadcasts rank 0's Parameters when built (unless told not to)") {
  auto values_of = [](int r) { return std::vector<float>{static_cast<float>(r), 1.0f, -2.0f * static_cast<float>(r), 0.5f}; };
  Parameter a("a", Tensor({2, 2}, values_of(me())));
  Parameter b("b", Tensor({4}, values_of(me() + 10)));
  dist::DataParallel keep({a, b}, {.broadcast_parameters = false});
  CHECK(a.value().to_vector() == values_of(me()));
  dist::DataParallel dp({a, b});
  CHECK(a.value().to_vector() == values_of(0));
  CHECK(b.value().to_vector() == values_of(10));
  CHECK(dp.parameters().size() == 2);
}

TEST_CASE("dist: DataParallel averages dense gradients in buckets, the same bits on every rank") {
  // Sizes 12, 3, 5 with buckets of 8 floats: [8 of w], [4 of w, 3 of b, 1 of c], [4 of c].
  Parameter w("w", Tensor::zeros({4, 3}));
  Parameter b("b", Tensor::zeros({3}));
  Parameter c("c", Tensor::zeros({5}));
  auto contribution = [](int r, std::size_t n, float base) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>((i + 1) * static_cast<std::size_t>(r + 1)) + base;
    return v;
  };
  for (double cap_mb : {8 * 4 / (1024.0 * 1024.0), 25.0}) {
    dist::DataParallel dp({w, b, c}, {.bucket_cap_mb = cap_mb});
    std::vector<Parameter> ps{w, b, c};
    for (std::size_t k = 0; k < ps.size(); ++k)
      set_dense(ps[k], contribution(me(), static_cast<std::size_t>(ps[k].numel()), static_cast<float>(k)));
    dp.reduce_gradients();
    for (std::size_t k = 0; k < ps.size(); ++k) {
      const auto n = static_cast<std::size_t>(ps[k].numel());
      std::vector<float> expected(n, 0.0f);  // multiples of 0.25: the sum is exact in any order
      for (int r = 0; r < R(); ++r)
        for (std::size_t i = 0; i < n; ++i) expected[i] += contribution(r, n, static_cast<float>(k))[i];
      for (float& e : expected) e /= static_cast<float>(R());
      CHECK(ps[k].grad_store()->is_dense());
      CHECK(bits_equal(ps[k].grad().to_vector(), expected));
      CHECK(same_everywhere(ps[k].grad().to_vector()));
    }
    const auto& st = dp.last_stats();
    CHECK(st.dense_parameters == 3);
    CHECK(st.sparse_parameters == 0);
    CHECK(st.dense_bytes == 20 * sizeof(float));
    CHECK(st.dense_buckets == (cap_mb < 1.0 ? 3u : 1u));
  }
}

TEST_CASE("dist: DataParallel merges row-sparse gradients per row in rank order; they stay row-sparse") {
  Parameter t("table", Tensor::zeros({6, 2}));
  dist::DataParallel dp({t});
  // Rank r: rows r and r + 1 (two entries for r + 1), and row 5 with a large value of alternating
  // sign, so that the sum of row 5 depends on the order of the ranks (with 3 ranks).
  const std::vector<float> big{1.0f, 1e8f, -1e8f, 3.0f};  // (1 + 1e8) - 1e8 = 0, 1 + (1e8 - 1e8) = 1
  auto rows_of = [](int r) { return std::vector<std::int64_t>{5, r + 1, static_cast<std::int64_t>(r), r + 1}; };
  auto values_of = [&](int r) {
    const float x = static_cast<float>(r);
    return std::vector<float>{big[static_cast<std::size_t>(r) % 4], 0.5f, 1.0f + x, 2.0f, x, -x, 0.25f, 0.75f};
  };
  set_sparse(t, rows_of(me()), values_of(me()));
  dp.reduce_gradients();
  // Expected: each rank's coalesced rows (duplicates summed in entry order), then per row the
  // ranks in order, then / R.
  std::vector<std::vector<float>> sum(6);
  for (int r = 0; r < R(); ++r) {
    std::vector<std::vector<float>> own(6);
    const auto rows = rows_of(r);
    const auto vals = values_of(r);
    for (std::size_t m = 0; m < rows.size(); ++m) {
      auto& o = own[static_cast<std::size_t>(rows[m])];
      if (o.empty()) o = {vals[2 * m], vals[2 * m + 1]};
      else o = {o[0] + vals[2 * m], o[1] + vals[2 * m + 1]};
    }
    for (std::size_t row = 0; row < 6; ++row) {
      if (own[row].empty()) continue;
      if (sum[row].empty()) sum[row] = own[row];
      else sum[row] = {sum[row][0] + own[row][0], sum[row][1] + own[row][1]};
    }
  }
  std::vector<float> expected_rows, expected_values;
  for (std::size_t row = 0; row < 6; ++row) {
    if (sum[row].empty()) continue;
    expected_rows.push_back(static_cast<float>(row));
    for (float v : sum[row]) expected_values.push_back(v / static_cast<float>(R()));
  }
  Grad& g = *t.grad_store();
  CHECK(g.is_sparse());
  CHECK(rows_as_floats(g) == expected_rows);
  const std::vector<float> got(g.row_values().begin(), g.row_values().end());
  CHECK(bits_equal(got, expected_values));
  CHECK(same_everywhere(got));
  CHECK(dp.last_stats().sparse_parameters == 1);
  CHECK(dp.last_stats().dense_parameters == 0);
  CHECK(dp.last_stats().sparse_bytes == 3 * (sizeof(std::int64_t) + 2 * sizeof(float)));  // coalesced: 3 rows
}

TEST_CASE("dist: DataParallel on mixed layouts: dense wins, missing gradients join, none stays none, frozen skipped") {
  Parameter a("a", Tensor::zeros({3, 2}));  // dense on rank 0, sparse on rank 1, none elsewhere
  Parameter s("s", Tensor::zeros({4, 2}));  // sparse on rank 1 only
  Parameter n("n", Tensor::zeros({2}));     // none anywhere
  Parameter f("f", Tensor::zeros({2, 2}));  // frozen everywhere; a gradient on rank 0 only
  f.set_requires_grad(false);
  dist::DataParallel dp({a, s, n, f});
  const std::vector<float> a0{1, 2, 3, 4, 5, 6};
  const std::vector<float> a1_row2{0.5f, -8.0f};
  const std::vector<float> s1{1.5f, 2.5f, -3.0f, 4.0f};  // rows 3, 0
  if (me() == 0) {
    set_dense(a, a0);
    set_dense(f, {1, 1, 1, 1});
  }
  if (me() == 1) {
    set_sparse(a, {2}, a1_row2);
    set_sparse(s, {3, 0}, s1);
  }
  dp.reduce_gradients();
  const float RR = static_cast<float>(R());
  std::vector<float> a_expected = a0;  // + rank 1's row 2; exact
  a_expected[4] += a1_row2[0];
  a_expected[5] += a1_row2[1];
  for (float& v : a_expected) v /= RR;
  REQUIRE(a.has_grad());
  CHECK(a.grad_store()->is_dense());
  CHECK(bits_equal(a.grad().to_vector(), a_expected));
  REQUIRE(s.has_grad());
  CHECK(s.grad_store()->is_sparse());
  CHECK(rows_as_floats(*s.grad_store()) == std::vector<float>{0, 3});
  const std::vector<float> s_values(s.grad_store()->row_values().begin(), s.grad_store()->row_values().end());
  CHECK(bits_equal(s_values, {-3.0f / RR, 4.0f / RR, 1.5f / RR, 2.5f / RR}));
  CHECK(!n.has_grad());
  CHECK(f.has_grad() == (me() == 0));
  if (me() == 0) CHECK(f.grad().to_vector() == std::vector<float>{1, 1, 1, 1});
  CHECK(dp.last_stats().dense_parameters == 1);
  CHECK(dp.last_stats().sparse_parameters == 1);
  CHECK(same_everywhere(a.grad().to_vector()));
  CHECK(same_everywhere(s_values));

  // None anywhere: nothing is created, nothing sent.
  a.zero_grad();
  s.zero_grad();
  f.zero_grad();
  dp.reduce_gradients();
  CHECK(!a.has_grad());
  CHECK(!s.has_grad());
  CHECK(dp.last_stats().dense_buckets == 0);
  CHECK(dp.last_stats().sparse_parameters == 0);
}

TEST_CASE("dist: a tied table (Embedding + EmbeddingBag) is one Parameter, reduced once; SparseAdam stays in step") {
  Generator gen(5 + static_cast<std::uint64_t>(me()));  // different values per rank: DataParallel broadcasts
  Parameter table("table", Tensor::randn({7, 3}, gen));
  TwoLookups model(nn::Embedding(table, {.sparse = true}), nn::EmbeddingBag(table, {.mode = BagMode::Sum, .sparse = true}));
  dist::DataParallel dp(model);
  REQUIRE(dp.parameters().size() == 1);
  CHECK(dp.parameters()[0].is_same(table));
  optim::SparseAdam opt(model.parameters(), {.lr = 0.1});
  auto lookups = [](int r) { return IndexTensor{static_cast<std::int64_t>(r), 6, 6}; };
  auto bag_input = [](int r) { return IndexTensor{1, static_cast<std::int64_t>(r + 2), 6}; };
  const IndexTensor offsets{0, 2};
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad();
    backward(sum(model.emb(lookups(me()))) + sum(model.bag(bag_input(me()), offsets)));
    dp.reduce_gradients();
    CHECK(dp.last_stats().sparse_parameters == 1);
    CHECK(dp.last_stats().dense_parameters == 0);
    // Each lookup adds 1 to every value of its row: the average of the per-rank counts.
    std::vector<float> counts(21, 0.0f);
    for (int r = 0; r < R(); ++r) {
      for (const IndexTensor& used : {lookups(r), bag_input(r)})
        for (std::int64_t row : used.values())
          for (std::size_t k = 0; k < 3; ++k) counts[static_cast<std::size_t>(row) * 3 + k] += 1.0f;
    }
    for (float& c : counts) c /= static_cast<float>(R());
    CHECK(table.grad_store()->is_sparse());
    CHECK(bits_equal(table.grad().to_vector(), counts));
    opt.step();
    CHECK(same_everywhere(table.value().to_vector()));
  }
}

TEST_CASE("dist: DataParallel refuses bad input on one rank, on every rank, changing nothing") {
  const int last = R() - 1;
  const std::string at_last = "rank " + std::to_string(last) + ": ";
  auto values_of = [](int r) { return std::vector<float>(12, static_cast<float>(r)); };
  Parameter w("w", Tensor({4, 3}, values_of(me())));
  Parameter e("e", Tensor::zeros({5, 2}));

  SUBCASE("the Parameter lists differ") {
    Parameter other("w", Tensor::zeros({4, 4}));
    CHECK_THROWS_WITH_AS(dist::DataParallel(std::vector<Parameter>{me() == last ? other : w}),
                         (at_last + "dist::DataParallel: Parameter 0 ('w') has shape [4,4] here but [4,3] on rank 0").c_str(),
                         Error);
    CHECK_THROWS_WITH_AS(dist::DataParallel(me() == last ? std::vector<Parameter>{w, e} : std::vector<Parameter>{w}),
                         (at_last + "dist::DataParallel: 2 Parameters here but 1 on rank 0").c_str(), Error);
    CHECK_THROWS_WITH_AS(dist::DataParallel(me() == last ? std::vector<Parameter>{w, w} : std::vector<Parameter>{w, e}),
                         (at_last + "dist::DataParallel: Parameter 'w' appears twice (position 1); pass each Parameter "
                                    "once (a tied Parameter is one Parameter)").c_str(),
                         Error);
    CHECK_THROWS_WITH_AS(dist::DataParallel(me() == last ? std::vector<Parameter>{w, Parameter()} : std::vector<Parameter>{w, e}),
                         (at_last + "dist::DataParallel: position 1 is an empty Parameter handle").c_str(), Error);
    CHECK_THROWS_WITH_AS(dist::DataParallel({w}, {.bucket_cap_mb = me() == 0 ? 0.0 : 25.0}),
                         "rank 0: dist::DataParallel: bucket_cap_mb must be finite and > 0, but got 0", Error);
    CHECK(w.value().to_vector() == values_of(me()));  // nothing was broadcast
  }
  SUBCASE("a module whose parameters() throws on one rank") {
    Parameter alias = Parameter::alias_of(e, "alias");
    TwoLookups good{nn::Embedding(e), nn::EmbeddingBag(e)};
    TwoLookups bad{nn::Embedding(e), nn::EmbeddingBag(alias)};
    std::string inner;
    try {
      (void)bad.parameters();
    } catch (const Error& err) {
      inner = err.what();
    }
    REQUIRE(!inner.empty());
    CHECK_THROWS_WITH_AS(dist::DataParallel(me() == last ? static_cast<const nn::Module&>(bad) : good),
                         (at_last + "dist::DataParallel: module.parameters() failed: " + inner).c_str(), Error);
  }
  SUBCASE("a gradient of the wrong shape, or a Parameter frozen on some ranks only") {
    dist::DataParallel dp({w, e});
    set_dense(w, values_of(me() + 1));
    set_sparse(e, {1}, {2.0f, 3.0f});
    if (me() == last) fresh_grad(w, {2, 2}).add(Tensor::ones({2, 2}));
    CHECK_THROWS_WITH_AS(dp.reduce_gradients(),
                         (at_last + "dist::DataParallel::reduce_gradients: Parameter 0 ('w') has a gradient of shape "
                                    "[2,2]; it must have the Parameter's shape [4,3]").c_str(),
                         Error);
    if (me() == last) set_dense(w, values_of(me() + 1));
    if (me() == last) w.set_requires_grad(false);
    CHECK_THROWS_WITH_AS(dp.reduce_gradients(),
                         "dist::DataParallel::reduce_gradients: Parameter 0 ('w') requires grad on some ranks and is "
                         "frozen on others; freeze it on every rank",
                         Error);
    CHECK(w.grad().to_vector() == values_of(me() + 1));
    CHECK(e.grad_store()->is_sparse());
    CHECK(e.grad_store()->num_blocks() == 1);
    CHECK(rows_as_floats(*e.grad_store()) == std::vector<float>{1});
    CHECK(e.grad().to_vector() == std::vector<float>{0, 0, 2, 3, 0, 0, 0, 0, 0, 0});
  }
}

TEST_CASE("dist: init twice is refused") {
  CHECK_THROWS_WITH_AS(dist::init(), "dist::init: already initialised (call dist::finalize() first)", Error);
  CHECK(dist::is_initialized());
}

namespace {
int failures = 0;
void expect_error(const char* what, void (*fn)(), const std::string& message) {
  try {
    fn();
  } catch (const Error& e) {
    if (e.what() == message) return;
    std::fprintf(stderr, "%s: message '%s', expected '%s'\n", what, e.what(), message.c_str());
    ++failures;
    return;
  }
  std::fprintf(stderr, "%s: no hitch::Error\n", what);
  ++failures;
}
}  // namespace

int main(int argc, char** argv) {
  expect_error("rank before init", [] { (void)dist::rank(); }, "dist::rank: dist::init() was not called");
  expect_error("finalize before init", [] { dist::finalize(); }, "dist::finalize: dist::init() was not called");
  int result = 0;
  {
    dist::Session session(&argc, &argv);
    doctest::Context context(argc, argv);
    result = context.run();
    // Every rank's verdict: a failure anywhere fails every rank.
    Tensor failed = Tensor::scalar(result != 0 ? 1.0f : 0.0f);
    dist::all_reduce_sum(failed);
    if (failed.item() != 0.0f) result = 1;
  }
  if (dist::is_initialized()) {
    std::fprintf(stderr, "is_initialized() after the Session ended\n");
    ++failures;
  }
  expect_error("init after finalize", [] { dist::init(); },
               "dist::init: MPI was finalised already in this process; MPI cannot be initialised again");
  return result != 0 || failures != 0 ? 1 : 0;
}
