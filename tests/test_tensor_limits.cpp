// The element-count limit of every tensor (kMaxNumel = 2^48, core/tensor.h), checked in one
// place (checked_numel) by every constructor and factory, reshape and the safetensors reader;
// arange counts computed without overflow; non-finite random-number parameters refused; and an
// allocation the system refuses surfacing as hitch::AllocationError (issue 12, finding 5).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <hitch/hitch.h>
#include "sanitized.h"

using namespace hitch;

namespace {

constexpr std::int64_t k62 = std::int64_t{1} << 62;
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

std::string over(const std::string& op, const std::string& shape) {
  return op + ": shape " + shape + " has more than 2^48 elements (the limit per tensor)";
}
std::string over_with_zero(const std::string& op, const std::string& shape) {
  return op + ": shape " + shape +
         " has non-zero sizes whose product is more than 2^48 (the limit per tensor, for its elements and every "
         "product of its sizes)";
}

using hitch_test::kSanitized;

}  // namespace

TEST_CASE("limits: every Tensor and IndexTensor constructor and factory refuses more than 2^48 elements") {
  CHECK(kMaxNumel == std::int64_t{1} << 48);
  const std::string big = "[4611686018427387904,4]";
  CHECK_THROWS_WITH_AS(Tensor::zeros({k62, 4}), over("Tensor::zeros", big).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::ones({k62, 4}), over("Tensor::ones", big).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::full({k62, 4}, 2.0f), over("Tensor::full", big).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({k62, 4}), over("Tensor::empty", big).c_str(), Error);
  // The wrapped product (2^62 + 1) * 4 = 4 (mod 2^64) used to be accepted with numel() == 4.
  CHECK_THROWS_WITH_AS(Tensor({k62 + 1, 4}, {1, 2, 3, 4}), over("Tensor", "[4611686018427387905,4]").c_str(), Error);
  CHECK_THROWS_WITH_AS(IndexTensor({std::int64_t{1} << 32, std::int64_t{1} << 32}, {}),
                       over("IndexTensor", "[4294967296,4294967296]").c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({kMax, kMax}),
                       over("Tensor::zeros", "[9223372036854775807,9223372036854775807]").c_str(), Error);
  CHECK_THROWS_WITH_AS(numel_of({k62, 4}), over("numel_of", big).c_str(), Error);
  CHECK_THROWS_WITH_AS(checked_numel("my_op", {kMaxNumel + 1}), over("my_op", "[281474976710657]").c_str(), Error);
  // A negative size is reported first, wherever it is.
  CHECK_THROWS_WITH_AS(Tensor::zeros({k62, 4, -1}),
                       "Tensor::zeros: shape [4611686018427387904,4,-1] has a negative size -1 at dim 2", Error);

  Generator gen(3);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(Tensor::randn({k62, 4}, gen), over("Tensor::randn", big).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::uniform({k62, 4}, 0.0f, 1.0f, gen), over("Tensor::uniform", big).c_str(), Error);
  CHECK(gen.state() == state);

  // Zero elements, but sizes whose product (zeros left out) passes the limit: refused too, so
  // that no product of a valid shape's sizes (rows x cols, outer x inner) can overflow.
  CHECK_THROWS_WITH_AS(Tensor::zeros({k62, 0}), over_with_zero("Tensor::zeros", "[4611686018427387904,0]").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(IndexTensor({0, kMaxNumel + 1}, {}),
                       over_with_zero("IndexTensor", "[0,281474976710657]").c_str(), Error);

  // At the limit: accepted (zero elements, so nothing is allocated).
  CHECK(checked_numel("my_op", {kMaxNumel}) == kMaxNumel);
  CHECK(checked_numel("my_op", {std::int64_t{1} << 24, std::int64_t{1} << 24}) == kMaxNumel);
  CHECK(Tensor::zeros({std::int64_t{1} << 24, std::int64_t{1} << 24, 0}).numel() == 0);
  CHECK(IndexTensor({kMaxNumel, 0}, {}).numel() == 0);
  CHECK_THROWS_WITH_AS(Tensor::zeros({std::int64_t{1} << 24, (std::int64_t{1} << 24) + 1, 0}),
                       over_with_zero("Tensor::zeros", "[16777216,16777217,0]").c_str(), Error);
  CHECK(Tensor::zeros({}).numel() == 1);
}

TEST_CASE("limits: reshape refuses a shape over the limit, -1 included, and records nothing") {
  const Tensor empty = Tensor::zeros({0});
  const auto tape = tape_size();
  CHECK_THROWS_WITH_AS(reshape(empty, {k62, 4}), over("reshape", "[4611686018427387904,4]").c_str(), Error);
  CHECK_THROWS_WITH_AS(reshape(empty, {-1, k62}), over_with_zero("reshape", "[0,4611686018427387904]").c_str(), Error);
  CHECK_THROWS_WITH_AS(reshape(Tensor::zeros({8}), {-1, k62, k62}),
                       "reshape: cannot reshape [8] (8 elements) into [-1,4611686018427387904,4611686018427387904]",
                       Error);
  CHECK_THROWS_WITH_AS(reshape(empty, {-1, k62, 0}),
                       "reshape: cannot reshape [0] (0 elements) into [-1,4611686018427387904,0]", Error);
  CHECK_THROWS_WITH_AS(reshape(Tensor::zeros({6}), {k62 + 1, 4}),
                       over("reshape", "[4611686018427387905,4]").c_str(), Error);
  CHECK(tape_size() == tape);
  CHECK(reshape(Tensor::zeros({6}), {-1, 3}).shape() == Shape{2, 3});
  CHECK(reshape(empty, {-1, 1 << 20}).shape() == Shape{0, 1 << 20});
}

TEST_CASE("limits: IndexTensor::arange counts in full int64 range without overflow") {
  CHECK(IndexTensor::arange(kMax - 1, kMax, 2).values().size() == 1);
  CHECK(IndexTensor::arange(kMax - 1, kMax, 2)[0] == kMax - 1);
  const IndexTensor quarters = IndexTensor::arange(kMin, kMax, k62);
  REQUIRE(quarters.numel() == 4);
  CHECK(quarters[0] == kMin);
  CHECK(quarters[1] == kMin + k62);
  CHECK(quarters[2] == 0);
  CHECK(quarters[3] == k62);
  const IndexTensor down = IndexTensor::arange(kMax, kMin, kMin);
  REQUIRE(down.numel() == 2);
  CHECK(down[0] == kMax);
  CHECK(down[1] == -1);
  CHECK(IndexTensor::arange(kMin + 1, kMin, -3).numel() == 1);
  CHECK(IndexTensor::arange(5, 0).numel() == 0);
  CHECK(IndexTensor::arange(0, 10, 3).shape() == Shape{4});
  CHECK_THROWS_WITH_AS(IndexTensor::arange(0, kMax),
                       "IndexTensor::arange: [0, 9223372036854775807) in steps of 1 has 9223372036854775807 values, "
                       "more than 2^48 (the limit per tensor)",
                       Error);
  CHECK_THROWS_WITH_AS(IndexTensor::arange(kMax, kMin, -1),
                       "IndexTensor::arange: [9223372036854775807, -9223372036854775808) in steps of -1 has "
                       "18446744073709551615 values, more than 2^48 (the limit per tensor)",
                       Error);
  CHECK_THROWS_WITH_AS(IndexTensor::arange(0, kMaxNumel + 1),
                       "IndexTensor::arange: [0, 281474976710657) in steps of 1 has 281474976710657 values, more "
                       "than 2^48 (the limit per tensor)",
                       Error);
}

TEST_CASE("limits: Tensor::arange refuses non-finite arguments, a zero step and counts over the limit") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(Tensor::arange(0.0f, 1e30f),
                       "Tensor::arange: [0, 1e+30) in steps of 1 has 1.0000000150474662e+30 values, more than 2^48 "
                       "(the limit per tensor)",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(-3e38f, 3e38f, 1e-38f),
                       "Tensor::arange: [-3e+38, 3e+38) in steps of 1e-38 has 6.000000400721695e+76 values, more than "
                       "2^48 (the limit per tensor)",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(0.0f, inf),
                       "Tensor::arange: start, end and step must be finite and step non-zero, got start 0, end inf and "
                       "step 1",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(nan, 1.0f),
                       "Tensor::arange: start, end and step must be finite and step non-zero, got start nan, end 1 and "
                       "step 1",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::arange(0.0f, 3.0f, -inf),
                       "Tensor::arange: start, end and step must be finite and step non-zero, got start 0, end 3 and "
                       "step -inf",
                       Error);
  CHECK(Tensor::arange(0.0f, 3.0f).to_vector() == std::vector<float>{0, 1, 2});
  CHECK(Tensor::arange(3.0f, 0.0f).numel() == 0);
  CHECK(Tensor::arange(1.0f, 0.0f, -0.5f).to_vector() == std::vector<float>{1.0f, 0.5f});
}

TEST_CASE("limits: uniform and randn refuse infinite or NaN parameters and draw nothing") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Generator gen(9);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, -inf, 1.0f, gen),
                       "Tensor::uniform: low and high must be finite with low <= high, got low -inf and high 1", Error);
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, 0.0f, inf, gen),
                       "Tensor::uniform: low and high must be finite with low <= high, got low 0 and high inf", Error);
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, nan, 1.0f, gen),
                       "Tensor::uniform: low and high must be finite with low <= high, got low nan and high 1", Error);
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, 1.0f, 0.0f, gen),
                       "Tensor::uniform: low and high must be finite with low <= high, got low 1 and high 0", Error);
  CHECK_THROWS_WITH_AS(Tensor::randn({2}, inf, 1.0f, gen),
                       "Tensor::randn: mean and std must be finite and std >= 0, got mean inf and std 1", Error);
  CHECK_THROWS_WITH_AS(Tensor::randn({2}, 0.0f, nan, gen),
                       "Tensor::randn: mean and std must be finite and std >= 0, got mean 0 and std nan", Error);
  CHECK_THROWS_WITH_AS(Tensor::randn({2}, 0.0f, -1.0f, gen),
                       "Tensor::randn: mean and std must be finite and std >= 0, got mean 0 and std -1", Error);
  CHECK(gen.state() == state);
  CHECK(!gen.spare().has_value());
  const Tensor u = Tensor::uniform({64}, -3e38f, 3e38f, gen);
  for (float x : u.values()) CHECK(std::isfinite(x));
  CHECK(Tensor::randn({3}, 2.0f, 0.0f, gen).to_vector() == std::vector<float>{2, 2, 2});
}

TEST_CASE("limits: nn::Embedding and nn::EmbeddingBag with more than 2^48 weights are refused at construction") {
  // Used to be accepted (the wrapped numel) and segfault on the first lookup.
  Generator gen(5);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(nn::Embedding(k62, 4, {}, gen), over("Embedding", "[4611686018427387904,4]").c_str(), Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(k62, 4, {}, gen), over("EmbeddingBag", "[4611686018427387904,4]").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(nn::Embedding(k62, 0, {}, gen), over_with_zero("Embedding", "[4611686018427387904,0]").c_str(),
                       Error);
  CHECK(gen.state() == state);
  nn::Embedding ok(kMaxNumel, 0, {}, gen);  // zero-width rows: no values, within the limit
  CHECK(ok.forward(IndexTensor{0, kMaxNumel - 1}).shape() == Shape{2, 0});
}

TEST_CASE("limits: a legal tensor the system cannot allocate is an AllocationError, not std::bad_alloc") {
  if (kSanitized) {
    MESSAGE("skipped under a sanitizer: its allocator reports a 1 PiB request instead of throwing std::bad_alloc");
    return;
  }
  // 2^48 floats = 1 PiB: more than any 64-bit Linux process can map (mmap fails, bad_alloc).
  CHECK_THROWS_WITH_AS(Tensor::zeros({kMaxNumel}),
                       "storage_allocate: cannot allocate 1125899906842624 bytes for a tensor's values: out of memory",
                       AllocationError);
  CHECK_THROWS_AS(Tensor::empty({std::int64_t{1} << 24, std::int64_t{1} << 24}), Error);
  CHECK_THROWS_WITH_AS(IndexTensor::arange(0, kMaxNumel),
                       "IndexTensor::arange: cannot allocate 2251799813685248 bytes for 281474976710656 values: out "
                       "of memory",
                       AllocationError);
  // Nothing was cached or leaked in a way that breaks the next allocation.
  CHECK(Tensor::ones({1 << 16}).values()[0] == 1.0f);
}
