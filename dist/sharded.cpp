// hitch/dist/sharded.cpp: row-wise sharding over MPI (dist/sharded.h). A sharded Parameter's
// value is this rank's rows; its TableSharding (core's ShardingHook, ops' RowSharding) moves rows
// to the ranks that look them up and their gradients back to the owners. Every collective entry
// point checks locally, agrees the verdicts (dist::agree), then makes MPI calls that cannot see a
// mismatch any more.
#include <hitch/dist/sharded.h>

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <numeric>

#include <fmt/format.h>

#include <hitch/core/error.h>
#include <hitch/core/grad.h>
#include <hitch/core/runtime/rows.h>
#include <hitch/dist/internal.h>
#include <hitch/ops/sharding.h>

namespace hitch::dist {

namespace detail {

namespace {

struct Lookup {
  Parameter rows;                 // the leaf the op ran on: [ids.size(), D]
  std::vector<std::int64_t> ids;  // its rows' global ids, increasing
};

// One MPI datatype of `width` floats (a row), so that counts are rows. width >= 1.
class RowType {
 public:
  explicit RowType(std::size_t width) {
    MPI_Type_contiguous(static_cast<int>(width), MPI_FLOAT, &type_);
    MPI_Type_commit(&type_);
  }
  ~RowType() { MPI_Type_free(&type_); }
  RowType(const RowType&) = delete;
  RowType& operator=(const RowType&) = delete;
  MPI_Datatype get() const { return type_; }

 private:
  MPI_Datatype type_;
};

std::vector<int> displacements(const std::vector<int>& counts) {
  std::vector<int> d(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) d[r] = d[r - 1] + counts[r - 1];
  return d;
}

std::uint64_t next_serial() {
  static std::uint64_t serial = 0;
  return serial++;
}

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Row r's generator: a function of (seed, r) only.
Generator row_generator(std::uint64_t seed, std::int64_t row) {
  return Generator(splitmix(seed) ^ splitmix(static_cast<std::uint64_t>(row) + 0x632BE59BD9B4E019ULL));
}

}  // namespace

class TableSharding final : public RowSharding {
 public:
  TableSharding(ShardInfo info, std::uint64_t serial) : info_(info), serial_(serial) {}

  std::int64_t num_rows() const override { return info_.num_rows; }
  const ShardInfo& info() const { return info_; }

  Tensor fetch(std::string_view op, const std::optional<std::string>& error, const Tensor& shard,
               std::span<const std::int64_t> ids, const Renorm& renorm, std::vector<std::uint32_t>& order) override {
    MPI_Comm comm = comm_of(op);
    const std::size_t R = static_cast<std::size_t>(info_.world_size);
    const auto width = static_cast<std::size_t>(info_.dim);
    std::optional<std::string> verdict = error;
    if (!verdict && ids.size() > kMaxCount)
      verdict = fmt::format("{}: {} distinct ids in one lookup of a sharded table; at most {}", op, ids.size(), kMaxCount);
    agree(verdict);
    // The same call on every rank: this table, this op.
    const std::int64_t kind = op == "embedding" ? 0 : 1;
    std::vector<std::int64_t> mine{static_cast<std::int64_t>(serial_), kind};
    for (char c : shard.impl().name) mine.push_back(static_cast<unsigned char>(c));
    const std::vector<std::int64_t> r0 = rank0_summary(comm, mine);
    if (r0 != mine) {
      std::string r0_name;
      for (std::size_t i = 2; i < r0.size(); ++i) r0_name.push_back(static_cast<char>(r0[i]));
      verdict = fmt::format("{}: ranks are not making the same lookup: {} on sharded table #{} ('{}') here, but {} on "
                            "sharded table #{} ('{}') on rank 0 (every rank must look up the same tables in the same "
                            "order)",
                            op, op, serial_, shard.impl().name, r0[1] == 0 ? "embedding" : "embedding_bag", r0[0],
                            r0_name);
    }
    agree(verdict);

    // Ask each owner for its rows: ids are increasing, so grouping by owner keeps each group increasing.
    std::vector<int> send_counts(R, 0), recv_counts(R, 0);
    for (std::int64_t id : ids) ++send_counts[static_cast<std::size_t>(info_.owner(id))];
    const std::vector<int> send_displs = displacements(send_counts);
    // asked[j] = ids[order[j]]: grouped by owner, so the replies land in place (row j of the result).
    std::vector<std::int64_t> asked(ids.size());
    order.resize(ids.size());
    {
      std::vector<int> at = send_displs;
      for (std::size_t u = 0; u < ids.size(); ++u) {
        const auto o = static_cast<std::size_t>(info_.owner(ids[u]));
        const auto j = static_cast<std::size_t>(at[o]++);
        asked[j] = ids[u];
        order[j] = static_cast<std::uint32_t>(u);
      }
    }
    MPI_Alltoall(send_counts.data(), 1, MPI_INT, recv_counts.data(), 1, MPI_INT, comm);
    const std::vector<int> recv_displs = displacements(recv_counts);
    const std::size_t n_recv = static_cast<std::size_t>(recv_displs.back()) + static_cast<std::size_t>(recv_counts.back());
    std::vector<std::int64_t> wanted(n_recv);
    MPI_Alltoallv(asked.data(), send_counts.data(), send_displs.data(), MPI_INT64_T, wanted.data(), recv_counts.data(),
                  recv_displs.data(), MPI_INT64_T, comm);
    stats_bytes_ += asked.size() * sizeof(std::int64_t);

    // As the owner: max_norm on the rows asked of this rank, then send them.
    std::vector<std::int64_t> local(n_recv);
    for (std::size_t i = 0; i < n_recv; ++i) local[i] = info_.local_index(wanted[i]);
    if (renorm && !local.empty()) renorm(shard, local);
    Tensor rows = Tensor::empty({static_cast<std::int64_t>(ids.size()), info_.dim});
    if (width > 0) {
      FloatBuffer& reply = scratch_.reply;  // kept between calls: no fresh pages every step
      reply.resize(n_recv * width);
      const float* w = shard.data();
      for (std::size_t i = 0; i < n_recv; ++i)
        std::memcpy(reply.data() + i * width, w + static_cast<std::size_t>(local[i]) * width, width * sizeof(float));
      const RowType row(width);
      MPI_Alltoallv(reply.data(), recv_counts.data(), recv_displs.data(), row.get(), rows.data(), send_counts.data(),
                    send_displs.data(), row.get(), comm);
      stats_bytes_ += reply.size() * sizeof(float);
    }
    return rows;
  }

  void record(const Parameter& rows, std::vector<std::int64_t> ids, bool /*sparse*/) override {
    lookups_.push_back({rows, std::move(ids)});
  }

  // The shard's zero_grad(): the lookups' gradients so far are dropped (or zeroed), as the
  // shard's own are. The lookups stay: a backward still to come through them still counts (the
  // PyTorch order forward, zero_grad, backward works).
  void zero_grad(bool set_to_none) override {
    for (Lookup& l : lookups_) l.rows.zero_grad(set_to_none);
  }

  bool has_unreduced_gradients() const override {
    return std::any_of(lookups_.begin(), lookups_.end(), [](const Lookup& l) {
      const Grad* g = l.rows.grad_store();
      return g != nullptr && !g->empty();
    });
  }

  std::vector<Lookup>& lookups() { return lookups_; }
  const std::vector<Lookup>& lookups() const { return lookups_; }
  std::size_t fetched_bytes() const { return stats_bytes_; }

  // Send and receive buffers, kept between steps (grown to the largest step, never shrunk), so a
  // training loop does not page-fault tens of MB of fresh memory in every lookup and reduction.
  struct Scratch {
    FloatBuffer reply;                   // fetch: the rows other ranks asked of this one
    RowBuffer send_ids, recv_ids;        // reduce_sharded
    FloatBuffer send_values, recv_values;
  };
  Scratch& scratch() { return scratch_; }

 private:
  ShardInfo info_;
  std::uint64_t serial_;
  std::vector<Lookup> lookups_;
  std::size_t stats_bytes_ = 0;
  Scratch scratch_;
};

TableSharding* table_sharding(const Parameter& p) {
  if (!p.defined()) return nullptr;
  return dynamic_cast<TableSharding*>(p.impl().sharding.get());
}

LookupLayouts lookup_layouts(const TableSharding& s) {
  LookupLayouts out;
  for (const Lookup& l : s.lookups()) {
    const Grad* g = l.rows.grad_store();
    if (g == nullptr) continue;
    out.dense = out.dense || g->is_dense();
    out.sparse = out.sparse || g->is_sparse();
  }
  return out;
}

void forget_lookups(TableSharding& s) { s.lookups().clear(); }

void reduce_sharded(MPI_Comm comm, Parameter& p, TableSharding& s, bool dense, ReduceStats& stats) {
  const ShardInfo& info = s.info();
  const auto R = static_cast<std::size_t>(info.world_size);
  const auto width = static_cast<std::size_t>(info.dim);
  // This rank's contributions, per owner, in (lookup order, row order): each lookup's gradient
  // as (rows of the lookup, values), then counted per owner and packed at the owner's offset.
  struct Part {
    const Lookup* lookup;
    std::span<const std::int64_t> rows;  // positions in lookup->ids; empty with dense: all of them
    const float* values;
    bool dense;
  };
  std::vector<Part> parts;
  std::vector<Tensor> dense_keep;  // dense() of a dense leaf gradient is its stored tensor
  for (Lookup& l : s.lookups()) {
    Grad* g = l.rows.grad_store();
    if (g == nullptr) continue;
    if (g->is_sparse()) {
      g->coalesce();
      parts.push_back({&l, g->rows(), g->row_values().data(), false});
    } else if (g->is_dense()) {
      dense_keep.push_back(g->dense());
      parts.push_back({&l, {}, dense_keep.back().data(), true});
    }
  }
  auto for_each_entry = [&](auto&& fn) {  // fn(global id, values), in (lookup, row) order
    for (const Part& part : parts) {
      const std::size_t n = part.dense ? part.lookup->ids.size() : part.rows.size();
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t compact = part.dense ? k : static_cast<std::size_t>(part.rows[k]);
        fn(part.lookup->ids[compact], part.values + k * width);
      }
    }
  };
  std::vector<int> send_counts(R, 0), recv_counts(R);
  for_each_entry([&](std::int64_t id, const float*) { ++send_counts[static_cast<std::size_t>(info.owner(id))]; });
  const std::vector<int> send_displs = displacements(send_counts);
  TableSharding::Scratch& scratch = s.scratch();
  const std::size_t n_send = static_cast<std::size_t>(send_displs.back()) + static_cast<std::size_t>(send_counts.back());
  RowBuffer& send_ids = scratch.send_ids;
  FloatBuffer& send_values = scratch.send_values;
  send_ids.resize(n_send);
  send_values.resize(n_send * width);
  {
    std::vector<int> at = send_displs;
    for_each_entry([&](std::int64_t id, const float* v) {
      const auto slot = static_cast<std::size_t>(at[static_cast<std::size_t>(info.owner(id))]++);
      send_ids[slot] = id;
      std::memcpy(send_values.data() + slot * width, v, width * sizeof(float));
    });
  }
  parts.clear();
  dense_keep.clear();
  s.lookups().clear();
  MPI_Alltoall(send_counts.data(), 1, MPI_INT, recv_counts.data(), 1, MPI_INT, comm);
  const std::vector<int> recv_displs = displacements(recv_counts);
  const std::size_t n_recv = static_cast<std::size_t>(recv_displs.back()) + static_cast<std::size_t>(recv_counts.back());
  RowBuffer& recv_ids = scratch.recv_ids;
  recv_ids.resize(n_recv);
  MPI_Alltoallv(send_ids.data(), send_counts.data(), send_displs.data(), MPI_INT64_T, recv_ids.data(),
                recv_counts.data(), recv_displs.data(), MPI_INT64_T, comm);
  FloatBuffer& recv_values = scratch.recv_values;
  recv_values.resize(n_recv * width);
  if (width > 0) {
    const RowType row(width);
    MPI_Alltoallv(send_values.data(), send_counts.data(), send_displs.data(), row.get(), recv_values.data(),
                  recv_counts.data(), recv_displs.data(), row.get(), comm);
  }
  stats.sharded_bytes += send_ids.size() * sizeof(std::int64_t) + send_values.size() * sizeof(float);
  ++stats.sharded_parameters;

  // As the owner: each row's contributions in arrival order (source rank, then lookup, then
  // row), summed, then / R.
  // (id, arrival) pairs sorted: by id, then arrival order (the pairs are distinct, so a plain
  // sort keeps arrival order within an id); contiguous keys sort several times faster than
  // indices compared through recv_ids.
  std::vector<std::pair<std::int64_t, std::size_t>> keyed(n_recv);
  for (std::size_t i = 0; i < n_recv; ++i) keyed[i] = {recv_ids[i], i};
  std::sort(keyed.begin(), keyed.end());
  std::vector<std::size_t> order(n_recv);
  std::size_t unique = 0;
  for (std::size_t i = 0; i < n_recv; ++i) {
    order[i] = keyed[i].second;
    if (i == 0 || keyed[i].first != keyed[i - 1].first) ++unique;
  }
  keyed = {};
  RowBlock block = make_row_block(unique, width);
  const auto divisor = static_cast<float>(R);
  std::size_t out = 0;
  for (std::size_t i = 0; i < n_recv;) {
    const std::int64_t id = recv_ids[order[i]];
    float* dst = block.values.data() + out * width;
    std::copy_n(recv_values.data() + order[i] * width, width, dst);
    std::size_t j = i + 1;
    for (; j < n_recv && recv_ids[order[j]] == id; ++j) {
      const float* src = recv_values.data() + order[j] * width;
      for (std::size_t k = 0; k < width; ++k) dst[k] += src[k];
    }
    for (std::size_t k = 0; k < width; ++k) dst[k] /= divisor;
    block.rows[out++] = info.local_index(id);
    i = j;
  }
  if (!p.impl().grad) p.impl().grad = std::make_shared<Grad>(p.shape());
  p.impl().grad->add_rows(std::move(block), !dense);
}

}  // namespace detail

// ---- RowInit helpers -----------------------------------------------------------------------

RowInit uniform_rows(float lo, float hi, std::uint64_t seed) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi))
    throw Error(fmt::format("dist::uniform_rows: lo and hi must be finite with lo <= hi, got lo {} and hi {}", lo, hi));
  return [lo, hi, seed](std::int64_t row, std::span<float> out) {
    Generator g = detail::row_generator(seed, row);
    for (float& x : out) x = static_cast<float>(lo + (static_cast<double>(hi) - lo) * g.uniform());
  };
}

RowInit normal_rows(float mean, float std, std::uint64_t seed) {
  if (!std::isfinite(mean) || !std::isfinite(std) || std < 0.0f)
    throw Error(fmt::format("dist::normal_rows: mean and std must be finite and std >= 0, got mean {} and std {}", mean,
                            std));
  return [mean, std, seed](std::int64_t row, std::span<float> out) {
    Generator g = detail::row_generator(seed, row);
    for (float& x : out) x = static_cast<float>(mean + std * g.normal());
  };
}

// ---- making a sharded Parameter ------------------------------------------------------------

Parameter shard_rows(std::string name, std::int64_t num_rows, std::int64_t dim, const RowInit& init) {
  constexpr std::string_view who = "dist::shard_rows";
  MPI_Comm comm = detail::comm_of(who);
  const auto& st = detail::state();
  std::optional<std::string> error;
  if (num_rows < 0 || dim < 0)
    error = fmt::format("{}: num_rows and dim must be >= 0, but are {} and {}", who, num_rows, dim);
  else if (!init)
    error = fmt::format("{}: init is an empty function", who);
  agree(error);
  // The same table on every rank: [N, D] and the name.
  std::vector<std::int64_t> mine{num_rows, dim};
  for (char c : name) mine.push_back(static_cast<unsigned char>(c));
  const std::vector<std::int64_t> r0 = detail::rank0_summary(comm, mine);
  if (r0 != mine) {
    std::string r0_name;
    for (std::size_t i = 2; i < r0.size(); ++i) r0_name.push_back(static_cast<char>(r0[i]));
    error = fmt::format("{}: table '{}' [{}, {}] here but '{}' [{}, {}] on rank 0", who, name, num_rows, dim, r0_name,
                        r0[0], r0[1]);
  }
  agree(error);
  ShardInfo info;
  info.num_rows = num_rows;
  info.dim = dim;
  info.rank = st.rank;
  info.world_size = st.size;
  info.local_rows = (num_rows - st.rank + st.size - 1) / st.size;
  Tensor values = Tensor::empty({info.local_rows, dim});
  try {
    for (std::int64_t j = 0; j < info.local_rows; ++j)
      init(info.global_row(j), std::span<float>(values.data() + j * dim, static_cast<std::size_t>(dim)));
  } catch (const std::exception& e) {
    error = fmt::format("{}: init failed: {}", who, e.what());
  }
  agree(error);
  Parameter p(std::move(name), std::move(values));
  p.impl().sharding = std::make_shared<detail::TableSharding>(info, detail::next_serial());
  return p;
}

Parameter shard_rows(std::string name, const Tensor& full) {
  constexpr std::string_view who = "dist::shard_rows";
  MPI_Comm comm = detail::comm_of(who);
  std::optional<std::string> error;
  if (!full.defined() || full.dim() != 2)
    error = fmt::format("{}: full must be a 2-D table [N, D], but has shape {}", who,
                        full.defined() ? shape_str(full.shape()) : std::string("(undefined)"));
  agree(error);
  (void)comm;
  const std::int64_t dim = full.size(1);
  const float* src = full.data();
  return shard_rows(std::move(name), full.size(0), dim, [src, dim](std::int64_t row, std::span<float> out) {
    std::copy_n(src + row * dim, dim, out.begin());
  });
}

std::optional<ShardInfo> sharding(const Parameter& p) {
  const detail::TableSharding* s = detail::table_sharding(p);
  if (s == nullptr) return std::nullopt;
  return s->info();
}

// ---- gathering -----------------------------------------------------------------------------

Tensor gather_rows(const Parameter& p, const Tensor& local) {
  constexpr std::string_view who = "dist::gather_rows";
  MPI_Comm comm = detail::comm_of(who);
  std::optional<std::string> error;
  const detail::TableSharding* s = detail::table_sharding(p);
  if (s == nullptr)
    error = fmt::format("{}: Parameter '{}' is not sharded (make it with dist::shard_rows)", who,
                        p.defined() ? p.name() : std::string("(empty handle)"));
  else if (!local.defined() || local.dim() < 1 || local.size(0) != s->info().local_rows)
    error = fmt::format("{}: local must have this rank's {} rows of '{}' in its first dimension, but has shape {}", who,
                        s->info().local_rows, p.name(), local.defined() ? shape_str(local.shape()) : "(undefined)");
  else if (s->info().local_rows > static_cast<std::int64_t>(detail::kMaxCount))
    error = fmt::format("{}: {} rows on one rank; at most {}", who, s->info().local_rows, detail::kMaxCount);
  agree(error);
  const Shape tail(local.shape().begin() + 1, local.shape().end());
  const std::vector<std::int64_t> mine(tail.begin(), tail.end());
  if (detail::rank0_summary(comm, mine) != mine)
    error = fmt::format("{}: rows of shape {} here, not rank 0's", who, shape_str(tail));
  agree(error);
  const ShardInfo& info = s->info();
  const auto R = static_cast<std::size_t>(info.world_size);
  const std::int64_t width = numel_of(tail);
  Shape out_shape{info.num_rows};
  out_shape.insert(out_shape.end(), tail.begin(), tail.end());
  Tensor out = Tensor::empty(out_shape);
  if (width == 0 || info.num_rows == 0) return out;
  std::vector<int> counts(R);
  for (std::size_t r = 0; r < R; ++r)
    counts[r] = static_cast<int>((info.num_rows - static_cast<std::int64_t>(r) + info.world_size - 1) / info.world_size);
  const std::vector<int> displs = detail::displacements(counts);
  FloatBuffer all(static_cast<std::size_t>(info.num_rows * width));
  const detail::RowType row(static_cast<std::size_t>(width));
  MPI_Allgatherv(local.data(), counts[static_cast<std::size_t>(info.rank)], row.get(), all.data(), counts.data(),
                 displs.data(), row.get(), comm);
  for (std::size_t r = 0; r < R; ++r)
    for (int j = 0; j < counts[r]; ++j) {
      const auto global = static_cast<std::size_t>(j) * R + r;
      std::copy_n(all.data() + (static_cast<std::size_t>(displs[r] + j)) * static_cast<std::size_t>(width), width,
                  out.data() + global * static_cast<std::size_t>(width));
    }
  return out;
}

Tensor gather_table(const Parameter& p) { return gather_rows(p, p.defined() ? p.value() : Tensor()); }

}  // namespace hitch::dist
