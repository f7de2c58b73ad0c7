"""bfloat16 against float32 training on this machine, side by side: the same small DiT run on
Kinema World (the same clips, the same seed) with `precision=bf16` and `precision=fp32`, their
loss curves and seconds a step.

    python benchmarks/bf16_training.py [--steps 150] [--model small] [--out runs/bf16-bench]

Prints a table of the loss averaged over windows of steps for both runs and their ratio, then
the median seconds a step and tokens a second of each. The world's clips are rendered and
encoded once (world_cache) and shared by both runs, so they see the same data in the same order.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

import torch

from kinema.train.dit import DiTTrainConfig, train_dit


def run(root: Path, precision: str, args) -> list[dict]:
    cfg = DiTTrainConfig(vae="world-vae", model=args.model, steps=args.steps, token_budget=args.tokens,
                         sequences_per_step=2, lr=5e-4, warmup=20, checkpoint_every=10_000, precision=precision,
                         world_min_side=64, world_max_side=96, world_min_seconds=1.0, world_max_seconds=2.0,
                         world_fps=(8.0,), world_clips=args.clips, world_cache=True, seed=0)  # fmt: skip
    return train_dit(root, cfg, export=False, progress=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--model", default="tiny", help="a DiT preset: tiny, small, ...")
    p.add_argument("--tokens", type=int, default=1024, help="token budget of a packed sequence")
    p.add_argument("--clips", type=int, default=64, help="Kinema World clips, rendered once")
    p.add_argument("--window", type=int, default=25, help="steps a row of the table averages")
    p.add_argument("--out", type=Path, default=Path("runs/bf16-bench"))
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    histories = {}
    for precision in ("bf16", "fp32"):
        root = args.out / precision
        shutil.rmtree(root, ignore_errors=True)
        if precision == "fp32" and (args.out / "bf16" / "world_cache").is_dir():  # the same clips, encoded once
            shutil.copytree(args.out / "bf16" / "world_cache", root / "world_cache")
        histories[precision] = run(root, precision, args)
    bf, fp = histories["bf16"], histories["fp32"]
    print(f"\nloss, mean over windows of {args.window} steps ({args.model}, {args.tokens}-token sequences, 2 a step)")
    print(f"{'steps':>11} {'bf16':>8} {'fp32':>8} {'bf16/fp32':>10}")
    for start in range(0, min(len(bf), len(fp)), args.window):
        a = statistics.mean(r["loss"] for r in bf[start : start + args.window])
        b = statistics.mean(r["loss"] for r in fp[start : start + args.window])
        print(f"{start + 1:>5}-{min(start + args.window, len(bf)):<5} {a:8.4f} {b:8.4f} {a / b:10.3f}")
    for name, h in histories.items():
        step = statistics.median(r["step_s"] for r in h[5:])
        tps = statistics.median(r["tokens_per_s"] for r in h[5:])
        print(f"{name}: median {step:.3f} s a step, {tps:,.0f} tokens/s")
    ratio = statistics.median(r["step_s"] for r in fp[5:]) / statistics.median(r["step_s"] for r in bf[5:])
    print(f"bf16 is {ratio:.2f}x the speed of fp32")


if __name__ == "__main__":
    main()
