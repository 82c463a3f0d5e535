"""PyTorch peer for runtime/nn: rebuilds a model from the weights the Go test wrote, runs the
same batch in float64 and compares logits, loss terms and every gradient with Go's float32
results. Usage: peer.py DIR..., where each DIR holds config.json and tensors.safetensors
(weights under their Hugging Face names, Go's results under "go.logits" and
"go.grad.<name>"). Prints one JSON line per DIR:
{"ok": bool, "worst": name, "max_rel": float, "errors": {...}}."""

import json
import math
import struct
import sys

import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a : base + b]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def norm(cfg, x, w, b):
    if cfg["norm"] == "rmsnorm":
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg["eps"]) * w
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + cfg["eps"]) * w + b


def act(name, x):
    if name == "relu":
        return F.relu(x)
    if name in ("gelu", "geglu"):
        return F.gelu(x)
    return F.silu(x)


def lin(x, w, b):
    return x @ w.T if b is None else x @ w.T + b


def ffn(actname, x, p, first, up, down):
    """p looks a tensor up by name (None when absent); first/up/down are name prefixes."""
    h = act(actname, lin(x, p(first + ".weight"), p(first + ".bias")))
    if actname in ("swiglu", "geglu"):
        h = h * lin(x, p(up + ".weight"), p(up + ".bias"))
    return lin(h, p(down + ".weight"), p(down + ".bias"))


def rope_tables(T, Dh, base):
    inv = (1.0 / (base ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))).float()
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    ang = ang.double()
    return torch.cos(ang), torch.sin(ang)


def rotate(x, cos, sin):  # x [B, H, T, Dh]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def residual(cfg, x, y, p, post):
    """Adds sublayer output y to x as the norm placement says; post names the output norm."""
    if cfg["placement"] == "pre":
        return x + y
    if cfg["placement"] == "sandwich":
        return x + norm(cfg, y, p(post + ".weight"), p(post + ".bias"))
    return norm(cfg, x + y, p(post + ".weight"), p(post + ".bias"))


def moe_layer(cfg, p, pre, h2, inp, N, D, dtype):
    """The MoE FFN of layer prefix pre: returns its output [N, D], balance and z-loss."""
    m = pre + "block_sparse_moe."
    E, K = cfg["E"], cfg["K"]
    xs = h2.reshape(N, D)
    r = p("model.router_embed.weight")[inp.reshape(N)] if cfg["router"] == "token_embedding" else xs
    z = r @ p(m + "gate.weight").T
    if cfg["router_bias"]:
        z = z + p(m + "gate.bias")
    s = torch.sigmoid(z) if cfg["score"] == "sigmoid" else torch.softmax(z, dim=-1)
    sel = s.detach()
    if cfg["groups"] > 0:  # node-limited: only experts of the top_k_groups best groups
        G = cfg["groups"]
        size = E // G
        best = torch.topk(sel.view(N, G, size).max(-1).values, cfg["topk_groups"], dim=-1).indices
        allowed = torch.zeros(N, G, dtype=torch.bool).scatter_(1, best, True)
        sel = sel.masked_fill(~allowed.repeat_interleave(size, dim=1), float("-inf"))
    idx = torch.topk(sel, K, dim=-1).indices
    gates = s.gather(1, idx)
    if cfg["normalize"]:
        gates = gates / gates.sum(-1, keepdim=True)
    cap = N * K
    if cfg["capacity_factor"] > 0:
        cap = math.ceil(cfg["capacity_factor"] * N * K / E)
    # First choices of all tokens fill the experts before second choices, in token
    # order: an assignment is kept when fewer than cap earlier ones chose its expert.
    onehot = F.one_hot(idx.T.reshape(-1), E)  # [K*N, E], rank-major
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1
    kept = (position < cap).reshape(K, N).T
    out = torch.zeros(N, D, dtype=dtype)
    for e in range(E):
        sel = (idx == e) & kept
        tok, slot = sel.nonzero(as_tuple=True)
        if len(tok) == 0:
            continue
        ep = f"{m}experts.{e}."
        ye = ffn(cfg["expert_act"], xs[tok], p, ep + "w1", ep + "w3", ep + "w2")
        out = out.index_add(0, tok, gates[tok, slot][:, None] * ye)
    shared = torch.zeros(N, D, dtype=dtype)
    for si in range(cfg["shared"]):
        sp = f"{m}shared_experts.{si}."
        shared = shared + ffn(cfg["expert_act"], xs, p, sp + "w1", sp + "w3", sp + "w2")
    if cfg.get("shared_gate"):  # Qwen2-MoE: sigmoid(shared_expert_gate(x)) scales the shared output
        shared = torch.sigmoid(xs @ p(m + "shared_expert_gate.weight").T) * shared
    out = out + shared
    routed = torch.bincount(idx.reshape(-1), minlength=E).to(dtype) / (N * K)
    return out, E * (routed * s.mean(0)).sum(), (torch.logsumexp(z, dim=-1) ** 2).mean()


def forward(cfg, W, toks):
    """Returns logits, loss, ce, balance sum and z-loss sum for tokens [B, T+1]."""
    B, T, V, D = cfg["B"], cfg["T"], cfg["V"], cfg["D"]
    H, KV, Dh = cfg["H"], cfg["KV"], cfg["Dh"]
    N = B * T
    inp, tgt = toks[:, :T], toks[:, 1:]
    dtype = W["model.embed_tokens.weight"].dtype
    p = lambda name: W.get(name)

    x = W["model.embed_tokens.weight"][inp]
    if cfg["position"] == "learned":
        x = x + W["model.embed_positions.weight"][:T][None]
    if cfg["position"] == "rotary":
        cos, sin = rope_tables(T, Dh, cfg["rope_base"])
        cos, sin = cos.to(dtype), sin.to(dtype)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if cfg["window"] > 0:
        mask = mask & ~torch.ones(T, T, dtype=torch.bool).tril(-cfg["window"])
    prevA = None
    bal_sum, z_sum = 0.0, 0.0
    # q/k norms before rotary positions, or after them (qk_norm_after_rope); clip_qkv clamps
    # the projections after the norms before rope.
    after = cfg["qk_norm"] and cfg.get("qk_norm_after_rope", False)
    before = cfg["qk_norm"] and not after

    def clip(x):
        c = cfg.get("clip_qkv", 0)
        return x.clamp(-c, c) if c > 0 else x

    def head_norm(x, w):  # x [B, heads, T, Dh]: per head, or over the whole projection
        if not cfg.get("qk_norm_full"):
            return norm({"norm": "rmsnorm", "eps": cfg["eps"]}, x, w, None)
        b, heads, t, dh = x.shape
        y = norm({"norm": "rmsnorm", "eps": cfg["eps"]}, x.transpose(1, 2).reshape(b, t, heads * dh), w, None)
        return y.view(b, t, heads, dh).transpose(1, 2)
    for li in range(cfg["L"]):
        pre = f"model.layers.{li}."
        if cfg["placement"] == "post":
            h1 = x
        else:
            h1 = norm(cfg, x, p(pre + "input_layernorm.weight"), p(pre + "input_layernorm.bias"))
        if li % cfg["share_kv"] == 0:  # this layer owns the keys and values of its group
            v = h1 @ p(pre + "self_attn.v_proj.weight").T
            k = h1 @ p(pre + "self_attn.k_proj.weight").T
            if cfg["bias_qkv"]:
                v = v + p(pre + "self_attn.v_proj.bias")
                k = k + p(pre + "self_attn.k_proj.bias")
            v = clip(v).view(B, T, KV, Dh).transpose(1, 2).repeat_interleave(H // KV, dim=1)
            if before and cfg.get("qk_norm_full"):  # OLMoE: one norm over all KV·Dh
                k = norm({"norm": "rmsnorm", "eps": cfg["eps"]}, k, p(pre + "self_attn.k_norm.weight"), None)
            k = k.view(B, T, KV, Dh).transpose(1, 2)
            if before and not cfg.get("qk_norm_full"):
                k = norm({"norm": "rmsnorm", "eps": cfg["eps"]}, k, p(pre + "self_attn.k_norm.weight"), None)
            k = clip(k)
            if cfg["position"] == "rotary":
                k = rotate(k, cos, sin)
            k_rot = k  # the group's rotated keys, which each layer norms after rope
            k = k.repeat_interleave(H // KV, dim=1)
            kv = (k, v)
        k, v = kv
        if after:  # HunYuan: every layer norms its group's rotated keys with its own k_norm
            k = head_norm(k_rot, p(pre + "self_attn.k_norm.weight")).repeat_interleave(H // KV, dim=1)
        if cfg["recompute"][li]:
            q = h1 @ p(pre + "self_attn.q_proj.weight").T
            if cfg["bias_qkv"]:
                q = q + p(pre + "self_attn.q_proj.bias")
            if before and cfg.get("qk_norm_full"):
                q = norm({"norm": "rmsnorm", "eps": cfg["eps"]}, q, p(pre + "self_attn.q_norm.weight"), None)
            q = q.view(B, T, H, Dh).transpose(1, 2)
            if before and not cfg.get("qk_norm_full"):
                q = norm({"norm": "rmsnorm", "eps": cfg["eps"]}, q, p(pre + "self_attn.q_norm.weight"), None)
            q = clip(q)
            if cfg["position"] == "rotary":
                q = rotate(q, cos, sin)
            if after:
                q = head_norm(q, p(pre + "self_attn.q_norm.weight"))
            S = q @ k.transpose(-1, -2) / math.sqrt(Dh)
            if cfg["talking_heads"]:
                S = torch.einsum("gh,bhij->bgij", p(pre + "self_attn.talking_heads_pre.weight"), S)
            S = S.masked_fill(~mask, float("-inf"))
            if cfg["sinks"]:
                sink = p(pre + "self_attn.sinks").view(1, H, 1, 1).expand(B, H, T, 1)
                A = torch.softmax(torch.cat([S, sink], dim=-1), dim=-1)[..., :T]
            else:
                A = torch.softmax(S, dim=-1)
            if cfg["talking_heads"]:
                A = torch.einsum("gh,bhij->bgij", p(pre + "self_attn.talking_heads_post.weight"), A)
        else:
            A = prevA
        prevA = A
        o = (A @ v).transpose(1, 2).reshape(B, T, H * Dh)
        y = o @ p(pre + "self_attn.o_proj.weight").T
        if cfg["bias_out"]:
            y = y + p(pre + "self_attn.o_proj.bias")
        x = residual(cfg, x, y, p, pre + "post_attention_layernorm")
        if cfg["placement"] == "post":
            h2 = x
        else:
            n2 = pre + ("pre_feedforward_layernorm" if cfg["placement"] == "sandwich" else "post_attention_layernorm")
            h2 = norm(cfg, x, p(n2 + ".weight"), p(n2 + ".bias"))
        f = 0
        if li not in cfg["moe_layers"] or cfg["parallel_dense"]:
            m = pre + "mlp."
            if cfg["ffn_act"] in ("swiglu", "geglu"):
                f = ffn(cfg["ffn_act"], h2, p, m + "gate_proj", m + "up_proj", m + "down_proj")
            else:
                f = ffn(cfg["ffn_act"], h2, p, m + "up_proj", None, m + "down_proj")
        if li in cfg["moe_layers"]:
            out, bal, zl = moe_layer(cfg, p, pre, h2, inp, N, D, dtype)
            f = f + out.view(B, T, D)
            bal_sum, z_sum = bal_sum + bal, z_sum + zl
        x = residual(cfg, x, f, p, pre + "post_feedforward_layernorm")
    if cfg["final_norm"]:
        x = norm(cfg, x, p("model.norm.weight"), p("model.norm.bias"))
    head = W["model.embed_tokens.weight"] if cfg["tie"] else W["lm_head.weight"]
    logits = x @ head.T
    ce = F.cross_entropy(logits.reshape(N, V), tgt.reshape(N))
    loss = ce + cfg["balance_loss"] * bal_sum + cfg["z_loss"] * z_sum
    return logits, loss, ce, bal_sum, z_sum


def main():
    for d in sys.argv[1:]:
        check(d)


def check(d):
    cfg = json.load(open(f"{d}/config.json"))
    raw = read_safetensors(f"{d}/tensors.safetensors")
    W = {k: v.double().requires_grad_(True) for k, v in raw.items() if not k.startswith("go.")}
    toks = raw["go.tokens"].long().reshape(cfg["B"], cfg["T"] + 1)
    logits, loss, ce, bal_sum, z_sum = forward(cfg, W, toks)
    loss.backward()

    errors = {}

    def rel(name, ours, ref):
        ours, ref = ours.double().reshape(-1), ref.double().reshape(-1)
        den = max(ref.norm().item(), 1e-12)
        if name.endswith("k_proj.bias"):
            # Zero in exact arithmetic (a key bias shifts all scores of a query equally), so
            # only float32 rounding is left: hold it to 1e-6 absolute (tolerance·1e-2).
            den = 1e-2
        errors[name] = (ours - ref).norm().item() / den

    rel("logits", raw["go.logits"], logits.detach())
    for key, ref in (("loss", loss), ("ce", ce), ("balance", bal_sum), ("zloss", z_sum)):
        ref = torch.as_tensor(ref, dtype=torch.float64).detach()
        ours = torch.tensor([cfg["go"][key]], dtype=torch.float64)
        den = max(abs(ref.item()), 1e-12)
        errors[key] = abs(ours.item() - ref.item()) / den
    for name, w in W.items():
        g = w.grad if w.grad is not None else torch.zeros_like(w)
        rel("grad." + name, raw["go.grad." + name], g)
    worst = max(errors, key=errors.get)
    ok = errors[worst] <= cfg["tolerance"]
    print(json.dumps({"ok": ok, "worst": worst, "max_rel": errors[worst], "errors": errors}))


if __name__ == "__main__":
    main()
