// tests/fuzz/fuzz_embedding.cpp: libFuzzer target for the argument handling of embedding and
// embedding_bag (functional forms and the nn modules).
//
// The bytes become a table size N x D, the table's values, the call form, the indices (any
// rank for embedding; 1-D + offsets or 2-D for embedding_bag, or a wrong rank), the offsets, the
// mode by name, the options and the per-sample weights. The only allowed outcomes are:
//   - a result of the documented shape, after which backward runs and the table's gradient has
//     the table's shape;
//   - hitch::Error, and then nothing changed: the table's values and version, its gradient,
//     the per-sample weights' gradient and the tape are as before the call.
// Anything else (another exception, a crash, a sanitizer report, a changed table after an
// error) aborts. Left out: huge sizes (N <= 8, D <= 4, at most 12 indices), which would only
// test the allocator.
//
// Build with libFuzzer: scripts/fuzz.sh. Replayed over tests/fuzz/corpus/embedding by ctest
// through replay_main.cpp (any compiler).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

// Reads the input front to back; past the end every read is 0, so any prefix is a valid input.
class Bytes {
 public:
  explicit Bytes(std::span<const std::uint8_t> data) : data_(data) {}
  std::uint8_t u8() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  std::int64_t below(std::int64_t n) { return n <= 0 ? 0 : static_cast<std::int64_t>(u8()) % n; }
  std::int64_t i64() {
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = (v << 8) | u8();
    return static_cast<std::int64_t>(v);
  }
  // An index for a table of n rows: mostly near the valid range [0, n), sometimes an extreme.
  std::int64_t index(std::int64_t n) {
    const std::uint8_t b = u8();
    switch (b) {
      case 0xF0: return std::numeric_limits<std::int64_t>::min();
      case 0xF1: return std::numeric_limits<std::int64_t>::max();
      case 0xF2: return -n - 1;
      case 0xF3: return n;
      case 0xF4: return i64();
      default: return static_cast<std::int64_t>(b % (n + 3)) - 1;  // [-1, n + 1]
    }
  }
  float special(std::span<const float> table) { return table[static_cast<std::size_t>(below(static_cast<std::int64_t>(table.size())))]; }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kMaxNorms[] = {1.0f, 0.5f, 0.0f, -1.0f, kNaN, kInf, 1e-30f, 1e30f};
constexpr float kNormTypes[] = {2.0f, 1.0f, kInf, 0.0f, -1.0f, kNaN, 0.5f, 3.0f};
const char* const kModes[] = {"sum", "mean", "max", "sqrtn", "prod", ""};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_embedding: %s\n", what.c_str());
  std::abort();
}

IndexTensor read_indices(Bytes& in, Shape shape, std::int64_t rows) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(numel_of(shape)));
  for (auto& x : v) x = in.index(rows);
  return IndexTensor(std::move(shape), std::move(v));
}

// What a rejected call must leave as it was.
struct Snapshot {
  std::vector<float> values;
  std::uint64_t version;
  bool had_grad;
  std::vector<float> grad;
  bool psw_had_grad;
  std::size_t tape;

  Snapshot(const Tensor& w, const Tensor& psw)
      : values(w.to_vector()),
        version(w.impl().storage->version),
        had_grad(w.impl().grad != nullptr),
        grad(had_grad ? w.grad().to_vector() : std::vector<float>{}),
        psw_had_grad(psw.defined() && psw.impl().grad != nullptr),
        tape(tape_size()) {}

  void check(const Tensor& w, const Tensor& psw, const char* error) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      if (a.size() != b.size()) return false;
      for (std::size_t i = 0; i < a.size(); ++i)
        if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
      return true;
    };
    if (!same(w.to_vector(), values)) fail(std::string("table values changed before: ") + error);
    if (w.impl().storage->version != version) fail(std::string("table version changed before: ") + error);
    if ((w.impl().grad != nullptr) != had_grad || (had_grad && !same(w.grad().to_vector(), grad)))
      fail(std::string("table gradient changed before: ") + error);
    if (psw.defined() && (psw.impl().grad != nullptr) != psw_had_grad)
      fail(std::string("per_sample_weights gradient changed before: ") + error);
    if (tape_size() != tape) fail(std::string("tape changed before: ") + error);
  }
};

void run(Bytes& in) {
  const std::int64_t N = in.below(9), D = in.below(5);
  const std::int64_t form = in.below(5);  // 0 embedding, 1 bag 1-D, 2 bag 2-D, 3 Embedding module, 4 EmbeddingBag module
  const std::uint8_t flags = in.u8();
  const char* mode_name = kModes[in.below(6)];

  std::vector<float> table(static_cast<std::size_t>(N * D));
  for (auto& x : table) x = (static_cast<float>(in.u8()) - 128.0f) / 16.0f;
  Tensor w(Shape{N, D}, std::move(table));
  w.requires_grad_((flags & 0x80) == 0);

  std::optional<std::int64_t> padding_idx;
  if (flags & 0x01) padding_idx = in.index(N);
  std::optional<float> max_norm;
  if (flags & 0x02) max_norm = in.special(kMaxNorms);
  const float norm_type = (flags & 0x02) ? in.special(kNormTypes) : 2.0f;

  // Input shape: embedding takes any rank; the bag forms get their own rank most of the time.
  const std::int64_t rank = (form == 0 || form == 3) ? in.below(4) : (in.u8() < 0xE0 ? (form == 2 ? 2 : 1) : in.below(4));
  Shape shape;
  for (std::int64_t d = 0; d < rank; ++d) shape.push_back(in.below(rank == 1 ? 13 : 4));
  const IndexTensor indices = read_indices(in, shape, N);

  const std::int64_t L = rank >= 1 ? shape.back() * (rank >= 2 ? shape[0] : 1) : 1;
  std::vector<std::int64_t> offs(static_cast<std::size_t>(in.below(6)));
  for (auto& o : offs) o = in.index(L);
  if (!offs.empty() && in.u8() < 0xC0) offs[0] = 0;  // mostly valid first offsets, to get further
  const IndexTensor offsets(Shape{static_cast<std::int64_t>(offs.size())}, offs);

  Tensor psw;
  if (flags & 0x20) {
    Shape psw_shape = in.u8() < 0xE0 ? indices.shape() : Shape{indices.numel() + 1};
    std::vector<float> v(static_cast<std::size_t>(numel_of(psw_shape)));
    for (auto& x : v) x = (static_cast<float>(in.u8()) - 128.0f) / 32.0f;
    psw = Tensor(psw_shape, std::move(v));
    psw.requires_grad_((flags & 0x40) != 0);
  }

  // A gradient already in the table, which a rejected call must keep.
  if (w.requires_grad() && N > 0 && in.u8() % 2 == 0) backward(embedding(IndexTensor{0}, w), Tensor::ones({1, D}));

  const EmbeddingOptions eo{.padding_idx = padding_idx,
                            .max_norm = max_norm,
                            .norm_type = norm_type,
                            .scale_grad_by_freq = (flags & 0x04) != 0,
                            .sparse = (flags & 0x10) != 0};
  const Snapshot before(w, psw);
  Tensor out;
  Shape want;
  try {
    const BagMode mode = parse_bag_mode(mode_name);
    const EmbeddingBagOptions bo{.mode = mode,
                                 .padding_idx = padding_idx,
                                 .max_norm = max_norm,
                                 .norm_type = norm_type,
                                 .scale_grad_by_freq = (flags & 0x04) != 0,
                                 .include_last_offset = (flags & 0x08) != 0,
                                 .sparse = (flags & 0x10) != 0};
    const std::int64_t bags =
        bo.include_last_offset ? static_cast<std::int64_t>(offs.size()) - 1 : static_cast<std::int64_t>(offs.size());
    switch (form) {
      case 0:
        out = embedding(indices, w, eo);
        want = indices.shape();
        want.push_back(D);
        break;
      case 1:
        out = embedding_bag(indices, offsets, w, bo, psw);
        want = {bags, D};
        break;
      case 2:
        out = embedding_bag(indices, w, bo, psw);
        want = {rank >= 1 ? shape[0] : 0, D};
        break;
      case 3: {
        Parameter p("fuzz", w);
        nn::Embedding m(p, eo);
        out = m(indices);
        want = indices.shape();
        want.push_back(D);
        break;
      }
      default: {
        Parameter p("fuzz", w);
        nn::EmbeddingBag m(p, bo);
        out = (flags & 0x08) || rank != 2 ? m(indices, offsets, psw) : m(indices, psw);
        want = (flags & 0x08) || rank != 2 ? Shape{bags, D} : Shape{rank >= 1 ? shape[0] : 0, D};
        break;
      }
    }
  } catch (const Error& e) {
    before.check(w, psw, e.what());
    if (std::string(e.what()).find(':') == std::string::npos) fail(std::string("message names no op: ") + e.what());
    return;
  }

  if (out.shape() != want)
    fail(fmt::format("form {}: result has shape {}, expected {}", form, shape_str(out.shape()), shape_str(want)));
  if (out.requires_grad()) {
    backward(out, Tensor::ones(out.shape()));
    if (w.requires_grad() && w.impl().grad && w.grad().shape() != w.shape())
      fail(fmt::format("gradient of shape {} for a table of shape {}", shape_str(w.grad().shape()), shape_str(w.shape())));
    if (psw.defined() && psw.requires_grad() && psw.impl().grad && psw.grad().shape() != psw.shape())
      fail("per_sample_weights gradient has the wrong shape");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(std::span<const std::uint8_t>(data, size));
  try {
    run(in);
  } catch (const Error& e) {
    fail(std::string("hitch::Error escaped after the call (from backward?): ") + e.what());
  } catch (const std::exception& e) {
    fail(std::string("unexpected exception: ") + e.what());
  }
  return 0;
}
