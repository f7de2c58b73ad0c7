"""umT5 encoder, the text encoder of Wan 2.1: captions -> (B, 512, 4096) for the DiT's cross-attention.

    encoder = WanTextEncoder("Wan2.1-T2V-1.3B-Diffusers/text_encoder", "Wan2.1-T2V-1.3B-Diffusers/tokenizer")
    tokens, mask = encoder(["a red ball bounces"])   # (B, 512, 4096) float, (B, 512) bool, all True

The encoder is transformers' UMT5EncoderModel rewritten small: T5 blocks (pre-norm, RMS norm without
mean subtraction or bias, attention without 1/sqrt(d) scaling, gated-GELU feed-forward) where EVERY
layer has its own relative position bias table (T5 has one, in the first layer, shared by all).
Weights come from a transformers `save_pretrained` folder through `load_umt5`, whose heart is the
name table `hf_names`; transformers itself is only a test oracle.

Wan's prompt embeddings (diffusers `WanPipeline._get_t5_prompt_embeds`): tokenize to exactly
max_length (512) tokens, run the encoder with the padding mask, keep each caption's first seq_len
vectors and set the rest to ZERO. Wan's DiT then cross-attends to all 512 positions without a mask,
zeros included, so `WanTextEncoder` returns a mask that is all True: a DiT that honoured the padding
mask would compute something other than the reference it was trained as.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from kinema.errors import KinemaError
from kinema.models.hf import assign_weights, load_state, read_config

try:  # WanPipeline runs ftfy.fix_text exactly when the ftfy package is installed; so do we
    import ftfy
except ImportError:
    ftfy = None


# ---------------------------------------------------------------- config

_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf) GELU, transformers' "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # what "gated-gelu" means in transformers
    "silu": F.silu,
}


@dataclass(frozen=True)
class UMT5Config:
    """The fields of a transformers UMT5 config.json that the encoder uses (defaults: transformers')."""

    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64  # per-head width; heads * d_kv need not equal d_model
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # "gated-ACT" or "ACT", ACT in relu, gelu, silu

    def __post_init__(self):
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or self.activation not in _ACTIVATIONS:
            raise KinemaError(
                f"feed_forward_proj {self.feed_forward_proj!r} is not supported: use 'gated-gelu' (umT5), "
                f"'relu', or 'gated-'/plain with one of {', '.join(a for a in _ACTIVATIONS if a != 'gelu_new')}"
            )

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """transformers' dense_act_fn: the last part, except that "gated-gelu" means the tanh GELU."""
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, doc: dict) -> UMT5Config:
        """From a transformers config.json object; other model types (t5, mt5) are refused."""
        kind = doc.get("model_type", "umt5")
        if kind != "umt5":
            raise KinemaError(
                f"model_type {kind!r} is not umt5: T5 and mT5 share one position bias table, "
                "umT5 has one a layer; load T5 models with the hf: text encoder"
            )
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @classmethod
    def tiny(cls) -> UMT5Config:
        return cls(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)

    @classmethod
    def xxl(cls) -> UMT5Config:
        """google/umt5-xxl, the text encoder of every Wan 2.1 model."""
        return cls(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)


# ---------------------------------------------------------------- layers


def relative_position_bucket(relative_position: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bidirectional buckets for key - query offsets: half the buckets for keys after the query;
    in each half, exact buckets for |offset| < num_buckets // 4, then log-spaced up to max_distance."""
    num_buckets //= 2
    buckets = (relative_position > 0).long() * num_buckets
    distance = relative_position.abs()
    max_exact = num_buckets // 2
    # same operation order as transformers, so a distance on a bucket edge lands in the same bucket;
    # the clamp only keeps log(0) out of the branch that torch.where discards
    far = distance.clamp(min=max_exact).float()
    log_ratio = torch.log(far / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    far_bucket = (max_exact + log_ratio.long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, far_bucket)


class RMSNorm(nn.Module):
    """T5 layer norm: x / rms(x) * weight, no mean subtraction, no bias; the mean square in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(self.weight.dtype)


class Attention(nn.Module):
    """Self-attention with this layer's own relative position bias and no 1/sqrt(d) scaling."""

    def __init__(self, c: UMT5Config):
        super().__init__()
        self.heads = c.num_heads
        inner = c.num_heads * c.d_kv
        self.q = nn.Linear(c.d_model, inner, bias=False)
        self.k = nn.Linear(c.d_model, inner, bias=False)
        self.v = nn.Linear(c.d_model, inner, bias=False)
        self.o = nn.Linear(inner, c.d_model, bias=False)
        self.rel_bias = nn.Embedding(c.relative_attention_num_buckets, c.num_heads)

    def forward(self, x: Tensor, buckets: Tensor, keep: Tensor | None) -> Tensor:
        # x: (B, L, D); buckets: (L, L) long; keep: (B, L) bool, True on keys that may be attended, or None
        q, k, v = (rearrange(f(x), "b l (h d) -> b h l d", h=self.heads) for f in (self.q, self.k, self.v))
        bias = rearrange(self.rel_bias(buckets), "q k h -> 1 h q k")  # (1, H, L, L)
        if keep is not None:
            # as transformers' SDPA path: the bias where a key is kept, the dtype's minimum elsewhere
            bias = torch.where(keep[:, None, None, :], bias, torch.finfo(bias.dtype).min)  # (B, H, L, L)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)  # (B, H, L, d_kv)
        return self.o(rearrange(a, "b h l d -> b l (h d)"))


class FeedForward(nn.Module):
    """down(act(gate(x)) * up(x)) when gated (umT5's gated GELU), else down(act(up(x)))."""

    def __init__(self, c: UMT5Config):
        super().__init__()
        self.act = _ACTIVATIONS[c.activation]
        self.gate = nn.Linear(c.d_model, c.d_ff, bias=False) if c.gated else None
        self.up = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.down = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))  # (B, L, F)
        return self.down(h.to(self.down.weight.dtype))


class Block(nn.Module):
    def __init__(self, c: UMT5Config):
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.ffn = FeedForward(c)

    def forward(self, x: Tensor, buckets: Tensor, keep: Tensor | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), buckets, keep)  # (B, L, D)
        return x + self.ffn(self.ffn_norm(x))


class UMT5Encoder(nn.Module):
    """umT5 encoder stack: ids (B, L) long, mask (B, L) bool or None -> hidden states (B, L, d_model).

    The mask only hides padded KEYS; padded positions still get outputs (as in transformers)."""

    def __init__(self, config: UMT5Config):
        super().__init__()
        self.config = config
        self.dim = config.d_model
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        c = self.config
        L = ids.shape[1]
        pos = torch.arange(L, device=ids.device)
        offsets = pos[None, :] - pos[:, None]  # (L, L): key position - query position
        buckets = relative_position_bucket(offsets, c.relative_attention_num_buckets, c.relative_attention_max_distance)
        keep = None if mask is None else mask.to(device=ids.device, dtype=torch.bool)  # (B, L)
        x = self.embed(ids)  # (B, L, D)
        for block in self.blocks:
            x = block(x, buckets, keep)
        return self.norm(x)  # (B, L, D)


# ---------------------------------------------------------------- weights


def hf_names(config: UMT5Config) -> dict[str, str]:
    """transformers' UMT5EncoderModel parameter names -> UMT5Encoder's.

    transformers ties encoder.embed_tokens.weight to shared.weight; a checkpoint may hold either
    or both, see `load_umt5`."""
    names = {"shared.weight": "embed.weight", "encoder.final_layer_norm.weight": "norm.weight"}
    ffn = {"wi_0": "gate", "wi_1": "up", "wo": "down"} if config.gated else {"wi": "up", "wo": "down"}
    for i in range(config.num_layers):
        theirs, ours = f"encoder.block.{i}.layer.", f"blocks.{i}."
        names[theirs + "0.layer_norm.weight"] = ours + "attn_norm.weight"
        for p in "qkvo":
            names[theirs + f"0.SelfAttention.{p}.weight"] = ours + f"attn.{p}.weight"
        names[theirs + "0.SelfAttention.relative_attention_bias.weight"] = ours + "attn.rel_bias.weight"
        names[theirs + "1.layer_norm.weight"] = ours + "ffn_norm.weight"
        for a, b in ffn.items():
            names[theirs + f"1.DenseReluDense.{a}.weight"] = ours + f"ffn.{b}.weight"
    return names


def load_umt5(folder: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype | None = None) -> UMT5Encoder:  # fmt: skip
    """The encoder of a transformers UMT5 folder (config.json + safetensors, sharded or not), in eval mode.

    A full encoder-decoder checkpoint also loads: its decoder.* and lm_head.* tensors are skipped."""
    config = UMT5Config.from_hf(read_config(folder))
    state = load_state(folder, device=device, dtype=dtype)
    embed_alias = state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    if "shared.weight" not in state and embed_alias is not None:
        state["shared.weight"] = embed_alias
    names = hf_names(config)
    unexpected = sorted(k for k in state if k not in names and not k.startswith(("decoder.", "lm_head.")))
    missing = sorted(k for k in names if k not in state)
    if unexpected or missing:
        raise KinemaError(
            f"{folder} does not hold the umT5 encoder its config.json describes: "
            f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        )
    with torch.device("meta"):
        model = UMT5Encoder(config)
    state = {names[k]: state[k] for k in names}
    model = assign_weights(model, state, f"the weights in {folder} do not match its config.json")
    return model.eval().requires_grad_(False)


def _few(names: Sequence[str], n: int = 4) -> str:
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


# ---------------------------------------------------------------- Wan's prompts

# Unicode White_Space: what `\s` matches in the `regex` package that WanPipeline uses (the standard
# re's \s also matches the separators U+001C..U+001F)
_WHITESPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def clean_prompt(text: str) -> str:
    """WanPipeline's prompt_clean: ftfy.fix_text if ftfy is installed, html.unescape twice, then
    every run of whitespace to one space, stripped."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def load_wan_tokenizer(folder: str | os.PathLike, max_length: int = 512):
    """tokenizers.Tokenizer from FOLDER/tokenizer.json that pads and truncates every caption to
    exactly max_length ids, like transformers' tokenizer(..., padding="max_length", truncation=True)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise KinemaError("the Wan text encoder needs the `tokenizers` package: pip install tokenizers") from e
    d = Path(folder)
    path = d / "tokenizer.json"
    if not path.is_file():
        raise KinemaError(
            f"{path} is missing: the Wan text encoder needs the fast-tokenizer file tokenizer.json "
            "(the tokenizer/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers has it; a folder with only "
            "spiece.model can be converted once with transformers: "
            "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise KinemaError(f"cannot read the tokenizer {path}: {e}") from None
    settings = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the second wins, as in transformers
        if (d / name).is_file():
            settings.update(read_config(d, name))
    pad = _token_name(settings.get("pad_token")) or "<pad>"
    pad_id = tok.token_to_id(pad)
    if pad_id is None:
        raise KinemaError(f"the pad token {pad!r} of {d} is not in its tokenizer.json vocabulary")
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first", direction=settings.get("truncation_side", "right"))
    tok.enable_padding(
        direction=settings.get("padding_side", "right"), pad_id=pad_id, pad_token=pad, length=max_length
    )
    return tok


class WanTextEncoder:
    """Wan 2.1's prompt embeddings: captions -> (tokens (B, max_length, d_model), mask (B, max_length)).

    tokens equal diffusers' WanPipeline prompt embeddings: the umT5 outputs of each caption's
    tokens (its </s> included), then zeros up to max_length. mask is all True ON PURPOSE: Wan's DiT
    attends to the zero padding too, and reproducing the reference means letting ours do the same.
    """

    def __init__(
        self,
        text_encoder_dir: str | os.PathLike,
        tokenizer_dir: str | os.PathLike,
        max_length: int = 512,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ):
        self.tokenizer = load_wan_tokenizer(tokenizer_dir, max_length)
        self.encoder = load_umt5(text_encoder_dir, device=device, dtype=dtype)
        self.dim = self.encoder.config.d_model
        self.max_length = max_length
        # a latent cache stores each caption's real tokens only; training pads them back with
        # zeros to this length, all attended, as Wan reads its captions (`kinema.data.cache`)
        self.pad_to = max_length

    def to(self, device: str | torch.device) -> WanTextEncoder:
        """Move the encoder's weights (e.g. off the GPU once the captions are encoded)."""
        self.encoder.to(device)
        return self

    def __call__(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        if isinstance(captions, str):
            raise KinemaError("the text encoder takes a list of captions, not one string")
        tokens, mask = self._encode(list(captions))
        # computed under inference_mode, cloned outside it: plain tensors a training step can save for backward
        return tokens.clone(), mask.clone()

    @torch.inference_mode()
    def _encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        rows = self.tokenizer.encode_batch([clean_prompt(c) for c in captions], add_special_tokens=True)
        device = self.encoder.embed.weight.device
        ids = torch.tensor([r.ids for r in rows], dtype=torch.long, device=device)  # (B, L)
        real = torch.tensor([r.attention_mask for r in rows], device=device).bool()  # (B, L)
        x = self.encoder(ids, real)  # (B, L, D)
        # as the reference: keep each row's FIRST seq_len vectors (seq_len = its number of real tokens)
        seq_len = real.sum(dim=1)  # (B,)
        first = torch.arange(ids.shape[1], device=device)[None, :] < seq_len[:, None]  # (B, L)
        return x.masked_fill(~first[..., None], 0.0), torch.ones_like(real)
