// hitch/ops/embedding_kernels.cpp: the memory-bound loops of embedding and embedding_bag
// (declared in ops/embedding_detail.h): a prefetching row gather, and the backward's
// "segment by row" (a stable radix sort of positions by row, then one reduction per unique row).
//
// Why sort: a lookup's gradient is Σ over positions of a row of (coefficient * upstream
// gradient). Reducing inside the op hands the Grad U unique rows instead of one row per
// occurrence (PyTorch materialises B*L x D and coalesces later), and each unique row is summed
// by one thread in position order, so the values are bitwise the same for any thread count.
// Left out on purpose: SIMD intrinsics (plain loops the compiler vectorises), huge pages.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/parallel.h"
#include "ops/embedding_detail.h"

namespace hitch::detail {

namespace {
// How far ahead the gathers prefetch (positions), and the smallest chunk worth a thread
// (floats moved).
constexpr std::size_t kAhead = 16;
constexpr std::size_t kChunkFloats = std::size_t{1} << 15;
}  // namespace

std::size_t min_chunk_for(std::size_t floats_per_item) {
  return std::max<std::size_t>(1, kChunkFloats / std::max<std::size_t>(1, floats_per_item));
}

void gather_rows(const float* w, std::span<const std::int64_t> idx, std::size_t width, float* out) {
  parallel_for(idx.size(), min_chunk_for(width), [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      if (i + kAhead < e) prefetch_row(w, idx[i + kAhead], width);
      std::copy_n(w + static_cast<std::size_t>(idx[i]) * width, width, out + i * width);  // not memcpy: w is null for D = 0
    }
  });
}

RowGroups group_by_row(std::span<const std::int64_t> keys, std::vector<std::uint32_t> positions,
                       std::int64_t num_rows) {
  RowGroups g;
  const std::size_t m = positions.size();
  // LSD radix sort by row, at most 11 bits per pass, the row bits split evenly over the passes
  // (1000 rows: one pass over 1024 buckets, not 2048); stable, so each row's positions stay in
  // increasing order. The sorted items are (row << 32 | position) when rows fit in 32 bits: each
  // pass then reads its keys sequentially instead of through keys[position]; otherwise the
  // positions.
  constexpr int kMaxBits = 11;
  int bits = 0;
  while (bits < 63 && (std::int64_t{1} << bits) < num_rows) ++bits;
  const int passes = (bits + kMaxBits - 1) / kMaxBits;
  const int digit_bits = passes == 0 ? 0 : (bits + passes - 1) / passes;
  const std::size_t buckets = std::size_t{1} << digit_bits;
  std::vector<std::uint32_t> count(buckets);  // m < 2^32: positions are uint32
  auto radix = [&](auto& items, auto digit_of) {
    if (bits == 0) return;
    std::remove_reference_t<decltype(items)> tmp(items.size());
    for (int shift = 0; shift < bits; shift += digit_bits) {
      if (shift > 0) std::fill(count.begin(), count.end(), 0);
      for (const auto v : items) ++count[digit_of(v, shift)];
      std::uint32_t sum = 0;
      for (auto& c : count) {
        const std::uint32_t n = c;
        c = sum;
        sum += n;
      }
      for (const auto v : items) tmp[count[digit_of(v, shift)]++] = v;
      items.swap(tmp);
    }
  };
  g.starts.reserve(m / 2 + 1);
  if (bits <= 32) {
    std::vector<std::uint64_t> items(m);
    for (std::size_t k = 0; k < m; ++k) items[k] = static_cast<std::uint64_t>(keys[positions[k]]) << 32 | positions[k];
    radix(items, [buckets](std::uint64_t v, int shift) { return static_cast<std::size_t>((v >> (32 + shift)) & (buckets - 1)); });
    for (std::size_t k = 0; k < m; ++k) {
      positions[k] = static_cast<std::uint32_t>(items[k]);
      if (k == 0 || (items[k] >> 32) != (items[k - 1] >> 32)) {
        g.starts.push_back(static_cast<std::uint32_t>(k));
        g.rows.push_back(static_cast<std::int64_t>(items[k] >> 32));
      }
    }
    g.order = std::move(positions);
  } else {
    radix(positions, [&](std::uint32_t p, int shift) {
      return static_cast<std::size_t>((static_cast<std::uint64_t>(keys[p]) >> shift) & (buckets - 1));
    });
    g.order = std::move(positions);
    for (std::size_t k = 0; k < m; ++k)
      if (k == 0 || keys[g.order[k]] != keys[g.order[k - 1]]) {
        g.starts.push_back(static_cast<std::uint32_t>(k));
        g.rows.push_back(keys[g.order[k]]);
      }
  }
  g.starts.push_back(static_cast<std::uint32_t>(m));
  return g;
}

RowBlock reduce_rows(RowGroups&& groups, const Tensor& g, std::size_t width, std::vector<std::uint32_t> src,
                     std::vector<float> coef) {
  auto sums = std::make_shared<RowSums>();
  sums->starts = std::move(groups.starts);
  sums->order = std::move(groups.order);
  sums->src = std::move(src);
  sums->coef = std::move(coef);
  sums->g = g;
  sums->width = width;
  RowBlock block;
  block.rows.assign(groups.rows.begin(), groups.rows.end());
  block.sums = std::move(sums);
  return block;
}

}  // namespace hitch::detail
