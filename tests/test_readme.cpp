// The README's code sample, compiled and run as written, plus what it claims.
#include <doctest/doctest.h>

#include <hitch/hitch.h>

using namespace hitch;

TEST_CASE("README: the tied sample runs, one Parameter gets both paths' gradient and one state") {
  // --- as in README.md ---
  Parameter table("items", Tensor::randn({1000, 32}));
  nn::Embedding item(table);                                    // a lookup ...
  nn::EmbeddingBag history(table, {.mode = BagMode::Mean});      // ... and a bag: one table
  optim::Adam adam({table}, {.lr = 0.01});

  Tensor e = item(IndexTensor{3, 17});                           // [2, 32]
  Tensor b = history(IndexTensor({2, 3}, {1, 2, 3, 4, 5, 6}));   // [2, 32], one bag per row
  Tensor loss = mean(square(sum(e * b, 1) - 1.0f));
  backward(loss);                                                // both paths add into table's gradient
  // --- end of the sample's first half ---
  CHECK(e.shape() == Shape{2, 32});
  CHECK(b.shape() == Shape{2, 32});
  const Tensor g = table.grad();
  // rows of the lookup (3, 17) and of the bags (1..6) have gradient, others none; row 3 gets both.
  auto row_norm = [&](std::int64_t r) {
    double s = 0;
    for (std::int64_t d = 0; d < 32; ++d) s += std::abs(g.at({r, d}));
    return s;
  };
  for (std::int64_t r : {1, 2, 3, 4, 5, 6, 17}) CHECK(row_norm(r) > 0);
  CHECK(row_norm(0) == 0);
  CHECK(row_norm(999) == 0);
  const float before = table.data()[0];
  adam.step();                                                   // one update, one state
  adam.zero_grad();
  CHECK(adam.state_size() == 1);
  CHECK(table.data()[0] == before);  // row 0 had no gradient and Adam's moments are zero there
}
