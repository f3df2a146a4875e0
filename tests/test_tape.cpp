// Tape tests: diamond graphs, accumulation, retain_graph, no-grad mode, in-place checks,
// backward misuse, graph printing and the tape's own bookkeeping.
#include <doctest/doctest.h>

#include <thread>

#include <hitch/hitch.h>

using namespace hitch;

TEST_CASE("tape: diamond b = a + a, c = b * b gives dc/da = 8a") {
  Tensor a = Tensor({3}, {1.0f, -2.0f, 0.5f}).requires_grad_();
  Tensor b = a + a;
  Tensor c = b * b;
  backward(sum(c));
  const Tensor g = a.grad();
  for (std::int64_t i = 0; i < 3; ++i) CHECK(g.at({i}) == doctest::Approx(8.0 * a.at({i})));
}

TEST_CASE("tape: a tensor read by two ops gets the sum of both contributions") {
  Parameter w("w", Tensor({2}, {3.0f, 4.0f}));
  Tensor y = sum(mul(w, 2.0f)) + sum(square(w));  // d/dw = 2 + 2w
  backward(y);
  CHECK(w.grad().at({0}) == doctest::Approx(8.0));
  CHECK(w.grad().at({1}) == doctest::Approx(10.0));
}

TEST_CASE("tape: gradients accumulate across backward calls until zero_grad") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  backward(sum(mul(w, 3.0f)));
  backward(sum(mul(w, 3.0f)));
  CHECK(w.grad().at({0}) == 6.0f);
  Tensor kept = w.grad();
  w.zero_grad(/*set_to_none=*/false);
  CHECK(w.has_grad());
  CHECK(w.grad().at({1}) == 0.0f);
  CHECK(kept.is_same(w.grad()));  // zeroed in place: the same gradient tensor
  w.zero_grad();  // set_to_none = true by default (PyTorch >= 2.0)
  CHECK_FALSE(w.has_grad());
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("tape: retain_graph allows a second backward, without it the second is an error") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  Tensor y = sum(square(w));
  backward(y, {}, {.retain_graph = true});
  backward(y);
  CHECK(w.grad().at({1}) == doctest::Approx(8.0));  // 2 * (2w) at w = 2
  const Tensor before = w.grad().clone();
  CHECK_THROWS_WITH_AS(backward(y),
                       doctest::Contains("was already backpropagated and its saved values were freed; pass "
                                         "BackwardOptions{.retain_graph = true}"),
                       Error);
  CHECK(w.grad().at({1}) == before.at({1}));
}

TEST_CASE("tape: backward through a freed node deeper in the graph is refused before any write") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  Tensor h = square(w);
  backward(sum(h));                 // frees the square node
  Tensor y = sum(mul(h, 2.0f));     // a new graph on top of the freed one
  const float g0 = w.grad().at({0});
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("(square) was already backpropagated"), Error);
  CHECK(w.grad().at({0}) == g0);
}

TEST_CASE("tape: backward on a non-scalar needs grad_output of the same shape") {
  Parameter w("w", Tensor({2, 3}, std::vector<float>(6, 1.0f)));
  Tensor y = mul(w, 2.0f);
  CHECK_THROWS_WITH_AS(backward(y),
                       "backward: a gradient can be created implicitly only for a one-element output, but the "
                       "output has shape [2,3]; pass grad_output",
                       Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({3, 2})),
                       "backward: grad_output has shape [3,2] but the output has shape [2,3]", Error);
  CHECK_FALSE(w.has_grad());
  backward(y, Tensor::full({2, 3}, 0.5f));
  CHECK(w.grad().at({1, 2}) == 1.0f);
}

TEST_CASE("tape: NoGradGuard records nothing and nests") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  const auto before = tape_size();
  {
    NoGradGuard outer;
    {
      NoGradGuard inner;
    }
    CHECK_FALSE(grad_enabled());
    Tensor y = sum(square(w));
    CHECK_FALSE(y.requires_grad());
    CHECK(tape_size() == before);
    CHECK_THROWS_WITH_AS(backward(y),
                         "backward: the output of shape [] does not require grad: it was made under NoGradGuard or "
                         "from tensors none of which requires grad",
                         Error);
  }
  CHECK(grad_enabled());
  CHECK(sum(square(w)).requires_grad());
}

TEST_CASE("tape: tensors that require no grad get no gradient and record nothing") {
  Tensor a({2}, {1.0f, 2.0f});
  const auto before = tape_size();
  Tensor y = sum(square(a));
  CHECK_FALSE(y.requires_grad());
  CHECK(tape_size() == before);
}

TEST_CASE("tape: a frozen Parameter gets no gradient while others do") {
  Parameter frozen("frozen", Tensor({2}, {1.0f, 2.0f}));
  frozen.set_requires_grad(false);
  Parameter w("w", Tensor({2}, {3.0f, 4.0f}));
  backward(sum(mul(frozen, w)));
  CHECK_FALSE(frozen.has_grad());
  CHECK(w.grad().at({1}) == 2.0f);
}

TEST_CASE("tape: intermediate gradients do not outlive backward and the graph leaves the tape") {
  const auto before = tape_size();
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  Tensor h = square(w);
  Tensor y = sum(h);
  CHECK(tape_size() == before + 2);
  backward(y);
  CHECK_FALSE(h.grad().defined());
  CHECK(tape_size() <= before);  // both nodes left (and backward pruned whatever was dead)
}

TEST_CASE("tape: graphs nobody holds are pruned, so the tape stays bounded") {
  Parameter w("w", Tensor({4}, {1.0f, 2.0f, 3.0f, 4.0f}));
  for (int i = 0; i < 5000; ++i) (void)sum(square(w));  // forward only, result dropped
  CHECK(tape_size() < 2100);
}

TEST_CASE("tape: backward refuses values written in place after they were saved") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  Tensor y = sum(square(w));  // square's backward reads w
  w.value().set({0}, 5.0f);   // as an optimizer step would
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("reads a value that was modified in place after it was recorded"),
                       Error);
  CHECK_FALSE(w.has_grad());
}

TEST_CASE("tape: a graph must be backpropagated on the thread that recorded it") {
  Parameter w("w", Tensor({2}, {1.0f, 2.0f}));
  Tensor y = sum(square(w));
  std::string message;
  std::thread t([&] {
    try {
      backward(y);
    } catch (const Error& e) {
      message = e.what();
    }
  });
  t.join();
  CHECK(message.find("is not on this thread's tape") != std::string::npos);
  backward(y);  // fine on the recording thread
  CHECK(w.grad().at({1}) == 4.0f);
}

TEST_CASE("tape: backward on a leaf adds the seed to its gradient") {
  Parameter w("w", Tensor::scalar(2.0f));
  backward(w.value());
  CHECK(w.grad().item() == 1.0f);
}

TEST_CASE("tape: format_graph names the ops, shapes and the Parameters reached") {
  Parameter table("table", Tensor::ones({3, 2}));
  Parameter v("v", Tensor::ones({2}));
  Tensor y = sum(mul(table, v));
  const std::string g = format_graph(y);
  CHECK(g.find("sum -> []") != std::string::npos);
  CHECK(g.find("mul -> [3,2]") != std::string::npos);
  CHECK(g.find("Parameter 'table' [3,2]") != std::string::npos);
  CHECK(g.find("Parameters reached: 'table' [3,2] 'v' [2]") != std::string::npos);
}

TEST_CASE("tape: format_graph as DOT: a node per op and per leaf, an edge per read, names escaped") {
  std::string dot, leaf_dot, released_dot;
  std::thread fresh([&] {  // a fresh thread: its node numbers start at 1
    Parameter w("w \"q\" \\", Tensor({2}, {1.0f, 2.0f}));  // a quote and a backslash in the name
    const Tensor x = Tensor::ones({2});
    const Tensor ww = w.value() * w.value();  // #1
    const Tensor wx = w.value() * x;          // #2
    Tensor y = sum(ww + wx);                  // #3 add, #4 sum
    dot = format_graph(y, GraphFormat::dot);
    leaf_dot = format_graph(w, GraphFormat::dot);
    backward(y);
    released_dot = format_graph(y, GraphFormat::dot);
  });
  fresh.join();
  CHECK(dot == "digraph hitch {\n"
               "  node [fontname=\"Helvetica\", fontsize=11];\n"
               "  n4 [label=\"#4 sum\\n[]\"];\n"
               "  n4 -> n3;\n"
               "  n3 [label=\"#3 add\\n[2]\"];\n"
               "  n3 -> n1;\n"
               "  n3 -> n2;\n"
               "  n2 [label=\"#2 mul\\n[2]\"];\n"
               "  l1 [shape=box, style=filled, fillcolor=lightblue, label=\"w \\\"q\\\" \\\\\\n[2]\"];\n"
               "  n2 -> l1;\n"
               "  l2 [shape=box, style=dashed, label=\"leaf [2]\"];\n"
               "  n2 -> l2;\n"
               "  n1 [label=\"#1 mul\\n[2]\"];\n"
               "  n1 -> l1;\n"
               "  n1 -> l1;\n"
               "}\n");
  CHECK(leaf_dot == "digraph hitch {\n"
                    "  node [fontname=\"Helvetica\", fontsize=11];\n"
                    "  l1 [shape=box, style=filled, fillcolor=lightblue, label=\"w \\\"q\\\" \\\\\\n[2]\"];\n"
                    "}\n");
  CHECK(released_dot == "digraph hitch {\n"
                        "  node [fontname=\"Helvetica\", fontsize=11];\n"
                        "  n4 [label=\"#4 sum\\n(released by an earlier backward)\"];\n"
                        "}\n");
}
