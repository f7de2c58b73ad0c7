"""DiT training: torchrun with FSDP2 equals one process on the same global batch, a resumed run
equals an unbroken one, the loss falls on Kinema World, conditioned tokens carry no loss, and
exported weights reproduce the model."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kinema.data import write_index, write_shard
from kinema.errors import KinemaError
from kinema.train.dit import (
    DiTTrainConfig,
    export_weights,
    load_export,
    make_micro_batch,
    setup,
    train_dit,
    train_step,
)
from tests.cli_helpers import torchrun

# A DiT smaller than tiny (same code): depth 2, hidden 64; a 1-layer builtin text encoder.
SMALL = dict(hidden=64, depth=2, heads=2, text_dim=32, text_depth=1, text_heads=2, warmup=0, lr=1e-3)



@pytest.fixture
def cache(tmp_path):
    """A latent cache of 24 random clips of varied sizes (1-3 latent frames) with captions."""
    root = tmp_path / "latents"
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    words = "a red blue green ball square star falls slides rolls left right on grass sand".split()
    sizes = [(1, 4, 4), (2, 4, 6), (3, 6, 4), (1, 8, 8), (2, 2, 4), (3, 4, 4)]
    items = []
    for i in range(24):
        base = torch.randn(16, 1, 1, 1, generator=g)  # a clip-wide colour, so there is something to learn
        z = base + 0.3 * torch.randn(16, *sizes[i % len(sizes)], generator=g)
        items.append(dict(latent=z, caption=" ".join(words[i % 9 : i % 9 + 5])))
    for k in range(0, 24, 8):
        write_shard(root, k // 8, items[k : k + 8])
    write_index(root)
    return root


def losses(run_dir) -> dict[int, float]:
    """Loss of every step in metrics.jsonl (a resumed run appends; the last row of a step wins)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def train_on_ranks(run_dir, settings: dict, nproc: int = 2):
    """`torchrun ... kinema train dit RUN_DIR --set K=V ...` on `nproc` ranks."""
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    return torchrun(["-m", "kinema.cli", "train", "dit", run_dir, *sets], nproc=nproc, timeout=240)


# ---------------------------------------------------------------- distributed == one process


# How far a 2-rank run may drift from one process: in float32 only the order of the gradient sums
# differs; in bfloat16 that difference can flip the rounding of a forward value, and AdamW turns a
# near-zero gradient's flipped sign into a whole step of lr (SMALL's lr: 1e-3) on that weight.
DRIFT = {"fp32": dict(loss=1e-4, weight=1e-5), "bf16": dict(loss=1e-3, weight=2e-2)}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torchrun_matches_single_process(tmp_path, cache, precision):
    # global batch: 4 packed sequences a step; 2 ranks run 2 each, one process runs all 4
    cfg = DiTTrainConfig(data=str(cache), token_budget=64, sequences_per_step=4, steps=4, checkpoint_every=2,
                         precision=precision, **SMALL)  # fmt: skip
    drift = DRIFT[precision]
    train_dit(tmp_path / "one", cfg, progress=False)
    settings = {k: v for k, v in cfg.to_dict().items() if k in SMALL}
    settings.update(data=cache, token_budget=64, sequences_per_step=4, checkpoint_every=2, precision=precision)
    # two ranks with FSDP2 (gloo), stopped after step 2 and resumed under torchrun again; with
    # activation checkpointing, which must not change a number
    train_on_ranks(tmp_path / "two", {**settings, "steps": 2, "checkpointing": True})
    train_on_ranks(tmp_path / "two", {**settings, "steps": 4, "checkpointing": True})

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    print("1 process:", one, "\n2 ranks:  ", two)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert abs(one[step] - two[step]) < drift["loss"], (step, one[step], two[step])
    assert one[4] != one[1]  # it trained
    a, b = load_file(str(tmp_path / "one/export/dit.safetensors")), load_file(str(tmp_path / "two/export/dit.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < drift["weight"]

    # the 2-rank (sharded) checkpoint resumes in one process too: step 5 as in the 1-process run
    five = dataclasses.replace(cfg, steps=5)
    (after_one,) = train_dit(tmp_path / "one", five, progress=False, export=False)
    (after_two,) = train_dit(tmp_path / "two", five, progress=False, export=False)
    assert after_one["step"] == after_two["step"] == 5
    assert abs(after_one["loss"] - after_two["loss"]) < drift["loss"]


# ---------------------------------------------------------------- resume


def test_resume_is_exact(tmp_path, cache):
    cfg = DiTTrainConfig(data=str(cache), token_budget=64, sequences_per_step=2, steps=4, checkpoint_every=10, **SMALL)
    unbroken = train_dit(tmp_path / "a", cfg, progress=False)
    train_dit(tmp_path / "b", dataclasses.replace(cfg, steps=2), progress=False)  # stopped at step 2
    meta = json.loads((tmp_path / "b/checkpoints/step-000002/meta.json").read_text())
    assert meta["position"] == 4  # 2 steps x 2 sequences
    assert meta["extent"][1] > 0 and meta["min_side"] > 0  # what it trained on, kept across a resume
    resumed = train_dit(tmp_path / "b", cfg, progress=False)
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in unbroken[2:]]  # bit for bit
    assert [r["grad_norm"] for r in resumed] == [r["grad_norm"] for r in unbroken[2:]]
    a, b = load_file(str(tmp_path / "a/export/dit.safetensors")), load_file(str(tmp_path / "b/export/dit.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # EMA weights too
    ta = load_file(str(tmp_path / "a/export/text_encoder.safetensors"))
    tb = load_file(str(tmp_path / "b/export/text_encoder.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (tmp_path / "a/export/dit.json").read_text() == (tmp_path / "b/export/dit.json").read_text()


# ---------------------------------------------------------------- learning


@pytest.mark.slow
def test_loss_falls_on_world(tmp_path):
    from kinema.vae import CausalVAE, VAEConfig, save_vae

    torch.manual_seed(0)
    save_vae(CausalVAE(VAEConfig.tiny()), tmp_path / "vae")  # random init: a fixed local encoder
    cfg = DiTTrainConfig(vae=str(tmp_path / "vae"), token_budget=256, steps=40, checkpoint_every=1000,
                         world_min_side=32, world_max_side=64, world_min_seconds=0.5, world_max_seconds=1.0,
                         world_fps=(8.0,), world_clips=16, world_cache=True, **{**SMALL, "lr": 2e-3})  # fmt: skip
    history = train_dit(tmp_path / "run", cfg, export=False)
    loss = [r["loss"] for r in history]
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    print(f"world loss: first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < 0.7 * first
    assert (tmp_path / "run/tb").is_dir()
    assert len(list((tmp_path / "run/world_cache").rglob("clip-*.safetensors"))) == 16  # a resume reads them


def test_conditioned_tokens_are_clean_and_carry_no_loss(cache):
    from kinema.data import ShardDataset

    data = ShardDataset(cache, token_budget=64)
    cfg = DiTTrainConfig(data=str(cache), condition_probs={"first_frame": 1.0}, caption_dropout=0.0, **SMALL)
    batch = data.next_batches(1)[0]
    m = make_micro_batch(batch, cfg, cfg.dit_config(32), None)
    x0 = batch.packed.tokens[0]
    for (T, H, W), start in zip(batch.packed.grids, batch.packed.cu_seqlens[:-1].tolist()):
        first = slice(start, start + H * W)
        if T > 1:  # the first latent frame is pinned: t = 0, x_t = x_0, no loss
            assert (m.t[0, first] == 0).all() and not m.loss_mask[first].any()
            assert torch.equal(m.x_t[0, first], x0[first])
            assert m.loss_mask[start + H * W : start + T * H * W].all()
        else:  # an image cannot be conditioned on itself
            assert m.loss_mask[first].all()
    # the draw depends on the sequence's global index only
    again = make_micro_batch(batch, cfg, cfg.dit_config(32), None)
    assert torch.equal(m.x_t, again.x_t) and m.captions == again.captions


def test_token_weights_of_the_data_scale_each_tokens_loss(cache):
    from dataclasses import replace

    from kinema.data import ShardDataset

    data = ShardDataset(cache, token_budget=64)
    cfg = DiTTrainConfig(data=str(cache), condition_probs={"first_frame": 1.0}, caption_dropout=0.0, **SMALL)
    batch = data.next_batches(1)[0]
    plain = make_micro_batch(batch, cfg, cfg.dit_config(32), None)
    weights = 1 + 4 * (torch.arange(batch.packed.tokens.shape[1]) % 3 == 0).float()
    heavy = make_micro_batch(replace(batch, weights=weights), cfg, cfg.dit_config(32), None)
    assert torch.equal(heavy.loss_mask, plain.loss_mask * weights)  # conditioned tokens stay at 0
    assert torch.equal(heavy.x_t, plain.x_t) and torch.equal(heavy.target, plain.target)


# ---------------------------------------------------------------- export


def test_export_loads_into_a_fresh_dit_with_identical_outputs(tmp_path, cache):
    cfg = DiTTrainConfig(data=str(cache), token_budget=64, steps=2, ema_decay=0.5, shift_scale=3.0, **SMALL)
    run = setup(tmp_path / "run", cfg)
    for _ in range(2):
        train_step(run)
    live = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    out = export_weights(run, tmp_path / "export")
    assert all(torch.equal(p, live[n]) for n, p in run.model.named_parameters())  # training weights kept
    assert {p.name for p in out.iterdir()} >= {"dit.safetensors", "dit.json", "text_encoder.safetensors",
                                               "text_encoder.json", "pipeline.json"}  # fmt: skip

    dit, text = load_export(out)
    run.ema.copy_to(run.model)  # the reference: the trained model with its EMA weights
    batch = run.data.next_batches(1)[0]
    p = batch.packed
    t = torch.rand(1, p.length)
    with torch.no_grad():
        want = run.model(p.tokens, p.positions, t, p.doc_ids, captions=batch.captions)
        emb, mask = text(batch.captions)
        got = dit(p.tokens, p.positions, t, emb, mask, doc_ids=p.doc_ids)
    assert torch.equal(got, want)
    spec = json.loads((out / "pipeline.json").read_text())
    assert spec["text_encoder"] == "builtin:." and spec["defaults"] == {"shift_scale": 3.0}  # for the sampler
    written = json.loads((out / "dit.json").read_text())  # the sizes trained on, for any-size sampling
    assert written["trained_extent"] == [0, *run.extent[1:]] and written["trained_min_side"] == run.min_side > 0
    assert run.extent[1] >= run.min_side and run.extent[2] >= run.min_side


def test_the_run_records_the_largest_grid_and_shortest_side_it_trained_on(tmp_path, cache):
    from kinema.patches import positions

    run = setup(tmp_path / "run", DiTTrainConfig(data=str(cache), token_budget=64, steps=1, **SMALL))
    a, b = positions((2, 3, 4)), positions((1, 5, 2))  # two samples packed, then padding
    pos = torch.cat([a, b, torch.zeros(3, 3, dtype=torch.long)])
    doc = torch.cat([torch.zeros(len(a)), torch.ones(len(b)), torch.full((3,), -1)]).long()
    run.saw(pos, doc)
    assert run.extent == (2, 5, 4) and run.min_side == 2
    run.saw(positions((1, 3, 3)), torch.zeros(9, dtype=torch.long))
    assert run.extent == (2, 5, 4) and run.min_side == 2


def test_init_starts_from_an_export_and_init_reset_draws_parts_afresh(tmp_path, cache):
    base = DiTTrainConfig(data=str(cache), token_budget=64, steps=2, **SMALL)
    first = setup(tmp_path / "a", base)
    for _ in range(2):
        train_step(first)
    export = export_weights(first, tmp_path / "a" / "export")
    dit, text = load_export(export)
    want = {**{f"dit.{k}": v for k, v in dit.state_dict().items()}, **{f"text.{k}": v for k, v in text.state_dict().items()}}

    tuned = setup(tmp_path / "b", DiTTrainConfig(data=str(cache), token_budget=64, init=str(export), **SMALL))
    got = tuned.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(tuned.ema.shadow[k], want[k]) for k in tuned.ema.shadow)  # the average starts there too
    assert tuned.model.text.tokenizer.vocab == text.tokenizer.vocab

    cfg = DiTTrainConfig(data=str(cache), token_budget=64, init=str(export), init_reset=("cross", "text_pool"), **SMALL)
    reset = setup(tmp_path / "c", cfg).model.state_dict()
    fresh = setup(tmp_path / "f", base).model.state_dict()  # the ordinary initialisation of this seed
    for k in want:
        drawn = ".cross." in k or k.startswith("dit.text_pool.")
        assert torch.equal(reset[k], fresh[k] if drawn else want[k]), k
    assert not all(torch.equal(fresh[k], want[k]) for k in want if ".cross." in k)  # training moved them
    assert not any(reset[k].any() for k in reset if ".cross.proj." in k)  # outputs at zero
    with pytest.raises(KinemaError, match="no module named"):
        setup(tmp_path / "d", DiTTrainConfig(data=str(cache), token_budget=64, init=str(export), init_reset=("crossing",),
                                             **SMALL))  # fmt: skip
    with pytest.raises(KinemaError, match="does not fit"):
        setup(tmp_path / "e", DiTTrainConfig(data=str(cache), token_budget=64, init=str(export), **{**SMALL, "hidden": 32}))
    with pytest.raises(KinemaError, match="init_reset needs init"):
        DiTTrainConfig(data=str(cache), init_reset=("cross",))


def test_text_frozen_trains_the_dit_alone_and_resumes_exactly(tmp_path, cache):
    cfg = DiTTrainConfig(data=str(cache), token_budget=64, steps=3, checkpoint_every=10, text_frozen=True, **SMALL)
    run = setup(tmp_path / "a", cfg)
    text0 = {k: v.clone() for k, v in run.model.text.state_dict().items()}
    dit0 = {k: v.clone() for k, v in run.model.dit.state_dict().items()}
    assert not any(p.requires_grad for p in run.model.text.parameters())
    for _ in range(3):
        train_step(run)
    assert all(torch.equal(v, text0[k]) for k, v in run.model.text.state_dict().items())
    assert not all(torch.equal(v, dit0[k]) for k, v in run.model.dit.state_dict().items())
    export = export_weights(run, tmp_path / "a" / "export")
    exported = load_file(str(export / "text_encoder.safetensors"))
    assert all(torch.equal(exported[k], text0[k].to(exported[k].dtype)) for k in exported)  # the EMA too

    unbroken = train_dit(tmp_path / "u", cfg, progress=False)
    train_dit(tmp_path / "r", dataclasses.replace(cfg, steps=1), progress=False)
    resumed = train_dit(tmp_path / "r", cfg, progress=False)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in unbroken[1:]]
    with pytest.raises(KinemaError, match="text_frozen"):
        DiTTrainConfig(data=str(cache), text_encoder="hf:/nowhere", text_frozen=True)
    assert DiTTrainConfig.from_strings({"text_frozen": "true", "data": str(cache)}).text_frozen is True


def test_training_reads_frozen_text_embeddings_from_the_cache(tmp_path):
    from safetensors.torch import save_file

    from kinema.data.cache import NULL_TEXT

    root = tmp_path / "latents"
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    items = [dict(latent=torch.randn(16, 2, 4, 4, generator=g), caption=f"clip {i}",
                  text=torch.randn(3 + i % 2, 24, generator=g)) for i in range(6)]  # fmt: skip
    write_shard(root, 0, items)
    save_file({"text": torch.randn(1, 24, generator=g)}, str(root / NULL_TEXT))
    write_index(root, {"embeddings": True, "text_dim": 24, "vae": "some-vae"})
    # hf:... is never loaded: the cache holds its embeddings (and the empty caption's, for dropout)
    cfg = DiTTrainConfig(data=str(root), text_encoder="hf:/not/needed", token_budget=64, sequences_per_step=2,
                         steps=2, caption_dropout=0.5, **SMALL)  # fmt: skip
    history = train_dit(tmp_path / "run", cfg, progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    exported = {p.name for p in (tmp_path / "run/export").iterdir()}
    assert "dit.safetensors" in exported and "text_encoder.safetensors" not in exported
    pipeline = json.loads((tmp_path / "run/export/pipeline.json").read_text())
    assert pipeline["text_encoder"] == "hf:/not/needed" and pipeline["vae"] == "some-vae"
    dit, text = load_export(tmp_path / "run/export")
    assert text is None and dit.config.text_dim == 24


# ---------------------------------------------------------------- config


def test_config_reads_command_line_strings():
    cfg = DiTTrainConfig.from_strings(
        {"lr": "1e-3", "hidden": "none", "depth": "3", "checkpointing": "true", "world_fps": "8,12",
         "condition_probs": '{"none": 1}', "data": "latents/", "betas": "0.9,0.95"}  # fmt: skip
    )
    assert (cfg.lr, cfg.hidden, cfg.depth, cfg.checkpointing) == (1e-3, None, 3, True)
    assert cfg.world_fps == (8.0, 12.0) and cfg.betas == (0.9, 0.95) and cfg.condition_probs == {"none": 1.0}
    assert DiTTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(KinemaError, match="unknown setting"):
        DiTTrainConfig.from_strings({"learning_rate": "1"})
    with pytest.raises(KinemaError, match="needs a VAE"):
        DiTTrainConfig()
    with pytest.raises(KinemaError, match="cannot read depth"):
        DiTTrainConfig.from_strings({"depth": "deep", "data": "x"})
    with pytest.raises(KinemaError, match="shift_scale must be positive"):
        DiTTrainConfig.from_strings({"shift_scale": "0", "data": "x"})
    with pytest.raises(KinemaError, match="world_single_prob must be in"):
        DiTTrainConfig.from_strings({"world_single_prob": "1.5", "vae": "x"})
    with pytest.raises(KinemaError, match="shape Kinema World data"):
        DiTTrainConfig.from_strings({"world_thing_weight": "4", "data": "latents/"})


def test_global_batch_must_split_over_ranks(cache):
    from kinema.train.common import Dist

    cfg = DiTTrainConfig(data=str(cache), sequences_per_step=3, **SMALL)
    with pytest.raises(KinemaError, match="multiple of the number of ranks"):
        setup("unused", cfg, Dist(0, 2, 0, torch.device("cpu")))


def test_bench_dit_reports_tokens_per_second():
    from kinema.train.bench import bench_dit

    (row,) = bench_dit(configs=("tiny",), tokens=(64,), steps=1, warmup=0)
    assert row["config"] == "tiny" and row["tokens"] == 64
    assert row["train_tokens_per_s"] > 0 and row["forward_ms"] > 0
    assert "mfu" not in row  # no GPU: no MFU


@pytest.mark.slow
def test_cli_train_and_bench_commands(tmp_path):
    def kinema(*args):
        return subprocess.run([sys.executable, "-m", "kinema.cli", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})  # fmt: skip

    res = kinema("train", "dit", str(tmp_path / "run"), "--set", "learning_rate=1")
    assert res.returncode == 2 and "unknown setting 'learning_rate'" in res.stderr
    res = kinema("train", "dit", str(tmp_path / "run"), "--set", "data=x", "--export-only")
    assert res.returncode == 2 and "no checkpoint" in res.stderr
    res = kinema("bench", "dit", "--configs", "tiny", "--tokens", "64", "--steps", "1")
    assert res.returncode == 0, res.stderr
    assert "tiny" in res.stdout and "train_tokens_per_s" in res.stdout
    res = kinema("bench", "dit", "--tokens", "many")
    assert res.returncode == 2 and "--tokens" in res.stderr


def test_precision_resolves_once_and_old_runs_keep_theirs():
    from kinema.train.common import bf16_native
    from kinema.train.vae import VAETrainConfig

    want = "bf16" if bf16_native() else "fp32"
    base = dict(data="x", **SMALL)
    assert DiTTrainConfig(**base).precision == want == VAETrainConfig().precision  # auto, resolved
    assert DiTTrainConfig.from_dict(DiTTrainConfig(**base).to_dict()).precision == want  # config.json keeps it
    old = {k: v for k, v in DiTTrainConfig(**base).to_dict().items() if k != "precision"}
    was = "bf16" if torch.cuda.is_available() else "fp32"  # before: bf16 autocast on a GPU only
    assert DiTTrainConfig.from_dict(old).precision == was
    assert VAETrainConfig.from_dict({"steps": 5}).precision == was
    with pytest.raises(KinemaError, match="precision"):
        DiTTrainConfig(precision="fp16", **base)
    with pytest.raises(KinemaError, match="precision"):
        VAETrainConfig(precision="half")
