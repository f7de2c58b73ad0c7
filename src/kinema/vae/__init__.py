"""The video compression network (causal 3D VAE) and its training losses.

    vae = CausalVAE(VAEConfig.tiny())            # or load_vae(directory_or_name)
    posterior = vae.encode(x)                   # x: (B, 3, 1 + 4k, H, W) in [-1, 1]
    z = posterior.sample(generator)             # (B, 16, 1 + k, H/8, W/8)
    y = vae.decode(z, chunk=1, tile=32)         # bounded memory: time chunks x spatial tiles
"""

from kinema.vae.losses import LossWeights, kl_loss, psnr, ssim, vae_loss
from kinema.vae.model import (
    PRESETS,
    CausalVAE,
    DiagonalGaussian,
    VAEConfig,
    compute_latent_stats,
    count_params,
    crop,
    load_vae,
    pad_to_multiple,
    save_vae,
)
from kinema.vae.wan import WanVAE, WanVAEConfig, load_wan_vae

__all__ = [
    "PRESETS",
    "CausalVAE",
    "DiagonalGaussian",
    "LossWeights",
    "VAEConfig",
    "WanVAE",
    "WanVAEConfig",
    "compute_latent_stats",
    "count_params",
    "crop",
    "kl_loss",
    "load_vae",
    "load_wan_vae",
    "pad_to_multiple",
    "psnr",
    "save_vae",
    "ssim",
    "vae_loss",
]
