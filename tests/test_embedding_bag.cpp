// embedding_bag: exact values for every mode, padding, empty bags, max ties and NaN,
// per_sample_weights (sum, weighted mean, sqrtn) and their gradient, include_last_offset, the
// 2-D form, scale_grad_by_freq (intended rule), sparse layout and max_norm. The examples are
// REFERENCE §2's, where it has them.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "embedding_test_util.h"
#include <hitch/hitch.h>

using namespace hitch;
using emb_test::leaf;

namespace {
// REFERENCE 2.5's table: rows [1,-1], [2,5], [3,0], [-4,4], [10,-10].
Tensor table5(bool requires_grad = true) { return leaf({5, 2}, {1, -1, 2, 5, 3, 0, -4, 4, 10, -10}, requires_grad); }
const IndexTensor kInput{0, 1, 2, 3, 4, 4};
const IndexTensor kOffsets{0, 3, 3, 4};  // bags [0,1,2], [], [3], [4,4]
Tensor grad4() { return Tensor({4, 2}, {1, 10, 100, 1000, 2, 20, 3, 30}); }
std::vector<float> scaled(std::vector<float> v, double s) {
  for (auto& x : v) x = static_cast<float>(x * s);
  return v;
}
}  // namespace

TEST_CASE("embedding_bag: sum, mean, max, sqrtn with an empty bag (REFERENCE 2.5 example)") {
  SUBCASE("sum") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(kInput, kOffsets, w, {.mode = BagMode::Sum});
    CHECK(out.to_vector() == std::vector<float>{6, 4, 0, 0, -4, 4, 20, -20});
    backward(out, grad4());
    CHECK(w.grad().to_vector() == std::vector<float>{1, 10, 1, 10, 1, 10, 2, 20, 6, 60});
  }
  SUBCASE("mean") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(kInput, kOffsets, w, {.mode = BagMode::Mean});
    EMB_CHECK_CLOSE(out, Tensor({4, 2}, {2, 4.0f / 3, 0, 0, -4, 4, 10, -10}));
    backward(out, grad4());
    const float t = 1.0f / 3;
    EMB_CHECK_CLOSE(w.grad(), Tensor({5, 2}, {t, 10 * t, t, 10 * t, t, 10 * t, 2, 20, 3, 30}));
  }
  SUBCASE("max: one row per feature; a row twice in a bag gets g once") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(kInput, kOffsets, w, {.mode = BagMode::Max});
    CHECK(out.to_vector() == std::vector<float>{3, 5, 0, 0, -4, 4, 10, -10});
    backward(out, grad4());
    CHECK(w.grad().to_vector() == std::vector<float>{0, 0, 0, 10, 1, 0, 2, 20, 3, 30});
  }
  SUBCASE("sqrtn: sum / sqrt(n)") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(kInput, kOffsets, w, {.mode = BagMode::Sqrtn});
    const double r3 = 1 / std::sqrt(3.0), r2 = 1 / std::sqrt(2.0);
    EMB_CHECK_CLOSE(out, Tensor({4, 2}, {float(6 * r3), float(4 * r3), 0, 0, -4, 4, float(20 * r2), float(-20 * r2)}));
    backward(out, grad4());
    EMB_CHECK_CLOSE(w.grad(), Tensor({5, 2}, {float(r3), float(10 * r3), float(r3), float(10 * r3), float(r3),
                                              float(10 * r3), 2, 20, float(6 * r2), float(60 * r2)}));
  }
}

TEST_CASE("embedding_bag: padding is excluded from sum, mean count and max candidates") {
  // REFERENCE 2.4: x = [0,1,2 | 1,1 | 2,3], pad = 1; the middle bag is all padding.
  const IndexTensor x{0, 1, 2, 1, 1, 2, 3};
  const IndexTensor offsets{0, 3, 5};
  const Tensor g = Tensor::ones({3, 2});
  SUBCASE("sum") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(x, offsets, w, {.mode = BagMode::Sum, .padding_idx = 1});
    CHECK(out.to_vector() == std::vector<float>{4, -1, 0, 0, -1, 4});
    backward(out, g);
    CHECK(w.grad().to_vector() == std::vector<float>{1, 1, 0, 0, 2, 2, 1, 1, 0, 0});
  }
  SUBCASE("mean") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(x, offsets, w, {.mode = BagMode::Mean, .padding_idx = 1});
    CHECK(out.to_vector() == std::vector<float>{2, -0.5f, 0, 0, -0.5f, 2});
    backward(out, g);
    CHECK(w.grad().to_vector() == std::vector<float>{0.5f, 0.5f, 0, 0, 1, 1, 0.5f, 0.5f, 0, 0});
  }
  SUBCASE("max") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(x, offsets, w, {.mode = BagMode::Max, .padding_idx = 1});
    CHECK(out.to_vector() == std::vector<float>{3, 0, 0, 0, 3, 4});
    backward(out, g);
    CHECK(w.grad().to_vector() == std::vector<float>{0, 0, 0, 0, 2, 1, 0, 1, 0, 0});
  }
  SUBCASE("sqrtn") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(x, offsets, w, {.mode = BagMode::Sqrtn, .padding_idx = 1});
    const auto r2 = static_cast<float>(1 / std::sqrt(2.0));
    EMB_CHECK_CLOSE(out, Tensor({3, 2}, {4 * r2, -r2, 0, 0, -r2, 4 * r2}));
  }
}

TEST_CASE("embedding_bag: max ties go to the earliest position, per feature") {
  const Tensor w = leaf({3, 2}, {1, 5, 2, 5, 2, 1});  // rows 0,1 tie in feature 1; rows 1,2 in feature 0
  const Tensor a = embedding_bag(IndexTensor{2, 0, 1}, IndexTensor{0}, w, {.mode = BagMode::Max});
  backward(a, Tensor({1, 2}, {1, 10}));
  CHECK(w.grad().to_vector() == std::vector<float>{0, 10, 0, 0, 1, 0});
  w.impl().grad.reset();
  const Tensor b = embedding_bag(IndexTensor{1, 2, 0}, IndexTensor{0}, w, {.mode = BagMode::Max});
  backward(b, Tensor({1, 2}, {1, 10}));
  CHECK(w.grad().to_vector() == std::vector<float>{0, 0, 1, 10, 0, 0});
}

TEST_CASE("embedding_bag: max mode propagates NaN from any position (documented divergence)") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const IndexTensor& bag : {IndexTensor{1, 0}, IndexTensor{0, 1}}) {
    const Tensor w = leaf({2, 2}, {nan, 1, 2, 3});
    const Tensor out = embedding_bag(bag, IndexTensor{0}, w, {.mode = BagMode::Max});
    CHECK(std::isnan(out.at({0, 0})));
    CHECK(out.at({0, 1}) == 3.0f);
    backward(out, Tensor({1, 2}, {1, 10}));
    CHECK(w.grad().to_vector() == std::vector<float>{1, 0, 0, 10});
  }
}

TEST_CASE("embedding_bag: per_sample_weights in mode sum, and its gradient") {
  // REFERENCE 2.6: x = [0,1,2], g = ones -> dpsw = [0, 7, 3].
  const Tensor w = table5();
  const Tensor psw = leaf({3}, {1, 2, 3});
  const Tensor out = embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, w, {.mode = BagMode::Sum}, psw);
  CHECK(out.to_vector() == std::vector<float>{14, 9});
  backward(out, Tensor::ones({1, 2}));
  CHECK(psw.grad().to_vector() == std::vector<float>{0, 7, 3});
  CHECK(w.grad().to_vector() == std::vector<float>{1, 1, 2, 2, 3, 3, 0, 0, 0, 0});

  SUBCASE("padding positions: no effect and zero psw gradient; an empty bag: nothing") {
    const Tensor w2 = table5();
    const Tensor p2 = leaf({4}, {1, 2, 3, 4});
    const Tensor o2 =
        embedding_bag(IndexTensor{0, 1, 2, 3}, IndexTensor{0, 3, 3}, w2, {.mode = BagMode::Sum, .padding_idx = 1}, p2);
    CHECK(o2.to_vector() == std::vector<float>{10, -1, 0, 0, -16, 16});
    backward(o2, Tensor({3, 2}, {1, 1, 5, 5, 1, 2}));
    CHECK(p2.grad().to_vector() == std::vector<float>{0, 0, 3, 4});
  }
  SUBCASE("the psw gradient works with a frozen weight (PyTorch 1.13: INTERNAL ASSERT)") {
    const Tensor frozen = table5(false);
    const Tensor p3 = leaf({3}, {1, 2, 3});
    backward(embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, frozen, {.mode = BagMode::Sum}, p3),
             Tensor::ones({1, 2}));
    CHECK(p3.grad().to_vector() == std::vector<float>{0, 7, 3});
    CHECK_FALSE(frozen.impl().grad);
  }
}

TEST_CASE("embedding_bag: per_sample_weights with mean is a weighted mean (beyond PyTorch)") {
  const Tensor w = table5();
  const Tensor psw = leaf({3}, {1, 2, 3});
  const Tensor out = embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, w, {.mode = BagMode::Mean}, psw);
  EMB_CHECK_CLOSE(out, Tensor({1, 2}, {14.0f / 6, 9.0f / 6}));
  backward(out, Tensor::ones({1, 2}));
  // dpsw_i = (<g, W_i> - <g, out>) / S with <g, W_i> = [0, 7, 3], <g, out> = 23/6, S = 6.
  const double go = 23.0 / 6;
  EMB_CHECK_CLOSE(psw.grad(), Tensor({3}, {float((0 - go) / 6), float((7 - go) / 6), float((3 - go) / 6)}));
  EMB_CHECK_CLOSE(w.grad(), Tensor({5, 2}, scaled({1, 1, 2, 2, 3, 3, 0, 0, 0, 0}, 1.0 / 6)));

  SUBCASE("weights summing to 0: a zero row and no gradient") {
    const Tensor w2 = table5();
    const Tensor p2 = leaf({3}, {1, -1, 0});
    const Tensor o2 = embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, w2, {.mode = BagMode::Mean}, p2);
    CHECK(o2.to_vector() == std::vector<float>{0, 0});
    backward(o2, Tensor::ones({1, 2}));
    CHECK(w2.grad().to_vector() == std::vector<float>(10, 0.0f));
    CHECK(p2.grad().to_vector() == std::vector<float>{0, 0, 0});
  }
}

TEST_CASE("embedding_bag: sqrtn with per_sample_weights divides by sqrt(sum w^2)") {
  const Tensor w = table5();
  const Tensor psw = leaf({3}, {1, 2, 3});
  const Tensor out = embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, w, {.mode = BagMode::Sqrtn}, psw);
  const double q = std::sqrt(14.0);
  EMB_CHECK_CLOSE(out, Tensor({1, 2}, {float(14 / q), float(9 / q)}));
  backward(out, Tensor::ones({1, 2}));
  // dpsw_i = dot_i / Q - w_i Σ_j w_j dot_j / Q³, dot = [0, 7, 3], Σ w_j dot_j = 23.
  const double dots[] = {0, 7, 3};
  std::vector<float> want;
  for (int i = 0; i < 3; ++i) want.push_back(float(dots[i] / q - (i + 1) * 23.0 / (q * q * q)));
  EMB_CHECK_CLOSE(psw.grad(), Tensor({3}, want));
  EMB_CHECK_CLOSE(w.grad(), Tensor({5, 2}, scaled({1, 1, 2, 2, 3, 3, 0, 0, 0, 0}, 1 / q)));
}

TEST_CASE("embedding_bag: include_last_offset and the positions in no bag") {
  const Tensor w = table5();
  const IndexTensor x{0, 1, 2, 3, 4, 0};
  const Tensor out = embedding_bag(x, IndexTensor{0, 3, 4}, w, {.mode = BagMode::Sum, .include_last_offset = true});
  CHECK(out.shape() == Shape{2, 2});
  CHECK(out.to_vector() == std::vector<float>{6, 4, -4, 4});
  backward(out, Tensor({2, 2}, {1, 2, 3, 4}));
  CHECK(w.grad().to_vector() == std::vector<float>{1, 2, 1, 2, 1, 2, 3, 4, 0, 0});

  SUBCASE("a single offset: zero bags, everything in the tail") {
    const Tensor none = embedding_bag(x, IndexTensor{0}, w, {.mode = BagMode::Sum, .include_last_offset = true});
    CHECK(none.shape() == Shape{0, 2});
  }
  SUBCASE("max_norm also renormalises the tail and padding (as PyTorch)") {
    const Tensor w2 = table5();
    embedding_bag(IndexTensor{0, 3, 1, 4}, IndexTensor{0, 2}, w2,
                  {.mode = BagMode::Sum, .padding_idx = 3, .max_norm = 5.0f, .include_last_offset = true});
    const auto s1 = static_cast<float>(5.0 / (static_cast<double>(static_cast<float>(std::sqrt(29.0))) + 1e-7));
    const auto s3 = static_cast<float>(5.0 / (static_cast<double>(static_cast<float>(std::sqrt(32.0))) + 1e-7));
    const auto s4 = static_cast<float>(5.0 / (static_cast<double>(static_cast<float>(std::sqrt(200.0))) + 1e-7));
    CHECK(w2.to_vector() == std::vector<float>{1, -1, 2 * s1, 5 * s1, 3, 0, -4 * s3, 4 * s3, 10 * s4, -10 * s4});
  }
}

TEST_CASE("embedding_bag: the 2-D form, one bag per row, include_last_offset drops nothing") {
  const IndexTensor x({2, 2}, {0, 1, 2, 3});
  for (const bool ilo : {false, true}) {
    const Tensor w = table5();
    const Tensor out = embedding_bag(x, w, {.mode = BagMode::Sum, .include_last_offset = ilo});
    CHECK(out.to_vector() == std::vector<float>{3, 4, -1, 4});  // PyTorch 1.13 with ilo: one row
    const Tensor mx = embedding_bag(x, w, {.mode = BagMode::Max, .include_last_offset = ilo});
    CHECK(mx.to_vector() == std::vector<float>{2, 5, 3, 4});  // PyTorch 1.13 with ilo: abort
  }
  SUBCASE("rows of length 0 are empty bags") {
    const Tensor out = embedding_bag(IndexTensor({3, 0}, {}), table5(), {.mode = BagMode::Mean});
    CHECK(out.to_vector() == std::vector<float>(6, 0.0f));
  }
  SUBCASE("2-D per_sample_weights") {
    const Tensor w = table5();
    const Tensor psw = leaf({2, 2}, {1, 2, 3, 4});
    const Tensor out = embedding_bag(x, w, {.mode = BagMode::Sum}, psw);
    CHECK(out.to_vector() == std::vector<float>{5, 9, -7, 16});
    backward(out, Tensor::ones({2, 2}));
    CHECK(psw.grad().shape() == Shape{2, 2});
    CHECK(psw.grad().to_vector() == std::vector<float>{0, 7, 3, 0});
  }
}

TEST_CASE("embedding_bag: scale_grad_by_freq counts over the whole input (intended rule)") {
  // [1,1,3] in one bag: row1 gets 2 * 1/2, row3 gets 1 (PyTorch 1.13 CPU: 0.5, the count bug).
  const Tensor w = table5();
  backward(embedding_bag(IndexTensor{1, 1, 3}, IndexTensor{0}, w, {.mode = BagMode::Sum, .scale_grad_by_freq = true}),
           Tensor::ones({1, 2}));
  CHECK(w.grad().to_vector() == std::vector<float>{0, 0, 1, 1, 0, 0, 1, 1, 0, 0});

  SUBCASE("across bags, as Embedding") {
    const Tensor w2 = table5();
    backward(embedding_bag(IndexTensor{1, 3, 1}, IndexTensor{0, 2}, w2,
                           {.mode = BagMode::Sum, .scale_grad_by_freq = true}),
             Tensor({2, 2}, {1, 2, 10, 20}));
    CHECK(w2.grad().to_vector() == std::vector<float>{0, 0, 5.5f, 11, 0, 0, 1, 2, 0, 0});
    // Same as embedding + per-bag sums.
    const Tensor w3 = table5();
    backward(embedding(IndexTensor{1, 3, 1}, w3, {.scale_grad_by_freq = true}), Tensor({3, 2}, {1, 2, 1, 2, 10, 20}));
    CHECK(w3.grad().to_vector() == w2.grad().to_vector());
  }
  SUBCASE("mean") {
    const Tensor w2 = table5();
    backward(embedding_bag(IndexTensor{1, 1, 3}, IndexTensor{0}, w2,
                           {.mode = BagMode::Mean, .scale_grad_by_freq = true}),
             Tensor::ones({1, 2}));
    EMB_CHECK_CLOSE(w2.grad(), Tensor({5, 2}, scaled({0, 0, 1, 1, 0, 0, 1, 1, 0, 0}, 1.0 / 3)));
  }
}

TEST_CASE("embedding_bag: sparse gradient, one entry per distinct non-padding row, rows sorted") {
  // REFERENCE 2.5: x = [0,2,0,1], offsets [0,3], pad = 1, mean -> rows [0,2,0], values 1/3.
  const Tensor w = table5();
  backward(embedding_bag(IndexTensor{0, 2, 0, 1}, IndexTensor{0, 3}, w,
                         {.mode = BagMode::Mean, .padding_idx = 1, .sparse = true}),
           Tensor::ones({2, 2}));
  const Grad* g = w.impl().grad.get();
  REQUIRE(g != nullptr);
  CHECK(g->is_sparse());
  CHECK(g->num_blocks() == 1);
  CHECK(std::vector<std::int64_t>(g->rows().begin(), g->rows().end()) == std::vector<std::int64_t>{0, 2});
  const float t = 1.0f / 3;
  CHECK(std::vector<float>(g->row_values().begin(), g->row_values().end()) == std::vector<float>{t + t, t + t, t, t});

  SUBCASE("with per_sample_weights the values are w_i g[b]") {
    const Tensor w2 = table5();
    backward(embedding_bag(IndexTensor{3, 1}, IndexTensor{0}, w2, {.mode = BagMode::Sum, .sparse = true},
                           Tensor({2}, {2, -1})),
             Tensor({1, 2}, {1, 10}));
    REQUIRE(w2.impl().grad->is_sparse());
    const auto v = w2.impl().grad->row_values();
    CHECK(std::vector<float>(v.begin(), v.end()) == std::vector<float>{-1, -10, 2, 20});  // rows 1, 3
  }
}

TEST_CASE("embedding_bag: only a psw gradient saves the weight") {
  SUBCASE("without psw an in-place write between forward and backward is fine") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(IndexTensor{0, 1}, IndexTensor{0}, w, {.mode = BagMode::Sum});
    w.detach().set({0, 0}, 5.0f);
    backward(out, Tensor::ones({1, 2}));
    CHECK(w.grad().to_vector() == std::vector<float>{1, 1, 1, 1, 0, 0, 0, 0, 0, 0});
  }
  SUBCASE("with a psw gradient it is refused, naming the node") {
    const Tensor w = table5();
    const Tensor out = embedding_bag(IndexTensor{0, 1}, IndexTensor{0}, w, {.mode = BagMode::Sum},
                                     leaf({2}, {1, 1}));
    w.detach().set({0, 0}, 5.0f);
    CHECK_THROWS_AS(backward(out, Tensor::ones({1, 2})), hitch::Error);
    CHECK_FALSE(w.impl().grad);
  }
}

TEST_CASE("embedding_bag: empty offsets with empty input give zero bags") {
  const Tensor out = embedding_bag(IndexTensor(Shape{0}, {}), IndexTensor(Shape{0}, {}), table5(), {});
  CHECK(out.shape() == Shape{0, 2});
}
