"""LoRA adapters of a Kinema DiT: the files Kinema writes, the files it reads, and merging one.

A LoRA adapts a Linear's weight W (out, in) by delta = (alpha / r) B A, with A (r, in) and
B (out, r). Kinema fine-tunes with adapters that PEFT injects into its DiT; their state
(`peft.get_peft_model_state_dict(dit)`) names Kinema's modules, `blocks.0.attn.qkv.lora_A.weight`.
A file folds alpha / r into B, so a reader that assumes alpha = r (diffusers without adapter
metadata, ComfyUI without `.alpha` keys) adds the same delta. It is written in one of two layouts:

    wan=True   diffusers' WanTransformer3DModel names, which WanPipeline.load_lora_weights reads:
               transformer.blocks.{i}.attn1.to_q.lora_A.weight (r, D)
               transformer.blocks.{i}.attn1.to_q.lora_B.weight (D, r)
               Kinema's fused projections are split exactly, since B A splits by rows: qkv's B
               in thirds over to_q, to_k, to_v with its A repeated for each; cross.kv's B in
               halves over attn2.to_k, attn2.to_v.
    wan=False  Kinema's own names (its world models): transformer.blocks.{i}.attn.qkv.lora_A.weight

and carries the safetensors metadata {"format": "pt", "kinema_lora": json of what the caller gave}.

`read_lora_deltas` turns a file into full deltas by Kinema weight name, and reads:
- Kinema's files, in either layout;
- diffusers / PEFT Wan LoRAs: diffusers names behind `transformer.`, `diffusion_model.` or no
  prefix, lora_A / lora_B, separate A's for q, k and v (a fused delta is cat([B_q A_q, B_k A_k,
  B_v A_v]); a projection the file does not adapt gets zero rows); alpha from the diffusers
  adapter metadata (`lora_adapter_metadata`: lora_alpha, use_rslora; not alpha_pattern);
- original Wan / ComfyUI names (diffusion_model.blocks.{i}.self_attn.q, cross_attn.o, ffn.0, ...)
  with lora_A / lora_B or lora_down / lora_up;
- a `.alpha` key beside a module's A and B in any of these (delta scaled by alpha / r).
Not read: full-weight `.diff` or bias `diff_b` keys, DoRA magnitudes, LoRA biases, musubi /
kohya `lora_unet_` names, the I2V image projections; each is a KinemaError naming the key.

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    dit = load_wan_dit("Wan2.1-T2V-1.3B-Diffusers/transformer")
    inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=list(DEFAULT_TARGETS)), dit)
    ...                                                          # train the lora_ parameters
    save_lora("style.safetensors", get_peft_model_state_dict(dit), scale=16 / 16, wan=True, meta={...})

    dit = load_wan_dit("Wan2.1-T2V-1.3B-Diffusers/transformer")
    merge_lora(dit, "style.safetensors")                         # Kinema's, diffusers' or ComfyUI's
    state = wan_state_from_kinema(dit.state_dict(), dit.config)  # diffusers' names: a merged folder
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from kinema.dit import DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.models.wan import wan_dit_renames

# the Linears a fine-tune adapts: every projection of the blocks (PEFT matches these suffixes)
DEFAULT_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj", "cross.q", "cross.kv", "cross.proj", "mlp.up", "mlp.down")

# Kinema Linear -> the diffusers WanTransformer3DModel Linears it holds, in the order of its rows.
# x_embed (a Conv3d there) and final.out (another token layout there) have no LoRA counterpart.
WAN_LORA_NAMES = {
    "blocks.{i}.attn.qkv": ("blocks.{i}.attn1.to_q", "blocks.{i}.attn1.to_k", "blocks.{i}.attn1.to_v"),
    "blocks.{i}.attn.proj": ("blocks.{i}.attn1.to_out.0",),
    "blocks.{i}.cross.q": ("blocks.{i}.attn2.to_q",),
    "blocks.{i}.cross.kv": ("blocks.{i}.attn2.to_k", "blocks.{i}.attn2.to_v"),
    "blocks.{i}.cross.proj": ("blocks.{i}.attn2.to_out.0",),
    "blocks.{i}.mlp.up": ("blocks.{i}.ffn.net.0.proj",),
    "blocks.{i}.mlp.down": ("blocks.{i}.ffn.net.2",),
    "t_embed.0": ("condition_embedder.time_embedder.linear_1",),
    "t_embed.2": ("condition_embedder.time_embedder.linear_2",),
    "text_embed.0": ("condition_embedder.text_embedder.linear_1",),
    "text_embed.2": ("condition_embedder.text_embedder.linear_2",),
    "t_mod": ("condition_embedder.time_proj",),
}

# original Wan (and ComfyUI) module names -> diffusers', as diffusers' own Wan LoRA conversion maps them
ORIGINAL_WAN_NAMES = {
    **{f"blocks.{{i}}.{orig}.{o}": f"blocks.{{i}}.{attn}.{d}"
       for orig, attn in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"), strict=True)},  # fmt: skip
    "blocks.{i}.ffn.0": "blocks.{i}.ffn.net.0.proj",
    "blocks.{i}.ffn.2": "blocks.{i}.ffn.net.2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
}

PREFIXES = ("transformer.", "diffusion_model.")  # stripped from a file's keys; no prefix is read too
DOWN, UP = ("lora_A.weight", "lora_down.weight"), ("lora_B.weight", "lora_up.weight")
SUPPORTED = ("Kinema reads its own LoRA files, diffusers / PEFT Wan LoRAs "
             "(transformer.blocks.N.attn1.to_q.lora_A.weight) and original Wan / ComfyUI ones "
             "(diffusion_model.blocks.N.self_attn.q.lora_down.weight)")  # fmt: skip


def _block_name(name: str) -> tuple[str, str]:
    """'blocks.3.attn.qkv' -> ('blocks.{i}.attn.qkv', '3'); a name outside the blocks -> (name, '')."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    return (f"blocks.{{i}}.{m[2]}", m[1]) if m else (name, "")


# ---------------------------------------------------------------- writing


def to_file_layout(peft_state: dict[str, Tensor], scale: float, wan: bool) -> dict[str, Tensor]:
    """Kinema PEFT LoRA state (`blocks.0.attn.qkv.lora_A.weight`, ...) -> the tensors of a LoRA file,
    with scale (alpha / r) folded into B; diffusers' Wan names (wan=True) or Kinema's, behind `transformer.`."""
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in peft_state.items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise KinemaError(f"{key} is not a LoRA A or B weight (LoRA biases and DoRA are not written)")
        pairs.setdefault(module, {})[kind[0]] = value.detach()
    out: dict[str, Tensor] = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise KinemaError(f"the LoRA of {module} has lora_{''.join(ab)} but not lora_{'B' if 'A' in ab else 'A'}")
        a, b = ab["A"], (ab["B"].float() * scale).to(ab["B"].dtype)
        if not wan:
            out[f"transformer.{module}.lora_A.weight"] = a.contiguous()
            out[f"transformer.{module}.lora_B.weight"] = b.contiguous()
            continue
        pattern, i = _block_name(module)
        if pattern not in WAN_LORA_NAMES:
            raise KinemaError(f"{module} has no counterpart in diffusers' Wan transformer; adapt only "
                              f"{', '.join(n.removeprefix('blocks.{i}.') for n in WAN_LORA_NAMES)}")  # fmt: skip
        theirs = WAN_LORA_NAMES[pattern]
        if b.shape[0] % len(theirs):
            raise KinemaError(f"the lora_B of {module} has {b.shape[0]} rows, not {len(theirs)} equal parts")
        for name, b_part in zip(theirs, b.chunk(len(theirs)), strict=True):
            name = "transformer." + name.replace("{i}", i)
            out[f"{name}.lora_A.weight"] = a.clone()  # one A per diffusers Linear: separate tensors in the file
            out[f"{name}.lora_B.weight"] = b_part.clone()
    return out


def save_lora(path: str | os.PathLike, peft_state: dict[str, Tensor], scale: float, wan: bool,
              meta: dict | None = None) -> Path:  # fmt: skip
    """Write a LoRA file (see the module doc) atomically; meta (JSON-able: base model, rank, alpha,
    steps, ...) goes into its metadata as "kinema_lora". Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.cpu().contiguous() for k, v in to_file_layout(peft_state, scale, wan).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "kinema_lora": json.dumps(meta or {})})
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- reading


def _linear_shapes(config: DiTConfig) -> dict[str, tuple[int, int]]:
    """Every Linear of a DiT of this config: module name -> weight shape (out, in). Built on meta."""
    with torch.device("meta"):
        dit = DiT.empty(config)
    return {name: tuple(m.weight.shape) for name, m in dit.named_modules() if isinstance(m, nn.Linear)}


def _wan_targets(config: DiTConfig, linears: dict) -> dict[str, tuple[str, int, int]]:
    """diffusers (and original Wan) module name -> (Kinema module, part, parts) for a DiT of this config."""
    targets = {}
    for ours, theirs in WAN_LORA_NAMES.items():
        for i in range(config.depth) if "{i}" in ours else [0]:
            module = ours.replace("{i}", str(i))
            if module not in linears:
                continue
            for part, name in enumerate(theirs):
                targets[name.replace("{i}", str(i))] = (module, part, len(theirs))
    for original, diffusers in ORIGINAL_WAN_NAMES.items():
        for i in range(config.depth) if "{i}" in original else [0]:
            if (d := diffusers.replace("{i}", str(i))) in targets:
                targets[original.replace("{i}", str(i))] = targets[d]
    return targets


def _split_key(key: str) -> tuple[str, str]:
    """'transformer.blocks.0.attn1.to_q.lora_A.weight' -> ('blocks.0.attn1.to_q', 'A'); kind '' if not LoRA."""
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    for kind, endings in (("A", DOWN), ("B", UP), ("alpha", ("alpha",))):
        for end in endings:
            if key.endswith("." + end):
                return key[: -len(end) - 1], kind
    return key, ""


def _adapter_alpha(metadata: dict, path: Path) -> tuple[float | None, bool]:
    """lora_alpha and use_rslora from diffusers' adapter metadata (LoraConfig.to_dict, keys 'transformer.*')."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None, False
    try:
        doc = {k.removeprefix("transformer."): v for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError):
        raise KinemaError(f"{path}: its lora_adapter_metadata is not a JSON object") from None
    if doc.get("alpha_pattern"):
        raise KinemaError(f"{path}: per-module alphas (alpha_pattern) are not supported; fold them into lora_B")
    alpha = doc.get("lora_alpha")
    return (float(alpha) if alpha is not None else None), bool(doc.get("use_rslora"))


def read_lora_deltas(path: str | os.PathLike, config: DiTConfig, wan: bool | None = None) -> dict[str, Tensor]:
    """The weight deltas of a LoRA file, by Kinema weight name ('blocks.0.attn.qkv.weight' -> (out, in)
    float32), for a DiT of this config. wan: the file names diffusers' Wan modules (True) or
    Kinema's (False); None tells them apart by the names. See the module doc for the formats read."""
    return dict(_deltas(path, config, wan))


def _deltas(path: str | os.PathLike, config: DiTConfig, wan: bool | None) -> Iterator[tuple[str, Tensor]]:
    """read_lora_deltas one weight at a time (every key is checked before the first): a merge never
    holds more than one full-size delta."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except FileNotFoundError:
        raise KinemaError(f"no LoRA file at {path}") from None
    except (SafetensorError, OSError) as e:
        raise KinemaError(f"{path}: cannot read it as a safetensors LoRA file ({e})") from None
    if not tensors:
        raise KinemaError(f"{path} holds no tensors")

    linears = _linear_shapes(config)
    ours = {m: (m, 0, 1) for m in linears}
    theirs = _wan_targets(config, linears)
    split = {key: _split_key(key) for key in tensors}
    if wan is None:  # the layout whose names cover more of the file
        modules = [m for m, kind in split.values() if kind]
        wan = sum(m in theirs for m in modules) > sum(m in ours for m in modules)
    targets = theirs if wan else ours

    groups: dict[str, dict[str, tuple[str, Tensor]]] = {}  # file module -> {"A", "B", "alpha": (key, tensor)}
    for key, (module, kind) in split.items():
        if not kind or module not in targets:
            layout = "a diffusers Wan" if wan else "a Kinema"
            raise KinemaError(f"{path}: key {key!r} names no weight of {layout} DiT of this config; {SUPPORTED}")
        if kind in groups.setdefault(module, {}):
            raise KinemaError(f"{path}: {module} is adapted twice ({groups[module][kind][0]!r} and {key!r})")
        groups[module][kind] = (key, tensors[key])

    alpha, rslora = _adapter_alpha(metadata, path)
    parts: dict[str, dict[int, tuple[float, Tensor, Tensor]]] = {}  # Kinema module -> {part: (scale, B, A)}
    for module, g in groups.items():
        if "A" not in g or "B" not in g:
            have = next(iter(g.values()))[0]
            missing = "lora_B (lora_up)" if "A" in g else "lora_A (lora_down)"
            raise KinemaError(f"{path}: {have!r} has no {missing} beside it")
        (ka, a), (kb, b) = g["A"], g["B"]
        target, part, n = targets[module]
        out, inp = linears[target]
        if a.ndim != 2 or a.shape[1] != inp:
            raise KinemaError(f"{path}: {ka!r} is {tuple(a.shape)}, not (rank, {inp}) for {target}")
        if b.ndim != 2 or b.shape != (out // n, a.shape[0]):
            raise KinemaError(f"{path}: {kb!r} is {tuple(b.shape)}, not ({out // n}, {a.shape[0]}) for {target}")
        if part in parts.setdefault(target, {}):
            raise KinemaError(f"{path}: {ka!r} adapts a weight that another key of the file adapts too")
        rank = a.shape[0]
        if "alpha" in g:
            scale = float(g["alpha"][1]) / rank
        elif alpha is not None:
            scale = alpha / (math.sqrt(rank) if rslora else rank)
        else:
            scale = 1.0  # alpha = r: Kinema's files fold alpha / r into B
        parts[target][part] = (scale, b, a)

    for target, by_part in parts.items():
        out, inp = linears[target]
        delta = torch.zeros(out, inp)  # (out, in); a part the file does not adapt stays zero
        for part, (scale, b, a) in by_part.items():
            rows = b.shape[0]  # out / the number of parts
            delta[part * rows : (part + 1) * rows] = scale * (b.float() @ a.float())  # (rows, r) @ (r, in)
        yield f"{target}.weight", delta


# ---------------------------------------------------------------- merging


@torch.no_grad()
def merge_lora(dit: DiT, path: str | os.PathLike, scale: float = 1.0, wan: bool | None = None) -> int:
    """Add scale * delta of each weight a LoRA file adapts to `dit`'s weights, in place (summed in
    float32, stored in each weight's dtype, on its device). Returns the number of weights changed."""
    changed = 0
    for name, delta in _deltas(path, dit.config, wan):
        w = dit.get_submodule(name.removesuffix(".weight")).weight  # a PEFT-wrapped Linear gives its base weight
        w.copy_((w.float() + scale * delta.to(w.device)).to(w.dtype))
        changed += 1
    return changed


# ---------------------------------------------------------------- back to diffusers


def wan_state_from_kinema(state: dict[str, Tensor], config: DiTConfig) -> dict[str, Tensor]:
    """A Kinema DiT state dict of a Wan-configured DiT -> a diffusers WanTransformer3DModel state
    dict (the exact inverse of `kinema.models.wan.wan_dit_state`); `state` itself is left as it is."""
    src = dict(state)
    out: dict[str, Tensor] = {}

    def take(name: str) -> Tensor:
        try:
            return src.pop(name)
        except KeyError:
            raise KinemaError(f"the Kinema DiT state lacks {name}, which a Wan transformer needs") from None

    for i in range(config.depth):
        for theirs, ours in wan_dit_renames(i):
            for leaf in ("weight", "bias"):
                if f"{ours}.{leaf}" in src or leaf == "weight":  # RMSNorms have no bias
                    out[f"{theirs}.{leaf}"] = take(f"{ours}.{leaf}")
        b = f"blocks.{i}"
        for leaf in ("weight", "bias"):
            for p, part in zip("qkv", take(f"{b}.attn.qkv.{leaf}").chunk(3), strict=True):
                out[f"{b}.attn1.to_{p}.{leaf}"] = part.clone()  # its own storage: a file cannot share it
            for p, part in zip("kv", take(f"{b}.cross.kv.{leaf}").chunk(2), strict=True):
                out[f"{b}.attn2.to_{p}.{leaf}"] = part.clone()
        out[f"{b}.scale_shift_table"] = take(f"{b}.mod_table")[None]  # (6, D) -> (1, 6, D)
    for theirs, ours in wan_dit_renames(None):
        for leaf in ("weight", "bias"):
            out[f"{theirs}.{leaf}"] = take(f"{ours}.{leaf}")
    pt, ph, pw = config.patch
    out["patch_embedding.weight"] = rearrange(
        take("x_embed.weight"), "d (c pt ph pw) -> d c pt ph pw", c=config.in_channels, pt=pt, ph=ph, pw=pw
    )
    out["patch_embedding.bias"] = take("x_embed.bias")
    # our output token is laid out (c pt ph pw), theirs (pt ph pw c)
    out["proj_out.weight"] = rearrange(
        take("final.out.weight"), "(c pt ph pw) d -> (pt ph pw c) d", pt=pt, ph=ph, pw=pw
    )
    out["proj_out.bias"] = rearrange(take("final.out.bias"), "(c pt ph pw) -> (pt ph pw c)", pt=pt, ph=ph, pw=pw)
    out["scale_shift_table"] = take("final.mod_table")[None]  # (2, D) -> (1, 2, D)
    if src:
        raise KinemaError(f"the DiT has weights a Wan transformer has no place for (a Wan config?): {sorted(src)[:8]}")
    return out
