// What a new user writes first (issue 14, part 5): randn / uniform without a generator and with
// one argument order, Tensor and IndexTensor from a std::vector, fmt formatters for Shape,
// Parameter and IndexTensor, and printing summarised past 1,000 elements as PyTorch does.
#include <doctest/doctest.h>

#include <string>
#include <type_traits>
#include <vector>

#include <hitch/hitch.h>

using namespace hitch;

namespace {
// The argument orders before issue 14: randn(shape, gen, mean, std) and uniform(shape, low,
// high, gen). The first must no longer compile (it would silently read gen where mean is meant
// if a conversion existed); checked through a template so that the test compiles either way.
template <class T>
concept OldRandnOrder = requires(Generator& g) { T::randn(Shape{2}, g, 0.0f, 1.0f); };
template <class T>
concept OneOrder = requires(Generator& g) {
  T::randn(Shape{2}, 0.0f, 1.0f, g);
  T::uniform(Shape{2}, 0.0f, 1.0f, g);
  T::randn(Shape{2}, g);
  T::uniform(Shape{2}, g);
  T::randn(Shape{2});
  T::uniform(Shape{2});
};

// "0, 1, ..., n-1" for the expected strings of tensors printed in full.
std::string count_up(int from, int to, const char* sep = ", ") {
  std::string s;
  for (int i = from; i < to; ++i) s += (i == from ? "" : sep) + std::to_string(i);
  return s;
}
}  // namespace

TEST_CASE("ergonomics: randn and uniform take (shape, distribution parameters, generator), the generator optional") {
  static_assert(OneOrder<Tensor>);
  static_assert(!OldRandnOrder<Tensor>);

  // Without a generator: this thread's default generator, advanced by the draw.
  manual_seed(11);
  const Tensor a = Tensor::randn({2, 3});
  const Tensor b = Tensor::randn({2, 3});
  Generator g(11);
  CHECK(a.shape() == Shape{2, 3});
  CHECK(a.to_vector() == Tensor::randn({2, 3}, g).to_vector());
  CHECK(b.to_vector() == Tensor::randn({2, 3}, g).to_vector());
  manual_seed(11);
  const Tensor u = Tensor::uniform({4});
  Generator h(11), h2(11);
  CHECK(u.to_vector() == Tensor::uniform({4}, h).to_vector());
  CHECK(u.to_vector() == Tensor::uniform({4}, 0.0f, 1.0f, h2).to_vector());

  // The distribution parameters come before the generator, for both; the numbers are
  // mean + std * Generator::normal() and low + (high - low) * Generator::uniform(), element order.
  Generator n1(3), n2(3);
  const Tensor r = Tensor::randn({5}, 2.0f, 0.5f, n1);
  for (std::int64_t i = 0; i < 5; ++i) CHECK(r.at({i}) == static_cast<float>(2.0f + 0.5f * n2.normal()));
  Generator u1(4), u2(4);
  const Tensor v = Tensor::uniform({5}, -2.0f, 3.0f, u1);
  for (std::int64_t i = 0; i < 5; ++i)
    CHECK(v.at({i}) == static_cast<float>(-2.0f + (3.0 - (-2.0)) * u2.uniform()));
  // mean / std and low / high with the default generator.
  manual_seed(5);
  const Tensor m = Tensor::randn({3}, 10.0f, 0.0f);
  CHECK(m.to_vector() == std::vector<float>{10, 10, 10});
  CHECK(Tensor::uniform({3}, 1.0f, 1.0f).to_vector() == std::vector<float>{1, 1, 1});
  // A refused call draws nothing from the default generator either.
  manual_seed(6);
  CHECK_THROWS_WITH_AS(Tensor::randn({2}, 0.0f, -1.0f),
                       "Tensor::randn: mean and std must be finite and std >= 0, got mean 0 and std -1", Error);
  CHECK_THROWS_WITH_AS(Tensor::uniform({2}, 1.0f, 0.0f),
                       "Tensor::uniform: low and high must be finite with low <= high, got low 1 and high 0", Error);
  Generator fresh(6);
  CHECK(Tensor::uniform({3}).to_vector() == Tensor::uniform({3}, fresh).to_vector());
}

TEST_CASE("ergonomics: Tensor and IndexTensor from a std::vector, 1-D or with a shape") {
  const std::vector<float> values{1.0f, 2.5f, -3.0f, 4.0f, 5.0f, 6.0f};
  const Tensor t(values);
  CHECK(t.shape() == Shape{6});
  CHECK(t.to_vector() == values);
  CHECK_FALSE(t.requires_grad());
  CHECK(Tensor(std::vector<float>{}).shape() == Shape{0});
  // A braced list is values, as torch.tensor([2, 3]) (a shape goes to Tensor::zeros({2, 3}) and friends).
  const Tensor braced({2, 3});
  CHECK(braced.shape() == Shape{2});
  CHECK(braced.to_vector() == std::vector<float>{2, 3});
  // Explicit: a vector never becomes a Tensor or IndexTensor unasked (no surprise overloads).
  static_assert(!std::is_convertible_v<std::vector<float>, Tensor>);
  static_assert(!std::is_convertible_v<std::vector<std::int64_t>, IndexTensor>);
  static_assert(!std::is_constructible_v<Tensor, std::vector<std::int64_t>>);

  const Tensor m(Shape{2, 3}, values);
  CHECK(m.shape() == Shape{2, 3});
  CHECK(m.at({1, 0}) == 4.0f);

  const std::vector<std::int64_t> idx{4, 0, 4, 2, 1, 3};
  const IndexTensor i(idx);
  CHECK(i.shape() == Shape{6});
  CHECK(std::vector<std::int64_t>(i.values().begin(), i.values().end()) == idx);
  CHECK(IndexTensor(std::vector<std::int64_t>{}).shape() == Shape{0});
  const IndexTensor i2(Shape{3, 2}, idx);
  CHECK(i2.shape() == Shape{3, 2});
  CHECK(i2[5] == 3);
  // What a user then does with them: a lookup with indices read from a file into a vector.
  const Tensor table(Shape{5, 2}, std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(embedding(IndexTensor(std::vector<std::int64_t>{4, 1}), table).to_vector() ==
        std::vector<float>{8, 9, 2, 3});

  // The size must equal the shape's numel; the message names the function, the shape, the
  // numel and the vector's size, and the caller's vector is left as it was.
  CHECK_THROWS_WITH_AS(Tensor(Shape{4, 2}, values), "Tensor: shape [4,2] needs 8 values, got 6", Error);
  CHECK_THROWS_WITH_AS(Tensor(Shape{}, values), "Tensor: shape [] needs 1 values, got 6", Error);
  CHECK_THROWS_WITH_AS(IndexTensor(Shape{2, 2}, idx), "IndexTensor: shape [2,2] needs 4 values, got 6", Error);
  CHECK(values.size() == 6);
  CHECK(idx.size() == 6);
}

TEST_CASE("ergonomics: fmt formats a Shape, a Parameter and an IndexTensor") {
  CHECK(fmt::format("{}", Shape{2, 3}) == "[2,3]");
  CHECK(fmt::format("{}", Shape{}) == "[]");
  CHECK(fmt::format("{:>7}|", Shape{2, 3}) == "  [2,3]|");
  const Tensor x(Shape{4}, {1, 2, 3, 4});
  CHECK(fmt::format("{} -> {}", x.shape(), Shape{2, 2}) == "[4] -> [2,2]");

  Parameter p("items", Tensor(Shape{2, 2}, {1.0f, 2.0f, 3.5f, -4.0f}));
  CHECK(fmt::format("{}", p) ==
        "Parameter 'items' containing:\ntensor([[1, 2],\n [3.5, -4]], shape=[2,2], requires_grad)");
  p.set_requires_grad(false);
  CHECK(fmt::format("{}", p) == "Parameter 'items' containing:\ntensor([[1, 2],\n [3.5, -4]], shape=[2,2])");
  CHECK(fmt::format("{}", Parameter()) == "Parameter(undefined)");

  CHECK(fmt::format("{}", IndexTensor(Shape{2, 2}, {1, 2, 3, 4})) == "index_tensor([[1, 2],\n [3, 4]], shape=[2,2])");
}

TEST_CASE("ergonomics: printing is summarised past 1000 elements, 3 edge items per dim (PyTorch's defaults)") {
  // Exactly at the threshold: in full.
  CHECK(fmt::format("{}", Tensor::arange(0, 1000)) == "tensor([" + count_up(0, 1000) + "], shape=[1000])");
  // One past it, 1-D (torch: tensor([   0.,    1.,    2.,  ...,  998.,  999., 1000.])).
  CHECK(fmt::format("{}", Tensor::arange(0, 1001)) == "tensor([0, 1, 2, ..., 998, 999, 1000], shape=[1001])");
  CHECK(fmt::format("{}", IndexTensor::arange(0, 2000)) ==
        "index_tensor([0, 1, 2, ..., 1997, 1998, 1999], shape=[2000])");

  // 2-D, torch.arange(2000.).reshape(40, 50): rows and columns both cut, "..." stands for rows.
  const Tensor m(Shape{40, 50}, Tensor::arange(0, 2000).to_vector());
  CHECK(fmt::format("{}", m) ==
        "tensor([[0, 1, 2, ..., 47, 48, 49],\n"
        " [50, 51, 52, ..., 97, 98, 99],\n"
        " [100, 101, 102, ..., 147, 148, 149],\n"
        " ...,\n"
        " [1850, 1851, 1852, ..., 1897, 1898, 1899],\n"
        " [1900, 1901, 1902, ..., 1947, 1948, 1949],\n"
        " [1950, 1951, 1952, ..., 1997, 1998, 1999]], shape=[40,50])");

  // A dim of at most 6 is never cut: [2, 501] keeps both rows, cuts the columns.
  const Tensor w(Shape{2, 501}, Tensor::arange(0, 1002).to_vector());
  CHECK(fmt::format("{}", w) ==
        "tensor([[0, 1, 2, ..., 498, 499, 500],\n"
        " [501, 502, 503, ..., 999, 1000, 1001]], shape=[2,501])");

  // 3-D, torch.arange(2000).reshape(2, 10, 100).
  const IndexTensor flat = IndexTensor::arange(0, 2000);
  const IndexTensor c(Shape{2, 10, 100}, std::vector<std::int64_t>(flat.values().begin(), flat.values().end()));
  CHECK(fmt::format("{}", c) ==
        "index_tensor([[[0, 1, 2, ..., 97, 98, 99],\n"
        "  [100, 101, 102, ..., 197, 198, 199],\n"
        "  [200, 201, 202, ..., 297, 298, 299],\n"
        "  ...,\n"
        "  [700, 701, 702, ..., 797, 798, 799],\n"
        "  [800, 801, 802, ..., 897, 898, 899],\n"
        "  [900, 901, 902, ..., 997, 998, 999]],\n"
        " [[1000, 1001, 1002, ..., 1097, 1098, 1099],\n"
        "  [1100, 1101, 1102, ..., 1197, 1198, 1199],\n"
        "  [1200, 1201, 1202, ..., 1297, 1298, 1299],\n"
        "  ...,\n"
        "  [1700, 1701, 1702, ..., 1797, 1798, 1799],\n"
        "  [1800, 1801, 1802, ..., 1897, 1898, 1899],\n"
        "  [1900, 1901, 1902, ..., 1997, 1998, 1999]]], shape=[2,10,100])");

  // A 1000-element matrix is in full too, rows and all.
  const Tensor full(Shape{10, 100}, Tensor::arange(0, 1000).to_vector());
  const std::string printed = fmt::format("{}", full);
  CHECK(printed.find("...") == std::string::npos);
  CHECK(printed.starts_with("tensor([[" + count_up(0, 100) + "],\n [" + count_up(100, 200) + "],\n"));

  // A large Parameter prints summarised as well.
  const Parameter p("big", Tensor::arange(0, 1001));
  CHECK(fmt::format("{}", p) ==
        "Parameter 'big' containing:\ntensor([0, 1, 2, ..., 998, 999, 1000], shape=[1001], requires_grad)");
}
