// Bad input to embedding, embedding_bag and their modules: each test asserts the exact message
// and that nothing changed (table values and version, its gradient, the tape). Every call that
// can carry max_norm carries it, over a table whose rows all exceed it, with the bad argument
// placed after valid ones: a rejected call must not have renormalised any row.
#include <doctest/doctest.h>

#include "embedding_test_util.h"
#include <hitch/hitch.h>

using namespace hitch;
using emb_test::leaf;

namespace {
struct Fixture {
  Tensor w = leaf({5, 2}, {3, 4, 6, 8, 1, 1, 5, 12, 2, 2});  // every row's norm > 1
  Fixture() { backward(embedding(IndexTensor{0, 4}, w), Tensor::ones({2, 2})); }  // a gradient to keep
};
const EmbeddingOptions kNorm{.max_norm = 1.0f};
EmbeddingBagOptions bag(BagMode mode = BagMode::Sum) { return {.mode = mode, .max_norm = 1.0f}; }
}  // namespace

#define CHECK_REJECTED(expr, message)                      \
  do {                                                     \
    const emb_test::Snapshot snap_(f.w);                   \
    CHECK_THROWS_WITH_AS(expr, message, hitch::Error);     \
    snap_.check_unchanged(f.w);                            \
  } while (false)

TEST_CASE("embedding errors: index out of range or negative names position, value and range") {
  Fixture f;
  CHECK_REJECTED(embedding(IndexTensor{0, 1, 2, 7}, f.w, kNorm),
                 "embedding: indices[3] = 7 is out of range for a table of 5 rows (valid: [0, 5))");
  CHECK_REJECTED(embedding(IndexTensor{0, -1}, f.w, kNorm),
                 "embedding: indices[1] = -1 is out of range for a table of 5 rows (valid: [0, 5))");
  CHECK_REJECTED(embedding(IndexTensor({2, 2}, {0, 1, 2, 5}), f.w, kNorm),
                 "embedding: indices[1,1] = 5 is out of range for a table of 5 rows (valid: [0, 5))");
  CHECK_REJECTED(embedding_bag(IndexTensor{0, 1, 5}, IndexTensor{0}, f.w, bag()),
                 "embedding_bag: input[2] = 5 is out of range for a table of 5 rows (valid: [0, 5))");
  CHECK_REJECTED(embedding_bag(IndexTensor({2, 2}, {0, 1, -3, 2}), f.w, bag()),
                 "embedding_bag: input[1,0] = -3 is out of range for a table of 5 rows (valid: [0, 5))");
}

TEST_CASE("embedding_bag errors: offsets") {
  Fixture f;
  const IndexTensor x{0, 1, 2, 3, 4, 0};
  CHECK_REJECTED(embedding_bag(x, IndexTensor{1, 3}, f.w, bag()),
                 "embedding_bag: offsets[0] must be 0 (the first bag starts at input[0]), but is 1");
  CHECK_REJECTED(embedding_bag(x, IndexTensor{-1, 3}, f.w, bag()),
                 "embedding_bag: offsets[0] must be 0 (the first bag starts at input[0]), but is -1");
  CHECK_REJECTED(embedding_bag(x, IndexTensor{0, 2, 1}, f.w, bag()),
                 "embedding_bag: offsets must be non-decreasing, but offsets[2] = 1 < offsets[1] = 2");
  CHECK_REJECTED(embedding_bag(x, IndexTensor{0, 3, 7}, f.w, bag(BagMode::Max)),
                 "embedding_bag: offsets[2] = 7 is beyond the end of input (valid: [0, 6])");
  // An intermediate offset beyond the end (PyTorch 1.13: segfault).
  CHECK_REJECTED(embedding_bag(IndexTensor(Shape{0}, {}), IndexTensor{0, 2, 0}, f.w, bag()),
                 "embedding_bag: offsets[1] = 2 is beyond the end of input (valid: [0, 0])");
  CHECK_REJECTED(embedding_bag(x, IndexTensor{0, 7}, f.w, {.max_norm = 1.0f, .include_last_offset = true}),
                 "embedding_bag: offsets[1] = 7 is beyond the end of input (valid: [0, 6])");
  CHECK_REJECTED(embedding_bag(x, IndexTensor(Shape{0}, {}), f.w, bag()),
                 "embedding_bag: offsets is empty but input has 6 entries; pass offsets = {0} for one bag");
  CHECK_REJECTED(embedding_bag(IndexTensor(Shape{0}, {}), IndexTensor(Shape{0}, {}), f.w,
                               {.max_norm = 1.0f, .include_last_offset = true}),
                 "embedding_bag: include_last_offset needs at least one offset (the end of the last bag), but "
                 "offsets is empty");
  CHECK_REJECTED(embedding_bag(x, IndexTensor({1, 2}, {0, 3}), f.w, bag()),
                 "embedding_bag: offsets must be 1-D, but has shape [1,2]");
}

TEST_CASE("embedding_bag errors: input forms") {
  Fixture f;
  CHECK_REJECTED(embedding_bag(IndexTensor({2, 2}, {0, 1, 2, 3}), IndexTensor{0, 1}, f.w, bag()),
                 "embedding_bag: input is 2-D (shape [2,2]), so offsets must not be given: each row is one bag "
                 "(use the overload without offsets)");
  CHECK_REJECTED(embedding_bag(IndexTensor{0, 1, 2}, f.w, bag()),
                 "embedding_bag: input is 1-D (shape [3]) but no offsets were given: pass offsets for 1-D input, "
                 "or a 2-D input [B, L] with one bag per row");
  CHECK_REJECTED(embedding_bag(IndexTensor({1, 1, 2}, {0, 1}), f.w, bag()),
                 "embedding_bag: input must be 1-D (with offsets) or 2-D (one bag per row), but has shape [1,1,2]");
  CHECK_REJECTED(embedding_bag(IndexTensor({1, 1, 2}, {0, 1}), IndexTensor{0}, f.w, bag()),
                 "embedding_bag: input must be 1-D (with offsets) or 2-D (one bag per row), but has shape [1,1,2]");
  CHECK_REJECTED(embedding_bag(IndexTensor(Shape{}, {1}), IndexTensor{0}, f.w, bag()),
                 "embedding_bag: input must be 1-D (with offsets) or 2-D (one bag per row), but has shape []");
}

TEST_CASE("embedding_bag errors: per_sample_weights") {
  Fixture f;
  const Tensor psw = leaf({2}, {1, 2});
  CHECK_REJECTED(embedding_bag(IndexTensor{0, 1, 2}, IndexTensor{0}, f.w, bag(), psw),
                 "embedding_bag: per_sample_weights must have the shape of input [3], but has shape [2]");
  // A flattened psw with 2-D input is rejected too.
  CHECK_REJECTED(embedding_bag(IndexTensor({1, 2}, {0, 1}), f.w, bag(), psw),
                 "embedding_bag: per_sample_weights must have the shape of input [1,2], but has shape [2]");
  CHECK_REJECTED(embedding_bag(IndexTensor{0, 1}, IndexTensor{0}, f.w, bag(BagMode::Max), psw),
                 "embedding_bag: per_sample_weights is not supported with mode max (supported: sum, mean, sqrtn)");
  CHECK_FALSE(psw.impl().grad);
}

TEST_CASE("embedding errors: options") {
  Fixture f;
  CHECK_REJECTED(embedding(IndexTensor{0}, f.w, {.padding_idx = 5, .max_norm = 1.0f}),
                 "embedding: padding_idx = 5 is out of range for a table of 5 rows (valid: [-5, 5))");
  CHECK_REJECTED(embedding(IndexTensor{0}, f.w, {.padding_idx = -6}),
                 "embedding: padding_idx = -6 is out of range for a table of 5 rows (valid: [-5, 5))");
  CHECK_REJECTED(embedding_bag(IndexTensor{0}, IndexTensor{0}, f.w, {.padding_idx = 6, .max_norm = 1.0f}),
                 "embedding_bag: padding_idx = 6 is out of range for a table of 5 rows (valid: [-5, 5))");
  CHECK_REJECTED(embedding(IndexTensor{0}, f.w, {.max_norm = 0.0f}), "embedding: max_norm must be > 0, but is 0");
  CHECK_REJECTED(embedding_bag(IndexTensor{0}, IndexTensor{0}, f.w, {.max_norm = -1.0f}),
                 "embedding_bag: max_norm must be > 0, but is -1");
  CHECK_REJECTED(embedding(IndexTensor{0}, f.w, {.max_norm = 1.0f, .norm_type = 0.0f}),
                 "embedding: norm_type must be > 0 (inf allowed), but is 0");
  CHECK_REJECTED(embedding(IndexTensor{0}, f.w, {.max_norm = 1.0f, .scale_grad_by_freq = true, .sparse = true}),
                 "embedding: scale_grad_by_freq is not supported with sparse gradients (sparse = true)");
  CHECK_REJECTED(embedding_bag(IndexTensor{0}, IndexTensor{0}, f.w,
                               {.max_norm = 1.0f, .scale_grad_by_freq = true, .sparse = true}),
                 "embedding_bag: scale_grad_by_freq is not supported with sparse gradients (sparse = true)");
  CHECK_REJECTED(embedding_bag(IndexTensor{0}, IndexTensor{0}, f.w,
                               {.mode = BagMode::Max, .max_norm = 1.0f, .scale_grad_by_freq = true}),
                 "embedding_bag: scale_grad_by_freq is not supported with mode max");
  CHECK_REJECTED(embedding_bag(IndexTensor{0}, IndexTensor{0}, f.w, {.mode = BagMode::Max, .max_norm = 1.0f, .sparse = true}),
                 "embedding_bag: sparse gradients are not supported with mode max");
  CHECK_THROWS_WITH_AS(parse_bag_mode("prod"), "embedding_bag: unknown mode \"prod\" (valid: sum, mean, max, sqrtn)",
                       hitch::Error);
  CHECK(parse_bag_mode("sqrtn") == BagMode::Sqrtn);
  CHECK(to_string(BagMode::Mean) == "mean");
}

TEST_CASE("embedding errors: weight not 2-D") {
  Fixture f;
  const Tensor flat = leaf({5}, {1, 2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(embedding(IndexTensor{0}, flat),
                       "embedding: weight must be 2-D [num_embeddings, embedding_dim], but has shape [5]", hitch::Error);
  CHECK_THROWS_WITH_AS(embedding_bag(IndexTensor{0}, IndexTensor{0}, leaf({1, 2, 2}, {1, 2, 3, 4})),
                       "embedding_bag: weight must be 2-D [num_embeddings, embedding_dim], but has shape [1,2,2]",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(embedding(IndexTensor{0}, Tensor()), "embedding: weight is an undefined Tensor", hitch::Error);
  CHECK_FALSE(flat.impl().grad);
}

TEST_CASE("embedding errors: module construction checks options before drawing from the generator") {
  Generator gen(3);
  const auto state = gen.state();
  CHECK_THROWS_WITH_AS(nn::Embedding(5, 2, {.padding_idx = 5}, gen),
                       "Embedding: padding_idx = 5 is out of range for a table of 5 rows (valid: [-5, 5))",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(5, 2, {.padding_idx = -6}, gen),
                       "EmbeddingBag: padding_idx = -6 is out of range for a table of 5 rows (valid: [-5, 5))",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(5, 2, {.mode = BagMode::Max, .sparse = true}, gen),
                       "EmbeddingBag: sparse gradients are not supported with mode max", hitch::Error);
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(5, 2, {.mode = BagMode::Max, .scale_grad_by_freq = true}, gen),
                       "EmbeddingBag: scale_grad_by_freq is not supported with mode max", hitch::Error);
  CHECK_THROWS_WITH_AS(nn::Embedding(5, 2, {.max_norm = 0.0f}, gen), "Embedding: max_norm must be > 0, but is 0",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(nn::Embedding(-1, 2, {}, gen), "Embedding: num_embeddings must be >= 0, but is -1", hitch::Error);
  CHECK(gen.state() == state);

  Parameter flat("flat", Tensor({3}, {1, 2, 3}));
  CHECK_THROWS_WITH_AS(nn::Embedding{flat},
                       "Embedding: weight must be 2-D [num_embeddings, embedding_dim], but has shape [3]", hitch::Error);
  Parameter table("table", Tensor({2, 2}, {1, 2, 3, 4}));
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(table, {.padding_idx = 2}),
                       "EmbeddingBag: padding_idx = 2 is out of range for a table of 2 rows (valid: [-2, 2))",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(nn::Embedding::from_pretrained(Tensor({3}, {1, 2, 3})),
                       "Embedding.from_pretrained: embeddings must be 2-D [num_embeddings, embedding_dim], but has "
                       "shape [3]",
                       hitch::Error);
}

TEST_CASE("embedding errors: a BagMode outside the enum and a weight replaced by a 0-d Parameter are refused") {
  Fixture f;
  const auto bad = static_cast<BagMode>(7);
  const IndexTensor input({1, 2}, {0, 1});
  CHECK_REJECTED(embedding_bag(input, f.w, {.mode = bad, .max_norm = 1.0f}),
                 "embedding_bag: mode = 7 is not a BagMode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)");
  const auto gen_state = default_generator().state();
  CHECK_THROWS_WITH_AS(nn::EmbeddingBag(4, 2, {.mode = bad}),
                       "EmbeddingBag: mode = 7 is not a BagMode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)", Error);
  CHECK(default_generator().state() == gen_state);  // refused before drawing the table
  CHECK_THROWS_WITH_AS(to_string(bad), "to_string: BagMode value 7 is not a mode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)",
                       Error);

  // The modules' weight and options are public members: replaced after construction, they are
  // checked where they are used.
  nn::EmbeddingBag module(4, 2);
  module.options.mode = bad;
  CHECK_THROWS_WITH_AS(module(input), "embedding_bag: mode = 7 is not a BagMode (valid: 0 sum, 1 mean, 2 max, 3 sqrtn)",
                       Error);
  module.weight = Parameter("weight", Tensor::scalar(1.0f));
  CHECK_THROWS_WITH_AS(module.num_embeddings(),
                       "EmbeddingBag: weight must be 2-D [num_embeddings, embedding_dim], but has shape []", Error);
  CHECK_THROWS_WITH_AS(module.embedding_dim(),
                       "EmbeddingBag: weight must be 2-D [num_embeddings, embedding_dim], but has shape []", Error);
  nn::Embedding emb(4, 2);
  emb.weight = Parameter("weight", Tensor::scalar(1.0f));
  CHECK_THROWS_WITH_AS(emb.num_embeddings(),
                       "Embedding: weight must be 2-D [num_embeddings, embedding_dim], but has shape []", Error);
  CHECK_THROWS_WITH_AS(emb(IndexTensor{0}), "embedding: weight must be 2-D [num_embeddings, embedding_dim], but has shape []",
                       Error);
}
