"""VAE training: exact resume, export that loads, clear errors for bad settings."""

import json
import subprocess
import sys

import pytest
import torch

from kinema.errors import KinemaError
from kinema.train.vae import VAETrainConfig, _init_from, export_vae, step_plan, train_vae
from kinema.vae import load_vae, save_vae
from tests.cli_helpers import run_cli

SMALL = dict(vae="tiny", steps=4, batch=2, frames=(1, 5), sizes=((16, 16), (16, 24)), ckpt_every=2, warmup=2)



def test_resume_is_exact(tmp_path):
    cfg = VAETrainConfig(**SMALL)
    whole = train_vae(cfg, tmp_path / "whole", progress=False)
    first = train_vae(VAETrainConfig(**{**SMALL, "steps": 2}), tmp_path / "split", progress=False)
    rest = train_vae(cfg, tmp_path / "split", progress=False)
    assert len(whole) == 4 and len(first) == 2 and len(rest) == 2
    assert first + rest == whole  # bit-identical: data, posterior noise and optimizer state resume


def test_render_workers_give_the_same_run(tmp_path):
    in_process = train_vae(VAETrainConfig(**{**SMALL, "steps": 3}), tmp_path / "a", progress=False)
    ahead = train_vae(VAETrainConfig(**{**SMALL, "steps": 3, "workers": 2}), tmp_path / "b", progress=False)
    assert ahead == in_process  # the batches come in step order, whoever makes them
    with pytest.raises(KinemaError, match="workers"):
        VAETrainConfig(**{**SMALL, "workers": -1})


def test_export_loads_and_reconstructs_shape(tmp_path):
    train_vae(VAETrainConfig(**{**SMALL, "steps": 2}), tmp_path, progress=False)
    vae = load_vae(tmp_path / "export")
    x = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).mode())
    assert y.shape == x.shape


def test_export_only_and_init_from_a_saved_vae(tmp_path):
    from kinema.vae import CausalVAE, VAEConfig

    train_vae(VAETrainConfig(**{**SMALL, "steps": 2}), tmp_path / "a", progress=False)
    final = load_vae(tmp_path / "a" / "export")
    (tmp_path / "a" / "export" / "vae.safetensors").unlink()
    again = load_vae(export_vae(tmp_path / "a"))  # the checkpoint at step 2, exported anew
    for (name, p), q in zip(final.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), name
    model = CausalVAE(VAEConfig.tiny())
    _init_from(model, str(tmp_path / "a" / "export"))
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), final.state_dict().values()))
    with pytest.raises(KinemaError, match="shape differs"):
        _init_from(CausalVAE(VAEConfig.small()), str(tmp_path / "a" / "export"))
    with pytest.raises(KinemaError, match="not a VAE run"):
        export_vae(tmp_path / "nothing")
    # decoder fine-tuning: the encoder (so the latent space, and its statistics) is exactly the init's
    final.set_latent_stats([0.1 * c for c in range(16)], [1.0 + c for c in range(16)])
    save_vae(final, tmp_path / "a" / "export")
    tuned = train_vae(VAETrainConfig(**{**SMALL, "steps": 2, "init": str(tmp_path / "a" / "export"),
                                        "freeze_encoder": True}), tmp_path / "b", progress=False)
    assert len(tuned) == 2
    b = load_vae(tmp_path / "b" / "export")
    assert all(torch.equal(p, q) for p, q in zip(b.encoder.state_dict().values(), final.encoder.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(b.decoder.state_dict().values(), final.decoder.state_dict().values()))
    again = load_vae(export_vae(tmp_path / "b"))  # a decoder-only run exports from its checkpoint too
    assert all(torch.equal(p, q) for p, q in zip(again.state_dict().values(), b.state_dict().values()))
    for vae in (b, again):
        assert vae.config.latent_mean == final.config.latent_mean and vae.config.latent_std == final.config.latent_std
    with pytest.raises(KinemaError, match="needs --init"):
        VAETrainConfig(**{**SMALL, "freeze_encoder": True})


def test_steps_mix_images_videos_and_sizes():
    cfg = VAETrainConfig(**SMALL)
    plans = {step_plan(cfg, s) for s in range(40)}
    assert {p[0] for p in plans} == {1, 5}
    assert {p[1:] for p in plans} == {(16, 16), (16, 24)}


@pytest.mark.parametrize("bad", [{"frames": (4,)}, {"sizes": ((20, 16),)}, {"batch": 0}, {"detail": -1.0}, {"lr": -1.0},
                                 {"lr": float("nan")}])
def test_bad_settings_are_clear(bad):
    with pytest.raises(KinemaError):
        VAETrainConfig(**{**SMALL, **bad})


def test_cli_bad_frames_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "kinema.cli", "train", "vae", str(tmp_path), "--frames", "4"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "1 + 4k" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--sizes", "0x64"], "got 0x64"),  # as typed: WIDTHxHEIGHT
    (["--sizes", "64x64,"], "--sizes must look like WIDTHxHEIGHT"),
])  # fmt: skip
def test_cli_bad_settings_are_one_line(tmp_path, monkeypatch, capsys, args, words):
    code, _, err = run_cli(monkeypatch, capsys, "train", "vae", tmp_path / "run", "--steps", "1", *args)
    assert code == 2 and err.startswith("error:") and words in err and len(err.strip().splitlines()) == 1


def test_loss_weights_and_warmup_reach_the_run(tmp_path, monkeypatch):
    from kinema import vae as kv

    seen = []

    def spy(x, recon, posterior, weights):
        seen.append(weights)
        return kv.losses.vae_loss(x, recon, posterior, weights)

    monkeypatch.setattr(kv, "vae_loss", spy)
    cfg = VAETrainConfig(**{**SMALL, "steps": 1, "mse": 0.5, "detail": 3.0, "warmup": 7})
    train_vae(cfg, tmp_path / "run", progress=False)
    assert seen and (seen[0].mse, seen[0].detail) == (0.5, 3.0)
    saved = json.loads((tmp_path / "run/config.json").read_text())["train"]
    assert (saved["mse"], saved["detail"], saved["warmup"]) == (0.5, 3.0, 7)
    assert VAETrainConfig.from_dict({k: v for k, v in saved.items() if k not in ("mse", "detail")}).detail == 0.0


def test_bf16_on_a_cpu_that_emulates_it_warns(monkeypatch):
    from kinema.train import common

    monkeypatch.setattr(common, "bf16_native", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16"):
        common.autocast("bf16", torch.device("cpu"))
    monkeypatch.setattr(common, "bf16_native", lambda: True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        common.autocast("bf16", torch.device("cpu"))
        common.autocast("fp32", torch.device("cpu"))


def test_ema_forgets_the_random_initialisation_early():
    from kinema.train.common import EMA

    model = torch.nn.Linear(4, 4)
    warm, plain = EMA(model, 0.999), EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(50):
        warm.update(model, step)
        plain.update(model)
    assert (warm.shadow["weight"] - 1).abs().max() < 1e-3  # the weights of the last steps
    assert (plain.shadow["weight"] - 1).abs().max() > 0.5  # ~95% still the initialisation
    assert warm.decay_at(10**6) == 0.999


def test_cli_resume_keeps_the_runs_settings_and_changes_only_options_given(tmp_path, monkeypatch, capsys):
    from kinema import cli

    def kinema(*args):
        monkeypatch.setattr(sys, "argv", ["kinema", "train", "vae", str(tmp_path / "run"), *args])
        with pytest.raises(SystemExit) as e:
            cli.main()
        return e.value.code or 0, capsys.readouterr().err

    assert kinema("--steps", "1", "--batch", "1", "--frames", "1", "--sizes", "32x32", "--seed", "5",
                  "--lr", "1e-3")[0] == 0  # fmt: skip
    assert kinema("--steps", "2")[0] == 0  # a resume, one setting changed
    cfg = json.loads((tmp_path / "run/config.json").read_text())["train"]
    assert cfg["steps"] == 2 and cfg["seed"] == 5 and cfg["lr"] == 1e-3
    assert cfg["frames"] == [1] and cfg["sizes"] == [[32, 32]] and cfg["batch"] == 1
    assert kinema("--steps", "3", "--workers", "1")[0] == 0
    code, err = kinema("--steps", "3", "--mse", "1")
    assert code == 2 and "mse" in err  # a loss weight is the run's own, like any other setting
    assert json.loads((tmp_path / "run/config.json").read_text())["train"]["workers"] == 1
    code, err = kinema("--steps", "4", "--init", str(tmp_path / "run/export"), "--freeze-encoder")
    assert code == 2 and "cannot change it" in err  # the optimizer state holds every parameter
    assert kinema("--steps", "4", "--train-encoder")[0] == 0  # the run's own setting: fine
    (tmp_path / "run/config.json").write_text("{not json")
    code, err = kinema("--steps", "3")
    assert code == 2 and err.startswith("error:") and "cannot read the run's settings" in err
