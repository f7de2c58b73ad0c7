"""LoRA against full fine-tuning of a Wan-shaped DiT on this CPU, side by side: tokens a second
and peak memory (RSS) of each, with and without activation checkpointing.

    python benchmarks/finetune.py [--layers 2] [--steps 6] [--rank 16] [--size 320x192] [--frames 17]
                                  [--out runs/finetune-bench]

The base is a WanTransformer3DModel as wide as Wan 2.1 1.3B (12 heads of 128, FFN 8960, 4096-wide
umT5 captions, patch (1, 2, 2)) with only --layers of its 30 blocks and random (seeded) weights,
saved in OUT/base. The data is a latent cache in OUT/latents of a few random clips of --frames
frames at --size (latents of 16 x (1 + (frames - 1) // 4) x H/8 x W/8) with random caption
embeddings, as `kinema data encode --model WAN_DIR` would store them. A step's time, and the part
of the memory the blocks take (weights, gradients, AdamW moments, EMA, activations), grow in
proportion to the layers (46M parameters a block); the caption and time embeddings and the output
head (26M) do not. Activation checkpointing still holds one block's activations while it
recomputes it, so with 2 blocks it saves about half of them, with Wan's 30 nearly all.

Four runs, each in a fresh process so its peak RSS is its own: LoRA of rank --rank (on every
attention and MLP projection, the default lora_targets) and full fine-tuning (lora_rank 0), each
without and with activation checkpointing; bf16 autocast, 2 torch threads, one clip a step (the
token budget is one clip's tokens). A child runs `setup` and then `train_step` --steps times:
train_dit's loop without the checkpoint it writes at the end, so the peak is the training's.
Prints, for each run, the trainable parameters, the median tokens a second and seconds a step
over the steps after the first (warm-up), the RSS once the libraries are imported ("start") and
once the model is loaded ("loaded"), the peak RSS, and the training's growth (peak - start); then
the ratios LoRA / full. "cpu" is the share of its 2 threads' time the run got over the measured
steps: 90-100% on an idle machine (full fine-tuning's optimizer has serial parts); well under
that, another process shared the cores and that run's speed reads low: run it again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

THREADS = 2
CLIPS = 4
RUNS = {  # name -> (LoRA?, activation checkpointing)
    "lora": (True, False),
    "lora + ckpt": (True, True),
    "full": (False, False),
    "full + ckpt": (False, True),
}


def latent_grid(size: str, frames: int) -> tuple[int, int, int]:
    """(T, H, W) of a clip's latent: Wan's VAE keeps 1 frame in 4 (and the first) and 1 pixel in 8."""
    w, h = (int(v) for v in size.lower().split("x"))
    if w % 16 or h % 16:
        raise SystemExit(f"--size {size}: both sides must be multiples of 16 (8x VAE, 2x2 patch)")
    return 1 + (frames - 1) // 4, h // 8, w // 8


def clip_tokens(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * (h // 2) * (w // 2)  # patch (1, 2, 2)


# ---------------------------------------------------------------- the base and the data


def make_base(out: Path, layers: int, seed: int = 0) -> Path:
    """A random WanTransformer3DModel of Wan 2.1 1.3B's width with `layers` blocks, saved in `out`."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                                  in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                                  num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                  eps=1e-6)  # fmt: skip
    model.save_pretrained(out)
    return out


def make_latents(out: Path, grid: tuple[int, int, int], seed: int = 0) -> Path:
    """A latent cache of CLIPS random clips with random 4096-wide caption embeddings (Wan's umT5)."""
    from safetensors.torch import save_file

    from kinema.data import write_index, write_shard
    from kinema.data.cache import NULL_TEXT

    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    items = [dict(latent=torch.randn(16, *grid, generator=g), caption=f"random clip {i}",
                  text=0.1 * torch.randn(26 + 3 * i, 4096, generator=g)) for i in range(CLIPS)]  # fmt: skip
    write_shard(out, 0, items)
    save_file({"text": 0.1 * torch.randn(2, 4096, generator=g)}, str(out / NULL_TEXT))
    write_index(out, {"embeddings": True, "text_dim": 4096, "text_pad_to": 512})
    return out


# ---------------------------------------------------------------- one run, in its own process


def rss_gib() -> float:
    """This process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def child(args) -> None:
    """Train one run (args.child names it) and write its numbers to OUT/runs/NAME/result.json."""
    from kinema.train.dit import DiTTrainConfig, setup, train_step

    torch.set_num_threads(THREADS)
    lora, checkpointing = RUNS[args.child]
    root = args.out / "runs" / args.child.replace(" + ", "-")
    start = rss_gib()
    tokens = clip_tokens(latent_grid(args.size, args.frames))
    cfg = DiTTrainConfig(init=str(args.out / "base"), data=str(args.out / "latents"),
                         lora_rank=args.rank if lora else 0, checkpointing=checkpointing, precision="bf16",
                         device="cpu", token_budget=tokens, sequences_per_step=1, steps=args.steps, lr=1e-5,
                         warmup=0, checkpoint_every=10**9, seed=0)  # fmt: skip
    run = setup(root, cfg)
    loaded = rss_gib()
    history = []
    while run.step < cfg.steps:
        if run.step == 1:  # after the warm-up step: the CPU time the measured steps get
            cpu, wall = cpu_seconds(), time.perf_counter()
        history.append(train_step(run))
        last = history[-1]
        print(f"{args.child}: step {run.step} {last['step_s']:.2f} s, loss {last['loss']:.4f}", flush=True)
    cpu_share = (cpu_seconds() - cpu) / (time.perf_counter() - wall) / THREADS
    result = dict(
        trainable=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        params=sum(p.numel() for p in run.model.parameters()),
        tokens_per_s=statistics.median(r["tokens_per_s"] for r in history[1:]),
        step_s=statistics.median(r["step_s"] for r in history[1:]),
        first_step_s=history[0]["step_s"],
        start=start,
        loaded=loaded,
        peak=peak_rss_gib(),
        cpu_share=cpu_share,
        losses=[r["loss"] for r in history],
    )
    (root / "result.json").write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------- the table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2, help="Wan blocks (Wan 2.1 1.3B has 30)")
    p.add_argument("--steps", type=int, default=6, help="steps a run; the first is warm-up")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument("--size", default="320x192", help="clip size WxH in pixels")
    p.add_argument("--frames", type=int, default=17, help="clip frames (1 + 4k)")
    p.add_argument("--out", type=Path, default=Path("runs/finetune-bench"))
    p.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)  # one run, in a fresh process
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.steps < 2:
        p.error("--steps must be at least 2: the first step is warm-up")
    began = time.perf_counter()
    torch.set_num_threads(THREADS)
    grid = latent_grid(args.size, args.frames)
    shutil.rmtree(args.out, ignore_errors=True)
    make_base(args.out / "base", args.layers)
    make_latents(args.out / "latents", grid)
    tokens = clip_tokens(grid)
    print(f"{os.cpu_count()} CPU cores, {THREADS} torch threads a run; Wan 2.1 1.3B width, {args.layers} blocks; "
          f"LoRA rank {args.rank}; one {args.size} clip of {args.frames} frames a step: latent {grid}, "
          f"{tokens} tokens, 512 caption tokens; bf16 autocast; {args.steps} steps a run", flush=True)  # fmt: skip

    results = {}
    for name in RUNS:
        cmd = [sys.executable, __file__, "--child", name, "--layers", str(args.layers), "--steps", str(args.steps),
               "--rank", str(args.rank), "--size", args.size, "--frames", str(args.frames),
               "--out", str(args.out)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"the {name} run failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
        results[name] = json.loads((args.out / "runs" / name.replace(" + ", "-") / "result.json").read_text())
        print(f"  {name}: done ({results[name]['step_s']:.2f} s a step)", flush=True)

    print(f"\n{'run':<12} {'trainable':>12} {'tokens/s':>9} {'s/step':>7} {'1st step':>8} "
          f"{'start':>6} {'loaded':>7} {'peak':>6} {'growth':>7} {'cpu':>5}   (RSS in GiB)")  # fmt: skip
    for name, r in results.items():
        print(f"{name:<12} {r['trainable']:>12,} {r['tokens_per_s']:>9.1f} {r['step_s']:>7.2f} "
              f"{r['first_step_s']:>8.2f} {r['start']:>6.2f} {r['loaded']:>7.2f} {r['peak']:>6.2f} "
              f"{r['peak'] - r['start']:>7.2f} {r['cpu_share']:>5.0%}")  # fmt: skip
    print(f"\n{'LoRA / full':<12} {'trainable':>12} {'tokens/s':>9} {'peak':>6} {'growth':>7}")
    for suffix in ("", " + ckpt"):
        a, b = results["lora" + suffix], results["full" + suffix]
        print(f"{'ckpt' if suffix else 'no ckpt':<12} {a['trainable'] / b['trainable']:>12.4f} "
              f"{a['tokens_per_s'] / b['tokens_per_s']:>9.2f} {a['peak'] / b['peak']:>6.2f} "
              f"{(a['peak'] - a['start']) / (b['peak'] - b['start']):>7.2f}")  # fmt: skip
    total = results["full"]["params"]
    print(f"\nthe model: {total:,} parameters; {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
