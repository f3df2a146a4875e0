// hitch/ops/shape.cpp: reshape, transpose and the other ops that move values without arithmetic
// (index_select and gather, which take an IndexTensor, are in ops/index.cpp).
//
//   reshape(a, shape)             same numel, one dim may be -1 (inferred)  -> shape (checked_numel: at most kMaxNumel)
//   transpose(a)                  a [M,N]                                  -> [N,M]
//   cat(ts, dim)                  ts[i] [..., s_i, ...] (equal except dim) -> [..., sum s_i, ...]
//   stack(ts, dim)                ts[i] of one shape S, n of them          -> S with n inserted at dim
//   narrow(a, dim, start, len)    a [..., n, ...]                          -> [..., len, ...]
//   slice(a, dim, s, e, step)     a [..., n, ...]                          -> [..., ceil((e' - s') / step), ...]
//   select(a, dim, i)             a [..., n, ...]                          -> [..., ...] (dim removed)
//   unsqueeze(a, dim)             a                                        -> a's shape with 1 inserted at dim
//   squeeze(a) / squeeze(a, dim)  a                                        -> size-1 dims (that dim) removed
//   expand(a, shape)              a, right-aligned to shape (NumPy rule)   -> shape
//
// Semantics are PyTorch 1.13's (torch.cat, torch.stack, torch.narrow, Python slicing, torch.select,
// torch.unsqueeze, torch.squeeze, Tensor.expand; https://pytorch.org/docs/1.13/torch.html), with
// two differences: hitch has no views (core/tensor.h), so every op copies the values into a new
// tensor and writing into the result never changes a; and cat is strict (torch 1.13 still skips
// legacy 1-D empty tensors of shape [0] whatever the other shapes; hitch refuses them).
//
// Layout: tensors are contiguous and row-major, so around a dim d a tensor is [outer, n, inner]
// (outer = product of the sizes before d, inner = of those after it). cat / stack / narrow /
// slice / select copy blocks of `inner` contiguous floats; their backward copies the same blocks
// of g back (each output element comes from exactly one input element, so nothing overlaps).
// expand reads a through strides that are 0 on the stretched dims; its backward sums g over them
// in double.
#include <algorithm>
#include <cstring>
#include <vector>

#include <hitch/core/tape.h>
#include <hitch/ops/ops.h>

namespace hitch {

namespace {

using i64 = std::int64_t;

// a's values under another shape of the same numel: one copy into tensor storage (no
// intermediate std::vector, whose large blocks glibc maps and faults in afresh every step).
Tensor copy_as(const Tensor& a, Shape shape) {
  Tensor out = Tensor::empty(std::move(shape));
  std::copy(a.values().begin(), a.values().end(), out.data());
  return out;
}

// out [N,M] = x [M,N]^T, in tiles so that both sides stay in cache for large matrices.
void transpose_into(const float* x, float* out, i64 M, i64 N) {
  if (M == 0 || N == 0) return;  // nothing to move ([2^40, 0] would otherwise walk 2^35 empty tiles)
  constexpr i64 tile = 32;
  for (i64 i0 = 0; i0 < M; i0 += tile)
    for (i64 j0 = 0; j0 < N; j0 += tile) {
      const i64 i1 = std::min(i0 + tile, M), j1 = std::min(j0 + tile, N);
      for (i64 i = i0; i < i1; ++i)
        for (i64 j = j0; j < j1; ++j) out[j * M + i] = x[i * N + j];
    }
}


// The sizes before dim and after it: a is [outer, size(dim), inner] around dim.
struct Around {
  i64 outer = 1, n = 1, inner = 1;
};
Around around(const Shape& shape, i64 dim) {
  Around r;
  for (i64 d = 0; d < static_cast<i64>(shape.size()); ++d) {
    const i64 s = shape[static_cast<std::size_t>(d)];
    if (d < dim) r.outer *= s;
    else if (d == dim) r.n = s;
    else r.inner *= s;
  }
  return r;
}

void copy_floats(float* dst, const float* src, i64 count) {
  if (count > 0) std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(float));
}

// A copy of a's values under another shape of the same numel (unsqueeze, squeeze); backward
// copies g back under a's shape.
Tensor relabel(const char* op, const Tensor& a, Shape shape) {
  Tensor out = Tensor::empty(std::move(shape));
  copy_floats(out.data(), a.data(), a.numel());
  record(op, {a}, out, [from = a.shape()](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::empty(from);
    copy_floats(ga.data(), g.data(), g.numel());
    sink.add(0, ga);
  });
  return out;
}

// out[o, j, :] = a[o, start + j * step, :] for j < count (narrow, slice, select); arguments are
// already checked. keep_dim = false drops dim from the output shape (select).
// Backward: ga = 0, then ga[o, start + j * step, :] = g[o, j, :] (distinct rows: no overlap).
Tensor take_strided(const char* op, const Tensor& a, i64 dim, i64 start, i64 step, i64 count, bool keep_dim) {
  const Around s = around(a.shape(), dim);
  Shape shape = a.shape();
  if (keep_dim) shape[static_cast<std::size_t>(dim)] = count;
  else shape.erase(shape.begin() + dim);
  Tensor out = Tensor::empty(std::move(shape));
  // An empty output copies nothing: its outer size alone may be 2^40 ([2^40, 0]), so skip the loop.
  const i64 outer = out.numel() == 0 ? 0 : s.outer;
  const float* x = a.data();
  float* y = out.data();
  for (i64 o = 0; o < outer; ++o)
    for (i64 j = 0; j < count; ++j) copy_floats(y + (o * count + j) * s.inner, x + (o * s.n + start + j * step) * s.inner, s.inner);
  record(op, {a}, out, [from = a.shape(), s, outer, start, step, count](const Tensor& g, GradSink& sink) {
    Tensor ga = Tensor::zeros(from);
    for (i64 o = 0; o < outer; ++o)
      for (i64 j = 0; j < count; ++j)
        copy_floats(ga.data() + (o * s.n + start + j * step) * s.inner, g.data() + (o * count + j) * s.inner, s.inner);
    sink.add(0, ga);
  });
  return out;
}

// Calls f(p, offset) for every element p of shape in row-major order, with offset = sum over d of
// coordinate[d] * stride[d] (an odometer: one add per step, no division).
template <class F>
void for_each_offset(const Shape& shape, const std::vector<i64>& stride, F f) {
  const i64 n = numel_of(shape);
  Shape coord(shape.size(), 0);
  i64 offset = 0;
  for (i64 p = 0; p < n; ++p) {
    f(p, offset);
    for (std::size_t d = shape.size(); d-- > 0;) {
      if (++coord[d] < shape[d]) {
        offset += stride[d];
        break;
      }
      offset -= (shape[d] - 1) * stride[d];
      coord[d] = 0;
    }
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
  Tensor out = copy_as(a, std::move(shape));
  record("reshape", {a}, out, [from = a.shape()](const Tensor& g, GradSink& sink) { sink.add(0, copy_as(g, from)); });
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

namespace {

// ---- cat and stack ----------------------------------------------------------------------------
// Around dim every input is [outer, s_i, inner] (stack: s_i = 1, dim inserted), the output
// [outer, sum s_i, inner]: for each o the inputs' blocks of s_i * inner floats follow each other.
// Backward splits g the same way: input i gets g[o, off_i : off_i + s_i, :] (torch.cat's
// backward, a narrow of g per input). The same tensor passed twice gets both blocks added.
Tensor join(const char* op, std::span<const Tensor> ts, i64 dim_arg, bool stacking) {
  if (ts.empty()) throw Error(fmt::format("{}: expected at least one tensor, got none", op));
  const Shape& first = ts[0].shape();
  const i64 rank = static_cast<i64>(first.size());
  const i64 dim = wrap_dim(op, dim_arg, stacking ? rank + 1 : rank);
  for (std::size_t i = 1; i < ts.size(); ++i) {
    const Shape& s = ts[i].shape();
    if (stacking) {
      if (s != first)
        throw Error(fmt::format("stack: tensors[0] has shape {} but tensors[{}] has shape {} (all shapes must be equal)",
                                shape_str(first), i, shape_str(s)));
      continue;
    }
    bool same = s.size() == first.size();
    for (std::size_t d = 0; same && d < s.size(); ++d) same = static_cast<i64>(d) == dim || s[d] == first[d];
    if (!same)
      throw Error(fmt::format("cat: tensors[0] has shape {} but tensors[{}] has shape {} (same rank and sizes needed "
                              "except at dim {})",
                              shape_str(first), i, shape_str(s), dim));
  }
  // Sizes along dim; their sum is held at kMaxNumel + 1 once it passes the limit (many [2^48, 0]
  // tensors would overflow it), so checked_numel refuses the shape naming the op.
  std::vector<i64> sizes(ts.size(), 1);
  i64 total = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (!stacking) sizes[i] = ts[i].size(dim);
    total = std::min(total + sizes[i], kMaxNumel + 1);
  }
  Shape shape = first;
  if (stacking) shape.insert(shape.begin() + dim, total);
  else shape[static_cast<std::size_t>(dim)] = total;
  checked_numel(op, shape);
  const Around s = around(shape, dim);
  Tensor out = Tensor::empty(std::move(shape));
  // An empty output (so every input empty) copies nothing: skip the outer loop, whose size alone
  // may be 2^40 (cat of [2^40, 0] tensors along dim 1).
  const i64 outer = out.numel() == 0 ? 0 : s.outer;
  float* y = out.data();
  for (i64 o = 0; o < outer; ++o) {
    i64 at = 0;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const i64 block = sizes[i] * s.inner;
      copy_floats(y + (o * total + at) * s.inner, ts[i].data() + o * block, block);
      at += sizes[i];
    }
  }
  std::vector<Shape> shapes;
  for (const Tensor& t : ts) shapes.push_back(t.shape());
  record(op, ts, out, [shapes = std::move(shapes), sizes, s, outer, total](const Tensor& g, GradSink& sink) {
    i64 at = 0;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const i64 block = sizes[i] * s.inner;
      if (sink.wants(i)) {
        Tensor gi = Tensor::empty(shapes[i]);
        for (i64 o = 0; o < outer; ++o) copy_floats(gi.data() + o * block, g.data() + (o * total + at) * s.inner, block);
        sink.add(i, gi);
      }
      at += sizes[i];
    }
  });
  return out;
}

}  // namespace

Tensor cat(std::span<const Tensor> tensors, std::int64_t dim) { return join("cat", tensors, dim, false); }
Tensor stack(std::span<const Tensor> tensors, std::int64_t dim) { return join("stack", tensors, dim, true); }

// ---- narrow, slice, select: a strided range along dim (take_strided above) --------------------

// torch.narrow: start in [-n, n] (negative counted from the end), then 0 <= length <= n - start.
Tensor narrow(const Tensor& a, std::int64_t dim_arg, std::int64_t start, std::int64_t length) {
  const i64 dim = wrap_dim("narrow", dim_arg, a.dim());
  const i64 n = a.size(dim);
  if (start < -n || start > n)
    throw Error(fmt::format("narrow: start {} is out of range for dim {} of size {} (valid: [{}, {}])", start, dim, n,
                            -n, n));
  const i64 s = start < 0 ? start + n : start;
  if (length < 0 || length > n - s)
    throw Error(fmt::format("narrow: length {} is out of range for start {} in dim {} of size {} (valid: [0, {}])",
                            length, start, dim, n, n - s));
  return take_strided("narrow", a, dim, s, 1, length, true);
}

// Python's a[..., start:end:step]: a negative start / end counts from the end, both are then
// clamped to [0, n] and an end before start gives an empty range; count = ceil((end - start) / step).
Tensor slice(const Tensor& a, std::int64_t dim_arg, std::int64_t start, std::int64_t end, std::int64_t step) {
  const i64 dim = wrap_dim("slice", dim_arg, a.dim());
  if (step < 1)
    throw Error(fmt::format("slice: step {} is not supported (valid: step >= 1; torch refuses zero and negative "
                            "steps too)",
                            step));
  const i64 n = a.size(dim);
  auto clamp_to_size = [n](i64 v) { return v < 0 ? (v < -n ? 0 : v + n) : std::min(v, n); };
  const i64 s = clamp_to_size(start), e = std::max(clamp_to_size(end), s);
  const i64 count = e == s ? 0 : (e - s - 1) / step + 1;  // never forms e - s + step (no overflow)
  return take_strided("slice", a, dim, s, step, count, true);
}

// a[..., index, ...]: index in [-n, n); the output has dim removed.
Tensor select(const Tensor& a, std::int64_t dim_arg, std::int64_t index) {
  const i64 dim = wrap_dim("select", dim_arg, a.dim());
  const i64 n = a.size(dim);
  if (index < -n || index >= n)
    throw Error(fmt::format("select: index {} is out of range for dim {} of size {} (valid: [{}, {}))", index, dim, n,
                            -n, n));
  return take_strided("select", a, dim, index < 0 ? index + n : index, 1, 1, false);
}

// ---- unsqueeze, squeeze: the same values under a shape with size-1 dims added / removed ------

Tensor unsqueeze(const Tensor& a, std::int64_t dim_arg) {
  const i64 dim = wrap_dim("unsqueeze", dim_arg, a.dim() + 1);
  Shape shape = a.shape();
  shape.insert(shape.begin() + dim, 1);
  return relabel("unsqueeze", a, std::move(shape));
}

Tensor squeeze(const Tensor& a) {
  Shape shape;
  for (const i64 s : a.shape())
    if (s != 1) shape.push_back(s);
  return relabel("squeeze", a, std::move(shape));
}

// As torch, a 0-d tensor accepts dim 0 and -1 (and is returned as a copy).
Tensor squeeze(const Tensor& a, std::int64_t dim_arg) {
  const i64 dim = wrap_dim("squeeze", dim_arg, std::max<i64>(a.dim(), 1));
  Shape shape = a.shape();
  if (a.dim() > 0 && shape[static_cast<std::size_t>(dim)] == 1) shape.erase(shape.begin() + dim);
  return relabel("squeeze", a, std::move(shape));
}

// ---- expand ------------------------------------------------------------------------------------
// a's dims are right-aligned with shape's; out[c] = a[c'] where c' takes c's coordinate on dims
// a has with size > 1 and 0 elsewhere (a stride of 0). Backward (torch's sum_to_size):
// ga[c'] = sum of g over every c mapped to it, in double, in row-major order of g.
Tensor expand(const Tensor& a, const Shape& shape) {
  const i64 rank = a.dim(), out_rank = static_cast<i64>(shape.size()), lead = out_rank - rank;
  if (lead < 0)
    throw Error(fmt::format("expand: shape {} has fewer dims than a's shape {} ({} < {})", shape_str(shape),
                            shape_str(a.shape()), out_rank, rank));
  Shape out_shape(shape.size());
  std::vector<i64> stride(shape.size(), 0);
  i64 a_stride = 1;
  for (i64 d = out_rank - 1; d >= 0; --d) {
    const auto du = static_cast<std::size_t>(d);
    const i64 want = shape[du];
    if (d < lead) {
      if (want < 0)
        throw Error(fmt::format("expand: size {} at dim {} of {} is invalid: a new leading dim needs a size >= 0 "
                                "(-1 keeps a's size, which only dims that a has have)",
                                want, d, shape_str(shape)));
      out_shape[du] = want;
      continue;
    }
    const i64 have = a.size(d - lead);
    if (want != -1 && want != have && !(have == 1 && want >= 0))
      throw Error(fmt::format("expand: size {} at dim {} of {} does not fit a's size {} there (a is {}; a size 1 may "
                              "become any size >= 0, other sizes must be kept or given as -1)",
                              want, d, shape_str(shape), have, shape_str(a.shape())));
    out_shape[du] = want == -1 ? have : want;
    stride[du] = have == 1 ? 0 : a_stride;
    a_stride *= have;
  }
  checked_numel("expand", out_shape);
  Tensor out = Tensor::empty(out_shape);
  const float* x = a.data();
  float* y = out.data();
  for_each_offset(out_shape, stride, [&](i64 p, i64 off) { y[p] = x[off]; });
  record("expand", {a}, out, [from = a.shape(), out_shape, stride](const Tensor& g, GradSink& sink) {
    std::vector<double> acc(static_cast<std::size_t>(numel_of(from)), 0.0);
    const float* gv = g.data();
    for_each_offset(out_shape, stride, [&](i64 p, i64 off) { acc[static_cast<std::size_t>(off)] += gv[p]; });
    Tensor ga = Tensor::empty(from);
    for (std::size_t k = 0; k < acc.size(); ++k) ga.data()[k] = static_cast<float>(acc[k]);
    sink.add(0, ga);
  });
  return out;
}

}  // namespace hitch
