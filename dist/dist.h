// hitch/dist/dist.h: data-parallel training over MPI (the library target hitch::dist; the core
// library hitch::hitch builds and runs without MPI). The words are PyTorch's: torch.distributed
// (init_process_group, barrier, broadcast, all_reduce) and DistributedDataParallel.
//
//   int main(int argc, char** argv) {
//     hitch::dist::Session mpi(&argc, &argv);          // MPI_Init_thread ... MPI_Finalize (RAII)
//     Model model;                                      // same seed or not: DataParallel broadcasts
//     hitch::dist::DataParallel dp(model);              // rank 0's Parameters to every rank
//     hitch::optim::SparseAdam opt(model.parameters(), {.lr = 1e-2});
//     for (...) {
//       opt.zero_grad();
//       backward(loss_on_my_shard(model));             // micro-batches: several backward calls
//       dp.reduce_gradients();                          // once per step, before opt.step()
//       opt.step();                                     // same bits on every rank
//     }
//   }
//
// Every function here is collective (every rank calls it, in the same order) except rank(),
// world_size() and is_initialized(). Inputs are checked on every rank and the verdict is agreed
// (agree()) before any call that could hang: a bad input on one rank throws the same hitch::Error
// on every rank, with nothing changed anywhere. All MPI traffic goes through a duplicate of
// MPI_COMM_WORLD, so it never matches a message of the program's own. MPI calls must come from the
// thread that called init() (MPI_THREAD_FUNNELED); hitch's own worker threads never call MPI.
// Not here: overlapping the reduction with backward (reduce_gradients() runs after it), process
// groups other than the world, GPUs.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <hitch/core/parameter.h>
#include <hitch/core/tensor.h>
#include <hitch/nn/module.h>

namespace hitch::dist {

// ---- process group (torch.distributed.init_process_group / destroy_process_group) ----------
// init: MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED) unless MPI is initialised already (then
// it adopts it, and finalize() leaves MPI running for its owner). Errors (hitch::Error):
// "dist::init: already initialised (call dist::finalize() first)"; "dist::init: MPI was finalised
// already in this process; MPI cannot be initialised again"; an MPI library without
// MPI_THREAD_FUNNELED support.
void init(int* argc = nullptr, char*** argv = nullptr);
// Frees hitch's communicator and, if init() started MPI, calls MPI_Finalize (after which MPI
// cannot start again in this process). Error: "dist::finalize: dist::init() was not called".
void finalize();
bool is_initialized();

// init() in the constructor, finalize() in the destructor (which never throws).
class Session {
 public:
  explicit Session(int* argc = nullptr, char*** argv = nullptr);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

int rank();        // in [0, world_size()); hitch::Error before init(): "dist::rank: dist::init() was not called"
int world_size();  // >= 1
void barrier();    // MPI_Barrier

// ---- collective error agreement ------------------------------------------------------------
// Every rank calls agree() at the same point with its own verdict (nullopt: fine). If any rank
// has an error, EVERY rank throws the same hitch::Error: the lowest failing rank's message,
// prefixed "rank <k>: " (one MPI_Allreduce of the lowest failing rank, then one MPI_Bcast of its
// message). This is how every collective entry point checks its inputs before any call that
// could hang. Nothing is thrown, and nothing else is sent, when every rank is fine.
void agree(const std::optional<std::string>& local_error);

// ---- collectives on tensors (also what DataParallel uses) ----------------------------------
// In place, on the values only (no autograd: the tape records nothing; the storage version is
// bumped as for any in-place write). Checked collectively first: t defined, root in
// [0, world_size()), the same shape on every rank as on rank 0 (and the same root), else the same
// hitch::Error everywhere.
// broadcast: every rank's t becomes root's t (torch.distributed.broadcast).
void broadcast(Tensor& t, int root = 0);
// all_reduce_sum: every rank's t becomes the sum over ranks (torch.distributed.all_reduce, SUM),
// the same bits on every rank.
void all_reduce_sum(Tensor& t);

// ---- DataParallel (torch.nn.parallel.DistributedDataParallel) ------------------------------
struct DataParallelOptions {
  double bucket_cap_mb = 25.0;         // DDP's default bucket size (MiB) for dense all-reduce; > 0
  bool broadcast_parameters = true;    // rank 0's values to every rank when built
};

struct ReduceStats {                  // the last reduce_gradients() call, this rank
  std::size_t dense_bytes = 0;         // bytes all-reduced (this rank's buffers) for dense gradients
  std::size_t sparse_bytes = 0;        // bytes this rank contributed to sparse all-gathers (rows + values)
  std::size_t dense_buckets = 0;       // MPI_Allreduce calls for dense gradients
  std::size_t dense_parameters = 0;    // Parameters reduced dense
  std::size_t sparse_parameters = 0;   // Parameters reduced row-sparse
  std::size_t sharded_bytes = 0;       // bytes this rank sent to owners of sharded rows (ids + values; dist/sharded.h)
  std::size_t sharded_parameters = 0;  // sharded Parameters whose rows went to their owners
};

// Holds a list of Parameters (each once, by identity) and averages their gradients across ranks.
// Requires: the same list (count, order, shapes) on every rank; checked collectively when built.
class DataParallel {
 public:
  // module.parameters() (a tied table is listed once), or the given list (each Parameter once,
  // defined). Broadcasts their values from rank 0 when options.broadcast_parameters. Errors (the
  // same on every rank, nothing changed): bad options, an undefined or repeated Parameter, a
  // list that differs from rank 0's ("dist::DataParallel: Parameter 1 ('emb.weight') has shape
  // [10,4] here but [10,5] on rank 0", or the counts).
  explicit DataParallel(const nn::Module& module, DataParallelOptions options = {});
  explicit DataParallel(std::vector<Parameter> params, DataParallelOptions options = {});

  // Averages every Parameter's gradient across ranks, ONCE per Parameter identity:
  //  * agreed first (one small all-reduce): per Parameter, which layouts the ranks hold. None
  //    anywhere (no gradient, or an empty one): left as it is. Dense on any rank: dense everywhere
  //    (a rank without one, or with a row-sparse one, contributes its values as a dense tensor:
  //    zeros where it has nothing). Otherwise row-sparse everywhere (a rank without one
  //    contributes no rows, and gets the merged gradient);
  //  * dense: in-place MPI_Allreduce(SUM) in buckets of at most ~bucket_cap_mb (Parameter order;
  //    small gradients packed together), then each value / world_size;
  //  * row-sparse: each rank's coalesced (rows, values) are all-gathered (MPI_Allgather of the
  //    counts, MPI_Allgatherv of the rows and of the values); each row's sum starts with the
  //    lowest rank holding it and adds the others in rank order, then / world_size. The gradient
  //    stays row-sparse (rows sorted, unique), so SparseAdam keeps working, and holds the same
  //    bits on every rank;
  //  * a frozen Parameter (requires_grad() false on every rank) is skipped on every rank.
  // Errors (the same hitch::Error on every rank, before any gradient changes): a gradient whose
  // shape is not its Parameter's; a Parameter frozen on some ranks only.
  void reduce_gradients();

  const std::vector<Parameter>& parameters() const { return params_; }
  const ReduceStats& last_stats() const { return stats_; }

 private:
  std::vector<Parameter> params_;
  DataParallelOptions options_;
  ReduceStats stats_;
  std::shared_ptr<struct ReduceScratch> scratch_;  // receive buffers kept between steps (no page faults)
};

}  // namespace hitch::dist
