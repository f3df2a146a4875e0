// Tests of issue 13's elementwise extras, reductions and batched matmul: a gradcheck table over
// every new op and form (abs, clamp, where, masked_fill, max / min values, logsumexp, batched
// matmul with broadcast batch dims and transposes), hand-computed forward values (ties and NaN
// for max / min), and every user error with its exact message and an untouched tape.
// Two-sided broadcasting of add / sub / mul / div is in tests/test_ops.cpp's table.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include "op_table.h"
#include <hitch/ops/ops.h>

using namespace hitch;
using namespace op_test;

namespace {

std::vector<OpCase> op_table() {
  const auto shapes = each({{3}, {2, 3}, {4, 1, 3}});
  const Domain M = Domain::Mask, S = Domain::Signed;
  // where(condition, a, b): equal shapes, each operand broadcast, all three stretched.
  const std::vector<std::vector<Shape>> where_forms = {
      {{2, 3}, {2, 3}, {2, 3}}, {{2, 3}, {3}, {}},        {{3}, {2, 3}, {2, 1}},
      {{2, 1}, {1, 3}, {3}},    {{4, 1, 1}, {2, 1}, {3}}, {{1}, {2, 3}, {2, 3}},
  };
  return {
      {"abs", shapes, [](const Inputs& x) { return abs(x[0]); }},
      {"clamp(-1, 1)", shapes, [](const Inputs& x) { return clamp(x[0], -1.0f, 1.0f); }},
      {"clamp(min=0)", shapes, [](const Inputs& x) { return clamp(x[0], 0.0f, std::nullopt); }},
      {"clamp(max=0.9)", shapes, [](const Inputs& x) { return clamp(x[0], std::nullopt, 0.9f); }},
      {"where", where_forms, [](const Inputs& x) { return where(x[0], x[1], x[2]); }, {M, S, S}},
      {"where(c, x, x)", {{{2, 3}, {2, 3}}}, [](const Inputs& x) { return where(x[0], x[1], x[1]); }, {M, S}},
      {"masked_fill", {{{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 3}, {2, 1}}, {{4, 2, 3}, {2, 1}}, {{2, 3}, {}}},
       [](const Inputs& x) { return masked_fill(x[0], x[1], -2.5f); }, {S, M}},
      // max / min values: the draws are continuous, so there are no ties to step across.
      {"max(dim=0)", shapes, [](const Inputs& x) { return max(x[0], 0).values; }},
      {"max(dim=-1, keepdim)", shapes, [](const Inputs& x) { return max(x[0], -1, true).values; }},
      {"max(dim=1)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return max(x[0], 1).values; }},
      {"min(dim=-1)", shapes, [](const Inputs& x) { return min(x[0], -1).values; }},
      {"min(dim=0, keepdim)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return min(x[0], 0, true).values; }},
      {"logsumexp(dim=-1)", shapes, [](const Inputs& x) { return logsumexp(x[0], -1); }},
      {"logsumexp(dim=0, keepdim)", shapes, [](const Inputs& x) { return logsumexp(x[0], 0, true); }},
      {"logsumexp(dim=1)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return logsumexp(x[0], 1); }},
      // batched matmul: equal batches, a 2-D operand shared (the folded sgemm when it is b and
      // a is not transposed), broadcast batch dims, every transpose combination.
      {"matmul batched", {{{2, 2, 3}, {2, 3, 4}}, {{2, 1, 2, 3}, {3, 3, 2}}, {{1, 2, 3}, {2, 3, 4}}},
       [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul [..,M,K] x [K,N] (folded)", {{{2, 2, 3}, {3, 4}}, {{3, 2, 1, 3}, {3, 2}}},
       [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul [M,K] x [..,K,N]", {{{2, 3}, {2, 3, 4}}}, [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul batched (a^T)", {{{2, 3, 2}, {2, 3, 4}}, {{2, 3, 2}, {3, 4}}},
       [](const Inputs& x) { return matmul(x[0], x[1], true, false); }},
      {"matmul batched (b^T)", {{{2, 2, 3}, {2, 4, 3}}, {{2, 2, 3}, {4, 3}}, {{2, 3}, {2, 4, 3}}},
       [](const Inputs& x) { return matmul(x[0], x[1], false, true); }},
      {"matmul batched (a^T, b^T)", {{{2, 3, 2}, {1, 4, 3}}, {{2, 1, 3, 2}, {3, 4, 3}}},
       [](const Inputs& x) { return matmul(x[0], x[1], true, true); }},
      {"matmul batched (x, x)", each({{2, 3, 3}}), [](const Inputs& x) { return matmul(x[0], x[0], false, true); }},
  };
}

void check_indices(const IndexTensor& t, const Shape& shape, const std::vector<std::int64_t>& want) {
  CHECK(t.shape() == shape);
  CHECK(std::vector<std::int64_t>(t.values().begin(), t.values().end()) == want);
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace

TEST_CASE("ops elem: gradcheck table over abs, clamp, where, masked_fill, max, min, logsumexp, batched matmul") {
  const int runs = run_table(op_table(), 13);
  CHECK(runs >= 50);
}

TEST_CASE("ops elem: abs and clamp forward values and gradients") {
  Tensor x = leaf({5}, {-2, -0.5f, 0, 0.5f, 3});
  check_values(abs(x), {5}, {2, 0.5f, 0, 0.5f, 3});
  check_values(clamp(x, -1.0f, 1.0f), {5}, {-1, -0.5f, 0, 0.5f, 1});
  check_values(clamp(x, 0.0f, std::nullopt), {5}, {0, 0, 0, 0.5f, 3});
  check_values(clamp(x, std::nullopt, 0.0f), {5}, {-2, -0.5f, 0, 0, 0});
  check_values(clamp(x, 2.0f, 1.0f), {5}, {1, 1, 1, 1, 1});  // min > max: every value is max
  check_values(clamp(Tensor({2}, {kNaN, 1}), -1.0f, 0.0f), {2}, {kNaN, 0});
  check_values(clamp(Tensor({2}, {-kInf, kInf}), -1.0f, 1.0f), {2}, {-1, 1});

  // abs: sign(x), 0 at 0.
  backward(sum(abs(x)));
  check_values(x.grad(), {5}, {-1, -1, 0, 1, 1});
  // clamp: 1 inside [min, max] with the bounds included, 0 outside.
  Tensor y = leaf({5}, {-2, -1, 0, 1, 3});
  backward(sum(clamp(y, -1.0f, 1.0f)));
  check_values(y.grad(), {5}, {0, 1, 1, 1, 0});
  // min > max: 0 everywhere (no value is in the empty interval).
  Tensor z = leaf({3}, {0, 1.5f, 3});
  backward(sum(clamp(z, 2.0f, 1.0f)));
  check_values(z.grad(), {3}, {0, 0, 0});
}

TEST_CASE("ops elem: where and masked_fill forward values and gradients") {
  const Tensor cond({2, 3}, {1, 0, kNaN, 0, -2, 0});  // non-zero and NaN are true
  Tensor a = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = leaf({3}, {10, 20, 30});
  const Tensor w = where(cond, a, b);
  check_values(w, {2, 3}, {1, 20, 3, 10, 5, 30});
  backward(sum(mul(w, Tensor({2, 3}, {1, 2, 3, 4, 5, 6}))));
  check_values(a.grad(), {2, 3}, {1, 0, 3, 0, 5, 0});
  check_values(b.grad(), {3}, {4, 2, 6});  // column sums of g where false
  // All three stretched: condition [2,1], a [1,3], b [] -> [2,3].
  check_values(where(Tensor({2, 1}, {1, 0}), Tensor({1, 3}, {1, 2, 3}), Tensor::scalar(-1)), {2, 3},
               {1, 2, 3, -1, -1, -1});

  Tensor m = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(masked_fill(m, Tensor({3}, {0, 1, 0}), -1.0f), {2, 3}, {1, -1, 3, 4, -1, 6});
  check_values(masked_fill(m, Tensor({2, 1}, {kNaN, 0}), 9.0f), {2, 3}, {9, 9, 9, 4, 5, 6});
  check_values(masked_fill(m, Tensor::scalar(0), 9.0f), {2, 3}, {1, 2, 3, 4, 5, 6});
  backward(sum(masked_fill(m, Tensor({3}, {0, 1, 0}), 100.0f)));
  check_values(m.grad(), {2, 3}, {1, 0, 1, 1, 0, 1});

  // The mask is not differentiated, and a mask that requires grad is simply left alone.
  Tensor mask = leaf({3}, {0, 1, 0});
  Tensor n = leaf({3}, {1, 2, 3});
  backward(sum(masked_fill(n, mask, 0.0f)));
  CHECK_FALSE(mask.grad().defined());
  check_values(n.grad(), {3}, {1, 0, 1});
}

TEST_CASE("ops elem: max, min, argmax, argmin: values, first index on ties, NaN wins") {
  // Rows: a tie at 5 (indices 1 and 3), a NaN, all equal.
  const Tensor a({3, 4}, {1, 5, 2, 5, 3, kNaN, 7, kNaN, 4, 4, 4, 4});
  auto mx = max(a, 1);
  check_values(mx.values, {3}, {5, kNaN, 4});
  check_indices(mx.indices, {3}, {1, 1, 0});
  check_indices(argmax(a, -1), {3}, {1, 1, 0});
  auto mn = min(a, 1, true);
  check_values(mn.values, {3, 1}, {1, kNaN, 4});
  check_indices(mn.indices, {3, 1}, {0, 1, 0});
  check_indices(argmin(a, 1, true), {3, 1}, {0, 1, 0});
  // Along dim 0: columns [1,3,4], [5,NaN,4], [2,7,4], [5,NaN,4].
  auto c = max(a, 0);
  check_values(c.values, {4}, {4, kNaN, 7, kNaN});
  check_indices(c.indices, {4}, {2, 1, 1, 1});
  check_indices(argmin(a, -2), {4}, {0, 1, 0, 1});
  // A middle dim of a 3-D tensor; size-1 dims.
  const Tensor b = reshape(Tensor::arange(0, 12).detach(), {2, 3, 2});
  check_indices(argmax(b, 1), {2, 2}, {2, 2, 2, 2});
  check_values(min(b, 1).values, {2, 2}, {0, 1, 6, 7});
  check_values(max(Tensor({1, 3}, {3, 1, 2}), 0).values, {3}, {3, 1, 2});
  check_indices(argmax(Tensor({1, 3}, {3, 1, 2}), 0, true), {1, 3}, {0, 0, 0});
  // Empty outer dims are fine; only the reduced dim must be non-empty.
  check_values(max(Tensor::zeros({0, 3}), 1).values, {0}, {});

  // The gradient goes to the picked element only: the first of a tie.
  Tensor x = leaf({2, 3}, {2, 7, 7, -1, -3, -1});
  backward(sum(max(x, 1).values) + sum(min(x, 1).values) * 10.0f);
  check_values(x.grad(), {2, 3}, {10, 1, 0, 1, 10, 0});
}

TEST_CASE("ops elem: logsumexp is stable, handles infinities and has softmax as gradient") {
  const Tensor a({2, 3}, {1, 2, 3, 1000, 1000, -kInf});
  const float lse = std::log(std::exp(1.0f) + std::exp(2.0f) + std::exp(3.0f));
  check_values(logsumexp(a, 1), {2}, {lse, 1000 + std::log(2.0f)});
  check_values(logsumexp(a, 0, true), {1, 3}, {1000, 1000, 3});
  check_values(logsumexp(Tensor({2, 2}, {-kInf, -kInf, kInf, 0}), 1), {2}, {-kInf, kInf});
  check_values(logsumexp(Tensor::zeros({2, 0}), 1), {2}, {-kInf, -kInf});  // log of an empty sum
  check_values(logsumexp(Tensor({2}, {0, kNaN}), 0), {}, {kNaN});

  Tensor x = leaf({2, 2}, {0, std::log(3.0f), 1000, 1000});
  backward(sum(logsumexp(x, -1) * Tensor({2}, {1, 2})));
  check_values(x.grad(), {2, 2}, {0.25f, 0.75f, 1, 1});
  // A row of all -inf: gradient NaN, as torch (exp(-inf - -inf)).
  Tensor y = leaf({1, 2}, {-kInf, -kInf});
  backward(sum(logsumexp(y, 1)));
  check_values(y.grad(), {1, 2}, {kNaN, kNaN});
}

TEST_CASE("ops elem: batched matmul forward values and the folded product") {
  // Two batches of [2,2] x [2,2].
  const Tensor a({2, 2, 2}, {1, 2, 3, 4, 0, 1, 1, 0});
  const Tensor b({2, 2, 2}, {5, 6, 7, 8, 1, 2, 3, 4});
  check_values(matmul(a, b), {2, 2, 2}, {19, 22, 43, 50, 3, 4, 1, 2});
  check_values(matmul(a, b, true, false), {2, 2, 2}, {26, 30, 38, 44, 3, 4, 1, 2});
  check_values(matmul(a, b, false, true), {2, 2, 2}, {17, 23, 39, 53, 2, 4, 1, 3});
  check_values(matmul(a, b, true, true), {2, 2, 2}, {23, 31, 34, 46, 2, 4, 1, 3});
  // b 2-D: shared by both batches (folded into one [4,2] x [2,2] sgemm).
  const Tensor b2({2, 2}, {5, 6, 7, 8});
  check_values(matmul(a, b2), {2, 2, 2}, {19, 22, 43, 50, 7, 8, 5, 6});
  check_values(matmul(a, b2, false, true), {2, 2, 2}, {17, 23, 39, 53, 6, 8, 5, 7});
  // a 2-D shared; a batch dim of 1 broadcast: [1,2,2] x [2,1,2,2] -> [2,1,2,2].
  check_values(matmul(b2, a), {2, 2, 2}, {23, 34, 31, 46, 6, 5, 8, 7});
  check_values(matmul(reshape(b2, {1, 2, 2}), reshape(a, {2, 1, 2, 2})), {2, 1, 2, 2}, {23, 34, 31, 46, 6, 5, 8, 7});
  // Empty batch and K = 0.
  check_values(matmul(Tensor::zeros({0, 2, 3}), Tensor::zeros({3, 4})), {0, 2, 4}, {});
  check_values(matmul(Tensor::zeros({2, 1, 0}), Tensor::zeros({2, 0, 2})), {2, 1, 2}, {0, 0, 0, 0});

  // The folded product gives the same values and gradients as one 2-D matmul per batch.
  Generator gen(5);
  Tensor x = Tensor::randn({3, 4, 5}, gen).requires_grad_();
  Tensor w = Tensor::randn({5, 6}, gen).requires_grad_();
  const Tensor y = matmul(x, w);
  backward(sum(y));
  const Tensor gx = x.grad();
  Tensor w2 = w.detach().clone().requires_grad_();
  for (std::int64_t i = 0; i < 3; ++i) {
    Tensor part = Tensor({4, 5}, std::vector<float>(x.data() + i * 20, x.data() + (i + 1) * 20)).requires_grad_();
    const Tensor yi = matmul(part, w2);
    backward(sum(yi));
    check_values(yi, {4, 6}, std::vector<float>(y.data() + i * 24, y.data() + (i + 1) * 24), 1e-5f);
    check_values(part.grad(), {4, 5}, std::vector<float>(gx.data() + i * 20, gx.data() + (i + 1) * 20), 1e-5f);
  }
  check_values(w2.grad(), {5, 6}, w.grad().to_vector(), 1e-5f);
}

TEST_CASE("ops elem: user errors carry exact messages and record nothing") {
  Tensor a = leaf({2, 3}, {1, 2, 3, 4, 5, 6});

  CHECK_REJECTS(clamp(a, std::nullopt, std::nullopt), "clamp: at least one of min and max must be given, but both are absent");
  CHECK_REJECTS(clamp(a, kNaN, 1.0f), "clamp: bounds must not be NaN, but got min = nan and max = 1");
  CHECK_REJECTS(clamp(a, std::nullopt, kNaN), "clamp: bounds must not be NaN, but got min = none and max = nan");

  CHECK_REJECTS(where(Tensor::ones({4}), a, a),
                "where: condition [4], a [2,3] and b [2,3] cannot be broadcast (trailing dims must match or be 1)");
  CHECK_REJECTS(where(Tensor::ones({2, 1}), a, Tensor::zeros({3, 1})),
                "where: condition [2,1], a [2,3] and b [3,1] cannot be broadcast (trailing dims must match or be 1)");
  CHECK_REJECTS(masked_fill(a, Tensor::ones({3, 3}), 0.0f),
                "masked_fill: mask [3,3] cannot be broadcast to a's shape [2,3] (mask's rank must be at most a's and "
                "its trailing dims must equal a's or be 1)");
  CHECK_REJECTS(masked_fill(leaf({3}, {1, 2, 3}), Tensor::ones({2, 3}), 0.0f),
                "masked_fill: mask [2,3] cannot be broadcast to a's shape [3] (mask's rank must be at most a's and its "
                "trailing dims must equal a's or be 1)");
  CHECK_REJECTS(masked_fill(leaf({3}, {1, 2, 3}), Tensor::ones({1, 3}), 0.0f),
                "masked_fill: mask [1,3] cannot be broadcast to a's shape [3] (mask's rank must be at most a's and its "
                "trailing dims must equal a's or be 1)");

  CHECK_REJECTS(max(Tensor::zeros({2, 0}), 1),
                "max: dim 1 has size 0 in a tensor of shape [2,0], and a reduction without identity needs at least "
                "one element");
  CHECK_REJECTS(min(leaf({0, 2}, {}), -2),
                "min: dim -2 has size 0 in a tensor of shape [0,2], and a reduction without identity needs at least "
                "one element");
  CHECK_THROWS_WITH_AS(argmax(Tensor::zeros({0}), 0),
                       "argmax: dim 0 has size 0 in a tensor of shape [0], and a reduction without identity needs at "
                       "least one element",
                       Error);
  CHECK_THROWS_WITH_AS(argmin(Tensor::zeros({3, 0}), 1),
                       "argmin: dim 1 has size 0 in a tensor of shape [3,0], and a reduction without identity needs "
                       "at least one element",
                       Error);
  CHECK_REJECTS(max(a, 2), "max: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(min(a, -3, true), "min: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_THROWS_WITH_AS(argmax(a, 5), "argmax: dim 5 is out of range for a tensor of rank 2 (valid: [-2, 1])", Error);
  CHECK_REJECTS(logsumexp(a, -3), "logsumexp: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");

  CHECK_REJECTS(matmul(leaf({2, 2, 3}, std::vector<float>(12, 1.0f)), Tensor::zeros({3, 2, 4})),
                "matmul: [2,2,3] x [3,2,4]: inner dimensions 3 and 2 differ");
  CHECK_REJECTS(matmul(leaf({2, 2, 3}, std::vector<float>(12, 1.0f)), Tensor::zeros({3, 3, 4})),
                "matmul: [2,2,3] x [3,3,4]: batch dims [2] and [3] cannot be broadcast (trailing dims must match or "
                "be 1)");
  CHECK_REJECTS(matmul(Tensor::zeros({4, 2, 3, 2}), leaf({3, 1, 4, 3}, std::vector<float>(36, 1.0f)), true, true),
                "matmul: [4,2,3,2]^T x [3,1,4,3]^T: batch dims [4,2] and [3,1] cannot be broadcast (trailing dims must "
                "match or be 1)");
  CHECK_REJECTS(matmul(a, Tensor::zeros({3})),
                "matmul: expected operands of rank >= 2 ([..., M, K] and [..., K, N]), got [2,3] and [3]");
}
