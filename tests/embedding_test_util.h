// tests/embedding_test_util.h: small helpers shared by the embedding / embedding_bag / tying
// tests: leaf construction, element-wise comparison with a message, and a snapshot of
// everything a rejected call must leave unchanged.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <hitch/hitch.h>

namespace emb_test {

inline hitch::Tensor leaf(hitch::Shape shape, std::vector<float> values, bool requires_grad = true) {
  hitch::Tensor t(std::move(shape), std::move(values));
  t.requires_grad_(requires_grad);
  return t;
}

// Empty string when equal shapes and |a - b| <= atol + rtol |b| everywhere (NaN == NaN).
inline std::string diff(const hitch::Tensor& got, const hitch::Tensor& want, double atol = 1e-6, double rtol = 1e-6) {
  if (!got.defined() || !want.defined()) return got.defined() == want.defined() ? "" : "one side undefined";
  if (got.shape() != want.shape())
    return fmt::format("shape {} vs {}", hitch::shape_str(got.shape()), hitch::shape_str(want.shape()));
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double a = got.data()[i];
    const double b = want.data()[i];
    if (std::isnan(a) && std::isnan(b)) continue;
    if (!(std::abs(a - b) <= atol + rtol * std::abs(b)))
      return fmt::format("element {}: got {:.9g}, want {:.9g}\n got  {}\n want {}", i, a, b, got, want);
  }
  return "";
}

#define EMB_CHECK_CLOSE(got, want)                       \
  do {                                                   \
    const std::string emb_msg_ = emb_test::diff(got, want); \
    CHECK_MESSAGE(emb_msg_.empty(), emb_msg_);           \
  } while (false)

// What a rejected call must not change: the table's values and version, its gradient, the tape.
struct Snapshot {
  std::vector<float> values;
  std::uint64_t version = 0;
  bool had_grad = false;
  std::vector<float> grad;
  std::size_t tape = 0;

  explicit Snapshot(const hitch::Tensor& weight)
      : values(weight.to_vector()),
        version(weight.impl().storage->version),
        had_grad(weight.impl().grad != nullptr),
        grad(had_grad ? weight.grad().to_vector() : std::vector<float>{}),
        tape(hitch::tape_size()) {}

  void check_unchanged(const hitch::Tensor& weight) const {
    CHECK(weight.to_vector() == values);
    CHECK(weight.impl().storage->version == version);
    CHECK((weight.impl().grad != nullptr) == had_grad);
    if (had_grad) CHECK(weight.grad().to_vector() == grad);
    CHECK(hitch::tape_size() == tape);
  }
};

}  // namespace emb_test
