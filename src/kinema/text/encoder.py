"""Text encoders: captions -> (tokens (B, L, D), mask (B, L)) for the DiT's cross-attention.

Two backends behind one protocol, chosen by `load_text_encoder(spec)`:
  builtin:DIR  a word-level tokenizer and a small transformer, trained jointly with the DiT
               (the shipped Kinema World model uses it); saved as safetensors + JSON vocabulary
  hf:DIR       a local Hugging Face model (T5, CLIP, ...), frozen; never touches the network

Every caption, the empty one included, encodes to at least one valid token (the builtin encoder
starts each caption with <bos>; Hugging Face tokenizers add </s> or their own specials), so
that cross-attention always has a key to attend to. The empty caption "" is the unconditional
input of classifier-free guidance (`drop_captions`).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kinema.errors import KinemaError


@runtime_checkable
class TextEncoder(Protocol):
    """Captions -> (tokens (B, L, dim) float, mask (B, L) bool, True on real tokens)."""

    dim: int

    def __call__(self, captions: list[str]) -> tuple[Tensor, Tensor]: ...


def drop_captions(captions: Sequence[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each caption by "" with probability p (classifier-free guidance training)."""
    drop = torch.rand(len(captions), generator=generator) < p
    return ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]


# ---------------------------------------------------------------- word tokenizer

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def split_words(text: str) -> list[str]:
    """Lowercase, then words (runs of letters and digits) and single punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary; ids 0, 1, 2 are <pad>, <unk>, <bos>."""

    def __init__(self, words: Iterable[str]):
        vocab = list(SPECIALS)
        seen = set(vocab)
        for w in words:
            w = w.lower()
            if w not in seen:
                seen.add(w)
                vocab.append(w)
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> WordTokenizer:
        """Vocabulary of the words of `texts` seen at least min_count times, most frequent first."""
        counts = Counter(w for t in texts for w in split_words(t))
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(words)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """<bos> then one id a word; unknown words -> <unk>; truncated to max_length ids."""
        ids = [self.bos_id] + [self.index.get(w, self.unk_id) for w in split_words(text)]
        return ids[:max_length] if max_length is not None else ids

    def batch(self, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
        """(ids (B, L) long, mask (B, L) bool), padded to the longest caption (at most max_length)."""
        rows = [self.encode(t, max_length) for t in texts]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != self.pad_id


# ---------------------------------------------------------------- builtin encoder


@dataclass(frozen=True)
class TextEncoderConfig:
    dim: int = 256
    depth: int = 4
    heads: int = 4
    max_length: int = 128
    mlp_ratio: float = 4.0


class _Layer(nn.Module):
    """Pre-norm transformer encoder layer with a key padding mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x: (B, L, D); mask: (B, L) bool
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, H, L, d)
        x = x + self.proj(rearrange(a, "b h l d -> b l (h d)"))
        return x + self.mlp(self.norm2(x))


class BuiltinTextEncoder(nn.Module):
    """Word tokenizer + small transformer encoder, trained with the DiT (an ordinary nn.Module).

    encoder(captions) -> (tokens (B, L, dim), mask (B, L) bool); padding positions are zeros.
    """

    def __init__(self, tokenizer: WordTokenizer, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = config or TextEncoderConfig()
        c = self.config
        if c.dim % c.heads:
            raise KinemaError(f"text encoder dim {c.dim} is not divisible by heads {c.heads}")
        self.tokenizer = tokenizer
        self.dim = c.dim
        self.embed = nn.Embedding(len(tokenizer), c.dim)
        self.pos = nn.Parameter(torch.zeros(c.max_length, c.dim))
        self.layers = nn.ModuleList(_Layer(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    @classmethod
    def from_texts(cls, texts: Iterable[str], config: TextEncoderConfig | None = None, **vocab_kw) -> BuiltinTextEncoder:
        """A fresh encoder whose vocabulary is the words of `texts` (see WordTokenizer.from_texts)."""
        return cls(WordTokenizer.from_texts(texts, **vocab_kw), config)

    def forward(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        if isinstance(captions, str):
            raise KinemaError("the text encoder takes a list of captions, not one string")
        ids, mask = self.tokenizer.batch(captions, self.config.max_length)
        device = self.embed.weight.device
        ids, mask = ids.to(device), mask.to(device)  # (B, L)
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x) * mask[..., None]  # (B, L, D), zeros on padding
        return x, mask

    # ------------------------------------------------------------ files

    WEIGHTS = "text_encoder.safetensors"
    VOCAB = "text_encoder.json"

    def save(self, directory: str | os.PathLike) -> None:
        """Write DIR/text_encoder.safetensors and DIR/text_encoder.json (config + vocabulary)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"config": asdict(self.config), "vocab": self.tokenizer.vocab}
        tmp_w, tmp_j = d / (self.WEIGHTS + ".tmp"), d / (self.VOCAB + ".tmp")
        save_file(state, str(tmp_w))
        tmp_j.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_w, d / self.WEIGHTS)
        os.replace(tmp_j, d / self.VOCAB)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: torch.device | str | None = None) -> BuiltinTextEncoder:
        d = Path(directory)
        w, j = d / cls.WEIGHTS, d / cls.VOCAB
        if not (w.is_file() and j.is_file()):
            raise KinemaError(
                f"no builtin text encoder in {d}: expected {cls.WEIGHTS} and {cls.VOCAB} (written by BuiltinTextEncoder.save)"
            )
        try:
            meta = json.loads(j.read_text())
            known = {f.name for f in fields(TextEncoderConfig)}
            config = TextEncoderConfig(**{k: v for k, v in meta["config"].items() if k in known})
            vocab = meta["vocab"]
        except (ValueError, KeyError, TypeError) as e:
            raise KinemaError(f"{j} is not a valid text encoder vocabulary file: {e}") from e
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise KinemaError(f"{j}: the vocabulary must start with {SPECIALS}")
        model = cls(WordTokenizer(vocab[len(SPECIALS) :]), config)
        try:
            model.load_state_dict(load_file(str(w)))
        except RuntimeError as e:
            raise KinemaError(f"{w} does not match the config and vocabulary in {j}: {e}") from e
        return model.to(device) if device is not None else model


# ---------------------------------------------------------------- Hugging Face encoder


class HFTextEncoder:
    """A local Hugging Face text model (T5 encoder, CLIP text model, any AutoModel), frozen.

    Loaded with local_files_only=True: the path must hold the tokenizer and the weights.
    `transformers` is imported only here; it is not a dependency of Kinema.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_length: int = 256,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        p = Path(path).expanduser()
        if not p.is_dir():
            raise KinemaError(
                f"Hugging Face text encoder path {str(p)!r} is not a directory; give a local folder "
                "with the model's config, tokenizer and weights (e.g. from `huggingface-cli download`)"
            )
        try:
            import transformers
        except ImportError as e:
            raise KinemaError(
                "the hf: text encoder needs the `transformers` package: pip install transformers sentencepiece"
            ) from e
        try:
            config = transformers.AutoConfig.from_pretrained(p, local_files_only=True)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(p, local_files_only=True)
            kind = getattr(config, "model_type", "")
            if kind in ("t5", "mt5", "umt5"):
                cls = transformers.T5EncoderModel if kind == "t5" else transformers.AutoModel
            elif kind == "clip":
                cls = transformers.CLIPTextModel
            else:
                cls = transformers.AutoModel
            kw = {} if dtype is None else {"torch_dtype": dtype}
            model = cls.from_pretrained(p, local_files_only=True, **kw)
        except (OSError, ValueError, KeyError) as e:
            raise KinemaError(f"cannot load a Hugging Face text model from {str(p)!r}: {e}") from e
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        model = model.eval().requires_grad_(False)
        self.model = model.to(device) if device is not None else model
        cfg = model.config
        self.dim = int(getattr(cfg, "d_model", None) or getattr(cfg, "hidden_size"))
        self.max_length = max_length

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(
            list(captions), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()  # (B, L)
        out = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        return out * mask[..., None], mask


# ---------------------------------------------------------------- choosing a backend


def load_text_encoder(spec: str, device: torch.device | str | None = None) -> TextEncoder:
    """A text encoder from a spec string:

      builtin:DIR  BuiltinTextEncoder.load(DIR)
      hf:DIR       HFTextEncoder(DIR), a local Hugging Face model
      DIR          a directory holding text_encoder.json is taken as builtin:DIR

    A fresh builtin encoder (for training) is made from captions: BuiltinTextEncoder.from_texts.
    """
    if spec.startswith("hf:"):
        return HFTextEncoder(spec[3:], device=device)
    if spec.startswith("builtin:"):
        return BuiltinTextEncoder.load(spec[len("builtin:") :], device=device)
    if (Path(spec) / BuiltinTextEncoder.VOCAB).is_file():
        return BuiltinTextEncoder.load(spec, device=device)
    raise KinemaError(
        f"unknown text encoder {spec!r}: use builtin:DIR (a saved builtin encoder) or hf:DIR "
        "(a local Hugging Face model folder)"
    )
