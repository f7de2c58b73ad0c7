"""The video compression network: a causal 3D convolutional VAE.

A clip (B, 3, T, H, W) in [-1, 1] with T = 1 + 4k frames becomes a latent (B, 16, 1 + k, H/8, W/8)
(default 4x8x8 compression, 16 channels). The first frame is encoded on its own, so an image is a
1-frame video in the same latent space.

Three properties hold by construction, and the tests check each:

- Causal in time. Every temporal convolution pads only the past, by repeating the first frame
  (kernel_t - 1 copies), so an image is encoded as if the scene had been still before it. Latent
  frame j depends on pixel frames <= 4j; decoded frames 4j-3 .. 4j depend on latent frames <= j.
- Chunks equal the whole. Encode and decode can run time in chunks (first frame alone, then
  groups of 4 pixel frames / 1 latent frame, or more) while each causal convolution keeps, in a
  cache, the input frames its next window starts from (Wan-VAE style). The result equals the
  whole-clip result up to float rounding, and peak memory does not grow with the length.
  Time is downsampled by causal stride-2 convolutions (the cache keeps exactly the frames the next
  stride window needs) and upsampled by channel-to-time expansion: each latent frame becomes 2
  frames per stage, and the first frame of the whole clip drops its earlier copy, so latent frame
  0 -> 1 frame and every other latent frame -> 4 frames.
- No statistics over time or space. The only normalisation is an RMSNorm over channels at each
  (t, h, w) position; so chunking is exact and spatial tiles differ from the whole only through
  the convolutions' receptive field at tile borders, which overlap blending with linear ramps
  hides. Space is padded by edge replication, inside the network and at the input.

Inputs: T must be 1 + 4k (otherwise a KinemaError says the valid counts; `pad_to_multiple`
repeats the last frame, `crop` cuts back after decoding). H and W that are not multiples of 8
are padded by edge replication inside `encode`; `crop(decoded, posterior.size)` restores them.

The network is convolutional only (no attention), so any frame size works and tiling is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from kinema.errors import KinemaError
from kinema.models.hf import assign_weights

# A causal cache: for each causal convolution, the input frames its next window starts from.
# `None` means "one chunk, the whole clip": nothing is kept.
Cache = dict[nn.Module, torch.Tensor]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "vae.safetensors"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"  # kinema/weights/<name>.{json,safetensors}


# ----------------------------------------------------------------------------------- config


class LatentGeometry:
    """Sizes every VAE config derives from its latent_channels, spatial_factor and temporal_factor."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent of a clip; height/width are padded up to the factor."""
        s, f = self.spatial_factor, self.temporal_factor
        return (self.latent_channels, 1 + (frames - 1) // f, -(-height // s), -(-width // s))

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames: 1 + f * (T' - 1)."""
        return 1 + self.temporal_factor * (latent_frames - 1)


@dataclass(frozen=True)
class VAEConfig(LatentGeometry):
    """Shape of the VAE. The defaults are `base()`; compression follows from `temporal_downsample`.

    patch_size: pixels folded into channels at the input (pixel unshuffle, p x p -> 3 p^2
        channels) and unfolded at the output (pixel shuffle), as in LTX-Video: the convolutions
        then run at H/p with wide channels, which is several times faster on a CPU than narrow
        full-resolution convolutions and trains faster too.
    channel_mults: one entry a resolution level; level i has base_channels * channel_mults[i]
        channels; the levels - 1 downsampling steps sit between them.
    temporal_downsample: one flag a downsampling step: whether it halves time (temporal factor
        2 ** number of True).
    spatial_downsample: one flag a downsampling step: whether it halves height and width;
        None: every step does (spatial factor patch_size * 2 ** number of True).
    shortcuts: parameter-free residual paths around every resolution change (averages down,
        copies up) and around the latent (channel-group means in, channel copies out), as in
        DC-AE's residual autoencoding: training starts from a plain down/upsampler.
    latent_mean / latent_std: per-channel statistics of the latents, measured after training
        (`compute_latent_stats`), used by `normalize_latent` to give the diffusion model unit-
        variance inputs. None means 0 / 1.
    """

    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 96
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 1
    spatial_downsample: tuple[bool, ...] | None = None
    shortcuts: bool = False
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        levels = len(self.channel_mults)
        if levels < 1 or len(self.temporal_downsample) != levels - 1:
            raise KinemaError(
                f"VAEConfig: temporal_downsample needs one flag per downsampling step "
                f"(len(channel_mults) - 1 = {levels - 1}); got {len(self.temporal_downsample)}"
            )
        if self.spatial_downsample is not None and len(self.spatial_downsample) != levels - 1:
            raise KinemaError(
                f"VAEConfig: spatial_downsample needs one flag per downsampling step ({levels - 1}); "
                f"got {len(self.spatial_downsample)}"
            )
        if not all(t or s for t, s in zip(self.temporal_downsample, self.spatial_steps)):
            raise KinemaError("VAEConfig: every downsampling step must halve time, space or both")
        for name in ("in_channels", "latent_channels", "base_channels", "patch_size"):
            if getattr(self, name) < 1:
                raise KinemaError(f"VAEConfig: {name} must be >= 1; got {getattr(self, name)}")
        if self.num_res_blocks < 0 or min(self.channel_mults) < 1:
            raise KinemaError("VAEConfig: num_res_blocks must be >= 0 and channel_mults >= 1")
        for name in ("latent_mean", "latent_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != self.latent_channels:
                raise KinemaError(
                    f"VAEConfig: {name} needs {self.latent_channels} values (one a latent channel); "
                    f"got {len(stats)}"
                )
        if self.latent_std is not None and min(self.latent_std) <= 0:
            raise KinemaError("VAEConfig: latent_std must be > 0 in every channel")

    # -- named presets

    @classmethod
    def tiny(cls) -> VAEConfig:
        """~3.8M params at H/4 and H/8 only (4x4 pixel unshuffle in, pixel shuffle out): trains on
        2 CPU cores and decodes a 2 s 128x128 clip in a fraction of a second; enough for
        flat-colour procedural video."""
        return cls(
            base_channels=64,
            channel_mults=(1, 1, 1),
            num_res_blocks=1,
            temporal_downsample=(True, True),
            spatial_downsample=(False, True),
            patch_size=4,
            shortcuts=True,
        )

    @classmethod
    def small(cls) -> VAEConfig:
        """~37M params: one GPU, or a long CPU run."""
        return cls(base_channels=48, channel_mults=(1, 2, 4, 4), num_res_blocks=2)

    @classmethod
    def base(cls) -> VAEConfig:
        """~146M params, the size of public 4x8x8x16 video VAEs."""
        return cls()

    # -- derived sizes

    @property
    def spatial_steps(self) -> tuple[bool, ...]:
        """Whether each downsampling step halves height and width."""
        return self.spatial_downsample or (True,) * len(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** sum(self.spatial_steps)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    # -- JSON beside the weights

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise KinemaError(f"VAEConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig.tiny(),
    "small": VAEConfig.small(),
    "base": VAEConfig.base(),
}


# ----------------------------------------------------------------------------------- layers


def _triple(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


class CausalConv3d(nn.Module):
    """A 3D convolution that sees only the present and the past in time.

    Space is padded on both sides by edge replication ('same' size; a tile border then looks
    like a continuation, not a black frame). Time is padded only in the past: with the
    frames kept in `cache` from the previous chunk, or, for the first chunk, with kernel_t - 1
    copies of the first frame. After a chunk, the cache keeps the input frames from where the
    next stride window starts (kernel_t - 1 frames for stride 1), so a clip cut in chunks gives
    the same output as the whole clip.
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple = 3, stride: int | tuple = 1):
        super().__init__()
        kt, kh, kw = _triple(kernel)
        st, sh, sw = _triple(stride)
        self.kt, self.st = kt, st
        self.conv = nn.Conv3d(
            cin, cout, (kt, kh, kw), stride=(st, sh, sw), padding=(0, kh // 2, kw // 2), padding_mode="replicate"
        )

    def forward(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        # x: (B, Cin, T, H, W)
        past = None if cache is None else cache.get(self)
        if past is None:  # first chunk: the scene was still before frame 0
            past = x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1)
        x = torch.cat([past, x], dim=2)  # (B, Cin, P + T, H, W)
        if cache is not None:
            windows = (x.shape[2] - self.kt) // self.st + 1
            cache[self] = x[:, :, windows * self.st :].clone()  # clone: keep only these frames alive
        return self.conv(x)  # (B, Cout, T_out, H_out, W_out)


class RMSNorm(nn.Module):
    """RMS over channels at each (t, h, w) position: no statistic crosses time or space.

    x / sqrt(mean_c(x^2) + eps) with eps = 1: features well above unit scale are normalised as
    by a plain RMSNorm, smaller ones keep their magnitude. A plain RMSNorm (eps ~ 0) maps x and
    2x to the same output, so colour intensity must live in the direction of the feature
    vector; with few channels that stalls training (measured on procedural frames, 1M-param VAE,
    400 steps: ~12 dB PSNR with eps = 1e-6, ~20 dB with eps = 1).
    """

    def __init__(self, channels: int, eps: float = 1.0):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return (xf * self.weight.float().view(-1, 1, 1, 1)).to(x.dtype)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, 3)
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, 3)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


def _pool_time(x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
    """Mean of frame pairs (2j - 1, 2j); the clip's frame 0 stands alone. (B, C, T, H, W) -> T'.
    Chunks after the first hold an even number of frames starting at an odd one, so each pair
    lies within one chunk and no cache is needed."""
    head, rest = (x[:, :, :1], x[:, :, 1:]) if first_chunk else (x[:, :, :0], x)
    pairs = rearrange(rest, "b c (t two) h w -> b c t two h w", two=2).mean(dim=3)
    return torch.cat([head, pairs], dim=2)


def _repeat_time(x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
    """Each frame twice, except the clip's frame 0 once: the inverse layout of `_pool_time`."""
    x = x.repeat_interleave(2, dim=2)
    return x[:, :, 1:] if first_chunk else x


class Downsample(nn.Module):
    """Halve H and W if `space`, and T if `time`: one causal stride-2 convolution.

    In time, output frame j reads input frames 2j-2 .. 2j, so 1 + 2m frames -> 1 + m and
    output 0 sees frame 0 alone (its past is copies of frame 0).

    shortcut: add the parameter-free average over each output's cells (2 x 2 pixels, frames
    2j - 1 and 2j), the residual autoencoding of DC-AE: the network starts as a plain
    downsampler and learns what averaging loses, which trains much faster.
    """

    def __init__(self, channels: int, time: bool, space: bool = True, shortcut: bool = False):
        super().__init__()
        s = 2 if space else 1
        self.time, self.space, self.shortcut = time, space, shortcut
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if time else 1, s, s))

    def forward(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        first_chunk = cache is None or self.conv not in cache
        y = self.conv(x, cache)  # (B, C, T, H, W) -> (B, C, T', H', W')
        if self.shortcut:
            if self.space:
                x = F.avg_pool3d(x, (1, 2, 2))
            if self.time:
                x = _pool_time(x, first_chunk)
            y = y + x
        return y


class Upsample(nn.Module):
    """Double H and W if `space` (nearest + conv), and T if `time` (channel-to-time expansion).

    In time, the convolution gives 2C channels, read as 2 frames of C channels each; the first
    frame of the whole clip keeps only the second of its two, so 1 + m frames -> 1 + 2m.
    shortcut: add the input's nearest-neighbour copies (DC-AE's residual decoding).
    """

    def __init__(self, channels: int, time: bool, space: bool = True, shortcut: bool = False):
        super().__init__()
        self.time, self.space, self.shortcut = time, space, shortcut
        self.conv = CausalConv3d(channels, channels * (2 if time else 1), 3)

    def forward(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        # x: (B, C, T, H, W)
        first_chunk = cache is None or self.conv not in cache  # the conv's entry appears after chunk 1
        if self.space:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (B, C, T, 2H, 2W)
        y = self.conv(x, cache)
        if self.time:
            y = rearrange(y, "b (pt c) t h w -> b c (t pt) h w", pt=2)  # (B, C, 2T, 2H, 2W)
            if first_chunk:
                y = y[:, :, 1:]  # frame 0 -> 1 frame
        if self.shortcut:  # nearest-neighbour copies: the mirror of Downsample's average
            y = y + (_repeat_time(x, first_chunk) if self.time else x)
        return y


# ---------------------------------------------------------------------- encoder, decoder


class Encoder(nn.Module):
    """(B, 3, 1 + 4k, H, W) -> moments (B, 2 * C_latent, 1 + k, H/8, W/8): mean and logvar."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        self.patch = cfg.patch_size
        self.conv_in = CausalConv3d(cfg.in_channels * self.patch**2, chs[0], 3)
        self.blocks = nn.ModuleList()
        prev = chs[0]
        for level, ch in enumerate(chs):
            for _ in range(cfg.num_res_blocks):
                self.blocks.append(ResBlock(prev, ch))
                prev = ch
            if level < len(chs) - 1:
                self.blocks.append(
                    Downsample(ch, cfg.temporal_downsample[level], cfg.spatial_steps[level], cfg.shortcuts)
                )
        self.blocks.extend([ResBlock(prev, prev), ResBlock(prev, prev)])  # middle, lowest resolution
        self.norm_out = RMSNorm(prev)
        self.conv_out = CausalConv3d(prev, 2 * cfg.latent_channels, 3)
        self.latent_channels = cfg.latent_channels
        self.shortcut = cfg.shortcuts and prev % cfg.latent_channels == 0

    def forward(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        p = self.patch
        x = rearrange(x, "b c t (h p) (w q) -> b (c p q) t h w", p=p, q=p)  # pixel unshuffle
        h = self.conv_in(x, cache)  # (B, C0, T, H/p, W/p)
        for block in self.blocks:
            h = block(h, cache)  # down to (B, C_last, 1 + k, H/8, W/8)
        moments = self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 2 * C_latent, 1 + k, H/8, W/8)
        if self.shortcut:  # the mean also gets the average of each group of C_last / C_latent channels
            c = self.latent_channels
            mean = moments[:, :c] + rearrange(h, "b (c g) t h w -> b c g t h w", c=c).mean(dim=2)
            moments = torch.cat([mean, moments[:, c:]], dim=1)
        return moments


class Decoder(nn.Module):
    """(B, C_latent, 1 + k, h, w) -> (B, 3, 1 + 4k, 8h, 8w), the mirror of the encoder."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        prev = chs[-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, prev, 3)
        self.shortcut = cfg.shortcuts and prev % cfg.latent_channels == 0
        self.blocks = nn.ModuleList([ResBlock(prev, prev), ResBlock(prev, prev)])  # middle
        for level in reversed(range(len(chs))):
            for _ in range(cfg.num_res_blocks + 1):
                self.blocks.append(ResBlock(prev, chs[level]))
                prev = chs[level]
            if level > 0:
                self.blocks.append(
                    Upsample(prev, cfg.temporal_downsample[level - 1], cfg.spatial_steps[level - 1], cfg.shortcuts)
                )
        self.patch = cfg.patch_size
        self.norm_out = RMSNorm(prev)
        self.conv_out = CausalConv3d(prev, cfg.in_channels * self.patch**2, 3)

    def forward(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        h = self.conv_in(z, cache)  # (B, C_last, 1 + k, h, w)
        if self.shortcut:  # each latent channel copied C_last / C_latent times: the encoder's mirror
            h = h + z.repeat_interleave(h.shape[1] // z.shape[1], dim=1)
        for block in self.blocks:
            h = block(h, cache)  # up to (B, C0, 1 + 4k, 8h, 8w)
        y = self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 3 p^2, 1 + 4k, 8h/p, 8w/p)
        p = self.patch
        return rearrange(y, "b (c p q) t h w -> b c t (h p) (w q)", p=p, q=p)  # (B, 3, 1 + 4k, 8h, 8w), pixel shuffle


class DiagonalGaussian:
    """The posterior q(z | x): a diagonal Gaussian over the latent (B, C, T', H', W').

    `size` is the (T, H, W) of the video that was encoded, before padding to a multiple of 8:
    `crop(vae.decode(posterior.mode()), posterior.size)` returns a video of the input's size.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, size: tuple[int, int, int]):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.size = size

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # drawn where the generator lives (a CPU generator serves a model on the GPU too)
        where = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=where, dtype=self.mean.dtype)
        noise = noise.to(self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, 1)) per latent element, averaged: shape (B,)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).mean(dim=1)


# ------------------------------------------------------------------------- padding helpers


def pad_to_multiple(
    x: torch.Tensor, space: int = 8, time: int = 4
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Pad a video (B, C, T, H, W) so that T = 1 + time * k and H, W are multiples of `space`.

    Time is padded at the end by repeating the last frame; height and width at the bottom and
    right by repeating the edge pixels. Returns the padded video and the original (T, H, W), for
    `crop` after decoding. `time=1` leaves time alone.
    """
    t, h, w = x.shape[-3:]
    pt = (-(t - 1)) % time if t > 0 else 0
    ph, pw = (-h) % space, (-w) % space
    if pt or ph or pw:
        x = F.pad(x, (0, pw, 0, ph, 0, pt), mode="replicate")
    return x, (t, h, w)


def crop(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Keep the first T frames and the top-left H x W of a video (B, C, T', H', W')."""
    t, h, w = size
    return x[:, :, :t, :h, :w]


# --------------------------------------------------------------------------------- tiling


def _tile_spans(length: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """Tiles [start, end) covering [0, length) in latent units, neighbours overlapping by >= overlap."""
    if tile is None or length <= tile:
        return [(0, length)]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return [(s, s + tile) for s in starts]


def _ramp(n: int, ramp: int, left: bool, right: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: 1 inside, rising linearly over `ramp` cells on the
    sides that meet a neighbour, never 0 (ramp < n: a tile is wider than the overlap)."""
    w = torch.ones(n)
    r = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)  # (ramp,) in (0, 1)
    if left and ramp:
        w[:ramp] = torch.minimum(w[:ramp], r)
    if right and ramp:
        w[n - ramp :] = torch.minimum(w[n - ramp :], r.flip(0))
    return w


def _gather(pieces: Iterable[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Write time chunks into one preallocated tensor (no second copy, as torch.cat would make)."""
    out, t0 = None, 0
    for piece in pieces:  # (B, C, n, H, W)
        if out is None:
            out = piece.new_empty(shape)
        out[:, :, t0 : t0 + piece.shape[2]] = piece
        t0 += piece.shape[2]
    assert out is not None and t0 == shape[2], (t0, shape)
    return out


# -------------------------------------------------------------------------------- the VAE


class VideoVAE(nn.Module):
    """What every Kinema video VAE shares, written once: input checks, time chunks x spatial tiles
    with carried causal caches, the latent normalisation, and `encode` / `decode_stream` / `decode`.

    A subclass builds its networks and hands them to this machinery through two methods with the
    `net(x, cache)` convention (cache None: the whole clip in one call; a dict: carried from one
    time chunk to the next, holding whatever per-module state the network needs):

        _encode_net(x, cache): (B, 3, T, H, W) -> moments (B, 2 C, T', H/s, W/s), mean then logvar
        _decode_net(z, cache): (B, C, T', h, w) -> (B, 3, 1 + f (T' - 1), s h, s w)

    Its `config` gives in_channels, latent_channels, temporal_factor (f), spatial_factor (s),
    num_frames(latent_frames), latent_mean and latent_std (None: 0 / 1). Subclasses:
    `CausalVAE` (Kinema's own) and `kinema.vae.wan.WanVAE` (Wan 2.1's weights).
    """

    config: VAEConfig  # or any config with the fields named above

    def _encode_net(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        raise NotImplementedError

    def _decode_net(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- input checks

    def _check_video(self, x: torch.Tensor) -> None:
        cfg = self.config
        f = cfg.temporal_factor
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise KinemaError("VAE input must be a float tensor (B, 3, T, H, W) with values in [-1, 1]")
        if x.ndim != 5:
            hint = "; for images (B, 3, H, W) use x.unsqueeze(2)" if x.ndim == 4 else ""
            raise KinemaError(f"VAE input must have shape (B, 3, T, H, W); got {tuple(x.shape)}{hint}")
        b, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise KinemaError(f"VAE input must have {cfg.in_channels} channels (RGB) on axis 1; got {c}")
        if t == 0:
            raise KinemaError("VAE input has no frames (T = 0)")
        if (t - 1) % f:
            valid = ", ".join(str(1 + f * k) for k in range(5))
            raise KinemaError(
                f"VAE input has {t} frames; a clip must have 1 + {f}k frames ({valid}, ...). "
                f"Pad it with kinema.vae.pad_to_multiple(x, time={f}) (repeats the last frame) and "
                f"crop the decoded clip back with kinema.vae.crop(y, size)"
            )
        if b == 0 or h == 0 or w == 0:
            raise KinemaError(f"VAE input is empty: shape {tuple(x.shape)}")

    def _check_latent(self, z: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or not z.is_floating_point():
            raise KinemaError(f"latent must be a float tensor (B, {cfg.latent_channels}, T', H', W')")
        if z.shape[1] != cfg.latent_channels:
            raise KinemaError(
                f"latent must have {cfg.latent_channels} channels on axis 1; got {z.shape[1]} "
                f"(is it from another VAE?)"
            )
        if 0 in z.shape:
            raise KinemaError(f"latent is empty: shape {tuple(z.shape)}")

    @staticmethod
    def _check_chunking(chunk: int | None, tile: int | None, overlap: int | None) -> int:
        """Validate the chunk / tile options; returns the overlap (default: a quarter of the tile)."""
        if chunk is not None and chunk < 1:
            raise KinemaError(f"chunk must be >= 1 latent frame; got {chunk}")
        if tile is None:
            return 0
        overlap = tile // 4 if overlap is None else overlap
        if not (tile >= 1 and 0 <= overlap < tile):
            raise KinemaError(f"tiles need tile >= 1 and 0 <= overlap < tile (latent units); got {tile}, {overlap}")
        return overlap

    # -- chunks x tiles, one path for both directions

    def _stream(
        self,
        net: Callable[[torch.Tensor, Cache | None], torch.Tensor],
        x: torch.Tensor,
        splits: list[int],
        tile: int | None,
        overlap: int,
        scale_in: int,
        scale_out: int,
        group=None,
    ) -> Iterator[torch.Tensor]:
        """Run `net` over time splits of x, each cut in spatial tiles, yielding the outputs in order.

        Tiles are laid out in latent units; scale_in / scale_out are the pixels a latent unit
        spans at the input / output of `net` (8 / 1 to encode, 1 / 8 to decode). Each tile keeps
        its own causal cache across splits; overlapping outputs are blended with linear ramps.
        group: a process group whose ranks share the tiles (rank r runs tiles r, r + K, ...) and
        sum their blended parts: every rank gets the whole output. It needs at least K tiles.
        """
        hl, wl = x.shape[-2] // scale_in, x.shape[-1] // scale_in
        boxes = [(hs, ws) for hs in _tile_spans(hl, tile, overlap) for ws in _tile_spans(wl, tile, overlap)]
        mine = range(len(boxes))
        if group is not None:
            import torch.distributed as dist

            K, r = dist.get_world_size(group), dist.get_rank(group)
            if len(boxes) < K:
                raise KinemaError(f"splitting a decode over {K} ranks needs at least {K} tiles; got {len(boxes)}")
            mine = range(r, len(boxes), K)
        caches: list[Cache | None] = [{} if len(splits) > 1 else None for _ in boxes]
        masks = [
            (
                _ramp((h1 - h0) * scale_out, overlap * scale_out, h0 > 0, h1 < hl)[:, None]
                * _ramp((w1 - w0) * scale_out, overlap * scale_out, w0 > 0, w1 < wl)[None, :]
            ).to(x.device, x.dtype)
            for (h0, h1), (w0, w1) in boxes
        ]
        t0 = 0
        for n in splits:
            xt = x[:, :, t0 : t0 + n]  # (B, Cin, n, H, W)
            t0 += n
            if len(boxes) == 1:
                yield net(xt, caches[0])
                continue
            out = weight = None
            for i in mine:
                (h0, h1), (w0, w1) = boxes[i]
                si, so, mask = scale_in, scale_out, masks[i]
                y = net(xt[..., h0 * si : h1 * si, w0 * si : w1 * si], caches[i])  # (B, Cout, n', h, w)
                if out is None:
                    out = y.new_zeros(*y.shape[:3], hl * so, wl * so)
                    weight = y.new_zeros(hl * so, wl * so)
                out[..., h0 * so : h1 * so, w0 * so : w1 * so] += y * mask
                weight[h0 * so : h1 * so, w0 * so : w1 * so] += mask
            if group is not None:  # every rank ran some tiles: the sum of the parts is the whole
                import torch.distributed as dist

                dist.all_reduce(out, group=group)
                dist.all_reduce(weight, group=group)
            yield out / weight

    @staticmethod
    def _splits(frames: int, first: int, rest: int | None) -> list[int]:
        """Time splits: the first frame alone, then groups of `rest`; one split if rest is None."""
        if rest is None or frames <= first:
            return [frames]
        return [first] + [min(rest, frames - s) for s in range(first, frames, rest)]

    # -- public API

    def encode(
        self, x: torch.Tensor, *, chunk: int | None = None, tile: int | None = None, overlap: int | None = None
    ) -> DiagonalGaussian:
        """Video (B, 3, 1 + 4k, H, W) in [-1, 1] -> posterior over (B, C, 1 + k, ceil(H/8), ceil(W/8)).

        H and W that are not multiples of 8 are padded by edge replication (posterior.size keeps
        the original size for `crop`). chunk: latent frames per time chunk after the first frame
        (None: the whole clip at once). tile / overlap: spatial tiles in latent units (None: no
        tiles / a quarter of the tile).
        """
        self._check_video(x)
        overlap = self._check_chunking(chunk, tile, overlap)
        f, s = self.config.temporal_factor, self.config.spatial_factor
        x, size = pad_to_multiple(x.to(self.dtype), space=s, time=1)  # (B, 3, T, H8, W8)
        splits = self._splits(x.shape[2], 1, None if chunk is None else chunk * f)
        b, _, t, h, w = x.shape
        shape = (b, 2 * self.config.latent_channels, 1 + (t - 1) // f, h // s, w // s)
        moments = _gather(self._stream(self._encode_net, x, splits, tile, overlap, s, 1), shape)
        mean, logvar = moments.chunk(2, dim=1)  # (B, C, T', H', W') each
        return DiagonalGaussian(mean, logvar, size)

    def decode_stream(
        self, z: torch.Tensor, *, chunk: int | None = 1, tile: int | None = None, overlap: int | None = None,
        group=None,
    ) -> Iterator[torch.Tensor]:
        """Decode a latent chunk by chunk, yielding pixel frames (B, 3, n, 8h, 8w) in order:
        1 frame for the first latent frame, then 4 * chunk frames a chunk. Memory stays bounded
        however long z is, if the caller writes the frames out instead of keeping them.

        On Linux, glibc's malloc may keep freed chunk buffers and let resident memory creep over
        a long run; a fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=131072, or mallopt at start-up)
        keeps it flat. group: the ranks of a process group share the tiles (`_stream`)."""
        self._check_latent(z)
        overlap = self._check_chunking(chunk, tile, overlap)
        splits = self._splits(z.shape[2], 1, chunk)
        return self._stream(self._decode_net, z.to(self.dtype), splits, tile, overlap, 1, self.config.spatial_factor,
                            group)  # fmt: skip

    def decode(
        self, z: torch.Tensor, *, chunk: int | None = None, tile: int | None = None, overlap: int | None = None
    ) -> torch.Tensor:
        """Latent (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, 8h, 8w), roughly in [-1, 1] (clamped only
        where the subclass's decoder clamps: WanVAE does, as its reference; CausalVAE does not).

        chunk: latent frames per time chunk after the first (None: the whole latent at once).
        tile / overlap: spatial tiles in latent units (None: no tiles / a quarter of the tile).
        """
        self._check_latent(z)
        b, _, t, h, w = z.shape
        s = self.config.spatial_factor
        shape = (b, self.config.in_channels, self.config.num_frames(t), h * s, w * s)
        if tile is None:
            return _gather(self.decode_stream(z, chunk=chunk, tile=tile, overlap=overlap), shape)
        # Tile-major: each tile through the whole clip, then the next, so that only one tile's
        # causal caches are alive (decode_stream goes time-major, all tiles' caches at once, to
        # yield frames in order). The same per-tile results and blending, so the same video.
        overlap = self._check_chunking(chunk, tile, overlap)
        splits = self._splits(t, 1, chunk)
        z = z.to(self.dtype)
        out = weight = None
        for h0, h1 in _tile_spans(h, tile, overlap):
            for w0, w1 in _tile_spans(w, tile, overlap):
                tile_shape = (*shape[:3], (h1 - h0) * s, (w1 - w0) * s)
                piece = _gather(self._stream(self._decode_net, z[..., h0:h1, w0:w1], splits, None, 0, 1, s), tile_shape)
                mask = (_ramp((h1 - h0) * s, overlap * s, h0 > 0, h1 < h)[:, None]
                        * _ramp((w1 - w0) * s, overlap * s, w0 > 0, w1 < w)[None, :]).to(piece.device, piece.dtype)  # fmt: skip
                if out is None:
                    out, weight = piece.new_zeros(shape), piece.new_zeros(shape[-2:])
                out[..., h0 * s : h1 * s, w0 * s : w1 * s] += piece * mask
                weight[h0 * s : h1 * s, w0 * s : w1 * s] += mask
                del piece
        return out / weight

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Training pass on whole clips: (reconstruction of x's padded size, posterior)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    # -- latent scale and shift for the diffusion model

    def _latent_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        mean = torch.tensor(cfg.latent_mean or [0.0] * cfg.latent_channels, device=z.device, dtype=z.dtype)
        std = torch.tensor(cfg.latent_std or [1.0] * cfg.latent_channels, device=z.device, dtype=z.dtype)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def normalize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latent -> roughly zero-mean unit-variance latent for the diffusion model."""
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def denormalize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion-model latent -> VAE latent, ready for `decode`."""
        mean, std = self._latent_stats(z)
        return z * std + mean


class CausalVAE(VideoVAE):
    """Causal 3D VAE. `encode(x) -> DiagonalGaussian`, `decode(z) -> x`, both with optional
    time chunks (`chunk`, in latent frames) and spatial tiles (`tile`, `overlap`, in latent
    units). For bounded memory call them under `torch.inference_mode()`."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """PyTorch's default conv init, except that the last conv of every residual block starts
        at zero: each block begins as the identity, so the untrained network is shallow, smooth
        and local (short effective receptive field). Deep stacks then train at higher learning
        rates, and an untrained model already tiles without seams."""
        for module in self.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.conv2.conv.weight)
                nn.init.zeros_(module.conv2.conv.bias)
        # The posterior starts nearly deterministic (std e^-5 ~ 0.007). From logvar = 0 the sampling
        # noise (std 1) drowns latents of typical scale 0.1 - 1, and the weak KL weight never
        # makes the encoder fight it: measured on the tiny preset after 1000 steps, the latent
        # means spread 0.1 against a posterior std of 0.05, and reconstructions stayed blurred.
        out = self.encoder.conv_out.conv
        c = self.config.latent_channels
        with torch.no_grad():
            out.weight[c:].zero_()
            out.bias[c:].fill_(-10.0)

    def _encode_net(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        return self.encoder(x, cache)

    def _decode_net(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        return self.decoder(z, cache)

    def set_latent_stats(self, mean: Iterable[float], std: Iterable[float]) -> None:
        """Store per-channel latent statistics in the config (saved with the weights)."""
        self.config = replace(
            self.config, latent_mean=tuple(float(m) for m in mean), latent_std=tuple(float(s) for s in std)
        )


def compute_latent_stats(latents: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over batches of latents (B, C, T', H', W'), for `set_latent_stats`."""
    total = sq = None
    count = 0
    for z in latents:
        zc = rearrange(z.detach().double(), "b c t h w -> c (b t h w)")
        total = zc.sum(1) if total is None else total + zc.sum(1)
        sq = zc.pow(2).sum(1) if sq is None else sq + zc.pow(2).sum(1)
        count += zc.shape[1]
    if not count:
        raise KinemaError("compute_latent_stats: no latents given")
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def count_params(config: VAEConfig) -> int:
    """Parameters of a VAE with this config, counted without allocating (meta device)."""
    with torch.device("meta"):
        model = CausalVAE(config)
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------- weights


def save_vae(model: CausalVAE, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write `config.json` and `vae.safetensors` into `directory` (created); atomic per file.
    dtype: store the weights in this type (torch.float16 halves a shipped file); `load_vae`
    gives float32 back."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    tmp = d / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "model": "kinema.vae"})
    os.replace(tmp, d / WEIGHTS_FILE)
    tmp = d / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    os.replace(tmp, d / CONFIG_FILE)
    return d


def ship_vae(model: CausalVAE, name: str, dtype: torch.dtype = torch.float16, directory: Path = SHIPPED_DIR) -> Path:
    """Write a VAE into the package as `<name>.json` + `<name>.safetensors` (float16 by default:
    half the size; `load_vae(name)` gives float32 back). Returns the weights file."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_vae(model, tmp, dtype=dtype)
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / CONFIG_FILE, directory / f"{name}.json")
        shutil.copyfile(Path(tmp) / WEIGHTS_FILE, directory / f"{name}.safetensors")
    return directory / f"{name}.safetensors"


def _find_weights(dir_or_name: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(dir_or_name)
    if p.is_dir():
        config, weights = p / CONFIG_FILE, p / WEIGHTS_FILE
    else:  # a shipped VAE: kinema/weights/<name>.json + <name>.safetensors
        config, weights = SHIPPED_DIR / f"{p.name}.json", SHIPPED_DIR / f"{p.name}.safetensors"
    if not (config.is_file() and weights.is_file()):
        shipped = sorted(f.stem for f in SHIPPED_DIR.glob("*.safetensors")) if SHIPPED_DIR.is_dir() else []
        raise KinemaError(
            f"no VAE at {str(dir_or_name)!r}: give a directory written by save_vae "
            f"({CONFIG_FILE} + {WEIGHTS_FILE}) or the name of a shipped VAE "
            f"(available: {', '.join(shipped) or 'none'})"
        )
    return config, weights


def load_vae(
    dir_or_name: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> CausalVAE:
    """Load a VAE saved by `save_vae` (a directory) or shipped with Kinema (a name), in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = _find_weights(dir_or_name)
    try:
        config = VAEConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise KinemaError(f"{config_path}: not a VAE config ({e})") from None
    try:
        state = {k: v.float() for k, v in load_file(str(weights_path), device=str(device)).items()}  # fp16 files too
    except SafetensorError as e:
        raise KinemaError(f"{weights_path}: cannot read the weights ({e})") from None
    with torch.device("meta"):
        model = assign_weights(CausalVAE(config), state, f"{weights_path} does not match {config_path}")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
