"""Parity cases of kind op_nn (tests/fixtures/parity/FORMAT.md): layer_norm, gelu (both forms),
dropout given torch's mask, and Linear with leading dims vs torch.nn.functional.linear.

Run with Debian's PyTorch 1.13: /usr/bin/python3 scripts/parity/ops_nn.py
References are computed in float64 from float32-representable inputs (caseio.f32).
"""
import glob
import os

import torch
import torch.nn.functional as F

from caseio import FIXTURES, f32, write_case

KIND = "op_nn"
gen = torch.Generator().manual_seed(1313)
cases = []


def randn(*shape, scale=1.0):
    return f32(torch.randn(*shape, generator=gen, dtype=torch.float64) * scale)


def leaf(t):
    return t.clone().requires_grad_(True)


def grads(out, inputs):
    """Backward of sum(out * grad_output) with a random grad_output; returns it and the grads."""
    g = randn(*out.shape)
    (out * g).sum().backward()
    return g, [None if x is None else x.grad if x.grad is not None else torch.zeros_like(x) for x in inputs]


def layer_norm_case(shape, k, affine, eps=1e-5, scale=1.0):
    x = leaf(randn(*shape, scale=scale))
    ns = tuple(shape[len(shape) - k:])
    w = leaf(f32(randn(*ns) + 1.0)) if affine in ("both", "weight") else None
    b = leaf(randn(*ns)) if affine == "both" else None
    out = F.layer_norm(x, ns, w, b, eps)
    g, (gx, gw, gb) = grads(out, [x, w, b])
    t = {"input": x, "grad_output": g, "expected_output": out, "expected_grad_input": gx}
    if w is not None:
        t["weight"], t["expected_grad_weight"] = w, gw
    if b is not None:
        t["bias"], t["expected_grad_bias"] = b, gb
    cases.append(({"op": "layer_norm", "normalized_dims": k, "eps": eps}, t))


def gelu_case(shape, approximate, scale=1.0):
    x = leaf(randn(*shape, scale=scale))
    out = F.gelu(x, approximate=approximate)
    g, (gx,) = grads(out, [x])
    cases.append(({"op": "gelu", "approximate": approximate}, {"input": x, "grad_output": g, "expected_output": out,
                                                             "expected_grad_input": gx}))


def dropout_case(shape, p):
    # Inputs away from zero, so the mask is exactly where torch's output is non-zero.
    x0 = randn(*shape)
    x = leaf(f32(torch.where(x0.abs() < 0.1, x0.sign() * 0.5 + 0.1, x0)))
    torch.manual_seed(len(cases))
    out = F.dropout(x, p, training=True)
    mask = (out != 0).to(torch.int64)
    g, (gx,) = grads(out, [x])
    cases.append(({"op": "dropout", "p": p}, {"input": x, "mask": mask, "grad_output": g, "expected_output": out,
                                              "expected_grad_input": gx}))


def linear_case(lead, n_in, n_out, bias):
    x = leaf(randn(*lead, n_in))
    w = leaf(randn(n_out, n_in))
    b = leaf(randn(n_out)) if bias else None
    out = F.linear(x, w, b)
    g, (gx, gw, gb) = grads(out, [x, w, b])
    t = {"input": x, "weight": w, "grad_output": g, "expected_output": out, "expected_grad_input": gx,
         "expected_grad_weight": gw}
    if b is not None:
        t["bias"], t["expected_grad_bias"] = b, gb
    cases.append(({"op": "linear"}, t))


layer_norm_case((4, 5), 1, "both")
layer_norm_case((2, 3, 4), 2, "both")
layer_norm_case((3, 4), 2, "weight")
layer_norm_case((2, 1, 3), 1, "none")
layer_norm_case((5, 1), 1, "both")          # one element per row: var = 0, the output is the bias
layer_norm_case((2, 2, 3), 3, "none", eps=1e-2)
layer_norm_case((3, 6), 1, "both", scale=100.0)
layer_norm_case((0, 3), 1, "both")          # no rows
layer_norm_case((6,), 1, "none")
for approximate in ("none", "tanh"):
    gelu_case((7,), approximate)
    gelu_case((3, 4), approximate, scale=3.0)
    gelu_case((2, 1, 3), approximate)
    gelu_case((0, 2), approximate)
for shape, p in (((4, 5), 0.2), ((3, 8), 0.5), ((2, 3, 4), 0.9), ((6,), 0.0), ((2, 3), 1.0)):
    dropout_case(shape, p)
linear_case((), 3, 2, True)                 # 1-D input
linear_case((4,), 3, 5, True)
linear_case((2, 3), 4, 2, True)
linear_case((2, 1, 3), 5, 3, False)
linear_case((2, 0), 3, 2, True)             # an empty leading dim

for old in glob.glob(os.path.join(FIXTURES, KIND + "_*.case")):
    os.remove(old)
for i, (attrs, tensors) in enumerate(cases):
    write_case("%s_%03d" % (KIND, i), KIND, attrs, tensors)
print("wrote %d cases" % len(cases))
