// tests/dist/test_sharded_checkpoint.cpp: dist::save_sharded_checkpoint / load_sharded_checkpoint
// under mpirun (ctest sharded_checkpoint_*). One program, three roles chosen by doctest filters:
//  * "sharded checkpoint save*" (np 2, 3; the ctest fixture): trains a tied model whose table is
//    sharded, saves it into sharded_checkpoint/R<R>/<optimizer>, and writes beside it what the
//    loaders compare with (gathered by dist::gather_table / gather_rows: the whole table, the
//    optimizer state, and the table after m more steps); checks resume at the same R bitwise;
//  * "sharded checkpoint load*" (np 1, 2, 3, and np 1 with --no-dist: no dist::init and a plain
//    module): loads every saved R into this run's R' and compares;
//  * "sharded checkpoint errors*": each refusal with its exact message, the same on every rank,
//    nothing changed.
// Gradients are set by hand from each row's global index, value and the step (what
// DataParallel::reduce_gradients leaves on the owner), so the run does not depend on lookups.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <hitch/dist/dist.h>
#include <hitch/dist/sharded.h>
#include <hitch/dist/sharded_checkpoint.h>
#include <hitch/hitch.h>
#include <hitch/nn/safetensors.h>

using namespace hitch;
namespace fs = std::filesystem;

namespace {

bool g_dist = true;  // false with --no-dist: no dist::init(), ordinary Parameters

constexpr std::int64_t kN = 11, kD = 4;  // 11 rows: 6 + 5 at R = 2, 4 + 4 + 3 at R = 3
constexpr int kTrainSteps = 3, kMoreSteps = 2;
const std::vector<std::string> kKinds = {"Adam", "SparseAdam", "Adagrad", "SGD"};
const fs::path kRoot = "sharded_checkpoint";

int R() { return g_dist ? dist::world_size() : 1; }
int me() { return g_dist ? dist::rank() : 0; }
void barrier_all() {
  if (g_dist) dist::barrier();
}
std::string at_rank(int k) { return g_dist ? "rank " + std::to_string(k) + ": " : std::string(); }

Tensor whole_table(std::uint64_t seed, std::int64_t n = kN, std::int64_t d = kD) {
  Generator g(seed);
  return Tensor::uniform({n, d}, -0.5f, 0.5f, g);
}

// The test model: one table tied into two names (emb.weight = bag.weight) and a replicated head.
struct Model : nn::Module {
  Parameter table, head;
  std::optional<Parameter> extra;
  void members(Members& m) const override {
    m.param("emb.weight", table);
    m.param("head.weight", head);
    m.param("bag.weight", table);
    if (extra) m.param("extra.weight", *extra);
  }
};

std::unique_ptr<Model> make_model(std::uint64_t seed, std::int64_t n = kN, std::int64_t d = kD, bool sharded = true) {
  auto m = std::make_unique<Model>();
  const Tensor full = whole_table(seed, n, d);
  m->table = g_dist && sharded ? dist::shard_rows("items", full) : Parameter("items", full);
  Generator g(seed + 100);
  m->head = Parameter("head", Tensor::uniform({3, 2}, -1.0f, 1.0f, g));
  return m;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, const Model& m) {
  const std::vector<Parameter> ps = m.parameters();
  if (kind == "Adam") return std::make_unique<optim::Adam>(ps, optim::AdamOptions{.lr = 0.05, .amsgrad = true});
  if (kind == "SparseAdam") return std::make_unique<optim::SparseAdam>(ps, optim::SparseAdamOptions{.lr = 0.05});
  if (kind == "Adagrad") return std::make_unique<optim::Adagrad>(ps, optim::AdagradOptions{.lr = 0.1});
  return std::make_unique<optim::SGD>(ps, optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
}

// The global row of local row i of p (its shard's, or its own when p is ordinary).
std::int64_t global_row(const Parameter& p, std::int64_t i) {
  const auto s = dist::sharding(p);
  return s ? s->global_row(i) : i;
}

// The gradient of step `step`: a function of each element's global position, value and the
// step, so any R gives every row the same gradient. SparseAdam gets row-sparse ones (rows whose
// (row + step) % 3 != 0), the others dense.
void set_gradients(Model& m, int step, bool sparse) {
  auto grad_of = [&](float v, std::int64_t row, std::int64_t col) {
    return 0.5f * v + 0.01f * static_cast<float>((row * 7 + col * 3 + step) % 11 - 5);
  };
  for (Parameter* p : {&m.table, &m.head}) {
    const std::int64_t rows = p->shape()[0], cols = p->shape()[1];
    p->impl().grad = std::make_shared<Grad>(p->shape());
    std::vector<std::int64_t> kept;
    std::vector<float> values;
    for (std::int64_t i = 0; i < rows; ++i) {
      const std::int64_t g = p == &m.table ? global_row(*p, i) : i;
      if (sparse && p == &m.table && (g + step) % 3 == 0) continue;
      kept.push_back(i);
      for (std::int64_t c = 0; c < cols; ++c) values.push_back(grad_of(p->data()[i * cols + c], g, c));
    }
    if (sparse) {
      p->impl().grad->add_rows(kept, values, true);
    } else {
      p->impl().grad->add(Tensor(p->shape(), values));
    }
  }
}

void train(Model& m, optim::Optimizer& opt, int first_step, int steps) {
  for (int s = first_step; s < first_step + steps; ++s) {
    opt.zero_grad();
    set_gradients(m, s, opt.name() == "SparseAdam");
    opt.step();
  }
}

// Collective (with dist): the whole table, or the whole of a buffer laid out like its shard.
Tensor whole(const Parameter& table, const Tensor& local) {
  return g_dist && dist::sharding(table) ? dist::gather_rows(table, local) : local.clone();
}
Tensor as_tensor(const Parameter& p, const std::vector<float>& v) { return Tensor(p.shape(), v); }

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

// Everything the loaders compare with, as named whole tensors.
struct Reference : nn::Module {
  std::vector<std::pair<std::string, Parameter>> items;
  void members(Members& m) const override {
    for (const auto& [name, p] : items) m.param(name, p);
  }
  Tensor get(const std::string& name) const {
    for (const auto& [n, p] : items)
      if (n == name) return p.value();
    FAIL("no reference tensor " << name);
    return {};
  }
};

// The reference of (model, optimizer) now: table, head, and each state field (counts as [1]).
std::vector<std::pair<std::string, Tensor>> snapshot(const Model& m, const optim::Optimizer& opt) {
  std::vector<std::pair<std::string, Tensor>> out{{"table", whole(m.table, m.table.value())},
                                                  {"head", m.head.value().clone()}};
  for (const auto& [p, record] : opt.export_state()) {
    const std::string who = p.is_same(m.table) ? "table" : "head";
    for (const auto& [field, count] : record.counts)
      out.emplace_back(who + "." + field, Tensor::full({1}, static_cast<float>(count)));
    for (const auto& [field, values] : record.buffers)
      out.emplace_back(who + "." + field, p.is_same(m.table) ? whole(m.table, as_tensor(p, values)) : as_tensor(p, values));
  }
  return out;
}

fs::path saved_dir(int world, const std::string& kind) {
  return kRoot / fmt::format("R{}", world) / kind;  // fmt: "R" + std::to_string trips GCC 12's -Wrestrict at -O2
}

struct Snapshot {  // what "nothing changed" compares: values, versions, optimizer state
  std::vector<float> table, head;
  std::uint64_t table_version = 0, head_version = 0;
  optim::StateRecords state;
  std::vector<double> lrs;
};
Snapshot snap(const Model& m, const optim::Optimizer* opt) {
  Snapshot s{m.table.value().to_vector(), m.head.value().to_vector(), m.table.value().impl().storage->version,
             m.head.value().impl().storage->version, {}, {}};
  if (opt != nullptr) {
    s.state = opt->export_state();
    for (std::size_t g = 0; g < opt->num_groups(); ++g) s.lrs.push_back(opt->lr(g));
  }
  return s;
}
void check_unchanged(const Snapshot& before, const Model& m, const optim::Optimizer* opt) {
  const Snapshot now = snap(m, opt);
  CHECK(now.table == before.table);
  CHECK(now.head == before.head);
  CHECK(now.table_version == before.table_version);
  CHECK(now.head_version == before.head_version);
  CHECK(now.lrs == before.lrs);
  REQUIRE(now.state.size() == before.state.size());
  for (std::size_t i = 0; i < now.state.size(); ++i) {
    CHECK(now.state[i].first.is_same(before.state[i].first));
    CHECK(now.state[i].second.counts == before.state[i].second.counts);
    CHECK(now.state[i].second.buffers == before.state[i].second.buffers);
  }
}

// A fresh folder for this case (rank 0 makes it; every rank then sees it).
fs::path fresh_dir(const std::string& name) {
  const fs::path dir = kRoot / ("errors-" + std::string(g_dist ? "np" : "plain") + std::to_string(R())) / name;
  if (me() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  barrier_all();
  return dir;
}

// Rank 0 copies the files of a saved folder into dir.
void copy_saved(const fs::path& from, const fs::path& dir) {
  if (me() == 0)
    for (const auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), dir / e.path().filename());
  barrier_all();
}

// Rank 0 replaces `from` by `to` (same length) in the header of dir/name: a file another save or
// tool might have written, without rebuilding it.
void edit_header(const fs::path& dir, const std::string& name, const std::string& from, const std::string& to) {
  REQUIRE(from.size() == to.size());
  if (me() == 0) {
    const fs::path f = dir / name;
    auto bytes = nn::read_whole_file("test", f.string());
    std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    const std::size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    std::ofstream(f, std::ios::binary) << text;
  }
  barrier_all();
}

}  // namespace

// ---- save (np 2, 3) -----------------------------------------------------------------------

TEST_CASE("sharded checkpoint save: each rank writes its shard; resume at the same R is bitwise") {
  REQUIRE(g_dist);
  for (const std::string& kind : kKinds) {
    CAPTURE(kind);
    const fs::path dir = saved_dir(R(), kind);
    if (me() == 0) {
      fs::remove_all(dir);
      fs::create_directories(dir);
    }
    barrier_all();
    auto model = make_model(1);
    auto opt = make_optimizer(kind, *model);
    Generator gen(7);
    (void)gen.normal();  // a Box-Muller value pending: part of the state
    train(*model, *opt, 0, kTrainSteps);
    dist::save_sharded_checkpoint(dir.string(), *model, {.optimizer = opt.get(), .generator = &gen});

    // The files: one per rank, each holding its rows only.
    const fs::path mine = dir / ("rank-" + std::to_string(me()) + "-of-" + std::to_string(R()) + ".safetensors");
    REQUIRE(fs::exists(mine));
    const std::vector<std::byte> bytes = nn::read_whole_file("test", mine.string());
    const nn::Safetensors st = nn::parse_safetensors(bytes);
    const auto info = dist::sharding(model->table);
    REQUIRE(info);
    REQUIRE(st.find("emb.weight") != nullptr);
    CHECK(st.find("emb.weight")->shape == Shape{info->local_rows, kD});
    CHECK(st.metadata.at("hitch.shard.world_size") == std::to_string(R()));
    CHECK(st.metadata.at("hitch.shard.rank") == std::to_string(me()));
    CHECK(st.metadata.at("hitch.shard.rows.emb.weight") == std::to_string(kN));
    CHECK(st.metadata.at("hitch.tie.bag.weight") == "emb.weight");
    CHECK(st.metadata.count("hitch.shard.rows.head.weight") == 0);

    // What the loaders compare with: the state saved, then the state after m more steps.
    Reference ref;
    for (auto& [name, t] : snapshot(*model, *opt)) ref.items.emplace_back("saved." + name, Parameter(name, t));
    const Generator gen_saved = gen;
    train(*model, *opt, kTrainSteps, kMoreSteps);
    for (auto& [name, t] : snapshot(*model, *opt)) ref.items.emplace_back("after." + name, Parameter(name, t));
    if (me() == 0) nn::save_checkpoint((dir.parent_path() / (kind + "-reference.safetensors")).string(), ref);

    // Resume at the same R: a fresh run (other values) loads and trains m steps: bitwise the same.
    auto fresh = make_model(2);
    auto fresh_opt = make_optimizer(kind, *fresh);
    Generator fresh_gen(99);
    dist::load_sharded_checkpoint(dir.string(), *fresh, {.optimizer = fresh_opt.get(), .generator = &fresh_gen});
    CHECK(fresh_gen.state() == gen_saved.state());
    CHECK(fresh_gen.spare() == gen_saved.spare());
    train(*fresh, *fresh_opt, kTrainSteps, kMoreSteps);
    const auto a = snapshot(*model, *opt), b = snapshot(*fresh, *fresh_opt);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CAPTURE(a[i].first);
      CHECK(a[i].first == b[i].first);
      CHECK(same_bits(a[i].second, b[i].second));
    }
    barrier_all();
  }
  // Each rank's own generator (a data stream per rank): restorable into as many ranks only.
  const fs::path dir = saved_dir(R(), "generators");
  if (me() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  barrier_all();
  auto model = make_model(1);
  Generator gen(1000 + static_cast<std::uint64_t>(me()));
  dist::save_sharded_checkpoint(dir.string(), *model, {.generator = &gen});
}

// ---- load (np 1 plain, np 1, 2, 3) ------------------------------------------------------

TEST_CASE("sharded checkpoint load: per-rank generators go back to their ranks, and only into as many ranks") {
  for (int saved : {2, 3}) {
    CAPTURE(saved);
    const fs::path dir = saved_dir(saved, "generators");
    auto model = make_model(3);
    Generator gen(5);
    if (g_dist && R() == saved) {
      dist::load_sharded_checkpoint(dir.string(), *model, {.generator = &gen});
      CHECK(gen.state() == Generator(1000 + static_cast<std::uint64_t>(me())).state());
      continue;
    }
    const Snapshot before = snap(*model, nullptr);
    const auto state = gen.state();
    CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(dir.string(), *model, {.generator = &gen}),
                         fmt::format("{}dist::load_sharded_checkpoint: the generator states in 'rank-0-of-{}.safetensors' "
                                     "and '{}' differ (each rank saved its own): they can be restored into {} ranks, as "
                                     "saved, but not into {}; leave the generator out of parts",
                                     at_rank(0), saved, (dir / fmt::format("rank-1-of-{}.safetensors", saved)).string(), saved, R())
                             .c_str(),
                         Error);
    check_unchanged(before, *model, nullptr);
    CHECK(gen.state() == state);
    dist::load_sharded_checkpoint(dir.string(), *model);  // without the generator: fine
    CHECK(same_bits(whole(model->table, model->table.value()), whole_table(1)));
  }
}

TEST_CASE("sharded checkpoint load: any saved R into this R gives the saved table and state bitwise") {
  for (int saved : {2, 3}) {
    for (const std::string& kind : kKinds) {
      CAPTURE(saved);
      CAPTURE(kind);
      const fs::path dir = saved_dir(saved, kind);
      Reference ref;
      {  // the reference's names and shapes: read them from the file itself
        const auto bytes = nn::read_whole_file("test", (dir.parent_path() / (kind + "-reference.safetensors")).string());
        const nn::Safetensors st = nn::parse_safetensors(bytes);
        for (const auto& e : st.tensors) ref.items.emplace_back(e.name, Parameter(e.name, Tensor::zeros(e.shape)));
        nn::load_checkpoint_from_bytes(bytes, ref);
      }
      auto model = make_model(3);  // other values: the load must overwrite them
      auto opt = make_optimizer(kind, *model);
      Generator gen(1234);
      dist::load_sharded_checkpoint(dir.string(), *model, {.optimizer = opt.get(), .generator = &gen});
      Generator expected_gen(7);
      (void)expected_gen.normal();
      CHECK(gen.state() == expected_gen.state());  // equal in every file: restorable into any R
      const auto now = snapshot(*model, *opt);
      std::size_t compared = 0;
      for (const auto& [name, t] : now) {
        CAPTURE(name);
        CHECK(same_bits(t, ref.get("saved." + name)));
        ++compared;
      }
      CHECK(compared == ref.items.size() / 2);  // every saved tensor has its counterpart
      if (g_dist) {  // this rank holds exactly its rows
        const auto info = dist::sharding(model->table);
        REQUIRE(info);
        CHECK(info->world_size == R());
        CHECK(model->table.shape() == Shape{info->local_rows, kD});
      } else {
        CHECK(model->table.shape() == Shape{kN, kD});
      }
      // Training on: the same as the uninterrupted run within 1e-6 (relative to the largest value).
      train(*model, *opt, kTrainSteps, kMoreSteps);
      for (const auto& [name, t] : snapshot(*model, *opt)) {
        CAPTURE(name);
        const Tensor want = ref.get("after." + name);
        REQUIRE(want.shape() == t.shape());
        float scale = 1e-30f, worst = 0.0f;
        for (std::int64_t i = 0; i < t.numel(); ++i) {
          scale = std::max(scale, std::abs(want.data()[i]));
          worst = std::max(worst, std::abs(want.data()[i] - t.data()[i]));
        }
        CHECK(worst <= 1e-6f * scale);
      }
    }
  }
}

// ---- errors -------------------------------------------------------------------------------

TEST_CASE("sharded checkpoint errors: missing file, two world sizes, two saves, different N") {
  auto model = make_model(5);
  auto opt = make_optimizer("Adam", *model);
  train(*model, *opt, 0, 1);
  const Snapshot before = snap(*model, opt.get());
  auto load = [&](const fs::path& dir) {
    dist::load_sharded_checkpoint(dir.string(), *model, {.optimizer = opt.get()});
  };
  const std::string who = at_rank(0) + "dist::load_sharded_checkpoint: ";
  {
    const fs::path dir = fresh_dir("missing");
    copy_saved(saved_dir(2, "Adam"), dir);
    if (me() == 0) fs::remove(dir / "rank-1-of-2.safetensors");
    barrier_all();
    CHECK_THROWS_WITH_AS(load(dir), (who + "'" + dir.string() + "' has no 'rank-1-of-2.safetensors' (a checkpoint saved by 2 ranks has rank-0-of-2 to rank-1-of-2)").c_str(), Error);
    check_unchanged(before, *model, opt.get());
  }
  {
    const fs::path dir = fresh_dir("empty");
    CHECK_THROWS_WITH_AS(load(dir), (who + "'" + dir.string() + "' holds no rank-<k>-of-<R>.safetensors file (save_sharded_checkpoint's)").c_str(), Error);
    const fs::path nowhere = dir / "nowhere";
    CHECK_THROWS_WITH_AS(load(nowhere), (who + "cannot list '" + nowhere.string() + "': No such file or directory").c_str(), Error);
    check_unchanged(before, *model, opt.get());
  }
  {
    const fs::path dir = fresh_dir("two-world-sizes");
    copy_saved(saved_dir(2, "Adam"), dir);
    if (me() == 0) fs::copy_file(saved_dir(3, "Adam") / "rank-0-of-3.safetensors", dir / "rank-0-of-3.safetensors");
    barrier_all();
    CHECK_THROWS_WITH_AS(load(dir), (who + "'" + dir.string() + "' holds files of different world sizes, 'rank-0-of-2.safetensors' and 'rank-0-of-3.safetensors' (a save under another number of ranks that did not finish?)").c_str(), Error);
    check_unchanged(before, *model, opt.get());
  }
  {  // a rank file of another save (same R, same N): the save ids differ
    const fs::path dir = fresh_dir("two-saves");
    copy_saved(saved_dir(2, "Adam"), dir);
    if (me() == 0) fs::copy_file(saved_dir(2, "SGD") / "rank-1-of-2.safetensors", dir / "rank-1-of-2.safetensors", fs::copy_options::overwrite_existing);
    barrier_all();
    std::string id0, id1;
    for (int k : {0, 1}) {
      const auto bytes = nn::read_whole_file("test", (dir / ("rank-" + std::to_string(k) + "-of-2.safetensors")).string());
      (k == 0 ? id0 : id1) = nn::parse_safetensors(bytes).metadata.at("hitch.shard.save_id");
    }
    CHECK_THROWS_WITH_AS(load(dir), (who + "'" + dir.string() + "' holds files of two saves: 'rank-0-of-2.safetensors' has save id '" + id0 + "' but 'rank-1-of-2.safetensors' has '" + id1 + "' (a save that did not finish on every rank?)").c_str(), Error);
    check_unchanged(before, *model, opt.get());
  }
  {  // a rank file of an N = 11 save next to one of N = 12 (saved by this run at R = 2; else a header edit)
    const fs::path dir = fresh_dir("different-n");
    if (g_dist && R() == 2) {
      auto big = make_model(6, 12);
      dist::save_sharded_checkpoint(dir.string(), *big);
    } else {
      copy_saved(saved_dir(2, "Adam"), dir);  // then patched: file 1 claims N = 12
    }
    if (me() == 0) {
      if (g_dist && R() == 2) {
        fs::copy_file(saved_dir(2, "SGD") / "rank-0-of-2.safetensors", dir / "rank-0-of-2.safetensors", fs::copy_options::overwrite_existing);
      } else {
        const fs::path f = dir / "rank-1-of-2.safetensors";
        auto bytes = nn::read_whole_file("test", f.string());
        std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        const std::string from = "\"hitch.shard.rows.emb.weight\":\"11\"", to = "\"hitch.shard.rows.emb.weight\":\"12\"";
        REQUIRE(text.find(from) != std::string::npos);
        text.replace(text.find(from), from.size(), to);
        std::ofstream(f, std::ios::binary) << text;
      }
    }
    barrier_all();
    CHECK_THROWS_WITH_AS(load(dir), (who + "the files disagree on the rows of table 'emb.weight': '11' in 'rank-0-of-2.safetensors' but '12' in 'rank-1-of-2.safetensors'").c_str(), Error);
    check_unchanged(before, *model, opt.get());
  }
}

TEST_CASE("sharded checkpoint errors: files whose metadata or tensors are not one save's") {
  auto model = make_model(5);
  const Snapshot before = snap(*model, nullptr);
  const std::string who = at_rank(0) + "dist::load_sharded_checkpoint: ";
  auto refused = [&](const fs::path& dir, const std::string& message) {
    CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(dir.string(), *model), (who + message).c_str(), Error);
    check_unchanged(before, *model, nullptr);
  };
  const std::string file1 = "rank-1-of-2.safetensors";
  auto copy_of = [&](const std::string& name) {
    const fs::path dir = fresh_dir(name);
    copy_saved(saved_dir(2, "Adam"), dir);
    return dir;
  };
  {
    const fs::path dir = fresh_dir("plain-file");
    if (me() == 0) nn::save_checkpoint((dir / "rank-0-of-1.safetensors").string(), *make_model(5, kN, kD, false));
    barrier_all();
    refused(dir, "'" + (dir / "rank-0-of-1.safetensors").string() + "' is not a file of save_sharded_checkpoint: its metadata has no 'hitch.shard.world_size'");
  }
  {
    const fs::path dir = copy_of("renamed");
    if (me() == 0) fs::copy_file(dir / "rank-0-of-2.safetensors", dir / file1, fs::copy_options::overwrite_existing);
    barrier_all();
    refused(dir, "'" + (dir / file1).string() + "' says it is rank 0 of 2 ('hitch.shard.rank', 'hitch.shard.world_size' in its metadata)");
  }
  {
    const fs::path dir = copy_of("truncated");
    if (me() == 0) std::ofstream(dir / file1, std::ios::binary) << "abc";
    barrier_all();
    refused(dir, "'" + (dir / file1).string() + "': the file has 3 bytes, fewer than the 8-byte header length that starts a safetensors file");
  }
  {
    const fs::path dir = copy_of("other-lr");
    edit_header(dir, file1, "\"hitch.optimizer.lr.0\":\"0.05\"", "\"hitch.optimizer.lr.0\":\"0.07\"");
    refused(dir, "the files disagree on metadata 'hitch.optimizer.lr.0': '0.05' in 'rank-0-of-2.safetensors' but '0.07' in 'rank-1-of-2.safetensors'");
  }
  {
    const fs::path dir = copy_of("bad-row-count");
    edit_header(dir, "rank-0-of-2.safetensors", "\"hitch.shard.rows.emb.weight\":\"11\"", "\"hitch.shard.rows.emb.weight\":\"1x\"");
    refused(dir, "'" + (dir / "rank-0-of-2.safetensors").string() + "': metadata 'hitch.shard.rows.emb.weight' = '1x' is not a row count");
  }
  {
    const fs::path dir = copy_of("tensor-renamed");
    edit_header(dir, file1, "\"head.weight\"", "\"head.weighx\"");
    refused(dir, "'" + (dir / "rank-0-of-2.safetensors").string() + "' holds 'head.weight', which 'rank-1-of-2.safetensors' does not");
  }
  {
    const fs::path dir = copy_of("head-reshaped");
    edit_header(dir, file1, "\"shape\":[3,2]", "\"shape\":[2,3]");
    refused(dir, "'" + (dir / file1).string() + "' holds 'head.weight' as F32 [2,3], but 'rank-0-of-2.safetensors' as F32 [3,2]");
  }
  {
    const fs::path dir = copy_of("shard-reshaped");
    edit_header(dir, file1, "\"shape\":[5,4]", "\"shape\":[4,5]");
    refused(dir, "'" + (dir / file1).string() + "' holds 'emb.weight' as F32 [4,5], but rank 1 of 2 holds F32 [5,4] of a [11, 4] table");
  }
}

TEST_CASE("sharded checkpoint errors: a table of another N or D, and what load_checkpoint refuses") {
  const fs::path saved = saved_dir(2, "Adam");
  const std::string who = at_rank(0) + "dist::load_sharded_checkpoint: ";
  for (const auto& [n, d] : {std::pair<std::int64_t, std::int64_t>{12, kD}, {kN, 5}}) {
    auto other = make_model(5, n, d);
    auto opt = make_optimizer("Adam", *other);
    const Snapshot before = snap(*other, opt.get());
    CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(saved.string(), *other, {.optimizer = opt.get()}),
                         (who + "'emb.weight' is a [11,4] table in '" + saved.string() + "' but " + shape_str({n, d}) +
                          " in the module" + (g_dist ? " (sharded)" : ""))
                             .c_str(),
                         Error);
    check_unchanged(before, *other, opt.get());
  }
  auto model = make_model(5);
  auto sgd = make_optimizer("SGD", *model);
  const Snapshot before = snap(*model, sgd.get());
  CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(saved.string(), *model, {.optimizer = sgd.get()}),
                       (at_rank(0) + "load_checkpoint: '" + saved.string() + "': the file holds Adam state, but the optimizer is SGD").c_str(),
                       Error);
  check_unchanged(before, *model, sgd.get());
  model->extra = Parameter("extra", Tensor::zeros({2}));
  const Snapshot without_optimizer = snap(*model, nullptr);
  CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(saved.string(), *model),
                       (at_rank(0) + "load_checkpoint: '" + saved.string() + "' does not match the module: missing keys 'extra.weight'").c_str(),
                       Error);
  check_unchanged(without_optimizer, *model, nullptr);
}

TEST_CASE("sharded checkpoint errors: a refusal on one rank only changes nothing on any rank") {
  const fs::path saved = saved_dir(2, "Adam");
  const int last = R() - 1;
  {  // the last rank's module has one more Parameter: only it refuses
    auto model = make_model(5);
    auto opt = make_optimizer("Adam", *model);
    train(*model, *opt, 0, 1);
    if (me() == last) model->extra = Parameter("extra", Tensor::zeros({2}));
    const Snapshot before = snap(*model, opt.get());
    CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(saved.string(), *model, {.optimizer = opt.get()}),
                         (at_rank(last) + "load_checkpoint: '" + saved.string() + "' does not match the module: missing keys 'extra.weight'").c_str(),
                         Error);
    check_unchanged(before, *model, opt.get());
  }
  {  // one row's second moment made negative in the file of rank 1 of 2: only its owner here refuses
    const fs::path dir = fresh_dir("negative-moment");
    copy_saved(saved, dir);
    constexpr std::int64_t row = 9, col = 2;  // row 9 = local row 4 of saved rank 1
    if (me() == 0) {
      const fs::path f = dir / "rank-1-of-2.safetensors";
      auto bytes = nn::read_whole_file("test", f.string());
      const nn::Safetensors st = nn::parse_safetensors(bytes);
      const nn::SafetensorsEntry* e = st.find("optim.emb.weight.exp_avg_sq");
      REQUIRE(e != nullptr);
      const auto at = static_cast<std::size_t>(e->bytes.data() - bytes.data()) + static_cast<std::size_t>((row / 2) * kD + col) * sizeof(float);
      const float bad = -1.0f;
      std::memcpy(bytes.data() + at, &bad, sizeof bad);
      std::ofstream(f, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    barrier_all();
    auto model = make_model(5);
    auto opt = make_optimizer("Adam", *model);
    train(*model, *opt, 0, 1);
    const Snapshot before = snap(*model, opt.get());
    const int owner = static_cast<int>(row % R());
    const std::int64_t element = (row / R()) * kD + col;  // in the owner's shard
    CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(dir.string(), *model, {.optimizer = opt.get()}),
                         (at_rank(owner) + "load_checkpoint: '" + dir.string() + "': Adam: import_state: record 0 (Parameter 'emb.weight = bag.weight'): buffer 'exp_avg_sq' has -1 at element " + std::to_string(element) + ", a value Adam never holds (valid: finite and >= 0)").c_str(),
                         Error);
    check_unchanged(before, *model, opt.get());
  }
}

TEST_CASE("sharded checkpoint errors: replicated tensors that differ between the files, and generators") {
  if (!g_dist || R() != 2) return;  // needs a 2-rank save; the np 1 and np 3 runs load it below
  const fs::path dir = fresh_dir("different-head");
  auto model = make_model(5);
  model->head.data()[1] += static_cast<float>(me());  // every rank its own head: a wrong save
  dist::save_sharded_checkpoint(dir.string(), *model);
  auto fresh = make_model(6);
  const Snapshot before = snap(*fresh, nullptr);
  const float a = make_model(5)->head.data()[1], b = a + 1.0f;  // rank 0's value and rank 1's
  CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(dir.string(), *fresh),
                       fmt::format("rank 0: dist::load_sharded_checkpoint: '{}' holds 'head.weight' with other values "
                                   "than 'rank-0-of-2.safetensors' (element 1: {} and {}); every rank must save the "
                                   "same replicated tensors",
                                   (dir / "rank-1-of-2.safetensors").string(), a, b)
                           .c_str(),
                       Error);
  check_unchanged(before, *fresh, nullptr);
}

TEST_CASE("sharded checkpoint errors: save refuses a module that differs from rank 0's, writing nothing") {
  if (!g_dist || R() < 2) return;
  const fs::path dir = fresh_dir("save-differs");
  auto model = make_model(5);
  if (me() == 1) model->head = Parameter("head", Tensor::zeros({2, 2}));
  CHECK_THROWS_WITH_AS(dist::save_sharded_checkpoint(dir.string(), *model),
                       "rank 1: dist::save_sharded_checkpoint: Parameter 'head.weight' is [2,2] here but [3,2] on rank 0",
                       Error);
  barrier_all();
  CHECK(fs::is_empty(dir));
  const fs::path nowhere = dir / "nowhere";
  model = make_model(5);
  const std::string file = (nowhere / "rank-0-of-").string() + std::to_string(R()) + ".safetensors";
  Tensor pid = Tensor::full({1}, static_cast<float>(::getpid()));  // rank 0's: its temporary file's name
  dist::broadcast(pid, 0);
  CHECK_THROWS_WITH_AS(dist::save_sharded_checkpoint(nowhere.string(), *model),
                       ("rank 0: save_checkpoint: cannot write '" + file + "': creating the temporary file '" + file +
                        ".tmp-" + std::to_string(static_cast<long>(pid.item())) + "-0' failed: No such file or directory (errno 2)")
                           .c_str(),
                       Error);
}

TEST_CASE("sharded checkpoint load: a table saved whole (an ordinary Parameter) loads into a sharded one") {
  if (!g_dist) return;
  const fs::path dir = fresh_dir("saved-whole");
  auto plain = make_model(8, kN, kD, false);  // the same ordinary table on every rank
  auto opt = make_optimizer("Adagrad", *plain);
  train(*plain, *opt, 0, 2);
  dist::save_sharded_checkpoint(dir.string(), *plain, {.optimizer = opt.get()});
  auto sharded = make_model(9);
  auto sharded_opt = make_optimizer("Adagrad", *sharded);
  dist::load_sharded_checkpoint(dir.string(), *sharded, {.optimizer = sharded_opt.get()});
  const auto a = snapshot(*plain, *opt), b = snapshot(*sharded, *sharded_opt);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(same_bits(a[i].second, b[i].second));
  }
  if (R() < 2) return;
  const fs::path bad = fresh_dir("saved-whole-differs");  // rank 1 saved another value in row 2
  const float v = plain->table.data()[2 * kD + 3];
  if (me() == 1) plain->table.data()[2 * kD + 3] += 1.0f;
  dist::save_sharded_checkpoint(bad.string(), *plain);
  const Snapshot before = snap(*sharded, nullptr);
  const int owner = 2 % R();
  CHECK_THROWS_WITH_AS(dist::load_sharded_checkpoint(bad.string(), *sharded),
                       fmt::format("rank {}: dist::load_sharded_checkpoint: '{}' holds 'emb.weight' with other values "
                                   "than 'rank-0-of-{}.safetensors' (row 2: element 3: {} and {}); every rank must save "
                                   "the same replicated tensors",
                                   owner, (bad / fmt::format("rank-1-of-{}.safetensors", R())).string(), R(),
                                   v, v + 1.0f)
                           .c_str(),
                       Error);
  check_unchanged(before, *sharded, nullptr);
}

TEST_CASE("sharded checkpoint save: a save under another R replaces the folder's files") {
  if (!g_dist) return;
  const fs::path dir = fresh_dir("replace");
  if (me() == 0)  // what a save under another R left there
    for (int k = 0; k < R() + 1; ++k)
      std::ofstream(dir / ("rank-" + std::to_string(k) + "-of-" + std::to_string(R() + 1) + ".safetensors")) << "old";
  barrier_all();
  auto model = make_model(5);
  dist::save_sharded_checkpoint(dir.string(), *model);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::vector<std::string> expected;
  for (int k = 0; k < R(); ++k) expected.push_back("rank-" + std::to_string(k) + "-of-" + std::to_string(R()) + ".safetensors");
  CHECK(names == expected);
  auto fresh = make_model(6);
  dist::load_sharded_checkpoint(dir.string(), *fresh);
  CHECK(same_bits(whole(fresh->table, fresh->table.value()), whole_table(5)));
}

TEST_CASE("sharded checkpoint nn: save_checkpoint refuses metadata keys it writes itself; check_checkpoint_from_bytes writes nothing") {
  auto model = make_model(5, kN, kD, false);
  const fs::path dir = fresh_dir("nn");
  const std::string path = (dir / ("m" + std::to_string(me()) + ".safetensors")).string();
  for (const std::string key : {"hitch.checkpoint", "hitch.tie.x", "hitch.optimizer.lr.0", "hitch.scheduler"}) {
    CHECK_THROWS_WITH_AS(nn::save_checkpoint(path, *model, {}, {{key, "1"}}),
                         ("save_checkpoint: '" + path + "': the metadata key '" + key + "' starts with 'hitch.checkpoint', 'hitch.tie.', 'hitch.optimizer' or 'hitch.scheduler', which the checkpoint writes itself").c_str(),
                         Error);
    CHECK_FALSE(fs::exists(path));
  }
  auto opt = make_optimizer("Adagrad", *model);
  train(*model, *opt, 0, 2);
  nn::save_checkpoint(path, *model, {.optimizer = opt.get()}, {{"note", "kept"}});
  auto bytes = nn::read_whole_file("test", path);
  CHECK(nn::parse_safetensors(bytes).metadata.at("note") == "kept");
  auto other = make_model(6, kN, kD, false);
  auto other_opt = make_optimizer("Adagrad", *other);
  const Snapshot before = snap(*other, other_opt.get());
  CHECK_NOTHROW(nn::check_checkpoint_from_bytes(bytes, *other, {.optimizer = other_opt.get()}, "m"));
  check_unchanged(before, *other, other_opt.get());
  // A state value the optimizer refuses: the same message as the load, and nothing written.
  const nn::Safetensors st = nn::parse_safetensors(bytes);
  const auto at = static_cast<std::size_t>(st.find("optim.emb.weight.sum")->bytes.data() - bytes.data()) + 3 * sizeof(float);
  const float bad = -2.0f;
  std::memcpy(bytes.data() + at, &bad, sizeof bad);
  const char* message = "load_checkpoint: m: Adagrad: import_state: record 0 (Parameter 'emb.weight = bag.weight'): buffer 'sum' has -2 at element 3, a value Adagrad never holds (valid: finite and >= 0)";
  CHECK_THROWS_WITH_AS(nn::check_checkpoint_from_bytes(bytes, *other, {.optimizer = other_opt.get()}, "m"), message, Error);
  check_unchanged(before, *other, other_opt.get());
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(bytes, *other, {.optimizer = other_opt.get()}, "m"), message, Error);
  check_unchanged(before, *other, other_opt.get());
}

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i)
    if (std::string(argv[i]) == "--no-dist")
      g_dist = false;
    else
      args.push_back(argv[i]);
  int n = static_cast<int>(args.size());
  char** a = args.data();
  std::optional<dist::Session> session;
  if (g_dist) session.emplace(&n, &a);
  doctest::Context context(n, a);
  return context.run();
}
