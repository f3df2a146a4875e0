// tests/op_table.h: the gradcheck table shared by the op tests (test_ops*.cpp, test_nn_blocks.cpp):
// an OpCase is a name, the input shapes of each gradcheck and the function; run_table draws
// every input from a seeded Generator in table order and gradchecks it. Also the helpers those
// files all use: CHECK_REJECTS (a rejected call throws the exact message and records nothing),
// check_values, leaf, and the targets of a cross_entropy check.
// Op-specific fixtures (broadcast forms, class weights, index checks) stay in their test file.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

// tape_size() before and after a call that must throw: a rejected call records nothing.
#define CHECK_REJECTS(expr, msg)                        \
  do {                                                  \
    const std::size_t tape_before = hitch::tape_size(); \
    CHECK_THROWS_WITH_AS(expr, msg, hitch::Error);      \
    CHECK(hitch::tape_size() == tape_before);           \
  } while (0)

namespace op_test {

using Inputs = std::vector<hitch::Tensor>;
using Fn = std::function<hitch::Tensor(const Inputs&)>;

// How an input is drawn from uniform u in [0, 1). Signed: |x| = 0.5 + u, sign from a second draw
// (away from the kinks of relu and abs and from zero divisors); Positive: 0.5 + u, no second
// draw (log, sqrt, fractional powers); Target: u, no grad (bce's target); Mask: u < 0.5 ? 0 : 1,
// no grad (where's condition, masked_fill's mask). Only Signed draws twice per element, so a
// table's draws (and values) depend on the order of its cases and their domains.
enum class Domain { Signed, Positive, Target, Mask };

struct OpCase {
  std::string name;
  std::vector<std::vector<hitch::Shape>> checks;  // one gradcheck per entry: the inputs' shapes
  Fn f;
  std::vector<Domain> domains = {};  // per input; Signed when absent
};

// Single-input checks, one per shape.
inline std::vector<std::vector<hitch::Shape>> each(std::initializer_list<hitch::Shape> shapes) {
  std::vector<std::vector<hitch::Shape>> out;
  for (const auto& s : shapes) out.push_back({s});
  return out;
}

inline hitch::Tensor draw(const hitch::Shape& shape, Domain domain, hitch::Generator& gen) {
  hitch::Tensor t = hitch::Tensor::uniform(shape, 0.0f, 1.0f, gen);
  float* v = t.data();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    switch (domain) {
      case Domain::Target: break;
      case Domain::Mask: v[i] = v[i] < 0.5f ? 0.0f : 1.0f; break;
      case Domain::Positive: v[i] = 0.5f + v[i]; break;
      case Domain::Signed: {
        const float magnitude = 0.5f + v[i];  // [0.5, 1.5)
        v[i] = gen.uniform() < 0.5 ? -magnitude : magnitude;
        break;
      }
    }
  }
  if (domain != Domain::Target && domain != Domain::Mask) t.requires_grad_();
  return t;
}

// Runs every check of every case, drawing the inputs from one Generator(seed) in table order;
// returns the number of gradchecks run. Each check is labelled "name [shape] . [shape]".
inline int run_table(const std::vector<OpCase>& table, std::uint64_t seed) {
  hitch::Generator gen(seed);
  int runs = 0;
  for (const auto& c : table) {
    for (const auto& shapes : c.checks) {
      Inputs inputs;
      std::vector<std::string> shape_names;
      for (std::size_t i = 0; i < shapes.size(); ++i) {
        const Domain d = i < c.domains.size() ? c.domains[i] : Domain::Signed;
        inputs.push_back(draw(shapes[i], d, gen));
        shape_names.push_back(hitch::shape_str(shapes[i]));
      }
      const std::string label = fmt::format("{} {}", c.name, fmt::join(shape_names, " . "));
      const hitch::GradcheckResult r = hitch::gradcheck(label, c.f, inputs);
      CHECK_MESSAGE(r.ok, r.message);
      CHECK_MESSAGE(r.checked > 0, label);
      ++runs;
    }
  }
  return runs;
}

// t has that shape and values equal to want within tol relative (|got - want| <= tol (1 + |want|));
// tol = 0 asks for exact equality. A NaN in want matches NaN, an infinity matches only itself.
inline void check_values(const hitch::Tensor& t, const hitch::Shape& shape, const std::vector<float>& want,
                         float tol = 1e-6f) {
  REQUIRE(t.shape() == shape);
  const auto got = t.to_vector();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const bool ok = std::isnan(want[i])   ? std::isnan(got[i])
                    : std::isinf(want[i]) ? got[i] == want[i]
                                          : std::abs(got[i] - want[i]) <= tol * (1.0f + std::abs(want[i]));
    CHECK_MESSAGE(ok, fmt::format("element {}: got {}, want {}", i, got[i], want[i]));
  }
}

// A tensor of that shape and values that requires grad.
inline hitch::Tensor leaf(hitch::Shape shape, std::vector<float> values) {
  hitch::Tensor t(std::move(shape), std::move(values));
  t.requires_grad_();
  return t;
}

// Targets (3b + 1) % C for logits [B,C]; with ignore, position 1 (if any) is ignore_index.
inline hitch::IndexTensor targets_for(const hitch::Tensor& logits, bool ignore = false,
                                      std::int64_t ignore_index = -100) {
  std::vector<std::int64_t> t;
  for (std::int64_t b = 0; b < logits.size(0); ++b) t.push_back((3 * b + 1) % logits.size(1));
  if (ignore && t.size() > 1) t[1] = ignore_index;
  return hitch::IndexTensor({logits.size(0)}, t);
}

}  // namespace op_test
