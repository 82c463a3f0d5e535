"""Writes float8.json: the float32 bit pattern of every byte value read as torch's
float8_e4m3fn and float8_e5m2, the fixture TestFloat8MatchesTorch checks the decoders
against. Run once with a PyPI torch: python float8.py > float8.json"""

import json
import sys

import torch

codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
out = {"torch": torch.__version__}
for name, dtype in (("e4m3fn", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
    values = codes.view(dtype).to(torch.float32)
    out[name] = ["%08x" % b for b in values.view(torch.int32).tolist() for b in [b & 0xFFFFFFFF]]
json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
