"""Training losses and evaluation metrics of the VAE.

loss = l1 * |x - x_hat| * (1 + detail * D(x)) + mse * (x - x_hat)^2 + ssim * (1 - SSIM(x, x_hat))
       + kl * KL(q(z|x) || N(0, 1))

every term a mean (over pixels / latent elements), so weights do not depend on the clip size.
D(x) (`detail_map`) is large where the clip has edges or motion: the pixels of small and moving
objects, which a plain mean over a frame of sky and ground counts for almost nothing, and which
the temporal compression loses first.
The KL weight is small: it only keeps the latent from drifting in scale; `normalize_latent`
fixes the scale for the diffusion model afterwards.

`psnr` and `ssim` take images (B, C, H, W) or videos (B, C, T, H, W; frames are scored one by
one) and the `value_range` of their values: (-1, 1), the VAE's range, by default; (0, 1) or
(0, 255) for other images. Values are mapped to [0, 1] first, so a pair scores the same in every
range (SSIM's luminance term assumes non-negative intensities). They do not clamp: clamp a
reconstruction to the range first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from kinema.vae.model import DiagonalGaussian


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W); images pass through."""
    return rearrange(x, "b c t h w -> (b t) c h w") if x.ndim == 5 else x


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size)  # (C, 1, k, k), depthwise


def _unit(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = value_range
    return (x.float() - lo) / (hi - lo)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    window: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a gaussian window, differentiable.

    x, y: (B, C, H, W) or (B, C, T, H, W). Returns the mean over frames, pixels and channels:
    a scalar ("mean") or one value per batch item ("none", shape (B,)). 1 means identical.
    The window shrinks (odd, <= the frame) for frames smaller than `window`.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    batch = x.shape[0]
    xf, yf = _frames(_unit(x, value_range)), _frames(_unit(y, value_range))  # (N, C, H, W) in [0, 1]
    c = xf.shape[1]
    k = min(window, xf.shape[-2], xf.shape[-1])
    k -= 1 - k % 2  # odd
    win = _gaussian_window(k, sigma, c, xf.device, xf.dtype)
    blur = lambda t: F.conv2d(t, win, groups=c)  # noqa: E731  'valid': no padding effects
    mu_x, mu_y = blur(xf), blur(yf)
    var_x = blur(xf * xf) - mu_x**2
    var_y = blur(yf * yf) - mu_y**2
    cov = blur(xf * yf) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2  # (K * data_range)^2 with data_range 1
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per_item = s.reshape(batch, -1).mean(dim=1)  # (B,)
    return per_item.mean() if reduction == "mean" else per_item


def psnr(
    x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0), reduction: str = "mean"
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, from the MSE over each batch item (all frames together).

    Capped at 100 dB for identical inputs. Returns the mean over the batch ("mean") or (B,) ("none").
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (_unit(x, value_range) - _unit(y, value_range)).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    per_item = -10.0 * torch.log10(mse)  # (B,), peak 1 after mapping to [0, 1]
    return per_item.mean() if reduction == "mean" else per_item


def detail_map(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) or (B, C, H, W) in [-1, 1] -> (B, 1, T, H, W) or (B, 1, H, W), >= 0.

    Edges (each pixel's distance from the mean of its 3 x 3 neighbourhood) plus motion (its change
    from the previous frame; none for a clip's first frame), averaged over channels, then spread
    over a 3 x 3 neighbourhood (max) so the pixels a blurred edge spills onto count too. Flat sky
    and still ground give 0; the rim of a one-colour object on a contrasting ground about 1 - 2.
    """
    video = x.ndim == 5
    b = x.shape[0]
    f = _frames(x.float())  # (N, C, H, W)
    edge = (f - F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)).abs().mean(1, keepdim=True)
    if video:
        edge = rearrange(edge, "(b t) one h w -> b one t h w", b=b)
        motion = (x[:, :, 1:] - x[:, :, :-1]).float().abs().mean(1, keepdim=True)  # (B, 1, T - 1, H, W)
        edge = edge + F.pad(motion, (0, 0, 0, 0, 1, 0))  # frame 0 has no previous frame
        return F.max_pool3d(edge, (1, 3, 3), stride=1, padding=(0, 1, 1))
    return F.max_pool2d(edge, 3, stride=1, padding=1)


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """KL(q(z|x) || N(0, 1)), mean over latent elements and batch."""
    return posterior.kl().mean()


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    mse: float = 0.0
    ssim: float = 0.2
    kl: float = 1e-4
    detail: float = 0.0  # extra L1 weight per unit of `detail_map` (0: a plain mean)


def vae_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    posterior: DiagonalGaussian,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss on clips in [-1, 1] and its parts (floats, for logging)."""
    err = recon - x
    l1, mse = err.abs().mean(), err.pow(2).mean()
    fit = (err.abs() * (1.0 + weights.detail * detail_map(x))).mean() if weights.detail else l1
    s = ssim(recon, x) if weights.ssim else torch.ones((), device=x.device)
    kl = kl_loss(posterior)
    loss = weights.l1 * fit + weights.mse * mse + weights.ssim * (1.0 - s) + weights.kl * kl
    parts = {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "ssim": s.item(), "kl": kl.item()}
    return loss, parts
