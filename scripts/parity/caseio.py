"""Writes parity cases in the format of tests/fixtures/parity/FORMAT.md (shared by the fixture scripts).

Each generator script (scripts/parity/ops_*.py) builds its inputs from a seeded torch.Generator,
computes the reference in float64 from float32-representable values, and writes one `.case` file
per case with `write_case`. Run with Debian's PyTorch 1.13 (`/usr/bin/python3`, python3-torch);
the build and CI only read the committed files.
"""
import os

import torch

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "parity")


def f32(t):
    """Rounds to float32 and back to float64: the inputs hitch reads are exactly these values."""
    return t.detach().to(torch.float32).to(torch.float64)


def _values(t):
    flat = t.detach().reshape(-1).tolist()
    if t.dtype in (torch.int64, torch.int32, torch.bool):
        return " ".join(str(int(v)) for v in flat)
    # tests/parity.cpp reads with operator>>, which does not parse inf or nan: keep cases finite.
    assert all(abs(v) < float("inf") for v in flat), "non-finite value in a parity case"
    return " ".join("%.9g" % v for v in flat)


def write_case(name, kind, attrs, tensors, folder=FIXTURES):
    """attrs: dict of str -> int/float/str/None (None is written `none`); tensors: dict of
    name -> torch tensor (int64 / bool become i64, anything else f32), written in insertion order."""
    lines = ["case " + name, "kind " + kind]
    for k, v in attrs.items():
        if v is None:
            v = "none"
        elif isinstance(v, bool):
            v = int(v)
        lines.append("attr %s %s" % (k, v))
    for k, t in tensors.items():
        t = t.detach()
        dtype = "i64" if t.dtype in (torch.int64, torch.int32, torch.bool) else "f32"
        dims = " ".join(str(d) for d in t.shape)
        lines.append(("tensor %s %s %d %s" % (k, dtype, t.dim(), dims)).rstrip())
        lines.append(_values(t))
    lines.append("end")
    with open(os.path.join(folder, name + ".case"), "w") as f:
        f.write("\n".join(lines) + "\n")
