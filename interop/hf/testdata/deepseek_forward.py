# An independent forward pass of a DeepSeek-V3 model, written from transformers'
# modeling_deepseek_v3.py (DeepseekV3Attention: q_a_proj -> q_a_layernorm -> q_b_proj or
# q_proj, kv_a_proj_with_mqa split into the latent and the shared rope key, kv_a_layernorm,
# kv_b_proj into per-head k_nope and v, rotary on the rope features only, the softmax scale
# qk_head_dim^-0.5 times yarn_apply_mscale's mscale^2; DeepseekV3TopkRouter: sigmoid scores,
# experts chosen on scores + e_score_correction_bias within the topk_group groups of the best
# sums of their two best biased scores, gates the unbiased scores renormalised
# (norm_topk_prob) times routed_scaling_factor; DeepseekV3MoE's shared experts, one MLP of
# n_shared_experts * moe_intermediate_size, beside them; DeepseekV3MLP dense layers below
# first_k_dense_replace; yarn's inverse frequencies and attention factor from
# modeling_rope_utils.py's _compute_yarn_parameters) with torch, in float64, reading a folder
# in transformers' layout (config.json, model.safetensors with the checkpoints' names:
# mlp.gate.weight, mlp.gate.e_score_correction_bias, mlp.experts.N.gate_proj/up_proj/down_proj,
# mlp.shared_experts.gate_proj/up_proj/down_proj), as moec exports DeepseekV3ForCausalLM.
#
# DeepSeek's checkpoints pair adjacent rope features (rope_interleave = true,
# apply_rotary_pos_emb_interleave), transformers' default. The script computes that path, and
# also permutes the rope rows of q_b_proj (q_proj) and kv_a_proj_with_mqa interleaved -> half
# and runs the rotate-half path (apply_rotary_pos_emb, rope_interleave = false), checking that
# both give the same logits. It prints the logits of the token ids given on the command line
# as JSON.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)
assert cfg["model_type"] in ("deepseek_v3", "deepseek_v2"), cfg["model_type"]

H, nope, rope, vd = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
qk = nope + rope
r, ql = cfg["kv_lora_rank"], cfg.get("q_lora_rank") or 0
eps, T = cfg.get("rms_norm_eps", 1e-6), len(ids)
params = cfg.get("rope_parameters") or {}
base = cfg.get("rope_theta") or params.get("rope_theta") or 10000.0
rs = cfg.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
interleaved_checkpoint = cfg.get("rope_interleave", True)
assert cfg.get("moe_layer_freq", 1) == 1, "DeepseekV3: MoE in every layer from first_k_dense_replace"
assert cfg.get("scoring_func", "sigmoid") == "sigmoid" and cfg.get("topk_method", "noaux_tc") == "noaux_tc", "DeepseekV3TopkRouter"
assert not cfg.get("num_nextn_predict_layers"), "the MTP layers are not part of the forward"


def rms(x, w, e):  # DeepseekV3RMSNorm
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e))


def lin(x, p):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if p + ".bias" in W else y


def mlp(x, p):  # DeepseekV3MLP
    return lin(torch.nn.functional.silu(lin(x, p + "gate_proj")) * lin(x, p + "up_proj"), p + "down_proj")


def yarn_get_mscale(scale=1, mscale=1):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


# Rotary frequencies over the rope features (head_dim = qk_rope_head_dim in the config).
dim = rope
attention_factor = 1.0
scaling = qk ** -0.5
if rs:
    assert rs.get("rope_type", rs.get("type")) == "yarn", rs
    factor = rs["factor"]
    orig = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    if "original_max_position_embeddings" in rs:  # transformers takes the factor from the ratio
        factor = cfg["max_position_embeddings"] / orig
    attention_factor = rs.get("attention_factor") or 0
    mscale, mscale_all_dim = rs.get("mscale", 0), rs.get("mscale_all_dim", 0)
    if not attention_factor:
        if mscale and mscale_all_dim:
            attention_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_get_mscale(factor)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def corr(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extra, inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp
    inv_freq = inter * (1 - keep) + extra * keep
    if mscale_all_dim:  # yarn_apply_mscale
        m = yarn_get_mscale(factor, mscale_all_dim)
        scaling = scaling * m * m
else:
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
freqs = (torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]).double()
emb = torch.cat((freqs, freqs), dim=-1)
cos, sin = emb.cos() * attention_factor, emb.sin() * attention_factor  # [T, rope]


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_half(x):  # apply_rotary_pos_emb on [.., T, rope]
    return x * cos + rotate_half(x) * sin


def rope_interleave(x):  # apply_rotary_pos_emb_interleave
    c, s = cos[..., : cos.shape[-1] // 2], sin[..., : sin.shape[-1] // 2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


# half -> interleaved: interleaved feature 2i is half feature i, 2i+1 is half feature i + rope/2.
to_pairs = [i // 2 if i % 2 == 0 else rope // 2 + i // 2 for i in range(rope)]
to_halves = [0] * rope
for i, j in enumerate(to_pairs):
    to_halves[j] = i


def permuted(w, rows_per_head, first, heads, perm):
    """w with the rope rows [first, first+rope) of each of heads blocks of rows_per_head
    rows permuted by perm (bias vectors too)."""
    w = w.clone()
    for h in range(heads):
        lo = h * rows_per_head + first
        w[lo:lo + rope] = w[lo:lo + rope][perm]
    return w


def attention(x, p, interleave):
    a = p + "self_attn."
    qw = a + ("q_b_proj" if ql else "q_proj")
    Wq = W[qw + ".weight"]
    Wkv = W[a + "kv_a_proj_with_mqa.weight"]
    bkv = W.get(a + "kv_a_proj_with_mqa.bias")
    if interleave != interleaved_checkpoint:  # the other convention: reorder the rope rows
        perm = to_pairs if interleave else to_halves
        Wq = permuted(Wq, qk, nope, H, perm)
        Wkv = permuted(Wkv, r + rope, r, 1, perm)
        bkv = None if bkv is None else permuted(bkv[:, None], r + rope, r, 1, perm)[:, 0]
    if ql:
        qa = rms(lin(x, a + "q_a_proj"), W[a + "q_a_layernorm.weight"], 1e-6)
        q = qa @ Wq.T
    else:
        q = x @ Wq.T
    q = q.view(T, H, qk).transpose(0, 1)  # [H, T, qk]
    q_pass, q_rot = torch.split(q, [nope, rope], dim=-1)
    ckv = x @ Wkv.T + (0 if bkv is None else bkv)
    kv_nope, k_rot = torch.split(ckv, [r, rope], dim=-1)
    kv_nope = rms(kv_nope, W[a + "kv_a_layernorm.weight"], 1e-6)
    k_rot = k_rot.view(1, T, rope)
    rot = rope_interleave if interleave else rope_half
    q_rot, k_rot = rot(q_rot), rot(k_rot)
    query = torch.cat((q_pass, q_rot), dim=-1)
    kv = lin(kv_nope, a + "kv_b_proj").view(T, H, nope + vd).transpose(0, 1)
    k_nope, v = torch.split(kv, [nope, vd], dim=-1)
    key = torch.cat((k_nope, k_rot.expand(H, -1, -1)), dim=-1)
    s = query @ key.transpose(1, 2) * scaling
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(s, dim=-1) @ v  # [H, T, vd]
    return lin(out.transpose(0, 1).reshape(T, H * vd), a + "o_proj")


def router(x, p):  # DeepseekV3TopkRouter
    ne, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    groups, topk_group = cfg.get("n_group") or 1, cfg.get("topk_group") or 1
    logits = x @ W[p + "gate.weight"].T
    scores = logits.sigmoid()
    choice = scores + W[p + "gate.e_score_correction_bias"]
    group_scores = choice.view(-1, groups, ne // groups).topk(min(2, ne // groups), dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    mask = mask.unsqueeze(-1).expand(-1, groups, ne // groups).reshape(-1, ne)
    choice = choice.masked_fill(~mask.bool(), float("-inf"))
    idx = torch.topk(choice, k=k, dim=-1, sorted=False)[1]
    w = scores.gather(1, idx)
    if cfg.get("norm_topk_prob", True):
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return idx, w * cfg.get("routed_scaling_factor", 1.0)


def moe(x, p):
    idx, w = router(x, p)
    out = torch.zeros_like(x)
    for t in range(T):
        for j in range(idx.shape[1]):
            out[t] += w[t, j] * mlp(x[t], p + "experts.%d." % idx[t, j])
    if cfg.get("n_shared_experts"):
        out = out + mlp(x, p + "shared_experts.")
    return out


def forward(interleave):
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        x = x + attention(rms(x, W[p + "input_layernorm.weight"], eps), p, interleave)
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        if i >= (cfg.get("first_k_dense_replace") or 0):
            x = x + moe(h, p + "mlp.")
        else:
            x = x + lin(torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


half, inter = forward(False), forward(True)
gap = (half - inter).abs().max().item()
if gap > 1e-9 * max(1.0, half.abs().max().item()):
    sys.exit("the interleaved rope path differs from the rotate-half one by %g" % gap)
print(json.dumps(inter.flatten().tolist()))
