// hitch/dist/sharded.h: tables bigger than one process: row-wise sharding over MPI (hitch::dist).
// docs/sharding.md is the guide; this header is the reference.
//
//   int main(int argc, char** argv) {
//     hitch::dist::Session mpi(&argc, &argv);
//     // [N, D] table; rank k holds rows k, k + R, k + 2R, ... and nothing else, ever.
//     Parameter table = dist::shard_rows("items", N, D, dist::uniform_rows(-0.05f, 0.05f, /*seed=*/1));
//     nn::Embedding emb(table, {.sparse = true});                     // the modules, unchanged,
//     nn::EmbeddingBag bag(table, {.mode = BagMode::Sum, .sparse = true});  // tied as always
//     dist::DataParallel dp(model);           // lists `table` once: its gradients go to the owners
//     optim::SparseAdam opt(model.parameters(), {.lr = 1e-2});        // state for this rank's rows only
//     for (...) {
//       opt.zero_grad();
//       backward(loss(emb(my_ids), bag(my_bags, my_offsets)));        // this rank's slice of the batch
//       dp.reduce_gradients();                                        // rows' gradients to their owners
//       opt.step();                                                   // each row updated once, by its owner
//     }
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>

namespace hitch::dist {

// ---- ownership -----------------------------------------------------------------------------
// Cyclic (modulo): global row r lives on rank r % R, as local row r / R. Chosen over contiguous
// ranges because vocabularies and item catalogues are usually numbered by frequency (id 0 the
// most frequent): contiguous ranges would put every hot row, its lookups and its updates on
// rank 0. Rank k holds local_rows = (N - k + R - 1) / R rows (ceil(N / R) or one fewer).
struct ShardInfo {
  std::int64_t num_rows = 0;  // N, the whole table
  std::int64_t dim = 0;       // D
  int rank = 0;               // this rank, k
  int world_size = 1;         // R
  std::int64_t local_rows = 0;
  int owner(std::int64_t row) const { return static_cast<int>(row % world_size); }
  std::int64_t local_index(std::int64_t row) const { return row / world_size; }
  std::int64_t global_row(std::int64_t local) const { return local * world_size + rank; }
};

// A row initialiser: writes row `row`'s D values into out. Called once per owned row, in
// increasing row order, on the owning rank only.
using RowInit = std::function<void(std::int64_t row, std::span<float> out)>;
// Row r's values come from Generator(seed, r) alone (not from a stream over the table), so the
// table is the same whatever R is, and shard_rows(..., uniform_rows(a, b, s)) at R = 1 gives the
// same [N, D] values as at R = 2 or 3. uniform: U[lo, hi); normal: N(mean, std^2).
RowInit uniform_rows(float lo, float hi, std::uint64_t seed);
RowInit normal_rows(float mean, float std, std::uint64_t seed);

// Collective. A sharded Parameter named `name`: value() is this rank's shard [local_rows, D]
// (what optimizers, zero_grad, state dicts and checkpoints see); lookups (ops::embedding,
// ops::embedding_bag, so nn::Embedding and nn::EmbeddingBag built around it) see the whole
// [N, D] table. requires_grad() is true. Errors (the same hitch::Error on every rank, nothing
// made): N < 0, D < 0, or N, D or name different from rank 0's ("dist::shard_rows: [1000, 64]
// here but [1000, 32] on rank 0"); dist::init() not called.
Parameter shard_rows(std::string name, std::int64_t num_rows, std::int64_t dim, const RowInit& init);
// The same, from a whole table every rank holds (small tables, tests): each rank keeps its rows.
// Checked: full is 2-D and has the same shape on every rank (values are not compared).
Parameter shard_rows(std::string name, const Tensor& full);

// The sharding of p, or nullopt if p is an ordinary Parameter (or undefined).
std::optional<ShardInfo> sharding(const Parameter& p);

// Collective: the whole table [N, D] on every rank (rows in global order), from each rank's
// shard. For tests and small tables only (it needs the whole table's memory).
Tensor gather_table(const Parameter& p);
// Collective: the same for any tensor laid out like p's shard (first dimension local_rows, e.g.
// an optimizer state buffer: exp_avg, exp_avg_sq, sum), gathered to [N, ...] in global row order.
Tensor gather_rows(const Parameter& p, const Tensor& local);

// ---- lookups (what ops::embedding / ops::embedding_bag do with a sharded weight) -------------
// Collective: every rank must make the same lookups on the same sharded tables in the same order
// (the data differ). Each lookup:
//  1. checks its arguments as the unsharded op does, with N the whole table's rows, and agrees
//     the verdict: an id out of range on one rank throws the op's own message ("embedding:
//     indices[3] = 1000 is out of range ...", prefixed "rank 1: ") on EVERY rank, nothing changed.
//     A lookup on another table, or of another kind (embedding vs embedding_bag) than rank 0's at
//     the same point, is refused the same way.
//  2. sends this rank's distinct ids to their owners (MPI_Alltoallv); each owner applies max_norm
//     to the requested rows (in place, as the unsharded op) and sends them back;
//  3. runs the unsharded op on the fetched rows: the output is bitwise what the unsharded op
//     gives on the same table values.
// Nothing is sent in backward: each lookup's gradient rows stay with the lookup until
// DataParallel::reduce_gradients(). scale_grad_by_freq counts this rank's ids (as under DDP).
//
// ---- DataParallel with sharded Parameters (dist/dist.h) --------------------------------------
// Built: a sharded Parameter's sharding (N, D) is checked like any shape; it is NOT broadcast
// (each rank holds other rows). reduce_gradients(): every lookup's row gradients since the last
// call go to the rows' owners (MPI_Alltoallv of counts, ids, values); an owner sums each row's
// contributions in (source rank, lookup order) order, then / world size (the average, as for a
// replicated Parameter), and that is its shard's gradient: row-sparse if every lookup was sparse
// (on every rank), else dense [local_rows, D]. The same data give the same bits run to run.
// A rank with no lookups contributes nothing; a table no rank looked up keeps no gradient.
// ReduceStats::sharded_bytes: the bytes this rank sent (ids + values); sharded_parameters: how many.
// Lookups are kept until reduce_gradients() (a lookup under NoGradGuard, or of a frozen table,
// keeps nothing): call it once per step, as with a replicated model.

}  // namespace hitch::dist
