// examples/support/bench_probes.cpp: see bench_probes.h.
#include "bench_probes.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>

#include <hitch/hitch.h>

namespace bench {

using namespace hitch;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// STREAM-style probe on `threads` threads: read (sum of a 256 MB array, what a gather does) and
// triad (a = b + s c). GB/s counts the bytes the loop reads and writes once each.
std::pair<double, double> bandwidth_probe() {
  const std::size_t n = std::size_t{64} << 20;  // 64 Mi floats = 256 MB per array
  // hitch tensors, so the arrays get the same storage as a table (2 MB-aligned, transparent huge
  // pages): with 4 KB pages the hardware prefetchers stop at every page and the probe reads
  // less than the embedding gather does.
  Tensor ta = Tensor::full({static_cast<std::int64_t>(n)}, 1.0f);
  const Tensor tb = Tensor::full({static_cast<std::int64_t>(n)}, 2.0f);
  const Tensor tc = Tensor::full({static_cast<std::int64_t>(n)}, 0.5f);
  float* a = ta.data();
  const float* b = tb.data();
  const float* c = tc.data();
  std::vector<double> read_t, triad_t;
  std::vector<float> partial(64 * 16, 0.0f);
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(n / 1024, 64, [&](std::size_t lo, std::size_t hi) {
      float acc[16] = {};
      for (std::size_t i = lo * 1024; i < hi * 1024; i += 16)
        for (std::size_t j = 0; j < 16; ++j) acc[j] += b[i + j];
      float* out = partial.data() + (lo * 64 / (n / 1024)) * 16;
      for (std::size_t j = 0; j < 16; ++j) out[j] += acc[j];
    });
    auto t1 = std::chrono::steady_clock::now();
    parallel_for(n, 1 << 16, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) a[i] = b[i] + 0.5f * c[i];
    });
    auto t2 = std::chrono::steady_clock::now();
    read_t.push_back(std::chrono::duration<double>(t1 - t0).count());
    triad_t.push_back(std::chrono::duration<double>(t2 - t1).count());
  }
  if (partial[0] + a[1] == 0.125f) std::puts("");
  const double bytes = static_cast<double>(n) * 4.0;
  return {bytes / median(read_t) / 1e9, 3.0 * bytes / median(triad_t) / 1e9};
}

// The bytes a training step of a B/C-style workload must move at least, with U distinct rows
// looked up (docs/performance.md, "The ceiling column"); row = D x 4 bytes:
//   forward   U rows read once (a row looked up twice in one step may come from cache);
//   sgd       + U rows read and written (the update; the gradient rows need not be stored);
//   sparse_adam  + 3 x U rows read and written (the table, exp_avg and exp_avg_sq rows);
//   adam      + U gradient rows written and read, + the whole table, exp_avg and exp_avg_sq
//             read and written (the dense step touches every element).
// Index traffic, the upstream gradient (B x D, in cache) and outputs are not counted.
double min_bytes(const std::string& optimizer, const Size& s, double distinct_rows) {
  const double row = static_cast<double>(s.d) * 4.0;
  const double forward = distinct_rows * row;
  if (optimizer == "sgd") return forward + 2.0 * distinct_rows * row;
  if (optimizer == "sparse_adam") return forward + 6.0 * distinct_rows * row;
  if (optimizer == "adam") return forward + 2.0 * distinct_rows * row + 6.0 * static_cast<double>(s.n) * row;
  return 0.0;
}

// A rep's two row passes of ceiling_probe for a row width W known at compile time (0: any, d):
// the prefetches as straight-line code and fixed-length row loops, as hitch's kernels have them
// for widths 16 to 128 (a loop per prefetch cost as much as the gather, docs/performance.md).
template <std::size_t W, int kWrite>
inline void prefetch_lines(const float* base, std::int64_t r, std::size_t d) {
  const char* p = reinterpret_cast<const char*>(base + static_cast<std::size_t>(r) * d);
  for (std::size_t b = 0; b < (W != 0 ? W : d) * 4; b += 64) __builtin_prefetch(p + b, kWrite);
}

template <std::size_t W>
void probe_passes(const std::vector<std::int64_t>& rows, std::size_t width, const float* table,
                  const std::vector<float*>& update, const float* x, float* sums) {
  const std::size_t d = W != 0 ? W : width;
  const std::size_t u = rows.size();
  constexpr std::size_t kAhead = 16;
  parallel_for(u, 64, [&](std::size_t lo, std::size_t hi) {  // the forward: read each row
    std::array<float, W != 0 ? W : 1> fixed{};
    std::vector<float> any(W != 0 ? 0 : d, 0.0f);
    float* acc = W != 0 ? fixed.data() : any.data();
    for (std::size_t j = lo; j < hi; ++j) {
      if (j + kAhead < hi) prefetch_lines<W, 0>(table, rows[j + kAhead], d);
      const float* row = table + static_cast<std::size_t>(rows[j]) * d;
      for (std::size_t e = 0; e < d; ++e) acc[e] += row[e];
    }
    float* out = sums + (lo * 256 / u) * d;  // one slot per chunk (chunks are at most one per thread)
    for (std::size_t e = 0; e < d; ++e) out[e] += acc[e];
  });
  parallel_for(u, 64, [&](std::size_t lo, std::size_t hi) {  // the update: read and write each row
    for (std::size_t j = lo; j < hi; ++j) {
      if (j + kAhead < hi)
        for (const float* a : update) prefetch_lines<W, 1>(a, rows[j + kAhead], d);
      float c = 0.5f;
      for (float* a : update) {
        float* row = a + static_cast<std::size_t>(rows[j]) * d;
        for (std::size_t e = 0; e < d; ++e) row[e] += c * x[e];
        c *= 0.5f;
      }
    }
  });
}

// The ceiling probe: min_bytes' traffic as a bare loop on the current threads, on a table (and
// state tables) of the workload's size held in hitch tensors (same storage and huge pages as a
// real table). Rows: kBatches batches of b x l uniform ids, duplicates removed, sorted (the
// distinct rows of a uniform bag-only batch, in the order the fused optimizer walks them); one
// batch per rep, in turn, as training cycles through its batches. A rep reads each row (the
// forward: a sum per chunk), then does row[r][:] += c x[:] on the table and, for SparseAdam, on
// both state tables (read-modify-write); for dense Adam it adds x into the U rows of a gradient
// array, then streams the table and its two moments (read and write each, no division). Rows are
// prefetched 16 ahead (write intent for the update), as hitch's optimizer walk does; chunks as
// parallel_for gives them. Returns {GB/s = min_bytes / time, median over the reps; mean U}.
std::vector<double> ceiling_probe(const Size& s, const std::string& optimizer, int reps) {
  const auto d = static_cast<std::size_t>(s.d);
  const bool dense = optimizer == "adam";
  std::vector<Tensor> tables;  // the table, then exp_avg and exp_avg_sq (SparseAdam, Adam)
  for (int k = 0; k < (optimizer == "sgd" ? 1 : 3); ++k) tables.push_back(Tensor::full({s.n, s.d}, 0.01f * static_cast<float>(k + 1)));
  Tensor grad = dense ? Tensor::full({s.n, s.d}, 0.0f) : Tensor();
  std::vector<float*> update;  // the arrays whose U rows the update reads and writes
  if (dense) update.push_back(grad.data());
  else
    for (auto& t : tables) update.push_back(t.data());
  Generator gen(7);
  std::vector<std::vector<std::int64_t>> batches(kBatches);
  double mean_rows = 0.0;
  for (auto& rows : batches) {
    rows.resize(static_cast<std::size_t>(s.b * s.l));
    for (auto& r : rows) r = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(s.n)));
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    mean_rows += static_cast<double>(rows.size()) / kBatches;
  }
  const std::vector<float> x(d, 0.001f);
  std::vector<float> sums(256 * d, 0.0f);
  std::vector<double> rates;
  for (int rep = -2; rep < reps; ++rep) {  // two warm-up reps
    const auto& rows = batches[static_cast<std::size_t>(rep + 2) % kBatches];
    const auto t0 = std::chrono::steady_clock::now();
    switch (d) {
      case 16: probe_passes<16>(rows, d, tables[0].data(), update, x.data(), sums.data()); break;
      case 32: probe_passes<32>(rows, d, tables[0].data(), update, x.data(), sums.data()); break;
      case 64: probe_passes<64>(rows, d, tables[0].data(), update, x.data(), sums.data()); break;
      case 128: probe_passes<128>(rows, d, tables[0].data(), update, x.data(), sums.data()); break;
      default: probe_passes<0>(rows, d, tables[0].data(), update, x.data(), sums.data());
    }
    if (dense) {
      float* p = tables[0].data();
      float* m = tables[1].data();
      float* v = tables[2].data();
      parallel_for(static_cast<std::size_t>(s.n) * d, 1 << 16, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) {
          const float mi = m[i] * 0.9f;
          const float vi = v[i] * 0.999f;
          m[i] = mi;
          v[i] = vi;
          p[i] = p[i] + 0.001f * mi;  // no division: a memory probe (Adam's own loop divides)
        }
      });
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (rep >= 0)
      rates.push_back(min_bytes(optimizer, s, static_cast<double>(rows.size())) / std::chrono::duration<double>(t1 - t0).count() / 1e9);
  }
  if (sums[0] + tables[0].data()[1] == 12345.0f) std::puts("");
  return {median(rates), mean_rows};
}


}  // namespace bench
