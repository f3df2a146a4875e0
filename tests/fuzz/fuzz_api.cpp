// tests/fuzz/fuzz_api.cpp: libFuzzer target for the public API as a whole.
//
// The bytes become a short program (up to 48 calls) over a small world: three Parameters (one
// of them possibly tied under two names in a module), a pool of tensors, an optimizer, a
// generator, grad hooks and the thread count. Each call draws its arguments from the bytes,
// with extreme values mixed in: shapes with negative, 2^32, 2^62 and INT64 extremes, floats NaN,
// inf and 1e30, hyper-parameters out of range, dims out of range, corrupted checkpoint bytes,
// imported optimizer state with impossible values, enum values outside their enum. The calls:
// tensor constructors and factories, elementwise, unary, reductions, matmul, reshape and
// transpose, losses, embedding and embedding_bag (functional and modules), backward (with and
// without retain_graph, under NoGradGuard), format_graph, zero_grad, the five optimizers
// (construction, step, add_param_group, set_lr, export/import_state), clip_grad_norm, grad hooks
// that add and remove hooks, checkpoint save/load round trips and loads of corrupted bytes, and
// set_num_threads.
//
// What it checks, after every call:
//   - no crash, hang or sanitizer report (the fuzz preset builds with ASan + UBSan);
//   - every exception is a hitch::Error (InternalError or any other type aborts);
//   - a call refused with hitch::Error changed nothing: every Parameter's values (bitwise),
//     version, gradient and hooks, every pooled tensor's values and version, the optimizer's
//     groups, lrs and state, the generator, the tape and the thread count are as before;
//   - a checkpoint saved and loaded back restores the same values and optimizer state.
// Left out: shapes that are valid but large (non-zero sizes whose product is over 4096), which
// would only test the allocator, and hooks that throw (a throwing hook stops a backward midway, documented).
//
// Build with libFuzzer: scripts/fuzz.sh api. Replayed over tests/fuzz/corpus/api by ctest
// through replay_main.cpp (any compiler).
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <typeinfo>
#include <vector>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

using i64 = std::int64_t;
constexpr i64 kI64Max = std::numeric_limits<i64>::max();
constexpr i64 kI64Min = std::numeric_limits<i64>::min();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr std::size_t kPool = 8;
constexpr i64 kSmall = 4096;  // largest element count the fuzzer lets through to an allocation

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_api: %s\n", what.c_str());
  std::abort();
}

// Reads the input front to back; past the end every read is 0, so any prefix is a valid input.
class Bytes {
 public:
  explicit Bytes(std::span<const std::uint8_t> data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  std::uint8_t u8() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  i64 below(i64 n) { return n <= 0 ? 0 : static_cast<i64>(u8()) % n; }
  bool flag() { return (u8() & 1) != 0; }
  i64 i64_raw() {
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = (v << 8) | u8();
    return static_cast<i64>(v);
  }
  // A size or index: mostly small, sometimes an extreme.
  i64 count(i64 small) {
    const std::uint8_t b = u8();
    switch (b) {
      case 0xF0: return kI64Min;
      case 0xF1: return kI64Max;
      case 0xF2: return -1;
      case 0xF3: return i64{1} << 32;
      case 0xF4: return i64{1} << 62;
      case 0xF5: return (i64{1} << 62) + 1;
      case 0xF6: return i64_raw();
      case 0xF7: return i64{1} << 31;
      default: return static_cast<i64>(b) % (small + 1);
    }
  }
  double real() {
    static constexpr double table[] = {0.0, 1.0, -1.0, 0.5, 0.9, 0.999, 1e-3, 0.1, 2.0, 1e30, -1e30, 1e-30,
                                       std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::quiet_NaN(), 1e-8, 10.0, -0.0};
    const std::uint8_t b = u8();
    if (b < 18 * 12) return table[b % 18];
    return (static_cast<double>(b) - 236.0) / 4.0;
  }
  float value() { return static_cast<float>(real()); }
  Shape shape() {
    Shape s(static_cast<std::size_t>(below(4)));
    for (auto& d : s) d = count(4);
    return s;
  }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

// Small: valid and cheap to allocate; Huge: valid but too large to try (skipped); Invalid: a
// shape the library must refuse (a negative size, or non-zero sizes whose product is over
// kMaxNumel). The product of the non-zero sizes counts, not numel: [2^40, 0] holds nothing, but
// summing it over dim 1 makes [2^40].
enum class ShapeClass { Small, Huge, Invalid };
ShapeClass classify(const Shape& s) {
  double n = 1;  // exact below 2^53, and only compared with thresholds far from that
  for (i64 d : s) {
    if (d < 0) return ShapeClass::Invalid;
    if (d > 0) n *= static_cast<double>(d);
  }
  if (n > static_cast<double>(kMaxNumel)) return ShapeClass::Invalid;
  return n <= kSmall ? ShapeClass::Small : ShapeClass::Huge;
}
i64 small_numel(const Shape& s) {
  i64 n = 1;
  for (i64 d : s) n *= d;
  return n;
}

// v - k without overflow at the bottom of the range (kI64Min stays kI64Min).
i64 minus(i64 v, i64 k) { return v < kI64Min + k ? v : v - k; }

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

struct World {
  std::vector<Parameter> params;
  std::vector<Tensor> pool;
  std::unique_ptr<optim::Optimizer> opt;
  Generator gen{7};
  std::vector<std::pair<std::size_t, int>> hooks;  // (param, id)
  bool tie = false;                                // the module lists params[0] twice
  std::string path;
};

class FuzzModule : public nn::Module {
 public:
  explicit FuzzModule(World& w) : w_(w) {}
  void members(Members& m) const override {
    for (std::size_t i = 0; i < w_.params.size(); ++i) m.param(fmt::format("p{}", i), w_.params[i]);
    if (w_.tie && !w_.params.empty()) m.param("tied", w_.params[0]);
  }

 private:
  World& w_;
};

// Everything a refused call must leave as it was.
struct Snapshot {
  struct Param {
    std::vector<float> values, grad;
    std::uint64_t version;
    bool has_grad, sparse, requires_grad;
    std::size_t hooks;
  };
  std::vector<Param> params;
  std::vector<std::pair<std::vector<float>, std::uint64_t>> pool;
  std::vector<double> lrs;
  optim::StateRecords state;
  std::size_t state_size = 0;
  std::array<std::uint64_t, 4> gen;
  std::optional<double> spare;
  std::size_t tape;
  int threads;

  explicit Snapshot(const World& w) : gen(w.gen.state()), spare(w.gen.spare()), tape(tape_size()), threads(get_num_threads()) {
    for (const Parameter& p : w.params) {
      Param s{p.value().to_vector(), {}, p.impl().storage->version, p.has_grad(), false, p.requires_grad(),
              p.impl().grad_hooks.size()};
      if (p.grad_store()) {
        s.sparse = p.grad_store()->is_sparse();
        if (!p.grad_store()->empty()) s.grad = p.grad().to_vector();
      }
      params.push_back(std::move(s));
    }
    for (const Tensor& t : w.pool) pool.emplace_back(t.to_vector(), t.impl().storage->version);
    if (w.opt) {
      for (std::size_t g = 0; g < w.opt->num_groups(); ++g) lrs.push_back(w.opt->lr(g));
      state = w.opt->export_state();
      state_size = w.opt->state_size();
    }
  }

  static bool same_state(const optim::StateRecords& a, const optim::StateRecords& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!a[i].first.is_same(b[i].first) || a[i].second.counts != b[i].second.counts) return false;
      const auto& ba = a[i].second.buffers;
      const auto& bb = b[i].second.buffers;
      if (ba.size() != bb.size()) return false;
      for (const auto& [name, values] : ba) {
        auto it = bb.find(name);
        if (it == bb.end() || !same_bits(values, it->second)) return false;
      }
    }
    return true;
  }

  // Empty when equal, else what differs.
  std::string diff(const Snapshot& o) const {
    if (params.size() != o.params.size()) return "parameter count";
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Param &a = params[i], &b = o.params[i];
      if (!same_bits(a.values, b.values)) return fmt::format("values of p{}", i);
      if (a.version != b.version) return fmt::format("version of p{}", i);
      if (a.has_grad != b.has_grad || a.sparse != b.sparse || !same_bits(a.grad, b.grad))
        return fmt::format("gradient of p{}", i);
      if (a.requires_grad != b.requires_grad || a.hooks != b.hooks) return fmt::format("flags or hooks of p{}", i);
    }
    if (pool.size() != o.pool.size()) return "tensor pool size";
    for (std::size_t i = 0; i < pool.size(); ++i)
      if (!same_bits(pool[i].first, o.pool[i].first) || pool[i].second != o.pool[i].second)
        return fmt::format("pooled tensor {}", i);
    if (lrs.size() != o.lrs.size()) return "optimizer group count";
    for (std::size_t g = 0; g < lrs.size(); ++g)
      if (std::memcmp(&lrs[g], &o.lrs[g], sizeof(double)) != 0) return fmt::format("lr of group {}", g);
    if (state_size != o.state_size || !same_state(state, o.state)) return "optimizer state";
    if (gen != o.gen || spare.has_value() != o.spare.has_value()) return "generator";
    if (tape != o.tape) return fmt::format("tape size {} -> {}", tape, o.tape);
    if (threads != o.threads) return "thread count";
    return {};
  }
};

void put(World& w, Bytes& in, Tensor t) {
  if (!t.defined()) return;
  if (w.pool.size() < kPool)
    w.pool.push_back(std::move(t));
  else
    w.pool[static_cast<std::size_t>(in.below(kPool))] = std::move(t);
}

Tensor pick(World& w, Bytes& in) {
  const i64 n = static_cast<i64>(w.pool.size() + w.params.size());
  if (n == 0) return Tensor::scalar(1.0f);
  const auto k = static_cast<std::size_t>(in.below(n));
  return k < w.pool.size() ? w.pool[k] : w.params[k - w.pool.size()].value();
}

IndexTensor indices(Bytes& in, i64 rows) {
  const i64 n = in.below(7);
  std::vector<i64> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = in.flag() ? minus(in.count(rows + 1), 1) : in.below(rows + 1);
  return IndexTensor({n}, std::move(v));
}

template <class Options>
Options draw_options(Bytes& in);
template <>
optim::SGDOptions draw_options(Bytes& in) {
  return {.lr = in.real(), .momentum = in.real(), .dampening = in.real(), .weight_decay = in.real(),
          .nesterov = in.flag(), .maximize = in.flag()};
}
template <>
optim::AdamOptions draw_options(Bytes& in) {
  return {.lr = in.real(), .betas = {in.real(), in.real()}, .eps = in.real(), .weight_decay = in.real(),
          .amsgrad = in.flag(), .maximize = in.flag()};
}
template <>
optim::AdamWOptions draw_options(Bytes& in) {
  return {.lr = in.real(), .betas = {in.real(), in.real()}, .eps = in.real(), .weight_decay = in.real(),
          .amsgrad = in.flag(), .maximize = in.flag()};
}
template <>
optim::AdagradOptions draw_options(Bytes& in) {
  return {.lr = in.real(), .lr_decay = in.real(), .weight_decay = in.real(),
          .initial_accumulator_value = in.real(), .eps = in.real(), .maximize = in.flag()};
}
template <>
optim::SparseAdamOptions draw_options(Bytes& in) {
  return {.lr = in.real(), .betas = {in.real(), in.real()}, .eps = in.real(), .maximize = in.flag()};
}

std::vector<Parameter> draw_params(World& w, Bytes& in) {
  std::vector<Parameter> ps;
  const std::uint8_t mask = in.u8();
  for (std::size_t i = 0; i < w.params.size(); ++i)
    if (mask & (1u << i)) ps.push_back(w.params[i]);
  if ((mask & 0x80) && !w.params.empty()) ps.push_back(w.params[0]);  // a duplicate: refused
  return ps;
}

template <class Opt, class Options>
void make_or_extend(World& w, Bytes& in, bool extend) {
  const Options options = draw_options<Options>(in);
  std::vector<Parameter> ps = draw_params(w, in);
  if (extend) {
    if (auto* o = dynamic_cast<Opt*>(w.opt.get())) o->add_param_group({.params = std::move(ps), .options = options});
    return;
  }
  w.opt = std::make_unique<Opt>(ps, options);  // replaced only when the constructor succeeds
}

void optimizer_call(World& w, Bytes& in, bool extend) {
  switch (in.below(5)) {
    case 0: return make_or_extend<optim::SGD, optim::SGDOptions>(w, in, extend);
    case 1: return make_or_extend<optim::Adam, optim::AdamOptions>(w, in, extend);
    case 2: return make_or_extend<optim::AdamW, optim::AdamWOptions>(w, in, extend);
    case 3: return make_or_extend<optim::Adagrad, optim::AdagradOptions>(w, in, extend);
    default: return make_or_extend<optim::SparseAdam, optim::SparseAdamOptions>(w, in, extend);
  }
}

std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

// One call. Throws what the library throws; the caller classifies it.
void call(World& w, Bytes& in) {
  // Codes 20-23 (checkpoints, the thread count, NoGradGuard) are drawn a quarter as often as
  // the others: a checkpoint round trip costs as much as twenty other calls.
  i64 code = in.below(84);
  if (code >= 24) code = (code - 24) % 20;
  switch (code) {
    case 0: {  // Tensor(shape, values)
      const Shape s = in.shape();
      if (classify(s) == ShapeClass::Huge) return;
      const i64 n = classify(s) == ShapeClass::Small && in.flag() ? small_numel(s) : in.below(6);
      std::vector<float> v(static_cast<std::size_t>(n));
      for (auto& x : v) x = in.value();
      return put(w, in, Tensor(s, std::move(v)));
    }
    case 1: {  // factories
      const Shape s = in.shape();
      const i64 kind = in.below(7);
      if (kind < 6 && classify(s) == ShapeClass::Huge) return;
      const float a = in.value(), b = in.value(), c = in.value();
      switch (kind) {
        case 0: return put(w, in, Tensor::zeros(s));
        case 1: return put(w, in, Tensor::full(s, a));
        case 2: return put(w, in, Tensor::ones(s));
        case 3: return put(w, in, Tensor::randn(s, a, b, w.gen));
        case 4: return put(w, in, Tensor::uniform(s, a, b, w.gen));
        case 5: return put(w, in, Tensor::scalar(a));
        default: {
          // arange: a count either small or far beyond any limit.
          const double count = (static_cast<double>(b) - static_cast<double>(a)) / static_cast<double>(c);
          if (std::isfinite(count) && count > static_cast<double>(kSmall) && count < 1e20) return;
          return put(w, in, Tensor::arange(a, b, c));
        }
      }
    }
    case 2: {  // IndexTensor construction and arange
      const i64 a = in.count(8), b = in.count(8), step = minus(in.count(3), 1);
      if (in.flag()) {
        const Shape s = in.shape();
        if (classify(s) == ShapeClass::Huge) return;
        (void)IndexTensor(s, std::vector<i64>(static_cast<std::size_t>(in.below(6))));
        return;
      }
      const double count = (static_cast<double>(b) - static_cast<double>(a)) / static_cast<double>(step);
      if (step != 0 && count > static_cast<double>(kSmall) && count < 0x1p62) return;
      (void)IndexTensor::arange(a, b, step);
      return;
    }
    case 3: {  // binary ops
      const Tensor a = pick(w, in), b = pick(w, in);
      switch (in.below(4)) {
        case 0: return put(w, in, a + b);
        case 1: return put(w, in, a - b);
        case 2: return put(w, in, a * b);
        default: return put(w, in, a / b);
      }
    }
    case 4: {  // unary and scalar ops
      const Tensor a = pick(w, in);
      const float s = in.value();
      switch (in.below(11)) {
        case 0: return put(w, in, square(a));
        case 1: return put(w, in, pow(a, s));
        case 2: return put(w, in, exp(a));
        case 3: return put(w, in, log(a));
        case 4: return put(w, in, sqrt(a));
        case 5: return put(w, in, relu(a));
        case 6: return put(w, in, tanh(a));
        case 7: return put(w, in, sigmoid(a));
        case 8: return put(w, in, neg(a));
        case 9: return put(w, in, add(a, s));
        default: return put(w, in, mul(a, s));
      }
    }
    case 5: {  // reductions
      const Tensor a = pick(w, in);
      const i64 dim = minus(in.count(4), 2);
      const bool keep = in.flag();
      switch (in.below(4)) {
        case 0: return put(w, in, sum(a));
        case 1: return put(w, in, mean(a));
        case 2: return put(w, in, sum(a, dim, keep));
        default: return put(w, in, mean(a, dim, keep));
      }
    }
    case 6: {  // matmul
      const Tensor a = pick(w, in), b = pick(w, in);
      return put(w, in, matmul(a, b, in.flag(), in.flag()));
    }
    case 7: {  // reshape, transpose
      const Tensor a = pick(w, in);
      if (in.flag()) return put(w, in, transpose(a));
      Shape s = in.shape();
      if (classify(s) == ShapeClass::Huge) return;
      if (in.flag() && !s.empty()) s[static_cast<std::size_t>(in.below(static_cast<i64>(s.size())))] = -1;
      return put(w, in, reshape(a, s));
    }
    case 8: {  // losses
      const Tensor a = pick(w, in), b = pick(w, in);
      switch (in.below(4)) {
        case 0: return put(w, in, log_softmax(a, minus(in.count(3), 2)));
        case 1: return put(w, in, cross_entropy(a, indices(in, a.dim() == 2 ? a.size(1) : 3)));
        case 2: return put(w, in, mse_loss(a, b));
        default: return put(w, in, binary_cross_entropy_with_logits(a, b));
      }
    }
    case 9: {  // embedding and embedding_bag on a pooled tensor or a Parameter
      const Tensor table = pick(w, in);
      const i64 rows = table.dim() >= 1 ? table.size(0) : 1;
      const std::uint8_t f = in.u8();
      std::optional<i64> padding;
      if (f & 1) padding = minus(in.count(rows + 1), 1);
      std::optional<float> max_norm;
      if (f & 2) max_norm = in.value();
      const float norm_type = (f & 2) ? in.value() : 2.0f;
      const IndexTensor idx = indices(in, rows);
      if (f & 4)
        return put(w, in, embedding(idx, table, {.padding_idx = padding, .max_norm = max_norm, .norm_type = norm_type,
                                                  .scale_grad_by_freq = (f & 8) != 0, .sparse = (f & 16) != 0}));
      // A mode outside the enum is refused, never computed.
      const BagMode mode = static_cast<BagMode>(in.below(6));
      const EmbeddingBagOptions o{.mode = mode, .padding_idx = padding, .max_norm = max_norm, .norm_type = norm_type,
                                  .scale_grad_by_freq = (f & 8) != 0, .include_last_offset = (f & 32) != 0,
                                  .sparse = (f & 16) != 0};
      Tensor psw;
      if (f & 64) psw = pick(w, in);
      if (f & 128) return put(w, in, embedding_bag(indices(in, rows), indices(in, rows), table, o, psw));
      const i64 b = in.below(3), l = in.below(3);
      std::vector<i64> v(static_cast<std::size_t>(b * l));
      for (auto& x : v) x = in.below(rows + 1);
      return put(w, in, embedding_bag(IndexTensor({b, l}, std::move(v)), table, o, psw));
    }
    case 10: {  // modules around a Parameter (the tie) and fresh ones
      if (w.params.empty()) return;
      const Parameter p = w.params[static_cast<std::size_t>(in.below(static_cast<i64>(w.params.size())))];
      if (in.flag()) {
        nn::Embedding e(p, {.sparse = in.flag()});
        return put(w, in, e(indices(in, e.num_embeddings())));
      }
      nn::EmbeddingBag bag(p, {.mode = static_cast<BagMode>(in.below(5)), .sparse = in.flag()});
      return put(w, in, bag(indices(in, bag.num_embeddings()), indices(in, 2)));
    }
    case 11: {  // backward
      const Tensor t = pick(w, in);
      Tensor g;
      if (in.flag()) g = pick(w, in);
      backward(t, g, {.retain_graph = in.flag()});
      return;
    }
    case 12: {  // format_graph, item, at, set
      const Tensor t = pick(w, in);
      switch (in.below(4)) {
        case 0: (void)format_graph(t); return;
        case 1: (void)t.item(); return;
        case 2: (void)t.at({minus(in.count(3), 1), minus(in.count(3), 1)}); return;
        default: {
          if (t.requires_grad() || t.impl().is_parameter) return;  // pooled values only
          Tensor c = t;
          c.set({minus(in.count(3), 1)}, in.value());
          return;
        }
      }
    }
    case 13: {  // zero_grad
      const bool none = in.flag();
      if (in.flag() && w.opt) return w.opt->zero_grad(none);
      if (!w.params.empty()) w.params[static_cast<std::size_t>(in.below(static_cast<i64>(w.params.size())))].zero_grad(none);
      return;
    }
    case 14: return optimizer_call(w, in, false);
    case 15: return optimizer_call(w, in, true);
    case 16: {  // step, set_lr
      if (!w.opt) return;
      if (in.flag()) return w.opt->step();
      return w.opt->set_lr(static_cast<std::size_t>(in.below(3)), in.real());
    }
    case 17: {  // export_state -> one impossible value -> import_state
      if (!w.opt) return;
      optim::StateRecords records = w.opt->export_state();
      if (!records.empty()) {
        auto& r = records[static_cast<std::size_t>(in.below(static_cast<i64>(records.size())))].second;
        if (!r.counts.empty() && in.flag()) {
          r.counts.begin()->second = minus(in.count(3), 1);
        } else if (!r.buffers.empty()) {
          auto& buf = r.buffers.begin()->second;
          if (!buf.empty()) buf[static_cast<std::size_t>(in.below(static_cast<i64>(buf.size())))] = in.value();
          else if (in.flag()) buf.push_back(1.0f);
        }
      }
      w.opt->import_state(records);
      return;
    }
    case 18: {  // clip_grad_norm
      std::vector<Parameter> ps = draw_params(w, in);
      (void)optim::clip_grad_norm(ps, in.real(), in.real(), in.flag());
      return;
    }
    case 19: {  // hooks that add and remove hooks
      if (w.params.empty()) return;
      const auto i = static_cast<std::size_t>(in.below(static_cast<i64>(w.params.size())));
      Parameter p = w.params[i];
      if (in.flag() && !w.hooks.empty()) {
        const auto k = static_cast<std::size_t>(in.below(static_cast<i64>(w.hooks.size())));
        w.params[w.hooks[k].first].remove_grad_hook(w.hooks[k].second);
        w.hooks.erase(w.hooks.begin() + static_cast<std::ptrdiff_t>(k));
        return;
      }
      const i64 kind = in.below(3);
      // The hook reaches its Parameter through the world (a copy inside would be a cycle).
      World* wp = &w;
      auto own_id = std::make_shared<int>(0);
      const int id = p.add_grad_hook([wp, i, kind, own_id](const GradContribution&) {
        Parameter& self = wp->params[i];
        if (kind == 1 && self.impl().grad_hooks.size() < 4) self.add_grad_hook([](const GradContribution&) {});
        if (kind == 2) self.remove_grad_hook(*own_id);
      });
      *own_id = id;
      w.hooks.emplace_back(i, id);
      return;
    }
    case 20: {  // checkpoint round trip: what is saved loads back unchanged
      FuzzModule m(w);
      w.tie = in.flag();
      save_checkpoint(w.path, m, {.optimizer = w.opt.get(), .generator = &w.gen});
      const Snapshot before(w);
      load_checkpoint(w.path, m, {.optimizer = w.opt.get(), .generator = &w.gen});
      const Snapshot after(w);
      // Loading writes values in place (versions move) and the gradient is not in the file.
      for (std::size_t k = 0; k < before.params.size(); ++k)
        if (!same_bits(before.params[k].values, after.params[k].values)) fail("checkpoint round trip changed values");
      if (!Snapshot::same_state(before.state, after.state)) fail("checkpoint round trip changed optimizer state");
      if (before.gen != after.gen) fail("checkpoint round trip changed the generator");
      return;
    }
    case 21: {  // load corrupted bytes of a valid checkpoint
      FuzzModule m(w);
      save_checkpoint(w.path, m, {.optimizer = w.opt.get(), .generator = &w.gen});
      std::vector<std::byte> bytes = read_file(w.path);
      const int flips = static_cast<int>(in.below(4));
      for (int k = 0; k < flips && !bytes.empty(); ++k) {
        const std::size_t at = static_cast<std::size_t>((static_cast<i64>(in.u8()) << 8 | in.u8()) %
                                                        static_cast<i64>(bytes.size()));
        bytes[at] = static_cast<std::byte>(in.u8());
      }
      if (in.flag() && !bytes.empty()) bytes.resize(static_cast<std::size_t>(in.below(static_cast<i64>(bytes.size()))));
      load_checkpoint_from_bytes(bytes, m, {.optimizer = w.opt.get(), .generator = &w.gen}, "fuzz");
      return;
    }
    case 22: {  // thread count
      static constexpr int counts[] = {1, 2, 3, 0, -1, 257, 1, 2};  // no 256: starting 255 threads per input only slows the campaign
      set_num_threads(counts[in.below(8)]);
      return;
    }
    default: {  // a call under NoGradGuard
      NoGradGuard guard;
      const Tensor a = pick(w, in);
      return put(w, in, sum(a * a));
    }
  }
}

void run(Bytes& in, const std::string& path) {
  World w;
  w.path = path;
  const i64 np = 1 + in.below(3);
  for (i64 i = 0; i < np; ++i) {
    const i64 rows = 1 + in.below(5), cols = 1 + in.below(4);
    w.params.emplace_back(fmt::format("p{}", i), Tensor::randn({rows, cols}, w.gen));
  }
  for (int k = 0; k < 48 && !in.done(); ++k) {
    const bool no_grad = (in.u8() & 0x0F) == 0;
    const Snapshot before(w);
    try {
      std::optional<NoGradGuard> guard;
      if (no_grad) guard.emplace();
      call(w, in);
    } catch (const InternalError& e) {
      fail(std::string("InternalError: ") + e.what());
    } catch (const Error& e) {
      const Snapshot after(w);
      if (const std::string d = after.diff(before); !d.empty()) fail("refused call changed " + d + ": " + e.what());
    } catch (const std::exception& e) {
      fail(std::string("not a hitch::Error: ") + typeid(e).name() + ": " + e.what());
    }
  }
  set_num_threads(1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // In memory where there is a tmpfs: a checkpoint's fsync there costs nothing.
  static const std::filesystem::path dir =
      std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
  static const std::string path = (dir / fmt::format("hitch_fuzz_api_{}.safetensors", ::getpid())).string();
  Bytes in({data, size});
  run(in, path);
  return 0;
}
