// hitch/core/grad.cpp: dense and row-sparse gradient storage (see grad.h).
#include "core/grad.h"

#include <algorithm>
#include <numeric>

namespace hitch {

std::int64_t Grad::row_width() const {
  if (shape_.empty() || shape_[0] == 0) return 0;
  return numel_of(shape_) / shape_[0];
}

void Grad::add(const Tensor& g) {
  if (g.shape() != shape_)
    throw InternalError(fmt::format("Grad::add: contribution of shape {} for a gradient of shape {}",
                                    shape_str(g.shape()), shape_str(shape_)));
  if (layout_ == Layout::Empty) {  // first contribution: a copy, not zeros plus an add
    dense_ = g.clone();
    layout_ = Layout::Dense;
    return;
  }
  float* dst = dense_data();
  const float* src = g.data();
  const auto n = numel_of(shape_);
  for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void Grad::add_rows(std::span<const std::int64_t> rows, std::span<const float> values, bool sparse) {
  const auto width = static_cast<std::size_t>(row_width());
  if (values.size() != rows.size() * width)
    throw InternalError(fmt::format("Grad::add_rows: {} rows of width {} but {} values", rows.size(), width, values.size()));
  if (sparse && layout_ != Layout::Dense) {
    layout_ = Layout::Sparse;
    if (!rows.empty()) coalesced_ = false;
    rows_.insert(rows_.end(), rows.begin(), rows.end());
    values_.insert(values_.end(), values.begin(), values.end());
    return;
  }
  float* dst = dense_data();
  for (std::size_t m = 0; m < rows.size(); ++m) {
    float* row = dst + static_cast<std::size_t>(rows[m]) * width;
    const float* src = values.data() + m * width;
    for (std::size_t d = 0; d < width; ++d) row[d] += src[d];
  }
}

Tensor Grad::dense() const {
  if (layout_ == Layout::Dense) return dense_;
  Tensor out = Tensor::zeros(shape_);
  const auto width = static_cast<std::size_t>(row_width());
  float* dst = out.data();
  for (std::size_t m = 0; m < rows_.size(); ++m)
    for (std::size_t d = 0; d < width; ++d) dst[static_cast<std::size_t>(rows_[m]) * width + d] += values_[m * width + d];
  return out;
}

float* Grad::dense_data() {
  if (layout_ != Layout::Dense) {
    Tensor d = dense();  // zeros, or the sparse entries scattered
    dense_ = d;
    rows_.clear();
    values_.clear();
    coalesced_ = true;
    layout_ = Layout::Dense;
  }
  return dense_.data();
}

void Grad::coalesce() {
  if (layout_ != Layout::Sparse || coalesced_) return;
  const auto width = static_cast<std::size_t>(row_width());
  std::vector<std::size_t> order(rows_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Stable: repeated rows are summed in arrival order, so the result does not depend on the sort.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rows_[a] < rows_[b]; });
  std::vector<std::int64_t> rows;
  std::vector<float> values;
  for (std::size_t k = 0; k < order.size(); ++k) {
    const std::size_t m = order[k];
    if (rows.empty() || rows.back() != rows_[m]) {
      rows.push_back(rows_[m]);
      values.insert(values.end(), values_.begin() + static_cast<std::ptrdiff_t>(m * width),
                    values_.begin() + static_cast<std::ptrdiff_t>((m + 1) * width));
    } else {
      float* dst = values.data() + (rows.size() - 1) * width;
      for (std::size_t d = 0; d < width; ++d) dst[d] += values_[m * width + d];
    }
  }
  rows_ = std::move(rows);
  values_ = std::move(values);
  coalesced_ = true;
}

void Grad::zero() {
  if (layout_ == Layout::Dense) {
    std::fill(dense_.impl().storage->data.begin(), dense_.impl().storage->data.end(), 0.0f);
  } else if (layout_ == Layout::Sparse) {
    rows_.clear();
    values_.clear();
    coalesced_ = true;
  }
}

}  // namespace hitch
