"""Every task end to end through the Pipeline and the CLI, on a random-init tiny model exported
like a trained one. Each test checks what holds for any model by construction: shapes and
frame counts, pinned latents equal to the encoded inputs, inputs kept whole, the loop's seam
plan, SDEdit's two ends, determinism, bounded memory of long videos, and clean CLI errors."""

import gc
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from kinema import tasks
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline, bench_generate, make_test_pipeline, match_seams
from kinema.train.dit import load_export
from kinema.video import Video, read_video, write_video
from tests.cli_helpers import run_cli

FAST = dict(steps=2, progress=False)
SIZE = dict(width=32, height=32)



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_test_pipeline(tmp_path_factory.mktemp("model") / "run" / "export")


@pytest.fixture(scope="module")
def pipe(model_dir):
    return Pipeline.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def clip(pipe):
    """A 12-frame clip (1.5 s) at 8 fps made by the model itself (at its own 12 fps, resampled)."""
    return pipe.generate("a red ball falls", seconds=1.5, fps=8, seed=1, **SIZE, **FAST).video


# ---------------------------------------------------------------- loading


def test_from_pretrained_loads_an_export_or_its_run_folder(model_dir, pipe):
    dit, text = load_export(model_dir)
    for name, p in dit.state_dict().items():
        assert torch.equal(p, pipe.dit.state_dict()[name]), name
    assert not any(p.is_meta for p in pipe.dit.parameters())
    run = Pipeline.from_pretrained(model_dir.parent)  # the run folder: its export/
    assert torch.equal(run.dit.final.out.weight, pipe.dit.final.out.weight)


def test_unknown_or_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(KinemaError, match="unknown model"):
        Pipeline.from_pretrained("no-such-model")
    with pytest.raises(KinemaError, match="pipeline.json"):
        Pipeline.from_pretrained(tmp_path)
    from kinema.pipeline import WORLD_DIR

    if not (WORLD_DIR / "pipeline.json").is_file():
        with pytest.raises(KinemaError, match="shipped world model"):
            Pipeline.from_pretrained("world")


def test_pack_model_writes_a_half_size_folder_that_generates_the_same(model_dir, pipe, tmp_path):
    from kinema.pipeline import pack_model

    packed = pack_model(model_dir, tmp_path / "packed", defaults={"fps": 8, "fps_range": [8, 12], "steps": 2},
                        expand=True)  # fmt: skip
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*.safetensors"))  # noqa: E731
    assert size(packed) < 0.6 * size(model_dir)
    again = Pipeline.from_pretrained(packed)
    assert again.expand and again.defaults["fps"] == 8 and again.defaults["steps"] == 2
    assert again.frame_rates == (8, 12)
    assert all(p.dtype == torch.float32 for p in again.dit.parameters())
    kw = dict(seconds=1, fps=12, seed=0, expand=False, **SIZE, **FAST)  # a rate both make natively
    a, b = pipe.generate("a red ball", **kw), again.generate("a red ball", **kw)
    assert (a.latent - b.latent).abs().max() < 0.05  # float16 weights: nearly the same sample
    with pytest.raises(KinemaError, match="unknown defaults"):
        pack_model(model_dir, tmp_path / "bad", defaults={"colour": 1})


def test_the_exported_shift_scale_reaches_the_sampler(model_dir, tmp_path, monkeypatch):
    """A model trained with shift_scale samples on the schedule of that scale, also after packing."""
    import shutil

    from kinema import pipeline
    from kinema.pipeline import pack_model

    src = shutil.copytree(model_dir, tmp_path / "export")
    spec = json.loads((src / "pipeline.json").read_text())
    (src / "pipeline.json").write_text(json.dumps({**spec, "defaults": {"shift_scale": 2.5}}))
    packed = pack_model(src, tmp_path / "packed", defaults={"steps": 3})
    pipe = Pipeline.from_pretrained(packed)
    assert pipe.defaults["shift_scale"] == 2.5 and pipe.defaults["steps"] == 3
    seen = []

    def spy(*args, **kw):
        seen.append(kw["shift_scale"])
        return pipeline.sampling_denoise(*args, **kw)

    monkeypatch.setattr(pipeline, "sampling_denoise", pipeline.denoise, raising=False)
    monkeypatch.setattr(pipeline, "denoise", spy)
    pipe.generate("a red ball", seconds=1, fps=8, seed=0, expand=False, **SIZE, **FAST)
    spec.pop("defaults", None)  # a pipeline.json without any samples on the plain schedule
    (src / "pipeline.json").write_text(json.dumps(spec))
    Pipeline.from_pretrained(src).generate("a red ball", seconds=1, fps=8, seed=0, expand=False, **SIZE, **FAST)
    assert seen == [2.5, 1.0]
    with pytest.raises(KinemaError, match="no VAE"):
        pack_model(model_dir, tmp_path / "bad", vae="no-such-vae")
    assert not (tmp_path / "bad").exists()  # nothing written on bad input


# ---------------------------------------------------------------- text -> video, image


def test_generate_any_size_and_duration(pipe):
    out = pipe.generate("a red ball", width=48, height=32, seconds=1, fps=8, **FAST)
    assert out.frames.shape == (8, 32, 48, 3) and out.frames.dtype == torch.uint8 and out.fps == 8
    # made at the model's own 12 fps: 12 frames of the 1 + 4 * 3 sampled, resampled to 8
    assert out.latent.shape == (16, 4, 4, 6) and out.caption == "a red ball"
    assert pipe.image("a red ball", 16, 48, **FAST).frames.shape == (1, 48, 16, 3)


def test_generate_is_deterministic_per_seed_with_euler_and_heun(pipe):
    a = pipe.generate("a red ball", seconds=1, fps=8, seed=3, guidance=3.0, **SIZE, **FAST)
    b = pipe.generate("a red ball", seconds=1, fps=8, seed=3, guidance=3.0, **SIZE, **FAST)
    c = pipe.generate("a red ball", seconds=1, fps=8, seed=4, guidance=3.0, **SIZE, **FAST)
    h = pipe.generate("a red ball", seconds=1, fps=8, seed=3, guidance=3.0, method="heun", **SIZE, **FAST)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)
    assert h.frames.shape == a.frames.shape and not torch.equal(h.latent, a.latent)


def test_negative_prompt_matters_only_with_guidance(pipe):
    kw = dict(seconds=1, fps=8, seed=0, **SIZE, **FAST)
    plain = pipe.generate("a red ball", guidance=3.0, **kw)
    assert not torch.equal(plain.latent, pipe.generate("a red ball", guidance=3.0, negative_prompt="blue", **kw).latent)
    one = pipe.generate("a red ball", guidance=1.0, **kw)
    assert torch.equal(one.latent, pipe.generate("a red ball", guidance=1.0, negative_prompt="blue", **kw).latent)


def test_prompt_expansion(pipe):
    assert not pipe.expand  # an export of a run not on Kinema World: prompts as they are
    caption = pipe.caption("a red ball bounces on green grass", seed=0, expand=True)
    assert caption.startswith("A ") and "green grass" in caption and "red ball" in caption
    with pytest.raises(KinemaError, match="giraffe"):
        pipe.generate("a giraffe", expand=True, **SIZE, **FAST)


def test_bad_sizes_and_durations_raise(pipe, clip):
    with pytest.raises(KinemaError, match="positive whole numbers"):
        pipe.generate("x", width=0, height=32, **FAST)
    with pytest.raises(KinemaError, match="fit must be"):
        pipe.animate(clip.frames[0], "x", width=32, height=32, fit="stretch", **FAST)
    tries = [
        lambda: pipe.generate("x", seconds=0, **SIZE, **FAST),
        lambda: pipe.extend(clip, "x", seconds=0, **FAST),
        lambda: pipe.connect(clip, clip, "x", seconds=-1, **FAST),
        lambda: pipe.loop("x", seconds=0, **SIZE, **FAST),
    ]
    for task in tries:
        with pytest.raises(KinemaError, match="seconds"):
            task()
    with pytest.raises(KinemaError, match="5 frames"):
        pipe.extend(clip.frames[:3], "x", "backward", **FAST)  # too short to continue from its start


# ---------------------------------------------------------------- conditioned tasks


def test_animate_pins_the_image_and_starts_with_its_reconstruction(pipe, clip):
    image = clip.frames[6]
    out = pipe.animate(image, "a red ball", seconds=1, fps=8, **FAST)
    z = pipe.encode(image[None])
    assert torch.equal(out.latent[:, :1], z)
    assert torch.equal(out.frames[0], pipe.decode(z)[0])  # causal decoder: frame 0 reads latent 0 only
    assert out.frames.shape == (8, 32, 32, 3)


def test_animate_keeps_an_odd_sized_image_size(pipe):
    image = np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    assert pipe.animate(image, "x", seconds=1, fps=8, **FAST).frames.shape == (8, 24, 40, 3)


def test_match_seams_carries_the_given_frames_offset_and_fades_it():
    T, fade = 20, 8
    ramp = 100 + 2 * torch.arange(T, dtype=torch.float32)  # a smooth clip: 2 grey levels a step
    decoded = ramp[:, None, None, None].expand(T, 4, 4, 3).to(torch.uint8)
    before, after = decoded[3] + 10, decoded[15] - 6  # the given frames: off their slots by +10, -6
    new = match_seams(decoded, slice(4, 15), before=before, after=after, fade=fade)
    assert new.shape == (11, 4, 4, 3) and new.dtype == torch.uint8
    i = torch.arange(11, dtype=torch.float32)
    want = 10 * (1 - i / fade).clamp(min=0) - 6 * (1 - i.flip(0) / fade).clamp(min=0)
    got = (new.float() - decoded[4:15].float())[:, 0, 0, 0]
    assert (got - want).abs().max() <= 0.5  # rounding only
    # joined to the given frames, the steps at both seams are the clip's own (no jump)
    assert torch.equal(new[0].int() - before.int(), torch.full((4, 4, 3), 2, dtype=torch.int32))
    assert torch.equal(after.int() - new[-1].int(), torch.full((4, 4, 3), 2, dtype=torch.int32))
    assert torch.equal(match_seams(decoded, slice(4, 15)), decoded[4:15])  # nothing given: as decoded
    bright = match_seams(decoded, slice(4, 15), before=torch.full_like(decoded[3], 255))
    assert bright.max() == 255  # clamped, not wrapped
    short = match_seams(decoded, slice(4, 8), before=before, after=after, fade=fade)  # 4 frames < fade
    assert torch.equal(short[0].int() - before.int(), torch.full((4, 4, 3), 2, dtype=torch.int32))
    assert torch.equal(after.int() - short[-1].int(), torch.full((4, 4, 3), 2, dtype=torch.int32))


def test_extend_forward_pins_the_input_tail_and_keeps_the_input(pipe, clip):
    out = pipe.extend(clip, "x", "forward", seconds=1.0, **FAST)  # 8 frames = 2 new latents
    T = len(clip.frames)
    assert torch.equal(out.frames[:T], clip.frames) and len(out.frames) == T + 8
    assert out.plan.pinned.tolist() == [True, True, False, False]
    assert torch.equal(out.latent[:, :2], pipe.encode(clip.frames[T - tasks.tail_span(2) :]))
    decoded = pipe.decode(out.latent)  # the new frames are the decoded ones, carried onto the input's end
    assert torch.equal(out.frames[T:], match_seams(decoded, slice(tasks.tail_span(2), None), before=clip.frames[-1]))


def test_extend_backward_pins_the_input_head_and_keeps_the_input(pipe, clip):
    out = pipe.extend(clip, "x", "backward", seconds=1.0, **FAST)
    T = len(clip.frames)
    assert torch.equal(out.frames[-T:], clip.frames) and len(out.frames) == T + 8
    assert out.plan.pinned.tolist() == [False, False, False, True, True]
    head = tasks.head_context(pipe.encode(clip.frames[: tasks.head_span(2)]))
    assert torch.equal(out.latent[:, -2:], head)


def test_connect_starts_at_a_tail_and_ends_at_b_head(pipe, clip):
    other = pipe.generate("a blue square", seconds=1.5, fps=8, seed=2, **SIZE, **FAST).video  # 12 >= 9 frames
    out = pipe.connect(clip, other, "x", seconds=1.0, **FAST)  # 2 middle latents -> 7 frames, retimed to 8
    Ta, Tb = len(clip.frames), len(other.frames)
    assert len(out.frames) == Ta + 8 + Tb
    assert torch.equal(out.frames[:Ta], clip.frames) and torch.equal(out.frames[-Tb:], other.frames)
    assert torch.equal(out.latent[:, :2], pipe.encode(clip.frames[Ta - 5 :]))
    assert torch.equal(out.latent[:, -2:], tasks.head_context(pipe.encode(other.frames[:9])))


def test_loop_bridges_the_clip_tail_back_to_its_head(pipe):
    out = pipe.loop("a red ball", seconds=2, fps=12, **SIZE, **FAST)  # K = 6: 24 frames at the model's 12 fps
    frames = out.frames
    assert len(frames) == 24
    m = int((~out.plan.pinned).sum())  # bridge latents
    clip = frames[: len(frames) - (4 * m - 1)]  # the clip, then the bridge's middle frames
    assert len(clip) == 1 + 4 * (6 - m)
    # the seam after the last frame: the bridge was sampled from the clip's tail to its head
    assert torch.equal(out.latent[:, :2], pipe.encode(clip[len(clip) - 5 :]))
    assert torch.equal(out.latent[:, -2:], tasks.head_context(pipe.encode(clip[:9])))
    assert out.plan.pinned.tolist() == [True, True] + [False] * m + [True, True]


def test_edit_strength_zero_is_the_reconstruction_and_one_ignores_the_input(pipe, clip):
    video = Video(clip.frames[:7], clip.fps)  # 7 frames: padded to 9 inside, cropped back
    same = pipe.edit(video, "x", 0.0, **FAST)
    padded = torch.cat([video.frames, video.frames[-1:].expand(2, -1, -1, -1)])
    assert torch.equal(same.frames, pipe.decode(pipe.encode(padded))[:7])
    a = pipe.edit(clip, "a red ball", 1.0, seed=5, **FAST)
    b = pipe.edit(clip.frames.flip(0), "a red ball", 1.0, seed=5, **FAST)
    t2v = pipe.generate("a red ball", seconds=1, fps=12, seed=5, **SIZE, **FAST)  # the clip's 12 frames, at 12 fps
    assert torch.equal(a.frames, b.frames) and torch.equal(a.frames, t2v.frames)
    half = pipe.edit(clip, "x", 0.5, **FAST)
    assert half.frames.shape == clip.frames.shape


def alive(shape_test) -> int:
    """Frames held by live tensors that pass shape_test (counted through the garbage collector)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(o.shape[0] if o.dtype == torch.uint8 else o.shape[1]
                   for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and shape_test(o))  # fmt: skip


def test_long_video_memory_does_not_grow_with_windows(pipe, tmp_path):
    latents = lambda o: o.ndim == 4 and o.shape[0] == 16 and tuple(o.shape[2:]) == (4, 4)  # noqa: E731
    pixels = lambda o: o.dtype == torch.uint8 and o.ndim == 4 and tuple(o.shape[1:]) == (32, 32, 3)  # noqa: E731
    kw = dict(width=32, height=32, fps=8, **FAST)
    held, total = [], 0
    for win in pipe.long_windows("a red ball", seconds=10, window=1.5, **kw):  # 80 frames: 120 made at 12 fps
        # in 5-latent windows, resampled as they come
        total += len(win.frames)
        held.append((alive(latents), alive(pixels), win.latent_frames_held, win.pixel_frames_held))
        del win
    assert total == 80 and len(held) == 10
    assert len(set(held[1:-1])) == 1  # the same latent and pixel frames held at every window
    assert held[1][2] == 5 + 2 and held[1][3] == tasks.tail_span(2)  # one window + its 2 context latents
    out = pipe.long("a red ball", seconds=3, window=1.5, out=tmp_path / "long.mp4", **kw)
    assert out.video is None and read_video(out.path).frames.shape == (24, 32, 32, 3)


# ---------------------------------------------------------------- the command line


def test_cli_train_pack(model_dir, tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "train", "pack", model_dir, tmp_path / "p", "--default", "steps=3",
                           "--default", "guidance=2.5")  # fmt: skip
    assert code in (0, None) and "packed" in out
    defaults = json.loads((tmp_path / "p" / "pipeline.json").read_text())["defaults"]
    assert defaults == {"shift_scale": 4.0, "steps": 3, "guidance": 2.5}  # the export's own is kept
    code, _, err = run_cli(monkeypatch, capsys, "train", "pack", model_dir, tmp_path / "q", "--default", "steps")
    assert code == 2 and err.startswith("error:") and "KEY=NUMBER" in err and not (tmp_path / "q").exists()


def test_cli_runs_every_task(model_dir, clip, tmp_path, monkeypatch, capsys):
    video, image = tmp_path / "in.mp4", tmp_path / "in.png"
    write_video(video, clip.frames, clip.fps)
    write_video(image, clip.frames[:1], clip.fps)
    common = ["--model", model_dir, "--steps", 2]
    runs = {
        "generate.mp4": (["generate", "a red ball", "--size", "48x32", "--seconds", 1, "--fps", 8], (8, 32, 48)),
        "long.mp4": (["generate", "x", "--size", "32x32", "--seconds", 3, "--fps", 8, "--window", 1.5], (24, 32, 32)),
        "image.png": (["image", "a red ball", "--size", "32x16"], (1, 16, 32)),
        "animate.mp4": (["animate", image, "x", "--seconds", 1, "--fps", 8, "--sampler", "heun"], (8, 32, 32)),
        "extend.mp4": (["extend", video, "x", "--direction", "backward", "--seconds", 1], (12 + 8, 32, 32)),
        "loop.gif": (["loop", "x", "--size", "32x32", "--seconds", 2, "--fps", 8], (16, 32, 32)),
        "connect.mp4": (["connect", video, video, "x", "--seconds", 0.5], (12 + 4 + 12, 32, 32)),
        "edit.mp4": (["edit", video, "x", "--strength", 0.5, "--negative", "blue", "--guidance", 2], (12, 32, 32)),
    }  # fmt: skip
    for name, (args, shape) in runs.items():
        code, out, err = run_cli(monkeypatch, capsys, *args, *common, "--out", tmp_path / name)
        assert code == 0, (name, err)
        assert "caption:" in out and "wrote" in out
        assert read_video(tmp_path / name).frames.shape[:3] == shape, name


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "x", "--size", "0x32"], ["positive whole numbers"]),
        (["generate", "x", "--seconds", "0"], ["seconds"]),
        (["generate", "x", "--model", "no-such-model"], ["unknown model"]),
        (["animate", "NOT_AN_IMAGE", "x"], ["cannot read"]),
        (["edit", "NOT_A_VIDEO", "x"], ["cannot"]),
        (["image", "x", "--size", "big"], ["--size"]),
        (["extend", "NOT_A_VIDEO", "x", "--direction", "sideways"], ["direction"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_file(model_dir, tmp_path, monkeypatch, capsys, args, words):
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    args = [a.replace("NOT_AN_IMAGE", str(tmp_path / "bad.png")).replace("NOT_A_VIDEO", str(tmp_path / "bad.mp4"))
            for a in args]  # fmt: skip
    if "--model" not in args:
        args += ["--model", str(model_dir)]
    out_file = tmp_path / ("x.png" if args[0] == "image" else "x.mp4")
    code, out, err = run_cli(monkeypatch, capsys, *args, "--out", out_file)
    assert code == 2, (out, err)
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err
    assert not out_file.exists()


def test_cli_in_a_fresh_process_and_bench_generate(model_dir, tmp_path, monkeypatch):
    res = subprocess.run([sys.executable, "-m", "kinema.cli", "generate", "x", "--model", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    monkeypatch.setenv("KINEMA_THREADS", "1")
    (row,) = bench_generate(str(model_dir), 32, 32, seconds=1.0, fps=8, steps=2)
    assert row["frames"] == 8 and row["size"] == "32x32"
    assert row["wall_s"] > row["load_s"] + row["generate_s"] > 0 and row["peak_rss_mib"] > 50
    json.dumps(row)


def test_eval_model_source_answers_any_suite_size(model_dir):
    from kinema.eval.suite import model_source

    frames = model_source(str(model_dir))("a red ball", 40, 20, 1.0, 8.0, 0)
    assert frames.shape == (8, 20, 40, 3) and frames.dtype == np.uint8


# ---------------------------------------------------------------- any size


ODD = [(97, 61), (30, 32), (48, 17)]


@pytest.mark.parametrize("width,height", ODD)
def test_every_task_gives_exactly_the_size_asked(pipe, clip, width, height):
    kw = dict(width=width, height=height, **FAST)
    assert pipe.generate("x", seconds=1, fps=8, **kw).frames.shape == (8, height, width, 3)
    assert pipe.image("x", **kw).frames.shape == (1, height, width, 3)
    assert pipe.loop("x", seconds=1.5, fps=8, **kw).frames.shape[1:3] == (height, width)
    assert pipe.animate(clip.frames[0], "x", seconds=1, fps=8, **kw).frames.shape == (8, height, width, 3)
    assert pipe.extend(clip, "x", seconds=0.5, **kw).frames.shape[1:3] == (height, width)
    assert pipe.connect(clip, clip, "x", seconds=0.5, **kw).frames.shape[1:3] == (height, width)
    assert pipe.edit(clip, "x", 0.5, **kw).frames.shape == (len(clip.frames), height, width, 3)
    frames = pipe.long("x", 1.5, window=1.0, fps=8, **kw).frames
    assert frames.shape[1:3] == (height, width)


def test_a_size_off_the_grid_is_made_on_the_covering_grid_and_cropped(pipe):
    """Never stretched: the odd-sized clip is the centre of the clip made on the covering grid."""
    kw = dict(seconds=1, fps=12, seed=4, **FAST)  # the model's own rate: the size is the only notice
    odd = pipe.generate("a red ball", width=40, height=20, **kw)
    assert odd.notices == ("made on 48x32 (the model's 16-pixel grid) and cropped to 40x20",)
    full = pipe.generate("a red ball", width=48, height=32, **kw)
    assert full.notices == ()
    assert torch.equal(odd.frames, full.frames[:, 6:26, 4:44])


def test_inputs_keep_their_own_size_or_are_fitted(pipe):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (61, 97, 3), dtype=np.uint8)
    own = pipe.animate(image, "x", seconds=1, fps=8, **FAST)
    assert own.frames.shape == (8, 61, 97, 3) and not any("fitted" in n for n in own.notices)
    cover = pipe.animate(image, "x", width=32, height=32, seconds=1, fps=8, **FAST)
    assert cover.frames.shape == (8, 32, 32, 3)
    assert cover.notices[0] == "fitted the 97x61 input to 32x32 (scaled to cover, centre-cropped)"
    pad = pipe.animate(image, "x", width=32, height=32, seconds=1, fps=8, fit="pad", **FAST)
    assert "letterboxed" in pad.notices[0]
    # letterboxed: the bars above and below the scaled image are black in the given first frame
    from kinema.pipeline import fit_frames

    bars = fit_frames(torch.from_numpy(image)[None], 32, 32, "pad")[0]
    assert bars[:6].max() == 0 and bars[-6:].max() == 0 and bars[8:24].float().mean() > 50


def test_a_1920x1080_image_comes_out_whole(pipe):
    out = pipe.image("a red ball on green grass", width=1920, height=1080, steps=1, progress=False)
    assert out.frames.shape == (1, 1080, 1920, 3)
    assert out.notices == ("made on 1920x1088 (the model's 16-pixel grid) and cropped to 1920x1080",)


def test_cli_prints_the_size_notice_and_writes_an_odd_size(model_dir, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", "--size", "40x20", "--seconds", 1,
                             "--fps", 8, "--steps", 2, "--model", model_dir, "--out", tmp_path / "odd.webm")  # fmt: skip
    assert code == 0, err
    assert "note: made on 48x32" in out
    assert read_video(tmp_path / "odd.webm").frames.shape[1:3] == (20, 40)


def test_cli_notes_an_odd_mp4_size_and_a_long_webm_keeps_it(model_dir, tmp_path, monkeypatch, capsys):
    common = ["--size", "39x21", "--seconds", 1, "--fps", 8, "--steps", 2, "--model", model_dir]
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", *common, "--out", tmp_path / "odd.mp4")
    assert code == 0, err
    assert "the file is 40x22" in out and "write .webm to keep 39x21" in out  # said, not silent
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", *common, "--window", 1,
                             "--out", tmp_path / "long.webm")  # fmt: skip
    assert code == 0, err
    assert read_video(tmp_path / "long.webm").frames.shape[1:3] == (21, 39)  # VP9 keeps an odd size, as write_video


def test_out_of_range_inputs_and_windows_say_what_is_wrong(pipe, clip):
    with pytest.raises(KinemaError, match="second video of a connect"):
        pipe.connect(clip, clip.frames[:1], "x", **FAST)  # not "a clip to be continued from its start"
    with pytest.raises(KinemaError, match="larger than 8192 pixels a side"):
        pipe.animate(torch.zeros(16, 8200, 3, dtype=torch.uint8), "x", **FAST)
    with pytest.raises(KinemaError, match="window must be a positive number"):
        pipe.long("x", 2, window=0, **SIZE, **FAST)  # not "seconds must be ..."


def test_prompt_notices_reach_the_output_and_the_cli(model_dir, pipe, tmp_path, monkeypatch, capsys):
    out = pipe.generate("a fluffy crimson orb plummets onto the sand", width=40, height=24, seconds=1, fps=8,
                        expand=True, **FAST)  # fmt: skip
    assert any("fluffy" in n for n in out.notices) and any("'crimson' as 'red'" in n for n in out.notices)
    assert any("cropped to 40x24" in n for n in out.notices)
    with pytest.raises(KinemaError, match="does not know .zzz.*it knows colours"):
        pipe.generate("zzz qqq", expand=True, **SIZE, **FAST)
    code, text, err = run_cli(monkeypatch, capsys, "generate", "a fluffy orb drops onto the sand", "--size", "32x32",
                              "--seconds", 1, "--fps", 8, "--steps", 2, "--model", model_dir, "--expand", "world",
                              "--out", tmp_path / "a.mp4")  # fmt: skip
    assert code == 0, err
    assert "note: " in text and "fluffy" in text
