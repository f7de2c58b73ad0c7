"""The one sampler: a plan of pinned latent frames, a start latent and a start time -> a latent.

    noise = get_noise(plan.shape, seed)
    model_fn = make_model_fn(dit, text, text_mask)      # rows: [caption, negative caption]
    latent = denoise(model_fn, noise, plan, steps=30, guidance=4.0)

Every task (text -> video, image -> video, extension, loops, connecting clips, SDEdit) is a
`Plan` built in `tasks.py`; this file knows nothing about tasks.

The sampler integrates the rectified flow dx/dt = v from t = t_start down to 0 on the shifted
schedule of `flow.get_schedule` (or explicit `times`, e.g. a diffusers scheduler's sigmas from
`reference_schedule`), with Euler steps (default), Heun's second-order correction, or UniPC
(the multistep predictor-corrector of Wan 2.1's default scheduler, one model call a step).
Latents are normalized (`vae.normalize_latent`), one sample, (C, T, H, W).

Pinned frames, two strategies. "native" (Kinema's models): pinned tokens get t = 0 (as in
training, `flow.pin_conditions`) and their clean values are written back after every update, so
the model's velocity on them is ignored. "replace" (models never trained with clean tokens, e.g.
Wan 2.1): every frame gets the sampler's time t and the pinned frames are written back noised to
it, (1 - t) values + t e, with the sampler's starting noise e. Either way they leave the sampler
exactly as given.

Classifier-free guidance. `model_fn` sees a batch whose row 0 reads the caption and row 1 the
negative caption ("" = unconditional). With guidance g, one forward of both rows gives
v = v_neg + g (v_cond - v_neg); g = 1 runs row 0 alone and is exactly the conditional velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kinema.errors import KinemaError
from kinema.flow import get_schedule, interpolate, shift_t
from kinema.patches import DEFAULT_PATCH, Patch, grid_size, patchify, positions, unpatchify

# model_fn(x, t) -> v: x (B, C, T, H, W) latents, t (B, T) time of each latent frame, v like x.
# Row b reads caption row b (0: the caption, 1: the negative caption).
ModelFn = Callable[[Tensor, Tensor], Tensor]
# callback(step, steps, x): after each step, with the current latent (for a web page's progress)
Callback = Callable[[int, int, Tensor], None]

METHODS = ("euler", "heun", "unipc")
# how pinned frames are conditioned: "native" clean at t = 0, "replace" noised to the sampler's t
STRATEGIES = ("native", "replace")


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

    def pin_noised(self, x: Tensor, noise: Tensor, t: float) -> Tensor:
        """x with the pinned frames set to their values noised to time t: (1 - t) values + t noise."""
        if self.values is None or not self.pinned.any():
            return x
        m = self.pinned.to(x.device)[None, :, None, None]  # (1, T, 1, 1)
        noised = (1 - t) * self.values.to(x.device, x.dtype) + t * noise.to(x.device, x.dtype)  # (C, T, H, W)
        return torch.where(m, noised, x)


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
    return cut_schedule(get_schedule(steps, num_tokens, shift, shift_scale), t_start)


def cut_schedule(times: list[float], t_start: float = 1.0) -> list[float]:
    """A schedule from 1 cut for a plan starting at t_start: t_start, then the times below it."""
    if t_start >= 1.0:
        return list(times)
    return [float(t_start)] + [t for t in times if t < t_start]


def check_schedule(times: list[float]) -> list[float]:
    """times as floats, or a KinemaError unless they decrease strictly from <= 1 to exactly 0."""
    times = [float(t) for t in times]
    if len(times) < 2 or times[-1] != 0.0 or times[0] > 1.0:
        raise KinemaError(f"a schedule needs at least two times from at most 1 down to exactly 0; got {times}")
    if any(a <= b for a, b in zip(times, times[1:])):
        raise KinemaError(f"a schedule's times must decrease strictly; got {times}")
    return times


# ---------------------------------------------------------------- diffusers' reference schedules
# The sigma lists (sigma = t) that diffusers' flow-matching schedulers step through after
# `set_timesteps(steps)`, rebuilt from their own construction (float64 numpy, then float32) so that
# `denoise(..., times=...)` walks exactly the reference's times. Neither is a shifted linspace
# from 1 to 0: both stop the linspace short of 0 and jump to 0 at the end.


def unipc_flow_schedule(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> list[float]:
    """steps + 1 times of `UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift)`.

    linspace(1, 1 / N, steps + 1) without its last point, shifted, the first lowered by 1e-6
    (so that UniPC's log-SNR is finite at it), cast to float32, then a final 0
    (final_sigmas_type "zero"). Wan 2.1: shift 3 (480p) or 5 (720p).
    """
    _check_reference_args(steps, shift)
    sigmas = np.linspace(1, 1 / num_train_timesteps, steps + 1)[:-1]  # (steps,) float64
    sigmas = shift_t(sigmas, shift)
    if abs(sigmas[0] - 1) < 1e-6:
        sigmas[0] -= 1e-6
    return np.append(sigmas, 0.0).astype(np.float32).tolist()


def flow_match_euler_schedule(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> list[float]:
    """steps + 1 times of `FlowMatchEulerDiscreteScheduler(shift=shift)` (no dynamic shifting).

    The scheduler's training sigmas k / N (k = N .. 1, float32) are shifted, and their ends
    bound a linspace of `steps` points (float64), which is shifted *again*, cast to float32, then
    a final 0. So the last time before 0 is the twice-shifted 1 / N, not 0.
    """
    _check_reference_args(steps, shift)
    N = num_train_timesteps
    ends = shift_t(torch.tensor([float(N), 1.0], dtype=torch.float32) / N, shift)  # (2,) float32, as at init
    sigma_max, sigma_min = ends[0].item(), ends[1].item()
    sigmas = np.linspace(sigma_max * N, sigma_min * N, steps) / N  # (steps,) float64
    sigmas = shift_t(sigmas, shift)
    return np.append(sigmas, 0.0).astype(np.float32).tolist()


REFERENCE_SCHEDULES = {"unipc": unipc_flow_schedule, "flow_match_euler": flow_match_euler_schedule}


def reference_schedule(kind: str, steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> list[float]:
    """The times of diffusers' scheduler `kind` ("unipc" or "flow_match_euler"), for `denoise(times=)`."""
    if kind not in REFERENCE_SCHEDULES:
        raise KinemaError(f"unknown reference schedule {kind!r}; choose from {', '.join(REFERENCE_SCHEDULES)}")
    return REFERENCE_SCHEDULES[kind](steps, shift, num_train_timesteps)


def _check_reference_args(steps: int, shift: float) -> None:
    if steps < 1:
        raise KinemaError(f"steps must be at least 1; got {steps}")
    if shift <= 0:
        raise KinemaError(f"shift must be positive; got {shift}")


# ---------------------------------------------------------------- the model


def make_model_fn(
    dit: torch.nn.Module,
    text: Tensor,
    text_mask: Tensor,
    patch: Patch | None = None,
    autocast_dtype: torch.dtype | None = None,
    batch_rows: bool | None = None,
) -> ModelFn:
    """A ModelFn over a DiT: latents (B, C, T, H, W) and per-frame times (B, T) -> velocity.

    text, text_mask: (R, L, D), (R, L) caption rows from a TextEncoder; batch row b reads
    caption row b. autocast_dtype: run the DiT under autocast (bf16 on a GPU); the result is fp32.
    batch_rows: run the B rows (guidance's caption and negative caption) in one forward (default
    on a GPU, where a larger batch fills the device) or one row at a time (default on a CPU: a
    row of a video already keeps the cores busy, measured no slower, and the activations held at
    once are halved).
    """
    patch = tuple(patch or dit.config.patch)
    dtype = next(dit.parameters()).dtype
    text = text.to(dtype)
    if batch_rows is None:  # a DiT that splits rows over ranks (guidance on two ranks) takes them together
        batch_rows = text.device.type != "cpu" or getattr(dit, "row_group", None) is not None

    def forward(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        grid = grid_size(x.shape[1:], patch)
        _, h, w = grid
        tokens = torch.stack([patchify(xi, patch) for xi in x]).to(dtype)  # (B, L, D)
        pos = positions(grid, device=x.device)  # (L, 3)
        t_tok = t.reshape(B, T // patch[0], patch[0]).amax(-1)  # (B, T'): a token is noisy if any frame is
        t_tok = t_tok.repeat_interleave(h * w, dim=1)  # (B, L)
        if autocast_dtype is not None:
            with torch.autocast(x.device.type, dtype=autocast_dtype):
                v = dit(tokens, pos, t_tok, text, text_mask, text_doc=rows)  # (B, L, D)
        else:
            v = dit(tokens, pos, t_tok, text, text_mask, text_doc=rows)  # (B, L, D)
        return torch.stack([unpatchify(vi.float(), grid, patch) for vi in v])  # (B, C, T, H, W)

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        rows = torch.arange(x.shape[0], device=x.device)
        if batch_rows or x.shape[0] == 1:
            return forward(x, t, rows)
        return torch.cat([forward(x[b : b + 1], t[b : b + 1], rows[b : b + 1]) for b in range(x.shape[0])])

    return model_fn


def integer_timesteps(model_fn: ModelFn, num_train_timesteps: int = 1000) -> ModelFn:
    """model_fn told its times as whole training steps, floor(N t) / N, while the sampler keeps the
    exact times: diffusers' UniPC hands the model its timesteps cast to int64 (Wan's pipelines)."""

    def whole_steps(x: Tensor, t: Tensor) -> Tensor:
        return model_fn(x, torch.floor(t * num_train_timesteps) / num_train_timesteps)

    return whole_steps


def guided_velocity(model_fn: ModelFn, x: Tensor, t: Tensor, guidance: float) -> Tensor:
    """Velocity of one latent x (C, T, H, W) at frame times t (T,), with classifier-free guidance.

    guidance 1: the conditional velocity (row 0 alone). Otherwise one batched forward of the
    caption (row 0) and the negative caption (row 1): v_neg + guidance (v_cond - v_neg).
    """
    if guidance == 1.0:
        return model_fn(x[None], t[None])[0]
    v = model_fn(torch.stack([x, x]), torch.stack([t, t]))  # (2, C, T, H, W)
    return v[1] + guidance * (v[0] - v[1])


# ---------------------------------------------------------------- UniPC
# UniPC (Zhao et al. 2023, arXiv:2302.04867) in the form of diffusers' UniPCMultistepScheduler
# with use_flow_sigmas, prediction_type "flow_prediction", predict_x0, solver_type "bh2": on the
# flow path x_t = alpha x0 + sigma e with alpha = 1 - t, sigma = t, the model's velocity gives
# x0 = x - t v, and each update is an exponential integrator in lambda = log(alpha / sigma)
# extrapolating the last x0 predictions. A step is: correct the latent the model was just called
# on with that call's x0 (UniC), then predict the next latent from the corrected one (UniP).


def log_snr(t: Tensor) -> Tensor:
    """lambda = log(alpha / sigma) = log(1 - t) - log(t): -inf at t = 1, +inf at t = 0."""
    return torch.log(1 - t) - torch.log(t)


def unipc_update(x: Tensor, x0s: list[Tensor], ts: list[float], t_to: float, x0_to: Tensor | None = None) -> Tensor:
    """One UniPC update (bh2, in x0) of x, the latent at time ts[-1], to time t_to.

    x0s: the x0 predictions at times ts, oldest first, the last one at x's time; p = len(x0s) is
    the order. x0_to None: the predictor UniP-p, returns the latent at t_to. x0_to given (the x0
    of the model's call at t_to on the predicted latent): the corrector UniC-p, which retakes the
    step from x with it (order p + 1) and returns the corrected latent at t_to.
    The scalars are float32 0-dim tensors and the formulas keep the reference's order of
    operations, as diffusers computes them from its float32 sigmas; so the result matches it.
    """
    p = len(x0s)
    sigma_t, sigma_s0 = _f32(t_to), _f32(ts[-1])
    alpha_t = 1 - sigma_t
    lambda_s0 = log_snr(sigma_s0)
    h = log_snr(sigma_t) - lambda_s0
    m0 = x0s[-1]
    rks = [(log_snr(_f32(s)) - lambda_s0) / h for s in reversed(ts[:-1])]  # (p - 1): nearest step first
    D1s = [(m - m0) / rk for m, rk in zip(reversed(x0s[:-1]), rks)]  # scaled differences, each like x
    rks = torch.stack(rks + [torch.ones(())])  # (p,)

    hh = -h  # predict_x0
    h_phi_1 = torch.expm1(hh)  # h phi_1(h) = e^h - 1
    B_h = torch.expm1(hh)  # bh2
    h_phi_k, factorial, R, b = h_phi_1 / hh - 1, 1, [], []
    for i in range(1, p + 1):  # the order conditions R rho = b
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = torch.stack(R), torch.stack(b)  # (p, p), (p,)

    x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0  # the first-order (DDIM) step
    if x0_to is None:  # UniP-p
        if p == 1:
            return x_t
        rhos = torch.ones(1, dtype=x.dtype) * 0.5 if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.dtype)
        return x_t - alpha_t * B_h * _weighted(rhos, D1s)
    rhos = torch.ones(1, dtype=x.dtype) * 0.5 if p == 1 else torch.linalg.solve(R, b).to(x.dtype)  # UniC-p
    corr = _weighted(rhos[:-1], D1s) if D1s else 0
    return x_t - alpha_t * B_h * (corr + rhos[-1] * (x0_to - m0))


def _f32(t: float) -> Tensor:
    return torch.tensor(t, dtype=torch.float32)


def _weighted(rhos: Tensor, terms: list[Tensor]) -> Tensor:
    """sum_k rhos[k] terms[k] (one product when there is one term)."""
    out = rhos[0] * terms[0]
    for rho, term in zip(rhos[1:], terms[1:]):
        out = out + rho * term
    return out


def unipc_order(solver_order: int, step: int, steps: int) -> int:
    """The predictor's order at step `step` of `steps`: warm-up from 1, lower at the last steps."""
    return min(solver_order, step + 1, steps - step)


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


def pin_frames(plan: Plan, x: Tensor, t: float, strategy: str, noise: Tensor) -> Tensor:
    """x with the plan's pinned frames set for sampler time t: clean ("native"; also "replace" at
    t = 0), or noised to t with the starting noise ("replace")."""
    if strategy == "native" or t == 0:
        return plan.pin(x)
    return plan.pin_noised(x, noise, t)


def frame_times(plan: Plan, t: float, strategy: str, device: torch.device | str | None = None) -> Tensor:
    """(T,) the model's time of each frame at sampler time t: 0 on pinned frames ("native"), or t on all."""
    if strategy == "native":
        return plan.frame_times(t, device)
    return torch.full((plan.frames,), float(t), dtype=torch.float32, device=device)


@torch.inference_mode()
def denoise(
    model_fn: ModelFn,
    x: Tensor,
    plan: Plan,
    steps: int | None = None,
    guidance: float = 1.0,
    method: str = "euler",
    shift: float | None = None,
    patch: Patch = DEFAULT_PATCH,
    progress: bool = True,
    shift_scale: float = 1.0,
    callback: Callback | None = None,
    times: list[float] | None = None,
    strategy: str = "native",
    solver_order: int = 2,
) -> Tensor:
    """Sample the plan from noise x (C, T, H, W) (see `get_noise`); returns the clean latent.

    steps: steps of the full schedule from t = 1 (a plan starting lower takes those below it);
    method: "euler" (one model call a step), "heun" (two, the last step Euler) or "unipc"
    (one, diffusers' UniPCMultistepScheduler with flow sigmas, bh2, predict_x0, lower_order_final,
    of order `solver_order`; a schedule starting at t = 1 starts at 1 - 1e-6, as there);
    shift: the schedule's shift (None: shift_scale times `flow.resolution_shift` of the plan's
    token count; shift_scale is the one the model was trained with);
    times: an explicit schedule from at most 1 down to 0 (e.g. `reference_schedule`) instead of
    the shifted one of `steps` steps (steps may then be None, else must be len(times) - 1); a plan
    starting lower keeps its t_start, then the times below it;
    strategy: how pinned frames are conditioned (see the module's docstring): "native" or "replace".
    With UniPC the pinned frames are overwritten after each update too; the multistep history
    (x0 predictions) is kept as computed, which touches only the pinned frames themselves, as
    every update acts on each element alone.
    Deterministic: the same x, plan and arguments give the same latent.
    """
    if method not in METHODS:
        raise KinemaError(f"unknown sampler {method!r}; choose from {', '.join(METHODS)}")
    if strategy not in STRATEGIES:
        raise KinemaError(f"unknown conditioning strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if solver_order < 1:
        raise KinemaError(f"solver_order must be at least 1; got {solver_order}")
    if times is None:
        if steps is None:
            raise KinemaError("give the sampler a number of steps or explicit times")
        times = plan_schedule(steps, plan.num_tokens(patch), plan.t_start, shift, shift_scale)
    else:
        times = check_schedule(times)
        if steps is not None and steps != len(times) - 1:
            raise KinemaError(f"{len(times)} times make {len(times) - 1} steps, not {steps}; pass steps=None")
        times = cut_schedule(times, plan.t_start)
    if method == "unipc" and abs(times[0] - 1) < 1e-6:
        times = [times[0] - 1e-6] + times[1:]  # a finite log-SNR, as diffusers does
    noise = x
    x = pin_frames(plan, start_latent(plan, noise), times[0], strategy, noise)
    n = len(times) - 1
    x0s, last, order = [], None, 0  # UniPC: x0 predictions, the latent its last update started from, its order
    bar = None
    if progress and n > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"sample ({method})", unit="step", leave=False)
    try:
        for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
            v = guided_velocity(model_fn, x, frame_times(plan, t_cur, strategy, x.device), guidance)
            if method == "unipc":
                x0 = x - t_cur * v  # the model's clean latent, (C, T, H, W)
                if last is not None:  # UniC: retake the last step with the x0 at its end
                    x = unipc_update(last, x0s[-order:], times[i - order : i], t_cur, x0)
                x0s = (x0s + [x0])[-solver_order:]
                order = unipc_order(solver_order, i, n)
                last = x
                x_next = unipc_update(x, x0s[-order:], times[i - order + 1 : i + 1], t_next)  # UniP
                x_next = pin_frames(plan, x_next, t_next, strategy, noise)
            else:
                dt = t_next - t_cur  # negative: towards data
                x_next = pin_frames(plan, x + dt * v, t_next, strategy, noise)
                if method == "heun" and t_next > 0:
                    v2 = guided_velocity(model_fn, x_next, frame_times(plan, t_next, strategy, x.device), guidance)
                    x_next = pin_frames(plan, x + dt * 0.5 * (v + v2), t_next, strategy, noise)
            x = x_next
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(i + 1, n, x)
    finally:
        if bar is not None:
            bar.close()
    return x
