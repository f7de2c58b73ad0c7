"""Spacetime patches: latents of any size -> token sequences, and Patch n' Pack.

A latent video (C, T, H, W) is cut into patches of (pt, ph, pw) latent cells; each patch is one
token of C * pt * ph * pw features and keeps its integer (t, h, w) position on the patch grid, for
the 3D rotary embedding of the DiT. Nothing assumes a fixed size: an image is a video of T = 1.

Patch n' Pack (after NaViT): samples of different durations, resolutions and aspect ratios are
concatenated into one sequence. Each token carries the index of its sample (`doc_ids`), so that
attention can be block-diagonal (a sample never sees another); `pack_by_budget` decides which
samples share a sequence.

    latents [(C, T_i, H_i, W_i)] --pack--> Packed(tokens (1, L, D), positions (L, 3), doc_ids (L,))
    model output (1, L, D) --unpack--> [(C, T_i, H_i, W_i)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from kinema.errors import KinemaError

Patch = tuple[int, int, int]
Grid = tuple[int, int, int]

DEFAULT_PATCH: Patch = (1, 2, 2)

# ---------------------------------------------------------------- one latent


def grid_size(shape: Sequence[int], patch: Patch = DEFAULT_PATCH) -> Grid:
    """Patch grid (T', H', W') of a latent of shape (C, T, H, W) or (T, H, W).

    Raises KinemaError when a size is not a multiple of the patch. The VAE compresses 4x8x8, so
    a frame of 8k pixels gives a latent of k cells; with the default patch (1, 2, 2) the frame
    must then be a multiple of 16 pixels on each side. Nothing is padded silently, because
    padding would make the model see (and learn) borders that are not in the video.
    """
    if len(shape) not in (3, 4):
        raise KinemaError(f"a latent has shape (C, T, H, W); got {tuple(shape)}")
    t, h, w = (int(s) for s in shape[-3:])
    pt, ph, pw = patch
    bad = [
        f"{name} = {size} is not a multiple of {p}"
        for name, size, p in (("T", t, pt), ("H", h, ph), ("W", w, pw))
        if size <= 0 or size % p
    ]
    if bad:
        raise KinemaError(
            f"latent of size (T, H, W) = {(t, h, w)} does not divide into patches {patch}: "
            + "; ".join(bad)
            + ". Crop or resize the video so that each latent size is a multiple of the patch "
            "(with the 4x8x8 VAE and patch (1, 2, 2): width and height multiples of 16 pixels)."
        )
    return t // pt, h // ph, w // pw


def num_tokens(shape: Sequence[int], patch: Patch = DEFAULT_PATCH) -> int:
    """Number of tokens of a latent of shape (C, T, H, W) or (T, H, W)."""
    return math.prod(grid_size(shape, patch))


def patchify(latent: Tensor, patch: Patch = DEFAULT_PATCH) -> Tensor:
    """(C, T, H, W) -> (N, C * pt * ph * pw), tokens in (t, h, w) raster order."""
    grid_size(latent.shape, patch)
    pt, ph, pw = patch
    return rearrange(
        latent, "c (t pt) (h ph) (w pw) -> (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw
    )


def unpatchify(tokens: Tensor, grid: Grid, patch: Patch = DEFAULT_PATCH) -> Tensor:
    """(N, C * pt * ph * pw) -> (C, T, H, W); the inverse of `patchify` for a grid (T', H', W')."""
    t, h, w = grid
    if tokens.shape[0] != t * h * w:
        raise KinemaError(f"{tokens.shape[0]} tokens do not fill a patch grid of {tuple(grid)}")
    pt, ph, pw = patch
    return rearrange(
        tokens, "(t h w) (c pt ph pw) -> c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw
    )


def positions(grid: Grid, device: torch.device | str | None = None) -> Tensor:
    """(N, 3) integer (t, h, w) position of every token of a grid, in `patchify` order."""
    t, h, w = grid
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3)


# ---------------------------------------------------------------- Patch n' Pack


@dataclass
class Packed:
    """Samples of any size packed into one token sequence of length L.

    tokens:     (1, L, D) patch features, D = C * pt * ph * pw
    positions:  (L, 3) long, (t, h, w) of each token inside its own sample
    doc_ids:    (L,) long, the sample of each token; -1 for padding tokens at the end
    cu_seqlens: (S + 1,) int32, start of each sample (varlen-attention convention); the last entry
                is the number of real tokens (padding, if any, follows it)
    grids:      the patch grid (T', H', W') of each of the S samples
    patch:      the patch size (pt, ph, pw)
    channels:   latent channels C

    Per-token quantities (the timestep of each token, the loss mask) are made from per-sample or
    per-frame values with `per_sample` and `per_frame`, so one Packed serves every step.
    """

    tokens: Tensor
    positions: Tensor
    doc_ids: Tensor
    cu_seqlens: Tensor
    grids: list[Grid]
    patch: Patch
    channels: int

    @property
    def num_samples(self) -> int:
        return len(self.grids)

    @property
    def length(self) -> int:
        """L, padding included."""
        return self.tokens.shape[1]

    @property
    def valid(self) -> Tensor:
        """(L,) bool, False on padding tokens."""
        return self.doc_ids >= 0

    def per_sample(self, values: Tensor, pad_value: float = 0.0) -> Tensor:
        """(S,) one value per sample -> (L,) one per token (pad_value on padding)."""
        if values.shape != (self.num_samples,):
            raise KinemaError(f"expected {self.num_samples} values, one a sample; got {tuple(values.shape)}")
        pad = values.new_full((1,), pad_value)
        return torch.cat([values, pad])[self.doc_ids]  # index -1 picks the pad value

    def per_frame(self, values: Sequence[Tensor], pad_value: float = 0.0) -> Tensor:
        """[(T'_i,)] one value per token frame of each sample -> (L,) one per token.

        A token frame is pt latent frames (one latent frame with the default patch).
        """
        if len(values) != self.num_samples:
            raise KinemaError(f"expected {self.num_samples} per-frame tensors; got {len(values)}")
        out = []
        for v, (t, h, w) in zip(values, self.grids, strict=True):
            if v.shape != (t,):
                raise KinemaError(f"expected {t} values, one a token frame; got {tuple(v.shape)}")
            out.append(v.repeat_interleave(h * w))
        pad = self.length - int(self.cu_seqlens[-1])
        if pad:
            out.append(values[0].new_full((pad,), pad_value))
        return torch.cat(out)

    def to(self, device: torch.device | str) -> Packed:
        return Packed(
            tokens=self.tokens.to(device),
            positions=self.positions.to(device),
            doc_ids=self.doc_ids.to(device),
            cu_seqlens=self.cu_seqlens.to(device),
            grids=list(self.grids),
            patch=self.patch,
            channels=self.channels,
        )


def pack(latents: Sequence[Tensor], patch: Patch = DEFAULT_PATCH, pad_to: int | None = None) -> Packed:
    """Pack latents [(C, T_i, H_i, W_i)] into one sequence (1, L, D), samples in the given order.

    pad_to: pad the sequence with zero tokens up to this length (doc id -1), so that every batch
    has the same shape (one compiled graph, one block-mask shape). Padding tokens attend only to
    each other and must be left out of the loss (`Packed.valid`).
    """
    if not latents:
        raise KinemaError("pack needs at least one latent")
    channels = latents[0].shape[0]
    tokens, pos, docs, grids, lengths = [], [], [], [], []
    for i, z in enumerate(latents):
        if z.ndim != 4 or z.shape[0] != channels:
            raise KinemaError(
                f"latent {i} has shape {tuple(z.shape)}; every latent must be (C, T, H, W) with C = {channels}"
            )
        grid = grid_size(z.shape, patch)
        x = patchify(z, patch)  # (N_i, D)
        tokens.append(x)
        pos.append(positions(grid, device=z.device))
        docs.append(torch.full((x.shape[0],), i, dtype=torch.long, device=z.device))
        grids.append(grid)
        lengths.append(x.shape[0])
    total = sum(lengths)
    if pad_to is not None:
        if pad_to < total:
            raise KinemaError(f"{total} tokens do not fit pad_to = {pad_to}")
        extra = pad_to - total
        if extra:
            tokens.append(tokens[0].new_zeros(extra, tokens[0].shape[1]))
            pos.append(pos[0].new_zeros(extra, 3))
            docs.append(docs[0].new_full((extra,), -1))
    cu = torch.tensor([0, *lengths], dtype=torch.int32, device=latents[0].device).cumsum(0, dtype=torch.int32)
    return Packed(
        tokens=torch.cat(tokens)[None],  # (1, L, D)
        positions=torch.cat(pos),  # (L, 3)
        doc_ids=torch.cat(docs),  # (L,)
        cu_seqlens=cu,  # (S + 1,)
        grids=grids,
        patch=tuple(patch),
        channels=channels,
    )


def unpack(packed: Packed, tokens: Tensor | None = None) -> list[Tensor]:
    """Split a packed sequence back into latents [(C, T_i, H_i, W_i)].

    tokens: (1, L, D) features laid out like `packed` (e.g. the model's output); by default the
    packed tokens themselves. Padding is dropped.
    """
    x = packed.tokens if tokens is None else tokens
    if x.ndim != 3 or x.shape[0] != 1 or x.shape[1] != packed.length:
        raise KinemaError(f"expected tokens of shape (1, {packed.length}, D); got {tuple(x.shape)}")
    out = []
    bounds = packed.cu_seqlens.tolist()
    for grid, start, end in zip(packed.grids, bounds[:-1], bounds[1:], strict=True):
        out.append(unpatchify(x[0, start:end], grid, packed.patch))
    return out


def pack_by_budget(items: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group samples into sequences of at most `token_budget` tokens (first-fit decreasing).

    items: the token count of each sample (see `num_tokens`). Returns lists of indices into
    `items`; every index appears exactly once, and the groups are ordered by their first (largest)
    sample. A sample larger than the budget raises KinemaError: raise the budget or crop it.
    """
    if token_budget <= 0:
        raise KinemaError(f"token_budget must be positive; got {token_budget}")
    too_big = [(i, n) for i, n in enumerate(items) if n > token_budget]
    if too_big:
        i, n = too_big[0]
        more = f" (and {len(too_big) - 1} more)" if len(too_big) > 1 else ""
        raise KinemaError(
            f"sample {i} has {n} tokens, more than the token budget {token_budget}{more}; "
            "raise the budget or crop/resize the sample"
        )
    order = sorted(range(len(items)), key=lambda i: (-items[i], i))
    groups: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = items[i]
        for g, room in enumerate(free):
            if n <= room:
                groups[g].append(i)
                free[g] -= n
                break
        else:
            groups.append([i])
            free.append(token_budget - n)
    return groups
