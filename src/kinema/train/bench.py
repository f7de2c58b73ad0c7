"""How fast the DiT trains and samples: tokens/s of a training step and forward latency, per config.

    rows = bench_dit()      # CPU: tiny and small at 1024 tokens; GPU: xl_1b at 4k..32k tokens, MFU

A training step is what `kinema train dit` does per micro-batch: forward, backward of the
velocity loss, AdamW step; one sample of N tokens per sequence with a 32-token caption (a
packed sequence of several samples costs about the same, minus attention across samples). On a
GPU it runs under bf16 autocast with fp32 master weights, as training does, and reports MFU:
model FLOPs (3 x `DiTConfig.flops_per_token`, recomputation not counted) over the GPU's peak
bf16 FLOP/s (`kinema.train.dit.PEAK_FLOPS`). A config that runs out of memory is retried with
activation checkpointing (column `ckpt`).
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from kinema.dit import PRESETS, DiT
from kinema.errors import KinemaError

CPU_CONFIGS = ("tiny", "small")
GPU_CONFIGS = ("xl_1b",)
CPU_TOKENS = (1024,)
GPU_TOKENS = (4096, 8192, 16384, 32768)


def _grid(tokens: int) -> tuple[int, int, int]:
    """A latent (T, H, W) of about `tokens` patch tokens with patch (1, 2, 2): 16:9-ish frames."""
    per_frame = 256 if tokens >= 4096 else 64  # 32x32 or 16x16 patch grid: 512 or 256 px frames
    side = int(per_frame**0.5)
    return max(1, tokens // per_frame), 2 * side, 2 * side


def bench_dit(
    configs: tuple[str, ...] | None = None,
    tokens: tuple[int, ...] | None = None,
    steps: int = 3,
    warmup: int = 1,
    text_len: int = 32,
    device: str | None = None,
) -> list[dict]:
    """One row per (config, tokens): params, train tokens/s, train step and forward times, MFU on GPU."""
    from kinema.train.dit import peak_flops

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = dev.type == "cuda"
    configs = configs or (GPU_CONFIGS if gpu else CPU_CONFIGS)
    tokens = tokens or (GPU_TOKENS if gpu else CPU_TOKENS)
    unknown = [c for c in configs if c not in PRESETS]
    if unknown:
        raise KinemaError(f"unknown DiT configs {unknown}; choose from {', '.join(PRESETS)}")
    if steps < 1 or warmup < 0:
        raise KinemaError("steps must be >= 1 and warmup >= 0")
    peak = peak_flops(dev) if gpu else None
    rows = []
    for name in configs:
        for n in tokens:
            row = None
            for ckpt in (False, True):
                try:
                    row = _bench_one(name, n, steps, warmup, text_len, dev, ckpt, peak)
                    break
                except torch.OutOfMemoryError:
                    if gpu:
                        torch.cuda.empty_cache()
            if row is None:
                row = dict(config=name, tokens=n, ckpt="oom")
            rows.append(row)
    return rows


def _bench_one(name, n, steps, warmup, text_len, dev, ckpt, peak) -> dict:
    gpu = dev.type == "cuda"
    cfg = PRESETS[name]()
    torch.manual_seed(0)
    model = DiT(cfg, checkpointing=ckpt).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if gpu else {}))
    T, H, W = _grid(n)
    L = T * (H // 2) * (W // 2)
    positions = torch.stack(torch.meshgrid(*(torch.arange(s) for s in (T, H // 2, W // 2)), indexing="ij"), -1)
    positions = positions.reshape(-1, 3).to(dev)  # (L, 3)
    x = torch.randn(1, L, cfg.token_dim, device=dev)
    target = torch.randn_like(x)
    t = torch.rand(1, L, device=dev)
    text = torch.randn(1, text_len, cfg.text_dim, device=dev)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else nullcontext()

    def sync():
        if gpu:
            torch.cuda.synchronize(dev)

    def train_step():
        with autocast:
            v = model(x, positions, t, text, mask)
        loss = (v.float() - target).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        train_step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    train_s = statistics.median(times)
    del opt
    model.eval()
    fwd = []
    with torch.no_grad():
        for i in range(warmup + steps):
            sync()
            start = time.perf_counter()
            with autocast:
                model(x, positions, t, text, mask)
            sync()
            if i >= warmup:
                fwd.append(time.perf_counter() - start)
    fwd_s = statistics.median(fwd)
    flops = 3 * cfg.flops_per_token(L, text_len) * L  # a training step, model FLOPs
    row = dict(
        config=name,
        params_m=round(model.num_params() / 1e6, 1),
        tokens=L,
        ckpt="yes" if ckpt else "no",
        train_tokens_per_s=round(L / train_s, 1),
        train_step_ms=round(1000 * train_s, 1),
        forward_ms=round(1000 * fwd_s, 1),
        train_tflops=round(flops / train_s / 1e12, 3),
    )
    if peak:
        row["mfu"] = round(flops / train_s / peak, 3)
    if gpu:
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 1)
        torch.cuda.reset_peak_memory_stats(dev)
    del model
    return row
