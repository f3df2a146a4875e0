"""PyTorch 1.13 references for kind op_elem (tests/fixtures/parity/FORMAT.md): broadcasting add / sub /
mul / div (both sides stretched too), abs, clamp, where, masked_fill, max / min (values and indices,
ties included), argmax / argmin, logsumexp and batched matmul (broadcast batch dims, transposes).

Run with Debian's PyTorch: /usr/bin/python3 scripts/parity/ops_elem.py
Writes tests/fixtures/parity/op_elem_NNN.case. Inputs are float32 values, the reference is computed
in float64; every case also gets a float64 grad_output, and the expected gradients are those of
sum(out * grad_output).
"""
import glob
import os

import torch

from caseio import FIXTURES, f32, write_case

gen = torch.Generator().manual_seed(13)
cases = []


def signed(*shape):
    """|x| in [0.5, 1.5) with a random sign (safe divisors), rounded to float32."""
    m = 0.5 + torch.rand(tuple(shape), generator=gen, dtype=torch.float64)
    s = torch.where(torch.rand(tuple(shape), generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return f32(m * s)


def normal(*shape):
    return f32(torch.randn(tuple(shape), generator=gen, dtype=torch.float64))


def steps(*shape, lo=-2, hi=3):
    """Multiples of 0.5 in [lo, hi): values repeat, so bounds and ties are hit exactly."""
    return torch.randint(2 * lo, 2 * hi, shape, generator=gen).to(torch.float64) / 2


def mask(*shape):
    return (torch.rand(tuple(shape), generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)


def add_case(op, attrs, inputs, fn, diff, indices=None):
    """inputs: dict name -> float64 tensor; diff: names of the differentiated inputs; fn(**leaves) -> out."""
    leaves = {k: v.clone().requires_grad_(k in diff) for k, v in inputs.items()}
    out = fn(**leaves)
    go = normal(*out.shape)
    tensors = dict(inputs)
    tensors["grad_output"] = go
    if any(leaves[k].requires_grad for k in diff) and out.requires_grad:
        (out * go).sum().backward()
    tensors["expected_output"] = out
    for k in diff:
        g = leaves[k].grad
        tensors["expected_grad_" + k] = g if g is not None else torch.zeros_like(leaves[k])
    if indices is not None:
        tensors["expected_indices"] = indices
    cases.append((dict({"op": op}, **attrs), tensors))


# ---- add / sub / mul / div: equal, one side and both sides stretched, empty ---------------------
fns = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
pairs = [([2, 3], [2, 3]), ([2, 3], [3]), ([2, 1], [1, 3]), ([3], [2, 1]), ([4, 1, 3], [2, 1]),
         ([1, 2, 1], [3, 1, 4]), ([2, 3], []), ([0, 3], [3])]
for i, (sa, sb) in enumerate(pairs):
    for op in (["add", "sub", "mul", "div"] if i in (2, 5) else [["add", "sub", "mul", "div"][i % 4]]):
        add_case(op, {}, {"a": signed(*sa), "b": signed(*sb)},
                 lambda a, b, f=fns[op]: f(a, b), ["a", "b"])

# ---- abs, clamp ---------------------------------------------------------------------------------
add_case("abs", {}, {"a": steps(3, 4)}, lambda a: a.abs(), ["a"])  # zeros included: gradient 0
for lo, hi in [(-1.0, 1.0), (0.5, None), (None, 0.0), (1.0, -1.0)]:
    add_case("clamp", {"min": lo, "max": hi}, {"a": steps(2, 5)}, lambda a, lo=lo, hi=hi: a.clamp(lo, hi), ["a"])

# ---- where, masked_fill -------------------------------------------------------------------------
for sc, sa, sb in [([2, 3], [2, 3], [2, 3]), ([2, 1], [1, 3], []), ([3], [4, 1, 1], [2, 1])]:
    add_case("where", {}, {"condition": mask(*sc), "a": normal(*sa), "b": normal(*sb)},
             lambda condition, a, b: torch.where(condition != 0, a, b), ["a", "b"])
for sa, sm, v in [([2, 3], [2, 3], -1.5), ([4, 2, 3], [2, 1], 0.25), ([2, 3], [], 2.0)]:
    add_case("masked_fill", {"value": v}, {"a": normal(*sa), "mask": mask(*sm)},
             lambda a, mask, v=v: a.masked_fill(mask != 0, v), ["a"])


# ---- max / min (values and indices), argmax / argmin: ties pick the first index -----------------
def first_index(a, dim, want_max):
    """The first index of the extreme along dim, computed without torch.max (checks torch's pick)."""
    m = a.amax(dim, keepdim=True) if want_max else a.amin(dim, keepdim=True)
    n = a.shape[dim]
    shape = [1] * a.dim()
    shape[dim] = n
    pos = torch.arange(n).reshape(shape).expand(a.shape)
    return torch.where(a == m, pos, torch.full_like(pos, n)).amin(dim)


for op, shape, dim, keepdim in [("max", [3, 4], 1, False), ("max", [4, 3], 0, True), ("min", [2, 3, 4], -2, False),
                                ("min", [3, 4], -1, True), ("max", [1, 5], 0, False), ("max", [0, 3], 1, False)]:
    a = steps(*shape, lo=-1, hi=2)  # 6 distinct values: many ties
    want_max = op == "max"
    res = (torch.max if want_max else torch.min)(a, dim, keepdim=keepdim)
    first = first_index(a, dim if dim >= 0 else dim + a.dim(), want_max)
    assert torch.equal(res.indices, first.unsqueeze(dim) if keepdim else first), (op, a, res.indices)
    add_case(op, {"dim": dim, "keepdim": keepdim}, {"a": a},
             lambda a, f=torch.max if want_max else torch.min, d=dim, k=keepdim: f(a, d, keepdim=k).values, ["a"],
             indices=res.indices)
for op, shape, dim, keepdim in [("argmax", [3, 4], 1, False), ("argmax", [2, 3, 4], -3, True),
                                ("argmin", [4, 3], 0, False)]:
    a = steps(*shape, lo=-1, hi=2)
    f = torch.argmax if op == "argmax" else torch.argmin
    idx = f(a, dim, keepdim=keepdim)
    first = first_index(a, dim if dim >= 0 else dim + a.dim(), op == "argmax")
    assert torch.equal(idx, first.unsqueeze(dim) if keepdim else first), (op, a, idx)
    cases.append(({"op": op, "dim": dim, "keepdim": keepdim}, {"a": a, "expected_indices": idx}))

# ---- logsumexp ----------------------------------------------------------------------------------
for shape, dim, keepdim, scale in [([3, 4], -1, False, 1.0), ([3, 4], 0, True, 1.0), ([2, 3, 4], 1, False, 1.0),
                                   ([2, 5], 1, False, 300.0), ([4, 1], 1, False, 1.0)]:
    add_case("logsumexp", {"dim": dim, "keepdim": keepdim}, {"a": f32(normal(*shape) * scale)},
             lambda a, d=dim, k=keepdim: torch.logsumexp(a, d, keepdim=k), ["a"])


# ---- batched matmul: stored shapes, ^T acting on the last two dims ------------------------------
def mm(a, b, ta, tb):
    return torch.matmul(a.transpose(-1, -2) if ta else a, b.transpose(-1, -2) if tb else b)


for sa, sb, ta, tb in [([2, 3], [3, 4], False, False), ([2, 2, 3], [2, 3, 4], False, False),
                       ([3, 2, 3], [3, 4], False, False), ([2, 2, 3], [4, 3], False, True),
                       ([2, 3, 2], [3, 4], True, False), ([2, 3], [2, 3, 4], False, False),
                       ([2, 1, 2, 3], [3, 3, 4], False, False), ([2, 3, 2], [1, 4, 3], True, True),
                       ([1, 2, 3], [2, 4, 3], False, True), ([0, 2, 3], [3, 2], False, False)]:
    add_case("matmul", {"transpose_a": ta, "transpose_b": tb}, {"a": normal(*sa), "b": normal(*sb)},
             lambda a, b, ta=ta, tb=tb: mm(a, b, ta, tb), ["a", "b"])

for old in glob.glob(os.path.join(FIXTURES, "op_elem_*.case")):
    os.remove(old)
for n, (attrs, tensors) in enumerate(cases):
    write_case("op_elem_%03d" % n, "op_elem", attrs, tensors)
print("wrote %d op_elem cases" % len(cases))
