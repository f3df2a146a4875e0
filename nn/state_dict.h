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
// the two names disagreeing. Left out on purpose: buffers (hitch modules have none), strict =
// false, prefixes, loading into a module with different ties.
#pragma once

#include <map>
#include <string>

#include "core/tensor.h"
#include "nn/module.h"

namespace hitch::nn {

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
// module's: missing keys, unexpected keys, undefined tensors, shape mismatches and tie mismatches
// are reported together in one hitch::Error starting "load_state_dict: the state dict does not
// match the module: ". Nothing is changed unless everything matches.
void load_state_dict(Module& module, const StateDict& sd);

}  // namespace hitch::nn
