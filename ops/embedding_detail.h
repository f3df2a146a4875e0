// hitch/ops/embedding_detail.h: pieces shared by ops/embedding.cpp and ops/embedding_bag.cpp
// (argument checks, max_norm renormalisation, frequency counts). Internal: not installed as API.
// The fast kernels are behind ops/kernels/embedding_kernels.h.
//
// The split between checking and mutating is the point of this file: every check_* function
// only reads, and renorm_rows() (the one writer) is called by an op after all its checks passed,
// so a rejected call leaves the weight as it was.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <hitch/core/tensor.h>
#include <hitch/ops/embedding.h>
#include <hitch/ops/sharding.h>

namespace hitch::detail {

// mode must be one of BagMode's enumerators (a cast integer may be anything).
void check_bag_mode(std::string_view op, BagMode mode);

// weight must be 2-D [N, D].
void check_weight_2d(std::string_view op, const Tensor& weight);

// Returns the normalised padding row (none, or in [0, N)); throws unless padding_idx is in [-N, N).
std::optional<std::int64_t> normalise_padding_idx(std::string_view op, std::optional<std::int64_t> padding_idx,
                                                  std::int64_t num_rows);

// max_norm, if set, must be > 0 (and not NaN); norm_type must be > 0 (inf allowed).
void check_max_norm(std::string_view op, std::optional<float> max_norm, float norm_type);

// Every index must be in [0, N). The message names the position (a multi-index for rank > 1),
// the value and the valid range; `what` is the argument's name ("indices", "input").
void check_index_range(std::string_view op, std::string_view what, const IndexTensor& indices, std::int64_t num_rows);

// PyTorch's embedding_renorm_: each distinct referenced row whose p-norm exceeds max_norm is
// scaled by max_norm / (norm + 1e-7), in place, once. The scale is computed in double and
// rounded to float before the multiply (the bit-exact recipe of REFERENCE 1.5). Bumps the
// storage version on every call (even when no row changes), as PyTorch does.
// Requires: every index already checked to be in range.
void renorm_rows(const Tensor& weight, std::span<const std::int64_t> indices, float max_norm, float norm_type);

// For scale_grad_by_freq: count[i] = number of occurrences of indices[i] in the whole span.
std::vector<std::int64_t> index_counts(std::span<const std::int64_t> indices);

// A lookup on a sharded weight (ops/sharding.h; ops/sharded_lookup.cpp). checks(): the op's
// argument checks with N = the whole table's rows, returning the normalised padding row; they
// throw on bad input, and the verdict is agreed over the ranks before anything moves.
// run(ids, rows, pad): the unsharded op on the fetched rows [U, D], ids renumbered to [0, U),
// pad renumbered (none if this rank's ids do not contain it), max_norm already applied.
using ShardedChecks = std::function<std::optional<std::int64_t>()>;
using ShardedRun = std::function<Tensor(const IndexTensor& ids, const Tensor& rows, std::optional<std::int64_t> pad)>;
Tensor sharded_lookup(std::string_view op, RowSharding& sharding, const Tensor& weight, const IndexTensor& input,
                      std::optional<float> max_norm, float norm_type, bool sparse, const ShardedChecks& checks,
                      const ShardedRun& run);

}  // namespace hitch::detail
