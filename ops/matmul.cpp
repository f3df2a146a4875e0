// hitch/ops/matmul.cpp: the 2-D matrix product, one cblas_sgemm call each way (ops/blas.h).
//
//   matmul(a, b, ta, tb): op(a) [M,K] x op(b) [K,N] -> [M,N]
//   a is stored [M,K], or [K,M] when ta (op(a) = a^T); b is stored [K,N], or [N,K] when tb.
//
// Forward is gemm(ta, tb, M, N, K, a, b). Backward, with G = dL/dout [M,N]:
//   d op(a) = G op(b)^T [M,K]    d op(b) = op(a)^T G [K,N]
// and each is transposed back to the stored layout when the operand was read transposed, which
// is again a single gemm with the right transpose flags (see the four cases below). Batched
// (3-D) products are left out.
#include "core/tape.h"
#include "ops/blas.h"
#include "ops/ops.h"

namespace hitch {

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  if (a.dim() != 2 || b.dim() != 2)
    throw Error(fmt::format("matmul: expected 2-D operands, got {} and {}", shape_str(a.shape()), shape_str(b.shape())));
  const std::int64_t M = transpose_a ? a.size(1) : a.size(0);
  const std::int64_t K = transpose_a ? a.size(0) : a.size(1);
  const std::int64_t Kb = transpose_b ? b.size(1) : b.size(0);
  const std::int64_t N = transpose_b ? b.size(0) : b.size(1);
  if (K != Kb) {
    // Stored shapes, with ^T marking an operand read transposed.
    throw Error(fmt::format("matmul: {}{} x {}{}: inner dimensions {} and {} differ", shape_str(a.shape()),
                            transpose_a ? "^T" : "", shape_str(b.shape()), transpose_b ? "^T" : "", K, Kb));
  }
  Tensor out = Tensor::empty({M, N});
  gemm(transpose_a, transpose_b, M, N, K, 1.0f, a.data(), b.data(), 0.0f, out.data());

  if (will_record({a, b})) {
    const Tensor av = a.detach(), bv = b.detach();
    record(
        "matmul", {a, b}, out,
        [av, bv, transpose_a, transpose_b, M, N, K](const Tensor& g, GradSink& sink) {
          if (sink.wants(0)) {
            Tensor ga = Tensor::empty(av.shape());
            if (!transpose_a)  // da [M,K] = G [M,N] op(b)^T
              gemm(false, !transpose_b, M, K, N, 1.0f, g.data(), bv.data(), 0.0f, ga.data());
            else  // da [K,M] = op(b) [K,N] G^T
              gemm(transpose_b, true, K, M, N, 1.0f, bv.data(), g.data(), 0.0f, ga.data());
            sink.add(0, ga);
          }
          if (sink.wants(1)) {
            Tensor gb = Tensor::empty(bv.shape());
            if (!transpose_b)  // db [K,N] = op(a)^T [K,M] G [M,N]
              gemm(!transpose_a, false, K, N, M, 1.0f, av.data(), g.data(), 0.0f, gb.data());
            else  // db [N,K] = G^T [N,M] op(a) [M,K]
              gemm(true, transpose_a, N, K, M, 1.0f, g.data(), av.data(), 0.0f, gb.data());
            sink.add(1, gb);
          }
        },
        {a, b});
  }
  return out;
}

}  // namespace hitch
