// hitch/ops/sharded_lookup.cpp: embedding and embedding_bag on a sharded weight (ops/sharding.h).
// The op files call sharded_lookup() with their own checks and their own unsharded body; this
// file does what is common: gather the verdict, the distinct ids, fetch, renumber, record.
#include <algorithm>

#include <hitch/core/tape.h>
#include <hitch/ops/embedding_detail.h>
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
  // 2. This rank's distinct ids, increasing (none if its call is invalid: fetch throws anyway).
  std::vector<std::int64_t> ids;
  if (!error) {
    ids.assign(input.values().begin(), input.values().end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  }
  RowSharding::Renorm renorm;
  if (max_norm)
    renorm = [m = *max_norm, norm_type](const Tensor& shard, std::span<const std::int64_t> local_rows) {
      renorm_rows(shard, local_rows, m, norm_type);
    };
  Tensor rows = sharding.fetch(op, error, weight, ids, renorm);

  // 3. The unsharded op on the fetched rows, ids renumbered to positions in `ids`.
  std::vector<std::int64_t> renumbered(input.values().begin(), input.values().end());
  for (std::int64_t& v : renumbered)
    v = static_cast<std::int64_t>(std::lower_bound(ids.begin(), ids.end(), v) - ids.begin());
  const IndexTensor local(input.shape(), std::move(renumbered));
  std::optional<std::int64_t> local_pad;
  if (pad) {
    const auto at = std::lower_bound(ids.begin(), ids.end(), *pad);
    if (at != ids.end() && *at == *pad) local_pad = static_cast<std::int64_t>(at - ids.begin());
  }
  if (!will_record({weight})) return run(local, rows, local_pad);
  // 4. A leaf for the rows, so that backward leaves this lookup's gradient on it.
  Parameter leaf(weight.impl().name + " (rows of a sharded lookup)", std::move(rows));
  Tensor out = run(local, leaf.value(), local_pad);
  sharding.record(leaf, std::move(ids), sparse);
  return out;
}

}  // namespace detail
}  // namespace hitch
