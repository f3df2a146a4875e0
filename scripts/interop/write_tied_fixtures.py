#!/usr/bin/python3
"""Write the tied-model safetensors files other tools produce, for tests/test_checkpoint_interop.cpp.

The model is a tiny tied language model as PyTorch would name it: an embedding `emb.weight`
[5, 3] that is also the output projection `head.weight` (one Parameter), and `head.bias` [5].
Each file is one layout a tool writes for such a model (docs/checkpoints.md, "Layouts"):

  save_model.safetensors    safetensors.torch.save_model: the tied name removed, the metadata
                            maps it to the kept one ({"head.weight": "emb.weight"}; save_model
                            keeps the alphabetically first complete name and adds nothing else)
  transformers.safetensors  transformers' save_pretrained: the tied name (its _tied_weights_keys)
                            simply absent, metadata {"format": "pt"}
  both_equal.safetensors    PyTorch's own state_dict, written tensor by tensor: both names stored,
                            bitwise equal
  both_differ.safetensors   the same with head.weight[1, 1] changed: a file hitch must refuse

The format follows the safetensors specification: an 8-byte little-endian header length, a JSON
header (tensor name -> dtype, shape, data_offsets; optional "__metadata__" of strings) padded
with spaces to a multiple of 8, then the data, little-endian, row-major, tensors back to back in
header order. Only NumPy and json: run it with Debian's /usr/bin/python3 (python3-numpy).

    /usr/bin/python3 scripts/interop/write_tied_fixtures.py tests/fixtures/interop
"""
import json
import os
import struct
import sys

import numpy as np

# The values the C++ test recomputes: emb[i, j] = (3 i + j - 7) / 4, bias as listed.
EMB = ((np.arange(15, dtype=np.float32) - 7) / 4).reshape(5, 3)
BIAS = np.array([0.5, -0.25, 0.125, 1.0, -2.0], dtype=np.float32)


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, float32 array) in file order; metadata: dict of str -> str."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, array in tensors:
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts at a multiple of 8
    return struct.pack("<Q", len(text)) + text + data


def main(folder):
    os.makedirs(folder, exist_ok=True)
    differ = EMB.copy()
    differ[1, 1] += 0.5
    files = {
        "save_model.safetensors": ([("emb.weight", EMB), ("head.bias", BIAS)], {"head.weight": "emb.weight"}),
        "transformers.safetensors": ([("emb.weight", EMB), ("head.bias", BIAS)], {"format": "pt"}),
        "both_equal.safetensors": ([("emb.weight", EMB), ("head.bias", BIAS), ("head.weight", EMB.copy())], None),
        "both_differ.safetensors": ([("emb.weight", EMB), ("head.bias", BIAS), ("head.weight", differ)], None),
    }
    for name, (tensors, metadata) in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(safetensors_bytes(tensors, metadata))
        print(name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../tests/fixtures/interop"))
