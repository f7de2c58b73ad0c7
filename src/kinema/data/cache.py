"""The latent cache: clips of a manifest encoded once by the VAE into safetensors shards.

    encode_manifest("manifest.jsonl", "latents/", vae, options=EncodeOptions(max_size=256))

    latents/encode.json                 the settings; a rerun with other settings is refused
    latents/shard-000000.safetensors    latent.J (C, T', H', W') a clip [+ text.J (L, D)]
    latents/shard-000000.json           the shard's clips (caption, source, latent shape) and errors
    latents/index.json                  every shard's clips, written once all shards are done
    latents/null_text.safetensors       the empty caption's embedding (only with embeddings)

Shard k holds manifest rows [k N, (k + 1) N). Under torchrun, rank r encodes shards r, r + W,
r + 2W, ... (the unit of work is a shard, so the layout does not depend on the number of ranks,
and a rerun with another number of ranks resumes the same cache). A shard is written to a
temporary name and renamed, then its JSON is written the same way: a shard with its JSON is
complete and a rerun skips it. Clips that cannot be read are listed in the shard's "errors"
and skipped.

Captions are always stored (the builtin text encoder trains jointly with the DiT, so it reads
captions); caption embeddings are stored too when a frozen external encoder (hf:DIR, or a Wan
folder's umT5) is given.

Before encoding, a clip is made fit for the VAE and the patches (`prepare_clip`): frames
trimmed to 1 + 4k, optionally shrunk so its longer side is at most `max_size`, and centre-cropped
to multiples of 16 pixels (8x VAE x 2x2 patch).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import save_file
from torch import Tensor

from kinema.errors import KinemaError

INDEX = "index.json"
SETTINGS = "encode.json"
NULL_TEXT = "null_text.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EncodeOptions:
    """How clips become latents.

    clips_per_shard: manifest rows a shard
    max_size:        shrink clips whose longer side is larger (pixels, keeps aspect); None: native
    max_frames:      keep at most this many frames (then trimmed to 1 + 4k); None: all
    fps:             resample to this rate first; None: the file's own rate
    multiple:        crop sides to multiples of this (VAE spatial factor x patch size)
    dtype:           stored latent dtype: float32 | bfloat16 | float16
    chunk, tile:     VAE encode in time chunks / spatial tiles (latent units) for bounded memory
    """

    clips_per_shard: int = 64
    max_size: int | None = None
    max_frames: int | None = None
    fps: float | None = None
    multiple: int = 16
    dtype: str = "float32"
    chunk: int | None = None
    tile: int | None = None

    def __post_init__(self):
        if self.clips_per_shard < 1:
            raise KinemaError(f"clips_per_shard must be >= 1; got {self.clips_per_shard}")
        if self.max_size is not None and self.max_size < self.multiple:
            raise KinemaError(f"max_size must be at least {self.multiple} pixels; got {self.max_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise KinemaError(f"max_frames must be >= 1; got {self.max_frames}")
        if self.fps is not None and not 0 < self.fps < math.inf:
            raise KinemaError(f"fps must be a positive number; got {self.fps}")
        if self.dtype not in DTYPES:
            raise KinemaError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")


@dataclass
class EncodeReport:
    written: list[int] = field(default_factory=list)  # shards written by this rank
    skipped: list[int] = field(default_factory=list)  # shards already complete
    clips: int = 0  # clips encoded by this rank
    errors: list[dict] = field(default_factory=list)  # clips skipped by this rank, with the reason


# ---------------------------------------------------------------- one clip


def prepare_clip(
    frames: Tensor, max_size: int | None = None, max_frames: int | None = None, multiple: int = 16, temporal: int = 4
) -> Tensor:
    """uint8 (T, H, W, 3) -> uint8 (1 + temporal k, H', W', 3): trimmed, maybe shrunk, centre-cropped.

    H' and W' are the largest multiples of `multiple` that fit after the optional shrink.
    """
    T, H, W, _ = frames.shape
    if max_frames is not None:
        T = min(T, max_frames)
    T = 1 + (T - 1) // temporal * temporal
    frames = frames[:T]
    if max_size is not None and max(H, W) > max_size:
        s = max_size / max(H, W)
        H, W = max(1, round(H * s)), max(1, round(W * s))
        x = rearrange(frames, "t h w c -> t c h w").float()
        x = F.interpolate(x, size=(H, W), mode="bilinear", antialias=True, align_corners=False)
        frames = rearrange(x.round_().clamp_(0, 255).to(torch.uint8), "t c h w -> t h w c")
    h, w = H // multiple * multiple, W // multiple * multiple
    if h == 0 or w == 0:
        raise KinemaError(f"a {W}x{H} clip is smaller than {multiple} pixels on a side; it cannot be encoded")
    top, left = (H - h) // 2, (W - w) // 2
    return frames[:, top : top + h, left : left + w].contiguous()


@torch.inference_mode()
def encode_frames(vae, frames: Tensor, chunk: int | None = None, tile: int | None = None) -> Tensor:
    """uint8 (T, H, W, 3) (T = 1 + 4k, sides multiples of 8) -> normalized latent (C, T', H/8, W/8)."""
    from kinema.video import to_model

    x = to_model(frames)[None].to(vae.device, vae.dtype)  # (1, 3, T, H, W)
    z = vae.encode(x, chunk=chunk, tile=tile).mode()  # (1, C, T', H', W')
    return vae.normalize_latent(z)[0].float().cpu()


def decode_latent(vae, latent: Tensor, tile: int | None = None, group=None) -> Tensor:
    """`encode_frames` undone: normalized latent (C, T', h, w) -> uint8 (1 + 4(T' - 1), 8h, 8w, 3),
    decoded a latent frame at a time (memory bounded in the length). tile: spatial tiles (latent
    cells); group: ranks that share those tiles (`VideoVAE.decode_stream`)."""
    from kinema.video import from_model

    z = vae.denormalize_latent(latent[None].to(vae.device, vae.dtype))
    return torch.cat([from_model(x[0].float().cpu()) for x in vae.decode_stream(z, chunk=1, tile=tile, group=group)])


@torch.inference_mode()
def caption_tokens(text_encoder, caption: str) -> Tensor:
    """A caption's embedding as the cache stores it: its real tokens (L, D), float32 on the CPU.
    An encoder with `pad_to` (Wan's) marks its zero padding as attended; it is cut here and
    restored in training (settings "text_pad_to")."""
    tokens, mask = text_encoder([caption])
    rows = tokens[0][mask[0]].float().cpu()
    if getattr(text_encoder, "pad_to", None):
        real = (rows != 0).any(dim=-1).nonzero()
        rows = rows[: int(real[-1]) + 1 if len(real) else 1]
    return rows


# ---------------------------------------------------------------- shards on disk


def shard_name(k: int) -> str:
    return f"shard-{k:06d}"


def write_shard(out_dir: str | os.PathLike, k: int, items: list[dict], errors: list[dict] | None = None) -> Path:
    """Write shard k atomically. items: dicts with "latent" (C, T, H, W), "caption", optional
    "text" (L, D) embedding, and any JSON-able source fields (path, fps, frames, ...)."""
    out = Path(out_dir)
    name = shard_name(k)
    tensors, rows = {}, []
    for j, item in enumerate(items):
        item = dict(item)
        latent = item.pop("latent")
        text = item.pop("text", None)
        if latent.ndim != 4:
            raise KinemaError(f"a cached latent is (C, T, H, W); got {tuple(latent.shape)}")
        tensors[f"latent.{j}"] = latent.contiguous()
        row = {**item, "key": f"latent.{j}", "latent": list(latent.shape), "caption": item.get("caption", "")}
        if text is not None:
            tensors[f"text.{j}"] = text.contiguous()
            row["text"] = f"text.{j}"
        rows.append(row)
    tmp = out / f".{name}.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "clips": str(len(rows))})
    os.replace(tmp, out / f"{name}.safetensors")
    write_json(out / f"{name}.json", {"shard": k, "items": rows, "errors": list(errors or [])})
    return out / f"{name}.safetensors"


def shard_done(out_dir: Path, k: int) -> bool:
    name = shard_name(k)
    return (out_dir / f"{name}.safetensors").is_file() and (out_dir / f"{name}.json").is_file()


def write_index(out_dir: str | os.PathLike, settings: dict | None = None) -> Path:
    """Gather every shard's JSON into index.json (atomically); returns its path."""
    out = Path(out_dir)
    shards, errors, count = [], [], 0
    for js in sorted(out.glob("shard-*.json")):
        doc = json.loads(js.read_text())
        shards.append({"file": js.with_suffix(".safetensors").name, "items": doc["items"]})
        errors += doc.get("errors", [])
        count += len(doc["items"])
    if settings is None and (out / SETTINGS).is_file():
        settings = json.loads((out / SETTINGS).read_text())
    write_json(out / INDEX, {"settings": settings or {}, "count": count, "shards": shards, "errors": errors})
    return out / INDEX


def write_json(path: Path, doc: dict) -> None:
    """Write a JSON file atomically (a temporary file renamed over the target)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------- encoding a manifest


def _barrier(world_size: int) -> None:
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise KinemaError(
                f"{out} holds a latent cache made with other settings ({', '.join(diff)} differ); "
                "encode into a new folder, or delete this one"
            )


def encode_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    vae,
    text_encoder=None,
    options: EncodeOptions | None = None,
    rank: int = 0,
    world_size: int = 1,
    vae_name: str = "",
    text_spec: str = "builtin",
    progress: bool = True,
) -> EncodeReport:
    """Encode this rank's shards of `manifest` into `out_dir` (see the module docstring).

    vae: a CausalVAE (its device and dtype are used). text_encoder: a frozen TextEncoder whose
    embeddings are stored beside the latents, or None to store captions only (builtin encoder).
    Under torchrun every rank calls this with its rank; rank 0 writes index.json at the end.
    """
    from tqdm import tqdm

    from kinema.data.manifest import read_manifest
    from kinema.video import read_video

    opt = options or EncodeOptions()
    rows = read_manifest(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(
        manifest=str(Path(manifest).resolve()), count=len(rows), vae=str(vae_name), vae_config=vae.config.to_dict(),
        text_encoder=text_spec, embeddings=text_encoder is not None,
        text_dim=int(text_encoder.dim) if text_encoder is not None else None,
        text_pad_to=getattr(text_encoder, "pad_to", None), **asdict(opt),
    )  # fmt: skip
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back
    if rank == 0:
        _check_settings(out, settings)
        if not (out / SETTINGS).is_file():
            write_json(out / SETTINGS, settings)
        if text_encoder is not None and not (out / NULL_TEXT).is_file():
            null = caption_tokens(text_encoder, "").to(DTYPES[opt.dtype]).contiguous()
            tmp = out / f".{NULL_TEXT}.tmp"
            save_file({"text": null}, str(tmp))
            os.replace(tmp, out / NULL_TEXT)
    _barrier(world_size)
    if rank != 0:
        _check_settings(out, settings)

    n_shards = math.ceil(len(rows) / opt.clips_per_shard)
    mine = list(range(rank, n_shards, world_size))
    todo = [k for k in mine if not shard_done(out, k)]
    report = EncodeReport(skipped=[k for k in mine if k not in todo])
    dtype = DTYPES[opt.dtype]
    temporal = vae.config.temporal_factor
    total = sum(len(rows[k * opt.clips_per_shard : (k + 1) * opt.clips_per_shard]) for k in todo)
    bar = tqdm(total=total, desc=f"encode (rank {rank})" if world_size > 1 else "encode", unit="clip",
               disable=not progress or rank != 0, dynamic_ncols=True)  # fmt: skip
    for k in todo:
        items, errors = [], []
        for i in range(k * opt.clips_per_shard, min((k + 1) * opt.clips_per_shard, len(rows))):
            row = rows[i]
            try:
                video = read_video(row["path"], fps=opt.fps, max_frames=opt.max_frames)
                frames = prepare_clip(video.frames, opt.max_size, opt.max_frames, opt.multiple, temporal)
                latent = encode_frames(vae, frames, opt.chunk, opt.tile)
                item = dict(index=i, path=row["path"], caption=row.get("caption", ""), fps=video.fps,
                            frames=int(frames.shape[0]), width=int(frames.shape[2]), height=int(frames.shape[1]),
                            latent=latent.to(dtype))  # fmt: skip
                if text_encoder is not None:
                    item["text"] = caption_tokens(text_encoder, item["caption"]).to(dtype)
                items.append(item)
            except (KinemaError, OSError, torch.OutOfMemoryError) as e:
                errors.append({"index": i, "path": row["path"], "error": f"{e}"})
                bar.write(f"skipped {row['path']}: {e}")
            bar.update(1)
        write_shard(out, k, items, errors)
        report.written.append(k)
        report.clips += len(items)
        report.errors += errors
    bar.close()
    _barrier(world_size)
    if rank == 0:
        write_index(out, settings)
    _barrier(world_size)
    return report
