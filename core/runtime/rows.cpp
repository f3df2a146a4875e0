// hitch/core/runtime/rows.cpp: the fast machinery of row-sparse gradients (see rows.h).
#include <hitch/core/runtime/rows.h>

#include <limits>
#include <mutex>
#include <numeric>

namespace hitch {

namespace {
// Recycled block buffers (see make_row_block): at most kKeep, the largest kept.
constexpr std::size_t kKeep = 4;
std::mutex pool_mutex;
std::vector<RowBlock> pool;
}  // namespace

RowBlock make_row_block(std::size_t rows, std::size_t width) {
  RowBlock block;
  std::vector<RowBlock> too_small;  // freed after the lock is released
  const std::size_t need = rows * width;
  {
    std::lock_guard lock(pool_mutex);
    // The smallest pooled block that fits and is at most 4x too big (a small request must not
    // take the big buffer that the next, big request needs: that would double the memory).
    std::size_t pick = pool.size();
    for (std::size_t i = 0; i < pool.size(); ++i) {
      const std::size_t cap = pool[i].values.capacity();
      const bool fits = cap >= need && pool[i].rows.capacity() >= rows && cap <= std::max<std::size_t>(4 * need, 1 << 14);
      if (fits && (pick == pool.size() || cap < pool[pick].values.capacity())) pick = i;
    }
    if (pick < pool.size()) {
      block = std::move(pool[pick]);
      pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick));
    } else {
      // A pooled block of this size class that is a little too small (this batch has more
      // distinct rows) would stay resident unused: drop it before allocating the new one.
      for (std::size_t i = pool.size(); i-- > 0;)
        if (pool[i].values.capacity() < need && 4 * pool[i].values.capacity() >= need) {
          too_small.push_back(std::move(pool[i]));
          pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(i));
        }
    }
  }
  too_small.clear();
  if (block.values.capacity() < need) {  // fresh: 1/32 headroom, so later batches reuse it
    block.values.reserve(need + need / 32);
    block.rows.reserve(rows + rows / 32);
  }
  block.rows.resize(rows);
  block.values.resize(need);
  return block;
}

void materialize(RowBlock& block) {
  if (!block.sums) return;
  const RowSums& sums = *block.sums;
  const std::size_t unique = block.rows.size();
  RowBlock out = make_row_block(unique, sums.width);
  const std::size_t per_row = sums.width * std::max<std::size_t>(1, sums.order.size() / std::max<std::size_t>(1, unique));
  parallel_for(unique, std::max<std::size_t>(1, kParallelMinFloats / std::max<std::size_t>(1, per_row)),
               [&](std::size_t b, std::size_t e) {
                 for (std::size_t u = b; u < e; ++u) sums.row(u, out.values.data() + u * sums.width);
               });
  block.values = std::move(out.values);
  block.sums.reset();
}

void recycle(RowBlock&& block) {
  if (block.values.capacity() == 0) return;
  block.sums.reset();  // only the buffers are reused
  block.sorted_unique = true;
  std::lock_guard lock(pool_mutex);
  pool.push_back(std::move(block));
  std::sort(pool.begin(), pool.end(),
            [](const RowBlock& a, const RowBlock& b) { return a.values.capacity() > b.values.capacity(); });
  if (pool.size() > kKeep) pool.resize(kKeep);
}

namespace {
// The loops of add_lookup (a free function so it can have an AVX2/AVX-512 clone: the same
// additions and multiplications, so the same bits). mark[r] says whether row r's running sum in
// scratch has started during this call; touched lists those rows.
HITCH_TARGET_CLONES void lookup_into(const Lookup& lookup, std::size_t width, float* dst, float* scratch,
                                     unsigned char* mark, std::vector<std::int64_t>& touched) {
  for (const std::uint32_t p : lookup.positions) {
    const auto r = static_cast<std::size_t>(lookup.keys[p]);
    const float* gp = lookup.g + static_cast<std::size_t>(lookup.src.empty() ? p : lookup.src[p]) * width;
    float* acc = scratch + r * width;
    const float c = lookup.coef.empty() ? 1.0f : lookup.coef[p];
    const bool first = !mark[r];
    if (first) {
      mark[r] = 1;
      touched.push_back(static_cast<std::int64_t>(r));
    }
    add_occurrence(acc, gp, first, !lookup.coef.empty(), c, width);
  }
  for (const std::int64_t r : touched) {
    float* row = dst + static_cast<std::size_t>(r) * width;
    const float* acc = scratch + static_cast<std::size_t>(r) * width;
    for (std::size_t d = 0; d < width; ++d) row[d] += acc[d];
    mark[static_cast<std::size_t>(r)] = 0;
  }
}
}  // namespace

void add_lookup(float* dst, std::size_t rows, std::size_t width, const Lookup& lookup) {
  // Per-thread scratch: a row's running sum lives at its own place (rows x width floats).
  thread_local std::vector<float> scratch;
  thread_local std::vector<unsigned char> mark;
  thread_local std::vector<std::int64_t> touched;
  if (scratch.size() < rows * width) scratch.resize(rows * width);
  if (mark.size() < rows) mark.resize(rows, 0);
  touched.clear();
  lookup_into(lookup, width, dst, scratch.data(), mark.data(), touched);
}

void scatter_rows(float* dst, const RowBlock& block, std::size_t width) {
  const std::span<const std::int64_t> rows = block.rows;
  auto add_range = [&](std::size_t b, std::size_t e) {
    std::vector<float> scratch(block.sums ? width : 0);
    for (std::size_t m = b; m < e; ++m) {
      if (m + RowWalk::kAhead < e) prefetch_row(dst, rows[m + RowWalk::kAhead], width);  // random rows of a big table
      float* row = dst + static_cast<std::size_t>(rows[m]) * width;
      const float* src = block.at(m, width, scratch.data());
      for (std::size_t d = 0; d < width; ++d) row[d] += src[d];
    }
  };
  if (block.sorted_unique)
    parallel_for(rows.size(), std::max<std::size_t>(1, kParallelMinFloats / std::max<std::size_t>(1, width)), add_range);
  else
    add_range(0, rows.size());
}

void sort_block(RowBlock& b, std::size_t width) {
  if (b.sorted_unique) return;
  materialize(b);
  std::vector<std::size_t> order(b.rows.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Stable: repeated rows are summed in arrival order, so the result does not depend on the sort.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return b.rows[x] < b.rows[y]; });
  RowBuffer rows;
  FloatBuffer values;
  for (const std::size_t m : order) {
    const float* src = b.values.data() + m * width;
    if (rows.empty() || rows.back() != b.rows[m]) {
      rows.push_back(b.rows[m]);
      values.insert(values.end(), src, src + width);
    } else {
      float* dst = values.data() + (rows.size() - 1) * width;
      for (std::size_t d = 0; d < width; ++d) dst[d] += src[d];
    }
  }
  recycle(RowBlock{std::move(b.rows), std::move(b.values), nullptr});
  b.rows = std::move(rows);
  b.values = std::move(values);
  b.sorted_unique = true;
}

void merge_blocks(std::vector<RowBlock>& blocks, std::size_t width) {
  for (RowBlock& b : blocks) sort_block(b, width);
  if (blocks.size() == 1) materialize(blocks[0]);
  if (blocks.size() <= 1) return;
  std::size_t entries = 0;
  for (const RowBlock& b : blocks) entries += b.rows.size();
  RowBlock merged = make_row_block(entries, width);  // pooled buffers: no fresh pages every step
  merged.rows.clear();  // capacity kept; append() fills it
  merged.values.clear();
  std::vector<float> scratch(3 * width);
  std::vector<std::size_t> at(blocks.size());
  auto append = [&](std::int64_t row, const float* v) {
    merged.rows.push_back(row);
    merged.values.insert(merged.values.end(), v, v + width);
  };
  auto no_prefetch = [](std::int64_t) {};
  RowWalk::visit_range(blocks, width, std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(),
                       append, no_prefetch, scratch.data(), at.data());
  for (RowBlock& b : blocks) recycle(std::move(b));
  blocks.clear();
  blocks.push_back(std::move(merged));
}

void RowWalk::prepare(std::vector<RowBlock>& blocks, std::size_t width) {
  for (RowBlock& b : blocks) sort_block(b, width);
  const auto slots = static_cast<std::size_t>(std::max(1, get_num_threads()));
  if (scratch_.size() < slots * 3 * width) scratch_.resize(slots * 3 * width);
  if (at_.size() < slots * blocks.size()) at_.resize(slots * blocks.size());
}

}  // namespace hitch
