// Golden parity with PyTorch 1.13 for the softmax family and the losses: every `kind op_loss`
// case in tests/fixtures/parity (written by scripts/parity/ops_loss.py; format: FORMAT.md there).
// The op named by attr `op` runs on the case's inputs, then backward of sum(out * grad_output);
// output and the gradient of every differentiated input must match within 1e-4 abs + 1e-4 rel.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>

#include <hitch/hitch.h>
#include "parity.h"

using namespace hitch;

namespace {

Reduction parse_reduction(const std::string& name) {
  if (name == "none") return Reduction::None;
  if (name == "mean") return Reduction::Mean;
  REQUIRE_MESSAGE(name == "sum", "unknown reduction ", name);
  return Reduction::Sum;
}

CrossEntropyOptions class_options(const parity::Case& c) {
  return {.weight = c.has("weight") ? c.f("weight") : Tensor(),
          .ignore_index = c.attr_int("ignore_index").value(),
          .reduction = parse_reduction(c.attr("reduction")),
          .label_smoothing = static_cast<float>(c.attr_float("label_smoothing").value_or(0.0))};
}

}  // namespace

TEST_CASE("parity op_loss: softmax, log_softmax, log_sigmoid, cross_entropy, nll_loss, cosine_similarity") {
  const auto cases = parity::load_kind("op_loss");
  REQUIRE(cases.size() >= 40);
  std::map<std::string, int> per_op;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const std::string& op = c.attr("op");
    const Tensor x = parity::fresh_leaf(c.f("input"));
    const Tensor x2 = c.has("input2") ? parity::fresh_leaf(c.f("input2")) : Tensor();
    Tensor out;
    if (op == "softmax") {
      out = softmax(x, c.attr_int("dim").value());
    } else if (op == "log_softmax") {
      out = log_softmax(x, c.attr_int("dim").value());
    } else if (op == "log_sigmoid") {
      out = log_sigmoid(x);
    } else if (op == "cross_entropy") {
      out = cross_entropy(x, c.i("targets"), class_options(c));
    } else if (op == "nll_loss") {
      out = nll_loss(x, c.i("targets"), class_options(c));
    } else if (op == "cosine_similarity") {
      out = cosine_similarity(x, x2, c.attr_int("dim").value(), static_cast<float>(c.attr_float("eps").value()));
    } else {
      FAIL("unknown op ", op);
    }
    ++per_op[op];
    CHECK_MESSAGE(parity::compare(c, "output", out, c.f("expected_output")).empty(),
                  parity::compare(c, "output", out, c.f("expected_output")));
    backward(out, c.f("grad_output"));
    // An empty input gets no gradient from backward; compare it as zeros of its shape.
    const std::string e1 = parity::compare(c, "grad input", parity::grad_or_zeros(x), c.f("expected_grad_input"));
    CHECK_MESSAGE(e1.empty(), e1);
    if (x2.defined()) {
      const std::string e2 = parity::compare(c, "grad input2", x2.grad(), c.f("expected_grad_input2"));
      CHECK_MESSAGE(e2.empty(), e2);
    }
  }
  for (const char* op : {"softmax", "log_softmax", "log_sigmoid", "cross_entropy", "nll_loss", "cosine_similarity"})
    CHECK_MESSAGE(per_op[op] >= 2, op);
}
