"""The PyTorch peer of moebench: the same MoE model and workloads, written the way a careful
PyTorch user would write them on a CPU.

Model: vocab 256 (bytes), d_model 256, 4 layers, 4 heads of 64, causal attention, sequences
of 128, pre-RMSNorm, learned positions, final RMSNorm, untied head; an MoE FFN in every
layer with 8 SwiGLU experts of hidden 512, a top-2 softmax router with gates renormalised to
sum to one and a Switch balance loss of 0.01; dropless. Tokens are sorted by expert and each
expert runs one product over just its tokens (no dense all-experts compute). AdamW.

Usage: moe_peer.py MODE [--threads N] [--seconds S] [--check]
  MODE is train (forward + backward + AdamW on 16x128 tokens), forward (inference forward
  of 16x128 tokens), gen1 / gen16 (incremental greedy generation of 128 tokens with a KV
  cache for 1 or 16 sequences), or sgemm (the BLAS peak torch reaches on a 1024^3 product).
Threads: --threads sets torch.set_num_threads; OPENBLAS_NUM_THREADS and OMP_WAIT_POLICY
are read from the environment, so the caller chooses them.
Output: one JSON line {"mode", "tokens_per_s" (or "gflops"), "iters", "seconds", "loss"}.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True

V, D, L, H, DH, T, B = 256, 256, 4, 4, 64, 128, 16
E, K, HID, BALANCE, EPS = 8, 2, 512, 0.01, 1e-5


def init_weights(seed=0):
    """Weights as plain tensors: normal(0.02) matrices, unit norm gains."""
    g = torch.Generator().manual_seed(seed)

    def mat(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).requires_grad_(True)

    def ones(n):
        return torch.ones(n).requires_grad_(True)

    w = {"embed": mat(V, D), "pos": mat(T, D), "norm": ones(D), "head": mat(V, D)}
    for i in range(L):
        w[f"{i}.n1"], w[f"{i}.n2"] = ones(D), ones(D)
        w[f"{i}.qkv"] = mat(3 * D, D)  # q, k and v projections as one product
        w[f"{i}.o"] = mat(D, D)
        w[f"{i}.router"] = mat(E, D)
        w[f"{i}.w13"] = mat(E, 2 * HID, D)  # gate and up projections of each expert, stacked
        w[f"{i}.w2"] = mat(E, D, HID)
    return w


def rmsnorm(x, g):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * g


def moe(w, i, h):
    """h: [N, D] -> ([N, D], balance loss). Tokens sorted by expert, one product per expert."""
    n = h.shape[0]
    probs = torch.softmax(h @ w[f"{i}.router"].t(), dim=-1)
    top_p, top_i = probs.topk(K, dim=-1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    flat = top_i.reshape(-1)
    counts = torch.bincount(flat, minlength=E)
    balance = E * ((counts.to(h.dtype) / (n * K)) * probs.mean(0)).sum()
    order = flat.argsort(stable=True)
    tok = order // K
    xs = h.index_select(0, tok)
    outs = []
    start = 0
    for e, c in enumerate(counts.tolist()):
        if c == 0:
            continue
        a, b = (xs[start:start + c] @ w[f"{i}.w13"][e].t()).split(HID, dim=-1)
        outs.append((F.silu(a) * b) @ w[f"{i}.w2"][e].t())
        start += c
    y = torch.cat(outs) * gates.reshape(-1).index_select(0, order).unsqueeze(1)
    return torch.zeros_like(h).index_add_(0, tok, y), balance


def forward(w, toks):
    """toks: [B, T+1] -> (loss, mean cross-entropy)."""
    bsz, t = toks.shape[0], toks.shape[1] - 1
    x = w["embed"][toks[:, :t]] + w["pos"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    balance = 0.0
    for i in range(L):
        h = rmsnorm(x, w[f"{i}.n1"])
        q, k, v = (h @ w[f"{i}.qkv"].t()).view(bsz, t, 3, H, DH).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(DH))
        a = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
        x = x + a.transpose(1, 2).reshape(bsz, t, D) @ w[f"{i}.o"].t()
        y, bl = moe(w, i, rmsnorm(x, w[f"{i}.n2"]).reshape(-1, D))
        x = x + y.view(bsz, t, D)
        balance = balance + bl
    logits = rmsnorm(x, w["norm"]) @ w["head"].t()
    ce = F.cross_entropy(logits.reshape(-1, V), toks[:, 1:].reshape(-1))
    return ce + BALANCE * balance, ce


class Decoder:
    """Incremental generation with a preallocated KV cache of maxlen positions."""

    def __init__(self, w, batch, maxlen):
        self.w, self.batch, self.pos = w, batch, 0
        self.k = torch.zeros(L, batch, H, maxlen, DH)
        self.v = torch.zeros(L, batch, H, maxlen, DH)

    def step(self, tokens):
        w, p, bsz = self.w, self.pos, self.batch
        x = w["embed"][tokens] + w["pos"][p]
        for i in range(L):
            h = rmsnorm(x, w[f"{i}.n1"])
            q, k, v = (h @ w[f"{i}.qkv"].t()).view(bsz, 3, H, DH).unbind(1)
            self.k[i, :, :, p], self.v[i, :, :, p] = k, v
            s = (q.unsqueeze(2) @ self.k[i, :, :, :p + 1].transpose(-1, -2)) * (1.0 / math.sqrt(DH))
            a = torch.softmax(s, dim=-1) @ self.v[i, :, :, :p + 1]
            x = x + a.reshape(bsz, D) @ w[f"{i}.o"].t()
            y, _ = moe(w, i, rmsnorm(x, w[f"{i}.n2"]))
            x = x + y
        self.pos += 1
        return rmsnorm(x, w["norm"]) @ w["head"].t()


def timed(fn, seconds, min_iters=2):
    """Runs fn once to warm up, then repeatedly for about seconds; returns (iters, elapsed)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "forward", "gen1", "gen16", "sgemm"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--check", action="store_true", help="train a few steps on a fixed batch and report the loss")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {"mode": args.mode, "threads": args.threads}
    if args.mode == "sgemm":
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        best = 0.0
        for _ in range(5):
            n, dt = timed(lambda: torch.mm(a, b), args.seconds / 5, 3)
            best = max(best, 2 * 1024 ** 3 * n / dt / 1e9)
        out["gflops"] = best
        print(json.dumps(out))
        return
    w = init_weights()
    toks = torch.randint(0, V, (B, T + 1))
    if args.mode == "train":
        opt = torch.optim.AdamW(list(w.values()), lr=1e-3, weight_decay=0.1, foreach=True)
        last = {}

        def step():
            opt.zero_grad(set_to_none=True)
            loss, ce = forward(w, toks)
            loss.backward()
            opt.step()
            last["loss"], last["ce"] = loss.item(), ce.item()

        if args.check:  # correctness: the loss on a fixed batch must fall
            first = forward(w, toks)[0].item()
            for _ in range(8):
                step()
            out.update(first_loss=first, loss=last["loss"])
            print(json.dumps(out))
            return
        c0 = time.process_time()
        n, dt = timed(step, args.seconds)
        cpu = (time.process_time() - c0) * n / (n + 1)  # the warm-up step is inside: scale it out
        out.update(tokens_per_s=B * T * n / dt, iters=n, seconds=dt, cpu_seconds=cpu, loss=last["loss"])
    elif args.mode == "forward":
        with torch.inference_mode():
            res = {}

            def fwd():
                res["loss"] = forward(w, toks)[0].item()

            n, dt = timed(fwd, args.seconds)
        out.update(tokens_per_s=B * T * n / dt, iters=n, seconds=dt, loss=res["loss"])
    else:
        batch = 1 if args.mode == "gen1" else 16
        with torch.inference_mode():
            dec = Decoder(w, batch, T)

            def gen():
                dec.pos = 0
                t = torch.zeros(batch, dtype=torch.long)
                for _ in range(T):
                    t = dec.step(t).argmax(-1)

            n, dt = timed(gen, args.seconds)
        out.update(tokens_per_s=batch * T * n / dt, iters=n, seconds=dt)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
