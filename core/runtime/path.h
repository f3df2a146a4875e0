// hitch/core/runtime/path.h: which kernels run, the fast ones or the reference ones.
//
//   hitch::set_kernel_path(hitch::KernelPath::reference);  // or HITCH_KERNELS=reference
//
// Every kernel with a fast version also has a reference version: a plain loop on the calling
// thread that states what the kernel computes (embedding gathers and bag reductions, the lookup
// backward, row-sparse gradient accumulation, every optimizer's update). Read the reference
// version first (docs/architecture.md lists them). Both give bitwise the same results, in the
// same order of float additions: the fast versions only add threads (each output item computed
// by one thread), prefetches, deferred row sums, sorting by radix and per-CPU clones, none of
// which changes a rounding. The test suite runs the parity and tying tests on both paths and
// compares whole training runs bit for bit (tests/test_kernel_paths.cpp).
#pragma once

namespace hitch {

enum class KernelPath { fast, reference };

// Process-wide; takes effect at the next op or optimizer step (switch between steps, not while
// a graph recorded on one path is backpropagated on the other: both are valid, only slower).
void set_kernel_path(KernelPath path);
// The path in use. Until set_kernel_path is called it comes from the environment variable
// HITCH_KERNELS: unset or "fast" -> fast, "reference" -> reference; any other value throws
// hitch::Error naming the variable, its value and the valid values (at every call, so no op
// runs on a path nobody chose).
KernelPath kernel_path();
inline bool reference_kernels() { return kernel_path() == KernelPath::reference; }

}  // namespace hitch
