"""Sequence parallelism (Ulysses) on CPU with gloo: a sequence split over 2 ranks gives the DiT's
velocity, loss and gradients of one rank (packed and unpacked, lengths that do not divide); the
trainer on 2 ranks (sequence 2) and on 4 (data 2 x sequence 2) equals one process on the same
global batch; and `torchrun ... kinema.cli generate` samples the clip one process samples, with
the sequence split, guidance's two rows split, or both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.errors import KinemaError
from kinema.train.dit import DiTTrainConfig, setup, train_dit
from tests.cli_helpers import torchrun
from tests.test_train_dit import SMALL, cache, losses  # noqa: F401 (the fixture)

HERE = Path(__file__).parent


@pytest.mark.slow
def test_a_split_sequence_gives_the_velocity_loss_and_gradients_of_one_rank():
    res = torchrun([HERE / "sp_check.py"])
    diffs = {}
    for line in res.stdout.splitlines():
        if line.startswith("max diff "):
            name, value = line[len("max diff ") :].rsplit(" ", 1)
            diffs.setdefault(name, []).append(float(value))
    assert set(diffs) == {"unpacked", "packed", "packed flex", "loss", "grad"} and all(len(v) == 1 for v in diffs.values())
    assert max(max(v) for v in diffs.values()) <= 1e-5, diffs


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 4])
def test_training_split_over_ranks_equals_one_process(tmp_path, cache, nproc):  # noqa: F811
    """2 ranks: one sequence group; 4 ranks: a (data 2 x sequence 2) mesh; the same global batch."""
    settings = dict(data=cache, token_budget=64, sequences_per_step=2, steps=2, precision="fp32", **SMALL)
    train_dit(tmp_path / "one", DiTTrainConfig(**{**settings, "data": str(cache)}), progress=False)
    sets = sum((["--set", f"{k}={v}"] for k, v in {**settings, "sequence_parallel": 2}.items()), [])
    torchrun(["-m", "kinema.cli", "train", "dit", tmp_path / "split", *sets], nproc=nproc)
    one, split = losses(tmp_path / "one"), losses(tmp_path / "split")
    assert sorted(one) == sorted(split) == [1, 2]
    assert all(abs(one[s] - split[s]) <= 1e-4 for s in one), (one, split)
    a, b = (load_file(str(tmp_path / r / "export/dit.safetensors")) for r in ("one", "split"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4


def test_sequence_parallel_needs_ranks_it_divides(cache):  # noqa: F811
    with pytest.raises(KinemaError, match="sequence_parallel = 2 must divide the number of ranks"):
        setup("unused", DiTTrainConfig(data=str(cache), sequence_parallel=2, **SMALL))


@pytest.mark.slow
def test_torchrun_samples_the_clip_one_process_samples(tmp_path):
    from kinema.pipeline import Pipeline
    from kinema.video import read_video

    torchrun([HERE / "sp_check.py", "sample", tmp_path / "split.safetensors"])
    saved = load_file(str(tmp_path / "split.safetensors"))
    pipe = Pipeline.from_pretrained("world", device="cpu")
    one = pipe.generate("a red ball bounces on green grass", width=80, height=48, seconds=1, steps=3, seed=5,
                        progress=False).latent  # fmt: skip
    assert saved["latent"].shape == one.shape and (saved["latent"] - one).abs().max().item() <= 1e-4
    # the large clip: its decode's tiles were shared by the 2 ranks; one process decoding the same
    # tiles gives the same frames
    from kinema.data.cache import decode_latent
    from kinema.pipeline import SPLIT_DECODE, split_tile

    big = pipe.generate("a red ball bounces on green grass", width=320, height=256, seconds=0.5, steps=1, seed=5,
                        progress=False).latent  # fmt: skip
    assert min(big.shape[-2:]) >= SPLIT_DECODE and (saved["big_latent"] - big).abs().max().item() <= 1e-4
    frames = decode_latent(pipe.vae, saved["big_latent"], tile=split_tile(big.shape[-2:], 2))
    made = saved["big_frames"]  # the clip's frames: the decode's first 0.5 s x 8 fps
    assert (frames[: len(made)].int() - made.int()).abs().max().item() <= 1

    # the command line: rank 0 writes, the other ranks write nothing; a long video (two windows)
    # too. GIF, not mp4: x264 here encodes the same frames to different files run to run
    args = ["generate", "a red ball bounces", "--size", "64x48", "--seconds", 2, "--window", 1, "--steps", 2]
    res = torchrun(["-m", "kinema.cli", *args, "--out", tmp_path / "two.gif"])
    assert res.stdout.count("wrote ") == 1 + 1 and "sampling on 2 ranks" in res.stdout  # the video and its caption
    subprocess.run([sys.executable, "-m", "kinema.cli", *map(str, args), "--out", str(tmp_path / "one.gif")],
                   check=True, capture_output=True)  # fmt: skip
    a, b = (read_video(tmp_path / f).frames for f in ("one.gif", "two.gif"))
    assert a.shape == b.shape == (16, 48, 64, 3) and torch.equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".gif", ".txt")) == ["one.gif", "one.txt",
                                                                                          "two.gif", "two.txt"]


@pytest.mark.slow
def test_four_ranks_split_guidance_and_the_sequence(tmp_path):
    """4 ranks: the caption's row on ranks 0-1 and the negative caption's on 2-3 (guidance split),
    each pair splitting the sequence; the clip equals one process's."""
    from kinema.video import read_video

    args = ["generate", "a blue square slides left", "--size", "64x48", "--seconds", 1, "--steps", 2, "--seed", 4]
    res = torchrun(["-m", "kinema.cli", *args, "--out", tmp_path / "four.gif"], nproc=4)
    assert "guidance's two rows on two halves of them, each sequence split among 2" in res.stdout
    subprocess.run([sys.executable, "-m", "kinema.cli", *map(str, args), "--out", str(tmp_path / "one.gif")],
                   check=True, capture_output=True)  # fmt: skip
    assert torch.equal(read_video(tmp_path / "one.gif").frames, read_video(tmp_path / "four.gif").frames)
