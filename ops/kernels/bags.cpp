// hitch/ops/kernels/bags.cpp: the fast kernels of embedding_bag (declared in
// ops/kernels/embedding_kernels.h): the bag forwards and the weight gradient's set-up for the
// lookup backward (ops/kernels/rows.cpp). The plain loops they must match, bit for bit, are in
// ops/embedding_bag.cpp (read those first).
//
// What is fast here: bags split over threads (each bag reduced by one thread, in position
// order), rows prefetched ahead, compile-time row widths (16/32/64/128: the bag's sum in
// registers), AVX2/AVX-512 clones of the in-cache loop, and a branch-free max with its argmax
// found by a second pass only when a backward is recorded.
#include <algorithm>
#include <cmath>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/prefetch.h>
#include <hitch/core/tape.h>
#include <hitch/ops/kernels/embedding_kernels.h>

namespace hitch::kernels {

namespace {

bool is_pad(const std::optional<std::int64_t>& pad, std::int64_t r) { return pad && r == *pad; }

// Bags are split over threads (contiguous chunks of bags, each bag reduced by one thread in
// position order, so any thread count gives the same bits); rows are prefetched kAhead
// positions ahead.
constexpr std::size_t kAhead = 32;

template <class BagFn>
void for_each_bag_chunk(const Bags& s, BagFn&& fn) {
  const std::size_t num_bags = s.bounds.size() - 1;
  const auto width = static_cast<std::size_t>(s.dim);
  const auto positions = static_cast<std::size_t>(s.bounds.back());
  const std::size_t per_bag = width * std::max<std::size_t>(1, positions / std::max<std::size_t>(1, num_bags));
  parallel_for(num_bags, min_chunk_for(per_bag), fn);
}

// Runs kernel.template operator()<W>() with W = the row width when it is one of the common
// widths (the row loops then have a constant trip count: fully unrolled, no per-row loop
// overhead), W = 0 otherwise (the kernel reads the width at run time).
template <class Kernel>
void with_width(std::int64_t width, Kernel&& kernel) {
  switch (width) {
    case 16: kernel.template operator()<16>(); return;
    case 32: kernel.template operator()<32>(); return;
    case 64: kernel.template operator()<64>(); return;
    case 128: kernel.template operator()<128>(); return;
    default: kernel.template operator()<0>();
  }
}

// sum / mean / sqrtn over bags [b0, b1). out is [B, D], every row written; denom[b] gets the bag's
// divisor (1 for sum), or 0 when the bag has no gradient (no non-padding entry, or a zero
// divisor). With a constant width W the bag's sum lives in a local array (registers), not in
// out: the same additions in the same order, without a load and store of out per row.
template <std::size_t W>
[[gnu::always_inline]] inline void weighted_bags_chunk(const Bags& s, const float* w, const float* psw, float* out,
                                                       double* denom, std::size_t b0, std::size_t b1) {
  const std::size_t width = W != 0 ? W : static_cast<std::size_t>(s.dim);
  const std::int64_t* x = s.input.data();
  const auto end = static_cast<std::size_t>(s.bounds[b1]);  // prefetch no further than this chunk
  for (std::size_t b = b0; b < b1; ++b) {
    float* ob = out + b * width;
    float local[W != 0 ? W : 1] = {};
    float* sum = W != 0 ? local : ob;
    if (W == 0) std::fill(ob, ob + width, 0.0f);  // out is not zero-filled (Tensor::empty)
    double acc = 0.0;  // Σ w (mean) or Σ w² (sqrtn)
    std::int64_t n = 0;
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (i + kAhead < end) prefetch_row_w<W>(w, x[i + kAhead], width);
      const std::int64_t r = x[i];
      if (is_pad(s.pad, r)) continue;
      const float* row = w + static_cast<std::size_t>(r) * width;
      ++n;
      if (psw) {
        const float wi = psw[i];
        acc += s.mode == BagMode::Sqrtn ? static_cast<double>(wi) * wi : static_cast<double>(wi);
        for (std::size_t d = 0; d < width; ++d) sum[d] += wi * row[d];
      } else {
        acc += 1.0;
        for (std::size_t d = 0; d < width; ++d) sum[d] += row[d];
      }
    }
    if (n == 0) {  // empty or all padding: zero row, no gradient
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    if (s.mode == BagMode::Sum) {
      denom[b] = 1.0;
      if (W != 0) std::copy_n(sum, width, ob);
      continue;
    }
    const double den = s.mode == BagMode::Mean ? acc : std::sqrt(acc);
    if (den == 0.0) {  // weighted mean with Σ w = 0, or sqrtn with all weights 0: defined as 0
      std::fill(ob, ob + width, 0.0f);
      continue;
    }
    denom[b] = den;
    const auto fden = static_cast<float>(den);
    for (std::size_t d = 0; d < width; ++d) ob[d] = sum[d] / fden;
  }
}

// Compiled for AVX2 and baseline x86-64 (same bits: adds and divisions only, no FMA), so a table
// that sits in cache is read at cache speed.
HITCH_TARGET_CLONES void weighted_bags_chunk_any(const Bags& s, const float* w, const float* psw, float* out,
                                                 double* denom, std::size_t b0, std::size_t b1) {
  switch (s.dim) {
    case 16: weighted_bags_chunk<16>(s, w, psw, out, denom, b0, b1); return;
    case 32: weighted_bags_chunk<32>(s, w, psw, out, denom, b0, b1); return;
    case 64: weighted_bags_chunk<64>(s, w, psw, out, denom, b0, b1); return;
    case 128: weighted_bags_chunk<128>(s, w, psw, out, denom, b0, b1); return;
    default: weighted_bags_chunk<0>(s, w, psw, out, denom, b0, b1);
  }
}

}  // namespace

void weighted_bags_forward(const Bags& s, const float* w, const float* psw, float* out, std::vector<double>& denom) {
  denom.assign(s.bounds.size() - 1, 0.0);
  for_each_bag_chunk(s, [&](std::size_t b0, std::size_t b1) {
    weighted_bags_chunk_any(s, w, psw, out, denom.data(), b0, b1);
  });
}

namespace {

// max: per feature, the first candidate sets the running max, a later one replaces it only when
// strictly greater (ties -> earliest) or when it is NaN and the running max is not (so a NaN
// anywhere wins and the first NaN gets the gradient). The update is branch-free so it
// vectorises. argmax ([B, D], -1 for empty bags) is filled only when with_argmax (a backward
// will need it), by a second pass over the bag's rows (in cache by then): the first position
// whose value equals the max (or is NaN when the max is NaN) is the one that set it.
template <std::size_t W>
void max_bags_forward_w(const Bags& s, const float* w, float* out, std::vector<std::int64_t>& argmax,
                        bool with_argmax) {
  const std::size_t width = W != 0 ? W : static_cast<std::size_t>(s.dim);
  if (with_argmax) argmax.assign((s.bounds.size() - 1) * width, -1);
  const std::int64_t* x = s.input.data();
  for_each_bag_chunk(s, [&](std::size_t b0, std::size_t b1) {
    const auto end = static_cast<std::size_t>(s.bounds[b1]);
    for (std::size_t b = b0; b < b1; ++b) {
      float* ob = out + b * width;
      const auto lo = static_cast<std::size_t>(s.bounds[b]);
      const auto hi = static_cast<std::size_t>(s.bounds[b + 1]);
      bool first = true;
      for (std::size_t i = lo; i < hi; ++i) {
        if (i + kAhead < end) prefetch_row_w<W>(w, x[i + kAhead], width);
        if (is_pad(s.pad, x[i])) continue;
        const float* row = w + static_cast<std::size_t>(x[i]) * width;
        if (first) {
          std::copy_n(row, width, ob);
          first = false;
          continue;
        }
        for (std::size_t d = 0; d < width; ++d) {
          const float v = row[d];
          const float o = ob[d];
          const bool take = (v > o) | ((v != v) & (o == o));
          ob[d] = take ? v : o;
        }
      }
      if (first) std::fill(ob, ob + width, 0.0f);  // empty or all padding: zero row
      if (!with_argmax || first) continue;
      std::int64_t* ab = argmax.data() + b * width;
      for (std::size_t i = lo; i < hi; ++i) {
        if (is_pad(s.pad, x[i])) continue;
        const float* row = w + static_cast<std::size_t>(x[i]) * width;
        for (std::size_t d = 0; d < width; ++d)
          if (ab[d] < 0 && (row[d] == ob[d] || (std::isnan(ob[d]) && std::isnan(row[d])))) ab[d] = x[i];
      }
    }
  });
}

}  // namespace

void max_bags_forward(const Bags& s, const float* w, float* out, std::vector<std::int64_t>& argmax,
                      bool with_argmax) {
  with_width(s.dim, [&]<std::size_t W>() { max_bags_forward_w<W>(s, w, out, argmax, with_argmax); });
}


// The weight gradient's coefficients c_i and source bags, then the lookup backward
// (ops/kernels/rows.cpp): grouped by row, or add_lookup for a small dense table.
void weighted_bags_backward(GradSink& sink, const Bags& s, std::span<const double> denom, std::span<const float> psw,
                            std::span<const std::int64_t> counts, const Tensor& g, std::int64_t num_rows, bool sparse) {
  const auto width = static_cast<std::size_t>(s.dim);
  const bool scale_grad_by_freq = !counts.empty();
  // c_i = 1 exactly for sum without weights or frequency scaling: no coefficient array then.
  const bool unit = s.mode == BagMode::Sum && psw.empty() && !scale_grad_by_freq;
  std::vector<std::uint32_t> positions;
  positions.reserve(s.input.size());
  std::vector<std::uint32_t> bag_of(s.input.size());
  std::vector<float> coef(unit ? 0 : s.input.size());
  for (std::size_t b = 0; b + 1 < s.bounds.size(); ++b) {
    if (denom[b] == 0.0) continue;
    const double unweighted = 1.0 / denom[b];  // the same bits as dividing per position
    for (auto i = static_cast<std::size_t>(s.bounds[b]); i < static_cast<std::size_t>(s.bounds[b + 1]); ++i) {
      if (is_pad(s.pad, s.input[i])) continue;
      positions.push_back(static_cast<std::uint32_t>(i));
      bag_of[i] = static_cast<std::uint32_t>(b);
      if (unit) continue;
      double c = psw.empty() ? unweighted : static_cast<double>(psw[i]) / denom[b];
      if (scale_grad_by_freq) c /= static_cast<double>(counts[i]);
      coef[i] = static_cast<float>(c);
    }
  }
  lookup_backward(sink, s.input, std::move(positions), g, width, std::move(bag_of), std::move(coef), num_rows, sparse);
}

}  // namespace hitch::kernels
