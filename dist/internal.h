// hitch/dist/internal.h: what dist/dist.cpp and dist/sharded.cpp share (the process group's
// state and the collective helpers). Internal to hitch::dist: not API.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>
#include <hitch/dist/dist.h>

namespace hitch::dist::detail {

struct State {
  bool initialized = false;
  bool owns_mpi = false;          // init() called MPI_Init_thread, so finalize() calls MPI_Finalize
  MPI_Comm comm = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD: hitch's traffic only
  int rank = 0;
  int size = 1;
};
State& state();

// hitch's communicator; Error "<who>: dist::init() was not called" before init().
MPI_Comm comm_of(std::string_view who);

// Counts passed to MPI are int: larger buffers go in chunks of at most this many elements.
constexpr std::size_t kMaxCount = static_cast<std::size_t>(INT_MAX);

// fn(offset, count) over [0, n) in pieces of at most `chunk` (>= 1) elements.
template <class Fn>
void in_chunks(std::size_t n, std::size_t chunk, Fn&& fn) {
  for (std::size_t off = 0; off < n; off += chunk) fn(off, std::min(chunk, n - off));
}

// Rank 0's summary, on every rank (one MPI_Bcast of its length, one of its values). Safe to call
// whatever this rank's input is: the calls do not depend on it.
std::vector<std::int64_t> rank0_summary(MPI_Comm comm, const std::vector<std::int64_t>& mine);

inline void bump_version(Tensor& t) { ++t.impl().storage->version; }

// Row-wise sharding's side of DataParallel (dist/sharded.cpp).
class TableSharding;
TableSharding* table_sharding(const Parameter& p);  // null unless p came from shard_rows
// Which gradient layouts this rank's lookups since the last reduction left (lookups whose rows
// got no gradient count for nothing).
struct LookupLayouts {
  bool dense = false;
  bool sparse = false;
};
LookupLayouts lookup_layouts(const TableSharding& s);
// Collective: every lookup's row gradients to their owners, summed per row in (source rank,
// lookup order) order, / world size, added into p's gradient (dense: a dense gradient); the
// lookups are then forgotten. Called for every sharded Parameter that any rank looked up.
void reduce_sharded(MPI_Comm comm, Parameter& p, TableSharding& s, bool dense, ReduceStats& stats);
// Drops the lookups (called where no rank has a gradient to send).
void forget_lookups(TableSharding& s);

}  // namespace hitch::dist::detail
