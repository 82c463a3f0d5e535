# An independent forward pass of the transformers classes moec exports to (Llama, Qwen3,
# Mixtral, Qwen3-MoE, OLMoE, Qwen2-MoE), written from transformers' modeling code with torch,
# and of Snowflake Arctic, written from its published modeling_arctic.py (remote code),
# reading an exported folder (config.json, model.safetensors) with reference_io.py's safetensors reader. It
# prints the logits of the token ids given on the command line as JSON.
#
# transformers itself is not needed; where it is installed, the test also loads the folder
# with AutoModelForCausalLM (see hf_transformers.py).
import json, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv, f32_only=True)

mt = cfg["model_type"]
D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
# OlmoeAttention and Qwen2MoeAttention take head_dim as hidden_size // num_attention_heads.
hd = D // H if mt in ("olmoe", "qwen2_moe") else cfg.get("head_dim") or D // H
eps, base = cfg["rms_norm_eps"], cfg["rope_theta"]
T = len(ids)


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
emb = torch.cat((freqs, freqs), dim=-1)
cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]


def lin(x, p):
    y = x @ W[p + ".weight"].T
    if p + ".bias" in W:
        y = y + W[p + ".bias"]
    return y


def mlp(x, p, gate, up, down):
    return lin(torch.nn.functional.silu(lin(x, p + gate)) * lin(x, p + up), p + down)


def routed(h, router, ep, names, k_, norm):
    # A softmax over all experts, then the top k, renormalised only where the class does.
    probs = lin(h, router).softmax(-1)
    wts, sel = probs.topk(k_, dim=-1)
    if norm:
        wts = wts / wts.sum(-1, keepdim=True)
    out = torch.zeros_like(h)
    for t in range(T):
        for j in range(k_):
            e = int(sel[t, j])
            out[t] += wts[t, j] * mlp(h[t], ep + "%d." % e, *names)
    return out


x = W["model.embed_tokens.weight"][ids]
mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
for i in range(cfg["num_hidden_layers"]):
    p = "model.layers.%d." % i
    x_in = x
    h = rms(x, W[p + "input_layernorm.weight"])
    q, k, v = lin(h, p + "self_attn.q_proj"), lin(h, p + "self_attn.k_proj"), lin(h, p + "self_attn.v_proj")
    if mt == "olmoe":
        # OlmoeAttention: q_norm over hidden_size and k_norm over kv_heads * head_dim, on
        # the whole projections, before they are split into heads.
        q, k = rms(q, W[p + "self_attn.q_norm.weight"]), rms(k, W[p + "self_attn.k_norm.weight"])
        if cfg.get("clip_qkv") is not None:  # then clamped, q, k and v alike
            c = cfg["clip_qkv"]
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
    q, k, v = q.view(T, H, hd), k.view(T, KV, hd), v.view(T, KV, hd)
    if mt in ("qwen3", "qwen3_moe"):
        # Qwen3Attention: q_norm and k_norm over head_dim, per head.
        q, k = rms(q, W[p + "self_attn.q_norm.weight"]), rms(k, W[p + "self_attn.k_norm.weight"])
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    att = torch.einsum("thd,shd->hts", q, k) / hd ** 0.5 + mask
    o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, H * hd)
    x = x + lin(o, p + "self_attn.o_proj")
    if mt == "arctic":
        # ArcticDecoderLayer: MoE where (i + 1) % moe_layer_frequency == 0, else
        # block_sparse_moe.mlp. With parallel_attn_mlp_res the experts read
        # post_attention_layernorm(layer input), and residual_mlp(residual_layernorm(x))
        # joins after attention.
        bp = p + "block_sparse_moe."
        if (i + 1) % cfg["moe_layer_frequency"] != 0:
            x = x + mlp(rms(x, W[p + "post_attention_layernorm.weight"]), bp + "mlp.", "w1", "w3", "w2")
            continue
        par = cfg["parallel_attn_mlp_res"]
        h = rms(x_in if par else x, W[p + "post_attention_layernorm.weight"])
        if par:
            x = x + mlp(rms(x, W[p + "residual_layernorm.weight"]), p + "residual_mlp.", "w1", "w3", "w2")
        x = x + routed(h, bp + "gate", bp + "experts.", ("w1", "w3", "w2"), cfg["num_experts_per_tok"], True)
        continue
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    if mt in ("mixtral", "olmoe"):
        moe = True  # every layer is sparse
    elif mt in ("qwen3_moe", "qwen2_moe"):
        moe = i not in cfg["mlp_only_layers"] and (i + 1) % cfg["decoder_sparse_step"] == 0
    else:
        moe = False
    if not moe:
        x = x + mlp(h, p + "mlp.", "gate_proj", "up_proj", "down_proj")
        continue
    k_ = cfg["num_experts_per_tok"]
    if mt == "mixtral":
        router, ep, names, norm = p + "block_sparse_moe.gate", p + "block_sparse_moe.experts.", ("w1", "w3", "w2"), True
    else:
        router, ep, names, norm = p + "mlp.gate", p + "mlp.experts.", ("gate_proj", "up_proj", "down_proj"), cfg["norm_topk_prob"]
    out = routed(h, router, ep, names, k_, norm)
    if mt == "qwen2_moe":
        # Qwen2MoeSparseMoeBlock: sigmoid(shared_expert_gate(x)) * shared_expert(x) joins
        # the routed output.
        shared = mlp(h, p + "mlp.shared_expert.", "gate_proj", "up_proj", "down_proj")
        out = out + torch.sigmoid(lin(h, p + "mlp.shared_expert_gate")) * shared
    x = x + out
x = rms(x, W["model.norm.weight"])
head = W["lm_head.weight"] if not cfg["tie_word_embeddings"] else W["model.embed_tokens.weight"]
print(json.dumps((x @ head.T).flatten().tolist()))
