# An independent forward pass of Llama 4's language model, written from transformers'
# modeling_llama4.py (Llama4TextAttention with rotary and position-free layers, chunked
# attention, Llama4TextL2Norm q/k norms and attn_temperature_tuning; Llama4TextMoe with
# Llama4Router's sigmoid top-k scores multiplying the experts' input beside a shared expert,
# Llama4TextExperts' fused gate_up_proj and down_proj; Llama4TextMLP dense layers) with
# torch, reading an exported Llama4ForCausalLM folder (config.json, model.safetensors with
# transformers' names) with reference_io.py's safetensors reader. Rotary pairs are Llama 4's:
# adjacent dimensions (2j, 2j+1) as one complex number (apply_rotary_emb). It prints the
# logits of the token ids given on the command line as JSON.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)

assert cfg["model_type"] == "llama4_text", cfg["model_type"]
D, H, KV, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
eps, base, T = cfg["rms_norm_eps"], cfg["rope_theta"], len(ids)
use_rope_at, chunk = cfg["no_rope_layers"], cfg["attention_chunk_size"]
qk_l2 = cfg["use_qk_norm"]
attn_scale = cfg["attn_scale"] if cfg["attn_temperature_tuning"] else 0
floor_scale = cfg["floor_scale"]
k_, step = cfg["num_experts_per_tok"], cfg["interleave_moe_layer_step"]
moe_layers = list(range(step - 1, cfg["num_hidden_layers"], step))


def rms(x, w=None):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else w * y


def lin(x, p):
    return x @ W[p + ".weight"].T


def mlp(x, p, gate, up, down):
    return lin(torch.nn.functional.silu(lin(x, p + gate)) * lin(x, p + up), p + down)


inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)


freqs_cis = torch.polar(torch.ones_like(freqs), freqs)[:, None, :]


def rotary(x):  # apply_rotary_emb: adjacent pairs as complex numbers
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * freqs_cis).flatten(-2)


pos = torch.arange(T, dtype=torch.float64)
i_, j_ = torch.arange(T)[:, None], torch.arange(T)[None, :]
x = W["model.embed_tokens.weight"][ids]
for i in range(cfg["num_hidden_layers"]):
    p = "model.layers.%d." % i
    use_rope = use_rope_at[i] == 1
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
    fp = p + "feed_forward."
    if i not in moe_layers:
        x = x + mlp(h, fp, "gate_proj", "up_proj", "down_proj")
        continue
    # Llama4Router: the top-k logits, every other -inf, through a sigmoid.
    logits = lin(h, fp + "router")
    top, sel = logits.topk(k_, dim=-1)
    scores = torch.full_like(logits, float("-inf")).scatter_(1, sel, top).sigmoid()
    out = mlp(h, fp + "shared_expert.", "gate_proj", "up_proj", "down_proj")
    # Llama4TextExperts: every expert on its scaled input, through the fused projections.
    E = scores.shape[1]
    routed_in = h[None, :, :] * scores.T[:, :, None]  # [E, T, D]
    gate, up = torch.bmm(routed_in, W[fp + "experts.gate_up_proj"]).chunk(2, dim=-1)
    routed = torch.bmm(up * torch.nn.functional.silu(gate), W[fp + "experts.down_proj"])
    x = x + out + routed.sum(0)
x = rms(x, W["model.norm.weight"])
print(json.dumps((x @ W["lm_head.weight"].T).flatten().tolist()))
