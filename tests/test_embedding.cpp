// Embedding: forward shapes, padding_idx, scale_grad_by_freq, max_norm, sparse layout, and the
// nn::Embedding module (init, the tie constructor, from_pretrained). Exact values throughout;
// finite differences are in test_embedding_gradcheck.cpp, bad input in test_embedding_errors.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "embedding_test_util.h"
#include <hitch/hitch.h>

using namespace hitch;
using emb_test::leaf;

namespace {
Tensor table_4x2(bool requires_grad = true) { return leaf({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8}, requires_grad); }
}  // namespace

TEST_CASE("embedding: forward is a row gather for any index rank") {
  const Tensor w = table_4x2();
  const Tensor out = embedding(IndexTensor({2, 2}, {0, 3, 1, 1}), w);
  CHECK(out.shape() == Shape{2, 2, 2});
  CHECK(out.to_vector() == std::vector<float>{1, 2, 7, 8, 3, 4, 3, 4});

  const Tensor scalar_index = embedding(IndexTensor(Shape{}, {2}), w);  // 0-d index -> [D]
  CHECK(scalar_index.shape() == Shape{2});
  CHECK(scalar_index.to_vector() == std::vector<float>{5, 6});

  CHECK(embedding(IndexTensor(Shape{0}, {}), w).shape() == Shape{0, 2});
  const Tensor rank3 = embedding(IndexTensor({2, 1, 2}, {0, 1, 2, 3}), w);
  CHECK(rank3.shape() == Shape{2, 1, 2, 2});
  CHECK(rank3.to_vector() == w.to_vector());
}

TEST_CASE("embedding: duplicate indices accumulate into one row") {
  const Tensor w = table_4x2();
  const Tensor out = embedding(IndexTensor{2, 0, 2, 2}, w);
  backward(out, Tensor({4, 2}, {1, 10, 2, 20, 3, 30, 4, 40}));
  CHECK(w.grad().to_vector() == std::vector<float>{2, 20, 0, 0, 8, 80, 0, 0});
  // A second backward adds (+=), it never overwrites.
  backward(embedding(IndexTensor{2}, w), Tensor({1, 2}, {1, 1}));
  CHECK(w.grad().to_vector() == std::vector<float>{2, 20, 0, 0, 9, 81, 0, 0});
}

TEST_CASE("embedding: padding_idx returns the stored row but gives it no gradient") {
  SUBCASE("non-negative") {
    const Tensor w = table_4x2();  // row 1 = [3, 4], not zero
    const Tensor out = embedding(IndexTensor{0, 1, 3, 1}, w, {.padding_idx = 1});
    CHECK(out.to_vector() == std::vector<float>{1, 2, 3, 4, 7, 8, 3, 4});
    backward(out, Tensor({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8}));
    CHECK(w.grad().to_vector() == std::vector<float>{1, 2, 0, 0, 0, 0, 5, 6});
  }
  SUBCASE("negative counts from the end: -1 is the last row") {
    const Tensor w = table_4x2();
    const Tensor out = embedding(IndexTensor{0, 3, 3}, w, {.padding_idx = -1});
    CHECK(out.to_vector() == std::vector<float>{1, 2, 7, 8, 7, 8});
    backward(out, Tensor::ones({3, 2}));
    CHECK(w.grad().to_vector() == std::vector<float>{1, 1, 0, 0, 0, 0, 0, 0});
  }
}

TEST_CASE("embedding: scale_grad_by_freq divides by the count over the whole index tensor") {
  // REFERENCE 1.3: x = [[0,1,1],[1,3,0]], g = arange(12) -> row0 [5,6], row1 [4,5], row3 [8,9].
  const Tensor w = leaf({4, 2}, std::vector<float>(8, 0.5f));
  const Tensor out = embedding(IndexTensor({2, 3}, {0, 1, 1, 1, 3, 0}), w, {.scale_grad_by_freq = true});
  backward(out, Tensor({2, 3, 2}, Tensor::arange(0, 12).to_vector()));
  CHECK(w.grad().to_vector() == std::vector<float>{5, 6, 4, 5, 0, 0, 8, 9});

  // [1,1,3]: row1 halved, row3 not (REFERENCE §7 case 6).
  const Tensor w2 = leaf({4, 1}, {0, 0, 0, 0});
  backward(embedding(IndexTensor{1, 1, 3}, w2, {.scale_grad_by_freq = true}), Tensor::ones({3, 1}));
  CHECK(w2.grad().to_vector() == std::vector<float>{0, 1, 0, 1});
}

TEST_CASE("embedding: max_norm renormalises referenced rows once, in place, before the lookup") {
  // row0 norm 5 > 1, row1 norm exactly 1 (untouched), row2 not referenced, row3 norm 2.
  const Tensor w = leaf({4, 2}, {3, 4, 0, 1, 6, 8, 0, 2});
  const std::uint64_t v0 = w.impl().storage->version;
  const Tensor out = embedding(IndexTensor{0, 1, 0, 3}, w, {.max_norm = 1.0f});
  const auto s0 = static_cast<float>(1.0 / (5.0 + 1e-7));
  const auto s3 = static_cast<float>(1.0 / (2.0 + 1e-7));
  CHECK(w.to_vector() == std::vector<float>{3 * s0, 4 * s0, 0, 1, 6, 8, 0, 2 * s3});
  CHECK(out.to_vector() == std::vector<float>{3 * s0, 4 * s0, 0, 1, 3 * s0, 4 * s0, 0, 2 * s3});
  CHECK(w.impl().storage->version == v0 + 1);
  // The backward is the plain gather backward: no gradient through the renorm.
  backward(out, Tensor::ones({4, 2}));
  CHECK(w.grad().to_vector() == std::vector<float>{2, 2, 1, 1, 0, 0, 1, 1});

  // A call that changes nothing still bumps the version (as PyTorch).
  embedding(IndexTensor{1}, w, {.max_norm = 1.0f});
  CHECK(w.impl().storage->version == v0 + 2);
}

TEST_CASE("embedding: max_norm with norm_type 1 and inf") {
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor w1 = leaf({1, 2}, {3, -4});
  embedding(IndexTensor{0}, w1, {.max_norm = 1.0f, .norm_type = 1.0f});
  const auto s1 = static_cast<float>(1.0 / (7.0 + 1e-7));
  CHECK(w1.to_vector() == std::vector<float>{3 * s1, -4 * s1});
  const Tensor winf = leaf({1, 2}, {3, -4});
  embedding(IndexTensor{0}, winf, {.max_norm = 2.0f, .norm_type = inf});
  const auto sinf = static_cast<float>(2.0 / (4.0 + 1e-7));
  CHECK(winf.to_vector() == std::vector<float>{3 * sinf, -4 * sinf});
}

TEST_CASE("embedding: the node saves no weight, so writes between forward and backward are allowed") {
  // PyTorch 1.13 fails here (its node saves W); hitch saves only the indices (REFERENCE 1.5).
  const Tensor w = table_4x2();
  const Tensor a = embedding(IndexTensor{0, 1}, w, {.max_norm = 1.0f});
  const Tensor b = embedding(IndexTensor{1, 2}, w, {.max_norm = 1.0f});  // renormalises again
  w.detach().set({3, 0}, 42.0f);                                        // an "optimizer step"
  backward(a, Tensor::ones({2, 2}));
  backward(b, Tensor::ones({2, 2}));
  CHECK(w.grad().to_vector() == std::vector<float>{1, 1, 2, 2, 1, 1, 0, 0});
}

TEST_CASE("embedding: sparse gradient has one entry per distinct row, rows sorted, without padding") {
  const Tensor w = table_4x2();
  const Tensor out = embedding(IndexTensor({2, 3}, {0, 1, 1, 1, 3, 0}), w, {.padding_idx = 1, .sparse = true});
  backward(out, Tensor({2, 3, 2}, Tensor::arange(0, 12).to_vector()));
  const Grad* g = w.impl().grad.get();
  REQUIRE(g != nullptr);
  CHECK(g->is_sparse());
  CHECK(g->num_blocks() == 1);  // summed per row inside the op: no entry per occurrence
  CHECK(std::vector<std::int64_t>(g->rows().begin(), g->rows().end()) == std::vector<std::int64_t>{0, 3});
  CHECK(std::vector<float>(g->row_values().begin(), g->row_values().end()) == std::vector<float>{10, 12, 8, 9});
  CHECK(w.grad().to_vector() == std::vector<float>{10, 12, 0, 0, 0, 0, 8, 9});

  SUBCASE("all padding: an empty sparse gradient") {
    const Tensor w2 = table_4x2();
    backward(embedding(IndexTensor{1, 1}, w2, {.padding_idx = 1, .sparse = true}), Tensor::ones({2, 2}));
    REQUIRE(w2.impl().grad != nullptr);
    CHECK(w2.impl().grad->is_sparse());
    CHECK(w2.impl().grad->rows().empty());
  }
  SUBCASE("a dense contribution makes it dense") {
    backward(embedding(IndexTensor{2}, w), Tensor::ones({1, 2}));
    CHECK_FALSE(w.impl().grad->is_sparse());
    CHECK(w.grad().to_vector() == std::vector<float>{10, 12, 0, 0, 1, 1, 8, 9});
  }
}

TEST_CASE("embedding: no record when nothing requires grad") {
  const std::size_t before = tape_size();
  const Tensor out = embedding(IndexTensor{0, 1}, table_4x2(false));
  CHECK_FALSE(out.requires_grad());
  CHECK(tape_size() == before);
  NoGradGuard guard;
  CHECK_FALSE(embedding(IndexTensor{0}, table_4x2(true)).requires_grad());
}

TEST_CASE("nn::Embedding: fresh init is N(0,1) from the generator with the padding row zeroed") {
  Generator g1(7), g2(7);
  nn::Embedding e(6, 3, {.padding_idx = -2}, g1);
  CHECK(e.options.padding_idx == std::optional<std::int64_t>(4));  // normalised
  CHECK(e.num_embeddings() == 6);
  CHECK(e.embedding_dim() == 3);
  CHECK(e.weight.name() == "weight");
  CHECK(e.weight.requires_grad());
  Tensor expected = Tensor::randn({6, 3}, g2);
  for (int d = 0; d < 3; ++d) expected.set({4, d}, 0.0f);
  CHECK(e.weight.value().to_vector() == expected.to_vector());
  const auto params = e.parameters();
  REQUIRE(params.size() == 1);
  CHECK(params[0].is_same(e.weight));
  // forward == the functional form
  CHECK(e(IndexTensor{4, 0}).to_vector() == embedding(IndexTensor{4, 0}, e.weight, e.options).to_vector());

  nn::EmbeddingBag bag(6, 3);
  CHECK(bag.options.mode == BagMode::Mean);  // PyTorch's default
}

TEST_CASE("nn::Embedding: the tie constructor keeps the Parameter and does not zero the padding row") {
  Parameter table("table", Tensor({3, 2}, {1, 2, 7, 7, 5, 6}));
  nn::Embedding e(table, {.padding_idx = 1});
  CHECK(e.weight.is_same(table));
  CHECK(e.weight.name() == "table");
  CHECK(e(IndexTensor{1}).to_vector() == std::vector<float>{7, 7});
}

TEST_CASE("nn::Embedding::from_pretrained copies the values (PyTorch aliases them)") {
  const Tensor values({2, 2}, {1, 2, 3, 4});
  nn::Embedding frozen = nn::Embedding::from_pretrained(values);
  CHECK_FALSE(frozen.weight.requires_grad());
  CHECK(frozen.weight.data() != values.data());
  values.detach().set({0, 0}, 9.0f);
  CHECK(frozen.weight.value().to_vector() == std::vector<float>{1, 2, 3, 4});
  CHECK_FALSE(frozen(IndexTensor{0}).requires_grad());

  nn::EmbeddingBag trainable = nn::EmbeddingBag::from_pretrained(values, false, {.mode = BagMode::Sum, .padding_idx = 1});
  CHECK(trainable.weight.requires_grad());
  CHECK(trainable.weight.value().to_vector() == std::vector<float>{9, 2, 3, 4});  // padding row not zeroed
  CHECK(trainable(IndexTensor{0, 1}, IndexTensor{0}).to_vector() == std::vector<float>{9, 2});
}
