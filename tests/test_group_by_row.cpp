// kernels::group_by_row, the radix sort under every embedding backward: for table sizes that take
// one pass (small and 11-bit digits), several passes of evenly split digits (2049, 5000, 2^22+3
// rows), and the path for rows beyond 32 bits, the groups equal a stable sort of the positions
// by row (skipped positions left out).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include <hitch/hitch.h>
#include <hitch/ops/kernels/embedding_kernels.h>

using namespace hitch;

TEST_CASE("group_by_row: equals a stable sort by row for one pass, several passes and 64-bit rows") {
  Generator gen(7);
  for (const std::int64_t num_rows : {std::int64_t{1}, std::int64_t{2}, std::int64_t{1000}, std::int64_t{2048},
                                      std::int64_t{2049}, std::int64_t{5000}, (std::int64_t{1} << 22) + 3,
                                      (std::int64_t{1} << 40) + 5}) {
    CAPTURE(num_rows);
    const std::size_t m = 700;
    std::vector<std::int64_t> keys(m);
    // Few distinct rows, so groups have several positions; one of them is the last row.
    std::vector<std::int64_t> pool(40);
    for (auto& r : pool) r = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(num_rows)));
    pool[0] = num_rows - 1;
    for (auto& k : keys) k = pool[gen.below(pool.size())];
    std::vector<std::uint32_t> positions;
    for (std::uint32_t p = 0; p < m; ++p)
      if (p % 7 != 3) positions.push_back(p);  // some positions send no gradient (padding)

    std::vector<std::uint32_t> expected = positions;
    std::stable_sort(expected.begin(), expected.end(), [&](std::uint32_t a, std::uint32_t b) { return keys[a] < keys[b]; });

    const kernels::RowGroups g = kernels::group_by_row(keys, positions, num_rows);
    CHECK(g.order == expected);
    REQUIRE(g.starts.size() == g.rows.size() + 1);
    CHECK(g.starts.front() == 0);
    CHECK(g.starts.back() == positions.size());
    for (std::size_t u = 0; u < g.rows.size(); ++u) {
      if (u > 0) CHECK(g.rows[u - 1] < g.rows[u]);
      for (std::uint32_t k = g.starts[u]; k < g.starts[u + 1]; ++k) CHECK(keys[g.order[k]] == g.rows[u]);
    }
  }
}

TEST_CASE("group_by_row: split over 2 threads, the order is the same stable sort") {
  // Large enough for the radix sort's per-thread chunks (8K positions each), with one and two
  // row-digit passes and the 64-bit path.
  Generator gen(11);
  for (const std::int64_t num_rows : {std::int64_t{1000}, std::int64_t{100000}, (std::int64_t{1} << 40) + 5}) {
    CAPTURE(num_rows);
    const std::size_t m = 50000;
    std::vector<std::int64_t> keys(m);
    for (auto& k : keys) k = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(std::min<std::int64_t>(num_rows, 30000))));
    std::vector<std::uint32_t> positions;
    for (std::uint32_t p = 0; p < m; ++p)
      if (p % 5 != 1) positions.push_back(p);
    std::vector<std::uint32_t> expected = positions;
    std::stable_sort(expected.begin(), expected.end(), [&](std::uint32_t a, std::uint32_t b) { return keys[a] < keys[b]; });
    for (const int threads : {1, 2}) {
      set_num_threads(threads);
      const kernels::RowGroups g = kernels::group_by_row(keys, positions, num_rows);
      CHECK(g.order == expected);
      REQUIRE(g.starts.size() == g.rows.size() + 1);
      for (std::size_t u = 0; u < g.rows.size(); ++u)
        REQUIRE(keys[g.order[g.starts[u]]] == g.rows[u]);
    }
    set_num_threads(1);
  }
}
