// hitch/ops/sharding.h: how embedding and embedding_bag read a table whose rows are split over
// processes. The rule itself (which rank owns which row, how rows and gradients travel) is
// hitch::dist's row-wise sharding (dist/sharded.h, docs/sharding.md); ops only know this
// interface, so the core and ops libraries do not depend on MPI.
//
// A lookup on a sharded weight (a Parameter whose impl().sharding is a RowSharding):
//  1. runs every check of the unsharded op, with N = num_rows() (the whole table), catching the
//     verdict instead of throwing it;
//  2. fetch(): agrees the verdict over all ranks (the same Error everywhere, nothing changed) and
//     returns the rows of this rank's distinct ids, sorted, as one [U, D] tensor;
//  3. runs the unsharded op on those rows (ids renumbered to [0, U)), so the output is bitwise
//     what the unsharded op gives on the same values;
//  4. record(): hands the rows' leaf to the sharding, whose gradient (after backward) is this
//     rank's contribution to those rows.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>

namespace hitch {

class RowSharding : public ShardingHook {
 public:
  // N, the rows of the whole table (the local shard has fewer).
  virtual std::int64_t num_rows() const = 0;
  // Collective. op: "embedding" or "embedding_bag". error: this rank's verdict on the call's
  // arguments (nullopt: valid). ids: this rank's distinct ids, increasing, each in [0, N) (empty
  // when error is set). shard: this rank's rows (the Parameter's value). renorm(shard,
  // local_rows): the op's max_norm, for the owner to apply to the rows asked of it (null: none).
  // Throws the same hitch::Error on every rank if any rank's error is set or the ranks are not
  // making the same call; else returns [ids.size(), D], the rows in the order the sharding
  // received them (so it needs no second copy): row j is the row of ids[order[j]], order a
  // permutation it fills.
  using Renorm = std::function<void(const Tensor& shard, std::span<const std::int64_t> local_rows)>;
  virtual Tensor fetch(std::string_view op, const std::optional<std::string>& error, const Tensor& shard,
                       std::span<const std::int64_t> ids, const Renorm& renorm, std::vector<std::uint32_t>& order) = 0;
  // rows: the leaf [ids.size(), D] the op ran on, row j that of ids[j]; its gradient is this
  // rank's contribution to rows `ids` (sparse: the op's gradient layout). Called only when the op
  // records for backward.
  virtual void record(const Parameter& rows, std::vector<std::int64_t> ids, bool sparse) = 0;
};

// The sharding of a weight, or null for an ordinary tensor.
RowSharding* sharding_of(const Tensor& weight);
// A weight's number of rows as a lookup sees it: the whole table's for a sharded Parameter,
// else size(0). Requires: weight is 2-D.
std::int64_t table_rows(const Tensor& weight);

}  // namespace hitch
