// Op tests: one gradcheck table over every op in ops/ops.h (embedding aside), hand-computed
// forward values, the diamond graph, a deliberately wrong backward that gradcheck must catch,
// and every user error with its exact message and an untouched tape.
#include <cmath>
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

// Every accepted broadcasting form, in both argument orders.
std::vector<std::vector<Shape>> broadcast_pairs() {
  const std::vector<std::pair<Shape, Shape>> forms = {
      {{3}, {3}},             // equal
      {{2, 3}, {2, 3}},       // equal
      {{2, 3}, {3}},          // trailing dims [B,D] . [D]
      {{2, 3}, {2, 1}},       // same rank, column [B,D] . [B,1]
      {{2, 3}, {1, 3}},       // same rank, row [B,D] . [1,D]
      {{2, 3}, {}},           // scalar []
      {{2, 3}, {1}},          // one element [1]
      {{2, 3}, {1, 1, 1}},    // one element of higher rank -> [1,2,3]
      {{4, 2, 3}, {4, 1, 3}}, // a middle dim
      {{4, 2, 3}, {2, 1}},    // trailing dims with a 1
      {{4, 1, 3}, {1, 3}},
      {{2, 1}, {1, 3}},       // both sides stretched [B,1] . [1,D]
      {{2, 1}, {3}},          // both sides stretched [B,1] . [D]
      {{4, 1, 3}, {2, 1}},    // both sides stretched -> [4,2,3]
  };
  std::vector<std::vector<Shape>> out;
  for (const auto& [a, b] : forms) {
    out.push_back({a, b});
    if (a != b) out.push_back({b, a});
  }
  return out;
}

std::vector<OpCase> op_table() {
  const auto pairs = broadcast_pairs();
  const auto unary_shapes = each({{3}, {2, 3}, {4, 1, 3}});
  const Domain P = Domain::Positive;
  return {
      // elementwise, every broadcasting form in both orders
      {"add", pairs, [](const Inputs& x) { return add(x[0], x[1]); }},
      {"sub", pairs, [](const Inputs& x) { return sub(x[0], x[1]); }},
      {"mul", pairs, [](const Inputs& x) { return mul(x[0], x[1]); }},
      {"div", pairs, [](const Inputs& x) { return div(x[0], x[1]); }},
      {"mul(x, x)", each({{3}, {2, 3}}), [](const Inputs& x) { return mul(x[0], x[0]); }},
      {"add(x, 0.5)", unary_shapes, [](const Inputs& x) { return add(x[0], 0.5f); }},
      {"mul(x, -1.5)", unary_shapes, [](const Inputs& x) { return mul(x[0], -1.5f); }},
      {"neg", unary_shapes, [](const Inputs& x) { return neg(x[0]); }},
      {"operators", {{{2, 3}, {3}}}, [](const Inputs& x) { return (2.0f - x[0]) * 3.0f / x[1] + x[0] / 4.0f - -x[1]; }},
      // unary
      {"square", unary_shapes, [](const Inputs& x) { return square(x[0]); }},
      {"pow(x, 3)", unary_shapes, [](const Inputs& x) { return pow(x[0], 3.0f); }},
      {"pow(x, 2)", unary_shapes, [](const Inputs& x) { return pow(x[0], 2.0f); }},
      {"pow(x, 0)", unary_shapes, [](const Inputs& x) { return pow(x[0], 0.0f); }},
      {"pow(x, 0.5)", unary_shapes, [](const Inputs& x) { return pow(x[0], 0.5f); }, {P}},
      {"pow(x, -1.5)", unary_shapes, [](const Inputs& x) { return pow(x[0], -1.5f); }, {P}},
      {"exp", unary_shapes, [](const Inputs& x) { return exp(x[0]); }},
      {"log", unary_shapes, [](const Inputs& x) { return log(x[0]); }, {P}},
      {"sqrt", unary_shapes, [](const Inputs& x) { return sqrt(x[0]); }, {P}},
      {"relu", unary_shapes, [](const Inputs& x) { return relu(x[0]); }},
      {"tanh", unary_shapes, [](const Inputs& x) { return tanh(x[0]); }},
      {"sigmoid", unary_shapes, [](const Inputs& x) { return sigmoid(x[0]); }},
      // reductions
      {"sum", unary_shapes, [](const Inputs& x) { return sum(x[0]); }},
      {"mean", unary_shapes, [](const Inputs& x) { return mean(x[0]); }},
      {"sum(dim=0)", unary_shapes, [](const Inputs& x) { return sum(x[0], 0); }},
      {"sum(dim=-1)", unary_shapes, [](const Inputs& x) { return sum(x[0], -1); }},
      {"sum(dim=1, keepdim)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return sum(x[0], 1, true); }},
      {"sum(dim=-2)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return sum(x[0], -2); }},
      {"mean(dim=0, keepdim)", unary_shapes, [](const Inputs& x) { return mean(x[0], 0, true); }},
      {"mean(dim=-1)", unary_shapes, [](const Inputs& x) { return mean(x[0], -1); }},
      {"mean(dim=1)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return mean(x[0], 1); }},
      {"mean(dim=-3, keepdim)", each({{4, 2, 3}}), [](const Inputs& x) { return mean(x[0], -3, true); }},
      // matmul, all four transpose combinations (operands as stored)
      {"matmul", {{{2, 3}, {3, 4}}, {{1, 5}, {5, 1}}}, [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul(a^T)", {{{3, 2}, {3, 4}}}, [](const Inputs& x) { return matmul(x[0], x[1], true, false); }},
      {"matmul(b^T)", {{{2, 3}, {4, 3}}}, [](const Inputs& x) { return matmul(x[0], x[1], false, true); }},
      {"matmul(a^T, b^T)", {{{3, 2}, {4, 3}}}, [](const Inputs& x) { return matmul(x[0], x[1], true, true); }},
      {"matmul(x, x)", each({{3, 3}}), [](const Inputs& x) { return matmul(x[0], x[0], false, true); }},
      // shape
      {"reshape", each({{2, 3}, {6}}), [](const Inputs& x) { return reshape(x[0], {3, -1}); }},
      {"reshape(-1)", each({{4, 1, 3}}), [](const Inputs& x) { return reshape(x[0], {-1}); }},
      {"transpose", each({{2, 3}, {1, 4}}), [](const Inputs& x) { return transpose(x[0]); }},
      // losses
      {"log_softmax", unary_shapes, [](const Inputs& x) { return log_softmax(x[0]); }},
      {"log_softmax(dim=0)", unary_shapes, [](const Inputs& x) { return log_softmax(x[0], 0); }},
      {"log_softmax(dim=1)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return log_softmax(x[0], 1); }},
      {"log_softmax(dim=-2)", each({{4, 2, 3}}), [](const Inputs& x) { return log_softmax(x[0], -2); }},
      {"cross_entropy", each({{4, 5}, {1, 3}, {3, 1}}),
       [](const Inputs& x) { return cross_entropy(x[0], targets_for(x[0])); }},
      {"mse_loss", {{{3}, {3}}, {{2, 3}, {2, 3}}, {{4, 1, 3}, {4, 1, 3}}},
       [](const Inputs& x) { return mse_loss(x[0], x[1]); }},
      {"binary_cross_entropy_with_logits", {{{3}, {3}}, {{2, 3}, {2, 3}}, {{4, 1, 3}, {4, 1, 3}}},
       [](const Inputs& x) { return binary_cross_entropy_with_logits(x[0], x[1]); },
       {Domain::Signed, Domain::Target}},
      // compositions
      {"linear", {{{4, 3}, {2, 3}, {2}}},
       [](const Inputs& x) { return add(matmul(x[0], x[1], false, true), x[2]); }},
      {"diamond", each({{3}, {2, 3}}), [](const Inputs& x) {
         const Tensor b = x[0] + x[0];
         return b * b;
       }},
  };
}

}  // namespace

TEST_CASE("ops: gradcheck table over every op") {
  const int runs = run_table(op_table(), 42);
  CHECK(runs > 100);
}

TEST_CASE("ops: gradcheck reports a wrong backward, naming the op, input and element") {
  // square with the factor 2 missing from its backward.
  auto bad_square = [](const Inputs& x) {
    const Tensor& a = x[0];
    Tensor out = Tensor::empty(a.shape());
    for (std::int64_t i = 0; i < a.numel(); ++i) out.data()[i] = a.data()[i] * a.data()[i];
    record("bad_square", {a}, out, [av = a.detach()](const Tensor& g, GradSink& sink) {
      Tensor ga = Tensor::empty(av.shape());
      for (std::int64_t i = 0; i < av.numel(); ++i) ga.data()[i] = g.data()[i] * av.data()[i];  // should be 2 * x
      sink.add(0, ga);
    }, {a});
    return out;
  };
  Tensor x = leaf({2, 2}, {1.0f, -2.0f, 0.5f, 3.0f});
  const GradcheckResult r = gradcheck("bad_square", bad_square, {x});
  CHECK_FALSE(r.ok);
  CHECK_MESSAGE(r.message.find("gradcheck: bad_square: input 0 element 0 (of shape [2,2]): analytic ") == 0, r.message);
  // The correct op passes on the same input.
  CHECK(gradcheck("square", [](const Inputs& in) { return square(in[0]); }, {x}).ok);
}

TEST_CASE("ops: elementwise forward values and broadcasting") {
  const Tensor a({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(add(a, Tensor({3}, {10, 20, 30})), {2, 3}, {11, 22, 33, 14, 25, 36});
  check_values(add(Tensor({3}, {10, 20, 30}), a), {2, 3}, {11, 22, 33, 14, 25, 36});
  check_values(sub(a, Tensor({2, 1}, {1, 2})), {2, 3}, {0, 1, 2, 2, 3, 4});
  check_values(sub(Tensor({2, 1}, {1, 2}), a), {2, 3}, {0, -1, -2, -2, -3, -4});
  check_values(mul(a, Tensor({1, 3}, {1, 0, -1})), {2, 3}, {1, 0, -3, 4, 0, -6});
  check_values(div(a, Tensor::scalar(2)), {2, 3}, {0.5f, 1, 1.5f, 2, 2.5f, 3});
  check_values(div(Tensor({1}, {6}), a), {2, 3}, {6, 3, 2, 1.5f, 1.2f, 1});
  check_values(mul(Tensor({1, 1, 1}, {2}), a), {1, 2, 3}, {2, 4, 6, 8, 10, 12});
  check_values(add(Tensor::scalar(1), Tensor::scalar(2)), {}, {3});
  check_values(add(a, 0.5f), {2, 3}, {1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f});
  check_values(mul(a, -2.0f), {2, 3}, {-2, -4, -6, -8, -10, -12});
  check_values(neg(a), {2, 3}, {-1, -2, -3, -4, -5, -6});
  check_values(1.0f - a / 2.0f, {2, 3}, {0.5f, 0, -0.5f, -1, -1.5f, -2});
  check_values(add(Tensor::zeros({0, 3}), Tensor({3}, {1, 2, 3})), {0, 3}, {});
  // Both sides stretched: [2,1] + [1,3] -> [2,3] (an outer sum).
  check_values(add(Tensor({2, 1}, {10, 20}), Tensor({1, 3}, {1, 2, 3})), {2, 3}, {11, 12, 13, 21, 22, 23});
  check_values(sub(Tensor({3}, {1, 2, 3}), Tensor({2, 1}, {10, 20})), {2, 3}, {-9, -8, -7, -19, -18, -17});

  // Broadcast gradients are summed over the broadcast dims.
  Tensor x = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor row = leaf({3}, {1, 2, 3});
  Tensor col = leaf({2, 1}, {2, 3});
  Tensor s = leaf({}, {2});
  backward(sum(mul(add(x, row), col) / s));
  check_values(row.grad(), {3}, {2.5f, 2.5f, 2.5f});          // (2 + 3) / 2
  check_values(col.grad(), {2, 1}, {6.0f, 10.5f});             // (2+4+6)/2, (5+7+9)/2
  check_values(x.grad(), {2, 3}, {1, 1, 1, 1.5f, 1.5f, 1.5f});  // col / s
  check_values(s.grad(), {}, {-(12 * 2 + 21 * 3) / 4.0f});     // -sum(numerator) / s^2
  // Two-sided: out[i][j] = c[i] * r[j]; dc[i] = sum_j r[j], dr[j] = sum_i c[i].
  Tensor c2 = leaf({2, 1}, {2, 3});
  Tensor r2 = leaf({1, 3}, {1, 2, 4});
  backward(sum(mul(c2, r2)));
  check_values(c2.grad(), {2, 1}, {7, 7});
  check_values(r2.grad(), {1, 3}, {5, 5, 5});
}

TEST_CASE("ops: diamond graph b = a + a, c = b * b") {
  Tensor a = leaf({3}, {1, 2, 3});
  const Tensor b = a + a;
  const Tensor c = b * b;
  check_values(c, {3}, {4, 16, 36});
  backward(sum(c));
  // dc/da = 2 b * 2 = 8 a: both uses of a and both uses of b are accumulated.
  check_values(a.grad(), {3}, {8, 16, 24});
}

TEST_CASE("ops: unary forward values") {
  const Tensor x({4}, {-1.0f, 0.0f, 0.5f, 2.0f});
  check_values(square(x), {4}, {1, 0, 0.25f, 4});
  check_values(pow(Tensor({2}, {8, 2}), 1.0f / 3.0f), {2}, {2, std::cbrt(2.0f)});
  check_values(pow(x, 0.0f), {4}, {1, 1, 1, 1});
  check_values(exp(x), {4}, {std::exp(-1.0f), 1, std::exp(0.5f), std::exp(2.0f)});
  check_values(log(Tensor({2}, {1.0f, std::exp(2.0f)})), {2}, {0, 2});
  check_values(sqrt(Tensor({2}, {4, 0.25f})), {2}, {2, 0.5f});
  check_values(relu(x), {4}, {0, 0, 0.5f, 2});
  check_values(tanh(x), {4}, {std::tanh(-1.0f), 0, std::tanh(0.5f), std::tanh(2.0f)});
  check_values(sigmoid(Tensor({3}, {0, -100, 100})), {3}, {0.5f, 0, 1});  // no overflow at +-100
  CHECK(std::isfinite(sigmoid(Tensor({1}, {-1000})).item()));

  // relu's gradient at exactly 0 is 0, as in PyTorch.
  Tensor r = leaf({3}, {-1, 0, 1});
  backward(sum(relu(r)));
  check_values(r.grad(), {3}, {0, 0, 1});
  // pow(x, 0) has gradient 0 even at x = 0.
  Tensor z = leaf({1}, {0});
  backward(sum(pow(z, 0.0f)));
  check_values(z.grad(), {1}, {0});
}

TEST_CASE("ops: reductions forward values") {
  const Tensor a({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(sum(a), {}, {21});
  check_values(mean(a), {}, {3.5f});
  check_values(sum(a, 0), {3}, {5, 7, 9});
  check_values(sum(a, -1), {2}, {6, 15});
  check_values(sum(a, 1, true), {2, 1}, {6, 15});
  check_values(mean(a, 0, true), {1, 3}, {2.5f, 3.5f, 4.5f});
  check_values(mean(a, -1), {2}, {2, 5});
  const Tensor b = Tensor::arange(0, 24).detach();
  const Tensor b3 = reshape(b, {2, 3, 4});
  check_values(sum(b3, 1), {2, 4}, {12, 15, 18, 21, 48, 51, 54, 57});
  // Sums run in double: 1 + many tiny values does not lose them all.
  Tensor many = Tensor::full({1 << 20}, 1e-8f);
  many.data()[0] = 1.0f;
  CHECK(sum(many).item() == doctest::Approx(1.0 + 1e-8 * ((1 << 20) - 1)).epsilon(1e-7));

  Tensor x = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  backward(sum(mean(x, 1)));
  check_values(x.grad(), {2, 3}, {1 / 3.0f, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f});
}

TEST_CASE("ops: matmul, reshape and transpose forward values") {
  const Tensor a({2, 2}, {1, 2, 3, 4});
  const Tensor b({2, 2}, {5, 6, 7, 8});
  check_values(matmul(a, b), {2, 2}, {19, 22, 43, 50});
  check_values(matmul(a, b, true, false), {2, 2}, {26, 30, 38, 44});
  check_values(matmul(a, b, false, true), {2, 2}, {17, 23, 39, 53});
  check_values(matmul(a, b, true, true), {2, 2}, {23, 31, 34, 46});
  const Tensor c({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(matmul(c, c, false, true), {2, 2}, {14, 32, 32, 77});
  check_values(matmul(Tensor::zeros({2, 0}), Tensor::zeros({0, 3})), {2, 3}, {0, 0, 0, 0, 0, 0});
  check_values(transpose(c), {3, 2}, {1, 4, 2, 5, 3, 6});
  check_values(reshape(c, {3, -1}), {3, 2}, {1, 2, 3, 4, 5, 6});
  check_values(reshape(c, {6}), {6}, {1, 2, 3, 4, 5, 6});
  check_values(reshape(Tensor::scalar(7), {1, 1}), {1, 1}, {7});
  // reshape copies: writing into the result leaves the input alone.
  Tensor r = reshape(c, {6});
  r.set({0}, 100);
  CHECK(c.at({0, 0}) == 1);

  // A large transpose (several tiles) against the definition.
  Generator gen(3);
  const Tensor big = Tensor::randn({37, 70}, gen);
  const Tensor t = transpose(big);
  bool same = true;
  for (std::int64_t i = 0; i < 37; ++i)
    for (std::int64_t j = 0; j < 70; ++j) same = same && t.at({j, i}) == big.at({i, j});
  CHECK(same);
}

TEST_CASE("ops: log_softmax and loss forward values") {
  const Tensor x({3}, {1, 2, 3});
  const float lse = std::log(std::exp(1.0f) + std::exp(2.0f) + std::exp(3.0f));
  check_values(log_softmax(x), {3}, {1 - lse, 2 - lse, 3 - lse});
  // Stable for large logits: no inf, no NaN.
  check_values(log_softmax(Tensor({2}, {1000, 0})), {2}, {0, -1000});
  check_values(log_softmax(Tensor({2, 2}, {0, 0, 1000, -1000}), 0), {2, 2},
               {-1000, 0, 0, -1000});

  // Rows: [0, 0] with target 0 -> ln 2; [0, ln 3] with target 1 -> ln(4/3).
  const Tensor logits({2, 2}, {0, 0, 0, std::log(3.0f)});
  check_values(cross_entropy(logits, IndexTensor{0, 1}), {}, {0.5f * std::log(8.0f / 3.0f)});
  check_values(cross_entropy(Tensor({1, 3}, {1000, 0, -1000}), IndexTensor{1}), {}, {1000});
  Tensor l = leaf({2, 2}, {0, 0, 0, std::log(3.0f)});
  backward(cross_entropy(l, IndexTensor{0, 1}));
  // (softmax - onehot) / B
  check_values(l.grad(), {2, 2}, {-0.25f, 0.25f, 0.125f, -0.125f});

  const Tensor in({2}, {1, 2});
  const Tensor tg({2}, {3, 5});
  check_values(mse_loss(in, tg), {}, {6.5f});
  Tensor p = leaf({2}, {1, 2});
  Tensor q = leaf({2}, {3, 5});
  backward(mse_loss(p, q));
  check_values(p.grad(), {2}, {-2, -3});
  check_values(q.grad(), {2}, {2, 3});

  check_values(binary_cross_entropy_with_logits(Tensor({1}, {0}), Tensor({1}, {1})), {}, {std::log(2.0f)});
  // Large logits: exact, not inf.
  check_values(binary_cross_entropy_with_logits(Tensor({2}, {100, -100}), Tensor({2}, {0, 1})), {}, {100});
  Tensor z = leaf({2}, {0, 100});
  backward(binary_cross_entropy_with_logits(z, Tensor({2}, {1, 1})));
  check_values(z.grad(), {2}, {-0.25f, 0});  // (sigmoid(x) - y) / n
}

TEST_CASE("ops: backward closures hold no reference cycle and no-grad records nothing") {
  Tensor x = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  std::vector<std::weak_ptr<TensorImpl>> outs;
  {
    const std::vector<Tensor> made = {exp(x), log_softmax(x), x * x, matmul(x, x, false, true), sum(x, 1),
                                      reshape(x, {6}), transpose(x), sigmoid(x), tanh(x), x + 1.0f};
    for (const auto& t : made) outs.push_back(t.impl_ptr());
  }
  for (const auto& w : outs) CHECK(w.expired());

  const std::size_t before = tape_size();
  {
    NoGradGuard guard;
    const Tensor y = sum(exp(x) * x);
    CHECK_FALSE(y.requires_grad());
  }
  CHECK(tape_size() == before);
}

TEST_CASE("ops: an in-place write between forward and backward is reported") {
  Tensor x = leaf({2}, {1, 2});
  const Tensor y = sum(exp(x));
  x.set({0}, 5.0f);
  CHECK_THROWS_AS(backward(y), Error);
}

TEST_CASE("ops: user errors carry exact messages and record nothing") {
  Tensor a = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor v4 = leaf({4}, {1, 2, 3, 4});

  // broadcasting
  CHECK_REJECTS(mul(a, v4), "mul: shapes [2,3] and [4] cannot be broadcast (trailing dims must match or be 1)");
  CHECK_REJECTS(add(v4, a), "add: shapes [4] and [2,3] cannot be broadcast (trailing dims must match or be 1)");
  CHECK_REJECTS(sub(a, Tensor::zeros({3, 3})),
                "sub: shapes [2,3] and [3,3] cannot be broadcast (trailing dims must match or be 1)");
  CHECK_REJECTS(div(Tensor::ones({3, 2}), Tensor::ones({2, 1, 4})),
                "div: shapes [3,2] and [2,1,4] cannot be broadcast (trailing dims must match or be 1)");

  // matmul
  CHECK_REJECTS(matmul(a, Tensor::zeros({4, 5})), "matmul: [2,3] x [4,5]: inner dimensions 3 and 4 differ");
  CHECK_REJECTS(matmul(a, Tensor::zeros({4, 5}), true), "matmul: [2,3]^T x [4,5]: inner dimensions 2 and 4 differ");
  CHECK_REJECTS(matmul(a, a, false, false), "matmul: [2,3] x [2,3]: inner dimensions 3 and 2 differ");
  CHECK_REJECTS(matmul(a, a, true, true), "matmul: [2,3]^T x [2,3]^T: inner dimensions 2 and 3 differ");
  CHECK_REJECTS(matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({5, 5})),
                "matmul: [2,3,4] x [5,5]: inner dimensions 4 and 5 differ");
  CHECK_REJECTS(matmul(v4, a),
                "matmul: expected operands of rank >= 2 ([..., M, K] and [..., K, N]), got [4] and [2,3]");

  // reductions and dims
  CHECK_REJECTS(sum(a, 2), "sum: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(mean(a, -3, true), "mean: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(log_softmax(a, 2), "log_softmax: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");

  // shape
  CHECK_REJECTS(reshape(a, {4, 2}), "reshape: cannot reshape [2,3] (6 elements) into [4,2] (8 elements)");
  CHECK_REJECTS(reshape(a, {4, -1}), "reshape: cannot reshape [2,3] (6 elements) into [4,-1]");
  CHECK_REJECTS(reshape(a, {-1, -1}), "reshape: only one dim may be -1, but [-1,-1] has -1 at dims 0 and 1");
  CHECK_REJECTS(reshape(a, {-2, 3}), "reshape: invalid size -2 at dim 0 of [-2,3] (sizes must be >= 0, or -1 once)");
  CHECK_REJECTS(transpose(Tensor::zeros({2, 3, 4})), "transpose: expected a 2-D tensor, got [2,3,4]");

  // losses
  Tensor logits = leaf({3, 5}, std::vector<float>(15, 0.0f));
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{1, 2, 7}),
                "cross_entropy: target 7 at position 2 is out of range for 5 classes (valid: [0, 5))");
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{-1, 2, 3}),
                "cross_entropy: target -1 at position 0 is out of range for 5 classes (valid: [0, 5))");
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{1, 2}),
                "cross_entropy: expected targets of shape [3] (one per row of logits [3,5]), got [2]");
  CHECK_REJECTS(cross_entropy(logits, IndexTensor({3, 1}, {0, 1, 2})),
                "cross_entropy: expected targets of shape [3] (one per row of logits [3,5]), got [3,1]");
  CHECK_REJECTS(cross_entropy(v4, IndexTensor{1}), "cross_entropy: expected logits of shape [B,C], got [4]");
  CHECK_REJECTS(mse_loss(a, Tensor::zeros({3, 2})), "mse_loss: input [2,3] and target [3,2] must have the same shape");
  CHECK_REJECTS(binary_cross_entropy_with_logits(a, Tensor::zeros({6})),
                "binary_cross_entropy_with_logits: input [2,3] and target [6] must have the same shape");
  CHECK_REJECTS(binary_cross_entropy_with_logits(Tensor::zeros({2}), leaf({2}, {0, 1})),
                "binary_cross_entropy_with_logits: target requires grad, but its gradient is not implemented; pass "
                "target.detach()");
}
