// hitch/core/grad.cpp: dense and row-sparse gradient storage (see grad.h).
#include <hitch/core/grad.h>

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

static void recycle(RowBlock&& block) {
  if (block.values.capacity() == 0) return;
  std::lock_guard lock(pool_mutex);
  pool.push_back(std::move(block));
  std::sort(pool.begin(), pool.end(),
            [](const RowBlock& a, const RowBlock& b) { return a.values.capacity() > b.values.capacity(); });
  if (pool.size() > kKeep) pool.resize(kKeep);
}

Grad::~Grad() { release_blocks(); }

void Grad::release_blocks() {
  for (Block& b : blocks_) recycle(RowBlock{std::move(b.rows), std::move(b.values), nullptr});
  blocks_.clear();
}

void Grad::materialize_blocks() const {
  for (Block& b : blocks_) {
    if (!b.sums) continue;
    RowBlock block{std::move(b.rows), {}, std::move(b.sums)};
    materialize(block);
    b.rows = std::move(block.rows);
    b.values = std::move(block.values);
    b.sums.reset();
  }
}

std::int64_t Grad::row_width() const {
  if (shape_.empty() || shape_[0] == 0) return 0;
  return numel_of(shape_) / shape_[0];
}

void Grad::add(const Tensor& g) {
  if (g.shape() != shape_)
    throw InternalError(fmt::format("Grad::add: contribution of shape {} for a gradient of shape {}",
                                    shape_str(g.shape()), shape_str(shape_)));
  if (layout_ == Layout::Empty) {  // first contribution: a copy, not zeros plus an add
    // ... or no copy at all when nothing else can see g's values: the op's own temporary (its
    // only handle, its storage unshared) is adopted as it is (a [512, 10000] logits gradient
    // is 20 MB).
    const bool sole = g.impl_ptr().use_count() == 1 && g.impl().storage.use_count() == 1 && !g.requires_grad();
    dense_ = sole ? g : g.clone();
    layout_ = Layout::Dense;
    return;
  }
  float* dst = dense_data();
  const float* src = g.data();
  const auto n = numel_of(shape_);
  for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

static bool sorted_unique(std::span<const std::int64_t> rows) {
  for (std::size_t k = 1; k < rows.size(); ++k)
    if (rows[k] <= rows[k - 1]) return false;
  return true;
}

void Grad::add_rows(std::span<const std::int64_t> rows, std::span<const float> values, bool sparse) {
  RowBlock block = make_row_block(rows.size(), static_cast<std::size_t>(row_width()));
  if (values.size() != block.values.size())
    throw InternalError(fmt::format("Grad::add_rows: {} rows of width {} but {} values", rows.size(), row_width(),
                                    values.size()));
  std::copy(rows.begin(), rows.end(), block.rows.begin());
  std::copy(values.begin(), values.end(), block.values.begin());
  add_rows(std::move(block), sparse);
}

void Grad::add_rows(RowBlock&& block, bool sparse) {
  const auto width = static_cast<std::size_t>(row_width());
  if (block.sums ? (!block.rows.empty() && block.sums->width != width) || block.sums->starts.size() != block.rows.size() + 1
                 : block.values.size() != block.rows.size() * width)
    throw InternalError(fmt::format("Grad::add_rows: {} rows of width {} but {} values", block.rows.size(), width,
                                    block.sums ? block.sums->starts.size() - 1 : block.values.size() / std::max<std::size_t>(1, width)));
  const bool sorted = sorted_unique(block.rows);
  if (!sorted) materialize(block);  // sort_blocks() reorders stored values
  if (sparse && layout_ != Layout::Dense) {
    layout_ = Layout::Sparse;
    if (block.rows.empty()) return;
    blocks_.push_back(Block{std::move(block.rows), std::move(block.values), sorted, std::move(block.sums)});
    return;
  }
  Block b{std::move(block.rows), std::move(block.values), sorted, std::move(block.sums)};
  scatter_into(dense_data(), b);
  recycle(RowBlock{std::move(b.rows), std::move(b.values), nullptr});
}

namespace {
// The loops of Grad::add_lookup (a free function so it can have an AVX2/AVX-512 clone: the same
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

void Grad::add_lookup(const Lookup& lookup) {
  const auto width = static_cast<std::size_t>(row_width());
  if (!lookup_fits(shape_) || (shape_[0] > 0 && lookup.width != width))
    throw InternalError(fmt::format("Grad::add_lookup: a lookup of width {} for a gradient of shape {}", lookup.width,
                                    shape_str(shape_)));
  float* dst = dense_data();
  // Per-thread scratch: a row's running sum lives at its own place (rows x width floats).
  thread_local std::vector<float> scratch;
  thread_local std::vector<unsigned char> mark;
  thread_local std::vector<std::int64_t> touched;
  const auto rows = static_cast<std::size_t>(shape_[0]);
  if (scratch.size() < rows * width) scratch.resize(rows * width);
  if (mark.size() < rows) mark.resize(rows, 0);
  touched.clear();
  lookup_into(lookup, width, dst, scratch.data(), mark.data(), touched);
}

// dst[rows[m]] += value of entry m (a deferred block's rows are summed on the way, never stored).
// Sorted unique rows are independent, so large blocks are split over threads by position; other
// blocks are added serially, in order.
void Grad::scatter_into(float* dst, const Block& block) const {
  const auto width = static_cast<std::size_t>(row_width());
  const std::span<const std::int64_t> rows = block.rows;
  auto add_range = [&](std::size_t b, std::size_t e) {
    std::vector<float> scratch(block.sums ? width : 0);
    for (std::size_t m = b; m < e; ++m) {
      if (m + kAhead < e) prefetch_row(dst, rows[m + kAhead], width);  // random rows of a big table
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

Tensor Grad::dense() const {
  if (layout_ == Layout::Dense) return dense_;
  Tensor out = Tensor::zeros(shape_);
  for (const Block& b : blocks_) scatter_into(out.data(), b);
  return out;
}

float* Grad::dense_data() {
  if (layout_ != Layout::Dense) {
    dense_ = dense();  // zeros, or the sparse blocks scattered
    release_blocks();
    layout_ = Layout::Dense;
  }
  return dense_.data();
}

void Grad::sort_blocks() const {
  const auto width = static_cast<std::size_t>(row_width());
  for (Block& b : blocks_) {
    if (b.sorted_unique) continue;
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
    b.rows = std::move(rows);
    b.values = std::move(values);
    b.sorted_unique = true;
  }
}

void Grad::coalesce() { merge_blocks(); }

void Grad::prepare_walk() const {
  if (layout_ != Layout::Sparse) return;
  sort_blocks();
  const auto slots = static_cast<std::size_t>(std::max(1, get_num_threads()));
  const std::size_t floats = slots * 3 * static_cast<std::size_t>(row_width());
  if (walk_scratch_.size() < floats) walk_scratch_.resize(floats);
  const std::size_t cursors = slots * blocks_.size();
  if (walk_at_.size() < cursors) walk_at_.resize(cursors);
}

void Grad::merge_blocks() const {
  if (layout_ != Layout::Sparse) return;
  sort_blocks();
  if (blocks_.size() == 1) materialize_blocks();
  if (blocks_.size() <= 1) return;
  const auto width = static_cast<std::size_t>(row_width());
  Block merged;
  std::size_t entries = 0;
  for (const Block& b : blocks_) entries += b.rows.size();
  merged.rows.reserve(entries);
  merged.values.reserve(entries * width);
  std::vector<float> scratch(3 * width);
  std::vector<std::size_t> at(blocks_.size());
  auto append = [&](std::int64_t row, const float* v) {
    merged.rows.push_back(row);
    merged.values.insert(merged.values.end(), v, v + width);
  };
  auto no_prefetch = [](std::int64_t) {};
  visit_range(std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(), append, no_prefetch,
              scratch.data(), at.data());
  for (Block& b : blocks_) recycle(RowBlock{std::move(b.rows), std::move(b.values), nullptr});
  blocks_.clear();
  blocks_.push_back(std::move(merged));
}

std::span<const std::int64_t> Grad::rows() const {
  merge_blocks();  // changes the representation, never the value
  if (blocks_.empty()) return {};
  return blocks_[0].rows;
}

std::span<const float> Grad::row_values() const {
  merge_blocks();
  if (blocks_.empty()) return {};
  return blocks_[0].values;
}

std::span<float> Grad::row_values_mut() {
  coalesce();
  if (blocks_.empty()) return {};
  return blocks_[0].values;
}

void Grad::zero() {
  if (layout_ == Layout::Dense) {
    std::fill(dense_.impl().storage->data.begin(), dense_.impl().storage->data.end(), 0.0f);
  } else if (layout_ == Layout::Sparse) {
    release_blocks();
  }
}

}  // namespace hitch
