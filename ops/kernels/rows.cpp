// hitch/ops/kernels/rows.cpp: the memory-bound loops of embedding and embedding_bag
// (declared in ops/kernels/embedding_kernels.h): a prefetching row gather, and the backward's
// "segment by row" (a stable radix sort of positions by row, then one reduction per unique row).
// The plain versions they must match are in ops/embedding.cpp and ops/embedding_bag.cpp.
//
// Why sort: a lookup's gradient is Σ over positions of a row of (coefficient * upstream
// gradient). Reducing inside the op hands the Grad U unique rows instead of one row per
// occurrence (PyTorch materialises B*L x D and coalesces later), and each unique row is summed
// by one thread in position order, so the values are bitwise the same for any thread count.
// Left out on purpose: SIMD intrinsics (plain loops the compiler vectorises), huge pages.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/tape.h>
#include <hitch/ops/kernels/embedding_kernels.h>

namespace hitch::kernels {

namespace {
// How far ahead the gathers prefetch (positions), and the smallest chunk worth a thread
// (floats moved).
constexpr std::size_t kAhead = 16;
constexpr std::size_t kChunkFloats = kParallelMinFloats;
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

namespace {

// Stable LSD radix sort of items by the digits (item >> (shift0 + pass * digit_bits)) & (buckets
// - 1), pass = 0 .. passes - 1. Large inputs are split into contiguous chunks, one per thread:
// each chunk counts its own digits, the offsets are laid out bucket by bucket and chunk by chunk
// within a bucket, and each chunk scatters its items in order, so the result is the one stable
// order whatever the thread count.
template <class Item, class Digit>
void radix_sort(std::vector<Item>& items, std::vector<Item>& tmp, int passes, std::size_t buckets, Digit digit) {
  if (passes == 0) return;
  const std::size_t m = items.size();
  constexpr std::size_t kMinChunk = std::size_t{1} << 13;  // items per thread, at least
  const std::size_t chunks =
      std::max<std::size_t>(1, std::min(static_cast<std::size_t>(get_num_threads()), m / kMinChunk));
  tmp.resize(m);
  std::vector<std::uint32_t> count(chunks * buckets);  // m < 2^32: positions are uint32
  if (chunks == 1) {  // the plain loops (measurably faster than the chunked ones on one thread)
    for (int pass = 0; pass < passes; ++pass) {
      if (pass > 0) std::fill(count.begin(), count.end(), 0);
      for (const Item v : items) ++count[digit(v, pass)];
      std::uint32_t sum = 0;
      for (auto& c : count) {
        const std::uint32_t n = c;
        c = sum;
        sum += n;
      }
      for (const Item v : items) tmp[count[digit(v, pass)]++] = v;
      items.swap(tmp);
    }
    return;
  }
  auto lo = [&](std::size_t c) { return m * c / chunks; };
  for (int pass = 0; pass < passes; ++pass) {
    std::fill(count.begin(), count.end(), 0);
    auto count_chunk = [&, buckets, pass](std::size_t c) {
      std::uint32_t* cnt = count.data() + c * buckets;
      const std::size_t end = lo(c + 1);
      for (std::size_t k = lo(c); k < end; ++k) ++cnt[digit(items[k], pass)];
    };
    auto scatter_chunk = [&, buckets, pass](std::size_t c) {
      std::uint32_t* at = count.data() + c * buckets;
      const std::size_t end = lo(c + 1);
      for (std::size_t k = lo(c); k < end; ++k) tmp[at[digit(items[k], pass)]++] = items[k];
    };
    parallel_for(chunks, 1, [&](std::size_t b, std::size_t e) {
      for (std::size_t c = b; c < e; ++c) count_chunk(c);
    });
    std::uint32_t sum = 0;  // bucket-major, then chunk: stable across chunks
    for (std::size_t bucket = 0; bucket < buckets; ++bucket)
      for (std::size_t c = 0; c < chunks; ++c) {
        std::uint32_t& slot = count[c * buckets + bucket];
        const std::uint32_t n = slot;
        slot = sum;
        sum += n;
      }
    parallel_for(chunks, 1, [&](std::size_t b, std::size_t e) {
      for (std::size_t c = b; c < e; ++c) scatter_chunk(c);
    });
    items.swap(tmp);
  }
}

}  // namespace

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
  if (bits <= 32) {
    // Scratch kept per thread: a fresh 2 x 8m bytes each call is a fresh mmap (and page faults)
    // once m passes glibc's threshold.
    thread_local std::vector<std::uint64_t> items, tmp;
    items.resize(m);
    for (std::size_t k = 0; k < m; ++k) items[k] = static_cast<std::uint64_t>(keys[positions[k]]) << 32 | positions[k];
    radix_sort(items, tmp, passes, buckets, [buckets, digit_bits](std::uint64_t v, int pass) {
      return static_cast<std::size_t>((v >> (32 + pass * digit_bits)) & (buckets - 1));
    });
    // Split the sorted items into positions and row groups, through plain pointers (the loop
    // must not reload thread-local or vector state each step).
    std::size_t groups = 0;
    const std::uint64_t* item = items.data();
    for (std::size_t k = 0; k < m; ++k) groups += k == 0 || (item[k] >> 32) != (item[k - 1] >> 32);
    g.rows.resize(groups);
    g.starts.resize(groups + 1);
    std::int64_t* rows = g.rows.data();
    std::uint32_t* starts = g.starts.data();
    std::uint32_t* order = positions.data();
    std::size_t u = 0;
    for (std::size_t k = 0; k < m; ++k) {
      order[k] = static_cast<std::uint32_t>(item[k]);
      if (k == 0 || (item[k] >> 32) != (item[k - 1] >> 32)) {
        starts[u] = static_cast<std::uint32_t>(k);
        rows[u++] = static_cast<std::int64_t>(item[k] >> 32);
      }
    }
    starts[groups] = static_cast<std::uint32_t>(m);
    g.order = std::move(positions);
    if (items.capacity() > (std::size_t{1} << 20)) {  // a huge batch: do not keep its scratch
      items = {};
      tmp = {};
    }
    return g;
  } else {
    g.starts.reserve(m / 2 + 1);
    g.rows.reserve(m / 2 + 1);
    std::vector<std::uint32_t> tmp;
    radix_sort(positions, tmp, passes, buckets, [&](std::uint32_t p, int pass) {
      return static_cast<std::size_t>((static_cast<std::uint64_t>(keys[p]) >> (pass * digit_bits)) & (buckets - 1));
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

void lookup_backward(GradSink& sink, std::span<const std::int64_t> keys, std::vector<std::uint32_t> positions,
                     const Tensor& g, std::size_t width, std::vector<std::uint32_t> src, std::vector<float> coef,
                     std::int64_t num_rows, bool sparse) {
  if (!sparse && sink.takes_lookup(0)) {  // a small dense table: no sort (same bits)
    sink.add_lookup(0, Lookup{.keys = keys, .positions = positions, .g = g.data(), .width = width, .src = src,
                              .coef = coef});
    return;
  }
  RowGroups groups = group_by_row(keys, std::move(positions), num_rows);
  sink.add_rows(0, reduce_rows(std::move(groups), g, width, std::move(src), std::move(coef)), sparse);
}

void embedding_backward(GradSink& sink, std::span<const std::int64_t> indices, std::optional<std::int64_t> pad,
                        const Tensor& g, std::size_t width, std::vector<float> coef, std::int64_t num_rows,
                        bool sparse) {
  std::vector<std::uint32_t> positions;
  positions.reserve(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i)
    if (!pad || indices[i] != *pad) positions.push_back(static_cast<std::uint32_t>(i));
  lookup_backward(sink, indices, std::move(positions), g, width, {}, std::move(coef), num_rows, sparse);
}

}  // namespace hitch::kernels
