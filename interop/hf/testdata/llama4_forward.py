# An independent forward pass of Llama 4's language model, written from transformers'
# modeling_llama4.py (Llama4TextAttention with rotary and position-free layers, chunked
# attention, Llama4TextL2Norm q/k norms and attn_temperature_tuning; Llama4TextMoe with
# Llama4Router's sigmoid top-k scores multiplying the experts' input beside a shared expert;
# Llama4TextMLP dense layers) with torch, reading a moec-layout export (moec_config.json,
# model.safetensors with moec's tensor names) with its own safetensors reader. Rotary pairs
# are moec's (dimension i with i + head_dim/2): Llama 4's checkpoints pair adjacent
# dimensions, which an import permutes the q/k rows into, as transformers' Llama
# conversion does; no other step depends on the order within a head. It prints the logits
# of the token ids given on the command line as JSON.
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
nope_every, chunk = att.get("NopeEvery", 0), att.get("ChunkSize", 0)
qk_l2, attn_scale, floor_scale = att.get("QKL2Norm", False), att.get("NopeTemperature", 0), att.get("NopeTemperatureFloor", 1)
k_, every = moe["TopK"], max(moe.get("Every", 1), 1)


def rms(x, w=None):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else w * y


def lin(x, p):
    return x @ W[p + ".weight"].T


def mlp(x, p, gate, up, down):
    return lin(torch.nn.functional.silu(lin(x, p + gate)) * lin(x, p + up), p + down)


inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]


def rotary(x):
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


pos = torch.arange(T, dtype=torch.float64)
i_, j_ = torch.arange(T)[:, None], torch.arange(T)[None, :]
x = W["model.embed_tokens.weight"][ids]
for i in range(cfg["Layers"]):
    p = "model.layers.%d." % i
    use_rope = nope_every == 0 or (i + 1) % nope_every != 0
    h = rms(x, W[p + "input_layernorm.weight"])
    q = lin(h, p + "self_attn.q_proj").view(T, H, hd)
    k = lin(h, p + "self_attn.k_proj").view(T, KV, hd)
    v = lin(h, p + "self_attn.v_proj").view(T, KV, hd)
    if use_rope:
        q, k = rotary(q), rotary(k)
        if qk_l2:  # Llama4TextL2Norm: created only for rotary layers
            q, k = rms(q), rms(k)
    elif attn_scale:
        scales = torch.log(torch.floor((pos + 1.0) / floor_scale) + 1.0) * attn_scale + 1.0
        q = q * scales.view(T, 1, 1)
    allowed = j_ <= i_
    if use_rope and chunk:  # chunked attention in the rotary layers
        allowed = allowed & (i_ // chunk == j_ // chunk)
    mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    a = (torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask).softmax(-1)
    x = x + lin(torch.einsum("hts,shd->thd", a, v).reshape(T, H * hd), p + "self_attn.o_proj")
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    if (i + 1) % every != 0:
        x = x + mlp(h, p + "mlp.", "gate_proj", "up_proj", "down_proj")
        continue
    bp = p + "block_sparse_moe."
    # Llama4Router: the top-k logits, every other -inf, through a sigmoid.
    logits = lin(h, bp + "gate")
    top, sel = logits.topk(k_, dim=-1)
    scores = torch.full_like(logits, float("-inf")).scatter_(1, sel, top).sigmoid()
    out = mlp(h, bp + "shared_experts.0.", "w1", "w3", "w2")
    for e in range(scores.shape[1]):  # Llama4TextMoe: every expert on its scaled input
        out = out + mlp(h * scores[:, e:e + 1], bp + "experts.%d." % e, "w1", "w3", "w2")
    x = x + out
x = rms(x, W["model.norm.weight"])
print(json.dumps((x @ W["lm_head.weight"].T).flatten().tolist()))
