// clip_grad_norm (PyTorch's formula, dense and sparse gradients) and the LR schedules StepLR and
// CosineAnnealingLR (values of PyTorch's closed forms).
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include <hitch/hitch.h>
#include "optim_helpers.h"

using namespace hitch;
using namespace hitch::optim;
using namespace optim_test;

TEST_CASE("clip_grad_norm: total 2-norm over all gradients, scaled by max_norm / (total + 1e-6)") {
  Parameter a("a", Tensor({2}, {0, 0}));
  Parameter b("b", Tensor({1}, {0}));
  Parameter none("none", Tensor({1}, {0}));  // no gradient: ignored
  set_dense_grad(a, {3, 4});
  set_dense_grad(b, {12});
  const double total = clip_grad_norm({a, b, none}, 6.5);
  CHECK(total == doctest::Approx(13.0));
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad().to_vector()[0] == doctest::Approx(3 * coef));
  CHECK(a.grad().to_vector()[1] == doctest::Approx(4 * coef));
  CHECK(b.grad().to_vector()[0] == doctest::Approx(12 * coef));
  CHECK_FALSE(none.has_grad());
}

TEST_CASE("clip_grad_norm: below max_norm nothing changes, 1-norm and inf-norm") {
  Parameter a("a", Tensor({3}, {0, 0, 0}));
  set_dense_grad(a, {1, -2, 2});
  CHECK(clip_grad_norm({a}, 10.0) == doctest::Approx(3.0));
  CHECK(a.grad().to_vector() == std::vector<float>{1, -2, 2});
  CHECK(clip_grad_norm({a}, 10.0, 1.0) == doctest::Approx(5.0));
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(clip_grad_norm({a}, 1.0, inf) == doctest::Approx(2.0));
  CHECK(a.grad().to_vector()[1] == doctest::Approx(-2.0 / (2.0 + 1e-6)));
  Parameter nothing("n", Tensor({1}, {0}));
  CHECK(clip_grad_norm({nothing}, 1.0) == 0.0);
}

TEST_CASE("clip_grad_norm: a sparse gradient is coalesced (duplicates summed) and stays sparse") {
  Parameter w("w", Tensor({3, 1}, {0, 0, 0}));
  set_sparse_grad(w, {0, 0, 2}, {1, 2, 4});  // rows 0: 3, 2: 4 -> norm 5 (not sqrt(21))
  CHECK(clip_grad_norm({w}, 1.0) == doctest::Approx(5.0));
  CHECK(w.grad_store()->is_sparse());
  const auto g = w.grad().to_vector();
  CHECK(g[0] == doctest::Approx(3.0 / 5.0).epsilon(1e-5));
  CHECK(g[1] == 0.0f);
  CHECK(g[2] == doctest::Approx(4.0 / 5.0).epsilon(1e-5));
}

TEST_CASE("clip_grad_norm: errors") {
  Parameter a("a", Tensor({2}, {0, 0}));
  set_dense_grad(a, {std::nanf(""), 1});
  CHECK_THROWS_WITH_AS(clip_grad_norm({a}, 1.0, 2.0, true),
                       "clip_grad_norm: the total norm of order 2 of the gradients is nan, so it cannot be clipped; "
                       "pass error_if_nonfinite = false to scale the gradients by it anyway",
                       hitch::Error);
  CHECK(a.grad().to_vector()[1] == 1.0f);  // unchanged
  CHECK_THROWS_WITH_AS(clip_grad_norm({a}, -1.0), "clip_grad_norm: max_norm must be >= 0, but got -1", hitch::Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm({a}, 1.0, 0.0), "clip_grad_norm: norm_type must be > 0 (or infinity), but got 0",
                       hitch::Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm({a, a}, 1.0),
                       "clip_grad_norm: Parameter 'a' appears twice: position 0 and position 1; pass each Parameter "
                       "once (a tied Parameter is one Parameter)",
                       hitch::Error);
}

TEST_CASE("StepLR: lr = base * gamma^floor(epoch / step_size), per group") {
  Parameter a("a", Tensor({1}, {0}));
  Parameter b("b", Tensor({1}, {0}));
  SGD opt(std::vector<ParamGroup<SGDOptions>>{{.params = {a}, .options = {.lr = 0.1}},
                                              {.params = {b}, .options = {.lr = 1.0}}});
  StepLR sched(opt, 2, 0.5);
  const std::vector<double> want = {0.1, 0.1, 0.05, 0.05, 0.025, 0.025};
  for (std::size_t e = 0; e < want.size(); ++e) {
    CHECK(sched.last_epoch() == static_cast<std::int64_t>(e));
    CHECK(sched.get_last_lr()[0] == doctest::Approx(want[e]));
    CHECK(sched.get_last_lr()[1] == doctest::Approx(want[e] * 10));
    CHECK(opt.lr(0) == doctest::Approx(want[e]));
    sched.step();
  }
  CHECK_THROWS_WITH_AS(StepLR(opt, 0), "StepLR: step_size must be >= 1, but got 0", hitch::Error);
}

TEST_CASE("CosineAnnealingLR: eta_min + (base - eta_min)(1 + cos(pi e / T_max)) / 2, periodic past T_max") {
  Parameter a("a", Tensor({1}, {0}));
  Adam opt({a}, {.lr = 0.1});
  CosineAnnealingLR sched(opt, 4, 0.01);
  for (int e = 0; e <= 8; ++e) {
    const double want = 0.01 + 0.09 * (1 + std::cos(std::numbers::pi * e / 4.0)) / 2;
    CHECK(opt.lr(0) == doctest::Approx(want));
    CHECK(sched.get_last_lr()[0] == doctest::Approx(want));
    sched.step();
  }
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(opt, 0), "CosineAnnealingLR: T_max must be >= 1, but got 0", hitch::Error);
}

TEST_CASE("CosineAnnealingLR may take SparseAdam's lr to 0 (only the constructor requires lr > 0)") {
  Parameter w("w", Tensor({2, 1}, {1, 1}));
  SparseAdam opt({w}, {.lr = 0.1});
  CosineAnnealingLR sched(opt, 2);
  sched.step();
  sched.step();
  CHECK(opt.lr(0) == doctest::Approx(0.0));
  set_sparse_grad(w, {0}, {1});
  opt.step();  // lr 0: accepted, nothing moves
  CHECK(w.data()[0] == 1.0f);
}
