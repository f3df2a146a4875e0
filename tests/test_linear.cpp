// nn::Linear: PyTorch's init bounds, forward values, parameter listing, shape errors.
#include <cmath>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include <hitch/nn/linear.h>
#include <hitch/ops/ops.h>

using namespace hitch;

TEST_CASE("linear: init is uniform in [-1/sqrt(in), 1/sqrt(in)] for weight and bias") {
  Generator gen(7);
  nn::Linear lin(16, 300, true, gen);
  REQUIRE(lin.weight.shape() == Shape{300, 16});
  REQUIRE(lin.bias.shape() == Shape{300});
  const float bound = 0.25f;  // 1/sqrt(16)
  float wmin = 1, wmax = -1, bmin = 1, bmax = -1;
  for (float w : lin.weight.value().values()) wmin = std::min(wmin, w), wmax = std::max(wmax, w);
  for (float b : lin.bias.value().values()) bmin = std::min(bmin, b), bmax = std::max(bmax, b);
  CHECK(wmin >= -bound);
  CHECK(wmax <= bound);
  CHECK(bmin >= -bound);
  CHECK(bmax <= bound);
  // 4800 draws fill most of the range.
  CHECK(wmin < -0.24f);
  CHECK(wmax > 0.24f);
  CHECK(bmin < -0.2f);
  CHECK(bmax > 0.2f);
  CHECK(lin.weight.requires_grad());
  CHECK(lin.weight.name() == "weight");
  CHECK(lin.bias.name() == "bias");

  // Same seed, same values; the default generator follows manual_seed.
  Generator again(7);
  nn::Linear twin(16, 300, true, again);
  CHECK(twin.weight.value().to_vector() == lin.weight.value().to_vector());
  CHECK(twin.bias.value().to_vector() == lin.bias.value().to_vector());
  manual_seed(11);
  nn::Linear d1(3, 2);
  manual_seed(11);
  nn::Linear d2(3, 2);
  CHECK(d1.weight.value().to_vector() == d2.weight.value().to_vector());
}

TEST_CASE("linear: forward is x W^T + b and parameters are weight, bias") {
  Generator gen(1);
  nn::Linear lin(3, 2, true, gen);
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  std::copy(w.begin(), w.end(), lin.weight.data());
  lin.bias.data()[0] = 0.5f;
  lin.bias.data()[1] = -1.0f;
  const Tensor x({2, 3}, {1, 0, -1, 2, 1, 0});
  const Tensor y = lin(x);
  REQUIRE(y.shape() == Shape{2, 2});
  CHECK(y.to_vector() == std::vector<float>{-2 + 0.5f, -2 - 1.0f, 4 + 0.5f, 13 - 1.0f});

  const auto named = lin.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "weight");
  CHECK(named[1].first == "bias");
  CHECK(named[0].second.is_same(lin.weight));

  // Gradients reach both parameters; gradcheck through the module.
  backward(sum(lin(x)));
  CHECK(lin.weight.grad().to_vector() == std::vector<float>{3, 1, -1, 3, 1, -1});
  CHECK(lin.bias.grad().to_vector() == std::vector<float>{2, 2});
  lin.zero_grad();
  Tensor xg = Tensor({2, 3}, {0.3f, -0.7f, 1.1f, 0.9f, -0.2f, 0.4f}).requires_grad_();
  const GradcheckResult r = gradcheck("linear", [&](const std::vector<Tensor>& in) { return lin(in[0]); },
                                      {xg, lin.weight.value(), lin.bias.value()});
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("linear: without bias") {
  nn::Linear lin(4, 3, false);
  CHECK_FALSE(lin.bias.defined());
  CHECK(lin.parameters().size() == 1);
  const Tensor y = lin(Tensor::ones({5, 4}));
  CHECK(y.shape() == Shape{5, 3});
}

TEST_CASE("linear: rejects inputs of the wrong shape, recording nothing") {
  nn::Linear lin(3, 2);
  const std::size_t before = tape_size();
  CHECK_THROWS_WITH_AS(lin(Tensor::zeros({2, 4})), "Linear: expected input of shape [*,3] (any leading dims), got [2,4]",
                       Error);
  CHECK_THROWS_WITH_AS(lin(Tensor::zeros({4})), "Linear: expected input of shape [*,3] (any leading dims), got [4]",
                       Error);
  CHECK(tape_size() == before);
  CHECK_THROWS_WITH_AS(nn::Linear(-1, 2), "Linear: in_features and out_features must be >= 0, got -1 and 2", Error);
}
