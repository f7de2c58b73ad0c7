"""Wan's video VAEs (diffusers `AutoencoderKLWan`, Wan 2.1 and Wan 2.2) as Kinema VAEs.

    vae = load_wan_vae("Wan2.1-T2V-1.3B-Diffusers/vae")   # or the model folder that holds vae/
                                                          # (Wan2.2-TI2V-5B: 48 channels, H/16, W/16)
    z = vae.encode(x).mode()                              # x: (B, 3, 1 + 4k, H, W) in [-1, 1]
    y = vae.decode(z)                                     # (B, 3, 1 + 4k, H, W), clamped to [-1, 1]

The network is diffusers' (itself Wan's), re-written on Kinema's `VideoVAE`: the same chunks x
tiles, `encode` / `decode_stream` / `decode`, latent normalisation and input checks as
`CausalVAE`. It equals the reference up to float rounding (tests/test_wan_vae.py). Where it
differs from CausalVAE:

- Causal convolutions pad the past with zeros, not with copies of frame 0, and space with zeros.
- The clip's first frame skips the temporal resampling: downsampling keeps frame 0 alone and
  then maps frames (2j - 2, 2j - 1, 2j) to j; upsampling keeps frame 0 as one frame and doubles
  every later frame with a causal time convolution that never sees frame 0 (the reference's
  "Rep" state). Each network handles this itself, for a whole clip (cache None) or for chunks
  of any length (the cache marks the modules that have seen the clip's start).
- As in the reference, the first frame is always a chunk of its own, even with chunk=None.
- Normalisation is an RMS over channels (F.normalize * sqrt(C) * gamma); the middle block has
  single-head attention over the positions of each frame (so chunks need no cache for it, but
  spatial tiles differ from the whole more than CausalVAE's do).
- `decode` / `decode_stream` clamp to [-1, 1], as the reference's decode does.
- H, W that are not multiples of the spatial factor are padded by edge replication, as for
  CausalVAE (the reference has no rule for them); `crop(y, posterior.size)` cuts back.

Wan 2.1 (`WanVAEConfig()`): 4x8x8 compression into 16 channels. Wan 2.2 TI2V-5B
(`WanVAEConfig.wan22()`): 4x16x16 into 48 channels, by two options of the same network:

- patch_size 2: each 2x2 pixel block is folded into channels before the encoder (3 -> 12
  channels, half the size) and unfolded after the decoder, so one more factor 2 in space.
- is_residual: each resolution level gets a parameter-free shortcut around it, from its input
  to its output (DC-AE's residual autoencoding): `WanAvgDown` in the encoder averages groups of
  (channel, frame, row, column) cells down to the output's shape, `WanDupUp` in the decoder
  copies each input cell to the cells it becomes. In time they follow the first-frame rule:
  frame 0 is averaged with a zero frame before it, and decoded to one frame, not two. The
  decoder also keeps its width through each upsampler (Wan 2.1's halves it) and may be wider
  than the encoder (decoder_base_dim).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from kinema.errors import KinemaError
from kinema.models.hf import assign_weights, load_state, read_config
from kinema.vae.model import Cache, LatentGeometry, VideoVAE

# Per-channel latent statistics: Wan 2.1's (diffusers' defaults for AutoencoderKLWan) and Wan 2.2
# TI2V-5B's (as Wan's own Wan2_2_VAE hard-codes them; its diffusers config.json carries them).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


# ----------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class WanVAEConfig(LatentGeometry):
    """Shape of a Wan VAE, field for field as diffusers' vae/config.json (defaults: Wan 2.1),
    except in_channels / out_channels, which count the video's channels (3): diffusers counts
    them after patchify (3 * patch_size^2 = 12 for Wan 2.2), and `from_diffusers` converts.

    dim_mult: one entry a resolution level (base_dim * m channels in the encoder, decoder_base_dim
        * m in the decoder; None: base_dim); every level but the last halves H and W.
        temperal_downsample: one flag a downsampling step, whether it also halves time (diffusers'
        spelling). attn_scales: must be empty, as in Wan 2.1 and 2.2 (the reference would put
        attention after the encoder's residual blocks at those scales, but cannot run it).
        latents_mean / latents_std: per-channel latent statistics for `normalize_latent`.
    is_residual: Wan 2.2's parameter-free shortcuts around each level (WanAvgDown / WanDupUp).
    patch_size: pixels folded into channels at the input and unfolded at the output (p x p; None
        or 1: none). Wan 2.2 TI2V-5B: is_residual and patch_size 2.
    """

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] | None = WAN21_LATENTS_STD
    decoder_base_dim: int | None = None
    in_channels: int = 3
    out_channels: int = 3
    is_residual: bool = False
    patch_size: int | None = None

    def __post_init__(self) -> None:
        if self.attn_scales:
            raise KinemaError(
                "WanVAEConfig: attn_scales must be empty (as in Wan 2.1 and 2.2): diffusers' reference "
                "cannot run attention between the encoder's residual blocks either"
            )
        if not self.dim_mult or len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise KinemaError(
                f"WanVAEConfig: temperal_downsample needs one flag per downsampling step "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1}); got {len(self.temperal_downsample)}"
            )
        if self.in_channels != self.out_channels:
            raise KinemaError(f"WanVAEConfig: in_channels {self.in_channels} != out_channels {self.out_channels}")
        if self.patch_size is not None and self.patch_size < 1:
            raise KinemaError(f"WanVAEConfig: patch_size must be None or >= 1; got {self.patch_size}")
        for name in ("latents_mean", "latents_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != self.z_dim:
                raise KinemaError(f"WanVAEConfig: {name} needs {self.z_dim} values (z_dim); got {len(stats)}")
        if self.latents_std is not None and min(self.latents_std) <= 0:
            raise KinemaError("WanVAEConfig: latents_std must be > 0 in every channel")
        if self.is_residual:
            self._check_shortcuts()

    def _check_shortcuts(self) -> None:
        """The shortcuts average (encoder) or copy (decoder) whole groups of cells: at each level
        the cells of one output position (C_in x 2 x 2, x 2 in time) must split evenly into the
        output channels, and the decoder's output cells into copies of its input channels."""
        steps = [4 * (2 if t else 1) for t in self.temperal_downsample]  # cells one step merges
        enc = [self.base_dim * m for m in (1, *self.dim_mult)]
        for cin, cout, cells in zip(enc[:-1], enc[1:], [*steps, 1]):
            if cin * cells % cout:
                raise KinemaError(
                    f"WanVAEConfig: is_residual needs each encoder level's input channels x cells "
                    f"({cin} x {cells}) to be a multiple of its output channels ({cout}); change dim_mult"
                )
        dec = [self.decoder_dim * m for m in (self.dim_mult[-1], *reversed(self.dim_mult))]
        for cin, cout, cells in zip(dec[:-2], dec[1:-1], reversed(steps)):
            if cout * cells % cin:
                raise KinemaError(
                    f"WanVAEConfig: is_residual needs each decoder level's output channels x cells "
                    f"({cout} x {cells}) to be a multiple of its input channels ({cin}); change dim_mult"
                )

    # -- named presets

    @classmethod
    def wan21(cls) -> WanVAEConfig:
        """Wan 2.1's VAE (all Wan 2.1 models, and Wan 2.2's A14B ones): 4x8x8, 16 channels."""
        return cls()

    @classmethod
    def wan22(cls) -> WanVAEConfig:
        """Wan 2.2 TI2V-5B's VAE: 4x16x16, 48 channels (Wan2.2-TI2V-5B-Diffusers/vae/config.json)."""
        return cls(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, patch_size=2,
                   latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)  # fmt: skip

    # -- diffusers' config.json

    @classmethod
    def from_diffusers(cls, d: dict) -> WanVAEConfig:
        """From a diffusers vae/config.json. Missing keys take diffusers' defaults. Ignored:
        `dropout` (inference); `scale_factor_temporal` / `scale_factor_spatial`, which diffusers
        stores as hints (the factors follow from dim_mult, temperal_downsample and patch_size);
        `clip_output`, which Wan 2.2's config.json keeps from a diffusers pre-release (false) and
        diffusers itself has ignored since: decode always clamps, as in Wan's own code."""
        name = d.get("_class_name", "AutoencoderKLWan")
        if name != "AutoencoderKLWan":
            raise KinemaError(f"not a Wan VAE config: _class_name is {name!r}, expected 'AutoencoderKLWan'")
        ignored = {"dropout", "scale_factor_temporal", "scale_factor_spatial", "clip_output"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in known | ignored and not k.startswith("_"))
        if unknown:
            raise KinemaError(f"WanVAEConfig: unknown keys {unknown} in the diffusers config; known: {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        cells = (kw.get("patch_size") or 1) ** 2  # diffusers counts the channels after patchify
        for key in ("in_channels", "out_channels"):
            n = kw.get(key, 3)
            if n % cells:
                raise KinemaError(
                    f"WanVAEConfig: {key} {n} is not a multiple of patch_size^2 = {cells}; "
                    f"diffusers counts the channels after patchify (3 x {cells} for RGB)"
                )
            kw[key] = n // cells
        return cls(**kw)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # -- what the networks, VideoVAE and the pipeline read

    @property
    def decoder_dim(self) -> int:
        return self.decoder_base_dim or self.base_dim

    @property
    def patch(self) -> int:
        return self.patch_size or 1

    @property
    def latent_channels(self) -> int:
        return self.z_dim

    @property
    def latent_mean(self) -> tuple[float, ...] | None:
        return self.latents_mean

    @property
    def latent_std(self) -> tuple[float, ...] | None:
        return self.latents_std

    @property
    def spatial_factor(self) -> int:
        return self.patch * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample)


# ----------------------------------------------------------------------------------- layers

# Cache entry of a module that has seen the clip's first frame and keeps no frames (the
# reference's "Rep" state of the time upsampler).
_STARTED = torch.empty(0)


def _starts_clip(module: nn.Module, cache: Cache | None) -> bool:
    """Whether this call holds the clip's first frame (always, for a whole clip); marks it seen."""
    if cache is None:
        return True
    if module in cache:
        return False
    cache[module] = _STARTED
    return True


class WanCausalConv3d(nn.Conv3d):
    """A 3D convolution that sees only the present and the past in time.

    At the clip's start the past is 2 * padding_t frames of zeros; between chunks the cache keeps
    the input frames from where the next stride window starts (the last 2 for a 3-frame kernel,
    the last 1 for the stride-2 time downsampler), so chunks give the whole clip's output. Space
    is padded with zeros. An nn.Conv3d itself, so the weights keep diffusers' names.
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple, stride: int | tuple = 1, padding: int | tuple = 0):
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, ph, pw))
        self.past = 2 * pt

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        # x: (B, Cin, T, H, W)
        past = None if cache is None else cache.get(self)
        if past is None:  # the clip's start
            past = x.new_zeros(*x.shape[:2], self.past, *x.shape[3:])
        x = torch.cat([past, x], dim=2)  # (B, Cin, P + T, H, W)
        (kt, kh, kw), (st, sh, sw), (_, ph, pw) = self.kernel_size, self.stride, self.padding
        windows = max((x.shape[2] - kt) // st + 1, 0)
        if cache is not None:
            cache[self] = x[:, :, windows * st :].clone()  # clone: keep only these frames alive
        if windows == 0:  # not one full window yet: the time downsampler on the first frame alone
            h, w = (x.shape[3] + 2 * ph - kh) // sh + 1, (x.shape[4] + 2 * pw - kw) // sw + 1
            return x.new_zeros(x.shape[0], self.out_channels, 0, h, w)
        return super().forward(x)  # (B, Cout, T_out, H_out, W_out)


class WanRMSNorm(nn.Module):
    """x / ||x|| over channels * sqrt(C) * gamma at each position. gamma keeps the reference's
    shape: (C, 1, 1, 1) for videos, (C, 1, 1) for frames (images=True)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * (2 if images else 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=1).to(x.dtype) * self.scale * self.gamma


class WanResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = WanRMSNorm(cin)
        self.conv1 = WanCausalConv3d(cin, cout, 3, padding=1)
        self.norm2 = WanRMSNorm(cout)
        self.conv2 = WanCausalConv3d(cout, cout, 3, padding=1)
        self.conv_shortcut = WanCausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return h + self.conv_shortcut(x)  # kernel 1: no cache


class WanAttention(nn.Module):
    """Single-head self-attention over the positions of each frame; frames do not mix."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = WanRMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        q, k, v = rearrange(self.to_qkv(y), "n (three c) h w -> three n (h w) c", three=3)  # (B T, H W, C) each
        y = F.scaled_dot_product_attention(q, k, v)  # (B T, H W, C)
        y = self.proj(rearrange(y, "n (h w) c -> n c h w", h=h))  # (B T, C, H, W)
        return x + rearrange(y, "(b t) c h w -> b c t h w", b=b)


class WanResample(nn.Module):
    """Halve ("downsample2d") or double ("upsample2d") H and W with a 2D conv on each frame; the 3d
    modes also halve or double time with a causal time convolution.

    The clip's first frame skips the time step. Down (after the 2D conv): frame 0 alone, then
    frames (2j - 2, 2j - 1, 2j) -> j by a stride-2 conv, so 1 + 2m frames -> 1 + m. Up (before the
    2D conv): frame 0 as one frame, then every later frame -> 2 by a zero-padded causal conv over
    frames 1.. (it never sees frame 0), so 1 + m frames -> 1 + 2m. Upsampling maps the channels
    to `out_dim`: dim // 2 by default, as in Wan 2.1; Wan 2.2 keeps dim.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1)
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Conv2d(dim, dim, 3, stride=2)
        else:
            raise KinemaError(f"WanResample: unknown mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = WanCausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        if mode == "downsample3d":
            self.time_conv = WanCausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        # x: (B, C, T, H, W)
        if self.mode == "upsample3d":
            first = _starts_clip(self, cache)
            head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (x[:, :, :0], x)
            if rest.shape[2]:
                rest = self.time_conv(rest, cache)  # (B, 2C, T, H, W)
                rest = rearrange(rest, "b (two c) t h w -> b c (t two) h w", two=2)  # (B, C, 2T, H, W)
            x = torch.cat([head, rest], dim=2)
        t = x.shape[2]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        if self.mode.startswith("up"):
            x = F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)  # (B T, C, 2H, 2W)
            x = self.resample(x)  # (B T, C_out, 2H, 2W)
        else:
            x = self.resample(F.pad(x, (0, 1, 0, 1)))  # zeros right and bottom: (B T, C, H/2, W/2)
        x = rearrange(x, "(b t) c h w -> b c t h w", t=t)
        if self.mode == "downsample3d":
            head = x[:, :, :1] if _starts_clip(self, cache) else x[:, :, :0]
            x = torch.cat([head, self.time_conv(x, cache)], dim=2)  # (B, C, 1 + m or m, H/2, W/2)
        return x


class WanMidBlock(nn.Module):
    """Residual block, attention, residual block, at the lowest resolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.attentions = nn.ModuleList([WanAttention(dim)])
        self.resnets = nn.ModuleList([WanResBlock(dim, dim), WanResBlock(dim, dim)])

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attention(x), cache)
        return x


class WanAvgDown(nn.Module):
    """Wan 2.2's parameter-free shortcut around an encoder level (diffusers' AvgDown3D).

    Each output position gathers its ft x fs x fs block of input cells, all channels: C_in * ft *
    fs^2 values, ordered (channel, frame, row, column), which split into C_out groups of
    consecutive values; each output channel is its group's mean. In time (ft = 2) frame 0 pairs
    with a zero frame before it, then frames (2j - 1, 2j) -> j, so 1 + 2m frames -> 1 + m as in
    the level's downsampler; between chunks the cache keeps a frame left without its pair.
    """

    def __init__(self, cin: int, cout: int, factor_t: int, factor_s: int):
        super().__init__()
        self.ft, self.fs = factor_t, factor_s
        self.group = cin * factor_t * factor_s**2 // cout

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        # x: (B, Cin, T, H, W)
        if self.ft > 1:
            past = None if cache is None else cache.get(self)
            if past is None:  # the clip's start
                past = x.new_zeros(*x.shape[:2], self.ft - 1, *x.shape[3:])
            x = torch.cat([past, x], dim=2)  # (B, Cin, P + T, H, W)
            whole = x.shape[2] // self.ft * self.ft
            if cache is not None:
                cache[self] = x[:, :, whole:].clone()
            x = x[:, :, :whole]
        fs = self.fs
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=self.ft, fh=fs, fw=fs)
        return rearrange(x, "b (c g) t h w -> b c g t h w", g=self.group).mean(dim=2)  # (B, Cout, T/ft, H/fs, W/fs)


class WanDupUp(nn.Module):
    """Wan 2.2's parameter-free shortcut around a decoder level (diffusers' DupUp3D), the mirror
    of WanAvgDown: each input channel is copied into consecutive values of the (channel, frame,
    row, column) cells of its ft x fs x fs output block. In time the clip's frame 0 becomes one
    frame (the last of its ft), as in the level's upsampler."""

    def __init__(self, cin: int, cout: int, factor_t: int, factor_s: int):
        super().__init__()
        self.ft, self.fs = factor_t, factor_s
        self.repeats = cout * factor_t * factor_s**2 // cin

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        # x: (B, Cin, T, H, W)
        x = x.repeat_interleave(self.repeats, dim=1)  # (B, Cout ft fs fs, T, H, W)
        fs = self.fs
        x = rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=self.ft, fh=fs, fw=fs)
        if self.ft > 1 and _starts_clip(self, cache):
            x = x[:, :, self.ft - 1 :]
        return x  # (B, Cout, ft T (- ft + 1 at the clip's start), fs H, fs W)



# ---------------------------------------------------------------------- encoder, decoder


class WanResidualDownBlock(nn.Module):
    """Wan 2.2's encoder level: residual blocks, then (except at the last level) one WanResample,
    plus a WanAvgDown shortcut from the level's input to its output."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, downsample_mode: str | None):
        super().__init__()
        time = downsample_mode == "downsample3d"
        self.avg_shortcut = WanAvgDown(cin, cout, 2 if time else 1, 2 if downsample_mode else 1)
        self.resnets = nn.ModuleList([WanResBlock(cin if i == 0 else cout, cout) for i in range(num_res_blocks)])
        self.downsampler = WanResample(cout, downsample_mode) if downsample_mode else None

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        shortcut = self.avg_shortcut(x, cache)  # (B, C_out, T', H', W')
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class WanEncoder(nn.Module):
    """(B, 3 p^2, 1 + 4k, H/p, W/p) -> moments before quant_conv (B, 2 z, 1 + k, H/s, W/s).

    Wan 2.1: a flat list of residual blocks and WanResamples; Wan 2.2 (is_residual): one
    WanResidualDownBlock a level. The module names are diffusers'."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = WanCausalConv3d(cfg.in_channels * cfg.patch**2, dims[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            mode = None
            if level < len(cfg.dim_mult) - 1:
                mode = "downsample3d" if cfg.temperal_downsample[level] else "downsample2d"
            if cfg.is_residual:
                self.down_blocks.append(WanResidualDownBlock(cin, cout, cfg.num_res_blocks, mode))
                continue
            for _ in range(cfg.num_res_blocks):
                self.down_blocks.append(WanResBlock(cin, cout))
                cin = cout
            if mode:
                self.down_blocks.append(WanResample(cout, mode))
        self.mid_block = WanMidBlock(dims[-1])
        self.norm_out = WanRMSNorm(dims[-1])
        self.conv_out = WanCausalConv3d(dims[-1], 2 * cfg.z_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv_in(x, cache)  # (B, C0, T, H/p, W/p)
        for block in self.down_blocks:
            h = block(h, cache)  # down to (B, C_last, 1 + k, H/s, W/s)
        h = self.mid_block(h, cache)
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 2 z, 1 + k, H/s, W/s)


class WanUpBlock(nn.Module):
    """Wan 2.1's decoder level: num_res_blocks + 1 residual blocks, then (except at the top level)
    one WanResample, which halves the channels."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, upsample_mode: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            [WanResBlock(cin if i == 0 else cout, cout) for i in range(num_res_blocks + 1)]
        )
        self.upsamplers = nn.ModuleList([WanResample(cout, upsample_mode)]) if upsample_mode else None

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class WanResidualUpBlock(nn.Module):
    """Wan 2.2's decoder level: num_res_blocks + 1 residual blocks, then (except at the top level)
    one WanResample that keeps the channels, plus a WanDupUp shortcut from the level's input to
    its output."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, upsample_mode: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            [WanResBlock(cin if i == 0 else cout, cout) for i in range(num_res_blocks + 1)]
        )
        self.upsampler = self.avg_shortcut = None
        if upsample_mode:
            self.upsampler = WanResample(cout, upsample_mode, out_dim=cout)
            self.avg_shortcut = WanDupUp(cin, cout, 2 if upsample_mode == "upsample3d" else 1, 2)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        shortcut = None if self.avg_shortcut is None else self.avg_shortcut(x, cache)  # (B, C_out, T', 2H, 2W)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)
        return x if shortcut is None else x + shortcut


class WanDecoder(nn.Module):
    """Latent after post_quant_conv (B, z, 1 + k, h, w) -> (B, 3 p^2, 1 + 4k, s h / p, s w / p),
    not clamped. Wan 2.1: WanUpBlocks, Wan 2.2 (is_residual): WanResidualUpBlocks."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mults = cfg.dim_mult
        dims = [cfg.decoder_dim * m for m in (mults[-1], *reversed(mults))]
        temperal_upsample = cfg.temperal_downsample[::-1]
        self.conv_in = WanCausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = WanMidBlock(dims[0])
        self.up_blocks = nn.ModuleList()
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            mode = None
            if level < len(mults) - 1:
                mode = "upsample3d" if temperal_upsample[level] else "upsample2d"
            if cfg.is_residual:
                self.up_blocks.append(WanResidualUpBlock(cin, cout, cfg.num_res_blocks, mode))
                continue
            if level > 0:
                cin //= 2  # the previous level's upsampler halved the channels
            self.up_blocks.append(WanUpBlock(cin, cout, cfg.num_res_blocks, mode))
        self.norm_out = WanRMSNorm(dims[-1])
        self.conv_out = WanCausalConv3d(dims[-1], cfg.out_channels * cfg.patch**2, 3, padding=1)

    def forward(self, z: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv_in(z, cache)  # (B, C_last, 1 + k, h, w)
        h = self.mid_block(h, cache)
        for block in self.up_blocks:
            h = block(h, cache)  # up to (B, C0, 1 + 4k, s h / p, s w / p)
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 3 p^2, 1 + 4k, s h / p, s w / p)


# -------------------------------------------------------------------------------- the VAE


class WanVAE(VideoVAE):
    """Wan 2.1's or 2.2's VAE on Kinema's VideoVAE: `encode(x) -> DiagonalGaussian`, `decode(z) -> x`
    (clamped to [-1, 1]), `decode_stream`, with optional time chunks and spatial tiles."""

    config: WanVAEConfig

    def __init__(self, config: WanVAEConfig | None = None):
        super().__init__()
        self.config = config or WanVAEConfig()
        z = self.config.z_dim
        self.encoder = WanEncoder(self.config)
        self.quant_conv = WanCausalConv3d(2 * z, 2 * z, 1)
        self.post_quant_conv = WanCausalConv3d(z, z, 1)
        self.decoder = WanDecoder(self.config)

    def _encode_net(self, x: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        # patchify as the reference: channel c * p^2 + pw * p + ph (column offset before row offset)
        p = self.config.patch
        x = rearrange(x, "b c t (h ph) (w pw) -> b (c pw ph) t h w", ph=p, pw=p)  # (B, 3 p^2, T, H/p, W/p)
        return self.quant_conv(self.encoder(x, cache))  # (B, 2 z, T', H/s, W/s): mean, logvar

    def _decode_net(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        p = self.config.patch
        y = self.decoder(self.post_quant_conv(z), cache)  # (B, 3 p^2, T, s h / p, s w / p)
        y = rearrange(y, "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=p, pw=p)  # (B, 3, T, s h, s w)
        return y.clamp(-1.0, 1.0)

    @staticmethod
    def _splits(frames: int, first: int, rest: int | None) -> list[int]:
        """As the reference: the first frame always alone; then groups of `rest`, or all at once."""
        return VideoVAE._splits(frames, first, rest or max(frames - first, 1))


# -------------------------------------------------------------------------------- weights

# diffusers' parameter names -> ours. The module tree keeps diffusers' names (encoder.down_blocks,
# mid_block.resnets / attentions, decoder.up_blocks.i.resnets / upsamplers, quant_conv, ...; Wan
# 2.2's down_blocks.i.resnets / downsampler and up_blocks.i.resnets / upsampler; its shortcuts
# have no parameters) so this file reads beside autoencoder_kl_wan.py, and the causal convs are
# nn.Conv3d themselves. The one rename: the reference wraps each 2D resampling conv in
# nn.Sequential(pad or upsample, conv); here the pad / upsample is in WanResample.forward and
# `resample` is the conv.
DIFFUSERS_TO_KINEMA: tuple[tuple[str, str], ...] = (
    (".resample.1.", ".resample."),  # e.g. encoder.down_blocks.2.resample.1.weight -> ...resample.weight
)


def _rename(name: str) -> str:
    for theirs, ours in DIFFUSERS_TO_KINEMA:
        name = name.replace(theirs, ours)
    return name


def load_wan_vae(
    folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> WanVAE:
    """Load a diffusers AutoencoderKLWan folder (config.json + safetensors, sharded or not), or a
    model folder that holds one in vae/, in eval mode. dtype: None gives float32."""
    d = Path(folder)
    if not (d / "config.json").is_file() and (d / "vae" / "config.json").is_file():
        d = d / "vae"
    if not d.is_dir():
        raise KinemaError(
            f"no Wan VAE at {str(folder)!r}: give a diffusers AutoencoderKLWan folder "
            f"(config.json + safetensors weights), e.g. <Wan 2.1 or 2.2 diffusers model>/vae"
        )
    config = WanVAEConfig.from_diffusers(read_config(d))
    state = {_rename(k): v for k, v in load_state(d, device, dtype or torch.float32).items()}
    with torch.device("meta"):
        model = WanVAE(config)
    return assign_weights(model, state, f"the weights in {d} do not match its config.json").eval()
