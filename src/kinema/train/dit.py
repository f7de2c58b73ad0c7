"""Train the DiT with rectified flow: one script from one CPU process to `torchrun` on many GPUs.

    kinema train dit runs/world --set vae=weights/vae --set steps=2000
    torchrun --nproc_per_node 8 -m kinema.cli train dit runs/big --set data=latents/ --set model=xl_1b

    train_dit("runs/world", DiTTrainConfig(vae="weights/vae", steps=2000))   # the same, from Python

The run folder holds config.json (the `DiTTrainConfig`), vocab.json (the builtin text encoder's
words), tb/ (TensorBoard), metrics.jsonl (one row a step), checkpoints/step-NNNNNN/ and, at the
end, export/ (inference weights). Running the same command again resumes from the latest
checkpoint, exactly: model, optimizer, EMA, data position and RNG are restored, and the
following losses are those of an unbroken run.

One step (global batch semantics):
  1. The data hands out the next G = sequences_per_step packed sequences (`kinema.data`); with W
     ranks, rank r takes those with index g = r (mod W) and runs them as G / W micro-batches.
  2. Everything random about sequence g (caption dropout, t, condition masks, noise) comes from
     a generator seeded by (seed, g), so it does not depend on which rank runs it.
  3. The loss is the mean squared velocity error over every loss token of the G sequences, on
     all ranks together: each micro-batch's summed error is divided by the global count of loss
     tokens (all-reduced before the backward passes), so one process accumulating G micro-batches
     and W ranks running G / W each compute the same gradient. FSDP averages gradients over
     ranks, so each rank scales its part by W.
  4. Gradient clipping, AdamW, EMA.

Scaling: with W > 1 every DiT block (and every text encoder layer), then the root, is sharded
with FSDP2 (`fully_shard`). With precision bf16 (the default on a GPU and on a CPU that computes
bfloat16 natively) the forward runs under bf16 autocast, master weights, optimizer state,
gradient reduction and the loss in fp32; on a GPU FSDP also casts the parameters to bf16 for
compute. `checkpointing` recomputes each block in the backward pass.

The builtin text encoder is part of the trained model (its weights are in the checkpoint and
the export); a frozen `hf:DIR` encoder is not, and its embeddings can come from the latent cache.
"""

from __future__ import annotations

import json
import math
import os
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from kinema.data.cache import write_json
from kinema.data.loader import CROPS
from kinema.dit import PRESETS, DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.lora import DEFAULT_TARGETS
from kinema.flow import DEFAULT_CONDITION_PROBS, draw_condition_mask, interpolate, pin_conditions, training_t, velocity
from kinema.text.encoder import SPECIALS, BuiltinTextEncoder, TextEncoderConfig, WordTokenizer, drop_captions
from kinema.train.common import (
    EMA,
    Dist,
    Logger,
    apply_train_state,
    PRECISIONS,
    autocast,
    barrier,
    init_distributed,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    resolve_precision,
    shutdown,
    train_state,
)

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class DiTTrainConfig:
    """Every knob of a DiT run; saved as the run folder's config.json.

    Model:  model (a DiTConfig preset: tiny, small, b, l, xl_1b, xl_3b) with optional hidden /
            depth / heads overrides; attention (sdpa | flex); checkpointing (recompute blocks)
    Text:   text_encoder: builtin (trained jointly, text_dim / text_depth / text_heads) or hf:DIR
            (frozen); text_frozen: the builtin encoder keeps its first weights (fresh, or init's)
            and only the DiT trains: trained jointly from scratch on a small budget, its word
            vectors drift together until long captions that differ in a few words encode nearly
            alike, while a fresh random encoder keeps them apart; caption_dropout: probability of
            the empty caption (classifier-free guidance)
    Noise:  shift_scale multiplies the resolution shift of the training times (flow.training_t).
            Small latents of flat-coloured worlds need > 1 to train the high-noise steps, where
            only the caption tells what to draw: None means 4 on Kinema World, 1 (SD3's shift)
            on a latent cache. Exports carry it to the sampler. plain_shift_prob: the share of
            samples drawn with scale 1 instead, so the low-noise steps (objects, edges) train too.
    Data:   data: "world" (Kinema World rendered and encoded on the fly with `vae`, clips sized by
            the world_* knobs; world_clips = N > 0 makes it a fixed world of N clips, world_cache
            keeps their latents in memory and in RUN/world_cache/, so a resume does not encode
            them again; world_workers = K > 0 renders such a world in K processes and encodes
            it all before the first step, to keep a GPU fed; world_single_prob: the share of
            plain one-object scenes under a still camera, a curriculum for small models;
            world_thing_weight: the loss weight of the latent cells that hold an object or a
            brush stroke, a few per cent of the pixels; 1: the plain mean; world_crop: native
            sizes, or "square": each clip cut to the centre square of its shorter side) or a latent cache
            folder from `kinema data encode`;
            token_budget: tokens a packed sequence; sequences_per_step: G, the global batch in
            sequences (a multiple of the number of ranks); condition_probs: frame-conditioning mix
    Optim:  AdamW (lr, betas, weight_decay), linear warmup, then constant, or cosine down to
            min_lr by decay_steps when decay_steps > 0; grad_clip; ema_decay
    Run:    steps, seed, device (auto | cpu | cuda), precision (auto | bf16 | fp32: the forward
            under bfloat16 autocast, float32 master weights, optimizer and loss; auto: bf16 on a
            GPU and on a CPU that computes it natively, resolved once into config.json),
            checkpoint_every, keep_checkpoints;
            init: an export folder ("world": the shipped model) whose weights (DiT and builtin
            text encoder, same shapes and words) a new run starts from, fine-tuning (under LoRA
            the shapes are the export's own); init_reset: parts of it drawn afresh
            instead, each a dotted name of a module (e.g. "text_embed,text_pool,cross,cross_gate":
            the caption path), with the ordinary initialisation (cross-attention outputs at
            zero); modules the export lacks (a newer architecture) must be among them.
            init may also be a diffusers Wan 2.1 / Wan 2.2 TI2V-5B folder (or its transformer/):
            the DiT is then that model (model, hidden, depth and heads do not apply), built on
            the meta device and loaded one tensor at a time, into FSDP2 shards under torchrun;
            its captions are the umT5 embeddings of a latent cache from `kinema data encode
            --model WAN_DIR` (text_encoder "stored"); a Wan 2.1 run trains text-to-video only
            by default (condition_probs {"none": 1}: Wan 2.1 samples with the "replace" strategy)
    LoRA:   lora_rank R > 0 trains low-rank adapters (PEFT) on the DiT's `lora_targets` (module
            name suffixes: attn.qkv, attn.proj, cross.q, cross.kv, cross.proj, mlp.up, mlp.down)
            with scale lora_alpha / R (alpha default R) and lora_dropout, the base weights frozen
            (in bf16 on a GPU with precision bf16); needs init. Checkpoints hold the adapters,
            their optimizer state and EMA only; the base is read from init again on resume. The
            export is export/lora.safetensors (diffusers' layout for a Wan base; `kinema.lora`).
            lora_rank 0 (the default): every weight trains (full fine-tuning).
            sequence_parallel=K (under torchrun, K dividing the ranks): each packed sequence is
            split over K consecutive ranks (Ulysses attention, `kinema.parallel`); the ranks form a
            (data x sequence) mesh, every K of them run the same sequences, FSDP2 shards over all.
            offload=blocks (with LoRA and checkpointing, one process): the frozen base's blocks
            stay in CPU memory and visit the device one at a time (`dit.offload_blocks`), so a
            base larger than the GPU trains adapters (see `models.memory.wan_finetune_table`)
    """

    model: str = "tiny"
    hidden: int | None = None
    depth: int | None = None
    heads: int | None = None
    attention: str = "sdpa"
    checkpointing: bool = False

    text_encoder: str = "builtin"
    text_dim: int = 256
    text_depth: int = 2
    text_heads: int = 4
    text_frozen: bool = False
    caption_dropout: float = 0.1
    shift_scale: float | None = None
    plain_shift_prob: float = 0.0

    data: str = "world"
    vae: str = ""
    token_budget: int = 1024
    sequences_per_step: int = 1
    pack_window: int = 256
    pad_to_budget: bool = False
    world_min_side: int = 64
    world_max_side: int = 128
    world_min_seconds: float = 0.5
    world_max_seconds: float = 2.0
    world_fps: tuple[float, ...] = (8.0, 12.0)
    world_max_frames: int | None = None
    world_image_prob: float = 0.2
    world_epoch_size: int = 1024
    world_clips: int = 0
    world_cache: bool = False
    world_workers: int = 0
    world_single_prob: float = 0.0
    world_thing_weight: float = 1.0
    world_crop: str = "native"
    condition_probs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CONDITION_PROBS))

    steps: int = 1000
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup: int = 100
    decay_steps: int = 0
    min_lr: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999

    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    init: str = ""
    init_reset: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    lora_dropout: float = 0.0
    offload: str = "none"
    sequence_parallel: int = 1

    def __post_init__(self):
        problems = []
        if self.model not in PRESETS:
            problems.append(f"model {self.model!r} is not a preset ({', '.join(PRESETS)})")
        if self.attention not in ("sdpa", "flex"):
            problems.append(f"attention must be sdpa or flex, not {self.attention!r}")
        wan = self.wan_base
        if wan is not None:
            if self.text_encoder == "builtin":  # Wan reads umT5 embeddings, stored in the latent cache
                object.__setattr__(self, "text_encoder", "stored")
            if self.condition_probs == DEFAULT_CONDITION_PROBS and not _wan_native(wan):
                object.__setattr__(self, "condition_probs", {"none": 1.0})
            if self.data == "world":
                problems.append("a Wan base trains on a latent cache made with `kinema data encode --model WAN_DIR` "
                                "(data=FOLDER), not on data=world")  # fmt: skip
            if self.init_reset:
                problems.append("init_reset applies to a Kinema export, not to a Wan base")
        if not (self.text_encoder in ("builtin", "stored") or self.text_encoder.startswith("hf:")):
            problems.append(f"text_encoder must be builtin, stored or hf:DIR, not {self.text_encoder!r}")
        if self.lora_rank < 0 or self.lora_dropout < 0 or self.lora_dropout >= 1:
            problems.append(f"need lora_rank >= 0 and 0 <= lora_dropout < 1; got {self.lora_rank}, {self.lora_dropout}")
        if self.lora_rank and not self.init:
            problems.append("lora_rank trains adapters on a trained model: set init=EXPORT_OR_WAN_DIR")
        if self.lora_rank and not self.lora_targets:
            problems.append("lora_targets is empty: name the modules to adapt (e.g. attn.qkv,attn.proj)")
        if self.sequence_parallel < 1:
            problems.append(f"sequence_parallel must be >= 1; got {self.sequence_parallel}")
        if self.offload not in ("none", "blocks"):
            problems.append(f"offload must be none or blocks; got {self.offload!r}")
        elif self.offload == "blocks" and not (self.lora_rank and self.checkpointing):
            problems.append("offload=blocks streams a frozen base's blocks: it needs lora_rank > 0 and "
                            "checkpointing=true (the backward pass recomputes each block with its weights)")  # fmt: skip
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            problems.append(f"lora_alpha must be positive; got {self.lora_alpha}")
        if self.text_frozen and self.text_encoder != "builtin":
            problems.append("text_frozen freezes the builtin text encoder; an hf:DIR encoder is always frozen")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        elif self.precision == "auto":  # resolved once, so config.json (and a resume) holds the one used
            object.__setattr__(self, "precision", resolve_precision("auto"))
        if self.shift_scale is None:  # resolved once, so config.json holds the value used
            object.__setattr__(self, "shift_scale", 4.0 if self.data == "world" else 1.0)
        if not self.shift_scale > 0:
            problems.append(f"shift_scale must be positive; got {self.shift_scale}")
        if not 0 <= self.plain_shift_prob <= 1:
            problems.append(f"plain_shift_prob must be in [0, 1]; got {self.plain_shift_prob}")
        if not 0 <= self.caption_dropout < 1:
            problems.append(f"caption_dropout must be in [0, 1); got {self.caption_dropout}")
        if not 0 <= self.world_single_prob <= 1:
            problems.append(f"world_single_prob must be in [0, 1]; got {self.world_single_prob}")
        if not self.world_thing_weight > 0:
            problems.append(f"world_thing_weight must be positive; got {self.world_thing_weight}")
        if self.world_crop not in CROPS:
            problems.append(f"world_crop must be one of {', '.join(CROPS)}; got {self.world_crop!r}")
        if self.data != "world" and (self.world_single_prob > 0 or self.world_thing_weight != 1 or self.world_crop != "native"):
            problems.append("world_single_prob, world_thing_weight and world_crop shape Kinema World data (data=world), "
                            f"not {self.data!r}")  # fmt: skip
        if self.world_workers < 0:
            problems.append(f"world_workers must be >= 0; got {self.world_workers}")
        if self.init_reset and not self.init:
            problems.append("init_reset needs init: the export whose other weights to keep")
        if self.data == "world" and not self.vae:
            problems.append("data=world needs a VAE to encode the clips: set vae=DIR_OR_NAME")
        for name in ("token_budget", "sequences_per_step", "pack_window", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup < 0 or self.grad_clip < 0 or not 0 <= self.ema_decay < 1:
            problems.append("need lr > 0, warmup >= 0, grad_clip >= 0 (0: off) and 0 <= ema_decay < 1")
        if problems:
            raise KinemaError("bad DiT training config: " + "; ".join(problems))

    @property
    def wan_base(self) -> Path | None:
        """The WanTransformer3DModel folder `init` names, or None (no init, or a Kinema export)."""
        if not self.init:
            return None
        from kinema.models.wan import wan_transformer_dir

        return wan_transformer_dir(self.init)

    @property
    def lora_scale(self) -> float:
        return (self.lora_alpha or self.lora_rank) / max(self.lora_rank, 1)

    def dit_config(self, text_dim: int) -> DiTConfig:
        over = {k: getattr(self, k) for k in ("hidden", "depth", "heads") if getattr(self, k) is not None}
        return PRESETS[self.model](text_dim=text_dim, **over)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> DiTTrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise KinemaError(f"unknown DiT training keys {unknown}; known keys: {sorted(known)}")
        if "precision" not in d:  # saved before it existed: what such runs did, bf16 on a GPU only
            gpu = torch.cuda.is_available() and d.get("device", "auto") != "cpu"
            d = {**d, "precision": "bf16" if gpu else "fp32"}
        hints = typing.get_type_hints(cls)
        out = {}
        for k, v in d.items():
            if typing.get_origin(hints[k]) is tuple and isinstance(v, list):
                v = tuple(v)
            out[k] = v
        return cls(**out)

    @classmethod
    def from_strings(cls, items: dict[str, str], base: dict | None = None) -> DiTTrainConfig:
        """A config from `base` (a config.json dict; default: the defaults) with fields set from
        strings, as the command line gives them: lr=1e-3, world_fps=8,12, hidden=none, ..."""
        hints = typing.get_type_hints(cls)
        values = dict(base or {})
        for key, text in items.items():
            if key not in hints:
                raise KinemaError(f"unknown setting {key!r}; known: {', '.join(f.name for f in fields(cls))}")
            values[key] = _parse(key, text, hints[key])
        return cls.from_dict(values)


def _wan_native(transformer: Path) -> bool:
    """Whether a Wan base was trained with clean conditioning tokens (Wan 2.2 TI2V's expand_timesteps)."""
    from kinema.models.hf import read_config

    index = transformer.parent / "model_index.json"
    return index.is_file() and bool(read_config(transformer.parent, "model_index.json").get("expand_timesteps"))


def _parse(key: str, text: str, kind) -> object:
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    try:
        if origin in (typing.Union, types.UnionType):  # X | None
            if text.strip().lower() in ("none", "null", ""):
                return None
            return _parse(key, text, next(a for a in args if a is not type(None)))
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind in (int, float, str):
            return kind(text)
        if origin is tuple:
            values = json.loads(text) if text.strip().startswith("[") else text.split(",")
            return tuple(_parse(key, str(v), args[0]) for v in values)
        if origin is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return {str(k): float(v) for k, v in value.items()}
    except (ValueError, StopIteration) as e:
        raise KinemaError(f"cannot read {key}={text!r}: {e}") from None
    raise KinemaError(f"cannot set {key} from the command line")


# ---------------------------------------------------------------- the trained model


class FlowModel(nn.Module):
    """What a run trains: the DiT and, when it trains jointly, the builtin text encoder.

    One forward for both, so that FSDP2's root hooks gather the root's parameters (patch and
    caption embeddings, the text encoder's embedding table) around the whole computation.
    """

    def __init__(self, dit: DiT, text: BuiltinTextEncoder | None = None):
        super().__init__()
        self.dit = dit
        self.text = text

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        t: Tensor,
        doc_ids: Tensor,
        captions: list[str] | None = None,
        text: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        if captions is not None:
            text, text_mask = self.text(captions)  # (S, Lt, Dt), (S, Lt)
        v = self.dit(tokens, positions, t, text, text_mask, doc_ids=doc_ids)  # (1, L, D)
        return v.clone()  # FSDP2 hooks the root's output; a view there could lose the hook


def shard(model: FlowModel, d: Dist, precision: str = "bf16") -> None:
    """FSDP2: each DiT block and text encoder layer its own unit, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    bf16_params = d.device.type == "cuda" and precision == "bf16"  # on a CPU, autocast does the casting
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16_params else None
    kw = {"mp_policy": mp} if mp is not None else {}
    for block in model.dit.blocks:
        fully_shard(block, **kw)
    if model.text is not None:
        for layer in model.text.layers:
            fully_shard(layer, **kw)
    fully_shard(model, **kw)


# ---------------------------------------------------------------- MFU

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets; first match wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
)


def peak_flops(device: torch.device | None = None) -> float | None:
    """Peak bf16 FLOP/s of this GPU (KINEMA_PEAK_FLOPS overrides), or None when unknown / CPU."""
    if os.environ.get("KINEMA_PEAK_FLOPS"):
        return float(os.environ["KINEMA_PEAK_FLOPS"])
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


# ---------------------------------------------------------------- one micro-batch


@dataclass
class MicroBatch:
    """A packed sequence made ready for the model (CPU tensors; see `make_micro_batch`)."""

    x_t: Tensor  # (1, L, D) noisy tokens
    target: Tensor  # (1, L, D) velocity
    t: Tensor  # (1, L) per-token time, 0 on conditions and padding
    loss_mask: Tensor  # (L,) float: each token's weight in the loss (0: none)
    positions: Tensor  # (L, 3)
    doc_ids: Tensor  # (L,)
    captions: list[str]  # after dropout
    text: Tensor | None  # (S, Lt, Dt) stored embeddings, or None
    text_mask: Tensor | None  # (S, Lt)
    flops: float  # forward FLOPs of the DiT on this sequence
    tokens: int  # real tokens


def make_micro_batch(batch, cfg: DiTTrainConfig, dit_config: DiTConfig, null_text: Tensor | None,
                     text_pad_to: int | None = None) -> MicroBatch:  # fmt: skip
    """Noise, timesteps, condition masks and caption dropout of one packed sequence.

    Drawn from a generator seeded by (seed, the sequence's global index), in a fixed order, so
    the result does not depend on the rank or on when it runs. The cache's stored caption
    embeddings are used when `null_text` (the empty caption's embedding) is given; otherwise the
    captions are left for the text encoder. text_pad_to: pad them with zeros to this length, all
    attended (Wan's captions), instead of to the longest with the padding masked.
    """
    from kinema.data import seeded

    g = seeded(cfg.seed, "sequence", batch.index)
    packed = batch.packed
    captions = drop_captions(batch.captions, cfg.caption_dropout, g)
    sizes = [t * h * w for t, h, w in packed.grids]
    t_sample = training_t(sizes, g, shift_scale=cfg.shift_scale, plain_prob=cfg.plain_shift_prob)  # (S,)
    cond = [draw_condition_mask(grid[0], g, cfg.condition_probs).float() for grid in packed.grids]
    t_tok, loss_mask = pin_conditions(packed.per_sample(t_sample), packed.per_frame(cond) > 0)  # (L,), (L,)
    loss_mask = (loss_mask & packed.valid).float()
    if batch.weights is not None:  # the data's own token weights (objects of Kinema World)
        loss_mask = loss_mask * batch.weights
    x0 = packed.tokens  # (1, L, D)
    noise = torch.randn(x0.shape, generator=g)
    text = text_mask = None
    if batch.text is not None and null_text is not None:  # stored embeddings (frozen encoder); a
        # dropped caption reads the empty caption's
        rows = [null_text if c == "" else e for c, e in zip(captions, batch.text, strict=True)]
        Lt = max([r.shape[0] for r in rows] + [text_pad_to or 0])
        text = torch.zeros(len(rows), Lt, rows[0].shape[1])
        text_mask = torch.full((len(rows), Lt), bool(text_pad_to), dtype=torch.bool)
        for i, r in enumerate(rows):
            text[i, : r.shape[0]] = r
            text_mask[i, : r.shape[0]] = True
        text_lens = [Lt if text_pad_to else r.shape[0] for r in rows]
    else:
        text_lens = [1 + len(c.split()) for c in captions]  # about one token a word
    flops = sum(n * dit_config.flops_per_token(n, lt) for n, lt in zip(sizes, text_lens, strict=True))
    return MicroBatch(
        x_t=interpolate(x0, noise, t_tok[None]),
        target=velocity(x0, noise),
        t=t_tok[None],
        loss_mask=loss_mask,
        positions=packed.positions,
        doc_ids=packed.doc_ids,
        captions=captions,
        text=text,
        text_mask=text_mask,
        flops=float(flops),
        tokens=sum(sizes),
    )


def lr_at(step: int, cfg: DiTTrainConfig) -> float:
    """Learning rate of step `step` (0-based): linear warmup, then constant or cosine decay."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.decay_steps <= cfg.warmup:
        return cfg.lr
    p = min(1.0, (step - cfg.warmup) / (cfg.decay_steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------- setting up a run


@dataclass
class Run:
    """Everything a run holds in memory."""

    cfg: DiTTrainConfig
    d: Dist
    root: Path
    model: FlowModel
    optimizer: torch.optim.Optimizer
    ema: EMA
    data: object  # ShardDataset | WorldStream
    frozen_text: object | None  # a frozen TextEncoder used during training, or None
    null_text: Tensor | None
    step: int = 0
    peak_flops: float | None = None  # of one GPU, for MFU
    extent: tuple[int, int, int] = (0, 0, 0)  # the largest token grid (t, h, w) trained on, this rank
    min_side: int = 0  # the shortest spatial side (tokens) of a sample trained on, this rank; 0: none yet

    def saw(self, positions: Tensor, doc_ids: Tensor) -> None:
        """Widen `extent` and `min_side` to the samples of a packed sequence (positions (L, 3),
        doc_ids (L,), -1 on padding)."""
        keep = doc_ids >= 0
        if not keep.any():
            return
        pos, doc = positions[keep], doc_ids[keep]
        grid = torch.zeros(int(doc.max()) + 1, 3, dtype=pos.dtype)
        grid = grid.scatter_reduce(0, doc[:, None].expand(-1, 3), pos, "amax") + 1  # (samples, 3)
        grid = grid[torch.unique(doc)]
        self.extent = tuple(max(a, int(b)) for a, b in zip(self.extent, grid.amax(0).tolist(), strict=True))
        short = int(grid[:, 1:].amin())
        self.min_side = short if self.min_side == 0 else min(self.min_side, short)


UNSEEN = 2**31  # a rank's min_side before its first step, in the reduction over ranks


def trained_config(config: DiTConfig, extent: Sequence[int], min_side: int) -> DiTConfig:
    """The DiT config an export writes: `trained_extent` widened to the spatial grid seen in
    training (h, w; time stays 0, never scaled: long videos are made in windows) and
    `trained_min_side` narrowed to the shortest side seen (0 before any step)."""
    old = config.trained_extent or (0, 0, 0)
    h, w = max(old[1], int(extent[1])), max(old[2], int(extent[2]))
    if not (h and w):
        return config
    least = [v for v in (config.trained_min_side, int(min_side)) if v > 0]
    return replace(config, trained_extent=(old[0], h, w), trained_min_side=min(least, default=0))


def _all_reduce(values: Sequence[int], d: Dist, op: str) -> tuple[int, ...]:
    """Whole numbers reduced over the ranks: op "max" or "min"."""
    if not d.distributed:
        return tuple(int(v) for v in values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.long, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN)
    return tuple(int(v) for v in t.tolist())


def _all_sum(value: float, d: Dist) -> float:
    if not d.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def _vocabulary(cfg: DiTTrainConfig, data, root: Path, d: Dist) -> WordTokenizer:
    """The builtin encoder's words: read from the run folder, or made from the data's captions."""
    from kinema.data import world_captions

    path = root / "vocab.json"
    if path.is_file():
        return WordTokenizer(json.loads(path.read_text())["words"])
    if cfg.init:  # fine-tuning: the exported encoder's words
        tok = BuiltinTextEncoder.load(init_dir(cfg.init)).tokenizer
    else:
        texts = world_captions() if cfg.data == "world" else data.captions
        tok = WordTokenizer.from_texts(texts)
    barrier(d)  # every rank has read the folder before rank 0 writes
    if d.is_main:
        write_json(path, {"words": tok.vocab[len(SPECIALS) :]})
    return tok


def _make_data(cfg: DiTTrainConfig, d: Dist, patch, root: Path):
    from kinema.data import ShardDataset, WorldStream

    if cfg.data == "world":
        from kinema.vae import load_vae

        vae = load_vae(cfg.vae, device=d.device)
        stream = WorldStream(
            vae, cfg.token_budget, seed=cfg.seed, rank=d.rank // cfg.sequence_parallel,
            world_size=d.world_size // cfg.sequence_parallel, patch=patch,
            window=min(cfg.pack_window, cfg.world_clips or cfg.world_epoch_size), pad=cfg.pad_to_budget,
            min_side=cfg.world_min_side, max_side=cfg.world_max_side, min_seconds=cfg.world_min_seconds,
            max_seconds=cfg.world_max_seconds, fps_choices=cfg.world_fps, max_frames=cfg.world_max_frames,
            image_prob=cfg.world_image_prob, epoch_size=cfg.world_epoch_size,
            clips=cfg.world_clips or None, cache=cfg.world_cache,
            cache_dir=root / "world_cache" if cfg.world_cache and cfg.world_clips else None,
            single_prob=cfg.world_single_prob, thing_weight=cfg.world_thing_weight, crop=cfg.world_crop,
        )  # fmt: skip
        if cfg.world_workers and cfg.world_clips and cfg.world_cache:
            if d.is_main:  # the other ranks read the files it writes
                stream.prefill(cfg.world_workers)
            barrier(d)
        return stream
    # the K ranks of a sequence-parallel group read the same sequences: data rank r // K of W / K
    K = cfg.sequence_parallel
    return ShardDataset(cfg.data, cfg.token_budget, seed=cfg.seed, rank=d.rank // K, world_size=d.world_size // K,
                        patch=patch, window=cfg.pack_window, pad=cfg.pad_to_budget)  # fmt: skip


def setup(root: str | os.PathLike, cfg: DiTTrainConfig, d: Dist | None = None) -> Run:
    """Build (or rebuild, to resume) a run: data, model, optimizer, EMA; load the latest checkpoint."""
    root = Path(root)
    d = d or init_distributed(None if cfg.device == "auto" else cfg.device)
    K = cfg.sequence_parallel
    if K > 1 and d.world_size % K:
        raise KinemaError(f"sequence_parallel = {K} must divide the number of ranks ({d.world_size}); "
                          "run it under torchrun --nproc_per_node N with N a multiple of it")  # fmt: skip
    if cfg.sequences_per_step % (d.world_size // K):
        raise KinemaError(f"sequences_per_step = {cfg.sequences_per_step} must be a multiple of the number of ranks "
                          f"({d.world_size}) divided by sequence_parallel ({K})")  # fmt: skip
    if d.is_main:
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / "config.json", cfg.to_dict())
    barrier(d)

    patch = PRESETS[cfg.model]().patch
    group = None
    if K > 1:
        from kinema.parallel import sequence_group

        group = sequence_group(K, d.device.type)
    data = _make_data(cfg, d, patch, root)
    frozen_text, null_text, tok = None, None, None
    if cfg.text_encoder == "builtin":
        tok = _vocabulary(cfg, data, root, d)
        text_dim = cfg.text_dim
    else:
        stored = getattr(data, "text_dim", None)
        if stored is not None:
            text_dim, null_text = stored, data.null_text()
        elif cfg.text_encoder == "stored":
            raise KinemaError(f"text_encoder stored reads caption embeddings from the latent cache, and {cfg.data} has "
                              "none; encode it with `kinema data encode --model WAN_DIR` (or --text-encoder hf:DIR)")
        else:
            from kinema.text import load_text_encoder

            frozen_text = load_text_encoder(cfg.text_encoder, device=d.device)
            text_dim = frozen_text.dim

    if cfg.wan_base is not None or cfg.lora_rank:
        model = _model_from_base(cfg, d, text_dim, tok, group)
    else:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        dit = DiT(cfg.dit_config(text_dim), attention=cfg.attention, checkpointing=cfg.checkpointing)
        text = None
        if cfg.text_encoder == "builtin":
            text = BuiltinTextEncoder(tok, TextEncoderConfig(dim=cfg.text_dim, depth=cfg.text_depth, heads=cfg.text_heads))
        model = FlowModel(dit, text).to(d.device)
        dit.sequence_parallel(group)
        if cfg.text_frozen:
            model.text.requires_grad_(False)  # out of the optimizer and of the EMA
        if d.distributed:
            shard(model, d, cfg.precision)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    run = Run(cfg, d, root, model, optimizer, EMA(model, cfg.ema_decay), data, frozen_text, null_text,
              peak_flops=peak_flops(d.device))  # fmt: skip

    ckpt = latest_checkpoint(root / "checkpoints")
    if ckpt is None and cfg.init and not (cfg.wan_base is not None or cfg.lora_rank):
        _init_from(run, cfg.init_reset)
    if ckpt is not None:
        state = train_state(model, optimizer, run.ema, trainable_only=bool(cfg.lora_rank))
        meta = load_checkpoint(ckpt, state, d)
        apply_train_state(model, optimizer, state, trainable_only=bool(cfg.lora_rank))
        data.load_state_dict({"position": meta["position"]})
        run.step = int(meta["step"])
        run.extent = tuple(meta.get("extent", (0, 0, 0)))  # checkpoints before them: what comes next
        run.min_side = int(meta.get("min_side", 0))
    return run


def _model_from_base(cfg: DiTTrainConfig, d: Dist, text_dim: int, tok: WordTokenizer | None,
                     group=None) -> FlowModel:  # fmt: skip
    """The model of a run that starts from `init` as its base (a Wan folder, or an export under
    LoRA): built on the meta device, adapters injected, sharded under torchrun, then filled one
    tensor at a time from the base's files (each rank keeps only its shards), the adapters drawn
    from the run's seed the same way on any number of ranks."""
    wan = cfg.wan_base
    if wan is not None:
        from kinema.models.hf import read_config
        from kinema.models.wan import wan_dit_config

        config = wan_dit_config(read_config(wan))
        if config.text_dim != text_dim:
            raise KinemaError(f"the Wan base reads {config.text_dim}-wide caption tokens; the latent cache {cfg.data} "
                              f"stores {text_dim}-wide ones: encode it with `kinema data encode --model` of this base")
    text_config = TextEncoderConfig(dim=cfg.text_dim, depth=cfg.text_depth, heads=cfg.text_heads)
    if wan is None:  # a Kinema export: its own shapes (model, hidden, depth, text_* do not apply)
        base = init_dir(cfg.init)
        config = DiTConfig.from_dict(json.loads((base / DIT_CONFIG).read_text())) if (base / DIT_CONFIG).is_file() \
            else cfg.dit_config(text_dim)  # fmt: skip
        if cfg.text_encoder == "builtin" and (base / BuiltinTextEncoder.VOCAB).is_file():
            text_config = TextEncoderConfig(**json.loads((base / BuiltinTextEncoder.VOCAB).read_text())["config"])
        if config.text_dim != (text_config.dim if cfg.text_encoder == "builtin" else text_dim):
            raise KinemaError(f"init: {base}'s DiT reads {config.text_dim}-wide caption tokens; this run's text "
                              "encoder gives another width")  # fmt: skip
    with torch.device("meta"):
        dit = DiT(config, attention=cfg.attention, checkpointing=cfg.checkpointing).sequence_parallel(group)
        text = None
        if cfg.text_encoder == "builtin":
            text = BuiltinTextEncoder(tok, text_config)
        model = FlowModel(dit, text)
        if cfg.lora_rank:
            try:
                from peft import LoraConfig, inject_adapter_in_model
            except ImportError:
                raise KinemaError("LoRA training needs PEFT: pip install 'kinema[finetune]'") from None
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.lora_targets))  # fmt: skip
            try:
                inject_adapter_in_model(lora, model.dit)
            except ValueError as e:
                raise KinemaError(f"lora_targets {list(cfg.lora_targets)}: {e}") from None
            model.requires_grad_(False)
            for name, p in model.named_parameters():
                p.requires_grad_(".lora_" in name)
            if d.device.type == "cuda" and cfg.precision == "bf16":  # the frozen base in half the memory
                for p in model.parameters():
                    if not p.requires_grad:
                        p.data = p.data.to(torch.bfloat16)
        elif cfg.text_frozen and text is not None:
            text.requires_grad_(False)
    if cfg.offload == "blocks":
        if d.distributed:
            raise KinemaError("offload=blocks runs on one process; under torchrun FSDP2 shards the base instead")
        model.to_empty(device="cpu")  # the base never wholly on the device
        fill_from_base(model, base_tensors(cfg, config), cfg.seed)
        from kinema.dit import offload_blocks

        offload_blocks(model.dit, d.device, frozen_only=True)
        if model.text is not None:
            model.text.to(d.device)
        return model
    if d.distributed:
        shard(model, d, cfg.precision)
    model.to_empty(device=d.device)
    fill_from_base(model, base_tensors(cfg, config), cfg.seed)
    return model


def init_dir(init: str) -> Path:
    """The folder `init` names: "world" is the shipped world model, anything else a path."""
    if init == "world":
        from kinema.pipeline import WORLD_DIR

        return WORLD_DIR
    return Path(init)


def base_tensors(cfg: DiTTrainConfig, config: DiTConfig):
    """(name in FlowModel, full tensor) of the base weights, read one at a time from init's files."""
    wan = cfg.wan_base
    if wan is not None:
        from kinema.models.hf import LazyState
        from kinema.models.wan import wan_dit_tensors

        for name, t in wan_dit_tensors(LazyState(wan), config):
            yield f"dit.{name}", t
        return
    from safetensors import safe_open

    d = init_dir(cfg.init)
    files = [("dit", d / DIT_WEIGHTS)] + ([("text", d / BuiltinTextEncoder.WEIGHTS)] if cfg.text_encoder == "builtin" else [])
    for prefix, path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    yield f"{prefix}.{key}", f.get_tensor(key)
        except OSError as e:
            raise KinemaError(f"init: cannot read the exported weights {path}: {e}") from None


@torch.no_grad()
def fill_from_base(model: nn.Module, tensors, seed: int) -> None:
    """Fill a model made with `to_empty` (plain or FSDP2-sharded): base weights from `tensors`,
    LoRA adapters as PEFT initialises them (A Kaiming-uniform from `seed`, B zero), in full and
    then sharded, so the result is the same on any number of ranks."""
    import math

    params = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters() if ".lora_" not in n}
    filled = set()
    for name, full in tensors:
        p = params.get(name)
        if p is None:
            raise KinemaError(f"init: the base has a tensor {name} this run's model lacks (model, hidden, depth?)")
        if tuple(full.shape) != tuple(p.shape):
            raise KinemaError(f"init: {name} is {tuple(full.shape)} in the base, {tuple(p.shape)} in this run's model")
        _assign(p, full)
        filled.add(name)
    missing = sorted(set(params) - filled)
    if missing:
        raise KinemaError(f"init: the base lacks {missing[:4]} ... of this run's model (model, hidden, depth, text_*?)")
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted((n, p) for n, p in model.named_parameters() if ".lora_" in n):
        full = torch.zeros(p.shape)
        if ".lora_A." in name:
            torch.nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=g)
        _assign(p, full)


def _assign(p: Tensor, full: Tensor) -> None:
    """Copy a full tensor into a parameter, or into this rank's shard of it (DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(p.dtype)
    if isinstance(p, DTensor):  # every rank read the same tensor: each keeps its own part, no messages
        part = distribute_tensor(full.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None)
        p.to_local().copy_(part.to_local())
    else:
        p.copy_(full)


def _init_from(run: Run, reset: Sequence[str]) -> None:
    """Load the export `init` names into a new run's model (and its EMA), but for the `reset` parts."""
    d = init_dir(run.cfg.init)
    model = run.model
    if run.d.distributed:
        raise KinemaError("init loads into one process; start the run on one process, then resume under torchrun")
    given = dict(base_tensors(run.cfg, model.dit.config))
    own = model.state_dict()
    hits = {p: [k for k in own if f".{p}." in f".{k}."] for p in reset}
    missing = [p for p, ks in hits.items() if not ks]
    if missing:
        raise KinemaError(f"init_reset: no module named {missing}")
    fresh = {k for ks in hits.values() for k in ks}  # these need not be in the export (new parts)
    wrong = sorted(k for k in own if k not in fresh and (k not in given or given[k].shape != own[k].shape))
    if wrong:
        raise KinemaError(f"init: {d} does not fit this run's model (model, hidden, depth, text_*): {wrong[:3]} ...")
    model.load_state_dict({k: (own[k] if k in fresh else given[k].to(own[k].dtype)) for k in own})
    run.ema = EMA(model, run.cfg.ema_decay)


def save(run: Run) -> Path:
    state = train_state(run.model, run.optimizer, run.ema, trainable_only=bool(run.cfg.lora_rank))
    meta = {"position": run.data.position, "config": run.cfg.to_dict(), "extent": list(run.extent),
            "min_side": run.min_side}
    return save_checkpoint(run.root / "checkpoints", run.step, state, meta, run.d, keep=run.cfg.keep_checkpoints)


# ---------------------------------------------------------------- training


def train_step(run: Run) -> dict[str, float]:
    """One optimizer step over the next global batch; returns its metrics (the same on every rank)."""
    cfg, d, model = run.cfg, run.d, run.model
    dev = d.device
    start, cpu_start = time.perf_counter(), time.process_time()
    lr = lr_at(run.step, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    dit_cfg = model.dit.config
    pad_to = getattr(run.data, "text_pad_to", None)
    micro = [make_micro_batch(b, cfg, dit_cfg, run.null_text, pad_to) for b in run.data.next_batches(cfg.sequences_per_step)]
    K = cfg.sequence_parallel  # the K ranks of a sequence group hold the same sequences: count them once
    count = _all_sum(float(sum(float(m.loss_mask.sum()) for m in micro)), d) / K  # loss tokens (weighted), all ranks
    # FSDP averages over all ranks: undo it to get a global mean (a sequence group's ranks each hold a
    # part of its sequences' gradient, which the average over all ranks then adds up)
    scale = d.world_size / max(count, 1.0)
    forward = autocast(cfg.precision, dev)
    loss_sum = torch.zeros((), device=dev)
    for m in micro:
        run.saw(m.positions, m.doc_ids)
        captions, text, text_mask = m.captions, m.text, m.text_mask
        if text is not None:
            captions, text, text_mask = None, text.to(dev), text_mask.to(dev)
        elif run.frozen_text is not None:
            with torch.no_grad():
                text, text_mask = run.frozen_text(captions)
            captions = None
        with forward:
            v = model(m.x_t.to(dev), m.positions.to(dev), m.t.to(dev), m.doc_ids.to(dev), captions, text, text_mask)
        err = (v.float() - m.target.to(dev)).pow(2).mean(dim=-1)[0]  # (L,) per-token squared error
        w = m.loss_mask.to(dev)
        part = torch.where(w > 0, err * w, torch.zeros_like(err)).sum()
        (part * scale).backward()
        loss_sum += part.detach()
    trained = [p for group in run.optimizer.param_groups for p in group["params"]]  # not a frozen encoder
    norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.ema.update(model, run.step)
    run.step += 1
    loss = _all_sum(float(loss_sum), d) / K / max(count, 1.0)
    tokens = _all_sum(float(sum(m.tokens for m in micro)), d) / K
    flops = _all_sum(3.0 * sum(m.flops for m in micro), d) / K  # forward + backward
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    metrics = dict(loss=loss, grad_norm=float(norm), lr=lr, tokens=tokens, tokens_per_s=tokens / seconds,
                   step_s=seconds, cpu_s=time.process_time() - cpu_start, flops=flops)  # fmt: skip
    if run.peak_flops:
        metrics["mfu"] = flops / seconds / (run.peak_flops * d.world_size)
    return metrics


def train_dit(root: str | os.PathLike, cfg: DiTTrainConfig, export: bool = True, progress: bool = True) -> list[dict]:
    """Train (or resume) the run in `root` up to cfg.steps; export the EMA weights at the end.

    Returns the metrics of the steps this call ran (every rank gets them).
    """
    run = setup(root, cfg)
    d = run.d
    history = []
    logger = Logger(run.root, d, total=cfg.steps, initial=run.step, desc="train dit") if progress else None
    metrics_file = open(run.root / "metrics.jsonl", "a") if d.is_main else None  # noqa: SIM115
    try:
        while run.step < cfg.steps:
            metrics = train_step(run)
            history.append({"step": run.step, **metrics})
            if metrics_file is not None:
                metrics_file.write(json.dumps({"step": run.step, **metrics}) + "\n")
                metrics_file.flush()
            if logger is not None:
                logger.log(run.step, metrics)
            if not math.isfinite(metrics["loss"]):
                raise KinemaError(f"the loss is {metrics['loss']} at step {run.step}; lower lr or check the data")
            if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
                save(run)
        if export:
            export_weights(run, run.root / "export")
    finally:
        if logger is not None:
            logger.close()
        if metrics_file is not None:
            metrics_file.close()
        shutdown(d)
    return history


# ---------------------------------------------------------------- inference weights


DIT_WEIGHTS, DIT_CONFIG, PIPELINE = "dit.safetensors", "dit.json", "pipeline.json"


def export_weights(run: Run, out: str | os.PathLike) -> Path:
    """Write the EMA weights for inference: dit.safetensors + dit.json (DiTConfig), the builtin text
    encoder's files, and pipeline.json (which VAE and text encoder go with them).

    Under FSDP the full state dict is gathered to rank 0's CPU, which writes the files.
    """
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model, d = run.model, run.d
    out = Path(out)
    extent = _all_reduce(run.extent, d, "max")
    (min_side,) = _all_reduce([run.min_side or UNSEEN], d, "min")
    live = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    run.ema.copy_to(model)
    lora = bool(run.cfg.lora_rank)
    # without FSDP these tensors share storage with the parameters: write them before restoring
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=lora))  # fmt: skip
    if d.is_main and lora:
        _export_lora(run, full, out)
    elif d.is_main and run.cfg.wan_base is not None:
        from kinema.lora import wan_state_from_kinema

        dit_sd = {k[len("dit.") :]: v.float().contiguous() for k, v in full.items() if k.startswith("dit.")}
        write_wan_folder(run.cfg.wan_base, out, wan_state_from_kinema(dit_sd, model.dit.config))
    elif d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dit_sd = {k[len("dit.") :]: v.float().contiguous() for k, v in full.items() if k.startswith("dit.")}
        meta = {"format": "pt", "model": "kinema.dit", "step": str(run.step), "weights": "ema"}
        tmp = out / f".{DIT_WEIGHTS}.tmp"
        save_file(dit_sd, str(tmp), metadata=meta)
        os.replace(tmp, out / DIT_WEIGHTS)
        write_json(out / DIT_CONFIG, trained_config(model.dit.config, extent, min_side % UNSEEN).to_dict())
        text_spec = run.cfg.text_encoder
        if model.text is not None:
            with torch.device("meta"):  # no allocation, no draw from the RNG
                enc = BuiltinTextEncoder(model.text.tokenizer, model.text.config)
            text_sd = {k[len("text.") :]: v.float() for k, v in full.items() if k.startswith("text.")}
            enc.load_state_dict(text_sd, assign=True)
            enc.save(out)
            text_spec = "builtin:."
        vae = run.cfg.vae if run.cfg.data == "world" else run.data.settings.get("vae", "")
        spec = {"dit": DIT_WEIGHTS, "dit_config": DIT_CONFIG, "text_encoder": text_spec, "vae": vae, "step": run.step}
        if run.cfg.shift_scale != 1.0:  # the sampler's schedule must match the training times
            spec["defaults"] = {"shift_scale": run.cfg.shift_scale}
        write_json(out / PIPELINE, spec)
    barrier(d)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in live:
                p.copy_(live[n])
    return out


LORA_FILE = "lora.safetensors"


def _export_lora(run: Run, full: dict[str, Tensor], out: Path) -> Path:
    """export/lora.safetensors: the adapters (EMA), in diffusers' layout on a Wan base."""
    from kinema.lora import save_lora

    cfg = run.cfg
    peft_state = {k[len("dit.") :].replace(".default.", "."): v.float().contiguous()
                  for k, v in full.items() if k.startswith("dit.") and ".lora_" in k}  # fmt: skip
    meta = {"base": str(init_dir(cfg.init).resolve()), "rank": cfg.lora_rank, "alpha": cfg.lora_alpha or cfg.lora_rank,
            "targets": list(cfg.lora_targets), "step": run.step}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    return save_lora(out / LORA_FILE, peft_state, cfg.lora_scale, wan=cfg.wan_base is not None, meta=meta)


def write_wan_folder(transformer: Path, out: str | os.PathLike, state: dict[str, Tensor]) -> Path:
    """A diffusers Wan folder at `out` whose transformer holds `state` (diffusers names): the
    other parts of the base `transformer` belongs to are hard-linked (copied where the file system
    cannot link); a base that is a transformer folder alone gives a transformer folder."""
    import shutil

    from safetensors.torch import save_file

    from kinema.models.wan import is_wan_folder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    whole = is_wan_folder(transformer.parent)
    if whole:
        for item in transformer.parent.iterdir():
            if item.name == transformer.name:
                continue
            if item.is_dir():
                shutil.copytree(item, out / item.name, copy_function=link_or_copy, dirs_exist_ok=True)
            else:
                shutil.copy2(item, out / item.name)
    target = out / "transformer" if whole else out
    target.mkdir(exist_ok=True)
    shutil.copy2(transformer / "config.json", target / "config.json")
    tmp = target / ".diffusion_pytorch_model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, target / "diffusion_pytorch_model.safetensors")
    return out


def lora_meta(path: str | os.PathLike) -> dict:
    """What Kinema wrote about a LoRA file it exported: {"base", "rank", "alpha", "targets", "step"}."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("kinema_lora", "{}"))
    except (OSError, ValueError) as e:
        raise KinemaError(f"{path} is not a LoRA safetensors file: {e}") from None
    if not meta.get("base"):
        raise KinemaError(f"{path} does not say which model it adapts (not exported by `kinema train dit`)")
    return meta


def pack_lora(lora: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Merge an exported LoRA into its base and write a whole model folder: a diffusers Wan folder
    for a Wan base (its other parts hard-linked), a Kinema model folder otherwise."""
    from kinema.lora import merge_lora

    base = Path(lora_meta(lora)["base"])
    if not base.exists():
        raise KinemaError(f"the base model of {lora} is gone: {base}")
    from kinema.models.wan import load_wan_dit, wan_transformer_dir

    transformer = wan_transformer_dir(base)
    if transformer is not None:
        from kinema.lora import wan_state_from_kinema

        dit = load_wan_dit(transformer)
        merge_lora(dit, lora, 1.0, wan=True)
        state = {k: v.to(dtype) for k, v in wan_state_from_kinema(dit.state_dict(), dit.config).items()}
        return write_wan_folder(transformer, out, state)
    from safetensors.torch import save_file

    from kinema.pipeline import pack_model

    dst = pack_model(base, out, dtype=dtype)
    dit, _ = load_export(dst)
    merge_lora(dit, lora, 1.0, wan=False)
    state = {k: v.to(dtype).contiguous() for k, v in dit.state_dict().items()}
    save_file(state, str(dst / DIT_WEIGHTS), metadata={"format": "pt", "model": "kinema.dit"})
    return dst


def export_dit(root: str | os.PathLike, out: str | os.PathLike | None = None, cfg: DiTTrainConfig | None = None) -> Path:
    """Export the latest checkpoint of a run (its EMA weights) without training."""
    root = Path(root)
    if cfg is None:
        if not (root / "config.json").is_file():
            raise KinemaError(f"{root} is not a DiT run folder (no config.json)")
        cfg = DiTTrainConfig.from_dict(json.loads((root / "config.json").read_text()))
    if latest_checkpoint(root / "checkpoints") is None:
        raise KinemaError(f"{root} has no checkpoint to export yet")
    run = setup(root, cfg)
    try:
        return export_weights(run, out or root / "export")
    finally:
        shutdown(run.d)


def load_export(directory: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[DiT, BuiltinTextEncoder | None]:
    """The DiT (and builtin text encoder, if exported with it) from an export folder, in eval mode."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / DIT_WEIGHTS).is_file() or not (d / DIT_CONFIG).is_file():
        raise KinemaError(f"no exported DiT in {d}: expected {DIT_WEIGHTS} and {DIT_CONFIG}")
    dit = DiT(DiTConfig.from_dict(json.loads((d / DIT_CONFIG).read_text())))
    try:
        dit.load_state_dict(load_file(str(d / DIT_WEIGHTS)))
    except RuntimeError as e:
        raise KinemaError(f"{d / DIT_WEIGHTS} does not match {d / DIT_CONFIG}: {e}") from None
    text = BuiltinTextEncoder.load(d) if (d / BuiltinTextEncoder.VOCAB).is_file() else None
    dit = dit.to(device).eval()
    return dit, (text.to(device).eval() if text is not None else None)
