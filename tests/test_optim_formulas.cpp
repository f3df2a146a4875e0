// Optimizer formulas: each optimizer against REFERENCE §3 evaluated in double inside the test,
// several steps with every option on, plus hand-computed first steps. Gradients are set by
// hand (optim_helpers.h), so these tests need no ops.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include <hitch/hitch.h>
#include "optim_helpers.h"

using namespace hitch;
using namespace hitch::optim;
using namespace optim_test;

namespace {

const std::vector<float> kInit = {0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 1.5f};  // a [3,2] table

// A deterministic gradient for step s with a zero in it (zeros must still be processed).
std::vector<float> grad_at(int s) {
  std::vector<float> g(kInit.size());
  for (std::size_t i = 0; i < g.size(); ++i)
    g[i] = static_cast<float>(std::sin(1.3 * static_cast<double>(i) + 0.7 * s) * (1.0 + 0.3 * s));
  g[static_cast<std::size_t>(s) % g.size()] = 0.0f;
  return g;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// ---- references in double, written from REFERENCE §3 --------------------------------------------

struct SgdRef {
  SGDOptions o;
  std::vector<double> buf;
  bool has_buf = false;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    std::vector<double> d(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      d[i] = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) d[i] += o.weight_decay * p[i];
    }
    if (o.momentum != 0) {
      if (!has_buf) {
        buf = d;  // first step: no (1 - dampening) factor
        has_buf = true;
      } else {
        for (std::size_t i = 0; i < p.size(); ++i) buf[i] = o.momentum * buf[i] + (1 - o.dampening) * d[i];
      }
      for (std::size_t i = 0; i < p.size(); ++i) d[i] = o.nesterov ? d[i] + o.momentum * buf[i] : buf[i];
    }
    for (std::size_t i = 0; i < p.size(); ++i) p[i] -= o.lr * d[i];
  }
};

struct AdamRef {
  double lr, b1, b2, eps, wd;
  bool amsgrad, maximize, decoupled;
  int t = 0;
  std::vector<double> m, v, vmax;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0), vmax.assign(p.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decoupled) p[i] *= 1 - lr * wd;
      double g = maximize ? -grad[i] : grad[i];
      if (!decoupled && wd != 0) g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      vmax[i] = std::max(vmax[i], v[i]);
      const double den = std::sqrt(amsgrad ? vmax[i] : v[i]) / std::sqrt(bc2) + eps;
      p[i] -= (lr / bc1) * m[i] / den;
    }
  }
};

struct AdagradRef {
  AdagradOptions o;
  int t = 0;
  std::vector<double> sum;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (sum.empty()) sum.assign(p.size(), o.initial_accumulator_value);
    ++t;
    const double clr = o.lr / (1 + (t - 1) * o.lr_decay);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) g += o.weight_decay * p[i];
      sum[i] += g * g;
      p[i] -= clr * g / (std::sqrt(sum[i]) + o.eps);
    }
  }
};

// Lazy Adam over rows of width w; grad rows may repeat (summed first).
struct SparseAdamRef {
  SparseAdamOptions o;
  std::size_t w;
  int t = 0;
  std::vector<double> m, v;
  void step(std::vector<double>& p, const std::vector<std::int64_t>& rows, const std::vector<float>& values) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    std::map<std::int64_t, std::vector<double>> g;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      auto& row = g[rows[k]];
      row.resize(w, 0.0);
      for (std::size_t d = 0; d < w; ++d) row[d] += values[k * w + d];
    }
    const double b1 = o.betas.first, b2 = o.betas.second;
    const double step_size = o.lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    for (auto& [r, row] : g)
      for (std::size_t d = 0; d < w; ++d) {
        const std::size_t i = static_cast<std::size_t>(r) * w + d;
        const double gi = o.maximize ? -row[d] : row[d];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] -= step_size * m[i] / (std::sqrt(v[i]) + o.eps);
      }
  }
};

}  // namespace

TEST_CASE("SGD matches REFERENCE 3.1 in double over 5 steps, every option on") {
  const std::vector<SGDOptions> configs = {
      {.lr = 0.1},
      {.lr = 0.1, .momentum = 0.9, .dampening = 0.3, .weight_decay = 0.05, .maximize = true},
      {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.01, .nesterov = true},
  };
  for (const SGDOptions& o : configs) {
    Parameter w("w", Tensor({3, 2}, kInit));
    SGD opt({w}, o);
    SgdRef ref{o, {}, false};
    std::vector<double> want = to_double(kInit);
    for (int s = 0; s < 5; ++s) {
      set_dense_grad(w, grad_at(s));
      opt.step();
      ref.step(want, to_double(grad_at(s)));
      check_close(values_of(w), want, 2e-6, 2e-6, "SGD step " + std::to_string(s));
    }
  }
}

TEST_CASE("SGD: the first momentum step has no dampening factor (hand-computed)") {
  Parameter w("w", Tensor({1}, {0.0f}));
  SGD opt({w}, {.lr = 1.0, .momentum = 0.9, .dampening = 0.5});
  set_dense_grad(w, {1.0f});
  opt.step();  // b = 1, p = -1
  CHECK(w.data()[0] == doctest::Approx(-1.0));
  set_dense_grad(w, {1.0f});
  opt.step();  // b = 0.9 * 1 + 0.5 * 1 = 1.4, p = -2.4
  CHECK(w.data()[0] == doctest::Approx(-2.4));
  CHECK(opt.state(w)->momentum_buffer[0] == doctest::Approx(1.4));
}

TEST_CASE("Adam and AdamW match REFERENCE 3.2/3.3 in double over 5 steps, every option on") {
  struct Config {
    double lr, b1, b2, eps, wd;
    bool amsgrad, maximize;
  };
  const std::vector<Config> configs = {
      {0.01, 0.9, 0.999, 1e-8, 0.0, false, false},
      {0.05, 0.8, 0.99, 1e-6, 0.1, true, true},
      {0.02, 0.5, 0.9, 1e-3, 0.3, true, false},  // large eps: its placement shows
  };
  for (const Config& c : configs)
    for (bool decoupled : {false, true}) {
      Parameter w("w", Tensor({3, 2}, kInit));
      std::unique_ptr<Optimizer> opt;
      if (decoupled)
        opt = std::make_unique<AdamW>(std::vector<Parameter>{w},
                                      AdamWOptions{.lr = c.lr, .betas = {c.b1, c.b2}, .eps = c.eps,
                                                   .weight_decay = c.wd, .amsgrad = c.amsgrad, .maximize = c.maximize});
      else
        opt = std::make_unique<Adam>(std::vector<Parameter>{w},
                                     AdamOptions{.lr = c.lr, .betas = {c.b1, c.b2}, .eps = c.eps,
                                                 .weight_decay = c.wd, .amsgrad = c.amsgrad, .maximize = c.maximize});
      AdamRef ref{c.lr, c.b1, c.b2, c.eps, c.wd, c.amsgrad, c.maximize, decoupled, 0, {}, {}, {}};
      std::vector<double> want = to_double(kInit);
      for (int s = 0; s < 5; ++s) {
        set_dense_grad(w, grad_at(s));
        opt->step();
        ref.step(want, to_double(grad_at(s)));
        check_close(values_of(w), want, 2e-6, 2e-6, std::string(decoupled ? "AdamW" : "Adam") + " step " + std::to_string(s));
      }
    }
}

TEST_CASE("Adam: the first step moves each element by about lr, and eps goes after the bias correction") {
  Parameter w("w", Tensor({2}, {1.0f, 1.0f}));
  Adam opt({w}, {.lr = 0.1, .eps = 1e-3});
  set_dense_grad(w, {2.0f, -0.5f});
  opt.step();
  // m = 0.1 g, v = 0.001 g^2, bc1 = 0.1, bc2 = 0.001: den = |g| + eps, p -= 0.1 * g / (|g| + eps)
  CHECK(w.data()[0] == doctest::Approx(1.0 - 0.1 * 2.0 / (2.0 + 1e-3)).epsilon(1e-6));
  CHECK(w.data()[1] == doctest::Approx(1.0 + 0.1 * 0.5 / (0.5 + 1e-3)).epsilon(1e-6));
  CHECK(opt.state(w)->step == 1);
}

TEST_CASE("AdamW: decoupled decay is applied to the pre-update value, also for a zero gradient") {
  Parameter w("w", Tensor({1}, {1.0f}));
  AdamW opt({w}, {.lr = 0.1, .weight_decay = 0.1});
  set_dense_grad(w, {0.0f});
  opt.step();  // decay 1 -> 0.99; zero grad: m = v = 0, update 0/(0+eps) = 0
  CHECK(w.data()[0] == doctest::Approx(0.99).epsilon(1e-7));
  CHECK(opt.state(w)->step == 1);
}

TEST_CASE("Adam amsgrad keeps the max of the raw second moment and uses the current bc2") {
  Parameter w("w", Tensor({1}, {0.0f}));
  Adam opt({w}, {.lr = 0.1, .betas = {0.5, 0.5}, .eps = 0.0, .amsgrad = true});
  set_dense_grad(w, {2.0f});
  opt.step();  // v = 2, vmax = 2
  set_dense_grad(w, {0.0f});
  opt.step();  // v = 1, vmax stays 2; m = 0.5; bc1 = bc2 = 0.75
  CHECK(opt.state(w)->max_exp_avg_sq[0] == doctest::Approx(2.0));
  CHECK(opt.state(w)->exp_avg_sq[0] == doctest::Approx(1.0));
  // step 1: p = -0.1 * (1/0.5) / (sqrt(2)/sqrt(0.5)) = -0.1; step 2: -= (0.1/0.75) * 0.5 / (sqrt(2)/sqrt(0.75))
  const double want = -0.1 - (0.1 / 0.75) * 0.5 / (std::sqrt(2.0) / std::sqrt(0.75));
  CHECK(w.data()[0] == doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("Adagrad matches REFERENCE 3.4 in double over 5 steps (lr_decay uses t-1)") {
  const std::vector<AdagradOptions> configs = {
      {.lr = 0.1},
      {.lr = 0.1, .lr_decay = 0.5, .weight_decay = 0.05, .initial_accumulator_value = 0.2, .eps = 1e-3, .maximize = true},
  };
  for (const AdagradOptions& o : configs) {
    Parameter w("w", Tensor({3, 2}, kInit));
    Adagrad opt({w}, o);
    AdagradRef ref{o, 0, {}};
    std::vector<double> want = to_double(kInit);
    for (int s = 0; s < 5; ++s) {
      set_dense_grad(w, grad_at(s));
      opt.step();
      ref.step(want, to_double(grad_at(s)));
      check_close(values_of(w), want, 2e-6, 2e-6, "Adagrad step " + std::to_string(s));
    }
  }
}

TEST_CASE("Adagrad: the first step uses the full lr, the second lr / (1 + lr_decay)") {
  Parameter w("w", Tensor({1}, {0.0f}));
  Adagrad opt({w}, {.lr = 1.0, .lr_decay = 1.0, .eps = 0.0});
  set_dense_grad(w, {3.0f});
  opt.step();  // S = 9, p = -1 * 3 / 3 = -1
  CHECK(w.data()[0] == doctest::Approx(-1.0));
  set_dense_grad(w, {4.0f});
  opt.step();  // S = 25, clr = 0.5, p = -1 - 0.5 * 4 / 5 = -1.4
  CHECK(w.data()[0] == doctest::Approx(-1.4));
}

TEST_CASE("SparseAdam matches REFERENCE 3.5 in double: lazy rows, duplicates summed, t per Parameter") {
  const SparseAdamOptions o{.lr = 0.05, .betas = {0.8, 0.95}, .eps = 1e-4, .maximize = true};
  Parameter w("w", Tensor({3, 2}, kInit));
  SparseAdam opt({w}, o);
  SparseAdamRef ref{o, 2, 0, {}, {}};
  std::vector<double> want = to_double(kInit);
  const std::vector<std::vector<std::int64_t>> rows = {{0, 2, 0}, {1}, {2, 2}, {0, 1}};
  for (std::size_t s = 0; s < rows.size(); ++s) {
    std::vector<float> values;
    for (std::size_t k = 0; k < rows[s].size(); ++k)
      for (int d = 0; d < 2; ++d) values.push_back(static_cast<float>(0.3 * static_cast<double>(k + 1) - 0.2 * d + 0.1 * static_cast<double>(s)));
    set_sparse_grad(w, rows[s], values);
    opt.step();
    ref.step(want, rows[s], values);
    check_close(values_of(w), want, 2e-6, 2e-6, "SparseAdam step " + std::to_string(s));
  }
  CHECK(opt.state(w)->step == 4);
}

TEST_CASE("SparseAdam: a present row with zero values moves, absent rows and their moments are frozen") {
  Parameter w("w", Tensor({3, 1}, {1.0f, 1.0f, 1.0f}));
  SparseAdam opt({w}, {.lr = 0.1});
  set_sparse_grad(w, {0, 1}, {1.0f, 1.0f});
  opt.step();
  const float row2 = w.data()[2];
  const float m2 = opt.state(w)->exp_avg[2];
  set_sparse_grad(w, {0}, {0.0f});  // row 0 present with 0, row 1 absent
  const float row0 = w.data()[0], row1 = w.data()[1];
  opt.step();
  CHECK(w.data()[0] < row0);  // m decays but stays positive: still moves
  CHECK(w.data()[1] == row1);
  CHECK(w.data()[2] == row2);
  CHECK(opt.state(w)->exp_avg[2] == m2);
  CHECK(opt.state(w)->exp_avg[1] == doctest::Approx(0.1));  // not decayed
}

TEST_CASE("SparseAdam: an empty sparse gradient advances t and changes nothing else (PyTorch 1.13 crashes)") {
  Parameter w("w", Tensor({2, 2}, {1, 2, 3, 4}));
  SparseAdam opt({w});
  set_sparse_grad(w, {1}, {0.5f, -0.5f});
  opt.step();
  const auto before = values_of(w);
  const auto m = opt.state(w)->exp_avg;
  set_sparse_grad(w, {}, {});  // every index was padding
  opt.step();
  CHECK(opt.state(w)->step == 2);
  CHECK(values_of(w) == before);
  CHECK(opt.state(w)->exp_avg == m);
}

TEST_CASE("Sparse gradients: SGD momentum and Adam equal their dense results, SGD and Adagrad touch only rows") {
  const std::vector<std::int64_t> rows = {2, 0, 2};
  const std::vector<float> values = {0.5f, -1.0f, 0.25f, 0.75f, 1.5f, -0.5f};
  auto run = [&](auto make, bool sparse) {
    Parameter w("w", Tensor({4, 2}, {0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 1.5f, 0.1f, 0.2f}));
    auto opt = make(w);
    for (int s = 0; s < 3; ++s) {
      if (sparse) {
        set_sparse_grad(w, rows, values);
      } else {
        std::vector<float> dense(8, 0.0f);
        for (std::size_t k = 0; k < rows.size(); ++k)
          for (std::size_t d = 0; d < 2; ++d) dense[static_cast<std::size_t>(rows[k]) * 2 + d] += values[k * 2 + d];
        set_dense_grad(w, dense);
      }
      opt->step();
    }
    return values_of(w);
  };
  auto sgd_momentum = [](Parameter& w) { return std::make_unique<SGD>(std::vector<Parameter>{w}, SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true}); };
  auto adam = [](Parameter& w) { return std::make_unique<Adam>(std::vector<Parameter>{w}, AdamOptions{.lr = 0.1, .amsgrad = true}); };
  auto adamw = [](Parameter& w) { return std::make_unique<AdamW>(std::vector<Parameter>{w}, AdamWOptions{.lr = 0.1}); };
  auto sgd = [](Parameter& w) { return std::make_unique<SGD>(std::vector<Parameter>{w}, SGDOptions{.lr = 0.1}); };
  auto adagrad = [](Parameter& w) { return std::make_unique<Adagrad>(std::vector<Parameter>{w}, AdagradOptions{.lr = 0.1, .lr_decay = 0.1}); };
  CHECK(run(sgd_momentum, true) == run(sgd_momentum, false));  // same float operations: bit-equal
  CHECK(run(adam, true) == run(adam, false));
  CHECK(run(adamw, true) == run(adamw, false));
  check_close(run(sgd, true), to_double(run(sgd, false)), 1e-6, 1e-6, "SGD sparse vs dense");
  check_close(run(adagrad, true), to_double(run(adagrad, false)), 1e-6, 1e-6, "Adagrad sparse vs dense");
  const auto untouched = run(adagrad, true);
  CHECK(untouched[2] == 0.25f);  // row 1 absent from the gradient
  CHECK(untouched[6] == 0.1f);   // row 3
}

TEST_CASE("Adagrad on a sparse gradient sums duplicates before squaring") {
  Parameter w("w", Tensor({2, 1}, {0.0f, 0.0f}));
  Adagrad opt({w}, {.lr = 1.0, .eps = 0.0});
  set_sparse_grad(w, {0, 0}, {1.0f, 2.0f});  // g = 3: S = 9 (not 1 + 4)
  opt.step();
  CHECK(opt.state(w)->sum[0] == doctest::Approx(9.0));
  CHECK(w.data()[0] == doctest::Approx(-1.0));
  CHECK(w.data()[1] == 0.0f);
}
