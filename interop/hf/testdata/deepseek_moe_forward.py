# An independent forward pass of DeepSeek-MoE (model_type deepseek, DeepseekForCausalLM),
# written from deepseek-ai's remote modeling_deepseek.py (deepseek-ai/deepseek-moe-16b-base)
# with torch in float64, reading an exported folder (config.json, model.safetensors with the
# checkpoint's names) with reference_io.py's safetensors reader. It prints the logits of the token
# ids given on the command line as JSON.
#
# What it computes, as modeling_deepseek.py does:
#   - DeepseekAttention (LlamaAttention): q/k/v/o_proj with attention_bias on all four,
#     head_dim = hidden_size // num_attention_heads, num_key_value_heads repeated
#     (repeat_kv), DeepseekRotaryEmbedding with rotate_half (cos/sin of cat(freqs, freqs));
#     rope_scaling "linear" divides the positions by the factor, "dynamic" changes nothing
#     within max_position_embeddings;
#   - DeepseekDecoderLayer: pre-norm DeepseekRMSNorm, mlp = DeepseekMoE when
#     layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0, else
#     DeepseekMLP of intermediate_size;
#   - MoEGate: softmax over n_routed_experts, top-k, divided by (sum + 1e-20) when top_k > 1
#     and norm_topk_prob; DeepseekMoE adds shared_experts, one DeepseekMLP of
#     moe_intermediate_size * n_shared_experts, when n_shared_experts is not None.
#
# A third argument "both" prints two lists, these logits and those of the same network
# rotating adjacent pairs (2j, 2j+1) instead, the convention of DeepSeek-V2/V3's latent
# attention: the Go test shows with them that the check tells the two conventions apart.
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

folder, ids, cfg, W = reference_io.load(sys.argv)
both = len(sys.argv) > 3 and sys.argv[3] == "both"

assert cfg["model_type"] == "deepseek", cfg["model_type"]
D, H = cfg["hidden_size"], cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads") or H
hd = D // H
eps, T, L = cfg["rms_norm_eps"], len(ids), cfg["num_hidden_layers"]
topk, norm_topk = cfg["num_experts_per_tok"], cfg.get("norm_topk_prob", False)
first, freq = cfg.get("first_k_dense_replace", 0), cfg.get("moe_layer_freq", 1)
assert cfg.get("scoring_func", "softmax") == "softmax"
bias = cfg.get("attention_bias", False)


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lin(x, p, biased=False):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if biased else y


def mlp(x, p):
    return lin(torch.nn.functional.silu(lin(x, p + "gate_proj")) * lin(x, p + "up_proj"), p + "down_proj")


pos = torch.arange(T, dtype=torch.float64)
rs = cfg.get("rope_scaling")
if rs:
    if rs["type"] == "linear":
        pos = pos / rs["factor"]
    else:
        assert rs["type"] == "dynamic" and T <= cfg["max_position_embeddings"], rs
inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
freqs = torch.outer(pos, inv)


def rotary(x, interleaved):
    if interleaved:  # adjacent pairs: the wrong convention for this family
        c, s = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    emb = torch.cat((freqs, freqs), dim=-1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * emb.cos()[:, None, :] + torch.cat((-x2, x1), dim=-1) * emb.sin()[:, None, :]


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)


def forward(interleaved):
    x = W["model.embed_tokens.weight"][ids]
    for i in range(L):
        p = "model.layers.%d." % i
        a = p + "self_attn."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rotary(lin(h, a + "q_proj", bias).view(T, H, hd), interleaved)
        k = rotary(lin(h, a + "k_proj", bias).view(T, KV, hd), interleaved)
        v = lin(h, a + "v_proj", bias).view(T, KV, hd)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        att = (torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask).softmax(-1)
        x = x + lin(torch.einsum("hts,shd->thd", att, v).reshape(T, H * hd), a + "o_proj", bias)
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        m = p + "mlp."
        if cfg.get("n_routed_experts") is not None and i >= first and i % freq == 0:
            scores = lin(h, m + "gate").softmax(-1)
            top, sel = scores.topk(topk, dim=-1)
            if topk > 1 and norm_topk:
                top = top / (top.sum(-1, keepdim=True) + 1e-20)
            out = torch.zeros_like(h)
            for t in range(T):
                for j in range(topk):
                    out[t] += top[t, j] * mlp(h[t], m + "experts.%d." % int(sel[t, j]))
            if cfg.get("n_shared_experts") is not None:
                out = out + mlp(h, m + "shared_experts.")
        else:
            out = mlp(h, m)
        x = x + out
    x = rms(x, W["model.norm.weight"])
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return (x @ head.T).flatten().tolist()


print(json.dumps([forward(False), forward(True)] if both else forward(False)))
