// hitch/ops/sharded_lookup.cpp: embedding and embedding_bag on a sharded weight (ops/sharding.h).
// The op files call sharded_lookup() with their own checks and their own unsharded body; this
// file does what is common: gather the verdict, the distinct ids, fetch, renumber, record.
#include <algorithm>

#include <hitch/core/tape.h>
#include <hitch/ops/embedding_detail.h>
#include <hitch/ops/kernels/embedding_kernels.h>
#include <hitch/ops/sharding.h>

namespace hitch {

RowSharding* sharding_of(const Tensor& weight) {
  if (!weight.defined()) return nullptr;
  return dynamic_cast<RowSharding*>(weight.impl().sharding.get());
}

std::int64_t table_rows(const Tensor& weight) {
  if (const RowSharding* s = sharding_of(weight)) return s->num_rows();
  return weight.size(0);
}

namespace detail {

Tensor sharded_lookup(std::string_view op, RowSharding& sharding, const Tensor& weight, const IndexTensor& input,
                      std::optional<float> max_norm, float norm_type, bool sparse, const ShardedChecks& checks,
                      const ShardedRun& run) {
  // 1. The op's checks, with N the whole table's rows; the verdict is agreed in fetch().
  std::optional<std::string> error;
  std::optional<std::int64_t> pad;
  try {
    pad = checks();
  } catch (const Error& e) {
    error = e.what();
  }
  // 2. This rank's distinct ids, increasing, and each position's place among them (none if its
  // call is invalid: fetch throws anyway). The radix sort by row of the lookup backward
  // (kernels::group_by_row) does both in one pass.
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> renumbered(static_cast<std::size_t>(input.numel()));
  if (!error) {
    std::vector<std::uint32_t> positions(renumbered.size());
    for (std::size_t p = 0; p < positions.size(); ++p) positions[p] = static_cast<std::uint32_t>(p);
    kernels::RowGroups groups = kernels::group_by_row(input.values(), std::move(positions), sharding.num_rows());
    for (std::size_t u = 0; u + 1 < groups.starts.size(); ++u)
      for (std::uint32_t k = groups.starts[u]; k < groups.starts[u + 1]; ++k)
        renumbered[groups.order[k]] = static_cast<std::int64_t>(u);
    ids = std::move(groups.rows);
  }
  RowSharding::Renorm renorm;
  if (max_norm)
    renorm = [m = *max_norm, norm_type](const Tensor& shard, std::span<const std::int64_t> local_rows) {
      renorm_rows(shard, local_rows, m, norm_type);
    };
  std::vector<std::uint32_t> order;
  Tensor rows = sharding.fetch(op, error, weight, ids, renorm, order);

  // 3. The unsharded op on the fetched rows, ids renumbered to their rows' positions: sorted
  // id u is row at[u] (rows come in the sharding's order: row j is ids[order[j]]).
  std::vector<std::int64_t> at(ids.size());
  std::vector<std::int64_t> row_ids(ids.size());
  for (std::size_t j = 0; j < order.size(); ++j) {
    at[order[j]] = static_cast<std::int64_t>(j);
    row_ids[j] = ids[order[j]];
  }
  for (std::int64_t& v : renumbered) v = at[static_cast<std::size_t>(v)];
  const IndexTensor local(input.shape(), std::move(renumbered));
  std::optional<std::int64_t> local_pad;
  if (pad) {
    const auto it = std::lower_bound(ids.begin(), ids.end(), *pad);
    if (it != ids.end() && *it == *pad) local_pad = at[static_cast<std::size_t>(it - ids.begin())];
  }
  if (!will_record({weight})) return run(local, rows, local_pad);
  // 4. A leaf for the rows, so that backward leaves this lookup's gradient on it.
  Parameter leaf(weight.impl().name + " (rows of a sharded lookup)", std::move(rows));
  Tensor out = run(local, leaf.value(), local_pad);
  sharding.record(leaf, std::move(row_ids), sparse);
  return out;
}

}  // namespace detail
}  // namespace hitch
