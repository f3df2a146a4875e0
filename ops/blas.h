// hitch/ops/blas.h: the one wrapper around cblas_sgemm (OpenBLAS, chosen at build time).
//
// Every matrix product in hitch goes through gemm(), so swapping the BLAS or adding a fallback
// touches only ops/blas.cpp. Operands are row-major and contiguous; there are no leading-
// dimension arguments because hitch has no strided views. Left out on purpose: batched and
// strided products, other element types.
#pragma once

#include <cstdint>

namespace hitch {

// C[M,N] = alpha * op(A) op(B) + beta * C, all row-major and contiguous.
//   op(A) is [M,K]: A is stored [M,K], or [K,M] when trans_a.
//   op(B) is [K,N]: B is stored [K,N], or [N,K] when trans_b.
// Any of M, N, K may be 0 (K = 0 leaves C = beta * C). Throws hitch::Error if a size does not
// fit BLAS's 32-bit int.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          const float* B, float beta, float* C);

}  // namespace hitch
