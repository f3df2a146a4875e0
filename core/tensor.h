// hitch/core/tensor.h: Tensor (float32, row-major, contiguous, any rank), IndexTensor (int64)
// and Generator (seeded, platform-independent random numbers).
//
// A Tensor is a shared handle: copying it shares the same TensorImpl, so the tape can find a
// tensor again by identity. The values live in a Storage that several TensorImpls may share
// (detach(), Parameter::alias_of); every in-place write through the library bumps the
// storage's version so that a backward reading stale saved values fails loudly.
// Left out on purpose: strides and views, dtypes other than float32, devices.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <hitch/core/error.h>
#include <hitch/core/runtime/storage.h>  // FloatStorage: where a tensor's values are allocated

namespace hitch {

// xoshiro256** seeded through splitmix64; the distributions are written here, so a seed gives
// the same numbers with every compiler and standard library.
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0);
  std::uint64_t next_u64();
  double uniform();                    // [0, 1), 53 random bits
  double normal();                     // N(0, 1), Box-Muller (both values are used in turn)
  std::uint64_t below(std::uint64_t n);  // uniform integer in [0, n), no modulo bias
  std::array<std::uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<std::uint64_t, 4>& s) { s_ = s; has_spare_ = false; }
  // The second Box-Muller value that the next normal() returns, if one is pending. set_state
  // drops it; restoring state() and then spare() resumes the exact sequence (checkpoints).
  std::optional<double> spare() const { return has_spare_ ? std::optional<double>(spare_) : std::nullopt; }
  void set_spare(std::optional<double> value) { has_spare_ = value.has_value(); spare_ = value.value_or(0.0); }

 private:
  std::array<std::uint64_t, 4> s_{};
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// The generator that module constructors use when none is passed: one per thread, seed 0
// until manual_seed() sets it.
Generator& default_generator();
void manual_seed(std::uint64_t seed);

struct Storage {
  FloatStorage data;
  std::uint64_t version = 0;  // bumped by every in-place write
};

struct Node;
class Grad;
struct GradContribution;
using GradHook = std::function<void(const GradContribution&)>;

// What a Parameter split over processes carries (ops/sharding.h: RowSharding, implemented by
// hitch::dist's row-wise sharding). core only holds it; the ops that read rows consult it.
struct ShardingHook {
  virtual ~ShardingHook() = default;
  // Parameter::zero_grad(set_to_none) calls this too: the gradients still waiting in the
  // sharding (lookups not yet sent to their owners) are this Parameter's gradient as well.
  virtual void zero_grad(bool set_to_none) = 0;
  // True while lookups hold gradients not yet sent to their owners (an optimizer step then
  // refuses: its Parameter's own gradient is missing them).
  virtual bool has_unreduced_gradients() const = 0;
};

// What applies an optimizer inside backward (optim/in_backward.h: optim::InBackward). core only
// calls it: backward() runs every node, then hands over to each hook its reached Parameters carry,
// so the update sees every path's contribution (both lookups of a tied table) and happens once
// per backward. Three calls, so that several hooks are all-or-nothing together:
struct InBackwardHook {
  virtual ~InBackwardHook() = default;
  // Before any node runs: refuses (throws) what it can tell without the gradients.
  virtual void before() = 0;
  // After every node ran: every check that needs the gradients, and every allocation. On a throw
  // nothing visible changed (backward then drops the gradients of every hooked Parameter).
  virtual void prepare() = 0;
  // The update, then the gradients dropped (set to none). Cannot fail.
  virtual void apply() noexcept = 0;
};

struct TensorImpl {
  Shape shape;
  std::shared_ptr<Storage> storage;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // the op that made this tensor; null for a leaf
  std::shared_ptr<Grad> grad;     // leaves: kept across backward calls; others: during backward
  // Parameter-only metadata (see core/parameter.h).
  bool is_parameter = false;
  bool alias_opt_in = false;
  std::string name;  // what every message calls it: its made-with name, or its module paths joined by " = "
  std::vector<std::string> module_paths;  // dotted paths from the last module walk (nn/module.h); empty if none
  std::vector<std::pair<int, GradHook>> grad_hooks;  // see Parameter::add_grad_hook
  int next_hook_id = 1;                              // ids are never reused
  std::shared_ptr<ShardingHook> sharding;  // null unless the Parameter is a shard of a bigger table
  std::shared_ptr<InBackwardHook> in_backward;  // null unless an optimizer is applied in backward
};

// The most elements one Tensor or IndexTensor may have: 2^48 (about 2.8e14). Its byte count
// (2^50 for float32, 2^51 for int64) fits size_t and ptrdiff_t 2^12 times over, so element counts,
// byte counts and flat offsets of a valid shape never overflow, and neither does a product of two
// of its sizes or an offset plus a count. No current machine can hold a tensor this large
// (x86-64 and AArch64 address at most 2^48 to 2^57 bytes), so the limit refuses only shapes that
// could never be allocated; those below it that still do not fit fail with AllocationError.
inline constexpr std::int64_t kMaxNumel = std::int64_t{1} << 48;

// The one shape check, used by every constructor and factory of Tensor and IndexTensor (and by
// reshape and the safetensors reader): every size is >= 0 and the product of the non-zero sizes
// is at most kMaxNumel (so also every partial product, and numel itself). Returns numel, or
// throws Error naming op, the shape and the limit.
std::int64_t checked_numel(std::string_view op, const Shape& shape);
// The element count of a shape: checked_numel("numel_of", shape). Every Tensor's and
// IndexTensor's shape passed the check already, so for them this never throws.
std::int64_t numel_of(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // A 1-D tensor of the values, shape [n] (torch.tensor(list)). Explicit, so a vector never
  // turns into a Tensor unasked. A braced list is values, as in torch.tensor([2, 3]):
  // Tensor({2, 3}) is the 1-D tensor [2, 3]; shapes go to the factories (Tensor::zeros({2, 3})),
  // and Tensor({rows, cols}) with int64 variables does not compile (a narrowing conversion).
  explicit Tensor(std::vector<float> values);
  // values row-major; values.size() must equal the shape's numel, else Error
  // "Tensor: shape [2,3] needs 6 values, got 5".
  Tensor(Shape shape, std::vector<float> values);
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Every constructor and factory checks its shape with checked_numel (sizes >= 0, at most
  // kMaxNumel elements) before allocating, and names itself in the error ("Tensor::zeros: ...").
  // For op outputs that are fully written: the values are left unset (not zero-filled) in
  // optimised builds and set to NaN in builds without NDEBUG, so a kernel that reads a value it
  // never wrote shows up in the (Debug-built) test suite.
  static Tensor empty(Shape shape);
  static Tensor zeros(Shape shape);
  static Tensor ones(Shape shape);
  static Tensor full(Shape shape, float value);
  static Tensor scalar(float value);  // shape []
  // [start, end) in steps of step: all three finite, step != 0, at most kMaxNumel values.
  static Tensor arange(float start, float end, float step = 1.0f);
  // Random values drawn from gen in element order, one argument order for both: (shape, the
  // distribution's parameters, generator), the generator defaulting to this thread's
  // default_generator() (torch.randn(*size, generator=None), Tensor.uniform_(from=0, to=1,
  // generator=None)). randn: N(mean, std^2), mean and std finite, std >= 0 (Box-Muller,
  // Generator::normal). uniform: [low, high), low and high finite, low <= high. A refused call
  // draws nothing.
  static Tensor randn(Shape shape, float mean = 0.0f, float std = 1.0f, Generator& gen = default_generator());
  static Tensor randn(Shape shape, Generator& gen) { return randn(std::move(shape), 0.0f, 1.0f, gen); }
  static Tensor uniform(Shape shape, float low = 0.0f, float high = 1.0f, Generator& gen = default_generator());
  static Tensor uniform(Shape shape, Generator& gen) { return uniform(std::move(shape), 0.0f, 1.0f, gen); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  std::int64_t dim() const { return static_cast<std::int64_t>(shape().size()); }
  std::int64_t size(std::int64_t d) const;  // d may be negative, counted from the end
  std::int64_t numel() const;

  float* data();
  const float* data() const;
  std::span<const float> values() const { return {data(), static_cast<std::size_t>(numel())}; }
  std::vector<float> to_vector() const { return {values().begin(), values().end()}; }
  float item() const;                                   // numel must be 1
  float at(std::initializer_list<std::int64_t> index) const;
  void set(std::initializer_list<std::int64_t> index, float value);  // in place, bumps version

  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;   // the accumulated gradient, densified; undefined if none yet
  Tensor detach() const;  // same storage, no graph
  Tensor clone() const;   // copy of the values, no graph
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Indices for embedding, cross_entropy and friends: int64, row-major, any rank. A plain value
// type: it never takes part in autograd.
class IndexTensor {
 public:
  IndexTensor() = default;
  IndexTensor(std::initializer_list<std::int64_t> values);  // 1-D: IndexTensor{3, 17}
  explicit IndexTensor(std::vector<std::int64_t> values);   // 1-D, shape [n]
  // values row-major; values.size() must equal the shape's numel, else Error
  // "IndexTensor: shape [2,3] needs 6 values, got 5".
  IndexTensor(Shape shape, std::vector<std::int64_t> values);
  // [start, end) in steps of step (any int64 values, step != 0, at most kMaxNumel values); the
  // count is computed without overflow and no value past end is formed.
  static IndexTensor arange(std::int64_t start, std::int64_t end, std::int64_t step = 1);

  const Shape& shape() const { return shape_; }
  std::int64_t dim() const { return static_cast<std::int64_t>(shape_.size()); }
  std::int64_t size(std::int64_t d) const;
  std::int64_t numel() const { return static_cast<std::int64_t>(data_.size()); }
  const std::int64_t* data() const { return data_.data(); }
  std::int64_t* data() { return data_.data(); }
  std::span<const std::int64_t> values() const { return data_; }
  std::int64_t operator[](std::int64_t flat) const { return data_[static_cast<std::size_t>(flat)]; }

 private:
  Shape shape_{0};
  std::vector<std::int64_t> data_;
};

// Normalises dim (negative counts from the end) against rank, or throws naming op.
std::int64_t wrap_dim(std::string_view op, std::int64_t dim, std::int64_t rank);

// Printing: "tensor([[1, 2],\n [3, 4]], shape=[2,2], requires_grad)", values as {:.6g};
// "index_tensor([3, 4], shape=[2])". Past kPrintThreshold elements the output is summarised as
// PyTorch does (torch.set_printoptions defaults: threshold 1000, edgeitems 3): every dim longer
// than 2 * kPrintEdgeItems shows its first and last kPrintEdgeItems entries around "...",
// "tensor([0, 1, 2, ..., 1997, 1998, 1999], shape=[2000])". A tensor without values prints as
// "tensor([], shape=[3,0])" whatever its shape (PyTorch: tensor([], size=(3, 0))). Unlike PyTorch, no column
// alignment and no line wrapping; the shape is always printed.
inline constexpr std::int64_t kPrintThreshold = 1000;
inline constexpr std::int64_t kPrintEdgeItems = 3;
std::string to_string(const Tensor& t);
std::string to_string(const IndexTensor& t);

}  // namespace hitch

// A Shape (std::vector<std::int64_t>) prints as shape_str does: "[2,3]", "[]" for a scalar.
// Declared here, with the other formatters, so every file that sees a Tensor formats a Shape
// the same way (it takes precedence over fmt/ranges.h's generic "[2, 3]").
template <>
struct fmt::formatter<hitch::Shape> : fmt::formatter<std::string_view> {
  auto format(const hitch::Shape& s, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(hitch::shape_str(s), ctx);
  }
};

template <>
struct fmt::formatter<hitch::Tensor> : fmt::formatter<std::string_view> {
  auto format(const hitch::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(hitch::to_string(t), ctx);
  }
};
template <>
struct fmt::formatter<hitch::IndexTensor> : fmt::formatter<std::string_view> {
  auto format(const hitch::IndexTensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(hitch::to_string(t), ctx);
  }
};
