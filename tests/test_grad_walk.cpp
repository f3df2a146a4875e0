// Grad::for_each_row (the fused optimizer walk) against the dense scatter of the same blocks:
// every row's value bitwise equal, at 1 and 2 threads, for two blocks (the tied case, its own
// merge), three blocks (the general merge) and unsorted blocks.
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include <hitch/hitch.h>

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

TEST_CASE("deferred row sums (embedding backward blocks) give the same values to every reader") {
  // A RowSums block is summed only when read: by the fused walk, a dense scatter, coalesce() or a
  // dense-layout add_rows. Each reader must see row u = sum over its occurrences of
  // coef * g[src], first occurrence first, exactly as this plain reference loop computes it.
  const std::int64_t rows = 2000, width = 16, g_rows = 300;
  for (const int threads : {1, 2}) {
    for (const bool with_coef : {false, true}) {
      INFO("threads ", threads, " coef ", with_coef);
      set_num_threads(threads);
      Generator gen(static_cast<std::uint64_t>(11 + threads + (with_coef ? 5 : 0)));
      std::vector<float> want(static_cast<std::size_t>(rows * width), 0.0f);
      std::vector<char> touched(static_cast<std::size_t>(rows), 0);
      Grad sparse(Shape{rows, width});
      Grad dense(Shape{rows, width});
      for (int b = 0; b < 2; ++b) {
        auto sums = std::make_shared<RowSums>();
        sums->width = static_cast<std::size_t>(width);
        sums->g = Tensor::randn({g_rows, width}, gen);
        RowBuffer block_rows;
        std::vector<float> block_value(static_cast<std::size_t>(width));
        std::uint32_t positions = 0;
        for (std::int64_t r = 0; r < rows; ++r) {
          if (gen.uniform() < 0.5) continue;
          block_rows.push_back(r);
          sums->starts.push_back(positions);
          const int occurrences = 1 + static_cast<int>(gen.below(3));  // 1 to 3 positions per row
          for (int k = 0; k < occurrences; ++k) {
            sums->order.push_back(positions);
            sums->src.push_back(static_cast<std::uint32_t>(gen.below(g_rows)));
            if (with_coef) sums->coef.push_back(static_cast<float>(gen.uniform()));
            const float* gp = sums->g.data() + static_cast<std::size_t>(sums->src.back()) * static_cast<std::size_t>(width);
            for (std::int64_t d = 0; d < width; ++d) {
              const float v = with_coef ? sums->coef.back() * gp[d] : gp[d];
              block_value[static_cast<std::size_t>(d)] = k == 0 ? v : block_value[static_cast<std::size_t>(d)] + v;
            }
            ++positions;
          }
          for (std::int64_t d = 0; d < width; ++d) {  // blocks summed in arrival order
            float& w = want[static_cast<std::size_t>(r * width + d)];
            w = touched[static_cast<std::size_t>(r)] ? w + block_value[static_cast<std::size_t>(d)] : block_value[static_cast<std::size_t>(d)];
          }
          touched[static_cast<std::size_t>(r)] = 1;
        }
        sums->starts.push_back(positions);
        RowBlock block;
        block.rows = block_rows;
        block.sums = sums;
        sparse.add_rows(RowBlock{block.rows, {}, sums}, true);
        dense.add_rows(std::move(block), false);  // scattered while summing, never stored
      }
      REQUIRE(sparse.num_blocks() == 2);
      const Walked w = walk(sparse, rows, width);
      const std::vector<float> scattered = sparse.dense().to_vector();
      const std::vector<float> dense_layout = dense.dense().to_vector();
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < width; ++d) {
          const auto at = static_cast<std::size_t>(r * width + d);
          if (touched[static_cast<std::size_t>(r)]) REQUIRE(w.values[at] == want[at]);
          REQUIRE(scattered[at] == want[at]);
          REQUIRE(dense_layout[at] == want[at]);
        }
      sparse.coalesce();  // computes the values once, as an array
      REQUIRE(sparse.num_blocks() == 1);
      const auto coalesced_rows = sparse.rows();
      const auto coalesced = sparse.row_values();
      REQUIRE(coalesced_rows.size() == w.order.size());
      for (std::size_t k = 0; k < coalesced_rows.size(); ++k)
        for (std::int64_t d = 0; d < width; ++d)
          REQUIRE(coalesced[k * static_cast<std::size_t>(width) + static_cast<std::size_t>(d)] ==
                  want[static_cast<std::size_t>(coalesced_rows[k] * width + d)]);
    }
  }
  set_num_threads(1);
}
