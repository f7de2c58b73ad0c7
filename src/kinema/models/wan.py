"""A diffusers Wan folder (2.1, 2.2 TI2V-5B) in Kinema: its transformer, VAE and umT5 encoder on Kinema's modules.

    parts = load_wan("Wan2.1-T2V-1.3B-Diffusers")     # model_index.json + transformer/ vae/ ...
    Pipeline.from_pretrained("Wan2.1-T2V-1.3B-Diffusers")   # the same, through the one door

Wan 2.1 is the report's design: a causal 3D VAE (4x8x8, 16 channels), a DiT over 1x2x2 spacetime
patches with cross-attention to umT5 tokens, adaLN-single modulation and 3D RoPE, trained with
rectified flow. Kinema's `DiT` expresses its transformer with these options (`wan_dit_config`):
QK RMSNorm across heads, no caption norm or pooled caption vector, the final shift and scale from
a table plus the time embedding, a GELU-tanh MLP of Wan's width and Wan's rotary split of the head
(t gets d - 4 (d // 6) channels, h and w 2 (d // 6) each). The weight map below is the whole
conversion: diffusers' names on the left, Kinema's on the right.

Wan 2.1 was not trained with clean conditioning tokens (t = 0 beside noisy ones), so its tasks
use the "replace" conditioning strategy: the known latent frames, noised to the current time,
overwrite the sample at each step.

Wan 2.2 TI2V-5B (model_index.json's `expand_timesteps`) is the same transformer over a 48-channel
VAE that compresses 4x16x16 (`kinema.vae.wan`), so its grid is 32 pixels. It was trained as the
report conditions: clean first-frame tokens at timestep 0 beside noisy ones (the reference gives
its transformer one timestep a token), which is Kinema's "native" strategy, so every task pins
its known latent frames clean. The two-expert Wan 2.2 A14B models and the CLIP-conditioned Wan
2.1 I2V models are not loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from kinema.dit import DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.models.hf import LazyState, assign_weights, read_config, release_freed_memory

MODEL_INDEX = "model_index.json"


def wan_transformer_dir(path: str | os.PathLike) -> Path | None:
    """The WanTransformer3DModel folder of a Wan folder (its transformer/) or of such a folder
    itself; None for anything else."""
    p = Path(path)
    if is_wan_folder(p):
        return p / "transformer"
    cfg = p / "config.json"
    if cfg.is_file() and read_config(p).get("_class_name") == "WanTransformer3DModel":
        return p
    return None


def is_wan_folder(path: str | os.PathLike) -> bool:
    """A diffusers folder whose model_index.json names a Wan pipeline."""
    index = Path(path) / MODEL_INDEX
    if not index.is_file():
        return False
    return str(read_config(path, MODEL_INDEX).get("_class_name", "")).startswith("Wan")


# ---------------------------------------------------------------- the transformer


def wan_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of a head's rotary channels between (t, h, w): h and w get 2 (d // 6) each."""
    hw = 2 * (head_dim // 6)
    return (head_dim - 2 * hw, hw, hw)


def wan_dit_config(cfg: dict) -> DiTConfig:
    """Kinema's DiTConfig for a diffusers WanTransformer3DModel config.json."""
    unsupported = []
    if cfg.get("image_dim") is not None or cfg.get("added_kv_proj_dim") is not None:
        unsupported.append("image conditioning (image_dim / added_kv_proj_dim: the I2V models)")
    if cfg.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        unsupported.append(f"qk_norm {cfg.get('qk_norm')!r}")
    if not cfg.get("cross_attn_norm", True):
        unsupported.append("cross_attn_norm false")
    if float(cfg.get("eps", 1e-6)) != 1e-6:
        unsupported.append(f"eps {cfg.get('eps')}")
    in_ch = int(cfg.get("in_channels", 16))
    if int(cfg.get("out_channels") or in_ch) != in_ch:
        unsupported.append("out_channels != in_channels")
    if unsupported:
        raise KinemaError("this Wan transformer has options Kinema does not express yet: " + "; ".join(unsupported))
    heads, head_dim = int(cfg.get("num_attention_heads", 40)), int(cfg.get("attention_head_dim", 128))
    return DiTConfig(
        hidden=heads * head_dim,
        depth=int(cfg.get("num_layers", 40)),
        heads=heads,
        in_channels=in_ch,
        patch=tuple(int(p) for p in cfg.get("patch_size", (1, 2, 2))),
        text_dim=int(cfg.get("text_dim", 4096)),
        mlp="gelu",
        ffn_dim=int(cfg.get("ffn_dim", 13824)),
        rope_axes=wan_rope_axes(head_dim),
        rope_theta=10000.0,
        pooled_text=False,
        freq_dim=int(cfg.get("freq_dim", 256)),
        cross_gate=False,
        qk_norm="across",
        text_norm=False,
        final_mod="table",
    )


# diffusers name -> Kinema name, for the tensors that move as they are; "{i}" is a block index.
# The fused projections (q, k, v -> qkv; k, v -> kv), the patch embedding (a Conv3d -> a Linear
# over patch tokens), the output projection (token layout) and the tables are in `wan_dit_state`.
WAN_DIT_NAMES = {
    "condition_embedder.time_embedder.linear_1": "t_embed.0",
    "condition_embedder.time_embedder.linear_2": "t_embed.2",
    "condition_embedder.time_proj": "t_mod",
    "condition_embedder.text_embedder.linear_1": "text_embed.0",
    "condition_embedder.text_embedder.linear_2": "text_embed.2",
    "blocks.{i}.attn1.norm_q": "blocks.{i}.attn.q_norm",
    "blocks.{i}.attn1.norm_k": "blocks.{i}.attn.k_norm",
    "blocks.{i}.attn1.to_out.0": "blocks.{i}.attn.proj",
    "blocks.{i}.attn2.to_q": "blocks.{i}.cross.q",
    "blocks.{i}.attn2.norm_q": "blocks.{i}.cross.q_norm",
    "blocks.{i}.attn2.norm_k": "blocks.{i}.cross.k_norm",
    "blocks.{i}.attn2.to_out.0": "blocks.{i}.cross.proj",
    "blocks.{i}.norm2": "blocks.{i}.norm2",
    "blocks.{i}.ffn.net.0.proj": "blocks.{i}.mlp.up",
    "blocks.{i}.ffn.net.2": "blocks.{i}.mlp.down",
}


def wan_dit_renames(block: int | None) -> Iterator[tuple[str, str]]:
    """(Wan module, Kinema module) of the modules whose tensors only change name: block `block`'s,
    or with None those outside the blocks. The fused and reshaped tensors are mapped apart."""
    for theirs, ours in WAN_DIT_NAMES.items():
        if ("{i}" in theirs) == (block is not None):
            yield theirs.replace("{i}", str(block)), ours.replace("{i}", str(block))


def wan_dit_state(src: dict[str, Tensor] | LazyState, config: DiTConfig) -> dict[str, Tensor]:
    """A WanTransformer3DModel state dict -> Kinema DiT state dict (every tensor accounted for).
    `src` (a dict, or a LazyState that reads each tensor when taken) is emptied as its tensors
    move, so a converted tensor never coexists with its source."""
    return dict(wan_dit_tensors(src, config))


def wan_dit_tensors(src: dict[str, Tensor] | LazyState, config: DiTConfig) -> Iterator[tuple[str, Tensor]]:
    """`wan_dit_state` one (Kinema name, tensor) at a time: with a LazyState, a consumer that
    shards each tensor as it comes (FSDP2 loading) never holds the whole model."""

    def take(name: str) -> Tensor:
        try:
            return src.pop(name)
        except KeyError:
            raise KinemaError(f"the Wan transformer weights lack {name}") from None

    for i in range(config.depth):
        for theirs, ours in wan_dit_renames(i):
            for leaf in ("weight", "bias"):
                if f"{theirs}.{leaf}" in src or leaf == "weight":  # RMSNorms have no bias
                    yield f"{ours}.{leaf}", take(f"{theirs}.{leaf}")
        b = f"blocks.{i}"
        for leaf in ("weight", "bias"):
            yield f"{b}.attn.qkv.{leaf}", torch.cat([take(f"{b}.attn1.to_{p}.{leaf}") for p in "qkv"])
            yield f"{b}.cross.kv.{leaf}", torch.cat([take(f"{b}.attn2.to_{p}.{leaf}") for p in "kv"])
        yield f"{b}.mod_table", take(f"{b}.scale_shift_table").reshape(6, -1)  # (1, 6, D) -> (6, D)
    for theirs, ours in wan_dit_renames(None):
        for leaf in ("weight", "bias"):
            yield f"{ours}.{leaf}", take(f"{theirs}.{leaf}")
    pt, ph, pw = config.patch
    yield "x_embed.weight", rearrange(take("patch_embedding.weight"), "d c pt ph pw -> d (c pt ph pw)")
    yield "x_embed.bias", take("patch_embedding.bias")
    # their output token is laid out (pt ph pw c), ours (c pt ph pw)
    yield "final.out.weight", rearrange(take("proj_out.weight"), "(pt ph pw c) d -> (c pt ph pw) d", pt=pt, ph=ph, pw=pw)
    yield "final.out.bias", rearrange(take("proj_out.bias"), "(pt ph pw c) -> (c pt ph pw)", pt=pt, ph=ph, pw=pw)
    yield "final.mod_table", take("scale_shift_table").reshape(2, -1)  # (1, 2, D) -> (2, D)
    if src:
        raise KinemaError(f"the Wan transformer weights hold tensors Kinema does not map: {sorted(src)[:8]}")


def load_wan_dit(folder: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None) -> DiT:  # fmt: skip
    """A diffusers WanTransformer3DModel folder (config.json + safetensors, sharded or not) as a
    Kinema DiT in eval mode, built on the meta device and assigned the converted weights."""
    config = wan_dit_config(read_config(folder))

    with torch.device("meta"):
        dit = DiT.empty(config)
    state = wan_dit_state(LazyState(folder, device=device, dtype=dtype or torch.float32), config)
    assign_weights(dit, state, f"the weights in {folder} do not fit its config.json")
    del state
    release_freed_memory()
    return dit.eval().requires_grad_(False)


# ---------------------------------------------------------------- the whole folder


@dataclass(frozen=True, eq=False)
class WanParts:
    """What a Wan folder gives a Pipeline: its modules and how it samples by default."""

    dit: DiT
    text_encoder: object
    vae: torch.nn.Module
    defaults: dict
    scheduler: dict  # {"method": "unipc" | "euler", "shift": float, "solver_order": int}
    strategy: str = "replace"


# Sampling defaults of the published Wan 2.1 text-to-video pipelines: 832x480, 81 frames at 16 fps,
# 50 steps, guidance 5 (WanPipeline's defaults).
WAN_DEFAULTS = dict(width=832, height=480, seconds=81 / 16, fps=16.0, steps=50, guidance=5.0, shift_scale=1.0)
# Wan 2.2 TI2V-5B's: 1280x704, 121 frames at 24 fps, 50 steps, guidance 5
WAN22_TI2V_DEFAULTS = dict(width=1280, height=704, seconds=121 / 24, fps=24.0, steps=50, guidance=5.0, shift_scale=1.0)


def wan_scheduler(cfg: dict) -> dict:
    """The sampler of a diffusers scheduler_config.json: {"method", "shift", "solver_order", "schedule"}."""
    kind = cfg.get("_class_name", "")
    if kind == "UniPCMultistepScheduler":
        if not cfg.get("use_flow_sigmas") or cfg.get("prediction_type") != "flow_prediction":
            raise KinemaError("a UniPC scheduler of a Wan folder must use flow sigmas and flow prediction")
        # UniPC tells the model its timesteps cast to whole numbers (int64), its sigmas unrounded
        return {"method": "unipc", "schedule": "unipc", "shift": float(cfg.get("flow_shift", 1.0)),
                "solver_order": int(cfg.get("solver_order", 2)), "integer_timesteps": True}  # fmt: skip
    if kind == "FlowMatchEulerDiscreteScheduler":
        if cfg.get("use_dynamic_shifting"):
            raise KinemaError("a flow-matching scheduler with dynamic shifting is not supported for Wan folders")
        return {"method": "euler", "schedule": "flow_match_euler", "shift": float(cfg.get("shift", 1.0))}
    raise KinemaError(f"scheduler {kind!r} is not supported; Kinema samples Wan with UniPC or flow-matching Euler")


def load_wan(folder: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> WanParts:  # fmt: skip
    """Every part of a diffusers Wan 2.1 text-to-video or Wan 2.2 TI2V-5B folder, on Kinema's modules.

    folder: model_index.json with transformer/, vae/, text_encoder/, tokenizer/, scheduler/.
    dtype: the transformer's and text encoder's weights in memory (float32 default); the VAE
    stays float32 unless dtype is float16 or bfloat16 on a GPU.
    """
    from kinema.text.umt5 import WanTextEncoder
    from kinema.vae.wan import load_wan_vae

    root = Path(folder)
    index = read_config(root, MODEL_INDEX)
    if index.get("transformer_2") not in (None, [None, None]) or index.get("boundary_ratio") is not None:
        raise KinemaError(f"{root} is a two-expert Wan 2.2 model (A14B); Kinema loads Wan 2.1 and Wan 2.2 TI2V-5B")
    if index.get("image_encoder") not in (None, [None, None]):
        raise KinemaError(f"{root} conditions on CLIP image features (Wan 2.1 I2V); Kinema loads text-to-video "
                          "folders and Wan 2.2 TI2V-5B")  # fmt: skip
    per_token = bool(index.get("expand_timesteps"))  # Wan 2.2 TI2V: clean tokens at t = 0 beside noisy ones
    missing = [d for d in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler") if not (root / d).is_dir()]
    if missing:
        raise KinemaError(f"{root} is not a whole Wan folder: it lacks {', '.join(d + '/' for d in missing)}")
    dit = load_wan_dit(root / "transformer", device, dtype)
    vae_dtype = dtype if dtype is not None and torch.device(device).type == "cuda" else None
    vae = load_wan_vae(root / "vae", device=device, dtype=vae_dtype)
    text = WanTextEncoder(root / "text_encoder", root / "tokenizer", device=device, dtype=dtype)
    scheduler = wan_scheduler(read_config(root / "scheduler", "scheduler_config.json"))
    if per_token:
        return WanParts(dit, text, vae, dict(WAN22_TI2V_DEFAULTS), scheduler, "native")
    return WanParts(dit, text, vae, dict(WAN_DEFAULTS), scheduler, "replace")
