// hitch/ops/shape.cpp: reshape and 2-D transpose.
//
//   reshape(a, shape)  same numel, one dim may be -1 (inferred)  -> shape (checked_numel: at most kMaxNumel)
//   transpose(a)       a [M,N]                                  -> [N,M]
//
// hitch has no views (core/tensor.h): both ops copy the values into a new tensor, so writing
// into the result never changes a. Backward reshapes / transposes g back.
#include <algorithm>

#include "core/tape.h"
#include "ops/ops.h"

namespace hitch {

namespace {

using i64 = std::int64_t;

// out [N,M] = x [M,N]^T, in tiles so that both sides stay in cache for large matrices.
void transpose_into(const float* x, float* out, i64 M, i64 N) {
  constexpr i64 tile = 32;
  for (i64 i0 = 0; i0 < M; i0 += tile)
    for (i64 j0 = 0; j0 < N; j0 += tile) {
      const i64 i1 = std::min(i0 + tile, M), j1 = std::min(j0 + tile, N);
      for (i64 i = i0; i < i1; ++i)
        for (i64 j = j0; j < j1; ++j) out[j * M + i] = x[i * N + j];
    }
}

}  // namespace

Tensor reshape(const Tensor& a, Shape shape) {
  std::int64_t infer_at = -1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      if (infer_at >= 0)
        throw Error(fmt::format("reshape: only one dim may be -1, but {} has -1 at dims {} and {}", shape_str(shape),
                                infer_at, d));
      infer_at = static_cast<i64>(d);
    } else if (shape[d] < 0) {
      throw Error(fmt::format("reshape: invalid size {} at dim {} of {} (sizes must be >= 0, or -1 once)", shape[d], d,
                              shape_str(shape)));
    }
  }
  const i64 n = a.numel();
  if (infer_at >= 0) {
    // The product of the other sizes, held at kMaxNumel + 1 once it passes the limit (n is at
    // most kMaxNumel, so a held product never divides a non-zero n; for n == 0 the final
    // shape's check below refuses it).
    i64 known = 1;
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (static_cast<i64>(d) != infer_at && (__builtin_mul_overflow(known, shape[d], &known) || known > kMaxNumel))
        known = kMaxNumel + 1;
    if (known == 0 || n % known != 0)
      throw Error(fmt::format("reshape: cannot reshape {} ({} elements) into {}", shape_str(a.shape()), n,
                              shape_str(shape)));
    shape[static_cast<std::size_t>(infer_at)] = n / known;
    checked_numel("reshape", shape);
  } else if (const i64 want = checked_numel("reshape", shape); want != n) {
    throw Error(fmt::format("reshape: cannot reshape {} ({} elements) into {} ({} elements)", shape_str(a.shape()), n,
                            shape_str(shape), want));
  }
  Tensor out(std::move(shape), a.to_vector());
  record("reshape", {a}, out, [from = a.shape()](const Tensor& g, GradSink& sink) {
    sink.add(0, Tensor(from, g.to_vector()));
  });
  return out;
}

Tensor transpose(const Tensor& a) {
  if (a.dim() != 2) throw Error(fmt::format("transpose: expected a 2-D tensor, got {}", shape_str(a.shape())));
  const i64 M = a.size(0), N = a.size(1);
  Tensor out = Tensor::empty({N, M});
  transpose_into(a.data(), out.data(), M, N);
  record("transpose", {a}, out, [M, N](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty({M, N});
    transpose_into(g.data(), ga.data(), N, M);
    sink.add(0, ga);
  });
  return out;
}

}  // namespace hitch
