# An independent reader written from the safetensors format description (not our Go
# code): prints each tensor's name, dtype, shape and the sum of its F32 values as JSON.
import json, struct, sys
b = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", b[:8])
header = json.loads(b[8:8 + n])
data = b[8 + n:]
out = {"__metadata__": header.pop("__metadata__", {})}
for name, e in header.items():
    lo, hi = e["data_offsets"]
    assert e["dtype"] == "F32", e
    vals = struct.unpack("<%df" % ((hi - lo) // 4), data[lo:hi])
    count = 1
    for d in e["shape"]:
        count *= d
    assert count == len(vals), (name, e["shape"], len(vals))
    out[name] = {"shape": e["shape"], "sum": sum(vals)}
print(json.dumps(out, sort_keys=True))
