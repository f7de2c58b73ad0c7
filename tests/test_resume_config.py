"""A resumed run keeps the settings it was trained with: a changed one is a clear error unless named
by --override; how long and how often a run goes may change freely; a bare resume uses the saved
settings. For `kinema train vae` and `kinema train dit`, run in this process."""

import json
import shutil

import pytest
import torch

from kinema.data import write_index, write_shard
from kinema.errors import KinemaError
from kinema.train.common import check_resume
from tests.cli_helpers import run_cli

# The smallest runs of tests/test_train_vae.py and tests/test_train_dit.py; batch 1 and
# token_budget 64 are not the defaults, so a bare resume shows whether it kept them.
VAE_START = dict(steps=2, batch=1, frames=(1,), sizes=((16, 16),), lr=1e-3, ckpt_every=1)
DIT_SMALL = dict(hidden=64, depth=2, heads=2, text_dim=32, text_depth=1, text_heads=2, warmup=0, lr=1e-3,
                 token_budget=64, sequences_per_step=1, checkpoint_every=1)  # fmt: skip


def dit_sets(settings: dict) -> list[str]:
    return [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    """A latent cache of 8 small random clips with captions."""
    root = tmp_path_factory.mktemp("latents")
    g = torch.Generator().manual_seed(0)
    words = "a red blue ball square falls slides left right".split()
    sizes = [(1, 4, 4), (2, 4, 6), (1, 6, 4), (2, 4, 4)]
    items = [dict(latent=torch.randn(16, *sizes[i % 4], generator=g), caption=" ".join(words[i : i + 4]))
             for i in range(8)]  # fmt: skip
    write_shard(root, 0, items)
    write_index(root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, latents):
    """One 2-step run of each kind, made once (as `kinema train vae RUN --steps 2 --batch 1 ...`
    and `kinema train dit RUN --set steps=2 --set token_budget=64 ...` make it); each test
    resumes a copy."""
    from kinema.train.dit import DiTTrainConfig, train_dit
    from kinema.train.vae import VAETrainConfig, train_vae

    root = tmp_path_factory.mktemp("runs")
    train_vae(VAETrainConfig(**VAE_START), root / "vae", progress=False)
    train_dit(root / "dit", DiTTrainConfig(data=str(latents), steps=2, **DIT_SMALL), progress=False)
    return root


@pytest.fixture(params=["vae", "dit"])
def run(request, trained, tmp_path):
    """(command, a copy of its 2-step run)."""
    dst = tmp_path / request.param
    shutil.copytree(trained / request.param, dst)
    return request.param, dst


def saved(run_dir) -> dict:
    doc = json.loads((run_dir / "config.json").read_text())
    return doc["train"] if "train" in doc else doc


def snapshot(run_dir) -> dict:
    """config.json and every checkpoint file, with their times."""
    files = [run_dir / "config.json", *sorted((run_dir / "checkpoints").rglob("*"))]
    return {str(f): (f.stat().st_mtime_ns, f.read_bytes() if f.is_file() else None) for f in files}


def resume(monkeypatch, capsys, kind, run_dir, **settings):
    """`kinema train KIND RUN` with settings given the command's way; (exit code, stderr)."""
    override = settings.pop("override", [])
    if kind == "vae":
        args = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", v)]
    else:
        args = dit_sets(settings)
    args += [a for k in override for a in ("--override", k)]
    code, _, err = run_cli(monkeypatch, capsys, "train", kind, run_dir, *args)
    return code or 0, err


def test_a_changed_option_is_an_error_that_names_it_and_leaves_the_run_alone(run, monkeypatch, capsys):
    kind, run_dir = run
    before = snapshot(run_dir)
    code, err = resume(monkeypatch, capsys, kind, run_dir, lr="2e-3", steps=3)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert "lr from 0.001 to 0.002" in err
    assert "--override lr" in err and "or use a new run folder" in err
    assert "steps" not in err.split("Pass")[0]  # steps may change freely
    assert snapshot(run_dir) == before


def test_override_resumes_with_the_new_value_and_saves_it(run, monkeypatch, capsys):
    kind, run_dir = run
    code, err = resume(monkeypatch, capsys, kind, run_dir, lr="2e-3", steps=3, override=["lr"])
    assert code == 0, err
    assert saved(run_dir)["lr"] == 2e-3 and saved(run_dir)["steps"] == 3
    assert (run_dir / "checkpoints/latest").read_text() == "step-000003"
    if kind == "dit":  # the resumed step ran at the new learning rate (no warmup, no decay)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [(r["step"], r["lr"]) for r in rows] == [(1, 1e-3), (2, 1e-3), (3, 2e-3)]


def test_more_steps_need_no_override_and_a_bare_resume_keeps_the_saved_options(run, monkeypatch, capsys):
    kind, run_dir = run
    first = saved(run_dir)
    code, err = resume(monkeypatch, capsys, kind, run_dir, steps=3)
    assert code == 0, err
    assert (run_dir / "checkpoints/latest").read_text() == "step-000003"
    assert saved(run_dir) == {**first, "steps": 3}  # batch 1 / token_budget 64, lr 1e-3, ... as given at the start
    code, err = resume(monkeypatch, capsys, kind, run_dir)  # bare: nothing to do, nothing changed
    assert code == 0, err
    assert saved(run_dir) == {**first, "steps": 3}


def test_an_override_that_names_no_setting_is_an_error(run, monkeypatch, capsys):
    kind, run_dir = run
    before = snapshot(run_dir)
    code, err = resume(monkeypatch, capsys, kind, run_dir, steps=3, override=["learning_rate"])
    assert code == 2 and "--override learning_rate: not a setting" in err and "Traceback" not in err
    assert snapshot(run_dir) == before


def test_an_overridden_model_shape_cannot_resume_and_says_so(run, monkeypatch, capsys):
    kind, run_dir = run
    settings = dict(vae="small", override=["vae"]) if kind == "vae" else dict(hidden=32, override=["hidden"])
    code, err = resume(monkeypatch, capsys, kind, run_dir, **settings)
    assert code == 2 and "cannot load the checkpoint" in err and "Traceback" not in err


def test_a_run_without_a_checkpoint_starts_over_with_the_new_options(run, monkeypatch, capsys):
    kind, run_dir = run
    shutil.rmtree(run_dir / "checkpoints")  # it died before its first checkpoint
    code, err = resume(monkeypatch, capsys, kind, run_dir, lr="2e-3", steps=1)
    assert code == 0, err
    assert saved(run_dir)["lr"] == 2e-3
    assert (run_dir / "checkpoints/latest").read_text() == "step-000001"


def test_the_check_compares_normalised_configs(tmp_path):
    from kinema.train.vae import VAETrainConfig

    a = VAETrainConfig(lr=3e-4, frames=(1, 9)).to_dict()
    b = VAETrainConfig.from_dict(json.loads(json.dumps({**a, "lr": 0.0003, "frames": [1, 9]}))).to_dict()
    check_resume(tmp_path, a, b)  # equal: no error
    check_resume(tmp_path, a, {**b, "steps": 5, "keep": 9}, free=("steps", "keep"))
    with pytest.raises(KinemaError, match=r"lr from 0.0003 to 0.001, seed from 0 to 1"):
        check_resume(tmp_path, a, {**b, "seed": 1, "lr": 1e-3}, override=["batch"])
    check_resume(tmp_path, a, {**b, "seed": 1, "lr": 1e-3}, override=["seed", "lr"])
    check_resume(tmp_path, None, {**b, "seed": 1})  # no checkpoint: anything goes
    with pytest.raises(KinemaError, match="--override nope: not a setting"):
        check_resume(tmp_path, None, b, override=["nope"])
