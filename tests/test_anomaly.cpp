// Anomaly mode (core/anomaly.h): backward stops at the first node whose gradient has a NaN or
// Inf, naming the node, the input, the element, the shapes and the RecordScope path; without
// the guard the same backward runs through; the guard and the scopes are per thread and nest.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "hitch.h"

using namespace hitch;

namespace {
Tensor leaf(Shape shape, std::vector<float> values, bool requires_grad = true) {
  Tensor t(std::move(shape), std::move(values));
  t.requires_grad_(requires_grad);
  return t;
}
std::uint64_t seq_of(const Tensor& t) { return t.impl().grad_fn->seq; }
constexpr float kInf = std::numeric_limits<float>::infinity();
}  // namespace

TEST_CASE("anomaly: exact message for a NaN gradient of a leaf input") {
  Tensor x = leaf({3}, {1, -1, 4});
  DetectAnomalyGuard anomaly;
  Tensor r = sqrt(x);  // sqrt(-1) = NaN, and its gradient 0.5 / NaN = NaN
  Tensor loss = sum(r);
  CHECK_THROWS_WITH_AS(backward(loss),
                       fmt::format("backward (anomaly mode): node #{} (sqrt) produced a gradient with NaN for input 0 "
                                   "(leaf [3]) at element [1]; the node has inputs [3] and output [3] and was recorded "
                                   "outside any RecordScope",
                                   seq_of(r))
                           .c_str(),
                       Error);
  CHECK_FALSE(x.impl().grad);  // the bad contribution was not added
}

TEST_CASE("anomaly: an infinite gradient between two ops names the producing node and the scope path") {
  Tensor x = leaf({2, 2}, {1, 2, 0, 4});
  Tensor w = leaf({2, 2}, {1, 1, 1, 1});
  Tensor h, l, loss;
  {
    DetectAnomalyGuard anomaly;
    RecordScope model("model.forward");
    h = x * w;
    RecordScope head("head");
    l = log(h);  // log(0) = -inf, gradient 1/0 = inf
    loss = sum(l);
    CHECK_THROWS_WITH_AS(backward(loss),
                         fmt::format("backward (anomaly mode): node #{} (log) produced a gradient with inf for input 0 "
                                     "([2,2] from node #{} mul) at element [1,0]; the node has inputs [2,2] and output "
                                     "[2,2] and was recorded in scope \"model.forward > head\"",
                                     seq_of(l), seq_of(h))
                             .c_str(),
                         Error);
  }
  // Nothing reached the leaves, and the graph is kept: a plain backward now runs through, once
  // (the aborted pass left no intermediate gradient behind to be added twice).
  CHECK_FALSE(x.impl().grad);
  CHECK_FALSE(w.impl().grad);
  CHECK_FALSE(h.impl().grad);
  backward(loss);
  CHECK(x.grad().to_vector() == std::vector<float>{1.0f, 0.5f, kInf, 0.25f});
  const std::vector<float> gw = w.grad().to_vector();  // x / h: 0 * inf = NaN at [1,0]
  CHECK((gw[0] == 1.0f && gw[1] == 1.0f && std::isnan(gw[2]) && gw[3] == 1.0f));
}

TEST_CASE("anomaly: embedding table rows name the table row and column") {
  Parameter table("items", Tensor({3, 2}, {1, 2, 3, 4, 5, 6}));
  const Tensor psw = leaf({2}, {1, kInf}, false);
  DetectAnomalyGuard anomaly;
  RecordScope scope("history");
  Tensor bag = embedding_bag(IndexTensor{0, 2}, IndexTensor{0}, table, {.mode = BagMode::Sum, .sparse = true}, psw);
  Tensor loss = sum(bag);
  CHECK_THROWS_WITH_AS(backward(loss),
                       fmt::format("backward (anomaly mode): node #{} (embedding_bag) produced a gradient with inf for "
                                   "input 0 (Parameter 'items' [3,2]) at element [2,0]; the node has inputs [3,2], [2] "
                                   "and output [1,2] and was recorded in scope \"history\"",
                                   seq_of(bag))
                           .c_str(),
                       Error);
  CHECK_FALSE(table.has_grad());
}

TEST_CASE("anomaly: off by default, the guard nests and restores, and is per thread") {
  CHECK_FALSE(anomaly_mode_enabled());
  Tensor x = leaf({1}, {0});
  Tensor loss = sum(log(x));
  backward(loss);  // no guard: the infinite gradient goes through
  CHECK(std::isinf(x.grad().item()));
  {
    DetectAnomalyGuard on;
    CHECK(anomaly_mode_enabled());
    bool other_thread = true;
    std::thread t([&] { other_thread = anomaly_mode_enabled(); });
    t.join();
    CHECK_FALSE(other_thread);
    {
      DetectAnomalyGuard off(false);
      CHECK_FALSE(anomaly_mode_enabled());
    }
    CHECK(anomaly_mode_enabled());
  }
  CHECK_FALSE(anomaly_mode_enabled());
}

TEST_CASE("anomaly: RecordScope nests and pops; finite gradients pass unchanged") {
  CHECK(record_scope_path().empty());
  {
    RecordScope a("model");
    RecordScope b("tower.1");
    CHECK(record_scope_path() == "model > tower.1");
  }
  CHECK(record_scope_path().empty());

  Tensor x = leaf({2}, {1, 2});
  {
    DetectAnomalyGuard anomaly;
    backward(sum(x * x));
  }
  CHECK(x.grad().to_vector() == std::vector<float>{2, 4});
}
