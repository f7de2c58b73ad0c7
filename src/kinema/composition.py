"""One scene at any size: compose at a size the model was trained on, then refine at the size asked.

A DiT trained on frames of at most E tokens a side, asked for many more, sees rotary positions
it never saw: the rotations of its slow frequencies come round again and the scene repeats (the
horizon three times down a 1920x1088 frame, the ball a scatter of specks). Two cheap steps:

    compose   the plan sampled at the largest trained size of its aspect (every side scaled by
              one factor, so no stretch): the layout, one sky, one ground, the objects where
              they go, made where the model knows positions. Cheap: E x E tokens at most.
    refine    that latent upsampled to the full grid, noised to t = `REFINE` (0.3), sampled from
              there at the size asked (SDEdit), with the DiT's positions scaled into the
              trained range (`kinema.dit.position_scale`, by frequency). From t = 0.3 the
              layout is set and the few steps left sharpen what is there; started higher, the
              full-size steps add a grid of dots to flat colour, and started at t = 1 (no
              composition) the scene repeats.

    small = compose_plan(plan, extent, patch, least)  # any task's plan; None: it fits the model
    if small is not None:
        plan = refine_plan(plan, sample(small))   # full size, from the composed latent at t = 0.3
    z = sample(plan)                              # as `Pipeline.sample` does

A frame shorter than any the model trained on (32x32 for a model trained from 64 px) is composed
the other way: at the shortest trained side, scaled down, and refined from t = `REFINE_UP`
(0.1) only, as the model knows such frames least (from 0.3 it zooms back into a blurred crop).
Pinned frames (animate, extend, connect, loop, long) are scaled to the composition size and
pinned at their own size again in the refinement; an SDEdit plan that already starts at or
below the refinement time needs no composition. The model's `DiTConfig.trained_extent` (tokens
of (t, h, w)) and `trained_min_side` are written by the trainer; time is never scaled here
(long videos go in windows).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from kinema.sampling import Plan

REFINE = 0.3  # the time the full-size refinement starts from (0.5 left a grid of dots on flat colour)
REFINE_UP = 0.1  # the same after a composition larger than the frame: the model knows small frames least


def refine_time(shape: tuple[int, int, int, int], size: tuple[int, int]) -> float:
    """The time to refine a latent of `shape` at, composed at latent `size` (H, W)."""
    return REFINE if size[0] * size[1] < shape[2] * shape[3] else REFINE_UP


def compose_grid(shape: tuple[int, int, int, int], extent: tuple[int, int, int] | None,
                 patch: tuple[int, int, int], least: int = 0) -> tuple[int, int] | None:  # fmt: skip
    """The latent (H, W) to compose a latent of `shape` (C, T, H, W) at, every side times one
    factor, in whole patches; None when it needs none. Larger than the extent in h or w: the
    factor min(extent / tokens) over them. Shorter than `least` tokens (the shortest side the
    model was trained on): the factor that brings the short side up to it, as far as the extent
    allows (a 32x32 frame is composed as a 64x64 one and scaled down)."""
    if extent is None:
        return None
    _, _, H, W = shape
    ph, pw = patch[1], patch[2]
    tokens = (H // ph, W // pw)
    room = min((e / n for e, n in zip(extent[1:], tokens, strict=True) if e > 0), default=math.inf)
    scale = room if room < 1.0 else min(room, max(1.0, least / min(tokens)))
    if scale == 1.0:
        return None
    h = max(1, math.floor(tokens[0] * scale + 0.5))
    w = max(1, math.floor(tokens[1] * scale + 0.5))
    return None if (h, w) == tokens else (h * ph, w * pw)


def resize(z: Tensor, height: int, width: int) -> Tensor:
    """A latent (C, T, H, W) at (height, width): area mean when smaller, bilinear when larger
    (per axis, so a mixed resize is bilinear)."""
    C, T, H, W = z.shape
    flat = z.reshape(C * T, 1, H, W).float()
    mode = dict(mode="area") if height <= H and width <= W else dict(mode="bilinear", align_corners=False)
    return F.interpolate(flat, size=(height, width), **mode).reshape(C, T, height, width).to(z.dtype)


def compose_plan(plan: Plan, extent: tuple[int, int, int] | None, patch: tuple[int, int, int],
                 least: int = 0) -> Plan | None:  # fmt: skip
    """The plan at its composition size (its pinned values and start latent scaled to it), or
    None when the plan needs none or starts at or below its refinement (nothing to compose)."""
    size = compose_grid(plan.shape, extent, patch, least)
    if size is None or plan.t_start <= refine_time(plan.shape, size):
        return None
    C, T, _, _ = plan.shape

    def scaled(x: Tensor | None) -> Tensor | None:
        return None if x is None else resize(x, *size)

    return Plan((C, T, *size), plan.pinned, scaled(plan.values), scaled(plan.start), plan.t_start)


def refine_plan(plan: Plan, composed: Tensor) -> Plan:
    """The plan at its own size, started at `refine_time` from the composed latent resized to
    it: its pinned frames stay pinned to their own values."""
    _, _, H, W = plan.shape
    t = refine_time(plan.shape, tuple(composed.shape[-2:]))
    return Plan(plan.shape, plan.pinned, plan.values, resize(composed, H, W), min(t, plan.t_start))
