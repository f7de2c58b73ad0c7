"""What sampling a Wan model holds in accelerator memory: an estimate, term by term.

    rows = wan_memory_table()        # the README's table: 1.3B and 14B at 480p and 720p, 81 frames;
                                     # the 5B at 720p (1280x704), 121 frames
    rows = wan_finetune_table()      # fine-tuning: LoRA and full, 480p x 81 frames (FINETUNE_DOC)

The estimate (GiB = 2^30 bytes), for a video of T = 1 + (frames - 1) / 4 latent frames and
N = T * (height / g) * (width / g) tokens (g, the grid: 16 pixels for Wan 2.1, 32 for Wan 2.2's
4x16x16 VAE), weights of b bytes (2 for bfloat16 / float16):

    DiT weights          P_dit * b, exact (the model built on the meta device and counted);
                         with block offload: the parameters outside the blocks + 2 blocks (the
                         one running and the next arriving)
    text encoder         umT5-XXL's encoder, 5.68e9 * b while it encodes; with offload "text" or
                         "blocks" it has left the device before the DiT runs
    DiT activations      rows * N * (6 D + 2 F) * b: inside one block at a time, the residual
                         stream, its norm, q, k, v and the attention output (6 D a token) and the
                         MLP's hidden and activated widths (2 F); flash attention keeps no N x N
                         scores; rows = 2 with guidance in one batch (GPU default)
    VAE decode           its weights (Wan 2.1's 1.27e8, Wan 2.2's 7.05e8, float32) + 4 live
                         float32 tensors of its last up-block, 4 frames at a time (Wan 2.1: 96
                         channels at full resolution; Wan 2.2: 256 at half) + the decoded video,
                         frames * 3 * H * W * 4

The peak is the largest of three phases: encoding the caption (text encoder + what of the DiT
is on the device), denoising (DiT weights + activations + the VAE weights) and decoding (DiT
weights unless offloaded + VAE decode). Framework overhead (CUDA context, allocator slack,
about 0.5 - 1 GiB) is not in it.
"""

from __future__ import annotations

import itertools
import math

import torch

from kinema.errors import KinemaError

GIB = 2**30
UMT5_XXL_ENCODER_PARAMS = 5.68e9
# a VAE's parameters (counted on the meta device), and its last up-block's float32 values a pixel
# of a frame: Wan 2.1 96 channels at full size, Wan 2.2 256 at half size (before the unpatchify)
WAN_VAE_PARAMS, WAN_VAE_LAST = 1.27e8, 96
WAN22_VAE_PARAMS, WAN22_VAE_LAST = 7.05e8, 256 / 4
SIZES = {"480p": (832, 480), "720p": (1280, 720)}


def _dit_params(name: str) -> tuple[int, int, object]:
    """(all parameters, parameters of one block, config) of a named Wan config, counted on meta."""
    from kinema.dit import DiT
    from kinema.models.compare import WAN_CONFIGS
    from kinema.models.wan import wan_dit_config

    if name not in WAN_CONFIGS:
        raise KinemaError(f"unknown config {name!r}; choose from {', '.join(WAN_CONFIGS)}")
    cfg = wan_dit_config({"text_dim": 4096, **WAN_CONFIGS[name]})
    with torch.device("meta"):
        dit = DiT(cfg)
    total = sum(p.numel() for p in dit.parameters())
    block = sum(p.numel() for p in dit.blocks[0].parameters())
    return total, block, cfg


def wan_sampling_memory(name: str, width: int, height: int, frames: int = 81, bytes_per_weight: int = 2,
                        offload: str = "none", rows: int = 2) -> dict[str, float]:  # fmt: skip
    """The estimate of the module doc, in GiB: each term and the peak."""
    if offload not in ("none", "text", "blocks"):
        raise KinemaError(f"offload must be none, text or blocks; got {offload!r}")
    total, block, cfg = _dit_params(name)
    wan22 = name.startswith("wan2.2")
    grid = 32 if wan22 else 16
    b = bytes_per_weight
    T = 1 + (frames - 1) // 4
    tokens = T * math.ceil(height / grid) * math.ceil(width / grid)
    dit_weights = (total - cfg.depth * block + 2 * block if offload == "blocks" else total) * b
    text = UMT5_XXL_ENCODER_PARAMS * b
    act = rows * tokens * (6 * cfg.hidden + 2 * cfg.mlp_hidden) * b
    vae_weights = (WAN22_VAE_PARAMS if wan22 else WAN_VAE_PARAMS) * 4
    last = WAN22_VAE_LAST if wan22 else WAN_VAE_LAST
    vae_work = 4 * last * 4 * height * width * 4 + frames * 3 * height * width * 4
    resident_text = text if offload == "none" else 0  # offloaded: it left after encoding
    encode = text + dit_weights + vae_weights
    denoise = dit_weights + act + vae_weights + resident_text
    decode = dit_weights + vae_weights + vae_work + resident_text
    terms = dict(dit_weights=dit_weights, text_encoder=text, activations=act, vae_decode=vae_weights + vae_work)
    out = {k: v / GIB for k, v in terms.items()}
    out.update(tokens=tokens, encode=encode / GIB, denoise=denoise / GIB, decode=decode / GIB)
    out["peak"] = max(out["encode"], out["denoise"], out["decode"])
    return out


def wan_memory_table(frames: int = 81, gpus: tuple[int, ...] = (24, 48, 80)) -> list[dict]:
    """Rows for Wan 2.1 1.3B and 14B at 480p and 720p (`frames`), and Wan 2.2 TI2V-5B at its 720p
    (1280x704, 121 frames), bfloat16, each offload mode: peak and what fits."""
    rows = []
    runs = [(name, label, w, h, frames) for name in ("wan2.1-1.3b", "wan2.1-14b") for label, (w, h) in SIZES.items()]
    runs.append(("wan2.2-ti2v-5b", "720p", 1280, 704, 121))
    for (name, label, w, h, n), offload in itertools.product(runs, ("none", "text", "blocks")):
        m = wan_sampling_memory(name, w, h, n, 2, offload)
        fits = [f"{g} GB" for g in gpus if m["peak"] * GIB <= g * 1e9 * 0.95]  # 5% for the framework
        rows.append(dict(model=name, size=f"{label} ({w}x{h}x{n})", offload=offload, tokens=m["tokens"],
                         peak_gib=round(m["peak"], 1), fits=", ".join(fits) or "none of these"))  # fmt: skip
    return rows


# ---------------------------------------------------------------- fine-tuning

FINETUNE_DOC = """What fine-tuning a Wan DiT holds in accelerator memory (GiB), from a latent cache (the VAE
and text encoder are not loaded: `kinema data encode --model` ran them once), bf16 autocast, AdamW,
for one packed sequence of N tokens:

    base weights     LoRA: the frozen base in bfloat16, P * 2 (block offload: the parameters outside
                     the blocks + 2 blocks); full: float32 master weights, P * 4
    trained state    LoRA: the adapters, r (15 D + 2 F) a block on the default targets (qkv, proj,
                     cross q, kv, proj, MLP up, down), each with weight, gradient, 2 AdamW moments
                     and its EMA in float32, 20 bytes; full: P * 16 (gradient, 2 moments, EMA)
    activations      with checkpointing: each block's input kept, depth * N * D * 2, plus one block
                     recomputed with its backward, 2 * N * (8 D + 2 F) * 2; without: depth * N *
                     (8 D + 2 F) * 2. Flash attention keeps no N x N scores
    caption          512 umT5 tokens, negligible

Framework overhead (CUDA context, allocator slack, about 1 - 2 GiB) is not in it."""


def lora_params(cfg, rank: int) -> int:
    """Adapter parameters on the default targets of every block: r (in + out) a Linear."""
    D, F = cfg.hidden, cfg.mlp_hidden
    per_block = (D + 3 * D) + (D + D) + (D + D) + (D + 2 * D) + (D + D) + (D + F) + (F + D)  # = 15 D + 2 F
    return cfg.depth * rank * per_block


def wan_finetune_memory(name: str, width: int, height: int, frames: int = 81, lora_rank: int = 16,
                        checkpointing: bool = True, offload: str = "none") -> dict[str, float]:  # fmt: skip
    """The estimate of FINETUNE_DOC, in GiB: each term and the peak. lora_rank 0: full fine-tuning."""
    if offload not in ("none", "blocks"):
        raise KinemaError(f"offload must be none or blocks; got {offload!r}")
    if offload == "blocks" and not (lora_rank and checkpointing):
        raise KinemaError("block offload streams a frozen base: it needs lora_rank > 0 and checkpointing")
    total, block, cfg = _dit_params(name)
    grid = 32 if name.startswith("wan2.2") else 16
    T = 1 + (frames - 1) // 4
    N = T * math.ceil(height / grid) * math.ceil(width / grid)
    D, F = cfg.hidden, cfg.mlp_hidden
    if lora_rank:
        resident = total - cfg.depth * block + 2 * block if offload == "blocks" else total
        base, trained = resident * 2, lora_params(cfg, lora_rank) * 20
    else:
        base, trained = total * 4, total * 16
    per_token = 8 * D + 2 * F
    act = (cfg.depth * N * D + 2 * N * per_token) * 2 if checkpointing else cfg.depth * N * per_token * 2
    out = dict(base_weights=base / GIB, trained_state=trained / GIB, activations=act / GIB, tokens=N)
    out["peak"] = (base + trained + act) / GIB
    return out


def wan_finetune_table(gpus: tuple[int, ...] = (24, 48, 80)) -> list[dict]:
    """The README's fine-tuning rows: LoRA (rank 16) and full fine-tuning of Wan 2.1 1.3B and 14B at
    480p (832x480) x 81 frames with checkpointing, and LoRA on the 14B with block offload at 81 and
    at 33 frames."""
    rows = []
    runs = [("wan2.1-1.3b", 16, "none", 81), ("wan2.1-1.3b", 0, "none", 81), ("wan2.1-14b", 16, "none", 81),
            ("wan2.1-14b", 16, "blocks", 81), ("wan2.1-14b", 16, "blocks", 33), ("wan2.1-14b", 0, "none", 81)]  # fmt: skip
    for name, rank, offload, frames in runs:
        m = wan_finetune_memory(name, 832, 480, frames, rank, True, offload)
        fits = [f"{g} GB" for g in gpus if m["peak"] * GIB <= g * 1e9 * 0.9]  # 10% for the framework
        rows.append(dict(model=name, training=f"LoRA r{rank}" if rank else "full", offload=offload,
                         frames=frames, tokens=m["tokens"], peak_gib=round(m["peak"], 1),
                         fits=", ".join(fits) or "none of these"))  # fmt: skip
    return rows
