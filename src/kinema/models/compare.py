"""`kinema bench compare`: the same Wan weights in Kinema and in the reference (diffusers), side by side.

    rows = compare("wan2.1-1.3b", width=256, height=256, frames=17, dtype="bfloat16")

A denoising step is what the reference WanPipeline takes: a conditional and an unconditional
forward, guidance applied (Kinema runs the two rows through its own `make_model_fn`). Seconds
come from one process that holds both models and alternates their steps (after a warm-up step
each), so that the machine's drift over minutes falls on both sides alike; the median of each
side's steps is reported. Peak memory comes from a fresh process per side: load, then a step
(resp. a VAE decode of a latent of the asked size), its peak resident set after the load
(Linux VmHWM, reset once the weights are in). The outputs of that step (the guided velocity)
and of the decode are compared between the sides.

A named config (`wan2.1-1.3b`, `wan2.1-14b`, `wan2.2-ti2v-5b`, `tiny`) is built with random weights by the
reference classes and saved once in a temporary folder in the asked dtype, so the bench needs no
download; a Wan folder (model_index.json) is used as it is. diffusers is needed (a development
extra: `pip install -e '.[dev]'`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kinema.errors import KinemaError

# WanTransformer3DModel arguments of the published Wan 2.1 text-to-video models, and their VAE
WAN_CONFIGS = {
    "wan2.1-1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "wan2.1-14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    "wan2.2-ti2v-5b": dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30,
                           in_channels=48, out_channels=48),  # fmt: skip
    "tiny": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=64),
}
WAN_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True])  # fmt: skip
# Wan 2.2's VAE (TI2V-5B): 4x16x16 into 48 channels, residual shortcuts, a 2x2 patchified input
WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 attn_scales=[], temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                 out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48)  # fmt: skip
TINY_VAE = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True])  # fmt: skip
VAES = {"wan2.2-ti2v-5b": WAN22_VAE, "tiny": TINY_VAE}  # the others: WAN_VAE
TEXT_TOKENS = 512  # Wan's caption length: every caption is padded to it


def _reference():
    try:
        import diffusers
    except ImportError:
        raise KinemaError("bench compare needs diffusers (the reference): pip install -e '.[dev]'") from None
    return diffusers


def _random_fill(module: torch.nn.Module, dtype: torch.dtype, seed: int) -> None:
    """Weights for a model built on the meta device: N(0, 0.02) matrices, norms near 1, tables
    like the reference's init, drawn fast and in the target dtype."""
    g = torch.Generator().manual_seed(seed)
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in module.named_parameters():
            x = torch.randn(p.shape, generator=g) * 0.02
            if "norm" in name and p.ndim == 1:
                x += 1.0
            elif "scale_shift_table" in name:
                x = torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5
            p.data = x.to(dtype)


def make_random_folder(name: str, root: Path, dtype: torch.dtype, seed: int = 0, transformer: bool = True,
                       layers: int | None = None) -> Path:  # fmt: skip
    """Save a named Wan config's transformer/ (unless told not to; `layers` of its blocks, default
    all) and vae/ with random weights under root."""
    d = _reference()
    if name not in WAN_CONFIGS:
        raise KinemaError(f"unknown config {name!r}; choose from {', '.join(WAN_CONFIGS)} or give a Wan folder")
    kw = {"text_dim": 4096, **WAN_CONFIGS[name]}
    if layers is not None:
        if layers < 1:
            raise KinemaError(f"--layers must be at least 1; got {layers}")
        kw["num_layers"] = layers
    params = kw["num_layers"] * (4 + 4 + 2 * kw["ffn_dim"] / (kw["num_attention_heads"] * kw["attention_head_dim"])) \
        * (kw["num_attention_heads"] * kw["attention_head_dim"]) ** 2  # fmt: skip
    need = params * torch.finfo(dtype).bits / 8 * 2.5  # the save, and one side's load at a time
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else None
    if transformer and avail is not None and need > avail:  # without it (--no-dit) only the VAE is made
        raise KinemaError(f"{name} in {dtype} needs about {need / 2**30:.0f} GiB of memory for this bench; "
                          f"{avail / 2**30:.0f} GiB are free")  # fmt: skip
    if transformer:
        with torch.device("meta"):
            tr = d.WanTransformer3DModel(**kw)
        _random_fill(tr, dtype, seed)
        tr.save_pretrained(str(root / "transformer"))
        del tr
    else:
        (root / "transformer").mkdir(parents=True, exist_ok=True)
        (root / "transformer" / "config.json").write_text(json.dumps(kw))
    vae = d.AutoencoderKLWan(**VAES.get(name, WAN_VAE))
    _random_fill(vae, torch.float32, seed + 1)
    vae.save_pretrained(str(root / "vae"))
    return root


# ---------------------------------------------------------------- one side, in its own process


def _rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _rss_peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dit_step(side: str, folder: Path, dtype: torch.dtype, latent: list[int], g: float):
    """(model, step(t) -> guided velocity (C, T, h, w) float32, load seconds) of one side."""
    from kinema.sampling import get_noise

    t0 = time.perf_counter()
    if side == "reference":
        model = _reference().WanTransformer3DModel.from_pretrained(str(folder / "transformer"), torch_dtype=dtype)
        model = model.eval().requires_grad_(False)
        C, text_dim = model.config.in_channels, model.config.text_dim
    else:
        from kinema.models.wan import load_wan_dit

        model = load_wan_dit(folder / "transformer", dtype=dtype)
        C, text_dim = model.config.in_channels, model.config.text_dim
    load_s = time.perf_counter() - t0
    T, h, w = latent
    x = get_noise((C, T, h, w), 0)  # (C, T, h, w) float32, as the pipelines keep latents
    text = get_noise((2, TEXT_TOKENS, text_dim), 1).to(dtype)  # rows: caption, negative caption
    if side == "reference":

        def step(t: float) -> torch.Tensor:
            xi, ti = x[None].to(dtype), torch.tensor([t * 1000.0])
            v_c = model(xi, ti, text[:1], return_dict=False)[0]
            v_u = model(xi, ti, text[1:], return_dict=False)[0]
            return (v_u + g * (v_c - v_u))[0].float()

    else:
        from kinema.sampling import guided_velocity, make_model_fn

        model_fn = make_model_fn(model, text, torch.ones(2, TEXT_TOKENS, dtype=torch.bool), model.config.patch)

        def step(t: float) -> torch.Tensor:
            return guided_velocity(model_fn, x, torch.full((T,), t), g)

    return model, step, load_s


def _side(args: dict) -> dict:
    """Run one side ("kinema" or "reference") of one part ("dit" or "vae"); returns its figures."""
    from safetensors.torch import save_file

    from kinema.sampling import get_noise

    side, part, folder = args["side"], args["part"], Path(args["folder"])
    dtype = getattr(torch, args["dtype"])
    g = args["guidance"]
    t0 = time.perf_counter()
    if part == "dit":
        model, step, load_s = _dit_step(side, folder, dtype, args["latent"], g)
        _rss_reset()
        with torch.inference_mode():
            step(0.999)  # the warm-up step, whose peak counts: it allocates what every step does
            v = step(0.95)
        save_file({"out": v.float().contiguous()}, args["out"])
        return {"load_s": load_s, "peak_mib": _rss_peak_mib()}
    if part == "dit_time":  # both sides in this one process, their steps alternating
        steps = {name: _dit_step(name, folder, dtype, args["latent"], g)[1] for name in ("reference", "kinema")}
        times: dict[str, list[float]] = {name: [] for name in steps}
        with torch.inference_mode():
            for step in steps.values():
                step(0.999)
            for i in range(args["steps"]):
                for name, step in steps.items():
                    s = time.perf_counter()
                    step(max(0.05, 0.95 - 0.05 * i))
                    times[name].append(time.perf_counter() - s)
        return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}  # medians
    # the VAE decode of a latent of the asked size
    if side == "reference":
        vae = _reference().AutoencoderKLWan.from_pretrained(str(folder / "vae"), torch_dtype=torch.float32).eval()
        C = vae.config.z_dim
    else:
        from kinema.vae.wan import load_wan_vae

        vae = load_wan_vae(folder / "vae")
        C = vae.config.latent_channels
    load_s = time.perf_counter() - t0
    T, h, w = args["latent"]
    z = get_noise((1, C, T, h, w), 2)
    _rss_reset()
    s = time.perf_counter()
    with torch.inference_mode():
        if side == "reference":
            y = vae.decode(z, return_dict=False)[0]
        else:
            y = vae.decode(z, chunk=1, tile=args.get("tile"))
    out = {"load_s": load_s, "decode_s": time.perf_counter() - s, "peak_mib": _rss_peak_mib()}
    save_file({"out": y.float().contiguous()}, args["out"])
    return out


def _child(text: str) -> None:
    try:
        print(json.dumps(_side(json.loads(text))))
    except KinemaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _run_side(args: dict) -> dict:
    code = "import sys; from kinema.models.compare import _child; _child(sys.argv[1])"
    res = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        raise KinemaError(f"bench compare ({args['side']} {args['part']}) failed: {lines[-1] if lines else res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """This machine's GFLOP/s for a (n x 2n) @ (2n x 2n) matmul in dtype (the rate to compare with)."""
    a, b = torch.randn(n, 2 * n, dtype=dtype), torch.randn(2 * n, 2 * n, dtype=dtype)
    a @ b
    s = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n * (2 * n) * (2 * n) * reps / (time.perf_counter() - s) / 1e9


def _row(part: str, measure: str, reference: float | None, kinema: float) -> dict:
    ratio = kinema / reference if reference else None
    return dict(part=part, measure=measure, reference="" if reference is None else reference, kinema=kinema,
                ratio="" if ratio is None else f"{ratio:.2f}x")  # fmt: skip


def compare(model: str, width: int = 256, height: int = 256, frames: int = 17, steps: int = 2,
            dtype: str = "bfloat16", guidance: float = 5.0, vae: bool = True, dit: bool = True, vae_frames: int | None = None,
            vae_size: tuple[int, int] | None = None, vae_tile: int | None = None,
            layers: int | None = None) -> list[dict]:  # fmt: skip
    """Side-by-side rows: per denoising step, VAE decode; seconds, peak MiB, ratios, max |diff|.
    layers: build a named config with only this many transformer blocks (a step's time and its
    activations scale with them; the weights held do too), where both sides at once would not
    fit in memory."""
    from safetensors.torch import load_file

    from kinema.dit import DiTConfig
    from kinema.models.wan import is_wan_folder, wan_dit_config
    from kinema.models.hf import read_config

    if dtype not in ("float32", "bfloat16", "float16"):
        raise KinemaError(f"--dtype must be float32, bfloat16 or float16; got {dtype!r}")
    if frames < 1 or (frames - 1) % 4:
        raise KinemaError(f"the bench takes 1 + 4k frames; got {frames}")
    if steps < 1:
        raise KinemaError("--steps must be at least 1")
    with tempfile.TemporaryDirectory(prefix="kinema-compare-") as tmp:
        tmp = Path(tmp)
        if Path(model).is_dir():
            if not is_wan_folder(model):
                raise KinemaError(f"{model} is not a diffusers Wan folder (model_index.json)")
            folder = Path(model)
        else:
            folder = make_random_folder(model, tmp / "model", getattr(torch, dtype), transformer=dit, layers=layers)
        cfg: DiTConfig = wan_dit_config({"text_dim": 4096, **read_config(folder / "transformer")})
        s = int(read_config(folder / "vae").get("scale_factor_spatial", 8))  # the VAE's pixels a latent cell
        grid = s * cfg.patch[1]
        for w in (width, height, *(vae_size or ())):
            if w % grid:
                raise KinemaError(f"this model's sizes are multiples of {grid} pixels; got {w}")
        latent = [1 + (frames - 1) // 4, height // s, width // s]
        tokens = latent[0] * (latent[1] // cfg.patch[1]) * (latent[2] // cfg.patch[2])
        table, outs = [], {}
        if dit:
            rows = []
            for side in ("reference", "kinema"):
                out = str(tmp / f"{side}-dit.safetensors")
                r = _run_side(dict(side=side, part="dit", folder=str(folder), dtype=dtype, latent=latent, steps=steps,
                                   guidance=guidance, out=out))  # fmt: skip
                outs[side] = load_file(out)["out"]
                rows.append(r)
            ref, kin = rows
            secs = _run_side(dict(side="both", part="dit_time", folder=str(folder), dtype=dtype, latent=latent,
                                  steps=steps, guidance=guidance))  # fmt: skip
            ref_s, kin_s = secs["reference"], secs["kinema"]
            flops = 2 * tokens * cfg.flops_per_token(tokens, TEXT_TOKENS)  # a step: two rows
            step = f"DiT step, {dtype}, {width}x{height}x{frames} ({tokens} tokens), guidance"
            table += [
                _row(step, "seconds", ref_s, kin_s),
                _row(step, "peak MiB", ref["peak_mib"], kin["peak_mib"]),
                _row(step, "GFLOP/s", flops / ref_s / 1e9, flops / kin_s / 1e9),
                _row(step, f"GFLOP/s of a {dtype} matmul here", None, matmul_rate(getattr(torch, dtype))),
                _row(step, "max |v diff|", None, (outs["kinema"] - outs["reference"]).abs().max().item()),
                _row(step, "max |v| (the scale)", None, outs["reference"].abs().max().item()),
            ]
        if vae:
            vf = vae_frames or frames
            vw, vh = vae_size or (width, height)
            vlat = [1 + (vf - 1) // 4, vh // s, vw // s]
            res = {}
            for side in ("reference", "kinema"):
                out = str(tmp / f"{side}-vae.safetensors")
                res[side] = _run_side(dict(side=side, part="vae", folder=str(folder), dtype="float32", latent=vlat,
                                           steps=0, guidance=1.0, out=out, tile=vae_tile))  # fmt: skip
                outs[side] = load_file(out)["out"]
            r, k = res["reference"], res["kinema"]
            part = f"VAE decode, float32, {vw}x{vh}x{vf}" + (f", Kinema in {vae_tile}-latent tiles" if vae_tile else "")
            table += [
                _row(part, "seconds", r["decode_s"], k["decode_s"]),
                _row(part, "peak MiB", r["peak_mib"], k["peak_mib"]),
                _row(part, "max |frame diff|", None, (outs["kinema"] - outs["reference"]).abs().max().item()),
            ]
    return table
