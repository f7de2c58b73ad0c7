"""The world judge: what it sees on renders, each metric on clips that should pass and clips that
should fail, the calibration against trivial baselines, and `kinema eval world` end to end.

Hand-made clips are drawn here with numpy (a flat sky and ground, discs and squares of palette
colours); the ground truth of renders is used only to check the judge, never by it."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from PIL import Image

from kinema.errors import KinemaError
from kinema.eval import judge as J
from kinema.eval import suite as S
from kinema.world.physics import GRAVITY
from kinema.world.render import render
from kinema.world.spec import COLORS, GROUND_COLORS, SHAPES, SIZES, SKY_COLORS, BrushSpec, ObjectSpec, SceneSpec

W, H, FPS = 160, 90, 12.0
GROUND_Y = 70  # rows >= this are ground in hand-made clips


@functools.cache
def clip(spec: SceneSpec, seconds: float = 3.0, seed: int = 0, size: tuple[int, int] = (W, H)):
    return render(spec, size[0], size[1], seconds, FPS, seed)


def scene(*objects: ObjectSpec, **kw) -> SceneSpec:
    return SceneSpec(tuple(objects), **kw)


# ---------------------------------------------------------------- hand-made clips


def backdrop(T: int, sky: str = "light blue", ground: str = "green grass") -> np.ndarray:
    frames = np.empty((T, H, W, 3), np.uint8)
    frames[:] = SKY_COLORS[sky]
    frames[:, GROUND_Y:] = GROUND_COLORS[ground]
    return frames


def stamp(frame: np.ndarray, color: str, shape: str, x: float, y: float, r: float) -> None:
    """A hard-edged disc or square (half side 0.74 r, as in the world) centred at (x, y)."""
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    if shape == "ball":
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    else:
        inside = (np.abs(xx - x) <= 0.74 * r) & (np.abs(yy - y) <= 0.74 * r)
    frame[inside] = COLORS[color]


def drawn(xs, ys, color="red", shape="ball", r=9.9, sky="light blue", ground="green grass") -> np.ndarray:
    frames = backdrop(len(xs), sky, ground)
    for t, (x, y) in enumerate(zip(xs, ys)):
        if x is not None:
            stamp(frames[t], color, shape, x, y, r)
    return frames


def falling_heights(T: int, r: float, parabola: bool = True) -> np.ndarray:
    """Height of a ball dropped from rest that bounces on the floor (restitution 0.7), or one that
    goes down and up at a constant speed."""
    g, floor, y, v, out = GRAVITY * H, GROUND_Y - r, 15.0, 0.0, []
    dt = 1.0 / FPS
    for _ in range(T):
        out.append(y)
        if parabola:
            for _ in range(100):  # fine steps, exact enough
                v += g * dt / 100
                y += v * dt / 100
                if y > floor:
                    y, v = floor, -0.7 * v
        else:
            y += v if v else 6.0
            v = v or 6.0
            if y > floor or y < 15:
                v = -v
                y = min(max(y, 15.0), floor)
    return np.array(out)


MEDIUM_RED_BALL_FALLS = scene(ObjectSpec("red", "medium", "ball", "fall"))


# ---------------------------------------------------------------- seeing


def test_components_equal_a_flood_fill():
    rng = np.random.default_rng(0)

    def flood(cls, valid):
        out = -np.ones(cls.shape, np.int64)
        T, h, w = cls.shape
        for t in range(T):
            for i in range(h):
                for j in range(w):
                    if valid[t, i, j] and out[t, i, j] < 0:
                        root, todo = (t * h + i) * w + j, [(i, j)]
                        out[t, i, j] = root
                        while todo:
                            a, b = todo.pop()
                            for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                                if 0 <= c < h and 0 <= d < w and valid[t, c, d] and out[t, c, d] < 0 and cls[t, c, d] == cls[t, a, b]:
                                    out[t, c, d] = root
                                    todo.append((c, d))
        return out

    for _ in range(10):
        cls = rng.integers(0, 3, (2, 9, 13))
        valid = rng.random((2, 9, 13)) < 0.6
        assert np.array_equal(J.components(cls, valid), flood(cls, valid))


def test_segmentation_finds_objects_post_and_background():
    c = clip(scene(ObjectSpec("blue", "large", "square", "static"), occluder=True, sky="dark blue"))
    labels = J.segment(c.frames[:1])[0]
    o = c.truth["objects"][0]
    x, y = round(o["x"][0]), round(o["y"][0])
    assert labels[y, x] == J.PALETTE.index("blue")
    occ = c.truth["occluder"]
    assert labels[round((occ["y0"] + occ["y1"]) / 2), round((occ["x0"] + occ["x1"]) / 2)] == J.POST
    assert labels[2, 2] == J.BACKGROUND and labels[-2, 2] == J.BACKGROUND


def test_every_shape_and_size_is_read_from_renders():
    for shape in SHAPES:
        for size in SIZES:
            spec = scene(ObjectSpec("green", size, shape, "bounce"), sky="grey", ground="sand")
            c = render(spec, W, H, 1.0, FPS, 3)
            seen = J.see(c.frames, FPS, spec)
            track = seen.tracks_of("green")[0]
            assert (track.mode("shape"), track.mode("size")) == (shape, size)


def test_background_and_ground_line_are_read():
    spec = scene(ObjectSpec("red", "small", "ball", "static"), sky="pale yellow", ground="brown earth")
    c = clip(spec)
    seen = J.see(c.frames, FPS, spec)
    assert set(seen.skies) == {"pale yellow"} and set(seen.grounds) == {"brown earth"}
    assert abs(seen.ground_y - c.truth["ground_y"]) <= 1.0


def test_camera_motion_follows_the_pan_with_parallax():
    spec = scene(ObjectSpec("red", "medium", "ball", "fall"), camera="pan left", occluder=True)
    c = clip(spec)
    seen = J.see(c.frames, FPS, spec)
    cam = np.array(c.truth["camera"]["x"])
    rates = c.truth["camera"]["rates"]
    assert np.abs(seen.camera["far"] + rates["far"] * cam).max() < 0.6
    assert np.abs(seen.camera["near"] + rates["near"] * cam).max() < 0.6


def test_tracks_keep_one_identity_per_object():
    spec = scene(ObjectSpec("red", "medium", "ball", "slide", "right"), ObjectSpec("blue", "small", "square", "static"))
    seen = J.see(clip(spec).frames, FPS, spec)
    assert sorted((t.color, len(t.dets)) for t in seen.tracks) == [("blue", 36), ("red", 36)]


# ---------------------------------------------------------------- prompt adherence


def test_objects_right_for_the_prompt_and_wrong_colour_fails():
    spec = MEDIUM_RED_BALL_FALLS
    frames = clip(spec).frames
    assert J.judge(frames, FPS, spec)["objects"].value == 1.0
    blue = frames.copy()
    blue[(frames == COLORS["red"]).all(-1)] = COLORS["blue"]
    score = J.judge(blue, FPS, spec)["objects"]
    assert score.value < 0.5 and "no red object" in score.reason


def test_objects_wrong_shape_size_and_count_lower_the_score():
    asked = scene(ObjectSpec("red", "medium", "ball", "static"))
    frames = drawn([80] * 12, [40] * 12, shape="square", r=15)  # a large square, not a medium ball
    score = J.judge(frames, FPS, asked)["objects"]
    assert score.value < 0.85 and "looks square" in score.reason and "looks large" in score.reason
    two = drawn([50] * 12, [40] * 12)
    for f in two:
        stamp(f, "red", "ball", 110, 40, 9.9)
    assert "not asked for" in J.judge(two, FPS, asked)["objects"].reason


def test_motion_direction_and_kind():
    spec = scene(ObjectSpec("green", "medium", "triangle", "slide", "right"))
    frames = clip(spec, seed=3).frames
    assert J.judge(frames, FPS, spec)["motion"].value == 1.0
    mirrored = np.ascontiguousarray(frames[:, :, ::-1])  # now it slides left
    assert J.judge(mirrored, FPS, spec)["motion"].value < 0.5
    still = scene(ObjectSpec("green", "medium", "triangle", "static"))
    assert J.judge(frames, FPS, still)["motion"].value < 0.5  # asked to stay, it slides
    falls = clip(MEDIUM_RED_BALL_FALLS).frames
    assert J.judge(falls, FPS, MEDIUM_RED_BALL_FALLS)["motion"].value == 1.0
    assert J.judge(falls[:1].repeat(36, 0), FPS, MEDIUM_RED_BALL_FALLS)["motion"].value == 0.0


# ---------------------------------------------------------------- temporal consistency


def test_consistency_holds_on_renders():
    spec = scene(ObjectSpec("red", "small", "ball", "fall"), ObjectSpec("blue", "large", "square", "slide", "right"),
                 occluder=True, camera="pan left", brush=BrushSpec("green", "zigzag"))  # fmt: skip
    assert J.judge(clip(spec, seed=15).frames, FPS, spec)["consistency"].value == 1.0


def test_an_object_vanishing_mid_frame_fails_consistency():
    xs = list(np.linspace(30, 130, 24))
    frames = drawn(xs[:12] + [None] * 12, [40] * 24)
    spec = scene(ObjectSpec("red", "medium", "ball", "slide", "right"))
    score = J.judge(frames, FPS, spec)["consistency"]
    assert score.value < 0.5 and "vanishes in the open" in score.reason
    assert J.judge(drawn(xs, [40] * 24), FPS, spec)["consistency"].value == 1.0


def test_a_colour_change_mid_track_fails_consistency():
    xs = np.linspace(30, 130, 24)
    frames = drawn(xs, [40] * 24)
    turned = frames.copy()
    turned[12:][(frames[12:] == COLORS["red"]).all(-1)] = COLORS["yellow"]
    spec = scene(ObjectSpec("red", "medium", "ball", "slide", "right"))
    score = J.judge(turned, FPS, spec)["consistency"]
    assert score.value < 0.5 and "appears in the open" in score.reason


def test_a_shape_change_mid_track_fails_consistency():
    xs = np.linspace(30, 130, 24)
    frames = drawn(xs, [40] * 24)
    square = drawn(xs, [40] * 24, shape="square", r=13.4)  # about the same area
    frames[8:] = square[8:]
    score = J.judge(frames, FPS, scene(ObjectSpec("red", "medium", "ball", "slide", "right")))["consistency"]
    assert score.value < 0.5 and "changes shape" in score.reason


def test_frames_in_random_order_fail_consistency():
    spec = scene(ObjectSpec("purple", "medium", "diamond", "bounce"), sky="dark blue", ground="sand")
    frames = clip(spec, seed=5).frames
    assert J.judge(frames, FPS, spec)["consistency"].value == 1.0
    shuffled = frames[np.random.default_rng(0).permutation(len(frames))]
    assert J.judge(shuffled, FPS, spec)["consistency"].value < 0.5


# ---------------------------------------------------------------- object permanence


def test_what_passes_behind_the_post_comes_back_the_same():
    spec = scene(ObjectSpec("magenta", "medium", "ball", "slide", "left"), occluder=True, sky="grey", ground="brown earth")
    c = clip(spec, seed=8)
    assert "occluded" in c.truth["objects"][0]["state"]
    assert J.judge(c.frames, FPS, spec)["permanence"].value == 1.0
    # after the post, a square of the same colour comes out instead of the ball
    frames = c.frames.copy()
    states = c.truth["objects"][0]["state"]
    back = max(k for k, s in enumerate(states) if s == "occluded") + 1
    o = c.truth["objects"][0]
    for t in range(back, len(frames)):
        frames[t][(frames[t] == COLORS["magenta"]).all(-1)] = SKY_COLORS["grey"]
        stamp(frames[t], "magenta", "square", o["x"][t], o["y"][t], 12.5)
    score = J.judge(frames, FPS, spec)["permanence"]
    assert score.value < 0.5 and "came back a square" in score.reason


def test_a_leaver_must_come_back():
    spec = scene(ObjectSpec("cyan", "medium", "star", "leave", "right"))
    c = clip(spec, seed=7)
    assert J.judge(c.frames, FPS, spec)["permanence"].value == 1.0
    gone = c.frames.copy()
    out = c.truth["objects"][0]["state"].index("out_of_frame")
    for t in range(out, len(gone)):
        gone[t][(gone[t] == COLORS["cyan"]).all(-1)] = SKY_COLORS["light blue"]
    scores = J.judge(gone, FPS, spec)
    assert scores["permanence"].value < 0.5 and scores["motion"].value < 1.0


# ---------------------------------------------------------------- gravity


def test_gravity_parabola_passes_constant_speed_fails():
    r, T = 9.9, 36
    spec = MEDIUM_RED_BALL_FALLS
    good = drawn([80] * T, falling_heights(T, r), r=r)
    bad = drawn([80] * T, falling_heights(T, r, parabola=False), r=r)
    g_good, g_bad = J.judge(good, FPS, spec)["gravity"], J.judge(bad, FPS, spec)["gravity"]
    assert g_good.value >= 0.95, g_good.reason
    assert g_bad.value < 0.5, g_bad.reason


def test_gravity_bounce_in_mid_air_fails():
    r, T = 9.9, 36
    ys = falling_heights(T, r)
    high = np.where(ys > 40, 80 - ys, ys)  # turns back up 20 px above where the floor is
    score = J.judge(drawn([80] * T, high, r=r), FPS, MEDIUM_RED_BALL_FALLS)["gravity"]
    assert score.value < 0.5


def test_gravity_on_renders_and_frozen():
    spec = MEDIUM_RED_BALL_FALLS
    frames = clip(spec, seed=1).frames
    assert J.judge(frames, FPS, spec)["gravity"].value == 1.0
    assert J.judge(frames[:1].repeat(36, 0), FPS, spec)["gravity"].value == 0.0


# ---------------------------------------------------------------- persistent state


def test_painted_area_never_shrinks_on_renders_and_an_erased_stroke_fails():
    spec = scene(ObjectSpec("orange", "medium", "square", "static"), brush=BrushSpec("blue", "wave"))
    frames = clip(spec, seed=12).frames
    assert J.judge(frames, FPS, spec)["persistence"].value == 1.0
    erased = frames.copy()
    blue = J.segment(erased[24:]) == J.PALETTE.index("blue")
    blue[:, :, W // 2 :] = False  # from frame 24 the left half of the stroke is wiped
    erased[24:][blue] = SKY_COLORS["light blue"]
    score = J.judge(erased, FPS, spec)["persistence"]
    assert score.value < 0.5 and "disappears" in score.reason
    assert J.judge(frames[:1].repeat(36, 0), FPS, spec)["persistence"].value == 0.0  # never grows


# ---------------------------------------------------------------- camera


def test_camera_pan_direction_and_parallax():
    spec = scene(ObjectSpec("red", "small", "triangle", "static"), camera="pan right", sky="grey", ground="sand")
    frames = clip(spec, seed=11).frames
    assert J.judge(frames, FPS, spec)["camera"].value == 1.0
    other_way = replace_camera(spec, "pan left")
    assert J.judge(frames, FPS, other_way)["camera"].value == 0.0
    assert J.judge(frames[::-1].copy(), FPS, spec)["camera"].value == 0.0  # played backwards
    assert J.judge(frames[:1].repeat(36, 0), FPS, spec)["camera"].value == 0.0  # frozen
    still = replace_camera(spec, "static")
    assert J.judge(frames, FPS, still)["camera"].value is None
    assert J.judge(frames, FPS, still)["consistency"].value < 0.5  # the hills move under a still camera


def replace_camera(spec: SceneSpec, camera: str) -> SceneSpec:
    from dataclasses import replace

    return replace(spec, camera=camera)


def test_metrics_that_do_not_apply_are_none_and_left_out():
    spec = scene(ObjectSpec("red", "medium", "ball", "static"))
    scores = J.judge(clip(spec).frames, FPS, spec)
    assert {k for k, v in scores.items() if v.value is None} == {"permanence", "gravity", "persistence", "camera"}
    results = [S.ClipResult(S.Case("a", spec), scores, 0.0)]
    assert S.aggregate(results)["camera"] is None and S.aggregate(results)["objects"] == 1.0


# ---------------------------------------------------------------- task metrics


def test_first_frame_fidelity():
    frames = clip(MEDIUM_RED_BALL_FALLS).frames
    assert J.first_frame(frames, frames[0]).value == 1.0
    noisy = np.random.default_rng(0).integers(0, 256, frames[0].shape, dtype=np.uint8)
    assert J.first_frame(frames, noisy).value == 0.0


def test_extension_and_loop_seams():
    frames = clip(scene(ObjectSpec("green", "medium", "triangle", "slide", "right"), sky="grey"), seed=3).frames
    assert J.extension_seam(frames[:18], frames[18:]).value == 1.0
    assert J.extension_seam(frames[:18], frames[:1].repeat(18, 0)).value < 0.5  # jumps back to the start
    assert J.loop_seam(np.concatenate([frames[:18], frames[16:0:-1]]), frames[:18]).value == 1.0  # forth and back
    assert J.loop_seam(frames, frames).value < 0.5  # ends far from where it starts


def test_connect_end_points():
    frames = clip(MEDIUM_RED_BALL_FALLS, seed=1).frames
    a, b = frames[:12], frames[24:]
    assert J.connect(a, b, frames[12:24]).value == 1.0
    assert J.connect(a, b, frames[12:13].repeat(12, 0)).value < 0.5  # never reaches B


def test_sdedit_layout_kept_and_edit_done():
    spec = scene(ObjectSpec("red", "medium", "ball", "fall"), ObjectSpec("blue", "small", "square", "static"))
    edited = scene(ObjectSpec("yellow", "medium", "ball", "fall"), ObjectSpec("blue", "small", "square", "static"))
    before, after = clip(spec, seed=2).frames, clip(edited, seed=2).frames
    assert J.sdedit(before, after, FPS, edited, spec).value == 1.0
    assert J.sdedit(before, before, FPS, edited, spec).value < 0.5  # the colour was not changed
    moved = np.roll(after, 40, axis=2)
    assert J.sdedit(before, moved, FPS, edited, spec).value < 0.5  # the layout was not kept
    assert J.sdedit(before, after, FPS, edited).value == 1.0  # without the input's scene: all of `objects`


# ---------------------------------------------------------------- the benchmark


def test_model_names_go_through_one_door():
    with pytest.raises(KinemaError, match="unknown model"):
        S.source("checkpoints/my-model")
    with pytest.raises(KinemaError, match="unknown baseline"):
        S.source("baseline:blur")
    with pytest.raises(KinemaError, match="unknown suite"):
        S.suite("huge")


def test_suites_ask_every_metric():
    for name in ("quick", "full"):  # `sizes` asks about size alone (tests/test_sizes.py)
        cases = S.suite(name)
        assert len({c.name for c in cases}) == len(cases)
        specs = [c.spec for c in cases]
        assert any(s.occluder for s in specs) and any(s.brush for s in specs) and any(s.camera != "static" for s in specs)
        motions = {o.motion for s in specs for o in s.objects}
        assert {"static", "slide", "roll", "fall", "bounce", "leave", "shatter"} <= motions
    assert 12 <= len(S.suite("quick")) <= 20


@pytest.mark.slow
def test_calibration_ceiling_and_baselines():
    cal = S.calibrate("quick")
    table = S.calibration_table(cal)
    assert S.calibration_problems(cal) == [], table
    for metric in J.METRICS:
        assert cal.world["real"][metric] >= S.CEILING
    for kind, metrics in S.BREAKS.items():
        for metric in metrics:
            group = cal.world if metric in cal.world[kind] else cal.tasks
            assert group[kind][metric] < S.BREAK_BELOW, (kind, metric, table)
    assert table.count("\n|") == 2 + len(J.METRICS) + len(S.TASK_METRICS)


@pytest.mark.slow
def test_cli_eval_world_writes_scores_report_and_pictures(tmp_path):
    from typer.testing import CliRunner

    from kinema.cli import app

    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "world", "--model", "real", "--suite", "quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "scores.json").read_text())
    assert doc["model"] == "real" and len(doc["clips"]) == len(S.quick())
    assert all(v >= S.CEILING for v in doc["aggregate"].values() if v is not None)
    assert set(doc["clips"][0]["scores"]) == set(J.METRICS) | set(S.TASK_METRICS) | set(S.RELATIVE_METRICS)  # the render answers the tasks
    report = (out / "report.md").read_text()
    sheets = sorted((out / "clips").glob("*.png"))
    plots = sorted((out / "metrics").glob("*.png"))
    assert len(sheets) == len(S.quick()) and {p.stem for p in plots} == set(J.METRICS) | set(S.TASK_METRICS) | set(S.RELATIVE_METRICS) | {"overview"}
    for png in sheets[:1] + plots[:1]:
        assert f"{png.parent.name}/{png.name}" in report
        with Image.open(png) as im:
            assert im.width >= 240
    res = CliRunner().invoke(app, ["eval", "world", "--model", "no-such-model", "--out", str(out)])
    assert res.exit_code != 0 and "unknown model" in str(res.exception)


def test_an_object_that_changes_colour_behind_the_post_fails_permanence():
    spec = scene(ObjectSpec("magenta", "medium", "ball", "slide", "left"), occluder=True, sky="grey", ground="brown earth")
    c = clip(spec, seed=8)
    frames = c.frames.copy()
    states = c.truth["objects"][0]["state"]
    behind = states.index("occluded")
    magenta = J.segment(frames[behind:]) == J.PALETTE.index("magenta")
    frames[behind:][magenta] = COLORS["green"]
    score = J.judge(frames, FPS, spec)["permanence"]
    assert score.value < 0.5 and "a green one came out" in score.reason


def test_latent_cells_group_frames_like_the_causal_vae():
    mask = np.zeros((9, 16, 24), bool)
    mask[0, 0, 0] = True  # frame 0: latent frame 0, alone
    mask[5, 9, 17] = True  # frames 5 ... 8: latent frame 2
    cells = J.latent_cells(mask, 4, 8)
    assert cells.shape == (3, 2, 3)
    assert {tuple(map(int, c)) for c in np.argwhere(cells)} == {(0, 0, 0), (2, 1, 2)}
    with pytest.raises(KinemaError, match="does not tile"):
        J.latent_cells(np.zeros((8, 16, 16), bool), 4, 8)


def test_thing_mask_holds_objects_and_strokes_not_the_background():
    spec = SceneSpec((ObjectSpec("red", "large", "ball", "static"),), brush=BrushSpec("blue", "wave"), occluder=True)
    frames = render(spec, 96, 64, frames=9, fps=8, seed=0).frames
    things = J.thing_mask(frames)
    labels = J.segment(frames)
    red, blue = J.PALETTE.index("red"), J.PALETTE.index("blue")
    assert things[labels == red].all() and things[-1][labels[-1] == blue].all() and (labels[-1] == blue).any()
    assert not things[labels == J.BACKGROUND].any() and not things[labels == J.POST].any()
    assert 0 < things.mean() < 0.2
