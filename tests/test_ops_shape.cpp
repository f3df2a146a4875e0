// Shape and indexing op tests (ops/shape.cpp, ops/index.cpp): a gradcheck table over every op
// and form (cat, stack in both call forms, index_select and gather along each dim, narrow,
// slice, select, unsqueeze, squeeze, expand), hand-computed forward values and gradients
// (duplicates in indices add up), and every user error with its exact message and an untouched
// tape. PyTorch parity is in tests/test_parity_shape.cpp.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/gradcheck.h>
#include <hitch/core/tape.h>
#include "op_table.h"
#include <hitch/ops/ops.h>

using namespace hitch;
using namespace op_test;

namespace {

Tensor cat_span(const Inputs& x, std::int64_t dim) { return cat(std::span<const Tensor>(x), dim); }
Tensor stack_span(const Inputs& x, std::int64_t dim) { return stack(std::span<const Tensor>(x), dim); }

std::vector<OpCase> shape_table() {
  const IndexTensor dup{2, 0, 2, 1};  // duplicates: their gradients must add up
  return {
      // cat: span form, along each dim (negative too), 1 tensor (a copy), an empty piece
      {"cat(dim=0)", {{{2, 3}, {1, 3}, {4, 3}}, {{0, 3}, {2, 3}}, {{2}, {3}}, {{2, 3}}},
       [](const Inputs& x) { return cat_span(x, 0); }},
      {"cat(dim=1)", {{{2, 3}, {2, 1}}, {{2, 2, 3}, {2, 4, 3}, {2, 1, 3}}}, [](const Inputs& x) { return cat_span(x, 1); }},
      {"cat(dim=-1)", {{{2, 3}, {2, 2}}, {{2, 1, 3}, {2, 1, 2}}}, [](const Inputs& x) { return cat_span(x, -1); }},
      {"cat({a, b}, dim=-2)", {{{1, 3}, {2, 3}}, {{2, 2, 1}, {2, 3, 1}}},
       [](const Inputs& x) { return cat({x[0], x[1]}, -2); }},
      {"cat({x, x, x}, dim=1)", each({{2, 3}}), [](const Inputs& x) { return cat({x[0], x[0], x[0]}, 1); }},
      // stack: every insertion point of a 2-D shape, 0-d inputs, 1 tensor
      {"stack(dim=0)", {{{2, 3}, {2, 3}, {2, 3}}, {{}, {}}, {{3}}}, [](const Inputs& x) { return stack_span(x, 0); }},
      {"stack(dim=1)", {{{2, 3}, {2, 3}}}, [](const Inputs& x) { return stack_span(x, 1); }},
      {"stack(dim=2)", {{{2, 3}, {2, 3}}}, [](const Inputs& x) { return stack_span(x, 2); }},
      {"stack({a, b}, dim=-1)", {{{2, 3}, {2, 3}}, {{4}, {4}}}, [](const Inputs& x) { return stack({x[0], x[1]}, -1); }},
      {"stack({a, b}, dim=-3)", {{{2, 3}, {2, 3}}}, [](const Inputs& x) { return stack({x[0], x[1]}, -3); }},
      {"stack({x, x}, dim=1)", each({{2, 3}}), [](const Inputs& x) { return stack({x[0], x[0]}, 1); }},
      // index_select along each dim, with duplicates, empty index
      {"index_select(dim=0, dup)", each({{3, 2}, {4, 2, 3}}), [dup](const Inputs& x) { return index_select(x[0], 0, dup); }},
      {"index_select(dim=1, dup)", each({{2, 3}, {2, 4, 2}}), [dup](const Inputs& x) { return index_select(x[0], 1, dup); }},
      {"index_select(dim=-1, dup)", each({{3}, {2, 3}, {2, 2, 3}}),
       [dup](const Inputs& x) { return index_select(x[0], -1, dup); }},
      {"index_select(dim=0, [1])", each({{2, 3}}), [](const Inputs& x) { return index_select(x[0], 0, IndexTensor{1}); }},
      {"index_select(dim=1, []) + x", each({{2, 3}}),
       [](const Inputs& x) { return cat({reshape(index_select(x[0], 1, IndexTensor({0}, {})), {-1}), reshape(x[0], {-1})}); }},
      // gather along each dim, index smaller than a, duplicates
      {"gather(dim=0)", each({{3, 2}}),
       [](const Inputs& x) { return gather(x[0], 0, IndexTensor({4, 2}, {2, 0, 0, 0, 1, 2, 2, 2})); }},
      {"gather(dim=1)", each({{2, 3}}), [](const Inputs& x) { return gather(x[0], 1, IndexTensor({2, 4}, {0, 2, 2, 1, 1, 1, 0, 2})); }},
      {"gather(dim=-1, smaller index)", each({{3, 4}}),
       [](const Inputs& x) { return gather(x[0], -1, IndexTensor({2, 2}, {3, 3, 0, 1})); }},
      {"gather(dim=1, 3-D)", each({{2, 3, 2}}),
       [](const Inputs& x) { return gather(x[0], 1, IndexTensor({2, 2, 2}, {2, 0, 1, 1, 0, 0, 2, 1})); }},
      {"gather(dim=-3, 3-D smaller)", each({{3, 2, 2}}),
       [](const Inputs& x) { return gather(x[0], -3, IndexTensor({2, 1, 2}, {2, 0, 2, 2})); }},
      {"gather(1-D)", each({{4}}), [](const Inputs& x) { return gather(x[0], 0, IndexTensor{3, 3, 1, 0, 3}); }},
      // narrow, slice, select
      {"narrow(dim=0, 1, 2)", each({{3, 2}, {4}}), [](const Inputs& x) { return narrow(x[0], 0, 1, 2); }},
      {"narrow(dim=-1, -2, 2)", each({{2, 3}, {2, 2, 4}}), [](const Inputs& x) { return narrow(x[0], -1, -2, 2); }},
      {"narrow(dim=1, 0, 0) + x", each({{2, 3}}),
       [](const Inputs& x) { return cat({reshape(narrow(x[0], 1, 0, 0), {-1}), reshape(x[0], {-1})}); }},
      {"slice(dim=1, 1, 5, 2)", each({{2, 5}, {2, 6, 2}}), [](const Inputs& x) { return slice(x[0], 1, 1, 5, 2); }},
      {"slice(dim=0, -3, 100)", each({{4, 2}, {5}}), [](const Inputs& x) { return slice(x[0], 0, -3, 100); }},
      {"slice(dim=-1, -100, -1, 3)", each({{2, 7}}), [](const Inputs& x) { return slice(x[0], -1, -100, -1, 3); }},
      {"select(dim=0, 1)", each({{3, 2}, {2, 2, 3}, {2}}), [](const Inputs& x) { return select(x[0], 0, 1); }},
      {"select(dim=-1, -1)", each({{3, 2}, {2, 2, 3}}), [](const Inputs& x) { return select(x[0], -1, -1); }},
      {"select(dim=1, 0)", each({{2, 3, 2}}), [](const Inputs& x) { return select(x[0], 1, 0); }},
      // unsqueeze, squeeze
      {"unsqueeze(0)", each({{}, {3}, {2, 3}}), [](const Inputs& x) { return unsqueeze(x[0], 0); }},
      {"unsqueeze(-1)", each({{}, {2, 3}}), [](const Inputs& x) { return unsqueeze(x[0], -1); }},
      {"unsqueeze(1)", each({{2, 3}}), [](const Inputs& x) { return unsqueeze(x[0], 1); }},
      {"squeeze()", each({{2, 1, 3}, {1, 1}, {3}, {}}), [](const Inputs& x) { return squeeze(x[0]); }},
      {"squeeze(1)", each({{2, 1, 3}, {2, 3}}), [](const Inputs& x) { return squeeze(x[0], 1); }},
      {"squeeze(-1)", each({{2, 1}, {}}), [](const Inputs& x) { return squeeze(x[0], -1); }},
      // expand: new leading dims, stretched 1s, -1, a 0-size result next to a checked part
      {"expand([2,3])", each({{3}, {1, 3}, {2, 1}, {1}, {}}), [](const Inputs& x) { return expand(x[0], {2, 3}); }},
      {"expand([4,-1,3])", each({{2, 1}, {1, 3}, {2, 3}}), [](const Inputs& x) { return expand(x[0], {4, -1, 3}); }},
      {"expand([2,-1,4,3])", each({{3, 1, 1}, {1, 4, 3}}), [](const Inputs& x) { return expand(x[0], {2, -1, 4, 3}); }},
      {"expand([0,3]) + x", each({{1, 3}}),
       [](const Inputs& x) { return cat({reshape(expand(x[0], {0, 3}), {-1}), reshape(x[0], {-1})}); }},
      // a chain of several
      {"select(stack(cat, expand))", {{{2, 3}, {1, 3}}}, [](const Inputs& x) {
         const Tensor c = cat({x[0], x[1]}, 0);  // [3,3]
         return select(stack({c, expand(x[1], {3, 3})}, 2), 1, -1);
       }},
  };
}

// Equal values, no tolerance: shape ops only move floats.
void check_exact(const Tensor& t, const Shape& shape, const std::vector<float>& want) {
  check_values(t, shape, want, 0.0f);
}

// 0, 1, 2, ... as a leaf of the given shape.
Tensor iota(Shape shape) {
  std::vector<float> v(static_cast<std::size_t>(numel_of(shape)));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return leaf(std::move(shape), std::move(v));
}

}  // namespace

TEST_CASE("ops shape: gradcheck table over every shape and indexing op") {
  const int runs = run_table(shape_table(), 42);
  CHECK(runs >= 70);
}

TEST_CASE("ops shape: cat and stack forward values and split gradients") {
  const Tensor a = iota({2, 2});                      // [[0,1],[2,3]]
  const Tensor b = leaf({2, 1}, {10, 20});
  check_exact(cat({a, b}, 1), {2, 3}, {0, 1, 10, 2, 3, 20});
  check_exact(cat({a, b}, -1), {2, 3}, {0, 1, 10, 2, 3, 20});
  check_exact(cat({a, transpose(b)}, 0), {3, 2}, {0, 1, 2, 3, 10, 20});
  check_exact(cat({a, Tensor::zeros({2, 0})}, 1), {2, 2}, {0, 1, 2, 3});
  check_exact(cat({Tensor::zeros({0, 2}), Tensor::zeros({0, 2})}, 0), {0, 2}, {});
  check_exact(stack({a, a * 2.0f}, 0), {2, 2, 2}, {0, 1, 2, 3, 0, 2, 4, 6});
  check_exact(stack({a, a * 2.0f}, 1), {2, 2, 2}, {0, 1, 0, 2, 2, 3, 4, 6});
  check_exact(stack({a, a * 2.0f}, -1), {2, 2, 2}, {0, 0, 1, 2, 2, 4, 3, 6});
  check_exact(stack({Tensor::scalar(1), Tensor::scalar(2)}), {2}, {1, 2});
  const std::vector<Tensor> three = {Tensor({1}, {1}), Tensor({2}, {2, 3}), Tensor({1}, {4})};
  check_exact(cat(three), {4}, {1, 2, 3, 4});

  // cat of one tensor is a copy: a new tensor, writing into it leaves a alone.
  Tensor copy = cat({a});
  CHECK_FALSE(copy.is_same(a));
  copy.set({0, 0}, 100);
  CHECK(a.at({0, 0}) == 0);

  // Gradients: each input gets its block of g; a tensor passed twice gets both blocks added.
  Tensor x = leaf({2}, {1, 2});
  Tensor y = leaf({1}, {3});
  backward(cat({x, y, x}), Tensor({5}, {1, 2, 3, 4, 5}));
  check_exact(x.grad(), {2}, {1 + 4, 2 + 5});
  check_exact(y.grad(), {1}, {3});
  Tensor p = leaf({2}, {1, 2});
  backward(stack({p, p, p}, 1), Tensor({2, 3}, {1, 2, 3, 4, 5, 6}));
  check_exact(p.grad(), {2}, {6, 15});
}

TEST_CASE("ops shape: index_select and gather forward values, duplicates add up in backward") {
  const Tensor a = iota({2, 3});  // [[0,1,2],[3,4,5]]
  check_exact(index_select(a, 0, IndexTensor{1, 1, 0}), {3, 3}, {3, 4, 5, 3, 4, 5, 0, 1, 2});
  check_exact(index_select(a, 1, IndexTensor{2, 0}), {2, 2}, {2, 0, 5, 3});
  check_exact(index_select(a, -1, IndexTensor({0}, {})), {2, 0}, {});
  const Tensor c = iota({2, 3, 2});
  check_exact(index_select(c, 1, IndexTensor{2, 0}), {2, 2, 2}, {4, 5, 0, 1, 10, 11, 6, 7});

  // gather: out[i][j] = a[i][index[i][j]] (dim 1), = a[index[i][j]][j] (dim 0).
  check_exact(gather(a, 1, IndexTensor({2, 2}, {2, 2, 0, 1})), {2, 2}, {2, 2, 3, 4});
  check_exact(gather(a, 0, IndexTensor({1, 3}, {1, 0, 1})), {1, 3}, {3, 1, 5});
  check_exact(gather(a, 0, IndexTensor({3, 2}, {1, 0, 0, 1, 1, 1})), {3, 2}, {3, 1, 0, 4, 3, 4});
  check_exact(gather(c, 2, IndexTensor({1, 2, 1}, {1, 0})), {1, 2, 1}, {1, 2});
  check_exact(gather(a, 1, IndexTensor({0, 3}, {})), {0, 3}, {});

  Tensor x = leaf({3, 2}, {1, 2, 3, 4, 5, 6});
  backward(index_select(x, 0, IndexTensor{2, 0, 2, 2}), Tensor({4, 2}, {1, 10, 2, 20, 3, 30, 4, 40}));
  check_exact(x.grad(), {3, 2}, {2, 20, 0, 0, 1 + 3 + 4, 10 + 30 + 40});
  Tensor y = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  backward(gather(y, 1, IndexTensor({2, 3}, {0, 0, 2, 1, 1, 1})), Tensor({2, 3}, {1, 2, 3, 4, 5, 6}));
  check_exact(y.grad(), {2, 3}, {1 + 2, 0, 3, 0, 4 + 5 + 6, 0});
}

TEST_CASE("ops shape: narrow, slice and select forward values and gradients") {
  const Tensor a = iota({2, 5});  // [[0..4],[5..9]]
  check_exact(narrow(a, 1, 1, 3), {2, 3}, {1, 2, 3, 6, 7, 8});
  check_exact(narrow(a, -1, -2, 2), {2, 2}, {3, 4, 8, 9});
  check_exact(narrow(a, 0, 2, 0), {0, 5}, {});  // start == size with length 0 is allowed
  check_exact(narrow(a, 1, -5, 1), {2, 1}, {0, 5});
  check_exact(slice(a, 1, 0, 5, 2), {2, 3}, {0, 2, 4, 5, 7, 9});
  check_exact(slice(a, 1, 1, 5, 3), {2, 2}, {1, 4, 6, 9});
  check_exact(slice(a, 1, -2, 100), {2, 2}, {3, 4, 8, 9});
  check_exact(slice(a, -1, -100, -3), {2, 2}, {0, 1, 5, 6});
  check_exact(slice(a, 1, 4, 2), {2, 0}, {});  // end before start: empty
  check_exact(slice(a, 0, 1, 2), {1, 5}, {5, 6, 7, 8, 9});
  const std::int64_t big = std::numeric_limits<std::int64_t>::max(), small = std::numeric_limits<std::int64_t>::min();
  check_exact(slice(a, 1, small, big, big), {2, 1}, {0, 5});  // no overflow at the int64 limits
  check_exact(slice(a, 1, 3, big, 1), {2, 2}, {3, 4, 8, 9});
  check_exact(select(a, 0, 1), {5}, {5, 6, 7, 8, 9});
  check_exact(select(a, 1, -1), {2}, {4, 9});
  check_exact(select(Tensor({1}, {7}), 0, 0), {}, {7});

  Tensor x = iota({2, 5});
  backward(sum(slice(x, 1, 1, 5, 2)) + sum(narrow(x, 0, 1, 1)) + sum(select(x, 1, 1)));
  check_exact(x.grad(), {2, 5}, {0, 2, 0, 1, 0, 1, 3, 1, 2, 1});
}

TEST_CASE("ops shape: unsqueeze, squeeze and expand forward values and gradients") {
  const Tensor a = iota({2, 3});
  check_exact(unsqueeze(a, 0), {1, 2, 3}, a.to_vector());
  check_exact(unsqueeze(a, 2), {2, 3, 1}, a.to_vector());
  check_exact(unsqueeze(a, -1), {2, 3, 1}, a.to_vector());
  check_exact(unsqueeze(a, -3), {1, 2, 3}, a.to_vector());
  check_exact(unsqueeze(Tensor::scalar(4), 0), {1}, {4});
  const Tensor b = iota({1, 2, 1, 1});
  check_exact(squeeze(b), {2}, {0, 1});
  check_exact(squeeze(b, 0), {2, 1, 1}, {0, 1});
  check_exact(squeeze(b, 1), {1, 2, 1, 1}, {0, 1});  // size 2: unchanged, as torch
  check_exact(squeeze(b, -1), {1, 2, 1}, {0, 1});
  check_exact(squeeze(Tensor({1, 1}, {5})), {}, {5});
  check_exact(squeeze(Tensor::scalar(3), 0), {}, {3});
  check_exact(squeeze(Tensor::scalar(3), -1), {}, {3});

  const Tensor r = iota({3});
  check_exact(expand(r, {2, 3}), {2, 3}, {0, 1, 2, 0, 1, 2});
  check_exact(expand(iota({2, 1}), {2, 3}), {2, 3}, {0, 0, 0, 1, 1, 1});
  check_exact(expand(iota({2, 1}), {2, -1, 2}), {2, 2, 2}, {0, 0, 1, 1, 0, 0, 1, 1});
  check_exact(expand(Tensor::scalar(7), {2}), {2}, {7, 7});
  check_exact(expand(Tensor::scalar(7), {}), {}, {7});
  check_exact(expand(iota({1, 3}), {0, 3}), {0, 3}, {});
  check_exact(expand(r, {-1}), {3}, {0, 1, 2});

  // Backward sums over every stretched dim: [2,1] -> [3,2,4] puts 12 copies of each value.
  Tensor x = leaf({2, 1}, {1, 2});
  backward(sum(expand(x, {3, 2, 4})));
  check_exact(x.grad(), {2, 1}, {12, 12});
  Tensor y = leaf({3}, {1, 2, 3});
  backward(expand(y, {2, 3}), Tensor({2, 3}, {1, 2, 3, 10, 20, 30}));
  check_exact(y.grad(), {3}, {11, 22, 33});
  Tensor z = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  backward(squeeze(unsqueeze(z, 1)), Tensor({2, 3}, {6, 5, 4, 3, 2, 1}));
  check_exact(z.grad(), {2, 3}, {6, 5, 4, 3, 2, 1});
}

TEST_CASE("ops shape: every op copies, records one node, and records nothing under no-grad") {
  const Tensor a = iota({2, 3});
  const std::vector<Tensor> outs = {cat({a, a}), stack({a, a}), index_select(a, 0, IndexTensor{0}),
                                    gather(a, 0, IndexTensor({1, 3}, {0, 0, 0})), narrow(a, 1, 0, 3), slice(a, 1, 0, 3),
                                    select(a, 0, 0), unsqueeze(a, 0), squeeze(a), squeeze(a, 0), expand(a, {2, 3})};
  for (Tensor t : outs) {
    REQUIRE(t.numel() > 0);
    CHECK(t.impl().storage != a.impl().storage);
    CHECK(t.requires_grad());
    CHECK_FALSE(t.is_leaf());
    t.data()[0] = 100;
  }
  CHECK(a.at({0, 0}) == 0);

  const std::size_t before = tape_size();
  {
    NoGradGuard guard;
    const Tensor y = expand(gather(index_select(cat({a, a}, 1), 0, IndexTensor{1}), 1, IndexTensor({1, 1}, {5})), {2, 2});
    CHECK_FALSE(y.requires_grad());
    check_exact(y, {2, 2}, {5, 5, 5, 5});
  }
  CHECK(tape_size() == before);
}

TEST_CASE("ops shape: user errors carry exact messages and record nothing") {
  const Tensor a = iota({2, 5});
  const Tensor b = iota({2, 3});
  const Tensor s = leaf({}, {1});
  const std::vector<float> a_before = a.to_vector();
  const auto version = a.impl().storage->version;

  // cat / stack
  CHECK_REJECTS(cat(std::span<const Tensor>()), "cat: expected at least one tensor, got none");
  CHECK_REJECTS(stack(std::span<const Tensor>()), "stack: expected at least one tensor, got none");
  CHECK_REJECTS(cat({a, b}, 0),
                "cat: tensors[0] has shape [2,5] but tensors[1] has shape [2,3] (same rank and sizes needed except at "
                "dim 0)");
  CHECK_REJECTS(cat({a, a, reshape(a, {10})}, -1),
                "cat: tensors[0] has shape [2,5] but tensors[2] has shape [10] (same rank and sizes needed except at "
                "dim 1)");
  CHECK_REJECTS(cat({a, b}, 2), "cat: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(cat({s, s}), "cat: dim 0 given for a tensor of rank 0, which has no dims");
  CHECK_REJECTS(stack({a, a, b}, 1),
                "stack: tensors[0] has shape [2,5] but tensors[2] has shape [2,3] (all shapes must be equal)");
  CHECK_REJECTS(stack({a, a}, 3), "stack: dim 3 is out of range for a tensor of rank 3 (valid: [-3, 2])");
  CHECK_REJECTS(stack({a, a}, -4), "stack: dim -4 is out of range for a tensor of rank 3 (valid: [-3, 2])");

  // index_select / gather
  CHECK_REJECTS(index_select(a, 1, IndexTensor{0, 4, 5}),
                "index_select: index 5 at position 2 is out of range for dim 1 of size 5 (valid: [0, 5))");
  CHECK_REJECTS(index_select(a, -2, IndexTensor{-1}),
                "index_select: index -1 at position 0 is out of range for dim 0 of size 2 (valid: [0, 2))");
  CHECK_REJECTS(index_select(a, 1, IndexTensor({1, 2}, {0, 1})), "index_select: index must be 1-D, but has shape [1,2]");
  CHECK_REJECTS(index_select(a, 2, IndexTensor{0}), "index_select: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(index_select(s, 0, IndexTensor{0}), "index_select: dim 0 given for a tensor of rank 0, which has no dims");
  CHECK_REJECTS(index_select(Tensor::zeros({0, 3}), 0, IndexTensor{0}),
                "index_select: index 0 at position 0 is out of range for dim 0 of size 0 (valid: [0, 0))");
  CHECK_REJECTS(gather(a, 1, IndexTensor({2, 2}, {0, 1, 7, 0})),
                "gather: index 7 at position 2 is out of range for dim 1 of size 5 (valid: [0, 5))");
  CHECK_REJECTS(gather(a, 0, IndexTensor({1, 2}, {0, -2})),
                "gather: index -2 at position 1 is out of range for dim 0 of size 2 (valid: [0, 2))");
  CHECK_REJECTS(gather(a, 1, IndexTensor{0, 1}), "gather: index must have a's rank 2, but has shape [2] (a has shape [2,5])");
  CHECK_REJECTS(gather(a, 1, IndexTensor({3, 1}, {0, 0, 0})),
                "gather: index has shape [3,1] but a has shape [2,5]: index's size 3 at dim 0 is larger than a's size 2 "
                "(only dim 1, the gathered dim, may be larger)");
  CHECK_REJECTS(gather(a, -3, IndexTensor({1, 1}, {0})), "gather: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");

  // narrow / slice / select
  CHECK_REJECTS(narrow(a, 1, 6, 0), "narrow: start 6 is out of range for dim 1 of size 5 (valid: [-5, 5])");
  CHECK_REJECTS(narrow(a, 1, -6, 1), "narrow: start -6 is out of range for dim 1 of size 5 (valid: [-5, 5])");
  CHECK_REJECTS(narrow(a, 1, 3, 3), "narrow: length 3 is out of range for start 3 in dim 1 of size 5 (valid: [0, 2])");
  CHECK_REJECTS(narrow(a, -1, -2, -1), "narrow: length -1 is out of range for start -2 in dim 1 of size 5 (valid: [0, 2])");
  CHECK_REJECTS(narrow(a, 2, 0, 1), "narrow: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(slice(a, 1, 0, 5, 0),
                "slice: step 0 is not supported (valid: step >= 1; torch refuses zero and negative steps too)");
  CHECK_REJECTS(slice(a, 1, 5, 0, -1),
                "slice: step -1 is not supported (valid: step >= 1; torch refuses zero and negative steps too)");
  CHECK_REJECTS(slice(s, 0, 0, 1), "slice: dim 0 given for a tensor of rank 0, which has no dims");
  CHECK_REJECTS(select(a, 0, 2), "select: index 2 is out of range for dim 0 of size 2 (valid: [-2, 2))");
  CHECK_REJECTS(select(a, -1, -6), "select: index -6 is out of range for dim 1 of size 5 (valid: [-5, 5))");
  CHECK_REJECTS(select(a, -3, 0), "select: dim -3 is out of range for a tensor of rank 2 (valid: [-2, 1])");

  // unsqueeze / squeeze
  CHECK_REJECTS(unsqueeze(a, 3), "unsqueeze: dim 3 is out of range for a tensor of rank 3 (valid: [-3, 2])");
  CHECK_REJECTS(unsqueeze(s, -2), "unsqueeze: dim -2 is out of range for a tensor of rank 1 (valid: [-1, 0])");
  CHECK_REJECTS(squeeze(a, 2), "squeeze: dim 2 is out of range for a tensor of rank 2 (valid: [-2, 1])");
  CHECK_REJECTS(squeeze(s, 1), "squeeze: dim 1 is out of range for a tensor of rank 1 (valid: [-1, 0])");

  // expand
  CHECK_REJECTS(expand(a, {5}), "expand: shape [5] has fewer dims than a's shape [2,5] (1 < 2)");
  CHECK_REJECTS(expand(a, {3, 5}),
                "expand: size 3 at dim 0 of [3,5] does not fit a's size 2 there (a is [2,5]; a size 1 may become any "
                "size >= 0, other sizes must be kept or given as -1)");
  CHECK_REJECTS(expand(iota({2, 1}), {2, -2}),
                "expand: size -2 at dim 1 of [2,-2] does not fit a's size 1 there (a is [2,1]; a size 1 may become any "
                "size >= 0, other sizes must be kept or given as -1)");
  CHECK_REJECTS(expand(a, {-1, 2, 5}),
                "expand: size -1 at dim 0 of [-1,2,5] is invalid: a new leading dim needs a size >= 0 (-1 keeps a's "
                "size, which only dims that a has have)");
  CHECK_REJECTS(expand(iota({1, 1}), {std::int64_t{1} << 25, std::int64_t{1} << 24}),
                "expand: shape [33554432,16777216] has more than 2^48 elements (the limit per tensor)");

  // Nothing changed: no write into a, no gradient anywhere.
  CHECK(a.to_vector() == a_before);
  CHECK(a.impl().storage->version == version);
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}
