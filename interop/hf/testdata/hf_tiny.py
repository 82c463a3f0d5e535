# Tiny random checkpoints of the MoE families, built with transformers' own config and model
# classes, for interop/hf's round trip through transformers (transformers_test.go).
#
#   hf_tiny.py
#
# prints one JSON line, {"transformers": version}, once torch and transformers are
# imported, then answers one JSON request per line of standard input with one JSON line:
#
#   {"op": "build", "family": F, "folder": D, "ids": [...]} builds family F's tiny config
#   with the features the family is known for switched on, initialises the model from a
#   fixed seed (every vector, norm scales and biases included, moved off its constant
#   initial value, so a mapping that swaps or drops one changes the logits), saves it to D
#   with save_pretrained (safetensors, float32) and answers {"logits": [...]}: the logits
#   of the token ids, computed in float64 on the same float32 weights; or {"skip": why}
#   when the installed transformers has no class for F.
#
#   {"op": "load", "family": F, "folder": E} loads E (a folder moec exported from F's
#   build) with AutoModelForCausalLM and answers {"logits": [...], "config_diff": {field:
#   [saved, loaded]}, "config_extra": [field...]}: the loaded model's logits of the build's
#   ids, every field of the family's config class whose value differs from the saved
#   model's, and the fields the loaded config has beside the class's (which its modeling
#   code never reads).
#
# One process serves every family, so torch and transformers are imported once.
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def mixtral():
    return transformers.MixtralConfig(
        vocab_size=300, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def qwen2_moe():
    # Q/K/V biases, one gated shared expert beside the routed ones, a dense first layer.
    return transformers.Qwen2MoeConfig(
        vocab_size=300, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=4,
        num_experts_per_tok=2, norm_topk_prob=False, qkv_bias=True, mlp_only_layers=[0],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def qwen3_moe():
    # Per-head q/k norms, a head_dim other than hidden/heads, normalised top-k weights.
    return transformers.Qwen3MoeConfig(
        vocab_size=300, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def olmoe():
    # q/k norms over the whole projections, Q/K/V clipped at clip_qkv.
    return transformers.OlmoeConfig(
        vocab_size=300, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=0.8,
        pad_token_id=1, eos_token_id=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def llama4_text():
    # Chunked attention (chunks of 3), every fourth layer without rotary positions and with
    # the query temperature, unscaled q/k L2 norms, a sigmoid top-1 gate on the expert's
    # input beside a shared expert, MoE every second layer with dense layers between.
    return transformers.Llama4TextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=24, intermediate_size_mlp=48,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=64, num_local_experts=4, num_experts_per_tok=1,
        interleave_moe_layer_step=2, use_qk_norm=True, no_rope_layer_interval=4,
        attention_chunk_size=3, attn_temperature_tuning=True, floor_scale=2, attn_scale=0.5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0})


def gpt_oss():
    # Attention sinks, sliding windows of 3 on alternate layers, biases everywhere, the
    # clamped SwiGLU with a limit the activations reach, yarn rotary scaling.
    return transformers.GptOssConfig(
        vocab_size=300, hidden_size=64, intermediate_size=32, num_hidden_layers=2, head_dim=16,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=3, num_local_experts=3,
        num_experts_per_tok=2, swiglu_limit=0.5, max_position_embeddings=32,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                         "original_max_position_embeddings": 8, "beta_fast": 32.0,
                         "beta_slow": 1.0, "truncate": False})


def deepseek_v3():
    # Latent attention with a low-rank query, sigmoid routing within groups on scores
    # biased by e_score_correction_bias, routed_scaling_factor, yarn with mscale.
    return transformers.DeepseekV3Config(
        vocab_size=300, hidden_size=32, intermediate_size=40, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=8, routed_scaling_factor=2.5, kv_lora_rank=8, q_lora_rank=12,
        qk_rope_head_dim=4, v_head_dim=5, qk_nope_head_dim=6, n_group=4, topk_group=2,
        num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True,
        max_position_embeddings=64, num_mtp_layers=0,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 16, "beta_fast": 32.0,
                         "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.8})


def deepseek_v2():
    # Latent attention with a low-rank query, a softmax router without selection bias, two
    # shared experts, a dense first layer.
    return transformers.DeepseekV2Config(
        vocab_size=300, hidden_size=32, intermediate_size=40, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=8,
        q_lora_rank=10, qk_nope_head_dim=4, qk_rope_head_dim=6, v_head_dim=4, n_routed_experts=4,
        n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=False,
        topk_method="greedy", max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def dbrx():
    # Fused Wqkv clipped, LayerNorms without biases, fused experts; transformers 5's
    # DbrxAttention reads rope_theta from attn_config.
    return transformers.DbrxConfig(
        vocab_size=300, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
        attn_config={"kv_n_heads": 2, "clip_qkv": 0.4, "rope_theta": 500000.0},
        ffn_config={"ffn_hidden_size": 24, "moe_num_experts": 4, "moe_top_k": 2},
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0})


def phimoe():
    # Sparsemixer (router_jitter_noise is its threshold), biased LayerNorms, attention and
    # head biases, longrope within the pretrained context.
    return transformers.PhimoeConfig(
        vocab_size=300, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        num_local_experts=4, num_experts_per_tok=2, attention_bias=True, lm_head_bias=True,
        router_jitter_noise=0.1, input_jitter_noise=0.0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": [1, 1.5, 2, 3], "long_factor": [2, 3, 4, 5],
                         "short_mscale": 1.2, "long_mscale": 1.2,
                         "original_max_position_embeddings": 16})


def hunyuan_v1_moe():
    # q/k norms after rotary positions, a shared MLP, dynamic NTK alpha rotary (v5 wants
    # a factor beside the alpha).
    return transformers.HunYuanMoEV1Config(
        vocab_size=300, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, moe_topk=2,
        max_position_embeddings=16, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                         "rope_theta": 10000.0})


FAMILIES = {f.__name__: f for f in [mixtral, qwen2_moe, qwen3_moe, olmoe, llama4_text, gpt_oss,
                                    deepseek_v3, deepseek_v2, dbrx, phimoe, hunyuan_v1_moe]}


# The reference path: plain attention (sinks and chunks included) and a loop over experts,
# which computes in float64 (the grouped products take no float64).
EAGER = {"attn_implementation": "eager", "experts_implementation": "eager"}


def perturb(model, gen):
    """Seeded values for every tensor: matrices at 1/sqrt(last dim), vectors (norm scales,
    biases, sinks) around their initial level, and the routers' selection biases non-zero."""
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if p.dim() >= 2:
                p.copy_(noise / p.shape[-1] ** 0.5)
            else:
                p.add_(0.2 * noise.to(p.dtype))
        for name, b in sorted(model.named_buffers()):
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float64))


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.double().flatten().tolist()


def config_diff(saved, loaded, folder):
    """The fields of the family's config class whose values differ between the saved and
    the loaded config (head_dim's null read as the hidden_size / heads it stands for; dtype
    as the folder's config.json has it, not the float64 the reference loads in), and the
    fields the loaded config has that the class does not define."""
    a, b = saved.to_dict(), loaded.to_dict()
    written = json.load(open(folder + "/config.json"))
    b["dtype"] = written.get("dtype", written.get("torch_dtype"))
    a.pop("_name_or_path", None)
    b.pop("_name_or_path", None)
    known = set(type(saved)().to_dict())
    for d, c in ((a, saved), (b, loaded)):
        if d.get("head_dim", 0) is None:
            d["head_dim"] = c.hidden_size // c.num_attention_heads
        # Sub-configs (DBRX's attn_config, ffn_config) carry the load's dtype as the outer
        # config's dtype is: bookkeeping, not computation.
        for v in d.values():
            if isinstance(v, dict) and "model_type" in v:
                v.pop("dtype", None)
    diff = {k: [a.get(k), b.get(k)] for k in sorted(known & (set(a) | set(b))) if a.get(k) != b.get(k)}
    return diff, sorted(set(b) - known - set(a))


def build(family, folder, ids, built):
    try:
        config = FAMILIES[family]()
    except AttributeError as e:
        return {"skip": "transformers %s has no class for %s: %s" % (transformers.__version__, family, e)}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **EAGER)
    model.eval()
    perturb(model, torch.Generator().manual_seed(0))
    model.save_pretrained(folder, safe_serialization=True)
    built[family] = (model.config, ids)
    model.double()
    return {"logits": logits(model, ids)}


def load(family, export, built):
    saved, ids = built[family]
    loaded = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float64, **EAGER)
    loaded.eval()
    diff, extra = config_diff(saved, loaded.config, export)
    return {"logits": logits(loaded, ids), "config_diff": diff, "config_extra": extra}


def main():
    print(json.dumps({"transformers": transformers.__version__}), flush=True)
    built = {}  # family: (the saved config, the build's ids)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "build":
            rep = build(req["family"], req["folder"], req["ids"], built)
        else:
            rep = load(req["family"], req["folder"], built)
        print(json.dumps(rep), flush=True)


if __name__ == "__main__":
    main()
