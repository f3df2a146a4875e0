// Grad hooks (Parameter::add_grad_hook): a hook sees every contribution to a Parameter's
// gradient separately, with the node it came from, before it is added; the contributions of a
// tied table's embedding and embedding_bag calls are told apart and sum to the total gradient;
// remove_grad_hook stops the calls.
#include <doctest/doctest.h>

#include <map>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct Seen {
  std::string op;
  std::uint64_t seq = 0;
  bool dense = false;
  std::vector<float> total;        // the contribution scattered into [N, D]
  std::vector<float> grad_before;  // the Parameter's gradient when the hook ran (empty if none)
};

// Records each contribution to p as a dense [N, D] array.
int record_into(Parameter& p, std::vector<Seen>& seen) {
  // By reference: a hook holding a copy of p would keep p's own TensorImpl alive (a cycle).
  return p.add_grad_hook([&seen, &p](const GradContribution& c) {
    Seen s{c.node.op, c.node.seq, c.dense != nullptr, std::vector<float>(static_cast<std::size_t>(p.numel()), 0.0f), {}};
    if (c.dense) {
      s.total = c.dense->to_vector();
    } else {
      for (std::size_t m = 0; m < c.rows.size(); ++m)
        for (std::int64_t d = 0; d < c.row_width; ++d)
          s.total[static_cast<std::size_t>(c.rows[m] * c.row_width + d)] +=
              c.values[m * static_cast<std::size_t>(c.row_width) + static_cast<std::size_t>(d)];
    }
    if (p.has_grad()) s.grad_before = p.grad().to_vector();
    seen.push_back(std::move(s));
  });
}

const Tensor kTable({5, 2}, {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f, 0.9f, 1.0f});

}  // namespace

TEST_CASE("grad hook: embedding and embedding_bag contributions to one tied table arrive separately and sum to the gradient") {
  Parameter table("items", kTable);
  std::vector<Seen> seen;
  record_into(table, seen);

  const Tensor e = embedding(IndexTensor{1, 3, 1}, table);                                         // rows 1, 3, 1
  const Tensor b = embedding_bag(IndexTensor{1, 2, 4}, IndexTensor{0, 2}, table, {.mode = BagMode::Sum});  // rows 1, 2 | 4
  backward(sum(e * 2.0f) + sum(square(b)));

  REQUIRE(seen.size() == 2);
  std::map<std::string, const Seen*> by_op;
  for (const auto& s : seen) by_op[s.op] = &s;
  REQUIRE(by_op.count("embedding") == 1);
  REQUIRE(by_op.count("embedding_bag") == 1);
  CHECK(by_op["embedding"]->seq == e.impl().grad_fn->seq);
  CHECK(by_op["embedding_bag"]->seq == b.impl().grad_fn->seq);
  CHECK_FALSE(by_op["embedding"]->dense);
  CHECK_FALSE(by_op["embedding_bag"]->dense);

  // embedding: d/dW of sum(2 W[x]) = 2 per lookup: row 1 twice (4), row 3 once (2).
  const std::vector<float> want_emb = {0, 0, 4, 4, 0, 0, 2, 2, 0, 0};
  CHECK(by_op["embedding"]->total == want_emb);
  // bag 0 = W1 + W2 = [0.3-0.5, 0.4+0.6] = [-0.2, 1.0]; bag 1 = W4 = [0.9, 1.0]; d sum(b^2) = 2 b.
  const std::vector<float> want_bag = {0, 0, -0.4f, 2.0f, -0.4f, 2.0f, 0, 0, 1.8f, 2.0f};
  for (std::size_t i = 0; i < want_bag.size(); ++i) CHECK(by_op["embedding_bag"]->total[i] == doctest::Approx(want_bag[i]));

  // The hook runs before the contribution is added: the second one sees the first in the gradient.
  for (float v : seen[0].grad_before) CHECK(v == 0.0f);  // none yet (or an empty one)
  CHECK(seen[1].grad_before == seen[0].total);

  const auto grad = table.grad().to_vector();
  for (std::size_t i = 0; i < grad.size(); ++i) CHECK(grad[i] == doctest::Approx(want_emb[i] + want_bag[i]));
}

TEST_CASE("grad hook: two calls of one module are two nodes, and a dense contribution (matmul) arrives as a tensor") {
  Parameter table("items", kTable);
  nn::Embedding item(table);
  std::vector<Seen> seen;
  record_into(table, seen);
  const Tensor first = item(IndexTensor{0});
  const Tensor second = item(IndexTensor{0});
  const Tensor scores = matmul(Tensor({1, 2}, {1.0f, 2.0f}), table, false, true);  // [1,2] x [5,2]^T
  backward(sum(first) + sum(second * 3.0f) + sum(scores));

  REQUIRE(seen.size() == 3);
  std::map<std::uint64_t, const Seen*> by_seq;
  for (const auto& s : seen) by_seq[s.seq] = &s;
  REQUIRE(by_seq.size() == 3);
  const Seen& s1 = *by_seq.at(first.impl().grad_fn->seq);
  const Seen& s2 = *by_seq.at(second.impl().grad_fn->seq);
  const Seen& s3 = *by_seq.at(scores.impl().grad_fn->seq);
  CHECK(s1.op == "embedding");
  CHECK(s2.op == "embedding");
  CHECK(s3.op == "matmul");
  CHECK(s1.total == std::vector<float>{1, 1, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(s2.total == std::vector<float>{3, 3, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(s3.dense);
  CHECK(s3.total == std::vector<float>{1, 2, 1, 2, 1, 2, 1, 2, 1, 2});  // each row of scores' grad times x
  const auto grad = table.grad().to_vector();
  for (std::size_t i = 0; i < grad.size(); ++i) CHECK(grad[i] == s1.total[i] + s2.total[i] + s3.total[i]);
}

TEST_CASE("grad hook: remove_grad_hook stops it, other hooks and the gradient are unaffected") {
  Parameter table("items", kTable);
  int calls_a = 0, calls_b = 0;
  const int a = table.add_grad_hook([&](const GradContribution&) { ++calls_a; });
  const int b = table.add_grad_hook([&](const GradContribution&) { ++calls_b; });
  CHECK(a != b);
  backward(sum(embedding(IndexTensor{2}, table)));
  CHECK(calls_a == 1);
  CHECK(calls_b == 1);

  table.remove_grad_hook(a);
  backward(sum(embedding(IndexTensor{2}, table)));
  CHECK(calls_a == 1);
  CHECK(calls_b == 2);
  CHECK(table.grad().at({2, 0}) == 2.0f);  // both backward calls accumulated

  table.remove_grad_hook(b);
  backward(sum(embedding(IndexTensor{2}, table)));
  CHECK(calls_b == 2);
  CHECK(table.grad().at({2, 1}) == 3.0f);
}

TEST_CASE("grad hook: the seed pitfall's alias has its own hooks, each sees only its own path") {
  Parameter w("emb.weight", kTable);
  Parameter alias = Parameter::alias_of(w, "bag.weight").allow_alias();
  std::vector<Seen> seen_w, seen_alias;
  record_into(w, seen_w);
  record_into(alias, seen_alias);
  backward(sum(embedding(IndexTensor{0}, w)) + sum(embedding_bag(IndexTensor{0, 1}, IndexTensor{0}, alias)));
  REQUIRE(seen_w.size() == 1);
  REQUIRE(seen_alias.size() == 1);
  CHECK(seen_w[0].op == "embedding");
  CHECK(seen_alias[0].op == "embedding_bag");
}
