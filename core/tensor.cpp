// hitch/core/tensor.cpp: Tensor, IndexTensor and Generator.
#include <hitch/core/tensor.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <new>
#include <numbers>

#include <hitch/core/grad.h>
#include <hitch/core/tape.h>

namespace hitch {

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ",")); }

// The message for a shape that checked_numel refuses: a negative size first, else the limit.
[[noreturn, gnu::cold]] static void refuse_shape(std::string_view op, const Shape& shape) {
  for (std::size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0)
      throw Error(fmt::format("{}: shape {} has a negative size {} at dim {}", op, shape_str(shape), shape[d], d));
  const bool has_zero = std::find(shape.begin(), shape.end(), 0) != shape.end();
  throw Error(has_zero ? fmt::format("{}: shape {} has non-zero sizes whose product is more than 2^48 (the limit per "
                                     "tensor, for its elements and every product of its sizes)",
                                     op, shape_str(shape))
                       : fmt::format("{}: shape {} has more than 2^48 elements (the limit per tensor)", op,
                                     shape_str(shape)));
}

std::int64_t checked_numel(std::string_view op, const Shape& shape) {
  // The product of the non-zero sizes, refused as soon as it would pass kMaxNumel (it never
  // overflows: each step multiplies two numbers of at most 2^63 and checks for overflow).
  std::int64_t nonzero = 1;
  bool has_zero = false;
  for (const std::int64_t s : shape) {
    if (s <= 0) {
      if (s < 0) refuse_shape(op, shape);
      has_zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, s, &nonzero) || nonzero > kMaxNumel) refuse_shape(op, shape);
  }
  return has_zero ? 0 : nonzero;
}

std::int64_t numel_of(const Shape& shape) { return checked_numel("numel_of", shape); }

std::int64_t wrap_dim(std::string_view op, std::int64_t dim, std::int64_t rank) {
  if (rank == 0) throw Error(fmt::format("{}: dim {} given for a tensor of rank 0, which has no dims", op, dim));
  if (dim < -rank || dim >= rank)
    throw Error(fmt::format("{}: dim {} is out of range for a tensor of rank {} (valid: [{}, {}])", op, dim, rank,
                            -rank, rank - 1));
  return dim < 0 ? dim + rank : dim;
}

// ---- Generator -------------------------------------------------------------------------------

static std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Generator::Generator(std::uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

std::uint64_t Generator::next_u64() {
  auto rotl = [](std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = uniform();  // log(0) is not allowed
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * std::numbers::pi * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

std::uint64_t Generator::below(std::uint64_t n) {
  if (n == 0) throw Error("Generator::below: n must be positive, got 0");
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
  for (;;) {
    const std::uint64_t x = next_u64();
    if (x < limit) return x % n;
  }
}

Generator& default_generator() {
  thread_local Generator gen(0);
  return gen;
}
void manual_seed(std::uint64_t seed) { default_generator() = Generator(seed); }

// ---- Tensor ----------------------------------------------------------------------------------

static std::shared_ptr<TensorImpl> make_impl(Shape shape, FloatStorage values) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = std::move(shape);
  impl->storage = std::make_shared<Storage>();
  impl->storage->data = std::move(values);
  return impl;
}

Tensor::Tensor(std::vector<float> values)
    : impl_(make_impl(Shape{static_cast<std::int64_t>(values.size())}, FloatStorage(values.begin(), values.end()))) {}

Tensor::Tensor(Shape shape, std::vector<float> values) {
  const auto n = checked_numel("Tensor", shape);
  if (static_cast<std::int64_t>(values.size()) != n)
    throw Error(fmt::format("Tensor: shape {} needs {} values, got {}", shape_str(shape), n, values.size()));
  impl_ = make_impl(std::move(shape), FloatStorage(values.begin(), values.end()));
}

// A tensor of shape (checked for op) with every value set to value.
static Tensor filled(std::string_view op, Shape shape, float value) {
  const auto n = static_cast<std::size_t>(checked_numel(op, shape));
  return Tensor(make_impl(std::move(shape), FloatStorage(n, value)));
}

Tensor Tensor::empty(Shape shape) {
#ifdef NDEBUG
  const auto n = static_cast<std::size_t>(checked_numel("Tensor::empty", shape));
  return Tensor(make_impl(std::move(shape), FloatStorage(n)));
#else
  return filled("Tensor::empty", std::move(shape), std::numeric_limits<float>::quiet_NaN());
#endif
}
Tensor Tensor::zeros(Shape shape) { return filled("Tensor::zeros", std::move(shape), 0.0f); }
Tensor Tensor::ones(Shape shape) { return filled("Tensor::ones", std::move(shape), 1.0f); }
Tensor Tensor::full(Shape shape, float value) { return filled("Tensor::full", std::move(shape), value); }
Tensor Tensor::scalar(float value) { return Tensor(Shape{}, {value}); }

Tensor Tensor::arange(float start, float end, float step) {
  if (!std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step) || step == 0.0f)
    throw Error(fmt::format("Tensor::arange: start, end and step must be finite and step non-zero, got start {}, end "
                            "{} and step {}",
                            start, end, step));
  // In double, |end - start| / |step| is at most about 2^128 / 2^-149: finite, and compared
  // with the limit before any conversion to an integer.
  const double count = std::ceil((static_cast<double>(end) - start) / step);
  if (count > static_cast<double>(kMaxNumel))
    throw Error(fmt::format("Tensor::arange: [{}, {}) in steps of {} has {} values, more than 2^48 (the limit per "
                            "tensor)",
                            start, end, step, count));
  const auto n = static_cast<std::int64_t>(count > 0 ? count : 0);
  Tensor out = filled("Tensor::arange", {n}, 0.0f);
  float* v = out.data();
  for (std::int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(start + static_cast<double>(i) * step);
  return out;
}

Tensor Tensor::randn(Shape shape, float mean, float std, Generator& gen) {
  if (!std::isfinite(mean) || !std::isfinite(std) || std < 0.0f)
    throw Error(fmt::format("Tensor::randn: mean and std must be finite and std >= 0, got mean {} and std {}", mean,
                            std));
  Tensor t = filled("Tensor::randn", std::move(shape), 0.0f);
  for (auto& x : t.impl().storage->data) x = static_cast<float>(mean + std * gen.normal());
  return t;
}

Tensor Tensor::uniform(Shape shape, float low, float high, Generator& gen) {
  if (!std::isfinite(low) || !std::isfinite(high) || !(low <= high))
    throw Error(fmt::format("Tensor::uniform: low and high must be finite with low <= high, got low {} and high {}",
                            low, high));
  Tensor t = filled("Tensor::uniform", std::move(shape), 0.0f);
  for (auto& x : t.impl().storage->data) x = static_cast<float>(low + (static_cast<double>(high) - low) * gen.uniform());
  return t;
}

TensorImpl& Tensor::impl() const {
  if (!impl_) throw Error("Tensor: use of an undefined tensor");
  return *impl_;
}
const Shape& Tensor::shape() const { return impl().shape; }
std::int64_t Tensor::numel() const { return numel_of(shape()); }
std::int64_t Tensor::size(std::int64_t d) const { return shape()[static_cast<std::size_t>(wrap_dim("size", d, dim()))]; }
float* Tensor::data() { return impl().storage->data.data(); }
const float* Tensor::data() const { return impl().storage->data.data(); }

float Tensor::item() const {
  if (numel() != 1) throw Error(fmt::format("item: the tensor must have one element, but has shape {}", shape_str(shape())));
  return data()[0];
}

static std::int64_t flat_index(const Shape& shape, std::initializer_list<std::int64_t> index) {
  if (index.size() != shape.size())
    throw Error(fmt::format("at: {} indices given for a tensor of shape {}", index.size(), shape_str(shape)));
  std::int64_t flat = 0;
  std::size_t d = 0;
  for (auto i : index) {
    if (i < 0 || i >= shape[d])
      throw Error(fmt::format("at: index {} at dim {} is out of range for shape {} (valid: [0, {}))", i, d,
                              shape_str(shape), shape[d]));
    flat = flat * shape[d] + i;
    ++d;
  }
  return flat;
}

float Tensor::at(std::initializer_list<std::int64_t> index) const { return data()[flat_index(shape(), index)]; }

void Tensor::set(std::initializer_list<std::int64_t> index, float value) {
  const auto flat = flat_index(shape(), index);
  data()[flat] = value;
  ++impl().storage->version;
}

bool Tensor::requires_grad() const { return impl().requires_grad; }
bool Tensor::is_leaf() const { return impl().grad_fn == nullptr; }

Tensor& Tensor::requires_grad_(bool on) {
  if (!is_leaf())
    throw Error("requires_grad_: only a leaf tensor's flag can be set (this tensor was made by an op; use detach())");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  const auto& g = impl().grad;
  if (!g || g->empty() || !is_leaf()) return {};
  return g->dense();
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape();
  impl->storage = this->impl().storage;
  return Tensor(impl);
}

Tensor Tensor::clone() const { return Tensor(make_impl(shape(), FloatStorage(values().begin(), values().end()))); }

// ---- IndexTensor -----------------------------------------------------------------------------

IndexTensor::IndexTensor(std::initializer_list<std::int64_t> values)
    : shape_{static_cast<std::int64_t>(values.size())}, data_(values) {}

IndexTensor::IndexTensor(std::vector<std::int64_t> values)
    : shape_{static_cast<std::int64_t>(values.size())}, data_(std::move(values)) {}

IndexTensor::IndexTensor(Shape shape, std::vector<std::int64_t> values) {
  const auto n = checked_numel("IndexTensor", shape);
  if (static_cast<std::int64_t>(values.size()) != n)
    throw Error(fmt::format("IndexTensor: shape {} needs {} values, got {}", shape_str(shape), n, values.size()));
  shape_ = std::move(shape);
  data_ = std::move(values);
}

IndexTensor IndexTensor::arange(std::int64_t start, std::int64_t end, std::int64_t step) {
  if (step == 0) throw Error("IndexTensor::arange: step must be non-zero, got 0");
  // The count in unsigned 64-bit arithmetic: the distance |end - start| and |step| fit there
  // (INT64_MIN included), and ceil(distance / |step|) = (distance - 1) / |step| + 1.
  const bool up = step > 0;
  std::uint64_t count = 0;
  if (up ? start < end : start > end) {
    const std::uint64_t distance = up ? static_cast<std::uint64_t>(end) - static_cast<std::uint64_t>(start)
                                      : static_cast<std::uint64_t>(start) - static_cast<std::uint64_t>(end);
    const std::uint64_t stride = up ? static_cast<std::uint64_t>(step) : ~static_cast<std::uint64_t>(step) + 1;
    count = (distance - 1) / stride + 1;
  }
  if (count > static_cast<std::uint64_t>(kMaxNumel))
    throw Error(fmt::format("IndexTensor::arange: [{}, {}) in steps of {} has {} values, more than 2^48 (the limit "
                            "per tensor)",
                            start, end, step, count));
  std::vector<std::int64_t> v;
  try {
    v.resize(static_cast<std::size_t>(count));
  } catch (const std::bad_alloc&) {
    throw AllocationError(fmt::format("IndexTensor::arange: cannot allocate {} bytes for {} values: out of memory",
                                      count * sizeof(std::int64_t), count));
  }
  // Each value lies in [start, end) (or (end, start]); the step after the last one is never taken.
  std::int64_t x = start;
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = x;
    if (i + 1 < v.size()) x += step;
  }
  return IndexTensor({static_cast<std::int64_t>(count)}, std::move(v));
}

std::int64_t IndexTensor::size(std::int64_t d) const { return shape_[static_cast<std::size_t>(wrap_dim("size", d, dim()))]; }

// ---- printing --------------------------------------------------------------------------------

// Writes the values of dim d onward, starting at flat offset `offset`, nested in brackets.
// strides[d] is the flat distance between entries of dim d. With summarize, a dim longer than
// 2 * kPrintEdgeItems shows only its first and last kPrintEdgeItems entries around "..."
// (PyTorch's _tensor_str layout: the "..." takes the place of an element, a row or a block).
template <class T>
static void format_nested(std::string& out, const Shape& shape, const Shape& strides, std::span<const T> v,
                          std::size_t d, std::int64_t offset, bool summarize) {
  if (d == shape.size()) {
    const T x = v[static_cast<std::size_t>(offset)];
    if constexpr (std::is_floating_point_v<T>)
      out += fmt::format("{:.6g}", x);
    else
      out += fmt::format("{}", x);
    return;
  }
  const std::int64_t n = shape[d];
  const bool cut = summarize && n > 2 * kPrintEdgeItems;
  const std::string sep = d + 1 == shape.size() ? ", " : ",\n" + std::string(d + 1, ' ');
  out += '[';
  for (std::int64_t i = 0; i < n; ++i) {
    if (i) out += sep;
    if (cut && i == kPrintEdgeItems) {
      out += "...";
      out += sep;
      i = n - kPrintEdgeItems;
    }
    format_nested(out, shape, strides, v, d + 1, offset + i * strides[d], summarize);
  }
  out += ']';
}

template <class T>
static std::string format_values(const Shape& shape, std::span<const T> v) {
  Shape strides(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  // No values: "[]" whatever the shape, as PyTorch prints tensor([], size=(3, 0)); walking the
  // dims of [2^40, 0] would print 2^40 "[]" rows.
  if (v.empty()) return "[]";
  std::string out;
  format_nested(out, shape, strides, v, 0, 0, static_cast<std::int64_t>(v.size()) > kPrintThreshold);
  return out;
}

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "Tensor(undefined)";
  return fmt::format("tensor({}, shape={}{})", format_values(t.shape(), t.values()), shape_str(t.shape()),
                     t.requires_grad() ? ", requires_grad" : "");
}

std::string to_string(const IndexTensor& t) {
  return fmt::format("index_tensor({}, shape={})", format_values(t.shape(), t.values()), shape_str(t.shape()));
}

}  // namespace hitch
