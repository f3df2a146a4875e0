// hitch/dist/dist.cpp: the MPI side of hitch::dist (dist/dist.h). Every collective entry point
// follows one pattern: local checks, agree() on the verdicts, then the MPI calls, which from
// there on cannot see a mismatch. Counts passed to MPI are int: larger buffers go in chunks.
#include <hitch/dist/dist.h>
#include <hitch/dist/internal.h>
#include <hitch/dist/sharded.h>

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <unordered_set>

#include <fmt/format.h>

#include <hitch/core/error.h>
#include <hitch/core/grad.h>
#include <hitch/core/runtime/rows.h>

namespace hitch::dist {

namespace detail {

State& state() {
  static State s;
  return s;
}

MPI_Comm comm_of(std::string_view who) {
  if (!state().initialized) throw Error(fmt::format("{}: dist::init() was not called", who));
  return state().comm;
}

std::vector<std::int64_t> rank0_summary(MPI_Comm comm, const std::vector<std::int64_t>& mine) {
  std::uint64_t n = mine.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, comm);
  std::vector<std::int64_t> theirs = state().rank == 0 ? mine : std::vector<std::int64_t>(n);
  in_chunks(theirs.size(), kMaxCount, [&](std::size_t off, std::size_t count) {
    MPI_Bcast(theirs.data() + off, static_cast<int>(count), MPI_INT64_T, 0, comm);
  });
  return theirs;
}

}  // namespace detail

using detail::bump_version;
using detail::comm_of;
using detail::in_chunks;
using detail::kMaxCount;
using detail::rank0_summary;
using detail::State;
using detail::state;

namespace {

// The checks shared by broadcast and all_reduce_sum: t defined, root valid, same shape (and
// root) as on rank 0. Agreed: throws the same Error on every rank.
void check_tensor_collective(std::string_view who, MPI_Comm comm, const Tensor& t, int root) {
  std::optional<std::string> error;
  if (!t.defined())
    error = fmt::format("{}: the tensor is undefined (a default-constructed handle)", who);
  else if (root < 0 || root >= state().size)
    error = fmt::format("{}: root = {} is out of range (valid: [0, {}))", who, root, state().size);
  agree(error);
  std::vector<std::int64_t> mine{root};
  mine.insert(mine.end(), t.shape().begin(), t.shape().end());
  const std::vector<std::int64_t> r0 = rank0_summary(comm, mine);
  if (r0 != mine) {
    const Shape r0_shape(r0.begin() + 1, r0.end());
    if (r0[0] != root)
      error = fmt::format("{}: root = {} here but {} on rank 0", who, root, r0[0]);
    else
      error = fmt::format("{}: a tensor of shape {} here but {} on rank 0", who, shape_str(t.shape()), shape_str(r0_shape));
  }
  agree(error);
}

// All-reduce (SUM) in place of n floats at data, in chunks MPI can count.
void allreduce_floats(MPI_Comm comm, float* data, std::size_t n) {
  in_chunks(n, kMaxCount, [&](std::size_t off, std::size_t count) {
    MPI_Allreduce(MPI_IN_PLACE, data + off, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm);
  });
}

}  // namespace

// ---- process group -------------------------------------------------------------------------

void init(int* argc, char*** argv) {
  State& s = state();
  if (s.initialized) throw Error("dist::init: already initialised (call dist::finalize() first)");
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) throw Error("dist::init: MPI was finalised already in this process; MPI cannot be initialised again");
  int running = 0;
  MPI_Initialized(&running);
  if (!running) {
    int provided = MPI_THREAD_SINGLE;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw Error(fmt::format("dist::init: the MPI library provides thread level {} only; hitch needs "
                              "MPI_THREAD_FUNNELED ({})", provided, static_cast<int>(MPI_THREAD_FUNNELED)));
    }
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &s.comm);
  MPI_Comm_rank(s.comm, &s.rank);
  MPI_Comm_size(s.comm, &s.size);
  s.owns_mpi = !running;
  s.initialized = true;
}

void finalize() {
  State& s = state();
  if (!s.initialized) throw Error("dist::finalize: dist::init() was not called");
  MPI_Comm_free(&s.comm);
  s.initialized = false;
  s.rank = 0;
  s.size = 1;
  if (s.owns_mpi) MPI_Finalize();
  s.owns_mpi = false;
}

bool is_initialized() { return state().initialized; }

Session::Session(int* argc, char*** argv) { init(argc, argv); }

Session::~Session() {
  if (!is_initialized()) return;  // finalize() was called by hand
  try {
    finalize();
  } catch (...) {  // a destructor does not throw
  }
}

int rank() {
  comm_of("dist::rank");
  return state().rank;
}

int world_size() {
  comm_of("dist::world_size");
  return state().size;
}

void barrier() { MPI_Barrier(comm_of("dist::barrier")); }

void agree(const std::optional<std::string>& local_error) {
  MPI_Comm comm = comm_of("dist::agree");
  const int mine = local_error ? state().rank : INT_MAX;
  int lowest = INT_MAX;
  MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm);
  if (lowest == INT_MAX) return;
  std::string message = lowest == state().rank ? *local_error : std::string();
  std::uint64_t length = std::min<std::size_t>(message.size(), kMaxCount);
  MPI_Bcast(&length, 1, MPI_UINT64_T, lowest, comm);
  message.resize(static_cast<std::size_t>(length));
  MPI_Bcast(message.data(), static_cast<int>(length), MPI_CHAR, lowest, comm);
  throw Error(fmt::format("rank {}: {}", lowest, message));
}

// ---- collectives on tensors ----------------------------------------------------------------

void broadcast(Tensor& t, int root) {
  MPI_Comm comm = comm_of("dist::broadcast");
  check_tensor_collective("dist::broadcast", comm, t, root);
  float* data = t.data();
  in_chunks(static_cast<std::size_t>(t.numel()), kMaxCount, [&](std::size_t off, std::size_t count) {
    MPI_Bcast(data + off, static_cast<int>(count), MPI_FLOAT, root, comm);
  });
  bump_version(t);
}

void all_reduce_sum(Tensor& t) {
  MPI_Comm comm = comm_of("dist::all_reduce_sum");
  check_tensor_collective("dist::all_reduce_sum", comm, t, 0);
  allreduce_floats(comm, t.data(), static_cast<std::size_t>(t.numel()));
  bump_version(t);
}

// ---- DataParallel --------------------------------------------------------------------------

// The all-gather receive buffers of the row-sparse reduction, grown to the largest step seen.
struct ReduceScratch {
  RowBuffer rows;
  FloatBuffer values;
};

namespace {

// An optimizer applied in backward (optim/in_backward.h) updates before reduce_gradients() runs.
std::string in_backward_message(std::string_view who, const Parameter& p, std::size_t i) {
  return fmt::format("{}: Parameter '{}' (position {}) is updated inside backward by an optim::InBackward, before its "
                     "gradient could be reduced over the ranks; use step() after reduce_gradients()",
                     who, p.name(), i);
}

// module.parameters() may throw (a hidden alias) on one rank only: agreed.
std::vector<Parameter> module_parameters(const nn::Module& module) {
  comm_of("dist::DataParallel");
  std::vector<Parameter> params;
  std::optional<std::string> error;
  try {
    params = module.parameters();
  } catch (const Error& e) {
    error = fmt::format("dist::DataParallel: module.parameters() failed: {}", e.what());
  }
  agree(error);
  return params;
}

}  // namespace

DataParallel::DataParallel(const nn::Module& module, DataParallelOptions options)
    : DataParallel(module_parameters(module), options) {}

DataParallel::DataParallel(std::vector<Parameter> params, DataParallelOptions options) {
  MPI_Comm comm = comm_of("dist::DataParallel");
  std::optional<std::string> error;
  if (!(options.bucket_cap_mb > 0.0) || !std::isfinite(options.bucket_cap_mb))
    error = fmt::format("dist::DataParallel: bucket_cap_mb must be finite and > 0, but got {}", options.bucket_cap_mb);
  std::unordered_set<const void*> seen;
  for (std::size_t i = 0; i < params.size() && !error; ++i) {
    if (!params[i].defined())
      error = fmt::format("dist::DataParallel: position {} is an empty Parameter handle", i);
    else if (!seen.insert(params[i].id()).second)
      error = fmt::format("dist::DataParallel: Parameter '{}' appears twice (position {}); pass each Parameter once "
                          "(a tied Parameter is one Parameter)", params[i].name(), i);
    else if (params[i].impl().in_backward)
      error = in_backward_message("dist::DataParallel", params[i], i);
  }
  agree(error);
  // The same list as rank 0's: [count, then per Parameter: rank, sizes...].
  // A sharded Parameter (dist/sharded.h) counts as its whole table [N, D], marked sharded.
  auto whole_shape = [](const Parameter& p) {
    if (detail::table_sharding(p) == nullptr) return p.shape();
    const ShardInfo info = *sharding(p);
    return Shape{info.num_rows, info.dim};
  };
  auto describe = [](const Shape& shape, bool sharded) { return shape_str(shape) + (sharded ? " (sharded)" : ""); };
  std::vector<std::int64_t> mine{static_cast<std::int64_t>(params.size())};
  for (const Parameter& p : params) {
    const Shape shape = whole_shape(p);
    const auto rank = static_cast<std::int64_t>(shape.size());
    mine.push_back(detail::table_sharding(p) != nullptr ? -1 - rank : rank);
    mine.insert(mine.end(), shape.begin(), shape.end());
  }
  const std::vector<std::int64_t> r0 = rank0_summary(comm, mine);
  if (r0 != mine) {
    if (r0[0] != mine[0]) {
      error = fmt::format("dist::DataParallel: {} Parameters here but {} on rank 0", mine[0], r0[0]);
    } else {
      std::size_t at = 1;
      for (std::size_t i = 0; i < params.size(); ++i) {
        const bool their_sharded = r0[at] < 0;
        const auto n = static_cast<std::size_t>(their_sharded ? -1 - r0[at] : r0[at]);
        const Shape theirs(r0.begin() + static_cast<std::ptrdiff_t>(at + 1),
                           r0.begin() + static_cast<std::ptrdiff_t>(at + 1 + n));
        const bool my_sharded = detail::table_sharding(params[i]) != nullptr;
        if (theirs != whole_shape(params[i]) || their_sharded != my_sharded) {
          error = fmt::format("dist::DataParallel: Parameter {} ('{}') has shape {} here but {} on rank 0", i,
                              params[i].name(), describe(whole_shape(params[i]), my_sharded),
                              describe(theirs, their_sharded));
          break;
        }
        at += 1 + n;
      }
    }
  }
  agree(error);
  if (options.broadcast_parameters) {
    for (Parameter& p : params) {
      if (detail::table_sharding(p) != nullptr) continue;  // each rank holds other rows
      in_chunks(static_cast<std::size_t>(p.numel()), kMaxCount, [&](std::size_t off, std::size_t count) {
        MPI_Bcast(p.data() + off, static_cast<int>(count), MPI_FLOAT, 0, comm);
      });
      p.bump_version();
    }
  }
  params_ = std::move(params);
  options_ = options;
}

namespace {

enum Flag : int { kDense, kSparse, kFrozen, kTrainable, kFlags };

// Values per row of dim 0 (0 for a table of no rows, 1 for a scalar).
std::int64_t row_width(const Parameter& p) {
  if (p.shape().empty()) return 1;
  return p.shape()[0] == 0 ? 0 : p.numel() / p.shape()[0];
}

Grad& grad_of(Parameter& p) {
  if (!p.impl().grad) p.impl().grad = std::make_shared<Grad>(p.shape());
  return *p.impl().grad;
}

// The dense gradients, as one stream of floats, all-reduced in buckets of at most cap floats:
// a bucket of one piece in place, several pieces packed into a scratch buffer and back.
struct Buckets {
  MPI_Comm comm;
  std::size_t cap;
  ReduceStats& stats;
  std::vector<std::span<float>> pieces;
  std::size_t filled = 0;
  std::vector<float> scratch;

  void add(std::span<float> values) {
    while (!values.empty()) {
      const std::size_t take = std::min(values.size(), cap - filled);
      pieces.push_back(values.first(take));
      values = values.subspan(take);
      filled += take;
      if (filled == cap) flush();
    }
  }
  void flush() {
    if (pieces.empty()) return;
    if (pieces.size() == 1) {
      allreduce_floats(comm, pieces[0].data(), pieces[0].size());
    } else {
      scratch.resize(filled);
      float* at = scratch.data();
      for (std::span<float> piece : pieces) at = std::copy(piece.begin(), piece.end(), at);
      allreduce_floats(comm, scratch.data(), filled);
      const float* from = scratch.data();
      for (std::span<float> piece : pieces) {
        std::copy_n(from, piece.size(), piece.begin());
        from += piece.size();
      }
    }
    stats.dense_bytes += filled * sizeof(float);
    ++stats.dense_buckets;
    pieces.clear();
    filled = 0;
  }
};

// This rank's coalesced (rows, values) of p's gradient; none unless it is row-sparse.
struct LocalRows {
  std::span<const std::int64_t> rows;
  std::span<const float> values;
};
LocalRows local_rows(Parameter& p) {
  Grad* g = p.grad_store();
  if (g == nullptr || !g->is_sparse()) return {};
  g->coalesce();  // the representation only, never a value
  return {g->rows(), g->row_values()};
}

// One row-sparse Parameter, given every rank's row count: all-gather every rank's coalesced
// (rows, values), merge per row in rank order, / world size, and make that the gradient on every
// rank (it replaces this rank's own). The receive buffers live in `scratch` and the merged block
// comes from the row-block pool (core/runtime/rows.h), so a training loop reuses the same memory
// every step instead of page-faulting ~2 x 20 MB fresh (the C workload at 2 ranks).
void reduce_sparse(MPI_Comm comm, Parameter& p, std::span<const std::int64_t> counts, ReduceStats& stats,
                   ReduceScratch& scratch) {
  const auto width = static_cast<std::size_t>(row_width(p));
  const LocalRows mine = local_rows(p);
  std::vector<int> row_counts(counts.size()), displs(counts.size());
  std::size_t total = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    row_counts[r] = static_cast<int>(counts[r]);
    displs[r] = static_cast<int>(total);
    total += static_cast<std::size_t>(counts[r]);
  }
  RowBuffer& all_rows = scratch.rows;
  FloatBuffer& all_values = scratch.values;
  all_rows.resize(total);  // uninitialised: MPI writes every element
  all_values.resize(total * width);
  const auto n_mine = static_cast<int>(mine.rows.size());
  MPI_Allgatherv(mine.rows.data(), n_mine, MPI_INT64_T, all_rows.data(), row_counts.data(), displs.data(),
                 MPI_INT64_T, comm);
  if (width > 0) {  // one MPI element per row, so that the counts are rows
    MPI_Datatype row_type;
    MPI_Type_contiguous(static_cast<int>(width), MPI_FLOAT, &row_type);
    MPI_Type_commit(&row_type);
    MPI_Allgatherv(mine.values.data(), n_mine, row_type, all_values.data(), row_counts.data(), displs.data(),
                   row_type, comm);
    MPI_Type_free(&row_type);
  }
  stats.sparse_bytes += mine.rows.size_bytes() + mine.values.size_bytes();
  ++stats.sparse_parameters;

  // Merge: each rank's rows are sorted and unique; walk them side by side. A row's sum starts
  // with the lowest rank that has it and adds the others in rank order, then / world size.
  const std::size_t ranks = counts.size();
  std::vector<std::size_t> cursor(displs.begin(), displs.end());
  std::vector<std::size_t> end(ranks);
  for (std::size_t r = 0; r < ranks; ++r) end[r] = cursor[r] + static_cast<std::size_t>(counts[r]);
  RowBlock merged = make_row_block(total, width);  // at most `total` rows; shrunk below
  std::size_t out = 0;
  const auto divisor = static_cast<float>(state().size);
  for (;; ++out) {
    std::int64_t row = INT64_MAX;
    for (std::size_t r = 0; r < ranks; ++r)
      if (cursor[r] < end[r]) row = std::min(row, all_rows[cursor[r]]);
    if (row == INT64_MAX) break;
    float* dst = merged.values.data() + out * width;
    bool first = true;
    for (std::size_t r = 0; r < ranks; ++r) {
      if (cursor[r] == end[r] || all_rows[cursor[r]] != row) continue;
      const float* src = all_values.data() + cursor[r] * width;
      if (first)
        std::copy_n(src, width, dst);
      else
        for (std::size_t k = 0; k < width; ++k) dst[k] += src[k];
      first = false;
      ++cursor[r];
    }
    for (std::size_t k = 0; k < width; ++k) dst[k] /= divisor;
    merged.rows[out] = row;
  }
  merged.rows.resize(out);
  merged.values.resize(out * width);
  Grad& grad = grad_of(p);
  grad.zero();  // a row-sparse (or empty) gradient stays row-sparse: the merged rows replace its rows
  grad.add_rows(std::move(merged), true);
}

}  // namespace

void DataParallel::reduce_gradients() {
  MPI_Comm comm = comm_of("dist::DataParallel::reduce_gradients");
  const std::size_t n = params_.size();
  std::optional<std::string> error;
  std::vector<int> flags(n * kFlags, 0);
  for (std::size_t i = 0; i < n; ++i) {
    Parameter& p = params_[i];
    if (p.impl().in_backward && !error) error = in_backward_message("dist::DataParallel::reduce_gradients", p, i);
    int* f = &flags[i * kFlags];
    f[p.requires_grad() ? kTrainable : kFrozen] = 1;
    const Grad* g = p.grad_store();
    if (!p.requires_grad() || g == nullptr) continue;
    if (g->shape() != p.shape() && !error)
      error = fmt::format("dist::DataParallel::reduce_gradients: Parameter {} ('{}') has a gradient of shape {}; it must "
                          "have the Parameter's shape {}", i, p.name(), shape_str(g->shape()), shape_str(p.shape()));
    f[kDense] = g->is_dense() ? 1 : 0;
    f[kSparse] = g->is_sparse() ? 1 : 0;
  }
  for (std::size_t i = 0; i < n; ++i)  // a sharded table: its lookups' gradients, not its own
    if (const detail::TableSharding* s = detail::table_sharding(params_[i]); s != nullptr && params_[i].requires_grad()) {
      const detail::LookupLayouts l = detail::lookup_layouts(*s);
      flags[i * kFlags + kDense] = l.dense ? 1 : 0;
      flags[i * kFlags + kSparse] = l.sparse ? 1 : 0;
    }
  agree(error);
  std::vector<int> any(flags.size());
  MPI_Allreduce(flags.data(), any.data(), static_cast<int>(flags.size()), MPI_INT, MPI_MAX, comm);
  // From here on every rank decides alike (from `any`).
  for (std::size_t i = 0; i < n; ++i)
    if (any[i * kFlags + kFrozen] && any[i * kFlags + kTrainable])
      throw Error(fmt::format("dist::DataParallel::reduce_gradients: Parameter {} ('{}') requires grad on some ranks "
                              "and is frozen on others; freeze it on every rank", i, params_[i].name()));
  // Row counts of the row-sparse Parameters on every rank (one all-gather), checked before any
  // gradient changes; known alike on every rank, so the check needs no agree().
  auto reduced = [&](std::size_t i, Flag layout) {
    const int* f = &any[i * kFlags];
    if (detail::table_sharding(params_[i]) != nullptr) return false;  // to the owners, below
    return !f[kFrozen] && (layout == kDense ? f[kDense] != 0 : !f[kDense] && f[kSparse]);
  };
  std::vector<std::size_t> sparse;
  std::vector<std::int64_t> my_counts;
  for (std::size_t i = 0; i < n; ++i)
    if (reduced(i, kSparse)) {
      sparse.push_back(i);
      my_counts.push_back(static_cast<std::int64_t>(local_rows(params_[i]).rows.size()));
    }
  const auto size = static_cast<std::size_t>(state().size);
  std::vector<std::int64_t> counts(sparse.size() * size);  // [rank][sparse Parameter]
  if (!sparse.empty())
    MPI_Allgather(my_counts.data(), static_cast<int>(sparse.size()), MPI_INT64_T, counts.data(),
                  static_cast<int>(sparse.size()), MPI_INT64_T, comm);
  std::vector<std::vector<std::int64_t>> counts_of(sparse.size(), std::vector<std::int64_t>(size));
  for (std::size_t k = 0; k < sparse.size(); ++k) {
    std::int64_t total = 0;
    for (std::size_t r = 0; r < size; ++r) total += counts_of[k][r] = counts[r * sparse.size() + k];
    const Parameter& p = params_[sparse[k]];
    const std::int64_t width = row_width(p);
    if (total > INT_MAX || width > INT_MAX)
      throw Error(fmt::format("dist::DataParallel::reduce_gradients: Parameter {} ('{}') has {} gradient rows of "
                              "width {} over all ranks; one all-gather takes at most {} rows of at most {} values",
                              sparse[k], p.name(), total, width, INT_MAX, INT_MAX));
  }

  stats_ = ReduceStats{};
  const auto cap = static_cast<std::size_t>(std::clamp(std::floor(options_.bucket_cap_mb * 1024.0 * 1024.0 / sizeof(float)),
                                                       1.0, static_cast<double>(kMaxCount)));
  Buckets buckets{comm, cap, stats_, {}, 0, {}};
  std::vector<std::span<float>> dense;
  for (std::size_t i = 0; i < n; ++i) {
    if (!reduced(i, kDense)) continue;
    // A row-sparse or missing gradient joins as its values in a dense tensor (zeros where none).
    std::span<float> values(grad_of(params_[i]).dense_data(), static_cast<std::size_t>(params_[i].numel()));
    buckets.add(values);
    dense.push_back(values);
    ++stats_.dense_parameters;
  }
  buckets.flush();
  const auto divisor = static_cast<float>(size);
  for (std::span<float> values : dense)
    for (float& v : values) v /= divisor;
  if (!scratch_) scratch_ = std::make_shared<ReduceScratch>();
  for (std::size_t k = 0; k < sparse.size(); ++k)
    reduce_sparse(comm, params_[sparse[k]], counts_of[k], stats_, *scratch_);
  for (std::size_t i = 0; i < n; ++i) {  // sharded tables: every lookup's rows to their owners
    detail::TableSharding* s = detail::table_sharding(params_[i]);
    if (s == nullptr) continue;
    const int* f = &any[i * kFlags];
    if (!f[kFrozen] && (f[kDense] || f[kSparse])) detail::reduce_sharded(comm, params_[i], *s, f[kDense] != 0, stats_);
    else detail::forget_lookups(*s);
  }
}

}  // namespace hitch::dist
