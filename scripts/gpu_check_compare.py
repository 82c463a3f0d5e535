"""Compares a `moec run --device cuda` log with the CPU executor's over the same steps and
writes the GPU check's table (docs/results/gpu.md).

Usage: gpu_check_compare.py OUT_MD NAME:CPU_RUN_DIR:GPU_RUN_DIR [...]
Each run folder holds log.jsonl (one JSON object per step: loss, tokens_per_s) and
result.json (Memory). Exit status 1 when a step's loss differs by more than 1e-3 relative
(fp32 kernels against the CPU executor: the GPU's exp/log approximations and sum orders
move the last digits, and a wrong kernel moves the first ones).
"""
import json, sys


def load(run):
    steps = [json.loads(l) for l in open(run + "/log.jsonl") if l.strip()]
    steps = [s for s in steps if "loss" in s]
    res = json.load(open(run + "/result.json"))
    return steps, res


def main():
    out, cases = sys.argv[1], sys.argv[2:]
    rows, ok = [], True
    for case in cases:
        name, cpu, gpu = case.split(":")
        cs, cres = load(cpu)
        gs, gres = load(gpu)
        n = min(len(cs), len(gs))
        worst = max(abs(c["loss"] - g["loss"]) / abs(c["loss"]) for c, g in zip(cs[:n], gs[:n]))
        # Steady-state speed: the second half of the steps (the first pay for compilation and caches).
        half = lambda s: s[len(s) // 2:]
        tps = lambda s: sum(x.get("tokens_per_s", 0) for x in half(s)) / max(len(half(s)), 1)
        rows.append((name, n, cs[n - 1]["loss"], gs[n - 1]["loss"], worst, tps(cs), tps(gs)))
        if worst > 1e-3:
            ok = False
            print(f"gpu-check: {name}: the GPU's losses differ from the CPU executor's by {worst:.2g} relative", file=sys.stderr)
    with open(out, "w") as f:
        f.write("# GPU check: the generated CUDA step against the CPU executor\n\n")
        f.write("Written by `make gpu-check` (scripts/gpu-check.sh) on a machine with an NVIDIA GPU.\n\n")
        f.write("| stage | steps | CPU loss | GPU loss | worst relative loss difference | CPU tokens/s | GPU tokens/s |\n|---|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r[0]} | {r[1]} | {r[2]:.5f} | {r[3]:.5f} | {r[4]:.2g} | {r[5]:.0f} | {r[6]:.0f} |\n")
    print(open(out).read())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
