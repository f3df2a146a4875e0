// hitch/ops/matmul.cpp: the matrix product, 2-D or batched, one cblas_sgemm call per matrix
// product (ops/blas.h).
//
//   matmul(a, b, ta, tb): op(a) [..., M, K] x op(b) [..., K, N] -> [..., M, N]
//   a's last two dims are stored [M,K], or [K,M] when ta (op(a) = a^T); b's [K,N], or [N,K]
//   when tb. The flags act on the last two dims only.
//
// Batch dims: the dims before the last two broadcast by NumPy's rule (as torch.matmul); a 2-D
// operand is shared by every batch. Both operands need rank >= 2 (torch's 1-D forms are left
// out: unsqueeze first). When b is 2-D and a is not read transposed, a [..., M, K] is one
// contiguous [batch*M, K] matrix, so the whole product is a single sgemm (the [B,T,D] x [D,V]
// of a language model head); otherwise one sgemm per output batch.
//
// Forward is gemm(ta, tb, M, N, K, a, b). Backward, with G = dL/dout [M,N] per batch:
//   d op(a) = G op(b)^T [M,K]    d op(b) = op(a)^T G [K,N]
// and each is transposed back to the stored layout when the operand was read transposed, which
// is again a single gemm with the right transpose flags (see the four cases below). An operand
// broadcast over batch dims gets the sum over those batches: the gemms accumulate into its
// gradient (beta = 1), and in the folded case the sum over batch*M rows is the sgemm itself.
#include <algorithm>
#include <string>
#include <vector>

#include <hitch/core/anomaly.h>
#include <hitch/core/tape.h>
#include <hitch/ops/blas.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

std::string operand_str(const Tensor& t, bool transposed) {
  return shape_str(t.shape()) + (transposed ? "^T" : "");
}

// For each output batch (row-major over out_batch), the batch of an operand with batch dims
// `batch` (right-aligned against out_batch, size-1 dims broadcast).
std::vector<i64> batch_map(const Shape& out_batch, const Shape& batch) {
  const std::size_t rank = out_batch.size(), off = rank - batch.size();
  std::vector<i64> stride(rank, 0);
  i64 n = 1;
  for (std::size_t d = rank; d-- > off;) {
    const i64 size = batch[d - off];
    stride[d] = size == 1 ? 0 : n;
    n *= size;
  }
  std::vector<i64> map(static_cast<std::size_t>(numel_of(out_batch)));
  std::vector<i64> idx(rank, 0);
  i64 at = 0;
  for (auto& m : map) {
    m = at;
    for (std::size_t d = rank; d-- > 0;) {  // odometer
      at += stride[d];
      if (++idx[d] < out_batch[d]) break;
      at -= stride[d] * out_batch[d];
      idx[d] = 0;
    }
  }
  return map;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  if (a.dim() < 2 || b.dim() < 2)
    throw Error(fmt::format("matmul: expected operands of rank >= 2 ([..., M, K] and [..., K, N]), got {} and {}",
                            shape_str(a.shape()), shape_str(b.shape())));
  const i64 M = transpose_a ? a.size(-1) : a.size(-2);
  const i64 K = transpose_a ? a.size(-2) : a.size(-1);
  const i64 Kb = transpose_b ? b.size(-1) : b.size(-2);
  const i64 N = transpose_b ? b.size(-2) : b.size(-1);
  if (K != Kb) {
    // Stored shapes, with ^T marking an operand read transposed.
    throw Error(fmt::format("matmul: {} x {}: inner dimensions {} and {} differ", operand_str(a, transpose_a),
                            operand_str(b, transpose_b), K, Kb));
  }
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const std::size_t rank = std::max(a_batch.size(), b_batch.size());
  Shape batch(rank, 1);
  for (std::size_t d = 0; d < rank; ++d) {
    const i64 x = d + a_batch.size() >= rank ? a_batch[d + a_batch.size() - rank] : 1;
    const i64 y = d + b_batch.size() >= rank ? b_batch[d + b_batch.size() - rank] : 1;
    if (x != y && x != 1 && y != 1)
      throw Error(fmt::format("matmul: {} x {}: batch dims {} and {} cannot be broadcast (trailing dims must match "
                              "or be 1)",
                              operand_str(a, transpose_a), operand_str(b, transpose_b), shape_str(a_batch),
                              shape_str(b_batch)));
    batch[d] = x == 1 ? y : x;
  }
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape);
  if (out.numel() == 0) {
    // M, N or a batch dim is 0: nothing to compute, and the batch maps are not built (the batch
    // count alone may be 2^47: [2^47, 0, 1] x [1, 1, 1]). Every gradient entry is a sum over an
    // empty M, N or batch range, so both gradients are zeros.
    if (will_record({a, b}))
      record("matmul", {a, b}, out, [sa = a.shape(), sb = b.shape()](const Tensor&, GradSink& sink) {
        if (sink.wants(0)) sink.add(0, Tensor::zeros(sa));
        if (sink.wants(1)) sink.add(1, Tensor::zeros(sb));
      });
    else
      check_forward("matmul", {a, b}, out);  // anomaly mode (core/anomaly.h); record() does it otherwise
    return out;
  }
  const i64 nb = numel_of(batch);
  // Folded: b shared and a read as stored, so a's batches are consecutive [M,K] blocks.
  const bool fold = b_batch.empty() && !transpose_a;
  const std::vector<i64> amap = fold ? std::vector<i64>{} : batch_map(batch, a_batch);
  const std::vector<i64> bmap = fold ? std::vector<i64>{} : batch_map(batch, b_batch);
  if (fold) {
    gemm(false, transpose_b, nb * M, N, K, 1.0f, a.data(), b.data(), 0.0f, out.data());
  } else {
    for (i64 i = 0; i < nb; ++i) {
      const auto u = static_cast<std::size_t>(i);
      gemm(transpose_a, transpose_b, M, N, K, 1.0f, a.data() + amap[u] * M * K, b.data() + bmap[u] * K * N, 0.0f,
           out.data() + i * M * N);
    }
  }

  if (will_record({a, b})) {
    const Tensor av = a.detach(), bv = b.detach();
    record(
        "matmul", {a, b}, out,
        [av, bv, transpose_a, transpose_b, M, N, K, nb, fold, amap, bmap](const Tensor& g, GradSink& sink) {
          const float *G = g.data(), *A = av.data(), *B = bv.data();
          if (sink.wants(0)) {
            Tensor ga = fold ? Tensor::empty(av.shape()) : Tensor::zeros(av.shape());  // non-fold accumulates
            float* dA = ga.data();
            if (fold) {  // da [batch*M, K] = G [batch*M, N] op(b)^T
              gemm(false, !transpose_b, nb * M, K, N, 1.0f, G, B, 0.0f, dA);
            } else {
              for (i64 i = 0; i < nb; ++i) {
                const auto u = static_cast<std::size_t>(i);
                const float *Gi = G + i * M * N, *Bi = B + bmap[u] * K * N;
                float* dAi = dA + amap[u] * M * K;
                if (!transpose_a)  // da [M,K] += G [M,N] op(b)^T
                  gemm(false, !transpose_b, M, K, N, 1.0f, Gi, Bi, 1.0f, dAi);
                else  // da [K,M] += op(b) [K,N] G^T
                  gemm(transpose_b, true, K, M, N, 1.0f, Bi, Gi, 1.0f, dAi);
              }
            }
            sink.add(0, ga);
          }
          if (sink.wants(1)) {
            Tensor gb = fold ? Tensor::empty(bv.shape()) : Tensor::zeros(bv.shape());
            float* dB = gb.data();
            if (fold) {  // db = sum over batches of op(a)^T G: one sgemm over batch*M rows
              if (!transpose_b)  // db [K,N] = a^T [K, batch*M] G [batch*M, N]
                gemm(true, false, K, N, nb * M, 1.0f, A, G, 0.0f, dB);
              else  // db [N,K] = G^T [N, batch*M] a [batch*M, K]
                gemm(true, false, N, K, nb * M, 1.0f, G, A, 0.0f, dB);
            } else {
              for (i64 i = 0; i < nb; ++i) {
                const auto u = static_cast<std::size_t>(i);
                const float *Gi = G + i * M * N, *Ai = A + amap[u] * M * K;
                float* dBi = dB + bmap[u] * K * N;
                if (!transpose_b)  // db [K,N] += op(a)^T [K,M] G [M,N]
                  gemm(!transpose_a, false, K, N, M, 1.0f, Ai, Gi, 1.0f, dBi);
                else  // db [N,K] += G^T [N,M] op(a) [M,K]
                  gemm(true, transpose_a, N, K, M, 1.0f, Gi, Ai, 1.0f, dBi);
              }
            }
            sink.add(1, gb);
          }
        },
        {a, b});
  } else {
    check_forward("matmul", {a, b}, out);
  }
  return out;
}

}  // namespace hitch
