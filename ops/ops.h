// hitch/ops/ops.h: the differentiable functions. Each family has one .cpp with forward and
// backward side by side; each op checks its arguments first (hitch::Error naming the op and the
// shapes) and records one tape node.
//
// Broadcasting (add, sub, mul, div): equal shapes; either side a one-element tensor; or the
// smaller side's shape equal to the trailing dims of the larger ([B,D] with [D]) or equal to it
// with 1s for some dims ([B,D] with [B,1], [1,D]). General NumPy broadcasting is left out.
#pragma once

#include "core/tensor.h"
#include "ops/embedding.h"

namespace hitch {

// ---- elementwise (ops/elementwise.cpp) -------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float b);
Tensor mul(const Tensor& a, float b);
Tensor neg(const Tensor& a);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float b) { return add(a, b); }
inline Tensor operator+(float a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(const Tensor& a, float b) { return add(a, -b); }
inline Tensor operator-(float a, const Tensor& b) { return add(neg(b), a); }
inline Tensor operator*(const Tensor& a, float b) { return mul(a, b); }
inline Tensor operator*(float a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(const Tensor& a, float b) { return mul(a, 1.0f / b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---- unary (ops/unary.cpp) -------------------------------------------------------------------
Tensor square(const Tensor& a);
Tensor pow(const Tensor& a, float exponent);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);

// ---- reductions (ops/reduce.cpp) -------------------------------------------------------------
Tensor sum(const Tensor& a);                                     // -> []
Tensor sum(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& a);                                    // -> []
Tensor mean(const Tensor& a, std::int64_t dim, bool keepdim = false);

// ---- matmul (ops/matmul.cpp): [M,K] x [K,N] -> [M,N]; transpose_a / transpose_b read the
// operand as stored transposed ([K,M] / [N,K]). One cblas_sgemm call (ops/blas.h).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);

// ---- shape (ops/shape.cpp) -------------------------------------------------------------------
Tensor reshape(const Tensor& a, Shape shape);  // one dim may be -1
Tensor transpose(const Tensor& a);             // 2-D only: [M,N] -> [N,M]

// ---- losses (ops/loss.cpp) -------------------------------------------------------------------
Tensor log_softmax(const Tensor& a, std::int64_t dim = -1);
// logits [B,C], targets [B] in [0, C): mean over B of -log_softmax(logits)[b, target[b]].
Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets);
Tensor mse_loss(const Tensor& input, const Tensor& target);  // mean of squares, same shapes
// mean over elements of max(x,0) - x*y + log(1 + exp(-|x|)); target is not differentiated.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target);

}  // namespace hitch
