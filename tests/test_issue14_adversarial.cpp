// Adversarial tests for issue 14's new surface (checkpoint interop, LR scheduler state, anomaly
// mode's forward check, freezing, vector construction and printing): bad or hostile input gets a
// hitch::Error with an exact message and changes nothing. "(handled)" cases passed before any fix
// and pin the behaviour.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <array>
#include <cstdio>
#include <cstring>
#include <span>
#include <unistd.h>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <hitch/hitch.h>
#include "state_snapshot.h"

using namespace hitch;

namespace {

float bits_to_float(std::uint32_t b) {
  float f = 0.0f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Two Parameters tied as one in two modules, plus a separate bias.
struct Tied : nn::Module {
  Parameter w{"w", Tensor({2, 2}, {1, 2, 3, 4})};
  Parameter bias{"bias", Tensor({2}, {0.5f, -0.5f})};
  void members(Members& m) const override {
    m.param("emb.weight", w);
    m.param("head.weight", w);
    m.param("head.bias", bias);
  }
};

}  // namespace

// ---- printing ---------------------------------------------------------------------------------

TEST_CASE("adversarial: an empty tensor with a huge dim prints at once as [] (PyTorch: tensor([], size=...))") {
  CHECK(to_string(Tensor::zeros({3, 0})) == "tensor([], shape=[3,0])");
  CHECK(to_string(Tensor::zeros({0, 3})) == "tensor([], shape=[0,3])");
  CHECK(to_string(Tensor::zeros({std::int64_t{1} << 40, 0})) == "tensor([], shape=[1099511627776,0])");
  CHECK(to_string(IndexTensor({std::int64_t{1} << 40, 0, 5}, {})) == "index_tensor([], shape=[1099511627776,0,5])");
  CHECK(to_string(Tensor(std::vector<float>{})) == "tensor([], shape=[0])");
}

TEST_CASE("adversarial (handled): printing 0-d tensors and tensors at and just past the 1000 threshold") {
  CHECK(to_string(Tensor::full({}, 2.5f)) == "tensor(2.5, shape=[])");
  const std::string at = to_string(Tensor::zeros({1000}));
  CHECK(at.find("...") == std::string::npos);
  const std::string past = to_string(Tensor::zeros({1001}));
  CHECK(past == "tensor([0, 0, 0, ..., 0, 0, 0], shape=[1001])");
  const std::string rows = to_string(Tensor::zeros({1001, 1}));
  CHECK(rows == "tensor([[0],\n [0],\n [0],\n ...,\n [0],\n [0],\n [0]], shape=[1001,1])");
}

TEST_CASE("adversarial (handled): Tensor / IndexTensor from a std::vector with a wrong or negative shape") {
  CHECK_THROWS_WITH_AS(Tensor({2, 3}, std::vector<float>(5)), "Tensor: shape [2,3] needs 6 values, got 5", Error);
  CHECK_THROWS_WITH_AS(Tensor(Shape{}, std::vector<float>{}), "Tensor: shape [] needs 1 values, got 0", Error);
  CHECK_THROWS_WITH_AS(IndexTensor({2}, std::vector<std::int64_t>{}), "IndexTensor: shape [2] needs 2 values, got 0",
                       Error);
  CHECK_THROWS(Tensor({-1, 2}, std::vector<float>(2)));
  CHECK_THROWS(IndexTensor({2, -1}, std::vector<std::int64_t>(2)));
  CHECK(Tensor({0, 4}, std::vector<float>{}).shape() == Shape{0, 4});
}

// ---- LR scheduler state -------------------------------------------------------------------------

TEST_CASE("adversarial: a scheduler state whose lr is not finite (unreachable by step()) is refused, nothing changed") {
  Parameter p("p", Tensor({2}, {1, 2}));
  optim::SGD opt({p}, {.lr = 0.1});
  optim::StepLR sched(opt, 1, 2.0);
  sched.step();
  const std::vector<double> last = sched.get_last_lr();
  optim::LRSchedulerState s = sched.state_dict();
  s.last_epoch = 2000;  // 0.1 * 2^2000 overflows; step() refuses to get there
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "StepLR.load_state_dict: last_epoch = 2000 gives group 0 an lr of inf (base_lrs[0] = 0.1), "
                       "which is not finite; the saved scheduler could not have reached it",
                       Error);
  s.base_lrs = {0.0};  // 0 * inf = NaN
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "StepLR.load_state_dict: last_epoch = 2000 gives group 0 an lr of nan (base_lrs[0] = 0), "
                       "which is not finite; the saved scheduler could not have reached it",
                       Error);
  CHECK(sched.last_epoch() == 1);
  CHECK(sched.get_last_lr() == last);
  CHECK(opt.lr(0) == last[0]);
}

TEST_CASE("adversarial (handled): scheduler state with negative or huge last_epoch, base_lrs count, NaN lr, kind") {
  Parameter p("p", Tensor({2}, {1, 2}));
  optim::SGD opt({p}, {.lr = 0.1});
  optim::CosineAnnealingLR sched(opt, 4, 0.0);
  const optim::LRSchedulerState good = sched.state_dict();
  optim::LRSchedulerState s = good;
  s.last_epoch = -1;
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: last_epoch = -1 is out of range (valid: [0, 2^53])", Error);
  s.last_epoch = std::numeric_limits<std::int64_t>::max();
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: last_epoch = 9223372036854775807 is out of range (valid: "
                       "[0, 2^53])",
                       Error);
  s = good;
  s.base_lrs = {0.1, 0.1};
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: the state has 2 base_lrs, but this scheduler has 1 (one per "
                       "parameter group)",
                       Error);
  s.base_lrs = {std::nan("")};
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: base_lrs[0] must be finite and >= 0, but got nan", Error);
  s = good;
  s.hyper["eta_min"] = std::nan("");
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: the state was saved with other hyper-parameters: eta_min = "
                       "nan in the state, 0 here",
                       Error);
  s = good;
  s.kind = "";
  CHECK_THROWS_WITH_AS(sched.load_state_dict(s),
                       "CosineAnnealingLR.load_state_dict: the state was saved from a , but this scheduler is a "
                       "CosineAnnealingLR",
                       Error);
  CHECK(sched.last_epoch() == 0);
  CHECK(sched.base_lrs() == std::vector<double>{0.1});
}

// ---- state dicts and checkpoints ----------------------------------------------------------------

TEST_CASE("adversarial: both names stored with NaNs of other payloads: refused, the message shows the bits") {
  Tied m;
  const hitch_test::StateSnapshot snap(m.parameters(), nullptr, nullptr);
  nn::StateDict sd;
  sd.tensors["emb.weight"] = Tensor({2, 2}, {bits_to_float(0x7fc00001u), 2, 3, 4});
  sd.tensors["head.weight"] = Tensor({2, 2}, {bits_to_float(0x7fc00002u), 2, 3, 4});
  sd.tensors["head.bias"] = Tensor({2}, {0, 0});
  CHECK_THROWS_WITH_AS(nn::load_state_dict(m, sd),
                       "load_state_dict: the state dict does not match the module: 'emb.weight' and 'head.weight' are "
                       "one Parameter in the module, but two tensors in the state dict whose values differ (element 0: "
                       "nan (bits 0x7fc00001) and nan (bits 0x7fc00002))",
                       Error);
  snap.check();
}

TEST_CASE("adversarial (handled): both names stored, -0.0 against 0.0 is refused, the same NaN bits are accepted") {
  Tied m;
  nn::StateDict sd;
  sd.tensors["emb.weight"] = Tensor({2, 2}, {-0.0f, 2, 3, 4});
  sd.tensors["head.weight"] = Tensor({2, 2}, {0.0f, 2, 3, 4});
  sd.tensors["head.bias"] = Tensor({2}, {0, 0});
  {
    const hitch_test::StateSnapshot snap(m.parameters(), nullptr, nullptr);
    CHECK_THROWS_WITH_AS(nn::load_state_dict(m, sd),
                         "load_state_dict: the state dict does not match the module: 'emb.weight' and 'head.weight' "
                         "are one Parameter in the module, but two tensors in the state dict whose values differ "
                         "(element 0: -0 and 0)",
                         Error);
    snap.check();
  }
  const float nan = bits_to_float(0x7fc00123u);
  sd.tensors["emb.weight"] = Tensor({2, 2}, {nan, 2, 3, 4});
  sd.tensors["head.weight"] = Tensor({2, 2}, {nan, 2, 3, 4});
  nn::load_state_dict(m, sd);
  std::uint32_t b = 0;
  std::memcpy(&b, m.w.data(), sizeof b);
  CHECK(b == 0x7fc00123u);
}

TEST_CASE("adversarial (handled): strict = false still refuses a shape mismatch, changing nothing") {
  Tied m;
  const hitch_test::StateSnapshot snap(m.parameters(), nullptr, nullptr);
  nn::StateDict sd;
  sd.tensors["emb.weight"] = Tensor({2, 2}, {9, 9, 9, 9});
  sd.tensors["head.bias"] = Tensor({3}, {0, 0, 0});
  CHECK_THROWS_WITH_AS(nn::load_state_dict(m, sd, false),
                       "load_state_dict: the state dict does not match the module: 'head.bias' has shape [3] in the "
                       "state dict and [2] in the module",
                       Error);
  snap.check();
  sd.tensors.erase("head.bias");
  const nn::IncompatibleKeys keys = nn::load_state_dict(m, sd, false);
  CHECK(keys.missing_keys == std::vector<std::string>{"head.bias"});
  CHECK(m.w.value().to_vector() == std::vector<float>{9, 9, 9, 9});
}

// ---- anomaly mode's forward check ----------------------------------------------------------------

TEST_CASE("adversarial (handled): anomaly mode on empty tensors, -inf masks, NoGradGuard, a refused op records nothing") {
  DetectAnomalyGuard anomaly;
  Parameter p("p", Tensor({2, 3}, {1, 2, 3, 4, 5, 6}));
  // Empty tensors: nothing to check, nothing thrown.
  Parameter e("e", Tensor::zeros({0, 3}));
  CHECK(sum(e).item() == 0.0f);
  CHECK(softmax(e).numel() == 0);
  // A -inf mask (plain data) is trusted: masked_fill, where, add, softmax over a fully masked row.
  const Tensor mask = Tensor({2, 3}, {0, 0, 1, 1, 1, 1});
  const Tensor filled = masked_fill(p.value() * 1.0f, mask, -INFINITY);
  const Tensor neg = Tensor::full({2, 3}, -INFINITY);
  const Tensor masked = add(p.value(), neg);
  CHECK(std::isnan(softmax(masked).to_vector()[0]));
  (void)filled;
  (void)where(mask, p.value(), neg);
  // A refused op: nothing recorded, inputs unchanged, also under NoGradGuard.
  Parameter z("z", Tensor({2}, {0, 1}));
  const std::size_t tape = tape_size();
  const std::uint64_t version = z.value().impl().storage->version;
  CHECK_THROWS_AS(log(z.value()), Error);
  CHECK(tape_size() == tape);
  {
    NoGradGuard no_grad;
    CHECK_THROWS_WITH_AS(log(z.value()),
                         "log (anomaly mode): produced -inf at output element 0 (index [0]) from finite inputs; inputs "
                         "[2], output [2]; no node (grad mode is off); called outside any RecordScope",
                         Error);
  }
  CHECK(tape_size() == tape);
  CHECK(z.value().to_vector() == std::vector<float>{0, 1});
  CHECK(z.value().impl().storage->version == version);
  // Integer-index ops: the Parameter holding an Inf is named at the embedding that reads it.
  Parameter table("table", Tensor({3, 2}, {1, 2, INFINITY, 4, 5, 6}));
  const Tensor probe = mul(z.value(), 1.0f);  // the node before: the refused one would be the next
  const std::string node = "node #" + std::to_string(probe.impl().grad_fn->seq + 1) + ", not recorded";
  const std::size_t tape2 = tape_size();
  CHECK_THROWS_WITH_AS(embedding(IndexTensor{0, 2}, table),
                       ("embedding (anomaly mode): input 0, Parameter 'table' [3,2], holds inf at element 2 (index "
                        "[1,0]), which enters the graph here; inputs [3,2], output [2,2]; " +
                        node + "; called outside any RecordScope")
                           .c_str(),
                       Error);
  CHECK(tape_size() == tape2);
}

// ---- freezing -------------------------------------------------------------------------------------

TEST_CASE("adversarial (handled): requires_grad toggled between backward and step, frozen in SparseAdam, clip") {
  Parameter w("w", Tensor({3, 2}, {1, 2, 3, 4, 5, 6}));
  optim::Adam adam({w}, {.lr = 0.1});
  backward(sum(w.value() * w.value()));
  w.requires_grad_(false);
  const hitch_test::StateSnapshot snap(std::vector<Parameter>{w}, &adam, nullptr);
  adam.step();
  snap.check();  // frozen between backward and step: not moved, no state
  w.requires_grad_(true);
  adam.step();
  CHECK(w.value().to_vector() != snap.values[0]);

  // SparseAdam with a frozen Parameter holding a dense gradient: skipped, not refused.
  Parameter t("t", Tensor({3, 2}, {1, 2, 3, 4, 5, 6}));
  optim::SparseAdam sparse({t}, {.lr = 0.1});
  backward(sum(t.value() * 2.0f));
  t.requires_grad_(false);
  const hitch_test::StateSnapshot snap2(std::vector<Parameter>{t}, &sparse, nullptr);
  CHECK_NOTHROW(sparse.step());
  snap2.check();

  // clip_grad_norm counts a frozen Parameter's gradient, as PyTorch's clip_grad_norm_ does.
  const double total = optim::clip_grad_norm({t}, 1.0);
  CHECK(total == doctest::Approx(std::sqrt(6 * 4.0)));
}

namespace {

// A file of the Tied module's tensors as another tool writes them, plus extra tensors.
std::vector<std::byte> file_of(const std::map<std::string, std::vector<float>>& f32,
                               const std::map<std::string, std::string>& metadata,
                               const std::vector<nn::SafetensorsTensor>& extra = {}) {
  std::vector<nn::SafetensorsTensor> ts = extra;
  for (const auto& [name, v] : f32)
    ts.push_back({name, "F32", Shape{static_cast<std::int64_t>(v.size())},
                  std::as_bytes(std::span<const float>(v.data(), v.size()))});
  const std::string header = nn::safetensors_header(ts, metadata);
  std::vector<std::byte> out(header.size());
  std::memcpy(out.data(), header.data(), header.size());
  for (const nn::SafetensorsTensor& t : ts) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

// Tied with 1-D Parameters, so file_of's shapes match.
struct Flat : nn::Module {
  Parameter w{"w", Tensor({4}, {1, 2, 3, 4})};
  Parameter bias{"bias", Tensor({2}, {0.5f, -0.5f})};
  void members(Members& m) const override {
    m.param("emb.weight", w);
    m.param("head.weight", w);
    m.param("head.bias", bias);
  }
};

}  // namespace

TEST_CASE("adversarial (handled): hostile alias metadata: cycles, self-aliases, generator keys, empty names") {
  Flat m;
  Generator gen(3);
  const hitch_test::StateSnapshot snap(m.parameters(), nullptr, &gen);
  const std::vector<float> w = {9, 8, 7, 6}, b = {1, 1};
  auto refused = [&](const std::vector<std::byte>& file, const std::string& message, bool strict = true) {
    CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(file, m, {.generator = &gen}, "(bytes)", strict),
                         ("load_checkpoint: (bytes)" + message).c_str(), Error);
    snap.check();
  };
  // a -> b -> a
  refused(file_of({{"emb.weight", w}, {"head.bias", b}}, {{"emb.weight", "head.weight"}, {"head.weight", "emb.weight"}}),
          ": the metadata maps 'emb.weight' to 'head.weight', which it maps on to 'emb.weight': an alias chain (each "
          "alias must name a stored tensor directly, as save_model writes them)");
  // An alias to the generator's state.
  const std::array<std::uint64_t, 4> state{1, 2, 3, 4};
  const nn::SafetensorsTensor gs{"generator.state", "U64", {4}, std::as_bytes(std::span(state))};
  refused(file_of({{"emb.weight", w}, {"head.bias", b}}, {{"head.bias", "generator.state"}}, {gs}),
          ": the metadata maps 'head.bias' to 'generator.state', which is optimizer or generator state, not a Parameter");
  // An empty and a unicode name are unexpected keys, strict or not the shape mismatch still refuses.
  refused(file_of({{"emb.weight", w}, {"head.bias", {1, 1, 1}}, {"", b}, {"\xce\xb8", b}}, {}),
          " does not match the module: 'head.bias' has shape [3] in the file and [2] in the module", false);
  refused(file_of({{"emb.weight", w}, {"head.bias", b}, {"", b}, {"\xce\xb8", b}}, {}),
          " does not match the module: unexpected keys '', '\xce\xb8'");
  // A self-alias is no alias: head.weight is absent, filled from the module's tie (transformers).
  Flat m2;
  const nn::IncompatibleKeys keys =
      nn::load_checkpoint_from_bytes(file_of({{"emb.weight", w}, {"head.bias", b}}, {{"head.weight", "head.weight"}}), m2);
  CHECK(keys.missing_keys.empty());
  CHECK(m2.w.value().to_vector() == w);
}

TEST_CASE("adversarial: a checkpoint's scheduler state whose lr overflows is refused before any write") {
  Parameter p("p", Tensor({2}, {1, 2}));
  struct One : nn::Module {
    Parameter& q;
    explicit One(Parameter& q_) : q(q_) {}
    void members(Members& m) const override { m.param("p", q); }
  } model(p);
  optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
  optim::StepLR sched(opt, 1, 2.0);
  backward(sum(p.value() * p.value()));
  opt.step();
  sched.step();
  const std::string path = "adv14_sched_" + std::to_string(::getpid()) + ".safetensors";
  nn::save_checkpoint(path, model, {.optimizer = &opt, .scheduler = &sched});
  nn::Safetensors st;
  const std::vector<std::byte> bytes = nn::read_whole_file("test", path);
  std::remove(path.c_str());
  st = nn::parse_safetensors(bytes);
  std::vector<nn::SafetensorsTensor> ts;
  for (const nn::SafetensorsEntry& e : st.tensors) ts.push_back({e.name, e.dtype, e.shape, e.bytes});
  st.metadata["hitch.scheduler.last_epoch"] = "4000";
  const std::string header = nn::safetensors_header(ts, st.metadata);
  std::vector<std::byte> file(header.size());
  std::memcpy(file.data(), header.data(), header.size());
  for (const nn::SafetensorsTensor& t : ts) file.insert(file.end(), t.bytes.begin(), t.bytes.end());
  const hitch_test::StateSnapshot snap(std::vector<Parameter>{p}, &opt, nullptr);
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(file, model, {.optimizer = &opt, .scheduler = &sched}),
                       "load_checkpoint: (bytes): StepLR.load_state_dict: last_epoch = 4000 gives group 0 an lr of inf "
                       "(base_lrs[0] = 0.1), which is not finite; the saved scheduler could not have reached it",
                       Error);
  snap.check();
  CHECK(sched.last_epoch() == 1);
}
