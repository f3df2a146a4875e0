// Determinism: the same seed gives bitwise-identical parameters after training, run to run and
// with 1 or 2 threads (hitch::set_num_threads), for the main example's kind of model (tied
// Embedding + EmbeddingBag, BCE with logits, SparseAdam + Adam; tests/reliability_model.h).
// The sizes make the 2-thread run really split the bag gathers, the sparse gradient reduction
// and the optimizer walks (each splits only above 2^15 floats per chunk).
#include <doctest/doctest.h>

#include <cstring>

#include "reliability_model.h"

using reliability::ThreadCount;
using reliability::train;

namespace {
// Empty when every float of every parameter has the same bits; else the first difference.
std::string bitwise_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return fmt::format("{} vs {} parameters", a.size(), b.size());
  for (std::size_t p = 0; p < a.size(); ++p) {
    if (a[p].size() != b[p].size()) return fmt::format("parameter {}: {} vs {} values", p, a[p].size(), b[p].size());
    for (std::size_t i = 0; i < a[p].size(); ++i)
      if (std::memcmp(&a[p][i], &b[p][i], sizeof(float)) != 0)
        return fmt::format("parameter {} element {}: {:.9g} vs {:.9g}", p, i, a[p][i], b[p][i]);
  }
  return "";
}
constexpr int kSteps = 4;
}  // namespace

TEST_CASE("determinism: same seed, same bits, run to run and with 1 or 2 threads") {
  std::vector<std::vector<float>> one, again, two;
  {
    ThreadCount threads(1);
    one = train(7, kSteps);
    again = train(7, kSteps);
  }
  {
    ThreadCount threads(2);
    two = train(7, kSteps);
  }
  const std::string run_to_run = bitwise_diff(one, again);
  CHECK_MESSAGE(run_to_run.empty(), run_to_run);
  const std::string across_threads = bitwise_diff(one, two);
  CHECK_MESSAGE(across_threads.empty(), across_threads);

  // The comparison can fail: training moved the parameters, and another seed gives other bits.
  ThreadCount threads(1);
  CHECK_FALSE(bitwise_diff(one, train(7, 0)).empty());
  CHECK_FALSE(bitwise_diff(one, train(8, kSteps)).empty());
}
