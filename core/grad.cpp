// hitch/core/grad.cpp: dense and row-sparse gradients (see grad.h).
//
// Each operation has its plain version here, the reference that the fast one (core/runtime/rows.h)
// must match bit for bit. The plain versions are the ones to read first: sum_by_row is the whole
// rule of how a row-sparse gradient adds up.
#include <hitch/core/grad.h>

#include <algorithm>
#include <functional>

namespace hitch {

namespace {
// The rule of grad.h as a loop: the entries of `blocks`, in arrival order, stably sorted by row
// (so a row's entries keep their order), each row's entries summed in that order, the first one
// starting the sum. Deferred blocks (fast path) must be materialised first.
RowBlock sum_by_row(std::span<const RowBlock> blocks, std::size_t width) {
  struct Entry {
    std::int64_t row;
    const float* values;
  };
  std::vector<Entry> entries;
  for (const RowBlock& b : blocks)
    for (std::size_t k = 0; k < b.rows.size(); ++k) entries.push_back({b.rows[k], b.values.data() + k * width});
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) { return x.row < y.row; });
  RowBlock out;
  for (const Entry& e : entries) {
    if (out.rows.empty() || out.rows.back() != e.row) {
      out.rows.push_back(e.row);
      out.values.insert(out.values.end(), e.values, e.values + width);
    } else {
      float* sum = out.values.data() + (out.rows.size() - 1) * width;
      for (std::size_t d = 0; d < width; ++d) sum[d] += e.values[d];
    }
  }
  return out;
}

// dst[row] += values, entry by entry (rows of a coalesced block are distinct).
void add_into(float* dst, const RowBlock& block, std::size_t width) {
  for (std::size_t k = 0; k < block.rows.size(); ++k) {
    float* row = dst + static_cast<std::size_t>(block.rows[k]) * width;
    for (std::size_t d = 0; d < width; ++d) row[d] += block.values[k * width + d];
  }
}

bool rows_sorted_unique(std::span<const std::int64_t> rows) {
  return std::adjacent_find(rows.begin(), rows.end(), std::greater_equal<>()) == rows.end();
}
}  // namespace

Grad::~Grad() {
  for (RowBlock& b : blocks_) recycle(std::move(b));
}

std::int64_t Grad::row_width() const {
  if (shape_.empty() || shape_[0] == 0) return 0;
  return numel_of(shape_) / shape_[0];
}

void Grad::add(const Tensor& g) {
  if (g.shape() != shape_)
    throw InternalError(fmt::format("Grad::add: contribution of shape {} for a gradient of shape {}",
                                    shape_str(g.shape()), shape_str(shape_)));
  if (layout_ == Layout::Empty) {  // the first contribution is copied (0 + g would turn -0 into +0)
    // ... or adopted when nothing else can see g (the op's own temporary: one handle, its
    // storage unshared), which saves copying a [512, 10000] logits gradient (20 MB).
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
  const std::size_t given = block.sums ? block.sums->starts.size() - 1 : block.values.size() / std::max<std::size_t>(1, width);
  if (block.sums ? (!block.rows.empty() && block.sums->width != width) || given != block.rows.size()
                 : block.values.size() != block.rows.size() * width)
    throw InternalError(fmt::format("Grad::add_rows: {} rows of width {} but {} values", block.rows.size(), width, given));
  block.sorted_unique = rows_sorted_unique(block.rows);
  if (reference_kernels()) {  // the plain version: sum the block by row, then keep it or add it
    materialize(block);
    block = sum_by_row(std::span(&block, 1), width);
  } else {
    sort_block(block, width);  // a block from an embedding op is sorted already
  }
  if (sparse && layout_ != Layout::Dense) {
    layout_ = Layout::Sparse;
    if (!block.rows.empty()) blocks_.push_back(std::move(block));
    return;
  }
  if (reference_kernels()) add_into(dense_data(), block, width);
  else scatter_rows(dense_data(), block, width);
  recycle(std::move(block));
}

Tensor Grad::dense() const {
  if (layout_ == Layout::Dense) return dense_;
  Tensor out = Tensor::zeros(shape_);
  const auto width = static_cast<std::size_t>(row_width());
  if (reference_kernels()) {  // one sum per row, added to zeros
    coalesce_blocks();
    if (!blocks_.empty()) add_into(out.data(), blocks_[0], width);
  } else {  // block by block: 0 + a + b rounds as (a + b) does
    for (const RowBlock& b : blocks_) scatter_rows(out.data(), b, width);
  }
  return out;
}

float* Grad::dense_data() {
  if (layout_ != Layout::Dense) {
    dense_ = dense();  // zeros, or the sparse rows added in
    for (RowBlock& b : blocks_) recycle(std::move(b));
    blocks_.clear();
    layout_ = Layout::Dense;
  }
  return dense_.data();
}

void Grad::coalesce_blocks() const {
  if (layout_ != Layout::Sparse) return;
  const auto width = static_cast<std::size_t>(row_width());
  if (!reference_kernels()) {
    merge_blocks(blocks_, width);
    return;
  }
  if (blocks_.size() == 1 && blocks_[0].sorted_unique && !blocks_[0].sums) return;
  for (RowBlock& b : blocks_) materialize(b);
  RowBlock merged = sum_by_row(blocks_, width);
  for (RowBlock& b : blocks_) recycle(std::move(b));
  blocks_.clear();
  if (!merged.rows.empty()) blocks_.push_back(std::move(merged));
}

void Grad::coalesce() { coalesce_blocks(); }

std::span<const std::int64_t> Grad::rows() const {
  coalesce_blocks();
  if (blocks_.empty()) return {};
  return blocks_[0].rows;
}

std::span<const float> Grad::row_values() const {
  coalesce_blocks();
  if (blocks_.empty()) return {};
  return blocks_[0].values;
}

std::span<float> Grad::row_values_mut() {
  coalesce_blocks();
  if (blocks_.empty()) return {};
  return blocks_[0].values;
}

void Grad::prepare_walk() {
  if (layout_ != Layout::Sparse) return;
  if (reference_kernels()) coalesce_blocks();
  else walk_.prepare(blocks_, static_cast<std::size_t>(row_width()));
}

void Grad::zero() {
  if (layout_ == Layout::Dense) {
    std::fill(dense_.impl().storage->data.begin(), dense_.impl().storage->data.end(), 0.0f);
  } else if (layout_ == Layout::Sparse) {
    for (RowBlock& b : blocks_) recycle(std::move(b));
    blocks_.clear();
  }
}

}  // namespace hitch
