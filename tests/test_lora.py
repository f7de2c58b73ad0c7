"""LoRA files of a Kinema DiT (kinema.lora), against the reference (diffusers 0.42 + PEFT): a LoRA
trained on Kinema and written in diffusers' Wan layout draws in WanPipeline what it draws in
Kinema; a LoRA made by diffusers merges into Kinema as it runs there; a merged model goes back
to diffusers exactly; and Kinema's own layout round-trips.

The models are tiny and random (tests/wan_reference.py); the claims are float32 equality."""

from __future__ import annotations

import re

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from kinema.dit import DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.lora import (
    DEFAULT_TARGETS,
    WAN_LORA_NAMES,
    merge_lora,
    read_lora_deltas,
    save_lora,
    to_file_layout,
    wan_state_from_kinema,
)
from kinema.models.wan import WAN_DIT_NAMES, load_wan_dit, wan_dit_config, wan_dit_state
from kinema.patches import grid_size, patchify, positions, unpatchify
from tests.wan_reference import save_wan_folder, tiny_transformer

RANK, ALPHA = 4, 8
WAN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]  # diffusers' names


def randomise_lora(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Every lora_A and lora_B random (PEFT starts B at zero, which would prove nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def inputs(text_dim: int = 16, seed: int = 1):
    """A small latent (B, C, T, H, W), times in [0, 1] and zero-padded captions, as test_wan uses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 2, 4, 6, generator=g)
    text = torch.randn(2, 7, text_dim, generator=g)
    text[1, 4:] = 0  # Wan's zero padding after a caption's tokens
    return x, torch.tensor([0.8, 0.35]), text


@torch.no_grad()
def kinema_velocity(dit: DiT, x, t, text):
    grid = grid_size(x.shape[1:], dit.config.patch)
    tokens = torch.stack([patchify(xi, dit.config.patch) for xi in x])  # (B, L, C*pt*ph*pw)
    v = dit(tokens, positions(grid), t, text, torch.ones(text.shape[:2], dtype=torch.bool))
    return torch.stack([unpatchify(vi, grid, dit.config.patch) for vi in v])


@torch.no_grad()
def reference_velocity(transformer, x, t, text):
    return transformer(x, t * 1000, text, return_dict=False)[0]


@torch.no_grad()
def peft_merged_velocity(dit: DiT, *args):
    """Kinema's velocity with its PEFT adapters merged into the weights by PEFT itself for the call."""
    layers = [m for m in dit.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.merge()
    try:
        return kinema_velocity(dit, *args)
    finally:
        for m in layers:
            m.unmerge()


def small_dit(seed: int = 0) -> DiT:
    """A tiny Kinema DiT (a world model's options) with every weight random."""
    torch.manual_seed(seed)
    model = DiT(DiTConfig(hidden=64, depth=2, heads=4, in_channels=4, text_dim=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.ndim == 2 else 0.1)
    return model.requires_grad_(False)


# ---------------------------------------------------------------- the inverse of the Wan loader


def test_lora_names_agree_with_the_weight_map():
    """Each diffusers Linear of WAN_LORA_NAMES is the one the Wan loader maps to that Kinema Linear."""
    moved = {ours: (theirs,) for theirs, ours in WAN_DIT_NAMES.items() if not ours.endswith(("_norm", "norm2"))}
    fused = {"blocks.{i}.attn.qkv": ("blocks.{i}.attn1.to_q", "blocks.{i}.attn1.to_k", "blocks.{i}.attn1.to_v"),
             "blocks.{i}.cross.kv": ("blocks.{i}.attn2.to_k", "blocks.{i}.attn2.to_v")}  # fmt: skip
    assert WAN_LORA_NAMES == {**moved, **fused}


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 1, 3)])
def test_wan_state_from_kinema_inverts_the_loader(patch):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    ref = WanTransformer3DModel(patch_size=patch, num_attention_heads=2, attention_head_dim=12, in_channels=3,
                                out_channels=3, text_dim=16, freq_dim=32, ffn_dim=40, num_layers=2)  # fmt: skip
    sd = ref.state_dict()
    config = wan_dit_config(ref.config)
    kinema = wan_dit_state(dict(sd), config)
    n = len(kinema)
    back = wan_state_from_kinema(kinema, config)
    assert len(kinema) == n  # its argument left whole
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape and torch.equal(back[k], v), k


# ---------------------------------------------------------------- a LoRA trained on Kinema, in diffusers


def test_kinema_lora_in_wan_layout_equals_diffusers(tmp_path):
    """A PEFT LoRA on a Kinema DiT loaded from a Wan folder, saved in diffusers' layout: WanPipeline's
    load_lora_weights, merge_lora into Kinema, and the merged weights written back into a diffusers
    transformer all give the same velocity."""
    from diffusers import WanTransformer3DModel

    folder, pipe = save_wan_folder(tmp_path / "wan", seed=3)
    x, t, text = inputs()
    plain = reference_velocity(pipe.transformer, x, t, text)

    dit = load_wan_dit(folder / "transformer")
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(DEFAULT_TARGETS)), dit)
    randomise_lora(dit, seed=5)
    want = kinema_velocity(dit, x, t, text)  # the adapters unmerged, as in training
    assert (want - plain).abs().max() > 0.1  # the adapter changes the velocity
    file = save_lora(tmp_path / "style.safetensors", get_peft_model_state_dict(dit), ALPHA / RANK, wan=True,
                     meta={"rank": RANK, "alpha": ALPHA})  # fmt: skip
    assert "transformer.blocks.1.attn1.to_v.lora_B.weight" in load_file(str(file))

    pipe.load_lora_weights(str(file))
    got = reference_velocity(pipe.transformer, x, t, text)
    assert (got - want).abs().max().item() <= 1e-4

    merged = load_wan_dit(folder / "transformer")
    assert merge_lora(merged, file) == 2 * len(DEFAULT_TARGETS)
    assert (kinema_velocity(merged, x, t, text) - want).abs().max().item() <= 1e-4

    back = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder / "transformer")).eval()
    back.load_state_dict(wan_state_from_kinema(merged.state_dict(), merged.config), strict=True)
    assert (reference_velocity(back, x, t, text) - want).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- a LoRA made by diffusers, in Kinema


def diffusers_lora(tmp_path, targets, seed=6, alpha=6.0):
    """A tiny reference transformer's folder and a random PEFT adapter on it, saved by WanPipeline
    (with its LoraConfig as metadata, so alpha != r is read); returns (folder, transformer, file)."""
    from diffusers import WanPipeline

    ref = tiny_transformer(seed=seed)
    ref.save_pretrained(tmp_path / "transformer")
    config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=targets)
    ref.add_adapter(config)
    randomise_lora(ref, seed=seed + 1)
    WanPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(ref),
                                  transformer_lora_adapter_metadata=config.to_dict())  # fmt: skip
    return tmp_path / "transformer", ref, tmp_path / "lora" / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize("targets,weights", [(WAN_TARGETS, 14), (["to_q", "to_v", "ffn.net.2"], 8)])
def test_diffusers_lora_merges_like_the_reference(tmp_path, targets, weights):
    """Separate A's for q, k and v, and a file that adapts only some of them (zero rows for the rest)."""
    folder, ref, file = diffusers_lora(tmp_path, targets)
    x, t, text = inputs()
    want = reference_velocity(ref, x, t, text)
    dit = load_wan_dit(folder)
    plain = kinema_velocity(dit, x, t, text)
    assert (want - plain).abs().max() > 0.1
    assert merge_lora(dit, file) == weights
    assert (kinema_velocity(dit, x, t, text) - want).abs().max().item() <= 1e-4


def test_other_wan_namings_read_the_same(tmp_path):
    """Without a prefix, behind diffusion_model., and in original Wan / ComfyUI names with
    lora_down / lora_up and .alpha keys: the deltas of the diffusers file. The original names are
    checked against diffusers' own conversion of them."""
    from diffusers import WanPipeline

    folder, _, file = diffusers_lora(tmp_path, WAN_TARGETS, alpha=float(RANK))  # alpha = r: copies need no metadata
    config = load_wan_dit(folder).config
    want = read_lora_deltas(file, config)
    state = load_file(str(file))
    assert len(want) == 14

    original = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
                "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
                "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
                "ffn.net.2": "ffn.2"}  # fmt: skip

    def wan_name(key):
        key = key.removeprefix("transformer.").replace("lora_A", "lora_down").replace("lora_B", "lora_up")
        for theirs, ours in original.items():
            key = key.replace(f".{theirs}.", f".{ours}.")
        return "diffusion_model." + key

    comfy = {wan_name(k): v for k, v in state.items()}
    for k in [k for k in comfy if k.endswith("lora_down.weight")]:  # alpha 2r: twice the delta, B halved
        comfy[k.removesuffix("lora_down.weight") + "alpha"] = torch.tensor(2.0 * RANK)
        up = k.replace("lora_down", "lora_up")
        comfy[up] = comfy[up] / 2
    namings = {
        "bare": {k.removeprefix("transformer."): v for k, v in state.items()},
        "diffusion_model": {"diffusion_model." + k.removeprefix("transformer."): v for k, v in state.items()},
        "original": comfy,
    }
    for name, renamed in namings.items():
        save_file({k: v.contiguous() for k, v in renamed.items()}, str(tmp_path / f"{name}.safetensors"))
        got = read_lora_deltas(tmp_path / f"{name}.safetensors", config)
        assert got.keys() == want.keys(), name
        assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-6, name
    # diffusers reads the original names into its own (alpha folded in): the same deltas again
    converted = WanPipeline.lora_state_dict(str(tmp_path / "original.safetensors"))
    save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp_path / "converted.safetensors"))
    got = read_lora_deltas(tmp_path / "converted.safetensors", config)
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-6


# ---------------------------------------------------------------- Kinema's own layout


def test_world_model_lora_round_trip(tmp_path):
    """Kinema's layout (wan=False) holds any Linear, x_embed and the final layer too; merging the
    file into a fresh copy gives the adapted velocity, in float32 and kept in bfloat16."""
    model = small_dit()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    targets = [*DEFAULT_TARGETS, "x_embed", "t_embed.0", "t_mod", "final.out"]
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets), model)
    randomise_lora(model, seed=2, scale=0.2)
    x, t, text = inputs(text_dim=32)
    want = kinema_velocity(model, x, t, text)  # the adapters unmerged, as in training
    file = save_lora(tmp_path / "world.safetensors", get_peft_model_state_dict(model), ALPHA / RANK, wan=False,
                     meta={"base": "tiny"})  # fmt: skip
    assert "transformer.blocks.0.attn.qkv.lora_B.weight" in load_file(str(file))

    fresh = small_dit()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in base.items())
    plain = kinema_velocity(fresh, x, t, text)
    assert (want - plain).abs().max() > 0.1
    assert merge_lora(fresh, file) == 2 * len(DEFAULT_TARGETS) + 4
    assert (kinema_velocity(fresh, x, t, text) - want).abs().max().item() <= 1e-4

    half = small_dit().to(torch.bfloat16)
    merge_lora(half, file, scale=0.5)
    w = half.blocks[0].attn.qkv.weight
    assert w.dtype == torch.bfloat16 and not w.requires_grad
    delta = read_lora_deltas(file, half.config)["blocks.0.attn.qkv.weight"]
    assert torch.equal(w, (base["blocks.0.attn.qkv.weight"].bfloat16().float() + 0.5 * delta).bfloat16())


def test_unmerged_peft_adapters_reach_the_fused_projections():
    """Training runs the adapters unmerged: an adapter on attn.qkv or cross.kv changes the velocity
    as merging it into the fused weight does (the attention must call the wrapped Linear)."""
    model = small_dit()
    plain = kinema_velocity(model, *inputs(text_dim=32))
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["attn.qkv", "cross.kv"]), model)
    randomise_lora(model, seed=3)
    x, t, text = inputs(text_dim=32)
    got = kinema_velocity(model, x, t, text)
    assert (got - plain).abs().max() > 0.1
    assert (got - peft_merged_velocity(model, x, t, text)).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- bad files


def test_bad_lora_files_are_clear_errors(tmp_path):
    model = small_dit()
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(DEFAULT_TARGETS)), model)
    good = to_file_layout(get_peft_model_state_dict(model), 1.0, wan=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cases = {
        "unknown": ({**good, "transformer.blocks.7.attn.qkv.lora_A.weight": torch.zeros(RANK, 64)},
                    "transformer.blocks.7.attn.qkv.lora_A.weight"),
        "kohya": ({**good, "lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(RANK, 64)},
                  "lora_unet_blocks_0_self_attn_q.lora_down.weight"),
        "shape": ({**good, "transformer.blocks.1.mlp.down.lora_A.weight": torch.zeros(RANK, 63)},
                  "transformer.blocks.1.mlp.down.lora_A.weight' is (4, 63)"),
        "rank": ({**good, "transformer.blocks.0.cross.q.lora_B.weight": torch.zeros(64, RANK + 1)},
                 "transformer.blocks.0.cross.q.lora_B.weight' is (64, 5)"),
        "no_b": ({k: v for k, v in good.items() if k != "transformer.blocks.1.cross.kv.lora_B.weight"},
                 "transformer.blocks.1.cross.kv.lora_A.weight' has no lora_B"),
    }  # fmt: skip
    for name, (state, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path))
        with pytest.raises(KinemaError, match=re.escape(message)) as e:
            merge_lora(model, path)
        assert str(path) in str(e.value), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # every key checked first
    save_file(good, str(tmp_path / "good.safetensors"))
    with pytest.raises(KinemaError, match="names no weight of a diffusers Wan DiT"):
        read_lora_deltas(tmp_path / "good.safetensors", model.config, wan=True)
    with pytest.raises(KinemaError, match="no LoRA file"):
        read_lora_deltas(tmp_path / "missing.safetensors", model.config)
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(KinemaError, match="cannot read"):
        read_lora_deltas(tmp_path / "text.safetensors", model.config)
    # the diffusers layout has no x_embed (a Conv3d there)
    with pytest.raises(KinemaError, match="x_embed has no counterpart"):
        to_file_layout({"x_embed.lora_A.weight": torch.zeros(RANK, 16), "x_embed.lora_B.weight": torch.zeros(64, RANK)},
                       1.0, wan=True)  # fmt: skip
