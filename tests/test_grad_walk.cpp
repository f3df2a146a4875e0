// Grad::for_each_row (the fused optimizer walk) against the dense scatter of the same blocks:
// every row's value bitwise equal, at 1 and 2 threads, for two blocks (the tied case, its own
// merge), three blocks (the general merge) and unsorted blocks.
#include <doctest/doctest.h>

#include <vector>

#include "hitch.h"

using namespace hitch;

namespace {
struct Walked {
  std::vector<float> values;  // dense [rows, width], rows never visited stay NaN
  std::vector<std::int64_t> order;
};

Walked walk(Grad& g, std::int64_t rows, std::int64_t width) {
  Walked w;
  w.values.assign(static_cast<std::size_t>(rows * width), std::numeric_limits<float>::quiet_NaN());
  std::vector<char> seen(static_cast<std::size_t>(rows), 0);
  g.for_each_row([&](std::int64_t row, const float* v) {
    seen[static_cast<std::size_t>(row)] += 1;
    std::copy_n(v, width, w.values.data() + row * width);
  });
  for (std::int64_t r = 0; r < rows; ++r)
    if (seen[static_cast<std::size_t>(r)]) w.order.push_back(r);
  for (const char c : seen) CHECK(c <= 1);  // each distinct row exactly once
  return w;
}
}  // namespace

TEST_CASE("fused row walk equals the dense scatter for 2 and 3 blocks at 1 and 2 threads") {
  const std::int64_t rows = 3000;
  for (const std::int64_t width : {5, 16}) {
    for (const int blocks : {2, 3}) {
      for (const bool sorted : {true, false}) {
        for (const int threads : {1, 2}) {
          INFO("width ", width, " blocks ", blocks, " sorted ", sorted, " threads ", threads);
          set_num_threads(threads);
          Generator gen(static_cast<std::uint64_t>(7 * width + blocks));
          Grad g(Shape{rows, width});
          for (int b = 0; b < blocks; ++b) {
            std::vector<std::int64_t> idx;
            for (std::int64_t r = 0; r < rows; ++r)
              if (gen.uniform() < 0.6) idx.push_back(r);
            if (!sorted) std::reverse(idx.begin(), idx.end());
            std::vector<float> vals(idx.size() * static_cast<std::size_t>(width));
            for (float& v : vals) v = static_cast<float>(gen.normal());
            g.add_rows(idx, vals, true);
          }
          REQUIRE(g.num_blocks() == static_cast<std::size_t>(blocks));
          const std::vector<float> dense = g.dense().to_vector();
          const Walked w = walk(g, rows, width);
          CHECK(w.order.size() > 2000);
          for (std::int64_t r = 0; r < rows; ++r) {
            const bool visited = std::binary_search(w.order.begin(), w.order.end(), r);
            for (std::int64_t d = 0; d < width; ++d) {
              const auto at = static_cast<std::size_t>(r * width + d);
              if (visited) REQUIRE(w.values[at] == dense[at]);
              else REQUIRE(dense[at] == 0.0f);
            }
          }
        }
      }
    }
  }
  set_num_threads(1);
}
