"""Rectified flow: the training objective and the timestep schedule, as small pure functions.

Convention: t = 0 is clean data, t = 1 is pure noise.

    x_t = (1 - t) x_0 + t e,   e ~ N(0, I)
    v   = dx_t/dt = e - x_0     (what the model predicts)

Sampling integrates dx/dt = v from t = 1 down to t = 0 (see `get_schedule`).

Training draws t from a logit-normal distribution (SD3), then shifts it towards noise for
larger inputs: more tokens carry more redundant signal, so the same t destroys less of it and
the schedule must spend more time at high noise (SD3, section 5.3.2).

Frame conditioning (image -> video, extension, loops, connecting clips) is trained by pinning
some latent frames clean: their tokens get t = 0 and no loss. `draw_condition_mask` draws which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from kinema.errors import KinemaError

# ---------------------------------------------------------------- interpolation and target


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """Right-pad t with singleton dims so that it broadcasts over x (t is (B,), (B, L), ...)."""
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t noise; t has the leading shape of x0, e.g. (B, L) for tokens (B, L, D)."""
    t = _bcast(t, x0).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """The regression target v = noise - x0 (constant along the straight path)."""
    return noise - x0


def denoised(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """x0 estimated from x_t and a velocity: x0 = x_t - t v."""
    return x_t - _bcast(t, x_t).to(x_t.dtype) * v


# ---------------------------------------------------------------- timesteps


def sample_t_logit_normal(
    n: int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n,) timesteps t = sigmoid(u), u ~ N(mean, std^2): in (0, 1), dense in the middle (SD3)."""
    u = torch.randn(n, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def shift_t(t: Tensor | float, shift: float) -> Tensor | float:
    """Shift timesteps towards noise: t' = shift t / (1 + (shift - 1) t).

    shift = 1 is the identity; shift > 1 raises every t in (0, 1); 0 and 1 are fixed. This is the
    SNR-preserving change of resolution of SD3: scaling the noise std by `shift` relative to the
    signal.
    """
    return shift * t / (1 + (shift - 1) * t)


# Two anchors (number of tokens, shift) for `resolution_shift`: 256 tokens (a 256 x 256 image
# with the 8x VAE and 2x2 patches) keeps t as drawn; 4096 tokens (1024 x 1024, or a short clip)
# uses shift 3, the value SD3 uses at 1024^2.
SHIFT_ANCHORS: tuple[tuple[int, float], tuple[int, float]] = ((256, 1.0), (4096, 3.0))


def resolution_shift(
    num_tokens: int, anchors: tuple[tuple[int, float], tuple[int, float]] = SHIFT_ANCHORS
) -> float:
    """Shift of t for a sample of `num_tokens` tokens: log(shift) is linear in log(num_tokens).

    With anchors (n0, s0), (n1, s1): shift = s0 * (n / n0) ** k, k = log(s1/s0) / log(n1/n0).
    The default anchors give k = log 3 / log 16 ~ 0.40, a little below SD3's sqrt(n / n0) argument
    (k = 0.5), which over-noises very long sequences. Outside the anchors it extrapolates by the
    same power law: a 64k-token video gets ~9, a 16-token toy clip ~0.33 (less noise).
    """
    (n0, s0), (n1, s1) = anchors
    if num_tokens <= 0:
        raise KinemaError(f"num_tokens must be positive; got {num_tokens}")
    k = math.log(s1 / s0) / math.log(n1 / n0)
    return s0 * (num_tokens / n0) ** k


def training_t(
    num_tokens: Sequence[int],
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str | None = None,
    shift_scale: float = 1.0,
    plain_prob: float = 0.0,
) -> Tensor:
    """(S,) training timesteps, one per sample: logit-normal, shifted by each sample's size.

    shift_scale multiplies every sample's `resolution_shift`. The anchors suit 8x VAEs at image
    sizes of 256 px and up; small latents (a 64 px world clip is 16 tokens a frame) get a shift
    below 1, so training almost never sees t > 0.95, where only the caption tells what to draw
    (the noisy input still shows the global colours). The sampler must use the same scale.
    A large scale starves the other end: at 12, a 48-token clip draws t < 0.5, where objects and
    edges take shape, 3.5% of the time. plain_prob: the share of samples drawn with the plain
    resolution shift instead (scale 1), so that both ends are trained.
    """
    if shift_scale <= 0:
        raise KinemaError(f"shift_scale must be positive; got {shift_scale}")
    if not 0 <= plain_prob <= 1:
        raise KinemaError(f"plain_prob must be in [0, 1]; got {plain_prob}")
    t = sample_t_logit_normal(len(num_tokens), mean, std, generator, device)
    scale = torch.full((len(num_tokens),), float(shift_scale), dtype=torch.float64)
    if plain_prob > 0:  # drawn only then: runs without it keep their random stream
        where = generator.device if generator is not None else None  # the generator's own device
        plain = torch.rand(len(num_tokens), generator=generator, device=where, dtype=torch.float64).cpu() < plain_prob
        scale = torch.where(plain, torch.ones_like(scale), scale)
    shift = torch.tensor([float(c) * resolution_shift(n) for c, n in zip(scale, num_tokens)], device=t.device)
    return shift_t(t, shift)


def get_schedule(steps: int, num_tokens: int, shift: float | None = None, shift_scale: float = 1.0) -> list[float]:
    """steps + 1 decreasing times from 1 (noise) to 0 (data) for an Euler/Heun sampler.

    Uniform in t, then shifted by shift_scale * `resolution_shift(num_tokens)` (or an explicit
    `shift`), so that larger samples take more of their steps at high noise, as they were trained
    (shift_scale: the one the model was trained with, see `training_t`).
    """
    if steps < 1:
        raise KinemaError(f"steps must be at least 1; got {steps}")
    if shift_scale <= 0:
        raise KinemaError(f"shift_scale must be positive; got {shift_scale}")
    s = shift_scale * resolution_shift(num_tokens) if shift is None else shift
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift_t(ts, s).tolist()


# ---------------------------------------------------------------- frame conditioning

CONDITION_KINDS: tuple[str, ...] = ("none", "first_frame", "first_k", "last_k", "first_last", "random")

# Training mix of condition kinds for videos. Half the steps are plain text -> video; the rest
# teach the tasks: first_frame (image -> video) most, first_k / last_k (extend forward /
# backward, long video), first_last (connect two clips, loops), random (interpolation, robustness).
# Images (T = 1) always draw "none".
DEFAULT_CONDITION_PROBS: dict[str, float] = {
    "none": 0.5,
    "first_frame": 0.2,
    "first_k": 0.1,
    "last_k": 0.1,
    "first_last": 0.05,
    "random": 0.05,
}


def condition_mask(
    kind: str, num_frames: int, k: int = 1, generator: torch.Generator | None = None, p: float = 0.25
) -> Tensor:
    """(T,) bool, True on the frames pinned clean, for one kind of conditioning.

    kind: none | first_frame | first_k (k frames at the start) | last_k (k at the end) |
    first_last (k at each end) | random (each frame with probability p; at least one frame is
    always left free). T counts token frames (latent frames / pt; with pt = 1, latent frames).
    """
    T = num_frames
    m = torch.zeros(T, dtype=torch.bool)
    if kind == "none":
        pass
    elif kind == "first_frame":
        m[:1] = True
    elif kind == "first_k":
        m[:k] = True
    elif kind == "last_k":
        m[T - k :] = True
    elif kind == "first_last":
        m[:k] = True
        m[T - k :] = True
    elif kind == "random":
        m = torch.rand(T, generator=generator) < p
        if m.all():
            m[torch.randint(T, (1,), generator=generator)] = False
    else:
        raise KinemaError(f"unknown condition kind {kind!r}; choose from {', '.join(CONDITION_KINDS)}")
    return m


def draw_condition_mask(
    num_frames: int,
    generator: torch.Generator | None = None,
    probs: Mapping[str, float] | None = None,
) -> Tensor:
    """(T,) bool: a random frame-conditioning pattern for one training sample.

    Draws a kind from `probs` (default DEFAULT_CONDITION_PROBS; missing kinds have probability 0)
    and its k, always leaving at least one frame free so that the sample has a loss:
      first_k, last_k: k uniform in [1, T - 1]
      first_last:      k uniform in [1, (T - 1) // 2] at each end (needs T >= 3)
    A kind that does not fit T (an image, T = 1, fits none of them) falls back to "none".
    """
    probs = DEFAULT_CONDITION_PROBS if probs is None else probs
    unknown = set(probs) - set(CONDITION_KINDS)
    if unknown:
        raise KinemaError(f"unknown condition kinds {sorted(unknown)}; choose from {', '.join(CONDITION_KINDS)}")
    kinds = list(probs)
    weights = torch.tensor([float(probs[k]) for k in kinds], dtype=torch.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise KinemaError(f"condition probabilities must be non-negative and not all zero; got {dict(probs)}")
    kind = kinds[int(torch.multinomial(weights, 1, generator=generator))]
    T = num_frames
    fits = {"none": True, "first_frame": T >= 2, "first_k": T >= 2, "last_k": T >= 2,
            "first_last": T >= 3, "random": T >= 2}  # fmt: skip
    if not fits[kind]:
        return condition_mask("none", T)
    k = 1
    if kind in ("first_k", "last_k"):
        k = int(torch.randint(1, T, (1,), generator=generator))
    elif kind == "first_last":
        k = int(torch.randint(1, (T - 1) // 2 + 1, (1,), generator=generator))
    return condition_mask(kind, T, k=k, generator=generator)


def pin_conditions(t: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token t with conditioned tokens pinned clean: (t', loss_mask).

    t: (..., L) per-token timesteps; cond: (..., L) bool, True where the token is a condition.
    Returns t' = 0 on conditions (so x_t is the clean latent there) and loss_mask = ~cond.
    """
    return torch.where(cond, torch.zeros_like(t), t), ~cond


# ---------------------------------------------------------------- loss


def flow_loss(model_out: Tensor, target: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the tokens where loss_mask is True.

    model_out, target: (B, L, D); loss_mask: (B, L) bool or float weights, or None (all tokens).
    Each token's error is the mean over its D features; the loss is the mean over kept tokens
    (0 if none is kept, with a gradient of zero).
    """
    err = (model_out.float() - target.float()).pow(2).mean(dim=-1)  # (B, L)
    if loss_mask is None:
        return err.mean()
    w = loss_mask.to(err.dtype)
    kept = torch.where(w > 0, err * w, torch.zeros_like(err))  # no NaN from ignored tokens
    return kept.sum() / w.sum().clamp(min=1.0)
