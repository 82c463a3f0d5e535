#!/usr/bin/env python3
"""Times the MoE layer forward that moec's generated CUDA kernels implement, in PyTorch,
on the same GPU and shapes (bench.json written by tools/gpu-check): router (scores,
top-k, renormalised gates), permutation to expert order, the expert FFN per expert
(cuBLAS GEMMs), and the gate-weighted un-permutation. Prints one line per stage."""
import json
import sys

import torch


def main(path):
    spec = json.load(open(path))
    n, d, e, k, h = (spec[key] for key in ("tokens", "d_model", "experts", "top_k", "expert_hidden"))
    reps = spec["reps"]
    dev = "cuda"
    torch.manual_seed(0)
    x = torch.randn(n, d, device=dev)
    wr = torch.randn(e, d, device=dev) / d ** 0.5
    w1 = torch.randn(e, h, d, device=dev) / d ** 0.5
    wg = torch.randn(e, h, d, device=dev) / d ** 0.5
    w2 = torch.randn(e, d, h, device=dev) / d ** 0.5
    act_name = spec["activation"]
    gated = act_name in ("swiglu", "geglu")
    if act_name in ("relu",):
        act = torch.relu
    elif act_name in ("silu", "swiglu"):
        act = torch.nn.functional.silu
    else:
        act = lambda t: torch.nn.functional.gelu(t, approximate="tanh")

    stages = ["router", "permute", "experts", "unpermute"]
    events = {s: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for s in stages}
    total = {s: 0.0 for s in stages}

    def layer():
        ev = events["router"]
        ev[0].record()
        logits = x @ wr.t()
        probs = torch.sigmoid(logits) if spec["sigmoid"] else torch.softmax(logits, dim=1)
        gate, idx = probs.topk(k, dim=1)
        if spec["normalize"]:
            gate = gate / gate.sum(dim=1, keepdim=True)
        ev[1].record()
        ev = events["permute"]
        ev[0].record()
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=e).tolist()
        token = order // k
        xp = x[token]
        ev[1].record()
        ev = events["experts"]
        ev[0].record()
        yp = torch.empty(n * k, d, device=dev)
        start = 0
        for ex, c in enumerate(counts):
            if c == 0:
                continue
            seg = xp[start:start + c]
            a = seg @ w1[ex].t()
            hid = act(seg @ wg[ex].t()) * a if gated else act(a)
            yp[start:start + c] = hid @ w2[ex].t()
            start += c
        ev[1].record()
        ev = events["unpermute"]
        ev[0].record()
        y = torch.zeros(n, d, device=dev)
        y.index_add_(0, token, yp * gate.reshape(-1)[order].unsqueeze(1))
        ev[1].record()
        return y

    layer()  # warm-up: cuBLAS handles, allocator
    torch.cuda.synchronize()
    for _ in range(reps):
        layer()
        torch.cuda.synchronize()
        for s in stages:
            total[s] += events[s][0].elapsed_time(events[s][1])
    for s in stages:
        print("bench torch %-18s %9.3f ms" % (s, total[s] / reps))
    print("bench torch %-18s %9.3f ms" % ("moe_layer_total", sum(total.values()) / reps))


if __name__ == "__main__":
    main(sys.argv[1])
