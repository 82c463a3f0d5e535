# What the reference forward scripts (*_forward.py) share: their command line (an exported
# folder and comma-separated token ids) and their own safetensors reader, which takes every
# tensor of model.safetensors as float32 and widens it to float64 torch tensors. Each script
# imports it from its own folder.
import json, struct

import torch


def read_safetensors(path, f32_only=False):
    """Returns {name: float64 tensor} of a safetensors file of float32 tensors; f32_only:
    asserts that every tensor is stored as F32."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    W = {}
    for name, e in header.items():
        if f32_only:
            assert e["dtype"] == "F32", (name, e["dtype"])
        lo, hi = e["data_offsets"]
        W[name] = torch.frombuffer(bytearray(data[lo:hi]), dtype=torch.float32).reshape(e["shape"]).double()
    return W


def load(argv, f32_only=False):
    """Returns the folder, the token ids, config.json and the weights named by a script's
    command line: argv[1] the exported folder, argv[2] the comma-separated ids."""
    folder, ids = argv[1], [int(t) for t in argv[2].split(",")]
    cfg = json.load(open(folder + "/config.json"))
    return folder, ids, cfg, read_safetensors(folder + "/model.safetensors", f32_only)
