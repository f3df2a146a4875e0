// hitch/nn/checkpoint.h: save and load a module's Parameters, and optionally an optimizer's state
// and a generator's state, as one safetensors file (nn/safetensors.h; docs/checkpoints.md).
//
// What the file holds (every tensor little-endian, row-major):
//   <name>                    F32, the Parameter's shape: each Parameter ONCE, under its first
//                             name in the module (named_parameters() order)
//   optim.<name>.<field>      optimizer state of Parameter <name>: counts ("step") as I64 [],
//                             buffers ("exp_avg", "sum", ...) as F32 of the Parameter's shape
//   generator.state           U64 [4]: the xoshiro256** state
//   generator.spare           F64 [1] if a second Box-Muller value is pending, F64 [0] if not
//   __metadata__              "hitch.checkpoint": "1"; "hitch.tie.<other name>": "<first name>"
//                             for each further name of a tied Parameter; "hitch.optimizer": its
//                             name, "hitch.optimizer.groups": N, "hitch.optimizer.lr.<g>": lr
//
// Ties: a tied Parameter (two modules holding one Parameter) is written once and its other names
// are recorded in the metadata. Loading writes the values IN PLACE into the module's existing
// Parameters (never rebinding, so optimizers and every module holding them keep working) and
// requires the file's ties to be the module's ties: a file that ties bag.weight to emb.weight
// loaded into a module where they are two Parameters is an error naming both, and so is the
// reverse. Nothing is changed unless everything matches.
// Left out on purpose: LR scheduler state, gradients, loading a subset (strict = false), other
// dtypes than float32 for Parameters.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "core/tensor.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace hitch::nn {

// What a checkpoint holds besides the module's Parameters. A null pointer: not saved, or, when
// loading, not restored (the file's section for it, if any, is ignored).
struct CheckpointParts {
  optim::Optimizer* optimizer = nullptr;
  Generator* generator = nullptr;
};

// Requires: every Parameter of parts.optimizer is a Parameter of module; no Parameter name starts
// with "optim." or "generator.". Writes crash-safely (a temporary file in the same folder, fsync,
// rename, fsync of the folder): on any error path keeps its previous content and the
// hitch::Error names the path and the OS error.
void save_checkpoint(const std::string& path, const Module& module, const CheckpointParts& parts = {});

// Requires: the file is a valid safetensors file whose Parameters, ties and shapes match module
// exactly (missing keys, unexpected keys, shape and tie mismatches are reported together in one
// hitch::Error); for each part given, the file holds that part, saved from the same kind of
// optimizer with the same number of groups. Ensures: the module's Parameters hold the file's
// values (in place, versions bumped); the optimizer's state and group lrs are the file's (its
// Parameters without a record start afresh); the generator continues the saved sequence exactly.
// The optimizer's lrs and state values must be ones it accepts and can reach (finite lrs in its
// range, counts in [0, 2^53], finite buffers, second moments and sums >= 0; optim/optimizer.h).
// Throws before changing anything, also when memory for the new state runs out.
void load_checkpoint(const std::string& path, Module& module, const CheckpointParts& parts = {});

// The same from the bytes of a file already in memory; messages start with "load_checkpoint: "
// and then source.
void load_checkpoint_from_bytes(std::span<const std::byte> file, Module& module, const CheckpointParts& parts = {},
                                std::string_view source = "(bytes)");

}  // namespace hitch::nn
