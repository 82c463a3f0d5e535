# An independent forward pass of DBRX and Phi-3.5-MoE, written from transformers'
# modeling_dbrx.py and modeling_phimoe.py with torch, reading an exported DbrxForCausalLM or
# PhimoeForCausalLM folder (config.json, model.safetensors with transformers' names) with
# reference_io.py's safetensors reader. It prints the logits of the token ids given on the command
# line as JSON.
#
# DBRX: LayerNorms without biases (eps 1e-5), the fused Wqkv clamped to ±clip_qkv and split
# into queries, keys and values, rotate-half rotary positions, DbrxRouter's softmax top-k
# divided by its p-norm (moe_normalize_expert_weights, none when null), DbrxExpertGLU's
# stacked w1, v1 (x·wᵀ) and w2 (h·w).
# Phi-3.5-MoE: LayerNorms with biases (eps rms_norm_eps), biased attention projections
# (attention_bias) and head (lm_head_bias), PhimoeRotaryEmbedding's longrope (the short
# factors, cos and sin times short_mscale, or long_mscale past the pretrained context), and
# sparsemixer in eval mode over Mixtral's experts.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)
T = len(ids)
silu = torch.nn.functional.silu


def layer_norm(x, p, eps):
    b = W.get(p + ".bias")
    return torch.nn.functional.layer_norm(x, x.shape[-1:], W[p + ".weight"], b, eps)


def lin(x, p):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if p + ".bias" in W else y


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention(q, k, v, H, KV, hd, cos, sin):
    q, k, v = q.view(T, H, hd), k.view(T, KV, hd), v.view(T, KV, hd)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    a = (torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask).softmax(-1)
    return torch.einsum("hts,shd->thd", a, v).reshape(T, H * hd)


def rope(hd, base, factors=None, mscale=1.0):
    ext = torch.ones(hd // 2, dtype=torch.float32) if factors is None else torch.tensor(factors, dtype=torch.float32)
    inv = 1.0 / (ext * base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    return (emb.cos() * mscale)[:, None, :], (emb.sin() * mscale)[:, None, :]


def sparsemixer(scores, eps):
    # transformers' sparsemixer with training=False, top_k=2.
    threshold, max_ind = scores.max(dim=-1, keepdim=True)
    factor = scores.abs().clamp(min=threshold)
    mask = ((threshold - scores) / factor) > (2 * eps)
    gates = scores.masked_fill(mask, float("-inf")).softmax(-1)
    first, mult1 = max_ind, gates.gather(-1, max_ind)
    masked = torch.scatter(scores, -1, first, float("-inf"))
    threshold, max_ind = masked.max(dim=-1, keepdim=True)
    factor = scores.abs().clamp(min=threshold)
    mask = ((threshold - scores) / factor) > (2 * eps)
    gates = masked.masked_fill(mask, float("-inf")).softmax(-1)
    return torch.cat((mult1, gates.gather(-1, max_ind)), -1), torch.cat((first, max_ind), -1)


def dbrx():
    a, f = cfg["attn_config"], cfg["ffn_config"]
    D, H, KV = cfg["d_model"], cfg["n_heads"], a["kv_n_heads"]
    hd = D // H
    base = cfg.get("rope_parameters", {}).get("rope_theta", a.get("rope_theta", 10000.0))
    cos, sin = rope(hd, base)
    E, I, K, p = f["moe_num_experts"], f["ffn_hidden_size"], f["moe_top_k"], f.get("moe_normalize_expert_weights", 1.0)
    x = W["transformer.wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        b = "transformer.blocks.%d." % i
        h = layer_norm(x, b + "norm_attn_norm.norm_1", 1e-5)
        qkv = lin(h, b + "norm_attn_norm.attn.Wqkv")
        if a.get("clip_qkv") is not None:
            qkv = qkv.clamp(min=-a["clip_qkv"], max=a["clip_qkv"])
        q, k, v = qkv.split([D, KV * hd, KV * hd], dim=-1)
        x = x + lin(attention(q, k, v, H, KV, hd, cos, sin), b + "norm_attn_norm.attn.out_proj")
        h = layer_norm(x, b + "norm_attn_norm.norm_2", 1e-5)
        weights, index = lin(h, b + "ffn.router.layer").softmax(-1).topk(K, dim=-1)
        if p is not None:
            weights = weights / torch.norm(weights, p=p, dim=-1, keepdim=True)
        w1, v1, w2 = (W[b + "ffn.experts.mlp." + n].view(E, I, D) for n in ("w1", "v1", "w2"))
        out = torch.zeros_like(x)
        for t in range(T):
            for j in range(K):
                e = int(index[t, j])
                out[t] += weights[t, j] * ((silu(h[t] @ w1[e].T) * (h[t] @ v1[e].T)) @ w2[e])
        x = x + out
    x = layer_norm(x, "transformer.norm_f", 1e-5)
    return x @ W["lm_head.weight"].T


def phimoe():
    D, H, KV, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    hd = D // H
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    base = cfg.get("rope_theta") or (rs or {}).get("rope_theta", 10000.0)
    if rs and rs.get("rope_type", rs.get("type")) == "longrope":
        orig = rs.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
        mscale = rs["long_mscale"] if T > orig else rs["short_mscale"]
        cos, sin = rope(hd, base, rs["short_factor"], mscale)
    else:
        cos, sin = rope(hd, base)
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = layer_norm(x, p + "input_layernorm", eps)
        q, k, v = (lin(h, p + "self_attn.%s_proj" % n) for n in "qkv")
        x = x + lin(attention(q, k, v, H, KV, hd, cos, sin), p + "self_attn.o_proj")
        h = layer_norm(x, p + "post_attention_layernorm", eps)
        m = p + "block_sparse_moe."
        mult, index = sparsemixer(lin(h, m + "gate"), cfg["router_jitter_noise"])
        out = torch.zeros_like(x)
        for t in range(T):
            for j in range(2):
                e = m + "experts.%d." % int(index[t, j])
                out[t] += mult[t, j] * lin(silu(lin(h[t], e + "w1")) * lin(h[t], e + "w3"), e + "w2")
        x = x + out
    x = layer_norm(x, "model.norm", eps)
    return lin(x, "lm_head")


forward = {"dbrx": dbrx, "phimoe": phimoe}[cfg["model_type"]]
print(json.dumps(forward().flatten().tolist()))
