// Finite-difference checks (core/gradcheck.h) of embedding and every differentiable
// embedding_bag mode and option, including the per_sample_weights gradient of sum, weighted
// mean and sqrtn. padding_idx is left out on purpose (REFERENCE 1.3: the forward reads the
// padding row but its gradient is 0 by definition); it is tested with exact values elsewhere.
// max_norm is left out too: it writes the table in place, so a perturbation would be undone.
// scale_grad_by_freq is not a derivative by design (row r's true gradient divided by r's count;
// PyTorch's gradcheck fails on it too): the last test checks exactly that relation against the
// gradchecked unscaled gradient.
#include <doctest/doctest.h>

#include "embedding_test_util.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

// A table whose values are all distinct and at least 0.05 apart, so no max ties and no argmax
// flip under the checker's 1e-3 perturbation.
Tensor distinct_table(std::int64_t rows, std::int64_t dim) {
  const std::int64_t n = rows * dim;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = 0.05f * static_cast<float>((i * 7) % n) - 1.0f;
  return emb_test::leaf({rows, dim}, v);
}

Tensor psw_values(std::int64_t n) {  // in [0.5, 1.5]: a weighted mean far from Σ w = 0
  std::vector<float> v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(0.5f + 0.1f * static_cast<float>((i * 3) % 11));
  return emb_test::leaf({n}, v);
}

void check(std::string_view name, const std::function<Tensor(const std::vector<Tensor>&)>& f,
           const std::vector<Tensor>& inputs) {
  const GradcheckResult r = gradcheck(name, f, inputs);
  CHECK_MESSAGE(r.ok, name, ": ", r.message);
  CHECK(r.checked > 0);
}

const IndexTensor kInput{0, 2, 2, 5, 1, 3, 0, 4, 4, 2};  // repeats inside and across bags
const IndexTensor kOffsets{0, 3, 3, 6, 10};              // bags of 3, 0, 3, 4, 0 entries

}  // namespace

TEST_CASE("embedding gradcheck: plain, any rank, sparse") {
  const Tensor w = distinct_table(6, 3);
  const IndexTensor x({2, 4}, {0, 2, 2, 5, 1, 2, 0, 4});
  check("embedding", [&](const std::vector<Tensor>& in) { return embedding(x, in[0]); }, {w});
  check("embedding sparse", [&](const std::vector<Tensor>& in) { return embedding(x, in[0], {.sparse = true}); }, {w});
}

TEST_CASE("embedding_bag gradcheck: every mode, with empty bags and repeated indices") {
  const Tensor w = distinct_table(6, 3);
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max, BagMode::Sqrtn}) {
    const std::string name = fmt::format("embedding_bag {}", to_string(mode));
    check(name, [&](const std::vector<Tensor>& in) { return embedding_bag(kInput, kOffsets, in[0], {.mode = mode}); },
          {w});
    check(name + " include_last_offset",
          [&](const std::vector<Tensor>& in) {
            return embedding_bag(kInput, IndexTensor{0, 3, 3, 6}, in[0], {.mode = mode, .include_last_offset = true});
          },
          {w});
    check(name + " 2-D",
          [&](const std::vector<Tensor>& in) {
            return embedding_bag(IndexTensor({3, 3}, {0, 2, 2, 5, 1, 3, 4, 4, 0}), in[0], {.mode = mode});
          },
          {w});
    if (mode == BagMode::Max) continue;
    check(name + " sparse",
          [&](const std::vector<Tensor>& in) { return embedding_bag(kInput, kOffsets, in[0], {.mode = mode, .sparse = true}); },
          {w});
  }
}

TEST_CASE("embedding_bag gradcheck: per_sample_weights (weight and psw gradients)") {
  const Tensor w = distinct_table(6, 3);
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Sqrtn}) {
    const std::string name = fmt::format("embedding_bag {} psw", to_string(mode));
    check(name,
          [&](const std::vector<Tensor>& in) { return embedding_bag(kInput, kOffsets, in[0], {.mode = mode}, in[1]); },
          {w, psw_values(kInput.numel())});
    check(name + " include_last_offset",
          [&](const std::vector<Tensor>& in) {
            return embedding_bag(kInput, IndexTensor{0, 3, 3, 6}, in[0], {.mode = mode, .include_last_offset = true},
                                 in[1]);
          },
          {w, psw_values(kInput.numel())});
    check(name + " 2-D",
          [&](const std::vector<Tensor>& in) {
            return embedding_bag(IndexTensor({3, 3}, {0, 2, 2, 5, 1, 3, 4, 4, 0}), in[0], {.mode = mode}, in[1]);
          },
          {w, emb_test::leaf({3, 3}, psw_values(9).to_vector())});
  }
}

TEST_CASE("embedding_bag gradcheck: scale_grad_by_freq is the gradchecked gradient divided by the count") {
  // count over the whole input (all bags, and the tail outside any bag with include_last_offset).
  auto counts = [](const IndexTensor& x, std::int64_t rows) {
    std::vector<float> c(static_cast<std::size_t>(rows), 0.0f);
    for (const auto r : x.values()) c[static_cast<std::size_t>(r)] += 1.0f;
    return c;
  };
  auto grad_of = [](const Tensor& out, const Tensor& w, const Tensor& g) {
    w.impl().grad.reset();
    backward(out, g);
    return w.grad();
  };
  const Tensor w = distinct_table(6, 3);
  const std::vector<float> count = counts(kInput, 6);
  auto check_scaled = [&](const std::string& name, const Tensor& scaled, const Tensor& plain) {
    for (std::int64_t r = 0; r < 6; ++r)
      for (std::int64_t d = 0; d < 3; ++d) {
        const float c = count[static_cast<std::size_t>(r)];
        CHECK_MESSAGE(scaled.at({r, d}) * c == doctest::Approx(plain.at({r, d})).epsilon(1e-5), name, " row ", r);
      }
  };
  Generator gen_e(5);
  const Tensor ge = Tensor::uniform({10, 3}, -1, 1, gen_e);
  check_scaled("embedding", grad_of(embedding(kInput, w, {.scale_grad_by_freq = true}), w, ge),
               grad_of(embedding(kInput, w), w, ge));
  for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Sqrtn})
    for (const bool with_psw : {false, true})
      for (const bool ilo : {false, true}) {
        const std::string name =
            fmt::format("embedding_bag {}{}{}", to_string(mode), with_psw ? " psw" : "", ilo ? " include_last_offset" : "");
        const Tensor psw = with_psw ? psw_values(kInput.numel()) : Tensor();
        const IndexTensor offsets = ilo ? IndexTensor{0, 3, 3, 6} : kOffsets;
        Generator gen(9);
        const Tensor g = Tensor::uniform({ilo ? 3 : 5, 3}, -1, 1, gen);
        const EmbeddingBagOptions plain{.mode = mode, .include_last_offset = ilo};
        EmbeddingBagOptions scaled = plain;
        scaled.scale_grad_by_freq = true;
        check_scaled(name, grad_of(embedding_bag(kInput, offsets, w, scaled, psw), w, g),
                     grad_of(embedding_bag(kInput, offsets, w, plain, psw), w, g));
      }
}
