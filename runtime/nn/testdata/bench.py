"""PyTorch training-step speed for the same model runtime/nn benchmarks (BenchmarkTrainStep):
float32, forward + backward, no optimizer, on as many threads as the Go side uses.
Usage: bench.py THREADS STEPS. Prints one JSON line: {"tokens_per_s": float,
"tokens_per_cpu_s": float}."""

import json
import sys
import time

import torch

sys.dont_write_bytecode = True  # keep testdata free of __pycache__
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import peer  # noqa: E402

CFG = {
    "B": 16, "T": 128, "V": 256, "D": 256, "H": 4, "KV": 4, "Dh": 64, "L": 4,
    "norm": "rmsnorm", "eps": 1e-5, "final_norm": True, "position": "rotary", "rope_base": 10000.0,
    "tie": False, "talking_heads": False, "window": 0, "bias_qkv": False, "bias_out": False, "qk_norm": False, "sinks": False, "parallel_dense": False, "placement": "pre", "share_kv": 1,
    "ffn_act": "swiglu", "moe_layers": [0, 1, 2, 3], "recompute": [True] * 4,
    "E": 8, "K": 2, "expert_act": "swiglu", "shared": 0, "router": "hidden", "score": "softmax",
    "normalize": True, "groups": 0, "topk_groups": 0, "router_bias": False, "capacity_factor": 1.25, "balance_loss": 0.01, "z_loss": 0.0,
}


def weights(cfg):
    D, V, E, h = cfg["D"], cfg["V"], cfg["E"], 512
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for i in range(cfg["L"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (D,)
        shapes[p + "post_attention_layernorm.weight"] = (D,)
        for n in "qkvo":
            shapes[p + f"self_attn.{n}_proj.weight"] = (D, D)
        shapes[p + "block_sparse_moe.gate.weight"] = (E, D)
        for e in range(E):
            ep = f"{p}block_sparse_moe.experts.{e}."
            shapes[ep + "w1.weight"], shapes[ep + "w3.weight"], shapes[ep + "w2.weight"] = (h, D), (h, D), (D, h)
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randn(s, generator=g) * 0.02 + (1 if len(s) == 1 else 0)).requires_grad_(True) for k, s in shapes.items()}


def main():
    threads, steps = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    W = weights(CFG)
    toks = torch.randint(0, CFG["V"], (CFG["B"], CFG["T"] + 1))
    for _ in range(1):  # warm-up
        peer.forward(CFG, W, toks)[1].backward()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        for w in W.values():
            w.grad = None
        peer.forward(CFG, W, toks)[1].backward()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    n = CFG["B"] * CFG["T"] * steps
    print(json.dumps({"tokens_per_s": n / dt, "tokens_per_cpu_s": n / dc}))


if __name__ == "__main__":
    main()
