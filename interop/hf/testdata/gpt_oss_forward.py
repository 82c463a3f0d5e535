# An independent forward pass of gpt-oss, written from transformers' modeling_gpt_oss.py
# (GptOssAttention with sinks and sliding windows, GptOssTopKRouter, GptOssExperts with
# the clamped SwiGLU over the fused gate_up_proj, gate and up interleaved) with torch,
# reading an exported GptOssForCausalLM folder (config.json, model.safetensors with
# transformers' names) with reference_io.py's safetensors reader. Plain rotary positions (no
# scaling). It prints the logits of the token ids given on the command line as JSON.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)

assert cfg["model_type"] == "gpt_oss", cfg["model_type"]
D, H, KV, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
rope = cfg["rope_parameters"]
assert rope["rope_type"] == "default", rope  # the tiny model rotates by the plain frequencies
eps, base, T = cfg["rms_norm_eps"], rope["rope_theta"], len(ids)
window, layer_types = cfg["sliding_window"], cfg["layer_types"]
limit, alpha, k_ = cfg["swiglu_limit"], cfg["swiglu_alpha"], cfg["num_experts_per_tok"]


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


def expert(x, p, e):  # GptOssExperts for expert e: x·W, gate and up interleaved
    gate_up = x @ W[p + "gate_up_proj"][e] + W[p + "gate_up_proj_bias"][e]
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    glu = gate * torch.sigmoid(gate * alpha)
    return ((up + 1) * glu) @ W[p + "down_proj"][e] + W[p + "down_proj_bias"][e]


x = W["model.embed_tokens.weight"][ids]
i_, j_ = torch.arange(T)[:, None], torch.arange(T)[None, :]
for i in range(cfg["num_hidden_layers"]):
    p = "model.layers.%d." % i
    sliding = layer_types[i] == "sliding_attention"
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
    top, sel = lin(h, p + "mlp.router").topk(k_, dim=-1)
    wts = top.softmax(-1)
    out = torch.zeros_like(h)
    for t in range(T):
        for j in range(k_):
            out[t] += wts[t, j] * expert(h[t], p + "mlp.experts.", int(sel[t, j]))
    x = x + out
x = rms(x, W["model.norm.weight"])
print(json.dumps((x @ W["lm_head.weight"].T).flatten().tolist()))
