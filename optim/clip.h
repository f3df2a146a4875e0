// hitch/optim/clip.h: gradient clipping by total norm (PyTorch's clip_grad_norm_).
//
//   total = || (||g_1||_p, ..., ||g_k||_p) ||_p  over the Parameters that have a gradient
//           (p = inf: the largest |g|);  clip_coef = max_norm / (total + 1e-6)
//   if clip_coef < 1: every gradient *= clip_coef (in place, sparse gradients too)
// Norms are accumulated in double (PyTorch: float32); a sparse gradient is coalesced first, so
// its norm is the norm of the gradient's value, duplicates summed.
#pragma once

#include <limits>
#include <vector>

#include <hitch/core/parameter.h>

namespace hitch::optim {

// Requires: max_norm >= 0; norm_type > 0 (or infinity); each Parameter given once; none of them a
// shard of a table split over processes (dist/sharded.h: its norm would be this rank's part only).
// Parameters without a gradient are ignored. Returns the total norm before clipping (0 if no
// Parameter has a gradient). error_if_nonfinite: throw (changing nothing) if the total is NaN
// or infinite; otherwise a non-finite total scales the gradients as PyTorch does.
double clip_grad_norm(const std::vector<Parameter>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);

}  // namespace hitch::optim
