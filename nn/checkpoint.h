// hitch/nn/checkpoint.h: save and load a module's Parameters, and optionally an optimizer's state,
// a generator's state and an LR scheduler's state, as one safetensors file (nn/safetensors.h;
// docs/checkpoints.md).
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
//                             name, "hitch.optimizer.groups": N, "hitch.optimizer.lr.<g>": lr;
//                             "hitch.scheduler": its kind, "hitch.scheduler.last_epoch",
//                             "hitch.scheduler.groups", "hitch.scheduler.base_lrs.<g>" and one
//                             "hitch.scheduler.<hyper-parameter>" each (step_size, gamma, ...)
//
// Ties: a tied Parameter (two modules holding one Parameter) is written once and its other names
// are recorded in the metadata. Loading writes the values IN PLACE into the module's existing
// Parameters (never rebinding, so optimizers and every module holding them keep working). It
// reads hitch's own files and the tied layouts of other tools (docs/checkpoints.md has the table):
//   (a) hitch's: the ties in "hitch.tie.*" metadata;
//   (b) safetensors.torch.save_model's: one stored tensor, metadata "<removed name>": "<kept
//       name>" (a file without "hitch.checkpoint": an entry whose key is a name of the module or
//       whose value is a tensor of the file is such an alias; others, like "format": "pt", are
//       left alone);
//   (c) transformers': the tied name simply absent, filled from the tie the module declares;
//   (d) PyTorch's state_dict: both names stored, accepted when bitwise equal.
// A Parameter is found under any of its names, and so is its optimizer state, whatever order the
// module lists its members in. The file's ties must not contradict the module's: one tensor for
// two separate Parameters, or a tied Parameter stored twice with different values, is an error
// naming both. Nothing is changed unless everything matches.
// Left out on purpose: gradients, other dtypes than float32 for Parameters, untying or tying on
// load, PyTorch's pickle (.pt/.bin) files.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>

#include <hitch/core/tensor.h>
#include <hitch/nn/module.h>
#include <hitch/nn/state_dict.h>
#include <hitch/optim/lr_scheduler.h>
#include <hitch/optim/optimizer.h>

namespace hitch::nn {

// What a checkpoint holds besides the module's Parameters. A null pointer: not saved, or, when
// loading, not restored (the file's section for it, if any, is ignored).
struct CheckpointParts {
  optim::Optimizer* optimizer = nullptr;
  Generator* generator = nullptr;
  optim::LRScheduler* scheduler = nullptr;  // its last_epoch, base_lrs and hyper-parameters
};

// Requires: every Parameter of parts.optimizer is a Parameter of module; no Parameter name starts
// with "optim." or "generator.". parts.scheduler, if given, is saved by its state_dict().
// Writes crash-safely (a temporary file in the same folder, fsync, rename, fsync of the folder):
// on any error path keeps its previous content and the hitch::Error names the path and the OS
// error.
// metadata: further "__metadata__" entries written as given (dist::save_sharded_checkpoint
// records its sharding there); a key starting with "hitch.checkpoint", "hitch.tie.",
// "hitch.optimizer" or "hitch.scheduler" (this file's own) is refused before anything is written.
void save_checkpoint(const std::string& path, const Module& module, const CheckpointParts& parts = {},
                     const std::map<std::string, std::string>& metadata = {});

// Requires: the file is a valid safetensors file whose Parameters, ties and shapes match module
// (one of the layouts above; missing keys, unexpected keys, shape and tie mismatches are reported
// together in one hitch::Error); malformed alias metadata (an alias to a missing, non-tensor or
// optimizer key, an alias chain, an alias whose name is also a tensor of another shape or other
// values) is refused naming the key; for each part given, the file holds that part, saved from
// the same kind of optimizer with the same number of groups, or the same kind of scheduler with
// the same hyper-parameters. Ensures: the module's Parameters hold the file's values (in place,
// versions bumped); the optimizer's state and group lrs are the file's (its Parameters without a
// record start afresh); the generator continues the saved sequence exactly; the scheduler's
// following step()s set the lrs the saved one would have.
// The optimizer's lrs and state values must be ones it accepts and can reach (finite lrs in its
// range, counts in [0, 2^53], finite buffers, second moments and sums >= 0; optim/optimizer.h).
// strict = false (PyTorch's load_state_dict(strict=False), safetensors' load_model(strict=False)):
// missing and unexpected keys of the module section are returned instead of refused, and every
// Parameter found is written; shape, dtype and tie mismatches and everything about the other
// parts still throw. A strict load returns empty lists.
// Throws before changing anything, also when memory for the new state runs out.
IncompatibleKeys load_checkpoint(const std::string& path, Module& module, const CheckpointParts& parts = {},
                                 bool strict = true);

// The same from the bytes of a file already in memory; messages start with "load_checkpoint: "
// and then source.
IncompatibleKeys load_checkpoint_from_bytes(std::span<const std::byte> file, Module& module,
                                            const CheckpointParts& parts = {}, std::string_view source = "(bytes)",
                                            bool strict = true);

// Every check load_checkpoint_from_bytes makes, with its messages, optimizer's included
// (Optimizer::check_restore), and nothing written: when it returns, that load can refuse only
// for lack of memory. dist::load_sharded_checkpoint runs it on every rank and agrees on the
// verdict before any rank loads.
void check_checkpoint_from_bytes(std::span<const std::byte> file, const Module& module,
                                 const CheckpointParts& parts = {}, std::string_view source = "(bytes)",
                                 bool strict = true);

}  // namespace hitch::nn
