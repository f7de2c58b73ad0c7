"""Fine-tuning open weights: LoRA (PEFT) and full fine-tuning of a Wan folder on a latent cache
made with its own VAE and umT5 (`kinema data encode --model`), the base loaded on the meta device
(into FSDP2 shards under torchrun), exact resume, and the adapters in diffusers' layout: a LoRA
trained here, loaded into the reference WanPipeline with `load_lora_weights`, gives Kinema's
velocity, and so does the folder `kinema train pack` merges it into.

The Wan folder is a tiny random one made with the reference classes (tests/wan_reference.py);
the clips are a few small Kinema World renders with their captions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kinema.errors import KinemaError
from kinema.train.dit import DiTTrainConfig, pack_lora, train_dit
from tests.cli_helpers import run_cli, torchrun
from tests.test_wan import kinema_velocity
from tests.wan_reference import save_wan_folder

LORA = dict(lora_rank=4, lr=1e-3, warmup=0, token_budget=512, precision="fp32")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    folder, _ = save_wan_folder(tmp_path_factory.mktemp("wan") / "wan")
    return folder


@pytest.fixture(scope="module")
def latents(wan, tmp_path_factory):
    """Eight small world clips with captions, encoded by the Wan folder's VAE and umT5."""
    from kinema.world.dataset import write_dataset

    root = tmp_path_factory.mktemp("ft")
    manifest = write_dataset(root / "clips", 8, seed=1, min_side=32, max_side=64, min_seconds=0.5, max_seconds=1.0,
                             progress=False)  # fmt: skip
    from typer.testing import CliRunner

    from kinema.cli import app

    res = CliRunner().invoke(app, ["data", "encode", "--manifest", str(manifest), "--model", str(wan),
                                   "--out", str(root / "latents")])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / "latents"


def cfg_for(wan, latents, **kw) -> DiTTrainConfig:
    return DiTTrainConfig(init=str(wan), data=str(latents), **{**LORA, **kw})


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- data


def test_the_cache_holds_the_wan_folders_latents_and_umt5_embeddings(wan, latents):
    from kinema.data import ShardDataset
    from kinema.text.umt5 import WanTextEncoder

    data = ShardDataset(latents, 512)
    assert data.text_dim == 16 and data.text_pad_to == 512
    assert json.loads((latents / "encode.json").read_text())["text_encoder"].startswith("wan:")
    item = data.items[0]
    stored = load_file(str(latents / item["file"]))[item["text"]]
    full, mask = WanTextEncoder(wan / "text_encoder", wan / "tokenizer")([item["caption"]])
    assert mask.all() and stored.shape[0] < 512  # the zero padding is not stored ...
    assert torch.equal(stored, full[0, : stored.shape[0]]) and not full[0, stored.shape[0] :].any()  # ... only cut


def test_encode_with_a_model_says_what_it_needs(wan, tmp_path, monkeypatch, capsys):
    args = ["data", "encode", "--manifest", tmp_path / "m.jsonl", "--out", tmp_path / "lat"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--model", tmp_path)
    assert code == 2 and "is not a diffusers Wan folder" in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "--model", wan, "--vae", "world-vae")
    assert code == 2 and "one of the two" in err


def test_a_config_on_a_wan_base_reads_stored_text_and_trains_text_to_video(wan, latents):
    cfg = cfg_for(wan, latents)
    assert cfg.text_encoder == "stored" and cfg.condition_probs == {"none": 1.0}  # Wan 2.1 samples with "replace"
    with pytest.raises(KinemaError, match="lora_rank trains adapters on a trained model"):
        DiTTrainConfig(lora_rank=4, vae="world-vae")
    with pytest.raises(KinemaError, match="latent cache made with `kinema data encode --model"):
        DiTTrainConfig(init=str(wan), vae="world-vae")


# ---------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_run(wan, latents, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lora"
    train_dit(run, cfg_for(wan, latents, steps=30, checkpoint_every=10), progress=False)
    return run


def test_lora_trains_the_adapters_only_and_the_loss_falls(wan, lora_run):
    loss = losses(lora_run)
    first, last = sum(loss[:10]) / 10, sum(loss[-5:]) / 5
    print("loss, first 10 steps:", first, "last 5:", last)
    assert last < 0.95 * first
    lora = load_file(str(lora_run / "export/lora.safetensors"))
    assert lora and all(k.startswith("transformer.blocks.") and ".lora_" in k for k in lora)
    modules = {k.split(".lora_")[0].split(".", 3)[3] for k in lora}  # transformer.blocks.I.<module>
    assert modules == {f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")} | \
        {"ffn.net.0.proj", "ffn.net.2"}  # fmt: skip
    # a checkpoint holds the adapters, their AdamW moments and their EMA, not the frozen base
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(lora_run / "checkpoints/step-000030")).read_metadata().state_dict_metadata
    model = [k for k in saved if k.startswith("model.")]
    assert model and all(".lora_" in k for k in model), model[:4]
    assert not any("base_layer" in k or "mod_table" in k for k in saved)


def test_lora_resume_is_exact(wan, latents, tmp_path):
    cfg = cfg_for(wan, latents, steps=4, checkpoint_every=10, sequences_per_step=2)
    train_dit(tmp_path / "a", cfg, progress=False)
    train_dit(tmp_path / "b", dataclasses.replace(cfg, steps=2), progress=False)
    train_dit(tmp_path / "b", cfg, progress=False)  # resumed from step 2: the base read again from init
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # bit for bit
    a, b = (load_file(str(tmp_path / r / "export/lora.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_block_offload_trains_the_same_adapters(wan, latents, tmp_path):
    """offload=blocks keeps the frozen base's blocks in CPU memory and brings each to the device for
    its forward and its recomputation; on this CPU the device is the CPU, so the claim tested here
    is that the hooks change no number (what it saves on a GPU is in `wan_finetune_table`)."""
    cfg = cfg_for(wan, latents, steps=3, checkpointing=True)
    train_dit(tmp_path / "plain", cfg, progress=False)
    train_dit(tmp_path / "offload", dataclasses.replace(cfg, offload="blocks"), progress=False)
    assert losses(tmp_path / "plain") == losses(tmp_path / "offload")
    a, b = (load_file(str(tmp_path / r / "export/lora.safetensors")) for r in ("plain", "offload"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(KinemaError, match="needs lora_rank > 0 and checkpointing"):
        cfg_for(wan, latents, offload="blocks")


def test_a_kinema_lora_is_what_the_reference_pipeline_loads(wan, lora_run, tmp_path):
    """The trained adapters: Kinema with --lora == diffusers' WanPipeline.load_lora_weights ==
    the folder `kinema train pack` merges them into (in Kinema and in diffusers)."""
    from diffusers import WanPipeline, WanTransformer3DModel

    from kinema.pipeline import Pipeline

    lora = lora_run / "export/lora.safetensors"
    g = torch.Generator().manual_seed(5)
    x, t, text = torch.randn(1, 4, 3, 8, 12, generator=g), torch.tensor([0.7]), torch.randn(1, 20, 16, generator=g)

    ref = WanPipeline.from_pretrained(str(wan))
    ref.load_lora_weights(str(lora))
    pipe = Pipeline.from_pretrained(wan)
    with torch.no_grad():
        plain = kinema_velocity(pipe.dit, x, t, text)
        assert pipe.apply_lora(lora) > 0
        ours = kinema_velocity(pipe.dit, x, t, text)
        theirs = ref.transformer(x, t * 1000, text, return_dict=False)[0]
    assert (ours - plain).abs().max() > 1e-3  # the adapters change the model ...
    assert (ours - theirs).abs().max().item() <= 1e-4  # ... as diffusers applies them

    packed = pack_lora(lora, tmp_path / "packed")
    merged = WanTransformer3DModel.from_pretrained(str(packed / "transformer")).eval()
    with torch.no_grad():
        assert (merged(x, t * 1000, text, return_dict=False)[0] - theirs).abs().max().item() <= 1e-4
        again = kinema_velocity(Pipeline.from_pretrained(packed).dit, x, t, text)
    assert (again - ours).abs().max().item() <= 1e-4


def test_cli_generate_takes_loras_and_pack_merges_a_run(wan, lora_run, tmp_path, monkeypatch, capsys):
    args = ["--model", wan, "--size", "32x32", "--seconds", 0.3, "--steps", 2, "--seed", 3]
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball", *args, "--lora", f"{lora_run}:0.5",
                             "--lora", lora_run / "export/lora.safetensors", "--out", tmp_path / "a.mp4")  # fmt: skip
    assert code == 0, err
    assert out.count("applied the LoRA") == 2 and "at scale 0.5" in out
    code, _, err = run_cli(monkeypatch, capsys, "generate", "a red ball", *args, "--lora", tmp_path / "none.safetensors")
    assert code == 2 and "no such LoRA file" in err
    code, _, err = run_cli(monkeypatch, capsys, "generate", "a red ball", "--model", lora_run)
    assert code == 2 and "holds LoRA adapters" in err and "--lora" in err
    code, out, err = run_cli(monkeypatch, capsys, "train", "pack", lora_run, tmp_path / "packed", "--full")
    assert code == 0 and "merged" in out, err
    assert (tmp_path / "packed/model_index.json").is_file()


# ---------------------------------------------------------------- full fine-tuning


def test_full_finetuning_of_wan_exports_a_diffusers_folder(wan, latents, tmp_path):
    from diffusers import WanTransformer3DModel

    from kinema.models.hf import load_state

    run = tmp_path / "full"
    train_dit(run, cfg_for(wan, latents, lora_rank=0, steps=3, lr=1e-3), progress=False)
    before, after = load_state(wan / "transformer"), load_state(run / "export/transformer")
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # every weight trained
    WanTransformer3DModel.from_pretrained(str(run / "export/transformer"))  # diffusers reads it
    assert (run / "export/model_index.json").is_file() and (run / "export/vae").is_dir()


# ---------------------------------------------------------------- many processes


@pytest.mark.slow
def test_two_ranks_train_the_lora_as_one_process_does(wan, latents, tmp_path):
    cfg = cfg_for(wan, latents, steps=4, sequences_per_step=2)
    train_dit(tmp_path / "one", cfg, progress=False)
    sets = [f"{k}={v}" for k, v in dict(init=wan, data=latents, steps=4, sequences_per_step=2, **LORA).items()]
    torchrun(["-m", "kinema.cli", "train", "dit", str(tmp_path / "two"), *sum((["--set", s] for s in sets), [])])
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4 and max(abs(a - b) for a, b in zip(one, two)) <= 1e-4
    a, b = (load_file(str(tmp_path / r / "export/lora.safetensors")) for r in ("one", "two"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


LOAD_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from kinema.train.common import init_distributed, shutdown
from kinema.train.dit import DiTTrainConfig, _model_from_base

cfg = DiTTrainConfig(init=sys.argv[1], data=sys.argv[2], precision="fp32")
d = init_distributed("cpu")
model = _model_from_base(cfg, d, 16, None)
local = [p for p in model.parameters()]
assert all(isinstance(p, DTensor) for p in local), "not sharded"
held = sum(p.to_local().numel() for p in local)
total = sum(p.numel() for p in local)
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if d.is_main:
    save_file({k: v.contiguous() for k, v in full.items()}, sys.argv[3])
print(f"rank {d.rank} holds {held} of {total} parameters")
shutdown(d)
"""


@pytest.mark.slow
def test_the_meta_device_load_into_fsdp2_shards_equals_a_plain_load(wan, latents, tmp_path):
    from kinema.models.wan import load_wan_dit

    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    res = torchrun([str(script), str(wan), str(latents), str(tmp_path / "state.safetensors")])
    held = [line for line in res.stdout.splitlines() if "holds" in line]
    assert len(held) == 2 and all(int(h.split()[3]) < int(h.split()[5]) for h in held)  # each rank a part
    got = load_file(str(tmp_path / "state.safetensors"))
    want = load_wan_dit(wan / "transformer").state_dict()
    assert sorted(got) == sorted(f"dit.{k}" for k in want)
    assert all(torch.equal(got[f"dit.{k}"], v) for k, v in want.items())


def test_the_finetune_memory_estimate_counts_the_adapters_peft_makes():
    from peft import LoraConfig, inject_adapter_in_model

    from kinema.dit import DiT
    from kinema.lora import DEFAULT_TARGETS
    from kinema.models.memory import _dit_params, lora_params, wan_finetune_memory

    _, _, cfg = _dit_params("wan2.1-1.3b")
    with torch.device("meta"):
        dit = DiT(cfg)
    inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=list(DEFAULT_TARGETS)), dit)
    assert lora_params(cfg, 16) == sum(p.numel() for n, p in dit.named_parameters() if ".lora_" in n)
    lora, full = (wan_finetune_memory("wan2.1-1.3b", 832, 480, 81, r) for r in (16, 0))
    assert full["trained_state"] > 20 * lora["trained_state"] and full["base_weights"] == 2 * lora["base_weights"]
    off = wan_finetune_memory("wan2.1-14b", 832, 480, 81, 16, offload="blocks")
    on = wan_finetune_memory("wan2.1-14b", 832, 480, 81, 16)
    assert off["base_weights"] < on["base_weights"] / 10 and off["activations"] == on["activations"]
    with pytest.raises(KinemaError, match="needs lora_rank > 0 and checkpointing"):
        wan_finetune_memory("wan2.1-14b", 832, 480, 81, 0, offload="blocks")


def test_a_wan22_ti2v_base_trains_with_clean_frame_conditioning(tmp_path):
    """Wan 2.2 TI2V-5B was trained with clean first-frame tokens at t = 0: its cache is cut to its
    32-pixel grid, and its runs keep Kinema's conditioning mix."""
    from typer.testing import CliRunner

    from kinema.cli import app
    from kinema.flow import DEFAULT_CONDITION_PROBS
    from kinema.pipeline import Pipeline
    from kinema.world.dataset import write_dataset
    from tests.test_wan22 import save_ti2v_folder

    folder = tmp_path / "ti2v"
    save_ti2v_folder(folder)
    manifest = write_dataset(tmp_path / "clips", 3, seed=2, min_side=48, max_side=80, min_seconds=0.5, max_seconds=0.8,
                             progress=False)  # fmt: skip
    res = CliRunner().invoke(app, ["data", "encode", "--manifest", str(manifest), "--model", str(folder),
                                   "--out", str(tmp_path / "latents")])  # fmt: skip
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "latents/encode.json").read_text())
    assert settings["multiple"] == 32
    cfg = DiTTrainConfig(init=str(folder), data=str(tmp_path / "latents"), **{**LORA, "steps": 2})
    assert cfg.condition_probs == DEFAULT_CONDITION_PROBS
    train_dit(tmp_path / "run", cfg, progress=False)
    pipe = Pipeline.from_pretrained(folder)
    assert pipe.apply_lora(tmp_path / "run/export/lora.safetensors") > 0


def test_lora_on_the_shipped_world_model(tmp_path):
    """init=world: the adapters train on Kinema World on the shipped model's own shapes, are written
    in Kinema's layout, applied with --lora, and merged by pack into a model folder."""
    from kinema.pipeline import Pipeline

    cfg = DiTTrainConfig(init="world", vae="world-vae", lora_rank=4, steps=3, token_budget=512, world_clips=4,
                         world_max_side=64, precision="fp32")  # fmt: skip
    train_dit(tmp_path / "run", cfg, progress=False)
    lora = tmp_path / "run/export/lora.safetensors"
    keys = list(load_file(str(lora)))
    assert any(".attn.qkv.lora_A" in k for k in keys) and not any("attn1" in k for k in keys)  # Kinema's names
    kw = dict(width=64, height=64, seconds=1, steps=2, seed=1, expand=False, progress=False)
    plain = Pipeline.from_pretrained("world").generate("a red ball", **kw).latent
    pipe = Pipeline.from_pretrained("world")
    assert pipe.apply_lora(lora, 20.0) > 0  # three steps of adapters, magnified to be seen
    adapted = pipe.generate("a red ball", **kw).latent
    assert (adapted - plain).abs().max() > 1e-3
    packed = pack_lora(lora, tmp_path / "packed")
    once = Pipeline.from_pretrained(packed).generate("a red ball", **kw).latent
    pipe = Pipeline.from_pretrained("world")
    pipe.apply_lora(lora)
    assert (once - pipe.generate("a red ball", **kw).latent).abs().max().item() <= 1e-4
