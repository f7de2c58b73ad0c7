"""One scene at any size: rotary positions scaled into the trained extent, composition at a
trained size then refinement at the size asked, the judge's horizon metric and the sizes suite."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from kinema import composition as comp
from kinema.dit import DiT, DiTConfig, frequency_scale, position_scale, rope_angles
from kinema.errors import KinemaError
from kinema.patches import positions
from kinema.pipeline import WORLD_DIR, Pipeline, make_test_pipeline
from kinema.sampling import Plan

FAST = dict(steps=2, progress=False)


# ---------------------------------------------------------------- rotary positions


def test_positions_inside_the_extent_are_left_alone():
    pos = positions((3, 14, 16))
    assert position_scale(pos, (0, 14, 16)) is None and position_scale(pos, None) is None
    want = rope_angles(pos, (16, 24, 24), 1e4)
    got = rope_angles(pos, (16, 24, 24), 1e4, (0, 14, 16))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_one_factor_for_both_spatial_axes_keeps_the_aspect():
    pos = positions((5, 68, 120))  # 1920x1088 in 16 px tokens
    scale = position_scale(pos, (0, 14, 16))
    assert scale.shape == (1, 3)
    assert scale[0, 0] == 1.0  # time: extent 0, never scaled
    assert scale[0, 1] == scale[0, 2] == pytest.approx(min(14 / 68, 16 / 120))
    tall = position_scale(positions((1, 120, 68)), (0, 14, 16))
    assert tall[0, 1] == tall[0, 2] == pytest.approx(min(14 / 120, 16 / 68))
    timed = position_scale(positions((40, 4, 4)), (20, 14, 16))
    assert timed[0].tolist() == [0.5, 1.0, 1.0]


def test_slow_rotations_are_interpolated_fast_ones_kept():
    extent, scale = 14, torch.tensor([[0.25]], dtype=torch.float64)
    inv = 1e4 ** (-torch.arange(0, 24, 2, dtype=torch.float64) / 24)
    f = frequency_scale(inv, scale, extent)[0]
    turns = extent * inv / (2 * math.pi)
    assert torch.all(f[turns >= 2] == 1.0) and torch.all(f[turns <= 1] == 0.25)
    assert torch.all((f >= 0.25) & (f <= 1.0)) and f[0] == 1.0 and f[-1] == 0.25
    assert torch.equal(frequency_scale(inv, scale, 0), torch.ones_like(inv))  # extent 0: never


def test_a_large_sample_sees_the_angles_of_the_trained_range():
    """The slowest rotation of the far corner of a 68 x 120 grid lands inside the trained extent."""
    axes, extent = (16, 24, 24), (0, 14, 16)
    big = positions((1, 68, 120))
    cos, sin = rope_angles(big, axes, 1e4, extent)
    last = 8 + 12 - 1  # the height axis's slowest frequency
    angle = torch.atan2(sin[:, last], cos[:, last]).max().item()
    slowest = 1e4 ** (-22 / 24)
    assert angle == pytest.approx(67 * slowest * min(14 / 68, 16 / 120), rel=1e-4)
    assert angle < 14 * slowest


def test_the_dit_scales_one_sample_a_row_and_leaves_packed_sequences_alone():
    torch.manual_seed(0)
    cfg = DiTConfig.tiny(hidden=64, depth=1, heads=2, text_dim=32)
    plain, scaled = DiT(cfg), DiT(dataclasses.replace(cfg, trained_extent=(0, 2, 2)))
    with torch.no_grad():
        for p in plain.parameters():
            if not p.abs().any():  # adaLN-Zero: give the blocks something to do
                p.normal_(0.0, 0.05)
    scaled.load_state_dict(plain.state_dict())
    pos = positions((1, 4, 4))
    x = torch.randn(1, 16, cfg.token_dim)
    text, mask = torch.randn(1, 3, 32), torch.ones(1, 3, dtype=torch.bool)
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        assert not torch.allclose(plain(x, pos, t, text, mask), scaled(x, pos, t, text, mask))
        doc = torch.zeros(16, dtype=torch.long)
        a = plain(x, pos, t[:, None].expand(1, 16), text, mask, doc_ids=doc)
        b = scaled(x, pos, t[:, None].expand(1, 16), text, mask, doc_ids=doc)
    assert torch.equal(a, b)


def test_the_extent_is_saved_with_the_config():
    cfg = DiTConfig.tiny(trained_extent=(0, 14, 16))
    back = DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.trained_extent == (0, 14, 16)
    old = {k: v for k, v in DiTConfig.tiny().to_dict().items() if k != "trained_extent"}
    assert DiTConfig.from_dict(old).trained_extent is None  # configs saved before it
    with pytest.raises(KinemaError, match="trained_extent"):
        DiTConfig.tiny(trained_extent=(0, -1, 4))
    shipped = json.loads((WORLD_DIR / "dit.json").read_text())
    assert shipped["trained_extent"] == [0, 14, 16] and shipped["trained_min_side"] == 4


# ---------------------------------------------------------------- composition


def test_the_composition_grid_is_the_largest_trained_size_of_the_aspect():
    patch = (1, 2, 2)
    assert comp.compose_grid((16, 2, 136, 240), (0, 14, 16), patch) == (18, 32)  # 1920x1088 -> 9 x 16 tokens
    assert comp.compose_grid((16, 2, 240, 136), (0, 14, 16), patch) == (28, 16)  # 1088x1920 -> 14 x 8 tokens
    assert comp.compose_grid((16, 2, 28, 32), (0, 14, 16), patch) is None  # fits
    assert comp.compose_grid((16, 2, 136, 240), None, patch) is None
    assert comp.compose_grid((16, 2, 4, 4), (0, 14, 16), patch, least=4) == (8, 8)  # 32x32: composed as 64x64
    assert comp.compose_grid((16, 2, 4, 6), (0, 14, 16), patch, least=4) == (8, 12)
    assert comp.compose_grid((16, 2, 8, 8), (0, 14, 16), patch, least=4) is None  # 64x64 is trained
    assert comp.compose_grid((16, 2, 4, 64), (0, 14, 16), patch, least=4) == (2, 32)  # too wide wins over short


def test_compose_and_refine_plans_carry_the_pins():
    values = torch.randn(4, 3, 16, 24)
    plan = Plan((4, 3, 16, 24), torch.tensor([True, False, False]), values)
    small = comp.compose_plan(plan, (0, 2, 3), (1, 2, 2))
    assert small.shape == (4, 3, 4, 6) and torch.equal(small.pinned, plan.pinned)
    assert torch.allclose(small.values[:, :, 0, 0], values[:, :, :4, :4].mean((-1, -2)), atol=1e-6)  # area mean
    made = torch.randn(small.shape)
    refined = comp.refine_plan(plan, made)
    assert refined.t_start == comp.REFINE and refined.start.shape == plan.shape and refined.values is values
    up = comp.compose_plan(plan, (0, 40, 40), (1, 2, 2), least=16)  # 8 x 12 tokens, shortest trained 16
    assert up.shape == (4, 3, 32, 48)  # one factor (2) brings the short side to 16 tokens
    assert comp.refine_plan(plan, torch.randn(up.shape)).t_start == comp.REFINE_UP
    capped = comp.compose_plan(plan, (0, 20, 20), (1, 2, 2), least=16)  # as far as the extent allows
    assert capped.shape == (4, 3, 26, 40)
    edit = Plan(plan.shape, torch.zeros(3, dtype=torch.bool), start=values, t_start=0.25)
    assert comp.compose_plan(edit, (0, 2, 3), (1, 2, 2)) is None  # starts below the refinement: nothing to compose


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.from_pretrained(make_test_pipeline(tmp_path_factory.mktemp("sizes") / "export"))


def test_a_size_beyond_the_extent_is_composed_small_then_refined_at_full_size(pipe, monkeypatch):
    seen = []
    forward = pipe.dit.forward

    def spy(tokens, *args, **kw):
        seen.append(tokens.shape[1])
        return forward(tokens, *args, **kw)

    monkeypatch.setattr(pipe.dit, "forward", spy)
    monkeypatch.setattr(pipe.dit, "config", dataclasses.replace(pipe.dit.config, trained_extent=(0, 2, 2)))
    out = pipe.image("a red ball", width=64, height=32, steps=4, progress=False)  # 4 x 2 tokens
    assert out.frames.shape == (1, 32, 64, 3)
    small, full = 2 * 1, 4 * 2  # composed at 2 x 1 tokens (one factor: 1/2), refined at 4 x 2
    assert seen[0] == small and seen[-1] == full and set(seen) == {small, full}
    seen.clear()
    monkeypatch.setattr(pipe.dit, "config", dataclasses.replace(pipe.dit.config, trained_extent=None))
    pipe.image("a red ball", width=64, height=32, steps=4, progress=False)
    assert set(seen) == {full}  # without an extent: one pass, as before


def test_1920x1080_shaped_clips_come_out_whole(pipe, monkeypatch):
    """A 1920x1080 video and a 1080x1920 image, composed small and refined (the decode dominates)."""
    monkeypatch.setattr(pipe.dit, "config", dataclasses.replace(pipe.dit.config, trained_extent=(0, 8, 8)))
    out = pipe.generate("a red ball falls", width=1920, height=1080, seconds=5 / 12, fps=12, **FAST)
    assert out.frames.shape == (5, 1080, 1920, 3) and out.frames.float().std() > 0
    assert pipe.image("a red ball", width=1080, height=1920, **FAST).frames.shape == (1, 1920, 1080, 3)


# ---------------------------------------------------------------- the judge's horizon


def test_one_horizon_scores_full_and_a_tiled_scene_does_not():
    from kinema.eval import judge as J
    from kinema.world.render import render
    from kinema.world.text import spec_from_prompt

    spec = spec_from_prompt("a red ball stays on green grass under a light blue sky", 0)
    frames = render(spec, 160, 96, 0.5, 8, 0).frames
    assert J.judge(frames, 8, spec)["horizon"].value == 1.0
    tiled = np.concatenate([frames[:, ::3]] * 3, axis=1)[:, :96]  # the scene three times down the frame
    score = J.judge(tiled, 8, spec)["horizon"]
    assert score.value < 0.75 and "no ground above the horizon" in score.reason
    sky = np.broadcast_to(np.array([170, 210, 240], np.uint8), frames.shape).copy()  # sky everywhere
    assert J.judge(sky, 8, spec)["horizon"].value < 0.7


def test_the_sizes_suite_spans_trained_to_1920x1080_and_groups_its_results():
    from kinema.eval import suite as S

    cases = S.suite("sizes")
    groups = {c.name.split(":")[0] for c in cases}
    assert groups == {"trained", "wide", "tall", "small", "hd"}
    sizes = {(c.width, c.height) for c in cases}
    assert {(1920, 1080), (1080, 1920), (32, 32), (48, 27)} <= sizes
    results = S.run(S.source("real"), [c for c in cases if c.width * c.height <= 270 * 480])
    table = S.by_group(results, ("objects", "horizon"))
    assert set(table) == {"trained", "wide", "tall", "small"} and set(table["trained"]) == {"objects", "horizon"}
    assert all(row["horizon"] == 1.0 for row in table.values())  # real renders: one horizon at every size
