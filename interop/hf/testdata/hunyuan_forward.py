# An independent forward pass of the two HunYuan MoE families, written from Tencent's
# modeling_hunyuan.py (Hunyuan-Large, model_type hunyuan: HunYuanAttention with cross-layer
# attention, HunYuanTopKGate's top1gating/topkgating, HunYuanMoE's shared_mlp beside the
# experts) and transformers' modeling_hunyuan_v1_moe.py (Hunyuan-A13B, hunyuan_v1_moe:
# HunYuanMoEV1Attention, HunYuanMoEV1Gate, HunYuanMoEV1Moe), with torch in float64, reading
# an exported folder (config.json, model.safetensors with the classes' names) with reference_io.py's
# safetensors reader. It prints the logits of the token ids given on the command line as
# JSON.
#
# What the two share: pre-norm RMSNorm layers; rotate-half rotary positions, the NTK alpha
# of rope_scaling {"type": "dynamic", "alpha": A} giving base = rope_theta ·
# A^(d/(d−2)); query_layernorm and key_layernorm per head applied after the rotation; a
# softmax router (mlp.gate.wg) over every expert; mlp.shared_mlp added to the routed
# experts' sum in every layer.
# Where they differ: Hunyuan-Large's head_dim is hidden_size / num_attention_heads; a top-1
# router (top1gating) weighs its expert by its softmax probability, a top-k one
# (topkgating) renormalises; with use_cla a layer whose index is not a multiple of
# cla_share_factor has no k_proj or v_proj and takes the unrotated key and value
# projections of the last layer that has them, which it rotates and norms with its own
# key_layernorm. Hunyuan-A13B always renormalises and has no cross-layer attention.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)

large = cfg["model_type"] == "hunyuan"
assert large or cfg["model_type"] == "hunyuan_v1_moe", cfg["model_type"]
D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = D // H if large else (cfg.get("head_dim") or D // H)
eps, T, L = cfg["rms_norm_eps"], len(ids), cfg["num_hidden_layers"]
topk = cfg["moe_topk"]
cla = large and cfg.get("use_cla", False)
factor = cfg.get("cla_share_factor", 1)

base = cfg["rope_theta"]
rs = cfg.get("rope_scaling")
if rs and rs.get("alpha"):
    assert rs["type"] == "dynamic"
    base = base * rs["alpha"] ** (hd / (hd - 2))
else:
    assert not rs, rs


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lin(x, p):
    return x @ W[p + ".weight"].T


def mlp(x, p):
    return lin(torch.nn.functional.silu(lin(x, p + "gate_proj")) * lin(x, p + "up_proj"), p + "down_proj")


inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
emb = torch.cat((freqs, freqs), dim=-1)
cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]


def rotary(x):  # apply_rotary_pos_emb with rotate_half
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
x = W["model.embed_tokens.weight"][ids]
kv_states = None
for i in range(L):
    p = "model.layers.%d." % i
    a = p + "self_attn."
    h = rms(x, W[p + "input_layernorm.weight"])
    q = lin(h, a + "q_proj").view(T, H, hd)
    if cla and i % factor != 0:  # attention_type 'cross': the owner's unrotated projections
        k, v = kv_states
    else:
        k, v = lin(h, a + "k_proj"), lin(h, a + "v_proj")
        kv_states = (k, v)
    k, v = k.view(T, KV, hd), v.view(T, KV, hd)
    q, k = rotary(q), rotary(k)
    q = rms(q, W[a + "query_layernorm.weight"])
    k = rms(k, W[a + "key_layernorm.weight"])
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    att = (torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask).softmax(-1)
    x = x + lin(torch.einsum("hts,shd->thd", att, v).reshape(T, H * hd), a + "o_proj")
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    m = p + "mlp."
    gates = lin(h, m + "gate.wg").softmax(-1)
    top, sel = gates.topk(topk, dim=-1)
    if not (large and topk == 1):  # top1gating keeps the probability; the others renormalise
        top = top / top.sum(-1, keepdim=True)
    out = mlp(h, m + "shared_mlp.")
    for t in range(T):
        for j in range(topk):
            out[t] += top[t, j] * mlp(h[t], m + "experts.%d." % int(sel[t, j]))
    x = x + out
x = rms(x, W["model.norm.weight"])
head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
print(json.dumps((x @ head.T).flatten().tolist()))
