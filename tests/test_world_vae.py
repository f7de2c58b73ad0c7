"""The shipped `world-vae`: it loads by name with no network, fits the package budget, and
reconstructs held-out Kinema World clips (never drawn in training) at trained and unseen sizes;
chunks and tiles of the trained model give what the whole clip gives."""

import torch

from kinema.vae import count_params, load_vae, psnr, ssim
from kinema.vae.model import SHIPPED_DIR
from kinema.vae.evaluate import held_out_clips

# Measured on the shipped weights (closing note of issue 4); the floors sit about 1 dB / 0.03
# under the measured values. The goal of the issue (32 dB) is not reached yet.
# The shipped weights on these 4 clips: 64x64 27.3 dB / SSIM 0.91, 160x96 30.0 dB / 0.95.
PSNR_FLOOR_DB = {(64, 64): 26.5, (96, 160): 29.0}
SSIM_FLOOR = 0.89


def reconstruct(vae, x: torch.Tensor, **kw) -> torch.Tensor:
    with torch.no_grad():
        posterior = vae.encode(x, **kw)
        return vae.decode(posterior.mode(), **kw).clamp(-1, 1)[..., : x.shape[-2], : x.shape[-1]]


def test_world_vae_ships_inside_the_package_as_safetensors():
    files = sorted(p.name for p in SHIPPED_DIR.glob("world-vae.*"))
    assert files == ["world-vae.json", "world-vae.safetensors"]
    assert (SHIPPED_DIR / "world-vae.safetensors").stat().st_size <= 20 * 2**20
    vae = load_vae("world-vae")
    cfg = vae.config
    assert (cfg.temporal_factor, cfg.spatial_factor, cfg.latent_channels) == (4, 8, 16)
    assert cfg.latent_mean is not None and cfg.latent_std is not None  # fitted for the DiT
    assert count_params(cfg) <= 5e6 and all(p.dtype == torch.float32 for p in vae.parameters())


def test_world_vae_reconstructs_held_out_clips():
    vae = load_vae("world-vae")
    for (h, w), floor in PSNR_FLOOR_DB.items():
        x = held_out_clips(4, 17, h, w)
        y = reconstruct(vae, x, chunk=1)
        assert float(psnr(y, x)) >= floor, (h, w)
        assert float(ssim(y, x)) >= SSIM_FLOOR, (h, w)


def test_trained_chunks_and_tiles_match_the_whole():
    vae = load_vae("world-vae")
    x = held_out_clips(1, 9, 128, 128)
    with torch.no_grad():
        whole = vae.encode(x).mode()
        assert (vae.encode(x, chunk=1).mode() - whole).abs().max() <= 1e-4
        tiled = vae.encode(x, tile=8).mode()
        y_whole = vae.decode(whole)
        assert (vae.decode(whole, chunk=1) - y_whole).abs().max() <= 1e-4
        y_tiled = vae.decode(whole, tile=8)
        y_of_tiled = vae.decode(tiled)
    # tiles blend without a visible seam: far above what anyone can see (~40 dB)
    assert float(psnr(y_tiled.clamp(-1, 1), y_whole.clamp(-1, 1))) >= 40
    assert float(psnr(y_of_tiled.clamp(-1, 1), y_whole.clamp(-1, 1))) >= 35
