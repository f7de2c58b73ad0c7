"""Wan 2.2 TI2V-5B in Kinema, against the reference (diffusers 0.42): a whole text-to-video and a
whole image-to-video sample from the same noise, and every prompting mode with the native
conditioning (clean tokens at t = 0) on a tiny random TI2V folder.

The TI2V folder is the reference WanPipeline with `expand_timesteps` (one timestep a token) over
Wan 2.2's VAE (48 channels in the real model, 4x16x16 with its patchified input); the tiny random
parts are built by tests/wan_reference.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kinema import tasks
from kinema.errors import KinemaError
from tests.cli_helpers import check_task_commands
from tests.wan_reference import tiny_text_encoder, tiny_tokenizer, tiny_transformer

CHANNELS, TEXT_DIM = 8, 16
FAST = dict(steps=2, progress=False)


def tiny_ti2v_vae(seed: int = 0):
    """The reference Wan 2.2 VAE (is_residual, patch_size 2: 4x16x16), tiny and random."""
    from tests.wan_reference import tiny_vae_22

    return tiny_vae_22(channels=CHANNELS, seed=seed)


def _scheduler(shift: float = 5.0):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)  # fmt: skip


def ti2v_parts(seed: int = 0) -> dict:
    return dict(tokenizer=tiny_tokenizer(), text_encoder=tiny_text_encoder(TEXT_DIM, seed), vae=tiny_ti2v_vae(seed),
                transformer=tiny_transformer(channels=CHANNELS, text_dim=TEXT_DIM, seed=seed), scheduler=_scheduler())  # fmt: skip


def save_ti2v_folder(path: Path, seed: int = 0):
    """A tiny reference Wan 2.2 TI2V WanPipeline saved as a diffusers folder: (folder, pipeline)."""
    from diffusers import WanPipeline

    pipe = WanPipeline(**ti2v_parts(seed), expand_timesteps=True)
    pipe.save_pretrained(str(path))
    return Path(path), pipe


@pytest.fixture(scope="module")
def ti2v_dir(tmp_path_factory):
    folder, _ = save_ti2v_folder(tmp_path_factory.mktemp("wan22") / "Wan2.2-TI2V-tiny", seed=3)
    return folder


@pytest.fixture(scope="module")
def ti2v(ti2v_dir):
    from kinema.pipeline import Pipeline

    return Pipeline.from_pretrained(ti2v_dir, device="cpu")


# ---------------------------------------------------------------- the folder


def test_a_ti2v_folder_is_a_native_model_on_a_32_pixel_grid(ti2v):
    assert ti2v.strategy == "native" and ti2v.scheduler["method"] == "unipc" and ti2v.scheduler["shift"] == 5.0
    assert ti2v.multiple == 32 and ti2v.temporal == 4 and ti2v.vae.config.spatial_factor == 16
    assert ti2v.dit.config.in_channels == CHANNELS
    d = ti2v.defaults
    assert (d["width"], d["height"], d["fps"], d["steps"], d["guidance"]) == (1280, 704, 24, 50, 5.0)
    assert d["seconds"] * d["fps"] == pytest.approx(121)


def test_two_expert_and_clip_image_folders_are_clear_errors(tmp_path):
    import json

    from kinema.models.wan import load_wan

    for extra, words in (({"boundary_ratio": 0.9}, "two-expert"), ({"image_encoder": ["transformers", "CLIPVisionModel"]}, "CLIP")):
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", **extra}))
        with pytest.raises(KinemaError, match=words):
            load_wan(tmp_path)


# ---------------------------------------------------------------- whole samples against the reference


def _latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    return (CHANNELS, 1 + (frames - 1) // 4, height // 16, width // 16)


def _decode(pipe, z):
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latent(z[None]), chunk=1)  # (1, 3, T, H, W) in [-1, 1]
    return (video[0].permute(1, 0, 2, 3) / 2 + 0.5).clamp(0, 1)  # (T, 3, H, W)


@pytest.mark.parametrize("frames,size", [(9, (64, 32)), (1, (32, 32))])
def test_text_to_video_sample_equals_the_reference(tmp_path, frames, size):
    from kinema.pipeline import Pipeline
    from kinema.sampling import get_noise

    folder, ref = save_ti2v_folder(tmp_path / "wan22", seed=1)
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    width, height = size
    steps, guidance, seed, prompt = 5, 5.0, 7, "a red ball bounces on green grass"
    noise = get_noise(_latent_shape(frames, height, width), seed)
    with torch.no_grad():
        want = ref(prompt, negative_prompt="", height=height, width=width, num_frames=frames, num_inference_steps=steps,
                   guidance_scale=guidance, latents=noise[None].clone(), output_type="pt").frames[0].float()  # fmt: skip
    plan = tasks.text_to_video(CHANNELS, noise.shape[1], *noise.shape[2:])
    got = _decode(pipe, pipe.sample(plan, prompt, "", steps=steps, guidance=guidance, seed=seed, progress=False))
    assert got.shape == want.shape == (frames, 3, height, width)
    assert (got - want).abs().max().item() <= 1e-3


def test_image_to_video_sample_equals_the_reference(tmp_path):
    """The reference's TI2V image-to-video (WanImageToVideoPipeline with expand_timesteps: the
    image's latent as frame 0 at timestep 0) is Kinema's animate with the native strategy."""
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from kinema.pipeline import Pipeline
    from kinema.sampling import get_noise

    folder, _ = save_ti2v_folder(tmp_path / "wan22", seed=2)
    ref = WanImageToVideoPipeline(**ti2v_parts(seed=2), expand_timesteps=True)
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    frames, width, height = 9, 64, 32
    steps, guidance, seed, prompt = 5, 5.0, 9, "a cat walks slowly over wet sand"
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    noise = get_noise(_latent_shape(frames, height, width), seed)
    with torch.no_grad():
        want = ref(Image.fromarray(image), prompt, negative_prompt="", height=height, width=width, num_frames=frames,
                   num_inference_steps=steps, guidance_scale=guidance, latents=noise[None].clone(),
                   output_type="pt").frames[0].float()  # fmt: skip
    plan = tasks.image_to_video(pipe.encode(torch.from_numpy(image)[None]), noise.shape[1])
    got = _decode(pipe, pipe.sample(plan, prompt, "", steps=steps, guidance=guidance, seed=seed, progress=False))
    assert got.shape == want.shape == (frames, 3, height, width)
    assert (got - want).abs().max().item() <= 1e-3


# ---------------------------------------------------------------- every prompting mode, native conditioning


@pytest.fixture(scope="module")
def clip(ti2v):
    return ti2v.generate("a red ball bounces", width=64, height=32, seconds=13 / 24, **FAST).video  # 13 frames


def test_every_size_comes_out_exact_on_the_32_pixel_grid(ti2v, clip):
    assert clip.frames.shape == (13, 32, 64, 3) and clip.fps == 24
    odd = ti2v.generate("a red ball", width=40, height=24, seconds=5 / 24, **FAST)
    assert odd.frames.shape == (5, 24, 40, 3)
    assert odd.notices == ("made on 64x32 (the model's 32-pixel grid) and cropped to 40x24",)
    assert ti2v.image("a cat", width=48, height=32, **FAST).frames.shape == (1, 32, 48, 3)


def test_animate_pins_the_image_clean(ti2v, clip):
    image = clip.frames[4]
    out = ti2v.animate(image, "a red ball", seconds=9 / 24, **FAST)
    z = ti2v.encode(image[None])
    assert torch.equal(out.latent[:, :1], z) and out.plan.pinned.tolist() == [True, False, False]
    assert torch.equal(out.frames[0], ti2v.decode(z)[0])
    assert out.frames.shape == (9, 32, 64, 3)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_keeps_the_input(ti2v, clip, direction):
    out = ti2v.extend(clip, "x", direction, seconds=8 / 24, **FAST)
    T = len(clip.frames)
    assert len(out.frames) == T + 8
    kept = out.frames[:T] if direction == "forward" else out.frames[-T:]
    assert torch.equal(kept, clip.frames)
    assert out.plan.pinned.sum() == 2  # two context latents, clean


def test_connect_loop_long_and_edit(ti2v, clip, tmp_path):
    from kinema.video import read_video

    other = ti2v.generate("a blue dog", width=64, height=32, seconds=13 / 24, seed=2, **FAST).video
    out = ti2v.connect(clip, other, "x", seconds=8 / 24, **FAST)
    assert len(out.frames) == 13 + 8 + 13 and torch.equal(out.frames[-13:], other.frames)
    loop = ti2v.loop("a red ball", width=32, height=32, seconds=1.0, **FAST)
    assert len(loop.frames) == 24 and loop.plan.pinned.tolist()[:2] == [True, True]
    long = ti2v.long("a red ball", 1.0, window=0.5, width=32, height=32, out=tmp_path / "long.mp4", **FAST)
    assert read_video(long.path).frames.shape[:3] == (24, 32, 32)
    same = ti2v.edit(clip, "x", 0.0, **FAST)
    assert torch.equal(same.frames, ti2v.decode(ti2v.encode(clip.frames)))


def test_every_task_command_takes_a_ti2v_folder(ti2v_dir, clip, tmp_path):
    from kinema.video import write_video

    video, image = tmp_path / "in.mp4", tmp_path / "in.png"
    write_video(video, clip.frames, clip.fps)
    write_video(image, clip.frames[:1], clip.fps)
    common = ["--model", str(ti2v_dir), "--steps", "2"]
    runs = {
        "t2v.mp4": (["generate", "a red ball", "--size", "40x24", "--seconds", "0.25"], (6, 24, 40)),
        "long.mp4": (["generate", "x", "--size", "32x32", "--seconds", "1", "--window", "0.5"], (24, 32, 32)),
        "img.png": (["image", "a red ball", "--size", "64x32"], (1, 32, 64)),
        "anim.mp4": (["animate", str(image), "x", "--seconds", "0.5"], (12, 32, 64)),
        "ext.mp4": (["extend", str(video), "x", "--seconds", "0.25", "--direction", "backward"], (13 + 6, 32, 64)),
        "loop.mp4": (["loop", "x", "--size", "32x32", "--seconds", "1"], (24, 32, 32)),
        "conn.mp4": (["connect", str(video), str(video), "x", "--seconds", "0.25"], (13 + 6 + 13, 32, 64)),
        "edit.mp4": (["edit", str(video), "x", "--strength", "0.5"], (13, 32, 64)),
    }
    check_task_commands(runs, common, tmp_path)
