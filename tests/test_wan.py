"""Wan 2.1 in Kinema, against the reference (diffusers 0.42): the transformer's velocity, a whole
text-to-video sample, and every prompting mode on a tiny random Wan folder.

The reference models are small and random (tests/wan_reference.py); the claims are numerical
equality in float32 and the mechanics of each task. What real Wan weights draw cannot be tested
here: no weights are downloaded."""

from __future__ import annotations

import pytest
import torch

from kinema.errors import KinemaError
from kinema.models.wan import load_wan_dit, wan_rope_axes
from kinema.patches import grid_size, patchify, positions, unpatchify
from tests.cli_helpers import check_task_commands
from tests.wan_reference import save_wan_folder, tiny_transformer


def kinema_velocity(dit, x, t, text):
    """Kinema's DiT on reference-shaped inputs: x (B, C, T, H, W), t (B,) in [0, 1], text (B, L, D)."""
    grid = grid_size(x.shape[1:], dit.config.patch)
    tokens = torch.stack([patchify(xi, dit.config.patch) for xi in x])  # (B, L, C*pt*ph*pw)
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    v = dit(tokens, positions(grid), t, text, mask)
    return torch.stack([unpatchify(vi, grid, dit.config.patch) for vi in v])


@pytest.mark.parametrize(
    "shape",
    [
        dict(heads=2, head_dim=12, layers=2, frames=1, size=(6, 10)),
        dict(heads=3, head_dim=16, layers=1, frames=5, size=(4, 8)),
        dict(heads=1, head_dim=24, layers=3, frames=3, size=(8, 6)),
        dict(heads=2, head_dim=20, layers=2, frames=2, size=(2, 2)),
    ],
)
def test_dit_velocity_equals_reference(tmp_path, shape):
    ref = tiny_transformer(heads=shape["heads"], head_dim=shape["head_dim"], layers=shape["layers"], ffn=36, seed=3)
    ref.save_pretrained(tmp_path / "transformer")
    dit = load_wan_dit(tmp_path / "transformer")
    assert dit.config.rope_split == wan_rope_axes(shape["head_dim"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, shape["frames"], *shape["size"], generator=g)
    t = torch.tensor([0.93, 0.27])
    text = torch.randn(2, 9, 16, generator=g)
    text[1, 5:] = 0  # Wan's zero padding after a caption's tokens
    with torch.no_grad():
        want = ref(x, t * 1000, text, return_dict=False)[0]
        got = kinema_velocity(dit, x, t, text)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4


def test_dit_per_token_times_equal_reference(tmp_path):
    """Per-token timesteps (the reference's 2-D timestep, Wan 2.2's expand_timesteps path)."""
    ref = tiny_transformer(seed=5)
    ref.save_pretrained(tmp_path / "transformer")
    dit = load_wan_dit(tmp_path / "transformer")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 3, 4, 6, generator=g)
    t = torch.rand(1, 3 * 2 * 3, generator=g)  # one time a token
    text = torch.randn(1, 5, 16, generator=g)
    with torch.no_grad():
        want = ref(x, t * 1000, text, return_dict=False)[0]
        grid = grid_size(x.shape[1:], (1, 2, 2))
        v = dit(patchify(x[0])[None], positions(grid), t, text, torch.ones(1, 5, dtype=torch.bool))
        got = unpatchify(v[0], grid)[None]
    assert (got - want).abs().max().item() <= 1e-4


def test_dit_sharded_weights_load_the_same(tmp_path):
    ref = tiny_transformer(seed=7)
    ref.save_pretrained(tmp_path / "one")
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    a, b = load_wan_dit(tmp_path / "one"), load_wan_dit(tmp_path / "sharded")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_dit_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(KinemaError, match="missing"):
        load_wan_dit(tmp_path)
    ref = tiny_transformer(seed=1)
    ref.save_pretrained(tmp_path / "t")
    state_file = next((tmp_path / "t").glob("*.safetensors"))
    from safetensors.torch import load_file, save_file

    state = load_file(str(state_file))
    state.pop("blocks.1.ffn.net.2.weight")
    save_file(state, str(state_file))
    with pytest.raises(KinemaError, match="lack blocks.1.ffn.net.2.weight"):
        load_wan_dit(tmp_path / "t")


# ---------------------------------------------------------------- whole pipeline


def _reference_frames(ref, prompt, noise, width, height, frames, steps, guidance):
    """WanPipeline's decoded frames (T, 3, H, W) in [0, 1] from the given starting latent."""
    with torch.no_grad():
        out = ref(prompt, negative_prompt="", height=height, width=width, num_frames=frames,
                  num_inference_steps=steps, guidance_scale=guidance, latents=noise[None].clone(),
                  output_type="pt").frames  # fmt: skip
    return out[0].float()


def _kinema_frames(pipe, prompt, width, height, frames, steps, guidance, seed):
    from kinema import tasks

    h, w = height // 8, width // 8
    plan = tasks.text_to_video(pipe.dit.config.in_channels, 1 + (frames - 1) // 4, h, w)
    z = pipe.sample(plan, prompt, "", steps=steps, guidance=guidance, seed=seed, progress=False)
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latent(z[None]), chunk=1)  # (1, 3, T, H, W) in [-1, 1]
    return (video[0].permute(1, 0, 2, 3) / 2 + 0.5).clamp(0, 1)  # (T, 3, H, W)


@pytest.mark.parametrize("scheduler,frames,size", [("unipc", 9, (32, 16)), ("euler", 5, (16, 32)), ("unipc", 1, (16, 16))])
def test_text_to_video_sample_equals_wan_pipeline(tmp_path, scheduler, frames, size):
    from kinema.pipeline import Pipeline
    from kinema.sampling import get_noise

    folder, ref = save_wan_folder(tmp_path / "wan", scheduler=scheduler, shift=3.0)
    pipe = Pipeline.from_pretrained(folder, device="cpu")
    assert pipe.strategy == "replace" and pipe.scheduler["method"] == ("unipc" if scheduler == "unipc" else "euler")
    width, height = size
    steps, guidance, seed = 6, 5.0, 11
    prompt = "a red ball bounces on green grass"
    noise = get_noise((4, 1 + (frames - 1) // 4, height // 8, width // 8), seed)
    want = _reference_frames(ref, prompt, noise, width, height, frames, steps, guidance)
    got = _kinema_frames(pipe, prompt, width, height, frames, steps, guidance, seed)
    assert got.shape == want.shape == (frames, 3, height, width)
    assert (got - want).abs().max().item() <= 1e-3


# ---------------------------------------------------------------- every prompting mode on a Wan folder
# Wan 2.1 was not trained with clean conditioning tokens: its tasks use the "replace" strategy.
# These tests check the mechanism on a tiny random model: sizes and durations, the given frames
# kept as given, the pinned latents equal to the encoded inputs (so their decoded frames are the
# VAE's round trip of the inputs), and new frames where a seam is expected.

FAST = dict(steps=2, progress=False)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    folder, _ = save_wan_folder(tmp_path_factory.mktemp("wan") / "Wan-tiny", seed=4)
    return folder


@pytest.fixture(scope="module")
def wan(wan_dir):
    from kinema.pipeline import Pipeline

    return Pipeline.from_pretrained(wan_dir, device="cpu")


@pytest.fixture(scope="module")
def wan_clip(wan):
    return wan.generate("a red ball bounces", width=32, height=16, seconds=13 / 16, **FAST).video  # 13 frames


def test_wan_folder_defaults_and_size(wan, wan_clip):
    assert wan.defaults["fps"] == 16 and wan.defaults["width"] == 832 and wan.defaults["height"] == 480
    assert wan.multiple == 16 and wan.temporal == 4
    assert wan_clip.frames.shape == (13, 16, 32, 3) and wan_clip.fps == 16
    assert wan.image("a cat", width=48, height=32, **FAST).frames.shape == (1, 32, 48, 3)


def test_wan_sampling_is_seeded_and_reads_the_prompt(wan):
    kw = dict(width=16, height=16, seconds=5 / 16, **FAST)
    a, b = wan.generate("a red ball", seed=1, **kw), wan.generate("a red ball", seed=1, **kw)
    c = wan.generate("a blue dog", seed=1, **kw)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)
    h = wan.generate("a red ball", seed=1, method="heun", **kw)
    assert not torch.equal(a.latent, h.latent)  # another sampler than the folder's UniPC


def test_wan_animate_pins_the_image(wan, wan_clip):
    image = wan_clip.frames[4]
    out = wan.animate(image, "a red ball", seconds=9 / 16, **FAST)
    z = wan.encode(image[None])
    assert torch.equal(out.latent[:, :1], z)
    assert torch.equal(out.frames[0], wan.decode(z)[0])  # the image's round trip through the VAE
    assert out.frames.shape == (9, 16, 32, 3)
    assert not torch.equal(out.frames[1], out.frames[0])  # new frames after it


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_wan_extend_keeps_the_input_and_pins_its_edge(wan, wan_clip, direction):
    from kinema import tasks

    out = wan.extend(wan_clip, "x", direction, seconds=0.5, **FAST)  # 8 frames = 2 new latents
    T = len(wan_clip.frames)
    assert len(out.frames) == T + 8
    if direction == "forward":
        assert torch.equal(out.frames[:T], wan_clip.frames)
        assert torch.equal(out.latent[:, :2], wan.encode(wan_clip.frames[T - tasks.tail_span(2) :]))
    else:
        assert torch.equal(out.frames[-T:], wan_clip.frames)
        assert torch.equal(out.latent[:, -2:], tasks.head_context(wan.encode(wan_clip.frames[: tasks.head_span(2)])))


def test_wan_connect_loop_and_long(wan, wan_clip, tmp_path):
    from kinema.video import read_video

    other = wan.generate("a blue dog", width=32, height=16, seconds=13 / 16, seed=2, **FAST).video
    out = wan.connect(wan_clip, other, "x", seconds=0.5, **FAST)  # 2 middle latents -> 7 frames, retimed to 8
    assert len(out.frames) == 13 + 8 + 13
    assert torch.equal(out.frames[:13], wan_clip.frames) and torch.equal(out.frames[-13:], other.frames)
    loop = wan.loop("a red ball", width=16, height=16, seconds=1.5, **FAST)  # K = 6 latents: 24 frames
    assert len(loop.frames) == 24 and loop.plan.pinned.tolist()[:2] == [True, True]
    long = wan.long("a red ball", 2.0, window=0.75, width=16, height=16, out=tmp_path / "long.mp4", **FAST)
    assert read_video(long.path).frames.shape[:3] == (2 * 16, 16, 16)  # exactly 2 s at 16 fps


def test_wan_edit_strength_zero_is_the_round_trip(wan, wan_clip):
    same = wan.edit(wan_clip, "x", 0.0, **FAST)
    assert torch.equal(same.frames, wan.decode(wan.encode(wan_clip.frames)))
    half = wan.edit(wan_clip, "a blue dog", 0.5, **FAST)
    assert half.frames.shape == wan_clip.frames.shape and not torch.equal(half.frames, same.frames)


def test_cli_generate_and_tasks_take_a_wan_folder(wan_dir, wan_clip, tmp_path):
    from kinema.video import write_video

    video, image = tmp_path / "in.mp4", tmp_path / "in.png"
    write_video(video, wan_clip.frames, wan_clip.fps)
    write_video(image, wan_clip.frames[:1], wan_clip.fps)
    common = ["--model", str(wan_dir), "--steps", "2"]
    runs = {
        "t2v.mp4": (["generate", "a red ball", "--size", "48x32", "--seconds", "0.5"], (8, 32, 48)),
        "long.mp4": (["generate", "x", "--size", "16x16", "--seconds", "1", "--window", "0.5"], (16, 16, 16)),
        "img.png": (["image", "a red ball", "--size", "32x16"], (1, 16, 32)),
        "anim.mp4": (["animate", str(image), "x", "--seconds", "0.5", "--offload", "text"], (8, 16, 32)),
        "ext.mp4": (["extend", str(video), "x", "--seconds", "0.25", "--sampler", "euler"], (17, 16, 32)),
        "loop.mp4": (["loop", "x", "--size", "16x16", "--seconds", "1", "--dtype", "bfloat16"], (16, 16, 16)),
        "conn.mp4": (["connect", str(video), str(video), "x", "--seconds", "0.25"], (13 + 4 + 13, 16, 32)),
        "edit.mp4": (["edit", str(video), "x", "--strength", "0.5"], (13, 16, 32)),
    }
    check_task_commands(runs, common, tmp_path)


def test_not_a_wan_folder_is_a_clear_error(tmp_path):
    from kinema.models.wan import load_wan

    (tmp_path / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    with pytest.raises(KinemaError, match="lacks transformer/"):
        load_wan(tmp_path)


@pytest.mark.slow
def test_bench_compare_runs_both_sides_on_a_named_config():
    from kinema.models.compare import compare

    rows = compare("tiny", 32, 32, frames=5, steps=1, dtype="float32", vae_frames=5)
    got = {(r["part"].split(",")[0], r["measure"]): r for r in rows}
    for part in ("DiT step", "VAE decode"):
        for measure in ("seconds", "peak MiB"):
            r = got[(part, measure)]
            assert r["reference"] > 0 and r["kinema"] > 0 and r["ratio"].endswith("x")
    assert got[("DiT step", "max |v diff|")]["kinema"] <= 1e-4  # the same weights, float32
    assert got[("VAE decode", "max |frame diff|")]["kinema"] <= 1e-4
    with pytest.raises(KinemaError, match="unknown config"):
        compare("wan9", 32, 32)


# ---------------------------------------------------------------- memory options


def test_offloaded_and_half_precision_pipelines_sample_the_same(wan_dir):
    from kinema.pipeline import Pipeline

    kw = dict(width=16, height=16, seconds=5 / 16, seed=3, **FAST)
    plain = Pipeline.from_pretrained(wan_dir, device="cpu").generate("a red ball", **kw).latent
    for offload in ("text", "blocks"):
        pipe = Pipeline.from_pretrained(wan_dir, device="cpu", offload=offload)
        assert torch.equal(pipe.generate("a red ball", **kw).latent, plain), offload
    half = Pipeline.from_pretrained(wan_dir, device="cpu", dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in half.dit.parameters())
    got = half.generate("a red ball", **kw).latent
    assert 0 < (got - plain).abs().max() < 0.1 * plain.abs().max()  # bfloat16 rounding, the same sample
    with pytest.raises(KinemaError, match="offload"):
        Pipeline.from_pretrained(wan_dir, device="cpu", offload="disk")
    with pytest.raises(KinemaError, match="dtype"):
        Pipeline.from_pretrained(wan_dir, device="cpu", dtype="int8")


def test_memory_estimate_terms():
    from kinema.models.memory import GIB, wan_memory_table, wan_sampling_memory

    small = wan_sampling_memory("wan2.1-1.3b", 832, 480)
    assert 1.2e9 < small["dit_weights"] * GIB / 2 < 1.5e9  # the 1.3B's parameters, counted
    big = wan_sampling_memory("wan2.1-14b", 832, 480)
    assert 13e9 < big["dit_weights"] * GIB / 2 < 15e9
    assert small["tokens"] == 21 * 30 * 52
    hd = wan_sampling_memory("wan2.1-14b", 1280, 720)
    assert hd["activations"] > big["activations"] and hd["peak"] > big["peak"]
    peaks = [wan_sampling_memory("wan2.1-14b", 832, 480, offload=o)["peak"] for o in ("none", "text", "blocks")]
    assert peaks[0] > peaks[1] > peaks[2]
    assert len(wan_memory_table()) == 15  # 1.3B and 14B at 480p and 720p, the 5B at 720p; 3 offloads each
