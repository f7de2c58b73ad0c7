"""Wan 2.1's and Wan 2.2's VAEs on Kinema's VideoVAE equal diffusers' AutoencoderKLWan (the test
oracle): encode mean and logvar, decode, chunked encode and decode_stream; the loader's errors and
the latent normalisation. Tiny random models; every parameter perturbed so a wrong mapping cannot
hide."""

import json

import pytest
import torch
import torch.nn.functional as F

from kinema.errors import KinemaError
from kinema.vae import WanVAE, WanVAEConfig, load_wan_vae

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402

TOL = 1e-4

# name -> diffusers config: Wan 2.1's layout shrunk, and variants (z_dim 16 with three levels:
# spatial factor 4; time halved at the top level only: temporal factor 2, with mixed widths);
# Wan 2.2 TI2V-5B's layout shrunk (is_residual, patch_size 2, wider decoder: 4x16x16, 48
# channels), and its two options apart: the shortcuts without patches, time halved at the top
# level (where the encoder's shortcut averages frames at full resolution); patches in Wan 2.1's
# network.
CONFIGS = {
    "wan21": dict(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
    ),
    "z16_three_levels": dict(
        base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
    ),
    "time_x2": dict(
        base_dim=4, z_dim=4, dim_mult=[1, 2, 1, 2], num_res_blocks=2, temperal_downsample=[True, False, False],
    ),
    "wan22": dict(
        base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
        temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12, out_channels=12,
    ),
    "residual_only": dict(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True], is_residual=True,
    ),
    "patch_only": dict(
        base_dim=4, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True], patch_size=2,
        in_channels=12, out_channels=12,
    ),
}  # fmt: skip


def build_reference(name: str, seed: int = 0) -> AutoencoderKLWan:
    cfg = dict(CONFIGS[name])
    g = torch.Generator().manual_seed(seed)
    z = cfg["z_dim"]
    cfg["latents_mean"] = (torch.randn(z, generator=g) * 0.5).tolist()
    cfg["latents_std"] = (torch.rand(z, generator=g) + 0.5).tolist()
    ref = AutoencoderKLWan(**cfg).eval()
    with torch.no_grad():  # the reference init leaves some weights at zero and every gamma at one
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return ref


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (reference, ours loaded from the reference's save_pretrained folder)."""
    out = {}
    for name in CONFIGS:
        ref = build_reference(name)
        folder = tmp_path_factory.mktemp(name)
        ref.save_pretrained(folder)
        out[name] = (ref, load_wan_vae(folder))
    return out


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    diff = (ours - theirs).abs().max().item()
    print(f"{what}: max abs diff {diff:.2e}")
    assert diff <= TOL, (what, diff)


def video(frames: int, height: int = 24, width: int = 40, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


def latent(frames: int, z: int, height: int = 3, width: int = 5, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, z, frames, height, width, generator=g)


def test_config_reads_diffusers_and_derives_the_sizes(models):
    ref, ours = models["wan21"]
    cfg = ours.config
    assert isinstance(cfg, WanVAEConfig) and cfg.dim_mult == (1, 2, 2, 2) and cfg.attn_scales == ()
    assert (cfg.in_channels, cfg.latent_channels, cfg.temporal_factor, cfg.spatial_factor) == (3, 4, 4, 8)
    assert cfg.num_frames(3) == 9 and cfg.latent_shape(9, 24, 36) == (4, 3, 3, 5)
    assert cfg.latent_mean == tuple(ref.config.latents_mean)
    assert models["time_x2"][1].config.temporal_factor == 2
    assert models["z16_three_levels"][1].config.spatial_factor == 4
    default = WanVAEConfig()  # Wan 2.1's own layout and statistics
    assert default.latent_channels == 16 and len(default.latent_mean) == 16
    assert (default.temporal_factor, default.spatial_factor) == (4, 8)


@pytest.mark.parametrize("frames", [1, 5, 9, 13, 17])
def test_encode_matches_reference(models, frames):
    ref, ours = models["wan21"]
    x = video(frames)
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist
        posterior = ours.encode(x)
    assert_close(posterior.mean, theirs.mean, f"encode mean, {frames} frames")
    assert_close(posterior.logvar, theirs.logvar, f"encode logvar, {frames} frames")
    assert posterior.size == (frames, 24, 40)


@pytest.mark.parametrize("name", ["z16_three_levels", "time_x2", "residual_only", "patch_only"])
def test_encode_matches_reference_in_other_layouts(models, name):
    ref, ours = models[name]
    for frames in (1, 9):
        x = video(frames, 16, 24)
        with torch.no_grad():
            theirs = ref.encode(x).latent_dist
            posterior = ours.encode(x)
        assert_close(posterior.mean, theirs.mean, f"{name} encode mean, {frames} frames")
        assert_close(posterior.logvar, theirs.logvar, f"{name} encode logvar, {frames} frames")


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 5])
def test_decode_matches_reference(models, latent_frames):
    ref, ours = models["wan21"]
    z = latent(latent_frames, 4)
    with torch.no_grad():
        theirs = ref.decode(z).sample
        y = ours.decode(z)
    assert_close(y, theirs, f"decode, {latent_frames} latent frames")
    assert y.shape[2] == 1 + 4 * (latent_frames - 1)
    assert y.abs().max() <= 1.0  # clamped, as the reference
    assert (y.abs() < 0.99).float().mean() > 0.5  # and mostly not saturated: the comparison means something


@pytest.mark.parametrize("name", ["z16_three_levels", "time_x2"])
def test_decode_matches_reference_in_other_layouts(models, name):
    ref, ours = models[name]
    z = latent(3, ours.config.z_dim)
    with torch.no_grad():
        assert_close(ours.decode(z), ref.decode(z).sample, f"{name} decode, 3 latent frames")


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_encode_matches_reference(models, chunk):
    ref, ours = models["wan21"]
    x = video(13)
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist
        posterior = ours.encode(x, chunk=chunk)
    assert_close(posterior.mean, theirs.mean, f"encode chunk={chunk}, mean")
    assert_close(posterior.logvar, theirs.logvar, f"encode chunk={chunk}, logvar")


@pytest.mark.parametrize("chunk", [1, 2])
def test_decode_stream_matches_reference(models, chunk):
    ref, ours = models["wan21"]
    z = latent(5, 4)
    with torch.no_grad():
        theirs = ref.decode(z).sample
        pieces = list(ours.decode_stream(z, chunk=chunk))
    assert [p.shape[2] for p in pieces] == [1] + [4 * chunk] * (4 // chunk)
    assert_close(torch.cat(pieces, dim=2), theirs, f"decode_stream chunk={chunk}")


def test_whole_clip_call_equals_reference(models):
    """The networks also take a whole clip in one call (cache None): the first frame's special
    case lives in the layers, not only in how the VAE splits time."""
    ref, ours = models["wan21"]
    x, z = video(9), latent(3, 4)
    with torch.no_grad():
        moments = ours._encode_net(x, None)
        theirs = ref.encode(x).latent_dist
        assert_close(moments[:, :4], theirs.mean, "encoder net, whole clip")
        assert_close(ours._decode_net(z, None), ref.decode(z).sample, "decoder net, whole clip")
        assert_close(ours._encode_net(x, {}), moments, "encoder net, one chunk with a cache")


def test_sizes_not_a_multiple_of_8_are_padded_by_edge_replication(models):
    ref, ours = models["wan21"]
    x = video(5, 20, 36)
    with torch.no_grad():
        theirs = ref.encode(F.pad(x, (0, 4, 0, 4, 0, 0), mode="replicate")).latent_dist
        posterior = ours.encode(x)
    assert posterior.size == (5, 20, 36)
    assert_close(posterior.mean, theirs.mean, "encode 20x36 (padded to 24x40), mean")


def test_tiles_give_the_right_shapes(models):
    _, ours = models["wan21"]
    with torch.no_grad():
        assert ours.encode(video(5, 32, 48), tile=3, overlap=1).mean.shape == (1, 4, 2, 4, 6)
        assert ours.decode(latent(2, 4, 4, 6), chunk=1, tile=3, overlap=1).shape == (1, 3, 5, 32, 48)


def test_latent_normalisation_round_trip(models):
    ref, ours = models["wan21"]
    z = latent(2, 4)
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    zn = ours.normalize_latent(z)
    assert_close(zn, (z - mean) / std, "normalize_latent vs (z - latents_mean) / latents_std")
    assert_close(ours.denormalize_latent(zn), z, "denormalize(normalize(z))")


def test_model_folder_with_vae_subfolder_and_dtype(models, tmp_path):
    ref, _ = models["z16_three_levels"]
    ref.save_pretrained(tmp_path / "vae")
    vae = load_wan_vae(tmp_path, dtype=torch.bfloat16)
    assert isinstance(vae, WanVAE) and vae.dtype == torch.bfloat16 and not vae.training


def test_wrong_folders_are_kinema_errors(models, tmp_path):
    ref, _ = models["wan21"]
    with pytest.raises(KinemaError, match="no Wan VAE"):
        load_wan_vae(tmp_path / "missing")
    with pytest.raises(KinemaError, match="config.json is missing"):
        load_wan_vae(tmp_path)
    ref.save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderKL"}))
    with pytest.raises(KinemaError, match="not a Wan VAE"):
        load_wan_vae(tmp_path / "other")

    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(KinemaError, match="no safetensors"):
        load_wan_vae(tmp_path / "other")

    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, "base_dim": 16}))
    with pytest.raises(KinemaError, match="do not match"):
        load_wan_vae(tmp_path / "vae")

    with pytest.raises(KinemaError, match="multiple of patch_size"):  # diffusers counts channels after patchify
        WanVAEConfig.from_diffusers({**config, "patch_size": 2})
    with pytest.raises(KinemaError, match="is_residual needs each encoder level"):
        WanVAEConfig.from_diffusers({**config, "is_residual": True, "dim_mult": [1, 2, 3, 3]})
    with pytest.raises(KinemaError, match="is_residual needs each decoder level"):
        WanVAEConfig.from_diffusers({**config, "is_residual": True, "dim_mult": [1, 1, 8, 8]})
    with pytest.raises(KinemaError, match="patch_size"):
        WanVAEConfig(patch_size=0)
    with pytest.raises(KinemaError, match="attn_scales"):
        WanVAEConfig.from_diffusers({**config, "attn_scales": [1.0]})
    with pytest.raises(KinemaError, match="unknown keys"):
        WanVAEConfig.from_diffusers({**config, "new_flag": 1})


def test_tiled_decode_goes_tile_major_and_equals_the_tiled_stream(tmp_path):
    """decode(tile=...) runs one tile through the whole clip at a time (one tile's caches alive);
    it gives the video that decode_stream's time-major tiles give."""
    from kinema.vae import CausalVAE, VAEConfig

    torch.manual_seed(0)
    for vae in (CausalVAE(VAEConfig.tiny()).eval(), WanVAE(WanVAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2, 2), latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4))):
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        C = vae.config.latent_channels
        z = torch.randn(1, C, 4, 10, 14)
        with torch.inference_mode():
            major = vae.decode(z, chunk=1, tile=6, overlap=2)
            stream = torch.cat(list(vae.decode_stream(z, chunk=1, tile=6, overlap=2)), dim=2)
        assert major.shape == stream.shape == (1, 3, 13, 80, 112)
        assert (major - stream).abs().max().item() <= 1e-5


# ------------------------------------------------------------------------------------ Wan 2.2

# Wan2.2-TI2V-5B-Diffusers/vae/config.json but its 48 latents_mean / latents_std (clip_output is a
# leftover of a diffusers pre-release that diffusers now ignores; in/out channels count the
# patchified input).
TI2V_5B = dict(
    _class_name="AutoencoderKLWan", attn_scales=[], base_dim=160,
    clip_output=False, decoder_base_dim=256, dim_mult=[1, 2, 4, 4], dropout=0.0, in_channels=12, is_residual=True,
    num_res_blocks=2, out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
    temperal_downsample=[False, True, True], z_dim=48,
)  # fmt: skip


def test_the_ti2v_5b_config_is_the_wan22_preset_and_loads_strictly():
    """The published config reads as `WanVAEConfig.wan22()`, whose geometry is 4x16x16 in 48
    channels, and whose parameters are the reference's by name and shape (both built on meta)."""
    from kinema.vae.wan import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, _rename

    stats = dict(latents_mean=list(WAN22_LATENTS_MEAN), latents_std=list(WAN22_LATENTS_STD))
    cfg = WanVAEConfig.from_diffusers({**TI2V_5B, **stats})
    assert cfg == WanVAEConfig.wan22()
    assert (cfg.in_channels, cfg.latent_channels, cfg.temporal_factor, cfg.spatial_factor) == (3, 48, 4, 16)
    assert cfg.latent_shape(121, 704, 1280) == (48, 31, 44, 80) and cfg.num_frames(31) == 121
    with torch.device("meta"):
        ours = WanVAE(cfg).state_dict()
        theirs = AutoencoderKLWan(**{k: v for k, v in TI2V_5B.items() if not k.startswith("_") and k != "clip_output"},
                                  **stats).state_dict()  # fmt: skip
    assert {_rename(k): tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_wan22_config_reads_diffusers_and_derives_the_sizes(models):
    ref, ours = models["wan22"]
    cfg = ours.config
    assert cfg.is_residual and cfg.patch_size == 2 and cfg.decoder_base_dim == 12
    assert (cfg.in_channels, cfg.out_channels) == (3, 3)  # diffusers' 12: 3 x 2 x 2 after patchify
    assert (cfg.latent_channels, cfg.temporal_factor, cfg.spatial_factor) == (48, 4, 16)
    assert cfg.latent_shape(17, 64, 96) == (48, 5, 4, 6)
    assert cfg.latent_mean == tuple(ref.config.latents_mean) and cfg.latent_std == tuple(ref.config.latents_std)
    assert models["residual_only"][1].config.spatial_factor == 4
    assert models["patch_only"][1].config.spatial_factor == 8


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_wan22_encode_matches_reference(models, frames):
    ref, ours = models["wan22"]
    x = video(frames, 64, 96)
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist
        posterior = ours.encode(x)
    assert_close(posterior.mean, theirs.mean, f"wan22 encode mean, {frames} frames")
    assert_close(posterior.logvar, theirs.logvar, f"wan22 encode logvar, {frames} frames")
    assert posterior.size == (frames, 64, 96)


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 5])
def test_wan22_decode_matches_reference(models, latent_frames):
    ref, ours = models["wan22"]
    z = latent(latent_frames, 48, 4, 6)
    with torch.no_grad():
        theirs = ref.decode(z).sample
        y = ours.decode(z)
    assert_close(y, theirs, f"wan22 decode, {latent_frames} latent frames")
    assert y.shape == (1, 3, 1 + 4 * (latent_frames - 1), 64, 96)
    assert (y.abs() < 0.99).float().mean() > 0.5  # mostly not saturated: the comparison means something


@pytest.mark.parametrize("name", ["residual_only", "patch_only"])
def test_wan22_options_apart_decode_as_the_reference(models, name):
    """Each of Wan 2.2's options alone (their encode: `test_encode_matches_reference_in_other_layouts`)."""
    ref, ours = models[name]
    s = ours.config.spatial_factor
    z = latent(3, ours.config.z_dim, 16 // s, 24 // s)
    with torch.no_grad():
        assert_close(ours.decode(z), ref.decode(z).sample, f"{name} decode, 3 latent frames")


@pytest.mark.parametrize("chunk", [1, 2])
def test_wan22_chunked_encode_and_decode_stream_match_reference(models, chunk):
    ref, ours = models["wan22"]
    x, z = video(13, 32, 48), latent(5, 48, 2, 3)
    with torch.no_grad():
        theirs = ref.encode(x).latent_dist
        posterior = ours.encode(x, chunk=chunk)
        decoded = ref.decode(z).sample
        pieces = list(ours.decode_stream(z, chunk=chunk))
    assert_close(posterior.mean, theirs.mean, f"wan22 encode chunk={chunk}, mean")
    assert_close(posterior.logvar, theirs.logvar, f"wan22 encode chunk={chunk}, logvar")
    assert [p.shape[2] for p in pieces] == [1] + [4 * chunk] * (4 // chunk)
    assert_close(torch.cat(pieces, dim=2), decoded, f"wan22 decode_stream chunk={chunk}")


def test_wan22_whole_clip_call_equals_reference(models):
    """The shortcuts' first-frame rule also lives in the layers: one call on a whole clip."""
    ref, ours = models["wan22"]
    x, z = video(9, 32, 48), latent(3, 48, 2, 3)
    with torch.no_grad():
        moments = ours._encode_net(x, None)
        assert_close(moments[:, :48], ref.encode(x).latent_dist.mean, "wan22 encoder net, whole clip")
        assert_close(ours._decode_net(z, None), ref.decode(z).sample, "wan22 decoder net, whole clip")
        assert_close(ours._encode_net(x, {}), moments, "wan22 encoder net, one chunk with a cache")


def test_wan22_pads_sizes_to_16_tiles_and_normalises(models):
    ref, ours = models["wan22"]
    x = video(5, 40, 72)  # padded to 48 x 80: a multiple of 16 is enough
    with torch.no_grad():
        theirs = ref.encode(F.pad(x, (0, 8, 0, 8, 0, 0), mode="replicate")).latent_dist
        posterior = ours.encode(x)
        assert posterior.size == (5, 40, 72)
        assert_close(posterior.mean, theirs.mean, "wan22 encode 40x72 (padded to 48x80), mean")
        assert ours.encode(video(5, 64, 96), tile=3, overlap=1).mean.shape == (1, 48, 2, 4, 6)
        assert ours.decode(latent(2, 48, 4, 6), chunk=1, tile=3, overlap=1).shape == (1, 3, 5, 64, 96)
    z = latent(2, 48, 2, 3)
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    assert_close(ours.normalize_latent(z), (z - mean) / std, "wan22 normalize_latent")


def test_tiny_wan22_reference_folder_loads_and_matches(tmp_path):
    """tests/wan_reference.py's tiny Wan 2.2 VAE (the pipeline tests' VAE), saved and loaded."""
    from tests.wan_reference import tiny_vae_22

    ref = tiny_vae_22(channels=8, seed=3)
    ref.save_pretrained(tmp_path / "vae")
    ours = load_wan_vae(tmp_path)
    assert (ours.config.latent_channels, ours.config.spatial_factor) == (8, 16)
    x, z = video(5, 32, 64), latent(2, 8, 2, 4)
    with torch.no_grad():
        assert_close(ours.encode(x).mean, ref.encode(x).latent_dist.mean, "tiny_vae_22 encode mean, 5 frames")
        assert_close(ours.decode(z), ref.decode(z).sample, "tiny_vae_22 decode, 2 latent frames")
