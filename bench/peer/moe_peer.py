"""The PyTorch peer of moebench: the same MoE model and workloads, written the way a careful
PyTorch user would write them on a CPU, in several formulations of the MoE layer so the
driver can keep the fastest.

Model (--size small): vocab 256 (bytes), d_model 256, 4 layers, 4 heads of 64, causal
attention, sequences of 128, pre-RMSNorm, learned positions, final RMSNorm, untied head; an
MoE FFN in every layer with 8 SwiGLU experts of hidden 512, a top-2 softmax router with
gates renormalised to sum to one and a Switch balance loss of 0.01; dropless. Tokens are
sorted by expert and each expert runs over just its tokens (no dense all-experts compute).
AdamW. --size large is the same structure at d_model 1024 (16 heads of 64) with experts of
hidden 2048: about 219M parameters.

Formulations of the MoE layer (--impl), all computing the same function from the same
initial weights:
  stacked  one [experts, ...] weight per layer, expert e's slice taken inside autograd
           (w13[e]); its backward writes a full-size gradient per slice
  modules  nn.Linear gate/up/down experts in an nn.ModuleList, tokens sorted by expert,
           index_add_ to combine
  sliced   the stacked weights split once, outside autograd, into per-expert leaf tensors;
           gate and up as one fused product per expert
  bmm      stacked weights, each expert's tokens padded to the busiest expert's count, two
           torch.bmm calls over all experts at once

Usage: moe_peer.py MODE [--impl I] [--size S] [--threads N] [--seconds S] [--check]
  MODE is train (forward + backward + AdamW on 16x128 tokens), forward (inference forward
  of 16x128 tokens), gen1 / gen16 (incremental greedy generation of 128 tokens with a KV
  cache for 1 or 16 sequences), sgemm (the BLAS peak torch reaches on a 1024^3 product),
  stream (the memory bandwidth torch reaches streaming a 512 MiB float32 weight matrix: the
  best of torch.mv over it, batch-1 decoding's product, and a plain sum of it),
  tune (train, train-bf16, forward, gen1 and gen16 briefly, one process: the driver's tuning pass) or
  info (torch's version and product back end). train-bf16 is train under
  torch.autocast("cpu", dtype=torch.bfloat16). gen1-int8 / gen16-int8 generate the same
  way after torch.ao.quantization.quantize_dynamic has turned every nn.Linear (attention
  projections, experts, head; the modules formulation) into dynamic int8 (weights int8
  per output channel, activations quantised per product); the router stays float32.
  train --check trains 8 AdamW steps on one batch under every formulation: each must start
  from the same loss and lower it (exit status 1 otherwise).
Threads: --threads sets torch.set_num_threads; OPENBLAS_NUM_THREADS and OMP_WAIT_POLICY
are read from the environment, so the caller chooses them.
Output: one JSON line {"mode", "impl", "torch", "tokens_per_s" (or "gflops", "gbps"), "iters",
"seconds", "loss"}.
"""

import argparse
import ctypes
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # qnnpack's dynamic linear warns each call (1.13 logs it anyway)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.dont_write_bytecode = True

V, L, DH, T, B = 256, 4, 64, 128, 16
E, K, BALANCE, EPS = 8, 2, 0.01, 1e-5
SIZES = {"small": (256, 512), "large": (1024, 2048)}  # d_model, experts' hidden
STREAM_ROWS, STREAM_COLS = 8192, 16384  # stream mode's weight matrix: 512 MiB of float32
D, HID = SIZES["small"]
H = D // DH
IMPLS = ("stacked", "modules", "sliced", "bmm")


def set_size(name):
    """Sets the model's width: the constants above are the small size's until then."""
    global D, HID, H
    D, HID = SIZES[name]
    H = D // DH


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


class Expert(nn.Module):
    """One SwiGLU expert as a PyTorch user writes it: three bias-free linear layers."""

    def __init__(self, w13, w2):
        super().__init__()
        self.gate = nn.utils.skip_init(nn.Linear, D, HID, bias=False)
        self.up = nn.utils.skip_init(nn.Linear, D, HID, bias=False)
        self.down = nn.utils.skip_init(nn.Linear, HID, D, bias=False)
        with torch.no_grad():
            self.gate.weight.copy_(w13[:HID])
            self.up.weight.copy_(w13[HID:])
            self.down.weight.copy_(w2)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Model:
    """The model's weights and its MoE layer in one formulation (see the module doc)."""

    def __init__(self, impl, seed=0):
        self.impl = impl
        self.w = init_weights(seed)
        self.experts = {}
        self.linears = None  # quantize(): name -> int8 nn.Linear used instead of w[name]
        if impl == "modules":
            for i in range(L):
                w13, w2 = self.w.pop(f"{i}.w13").detach(), self.w.pop(f"{i}.w2").detach()
                self.experts[i] = nn.ModuleList(Expert(w13[e], w2[e]) for e in range(E))
        elif impl == "sliced":
            for i in range(L):
                w13, w2 = self.w.pop(f"{i}.w13").detach(), self.w.pop(f"{i}.w2").detach()
                self.experts[i] = [(w13[e].clone().requires_grad_(True), w2[e].clone().requires_grad_(True))
                                   for e in range(E)]

    def quantize(self):
        """Dynamic int8 (torch.ao.quantization.quantize_dynamic) of every linear layer: the
        attention projections, the head and (modules formulation) the experts."""
        names = [f"{i}.{n}" for i in range(L) for n in ("qkv", "o")] + ["head"]
        lin = nn.ModuleDict()
        for name in names:
            w = self.w[name].detach()
            m = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                m.weight.copy_(w)
            lin[name.replace(".", "_")] = m
        experts = nn.ModuleDict({str(i): ex for i, ex in self.experts.items()})
        warnings.filterwarnings("ignore", message=".*deprecated.*")  # torch 2.10+: torchao is the successor
        q = torch.ao.quantization.quantize_dynamic(nn.ModuleDict({"lin": lin, "experts": experts}),
                                                   {nn.Linear}, dtype=torch.qint8)
        self.linears = {name: q["lin"][name.replace(".", "_")] for name in names}
        self.experts = {int(i): ex for i, ex in q["experts"].items()}

    def mm(self, x, name):
        """x @ w[name].T, through the int8 module once quantize() has run."""
        if self.linears is not None:
            return self.linears[name](x)
        return x @ self.w[name].t()

    def params(self):
        ps = list(self.w.values())
        for i in range(L):
            ex = self.experts.get(i)
            if isinstance(ex, nn.ModuleList):
                ps += list(ex.parameters())
            elif ex is not None:
                ps += [t for pair in ex for t in pair]
        return ps

    def moe(self, i, h):
        """h: [N, D] -> ([N, D], balance loss). Tokens sorted by expert."""
        w, n = self.w, h.shape[0]
        probs = torch.softmax(h @ w[f"{i}.router"].t(), dim=-1)
        top_p, top_i = probs.topk(K, dim=-1)
        gates = top_p / top_p.sum(-1, keepdim=True)
        flat = top_i.reshape(-1)
        counts = torch.bincount(flat, minlength=E)
        balance = E * ((counts.to(h.dtype) / (n * K)) * probs.mean(0)).sum()
        order = flat.argsort(stable=True)
        tok = order // K
        g = gates.reshape(-1).index_select(0, order).unsqueeze(1)
        xs = h.index_select(0, tok)
        if self.impl == "bmm":
            y = self.moe_bmm(i, xs, counts)
        else:
            outs, start = [], 0
            for e, c in enumerate(counts.tolist()):
                if c == 0:
                    continue
                x = xs[start:start + c]
                start += c
                if self.impl == "modules":
                    outs.append(self.experts[i][e](x))
                    continue
                if self.impl == "sliced":
                    w13, w2 = self.experts[i][e]
                else:
                    w13, w2 = w[f"{i}.w13"][e], w[f"{i}.w2"][e]
                a, b = F.linear(x, w13).split(HID, dim=-1)
                outs.append(F.linear(F.silu(a) * b, w2))
            y = torch.cat(outs)
        return torch.zeros_like(h).index_add_(0, tok, (y * g).to(h.dtype)), balance  # autocast: y may be bf16

    def moe_bmm(self, i, xs, counts):
        """Every expert at once: rows padded to the busiest expert's count, two bmm calls."""
        cmax = int(counts.max())
        experts = torch.arange(E).repeat_interleave(counts)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(xs.shape[0]) - starts.repeat_interleave(counts) + experts * cmax
        padded = xs.new_zeros(E * cmax, D).index_copy(0, slot, xs).view(E, cmax, D)
        a, b = torch.bmm(padded, self.w[f"{i}.w13"].transpose(1, 2)).split(HID, dim=-1)
        y = torch.bmm(F.silu(a) * b, self.w[f"{i}.w2"].transpose(1, 2))
        return y.reshape(E * cmax, D).index_select(0, slot)

    def forward(self, toks):
        """toks: [B, T+1] -> (loss, mean cross-entropy)."""
        w = self.w
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
            y, bl = self.moe(i, rmsnorm(x, w[f"{i}.n2"]).reshape(-1, D))
            x = x + y.view(bsz, t, D)
            balance = balance + bl
        logits = rmsnorm(x, w["norm"]) @ w["head"].t()
        ce = F.cross_entropy(logits.reshape(-1, V), toks[:, 1:].reshape(-1))
        return ce + BALANCE * balance, ce


class Decoder:
    """Incremental generation with a preallocated KV cache of maxlen positions."""

    def __init__(self, model, batch, maxlen):
        self.model, self.batch, self.pos = model, batch, 0
        self.k = torch.zeros(L, batch, H, maxlen, DH)
        self.v = torch.zeros(L, batch, H, maxlen, DH)

    def step(self, tokens):
        w, p, bsz = self.model.w, self.pos, self.batch
        x = w["embed"][tokens] + w["pos"][p]
        for i in range(L):
            h = rmsnorm(x, w[f"{i}.n1"])
            q, k, v = self.model.mm(h, f"{i}.qkv").view(bsz, 3, H, DH).unbind(1)
            self.k[i, :, :, p], self.v[i, :, :, p] = k, v
            s = (q.unsqueeze(2) @ self.k[i, :, :, :p + 1].transpose(-1, -2)) * (1.0 / math.sqrt(DH))
            a = torch.softmax(s, dim=-1) @ self.v[i, :, :, :p + 1]
            x = x + self.model.mm(a.reshape(bsz, D), f"{i}.o")
            y, _ = self.model.moe(i, rmsnorm(x, w[f"{i}.n2"]))
            x = x + y
        self.pos += 1
        return self.model.mm(rmsnorm(x, w["norm"]), "head")


def timed(fn, seconds, min_iters=2):
    """Runs fn once to warm up, then repeatedly for about seconds; returns (iters, elapsed)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - t0


def trainer(model, toks, bf16=False):
    """The training step (zero grads, forward, backward, AdamW) and its last losses; with
    bf16 the forward runs under torch.autocast("cpu", dtype=torch.bfloat16) (mixed precision:
    bf16 products, fp32 master weights and optimizer)."""
    opt = torch.optim.AdamW(model.params(), lr=1e-3, weight_decay=0.1, foreach=True)
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, ce = model.forward(toks)
        loss.backward()
        opt.step()
        last["loss"], last["ce"] = loss.item(), ce.item()

    return step, last


def check(toks, steps=8):
    """Every formulation trains steps AdamW steps on one batch from the same weights: the
    first losses must agree and every loss must fall. Returns (per-formulation losses, ok)."""
    out, ok = {}, True
    for impl in IMPLS:
        model = Model(impl)
        with torch.no_grad():
            first = model.forward(toks)[0].item()
        step, last = trainer(model, toks)
        for _ in range(steps):
            step()
        out[impl] = [first, last["loss"]]
        ok = ok and last["loss"] < first
    firsts = [v[0] for v in out.values()]
    ok = ok and max(firsts) - min(firsts) <= 1e-5 * abs(firsts[0])
    return out, ok


def measure(mode, model, toks, seconds, min_iters):
    """Measures one workload of model; returns the result's fields."""
    if mode in ("train", "train-bf16"):
        step, last = trainer(model, toks, bf16=mode == "train-bf16")
        c0 = time.process_time()
        n, dt = timed(step, seconds, min_iters)
        cpu = (time.process_time() - c0) * n / (n + 1)  # the warm-up step is inside: scale it out
        return dict(tokens_per_s=B * T * n / dt, iters=n, seconds=dt, cpu_seconds=cpu, loss=last["loss"])
    if mode == "forward":
        with torch.inference_mode():
            res = {}

            def fwd():
                res["loss"] = model.forward(toks)[0].item()

            n, dt = timed(fwd, seconds, min_iters)
        return dict(tokens_per_s=B * T * n / dt, iters=n, seconds=dt, loss=res["loss"])
    batch = 1 if mode.startswith("gen1-") or mode == "gen1" else 16
    with torch.inference_mode():
        dec = Decoder(model, batch, T)

        def gen():
            dec.pos = 0
            t = torch.zeros(batch, dtype=torch.long)
            for _ in range(T):
                t = dec.step(t).argmax(-1)

        n, dt = timed(gen, seconds, min_iters)
    return dict(tokens_per_s=batch * T * n / dt, iters=n, seconds=dt)


def backend():
    """The product back end this torch uses: its BLAS (with OpenBLAS's core type when torch
    links OpenBLAS), MKL, oneDNN and the CPU capability torch dispatches its kernels to."""
    cfg = torch.__config__.show()
    blas = next((ln.split("=", 1)[1].strip() for ln in cfg.splitlines() if "BLAS_INFO=" in ln), "?")
    parts = [f"BLAS_INFO={blas.split(',')[0]}"]
    if torch.backends.mkl.is_available():
        parts.append("MKL")
    else:
        for lib in ("libblas.so.3", "libopenblas.so.0"):
            try:
                fn = ctypes.CDLL(lib).openblas_get_corename
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_char_p
            parts.append(f"OpenBLAS core {fn().decode()} ({lib})")
            break
    if torch.backends.mkldnn.is_available():
        parts.append("oneDNN")
    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if cap is not None:
        parts.append(f"CPU capability {cap()}")
    return ", ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "train-bf16", "forward", "gen1", "gen16", "gen1-int8", "gen16-int8", "sgemm", "bgemm", "stream", "tune", "info"])
    ap.add_argument("--impl", choices=IMPLS, default="sliced")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--min-iters", type=int, default=2)
    ap.add_argument("--qengine", default="", help="int8 modes: torch.backends.quantized.engine (default: torch's own)")
    ap.add_argument("--check", action="store_true", help="train a few steps on a fixed batch under every formulation")
    args = ap.parse_args()
    set_size(args.size)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {"mode": args.mode, "impl": args.impl, "size": args.size, "threads": args.threads,
           "torch": torch.__version__}
    if args.mode == "info":
        out["backend"] = backend()
        print(json.dumps(out))
        return
    if args.mode in ("sgemm", "bgemm"):
        # bgemm: the bfloat16 product (oneDNN's, as autocast runs it), float32 sums inside.
        dtype = torch.bfloat16 if args.mode == "bgemm" else torch.float32
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        best = 0.0
        for _ in range(5):
            n, dt = timed(lambda: torch.mm(a, b), args.seconds / 5, 3)
            best = max(best, 2 * 1024 ** 3 * n / dt / 1e9)
        out["gflops"] = best
        print(json.dumps(out))
        return
    if args.mode == "stream":
        # A weight matrix 16x a large L3 cache, read whole by each call: the GB/s bound of
        # any batch-1 decoding step that reads its weights from memory.
        w, x = torch.randn(STREAM_ROWS, STREAM_COLS), torch.randn(STREAM_COLS)
        best = 0.0
        for fn in (lambda: torch.mv(w, x), lambda: w.sum()):
            for _ in range(3):
                n, dt = timed(fn, args.seconds / 6, 3)
                best = max(best, w.numel() * 4 * n / dt / 1e9)
        out["gbps"] = best
        print(json.dumps(out))
        return
    toks = torch.randint(0, V, (B, T + 1))
    if args.mode == "train" and args.check:
        losses, ok = check(toks)
        out.update(first_loss=losses[args.impl][0], loss=losses[args.impl][1], impls=losses)
        print(json.dumps(out))
        if not ok:
            sys.exit(f"the formulations disagree or do not train: {losses}")
        return
    if args.mode.endswith("-int8"):
        args.impl = out["impl"] = "modules"  # quantize_dynamic replaces nn.Linear modules
    model = Model(args.impl)
    if args.mode.endswith("-int8"):
        # The fastest engine this torch has, measured on these machines: x86 (fbgemm with
        # oneDNN's small-batch path) > fbgemm > qnnpack > onednn.
        engines = torch.backends.quantized.supported_engines
        torch.backends.quantized.engine = args.qengine or next(
            (e for e in ("x86", "fbgemm", "qnnpack", "onednn") if e in engines), torch.backends.quantized.engine)
        warnings.filterwarnings("ignore", message=".*reduce_range.*")
        out["qengine"] = torch.backends.quantized.engine
        model.quantize()
    if args.mode == "tune":
        rates = {}
        modes = ("train", "train-bf16", "forward", "gen1", "gen16")
        for mode in modes:
            rates[mode] = measure(mode, model, toks, args.seconds / len(modes), 1)["tokens_per_s"]
        out["rates"] = rates
    else:
        out.update(measure(args.mode, model, toks, args.seconds, args.min_iters))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
