// Adversarial input for the issue-13 ops and modules: int64 extremes for dims, starts, lengths,
// steps, indices and ignore_index; empty tensors whose outer size alone is 2^40 (every loop must
// be bounded by the elements it touches, not by one size); shapes past kMaxNumel; NaN and inf in
// float arguments; the same tensor passed several times; init and load_state_dict on live
// Parameters. The first test cases are the defects this pass found (each failed before its fix:
// a hang, std::bad_alloc, a wrong error for a legal call, inf written silently, a message not
// naming the op, a swapped load reading overwritten values); the later ones pin the behaviour that
// was already right. Every refusal is checked with its exact message and an unchanged tape.
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/tape.h>
#include <hitch/nn/nn.h>
#include <hitch/ops/ops.h>
#include "sanitized.h"

using namespace hitch;

namespace {

using i64 = std::int64_t;
constexpr i64 kMin = std::numeric_limits<i64>::min();
constexpr i64 kMax = std::numeric_limits<i64>::max();
constexpr i64 k40 = i64{1} << 40;
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor leaf(Shape shape, std::vector<float> values) { return Tensor(std::move(shape), std::move(values)).requires_grad_(); }
Tensor zeros_leaf(Shape shape) { return Tensor::zeros(std::move(shape)).requires_grad_(); }
std::uint64_t version(const Tensor& t) { return t.impl().storage->version; }

}  // namespace

// expr must throw hitch::Error with exactly msg and record nothing.
#define REFUSED(expr, msg)                                  \
  do {                                                      \
    const std::size_t tape_before = tape_size();            \
    CHECK_THROWS_WITH_AS(expr, msg, hitch::Error);          \
    CHECK(tape_size() == tape_before);                      \
  } while (0)

// ---- defects found (each failed before its fix) -------------------------------------------------

TEST_CASE("adversarial: shape ops on an empty tensor with a 2^40 outer size finish at once, backward too") {
  // Before: cat, stack, narrow, slice, select and index_select looped 2^40 times over the outer
  // size copying nothing (a hang), in forward and in backward.
  const Tensor z = zeros_leaf({k40, 0});
  const Tensor z3 = zeros_leaf({k40, 1, 0});
  const Tensor c = cat({z, z}, 1);
  CHECK(c.shape() == Shape{k40, 0});
  const Tensor s = stack({z}, 1);
  CHECK(s.shape() == Shape{k40, 1, 0});
  const Tensor n = narrow(z, 1, 0, 0);
  CHECK(n.shape() == Shape{k40, 0});
  const Tensor sl = slice(z, 1, kMin, kMax, kMax);
  CHECK(sl.shape() == Shape{k40, 0});
  const Tensor se = select(z3, 1, -1);
  CHECK(se.shape() == Shape{k40, 0});
  const Tensor ix = index_select(z, 1, IndexTensor{});
  CHECK(ix.shape() == Shape{k40, 0});
  backward(sum(c) + sum(s) + sum(n) + sum(sl) + sum(ix));
  backward(sum(se));
  CHECK(z.grad().shape() == Shape{k40, 0});
  CHECK(z3.grad().shape() == Shape{k40, 1, 0});
}

TEST_CASE("adversarial: sum and mean along a 2^40 dim of an empty tensor finish at once, backward too") {
  // Before: reduce_dim looped 2^40 times over the reduced dim with nothing to add (inner = 0).
  const Tensor z = zeros_leaf({k40, 0});
  const Tensor s = sum(z, 0);
  const Tensor m = mean(z, 0, true);
  CHECK(s.shape() == Shape{0});
  CHECK(m.shape() == Shape{1, 0});
  backward(sum(s) + sum(m));
  CHECK(z.grad().shape() == Shape{k40, 0});
}

TEST_CASE("adversarial: max, min, argmax, argmin, logsumexp, cosine_similarity, transpose of [2^40, 3, 0] finish") {
  // Before: the loops over [outer, inner] ran 2^40 times with inner = 0 (a hang), forward and
  // backward; transpose walked 2^35 empty tiles of [2^40, 0].
  const Tensor z = zeros_leaf({k40, 3, 0});
  const ValuesIndices mx = max(z, 1);
  const ValuesIndices mn = min(z, 1, true);
  CHECK(mx.values.shape() == Shape{k40, 0});
  CHECK(mn.indices.shape() == Shape{k40, 1, 0});
  CHECK(argmax(z, 1).shape() == Shape{k40, 0});
  CHECK(argmin(z, -2, true).shape() == Shape{k40, 1, 0});
  const Tensor l = logsumexp(z, 1);
  CHECK(l.shape() == Shape{k40, 0});
  const Tensor cs = cosine_similarity(z, z, 1);
  CHECK(cs.shape() == Shape{k40, 0});
  const Tensor t = transpose(zeros_leaf({k40, 0}));
  CHECK(t.shape() == Shape{0, k40});
  backward(sum(mx.values) + sum(mn.values) + sum(l) + sum(cs));
  CHECK(z.grad().shape() == z.shape());
}

TEST_CASE("adversarial: matmul with an empty result needs no BLAS-sized dims and no per-batch bookkeeping") {
  // Before: [2^32, 0] x [0, 0] threw "gemm: M = 4294967296 does not fit the BLAS integer type"
  // for a legal empty product, and [2^47, 0, 1] x [1, 1, 1] built a batch map of 2^47 entries
  // (std::bad_alloc, or a 2^47-step loop of empty gemms).
  const Tensor a = zeros_leaf({i64{1} << 32, 0});
  const Tensor b = zeros_leaf({0, 0});
  const Tensor y = matmul(a, b);
  CHECK(y.shape() == Shape{i64{1} << 32, 0});
  backward(sum(y));
  CHECK(a.grad().shape() == a.shape());
  CHECK(b.grad().shape() == b.shape());

  const Tensor p = zeros_leaf({i64{1} << 47, 0, 1});
  const Tensor q = leaf({1, 1, 1}, {2.0f});
  const Tensor r = matmul(p, q);
  CHECK(r.shape() == Shape{i64{1} << 47, 0, 1});
  const Tensor rt = matmul(p, q, false, true);  // not the folded path either
  CHECK(rt.shape() == Shape{i64{1} << 47, 0, 1});
  backward(sum(r) + sum(rt));
  CHECK(q.grad().to_vector() == std::vector<float>{0.0f});  // a sum over no batch at all

  // The same through nn::Linear: [2^20, 2^20, 0] x weight [0, 0] -> [2^20, 2^20, 0].
  nn::Linear lin(Parameter("w", Tensor::zeros({0, 0})));
  CHECK(lin(Tensor::zeros({i64{1} << 20, i64{1} << 20, 0})).shape() == Shape{i64{1} << 20, i64{1} << 20, 0});
}

TEST_CASE("adversarial: cosine_similarity refuses a broadcast shape past 2^48 and never leaks std::bad_alloc") {
  const Tensor x1 = zeros_leaf({i64{1} << 30, 1, 0});
  const Tensor x2 = zeros_leaf({1, i64{1} << 30, 0});
  // Before: "numel_of: shape ..." (not the op) when building the offset tables.
  REFUSED(cosine_similarity(x1, x2, 0),
          "cosine_similarity: shape [1073741824,1073741824,0] has non-zero sizes whose product is more than 2^48 (the "
          "limit per tensor, for its elements and every product of its sizes)");
  if (hitch_test::kSanitized) return;  // ASan reports a 1 PiB request instead of failing it
  // Before: std::bad_alloc from the norm tables (3 x 2^40 doubles), allocated before the output.
  const Tensor e = zeros_leaf({k40, 0});
  CHECK_THROWS_WITH_AS(cosine_similarity(e, e, 1),
                       "storage_allocate: cannot allocate 4398046511104 bytes for a tensor's values: out of memory",
                       hitch::AllocationError);
  // Before: std::bad_alloc from the offset tables (2^48 entries each) of a legal broadcast.
  const Tensor u = zeros_leaf({i64{1} << 24, 1});
  const Tensor v = zeros_leaf({1, i64{1} << 24});
  const std::size_t before = tape_size();
  CHECK_THROWS_WITH_AS(cosine_similarity(u, v, 0),
                       "cosine_similarity: cannot allocate the offsets of the broadcast shape [16777216,16777216] "
                       "(281474976710656 elements) and the norms of 16777216 outputs: out of memory",
                       hitch::AllocationError);
  CHECK(tape_size() == before);
}

TEST_CASE("adversarial: init refuses values beyond float's range and undefined tensors, changing nothing") {
  Parameter w("w", Tensor::zeros({2, 3}));
  Parameter sq("sq", Tensor::zeros({3, 3}));  // fans 3 and 3: xavier's bound is exactly gain
  Generator gen(11);
  const auto state = gen.state();
  const std::uint64_t v0 = version(w.value()), v1 = version(sq.value());
  // Before: each of these wrote inf (or NaN: -1e39 + 2e39 * 0) into the Parameter without a word.
  REFUSED(nn::init::constant_(w, 1e39), "init::constant_: val 1e+39 does not fit a float (|val| <= 3.4028234663852886e+38)");
  REFUSED(nn::init::constant_(w, -1e39),
          "init::constant_: val -1e+39 does not fit a float (|val| <= 3.4028234663852886e+38)");
  REFUSED(nn::init::uniform_(w, -1e39, 0.0, gen),
          "init::uniform_: a and b must lie in float's range with b - a <= 3.4028234663852886e+38, got a -1e+39 and b 0");
  REFUSED(nn::init::uniform_(w, -3e38, 3e38, gen),
          "init::uniform_: a and b must lie in float's range with b - a <= 3.4028234663852886e+38, got a -3e+38 and b "
          "3e+38");
  REFUSED(nn::init::normal_(w, 1e39, 1.0, gen),
          "init::normal_: mean and std must lie in float's range (|mean| and std <= 3.4028234663852886e+38), got mean "
          "1e+39 and std 1");
  REFUSED(nn::init::normal_(w, 0.0, 1e39, gen),
          "init::normal_: mean and std must lie in float's range (|mean| and std <= 3.4028234663852886e+38), got mean 0 "
          "and std 1e+39");
  REFUSED(nn::init::xavier_uniform_(sq, 1e300, gen),
          "init::xavier_uniform_: gain 1e+300 gives the bound 1e+300 for fans 3 and 3, but the range 2 * bound must be "
          "at most 3.4028234663852886e+38 (float's max)");
  // Before: "Tensor: use of an undefined tensor", naming no init function (a LayerNorm without
  // affine parameters has undefined weight and bias).
  nn::LayerNorm plain({3}, 1e-5f, false);
  REFUSED(nn::init::ones_(plain.weight), "init::ones_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::zeros_(plain.bias), "init::zeros_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::constant_(plain.bias, 2.0), "init::constant_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::uniform_(plain.weight, 0.0, 1.0, gen), "init::uniform_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::normal_(plain.weight, 0.0, 1.0, gen), "init::normal_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::xavier_uniform_(plain.weight, 1.0, gen),
          "init::xavier_uniform_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::kaiming_uniform_(plain.weight, 0.0, "fan_in", "leaky_relu", gen),
          "init::kaiming_uniform_: the tensor is undefined (an empty handle)");
  REFUSED(nn::init::calculate_fan_in_and_fan_out(Tensor()),
          "calculate_fan_in_and_fan_out: the tensor is undefined (an empty handle)");
  CHECK(w.value().to_vector() == std::vector<float>(6, 0.0f));
  CHECK(sq.value().to_vector() == std::vector<float>(9, 0.0f));
  CHECK(version(w.value()) == v0);
  CHECK(version(sq.value()) == v1);
  CHECK(gen.state() == state);
  // The largest legal arguments still work and write finite values.
  nn::init::constant_(w, static_cast<double>(std::numeric_limits<float>::max()));
  CHECK(w.value().to_vector() == std::vector<float>(6, std::numeric_limits<float>::max()));
  nn::init::uniform_(w, -1.5e38, 1.5e38, gen);
  for (float x : w.value().values()) CHECK(std::isfinite(x));
}

TEST_CASE("adversarial: LayerNorm without affine parameters checks normalized_shape at construction") {
  // Before: accepted, and every forward then failed with "does not end with normalized_shape".
  CHECK_THROWS_WITH_AS(nn::LayerNorm({-3}, 1e-5f, false), "LayerNorm: shape [-3] has a negative size -3 at dim 0", Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm({i64{1} << 30, i64{1} << 30}, 1e-5f, false),
                       "LayerNorm: shape [1073741824,1073741824] has more than 2^48 elements (the limit per tensor)",
                       Error);
  nn::LayerNorm ok({0}, 1e-5f, false);  // a size 0 is legal, as in torch
  CHECK(ok(Tensor::zeros({2, 0})).shape() == Shape{2, 0});
}

TEST_CASE("adversarial: load_state_dict of a hand-built dict holding the module's own storages swapped") {
  // Before: the writes ran in order, so the second read the first's result: both weights ended
  // up equal to the old second weight.
  nn::Sequential s(nn::Linear(2, 2, false), nn::Linear(2, 2, false));
  auto& l0 = dynamic_cast<nn::Linear&>(s[0]);
  auto& l1 = dynamic_cast<nn::Linear&>(s[1]);
  const std::vector<float> w0 = l0.weight.value().to_vector(), w1 = l1.weight.value().to_vector();
  REQUIRE(w0 != w1);
  nn::StateDict sd;
  sd.tensors["0.weight"] = l1.weight.value();
  sd.tensors["1.weight"] = l0.weight.value();
  nn::load_state_dict(s, sd);
  CHECK(l0.weight.value().to_vector() == w1);
  CHECK(l1.weight.value().to_vector() == w0);
  // A dict holding each Parameter's own storage under its own name stays a no-op.
  nn::StateDict own;
  own.tensors["0.weight"] = l0.weight.value();
  own.tensors["1.weight"] = l1.weight.value();
  nn::load_state_dict(s, own);
  CHECK(l0.weight.value().to_vector() == w1);
  CHECK(l1.weight.value().to_vector() == w0);
}

TEST_CASE("adversarial: a moved-from Linear, alone or inside a Sequential, names itself") {
  // Before: "Tensor: use of an undefined tensor" from inside matmul, naming neither Linear nor
  // the empty weight.
  nn::Linear lin(2, 2);
  nn::Sequential taken(std::move(lin));
  const Tensor x = leaf({1, 2}, {1.0f, 2.0f});
  CHECK(taken(x).shape() == Shape{1, 2});
  REFUSED(lin(x), "Linear: the weight Parameter is an empty handle (was this Linear moved from?)");
  nn::Sequential holds_moved(std::move(lin), nn::ReLU());
  REFUSED(holds_moved(x), "Linear: the weight Parameter is an empty handle (was this Linear moved from?)");
  CHECK(holds_moved.parameters().empty());
}

// ---- already handled: pinned so they stay so --------------------------------------------------

TEST_CASE("adversarial (handled): cat, stack, narrow, slice, select, unsqueeze, squeeze, expand at the extremes") {
  const Tensor a = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  REFUSED(cat(std::span<const Tensor>{}, 0), "cat: expected at least one tensor, got none");
  REFUSED(cat({a}, kMin), "cat: dim -9223372036854775808 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  REFUSED(stack({a}, kMax), "stack: dim 9223372036854775807 is out of range for a tensor of rank 3 (valid: [-3, 2])");
  REFUSED(cat({Tensor::scalar(1.0f).requires_grad_()}), "cat: dim 0 given for a tensor of rank 0, which has no dims");
  const Tensor big = zeros_leaf({i64{1} << 48, 0});
  REFUSED(cat({big, big}, 0),  // the sum of the sizes is held at 2^48 + 1 once past the limit
          "cat: shape [281474976710657,0] has non-zero sizes whose product is more than 2^48 (the limit per tensor, for "
          "its elements and every product of its sizes)");
  REFUSED(stack({big, big}),
          "stack: shape [2,281474976710656,0] has non-zero sizes whose product is more than 2^48 (the limit per tensor, "
          "for its elements and every product of its sizes)");
  REFUSED(narrow(a, 1, kMin, 0), "narrow: start -9223372036854775808 is out of range for dim 1 of size 3 (valid: [-3, 3])");
  REFUSED(narrow(a, 1, 1, kMax),
          "narrow: length 9223372036854775807 is out of range for start 1 in dim 1 of size 3 (valid: [0, 2])");
  REFUSED(narrow(a, 1, 0, kMin),
          "narrow: length -9223372036854775808 is out of range for start 0 in dim 1 of size 3 (valid: [0, 3])");
  CHECK(narrow(a, 1, -3, 3).to_vector() == a.to_vector());
  CHECK(slice(a, 1, kMin, kMax, kMax).to_vector() == std::vector<float>{1, 4});
  CHECK(slice(a, 1, kMax, kMin).shape() == Shape{2, 0});
  CHECK(slice(a, 1, -2, kMax, 2).to_vector() == std::vector<float>{2, 5});
  REFUSED(slice(a, 1, 0, 3, kMin),
          "slice: step -9223372036854775808 is not supported (valid: step >= 1; torch refuses zero and negative steps "
          "too)");
  REFUSED(slice(a, 1, 0, 3, 0),
          "slice: step 0 is not supported (valid: step >= 1; torch refuses zero and negative steps too)");
  REFUSED(select(a, 0, kMin), "select: index -9223372036854775808 is out of range for dim 0 of size 2 (valid: [-2, 2))");
  REFUSED(select(zeros_leaf({0, 3}), 0, 0), "select: index 0 is out of range for dim 0 of size 0 (valid: [0, 0))");
  REFUSED(unsqueeze(a, kMax),
          "unsqueeze: dim 9223372036854775807 is out of range for a tensor of rank 3 (valid: [-3, 2])");
  CHECK(unsqueeze(Tensor::scalar(2.0f), -1).shape() == Shape{1});
  REFUSED(squeeze(Tensor::scalar(2.0f).requires_grad_(), 1),
          "squeeze: dim 1 is out of range for a tensor of rank 1 (valid: [-1, 0])");
  const Tensor one = leaf({1, 1}, {3.0f});
  REFUSED(expand(one, {k40, k40}), "expand: shape [1099511627776,1099511627776] has more than 2^48 elements (the limit per tensor)");
  REFUSED(expand(leaf({1}, {1.0f}), {kMin}),
          "expand: size -9223372036854775808 at dim 0 of [-9223372036854775808] does not fit a's size 1 there (a is [1]; "
          "a size 1 may become any size >= 0, other sizes must be kept or given as -1)");
  REFUSED(expand(one, {kMax, 1, 1}),
          "expand: shape [9223372036854775807,1,1] has more than 2^48 elements (the limit per tensor)");
  REFUSED(expand(Tensor::scalar(1.0f).requires_grad_(), {-1}),
          "expand: size -1 at dim 0 of [-1] is invalid: a new leading dim needs a size >= 0 (-1 keeps a's size, which "
          "only dims that a has have)");
  CHECK(expand(Tensor::scalar(1.0f), {0}).shape() == Shape{0});
  // The same tensor several times: every block's gradient is added.
  const Tensor c = cat({a, a, a}, 0);
  backward(sum(c * c));
  CHECK(a.grad().to_vector() == std::vector<float>{6, 12, 18, 24, 30, 36});
}

TEST_CASE("adversarial (handled): index_select and gather with extreme and huge indices") {
  const Tensor a = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  REFUSED(index_select(a, 1, IndexTensor{kMin}),
          "index_select: index -9223372036854775808 at position 0 is out of range for dim 1 of size 3 (valid: [0, 3))");
  REFUSED(index_select(a, 1, IndexTensor{0, kMax}),
          "index_select: index 9223372036854775807 at position 1 is out of range for dim 1 of size 3 (valid: [0, 3))");
  REFUSED(index_select(a, kMin, IndexTensor{0}),
          "index_select: dim -9223372036854775808 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  REFUSED(index_select(Tensor::scalar(1.0f).requires_grad_(), 0, IndexTensor{0}),
          "index_select: dim 0 given for a tensor of rank 0, which has no dims");
  REFUSED(index_select(a, 0, IndexTensor({1, 1}, {0})), "index_select: index must be 1-D, but has shape [1,1]");
  REFUSED(gather(a, 1, IndexTensor({2, 1}, {0, kMax})),
          "gather: index 9223372036854775807 at position 1 is out of range for dim 1 of size 3 (valid: [0, 3))");
  REFUSED(gather(a, 1, IndexTensor({3, 1}, {0, 0, 0})),
          "gather: index has shape [3,1] but a has shape [2,3]: index's size 3 at dim 0 is larger than a's size 2 (only "
          "dim 1, the gathered dim, may be larger)");
  // An empty index of a huge shape along the gathered dim: nothing read, nothing looped over.
  CHECK(gather(a, 1, IndexTensor({0, k40}, {})).shape() == Shape{0, k40});
  // Duplicates add up.
  backward(sum(index_select(a, 1, IndexTensor{2, 2, 0})) + sum(gather(a, 0, IndexTensor({3, 1}, {1, 1, 1}))));
  CHECK(a.grad().to_vector() == std::vector<float>{1, 0, 2, 4, 0, 2});
}

TEST_CASE("adversarial (handled): broadcasting, abs, clamp, where, masked_fill with bad shapes and NaN") {
  const Tensor p = zeros_leaf({i64{1} << 30, 1, 0});
  const Tensor q = zeros_leaf({1, i64{1} << 30, 0});
  // An output past the limit is refused by the factory that would allocate it (docs/errors.md).
  REFUSED(add(p, q),
          "Tensor::empty: shape [1073741824,1073741824,0] has non-zero sizes whose product is more than 2^48 (the limit "
          "per tensor, for its elements and every product of its sizes)");
  REFUSED(where(p, q, zeros_leaf({1, 1, 0})),
          "Tensor::empty: shape [1073741824,1073741824,0] has non-zero sizes whose product is more than 2^48 (the limit "
          "per tensor, for its elements and every product of its sizes)");
  const Tensor a = leaf({3}, {-1.0f, 0.0f, 2.0f});
  REFUSED(mul(a, zeros_leaf({2})), "mul: shapes [3] and [2] cannot be broadcast (trailing dims must match or be 1)");
  REFUSED(clamp(a, kNaN, std::nullopt), "clamp: bounds must not be NaN, but got min = nan and max = none");
  REFUSED(clamp(a, std::nullopt, std::nullopt), "clamp: at least one of min and max must be given, but both are absent");
  CHECK(clamp(a, kInf, -kInf).to_vector() == std::vector<float>(3, -kInf));
  CHECK(std::isnan(clamp(leaf({1}, {kNaN}), -1.0f, 1.0f).item()));
  REFUSED(masked_fill(a, zeros_leaf({2, 3}), 1.0f),
          "masked_fill: mask [2,3] cannot be broadcast to a's shape [3] (mask's rank must be at most a's and its "
          "trailing dims must equal a's or be 1)");
  // The same tensor as every operand: a gets g from whichever side is chosen.
  const Tensor w = where(a, a, a);
  const Tensor m = masked_fill(a, a, kNaN);
  backward(sum(w) + sum(abs(a)) + sum(mul(a, a)));
  CHECK(a.grad().to_vector() == std::vector<float>{1 - 1 - 2, 1 + 0 + 0, 1 + 1 + 4});
  CHECK(std::isnan(m.to_vector()[0]));
  CHECK(m.to_vector()[1] == 0.0f);
}

TEST_CASE("adversarial (handled): max, min, argmax, argmin, logsumexp at the extremes") {
  const Tensor e = zeros_leaf({0, 3});
  REFUSED(max(e, 0),
          "max: dim 0 has size 0 in a tensor of shape [0,3], and a reduction without identity needs at least one "
          "element");
  CHECK(max(e, 1).values.shape() == Shape{0});
  REFUSED(argmin(Tensor::scalar(1.0f), 0), "argmin: dim 0 given for a tensor of rank 0, which has no dims");
  REFUSED(logsumexp(zeros_leaf({2}), kMin),
          "logsumexp: dim -9223372036854775808 is out of range for a tensor of rank 1 (valid: [-1, 0])");
  const Tensor x = leaf({4}, {1.0f, kNaN, 3.0f, kNaN});
  CHECK(argmax(x, 0).values()[0] == 1);
  CHECK(argmin(x, 0).values()[0] == 1);
  CHECK(logsumexp(leaf({2}, {-kInf, -kInf}), 0).item() == -kInf);
  CHECK(logsumexp(leaf({2}, {kInf, 1.0f}), 0).item() == kInf);
  CHECK(std::isnan(logsumexp(x, 0).item()));
  CHECK(logsumexp(e, 0).to_vector() == std::vector<float>(3, -kInf));
  // A huge empty tensor: the loops run over output elements only.
  CHECK(logsumexp(zeros_leaf({k40, 0}), 0).shape() == Shape{0});
  CHECK(argmax(zeros_leaf({k40, 0}), 0).shape() == Shape{0});
}

TEST_CASE("adversarial (handled): matmul shapes past the limit and bad operands") {
  REFUSED(matmul(zeros_leaf({i64{1} << 30, 1, 1, 0}), zeros_leaf({1, i64{1} << 30, 0, 1})),
          "Tensor::empty: shape [1073741824,1073741824,1,1] has more than 2^48 elements (the limit per tensor)");
  REFUSED(matmul(zeros_leaf({3}), zeros_leaf({3, 1})),
          "matmul: expected operands of rank >= 2 ([..., M, K] and [..., K, N]), got [3] and [3,1]");
  REFUSED(matmul(zeros_leaf({2, 2, 3}), zeros_leaf({3, 3, 1})),
          "matmul: [2,2,3] x [3,3,1]: batch dims [2] and [3] cannot be broadcast (trailing dims must match or be 1)");
  // K = 0 with a non-empty result: zeros, and zero gradients.
  const Tensor a = zeros_leaf({2, 0});
  const Tensor b = zeros_leaf({0, 3});
  const Tensor y = matmul(a, b);
  CHECK(y.to_vector() == std::vector<float>(6, 0.0f));
  // The same tensor on both sides.
  const Tensor s = leaf({2, 2}, {1, 2, 3, 4});
  backward(sum(matmul(s, s)));
  // d/ds[a][b] of sum_ijk s[i][k] s[k][j] = (row sum b of s) + (column sum a of s).
  CHECK(s.grad().to_vector() == std::vector<float>{3 + 4, 7 + 4, 3 + 6, 7 + 6});
}

TEST_CASE("adversarial (handled): softmax, log_sigmoid, losses and cosine_similarity with extreme options") {
  REFUSED(softmax(Tensor::scalar(1.0f).requires_grad_()), "softmax: dim -1 given for a tensor of rank 0, which has no dims");
  const Tensor ls = log_sigmoid(leaf({3}, {-kInf, kInf, kNaN}));
  CHECK(ls.to_vector()[0] == -kInf);
  CHECK(ls.to_vector()[1] == 0.0f);
  CHECK(std::isnan(ls.to_vector()[2]));

  const Tensor logits = leaf({2, 3}, {0, 0, 0, 1, 2, 3});
  CrossEntropyOptions ignore_min{.ignore_index = kMin};
  const Tensor ce = cross_entropy(logits, IndexTensor{kMin, 2}, ignore_min);
  CHECK(ce.item() == doctest::Approx(std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0));
  REFUSED(cross_entropy(logits, IndexTensor{kMax, 0}),
          "cross_entropy: target 9223372036854775807 at position 0 is out of range for 3 classes (valid: [0, 3))");
  REFUSED(cross_entropy(logits, IndexTensor{0, 0}, {.label_smoothing = kNaN}),
          "cross_entropy: label_smoothing must be in [0, 1], got nan");
  REFUSED(cross_entropy(logits, IndexTensor{0, 0}, {.label_smoothing = kInf}),
          "cross_entropy: label_smoothing must be in [0, 1], got inf");
  REFUSED(cross_entropy(logits, IndexTensor{0, 0}, {.weight = zeros_leaf({3})}),
          "cross_entropy: weight requires grad, but its gradient is not implemented; pass weight.detach()");
  REFUSED(cross_entropy(logits, IndexTensor{0, 0}, {.weight = Tensor::zeros({3, 1})}),
          "cross_entropy: weight must have shape [3] (one per class of logits [2,3]), got [3,1]");
  REFUSED(nll_loss(logits, IndexTensor{0, 0}, {.label_smoothing = 0.5f}),
          "nll_loss: label_smoothing must be 0 (smoothing is an option of cross_entropy), got 0.5");
  REFUSED(cross_entropy(logits, IndexTensor{0, 0}, {.reduction = static_cast<Reduction>(7)}),
          "cross_entropy: reduction = 7 is not a Reduction (valid: 0 None, 1 Mean, 2 Sum)");
  // Every target ignored: mean is 0 / 0 = NaN, as torch; no classes at all is legal too.
  CHECK(std::isnan(cross_entropy(logits, IndexTensor{-100, -100}).item()));
  CHECK(std::isnan(cross_entropy(zeros_leaf({1, 0}), IndexTensor{-100}).item()));
  REFUSED(cosine_similarity(logits, logits, 1, kNaN), "cosine_similarity: eps must be finite and >= 0, got nan");
  REFUSED(cosine_similarity(logits, logits, 1, kInf), "cosine_similarity: eps must be finite and >= 0, got inf");
  REFUSED(cosine_similarity(logits, logits, kMax),
          "cosine_similarity: dim 9223372036854775807 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  // x with itself: 1 wherever the norm is not clamped.
  CHECK(cosine_similarity(logits, logits, 1).to_vector()[1] == doctest::Approx(1.0));
}

TEST_CASE("adversarial (handled): dropout, layer_norm, gelu with bad options, modules at the edges") {
  Generator gen(1);
  const Tensor a = leaf({2, 2}, {1, 2, 3, 4});
  const auto state = gen.state();
  REFUSED(dropout(a, kNaN, true, gen), "dropout: p must be in [0, 1], got nan");
  REFUSED(dropout(a, 1.0000001f, true, gen), "dropout: p must be in [0, 1], got 1.0000001");
  CHECK(gen.state() == state);
  CHECK(dropout(a, 1.0f, true, gen).to_vector() == std::vector<float>(4, 0.0f));
  REFUSED(layer_norm(a, {2}, {}, {}, 0.0f), "layer_norm: eps must be finite and > 0, got 0");
  REFUSED(layer_norm(a, {2}, {}, {}, kNaN), "layer_norm: eps must be finite and > 0, got nan");
  REFUSED(layer_norm(a, {2}, zeros_leaf({2, 1})), "layer_norm: weight has shape [2,1], but normalized_shape is [2]");
  REFUSED(layer_norm(a, {kMax}), "layer_norm: input of shape [2,2] does not end with normalized_shape [9223372036854775807]");
  REFUSED(gelu(a, "Tanh"), "gelu: approximate must be \"none\" or \"tanh\", got \"Tanh\"");
  // v as its own weight and bias: its gradient is the sum of the three paths' gradients, each
  // computed on a separate leaf with the same values.
  const std::vector<float> vals{1, 2, 4};
  const Tensor c = Tensor(Shape{3}, {0.5f, -1.0f, 2.0f});
  const Tensor v = leaf({3}, vals);
  backward(sum(mul(layer_norm(v, {3}, v, v), c)));
  const Tensor x1 = leaf({3}, vals), w1 = leaf({3}, vals), b1 = leaf({3}, vals);
  backward(sum(mul(layer_norm(x1, {3}, w1, b1), c)));
  for (i64 i = 0; i < 3; ++i)
    CHECK(v.grad().at({i}) == doctest::Approx(x1.grad().at({i}) + w1.grad().at({i}) + b1.grad().at({i})));

  nn::Sequential empty;
  const Tensor x = leaf({2}, {1, 2});
  CHECK(empty(x).is_same(x));
  CHECK(empty.parameters().empty());
  nn::Sequential inner(nn::Linear(2, 2), nn::ReLU());
  nn::Linear shared(2, 2);
  nn::Sequential outer(std::move(inner), nn::Linear(shared.weight), nn::Tanh());
  outer.push_back(std::make_unique<nn::Linear>(shared.weight));  // the same weight twice: listed once
  CHECK(outer.parameters().size() == 3);
  CHECK(inner.size() == 0);  // moved from: empty, still usable
  CHECK(inner(x).is_same(x));
  REFUSED(outer.push_back(nullptr), "Sequential::push_back: the module is a null pointer (position 4)");
  REFUSED(outer[static_cast<std::size_t>(kMax)], "Sequential: index 9223372036854775807 is out of range for 4 modules (valid: [0, 4))");
  REFUSED(nn::Linear(Parameter("w", Tensor::zeros({3}))),
          "Linear: weight must be 2-D [out_features, in_features], but has shape [3]");
  REFUSED(nn::Linear(shared.weight, Parameter("b", Tensor::zeros({3}))),
          "Linear: bias must have shape [2] (out_features of weight [2,2]), but has shape [3]");
  outer.requires_grad_(false);
  CHECK(!shared.weight.requires_grad());
}

TEST_CASE("adversarial (handled): 0-d tensors through the elementwise ops, with gradients") {
  const Tensor s = Tensor::scalar(-2.0f).requires_grad_();
  const Tensor t = Tensor::scalar(3.0f).requires_grad_();
  const Tensor y = add(mul(s, t), div(s, t)) + abs(s) + clamp(t, std::nullopt, 1.0f) + where(s, s, t) +
                   masked_fill(t, s, 5.0f) + log_sigmoid(s) + gelu(t) + dropout(s, 0.5f, false, default_generator());
  CHECK(y.shape() == Shape{});
  backward(y);
  // d/ds: t + 1/t - 1 (abs) + 1 (where picks s) + sigmoid(2) (log_sigmoid at -2) + 1 (dropout off)
  CHECK(s.grad().item() == doctest::Approx(3.0 + 1.0 / 3.0 - 1.0 + 1.0 + 1.0 / (1.0 + std::exp(-2.0)) + 1.0));
  // d/dt: s - s/t^2 + 0 (clamped) + 0 (masked, s != 0) + gelu'(3)
  const double gelu3 = 0.5 * (1.0 + std::erf(3.0 / std::sqrt(2.0))) + 3.0 * std::exp(-4.5) / std::sqrt(2.0 * std::numbers::pi);
  CHECK(t.grad().item() == doctest::Approx(-2.0 + 2.0 / 9.0 + gelu3));
  CHECK(stack({s, t}).to_vector() == std::vector<float>{-2.0f, 3.0f});
  REFUSED(cat({s, t}), "cat: dim 0 given for a tensor of rank 0, which has no dims");
  REFUSED(max(s, 0), "max: dim 0 given for a tensor of rank 0, which has no dims");
}

TEST_CASE("adversarial (handled): load_state_dict into Parameters a live graph saved makes that backward refuse") {
  nn::Linear lin(2, 2, false);
  const Tensor x = leaf({1, 2}, {1.0f, 2.0f});
  const Tensor y = lin(x);  // matmul saved the weight
  nn::load_state_dict(lin, nn::state_dict(lin));
  std::string message;
  try {
    backward(sum(y));
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK_MESSAGE(message.find("(matmul) reads a value that was modified in place after it was recorded") !=
                    std::string::npos,
                message);
  CHECK_FALSE(lin.weight.has_grad());
}
