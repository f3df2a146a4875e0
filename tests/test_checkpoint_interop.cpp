// Checkpoint interop for tied models (issue 14, item 4; nn/checkpoint.h, docs/checkpoints.md):
//  * the tied layouts other tools write (tests/fixtures/interop, written by
//    scripts/interop/write_tied_fixtures.py) load into a tied model whatever order it lists its
//    members in: safetensors.torch.save_model's alias metadata, transformers' absent tied name,
//    both names stored bitwise equal; different values are refused naming both;
//  * optimizer state of a tied Parameter is found under any of its names (every optimizer,
//    reversed member order, the next steps bitwise equal to the uninterrupted run);
//  * strict = false returns PyTorch's missing_keys / unexpected_keys, for load_checkpoint and
//    nn::load_state_dict;
//  * malformed alias metadata is refused before any write, naming the key;
//  * LR scheduler state is saved and restored; another kind or other hyper-parameters are refused.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "checkpoint_model.h"
#include <hitch/hitch.h>
#include "state_snapshot.h"

using namespace hitch;
namespace fs = std::filesystem;

using ckpt_test::Contents;
using ckpt_test::Folder;

namespace {

const std::string kFixtures = std::string(HITCH_FIXTURES_DIR) + "/interop/";

// The fixtures' model: an embedding that is also the output projection (one Parameter) plus the
// projection's bias, as PyTorch names them; head_first lists the tied members the other way.
struct TiedLM : nn::Module {
  nn::Embedding emb;
  nn::Linear head;
  bool head_first;
  TiedLM(std::uint64_t seed, bool head_first_ = false, bool bias = true)
      : TiedLM(Generator(seed), head_first_, bias) {}
  void members(Members& m) const override {
    if (head_first) m.module("head", head);
    m.module("emb", emb);
    if (!head_first) m.module("head", head);
  }

 private:
  TiedLM(Generator gen, bool head_first_, bool bias)
      : emb(5, 3, {}, gen),
        head(emb.weight, bias ? Parameter("bias", Tensor::randn({5}, gen)) : Parameter()),
        head_first(head_first_) {}
};

// The values write_tied_fixtures.py writes: emb[i, j] = (3 i + j - 7) / 4, and the bias.
std::vector<float> fixture_emb() {
  std::vector<float> v;
  for (int k = 0; k < 15; ++k) v.push_back(static_cast<float>(k - 7) / 4.0f);
  return v;
}
const std::vector<float> kFixtureBias = {0.5f, -0.25f, 0.125f, 1.0f, -2.0f};

std::vector<std::byte> fixture(const std::string& name) { return nn::read_whole_file("test", kFixtures + name); }

// 8-byte little-endian length, then the header text, then data_bytes bytes.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xFFu));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  out.resize(out.size() + data_bytes, std::byte{0});
  return out;
}

// A TiedLM with Adam state, a stepped StepLR and a generator: what a refused load must leave.
struct Trained {
  TiedLM model;
  optim::Adam opt;
  optim::StepLR sched;
  Generator data{5};
  explicit Trained(bool head_first = false)
      : model(1, head_first), opt(model.parameters(), {.lr = 0.1}), sched(opt, 2, 0.5) {
    backward(sum(model.head(model.emb(IndexTensor{0, 3}))));
    opt.step();
    sched.step();
    data.normal();
  }
  nn::CheckpointParts parts() { return {.optimizer = &opt, .generator = &data, .scheduler = &sched}; }
  hitch_test::StateSnapshot snapshot() const { return {model.parameters(), &opt, &data}; }
};

}  // namespace

TEST_CASE("interop: save_model, transformers and both-names layouts load into a tied model, either member order") {
  const std::vector<float> emb = fixture_emb();
  for (const char* file : {"save_model.safetensors", "transformers.safetensors", "both_equal.safetensors"}) {
    for (const bool head_first : {false, true}) {
      CAPTURE(file);
      CAPTURE(head_first);
      TiedLM m(7, head_first);
      const Parameter table = m.emb.weight;
      nn::load_checkpoint(kFixtures + file, m);
      CHECK(m.emb.weight.value().to_vector() == emb);
      CHECK(m.head.bias.value().to_vector() == kFixtureBias);
      CHECK(m.head.weight.is_same(m.emb.weight));  // still one Parameter, written in place
      CHECK(m.emb.weight.is_same(table));
      CHECK(m.parameters().size() == 2);
    }
  }
}

TEST_CASE("interop: hitch's own file of a tied model loads into the reversed member order") {
  Folder dir("interop_own");
  TiedLM saved(1), loaded(2, true);
  nn::save_checkpoint(dir.file("m.safetensors"), saved);
  nn::load_checkpoint(dir.file("m.safetensors"), loaded);
  CHECK(loaded.head.weight.value().to_vector() == saved.emb.weight.value().to_vector());
  CHECK(loaded.head.bias.value().to_vector() == saved.head.bias.value().to_vector());
  CHECK(loaded.emb.weight.is_same(loaded.head.weight));
}

TEST_CASE("interop: a tied Parameter stored under two names with different values is refused naming both") {
  const std::string path = kFixtures + "both_differ.safetensors";
  for (const bool head_first : {false, true}) {
    CAPTURE(head_first);
    Trained t(head_first);
    const auto snap = t.snapshot();
    // emb[1, 1] = -0.75 in the file's emb.weight, -0.25 in its head.weight.
    const std::string expected =
        head_first ? "'head.weight' and 'emb.weight' are one Parameter in the module, but two tensors in the file "
                     "whose values differ (element 4: -0.25 and -0.75)"
                   : "'emb.weight' and 'head.weight' are one Parameter in the module, but two tensors in the file "
                     "whose values differ (element 4: -0.75 and -0.25)";
    CHECK_THROWS_WITH_AS(nn::load_checkpoint(path, t.model, t.parts()),
                         ("load_checkpoint: '" + path + "' does not match the module: " + expected).c_str(), Error);
    snap.check();
  }
}

TEST_CASE("interop: strict = false returns missing_keys and unexpected_keys (load_checkpoint)") {
  const std::string path = kFixtures + "save_model.safetensors";
  // The file has head.bias; a model without a bias finds it unexpected.
  TiedLM no_bias(3, false, false);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(path, no_bias),
                       ("load_checkpoint: '" + path + "' does not match the module: unexpected keys 'head.bias'")
                           .c_str(),
                       Error);
  const nn::IncompatibleKeys keys = nn::load_checkpoint(path, no_bias, {}, false);
  CHECK(keys.missing_keys.empty());
  CHECK(keys.unexpected_keys == std::vector<std::string>{"head.bias"});
  CHECK(no_bias.emb.weight.value().to_vector() == fixture_emb());

  // A model with a Parameter the file lacks, and an alias for a name the model does not have.
  struct Extra : nn::Module {
    TiedLM lm{4};
    Parameter scale{"scale", Tensor::ones({2})};
    void members(Members& m) const override {
      m.param("scale", scale);
      lm.members(m);
    }
  } extra;
  Contents c(fixture("save_model.safetensors"));
  c.metadata["lm_head.weight"] = "emb.weight";
  const std::vector<std::byte> file = c.bytes();
  const std::vector<float> scale_before = extra.scale.value().to_vector();
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(file, extra),
                       "load_checkpoint: (bytes) does not match the module: missing keys 'scale'; unexpected keys "
                       "'lm_head.weight'",
                       Error);
  const nn::IncompatibleKeys k2 = nn::load_checkpoint_from_bytes(file, extra, {}, "(bytes)", false);
  CHECK(k2.missing_keys == std::vector<std::string>{"scale"});
  CHECK(k2.unexpected_keys == std::vector<std::string>{"lm_head.weight"});
  CHECK(extra.lm.head.weight.value().to_vector() == fixture_emb());
  CHECK(extra.scale.value().to_vector() == scale_before);

  // A tied Parameter none of whose names is stored: every name is missing.
  Contents only_bias(fixture("transformers.safetensors"));
  std::erase_if(only_bias.tensors, [](const nn::SafetensorsTensor& t) { return t.name == "emb.weight"; });
  TiedLM m(5, true);
  const nn::IncompatibleKeys k3 = nn::load_checkpoint_from_bytes(only_bias.bytes(), m, {}, "(bytes)", false);
  CHECK(k3.missing_keys == std::vector<std::string>{"head.weight", "emb.weight"});
  CHECK(k3.unexpected_keys.empty());
  CHECK(m.head.bias.value().to_vector() == kFixtureBias);

  // Non-strict still refuses a shape mismatch, changing nothing.
  Trained t;
  const auto snap = t.snapshot();
  Contents wrong(fixture("transformers.safetensors"));
  std::vector<float> seven(7, 1.0f);
  std::erase_if(wrong.tensors, [](const nn::SafetensorsTensor& x) { return x.name == "head.bias"; });
  wrong.add_f32("head.bias", {7}, seven);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(wrong.bytes(), t.model, {}, "(bytes)", false),
                       "load_checkpoint: (bytes) does not match the module: 'head.bias' has shape [7] in the file and "
                       "[5] in the module",
                       Error);
  snap.check();
}

TEST_CASE("interop: strict = false returns missing_keys and unexpected_keys (load_state_dict)") {
  TiedLM source(1), target(2, true), no_bias(3, false, false);
  nn::StateDict sd = nn::state_dict(source);
  // transformers' layout in memory: the tied name simply absent.
  REQUIRE(sd.ties.count("head.weight") == 1);
  sd.ties.clear();
  CHECK(nn::load_state_dict(target, sd).missing_keys.empty());
  CHECK(target.head.weight.value().to_vector() == source.emb.weight.value().to_vector());
  // Both names held, bitwise equal: accepted; different: refused naming both.
  sd.tensors["head.weight"] = sd.tensors.at("emb.weight").clone();
  nn::load_state_dict(target, sd);
  sd.tensors.at("head.weight").set({0, 2}, 9.0f);
  const hitch_test::StateSnapshot snap(target.parameters(), nullptr, nullptr);
  CHECK_THROWS_WITH_AS(nn::load_state_dict(target, sd),
                       fmt::format("load_state_dict: the state dict does not match the module: 'head.weight' and "
                                   "'emb.weight' are one Parameter in the module, but two tensors in the state dict "
                                   "whose values differ (element 2: 9 and {})",
                                   source.emb.weight.value().at({0, 2}))
                           .c_str(),
                       Error);
  snap.check();
  sd.tensors.erase("head.weight");
  CHECK_THROWS_WITH_AS(nn::load_state_dict(no_bias, sd),
                       "load_state_dict: the state dict does not match the module: unexpected keys 'head.bias'",
                       Error);
  const nn::IncompatibleKeys keys = nn::load_state_dict(no_bias, sd, false);
  CHECK(keys.missing_keys.empty());
  CHECK(keys.unexpected_keys == std::vector<std::string>{"head.bias"});
  CHECK(no_bias.emb.weight.value().to_vector() == source.emb.weight.value().to_vector());
  sd.tensors.erase("emb.weight");
  const nn::IncompatibleKeys none = nn::load_state_dict(target, sd, false);
  CHECK(none.missing_keys == std::vector<std::string>{"head.weight", "emb.weight"});
  CHECK(none.unexpected_keys.empty());
}

TEST_CASE("interop: malformed alias metadata is refused before any write, naming the key") {
  Trained t;
  const auto snap = t.snapshot();
  const std::vector<std::byte> good = fixture("save_model.safetensors");
  auto refused = [&](const Contents& c, const std::string& message) {
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), t.model, t.parts()),
                         ("load_checkpoint: (bytes): " + message).c_str(), Error);
  };
  {  // an alias to a key the file does not have
    Contents c(good);
    c.metadata["head.weight"] = "emb.wieght";
    refused(c, "the metadata maps 'head.weight' to 'emb.wieght', which is not a tensor in the file");
  }
  {  // to keys that are not tensors
    Contents c(good);
    c.metadata["head.weight"] = "__metadata__";
    refused(c, "the metadata maps 'head.weight' to '__metadata__', which is the header's metadata, not a tensor");
    c.metadata["head.weight"] = "format";
    c.metadata["format"] = "pt";
    refused(c, "the metadata maps 'head.weight' to 'format', which is a metadata key, not a tensor");
  }
  {  // to a tensor that is optimizer state
    Contents c(good);
    const std::int64_t step = 3;
    std::vector<std::byte> b(sizeof step);
    std::memcpy(b.data(), &step, sizeof step);
    c.add("optim.emb.weight.step", "I64", {}, b);
    c.metadata["head.weight"] = "optim.emb.weight.step";
    refused(c, "the metadata maps 'head.weight' to 'optim.emb.weight.step', which is optimizer or generator state, "
               "not a Parameter");
  }
  {  // an alias chain head.weight -> x -> emb.weight
    Contents c(good);
    c.metadata["head.weight"] = "x";
    c.metadata["x"] = "emb.weight";
    refused(c, "the metadata maps 'head.weight' to 'x', which it maps on to 'emb.weight': an alias chain (each alias "
               "must name a stored tensor directly, as save_model writes them)");
  }
  {  // an alias between tensors of different shape
    Contents c(good);
    c.add_f32("head.weight", {3, 5}, fixture_emb());
    refused(c, "the metadata maps 'head.weight' to 'emb.weight', but the file also holds 'head.weight' as a tensor of "
               "F32 [3,5], where 'emb.weight' is F32 [5,3]");
  }
  {  // ... and of different values
    Contents c(good);
    std::vector<float> v = fixture_emb();
    v[4] = -0.25f;
    c.add_f32("head.weight", {5, 3}, v);
    refused(c, "the metadata maps 'head.weight' to 'emb.weight', but the file also holds 'head.weight' as a tensor "
               "whose values differ (element 4: -0.25 and -0.75)");
  }
  // Metadata that is not a string map (the parser refuses it before anything else).
  CHECK_THROWS_WITH_AS(
      nn::load_checkpoint_from_bytes(
          raw_file(R"({"__metadata__":{"head.weight":["emb.weight"]},"emb.weight":{"dtype":"F32","shape":[5,3],)"
                   R"("data_offsets":[0,60]}})",
                   60),
          t.model, t.parts()),
      R"(load_checkpoint: (bytes): '__metadata__' must map strings to strings, but 'head.weight' is ["emb.weight"])",
      Error);
  CHECK_THROWS_WITH_AS(
      nn::load_checkpoint_from_bytes(
          raw_file(R"({"__metadata__":5,"emb.weight":{"dtype":"F32","shape":[5,3],"data_offsets":[0,60]}})", 60),
          t.model, t.parts()),
      "load_checkpoint: (bytes): '__metadata__' must be a JSON object of strings, but it is 5", Error);
  snap.check();
  CHECK(t.sched.last_epoch() == 1);
  // The same alias twice (tensor and alias, bitwise equal) is accepted, and "format" is left alone.
  Contents same(good);
  same.add_f32("head.weight", {5, 3}, fixture_emb());
  same.metadata["format"] = "pt";
  TiedLM m(9);
  nn::load_checkpoint_from_bytes(same.bytes(), m);
  CHECK(m.emb.weight.value().to_vector() == fixture_emb());
}

namespace {

// TiedModel (tests/checkpoint_model.h) with its tied members listed the other way: bag first.
struct BagFirst : nn::Module {
  ckpt_test::TiedModel& m;
  explicit BagFirst(ckpt_test::TiedModel& model) : m(model) {}
  void members(Members& out) const override {
    out.module("bag", m.bag);
    out.module("emb", m.emb);
    if (m.proj.defined()) out.param("proj", m.proj);
  }
};

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(ckpt_test::TiedModel&)>;
const std::vector<std::pair<std::string, MakeOpt>>& every_optimizer() {
  static const std::vector<std::pair<std::string, MakeOpt>> cases = {
      {"SGD", [](ckpt_test::TiedModel& m) {
         return std::make_unique<optim::SGD>(m.parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
       }},
      {"Adam", [](ckpt_test::TiedModel& m) {
         return std::make_unique<optim::Adam>(m.parameters(), optim::AdamOptions{.lr = 0.1, .amsgrad = true});
       }},
      {"AdamW", [](ckpt_test::TiedModel& m) {
         return std::make_unique<optim::AdamW>(m.parameters(), optim::AdamWOptions{.lr = 0.1});
       }},
      {"Adagrad", [](ckpt_test::TiedModel& m) {
         return std::make_unique<optim::Adagrad>(m.parameters(), optim::AdagradOptions{.lr = 0.1});
       }},
      {"SparseAdam", [](ckpt_test::TiedModel& m) {
         return std::make_unique<optim::SparseAdam>(m.parameters(), optim::SparseAdamOptions{.lr = 0.1});
       }},
  };
  return cases;
}

}  // namespace

TEST_CASE("interop: optimizer state of a tied Parameter is found under any of its names, every optimizer") {
  Folder dir("interop_optim_order");
  for (const auto& [name, make] : every_optimizer()) {
    for (const bool save_reversed : {false, true}) {
      CAPTURE(name);
      CAPTURE(save_reversed);
      const bool sparse = name == "SparseAdam";
      Generator g1(1), g2(2);
      ckpt_test::TiedModel a(6, 3, sparse, g1), b(6, 3, sparse, g2);
      BagFirst a_rev(a), b_rev(b);
      auto opt_a = make(a), opt_b = make(b);
      Generator data_a(9), data_b(10);
      for (int i = 0; i < 3; ++i) ckpt_test::train_step(a, *opt_a, data_a);
      // Saved with one member order (state under emb.weight or bag.weight), loaded with the other.
      const std::string path = dir.file(name + ".safetensors");
      if (save_reversed) {
        nn::save_checkpoint(path, a_rev, {.optimizer = opt_a.get(), .generator = &data_a});
        nn::load_checkpoint(path, b, {.optimizer = opt_b.get(), .generator = &data_b});
      } else {
        nn::save_checkpoint(path, a, {.optimizer = opt_a.get(), .generator = &data_a});
        nn::load_checkpoint(path, b_rev, {.optimizer = opt_b.get(), .generator = &data_b});
      }
      REQUIRE(opt_b->state_size() == opt_a->state_size());
      for (int i = 0; i < 2; ++i) {
        ckpt_test::train_step(a, *opt_a, data_a);
        ckpt_test::train_step(b, *opt_b, data_b);
        CHECK(a.emb.weight.value().to_vector() == b.emb.weight.value().to_vector());
        if (!sparse) CHECK(a.proj.value().to_vector() == b.proj.value().to_vector());
      }
      const auto ra = opt_a->export_state(), rb = opt_b->export_state();
      REQUIRE(ra.size() == rb.size());
      for (std::size_t i = 0; i < ra.size(); ++i) {
        CHECK(ra[i].second.counts == rb[i].second.counts);
        CHECK(ra[i].second.buffers == rb[i].second.buffers);
      }
    }
  }
}

TEST_CASE("interop: optimizer state held under two names of one tied Parameter is refused naming all its names") {
  Folder dir("interop_optim_twice");
  Generator g1(1), g2(2);
  ckpt_test::TiedModel a(6, 3, false, g1), b(6, 3, false, g2);
  optim::Adam opt_a(a.parameters(), {.lr = 0.1}), opt_b(b.parameters(), {.lr = 0.1});
  Generator data(3);
  ckpt_test::train_step(a, opt_a, data);
  ckpt_test::train_step(b, opt_b, data);
  nn::save_checkpoint(dir.file("m.safetensors"), a, {.optimizer = &opt_a});
  const std::vector<std::byte> file = nn::read_whole_file("test", dir.file("m.safetensors"));
  Contents c(file);
  std::vector<nn::SafetensorsTensor> copies;
  for (const nn::SafetensorsTensor& t : c.tensors)
    if (t.name.starts_with("optim.emb.weight."))
      copies.push_back({"optim.bag.weight." + t.name.substr(17), t.dtype, t.shape, t.bytes});
  REQUIRE(copies.size() == 3);
  c.tensors.insert(c.tensors.end(), copies.begin(), copies.end());
  const hitch_test::StateSnapshot snap(b.parameters(), &opt_b, nullptr);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), b, {.optimizer = &opt_b}),
                       "load_checkpoint: (bytes): the optimizer state does not match: the file holds state for "
                       "'emb.weight' = 'bag.weight' under two of its names, 'optim.emb.weight' and 'optim.bag.weight'",
                       Error);
  snap.check();
}

namespace {

// A small model trained with a scheduler: lrs and values after each step.
struct Sched {
  ckpt_test::TiedModel model;
  optim::Adam opt;
  std::unique_ptr<optim::LRScheduler> sched;
  Generator data;
  Sched(std::uint64_t seed, bool cosine, Generator&& init = Generator(1))
      : model(6, 3, false, init), opt(model.parameters(), {.lr = 0.1}), data(seed) {
    if (cosine)
      sched = std::make_unique<optim::CosineAnnealingLR>(opt, 5, 0.01);
    else
      sched = std::make_unique<optim::StepLR>(opt, 2, 0.5);
  }
  void step() {
    ckpt_test::train_step(model, opt, data);
    sched->step();
  }
  nn::CheckpointParts parts() { return {.optimizer = &opt, .generator = &data, .scheduler = sched.get()}; }
};

}  // namespace

TEST_CASE("interop: LR scheduler state is saved and restored, the following lrs and steps bitwise equal") {
  Folder dir("interop_sched");
  for (const bool cosine : {false, true}) {
    CAPTURE(cosine);
    Sched a(9, cosine);
    for (int i = 0; i < 3; ++i) a.step();  // mid-schedule: epoch 3
    nn::save_checkpoint(dir.file("m.safetensors"), a.model, a.parts());
    Sched b(4, cosine, Generator(2));  // a fresh model, optimizer and scheduler (epoch 0)
    REQUIRE(b.sched->last_epoch() == 0);
    nn::load_checkpoint(dir.file("m.safetensors"), b.model, b.parts());
    CHECK(b.sched->last_epoch() == 3);
    CHECK(b.sched->get_last_lr() == a.sched->get_last_lr());
    CHECK(b.opt.lr(0) == a.opt.lr(0));
    for (int i = 0; i < 6; ++i) {
      a.step();
      b.step();
      CHECK(b.sched->get_last_lr() == a.sched->get_last_lr());
      CHECK(b.opt.lr(0) == a.opt.lr(0));
      CHECK(b.model.emb.weight.value().to_vector() == a.model.emb.weight.value().to_vector());
    }
    // The in-memory form, as PyTorch's scheduler.state_dict() / load_state_dict().
    const optim::LRSchedulerState s = a.sched->state_dict();
    CHECK(s.kind == (cosine ? "CosineAnnealingLR" : "StepLR"));
    CHECK(s.last_epoch == 9);
    CHECK(s.base_lrs == std::vector<double>{0.1});
    CHECK(s.hyper == (cosine ? std::map<std::string, double>{{"T_max", 5.0}, {"eta_min", 0.01}}
                             : std::map<std::string, double>{{"step_size", 2.0}, {"gamma", 0.5}}));
    Sched c(4, cosine);
    c.sched->load_state_dict(s);
    CHECK(c.sched->get_last_lr() == a.sched->get_last_lr());
    CHECK(c.opt.lr(0) == 0.1);  // like PyTorch's, the scheduler's load leaves the optimizer's lr alone
    c.sched->step();
    a.sched->step();
    CHECK(c.opt.lr(0) == a.opt.lr(0));
  }
}

TEST_CASE("interop: scheduler state of another kind, other hyper-parameters or out of range is refused") {
  Folder dir("interop_sched_bad");
  Sched step_lr(9, false), cosine(9, true);
  step_lr.step();
  nn::save_checkpoint(dir.file("step.safetensors"), step_lr.model, step_lr.parts());
  nn::save_checkpoint(dir.file("plain.safetensors"), step_lr.model, {.optimizer = &step_lr.opt});
  const std::string step_file = "load_checkpoint: '" + dir.file("step.safetensors") + "': ";

  Sched target(3, true);
  target.step();
  const hitch_test::StateSnapshot snap(target.model.parameters(), &target.opt, &target.data);
  const optim::LRSchedulerState before = target.sched->state_dict();
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("step.safetensors"), target.model, target.parts()),
                       (step_file + "CosineAnnealingLR.load_state_dict: the state was saved from a StepLR, but this "
                                    "scheduler is a CosineAnnealingLR").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("plain.safetensors"), target.model,
                                           {.optimizer = &target.opt, .scheduler = target.sched.get()}),
                       ("load_checkpoint: '" + dir.file("plain.safetensors") +
                        "': the file has no LR scheduler state; it was saved without a scheduler").c_str(),
                       Error);
  Generator g(1);
  ckpt_test::TiedModel other_model(6, 3, false, g);
  optim::Adam other_opt(other_model.parameters(), {.lr = 0.1});
  optim::StepLR other_step(other_opt, 3, 0.25);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.file("step.safetensors"), other_model,
                                           {.optimizer = &other_opt, .scheduler = &other_step}),
                       (step_file + "StepLR.load_state_dict: the state was saved with other hyper-parameters: gamma = "
                                    "0.5 in the state, 0.25 here; step_size = 2 in the state, 3 here").c_str(),
                       Error);
  CHECK(other_step.last_epoch() == 0);
  snap.check();
  CHECK(target.sched->last_epoch() == before.last_epoch);

  // The in-memory checks, each changing nothing.
  optim::StepLR& s = dynamic_cast<optim::StepLR&>(*step_lr.sched);
  const std::int64_t epoch = s.last_epoch();
  const std::vector<double> last = s.get_last_lr();
  optim::LRSchedulerState bad = s.state_dict();
  bad.hyper.erase("gamma");
  bad.hyper["T_max"] = 4.0;
  CHECK_THROWS_WITH_AS(s.load_state_dict(bad),
                       "StepLR.load_state_dict: the state was saved with other hyper-parameters: no gamma in the "
                       "state (0.5 here); T_max = 4 in the state, which a StepLR does not have",
                       Error);
  bad = s.state_dict();
  bad.last_epoch = -1;
  CHECK_THROWS_WITH_AS(s.load_state_dict(bad),
                       "StepLR.load_state_dict: last_epoch = -1 is out of range (valid: [0, 2^53])",
                       Error);
  bad = s.state_dict();
  bad.base_lrs = {0.1, 0.2};
  CHECK_THROWS_WITH_AS(s.load_state_dict(bad),
                       "StepLR.load_state_dict: the state has 2 base_lrs, but this scheduler has 1 (one per parameter "
                       "group)",
                       Error);
  bad = s.state_dict();
  bad.base_lrs = {-0.5};
  CHECK_THROWS_WITH_AS(s.load_state_dict(bad),
                       "StepLR.load_state_dict: base_lrs[0] must be finite and >= 0, but got -0.5",
                       Error);
  CHECK(s.last_epoch() == epoch);
  CHECK(s.get_last_lr() == last);
  CHECK(s.base_lrs() == std::vector<double>{0.1});
}
