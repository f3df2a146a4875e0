// Golden parity with PyTorch 1.13 for the shape and indexing ops: every `kind op_shape` case in
// tests/fixtures/parity (written by scripts/parity/ops_shape.py; format: FORMAT.md there). The
// output and the gradient of every input (backward of sum(out * grad_output)) must match within
// 1e-4 abs + 1e-4 rel.
#include <doctest/doctest.h>

#include <set>
#include <sstream>
#include <string>

#include <hitch/hitch.h>
#include "parity.h"

using namespace hitch;

namespace {

// "2,-1,3" -> {2, -1, 3}
Shape parse_shape(const std::string& text) {
  Shape shape;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) shape.push_back(std::stoll(item));
  return shape;
}

std::int64_t int_attr(const parity::Case& c, const std::string& key) {
  const auto v = c.attr_int(key);
  REQUIRE_MESSAGE(v.has_value(), c.name, ": attr ", key, " is none");
  return *v;
}

Tensor run_op(const parity::Case& c, const std::vector<Tensor>& x) {
  const std::string& op = c.attr("op");
  if (op == "squeeze") {
    const auto dim = c.attr_int("dim");
    return dim ? squeeze(x[0], *dim) : squeeze(x[0]);
  }
  if (op == "expand") return expand(x[0], parse_shape(c.attr("shape")));
  const std::int64_t dim = int_attr(c, "dim");
  if (op == "cat") return cat(std::span<const Tensor>(x), dim);
  if (op == "stack") return stack(std::span<const Tensor>(x), dim);
  if (op == "index_select") return index_select(x[0], dim, c.i("index"));
  if (op == "gather") return gather(x[0], dim, c.i("index"));
  if (op == "narrow") return narrow(x[0], dim, int_attr(c, "start"), int_attr(c, "length"));
  if (op == "slice") return slice(x[0], dim, int_attr(c, "start"), int_attr(c, "end"), int_attr(c, "step"));
  if (op == "select") return select(x[0], dim, int_attr(c, "index"));
  if (op == "unsqueeze") return unsqueeze(x[0], dim);
  FAIL(c.name, ": unknown op ", op);
  return {};
}

}  // namespace

TEST_CASE("parity: op_shape cases match PyTorch 1.13 (output and every input gradient)") {
  const auto cases = parity::load_kind("op_shape");
  REQUIRE(cases.size() >= 30);
  std::set<std::string> ops;
  for (const auto& c : cases) {
    INFO(c.name);
    ops.insert(c.attr("op"));
    std::vector<Tensor> x;
    for (std::int64_t i = 0; i < int_attr(c, "num_inputs"); ++i)
      x.push_back(parity::fresh_leaf(c.f("input" + std::to_string(i))));
    const Tensor out = run_op(c, x);
    CHECK_MESSAGE(parity::compare(c, "output", out, c.f("expected_output")).empty(),
                  parity::compare(c, "output", out, c.f("expected_output")));
    backward(out, c.f("grad_output"));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const std::string what = "expected_grad_input" + std::to_string(i);
      // An input that got no gradient (an empty output) compares as zeros.
      const std::string diff = parity::compare(c, what, parity::grad_or_zeros(x[i]), c.f(what));
      CHECK_MESSAGE(diff.empty(), diff);
    }
  }
  // Every op of the family has cases.
  CHECK(ops == std::set<std::string>{"cat", "stack", "index_select", "gather", "narrow", "slice", "select", "unsqueeze",
                                     "squeeze", "expand"});
}
