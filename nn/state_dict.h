// hitch/nn/state_dict.h: a module's Parameter values in memory, PyTorch's state_dict() /
// load_state_dict() with hitch's tie rules (the same as checkpoint files, nn/checkpoint.h):
//
//   tensors: each Parameter ONCE, under its first name (named_parameters() order), a copy of its
//            values (a detached leaf with its own storage: later training does not change it)
//   ties:    every further name of a tied Parameter -> its first name
//
//   nn::StateDict best = nn::state_dict(model);   // a snapshot
//   ...                                           // training goes on
//   nn::load_state_dict(model, best);             // back to the snapshot, in place
//
// Unlike PyTorch, whose state_dict lists a tied weight under every name (aliasing one storage),
// a tied table is held once and its other names are recorded as ties, so loading cannot leave
// the two names disagreeing. Loading also accepts PyTorch's layout (both names as tensors, if
// bitwise equal) and a tied name left out (transformers' layout), as checkpoints do
// (docs/checkpoints.md). Left out on purpose: buffers (hitch modules have none), prefixes,
// loading into a module with different ties.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <hitch/core/tensor.h>
#include <hitch/nn/module.h>

namespace hitch::nn {

// What a non-strict load did not match, as PyTorch's load_state_dict(strict=False) returns it
// (its _IncompatibleKeys): missing_keys are module names nothing was loaded into (every name of
// such a tied Parameter), unexpected_keys are stored names (tensors or ties) the module does not
// have; both in a fixed order (module order, then name order). Empty after a strict load.
struct IncompatibleKeys {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

struct StateDict {
  std::map<std::string, Tensor> tensors;     // first name -> copy of the values
  std::map<std::string, std::string> ties;   // further name -> first name
};

// Ensures: one entry per Parameter of module (copies of the values, requires_grad false) and
// one tie per further name. Throws what named_parameters() throws (hidden aliases).
StateDict state_dict(const Module& module);

// Writes the values of sd into module's existing Parameters in place (never rebinding: every
// module and optimizer holding them keeps working) and bumps their versions.
// Requires: every tie of sd points to a key of sd.tensors and no tie name is also a key of
// sd.tensors (otherwise a hitch::Error naming it); the names, ties and shapes of sd are the
// module's (nn/tie_match.h: a Parameter is found under any of its names, a further name of a
// tie may be absent, a tied Parameter held under two names needs bitwise-equal values):
// missing keys, unexpected keys, undefined tensors, shape mismatches and tie mismatches are
// reported together in one hitch::Error starting "load_state_dict: the state dict does not match
// the module: ". With strict = false (PyTorch's strict=False) missing and unexpected keys are
// returned instead and every Parameter found is written; the other mismatches still throw.
// Nothing is changed unless everything is accepted.
IncompatibleKeys load_state_dict(Module& module, const StateDict& sd, bool strict = true);

}  // namespace hitch::nn
