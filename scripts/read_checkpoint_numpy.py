#!/usr/bin/env python3
"""Read a hitch checkpoint (a safetensors file) with NumPy alone, and optionally check it.

    read_checkpoint_numpy.py FILE                 list the tensors, the ties and the metadata
    read_checkpoint_numpy.py FILE --expect J      also check them against J, a JSON file:
        {"tensors": {name: {"shape": [...], "values": [flat values]}}, "ties": {other: first}}

load(FILE) is the part to copy: it needs only json, struct and numpy (no safetensors package),
and returns the module's Parameters by every name, a tied Parameter's names sharing ONE array.
Exit codes: 0 good, 1 a mismatch or a bad file, 77 NumPy is not installed (ctest: skipped).
"""
import argparse
import json
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("SKIPPED: NumPy is not installed (Debian: python3-numpy)")
    sys.exit(77)

DTYPES = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2", "I32": "<i4",
          "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8"}
TIE_PREFIX = "hitch.tie."


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"the header has the key {k!r} twice")
    return dict(pairs)


def load(path):
    """Returns (tensors by stored name, metadata, ties {other name: first name})."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    metadata = header.pop("__metadata__", {})
    start = 8 + n
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(DTYPES[info["dtype"]])
        count = (end - begin) // dtype.itemsize
        tensors[name] = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin).reshape(info["shape"])
    ties = {k[len(TIE_PREFIX):]: v for k, v in metadata.items() if k.startswith(TIE_PREFIX)}
    return tensors, metadata, ties


def parameters(tensors, ties):
    """The module's Parameters under every name; tied names are the same array object."""
    params = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "generator."))}
    for other, first in ties.items():
        params[other] = params[first]
    return params


def check(tensors, ties, expected):
    problems = []
    for name, want in expected["tensors"].items():
        if name not in tensors:
            problems.append(f"{name}: missing")
            continue
        got = tensors[name]
        values = np.array(want["values"], dtype=got.dtype).reshape(want["shape"])
        if list(got.shape) != want["shape"]:
            problems.append(f"{name}: shape {list(got.shape)}, expected {want['shape']}")
        elif not np.array_equal(got, values):
            problems.append(f"{name}: values differ, max |diff| {np.max(np.abs(got - values))}")
    if ties != expected.get("ties", {}):
        problems.append(f"ties {ties}, expected {expected.get('ties', {})}")
    params = parameters(tensors, ties)
    for other, first in ties.items():
        if params[other] is not params[first]:
            problems.append(f"{other} and {first} are not one array")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--expect", help="JSON file of expected tensors and ties")
    args = parser.parse_args()
    tensors, metadata, ties = load(args.file)
    for name, t in tensors.items():
        print(f"{name}: {t.dtype} {list(t.shape)}")
    for other, first in ties.items():
        print(f"tie: {other} -> {first}")
    if args.expect:
        with open(args.expect) as f:
            expected = json.load(f)
        problems = check(tensors, ties, expected)
        for p in problems:
            print("MISMATCH:", p)
        if problems:
            return 1
        print(f"numpy: {len(expected['tensors'])} tensors and {len(ties)} tie(s) match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
