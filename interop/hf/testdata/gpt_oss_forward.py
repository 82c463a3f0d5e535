# An independent forward pass of gpt-oss, written from transformers' modeling_gpt_oss.py
# (GptOssAttention with sinks and sliding windows, GptOssTopKRouter, GptOssExperts with
# the clamped SwiGLU) with torch, reading a moec-layout export (moec_config.json,
# model.safetensors with moec's tensor names: w1 is the gate half of gate_up_proj, w3 the
# up half, w2 down_proj) with its own safetensors reader. Plain rotary positions (no
# scaling). It prints the logits of the token ids given on the command line as JSON.
import json, math, struct, sys
import torch

folder, ids = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
cfg = json.load(open(folder + "/moec_config.json"))
raw = open(folder + "/model.safetensors", "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
header.pop("__metadata__", None)
data = raw[8 + n:]
W = {}
for name, e in header.items():
    lo, hi = e["data_offsets"]
    W[name] = torch.frombuffer(bytearray(data[lo:hi]), dtype=torch.float32).reshape(e["shape"]).double()

att, moe = cfg["Attention"], cfg["MoE"]
D, H, KV, hd = cfg["DModel"], att["Heads"], att["KVHeads"], att["HeadDim"]
eps, base, T = cfg["NormEps"], cfg["RopeBase"], len(ids)
window, full_every = att["Window"], att.get("FullEvery", 0)
limit, alpha, k_ = moe["SwigluLimit"], moe["SwigluAlpha"], moe["TopK"]


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lin(x, p):
    return x @ W[p + ".weight"].T + W[p + ".bias"]


inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]


def rotary(x):  # _apply_rotary_emb: first half and second half
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def expert(x, p):  # GptOssExperts for one expert
    gate, up = lin(x, p + "w1"), lin(x, p + "w3")
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    glu = gate * torch.sigmoid(gate * alpha)
    return lin((up + 1) * glu, p + "w2")


x = W["model.embed_tokens.weight"][ids]
i_, j_ = torch.arange(T)[:, None], torch.arange(T)[None, :]
for i in range(cfg["Layers"]):
    p = "model.layers.%d." % i
    sliding = window > 0 and not (full_every > 0 and (i + 1) % full_every == 0)
    allowed = (j_ <= i_) & ((i_ - j_ < window) if sliding else True)
    mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    h = rms(x, W[p + "input_layernorm.weight"])
    q = rotary(lin(h, p + "self_attn.q_proj").view(T, H, hd))
    k = rotary(lin(h, p + "self_attn.k_proj").view(T, KV, hd))
    v = lin(h, p + "self_attn.v_proj").view(T, KV, hd)
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    logits = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
    sinks = W[p + "self_attn.sinks"].reshape(H, 1, 1).expand(H, T, 1)
    combined = torch.cat([logits, sinks], dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    probs = combined.softmax(-1)[..., :-1]
    o = torch.einsum("hts,shd->thd", probs, v).reshape(T, H * hd)
    x = x + lin(o, p + "self_attn.o_proj")
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    # GptOssTopKRouter: the top-k logits, softmaxed among themselves.
    top, sel = lin(h, p + "block_sparse_moe.gate").topk(k_, dim=-1)
    wts = top.softmax(-1)
    out = torch.zeros_like(h)
    for t in range(T):
        for j in range(k_):
            out[t] += wts[t, j] * expert(h[t], p + "block_sparse_moe.experts.%d." % int(sel[t, j]))
    x = x + out
x = rms(x, W["model.norm.weight"])
print(json.dumps((x @ W["lm_head.weight"].T).flatten().tolist()))
