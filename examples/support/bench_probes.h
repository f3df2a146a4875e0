// examples/support/bench_probes.h: the machine probes of examples/bench_embedding.cpp (issue 18):
// a STREAM-style bandwidth probe, the least bytes a training step must move, and the random-row
// read-modify-write probe that the ceiling column divides by (docs/performance.md, "The ceiling
// column"). Kept apart from the benchmark's workloads so each file reads on its own.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bench {

// A workload's sizes: table rows n, width d, batch b, bag length l.
struct Size {
  std::int64_t n, d, b, l;
};

// Batches per workload (generated before timing, cycled through).
constexpr int kBatches = 4;

// The middle element (upper median) of v; 0 for an empty v.
double median(std::vector<double> v);

// {read GB/s, triad GB/s} on the current thread count: a sum over a 256 MB array and
// a = b + s c, bytes counted once each (STREAM's rule).
std::pair<double, double> bandwidth_probe();

// The least bytes a training step with `optimizer` ("sgd", "sparse_adam", "adam") must move on
// a table of size s with distinct_rows distinct rows in its batch (docs/performance.md).
double min_bytes(const std::string& optimizer, const Size& s, double distinct_rows);

// The random-row read-modify-write probe of the same traffic on tables of size s:
// {GB/s = min_bytes / time (median over reps), mean distinct rows per batch}.
std::vector<double> ceiling_probe(const Size& s, const std::string& optimizer, int reps);

}  // namespace bench
