"""Wan 2.1's video VAE (diffusers `AutoencoderKLWan`) as a Kinema VAE.

    vae = load_wan_vae("Wan2.1-T2V-1.3B-Diffusers/vae")   # or the model folder that holds vae/
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
- H, W that are not multiples of 8 are padded by edge replication, as for CausalVAE (the
  reference has no rule for them); `crop(y, posterior.size)` cuts back.

Not supported yet: Wan 2.2's VAE (is_residual: the avg/dup shortcuts around each resolution
change, and patch_size). They would add a shortcut beside `WanResample` in the encoder and
decoder blocks; the config rejects them with a KinemaError until then.
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
from kinema.models.hf import load_state, read_config
from kinema.vae.model import Cache, LatentGeometry, VideoVAE

# The per-channel latent statistics of Wan 2.1 (diffusers' defaults for AutoencoderKLWan).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


# ----------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class WanVAEConfig(LatentGeometry):
    """Shape of a Wan VAE, field for field as diffusers' vae/config.json (defaults: Wan 2.1).

    dim_mult: one entry a resolution level (base_dim * m channels); every level but the last
        halves H and W. temperal_downsample: one flag a downsampling step, whether it also
        halves time (diffusers' spelling). attn_scales: must be empty, as in Wan 2.1 (the reference
        would put attention after the encoder's residual blocks at those scales, but cannot run
        it). latents_mean / latents_std: per-channel latent statistics for `normalize_latent`.
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
    is_residual: bool = False  # Wan 2.2
    patch_size: int | None = None  # Wan 2.2

    def __post_init__(self) -> None:
        if self.is_residual or self.patch_size is not None:
            raise KinemaError(
                "WanVAEConfig: Wan 2.2's VAE (is_residual / patch_size) is not supported yet; "
                "only Wan 2.1's (is_residual false, patch_size null)"
            )
        if self.attn_scales:
            raise KinemaError(
                "WanVAEConfig: attn_scales must be empty (as in Wan 2.1): diffusers' reference cannot "
                "run attention between the encoder's residual blocks either"
            )
        if not self.dim_mult or len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise KinemaError(
                f"WanVAEConfig: temperal_downsample needs one flag per downsampling step "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1}); got {len(self.temperal_downsample)}"
            )
        if self.in_channels != self.out_channels:
            raise KinemaError(f"WanVAEConfig: in_channels {self.in_channels} != out_channels {self.out_channels}")
        for name in ("latents_mean", "latents_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != self.z_dim:
                raise KinemaError(f"WanVAEConfig: {name} needs {self.z_dim} values (z_dim); got {len(stats)}")
        if self.latents_std is not None and min(self.latents_std) <= 0:
            raise KinemaError("WanVAEConfig: latents_std must be > 0 in every channel")

    @classmethod
    def from_diffusers(cls, d: dict) -> WanVAEConfig:
        """From a diffusers vae/config.json. Missing keys take diffusers' defaults; `dropout` is
        ignored (inference), and so are `scale_factor_temporal` / `scale_factor_spatial`, which
        diffusers stores as hints: the factors follow from dim_mult and temperal_downsample."""
        name = d.get("_class_name", "AutoencoderKLWan")
        if name != "AutoencoderKLWan":
            raise KinemaError(f"not a Wan VAE config: _class_name is {name!r}, expected 'AutoencoderKLWan'")
        ignored = {"dropout", "scale_factor_temporal", "scale_factor_spatial"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in known | ignored and not k.startswith("_"))
        if unknown:
            raise KinemaError(f"WanVAEConfig: unknown keys {unknown} in the diffusers config; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # -- what VideoVAE and the pipeline read

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
        return 2 ** (len(self.dim_mult) - 1)

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
    frames 1.. (it never sees frame 0), so 1 + m frames -> 1 + 2m. Upsampling halves the channels
    (to `out_dim`, default dim // 2), as in Wan 2.1.
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


# ---------------------------------------------------------------------- encoder, decoder


class WanEncoder(nn.Module):
    """(B, 3, 1 + 4k, H, W) -> moments before quant_conv (B, 2 z, 1 + k, H/8, W/8)."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = WanCausalConv3d(cfg.in_channels, dims[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                self.down_blocks.append(WanResBlock(cin, cout))
                cin = cout
            if level < len(cfg.dim_mult) - 1:
                mode = "downsample3d" if cfg.temperal_downsample[level] else "downsample2d"
                self.down_blocks.append(WanResample(cout, mode))
        self.mid_block = WanMidBlock(dims[-1])
        self.norm_out = WanRMSNorm(dims[-1])
        self.conv_out = WanCausalConv3d(dims[-1], 2 * cfg.z_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv_in(x, cache)  # (B, C0, T, H, W)
        for block in self.down_blocks:
            h = block(h, cache)  # down to (B, C_last, 1 + k, H/8, W/8)
        h = self.mid_block(h, cache)
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 2 z, 1 + k, H/8, W/8)


class WanUpBlock(nn.Module):
    """num_res_blocks + 1 residual blocks, then (except at the top level) one WanResample."""

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


class WanDecoder(nn.Module):
    """Latent after post_quant_conv (B, z, 1 + k, h, w) -> (B, 3, 1 + 4k, 8h, 8w), not clamped."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mults = cfg.dim_mult
        dims = [(cfg.decoder_base_dim or cfg.base_dim) * m for m in (mults[-1], *reversed(mults))]
        temperal_upsample = cfg.temperal_downsample[::-1]
        self.conv_in = WanCausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = WanMidBlock(dims[0])
        self.up_blocks = nn.ModuleList()
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if level > 0:
                cin //= 2  # the previous level's upsampler halved the channels
            mode = None
            if level < len(mults) - 1:
                mode = "upsample3d" if temperal_upsample[level] else "upsample2d"
            self.up_blocks.append(WanUpBlock(cin, cout, cfg.num_res_blocks, mode))
        self.norm_out = WanRMSNorm(dims[-1])
        self.conv_out = WanCausalConv3d(dims[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv_in(z, cache)  # (B, C_last, 1 + k, h, w)
        h = self.mid_block(h, cache)
        for block in self.up_blocks:
            h = block(h, cache)  # up to (B, C0, 1 + 4k, 8h, 8w)
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 3, 1 + 4k, 8h, 8w)


# -------------------------------------------------------------------------------- the VAE


class WanVAE(VideoVAE):
    """Wan 2.1's VAE on Kinema's VideoVAE: `encode(x) -> DiagonalGaussian`, `decode(z) -> x`
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
        return self.quant_conv(self.encoder(x, cache))  # (B, 2 z, T', H/8, W/8): mean, logvar

    def _decode_net(self, z: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z), cache).clamp(-1.0, 1.0)  # (B, 3, T, 8h, 8w)

    @staticmethod
    def _splits(frames: int, first: int, rest: int | None) -> list[int]:
        """As the reference: the first frame always alone; then groups of `rest`, or all at once."""
        return VideoVAE._splits(frames, first, rest or max(frames - first, 1))


# -------------------------------------------------------------------------------- weights

# diffusers' parameter names -> ours. The module tree keeps diffusers' names (encoder.down_blocks,
# mid_block.resnets / attentions, decoder.up_blocks.i.resnets / upsamplers, quant_conv, ...) so
# this file reads beside autoencoder_kl_wan.py, and the causal convs are nn.Conv3d themselves.
# The one rename: the reference wraps each 2D resampling conv in nn.Sequential(pad or upsample,
# conv); here the pad / upsample is in WanResample.forward and `resample` is the conv.
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
            f"(config.json + safetensors weights), e.g. <Wan2.1 diffusers model>/vae"
        )
    config = WanVAEConfig.from_diffusers(read_config(d))
    state = {_rename(k): v for k, v in load_state(d, device, dtype or torch.float32).items()}
    with torch.device("meta"):
        model = WanVAE(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise KinemaError(f"the weights in {d} do not match its config.json: {e}") from None
    return model.eval()
