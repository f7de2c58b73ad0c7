import pytest
import torch

from kinema.errors import KinemaError
from kinema.flow import (
    SHIFT_ANCHORS,
    condition_mask,
    denoised,
    draw_condition_mask,
    flow_loss,
    get_schedule,
    interpolate,
    pin_conditions,
    resolution_shift,
    sample_t_logit_normal,
    shift_t,
    training_t,
    velocity,
)


def test_interpolation_and_target_identities():
    g = torch.Generator().manual_seed(0)
    x0, e = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    t = torch.rand(2, 5, generator=g)
    assert torch.equal(interpolate(x0, e, torch.zeros(2, 5)), x0)
    assert torch.equal(interpolate(x0, e, torch.ones(2, 5)), e)
    v = velocity(x0, e)
    h = 1e-3
    dxdt = (interpolate(x0, e, t + h) - interpolate(x0, e, t)) / h  # the path is straight
    torch.testing.assert_close(dxdt, v, atol=1e-3, rtol=0)
    torch.testing.assert_close(denoised(interpolate(x0, e, t), v, t), x0)


def test_shift_is_monotone_and_fixes_the_ends():
    t = torch.linspace(0, 1, 101)
    for s in (0.5, 1.0, 3.0):
        st = shift_t(t, s)
        assert st[0] == 0 and st[-1] == 1
        assert (st.diff() > 0).all()
    assert torch.equal(shift_t(t, 1.0), t)
    assert (shift_t(t[1:-1], 3.0) > t[1:-1]).all()


def test_more_tokens_get_more_noise():
    (n0, s0), (n1, s1) = SHIFT_ANCHORS
    assert resolution_shift(n0) == pytest.approx(s0) and resolution_shift(n1) == pytest.approx(s1)
    sizes = [16, 256, 1024, 4096, 65536]
    shifts = [resolution_shift(n) for n in sizes]
    assert all(a < b for a, b in zip(shifts, shifts[1:]))
    t = torch.tensor([0.2, 0.5, 0.8])
    assert (shift_t(t, shifts[3]) > shift_t(t, shifts[1])).all()
    with pytest.raises(KinemaError):
        resolution_shift(0)


def test_logit_normal_lies_in_the_open_interval():
    g = torch.Generator().manual_seed(0)
    t = sample_t_logit_normal(20000, generator=g)
    assert t.shape == (20000,) and (t > 0).all() and (t < 1).all()
    assert abs(t.median().item() - 0.5) < 0.02
    t = sample_t_logit_normal(20000, mean=1.0, generator=g)
    assert abs(t.median().item() - torch.sigmoid(torch.tensor(1.0)).item()) < 0.02
    ts = training_t([16, 4096], generator=g)
    assert ts.shape == (2,) and ((ts > 0) & (ts < 1)).all()


def test_schedule_runs_from_noise_to_data():
    small, big = get_schedule(10, 64), get_schedule(10, 16384)
    for s in (small, big):
        assert len(s) == 11 and s[0] == 1.0 and s[-1] == 0.0
        assert all(a > b for a, b in zip(s, s[1:]))
    assert all(b >= a for a, b in zip(small, big))
    assert big[5] > small[5]
    assert get_schedule(4, 256) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_shift_scale_moves_training_and_sampling_times_alike():
    # a 64 px world clip of 3 latent frames is 48 tokens: its plain shift is below 1
    n = 48
    assert resolution_shift(n) < 1
    plain = training_t([n] * 4000, torch.Generator().manual_seed(0))
    scaled = training_t([n] * 4000, torch.Generator().manual_seed(0), shift_scale=4.0)
    torch.testing.assert_close(scaled, shift_t(sample_t_logit_normal(4000, generator=torch.Generator().manual_seed(0)),
                                               4.0 * resolution_shift(n)))  # fmt: skip
    assert (plain > 0.95).float().mean() < 0.002 and (scaled > 0.95).float().mean() > 0.01
    assert get_schedule(8, n, shift_scale=4.0) == pytest.approx(get_schedule(8, n, shift=4.0 * resolution_shift(n)))
    for bad in (0.0, -1.0):
        with pytest.raises(KinemaError, match="shift_scale"):
            training_t([n], shift_scale=bad)
        with pytest.raises(KinemaError, match="shift_scale"):
            get_schedule(8, n, shift_scale=bad)


def test_plain_prob_trains_both_ends():
    n, count = 48, 8000
    high = training_t([n] * count, torch.Generator().manual_seed(1), shift_scale=12.0)
    mixed = training_t([n] * count, torch.Generator().manual_seed(1), shift_scale=12.0, plain_prob=0.5)
    assert torch.equal(training_t([n] * count, torch.Generator().manual_seed(1), shift_scale=12.0, plain_prob=0.0), high)
    low = lambda t: float((t < 0.5).float().mean())  # noqa: E731
    assert low(high) < 0.05 and low(mixed) > 0.3  # half the samples at the plain shift: t < 0.5 at 75%
    assert float((mixed > 0.95).float().mean()) > 0.4 * float((high > 0.95).float().mean())  # about half kept
    with pytest.raises(KinemaError, match="plain_prob"):
        training_t([n], plain_prob=1.5)


def test_condition_mask_patterns():
    def m(kind, k=1):
        return condition_mask(kind, 6, k).int().tolist()

    assert m("none") == [0, 0, 0, 0, 0, 0]
    assert m("first_frame") == [1, 0, 0, 0, 0, 0]
    assert m("first_k", 3) == [1, 1, 1, 0, 0, 0]
    assert m("last_k", 2) == [0, 0, 0, 0, 1, 1]
    assert m("first_last", 2) == [1, 1, 0, 0, 1, 1]
    with pytest.raises(KinemaError):
        condition_mask("middle", 6)


@pytest.mark.parametrize("kind", ["none", "first_frame", "first_k", "last_k", "first_last", "random"])
def test_drawn_condition_masks_have_their_pattern(kind):
    g = torch.Generator().manual_seed(1)
    for T in range(1, 10):
        for _ in range(20):
            m = draw_condition_mask(T, g, {kind: 1.0})
            assert m.shape == (T,) and m.dtype == torch.bool
            assert not m.all(), "at least one frame must stay noisy"
            n = int(m.sum())
            if T == 1 or kind == "none" or (kind == "first_last" and T < 3):
                assert n == 0
            elif kind == "first_frame":
                assert m.tolist() == [True] + [False] * (T - 1)
            elif kind == "first_k":
                assert n >= 1 and m[:n].all()
            elif kind == "last_k":
                assert n >= 1 and m[T - n :].all()
            elif kind == "first_last":
                k = n // 2
                assert n == 2 * k and k >= 1 and m[:k].all() and m[T - k :].all()


def test_draw_condition_mask_default_mix_and_bad_probs():
    g = torch.Generator().manual_seed(0)
    masks = [draw_condition_mask(8, g) for _ in range(400)]
    none = sum(not m.any() for m in masks) / len(masks)
    assert 0.35 < none < 0.65  # "none" has probability 0.5 (random may also draw nothing)
    with pytest.raises(KinemaError):
        draw_condition_mask(8, g, {"sideways": 1.0})


def test_conditioned_tokens_are_clean_and_carry_no_loss():
    t = torch.tensor([[0.3, 0.7, 0.9]])
    cond = torch.tensor([[True, False, False]])
    t2, keep = pin_conditions(t, cond)
    assert t2.tolist() == [[0.0, pytest.approx(0.7), pytest.approx(0.9)]] and keep.tolist() == [[False, True, True]]
    target = torch.zeros(1, 3, 2)
    out = torch.tensor([[[100.0, 100.0], [1.0, 1.0], [3.0, 3.0]]])
    assert flow_loss(out, target, keep).item() == pytest.approx(5.0)  # (1 + 9) / 2
    assert flow_loss(out, target).item() == pytest.approx((10000 + 1 + 9) / 3)
    out[0, 0] = float("nan")
    assert flow_loss(out, target, keep).item() == pytest.approx(5.0)
