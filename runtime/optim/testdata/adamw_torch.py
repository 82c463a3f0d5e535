# Reference values for TestAdamWMatchesTorch: PyTorch's AdamW on two tensors, one with
# weight decay (2-D) and one without (1-D), with global-norm clipping applied before each
# step the way package optim does it (scale = clip / norm when norm > clip).
# Run: python3 adamw_torch.py > adamw_torch.json
import json, math, torch
torch.set_default_dtype(torch.float64)
w = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.0, -0.75]], requires_grad=True)
b = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
grads = [
    ([[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]], [0.01, 0.02, -0.03]),
    ([[1.5, 0.2, -0.3], [0.0, 0.5, 0.9]], [0.3, -0.2, 0.1]),
    ([[-0.05, 0.02, 0.01], [0.03, -0.04, 0.05]], [0.0, 0.0, 0.07]),
]
lrs = [1e-2, 6e-3, 2e-3]  # the linear schedule from 1e-2 to 2e-3 over 3 steps
opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                        lr=lrs[0], betas=(0.9, 0.95), eps=1e-8)
out = []
for (gw, gb), lr in zip(grads, lrs):
    gw, gb = torch.tensor(gw), torch.tensor(gb)
    norm = math.sqrt(float((gw ** 2).sum() + (gb ** 2).sum()))
    s = 1.0 / norm if norm > 1.0 else 1.0
    w.grad, b.grad = gw * s, gb * s
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    out.append({"w": w.detach().flatten().tolist(), "b": b.detach().tolist(), "norm": norm})
print(json.dumps({"grads": grads, "lrs": lrs, "steps": out}, indent=1))
