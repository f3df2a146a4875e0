// hitch/dist/sharded_checkpoint.h: checkpoints of modules holding sharded Parameters
// (dist/sharded.h), written by R ranks and loadable into any number of ranks R' (R' = 1 also
// without MPI, into a module whose tables are ordinary Parameters). docs/sharding.md,
// "Checkpoints", has the layout, the rules and an example.
//
//   dist::save_sharded_checkpoint("run/step-1000", model, {.optimizer = &opt});  // every rank
//   ...                                                                        // later, any R'
//   dist::load_sharded_checkpoint("run/step-1000", model, {.optimizer = &opt});
//
// Each rank writes its own shard, rather than rank 0 gathering the table and writing one file:
// the table need not fit one process (that is why it is sharded; a gather would need the whole
// table, and its optimizer state, in rank 0's memory), and the R files are written in parallel,
// each by the process that holds its rows. Loading reads the files one at a time and keeps only
// this rank's rows, so no rank ever holds the whole table either.
//
// The folder holds one file per saving rank k of R, "rank-<k>-of-<R>.safetensors", in
// nn::save_checkpoint's format (nn/checkpoint.h, written by it): the module's Parameters, a
// sharded one as this rank's shard [local_rows, D] under its name; the optimizer state of each
// (a sharded Parameter's buffers hold its local rows, same order); the generator and the
// scheduler if given. What a loader needs to reshard is in the file's metadata (strings):
//   "hitch.shard.world_size": R      "hitch.shard.rank": k
//   "hitch.shard.save_id": 16 hex digits, the same in every file of one save (drawn by rank 0)
//   "hitch.shard.rows.<name>": N     for each sharded Parameter, under its first module name
// Row r of a sharded table is local row r / R of file r % R (dist/sharded.h's cyclic layout);
// so is row r of each of its optimizer buffers (every F32 field of the Parameter's shape:
// "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "sum", "momentum_buffer"). Every other tensor (the
// replicated Parameters, step counts, generator, lrs and scheduler in the metadata) is the same
// in every file under data-parallel training; loading checks that it is.
// Left out on purpose: a manifest file (the metadata suffices), reading only the byte ranges a
// rank needs (every rank reads every file, one at a time), sharding other than dist/sharded.h's.
#pragma once

#include <string>

#include <hitch/nn/checkpoint.h>
#include <hitch/nn/module.h>

namespace hitch::dist {

// Collective (every rank, same order; without dist::init() a process is rank 0 of 1).
// Writes <dir>/rank-<k>-of-<R>.safetensors on rank k (dir must exist and be the same folder for
// every rank: a shared file system when the ranks run on several machines), each crash-safely as
// nn::save_checkpoint does: a file keeps its previous content or gets the whole new one. After
// every rank has written, rank 0 removes the files of earlier saves with another R from dir
// (rank-*-of-<R2>.safetensors, R2 != R), so the folder holds one checkpoint. A save cut short on
// some ranks leaves files of two saves, which the loader refuses (their save ids differ).
// Requires what nn::save_checkpoint requires, and the same module on every rank: the same
// Parameter names, each sharded on every rank or on none, with the same [N, D], the same shape
// for the others, the same kind of optimizer (or none on every rank). Errors: the same
// hitch::Error on every rank ("rank <k>: " and the lowest failing rank's message), nothing
// written when a rank's module differs ("dist::save_sharded_checkpoint: Parameter 'head.weight'
// is [2,2] here but [3,2] on rank 0"); a write that fails on one rank (the OS error, as
// save_checkpoint words it) is reported on every rank after the others have written.
void save_sharded_checkpoint(const std::string& dir, const nn::Module& module, const nn::CheckpointParts& parts = {});

// Collective. Reads a folder written by save_sharded_checkpoint with any R into this run's R'
// ranks (R' = 1: a single process, with or without dist::init(), whose module may hold an
// ORDINARY Parameter where the saved one was sharded: it gets the whole [N, D] table). Writes in
// place, as nn::load_checkpoint does:
//  * a sharded Parameter (dist::sharding) gets exactly the rows it owns under R', and each
//    optimizer buffer of it the same rows; an ordinary Parameter saved sharded gets all N rows;
//    a replicated Parameter saved whole and sharded here gets its rows (any R to any R');
//  * every other tensor comes from the files, which must agree bitwise; the generator (if
//    asked for) from rank k's own file when R' = R (each rank resumes its own sequence), else
//    the files' generator states must be equal;
//  * then nn::load_checkpoint's rules and checks apply, on each rank, to the checkpoint that
//    rank would have saved: ties, shapes, optimizer kind and groups, lrs, state values, etc.
// Memory: this rank's rows (values and state) about twice (the bytes assembled from the files,
// then the Parameters and the optimizer's new state) plus one saved file at a time.
// Errors (the same hitch::Error on every rank, before any rank changes anything: every check,
// nn::check_checkpoint_from_bytes included, runs and is agreed before the first write, so only
// running out of memory in the final nn::load_checkpoint_from_bytes can still fail on one rank;
// without dist::init() the message alone): "dist::load_sharded_checkpoint: '<dir>' ..." for a folder
// that cannot be listed, no rank-*-of-*.safetensors file, files of two world sizes, a missing
// rank file, a file whose metadata is not a sharded checkpoint's or disagrees with its name,
// files of different saves, different N for a table or different values for a replicated
// tensor, a table whose N or D differs from the module's ("dist::load_sharded_checkpoint:
// 'emb.weight' is a [11,4] table in 'run/step-1000' but [12,4] in the module (sharded)"); the
// file's own read and format errors
// (nn::read_whole_file, nn::parse_safetensors, named with the file's path); and everything
// nn::load_checkpoint refuses, with its message ("load_checkpoint: '<dir>' does not match the
// module: missing keys 'x'").
void load_sharded_checkpoint(const std::string& dir, nn::Module& module, const nn::CheckpointParts& parts = {});

}  // namespace hitch::dist
