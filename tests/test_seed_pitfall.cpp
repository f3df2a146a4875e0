// The seed pitfall (REFERENCE 2.9): `EmbeddingBag.from_pretrained(emb.weight, freeze=False)` makes a
// second Parameter over the same storage. hitch refuses it unless the alias opts in
// (Parameter::alias_of(...).allow_alias()); here it does, to show what goes wrong. Each alias gets
// its own gradient (their sum is the tied gradient) and its own optimizer state: under plain SGD
// that is harmless (the update is linear in the gradient), under Adam each alias normalises its
// own gradient, so a row used by both paths moves 2 lr on the first step instead of lr.
#include <doctest/doctest.h>

#include <cmath>

#include <hitch/hitch.h>

using namespace hitch;
using namespace hitch::optim;

namespace {

const std::vector<float> kTable = {0.3f, -0.2f, 0.5f,  0.1f, 0.4f,  -0.6f, 0.7f, 0.2f, -0.1f,
                                   -0.3f, 0.6f, 0.25f, 0.9f, -0.5f, 0.15f, 0.05f, 0.8f, -0.4f};  // [6,3]
const IndexTensor kIndices = {0, 2};                             // embedding path: rows 0, 2
const IndexTensor kBags({2, 2}, {2, 3, 3, 4});                   // bag path: rows 2, 3, 4
const Tensor kTarget({2}, {0.5f, -0.25f});
// Rows 0 (embedding only), 2 (both paths), 3 and 4 (bag only); 1 and 5 unused.

// Two lookups into `emb_table` and `bag_table` (the same Parameter when tied).
Tensor parity_loss(const Parameter& emb_table, const Parameter& bag_table) {
  const Tensor e = embedding(kIndices, emb_table);
  const Tensor b = embedding_bag(kBags, bag_table, {.mode = BagMode::Sum});
  return mean(square(sub(sum(mul(e, b), 1), kTarget)));
}
Tensor linear_loss(const Parameter& emb_table, const Parameter& bag_table) {
  return add(sum(embedding(kIndices, emb_table)), sum(embedding_bag(kBags, bag_table, {.mode = BagMode::Sum})));
}

std::vector<float> values_of(const Parameter& p) { return {p.data(), p.data() + p.numel()}; }

struct Pitfall {
  Parameter w{"emb.weight", Tensor({6, 3}, kTable)};
  Parameter alias = Parameter::alias_of(w, "bag.weight").allow_alias();
};

}  // namespace

TEST_CASE("Seed pitfall: refused without the opt-in, with it, the two gradients sum to the tied gradient") {
  Parameter w("emb.weight", Tensor({6, 3}, kTable));
  CHECK_THROWS_AS(SGD({w, Parameter::alias_of(w, "bag.weight")}), hitch::Error);

  Parameter tied("table", Tensor({6, 3}, kTable));
  backward(parity_loss(tied, tied));
  Pitfall pit;
  backward(parity_loss(pit.w, pit.alias));
  const auto g_tied = tied.grad().to_vector();
  const auto g_emb = pit.w.grad().to_vector();
  const auto g_bag = pit.alias.grad().to_vector();
  for (std::size_t i = 0; i < g_tied.size(); ++i) CHECK(g_emb[i] + g_bag[i] == doctest::Approx(g_tied[i]).epsilon(1e-6));
  CHECK(g_emb[6] != 0.0f);  // row 2 gets gradient through both Parameters
  CHECK(g_bag[6] != 0.0f);
}

TEST_CASE("Seed pitfall: plain SGD (with momentum) equals true tying within float rounding") {
  Parameter tied("table", Tensor({6, 3}, kTable));
  SGD tied_opt({tied}, {.lr = 0.05, .momentum = 0.9});
  Pitfall pit;
  SGD pit_opt({pit.w, pit.alias}, {.lr = 0.05, .momentum = 0.9});
  for (int step = 0; step < 10; ++step) {
    backward(parity_loss(tied, tied));
    tied_opt.step();
    tied_opt.zero_grad();
    backward(parity_loss(pit.w, pit.alias));
    pit_opt.step();
    pit_opt.zero_grad();
  }
  const auto a = values_of(tied), b = values_of(pit.w);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-5));
  CHECK(values_of(pit.alias) == b);  // one storage
  CHECK(tied_opt.state_size() == 1);
  CHECK(pit_opt.state_size() == 2);  // the state is duplicated, though
}

TEST_CASE("Seed pitfall: under Adam a row used by both paths moves 2 lr on the first step, not lr") {
  const double lr = 0.1;
  Parameter tied("table", Tensor({6, 3}, kTable));
  Adam tied_opt({tied}, {.lr = lr});
  backward(linear_loss(tied, tied));  // every used row gets a positive gradient
  tied_opt.step();

  Pitfall pit;
  Adam pit_opt({pit.w, pit.alias}, {.lr = lr});
  backward(linear_loss(pit.w, pit.alias));
  pit_opt.step();

  const auto t = values_of(tied), p = values_of(pit.w);
  auto moved = [&](const std::vector<float>& v, std::size_t row) {
    return static_cast<double>(kTable[row * 3]) - static_cast<double>(v[row * 3]);
  };
  for (std::size_t row : {0u, 2u, 3u, 4u}) CHECK(moved(t, row) == doctest::Approx(lr).epsilon(1e-5));  // tied: lr
  CHECK(moved(p, 2) == doctest::Approx(2 * lr).epsilon(1e-5));  // both paths: two Adam steps of lr
  CHECK(moved(p, 0) == doctest::Approx(lr).epsilon(1e-5));      // one path: lr
  CHECK(moved(p, 3) == doctest::Approx(lr).epsilon(1e-5));
  CHECK(moved(t, 1) == 0.0);  // unused rows stay (zero moments)
  CHECK(moved(p, 1) == 0.0);
}
