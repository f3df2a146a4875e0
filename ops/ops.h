// hitch/ops/ops.h: the differentiable functions. Each family has one .cpp with forward and
// backward side by side; each op checks its arguments first (hitch::Error naming the op and the
// shapes) and records one tape node.
//
// Broadcasting (add, sub, mul, div, where, masked_fill, batched matmul's leading dims): NumPy's
// rule. Shapes are right-aligned; each pair of dims must be equal or one of them 1; the result
// takes the larger. Both sides may be stretched ([B,1] with [1,D] -> [B,D]).
//
// Dims: every `dim` argument may be negative (counted from the end); out of range is a
// hitch::Error naming the op, the dim and the valid range [-rank, rank).
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <hitch/core/tensor.h>
#include <hitch/ops/embedding.h>

namespace hitch {

// How a loss reduces its per-element values (PyTorch's `reduction`): None keeps them (shape of
// the batch), Mean averages (see each loss for the divisor), Sum adds.
enum class Reduction { None, Mean, Sum };

// ---- elementwise (ops/elementwise.cpp) -------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float b);
Tensor mul(const Tensor& a, float b);
Tensor neg(const Tensor& a);
// |a|; d/da = sign(a), 0 at a = 0 (PyTorch).
Tensor abs(const Tensor& a);
// min(max(a, min), max) with either bound optional (not both absent; bounds not NaN). Gradient 1
// where min <= a <= max (bounds included, as PyTorch), else 0. If min > max every value is max.
Tensor clamp(const Tensor& a, std::optional<float> min, std::optional<float> max);
// condition ? a : b elementwise, all three broadcast together. condition is a float mask (non-zero
// = true; NaN counts as true) and is not differentiated. a gets g where true, b where false.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
// a with value wherever mask is non-zero; mask broadcasts to a's shape (never a to mask's).
// Gradient to a: g where mask is zero, 0 elsewhere.
Tensor masked_fill(const Tensor& a, const Tensor& mask, float value);

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
// Along dim (size >= 1): values and the index of the first maximum (minimum), as torch.max(a, dim)
// / torch.min(a, dim); NaN counts as larger (smaller) than everything, so a NaN is picked.
// values' gradient goes to the picked element only.
struct ValuesIndices {
  Tensor values;
  IndexTensor indices;
};
ValuesIndices max(const Tensor& a, std::int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& a, std::int64_t dim, bool keepdim = false);
IndexTensor argmax(const Tensor& a, std::int64_t dim, bool keepdim = false);
IndexTensor argmin(const Tensor& a, std::int64_t dim, bool keepdim = false);
// log(sum(exp(a))) along dim, stable (the max is subtracted first; all -inf gives -inf).
// d/da = softmax(a) along dim.
Tensor logsumexp(const Tensor& a, std::int64_t dim, bool keepdim = false);

// ---- matmul (ops/matmul.cpp): [M,K] x [K,N] -> [M,N]; transpose_a / transpose_b read the
// operand as stored transposed ([K,M] / [N,K]). One cblas_sgemm call (ops/blas.h).
// Batched: [..., M, K] x [..., K, N] -> [..., M, N], the leading dims broadcast (NumPy rule,
// as torch.matmul); a 2-D operand is shared by every batch ([B,T,D] x [D,V] is one sgemm).
// Both operands need rank >= 2 (torch's 1-D forms are left out: unsqueeze first).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);

// ---- shape (ops/shape.cpp) -------------------------------------------------------------------
Tensor reshape(const Tensor& a, Shape shape);  // one dim may be -1
Tensor transpose(const Tensor& a);             // 2-D only: [M,N] -> [N,M]
// Every shape op copies (hitch has no views): writing into the result never changes the input.
// Joins tensors of equal shapes except along dim (cat) / of equal shapes (stack, new dim).
// At least one tensor. dim of stack is in [-(rank+1), rank].
Tensor cat(std::span<const Tensor> tensors, std::int64_t dim = 0);
Tensor stack(std::span<const Tensor> tensors, std::int64_t dim = 0);
inline Tensor cat(std::initializer_list<Tensor> t, std::int64_t dim = 0) { return cat(std::span<const Tensor>(t.begin(), t.size()), dim); }
inline Tensor stack(std::initializer_list<Tensor> t, std::int64_t dim = 0) { return stack(std::span<const Tensor>(t.begin(), t.size()), dim); }
// out = a with dim restricted to index (1-D, values in [0, size(dim)); duplicates allowed and
// their gradients add).
Tensor index_select(const Tensor& a, std::int64_t dim, const IndexTensor& index);
// out[i][j][k] = a[index[i][j][k]][j][k] (dim 0; likewise for any dim). index has a's rank,
// index.size(d) <= a.size(d) for d != dim, values in [0, a.size(dim)). out has index's shape.
Tensor gather(const Tensor& a, std::int64_t dim, const IndexTensor& index);
// a[..., start : start + length, ...] along dim; 0 <= start, 0 <= length, start + length <= size.
// start may be negative (counted from the end, as torch.narrow).
Tensor narrow(const Tensor& a, std::int64_t dim, std::int64_t start, std::int64_t length);
// Python slicing a[..., start:end:step, ...] along dim: start/end clamped to the size, negatives
// counted from the end, step >= 1 (torch refuses negative steps too).
Tensor slice(const Tensor& a, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1);
// a[..., index, ...]: dim removed; index in [-size, size).
Tensor select(const Tensor& a, std::int64_t dim, std::int64_t index);
// A new dim of size 1 at dim (dim in [-(rank+1), rank]).
Tensor unsqueeze(const Tensor& a, std::int64_t dim);
// Every dim of size 1 removed / dim removed if its size is 1 (otherwise a unchanged, as torch).
Tensor squeeze(const Tensor& a);
Tensor squeeze(const Tensor& a, std::int64_t dim);
// a broadcast to shape (NumPy rule, a's dims right-aligned; -1 keeps a's size; new leading dims
// may not be -1). Backward sums over the stretched dims.
Tensor expand(const Tensor& a, const Shape& shape);

// ---- softmax family and losses (ops/loss.cpp, ops/softmax.cpp) ------------------------------
Tensor log_softmax(const Tensor& a, std::int64_t dim = -1);
Tensor softmax(const Tensor& a, std::int64_t dim = -1);
// log(sigmoid(a)) = -softplus(-a), computed as min(a,0) - log1p(exp(-|a|)) (never overflows).
Tensor log_sigmoid(const Tensor& a);

// Options of cross_entropy and nll_loss, PyTorch's names and defaults.
//   weight:          [C] class weights, or undefined (all 1). Not differentiated.
//   ignore_index:    targets equal to it contribute nothing and are not counted in the mean
//                    (any value; other targets must be in [0, C)).
//   reduction:       Mean divides by the sum of the weights of the non-ignored targets (NaN when
//                    that is 0, as PyTorch); Sum adds; None returns [B].
//   label_smoothing: in [0, 1] (cross_entropy only): the target distribution is
//                    (1 - s) one_hot + s / C (Szegedy et al. 2016), weighted as PyTorch does.
struct CrossEntropyOptions {
  Tensor weight{};  // {} so that designated initializers may leave it out (-Wmissing-field-initializers)
  std::int64_t ignore_index = -100;
  Reduction reduction = Reduction::Mean;
  float label_smoothing = 0.0f;
};
// logits [B,C], targets [B]: -log_softmax(logits)[b, target[b]], reduced.
Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets);
Tensor cross_entropy(const Tensor& logits, const IndexTensor& targets, const CrossEntropyOptions& options);
// log_probs [B,C] (already log-softmaxed), targets [B]: -log_probs[b, target[b]] weighted, reduced.
// label_smoothing must be 0.
Tensor nll_loss(const Tensor& log_probs, const IndexTensor& targets, const CrossEntropyOptions& options = {});
// sum((x1 / max(||x1||, eps)) * (x2 / max(||x2||, eps)), dim) (x1, x2 broadcast, dim counted in
// the broadcast shape; PyTorch 1.13's formula: each norm is clamped, not their product). eps >= 0.
Tensor cosine_similarity(const Tensor& x1, const Tensor& x2, std::int64_t dim = 1, float eps = 1e-8f);
Tensor mse_loss(const Tensor& input, const Tensor& target);  // mean of squares, same shapes
// mean over elements of max(x,0) - x*y + log(1 + exp(-|x|)); target is not differentiated.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target);

// ---- building blocks of models (ops/nn_functional.cpp) ----------------------------------------
// Zeroes each element with probability p and scales the rest by 1 / (1 - p), drawing one
// gen.uniform() per element in order (element kept when u >= p); p in [0, 1]; p = 1 gives zeros.
// training = false (or p = 0) returns a copy and draws nothing. Backward multiplies g by the
// same mask and scale.
Tensor dropout(const Tensor& a, float p, bool training, Generator& gen);
// Normalises over the trailing dims normalized_shape (a's last dims must equal it):
// (a - mean) / sqrt(var + eps) * weight + bias, var the biased variance (Ba et al. 2016, as
// torch.nn.functional.layer_norm); weight and bias of shape normalized_shape or undefined.
// eps > 0 and finite.
Tensor layer_norm(const Tensor& a, const Shape& normalized_shape, const Tensor& weight = {}, const Tensor& bias = {},
                  float eps = 1e-5f);
// x * Phi(x) (approximate = "none", erf form) or the tanh approximation (approximate = "tanh"),
// Hendrycks & Gimpel 2016, as torch.nn.functional.gelu.
Tensor gelu(const Tensor& a, std::string_view approximate = "none");

}  // namespace hitch
