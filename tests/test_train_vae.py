"""VAE training: exact resume, export that loads, clear errors for bad settings."""

import subprocess
import sys

import pytest
import torch

from kinema.errors import KinemaError
from kinema.train.vae import VAETrainConfig, step_plan, train_vae
from kinema.vae import load_vae

SMALL = dict(vae="tiny", steps=4, batch=2, frames=(1, 5), sizes=((16, 16), (16, 24)), ckpt_every=2, warmup=2)



def test_resume_is_exact(tmp_path):
    cfg = VAETrainConfig(**SMALL)
    whole = train_vae(cfg, tmp_path / "whole", progress=False)
    first = train_vae(VAETrainConfig(**{**SMALL, "steps": 2}), tmp_path / "split", progress=False)
    rest = train_vae(cfg, tmp_path / "split", progress=False)
    assert len(whole) == 4 and len(first) == 2 and len(rest) == 2
    assert first + rest == whole  # bit-identical: data, posterior noise and optimizer state resume


def test_export_loads_and_reconstructs_shape(tmp_path):
    train_vae(VAETrainConfig(**{**SMALL, "steps": 2}), tmp_path, progress=False)
    vae = load_vae(tmp_path / "export")
    x = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).mode())
    assert y.shape == x.shape


def test_steps_mix_images_videos_and_sizes():
    cfg = VAETrainConfig(**SMALL)
    plans = {step_plan(cfg, s) for s in range(40)}
    assert {p[0] for p in plans} == {1, 5}
    assert {p[1:] for p in plans} == {(16, 16), (16, 24)}


@pytest.mark.parametrize("bad", [{"frames": (4,)}, {"sizes": ((20, 16),)}, {"batch": 0}])
def test_bad_settings_are_clear(bad):
    with pytest.raises(KinemaError):
        VAETrainConfig(**{**SMALL, **bad})


def test_cli_bad_frames_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "kinema.cli", "train", "vae", str(tmp_path), "--frames", "4"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "1 + 4k" in res.stderr
