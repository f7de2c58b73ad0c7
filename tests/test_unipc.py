"""UniPC beside Euler and Heun, diffusers' flow schedules, and the "replace" conditioning strategy.

diffusers' schedulers are the oracles: the schedules equal their sigmas, and a whole sample equals
a loop over their `step` with the same velocity function and starting noise."""

import pytest
import torch

from kinema.errors import KinemaError
from kinema.flow import get_schedule
from kinema.sampling import (
    denoise,
    flow_match_euler_schedule,
    get_noise,
    reference_schedule,
    unipc_flow_schedule,
)
from kinema.tasks import connect, sdedit, text_to_video

diffusers = pytest.importorskip("diffusers")

SHAPE = (4, 3, 4, 6)  # (C, T, H, W)
C, T = SHAPE[0], SHAPE[1]


def wan_unipc(steps: int, shift: float = 3.0, order: int = 2):
    """Wan 2.1's published scheduler (flow_shift 3 at 480p, 5 at 720p), set to `steps` steps."""
    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, solver_order=order, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=shift, predict_x0=True, solver_type="bh2", lower_order_final=True, disable_corrector=[],
        final_sigmas_type="zero", timestep_spacing="linspace", thresholding=False,
    )  # fmt: skip
    sched.set_timesteps(steps)
    return sched


def flow_euler(steps: int, shift: float = 3.0):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps)
    return sched


# A deterministic, nonlinear velocity: a fixed random channel map of x, a tanh, a term in t, and
# the mean over frames (so that pinned frames reach the generated ones, as through attention).
_g = torch.Generator().manual_seed(11)
MIX = torch.eye(C) * 0.8 + 0.3 * torch.randn(C, C, generator=_g)  # (C, C)
BIAS = torch.randn(C, 1, SHAPE[2], SHAPE[3], generator=_g)  # (C, 1, H, W)
ROW = torch.tensor([0.4, -0.7])  # per caption row: cond, negative


def velocity(x, t):
    """x (B, C, T, H, W), t (B, T) -> v like x; row b adds ROW[b] (the caption's effect)."""
    tt = t[:, None, :, None, None]  # (B, 1, T, 1, 1)
    v = torch.einsum("dc,bcthw->bdthw", MIX, x) + torch.tanh(x) * (1 - tt) + (tt - 0.3) * BIAS
    v = v + 0.5 * x.mean(dim=2, keepdim=True)  # (B, C, 1, H, W) over frames
    return v + ROW[: x.shape[0], None, None, None, None]


def reference_sample(sched, noise, guidance=1.0):
    """diffusers' loop: the velocity at each sigma, guided by hand as in Wan's pipeline, then step."""
    x = noise[None].clone()  # (1, C, T, H, W)
    for i, timestep in enumerate(sched.timesteps):
        t = sched.sigmas[i].expand(1, T)  # (1, T)
        v = velocity(x, t)
        if guidance != 1.0:
            v_uncond = velocity(torch.cat([x, x]), t.expand(2, T))[1:]
            v = v_uncond + guidance * (v - v_uncond)
        x = sched.step(v, timestep, x).prev_sample
    return x[0]


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 30])
def test_schedules_equal_the_reference_sigmas(steps, shift):
    for ours, sched in [(unipc_flow_schedule(steps, shift), wan_unipc(steps, shift)),
                        (flow_match_euler_schedule(steps, shift), flow_euler(steps, shift))]:  # fmt: skip
        ref = sched.sigmas
        assert len(ours) == steps + 1 and ours[-1] == 0.0
        assert (torch.tensor(ours, dtype=torch.float64) - ref.double()).abs().max() <= 1e-6


def test_reference_schedule_names_both_and_rejects_others():
    assert reference_schedule("unipc", 7, 5.0) == unipc_flow_schedule(7, 5.0)
    assert reference_schedule("flow_match_euler", 7, 5.0) == flow_match_euler_schedule(7, 5.0)
    assert unipc_flow_schedule(4, 3.0) != get_schedule(4, 256, shift=3.0)  # not a shifted linspace to 0
    with pytest.raises(KinemaError, match="reference schedule"):
        reference_schedule("ddim", 5)
    with pytest.raises(KinemaError, match="steps"):
        unipc_flow_schedule(0)


# ---------------------------------------------------------------- whole samples against diffusers


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 25])
def test_unipc_sample_equals_diffusers_loop(steps, order):
    noise = get_noise(SHAPE, steps)
    ref = reference_sample(wan_unipc(steps, 3.0, order), noise)
    ours = denoise(velocity, noise, text_to_video(*SHAPE), times=unipc_flow_schedule(steps, 3.0),
                   method="unipc", solver_order=order, progress=False)  # fmt: skip
    assert torch.isfinite(ours).all()
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 25])
def test_euler_sample_equals_flow_match_euler_loop(steps):
    noise = get_noise(SHAPE, steps)
    sched = flow_euler(steps, 5.0)
    ref = reference_sample(sched, noise)
    ours = denoise(velocity, noise, text_to_video(*SHAPE), times=sched.sigmas.tolist(), progress=False)
    assert (ours - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("method", ["unipc", "euler"])
def test_guided_sample_equals_reference_with_guidance_by_hand(method):
    steps, noise = 12, get_noise(SHAPE, 3)
    sched = wan_unipc(steps, 5.0) if method == "unipc" else flow_euler(steps, 5.0)
    ref = reference_sample(sched, noise, guidance=5.0)
    ours = denoise(velocity, noise, text_to_video(*SHAPE), times=sched.sigmas.tolist(), guidance=5.0,
                   method=method, progress=False)  # fmt: skip
    assert (ours - ref).abs().max() <= 1e-5
    unguided = denoise(velocity, noise, text_to_video(*SHAPE), times=sched.sigmas.tolist(), method=method,
                       progress=False)  # fmt: skip
    assert not torch.allclose(ours, unguided, atol=1e-2)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_from_t_one_follows_a_straight_path_exactly(order):
    """The default schedule starts at t = 1 exactly (moved to 1 - 1e-6, finite log-SNR); for one
    data point x0 the velocity (x - x0) / t predicts x0 at every step, so UniPC must land on it."""
    x0 = get_noise(SHAPE, 9)

    def fn(x, t):
        return (x - x0) / t[:, None, :, None, None]

    out = denoise(fn, get_noise(SHAPE, 0), text_to_video(*SHAPE), steps=6, method="unipc", solver_order=order,
                  progress=False)  # fmt: skip
    assert torch.allclose(out, x0, atol=1e-5)


def test_explicit_times_equal_the_default_schedule_and_are_cut_for_sdedit():
    plan, noise = text_to_video(*SHAPE), get_noise(SHAPE, 1)
    times = get_schedule(5, plan.num_tokens())
    assert torch.equal(denoise(velocity, noise, plan, 5, progress=False),
                       denoise(velocity, noise, plan, times=times, progress=False))  # fmt: skip
    seen = []

    def spy(x, t):
        seen.append(float(t[0, 0]))
        return velocity(x, t)

    ref_times = unipc_flow_schedule(10, 3.0)
    denoise(spy, noise, sdedit(get_noise(SHAPE, 2), 0.5), times=ref_times, method="unipc", progress=False)
    assert seen == pytest.approx([0.5] + [t for t in ref_times[:-1] if t < 0.5])
    with pytest.raises(KinemaError, match="decrease"):
        denoise(velocity, noise, plan, times=[1.0, 0.5, 0.5, 0.0], progress=False)
    with pytest.raises(KinemaError, match="exactly 0"):
        denoise(velocity, noise, plan, times=[1.0, 0.5], progress=False)
    with pytest.raises(KinemaError, match="steps"):
        denoise(velocity, noise, plan, 3, times=[1.0, 0.5, 0.0], progress=False)


# ---------------------------------------------------------------- the "replace" strategy


def pinned_plan():
    ctx = get_noise((C, 1, SHAPE[2], SHAPE[3]), 2)
    return connect(ctx, ctx * 0.5, 1)  # frames 0 and 2 pinned, frame 1 generated


@pytest.mark.parametrize("method", ["euler", "heun", "unipc"])
def test_replace_noises_pins_to_the_common_time_and_returns_them_exact(method):
    plan, noise = pinned_plan(), get_noise(SHAPE, 0)
    seen = []

    def spy(x, t):
        seen.append((x.clone(), t.clone()))
        return velocity(x, t)

    out = denoise(spy, noise, plan, steps=4, method=method, strategy="replace", progress=False)
    pinned = plan.pinned
    assert torch.equal(out[:, pinned], plan.values[:, pinned])
    for x, t in seen:
        assert torch.equal(t, t[:, :1].expand_as(t)) and t[0, 0] > 0  # one time on every frame, none at 0
        s = float(t[0, 0])
        expected = (1 - s) * plan.values + s * noise  # the pinned frames noised to it with the start noise
        assert torch.allclose(x[0][:, pinned], expected[:, pinned], atol=1e-6)
    free = denoise(velocity, noise, text_to_video(*SHAPE), steps=4, method=method, progress=False)
    assert not torch.allclose(out[:, 1], free[:, 1], atol=1e-3)  # the pins reach the generated frame
    native = denoise(velocity, noise, plan, steps=4, method=method, progress=False)
    assert torch.equal(native[:, pinned], plan.values[:, pinned]) and not torch.allclose(native, out, atol=1e-3)


def test_native_unipc_pins_are_clean_for_the_model_and_exact_at_the_end():
    plan = pinned_plan()
    seen = []

    def spy(x, t):
        seen.append((x.clone(), t.clone()))
        return velocity(x, t)

    out = denoise(spy, get_noise(SHAPE, 0), plan, steps=5, method="unipc", progress=False)
    assert torch.equal(out[:, plan.pinned], plan.values[:, plan.pinned]) and len(seen) == 5
    for x, t in seen:
        assert torch.equal(x[0][:, plan.pinned], plan.values[:, plan.pinned])
        assert t[0, 0] == 0 and t[0, 2] == 0 and t[0, 1] > 0


def test_unknown_strategy_and_bad_order_raise():
    with pytest.raises(KinemaError, match="strategy"):
        denoise(velocity, get_noise(SHAPE, 0), pinned_plan(), 2, strategy="inpaint", progress=False)
    with pytest.raises(KinemaError, match="solver_order"):
        denoise(velocity, get_noise(SHAPE, 0), pinned_plan(), 2, method="unipc", solver_order=0, progress=False)
