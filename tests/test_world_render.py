"""Kinema World renderer and physics: every claim of the world, checked on small renders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kinema.errors import KinemaError
from kinema.world.physics import GRAVITY, LAYER_RATES
from kinema.world.render import layer_colors, random_spec, render, single_spec
from kinema.world.bench import BENCH_SPEC
from kinema.world.spec import (
    COLORS,
    GROUND_COLORS,
    OCCLUDER_COLOR,
    SKY_COLORS,
    BrushSpec,
    ObjectSpec,
    SceneSpec,
)

RED_BALL_FALLS = SceneSpec(objects=(ObjectSpec("red", "medium", "ball", "fall"),))
BUSY = BENCH_SPEC  # rolls, slides, shatters, the post, a pan and a brush

def obj(clip, i: int) -> dict:
    return clip.truth["objects"][i]


def runs(states: list[str]) -> list[str]:
    """['visible', 'visible', 'occluded', 'visible'] -> ['visible', 'occluded', 'visible']"""
    return [s for k, s in enumerate(states) if k == 0 or states[k - 1] != s]


# ---------------------------------------------------------------- determinism and sizes


def test_same_seed_same_bytes_other_seed_differs():
    a = render(BUSY, 96, 64, seconds=2, seed=5)
    b = render(BUSY, 96, 64, seconds=2, seed=5)
    c = render(BUSY, 96, 64, seconds=2, seed=6)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert json.dumps(a.truth) == json.dumps(b.truth)
    assert a.frames.tobytes() != c.frames.tobytes()


@pytest.mark.parametrize("size", [(16, 16), (17, 2048), (2048, 17), (33, 21)])
def test_any_size_renders(size):
    w, h = size
    clip = render(BUSY, w, h, fps=12, frames=3)
    assert clip.frames.shape == (3, h, w, 3) and clip.frames.dtype == np.uint8
    assert clip.truth["width"] == w and clip.truth["height"] == h
    assert all(len(o["x"]) == 3 for o in clip.truth["objects"])


def test_same_scene_at_two_sizes_has_proportional_positions():
    small = render(BUSY, 64, 36, seconds=3, seed=2)
    big = render(BUSY, 320, 180, seconds=3, seed=2)
    assert len(small.truth["objects"]) == len(big.truth["objects"])
    for a, b in zip(small.truth["objects"], big.truth["objects"]):
        assert a["state"] == b["state"]
        for key in ("x", "y"):
            pa = np.array([np.nan if v is None else v for v in a[key]])
            pb = np.array([np.nan if v is None else v for v in b[key]])
            np.testing.assert_allclose(pa * 5, pb, atol=0.02, equal_nan=True)
    np.testing.assert_allclose(np.array(small.truth["camera"]["x"]) * 5, big.truth["camera"]["x"], atol=0.02)


def test_frame_count_follows_seconds_fps_or_frames():
    assert len(render(RED_BALL_FALLS, 32, 32, seconds=1.0, fps=10).frames) == 10
    assert len(render(RED_BALL_FALLS, 32, 32, seconds=0.01, fps=10).frames) == 1
    assert len(render(RED_BALL_FALLS, 32, 32, seconds=9.0, fps=10, frames=4).frames) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=15), dict(height=2049), dict(width=64.5), dict(width=True), dict(seconds=0),
        dict(seconds=-1), dict(seconds=math.inf), dict(fps=0), dict(fps=math.nan), dict(frames=0),
        dict(seed=-1), dict(width=2048, height=2048, frames=400),
    ],
)  # fmt: skip
def test_bad_arguments_raise_kinema_error(kwargs):
    args = dict(width=32, height=32, seconds=1.0, fps=12.0) | kwargs
    with pytest.raises(KinemaError):
        render(RED_BALL_FALLS, **args)


# ---------------------------------------------------------------- physics


def test_fall_follows_a_parabola_then_bounces():
    clip = render(RED_BALL_FALLS, 128, 96, seconds=3, fps=24, seed=1)
    y = np.array(obj(clip, 0)["y"])
    t = np.arange(len(y)) / 24
    peak = int(np.argmax(np.diff(y) < 0))  # the first frame after which it goes up
    assert peak >= 5, "the first bounce comes after a visible fall"
    a, b, c = np.polyfit(t[:peak], y[:peak], 2)
    residual = y[:peak] - np.polyval([a, b, c], t[:peak])
    assert np.abs(residual).max() < 0.01  # px
    assert 2 * a == pytest.approx(GRAVITY * 96, rel=1e-3)  # down on screen
    floor = clip.truth["ground_y"] - obj(clip, 0)["radius"]
    assert y[peak] > floor - 0.25 * 96 * 0.11  # it reached the ground
    rise = y[peak + 1 :]
    assert rise.min() < y[peak] - 5 and rise[-1] == pytest.approx(floor, abs=0.01)  # bounced, then rests


def test_bouncer_stays_between_the_walls_and_floor():
    spec = SceneSpec(objects=(ObjectSpec("green", "small", "triangle", "bounce"),))
    clip = render(spec, 120, 80, seconds=6, fps=12, seed=3)
    o = obj(clip, 0)
    x, y, r = np.array(o["x"]), np.array(o["y"]), o["radius"]
    assert x.min() >= r - 1e-6 and x.max() <= 120 - r + 1e-6
    assert y.min() >= r - 1e-6 and y.max() <= clip.truth["ground_y"] - r + 1e-6
    vx = np.sign(np.diff(x))
    assert (vx > 0).any() and (vx < 0).any(), "it reflected off a side wall"


def test_sliding_objects_collide_instead_of_passing_through():
    spec = SceneSpec(
        objects=(ObjectSpec("red", "medium", "ball", "slide", "right"), ObjectSpec("blue", "large", "ball", "slide", "left"))
    )
    for seed in range(3):
        clip = render(spec, 160, 90, seconds=4, fps=24, seed=seed)
        a, b = obj(clip, 0), obj(clip, 1)
        gap = np.hypot(np.subtract(a["x"], b["x"]), np.subtract(a["y"], b["y"])) - a["radius"] - b["radius"]
        assert gap.min() > -1.0, "they never overlap by more than a pixel"
        assert gap.min() < 2.0, "they met"
        meet = int(np.argmin(gap))
        assert a["x"][-1] < a["x"][meet] or b["x"][-1] > b["x"][meet], "the collision turned them back"


def test_rolling_ball_turns_with_its_distance():
    spec = SceneSpec(objects=(ObjectSpec("orange", "large", "ball", "roll", "right"),))
    clip = render(spec, 160, 90, seconds=2, fps=12, seed=0)
    o = obj(clip, 0)
    x, angle = np.array(o["x"]), np.array(o["angle"])
    assert np.all(np.diff(x) > 0)
    np.testing.assert_allclose(-np.diff(angle) * o["radius"], np.diff(x), rtol=1e-3, atol=2e-3)
    # the darker spot is drawn, and it is somewhere else on the ball after a quarter turn
    k = int(np.argmax(np.abs(angle - angle[0]) > math.pi / 2))
    spots = []
    for j in (0, k):
        frame = clip.frames[j].astype(int)
        cx, cy = x[j], o["y"][j]
        ys, xs = np.nonzero(np.abs(frame - (np.array(COLORS["orange"]) * 0.55).round()).sum(-1) < 6)
        assert xs.size > 5
        spots.append((xs.mean() + 0.5 - cx, ys.mean() + 0.5 - cy))
    assert math.dist(*spots) > 0.3 * o["radius"]


def test_shatter_breaks_into_pieces_of_its_colour_that_come_to_rest():
    spec = SceneSpec(objects=(ObjectSpec("purple", "large", "star", "shatter"),))
    clip = render(spec, 160, 90, seconds=5, fps=12, seed=4)
    star = obj(clip, 0)
    assert star["state"][0] == "visible" and star["state"][-1] == "shattered"
    broke = star["state"].index("shattered")
    assert star["x"][broke] is None
    shards = [o for o in clip.truth["objects"] if o["parent"] == 0]
    assert 4 <= len(shards) <= 8
    for s in shards:
        assert s["color"] == "purple" and s["rgb"] == star["rgb"] and s["shape"] == "shard"
        assert s["state"][broke - 1] == "absent" and s["state"][broke] != "absent"
        assert abs(s["y"][-1] - s["y"][-2]) < 0.05 and abs(s["x"][-1] - s["x"][-2]) < 0.05  # at rest
        assert s["y"][-1] > clip.truth["ground_y"] - 2 * s["radius"]  # on the ground
    last = clip.frames[-1]
    assert (last == COLORS["purple"]).all(-1).sum() > 20


def test_leaving_object_exits_and_comes_back():
    for direction in ("left", "right"):
        spec = SceneSpec(objects=(ObjectSpec("cyan", "medium", "diamond", "leave", direction),))
        clip = render(spec, 128, 72, seconds=4, fps=12, seed=2)
        o = obj(clip, 0)
        assert runs(o["state"])[:3] == ["visible", "out_of_frame", "visible"]
        out = o["state"].index("out_of_frame")
        assert (o["x"][out] > 128) if direction == "right" else (o["x"][out] < 0)
        hidden = [k for k, s in enumerate(o["state"]) if s == "out_of_frame"]
        assert len(hidden) >= 3, "it stays out for a while"
        gone = clip.frames[hidden[len(hidden) // 2]]
        assert not (gone == COLORS["cyan"]).all(-1).any()
        assert (clip.frames[-1] == COLORS["cyan"]).all(-1).sum() > 20


# ---------------------------------------------------------------- occluder, brush, camera


def test_object_behind_the_post_is_occluded_and_keeps_its_identity():
    spec = SceneSpec(objects=(ObjectSpec("red", "medium", "square", "slide", "right"),), occluder=True)
    clip = render(spec, 128, 72, seconds=4, fps=12, seed=0)
    o, box = obj(clip, 0), clip.truth["occluder"]
    assert runs(o["state"])[:3] == ["visible", "occluded", "visible"]
    assert o["color"] == "red" and o["shape"] == "square" and len(clip.truth["objects"]) == 1
    checked = 0
    for k, state in enumerate(o["state"]):
        x, y = o["x"][k], o["y"][k]
        pixel = tuple(clip.frames[k, int(y), int(x)])
        if state == "occluded" and box["x0"] + 1 < x < box["x1"] - 1:
            assert pixel == OCCLUDER_COLOR
            assert o["visible"][k] < 0.5
            checked += 1
        if state == "visible" and o["visible"][k] == 1.0:
            assert pixel == COLORS["red"]
    assert checked >= 1


@pytest.mark.parametrize("motion", ["slide", "roll", "leave", "bounce", "fall", "shatter", "static"])
def test_some_moving_object_passes_behind_the_post(motion):
    direction = "left" if motion in ("slide", "roll", "leave") else None
    shape = "ball" if motion == "roll" else "diamond"
    spec = SceneSpec(
        objects=(ObjectSpec("white", "small", shape, motion, direction), ObjectSpec("black", "medium", "star", "static")),
        occluder=True,
        camera="pan left" if motion == "static" else "static",
    )
    for seed in range(2):
        clip = render(spec, 128, 72, seconds=4, fps=12, seed=seed)
        states = [s for o in clip.truth["objects"] if o["id"] != 1 for s in o["state"]]
        assert "occluded" in states, (motion, seed)


def test_brush_stroke_persists_and_never_shrinks():
    spec = SceneSpec(objects=(), brush=BrushSpec("orange", "circle"), sky="dark blue")
    clip = render(spec, 128, 96, seconds=3, fps=12, seed=1)
    brush = clip.truth["brush"]
    painted = np.array(brush["painted"])
    assert np.all(np.diff(painted) >= 0) and painted[-1] > painted[0] > 0
    orange = (clip.frames == COLORS["orange"]).all(-1)  # (T, H, W)
    rows, cols = np.mgrid[0:96, 0:128]
    for k in range(0, len(clip.frames), 4):
        away = np.hypot(cols + 0.5 - brush["x"][k], rows + 0.5 - brush["y"][k]) > brush["tip_radius"] + 2
        stroke = orange[k] & away
        assert orange[k:, stroke].all(), "painted pixels stay painted"
    assert orange[-1].sum() >= 0.7 * painted[-1]


def test_pan_moves_far_layer_less_than_near_layer():
    spec = SceneSpec(objects=(), camera="pan right", sky="light blue", ground="sand")
    W, H = 200, 100
    clip = render(spec, W, H, seconds=4, fps=12, seed=0)
    far, near = layer_colors("light blue", "sand")

    def shift(row: int, rgb) -> int:
        """How far the pattern of `rgb` in `row` moved left from the first to the last frame."""
        a = (clip.frames[0, row] == rgb).all(-1)
        b = (clip.frames[-1, row] == rgb).all(-1)
        assert a.any() and not a.all()
        errors = [np.mean(a[s:] != b[: W - s]) for s in range(W // 2)]
        return int(np.argmin(errors))

    s_far, s_near = shift(int(0.52 * H), far), shift(int(0.675 * H), near)
    cam = clip.truth["camera"]["x"][-1]
    assert 0 < s_far < s_near
    assert s_far == pytest.approx(LAYER_RATES["far"] * cam, abs=1.5)
    assert s_near == pytest.approx(LAYER_RATES["near"] * cam, abs=1.5)
    still = render(SceneSpec(objects=()), W, H, seconds=1, fps=12, seed=0)
    assert (still.frames[0] == still.frames[-1]).all()


def test_static_object_moves_with_the_ground_under_a_pan():
    spec = SceneSpec(objects=(ObjectSpec("green", "medium", "square", "static"),), camera="pan left")
    clip = render(spec, 128, 72, seconds=2, fps=12, seed=0)
    x = np.array(obj(clip, 0)["x"])
    np.testing.assert_allclose(x - x[0], -(np.array(clip.truth["camera"]["x"])), atol=0.01)
    assert clip.truth["camera"]["x"][-1] < 0  # panning left


# ---------------------------------------------------------------- colours and truth


def test_objects_are_drawn_in_their_exact_palette_colour():
    spec = SceneSpec(
        objects=(
            ObjectSpec("yellow", "large", "star", "static"),
            ObjectSpec("magenta", "medium", "triangle", "fall"),
            ObjectSpec("cyan", "small", "ball", "roll", "left"),
            ObjectSpec("black", "medium", "diamond", "bounce"),
        ),
        sky="pale yellow",
        ground="grey stone",
    )
    clip = render(spec, 160, 90, seconds=2, fps=12, seed=7)
    objects = clip.truth["objects"]
    checked = 0
    for k in range(len(clip.frames)):
        for o in objects:
            if o["state"][k] != "visible" or o["visible"][k] < 1.0:
                continue
            others = [p for p in objects if p is not o and p["x"][k] is not None]
            if any(math.dist((o["x"][k], o["y"][k]), (p["x"][k], p["y"][k])) < o["radius"] + p["radius"] + 2 for p in others):
                continue
            assert tuple(clip.frames[k, int(o["y"][k]), int(o["x"][k])]) == tuple(o["rgb"])
            checked += 1
    assert checked > 20


def test_layer_shades_stay_clear_of_object_colours():
    avoid = np.array([*COLORS.values(), OCCLUDER_COLOR], float)
    for sky in SKY_COLORS:
        for ground in GROUND_COLORS:
            for shade in layer_colors(sky, ground):
                assert np.linalg.norm(avoid - shade, axis=1).min() > 30, (sky, ground)


def test_truth_is_json_and_complete():
    clip = render(BUSY, 96, 54, seconds=3, fps=8, seed=0)
    truth = json.loads(json.dumps(clip.truth))
    T = len(clip.frames)
    assert truth["frames"] == T and truth["fps"] == 8 and truth["seed"] == 0
    assert SceneSpec.from_dict(truth["spec"]) == BUSY
    assert len(truth["camera"]["x"]) == T and set(truth["occluder"]) == {"x0", "x1", "y0", "y1"}
    assert len(truth["brush"]["painted"]) == T
    for o in truth["objects"]:
        for key in ("x", "y", "angle", "visible", "state"):
            assert len(o[key]) == T
        assert set(o["state"]) <= {"visible", "occluded", "out_of_frame", "shattered", "absent"}


def test_random_specs_are_valid_varied_and_render():
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(60)]
    counts = {len(s.objects) for s in specs}
    assert {1, 2, 3} <= counts and max(counts) <= 4
    assert any(s.occluder for s in specs) and any(s.brush for s in specs) and any(s.camera != "static" for s in specs)
    assert len({o.motion for s in specs for o in s.objects}) == 7
    for s in specs:
        colors = [o.color for o in s.objects]
        assert len(set(colors)) == len(colors)
        assert s.brush is None or s.brush.color not in colors
    for i, s in enumerate(specs[:12]):
        clip = render(s, 48, 32, fps=8, frames=6, seed=i)
        json.dumps(clip.truth)


def test_single_specs_are_one_object_under_a_still_camera_and_varied():
    rng = np.random.default_rng(0)
    specs = [single_spec(rng) for _ in range(60)]
    for s in specs:
        assert len(s.objects) == 1 and s.camera == "static" and not s.occluder and s.brush is None
        o = s.objects[0]
        assert (o.direction is not None) == (o.motion in ("slide", "roll", "leave"))
    objs = [s.objects[0] for s in specs]
    assert len({o.color for o in objs}) >= 8 and len({o.shape for o in objs}) == 5 and len({o.motion for o in objs}) == 7
    assert len({s.sky for s in specs}) > 1 and len({s.ground for s in specs}) > 1
    render(specs[0], 48, 32, fps=8, frames=4, seed=0)


def test_clip_plan_single_prob_swaps_scenes_only():
    from kinema.world.dataset import clip_plan

    plain = [clip_plan(i) for i in range(40)]
    assert [clip_plan(i, single_prob=0.0) for i in range(40)] == plain  # 0: the dataset as before
    every = [clip_plan(i, single_prob=1.0) for i in range(40)]
    some = [clip_plan(i, single_prob=0.5) for i in range(40)]
    drop = lambda p: {k: v for k, v in p.items() if k != "spec"}  # noqa: E731
    assert [drop(p) for p in every] == [drop(p) for p in plain] == [drop(p) for p in some]
    assert all(len(p["spec"].objects) == 1 and p["spec"].camera == "static" for p in every)
    assert not all(len(p["spec"].objects) == 1 for p in plain)
    swapped = sum(a["spec"] == b["spec"] for a, b in zip(some, every))
    kept = sum(a["spec"] == b["spec"] for a, b in zip(some, plain))
    assert swapped + kept == 40 and 8 <= swapped <= 32


def test_prompt_and_caption_come_from_the_text_module():
    text = pytest.importorskip("kinema.world.text")
    clip = render(BUSY, 32, 32, frames=1)
    assert clip.prompt == text.short_prompt(BUSY) and clip.caption == text.caption(BUSY)


# ---------------------------------------------------------------- dataset and benchmark


def test_dataset_writes_clips_truth_and_manifest_and_resumes(tmp_path):
    video = pytest.importorskip("kinema.video")
    from kinema.world.dataset import write_dataset

    knobs = dict(seed=3, min_side=16, max_side=32, min_seconds=0.5, max_seconds=1.0, multiple=8, progress=False)
    manifest = write_dataset(tmp_path, 3, **knobs)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["path"] for r in rows] == ["clip_000000.mp4", "clip_000001.mp4", "clip_000002.mp4"]
    for r in rows:
        doc = json.loads((tmp_path / r["truth"]).read_text())
        assert set(doc) == {"prompt", "caption", "spec", "truth"}
        assert (r["width"], r["height"], r["frames"]) == (doc["truth"]["width"], doc["truth"]["height"], doc["truth"]["frames"])
        assert r["width"] % 8 == 0 and r["height"] % 8 == 0 and 16 <= min(r["width"], r["height"]) <= 32
        info = video.probe(tmp_path / r["path"])
        assert (info.width, info.height, info.frames) == (r["width"], r["height"], r["frames"])
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("clip_*")}
    again = write_dataset(tmp_path, 4, **knobs)  # resumes: the first three are kept, one is added
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("clip_00000[012].*")} == stamps
    assert len(again.read_text().splitlines()) == 4 and (tmp_path / "clip_000003.mp4").exists()
    with pytest.raises(KinemaError):
        write_dataset(tmp_path, 1, min_side=8)


def test_clip_saves_video_and_record_beside_it(tmp_path):
    video = pytest.importorskip("kinema.video")
    clip = render(BUSY, 48, 32, fps=8, frames=5, seed=1)
    path, record = clip.save(tmp_path / "busy.mp4")
    assert record == tmp_path / "busy.json"
    doc = json.loads(record.read_text())
    assert doc["truth"] == json.loads(json.dumps(clip.truth)) and SceneSpec.from_dict(doc["spec"]) == BUSY
    info = video.probe(path)
    assert (info.width, info.height, info.frames) == (48, 32, 5)


def test_bench_reports_frames_per_second_per_size():
    from kinema.world.bench import bench_world

    rows = bench_world(sizes=((32, 32), (48, 27)), frames=4, repeats=1)
    assert [r["size"] for r in rows] == ["32x32", "48x27"]
    assert all(r["frames_per_s"] > 0 and r["frames"] == 4 for r in rows)
    with pytest.raises(KinemaError):
        bench_world(frames=0)
