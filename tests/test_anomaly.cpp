// Anomaly mode (core/anomaly.h). Forward: the first op that makes a NaN or Inf from finite inputs
// throws, naming the op, its node, the shapes, the element and the RecordScope path, and records
// nothing; a Parameter holding a NaN is reported by name at the first op that reads it; an op
// whose input is already non-finite is not blamed. Backward: it stops at the first node whose
// gradient has a NaN or Inf, naming the node, the input, the element, the shapes and the scope
// path, and never blames a node whose incoming gradient was already non-finite. Without the guard
// the same code runs through; the guard and the scopes are per thread and nest.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include <hitch/hitch.h>

using namespace hitch;

namespace {
Tensor leaf(Shape shape, std::vector<float> values, bool requires_grad = true) {
  Tensor t(std::move(shape), std::move(values));
  t.requires_grad_(requires_grad);
  return t;
}
std::uint64_t seq_of(const Tensor& t) { return t.impl().grad_fn->seq; }
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Records one node (then lets it go) and returns its number: the next number after it is +1.
std::uint64_t probe_seq() {
  Tensor probe = leaf({1}, {1});
  return seq_of(probe * 1.0f);
}

// Bitwise equality of values (NaN == NaN), for inputs a refused op must leave as they were.
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
}  // namespace

TEST_CASE("anomaly: exact message for an infinite gradient of a leaf input (sqrt at 0: forward finite)") {
  Tensor x = leaf({3}, {1, 0, 4});
  DetectAnomalyGuard anomaly;
  Tensor r = sqrt(x);  // sqrt(0) = 0 passes the forward check; its gradient 0.5 / 0 = inf
  Tensor loss = sum(r);
  CHECK_THROWS_WITH_AS(backward(loss),
                       fmt::format("backward (anomaly mode): node #{} (sqrt) produced a gradient with inf for input 0 "
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
    l = sqrt(h);  // sqrt(0) = 0, gradient 0.5 / 0 = inf
    loss = sum(l);
    CHECK_THROWS_WITH_AS(backward(loss),
                         fmt::format("backward (anomaly mode): node #{} (sqrt) produced a gradient with inf for input 0 "
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
  const auto d = [](float v) { return 0.5f / std::sqrt(v); };  // d sqrt(h) / dh, w = 1
  CHECK(x.grad().to_vector() == std::vector<float>{d(1), d(2), kInf, d(4)});
  const std::vector<float> gw = w.grad().to_vector();  // x * d: 0 * inf = NaN at [1,0]
  CHECK((gw[0] == d(1) && gw[1] == 2 * d(2) && std::isnan(gw[2]) && gw[3] == 4 * d(4)));
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

TEST_CASE("anomaly: RecordScope nests and pops, finite gradients pass unchanged") {
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

// ---- forward: the op that makes the first NaN or Inf ------------------------------------------

TEST_CASE("anomaly forward: mean(log(s - 1)) with some s < 1 throws at the log, not later") {
  Tensor s = leaf({4}, {2, 0.5f, 3, 1.5f});
  {  // without the guard: a NaN loss, and backward runs through with finite gradients
    Tensor loss = mean(log(s - 1.0f));
    CHECK(std::isnan(loss.item()));
    backward(loss);
    for (float g : s.grad().to_vector()) CHECK(std::isfinite(g));
    s.impl().grad.reset();
  }
  DetectAnomalyGuard anomaly;
  Tensor shifted = s - 1.0f;  // {1, -0.5, 2, 0.5}: finite
  const std::uint64_t seq = seq_of(shifted) + 1;
  const std::size_t tape = tape_size();
  const std::vector<float> before = shifted.to_vector();
  CHECK_THROWS_WITH_AS(log(shifted),
                       fmt::format("log (anomaly mode): produced NaN at output element 1 (index [1]) from finite "
                                   "inputs; inputs [4], output [4]; node #{}, not recorded; called outside any "
                                   "RecordScope",
                                   seq)
                           .c_str(),
                       Error);
  // Nothing recorded (the count and the numbering are as before), the input unchanged.
  CHECK(tape_size() == tape);
  CHECK(probe_seq() == seq);  // no number was used
  CHECK(shifted.to_vector() == before);
}

TEST_CASE("anomaly forward: log(s) * s blames the log, with the RecordScope path, not the mul") {
  Tensor s = leaf({2, 2}, {1, 2, 3, -4});
  DetectAnomalyGuard anomaly;
  RecordScope model("model.forward");
  RecordScope head("head");
  const std::uint64_t seq = probe_seq() + 1;
  const std::size_t tape = tape_size();
  CHECK_THROWS_WITH_AS(log(s) * s,
                       fmt::format("log (anomaly mode): produced NaN at output element 3 (index [1,1]) from finite "
                                   "inputs; inputs [2,2], output [2,2]; node #{}, not recorded; called in scope "
                                   "\"model.forward > head\"",
                                   seq)
                           .c_str(),
                       Error);
  CHECK(tape_size() == tape);
  CHECK(s.to_vector() == std::vector<float>{1, 2, 3, -4});
}

TEST_CASE("anomaly forward: sqrt of a negative on plain tensors and under NoGradGuard (no node)") {
  const Tensor x({3}, {4, -1, 9});  // requires no grad: the op records nothing, and is checked all the same
  DetectAnomalyGuard anomaly;
  const std::size_t tape = tape_size();
  CHECK_THROWS_WITH_AS(sqrt(x),
                       "sqrt (anomaly mode): produced NaN at output element 1 (index [1]) from finite inputs; inputs "
                       "[3], output [3]; no node (no input requires grad); called outside any RecordScope",
                       Error);
  Tensor p = leaf({3}, {4, -1, 9});
  {
    NoGradGuard no_grad;
    CHECK_THROWS_WITH_AS(sqrt(p),
                         "sqrt (anomaly mode): produced NaN at output element 1 (index [1]) from finite inputs; inputs "
                         "[3], output [3]; no node (grad mode is off); called outside any RecordScope",
                         Error);
  }
  CHECK_THROWS_WITH_AS(log(Tensor({2}, {0, 1})),  // the pole: log(0) = -inf
                       "log (anomaly mode): produced -inf at output element 0 (index [0]) from finite inputs; inputs "
                       "[2], output [2]; no node (no input requires grad); called outside any RecordScope",
                       Error);
  CHECK(tape_size() == tape);
  CHECK(x.to_vector() == std::vector<float>{4, -1, 9});
  CHECK(p.to_vector() == std::vector<float>{4, -1, 9});
}

TEST_CASE("anomaly forward: a leaf that requires grad and holds an Inf is named where it enters") {
  Tensor x = leaf({2}, {1, kInf});
  DetectAnomalyGuard anomaly;
  const std::uint64_t seq = probe_seq() + 1;
  const std::size_t tape = tape_size();
  CHECK_THROWS_WITH_AS(x * 2.0f,
                       fmt::format("mul_scalar (anomaly mode): input 0, leaf [2] (requires grad), holds inf at element "
                                   "1 (index [1]), which enters the graph here; inputs [2], output [2]; node #{}, not "
                                   "recorded; called outside any RecordScope",
                                   seq)
                           .c_str(),
                       Error);
  CHECK(tape_size() == tape);
  CHECK(x.to_vector() == std::vector<float>{1, kInf});
}

TEST_CASE("anomaly forward: 0/0 in div (broadcast) and exp overflow") {
  Tensor a = leaf({2, 2}, {1, 2, 0, 4});
  Tensor b = leaf({2}, {0.5f, 2}, false);
  Tensor c = leaf({2}, {0, 2});
  DetectAnomalyGuard anomaly;
  const std::uint64_t seq = probe_seq() + 1;
  const std::size_t tape = tape_size();
  CHECK(div(a, b).to_vector() == std::vector<float>{2, 1, 0, 2});  // finite: passes, and records
  CHECK_THROWS_WITH_AS(div(a, c),  // 1/0 = inf at [0,0] comes first
                       fmt::format("div (anomaly mode): produced inf at output element 0 (index [0,0]) from finite "
                                   "inputs; inputs [2,2], [2], output [2,2]; node #{}, not recorded; called outside any "
                                   "RecordScope",
                                   seq + 1)
                           .c_str(),
                       Error);
  Tensor zero = leaf({2, 2}, {1, 2, 0, 4});
  Tensor den = leaf({2, 2}, {1, 2, 0, 4});
  CHECK_THROWS_WITH_AS(div(zero, den),  // 0/0 = NaN at [1,0]
                       fmt::format("div (anomaly mode): produced NaN at output element 2 (index [1,0]) from finite "
                                   "inputs; inputs [2,2], [2,2], output [2,2]; node #{}, not recorded; called outside "
                                   "any RecordScope",
                                   seq + 1)
                           .c_str(),
                       Error);
  Tensor z = leaf({3}, {1, 100, -100});
  CHECK_THROWS_WITH_AS(exp(z),  // e^100 overflows float; e^-100 underflows to 0, which is finite
                       fmt::format("exp (anomaly mode): produced inf at output element 1 (index [1]) from finite "
                                   "inputs; inputs [3], output [3]; node #{}, not recorded; called outside any "
                                   "RecordScope",
                                   seq + 1)
                           .c_str(),
                       Error);
  CHECK(tape_size() == tape);  // the finite div's node was released with its temporary output
  CHECK(c.to_vector() == std::vector<float>{0, 2});
}

TEST_CASE("anomaly forward: an op whose input is already non-finite is not blamed") {
  Tensor s = leaf({2}, {-1, 2});
  Tensor bad = log(s);  // made before the guard: NaN at [0]
  const Tensor mask_inf({2}, {-kInf, 0});  // plain data: a -inf mask is intended
  Tensor scores = leaf({2, 2}, {1, 2, 3, 4});
  DetectAnomalyGuard anomaly;
  Tensor y = bad * 2.0f;  // NaN in, NaN out: not this op's doing
  CHECK(std::isnan(y.to_vector()[0]));
  Tensor z = scores + mask_inf;  // -inf from a plain input
  CHECK(z.to_vector()[0] == -kInf);
  // masked_fill with -inf, then softmax: the usual attention mask, and a scalar inf operand.
  Tensor filled = masked_fill(scores, Tensor({2, 2}, {0, 1, 0, 0}), -kInf);
  Tensor p = softmax(filled, 1);
  CHECK(p.to_vector()[1] == 0.0f);
  CHECK(std::isinf((scores * kInf).to_vector()[0]));
  CHECK(std::isinf(clamp(scores, kInf, std::nullopt).to_vector()[0]));
  // A loss whose class weights hold an Inf: the weights are the caller's.
  CrossEntropyOptions o;
  o.weight = Tensor({2}, {kInf, 1});
  o.reduction = Reduction::Sum;
  CHECK(std::isinf(cross_entropy(scores, IndexTensor{0, 0}, o).item()));
  // ... or whose target does (binary_cross_entropy_with_logits records only the logits).
  CHECK(std::isinf(binary_cross_entropy_with_logits(scores, Tensor({2, 2}, {kInf, 0, 0, 0})).item()));
}

// ---- forward: a NaN entering through a tied table ---------------------------------------------

TEST_CASE("anomaly forward: a tied table holding a NaN is named at the first op that reads it") {
  Parameter table("items", Tensor({4, 3}, {0, 1, 2, 3, 4, 5, 6, kNaN, 8, 9, 10, 11}));
  nn::Embedding emb(table);
  nn::EmbeddingBag bag(table, {.mode = BagMode::Mean});
  nn::Linear head(table);  // output projection tied to the same table: [N,3] x [4,3]^T
  const std::vector<float> values = table.value().to_vector();
  const std::string name = table.name();  // as format_graph prints it
  DetectAnomalyGuard anomaly;
  RecordScope scope("lm");
  const std::uint64_t seq = probe_seq() + 1;
  const std::size_t tape = tape_size();
  // Rows 0 and 1 are finite, but the table enters the graph here: reported at the lookup.
  CHECK_THROWS_WITH_AS(emb(IndexTensor{0, 1}),
                       fmt::format("embedding (anomaly mode): input 0, Parameter '{}' [4,3], holds NaN at element 7 "
                                   "(index [2,1]), which enters the graph here; inputs [4,3], output [2,3]; node #{}, not "
                                   "recorded; called in scope \"lm\"",
                                   name, seq)
                           .c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(bag(IndexTensor({1, 2}, {2, 3})),
                       fmt::format("embedding_bag (anomaly mode): input 0, Parameter '{}' [4,3], holds NaN at element 7 "
                                   "(index [2,1]), which enters the graph here; inputs [4,3], none, output [1,3]; node "
                                   "#{}, not recorded; called in scope \"lm\"",
                                   name, seq)
                           .c_str(),
                       Error);
  const Tensor x({2, 3}, {1, 0, 0, 0, 1, 0});
  CHECK_THROWS_WITH_AS(head(x),
                       fmt::format("matmul (anomaly mode): input 1, Parameter '{}' [4,3], holds NaN at element 7 "
                                   "(index [2,1]), which enters the graph here; inputs [2,3], [4,3], output [2,4]; node "
                                   "#{}, not recorded; called in scope \"lm\"",
                                   name, seq)
                           .c_str(),
                       Error);
  {  // also when nothing is recorded (evaluation)
    NoGradGuard no_grad;
    CHECK_THROWS_WITH_AS(emb(IndexTensor{0}),
                         fmt::format("embedding (anomaly mode): input 0, Parameter '{}' [4,3], holds NaN at element 7 "
                                     "(index [2,1]), which enters the graph here; inputs [4,3], output [1,3]; no node "
                                     "(grad mode is off); called in scope \"lm\"",
                                     name)
                             .c_str(),
                         Error);
  }
  CHECK(tape_size() == tape);
  CHECK(probe_seq() == seq);  // no number was used
  CHECK(same_bits(table.value().to_vector(), values));
  CHECK_FALSE(table.has_grad());
}

// ---- backward: blame the node that made the gradient non-finite --------------------------------

TEST_CASE("anomaly backward: finite contributions that overflow when added are not blamed on the next node") {
  Tensor x = leaf({1}, {1e-30f});
  DetectAnomalyGuard anomaly;
  Tensor y = x * 1.0f;  // its output's gradient will be 3e38 + 3e38 = inf
  Tensor loss = sum(y * 3e38f) + sum(y * 3e38f);  // forward: 3e8 + 3e8, finite
  CHECK_THROWS_WITH_AS(backward(loss),
                       fmt::format("backward (anomaly mode): the gradient reaching the output of node #{} (mul_scalar) "
                                   "has inf at element 0 (index [0]): every contribution to it was finite, their sum "
                                   "overflowed; the node has output [1] and was recorded outside any RecordScope",
                                   seq_of(y))
                           .c_str(),
                       Error);
  CHECK_FALSE(x.impl().grad);
}

TEST_CASE("anomaly backward: a non-finite grad_output is refused before anything is written") {
  Tensor x = leaf({2}, {1, 2});
  DetectAnomalyGuard anomaly;
  Tensor y = x * 2.0f;
  CHECK_THROWS_WITH_AS(backward(y, Tensor({2}, {1, kNaN})),
                       "backward (anomaly mode): grad_output [2] holds NaN at element 1 (index [1])", Error);
  CHECK_FALSE(x.impl().grad);
  backward(y, Tensor({2}, {1, 1}));  // the graph is intact
  CHECK(x.grad().to_vector() == std::vector<float>{2, 2});
}
