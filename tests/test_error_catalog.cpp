// The entries of docs/errors.md that no other test covers: each asserts the exact message and
// that nothing changed (values, versions, gradients, optimizer state, the tape, the thread
// count, a generator). The other entries name their tests in docs/errors.md; the last test case
// here checks that every `throw Error(` in the library is catalogued there.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <hitch/hitch.h>
#include "state_snapshot.h"

using namespace hitch;

namespace {
// What a rejected call must leave as it was (tests/state_snapshot.h): a tensor's or a module's
// values, versions and gradients, an optimizer's lrs and state, this thread's default generator,
// the tape and the thread count. grad is the first tensor's gradient, for rows that compare it.
struct Unchanged : hitch_test::StateSnapshot {
  explicit Unchanged(const Tensor& x, const optim::Optimizer* o = nullptr)
      : StateSnapshot(std::vector<Tensor>{x}, o, &default_generator()), grad(grads.front()) {}
  explicit Unchanged(const nn::Module& m, const optim::Optimizer* o = nullptr)
      : StateSnapshot(m.parameters(), o, &default_generator()), grad(grads.front()) {}
  std::vector<float> grad;
};

Parameter trained(const char* name) {
  Parameter p(name, Tensor({2, 2}, {1, 2, 3, 4}));
  backward(sum(p.value() * p.value()));
  return p;
}

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("error catalog: Tensor and IndexTensor construction") {
  Parameter w = trained("w");
  const Unchanged before(w.value());
  CHECK_THROWS_WITH_AS(Tensor({2, -1}, {}), "Tensor: shape [2,-1] has a negative size -1 at dim 1", Error);
  CHECK_THROWS_WITH_AS(Tensor::full({-3}, 1.0f), "Tensor::full: shape [-3] has a negative size -3 at dim 0", Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({2, -1}), "Tensor::empty: shape [2,-1] has a negative size -1 at dim 1", Error);
  CHECK_THROWS_WITH_AS(IndexTensor({-1}, {}), "IndexTensor: shape [-1] has a negative size -1 at dim 0", Error);
  CHECK_THROWS_WITH_AS(IndexTensor({2, 2}, {1, 2, 3}), "IndexTensor: shape [2,2] needs 4 values, got 3", Error);
  CHECK_THROWS_WITH_AS(IndexTensor::arange(0, 3, 0), "IndexTensor::arange: step must be non-zero, got 0", Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(0, 3, 0),
                       "Tensor::arange: start, end and step must be finite and step non-zero, got start 0, end 3 and "
                       "step 0",
                       Error);
  Generator gen(1);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, 1.0f, 0.0f, gen),
                       "Tensor::uniform: low and high must be finite with low <= high, got low 1 and high 0", Error);
  CHECK_THROWS_WITH_AS(gen.below(0), "Generator::below: n must be positive, got 0", Error);
  CHECK(gen.state() == state);
  before.check();
}

TEST_CASE("error catalog: Tensor access and flags") {
  CHECK_THROWS_WITH_AS(Tensor().shape(), "Tensor: use of an undefined tensor", Error);
  Tensor x({2, 2}, {1, 2, 3, 4});
  x.requires_grad_();
  Tensor y = x * 2.0f;
  const Unchanged before(x);
  CHECK_THROWS_WITH_AS(x.at({1}), "at: 1 indices given for a tensor of shape [2,2]", Error);
  CHECK_THROWS_WITH_AS(x.set({0, 0, 0}, 9.0f), "at: 3 indices given for a tensor of shape [2,2]", Error);
  CHECK_THROWS_WITH_AS(sum(Tensor::scalar(1.0f), 0), "sum: dim 0 given for a tensor of rank 0, which has no dims", Error);
  const Unchanged y_before(y);
  CHECK_THROWS_WITH_AS(y.requires_grad_(false),
                       "requires_grad_: only a leaf tensor's flag can be set (this tensor was made by an op; use detach())",
                       Error);
  CHECK(y.requires_grad());
  before.check();
  y_before.check();
}

TEST_CASE("error catalog: an empty Parameter handle") {
  Parameter empty;
  CHECK_THROWS_WITH_AS(empty.shape(), "Parameter: use of an empty Parameter handle", Error);
  CHECK_THROWS_WITH_AS(nn::Embedding{empty}, "Embedding: the weight Parameter is an empty handle", Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag{empty}, "EmbeddingBag: the weight Parameter is an empty handle", Error);
  Generator gen(2);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(nn::Embedding(3, -2, {}, gen), "Embedding: embedding_dim must be >= 0, but is -2", Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(3, -1, {}, gen), "EmbeddingBag: embedding_dim must be >= 0, but is -1", Error);
  CHECK(gen.state() == state);
}

namespace {
struct Tied : nn::Module {
  explicit Tied(Parameter items) : item(items), history(items, {.mode = BagMode::Mean}) {}
  void members(Members& m) const override {
    m.module("item", item);
    m.module("history", history);
  }
  nn::Embedding item;
  nn::EmbeddingBag history;
};
}  // namespace

TEST_CASE("error catalog: a refused call in a tied model changes no module, optimizer, generator or tape state") {
  Tied model(Parameter("items", Tensor::randn({5, 3}, default_generator())));
  optim::Adam adam(model.parameters(), {.lr = 0.1});
  backward(sum(model.item(IndexTensor{1, 2}) * model.history(IndexTensor({2, 2}, {0, 1, 2, 3}))));
  adam.step();  // state exists
  backward(sum(model.item(IndexTensor{4})));  // and a pending gradient
  const Unchanged before(model, &adam);
  CHECK_THROWS_WITH_AS(model.history(IndexTensor({1, 2}, {0, 5})),
                       "embedding_bag: input[0,1] = 5 is out of range for a table of 5 rows (valid: [0, 5))", Error);
  CHECK_THROWS_WITH_AS(adam.set_lr(0, -1.0), "Adam: lr must be finite and >= 0, but got -1", Error);
  CHECK_THROWS_WITH_AS(nn::Embedding(2, -1), "Embedding: embedding_dim must be >= 0, but is -1", Error);
  before.check();
}

TEST_CASE("error catalog: backward of a graph recorded partly on another thread") {
  Parameter w = trained("w");
  const Unchanged before(w.value());
  Tensor y;
  std::thread t([&] { y = w.value() * 3.0f; });  // recorded on t's tape
  t.join();
  Tensor z = sum(y * y);  // recorded here, reading t's node
  const std::size_t tape = tape_size();
  CHECK_THROWS_WITH_AS(backward(z),
                       "backward: part of this graph was recorded on another thread; a graph must be backpropagated "
                       "on the thread that recorded it",
                       Error);
  CHECK(w.grad().to_vector() == before.grad);
  CHECK(tape_size() == tape);
}

TEST_CASE("error catalog: set_num_threads") {
  Parameter w = trained("w");
  const Unchanged before(w.value());
  const int n = get_num_threads();
  CHECK_THROWS_WITH_AS(set_num_threads(0), "set_num_threads: n = 0 is out of range (valid: [1, 256])", Error);
  CHECK_THROWS_WITH_AS(set_num_threads(257), "set_num_threads: n = 257 is out of range (valid: [1, 256])", Error);
  CHECK(get_num_threads() == n);
  before.check();
}

TEST_CASE("error catalog: LR schedulers") {
  Parameter w = trained("w");
  optim::SGD sgd({w}, {.lr = 0.5});
  CHECK_THROWS_WITH_AS(optim::StepLR(sgd, 2, -0.5), "StepLR: gamma must be finite and >= 0, but got -0.5", Error);
  CHECK(sgd.lr(0) == 0.5);
  optim::StepLR sched(sgd, 1, 0.5);
  Parameter v = trained("v");
  sgd.add_param_group({.params = {v}, .options = {.lr = 0.25}});
  const Unchanged before(w.value(), &sgd);
  CHECK_THROWS_WITH_AS(sched.step(),
                       "LRScheduler: the optimizer had 1 parameter groups when the scheduler was built and has 2 now; "
                       "build a new scheduler after add_param_group",
                       Error);
  CHECK(sgd.lr(0) == 0.5);
  CHECK(sgd.lr(1) == 0.25);
  before.check();
}

TEST_CASE("error catalog: Optimizer::import_state checks every record before replacing the state") {
  Parameter w = trained("w"), other = trained("other");
  optim::Adam adam({w}, {.lr = 0.1});
  adam.step();
  const optim::StateRecords good = adam.export_state();
  REQUIRE(good.size() == 1);
  const std::string who = "Adam: import_state: record 0 (Parameter 'w')";
  auto rejected = [&](optim::StateRecords records, const std::string& message) {
    const Unchanged before(w.value(), &adam);
    CHECK_THROWS_WITH_AS(adam.import_state(records), message.c_str(), Error);
    before.check();
    const optim::StateRecords now = adam.export_state();
    REQUIRE(now.size() == 1);
    CHECK(now[0].second.counts == good[0].second.counts);
    CHECK(now[0].second.buffers == good[0].second.buffers);
  };
  rejected({{other, good[0].second}}, "Adam: import_state: record 0 (Parameter 'other') is not a Parameter of this optimizer");
  rejected({good[0], good[0]}, "Adam: import_state: record 1 (Parameter 'w') appears twice; give each Parameter one record");
  auto no_step = good[0];
  no_step.second.counts.clear();
  rejected({no_step}, who + " has no count 'step'");
  auto no_avg = good[0];
  no_avg.second.buffers.erase("exp_avg");
  rejected({no_avg}, who + " has no buffer 'exp_avg'");
  auto short_avg = good[0];
  short_avg.second.buffers["exp_avg"].pop_back();
  rejected({short_avg}, who + ": buffer 'exp_avg' has 3 values, but the Parameter has 4");
  auto extra = good[0];
  extra.second.buffers["momentum"] = {0, 0, 0, 0};
  rejected({extra}, who + " has a field that Adam does not keep; its fields are: step, exp_avg, exp_avg_sq, max_exp_avg_sq");
}

TEST_CASE("error catalog: docs/errors.md lists every throw site of the library") {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(HITCH_FIXTURES_DIR) / ".." / "..";
  const std::string catalog = read(root / "docs" / "errors.md");
  // Count `throw Error(` per file in the sources and per file in the catalog's rows
  // ("| `core/tensor.cpp` | ..."), which must agree.
  auto count = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
    return n;
  };
  // Subfolders too (core/runtime/, ops/kernels/). A row naming a file that does not exist (moved
  // or renamed) is stale.
  std::size_t rows_of_sources = 0;
  for (const char* dir : {"core", "ops", "nn", "optim", "dist"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = fs::relative(entry.path(), root).generic_string();
      const std::string src = read(entry.path());
      const std::size_t in_source = count(src, "throw Error(") + count(src, "throw hitch::Error(");
      const std::size_t in_catalog = count(catalog, "| `" + name + "` |");
      rows_of_sources += in_catalog;
      CHECK_MESSAGE(in_source == in_catalog, name << ": " << in_source << " throw sites, " << in_catalog << " catalogue rows");
    }
  }
  const std::size_t rows = count(catalog, "\n| `core/") + count(catalog, "\n| `ops/") + count(catalog, "\n| `nn/") +
                           count(catalog, "\n| `optim/") + count(catalog, "\n| `dist/");
  CHECK_MESSAGE(rows == rows_of_sources,
                rows << " catalogue rows, " << rows_of_sources << " of them for an existing file: the others are stale");
}
