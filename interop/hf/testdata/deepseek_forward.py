# An independent forward pass of a DeepSeek-V3 model, written from transformers'
# modeling_deepseek_v3.py (DeepseekV3Attention: q_a_proj -> q_a_layernorm -> q_b_proj or
# q_proj, kv_a_proj_with_mqa split into the latent and the shared rope key, kv_a_layernorm,
# kv_b_proj into per-head k_nope and v, rotary on the rope features only, the softmax scale
# qk_head_dim^-0.5 times yarn_apply_mscale's mscale^2; DeepseekV3TopkRouter: sigmoid scores,
# experts chosen on scores + e_score_correction_bias within the topk_group groups of the best
# sums of their two best biased scores, gates the unbiased scores renormalised
# (norm_topk_prob) times routed_scaling_factor; DeepseekV3MoE's shared experts beside them;
# DeepseekV3MLP dense layers; yarn's inverse frequencies and attention factor from
# modeling_rope_utils.py's _compute_yarn_parameters) with torch, in float64, reading a folder
# moec exported in its own layout (moec_config.json, model.safetensors with moec's names:
# block_sparse_moe.experts.N.w1/w3/w2 are gate_proj/up_proj/down_proj, moec's shared experts
# one MLP each where transformers fuses them into one of their summed width).
#
# moec rotates its rope features in the rotate-half layout. DeepSeek's checkpoints pair
# adjacent features (rope_interleave = true, apply_rotary_pos_emb_interleave); the script
# permutes the rope rows of q_b_proj (q_proj) and kv_a_proj_with_mqa half -> interleaved and
# computes that path too, checking that both give the same logits. It prints the logits of
# the token ids given on the command line as JSON.
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

A, E = cfg["Attention"], cfg["MoE"]
assert A["MLA"] or A["KVLoraRank"] > 0, "not a latent-attention model"
H, nope, rope, vd = A["Heads"], A["QKNopeHeadDim"], A["QKRopeHeadDim"], A["VHeadDim"]
qk = nope + rope
r, ql = A["KVLoraRank"], A["QLoraRank"]
eps, T = cfg["NormEps"] or 1e-5, len(ids)
base = cfg["RopeBase"] or 10000.0
rs = cfg.get("RopeScaling")
assert not E.get("Every") or E["Every"] <= 1, "the script chooses MoE layers by first_dense only"
assert not E.get("Layers"), "the script chooses MoE layers by first_dense only"
assert E["Score"] == "sigmoid" and E["AuxFreeBias"] > 0, "DeepseekV3TopkRouter: sigmoid scores with the correction bias"


def rms(x, w, e):  # DeepseekV3RMSNorm
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e))


def lin(x, p):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if p + ".bias" in W else y


def mlp(x, p):  # DeepseekV3MLP with moec's expert names
    return lin(torch.nn.functional.silu(lin(x, p + "w1")) * lin(x, p + "w3"), p + "w2")


def yarn_get_mscale(scale=1, mscale=1):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


# Rotary frequencies over the rope features (head_dim = qk_rope_head_dim in the config).
dim = rope
attention_factor = 1.0
scaling = qk ** -0.5
if rs:
    assert rs["Type"] == "yarn", rs["Type"]
    factor = rs["Factor"]
    orig = rs.get("OriginalSeqLen") or cfg["SeqLen"]
    attention_factor = rs.get("AttentionFactor") or 0
    mscale, mscale_all_dim = rs.get("Mscale", 0), rs.get("MscaleAllDim", 0)
    if not attention_factor:
        if mscale and mscale_all_dim:
            attention_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_get_mscale(factor)
    beta_fast, beta_slow = rs.get("BetaFast") or 32, rs.get("BetaSlow") or 1

    def corr(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if not rs.get("NoTruncate"):
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
perm = [i // 2 if i % 2 == 0 else rope // 2 + i // 2 for i in range(rope)]


def interleaved(w, rows_per_head, first, heads):
    """w with the rope rows [first, first+rope) of each of heads blocks of rows_per_head
    rows permuted half -> interleaved (bias vectors too)."""
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
    if interleave:
        Wq = interleaved(Wq, qk, nope, H)
        Wkv = interleaved(Wkv, r + rope, r, 1)
        bkv = None if bkv is None else interleaved(bkv[:, None], r + rope, r, 1)[:, 0]
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
    ne, k = E["Experts"], E["TopK"]
    groups, topk_group = E.get("Groups") or 1, E.get("TopKGroups") or 1
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
    if E["Normalize"]:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return idx, w * (E.get("RoutedScale") or 1.0)


def moe(x, p):
    idx, w = router(x, p)
    out = torch.zeros_like(x)
    for t in range(T):
        for j in range(idx.shape[1]):
            out[t] += w[t, j] * mlp(x[t], p + "experts.%d." % idx[t, j])
    for s in range(E.get("SharedExperts") or 0):
        out = out + mlp(x, p + "shared_experts.%d." % s)
    return out


def forward(interleave):
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["Layers"]):
        p = "model.layers.%d." % i
        x = x + attention(rms(x, W[p + "input_layernorm.weight"], eps), p, interleave)
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        if i >= (E.get("FirstDense") or 0):
            x = x + moe(h, p + "block_sparse_moe.")
        else:
            x = x + lin(torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms(x, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return x @ head.T


half, inter = forward(False), forward(True)
gap = (half - inter).abs().max().item()
if gap > 1e-9 * max(1.0, half.abs().max().item()):
    sys.exit("the interleaved rope path differs from the rotate-half one by %g" % gap)
print(json.dumps(inter.flatten().tolist()))
