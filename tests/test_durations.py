"""Exact durations and frame rates: `seconds` lasts exactly that long at the output's fps
(rounded to whole frames, and said so), frames are made at a rate the model knows and resampled
in time to the asked fps (and said so), and seconds / fps outside their limits are clear errors.
On the shipped world model (it makes 8 - 12 fps) at 32 x 32 with 2 steps: the frame counts,
rates and notices hold for any weights."""

import json
import math

import pytest
import torch

from kinema import tasks
from kinema.errors import KinemaError
from kinema.pipeline import PIPELINE_FILE, Pipeline, make_test_pipeline, pack_model
from kinema.video import Video, hold_indices, read_video, resample_indices, span_indices
from tests.cli_helpers import run_cli

FAST = dict(steps=2, progress=False, expand=False)
SIZE = dict(width=32, height=32)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained("world")


@pytest.fixture(scope="module")
def clip(pipe):
    """12 frames (1.5 s at 8 fps) made by the model: the input of extend and connect."""
    return pipe.generate("a red ball falls on green grass", seconds=1.5, fps=8, seed=1, **SIZE, **FAST).video


# ---------------------------------------------------------------- the rules, without a model


def test_timing_rounds_to_whole_frames_and_clamps_the_rate_into_the_models():
    t = tasks.timing(2.3, 8, (8, 24))
    assert (t.rate, t.made, t.frames) == (8, 18, 18) and not t.resampled
    assert t.notices == ("2.3 s at 8 fps is 18 frames (2.25 s)",)
    assert tasks.timing(2.0, 12, (8, 24)).notices == ()  # inside the range, exact: nothing to say
    up = tasks.timing(1.0, 30, (8, 24))
    assert (up.rate, up.made, up.frames) == (24, 24, 30) and up.resampled
    assert up.notices == ("30 fps is above the model's 24 fps: made at 24 fps and resampled in time (frames repeated)",)
    down = tasks.timing(2.0, 4, (8, 24))
    assert (down.rate, down.made, down.frames) == (8, 16, 8)
    assert down.notices == ("4 fps is below the model's 8 fps: made at 8 fps and resampled in time (frames dropped)",)
    assert tasks.timing(81 / 16, 16, (16, 16)).made == 81  # Wan's default: 81 frames at 16 fps, as published
    assert tasks.timing(0.05, 8, (8, 24)).frames == 2  # a video has at least 2 frames ...
    assert tasks.timing(0.05, 8, (8, 24)).notices == ("0.05 s at 8 fps is 2 frames (0.25 s)",)  # ... and says so
    assert tasks.frame_count(1.3125, 8) == 11 and tasks.frame_count(2.05, 30) == 62  # 10.5, 61.5 frames: half up
    assert tasks.frame_count(0.1, 8, minimum=1) == 1  # new frames of extend and connect: at least 1
    assert tasks.duration_notice(0.1, 8, 1) == ("0.1 s at 8 fps is 1 frame (0.125 s)",)
    assert tasks.latents_covering(10) == 4 and tasks.latents_covering(13) == 4 and tasks.latents_covering(14) == 5


def test_seconds_and_fps_outside_their_limits_are_errors():
    for bad in (0, -1, math.nan, math.inf, tasks.MAX_SECONDS + 1):
        with pytest.raises(KinemaError, match="seconds"):
            tasks.timing(bad, 8, (8, 24))
    assert tasks.timing(tasks.MAX_SECONDS, 8, (8, 24)).frames == 8 * 3600  # the limit itself is allowed
    for bad in (0, -8, math.nan, math.inf, tasks.MAX_FPS + 1):
        with pytest.raises(KinemaError, match="fps"):
            tasks.timing(1.0, bad, (8, 24))
    with pytest.raises(KinemaError, match="at most 3600"):
        tasks.check_seconds(4000)
    for bad in ([24, 8], [0, 8], [8], "8-24", None):
        with pytest.raises(KinemaError, match="fps_range"):
            tasks.check_frame_rates(bad)


def test_hold_and_span_indices_give_exactly_the_count_asked():
    assert hold_indices(10, 10, 30, 30) == [i for i in range(10) for _ in range(3)]  # 3x: each repeated
    assert hold_indices(16, 8, 4, 8) == list(range(0, 16, 2))  # half the rate: every other frame
    assert hold_indices(7, 24, 24, 7) == list(range(7))
    assert hold_indices(3, 24, 30, 5)[-1] == 2  # past the end the last frame is held
    n = len(resample_indices(24, 24, 30))
    assert hold_indices(24, 24, 30, n) == resample_indices(24, 24, 30)  # the same rule as reading a file
    assert span_indices(3, 4) == [0, 1, 1, 2] and span_indices(7, 3) == [0, 3, 6]  # both ends kept
    assert span_indices(3, 1) == [1]
    cycle = span_indices(20, 18, cyclic=True)  # a turn squeezed: evenly spaced, never the next turn's 0
    assert len(cycle) == 18 and cycle[0] == 0 and cycle[-1] < 20 and cycle == sorted(cycle)
    assert span_indices(16, 16, cyclic=True) == list(range(16))


# ---------------------------------------------------------------- the model's frame rates


def test_the_pipeline_states_the_frame_rates_it_makes(pipe, tmp_path):
    from kinema.models.wan import WAN_DEFAULTS

    assert pipe.frame_rates == (8, 12) and pipe.defaults["fps"] == 8
    parts = (pipe.dit, pipe.text_encoder, pipe.vae)
    assert Pipeline(*parts).frame_rates == (12, 12)  # no "fps_range": only its default fps
    assert Pipeline(*parts, defaults=WAN_DEFAULTS).frame_rates == (16, 16)  # a Wan folder: 16 fps only
    with pytest.raises(KinemaError, match="fps_range"):
        Pipeline(*parts, defaults={"fps_range": [24, 8]})
    tiny = make_test_pipeline(tmp_path / "tiny")
    packed = pack_model(tiny, tmp_path / "packed", defaults={"fps": 8, "fps_range": [8, 24]}, dtype=torch.float32)
    assert json.loads((packed / PIPELINE_FILE).read_text())["defaults"]["fps_range"] == [8, 24]
    assert Pipeline.from_pretrained(packed).frame_rates == (8, 24)
    with pytest.raises(KinemaError, match="fps_range"):
        pack_model(tiny, tmp_path / "bad", defaults={"fps_range": [0, 8]})
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- text -> video, image -> video


def test_seconds_off_the_frame_grid_are_rounded_and_said(pipe):
    out = pipe.generate("a red ball", seconds=1.3, fps=8, **SIZE, **FAST)
    assert out.frames.shape == (10, 32, 32, 3) and out.fps == 8
    assert out.notices == ("1.3 s at 8 fps is 10 frames (1.25 s)",)
    assert out.latent.shape[1] == 4  # 1 + 4 * 3 = 13 frames made, the first 10 kept
    animated = pipe.animate(out.frames[0], "a red ball", seconds=1.3, fps=8, **FAST)
    assert animated.frames.shape == (10, 32, 32, 3) and animated.notices == out.notices


def test_exact_seconds_at_a_native_rate_say_nothing(pipe):
    for seconds, fps, frames in ((1.5, 8, 12), (1.0, 12, 12), (2.0, 10, 20)):
        out = pipe.generate("a red ball", seconds=seconds, fps=fps, **SIZE, **FAST)
        assert out.frames.shape[0] == frames and out.fps == fps and out.notices == (), (seconds, fps)
    assert pipe.generate("a red ball", **SIZE, **FAST).frames.shape[0] == 16  # the default: 2 s at 8 fps


def test_fps_above_the_models_is_made_at_its_top_rate_and_resampled(pipe):
    out = pipe.generate("a red ball", seconds=1, fps=30, seed=3, **SIZE, **FAST)
    assert out.frames.shape[0] == 30 and out.fps == 30 and len(out.frames) / out.fps == 1.0
    assert out.notices == ("30 fps is above the model's 12 fps: made at 12 fps and resampled in time (frames repeated)",)
    native = pipe.generate("a red ball", seconds=1, fps=12, seed=3, **SIZE, **FAST)
    assert native.notices == () and native.frames.shape[0] == 12 and torch.equal(native.latent, out.latent)
    assert torch.equal(out.frames, native.frames[hold_indices(12, 12, 30, 30)])  # sample and hold in time


def test_fps_below_the_models_is_made_at_its_bottom_rate_and_frames_dropped(pipe):
    out = pipe.generate("a red ball", seconds=2, fps=4, seed=3, **SIZE, **FAST)
    assert out.frames.shape[0] == 8 and out.fps == 4
    assert out.notices == ("4 fps is below the model's 8 fps: made at 8 fps and resampled in time (frames dropped)",)
    native = pipe.generate("a red ball", seconds=2, fps=8, seed=3, **SIZE, **FAST)
    assert torch.equal(out.frames, native.frames[::2])


def test_an_animation_at_another_rate_keeps_the_image_as_frame_0(pipe, clip):
    out = pipe.animate(clip.frames[0], "x", seconds=1.3, fps=30, **FAST)
    assert out.frames.shape[0] == 39 and out.fps == 30
    assert torch.equal(out.frames[0], pipe.decode(pipe.encode(clip.frames[:1]))[0])
    assert any("above the model's 12 fps" in n for n in out.notices)
    assert not any("frames (" in n for n in out.notices)  # 1.3 s at 30 fps is 39 frames exactly


# ---------------------------------------------------------------- loop


def test_a_loop_has_exactly_the_asked_frames_its_turn_retimed_as_a_cycle(pipe):
    kw = dict(fps=8, seed=2, **SIZE, **FAST)
    whole = pipe.loop("a red ball", seconds=2.5, **kw)  # 20 frames: a turn of 4 * 5, as made
    assert whole.frames.shape[0] == 20 and whole.notices == ()
    out = pipe.loop("a red ball", seconds=2.3, **kw)  # 18 frames: the same turn of 20, squeezed
    assert out.frames.shape[0] == 18 and out.fps == 8
    assert out.notices == ("2.3 s at 8 fps is 18 frames (2.25 s)",)
    assert torch.equal(out.frames, whole.frames[span_indices(20, 18, cyclic=True)])
    fast = pipe.loop("a red ball", seconds=1, fps=30, seed=2, **SIZE, **FAST)  # made at 12: a turn of 12
    assert fast.frames.shape[0] == 30 and fast.fps == 30 and any("above" in n for n in fast.notices)


# ---------------------------------------------------------------- extend and connect: at the input's rate


def test_extend_makes_exactly_the_asked_new_frames_next_to_the_video(pipe, clip):
    T = len(clip.frames)
    for direction in ("forward", "backward"):
        out = pipe.extend(clip, "x", direction, seconds=0.8, seed=4, **FAST)  # 6.4 -> 6 new frames
        assert out.frames.shape[0] == T + 6 and out.fps == clip.fps
        assert out.notices == ("0.8 s at 8 fps is 6 frames (0.75 s)",)
        longer = pipe.extend(clip, "x", direction, seconds=1.0, seed=4, **FAST)  # 8 new: the same 2 latents
        assert longer.notices == () and torch.equal(out.latent, longer.latent)
        if direction == "forward":  # the new frames right after the video are kept
            assert torch.equal(out.frames[:T], clip.frames) and torch.equal(out.frames[T:], longer.frames[T : T + 6])
        else:  # the new frames right before it
            assert torch.equal(out.frames[6:], clip.frames) and torch.equal(out.frames[:6], longer.frames[2:8])
    slow = Video(clip.frames, 4.0)  # the video's own rate is the rate of its new frames
    assert pipe.extend(slow, "x", seconds=1.0, **FAST).frames.shape[0] == T + 4


def test_connect_retimes_its_middle_to_exactly_the_asked_frames(pipe, clip):
    other = pipe.generate("a blue square", seconds=1.5, fps=8, seed=2, **SIZE, **FAST).video
    T = len(clip.frames)
    made = pipe.connect(clip, other, "x", seconds=0.375, seed=5, **FAST)  # 3 frames: one middle latent
    assert made.frames.shape[0] == T + 3 + T and made.notices == ()
    out = pipe.connect(clip, other, "x", seconds=0.5, seed=5, **FAST)  # 4 frames: the same 3, stretched
    assert out.frames.shape[0] == T + 4 + T and out.notices == () and torch.equal(out.latent, made.latent)
    assert torch.equal(out.frames[T:-T], made.frames[T:-T][span_indices(3, 4)])
    assert torch.equal(out.frames[:T], clip.frames) and torch.equal(out.frames[-T:], other.frames)
    odd = pipe.connect(clip, other, "x", seconds=0.3, **FAST)
    assert odd.frames.shape[0] == T + 2 + T and odd.notices == ("0.3 s at 8 fps is 2 frames (0.25 s)",)


# ---------------------------------------------------------------- long videos


def test_a_long_video_has_exactly_the_asked_frames_its_last_window_cut(pipe, tmp_path):
    kw = dict(fps=8, seed=6, **SIZE, **FAST)
    windows = list(pipe.long_windows("a red ball", seconds=2.3, window=1.0, **kw))  # windows of 9, then +4
    assert [len(w.frames) for w in windows] == [9, 4, 4, 1] and sum(len(w.frames) for w in windows) == 18
    out = pipe.long("a red ball", 2.3, window=1.0, **kw)
    assert out.frames.shape[0] == 18 and out.fps == 8 and "2.3 s at 8 fps is 18 frames (2.25 s)" in out.notices
    # above the model's rate: the windows are made at 12 fps and resampled as they come
    native = pipe.long("a red ball", 2, window=1.0, fps=12, seed=6, **SIZE, **FAST)
    fast = pipe.long("a red ball", 2, window=1.0, fps=30, seed=6, **SIZE, **FAST)
    assert native.frames.shape[0] == 24 and fast.frames.shape[0] == 60 and fast.fps == 30
    assert torch.equal(fast.frames, native.frames[hold_indices(24, 12, 30, 60)])
    assert any("above the model's 12 fps" in n for n in fast.notices)
    written = pipe.long("a red ball", 1, window=0.5, fps=30, seed=6, out=tmp_path / "long.mp4", **SIZE, **FAST)
    assert read_video(written.path).frames.shape[0] == 30


def test_every_task_rejects_seconds_outside_the_limits_before_sampling(pipe, clip, tmp_path):
    for seconds in (0, -1.0, math.nan, tasks.MAX_SECONDS * 2):
        tries = [
            lambda: pipe.generate("x", seconds=seconds, **SIZE, **FAST),
            lambda: pipe.animate(clip.frames[0], "x", seconds=seconds, **FAST),
            lambda: pipe.loop("x", seconds=seconds, **SIZE, **FAST),
            lambda: pipe.extend(clip, "x", seconds=seconds, **FAST),
            lambda: pipe.connect(clip, clip, "x", seconds=seconds, **FAST),
            lambda: pipe.long("x", seconds, out=tmp_path / "long.mp4", **SIZE, **FAST),
        ]
        for task in tries:
            with pytest.raises(KinemaError, match="seconds"):
                task()
    assert not (tmp_path / "long.mp4").exists()
    for fps in (0, math.inf, 1000):
        with pytest.raises(KinemaError, match="fps"):
            pipe.generate("x", seconds=1, fps=fps, **SIZE, **FAST)


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--seconds", "0"], ["seconds", "positive"]),
        (["--seconds", "4000"], ["seconds", "at most 3600"]),
        (["--seconds", "nan"], ["seconds"]),
        (["--fps", "0"], ["fps", "positive"]),
        (["--fps", "1000"], ["fps", "at most 240"]),
    ],
)
def test_cli_bad_seconds_or_fps_exit_2_before_loading_a_model(tmp_path, monkeypatch, capsys, args, words):
    out_file = tmp_path / "x.mp4"
    code, out, err = run_cli(monkeypatch, capsys, "generate", "x", *args, "--model", "no-such-model",
                             "--out", out_file)  # fmt: skip
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "unknown model" not in err  # checked first
    for w in words:
        assert w in err
    assert not out_file.exists()


def test_cli_says_how_the_duration_and_rate_were_made(tmp_path, monkeypatch, capsys):
    out_file = tmp_path / "x.mp4"
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", "--size", "32x32", "--seconds", "1.3",
                             "--fps", "30", "--steps", "2", "--no-expand", "--out", out_file)  # fmt: skip
    assert code in (0, None), err
    assert "note: 30 fps is above the model's 12 fps: made at 12 fps and resampled in time" in out
    assert "(39 frames, 32x32 @ 30 fps)" in out
    video = read_video(out_file)
    assert video.frames.shape[0] == 39 and video.fps == 30
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", "--size", "32x32", "--seconds", "1.3",
                             "--steps", "2", "--no-expand", "--out", out_file)  # fmt: skip
    assert code in (0, None), err
    assert "note: 1.3 s at 8 fps is 10 frames (1.25 s)" in out and "(10 frames, 32x32 @ 8 fps)" in out


def test_cli_pack_takes_an_fps_range(tmp_path, monkeypatch, capsys):
    tiny = make_test_pipeline(tmp_path / "tiny")
    code, out, err = run_cli(monkeypatch, capsys, "train", "pack", tiny, tmp_path / "p", "--default", "fps_range=8,24",
                             "--full")  # fmt: skip
    assert code in (0, None), err
    assert json.loads((tmp_path / "p" / PIPELINE_FILE).read_text())["defaults"]["fps_range"] == [8, 24]
    code, _, err = run_cli(monkeypatch, capsys, "train", "pack", tiny, tmp_path / "q", "--default", "fps_range=24,8")
    assert code == 2 and "fps_range" in err and not (tmp_path / "q").exists()
