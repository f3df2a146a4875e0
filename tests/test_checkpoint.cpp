// Checkpoints (nn/checkpoint.h): the round trip, the file's layout (alignment, the tie stored
// once), loading a tied model (one shared Parameter, a step moves both views together), tie,
// key and shape mismatches reported together with nothing changed, optimizer state for every
// optimizer, the generator's pending Box-Muller value, and write failures that keep the old file.
// The multi-process tests (SIGKILL mid-save, resume in a fresh process, NumPy) are ckpt_tool's.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "checkpoint_model.h"
#include <hitch/hitch.h>

using namespace hitch;
using ckpt_test::TiedModel;
namespace fs = std::filesystem;

using ckpt_test::Folder;

namespace {

std::vector<std::byte> read_file(const std::string& path) { return nn::read_whole_file("test", path); }

// The same layout, untied: emb and bag each with their own Parameter.
struct UntiedModel : nn::Module {
  nn::Embedding emb;
  nn::EmbeddingBag bag;
  Parameter proj;
  explicit UntiedModel(Generator& gen) : emb(6, 3, {}, gen), bag(6, 3, {.mode = BagMode::Sum}, gen) {
    proj = Parameter("proj", Tensor::randn({3}, gen));
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    m.param("proj", proj);
  }
};

}  // namespace

TEST_CASE("checkpoint: round trip writes values in place, keeps identities and ties") {
  Folder dir("test_roundtrip");
  Generator g1(1), g2(2);
  TiedModel saved(6, 3, false, g1), loaded(6, 3, false, g2);
  nn::save_checkpoint(dir.file("m.safetensors"), saved);
  const Parameter table = loaded.emb.weight;
  const auto version = table.impl().storage->version;
  REQUIRE(loaded.emb.weight.value().to_vector() != saved.emb.weight.value().to_vector());
  nn::load_checkpoint(dir.file("m.safetensors"), loaded);
  CHECK(loaded.emb.weight.value().to_vector() == saved.emb.weight.value().to_vector());
  CHECK(loaded.proj.value().to_vector() == saved.proj.value().to_vector());
  CHECK(loaded.emb.weight.is_same(table));  // written in place, not rebound
  CHECK(loaded.bag.weight.is_same(loaded.emb.weight));
  CHECK(table.impl().storage->version > version);
  CHECK(loaded.parameters().size() == 2);
  // No temporary file is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 1);
}

TEST_CASE("checkpoint: the file stores a tied table once, records the tie, aligns every tensor") {
  Folder dir("test_layout");
  Generator g(1);
  TiedModel model(6, 3, false, g);
  optim::Adam opt(model.parameters(), {.lr = 0.1});
  Generator data(3);
  ckpt_test::train_step(model, opt, data);
  nn::save_checkpoint(dir.file("m.safetensors"), model, {.optimizer = &opt, .generator = &data});
  const auto bytes = read_file(dir.file("m.safetensors"));
  const nn::Safetensors st = nn::parse_safetensors(bytes);
  std::vector<std::string> names;
  for (const auto& e : st.tensors) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"optim.emb.weight.step", "optim.proj.step", "generator.state",
                                          "generator.spare", "emb.weight", "proj", "optim.emb.weight.exp_avg",
                                          "optim.emb.weight.exp_avg_sq", "optim.proj.exp_avg",
                                          "optim.proj.exp_avg_sq"});
  CHECK(st.find("bag.weight") == nullptr);
  CHECK(st.metadata == std::map<std::string, std::string>{{"hitch.checkpoint", "1"},
                                                          {"hitch.optimizer", "Adam"},
                                                          {"hitch.optimizer.groups", "1"},
                                                          {"hitch.optimizer.lr.0", "0.1"},
                                                          {"hitch.tie.bag.weight", "emb.weight"}});
  const std::size_t data_start = bytes.size() - static_cast<std::size_t>(st.tensors.back().end);
  CHECK(data_start % 8 == 0);
  for (const auto& e : st.tensors) CHECK((data_start + e.begin) % nn::dtype_size(e.dtype) == 0);
  CHECK(std::memcmp(st.find("emb.weight")->bytes.data(), model.emb.weight.data(), 18 * sizeof(float)) == 0);
}

TEST_CASE("checkpoint: after loading a tied model, one step moves both modules' view of the table") {
  Folder dir("test_tie_step");
  Generator g1(1), g2(2);
  TiedModel saved(6, 3, false, g1), loaded(6, 3, false, g2);
  nn::save_checkpoint(dir.file("m.safetensors"), saved);
  nn::load_checkpoint(dir.file("m.safetensors"), loaded);
  optim::SGD opt(loaded.parameters(), {.lr = 0.5});
  CHECK(opt.params(0).size() == 2);  // the table once, proj once
  // A gradient through the bag only: the Embedding's lookup of the same row sees the step.
  const Tensor before = loaded.emb(IndexTensor{2}).detach().clone();
  backward(sum(loaded.bag(IndexTensor{2}, IndexTensor{0})));
  opt.step();
  const Tensor after = loaded.emb(IndexTensor{2});
  for (std::int64_t d = 0; d < 3; ++d) CHECK(after.at({0, d}) == before.at({0, d}) - 0.5f);
  CHECK(loaded.bag.weight.data()[6] == after.at({0, 0}));
}

TEST_CASE("checkpoint: the file's ties must be the module's ties, and nothing changes otherwise") {
  Folder dir("test_tie_mismatch");
  Generator g1(1), g2(2), g3(3), g4(4);
  TiedModel tied(6, 3, false, g1), tied_target(6, 3, false, g3);
  UntiedModel untied(g2), untied_target(g4);
  nn::save_checkpoint(dir.file("tied.safetensors"), tied);
  nn::save_checkpoint(dir.file("untied.safetensors"), untied);
  const auto before = untied_target.emb.weight.value().to_vector();
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("tied.safetensors"), untied_target),
                       ("load_checkpoint: '" + dir.file("tied.safetensors") +
                           "' does not match the module: the file ties 'emb.weight' and 'bag.weight' to one tensor "
                           "'emb.weight', but in the module they are two separate Parameters").c_str(),
                       Error);
  CHECK(untied_target.emb.weight.value().to_vector() == before);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("untied.safetensors"), tied_target),
                       ("load_checkpoint: '" + dir.file("untied.safetensors") +
                           "' does not match the module: 'emb.weight' and 'bag.weight' are one Parameter in the "
                           "module, but two tensors in the file whose values differ " +
                           fmt::format("(element 0: {} and {})", untied.emb.weight.data()[0], untied.bag.weight.data()[0]))
                           .c_str(),
                       Error);
  // The order of the tied names does not matter: a module listing bag first reads the same file.
  struct BagFirst : nn::Module {
    nn::Embedding emb;
    nn::EmbeddingBag bag;
    Parameter proj;
    explicit BagFirst(Generator& gen) : emb(6, 3, {}, gen), bag(emb.weight), proj("proj", Tensor::zeros({3})) {}
    void members(Members& m) const override {
      m.module("bag", bag);
      m.module("emb", emb);
      m.param("proj", proj);
    }
  };
  Generator g5(5);
  BagFirst bag_first(g5);
  nn::load_checkpoint(dir.file("tied.safetensors"), bag_first);
  CHECK(bag_first.bag.weight.value().to_vector() == tied.emb.weight.value().to_vector());
}

TEST_CASE("checkpoint: missing keys, unexpected keys and shape mismatches are reported together") {
  Folder dir("test_mismatch");
  struct Pair : nn::Module {
    Parameter a, b, c;
    void members(Members& m) const override {
      m.param("a", a);
      m.param("b", b);
      if (c.defined()) m.param("c", c);
    }
  };
  Pair saved;
  saved.a = Parameter("a", Tensor::ones({2, 3}));
  saved.b = Parameter("b", Tensor::ones({4}));
  saved.c = Parameter("c", Tensor::ones({1}));
  nn::save_checkpoint(dir.file("m.safetensors"), saved);
  struct Other : nn::Module {
    Parameter a, d;
    nn::Linear lin{2, 2};
    void members(Members& m) const override {
      m.param("a", a);
      m.param("d", d);
      m.module("lin", lin);
    }
  };
  Other target;
  target.a = Parameter("a", Tensor::zeros({3, 2}));
  target.d = Parameter("d", Tensor::zeros({4}));
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("m.safetensors"), target),
                       ("load_checkpoint: '" + dir.file("m.safetensors") +
                           "' does not match the module: missing keys 'd', 'lin.weight', 'lin.bias'; unexpected keys "
                           "'b', 'c'; 'a' has shape [2,3] in the file and [3,2] in the module").c_str(),
                       Error);
  CHECK(target.a.value().to_vector() == std::vector<float>(6, 0.0f));
}

TEST_CASE("checkpoint: optimizer state round trip for every optimizer, then identical steps") {
  Folder dir("test_optim");
  using Make = std::function<std::unique_ptr<optim::Optimizer>(TiedModel&)>;
  const std::vector<std::pair<std::string, Make>> cases = {
      {"SGD", [](TiedModel& m) { return std::make_unique<optim::SGD>(m.parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9}); }},
      {"Adam", [](TiedModel& m) { return std::make_unique<optim::Adam>(m.parameters(), optim::AdamOptions{.lr = 0.1, .amsgrad = true}); }},
      {"AdamW", [](TiedModel& m) { return std::make_unique<optim::AdamW>(m.parameters(), optim::AdamWOptions{.lr = 0.1}); }},
      {"Adagrad", [](TiedModel& m) { return std::make_unique<optim::Adagrad>(m.parameters(), optim::AdagradOptions{.lr = 0.1}); }},
      {"SparseAdam", [](TiedModel& m) { return std::make_unique<optim::SparseAdam>(m.parameters(), optim::SparseAdamOptions{.lr = 0.1}); }},
  };
  for (const auto& [name, make] : cases) {
    CAPTURE(name);
    const bool sparse = name == "SparseAdam";
    Generator g1(1), g2(2);
    TiedModel a(6, 3, sparse, g1), b(6, 3, sparse, g2);
    auto opt_a = make(a), opt_b = make(b);
    Generator data_a(9), data_b(10);
    for (int i = 0; i < 3; ++i) ckpt_test::train_step(a, *opt_a, data_a);
    opt_a->set_lr(0, 0.05);  // a schedule's change is saved with the state
    nn::save_checkpoint(dir.file("m.safetensors"), a, {.optimizer = opt_a.get(), .generator = &data_a});
    nn::load_checkpoint(dir.file("m.safetensors"), b, {.optimizer = opt_b.get(), .generator = &data_b});
    CHECK(opt_b->lr(0) == 0.05);
    CHECK(opt_b->state_size() == opt_a->state_size());
    const auto ra = opt_a->export_state(), rb = opt_b->export_state();
    REQUIRE(ra.size() == rb.size());
    for (std::size_t i = 0; i < ra.size(); ++i) {
      CHECK(ra[i].second.counts == rb[i].second.counts);
      CHECK(ra[i].second.buffers == rb[i].second.buffers);
    }
    for (int i = 0; i < 2; ++i) {
      ckpt_test::train_step(a, *opt_a, data_a);
      ckpt_test::train_step(b, *opt_b, data_b);
    }
    CHECK(a.emb.weight.value().to_vector() == b.emb.weight.value().to_vector());
  }
}

TEST_CASE("checkpoint: optimizer and generator sections must be there and of the right kind") {
  Folder dir("test_parts");
  Generator g1(1), g2(2);
  TiedModel a(6, 3, false, g1), b(6, 3, false, g2);
  optim::Adam adam_a(a.parameters()), adam_b(b.parameters());
  optim::SGD sgd_b(b.parameters(), {.lr = 0.1});
  nn::save_checkpoint(dir.file("plain.safetensors"), a);
  nn::save_checkpoint(dir.file("adam.safetensors"), a, {.optimizer = &adam_a});
  const std::string plain = "load_checkpoint: '" + dir.file("plain.safetensors") + "': ";
  const std::string with_adam = "load_checkpoint: '" + dir.file("adam.safetensors") + "': ";
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("plain.safetensors"), b, {.optimizer = &adam_b}),
                       (plain + "the file has no optimizer state; it was saved without an optimizer").c_str(), Error);
  Generator gen;
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("plain.safetensors"), b, {.generator = &gen}),
                       (plain + "the file has no generator state ('generator.state' and 'generator.spare'); it was "
                               "saved without a generator").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("adam.safetensors"), b, {.optimizer = &sgd_b}),
                       (with_adam + "the file holds Adam state, but the optimizer is SGD").c_str(), Error);
  // The model alone loads from a file that has more.
  nn::load_checkpoint(dir.file("adam.safetensors"), b);
  CHECK(b.proj.value().to_vector() == a.proj.value().to_vector());
  // An optimizer holding a Parameter the module does not have cannot be saved with it.
  Parameter stray("stray", Tensor::ones({2}));
  optim::SGD mixed(std::vector<Parameter>{a.proj, stray}, {.lr = 0.1});
  CHECK_THROWS_WITH_AS(nn::save_checkpoint(dir.file("x.safetensors"), a, {.optimizer = &mixed}),
                       ("save_checkpoint: '" + dir.file("x.safetensors") +
                           "': the optimizer's Parameter 'stray' (group 0 position 1) is not a Parameter of the module, "
                           "so its state has no name in the file").c_str(),
                       Error);
}

TEST_CASE("checkpoint: the generator resumes its exact sequence, pending Box-Muller value included") {
  Folder dir("test_generator");
  Generator g1(1);
  TiedModel m(6, 3, false, g1);
  Generator gen(77);
  gen.normal();  // one of a pair drawn: the other is pending
  REQUIRE(gen.spare().has_value());
  nn::save_checkpoint(dir.file("m.safetensors"), m, {.generator = &gen});
  Generator other(5);
  nn::load_checkpoint(dir.file("m.safetensors"), m, {.generator = &other});
  for (int i = 0; i < 5; ++i) CHECK(other.normal() == gen.normal());
  CHECK(other.next_u64() == gen.next_u64());
}

TEST_CASE("checkpoint: a failed write names the path and the OS error and keeps the old file") {
  Folder dir("test_write_errors");
  Generator g1(1), g2(2);
  TiedModel a(6, 3, false, g1), b(6, 3, false, g2);
  const std::string missing = dir.file("no/such/folder/m.safetensors");
  try {
    nn::save_checkpoint(missing, a);
    FAIL("saving into a missing folder succeeded");
  } catch (const Error& e) {
    const std::string msg = e.what();  // the temporary name has the pid and a counter in it
    CHECK(msg.find("save_checkpoint: cannot write '" + missing + "': creating the temporary file '" + missing +
                   ".tmp-") == 0);
    CHECK(msg.find("' failed: No such file or directory (errno 2)") != std::string::npos);
  }
  // A folder in the way: the rename fails after the whole write; the temporary file is removed.
  const std::string taken = dir.file("taken");
  fs::create_directories(taken + "/inside");
  try {
    nn::save_checkpoint(taken, a);
    FAIL("saving over a folder succeeded");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("save_checkpoint: cannot write '" + taken + "': renaming the temporary file") == 0);
    CHECK(msg.find("failed: Is a directory (errno 21); '" + taken + "' is unchanged") != std::string::npos);
  }
  CHECK(fs::is_directory(taken + "/inside"));
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 1);  // only the folder: no temporary file left
  // Overwriting a good checkpoint replaces it whole.
  nn::save_checkpoint(dir.file("m.safetensors"), a);
  nn::save_checkpoint(dir.file("m.safetensors"), b);
  Generator g3(3);
  TiedModel c(6, 3, false, g3);
  nn::load_checkpoint(dir.file("m.safetensors"), c);
  CHECK(c.emb.weight.value().to_vector() == b.emb.weight.value().to_vector());
}
