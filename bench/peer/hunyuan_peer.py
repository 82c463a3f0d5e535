"""The PyTorch peer of compressbench: the tiny HunYuan (examples/hunyuan_tiny.moe) loaded from a
moec checkpoint's model.safetensors and decoded greedily with a KV cache, in float32 and after
torch.ao.quantization.quantize_dynamic has turned its nn.Linear layers into dynamic int8 (weights
int8 per output channel, activations quantised per product).

The function is moec's in eval, as runtime/nn's Decoder computes it: byte embeddings, pre-RMSNorm
(eps from the manifest), rotary positions (rotate-half pairs, base from the manifest), causal
attention with talking heads (the scores, already scaled by 1/sqrt(head_dim), mixed across heads by
talking_heads_pre before the softmax and the probabilities by talking_heads_post after it; attention
weights are always recomputed in eval, so share_weights plays no part), GELU feed-forward layers
and, where the checkpoint has them, MoE layers whose router reads a per-token embedding table
(model.router_embed) and picks the top-1 expert by softmax score, the expert's output weighted by
that score; final RMSNorm and an untied head. The router and the embedding tables stay float32
(moec compress keeps them so too); every projection, expert and the head is an nn.Linear.

Usage: hunyuan_peer.py MODE --checkpoint DIR [options]
  check   decode the token ids in --tokens (int32, little-endian) at batch 1 in float32 and print
          the largest |logit - moec's| against --logits (float32 [steps, vocab])
  tune    time short generations for each setting (--threads, torch.inference_mode or
          torch.no_grad, every quantised engine this torch offers: qnnpack and onednn on
          Debian's 1.13, x86 and fbgemm too on 2.x) --rounds times over, interleaved, and print
          the fastest per workload
  gen     time greedy generation of --steps tokens at batch 1 (after a newline) and batch 16
          (sequences starting 'a', 'b', ...), in float32 and int8, each under the setting that
          --settings (tune's "best") gives it
Output: one JSON line. It runs under torch 1.13 (Debian's) and the current 2.x (PyPI's, in
.venv-bench): quantize_dynamic is the same call in both, deprecated in 2.10+ (torchao succeeds it).
"""

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.dont_write_bytecode = True


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {t['dtype']}; the peer reads float32 checkpoints")
        a, b = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=torch.float32).reshape(t["shape"])
    return out


class TinyHunYuan(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        with open(os.path.join(ckpt, "manifest.json")) as f:
            cfg = json.load(f)["model"]
        at, moe = cfg["Attention"], cfg["MoE"]
        if not at["TalkingHeads"] or at["KVHeads"] != at["Heads"] or at["QKNorm"] or at["BiasQKV"] or at["BiasOut"]:
            raise SystemExit("the peer implements the tiny HunYuan's attention only")
        if cfg["Norm"] != "rmsnorm" or cfg["Position"] != "rotary" or cfg["TieEmbeddings"] or cfg["FFN"]["Activation"] != "gelu":
            raise SystemExit("the peer implements the tiny HunYuan's norms, positions and head only")
        if moe and (moe["TopK"] != 1 or moe["Score"] != "softmax" or moe["Normalize"] or moe["Router"] != "token_embedding"
                    or moe["SharedExperts"] or moe["ExpertBias"] or moe["RouterBias"] or moe["Activation"] != "gelu"):
            raise SystemExit("the peer implements the tiny HunYuan's top-1 token-embedding router only")
        ts = read_safetensors(os.path.join(ckpt, "model.safetensors"))
        self.L, self.H, self.Dh, self.eps = cfg["Layers"], at["Heads"], at["HeadDim"], cfg["NormEps"]
        self.T = cfg["SeqLen"]
        self.emb = ts["model.embed_tokens.weight"]
        self.remb = ts.get("model.router_embed.weight")
        self.norm = ts["model.norm.weight"]
        inv = 1.0 / (cfg["RopeBase"] ** (torch.arange(0, self.Dh, 2, dtype=torch.float64) / self.Dh))
        ang = torch.arange(self.T, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().float(), ang.sin().float()  # [T, Dh/2]
        lin = nn.ModuleDict()

        def linear(name, w):
            m = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                m.weight.copy_(w)
            lin[name] = m

        self.layers = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            lay = {"n1": ts[p + "input_layernorm.weight"], "n2": ts[p + "post_attention_layernorm.weight"],
                   "pre": ts[p + "self_attn.talking_heads_pre.weight"], "post": ts[p + "self_attn.talking_heads_post.weight"]}
            for n in ("q", "k", "v", "o"):
                linear(f"{i}_{n}", ts[p + f"self_attn.{n}_proj.weight"])
            g = p + "block_sparse_moe.gate.weight"
            if g in ts:
                lay["gate"] = ts[g]
                lay["experts"] = ts[g].shape[0]
                for e in range(lay["experts"]):
                    linear(f"{i}_e{e}_w1", ts[p + f"block_sparse_moe.experts.{e}.w1.weight"])
                    linear(f"{i}_e{e}_w2", ts[p + f"block_sparse_moe.experts.{e}.w2.weight"])
            else:
                linear(f"{i}_up", ts[p + "mlp.up_proj.weight"])
                linear(f"{i}_down", ts[p + "mlp.down_proj.weight"])
            self.layers.append(lay)
        linear("head", ts["lm_head.weight"])
        self.lin = lin

    def quantize(self):
        warnings.filterwarnings("ignore", message=".*deprecated.*")  # torch 2.10+: torchao is the successor
        warnings.filterwarnings("ignore", message=".*reduce_range.*")  # qnnpack on 2.x
        self.lin = torch.ao.quantization.quantize_dynamic(self.lin, {nn.Linear}, dtype=torch.qint8)

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos):  # x [B, H, Dh]
        half = self.Dh // 2
        c, s = self.cos[pos], self.sin[pos]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)

    def cache(self, batch):
        return [(torch.zeros(batch, self.H, self.T, self.Dh), torch.zeros(batch, self.H, self.T, self.Dh)) for _ in range(self.L)]

    def step(self, tok, pos, cache):
        """Next-token logits [B, vocab] of tok [B] at position pos; writes the cache."""
        lin, B, H, Dh = self.lin, tok.shape[0], self.H, self.Dh
        x = self.emb[tok]
        rows = self.remb[tok] if self.remb is not None else None
        scale = Dh ** -0.5
        for i, lay in enumerate(self.layers):
            h = self.rms(x, lay["n1"])
            q = self.rope(lin[f"{i}_q"](h).view(B, H, Dh), pos)
            kc, vc = cache[i]
            kc[:, :, pos] = self.rope(lin[f"{i}_k"](h).view(B, H, Dh), pos)
            vc[:, :, pos] = lin[f"{i}_v"](h).view(B, H, Dh)
            s = torch.einsum("bhd,bhtd->bht", q, kc[:, :, :pos + 1]) * scale
            s = torch.einsum("hg,bgt->bht", lay["pre"], s)
            pr = torch.einsum("hg,bgt->bht", lay["post"], torch.softmax(s, -1))
            o = torch.einsum("bht,bhtd->bhd", pr, vc[:, :, :pos + 1]).reshape(B, H * Dh)
            x = x + lin[f"{i}_o"](o)
            h = self.rms(x, lay["n2"])
            if "gate" in lay:
                score, idx = torch.softmax(rows @ lay["gate"].t(), -1).max(-1)
                if B == 1:
                    e = int(idx)
                    x = x + score[:, None] * lin[f"{i}_e{e}_w2"](F.gelu(lin[f"{i}_e{e}_w1"](h)))
                else:
                    out = torch.empty_like(h)
                    for e in idx.unique().tolist():
                        sel = (idx == e).nonzero().squeeze(1)
                        out[sel] = lin[f"{i}_e{e}_w2"](F.gelu(lin[f"{i}_e{e}_w1"](h[sel])))
                    x = x + score[:, None] * out
            else:
                x = x + lin[f"{i}_down"](F.gelu(lin[f"{i}_up"](h)))
        return lin["head"](self.rms(x, self.norm))

    def generate(self, batch, steps):
        """Greedy decoding as compressbench times moec: batch 1 after a newline, batch 16 from
        'a', 'b', ...; steps next-token choices."""
        tok = torch.tensor([10]) if batch == 1 else torch.arange(batch) + ord("a")
        cache = self.cache(batch)
        for pos in range(steps):
            tok = self.step(tok, pos, cache)[:, :256].argmax(-1)
        return tok


def grad_mode(name):
    return torch.inference_mode() if name == "inference_mode" else torch.no_grad()


def timed(model, batch, steps, mode, seconds=0.0):
    """Tokens per second of greedy generations of steps tokens, after a short one to warm
    up, repeated until seconds have passed (at least one)."""
    with grad_mode(mode):
        model.generate(batch, 8)  # warm up
        n = 0
        t0 = time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            model.generate(batch, steps)
            n += batch * steps
        return n / (time.perf_counter() - t0)


def engines():
    return [e for e in ("onednn", "fbgemm", "x86", "qnnpack") if e in torch.backends.quantized.supported_engines]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "tune", "gen"])
    ap.add_argument("--checkpoint", required=True, help="the checkpoint folder (manifest.json, model.safetensors)")
    ap.add_argument("--tokens", help="check: int32 token ids")
    ap.add_argument("--logits", help="check: moec's float32 logits [steps, vocab]")
    ap.add_argument("--steps", type=int, default=127)
    ap.add_argument("--seconds", type=float, default=0.0, help="gen: least time of each measurement (generations repeated)")
    ap.add_argument("--settings", default="", help="gen: tune's best settings (JSON); default 2 threads, inference_mode")
    ap.add_argument("--threads", default="1,2", help="tune: the thread counts to try (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2, help="tune: sweeps over every setting; each keeps its fastest")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = TinyHunYuan(args.checkpoint)
    if args.mode == "check":
        with open(args.tokens, "rb") as f:
            ids = torch.frombuffer(bytearray(f.read()), dtype=torch.int32).long()
        with open(args.logits, "rb") as f:
            ref = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(len(ids), -1)
        cache = model.cache(1)
        worst = 0.0
        with torch.inference_mode():
            for pos, t in enumerate(ids.tolist()):
                got = model.step(torch.tensor([t]), pos, cache)[0]
                worst = max(worst, (got[:ref.shape[1]] - ref[pos]).abs().max().item())
        print(json.dumps({"mode": "check", "torch": torch.__version__, "max_abs_diff": worst, "steps": len(ids)}))
        return
    if args.mode == "tune":
        best = {}

        def keep(key, tps, setting):
            if key not in best or tps > best[key]["tokens_per_s"]:
                best[key] = dict(setting, tokens_per_s=tps)

        thread_counts = sorted({int(t) for t in args.threads.split(",")})
        quantized = {}
        for eng in engines():  # a module quantised under one engine runs under that engine
            torch.backends.quantized.engine = eng
            quantized[eng] = TinyHunYuan(args.checkpoint)
            quantized[eng].quantize()
        # Every round sweeps every setting, so a burst of load on a shared machine falls on
        # one timing of a setting, not on all of them.
        for _ in range(args.rounds):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for grad in ("inference_mode", "no_grad"):
                    for batch in (1, 16):
                        keep(f"fp32_{batch}", timed(model, batch, 16, grad), {"threads": threads, "grad": grad})
            for eng, q in quantized.items():
                torch.backends.quantized.engine = eng
                for threads in thread_counts:
                    torch.set_num_threads(threads)
                    for grad in ("inference_mode", "no_grad"):
                        for batch in (1, 16):
                            keep(f"int8_{batch}", timed(q, batch, 16, grad), {"threads": threads, "grad": grad, "qengine": eng})
        print(json.dumps({"mode": "tune", "torch": torch.__version__, "engines": engines(), "best": best}))
        return
    best = json.loads(args.settings) if args.settings else {}
    out = {"mode": "gen", "torch": torch.__version__}
    for key in ("fp32_1", "fp32_16", "int8_1", "int8_16"):
        st = best.get(key, {})
        m = model
        if key.startswith("int8"):
            torch.backends.quantized.engine = st.get("qengine", torch.backends.quantized.engine)
            m = TinyHunYuan(args.checkpoint)
            m.quantize()
        torch.set_num_threads(int(st.get("threads", 2)))
        out[key] = timed(m, int(key.split("_")[1]), args.steps, st.get("grad", "inference_mode"), args.seconds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
