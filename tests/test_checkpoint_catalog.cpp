// The checkpoint and safetensors entries of docs/errors.md that only the fuzz corpus reached
// (issue 7): each case triggers its throw site, asserts the exact message and that nothing
// changed: for loads the module's values, versions and gradients, the optimizer's state and lrs,
// the generator's state and pending Box-Muller value and the tape; for saves the previous file,
// byte for byte, with no temporary file left. Corrupt files are a real checkpoint re-written with
// one edit (nn::safetensors_header on the parsed tensors), or raw header text.
// Left out: the folder fsync after the rename failing (docs/errors.md says why).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint_model.h"
#include <hitch/hitch.h>
#include "state_snapshot.h"

using namespace hitch;
namespace fs = std::filesystem;

using ckpt_test::Contents;
using ckpt_test::Folder;

namespace {

// A trained tied model (emb.weight shared by emb and bag, plus proj), a two-group Adam with state
// for both, a gradient waiting for the next step and a data generator with a spare pending.
struct Trained {
  Generator init;
  ckpt_test::TiedModel model;
  optim::Adam opt;
  Generator data;
  explicit Trained(std::uint64_t seed)
      : init(seed),
        model(4, 3, false, init),
        opt(std::vector<optim::ParamGroup<optim::AdamOptions>>{{.params = {model.emb.weight}, .options = {.lr = 0.1}},
                                                                {.params = {model.proj}, .options = {.lr = 0.2}}}),
        data(seed + 100) {
    ckpt_test::train_step(model, opt, data);
    backward(sum(square(model.emb(IndexTensor{0, 2}))) + sum(model.proj.value()));
  }
  nn::CheckpointParts parts() { return {.optimizer = &opt, .generator = &data}; }
};

// Everything a refused call must leave as it was (tests/state_snapshot.h), for a trained model.
struct Snapshot : hitch_test::StateSnapshot {
  using StateSnapshot::StateSnapshot;
  explicit Snapshot(Trained& t) : StateSnapshot(t.model.parameters(), &t.opt, &t.data) {}
};

// The bytes of a checkpoint saved from Trained(1) with all its parts.
std::vector<std::byte> good_checkpoint() {
  Folder dir("catalog_source");
  Trained source(1);
  nn::save_checkpoint(dir.file("m.safetensors"), source.model, source.parts());
  return nn::read_whole_file("test", dir.file("m.safetensors"));
}

// 8-byte little-endian length, the header text, then data_bytes bytes of data.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xFFu));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  out.resize(out.size() + data_bytes, std::byte{1});
  return out;
}

// A module holding the given Parameters under the given names, as written.
struct Named : nn::Module {
  std::vector<std::pair<std::string, Parameter>> members_;
  void members(Members& m) const override {
    for (const auto& [name, p] : members_) m.param(name, p);
  }
};

Parameter param(const char* name, std::vector<float> values) {
  const auto n = static_cast<std::int64_t>(values.size());
  return Parameter(name, Tensor({n}, std::move(values)));
}

}  // namespace

TEST_CASE("checkpoint catalog: a Parameter name reserved for optimizer or generator state, on save and load") {
  Folder dir("catalog_reserved");
  const std::string path = dir.file("m.safetensors");
  Named ok;
  ok.members_ = {{"w", param("w", {1, 2})}};
  nn::save_checkpoint(path, ok);
  const std::vector<std::byte> before = nn::read_whole_file("test", path);
  for (const char* name : {"optim.w", "generator.w"}) {
    Named bad;
    bad.members_ = {{name, param("w", {3, 4})}};
    backward(sum(bad.members_[0].second.value()));
    const Snapshot snap(bad.parameters(), nullptr, nullptr);
    const std::string tail = std::string(": the module's Parameter '") + name +
                             "' has a name starting with 'optim.' or 'generator.', which checkpoints reserve for "
                             "optimizer and generator state";
    CHECK_THROWS_WITH_AS(nn::save_checkpoint(path, bad), ("save_checkpoint: '" + path + "'" + tail).c_str(), Error);
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(before, bad), ("load_checkpoint: (bytes)" + tail).c_str(),
                         Error);
    snap.check();
  }
  CHECK(nn::read_whole_file("test", path) == before);
  CHECK(dir.entries() == 1);
}

TEST_CASE("checkpoint catalog: save refuses names the safetensors header cannot hold, keeping the old file") {
  Folder dir("catalog_header");
  const std::string path = dir.file("m.safetensors");
  Named ok;
  ok.members_ = {{"w", param("w", {1, 2})}};
  nn::save_checkpoint(path, ok);
  const std::vector<std::byte> before = nn::read_whole_file("test", path);
  const std::string who = "save_checkpoint: '" + path + "': ";
  auto refused = [&](Named& bad, const std::string& message) {
    const Snapshot snap(bad.parameters(), nullptr, nullptr);
    CHECK_THROWS_WITH_AS(nn::save_checkpoint(path, bad), (who + message).c_str(), Error);
    snap.check();
    CHECK(nn::read_whole_file("test", path) == before);
    CHECK(dir.entries() == 1);
  };
  Named meta;
  meta.members_ = {{"__metadata__", param("m", {1})}};
  refused(meta, "the tensor name '__metadata__' is reserved");
  Named twice;  // two Parameters under one name: named_parameters keeps both (it dedups by identity)
  twice.members_ = {{"w", param("a", {1})}, {"w", param("b", {2})}};
  refused(twice, "the tensor name 'w' is used twice");
  Named utf8;
  utf8.members_ = {{"w\xff", param("w", {1})}};
  refused(utf8, "a tensor name or metadata string is not valid UTF-8: invalid UTF-8 byte at index 1: 0xFF");
}

TEST_CASE("checkpoint catalog: safetensors_header checks names and metadata text") {
  const float one = 1.0f;
  const auto bytes = std::as_bytes(std::span<const float>(&one, 1));
  CHECK_THROWS_WITH_AS(nn::safetensors_header({{"a", "F32", {1}, bytes}, {"a", "F32", {1}, bytes}}, {}),
                       "the tensor name 'a' is used twice", Error);
  CHECK_THROWS_WITH_AS(nn::safetensors_header({{"__metadata__", "F32", {1}, bytes}}, {}),
                       "the tensor name '__metadata__' is reserved", Error);
  CHECK_THROWS_WITH_AS(nn::safetensors_header({{"a", "F32", {1}, bytes}}, {{"k", "caf\xc3"}}),
                       "a tensor name or metadata string is not valid UTF-8: incomplete UTF-8 string; last byte: 0xC3",
                       Error);
}

TEST_CASE("checkpoint catalog: tensor entries without dtype or shape, or with the wrong JSON kind") {
  Trained target(2);
  const Snapshot snap(target);
  auto refused = [&](const std::string& header, std::size_t data, const std::string& message) {
    const std::vector<std::byte> bytes = raw_file(header, data);
    CHECK_THROWS_WITH_AS(nn::parse_safetensors(bytes), message.c_str(), Error);
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(bytes, target.model, target.parts(), "'x.safetensors'"),
                         ("load_checkpoint: 'x.safetensors': " + message).c_str(), Error);
  };
  refused(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, "tensor 'a' has no 'dtype'");
  refused(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4, "tensor 'a' has no 'shape'");
  refused(R"({"a":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", 4,
          "tensor 'a': dtype must be a string, but it is 5");
  refused(R"({"a":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}})", 4,
          R"(tensor 'a': dtype must be a string, but it is ["F32"])");
  refused(R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", 4,
          "tensor 'a': shape must be an array, but it is 1");
  refused(R"({"a":{"dtype":"F32","shape":"[1]","data_offsets":[0,4]}})", 4,
          R"(tensor 'a': shape must be an array, but it is "[1]")");
  // Two tensors starting at the same offset: the shorter sorts first, the longer overlaps it.
  refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
          8, "tensors 'b' [0, 4) and 'a' [0, 8) overlap");
  snap.check();
}

TEST_CASE("checkpoint catalog: ties in the metadata that the file's tensors contradict") {
  const std::vector<std::byte> good = good_checkpoint();
  Trained target(2);
  const Snapshot snap(target);
  {
    Contents c(good);
    REQUIRE(c.metadata.at("hitch.tie.bag.weight") == "emb.weight");
    c.metadata["hitch.tie.bag.weight"] = "table";
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                         "load_checkpoint: (bytes): the metadata ties 'bag.weight' to 'table', which is not a tensor "
                         "in the file",
                         Error);
  }
  {
    Contents c(good);
    nn::SafetensorsTensor copy = c.tensor("emb.weight");
    copy.name = "bag.weight";
    c.tensors.push_back(copy);
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                         "load_checkpoint: (bytes): the file holds 'bag.weight' both as a tensor and as a tie of "
                         "'emb.weight'",
                         Error);
  }
  snap.check();
}

TEST_CASE("checkpoint catalog: generator state of the wrong dtype, shape or value") {
  const std::vector<std::byte> good = good_checkpoint();
  Trained target(2);
  REQUIRE(target.data.spare().has_value());
  const Snapshot snap(target);
  auto refused = [&](const Contents& c, const std::string& message) {
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                         ("load_checkpoint: (bytes): " + message).c_str(), Error);
  };
  Contents state_i64(good);
  state_i64.tensor("generator.state").dtype = "I64";
  refused(state_i64, "'generator.state' must be U64 [4], but it is I64 [4]");
  Contents state_2x2(good);
  state_2x2.tensor("generator.state").shape = {2, 2};
  refused(state_2x2, "'generator.state' must be U64 [4], but it is U64 [2,2]");

  Contents spare_i64(good);
  spare_i64.tensor("generator.spare").dtype = "I64";
  refused(spare_i64, "'generator.spare' must be F64 [0] or F64 [1], but it is I64 [1]");
  const std::vector<double> two{0.5, 0.25};
  Contents spare_two(good);
  spare_two.tensor("generator.spare").shape = {2};
  spare_two.tensor("generator.spare").bytes = std::as_bytes(std::span<const double>(two));
  refused(spare_two, "'generator.spare' must be F64 [0] or F64 [1], but it is F64 [2]");
  Contents spare_matrix(good);
  spare_matrix.tensor("generator.spare").shape = {1, 1};
  refused(spare_matrix, "'generator.spare' must be F64 [0] or F64 [1], but it is F64 [1,1]");

  const std::array<std::uint64_t, 4> zeros{};
  Contents zero(good);
  zero.tensor("generator.state").bytes = std::as_bytes(std::span<const std::uint64_t>(zeros));
  refused(zero, "'generator.state' is all zero, a state xoshiro256** never reaches");
  snap.check();
}

TEST_CASE("checkpoint catalog: optimizer metadata missing or not a number") {
  const std::vector<std::byte> good = good_checkpoint();
  Trained target(2);
  const Snapshot snap(target);
  auto refused = [&](const std::string& key, const char* value, const std::string& message) {
    Contents c(good);
    REQUIRE(c.metadata.count(key) == 1);
    if (value == nullptr)
      c.metadata.erase(key);
    else
      c.metadata[key] = value;
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                         ("load_checkpoint: (bytes): " + message).c_str(), Error);
  };
  refused("hitch.optimizer.groups", nullptr, "the metadata has no 'hitch.optimizer.groups'");
  refused("hitch.optimizer.lr.1", nullptr, "the metadata has no 'hitch.optimizer.lr.1'");
  refused("hitch.optimizer.groups", "2x", "metadata 'hitch.optimizer.groups' = '2x' is not a number");
  refused("hitch.optimizer.groups", "-2", "metadata 'hitch.optimizer.groups' = '-2' is not a number");
  refused("hitch.optimizer.lr.0", "", "metadata 'hitch.optimizer.lr.0' = '' is not a number");
  refused("hitch.optimizer.lr.1", "0.1 ", "metadata 'hitch.optimizer.lr.1' = '0.1 ' is not a number");
  snap.check();
}

TEST_CASE("checkpoint catalog: an lr the optimizer refuses changes no lr") {
  const std::vector<std::byte> good = good_checkpoint();
  Trained target(2);
  const Snapshot snap(target);
  Contents c(good);
  c.metadata["hitch.optimizer.lr.0"] = "0.5";  // valid: set first, then undone
  c.metadata["hitch.optimizer.lr.1"] = "-1";
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                       "load_checkpoint: (bytes): Adam: lr must be finite and >= 0, but got -1 (group 1)", Error);
  c.metadata["hitch.optimizer.lr.1"] = "nan";
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                       "load_checkpoint: (bytes): Adam: lr must be finite and >= 0, but got nan (group 1)", Error);
  c.metadata["hitch.optimizer.lr.1"] = "inf";
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(c.bytes(), target.model, target.parts()),
                       "load_checkpoint: (bytes): Adam: lr must be finite and >= 0, but got inf (group 1)", Error);
  snap.check();
  CHECK(target.opt.lr(0) == 0.1);
}

TEST_CASE("checkpoint catalog: optimizer state the optimizer cannot reach is refused and changes nothing") {
  const std::vector<std::byte> good = good_checkpoint();
  Trained target(2);
  const Snapshot snap(target);
  // The module walk of the load names the tied table by both its paths.
  const std::string who =
      "load_checkpoint: (bytes): Adam: import_state: record 0 (Parameter 'emb.weight = bag.weight')";
  auto with_step = [&](std::int64_t step) {
    Contents c(good);
    c.metadata["hitch.optimizer.lr.0"] = "0.5";  // valid, and must not be set either
    std::vector<std::byte> bytes(sizeof step);
    std::memcpy(bytes.data(), &step, sizeof step);
    c.tensor("optim.emb.weight.step").bytes = bytes;
    return c.bytes();
  };
  for (const std::int64_t step : {std::int64_t{-1}, std::numeric_limits<std::int64_t>::max(), optim::kMaxStep + 1})
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(with_step(step), target.model, target.parts()),
                         (who + ": count 'step' = " + std::to_string(step) +
                          " is out of range (valid: [0, 9007199254740992] = [0, 2^53])")
                             .c_str(),
                         Error);
  auto with_value = [&](const std::string& tensor, std::size_t at, float value) {
    Contents c(good);
    nn::SafetensorsTensor& t = c.tensor(tensor);
    std::vector<std::byte> bytes(t.bytes.begin(), t.bytes.end());
    std::memcpy(bytes.data() + at * sizeof value, &value, sizeof value);
    t.bytes = bytes;
    return c.bytes();
  };
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(with_value("optim.emb.weight.exp_avg_sq", 2, -1.0f),
                                                      target.model, target.parts()),
                       (who + ": buffer 'exp_avg_sq' has -1 at element 2, a value Adam never holds (valid: finite "
                              "and >= 0)")
                           .c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(
      nn::load_checkpoint_from_bytes(with_value("optim.emb.weight.exp_avg", 0, std::numeric_limits<float>::infinity()),
                                     target.model, target.parts()),
      (who + ": buffer 'exp_avg' has inf at element 0, a value Adam never holds (valid: finite)").c_str(), Error);
  CHECK_THROWS_WITH_AS(
      nn::load_checkpoint_from_bytes(with_value("optim.emb.weight.exp_avg", 1, std::nanf("")), target.model,
                                     target.parts()),
      (who + ": buffer 'exp_avg' has nan at element 1, a value Adam never holds (valid: finite)").c_str(), Error);
  snap.check();

  // The largest count is accepted; a step from it is refused (and changes nothing).
  nn::load_checkpoint_from_bytes(with_step(optim::kMaxStep), target.model, target.parts());
  const Snapshot loaded(target);
  CHECK_THROWS_WITH_AS(target.opt.step(),
                       "Adam: Parameter 'emb.weight = bag.weight' (group 0) has step = 9007199254740992, the most a "
                       "state counts (2^53), so it cannot take another step",
                       Error);
  loaded.check();
}

TEST_CASE("checkpoint catalog: reading a folder as a checkpoint") {
  Folder dir("catalog_read");
  Trained target(2);
  const Snapshot snap(target);
  // open() succeeds on a folder; read() then fails with EISDIR.
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir.path.string(), target.model, target.parts()),
                       ("load_checkpoint: cannot read '" + dir.path.string() + "': Is a directory (errno 21)").c_str(),
                       Error);
  snap.check();
}

TEST_CASE("checkpoint catalog: writing the temporary file fails (file size limit), the old file stays") {
  Folder dir("catalog_efbig");
  const std::string path = dir.file("m.safetensors");
  Trained model(2);
  Named small;
  small.members_ = {{"w", param("w", {1, 2})}};
  nn::save_checkpoint(path, small);
  const std::vector<std::byte> before = nn::read_whole_file("test", path);
  // RLIMIT_FSIZE binds root too; with SIGXFSZ ignored the write fails with EFBIG.
  struct Limit {  // restores the limit and the handler however the block below ends
    rlimit old{};
    void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
    Limit() { ::getrlimit(RLIMIT_FSIZE, &old); }
    ~Limit() {
      ::setrlimit(RLIMIT_FSIZE, &old);
      std::signal(SIGXFSZ, old_handler);
    }
  };
  std::string message;
  {
    const Limit guard;
    rlimit low = guard.old;
    low.rlim_cur = 64;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &low) == 0);
    try {
      nn::save_checkpoint(path, model.model, model.parts());
    } catch (const Error& e) {
      message = e.what();
    }
  }
  // The temporary name has the pid and a counter in it.
  const std::string head =
      "save_checkpoint: cannot write '" + path + "': writing the temporary file '" + path + ".tmp-";
  const std::string tail = "' failed: File too large (errno 27); '" + path + "' is unchanged";
  CHECK(message.substr(0, head.size()) == head);
  CHECK(message.size() > head.size() + tail.size());
  CHECK(message.substr(message.size() - std::min(message.size(), tail.size())) == tail);
  CHECK(nn::read_whole_file("test", path) == before);
  CHECK(dir.entries() == 1);
}
