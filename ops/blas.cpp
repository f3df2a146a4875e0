// hitch/ops/blas.cpp: gemm() on top of cblas_sgemm, the only BLAS call in hitch.
#include <hitch/ops/blas.h>

#include <algorithm>
#include <mutex>
#include <limits>

#include <cblas.h>
#include <fmt/format.h>

#include <hitch/core/error.h>

namespace hitch {

static blasint as_blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<blasint>::max())
    throw Error(fmt::format("gemm: {} = {} does not fit the BLAS integer type (max {})", what, v,
                            std::numeric_limits<blasint>::max()));
  return static_cast<blasint>(v);
}

void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          const float* B, float beta, float* C) {
  // An empty product never reaches BLAS, so its sizes need not fit blasint ([2^32, 0] x [0, 0]).
  if (M == 0 || N == 0) return;
  if (K == 0 && M > 0 && N > 0) {  // an empty sum: BLAS implementations disagree on whether they scale C here
    const std::int64_t count = M * N;
    for (std::int64_t i = 0; i < count; ++i) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
    return;
  }
  const blasint m = as_blas_int(M, "M"), n = as_blas_int(N, "N"), k = as_blas_int(K, "K");
  // OpenBLAS's own pool is pinned to one thread: with more, its results depend on its thread
  // count (the machine's core count by default: the same program would give other bits on
  // another machine, and so would splitting C over hitch's threads, since OpenBLAS's kernels for
  // the edge rows sum in another order), and its idle threads spin in sched_yield beside
  // hitch's. The price: a matmul runs on one core (docs/performance.md).
  static std::once_flag pinned;
  std::call_once(pinned, [] { openblas_set_num_threads(1); });
  // Row-major leading dimensions are the stored row lengths.
  const blasint lda = trans_a ? m : k;
  const blasint ldb = trans_b ? k : n;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, A, std::max<blasint>(lda, 1), B, std::max<blasint>(ldb, 1), beta, C, std::max<blasint>(n, 1));
}

}  // namespace hitch
