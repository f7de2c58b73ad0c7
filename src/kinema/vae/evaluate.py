"""Evaluation and benchmark of the video compression network.

`evaluate_vae`: PSNR, SSIM, compression ratio and encode / decode frames per second on a fixed,
seeded set of Kinema World clips that training never draws (training keys its clips by
(seed, step, index); the held-out set by (HELD_OUT_KEY, index)), at a trained size and at sizes
and aspect ratios it never saw.

`bench_vae`: peak memory and time to encode + decode clips of growing length at bounded memory
(time chunks with carried causal caches). Each length runs in a fresh process so that its peak
RSS is its own; on a GPU the peak is torch's max allocated memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

HELD_OUT_KEY = 20261125
EVAL_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (96, 160), (200, 120))  # (height, width)


def held_out_clips(count: int, frames: int, height: int, width: int) -> torch.Tensor:
    """(count, 3, frames, height, width) in [-1, 1]: world clips keyed apart from training's."""
    from kinema.video import to_model
    from kinema.world.render import random_spec, render

    clips = []
    for i in range(count):
        rng = np.random.default_rng([HELD_OUT_KEY, i])
        clip = render(random_spec(rng), width, height, seconds=frames / 12, fps=12.0, seed=int(rng.integers(2**31)))
        clips.append(to_model(clip.frames[:frames]))
    return torch.stack(clips)


@torch.no_grad()
def evaluate_vae(model: str = "world-vae", clips: int = 8, frames: int = 17,
                 sizes: tuple[tuple[int, int], ...] = EVAL_SIZES, chunk: int | None = 1) -> list[dict]:
    """One row per size: PSNR (dB) of the whole clips, of their first frames and of the later
    (temporally folded) frames, SSIM, compression ratio, encode and decode frames/s."""
    from kinema.vae import load_vae, psnr, ssim

    vae = load_vae(model)
    rows = []
    for h, w in sizes:
        x = held_out_clips(clips, frames, h, w)
        t0 = time.perf_counter()
        z = torch.cat([vae.encode(c[None], chunk=chunk).mode() for c in x])
        t1 = time.perf_counter()
        y = torch.cat([vae.decode(zi[None], chunk=chunk) for zi in z]).clamp(-1, 1)[..., :h, :w]
        t2 = time.perf_counter()
        rows.append({
            "size": f"{w}x{h}",
            "clips": clips,
            "frames": frames,
            "psnr_db": float(psnr(y, x)),
            # frame 0 has a latent frame of its own; the others share one among 4 (temporal folding)
            "first_db": float(psnr(y[:, :, :1], x[:, :, :1])),
            "later_db": float(psnr(y[:, :, 1:], x[:, :, 1:])) if frames > 1 else float("nan"),
            "ssim": float(ssim(y, x)),
            "compression": (3 * frames * h * w) / z[0].numel(),
            "encode_fps": clips * frames / (t1 - t0),
            "decode_fps": clips * frames / (t2 - t1),
        })
    return rows


def _bench_one(model: str, frames: int, size: int, chunk: int) -> dict:
    """Encode + decode one clip in this process; report time and peak memory."""
    import resource

    from kinema.vae import CausalVAE, PRESETS, load_vae

    vae = CausalVAE(PRESETS[model]).eval() if model in PRESETS else load_vae(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = vae.to(device)
    x = torch.rand(1, 3, frames, size, size, device=device) * 2 - 1
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.no_grad():
        z = vae.encode(x, chunk=chunk).mode()
        n = 0
        for part in vae.decode_stream(z, chunk=chunk):  # frames leave as they are made
            n += part.shape[2]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"frames": frames, "size": f"{size}x{size}", "decoded": n, "seconds": seconds,
            "frames_per_s": 2 * frames / seconds, "peak_mib": peak / 2**20,
            "memory": "cuda max allocated" if device == "cuda" else "peak RSS"}


def bench_vae(model: str = "world-vae", lengths: tuple[int, ...] = (17, 65, 257), size: int = 128,
              chunk: int = 1) -> list[dict]:
    """Peak memory and time of encode + decode per clip length, each in a fresh process."""
    from kinema.errors import KinemaError

    rows = []
    for frames in lengths:
        code = (f"import json; from kinema.vae.evaluate import _bench_one; "
                f"print(json.dumps(_bench_one({model!r}, {frames}, {size}, {chunk})))")
        # glibc keeps freed chunk buffers in its heap and resident memory creeps with the length
        # (measured: 1.38x at 257 frames); a fixed mmap threshold returns them (1.16x), at some speed
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise KinemaError(f"bench vae failed at {frames} frames: {res.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    base = rows[0]["peak_mib"]
    for r in rows:
        r["peak_vs_first"] = r["peak_mib"] / base
    return rows
