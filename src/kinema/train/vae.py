"""Train the video compression network (`kinema train vae`).

One loop for one CPU process and for `torchrun --nproc_per_node N` (DDP: the VAE is small).
Each step draws one size and one length for the whole global batch, so images (1 frame) and
videos of several sizes and aspect ratios train in one run. The batch of step s on rank r is a
pure function of (seed, s, r): resuming needs no data state, only the step.

Data: `world` renders Kinema World clips on the fly; a manifest (JSONL with a `path` per row,
as written by `kinema world dataset` or `kinema data index`) reads real videos and crops them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from kinema.errors import KinemaError
from kinema.train.common import (
    EMA,
    PRECISIONS,
    Logger,
    all_reduce_mean,
    autocast,
    apply_train_state,
    init_distributed,
    latest_checkpoint,
    load_checkpoint,
    resolve_precision,
    save_checkpoint,
    shutdown,
    train_state,
)


@dataclass(frozen=True)
class VAETrainConfig:
    vae: str = "tiny"                     # a preset of kinema.vae.PRESETS
    data: str = "world"                   # "world" or a manifest .jsonl
    steps: int = 20000
    batch: int = 4                        # clips per step, over all ranks
    lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    frames: tuple[int, ...] = (1, 9, 17)  # clip lengths drawn per step (1 + 4k)
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (64, 96), (96, 64), (48, 80), (80, 48))  # (h, w)
    l1: float = 1.0
    ssim: float = 0.2
    kl: float = 1e-6
    mse: float = 0.0                      # weight of the squared error (what PSNR counts)
    detail: float = 0.0                   # extra L1 weight on edges and motion (kinema.vae.losses.detail_map)
    seed: int = 0
    ckpt_every: int = 500
    keep: int = 2
    init: str = ""                        # a saved VAE (folder or shipped name) to start from
    freeze_encoder: bool = False          # train the decoder only: the latents stay the same
    workers: int = 0                      # processes that render / read the next batches ahead
    precision: str = "auto"               # bf16 autocast (fp32 weights and loss) or fp32; auto: bf16 where native

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise KinemaError(f"--precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.precision == "auto":  # resolved once, so config.json (and a resume) holds the one used
            object.__setattr__(self, "precision", resolve_precision("auto"))
        if self.freeze_encoder and not self.init:
            raise KinemaError("--freeze-encoder needs --init: a trained VAE whose encoder to keep")
        if min(self.l1, self.ssim, self.kl, self.mse, self.detail) < 0:
            raise KinemaError("loss weights (l1, ssim, kl, mse, detail) must be >= 0")
        if self.batch < 1 or self.steps < 1:
            raise KinemaError("--batch and --steps must be >= 1")
        if not 0 < self.lr < math.inf:
            raise KinemaError(f"--lr must be a positive number; got {self.lr}")
        if self.workers < 0:
            raise KinemaError(f"--workers must be >= 0; got {self.workers}")
        for f in self.frames:
            if f < 1 or (f - 1) % 4:
                raise KinemaError(f"--frames: every clip length must be 1 + 4k (1, 5, 9, 17, ...); got {f}")
        for h, w in self.sizes:
            if h % 8 or w % 8 or h < 8 or w < 8:
                raise KinemaError(f"--sizes: width and height must be positive multiples of 8; got {w}x{h}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VAETrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "precision" not in d:  # saved before it existed: what such runs did, bf16 on a GPU only
            d["precision"] = "bf16" if torch.cuda.is_available() else "fp32"
        if "frames" in d:
            d["frames"] = tuple(d["frames"])
        if "sizes" in d:
            d["sizes"] = tuple(tuple(s) for s in d["sizes"])
        return cls(**d)


# ---------------------------------------------------------------- data

def step_plan(cfg: VAETrainConfig, step: int) -> tuple[int, int, int]:
    """(frames, height, width) of every clip at this step: the same on every rank."""
    rng = np.random.default_rng([cfg.seed, step, 7])
    frames = int(rng.choice(cfg.frames))
    h, w = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    return frames, h, w


def world_batch(cfg: VAETrainConfig, step: int, indices: range) -> torch.Tensor:
    """Kinema World clips number `indices` of step `step`: (B, 3, T, H, W) in [-1, 1]."""
    from kinema.video import to_model
    from kinema.world.render import random_spec, render

    frames, h, w = step_plan(cfg, step)
    clips = []
    for i in indices:
        rng = np.random.default_rng([cfg.seed, step, i])
        spec = random_spec(rng)
        fps = float(rng.choice([8, 12, 16, 24]))
        seconds = float(rng.uniform(1.0, 5.0))
        clip = render(spec, w, h, seconds=seconds, fps=fps, seed=int(rng.integers(2**31)))
        start = int(rng.integers(0, max(1, len(clip.frames) - frames + 1)))
        x = clip.frames[start:start + frames]
        if len(x) < frames:  # short clip: hold the last frame
            x = np.concatenate([x, np.repeat(x[-1:], frames - len(x), 0)])
        clips.append(to_model(x))
    return torch.stack(clips)


class ManifestData:
    """Random crops of the clips listed in a manifest (rows with `path`, relative to it)."""

    def __init__(self, manifest: str | Path):
        manifest = Path(manifest)
        if not manifest.is_file():
            raise KinemaError(f"--data {manifest}: no such manifest (a .jsonl, or 'world')")
        self.root = manifest.parent
        self.rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        if not self.rows:
            raise KinemaError(f"--data {manifest}: the manifest lists no clips")

    def batch(self, cfg: VAETrainConfig, step: int, indices: range) -> torch.Tensor:
        from kinema.video import read_video, to_model

        frames, h, w = step_plan(cfg, step)
        clips = []
        for i in indices:
            rng = np.random.default_rng([cfg.seed, step, i])
            row = self.rows[int(rng.integers(len(self.rows)))]
            start = int(rng.integers(0, max(1, int(row.get("frames", 1)) - frames + 1)))
            v = read_video(self.root / row["path"], start_frame=start, max_frames=frames).frames.numpy()
            v = _fit(v, frames, h, w, rng)
            clips.append(to_model(v))
        return torch.stack(clips)


def _fit(v: np.ndarray, frames: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Hold the last frame up to `frames`; scale the short side to cover (h, w); random crop."""
    from PIL import Image

    if len(v) < frames:
        v = np.concatenate([v, np.repeat(v[-1:], frames - len(v), 0)])
    H, W = v.shape[1:3]
    scale = max(h / H, w / W)
    if scale != 1:
        size = (max(w, round(W * scale)), max(h, round(H * scale)))
        v = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in v])
    H, W = v.shape[1:3]
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return v[:, y:y + h, x:x + w]


class StepBatches(torch.utils.data.Dataset):
    """Item s is the batch of step s on one rank: a pure function of (seed, s, rank), so worker
    processes can make them ahead, in any order, and a resume needs only the step."""

    def __init__(self, cfg: VAETrainConfig, data: ManifestData | None, indices: range):
        self.cfg, self.data, self.indices = cfg, data, indices

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> torch.Tensor:
        if self.data is None:
            return world_batch(self.cfg, step, self.indices)
        return self.data.batch(self.cfg, step, self.indices)


def step_batches(cfg: VAETrainConfig, data: ManifestData | None, indices: range, start: int):
    """The batches of steps start .. cfg.steps, in order; made by `cfg.workers` processes ahead."""
    source = StepBatches(cfg, data, indices)
    if cfg.workers == 0:
        return (source[s] for s in range(start, cfg.steps))
    return iter(torch.utils.data.DataLoader(
        source, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.workers,
        prefetch_factor=4, persistent_workers=False, worker_init_fn=_one_thread,
    ))  # fmt: skip


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a render worker needs no intra-op threads of its own


# ---------------------------------------------------------------- loop

def lr_at(cfg: VAETrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train_vae(cfg: VAETrainConfig, run_dir: str | Path, resume: bool = True, progress: bool = True) -> list[float]:
    """Train; return the loss of every step run in this call (averaged over ranks)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from kinema.vae import PRESETS, CausalVAE, LossWeights, save_vae, vae_loss

    if cfg.vae not in PRESETS:
        raise KinemaError(f"unknown VAE preset {cfg.vae!r}; known: {', '.join(PRESETS)}")
    d = init_distributed()
    if cfg.batch % d.world_size:
        raise KinemaError(f"--batch {cfg.batch} must be divisible by the number of processes ({d.world_size})")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = None if cfg.data == "world" else ManifestData(cfg.data)

    torch.manual_seed(cfg.seed)
    model = CausalVAE(PRESETS[cfg.vae]).to(d.device)
    ckpt = latest_checkpoint(run_dir / "checkpoints") if resume else None
    if ckpt is not None and (run_dir / "config.json").is_file():
        before = json.loads((run_dir / "config.json").read_text())["train"].get("freeze_encoder", False)
        check_encoder_kept(run_dir, before, cfg.freeze_encoder)
    if ckpt is None and cfg.init:
        _init_from(model, cfg.init)
    if cfg.freeze_encoder:  # the latent space stays as it is: only the decoder learns
        model.encoder.requires_grad_(False)
        _keep_latent_stats(model, cfg.init)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = EMA(model, cfg.ema_decay)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + d.rank)

    start = 0
    if ckpt is not None:
        state = train_state(model, opt, ema)
        meta = load_checkpoint(ckpt, state, d, {"posterior": gen})
        apply_train_state(model, opt, state)
        start = meta["step"]
    if d.is_main:
        (run_dir / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "vae": model.config.to_dict()}, indent=1))

    net = DDP(model) if d.distributed else model
    weights = LossWeights(l1=cfg.l1, mse=cfg.mse, ssim=cfg.ssim, kl=cfg.kl, detail=cfg.detail)
    per_rank = cfg.batch // d.world_size
    log = Logger(run_dir, d, total=cfg.steps, initial=start, desc="train vae") if progress else None
    if d.device.type == "cuda":  # what runs in fp32 may use the GPU's matrix units
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    forward = autocast(cfg.precision, d.device)  # bf16: the convolutions in bfloat16, weights and loss fp32
    batches = step_batches(cfg, data, range(d.rank * per_rank, (d.rank + 1) * per_rank), start)
    losses = []
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        x = next(batches).to(d.device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        with forward:
            recon, posterior = net(x, generator=gen)
        loss, parts = vae_loss(x, recon.float(), posterior, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        ema.update(model, step)
        mean_loss = float(all_reduce_mean(loss, d))
        losses.append(mean_loss)
        if log is not None:
            frames, h, w = x.shape[2:]
            log.log(step + 1, {"loss": mean_loss, "l1": parts["l1"], "mse": parts["mse"], "ssim": parts["ssim"], "kl": parts["kl"],
                               "grad_norm": float(gnorm), "lr": lr_at(cfg, step),
                               "frames_per_s": cfg.batch * frames / (time.perf_counter() - t0)})
        done = step + 1
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            save_checkpoint(run_dir / "checkpoints", done, train_state(model, opt, ema), {"data": cfg.data}, d, {"posterior": gen}, keep=cfg.keep)
    if log is not None:
        log.close()
    if d.is_main:
        export = _ema_model(model, ema)
        save_vae(export, run_dir / "export")
    shutdown(d)
    return losses


def check_encoder_kept(run_dir: Path, before: bool, after: bool) -> None:
    """A resume cannot change freeze_encoder, not even with --override: the optimizer state
    holds the parameters the run trained."""
    if before != after:
        raise KinemaError(f"{run_dir} was trained with freeze_encoder={before}; a resume cannot change it "
                          f"(start a new run with --init {Path(run_dir) / 'export'})")


def _init_from(model: torch.nn.Module, source: str) -> None:
    """Start from the weights of a saved VAE of the same shape (fine-tuning, or a new schedule)."""
    from kinema.vae import load_vae

    other = load_vae(source)
    shape = lambda c: replace(c, latent_mean=None, latent_std=None)  # noqa: E731
    if shape(other.config) != shape(model.config):
        raise KinemaError(f"--init {source}: its shape differs from the preset being trained")
    model.load_state_dict(other.state_dict())


def _keep_latent_stats(model: torch.nn.Module, source: str) -> None:
    """A frozen encoder keeps its latents, so the saved VAE keeps the source's latent statistics
    (which a DiT trained on those latents relies on); on a fresh start and on a resume alike."""
    from kinema.vae import load_vae

    c = load_vae(source).config
    if c.latent_mean is not None and c.latent_std is not None:
        model.set_latent_stats(c.latent_mean, c.latent_std)


def export_vae(run_dir: str | Path) -> Path:
    """Write the latest checkpoint's EMA weights of a run to RUN/export (while it trains, too)."""
    from kinema.train.common import Dist
    from kinema.vae import CausalVAE, VAEConfig, save_vae

    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if not (run_dir / "config.json").is_file() or ckpt is None:
        raise KinemaError(f"{run_dir} is not a VAE run with a checkpoint (config.json, checkpoints/)")
    doc = json.loads((run_dir / "config.json").read_text())
    cfg = VAETrainConfig.from_dict(doc["train"])
    model = CausalVAE(VAEConfig.from_dict(doc["vae"]))
    if cfg.freeze_encoder:  # the optimizer of such a run holds the decoder only
        model.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay)
    state = train_state(model, opt, ema)
    gen = torch.Generator()
    load_checkpoint(ckpt, state, Dist(0, 1, 0, torch.device("cpu")), {"posterior": gen})
    return save_vae(_ema_model(model, ema), run_dir / "export")


def _ema_model(model: torch.nn.Module, ema: EMA) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model).cpu().eval()
    ema.copy_to(m)
    return m


def fit_latent_stats(vae_dir: str | Path, clips: int = 32, seed: int = 12345) -> None:
    """Measure per-channel latent mean/std on world clips and store them in the saved VAE."""
    from kinema.vae import compute_latent_stats, load_vae, save_vae

    vae = load_vae(vae_dir)
    cfg = VAETrainConfig(seed=seed)
    with torch.no_grad():
        stats = compute_latent_stats(
            vae.encode(world_batch(cfg, s, range(1))).mode() for s in range(clips)
        )
    vae.set_latent_stats(*stats)
    save_vae(vae, vae_dir)


__all__ = ["VAETrainConfig", "train_vae", "export_vae", "fit_latent_stats", "step_plan", "world_batch"]
