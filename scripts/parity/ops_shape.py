"""PyTorch 1.13 reference cases for hitch's shape and indexing ops (kind `op_shape`).

Writes tests/fixtures/parity/op_shape_NNN.case (format: tests/fixtures/parity/FORMAT.md, section
"kind op_shape"), read by tests/test_parity_shape.cpp. Each case runs one op in float64 on
float32-representable inputs and records the output and the gradient of every input for the loss
sum(out * grad_output). Run with Debian's PyTorch: /usr/bin/python3 scripts/parity/ops_shape.py
"""
import glob
import os

import torch

from caseio import FIXTURES, f32, write_case

gen = torch.Generator().manual_seed(13)


def randn(*shape):
    shape = tuple(int(s) for s in shape)
    return f32(torch.randn(shape, generator=gen, dtype=torch.float32))


def idx(values, shape=None):
    t = torch.tensor(values, dtype=torch.int64)
    return t.reshape(shape) if shape is not None else t


def run(op, inputs, index, attrs):
    """The op in torch, as hitch's declaration in ops/ops.h describes it."""
    dim = attrs.get("dim")
    if op == "cat":
        return torch.cat(inputs, dim)
    if op == "stack":
        return torch.stack(inputs, dim)
    a = inputs[0]
    if op == "index_select":
        return torch.index_select(a, dim, index)
    if op == "gather":
        return torch.gather(a, dim, index)
    if op == "narrow":
        return torch.narrow(a, dim, attrs["start"], attrs["length"])
    if op == "slice":
        key = [slice(None)] * a.dim()
        key[dim] = slice(attrs["start"], attrs["end"], attrs["step"])
        return a[tuple(key)]
    if op == "select":
        return torch.select(a, dim, attrs["index"])
    if op == "unsqueeze":
        return torch.unsqueeze(a, dim)
    if op == "squeeze":
        return torch.squeeze(a) if dim is None else torch.squeeze(a, dim)
    if op == "expand":
        return a.expand(*[int(s) for s in attrs["shape"].split(",")])
    raise ValueError(op)


# (op, input shapes, index or None, attrs)
CASES = [
    ("cat", [[2, 3], [4, 3]], None, {"dim": 0}),
    ("cat", [[2, 3], [2, 1], [2, 2]], None, {"dim": -1}),
    ("cat", [[2, 0, 3], [2, 2, 3]], None, {"dim": 1}),
    ("cat", [[3, 2]], None, {"dim": 1}),
    ("cat", [[2, 1, 3], [2, 1, 3]], None, {"dim": -2}),
    ("stack", [[2, 3], [2, 3]], None, {"dim": 0}),
    ("stack", [[2, 3], [2, 3], [2, 3]], None, {"dim": 2}),
    ("stack", [[3], [3]], None, {"dim": -1}),
    ("stack", [[], []], None, {"dim": 0}),
    ("index_select", [[4, 3]], idx([3, 0, 3, 1]), {"dim": 0}),
    ("index_select", [[2, 5]], idx([4, 4, 0]), {"dim": -1}),
    ("index_select", [[2, 3, 4]], idx([2, 2, 2, 0, 1]), {"dim": 1}),
    ("index_select", [[3, 2]], idx([], [0]), {"dim": 0}),
    ("gather", [[3, 4]], idx([2, 0, 1, 1, 0, 0, 2, 1], [2, 4]), {"dim": 0}),
    ("gather", [[3, 4]], idx([3, 3, 0, 1, 2, 3, 0, 0, 0, 1, 1, 2, 1, 3, 3, 3, 3, 3], [3, 6]), {"dim": 1}),
    ("gather", [[2, 3, 4]], idx([3, 0, 1, 1, 2, 2, 0, 3, 3, 0, 0, 0], [2, 2, 3]), {"dim": -1}),
    ("gather", [[2, 3, 4]], idx([2, 0, 1, 1, 2, 2, 0, 0, 1, 2], [1, 5, 2]), {"dim": 1}),
    ("narrow", [[4, 3]], None, {"dim": 0, "start": 1, "length": 2}),
    ("narrow", [[2, 5]], None, {"dim": -1, "start": -3, "length": 3}),
    ("narrow", [[2, 5]], None, {"dim": 1, "start": 5, "length": 0}),
    ("slice", [[2, 7]], None, {"dim": 1, "start": 1, "end": 6, "step": 2}),
    ("slice", [[5, 2]], None, {"dim": 0, "start": -3, "end": 100, "step": 1}),
    ("slice", [[2, 3, 8]], None, {"dim": -1, "start": -100, "end": -1, "step": 3}),
    ("slice", [[2, 4]], None, {"dim": 1, "start": 3, "end": 1, "step": 1}),
    ("select", [[3, 4]], None, {"dim": 0, "index": 2}),
    ("select", [[2, 3, 4]], None, {"dim": -2, "index": -1}),
    ("unsqueeze", [[2, 3]], None, {"dim": -1}),
    ("unsqueeze", [[]], None, {"dim": 0}),
    ("squeeze", [[2, 1, 3, 1]], None, {"dim": None}),
    ("squeeze", [[2, 1, 3]], None, {"dim": 1}),
    ("squeeze", [[2, 3]], None, {"dim": 0}),
    ("expand", [[3]], None, {"shape": "2,3"}),
    ("expand", [[2, 1]], None, {"shape": "4,-1,3"}),
    ("expand", [[1, 3, 1]], None, {"shape": "2,-1,3,2"}),
    ("expand", [[]], None, {"shape": "3,2"}),
]


def main():
    for old in glob.glob(os.path.join(FIXTURES, "op_shape_*.case")):
        os.remove(old)
    for n, (op, shapes, index, attrs) in enumerate(CASES):
        inputs = [randn(*s).requires_grad_() for s in shapes]
        out = run(op, inputs, index, attrs)
        grad_output = randn(*out.shape)
        (out * grad_output).sum().backward()
        tensors = {"input%d" % i: x for i, x in enumerate(inputs)}
        if index is not None:
            tensors["index"] = index
        tensors["grad_output"] = grad_output
        tensors["expected_output"] = out
        for i, x in enumerate(inputs):
            tensors["expected_grad_input%d" % i] = x.grad if x.grad is not None else torch.zeros_like(x)
        write_case("op_shape_%03d" % n, "op_shape", dict(op=op, num_inputs=len(shapes), **attrs), tensors)
    print("wrote %d cases" % len(CASES))


if __name__ == "__main__":
    main()
