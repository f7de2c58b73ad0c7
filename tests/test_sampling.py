"""The sampler: seeded noise, the schedule cut at a start time, pinned frames held exactly at
t = 0, classifier-free guidance in one batched forward, Euler and Heun, determinism."""

import pytest
import torch

from kinema.dit import DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.flow import get_schedule
from kinema.sampling import Plan, denoise, get_noise, guided_velocity, make_model_fn, plan_schedule
from kinema.tasks import connect, sdedit, text_to_video

SHAPE = (16, 3, 4, 6)  # (C, T, H, W): 3 latent frames of 4 x 6 cells -> 18 tokens



@pytest.fixture(scope="module")
def dit():
    """A small DiT whose zero-initialised layers are made random, so its output depends on
    x, t and the caption."""
    torch.manual_seed(0)
    model = DiT(DiTConfig.tiny(hidden=64, depth=2, heads=2, text_dim=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().any():
                p.normal_(0.0, 0.05)
    return model


def text_rows(n: int = 2):
    g = torch.Generator().manual_seed(1)
    text = torch.randn(n, 5, 32, generator=g)
    mask = torch.ones(n, 5, dtype=torch.bool)
    mask[1:, 3:] = False  # the negative caption is shorter
    return text, mask


def pinned_plan():
    ctx = torch.randn(16, 1, 4, 6, generator=torch.Generator().manual_seed(2))
    return connect(ctx, ctx * 0.5, 1)  # frame 0 and 2 pinned, frame 1 generated


def test_noise_is_seeded():
    a, b, c = get_noise(SHAPE, 7), get_noise(SHAPE, 7), get_noise(SHAPE, 8)
    assert a.shape == SHAPE and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.std()) - 1.0) < 0.2


def test_schedule_from_one_is_the_shifted_schedule_and_sdedit_cuts_it():
    assert plan_schedule(10, 256) == get_schedule(10, 256)
    cut = plan_schedule(10, 256, t_start=0.5)
    assert cut[0] == 0.5 and cut[-1] == 0.0
    assert all(a > b for a, b in zip(cut, cut[1:]))
    assert cut[1:] == [t for t in get_schedule(10, 256) if t < 0.5]
    assert plan_schedule(10, 256, t_start=0.0) == [0.0]


def test_guidance_one_is_the_conditional_prediction(dit):
    text, mask = text_rows()
    fn = make_model_fn(dit, text, mask)
    x, t = get_noise(SHAPE, 0), torch.full((3,), 0.7)
    v = guided_velocity(fn, x, t, 1.0)
    alone = make_model_fn(dit, text[:1], mask[:1])(x[None], t[None])[0]  # the caption only
    assert torch.allclose(v, alone, atol=1e-6)
    assert not torch.allclose(v, guided_velocity(fn, x, t, 3.0), atol=1e-4)


def test_guided_velocity_is_one_batched_forward_of_caption_and_negative(dit):
    text, mask = text_rows()
    calls = []

    def fn(x, t):
        calls.append(x.shape[0])
        return make_model_fn(dit, text, mask)(x, t)

    x, t = get_noise(SHAPE, 0), torch.tensor([0.0, 0.6, 0.6])
    v = guided_velocity(fn, x, t, 4.0)
    assert calls == [2]
    cond = make_model_fn(dit, text[:1], mask[:1])(x[None], t[None])[0]
    neg = make_model_fn(dit, text[1:], mask[1:])(x[None], t[None])[0]
    assert torch.allclose(v, neg + 4.0 * (cond - neg), atol=1e-5)


def test_denoise_is_deterministic_per_noise(dit):
    text, mask = text_rows()
    fn = make_model_fn(dit, text, mask)
    plan = text_to_video(*SHAPE)
    a = denoise(fn, get_noise(SHAPE, 3), plan, steps=3, guidance=2.0, progress=False)
    b = denoise(fn, get_noise(SHAPE, 3), plan, steps=3, guidance=2.0, progress=False)
    c = denoise(fn, get_noise(SHAPE, 4), plan, steps=3, guidance=2.0, progress=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_pinned_frames_are_clean_for_the_model_and_exact_at_the_end(method):
    plan = pinned_plan()
    seen = []

    def fn(x, t):  # a velocity that would move every frame
        seen.append((x.clone(), t.clone()))
        return torch.ones_like(x)

    out = denoise(fn, get_noise(SHAPE, 0), plan, steps=4, method=method, progress=False)
    assert torch.equal(out[:, 0], plan.values[:, 0]) and torch.equal(out[:, 2], plan.values[:, 2])
    for x, t in seen:
        assert torch.equal(x[0, :, 0], plan.values[:, 0]) and torch.equal(x[0, :, 2], plan.values[:, 2])
        assert t[0, 0] == 0 and t[0, 2] == 0 and t[0, 1] > 0  # pinned tokens read t = 0
    assert len(seen) == (4 if method == "euler" else 2 * 4 - 1)  # Heun: two calls a step, the last Euler


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_both_samplers_follow_a_straight_path_exactly(method):
    """For one data point x0 the exact velocity is (x - x0) / t; both samplers must land on x0."""
    x0 = get_noise(SHAPE, 9)

    def fn(x, t):
        tt = t[:, None, :, None, None]
        return torch.where(tt > 0, (x - x0) / tt.clamp(min=1e-9), torch.zeros_like(x))

    out = denoise(fn, get_noise(SHAPE, 0), text_to_video(*SHAPE), steps=5, method=method, progress=False)
    assert torch.allclose(out, x0, atol=1e-5)


def test_sdedit_strength_zero_takes_no_step_and_one_ignores_the_input(dit):
    text, mask = text_rows()
    fn = make_model_fn(dit, text, mask)
    z = get_noise(SHAPE, 5)
    assert torch.equal(denoise(lambda x, t: 1 / 0, get_noise(SHAPE, 0), sdedit(z, 0.0), steps=5, progress=False), z)
    full = denoise(fn, get_noise(SHAPE, 0), sdedit(z, 1.0), steps=3, progress=False)
    other = denoise(fn, get_noise(SHAPE, 0), sdedit(z * -2, 1.0), steps=3, progress=False)
    assert torch.equal(full, other)
    half = denoise(fn, get_noise(SHAPE, 0), sdedit(z, 0.3), steps=10, progress=False)
    assert (half - z).abs().mean() < (full - z).abs().mean()


def test_callback_sees_every_step_and_progress_bar_runs(dit):
    text, mask = text_rows()
    steps = []
    denoise(make_model_fn(dit, text, mask), get_noise(SHAPE, 0), pinned_plan(), steps=3, guidance=3.0,
            progress=True, callback=lambda i, n, x: steps.append((i, n, tuple(x.shape))))  # fmt: skip
    assert steps == [(1, 3, SHAPE), (2, 3, SHAPE), (3, 3, SHAPE)]


def test_bad_plans_and_arguments_raise():
    with pytest.raises(KinemaError, match="at least one latent frame"):
        Plan(SHAPE, torch.ones(3, dtype=torch.bool), torch.zeros(SHAPE))
    with pytest.raises(KinemaError, match="values"):
        Plan(SHAPE, torch.tensor([True, False, False]))
    with pytest.raises(KinemaError, match="sampler"):
        denoise(lambda x, t: x, get_noise(SHAPE, 0), text_to_video(*SHAPE), steps=2, method="ddim", progress=False)
    with pytest.raises(KinemaError, match="noise"):
        denoise(lambda x, t: x, get_noise((16, 2, 4, 6), 0), text_to_video(*SHAPE), steps=2, progress=False)
