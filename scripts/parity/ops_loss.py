"""Writes tests/fixtures/parity/op_loss_NNN.case: PyTorch 1.13 references for the softmax family
and the losses of ops/softmax.cpp and ops/loss.cpp (kind op_loss, FORMAT.md there).

Run with Debian's python3-torch:  /usr/bin/python3 scripts/parity/ops_loss.py
Each case: inputs drawn from a seeded torch.Generator, rounded to float32 (caseio.f32), the op
applied in float64 with torch.nn.functional, and the backward of sum(out * grad_output).

Covered: softmax / log_softmax / log_sigmoid over shapes and dims (negative, size 1, empty, large
logits); cross_entropy over weight x reduction x label_smoothing with ignored targets and duplicate
targets, an in-range ignore_index, smoothing 1, C = 1, an empty batch and a fully ignored batch
(Sum / None only: Mean gives NaN, which a case cannot hold; tests/test_ops_loss.cpp covers it);
nll_loss over weight x reduction; cosine_similarity with broadcasting, dims, a zero vector and
norms below eps (where torch's gradient is its autograd's, not the clamped function's).
"""
import glob
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from caseio import FIXTURES, f32, write_case  # noqa: E402

KIND = "op_loss"
gen = torch.Generator().manual_seed(1313)
cases = []


def randn(*shape, scale=1.0):
    return f32(torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * scale)


def add(op, attrs, inputs, fn, extra=None):
    """inputs: dict name -> float64 tensor (differentiated: input, input2); extra: non-float tensors."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(*leaves.values())
    grad_output = randn(*out.shape)
    (out * grad_output).sum().backward()
    tensors = dict(inputs)
    tensors.update(extra or {})
    tensors["grad_output"] = grad_output
    tensors["expected_output"] = out
    for k, v in leaves.items():
        tensors["expected_grad_" + k] = v.grad if v.grad is not None else torch.zeros_like(v)
    cases.append((dict({"op": op}, **attrs), tensors))


# ---- softmax, log_softmax, log_sigmoid ------------------------------------------------------
for shape, dim in [((3,), -1), ((2, 5), 1), ((2, 5), 0), ((4, 1, 3), -2), ((2, 3, 4), 1), ((1, 1), -1), ((0, 3), 1)]:
    add("softmax", {"dim": dim}, {"input": randn(*shape)}, lambda x, d=dim: F.softmax(x, d))
add("softmax", {"dim": -1}, {"input": randn(2, 4, scale=40.0)}, lambda x: F.softmax(x, -1))  # large logits
for shape, dim in [((2, 5), -1), ((3, 2, 2), 0)]:
    add("log_softmax", {"dim": dim}, {"input": randn(*shape)}, lambda x, d=dim: F.log_softmax(x, d))
add("log_sigmoid", {}, {"input": f32(torch.tensor([-100.0, -30.0, -1.5, 0.0, 0.25, 3.0, 30.0, 100.0], dtype=torch.float64))},
    F.logsigmoid)
add("log_sigmoid", {}, {"input": randn(2, 3, scale=3.0)}, F.logsigmoid)
add("log_sigmoid", {}, {"input": randn()}, F.logsigmoid)

# ---- cross_entropy, nll_loss -----------------------------------------------------------------
B, C = 6, 4
# duplicates (class 2 three times) and one target ignored by the default -100
targets = torch.tensor([2, 0, -100, 2, 3, 2])
weight = f32(torch.rand(C, generator=gen, dtype=torch.float64) * 2.0 + 0.25)


def ce_case(logits, t, w, reduction, smoothing, ignore_index=-100, op="cross_entropy"):
    attrs = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": smoothing}
    extra = {"targets": t}
    if w is not None:
        extra["weight"] = w
    if op == "cross_entropy":
        fn = lambda x: F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction,
                                       label_smoothing=smoothing)
    else:
        fn = lambda x: F.nll_loss(x, t, weight=w, ignore_index=ignore_index, reduction=reduction)
    add(op, attrs, {"input": logits}, fn, extra)


for w in (None, weight):
    for reduction in ("none", "mean", "sum"):
        for smoothing in (0.0, 0.25):
            ce_case(randn(B, C, scale=2.0), targets, w, reduction, smoothing)
ce_case(randn(B, C), targets, weight, "mean", 1.0)                      # smoothing 1: only the uniform term
ce_case(randn(B, C), torch.tensor([1, 0, 1, 3, 1, 2]), weight, "mean", 0.1, ignore_index=1)  # ignore a class
ce_case(randn(B, C), torch.tensor([1, 0, 1, 3, 1, 2]), None, "none", 0.3, ignore_index=1)
ce_case(randn(3, 1), torch.tensor([0, 0, 0]), None, "mean", 0.2)        # C = 1: loss 0, gradient 0
ce_case(randn(4, 5, scale=60.0), torch.tensor([4, 0, 2, 2]), None, "mean", 0.1)  # large logits
ce_case(randn(0, 3), torch.zeros(0, dtype=torch.int64), None, "sum", 0.2)  # empty batch
ce_case(randn(3, 4), torch.tensor([-100, -100, -100]), weight, "sum", 0.2)  # all ignored
ce_case(randn(3, 4), torch.tensor([-100, -100, -100]), None, "none", 0.0)
for w in (None, weight):
    for reduction in ("none", "mean", "sum"):
        ce_case(F.log_softmax(randn(B, C), 1).detach(), targets, w, reduction, 0.0, op="nll_loss")

# ---- cosine_similarity -----------------------------------------------------------------------
for s1, s2, dim in [((2, 3), (2, 3), 1), ((4, 1, 3), (2, 3), -1), ((4, 1, 3), (2, 3), -2), ((2, 1), (2, 3), 0),
                    ((3,), (3,), 0), ((5, 4), (4,), -1), ((1, 6), (3, 6), 1)]:
    add("cosine_similarity", {"dim": dim, "eps": 1e-8}, {"input": randn(*s1), "input2": randn(*s2)},
        lambda a, b, d=dim: F.cosine_similarity(a, b, dim=d, eps=f32(torch.tensor(1e-8)).item()))
# Rows: ordinary; a zero vector; norms 0.1 and 0.3 below eps = 0.5 (torch's clamped gradient).
x1 = f32(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.3, 0.1]], dtype=torch.float64))
x2 = f32(torch.tensor([[0.5, 1.0, -1.0], [3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.1, 0.0]], dtype=torch.float64))
add("cosine_similarity", {"dim": 1, "eps": 0.5}, {"input": x1, "input2": x2},
    lambda a, b: F.cosine_similarity(a, b, dim=1, eps=0.5))
add("cosine_similarity", {"dim": -1, "eps": 1e-8}, {"input": randn(3, 4, scale=1e3), "input2": randn(3, 4, scale=1e-3)},
    lambda a, b: F.cosine_similarity(a, b, dim=-1, eps=f32(torch.tensor(1e-8)).item()))

for old in glob.glob(os.path.join(FIXTURES, KIND + "_*.case")):
    os.remove(old)
for n, (attrs, tensors) in enumerate(cases):
    write_case("%s_%03d" % (KIND, n), KIND, attrs, tensors)
print("wrote %d %s cases" % (len(cases), KIND))
