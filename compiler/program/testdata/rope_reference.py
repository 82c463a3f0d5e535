"""Reference inverse frequencies and attention factors for compiler/program's rope test.

Written from transformers' modeling_rope_utils.py (ROPE_INIT_FUNCTIONS: the default,
linear, dynamic, yarn and llama3 functions, as of the v5 rope_parameters code), in plain
Python so it runs without torch: every tensor operation is rounded to float32 as torch
computes it on a float32 tensor. Run `python3 rope_reference.py > rope_reference.json`.
"""
import json
import math
import struct


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def default(base, dim):
    # 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    return [f32(1.0 / f32(base ** f32(i / dim))) for i in range(0, dim, 2)]


def linear(base, dim, factor):
    return [f32(v / factor) for v in default(base, dim)]


def dynamic(base, dim, factor, max_pos, seq_len):
    seq_len = seq_len if seq_len > max_pos else max_pos
    base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return default(base, dim)


def get_mscale(scale, mscale=1):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn(base, dim, factor, max_pos, original=None, beta_fast=None, beta_slow=None,
         mscale=None, mscale_all_dim=None, attention_factor=None, truncate=True):
    if original is not None:
        factor = max_pos / original
    else:
        original = max_pos
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = beta_fast or 32
    beta_slow = beta_slow or 1

    def correction_dim(rot):
        return (dim * math.log(original / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = [f32(base ** f32(i / dim)) for i in range(0, dim, 2)]
    extra = [f32(1.0 / p) for p in pos_freqs]
    inter = [f32(1.0 / f32(factor * p)) for p in pos_freqs]
    out = []
    for i in range(dim // 2):
        ramp = f32(min(max(f32(f32(i - low) / (high - low)), 0.0), 1.0))
        keep = f32(1 - ramp)
        out.append(f32(f32(inter[i] * f32(1 - keep)) + f32(extra[i] * keep)))
    return out, attention_factor


def llama3(base, dim, factor, low_ff, high_ff, old):
    inv = default(base, dim)
    low_wl, high_wl = old / low_ff, old / high_ff
    out = []
    for f in inv:
        wl = f32(2 * math.pi / f)
        v = f32(f / factor) if wl > low_wl else f
        smooth = f32(f32(f32(old / wl) - low_ff) / (high_ff - low_ff))
        smoothed = f32(f32(f32(f32(1 - smooth) * v) / factor) + f32(smooth * v))
        if not (wl < high_wl) and not (wl > low_wl):
            v = smoothed
        out.append(v)
    return out


def longrope(base, dim, max_pos, original, short, long, seq_len, attention_factor=None):
    factor = max_pos / original
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = long if seq_len and seq_len > original else short
    shape = [f32(i / dim) for i in range(0, dim, 2)]
    return [f32(1.0 / f32(f32(e) * f32(base ** s))) for e, s in zip(ext, shape)], attention_factor


cases = [
    {"name": "default", "type": "", "base": 10000.0, "dim": 64, "seq_len": 4096,
     "inv": default(10000.0, 64), "attention": 1.0},
    {"name": "linear", "type": "linear", "base": 10000.0, "dim": 128, "seq_len": 4096, "factor": 4.0,
     "inv": linear(10000.0, 128, 4.0), "attention": 1.0},
    {"name": "dynamic_within", "type": "dynamic", "base": 1e6, "dim": 128, "seq_len": 4096, "factor": 2.0,
     "positions": 4096, "inv": dynamic(1e6, 128, 2.0, 4096, 4096), "attention": 1.0},
    {"name": "dynamic_beyond", "type": "dynamic", "base": 1e6, "dim": 128, "seq_len": 4096, "factor": 2.0,
     "positions": 10000, "inv": dynamic(1e6, 128, 2.0, 4096, 10000), "attention": 1.0},
    {"name": "llama3.1", "type": "llama3", "base": 500000.0, "dim": 128, "seq_len": 131072, "factor": 8.0,
     "original": 8192, "low": 1.0, "high": 4.0,
     "inv": llama3(500000.0, 128, 8.0, 1.0, 4.0, 8192), "attention": 1.0},
]
# DeepSeek-V2-Lite's rope_scaling (qk_rope_head_dim 64), and a Qwen-style yarn without
# the original context (factor 4 over max_position_embeddings 32768).
inv, att = yarn(10000.0, 64, 40.0, 163840, original=4096, beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)
cases.append({"name": "yarn_deepseek_v2_lite", "type": "yarn", "base": 10000.0, "dim": 64, "seq_len": 163840,
              "factor": 40.0, "original": 4096, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707,
              "mscale_all_dim": 0.707, "inv": inv, "attention": att})
inv, att = yarn(1e6, 128, 4.0, 32768)
cases.append({"name": "yarn_qwen", "type": "yarn", "base": 1e6, "dim": 128, "seq_len": 32768, "factor": 4.0,
              "inv": inv, "attention": att})
inv, att = yarn(10000.0, 64, 16.0, 65536, original=4096, mscale=1.0, mscale_all_dim=0.5, truncate=False)
cases.append({"name": "yarn_fractional", "type": "yarn", "base": 10000.0, "dim": 64, "seq_len": 65536,
              "factor": 16.0, "original": 4096, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False,
              "inv": inv, "attention": att})
short = [1.0 + 0.05 * i for i in range(8)]
long_ = [1.0 + 0.5 * i for i in range(8)]
for name, n, att in [("longrope_short", 4096, None), ("longrope_long", 8192, 1.243163121016122)]:
    inv, a = longrope(10000.0, 16, 131072, 4096, short, long_, n, att)
    case = {"name": name, "type": "longrope", "base": 10000.0, "dim": 16, "seq_len": 131072, "original": 4096,
            "positions": n, "short": short, "long": long_, "inv": inv, "attention": a}
    if att is not None:
        case["attention_factor"] = att
    cases.append(case)

if __name__ == "__main__":
    print(json.dumps(cases, indent=1))
