"""The one sampler: a plan of pinned latent frames, a start latent and a start time -> a latent.

    noise = get_noise(plan.shape, seed)
    model_fn = make_model_fn(dit, text, text_mask)      # rows: [caption, negative caption]
    latent = denoise(model_fn, noise, plan, steps=30, guidance=4.0)

Every task (text -> video, image -> video, extension, loops, connecting clips, SDEdit) is a
`Plan` built in `tasks.py`; this file knows nothing about tasks.

The sampler integrates the rectified flow dx/dt = v from t = t_start down to 0 on the shifted
schedule of `flow.get_schedule`, with Euler steps (default) or Heun's second-order correction.
Latents are normalized (`vae.normalize_latent`), one sample, (C, T, H, W).

Pinned frames. A plan pins some latent frames clean: their tokens get t = 0 (as in training,
`flow.pin_conditions`) and their values are written back after every update, so the model's
velocity on them is ignored and they leave the sampler exactly as given.

Classifier-free guidance. `model_fn` sees a batch whose row 0 reads the caption and row 1 the
negative caption ("" = unconditional). With guidance g, one forward of both rows gives
v = v_neg + g (v_cond - v_neg); g = 1 runs row 0 alone and is exactly the conditional velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from kinema.errors import KinemaError
from kinema.flow import get_schedule, interpolate
from kinema.patches import DEFAULT_PATCH, Patch, grid_size, patchify, positions, unpatchify

# model_fn(x, t) -> v: x (B, C, T, H, W) latents, t (B, T) time of each latent frame, v like x.
# Row b reads caption row b (0: the caption, 1: the negative caption).
ModelFn = Callable[[Tensor, Tensor], Tensor]
# callback(step, steps, x): after each step, with the current latent (for a web page's progress)
Callback = Callable[[int, int, Tensor], None]

METHODS = ("euler", "heun")


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True, eq=False)
class Plan:
    """What the sampler makes: a normalized latent of `shape` (C, T, H, W).

    pinned:  (T,) bool, latent frames held clean (t = 0) at `values`
    values:  (C, T, H, W) clean latents, read on the pinned frames (None when nothing is pinned)
    start:   (C, T, H, W) clean latent to start from (SDEdit), or None: start from pure noise
    t_start: time the sampler starts at; the start latent is noised to it: (1 - t) start + t e
    """

    shape: tuple[int, int, int, int]
    pinned: Tensor
    values: Tensor | None = None
    start: Tensor | None = None
    t_start: float = 1.0

    def __post_init__(self):
        C, T, H, W = self.shape
        if self.pinned.shape != (T,) or self.pinned.dtype != torch.bool:
            raise KinemaError(f"a plan's pinned mask must be (T,) = ({T},) bool; got {tuple(self.pinned.shape)}")
        if self.pinned.any() and (self.values is None or tuple(self.values.shape) != tuple(self.shape)):
            raise KinemaError(f"a plan that pins frames needs values of shape {tuple(self.shape)}")
        if self.pinned.all():
            raise KinemaError("a plan must leave at least one latent frame to generate")
        if self.start is not None and tuple(self.start.shape) != tuple(self.shape):
            raise KinemaError(f"a plan's start latent must have shape {tuple(self.shape)}")
        if not 0.0 <= self.t_start <= 1.0:
            raise KinemaError(f"t_start must be in [0, 1]; got {self.t_start}")
        if self.start is None and self.t_start != 1.0:
            raise KinemaError("a plan without a start latent starts from pure noise: t_start must be 1")

    @property
    def frames(self) -> int:
        """Latent frames T."""
        return self.shape[1]

    def num_tokens(self, patch: Patch = DEFAULT_PATCH) -> int:
        t, h, w = grid_size(self.shape, patch)
        return t * h * w

    def pin(self, x: Tensor) -> Tensor:
        """x with the pinned frames set to their values (a copy when anything is pinned)."""
        if self.values is None or not self.pinned.any():
            return x
        m = self.pinned.to(x.device)[None, :, None, None]  # (1, T, 1, 1)
        return torch.where(m, self.values.to(x.device, x.dtype), x)

    def frame_times(self, t: float, device: torch.device | str | None = None) -> Tensor:
        """(T,) time of each latent frame at sampler time t: 0 on pinned frames, t elsewhere."""
        return torch.where(self.pinned, 0.0, float(t)).to(device=device, dtype=torch.float32)


# ---------------------------------------------------------------- noise and schedule


def get_noise(
    shape: tuple[int, ...], seed: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise of `shape`, drawn on the CPU from `seed`: the same on every device."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def plan_schedule(
    steps: int, num_tokens: int, t_start: float = 1.0, shift: float | None = None, shift_scale: float = 1.0
) -> list[float]:
    """Decreasing times from t_start to 0: the shifted schedule of `steps` steps from 1, cut at t_start.

    t_start = 1 gives `get_schedule(steps, num_tokens)`. A lower t_start (SDEdit) keeps the
    schedule's times below it, so it takes the steps the full run would take from there on
    (fewer for a lighter edit, as in diffusers' image-to-image); t_start = 0 gives [0]: no step.
    """
    full = get_schedule(steps, num_tokens, shift, shift_scale)
    if t_start >= 1.0:
        return full
    return [float(t_start)] + [t for t in full if t < t_start]


# ---------------------------------------------------------------- the model


def make_model_fn(
    dit: torch.nn.Module,
    text: Tensor,
    text_mask: Tensor,
    patch: Patch | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> ModelFn:
    """A ModelFn over a DiT: latents (B, C, T, H, W) and per-frame times (B, T) -> velocity.

    text, text_mask: (R, L, D), (R, L) caption rows from a TextEncoder; batch row b reads
    caption row b. autocast_dtype: run the DiT under autocast (bf16 on a GPU); the result is fp32.
    """
    patch = tuple(patch or dit.config.patch)
    dtype = next(dit.parameters()).dtype
    text = text.to(dtype)

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        grid = grid_size(x.shape[1:], patch)
        _, h, w = grid
        tokens = torch.stack([patchify(xi, patch) for xi in x]).to(dtype)  # (B, L, D)
        pos = positions(grid, device=x.device)  # (L, 3)
        t_tok = t.reshape(B, T // patch[0], patch[0]).amax(-1)  # (B, T'): a token is noisy if any frame is
        t_tok = t_tok.repeat_interleave(h * w, dim=1)  # (B, L)
        rows = torch.arange(B, device=x.device)
        if autocast_dtype is not None:
            with torch.autocast(x.device.type, dtype=autocast_dtype):
                v = dit(tokens, pos, t_tok, text, text_mask, text_doc=rows)  # (B, L, D)
        else:
            v = dit(tokens, pos, t_tok, text, text_mask, text_doc=rows)  # (B, L, D)
        return torch.stack([unpatchify(vi.float(), grid, patch) for vi in v])  # (B, C, T, H, W)

    return model_fn


def guided_velocity(model_fn: ModelFn, x: Tensor, t: Tensor, guidance: float) -> Tensor:
    """Velocity of one latent x (C, T, H, W) at frame times t (T,), with classifier-free guidance.

    guidance 1: the conditional velocity (row 0 alone). Otherwise one batched forward of the
    caption (row 0) and the negative caption (row 1): v_neg + guidance (v_cond - v_neg).
    """
    if guidance == 1.0:
        return model_fn(x[None], t[None])[0]
    v = model_fn(torch.stack([x, x]), torch.stack([t, t]))  # (2, C, T, H, W)
    return v[1] + guidance * (v[0] - v[1])


# ---------------------------------------------------------------- the sampler


def start_latent(plan: Plan, noise: Tensor) -> Tensor:
    """The latent the sampler starts from: noise, or the plan's start noised to t_start; pins set."""
    if tuple(noise.shape) != tuple(plan.shape):
        raise KinemaError(f"noise of shape {tuple(noise.shape)} does not fit the plan's {tuple(plan.shape)}")
    x = noise
    if plan.start is not None:
        start = plan.start.to(noise.device, noise.dtype)
        x = interpolate(start, noise, torch.tensor(plan.t_start, dtype=noise.dtype))
    return plan.pin(x)


@torch.inference_mode()
def denoise(
    model_fn: ModelFn,
    x: Tensor,
    plan: Plan,
    steps: int,
    guidance: float = 1.0,
    method: str = "euler",
    shift: float | None = None,
    patch: Patch = DEFAULT_PATCH,
    progress: bool = True,
    shift_scale: float = 1.0,
    callback: Callback | None = None,
) -> Tensor:
    """Sample the plan from noise x (C, T, H, W) (see `get_noise`); returns the clean latent.

    steps: steps of the full schedule from t = 1 (a plan starting lower takes those below it);
    method: "euler" (one model call a step) or "heun" (two, the last step Euler);
    shift: the schedule's shift (None: shift_scale times `flow.resolution_shift` of the plan's
    token count; shift_scale is the one the model was trained with).
    Deterministic: the same x, plan and arguments give the same latent.
    """
    if method not in METHODS:
        raise KinemaError(f"unknown sampler {method!r}; choose from {', '.join(METHODS)}")
    times = plan_schedule(steps, plan.num_tokens(patch), plan.t_start, shift, shift_scale)
    x = start_latent(plan, x)
    bar = None
    if progress and len(times) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(times) - 1, desc=f"sample ({method})", unit="step", leave=False)
    try:
        for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
            dt = t_next - t_cur  # negative: towards data
            v = guided_velocity(model_fn, x, plan.frame_times(t_cur, x.device), guidance)
            x_next = plan.pin(x + dt * v)
            if method == "heun" and t_next > 0:
                v2 = guided_velocity(model_fn, x_next, plan.frame_times(t_next, x.device), guidance)
                x_next = plan.pin(x + dt * 0.5 * (v + v2))
            x = x_next
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(i + 1, len(times) - 1, x)
    finally:
        if bar is not None:
            bar.close()
    return x
