// Tests of the softmax family and the losses of issue 13 (ops/softmax.cpp, ops/loss.cpp):
// softmax, log_sigmoid, cross_entropy with CrossEntropyOptions, nll_loss, cosine_similarity.
// A gradcheck table over every op and every option combination, hand-computed forward values
// and gradients, the all-ignored batch (NaN under Mean, which the parity fixtures cannot hold),
// and every user error with its exact message and an untouched tape. PyTorch parity:
// tests/test_parity_loss.cpp.
#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include "op_table.h"
#include <hitch/ops/exp_kernel.h>
#include <hitch/ops/ops.h>

using namespace hitch;
using namespace op_test;

namespace {

// Class weights [C], distinct and not 1, never requiring grad.
Tensor weights_for(const Tensor& logits) {
  std::vector<float> w;
  for (std::int64_t c = 0; c < logits.size(1); ++c) w.push_back(0.5f + 0.75f * static_cast<float>(c % 3));
  return Tensor({logits.size(1)}, w);
}

const char* reduction_name(Reduction r) {
  return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum";
}

std::vector<OpCase> loss_table() {
  const auto shapes = each({{3}, {2, 3}, {4, 1, 3}});
  std::vector<OpCase> t = {
      {"softmax", each({{3}, {2, 3}, {4, 1, 3}, {1}}), [](const Inputs& x) { return softmax(x[0]); }},
      {"softmax(dim=0)", shapes, [](const Inputs& x) { return softmax(x[0], 0); }},
      {"softmax(dim=1)", each({{2, 3}, {4, 2, 3}}), [](const Inputs& x) { return softmax(x[0], 1); }},
      {"softmax(dim=-2)", each({{4, 2, 3}, {4, 1, 3}}), [](const Inputs& x) { return softmax(x[0], -2); }},
      {"softmax(x) * x", each({{2, 3}}), [](const Inputs& x) { return softmax(x[0]) * x[0]; }},
      {"log_sigmoid", each({{}, {3}, {2, 3}, {4, 1, 3}}), [](const Inputs& x) { return log_sigmoid(x[0]); }},
      {"cross_entropy(2 args)", each({{4, 5}, {1, 3}, {3, 1}}),
       [](const Inputs& x) { return cross_entropy(x[0], targets_for(x[0])); }},
      // cosine_similarity: same shapes, every broadcasting form, dims (negative, broadcast ones)
      {"cosine_similarity", {{{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{1, 3}, {4, 3}}, {{4, 3}, {4, 1}}},
       [](const Inputs& x) { return cosine_similarity(x[0], x[1]); }},
      {"cosine_similarity(dim=0)", {{{3}, {3}}, {{2, 3}, {2, 3}}, {{4, 1, 3}, {2, 3}}},
       [](const Inputs& x) { return cosine_similarity(x[0], x[1], 0); }},
      {"cosine_similarity(dim=-1)", {{{2, 3}, {2, 3}}, {{4, 1, 3}, {2, 3}}, {{3}, {2, 3}}},
       [](const Inputs& x) { return cosine_similarity(x[0], x[1], -1); }},
      {"cosine_similarity(dim=-2)", {{{4, 1, 3}, {2, 3}}, {{2, 1}, {2, 3}}},
       [](const Inputs& x) { return cosine_similarity(x[0], x[1], -2); }},
      {"cosine_similarity(eps=0.5)", {{{2, 3}, {2, 3}}}, [](const Inputs& x) { return cosine_similarity(x[0], x[1], 1, 0.5f); }},
      {"cosine_similarity(x, x)", each({{2, 3}}), [](const Inputs& x) { return cosine_similarity(x[0], x[0]); }},
  };
  // Every option combination of cross_entropy and nll_loss: weight or not, each reduction, no
  // ignored target / one ignored by the default -100 / one ignored by an in-range ignore_index
  // (class 2: the targets equal to 2 are ignored, the others used), and for cross_entropy each
  // label smoothing in {0, 0.3, 1}.
  for (const bool weighted : {false, true})
    for (const Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum})
      for (const int ignore : {0, 1, 2}) {
        const std::int64_t ignore_index = ignore == 2 ? 2 : -100;
        const std::string opts = fmt::format("weight={} reduction={} ignore={}", weighted, reduction_name(red),
                                             ignore == 0 ? "none" : ignore == 1 ? "-100" : "class 2");
        for (const float s : {0.0f, 0.3f, 1.0f})
          t.push_back({fmt::format("cross_entropy({} smoothing={})", opts, s), each({{4, 5}, {1, 3}, {3, 1}}),
                       [=](const Inputs& x) {
                         const CrossEntropyOptions o{.weight = weighted ? weights_for(x[0]) : Tensor(),
                                                     .ignore_index = ignore_index,
                                                     .reduction = red,
                                                     .label_smoothing = s};
                         return cross_entropy(x[0], targets_for(x[0], ignore == 1), o);
                       }});
        t.push_back({fmt::format("nll_loss({})", opts), each({{4, 5}, {1, 3}, {3, 1}}), [=](const Inputs& x) {
                       const CrossEntropyOptions o{.weight = weighted ? weights_for(x[0]) : Tensor(),
                                                   .ignore_index = ignore_index,
                                                   .reduction = red};
                       return nll_loss(x[0], targets_for(x[0], ignore == 1), o);
                     }});
      }
  return t;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

}  // namespace

TEST_CASE("loss ops: gradcheck table (every op, every option combination)") {
  const int runs = run_table(loss_table(), 42);
  // 13 fixed entries with 33 checks; 54 cross_entropy (2 weight x 3 reduction x 3 ignore x 3
  // smoothing) and 18 nll_loss combinations, each over 3 shapes.
  CHECK(runs == 33 + (54 + 18) * 3);
}

TEST_CASE("loss ops: softmax and log_sigmoid values and gradients") {
  const float e1 = std::exp(1.0f), e2 = std::exp(2.0f), e3 = std::exp(3.0f);
  check_values(softmax(Tensor({3}, {1, 2, 3})), {3}, {e1 / (e1 + e2 + e3), e2 / (e1 + e2 + e3), e3 / (e1 + e2 + e3)});
  check_values(softmax(Tensor({2}, {1000, 0})), {2}, {1, 0});  // stable: no inf / inf
  check_values(softmax(Tensor({2, 2}, {0, 5, 0, 5}), 0), {2, 2}, {0.5f, 0.5f, 0.5f, 0.5f});
  check_values(softmax(Tensor({1, 1, 2}, {0, 0}), -1), {1, 1, 2}, {0.5f, 0.5f});
  CHECK(softmax(Tensor::zeros({0, 3}), 1).shape() == Shape{0, 3});
  CHECK(softmax(Tensor::zeros({2, 0}), 1).shape() == Shape{2, 0});
  // y = [1/2, 1/2], g = [1, 0]: dx = y (g - y.g) = [1/4, -1/4].
  Tensor x = leaf({2}, {0, 0});
  backward(softmax(x), Tensor({2}, {1, 0}));
  check_values(x.grad(), {2}, {0.25f, -0.25f});

  check_values(log_sigmoid(Tensor({3}, {0, -100, -1000})), {3}, {-std::log(2.0f), -100, -1000});
  check_values(log_sigmoid(Tensor({2}, {1000, 20})), {2}, {0, -std::exp(-20.0f)}, 1e-5f);
  Tensor z = leaf({3}, {0, -1000, 1000});
  backward(log_sigmoid(z), Tensor({3}, {1, 1, 1}));
  check_values(z.grad(), {3}, {0.5f, 1, 0});  // sigmoid(-x)
}

TEST_CASE("loss ops: cross_entropy options, hand-computed") {
  const float ln43 = std::log(4.0f / 3.0f), ln2 = std::log(2.0f), ln4 = std::log(4.0f);
  // Row 0: logits [0, ln 3] (p = [1/4, 3/4]), target 1; row 1: [0, 0], target 0.
  const Tensor logits({2, 2}, {0, std::log(3.0f), 0, 0});
  const IndexTensor t{1, 0};
  check_values(cross_entropy(logits, t, {.reduction = Reduction::None}), {2}, {ln43, ln2});
  check_values(cross_entropy(logits, t, {.reduction = Reduction::Sum}), {}, {ln43 + ln2});
  check_values(cross_entropy(logits, t), {}, {0.5f * (ln43 + ln2)});

  // Weights [2, 1]: rows weighted by w_t = 1 and 2; Mean divides by 1 + 2.
  const Tensor w({2}, {2, 1});
  check_values(cross_entropy(logits, t, {.weight = w, .reduction = Reduction::None}), {2}, {ln43, 2 * ln2});
  check_values(cross_entropy(logits, t, {.weight = w}), {}, {(ln43 + 2 * ln2) / 3});

  // Smoothing s = 0.5 on row 0: (1 - s) ln(4/3) + s/2 (ln 4 + ln(4/3)); with weights the
  // smoothing term is sum_c w_c (-lp_c) = 2 ln 4 + ln(4/3).
  const Tensor row0({1, 2}, {0, std::log(3.0f)});
  check_values(cross_entropy(row0, IndexTensor{1}, {.label_smoothing = 0.5f}), {}, {0.5f * ln43 + 0.25f * (ln4 + ln43)});
  check_values(cross_entropy(row0, IndexTensor{1}, {.weight = w, .reduction = Reduction::Sum, .label_smoothing = 0.5f}),
               {}, {0.5f * ln43 + 0.25f * (2 * ln4 + ln43)});
  // Mean with weights and smoothing: both terms divide by w_t = 1 (PyTorch's rule).
  check_values(cross_entropy(row0, IndexTensor{0}, {.weight = w, .label_smoothing = 0.5f}), {},
               {(0.5f * 2 * ln4 + 0.25f * (2 * ln4 + ln43)) / 2});
  // Uniform logits: every smoothing gives ln C.
  for (const float s : {0.0f, 0.1f, 1.0f})
    check_values(cross_entropy(Tensor::zeros({1, 4}), IndexTensor{2}, {.label_smoothing = s}), {}, {ln4});

  // Ignored rows: 0 under None, left out of Sum and of Mean's divisor; ignore_index may be a class.
  const IndexTensor ti{1, -100};
  check_values(cross_entropy(logits, ti, {.reduction = Reduction::None}), {2}, {ln43, 0});
  check_values(cross_entropy(logits, ti), {}, {ln43});
  check_values(cross_entropy(logits, t, {.ignore_index = 1}), {}, {ln2});
  check_values(cross_entropy(logits, t, {.weight = w, .ignore_index = 1}), {}, {ln2});

  // Gradient, Sum with weights and smoothing s = 0.5, row 0 (t = 1, p = [1/4, 3/4], W = 3):
  // (1 - s) w_t (p - onehot) + s/C (W p - w) = 0.5 [1/4, -1/4] + 0.25 ([3/4, 9/4] - [2, 1]).
  Tensor l = leaf({1, 2}, {0, std::log(3.0f)});
  backward(cross_entropy(l, IndexTensor{1}, {.weight = w, .reduction = Reduction::Sum, .label_smoothing = 0.5f}));
  check_values(l.grad(), {1, 2}, {0.125f + 0.25f * (0.75f - 2), -0.125f + 0.25f * (2.25f - 1)});
  // None: each row's gradient scaled by its grad_output, the ignored row's is 0.
  Tensor l2 = leaf({2, 2}, {0, std::log(3.0f), 0, 0});
  backward(cross_entropy(l2, ti, {.reduction = Reduction::None}), Tensor({2}, {2, 5}));
  check_values(l2.grad(), {2, 2}, {0.5f, -0.5f, 0, 0});
}

TEST_CASE("loss ops: the 2-argument cross_entropy is bitwise the default options") {
  Generator gen(7);
  for (const Shape& shape : {Shape{5, 7}, Shape{1, 3}, Shape{3, 1}, Shape{16, 1000}}) {
    Tensor a = Tensor::randn(shape, 0.0f, 4.0f, gen);
    Tensor b = a.clone();
    a.requires_grad_();
    b.requires_grad_();
    const IndexTensor t = targets_for(a);
    const Tensor la = cross_entropy(a, t), lb = cross_entropy(b, t, CrossEntropyOptions{});
    CHECK(bitwise_equal(la, lb));
    // Mean == Sum / B and == mean of None up to float rounding.
    const Tensor none = cross_entropy(a.detach(), t, {.reduction = Reduction::None});
    double s = 0.0;
    for (const float v : none.values()) s += v;
    CHECK(std::abs(la.item() - s / static_cast<double>(shape[0])) <= 1e-5 * (1.0 + std::abs(s)));
    backward(la);
    backward(lb);
    CHECK(bitwise_equal(a.grad(), b.grad()));
  }
}

TEST_CASE("loss ops: every target ignored gives NaN under Mean (0 / 0 as PyTorch) and zero gradients") {
  const IndexTensor all{-100, -100, -100};
  for (const bool weighted : {false, true})
    for (const float s : {0.0f, 0.2f}) {
      CAPTURE(weighted);
      CAPTURE(s);
      Tensor x = leaf({3, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
      const Tensor w = weighted ? Tensor({4}, {1, 2, 3, 4}) : Tensor();
      const Tensor mean = cross_entropy(x, all, {.weight = w, .label_smoothing = s});
      CHECK(std::isnan(mean.item()));
      backward(mean);
      check_values(x.grad(), {3, 4}, std::vector<float>(12, 0.0f));
      check_values(cross_entropy(x, all, {.weight = w, .reduction = Reduction::Sum, .label_smoothing = s}), {}, {0});
      check_values(cross_entropy(x, all, {.weight = w, .reduction = Reduction::None, .label_smoothing = s}), {3},
                   {0, 0, 0});
    }
  Tensor lp = leaf({3, 2}, {-1, -2, -3, -4, -5, -6});
  const Tensor m = nll_loss(lp, all);
  CHECK(std::isnan(m.item()));
  backward(m);
  check_values(lp.grad(), {3, 2}, std::vector<float>(6, 0.0f));
  // An empty batch: Mean NaN, Sum 0, None [0].
  CHECK(std::isnan(cross_entropy(Tensor::zeros({0, 3}), IndexTensor({0}, {})).item()));
  check_values(cross_entropy(Tensor::zeros({0, 3}), IndexTensor({0}, {}), {.reduction = Reduction::Sum}), {}, {0});
  CHECK(cross_entropy(Tensor::zeros({0, 3}), IndexTensor({0}, {}), {.reduction = Reduction::None}).shape() == Shape{0});
}

TEST_CASE("loss ops: nll_loss values and gradient") {
  // losses w_t * -lp[b, t]: [2 * 2, 0.5 * 3]; Mean divides by 2 + 0.5.
  Tensor lp = leaf({2, 2}, {-1, -2, -3, -4});
  const Tensor w({2}, {0.5f, 2});
  const IndexTensor t{1, 0};
  check_values(nll_loss(lp, t, {.weight = w, .reduction = Reduction::None}), {2}, {4, 1.5f});
  check_values(nll_loss(lp, t, {.weight = w, .reduction = Reduction::Sum}), {}, {5.5f});
  const Tensor m = nll_loss(lp, t, {.weight = w});
  check_values(m, {}, {2.2f});
  backward(m);
  check_values(lp.grad(), {2, 2}, {0, -0.8f, -0.2f, 0});
  // nll_loss(log_softmax(x)) == cross_entropy(x) for every option but smoothing.
  const Tensor x({3, 4}, {0.5f, -1, 2, 0, 1, 1, -2, 3, 0, 0, 0, 1});
  const IndexTensor tx{3, -100, 0};
  for (const Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    const CrossEntropyOptions o{.weight = Tensor({4}, {1, 2, 0.5f, 3}), .reduction = r};
    const Tensor a = nll_loss(log_softmax(x, 1), tx, o), b = cross_entropy(x, tx, o);
    check_values(a, b.shape(), b.to_vector(), 1e-6f);
  }
}

TEST_CASE("loss ops: cosine_similarity values, broadcasting and PyTorch's eps rule") {
  check_values(cosine_similarity(Tensor({1, 2}, {1, 0}), Tensor({1, 2}, {1, 1})), {1}, {1.0f / std::sqrt(2.0f)});
  // [2] against [3,2] along the last dim: [1, -1, 0].
  check_values(cosine_similarity(Tensor({2}, {3, 4}), Tensor({3, 2}, {3, 4, -3, -4, 4, -3}), -1), {3}, {1, -1, 0});
  // Broadcast along the reduced dim: [2,1] is stretched to [2,3] first, then dim 0 -> [3].
  check_values(cosine_similarity(Tensor({2, 1}, {1, 0}), Tensor({2, 3}, {1, 0, 2, 0, 1, 2}), 0), {3},
               {1, 0, 1.0f / std::sqrt(2.0f)});
  CHECK(cosine_similarity(Tensor::zeros({4, 1, 3}), Tensor::zeros({2, 3}), -2).shape() == Shape{4, 3});
  // Each norm is clamped to eps, not their product: norms 1e-5 and eps 1e-8 give the cosine.
  check_values(cosine_similarity(Tensor({2}, {1e-5f, 0}), Tensor({2}, {1e-5f, 1e-5f}), 0), {}, {1.0f / std::sqrt(2.0f)},
               1e-5f);
  // A zero vector gives 0; its gradient is x2 / (eps ||x2||) (PyTorch 1.13 gives [1.2, 1.6] here).
  Tensor a = leaf({2}, {0, 0});
  Tensor b = leaf({2}, {3, 4});
  const Tensor zero = cosine_similarity(a, b, 0, 0.5f);
  check_values(zero, {}, {0});
  backward(zero);
  check_values(a.grad(), {2}, {1.2f, 1.6f});
  check_values(b.grad(), {2}, {0, 0});
  // Inside the clamp the gradient is PyTorch's autograd's, not the clamped function's derivative:
  // x1 = [0.1, 0], x2 = [1, 0], eps 0.5: out = 0.2, dx1 = x2/(c1 c2) - out x1/c1^2 = [1.92, 0]
  // (torch 1.13 prints tensor([1.9200, 0.0000])).
  Tensor c = leaf({2}, {0.1f, 0});
  Tensor d = leaf({2}, {1, 0});
  const Tensor small = cosine_similarity(c, d, 0, 0.5f);
  check_values(small, {}, {0.2f});
  backward(small);
  check_values(c.grad(), {2}, {1.92f, 0}, 1e-5f);
  check_values(d.grad(), {2}, {0, 0}, 1e-5f);
  // An empty reduced dim gives 0 (an empty sum).
  check_values(cosine_similarity(Tensor::zeros({2, 0}), Tensor::zeros({2, 0})), {2}, {0, 0});
}

TEST_CASE("loss ops: user errors carry exact messages and record nothing") {
  Tensor logits = leaf({3, 5}, std::vector<float>(15, 0.0f));
  const Tensor before = logits.clone();
  const IndexTensor t{1, 2, 3};
  // ranks and shapes
  CHECK_REJECTS(cross_entropy(Tensor::zeros({4}), IndexTensor{1}, {}), "cross_entropy: expected logits of shape [B,C], got [4]");
  CHECK_REJECTS(cross_entropy(Tensor::zeros({2, 3, 4}), IndexTensor{1, 1}, {}),
                "cross_entropy: expected logits of shape [B,C], got [2,3,4]");
  CHECK_REJECTS(nll_loss(Tensor::zeros({4}), IndexTensor{1}), "nll_loss: expected log_probs of shape [B,C], got [4]");
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{1, 2}, {.reduction = Reduction::Sum}),
                "cross_entropy: expected targets of shape [3] (one per row of logits [3,5]), got [2]");
  CHECK_REJECTS(nll_loss(logits, IndexTensor({3, 1}, {0, 1, 2})),
                "nll_loss: expected targets of shape [3] (one per row of log_probs [3,5]), got [3,1]");
  // weight
  CHECK_REJECTS(cross_entropy(logits, t, {.weight = Tensor::ones({4})}),
                "cross_entropy: weight must have shape [5] (one per class of logits [3,5]), got [4]");
  CHECK_REJECTS(nll_loss(logits, t, {.weight = Tensor::ones({5, 1})}),
                "nll_loss: weight must have shape [5] (one per class of log_probs [3,5]), got [5,1]");
  CHECK_REJECTS(cross_entropy(logits, t, {.weight = leaf({5}, {1, 1, 1, 1, 1})}),
                "cross_entropy: weight requires grad, but its gradient is not implemented; pass weight.detach()");
  // label_smoothing
  CHECK_REJECTS(cross_entropy(logits, t, {.label_smoothing = 1.5f}), "cross_entropy: label_smoothing must be in [0, 1], got 1.5");
  CHECK_REJECTS(cross_entropy(logits, t, {.label_smoothing = -0.1f}), "cross_entropy: label_smoothing must be in [0, 1], got -0.1");
  CHECK_REJECTS(cross_entropy(logits, t, {.label_smoothing = std::nanf("")}),
                "cross_entropy: label_smoothing must be in [0, 1], got nan");
  CHECK_REJECTS(nll_loss(logits, t, {.label_smoothing = 0.1f}),
                "nll_loss: label_smoothing must be 0 (smoothing is an option of cross_entropy), got 0.1");
  // reduction outside the enum
  CHECK_REJECTS(cross_entropy(logits, t, {.reduction = static_cast<Reduction>(7)}),
                "cross_entropy: reduction = 7 is not a Reduction (valid: 0 None, 1 Mean, 2 Sum)");
  // targets out of range, naming position, value and range; ignore_index handling
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{1, 2, 7}, {.ignore_index = 2}),
                "cross_entropy: target 7 at position 2 is out of range for 5 classes (valid: [0, 5))");
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{-1, 2, 3}, {.ignore_index = -2}),
                "cross_entropy: target -1 at position 0 is out of range for 5 classes (valid: [0, 5))");
  // -100 is ignored only while it is the ignore_index
  CHECK_REJECTS(cross_entropy(logits, IndexTensor{1, -100, 3}, {.ignore_index = 0}),
                "cross_entropy: target -100 at position 1 is out of range for 5 classes (valid: [0, 5))");
  CHECK_REJECTS(nll_loss(logits, IndexTensor{5, 0, 0}),
                "nll_loss: target 5 at position 0 is out of range for 5 classes (valid: [0, 5))");
  // dims
  CHECK_REJECTS(softmax(logits, 2), "softmax: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(softmax(logits, -3), "softmax: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(softmax(Tensor::scalar(1)), "softmax: dim -1 given for a tensor of rank 0, which has no dims");
  // cosine_similarity: shapes, dim of the broadcast shape, eps
  CHECK_REJECTS(cosine_similarity(logits, Tensor::zeros({3, 4})),
                "cosine_similarity: x1 [3,5] and x2 [3,4] cannot be broadcast: dim -1 has sizes 5 and 4 (each pair must "
                "be equal or one of them 1)");
  CHECK_REJECTS(cosine_similarity(Tensor::zeros({2, 3, 3}), Tensor::zeros({4, 1})),
                "cosine_similarity: x1 [2,3,3] and x2 [4,1] cannot be broadcast: dim -2 has sizes 3 and 4 (each pair "
                "must be equal or one of them 1)");
  CHECK_REJECTS(cosine_similarity(logits, Tensor::zeros({5}), 2),
                "cosine_similarity: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(cosine_similarity(Tensor::zeros({5}), Tensor::zeros({1, 5}), -3),
                "cosine_similarity: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(cosine_similarity(logits, logits, 1, -1e-8f), "cosine_similarity: eps must be finite and >= 0, got -1e-08");
  CHECK_REJECTS(cosine_similarity(logits, logits, 1, std::nanf("")), "cosine_similarity: eps must be finite and >= 0, got nan");
  CHECK_REJECTS(cosine_similarity(logits, logits, 1, std::numeric_limits<float>::infinity()), "cosine_similarity: eps must be finite and >= 0, got inf");
  // inputs untouched, no gradient
  CHECK(bitwise_equal(logits, before));
  CHECK_FALSE(logits.grad().defined());
}

TEST_CASE("loss ops: the vectorised exp of the softmax family is within 1e-7 of exp everywhere on [-87.3, 0]") {
  // Every 97th float between -87.33654 and 0 (about 11 million values), against std::exp in
  // double; then the edges of the domain.
  double worst = 0.0;
  float worst_at = 0.0f;
  for (std::uint32_t bits = 0x80000000u; bits <= 0xC2AEAC4Fu; bits += 97) {
    const auto x = std::bit_cast<float>(bits);
    const double want = std::exp(static_cast<double>(x));
    if (want < static_cast<double>(std::numeric_limits<float>::min())) continue;  // subnormal results
    const double rel = std::abs(static_cast<double>(detail::exp_nonpositive(x)) - want) / want;
    if (rel > worst) worst = rel, worst_at = x;
  }
  CHECK_MESSAGE(worst < 1e-7, "relative error ", worst, " at ", worst_at);
  CHECK(detail::exp_nonpositive(0.0f) == 1.0f);
  CHECK(detail::exp_nonpositive(-0.0f) == 1.0f);
  CHECK(detail::exp_nonpositive(-87.5f) == 0.0f);
  CHECK(detail::exp_nonpositive(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(detail::exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(detail::exp_nonpositive(-std::numeric_limits<float>::quiet_NaN())));
}
