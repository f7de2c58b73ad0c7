"""The generation pipeline: a DiT, its text encoder and a VAE, with one method per task.

    pipe = Pipeline.from_pretrained("world")           # the shipped model, or an export folder
    out = pipe.generate("a red ball bounces on green grass", width=128, height=128, seconds=2)
    write_video("ball.mp4", out.frames, out.fps); print(out.caption)

    pipe.image(prompt)                     text -> image (1 frame)
    pipe.animate(image, prompt)            image -> video, the image as frame 0
    pipe.extend(video, prompt, "forward")  more frames after (or "backward": before) a video
    pipe.long(prompt, 60, out="a.mp4")     any length, window by window, memory bounded
    pipe.loop(prompt)                      a clip whose last frame leads into its first
    pipe.connect(a, b, prompt)             frames that lead from the end of a to the start of b
    pipe.edit(video, prompt, strength)     SDEdit: the video re-imagined under a new prompt

Each returns an `Output`: the frames (T, H, W, 3) uint8 and fps as a `Video`, the caption the
model read, and the last sampled latent with its plan (see `tasks.py` for every plan).

Prompts. Short prompts are expanded into detailed captions by Kinema World's grammar
(`kinema.world.text.expand`, seeded by the generation seed) when the model was trained on
world captions: on by default for "world" and for runs whose config says data=world, or when
pipeline.json says "expand": "world". Pass expand=False to use the prompt as it is. The
negative prompt (default "", the unconditional input) is never expanded.

Sizes. Any width x height is made exactly: the model samples the smallest grid that covers it
(sides multiples of its pixels per token, 16 for the world model and Wan 2.1:
`tasks.covering_size`, the one size rule) and the centre is kept, never stretched; the output's
`notices` say so. Input images and videos keep their own size unless width / height are given:
then they are fitted to it, scaled to cover and centre-cropped (fit="cover") or scaled to fit
inside and letterboxed (fit="pad"). Inside, frames are padded by edge replication up to the grid
and the output is cropped back.

Durations. `seconds` (any positive number up to `tasks.MAX_SECONDS`) lasts exactly that long at
the output's fps, rounded to whole frames. `fps` is the file's rate (default: the model's); the
model makes frames at a rate it knows (`Pipeline.frame_rates`: pipeline.json's "fps_range", else
its default fps), the asked rate clamped into that range, and frames made at another rate are
resampled in time (sample and hold) to seconds * fps frames. Inside, the sampler makes the
1 + 4k frames that cover the count and the extra frames are cut (`long`: its last window is cut
to the total). A loop's turn is retimed as a cycle, a connect's middle stretched between its
ends. extend and connect make exactly seconds * the input's rate new frames. What was rounded or
resampled is said in the output's `notices` (`tasks.timing`).

Weights. A model folder holds pipeline.json (written by `train.dit.export_weights`):
{"dit", "dit_config", "text_encoder", "vae"}, optionally "expand" and "defaults" (width,
height, seconds, fps, steps, guidance, the shift_scale the model was trained with, and
"fps_range": [lo, hi], the frame rates it makes natively).
`from_pretrained` accepts that folder, a training run folder (its export/), "world" (the
folder kinema/weights/world/ shipped with the package), or a diffusers Wan 2.1 or Wan 2.2
TI2V-5B folder (model_index.json; loaded by `kinema.models.wan`, sampled with its own scheduler
and the "replace" conditioning strategy for Wan 2.1, "native" for the TI2V-5B).
The DiT is built on the meta device and its safetensors assigned, so loading costs the read.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from kinema import tasks
from kinema.composition import compose_plan, refine_plan
from kinema.errors import KinemaError
from kinema.sampling import (
    Plan,
    denoise,
    get_noise,
    integer_timesteps,
    make_model_fn,
    reference_schedule,
)
from kinema.video import Video, hold_index, hold_indices, span_indices, stored_size

WORLD_DIR = Path(__file__).resolve().parent / "weights" / "world"
PIPELINE_FILE = "pipeline.json"

# Used where pipeline.json has no "defaults"; the world model trains on 64 - 128 px clips at 8 - 12 fps.
# shift_scale: the training times' scale of the resolution shift (see flow.training_t), which
# the sampler's schedule must share; a training export writes it into pipeline.json's defaults
DEFAULTS: dict[str, float] = dict(width=128, height=128, seconds=2.0, fps=12.0, steps=30, guidance=4.0, shift_scale=1.0)
# and optionally "fps_range": [lo, hi], the frame rates the model makes natively (absent: [fps, fps])
DEFAULT_KEYS = (*DEFAULTS, "fps_range")
OFFLOAD = ("none", "text", "blocks")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONTEXT = 2  # latent frames of context for extend, long, loop and connect (1 + 4 = 5 pixel frames)
SPLIT_DECODE = 32  # latent cells a side from which ranks sampling together share a decode's tiles
Media = str | os.PathLike | Video | Tensor | np.ndarray
# how a prompt becomes a caption (`Pipeline.read_prompt`): None (the model's default), a bool, "world",
# "none", a language model SPEC ("openai:URL", "hf:DIR") or a `kinema.llm` chat
Expand = bool | str | Callable | None


def split_tile(hw: tuple[int, int], K: int) -> int:
    """A tile side (latent cells) that cuts an h x w latent into at least K tiles along its longer
    side (a quarter of each tile overlaps its neighbour), for K ranks to share."""
    long_side = max(hw)
    tile = max(8, math.ceil(long_side / (0.75 * K + 0.25)))  # K tiles of stride 3/4 tile cover the side
    while tile > 8 and len(range(0, long_side - tile, tile - tile // 4)) + 1 < K:
        tile -= 1
    return tile


@dataclass(frozen=True, eq=False)
class Output:
    """What a task returns.

    video:   frames (T, H, W, 3) uint8 and fps (None for `long` written to a file)
    caption: the caption the model read (the expanded prompt)
    latent:  the last latent the sampler made (normalized, (C, T, H, W)), for checks and chaining
    plan:    the plan it was sampled from
    path:    the file written (`long` with out=...)
    notices: what was changed from the request, one sentence each (size fitting, prompt reading,
             a duration rounded to whole frames, frames resampled in time)
    """

    video: Video | None
    caption: str
    latent: Tensor | None = None
    plan: Plan | None = None
    path: Path | None = None
    notices: tuple[str, ...] = ()

    @property
    def frames(self) -> Tensor:
        if self.video is None:
            raise KinemaError(f"this output was written to {self.path}, not kept in memory")
        return self.video.frames

    @property
    def fps(self) -> float:
        if self.video is None:
            raise KinemaError(f"this output was written to {self.path}, not kept in memory")
        return self.video.fps


@dataclass(frozen=True, eq=False)
class Window:
    """One finished window of a long video: its new frames, and what the generator holds."""

    index: int
    frames: Tensor  # (n, H, W, 3) uint8, the frames this window adds (at the output's fps)
    latent_frames_held: int  # latent frames alive while it was made: its latent + the context
    pixel_frames_held: int  # pixel frames kept for the next window's context


# ---------------------------------------------------------------- finding a model


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The folder holding pipeline.json for "world", an export folder or a training run folder."""
    text = str(name_or_path)
    if text == "world":
        if not (WORLD_DIR / PIPELINE_FILE).is_file():
            raise KinemaError(
                f"the shipped world model is not in this install yet ({WORLD_DIR} has no {PIPELINE_FILE}); "
                "train one with `kinema train dit RUN --set vae=VAE` and pass its folder: --model RUN"
            )
        return WORLD_DIR
    p = Path(text).expanduser()
    if p.is_dir():
        for d in (p, p / "export"):
            if (d / PIPELINE_FILE).is_file():
                return d
        lora = next((d / "lora.safetensors" for d in (p, p / "export") if (d / "lora.safetensors").is_file()), None)
        if lora is not None:
            raise KinemaError(f"{p} holds LoRA adapters ({lora}), not a whole model: give --model BASE --lora {lora}, "
                              f"or merge them into a model folder with `kinema train pack {p} OUT`")  # fmt: skip
        raise KinemaError(
            f"{p} holds no {PIPELINE_FILE} (nor export/{PIPELINE_FILE}): give a folder written by "
            "`kinema train dit` (its export/) or by kinema.train.dit.export_weights"
        )
    raise KinemaError(
        f"unknown model {text!r}: give 'world' (the shipped model), a model folder with {PIPELINE_FILE}, "
        "or a diffusers Wan 2.1 or Wan 2.2 TI2V-5B folder (model_index.json)"
    )


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KinemaError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise KinemaError(f"{path} is not a JSON object")
    return doc


def _load_dit(directory: Path, spec: dict, device: torch.device):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kinema.dit import DiT, DiTConfig
    from kinema.models.hf import assign_weights

    weights = directory / spec.get("dit", "dit.safetensors")
    config = directory / spec.get("dit_config", "dit.json")
    if not (weights.is_file() and config.is_file()):
        raise KinemaError(f"no DiT in {directory}: expected {weights.name} and {config.name}")
    with torch.device("meta"):  # no allocation, no initialisation: the weights are assigned
        dit = DiT.empty(DiTConfig.from_dict(_read_json(config)))
    try:
        state = {k: v.float() for k, v in load_file(str(weights), device=str(device)).items()}  # fp16 files too
    except SafetensorError as e:
        raise KinemaError(f"{weights} does not match {config}: {e}") from None
    return assign_weights(dit, state, f"{weights} does not match {config}").eval().requires_grad_(False)


def _load_text(directory: Path, spec: str, device: torch.device):
    from kinema.text import load_text_encoder

    kind, sep, where = spec.partition(":")
    if sep and kind in ("builtin", "hf"):
        local = directory / where
        spec = f"{kind}:{local if local.exists() else where}"
    elif spec == "builtin":
        spec = f"builtin:{directory}"
    enc = load_text_encoder(spec, device=device)
    if isinstance(enc, torch.nn.Module):
        enc = enc.eval().requires_grad_(False)
    return enc


def _load_vae(directory: Path, name: str, device: torch.device):
    from kinema.vae import load_vae

    if not name:
        raise KinemaError(f"{directory / PIPELINE_FILE} does not name a VAE")
    local = directory / name
    vae = load_vae(local if local.is_dir() else name, device=device)
    return vae.requires_grad_(False)


def set_threads() -> int:
    """Torch CPU threads for sampling: KINEMA_THREADS if set; else the cores this process may
    run on that other work leaves idle (1-minute load average), at least 1 and never more than
    torch's own setting. A thread whose core is busy makes every parallel op wait for it: on a
    shared 2-core machine a second thread made a 128 x 128 generate 7x slower, not faster."""
    want = os.environ.get("KINEMA_THREADS")
    if want:
        try:
            n = int(want)
        except ValueError:
            raise KinemaError(f"KINEMA_THREADS must be a whole number; got {want!r}") from None
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = min(torch.get_num_threads(), cores - int(busy))
    n = max(1, n)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- media helpers


def as_video(media: Media, fps: float | None = None) -> Video:
    """A path, Video or uint8 array (T, H, W, 3) / (H, W, 3) -> Video (a path is read at `fps`)."""
    from kinema.video import DEFAULT_FPS, read_video

    if isinstance(media, (str, os.PathLike)):
        return read_video(media, fps=fps)
    if isinstance(media, Video):
        return media
    x = torch.from_numpy(np.ascontiguousarray(media)) if isinstance(media, np.ndarray) else media
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise KinemaError("an image or video must be a file path, a Video or uint8 frames (T, H, W, 3) / (H, W, 3)")
    return Video(x[None] if x.ndim == 3 else x, float(fps or DEFAULT_FPS))


FITS = ("cover", "pad")


def fit_frames(frames: Tensor, width: int, height: int, mode: str = "cover") -> Tensor:
    """uint8 (T, H, W, 3) made width x height without stretching: "cover" scales it to cover the
    size and crops the centre; "pad" scales it to fit inside and letterboxes it (black bars)."""
    if mode not in FITS:
        raise KinemaError(f"fit must be one of {', '.join(FITS)}; got {mode!r}")
    T, H, W, _ = frames.shape
    if (H, W) == (height, width):
        return frames
    s = max(width / W, height / H) if mode == "cover" else min(width / W, height / H)
    h, w = round(H * s), round(W * s)
    h, w = (max(height, h), max(width, w)) if mode == "cover" else (max(1, min(height, h)), max(1, min(width, w)))
    x = rearrange(frames, "t h w c -> t c h w").float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    if mode == "cover":
        top, left = (h - height) // 2, (w - width) // 2
        x = x[..., top : top + height, left : left + width]
    else:
        top, left = (height - h) // 2, (width - w) // 2
        x = F.pad(x, (left, width - w - left, top, height - h - top))  # zeros: black bars
    return rearrange(x.round_().clamp_(0, 255).to(torch.uint8), "t c h w -> t h w c").contiguous()


def _pad_box(height: int, width: int, multiple: int = tasks.SIZE_MULTIPLE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) edge padding up to multiples of `multiple`."""
    ph, pw = -height % multiple, -width % multiple
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def pad_frames(frames: Tensor, box: tuple[int, int, int, int], time_to: int | None = None) -> Tensor:
    """uint8 (T, H, W, 3) padded by edge replication: `box` in space, repeated last frame up to time_to."""
    top, bottom, left, right = box
    if any(box):
        x = rearrange(frames, "t h w c -> t c h w").float()
        x = F.pad(x, (left, right, top, bottom), mode="replicate")
        frames = rearrange(x.to(torch.uint8), "t c h w -> t h w c").contiguous()
    if time_to is not None and time_to > len(frames):
        frames = torch.cat([frames, frames[-1:].expand(time_to - len(frames), *frames.shape[1:])])
    return frames


SEAM_FADE = 8  # new frames over which a seam's offset fades out (two latent frames)


def match_seams(decoded: Tensor, new: slice, before: Tensor | None = None, after: Tensor | None = None,
                fade: int = SEAM_FADE) -> Tensor:  # fmt: skip
    """The new frames decoded[new] (uint8 (T, H, W, 3)), carried onto the given frames they join.

    A window decodes its pinned context too, and the decoded context differs from the given
    frames by the VAE's reconstruction error: joined as they are, the new frames would jump at
    the seam by that error on top of the motion. So the offset (given frame - its slot in the
    decoded window) is added to the new frames, in full next to the seam and fading linearly to
    zero over `fade` frames; the given frames are never touched.
    before: the given frame just before the new ones, whose slot is decoded[new.start - 1];
    after: the given frame just after them, whose slot is decoded[new.stop].
    """
    out = decoded[new].float()
    steps = torch.arange(len(out), dtype=torch.float32)
    span = max(1, min(fade, len(out) - 1))  # a short window: each offset is gone at the far end
    for given, slot, dist in ((before, new.start - 1, steps), (after, new.stop, steps.flip(0))):
        if given is not None:
            w = (1 - dist / span).clamp(min=0)[:, None, None, None]  # (T, 1, 1, 1)
            out += w * (given.float() - decoded[slot].float())
    return out.round_().clamp_(0, 255).to(torch.uint8)


def to_output_rate(frames: Tensor, t: tasks.Timing) -> Tensor:
    """The `t.made` frames made at the model's rate, as the `t.frames` frames of the output's fps:
    resampled in time by sample and hold (`video.hold_indices`) when the rates differ."""
    if not t.resampled:
        return frames
    return frames[hold_indices(len(frames), t.rate, t.fps, t.frames)]


def crop_frames(frames: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    top, bottom, left, right = box
    H, W = frames.shape[1:3]
    return frames[:, top : H - bottom, left : W - right].contiguous()


# ---------------------------------------------------------------- the pipeline


class Pipeline:
    """DiT + text encoder + VAE; one method per task (see the module doc)."""

    def __init__(self, dit, text_encoder, vae, *, expand: bool = False, defaults: dict | None = None,
                 name: str = "", device: torch.device | str = "cpu", strategy: str = "native",
                 scheduler: dict | None = None, offload: str = "none", folder: str | os.PathLike | None = None,
                 kind: str = "kinema"):  # fmt: skip
        if offload not in OFFLOAD:
            raise KinemaError(f"offload must be one of {', '.join(OFFLOAD)}; got {offload!r}")
        self.dit = dit
        self.text_encoder = text_encoder
        self.vae = vae
        self.expand = expand
        self.folder = folder  # the model folder: its expand.json styles prompt expansion by a language model
        self.kind = kind  # "world", "wan" or "kinema": which default expansion style it gets without one
        self._style = None
        self._chats: dict = {}
        self.follower = False  # a rank of a sequence-parallel group other than its first (`sequence_parallel`)
        self.decode_group = None  # the ranks that share a decode's tiles
        self.defaults = {**DEFAULTS, **(defaults or {})}
        if "fps_range" in self.defaults:  # a bad range is an error at load, not at the first video
            tasks.check_frame_rates(self.defaults["fps_range"])
        self.name = name
        self.device = torch.device(device)
        # how the model is told about known latent frames (see sampling.denoise): "native" (clean
        # tokens at t = 0, as Kinema trains) or "replace" (models not trained so, e.g. Wan 2.1)
        self.strategy = strategy
        # the sampler the model was published with: Kinema's own shifted schedule and Euler, or a
        # reference scheduler's exact schedule (Wan: UniPC or flow-matching Euler, with its shift)
        self.scheduler = {"method": "euler", **(scheduler or {})}
        # "text": the text encoder lives in CPU memory and visits the device only to encode;
        # "blocks": that, and the DiT's blocks stream to the device one at a time (dit.offload_blocks)
        self.offload = offload
        if offload != "none" and hasattr(text_encoder, "to"):
            text_encoder.to("cpu")
        if offload == "blocks":
            from kinema.dit import offload_blocks

            offload_blocks(dit, self.device)
        self.patch = tuple(dit.config.patch)
        self.temporal = vae.config.temporal_factor
        self.multiple = vae.config.spatial_factor * self.patch[1]
        if self.patch[0] != 1 or self.patch[1] != self.patch[2]:
            raise KinemaError(f"the pipeline needs a DiT patch (1, p, p); got {self.patch}")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "world", device: str = "auto",
                        dtype: torch.dtype | str | None = None, offload: str = "none") -> Pipeline:  # fmt: skip
        """Load "world" (the shipped model), an export folder, a training run folder, or a diffusers
        Wan 2.1 folder (model_index.json; `kinema.models.wan`). dtype: the Wan weights' type in
        memory (default float32; "bfloat16" or "float16" halve it). offload: "none", "text" (the
        text encoder off the device except while it encodes) or "blocks" (that, and the DiT's
        blocks streamed to the device one at a time): see the README's memory table."""
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise KinemaError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
            dtype = DTYPES[dtype]
        from kinema.models.wan import is_wan_folder, load_wan

        set_threads()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if is_wan_folder(name_or_path):
            w = load_wan(name_or_path, device="cpu" if offload != "none" else dev, dtype=dtype)
            if offload == "text":
                w.dit.to(dev)
                w.vae.to(dev)
            elif offload == "blocks":
                w.vae.to(dev)
            return cls(w.dit, w.text_encoder, w.vae, defaults=w.defaults, name=str(name_or_path), device=dev,
                       strategy=w.strategy, scheduler=w.scheduler, offload=offload, folder=name_or_path,
                       kind="wan")  # fmt: skip
        directory = resolve(name_or_path)
        spec = _read_json(directory / PIPELINE_FILE)
        dit = _load_dit(directory, spec, dev)
        if dtype is not None:
            dit = dit.to(dtype)
        text = _load_text(directory, str(spec.get("text_encoder", "builtin:.")), dev)
        vae = _load_vae(directory, str(spec.get("vae", "")), dev)
        if getattr(text, "dim", dit.config.text_dim) != dit.config.text_dim:
            raise KinemaError(f"the text encoder gives {text.dim}-wide tokens; the DiT reads {dit.config.text_dim}")
        if vae.config.latent_channels != dit.config.in_channels:
            raise KinemaError(
                f"the VAE makes {vae.config.latent_channels} latent channels; the DiT reads {dit.config.in_channels}"
            )
        expand = spec.get("expand")
        if expand is None:  # world captions: the shipped model, or a run trained on Kinema World
            run_config = directory.parent / "config.json"
            trained_on_world = run_config.is_file() and _read_json(run_config).get("data") == "world"
            expand = str(name_or_path) == "world" or trained_on_world
        expand = expand in (True, "world")
        return cls(dit, text, vae, expand=expand, defaults=spec.get("defaults"), name=str(name_or_path), device=dev,
                   offload=offload, folder=directory, kind="world" if expand else "kinema")  # fmt: skip

    def sequence_parallel(self, group, guidance_split: bool = False) -> Pipeline:
        """Sample over the ranks of a process group (under torchrun): each sequence's tokens are
        split among them in the DiT (`kinema.parallel`). guidance_split (an even number of ranks,
        all of the world): half the ranks compute the caption's velocity and half the negative
        caption's (`DiT.row_parallel`), each half splitting the sequence among its ranks. Every
        rank calls the same task with the same arguments and gets the same result; only the first
        rank writes a long video's file (`follower` is True on the others). None: one process."""
        import torch.distributed as dist

        if group is not None and guidance_split:
            from kinema.parallel import row_sequence_mesh

            mesh = row_sequence_mesh(self.device.type)
            self.dit.row_parallel(mesh.get_group("rows"))
            group = mesh.get_group("sequence") if mesh["sequence"].size() > 1 else None
        self.decode_group = dist.group.WORLD if group is not None or guidance_split else None
        self.dit.sequence_parallel(group)
        self.follower = dist.is_initialized() and dist.get_rank() != 0
        return self

    def apply_lora(self, path: str | os.PathLike, scale: float = 1.0) -> int:
        """Merge a LoRA file's adapters into the DiT's weights (scale x their delta): Kinema's
        export/lora.safetensors, or a LoRA in diffusers' Wan layout for a Wan model. Several add
        up. Returns how many weights changed (`kinema.lora.merge_lora`)."""
        from kinema.lora import merge_lora

        if not math.isfinite(float(scale)):
            raise KinemaError(f"a LoRA scale must be a finite number; got {scale}")
        return merge_lora(self.dit, path, float(scale), wan=self.kind == "wan")

    @property
    def frame_rates(self) -> tuple[float, float]:
        """(lo, hi): the frame rates the model makes natively, pipeline.json's defaults "fps_range"
        (the world model: 8 - 12), else just its default fps. Asked for a rate outside them, it
        makes frames at the nearest and resamples them in time."""
        rates = self.defaults.get("fps_range")
        if rates is None:
            fps = tasks.check_fps(self.defaults["fps"])
            return fps, fps
        return tasks.check_frame_rates(rates)

    # ------------------------------------------------------------ prompts

    def caption(self, prompt: str, seed: int = 0, expand: Expand = None) -> str:
        """The caption the model reads: the prompt, expanded by the world grammar when asked."""
        return self.read_prompt(prompt, seed, expand)[0]

    def read_prompt(self, prompt: str, seed: int = 0, expand: Expand = None) -> tuple[str, tuple[str, ...]]:
        """(caption, notices). expand: None (the model's default), False or "none" (the prompt as
        it is), True or "world" (the Kinema World grammar: it keeps what it can draw and says what
        it read otherwise or left out; only a prompt with nothing drawable is an error), a language
        model SPEC ("openai:URL", "hf:DIR") or a `kinema.llm` chat: the prompt rewritten in the
        style of the model's training captions (`kinema.llm.load_style` of the model folder)."""
        if not isinstance(prompt, str):
            raise KinemaError("the prompt must be a string")
        if expand is None:
            expand = self.expand
        if isinstance(expand, str):
            expand = {"world": True, "none": False, "off": False}.get(expand.strip(), expand.strip())
        if expand is True:
            from kinema.world.text import expand_prompt

            caption, notices = expand_prompt(prompt, seed)
            return caption, tuple(notices)
        if expand is False:
            return prompt, ()
        from kinema import llm

        chat = self._chat(expand) if isinstance(expand, str) else expand
        if self._style is None:
            self._style = llm.load_style(self.folder, self.kind)
        return llm.expand_prompt(chat, prompt, self._style), (f"prompt expanded by {chat.name}",)

    def _chat(self, spec: str):
        """The language model a SPEC names, connected once per pipeline."""
        if spec not in self._chats:
            from kinema.llm import connect

            self._chats[spec] = connect(spec)
        return self._chats[spec]

    # ------------------------------------------------------------ pieces every task shares

    def _settings(self, **given) -> dict:
        out = {k: (self.defaults[k] if v is None else v) for k, v in given.items()}
        if "steps" in out and int(out["steps"]) < 1:
            raise KinemaError(f"steps must be at least 1; got {out['steps']}")
        if "guidance" in out and not math.isfinite(float(out["guidance"])):
            raise KinemaError(f"guidance must be a finite number; got {out['guidance']}")
        return out

    def _size(self, width: int | None, height: int | None) -> tuple[int, int]:
        w = int(self.defaults["width"] if width is None else width)
        h = int(self.defaults["height"] if height is None else height)
        return tasks.check_size(w, h, self.multiple)

    def _grid(self, width: int, height: int) -> tuple[int, int, tuple[int, int, int, int], tuple[str, ...]]:
        """The size rule for a requested width x height: (grid width, grid height, the centre
        crop box back to the request, the notice saying so if the grid is larger)."""
        W, H = tasks.covering_size(width, height, self.multiple)
        note = () if (W, H) == (width, height) else (
            f"made on {W}x{H} (the model's {self.multiple}-pixel grid) and cropped to {width}x{height}",)
        return W, H, _pad_box(height, width, self.multiple), note

    def _timing(self, seconds: float, fps: float) -> tasks.Timing:
        """The duration rule (`tasks.timing`) for this model's frame rates."""
        return tasks.timing(seconds, fps, self.frame_rates)

    def _new_frames(self, seconds: float, rate: float) -> tuple[int, tuple[str, ...]]:
        """(frames, notice) for `seconds` of new frames at the input's `rate` (extend, connect)."""
        seconds, rate = tasks.check_seconds(seconds), float(rate)
        n = tasks.frame_count(seconds, rate, minimum=1)
        return n, tasks.duration_notice(seconds, rate, n)

    def _latent_hw(self, width: int, height: int) -> tuple[int, int]:
        s = self.vae.config.spatial_factor
        return height // s, width // s

    @torch.inference_mode()
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 (1 + 4k, H, W, 3), sides multiples of 16 -> normalized latent (C, 1 + k, H/8, W/8)."""
        from kinema.data.cache import encode_frames

        if (len(frames) - 1) % self.temporal:
            raise KinemaError(f"encode takes 1 + {self.temporal}k frames; got {len(frames)}")
        return encode_frames(self.vae, frames, chunk=4).to(self.device)

    @torch.inference_mode()
    def decode(self, latent: Tensor) -> Tensor:
        """Normalized latent (C, T, h, w) -> uint8 frames (1 + 4(T - 1), 8h, 8w, 3), a chunk at a time.
        Frames of at least SPLIT_DECODE latent cells a side, sampled by a group of ranks
        (`sequence_parallel`), are decoded in spatial tiles the ranks share."""
        from kinema.data.cache import decode_latent

        group = self.decode_group
        if group is not None and min(latent.shape[-2:]) >= SPLIT_DECODE:
            import torch.distributed as dist

            tile = split_tile(latent.shape[-2:], dist.get_world_size(group))
            return decode_latent(self.vae, latent, tile=tile, group=group)
        return decode_latent(self.vae, latent)

    def _text(self, caption: str, negative: str, guidance: float) -> tuple[Tensor, Tensor]:
        rows = [caption] if guidance == 1.0 else [caption, negative]
        visit = self.offload != "none" and hasattr(self.text_encoder, "to")
        if visit:  # encode on the device, then leave it before the DiT needs the memory
            self.text_encoder.to(self.device)
        try:
            with torch.inference_mode():
                text, mask = self.text_encoder(rows)  # (R, L, D), (R, L)
            text, mask = text.to(self.device), mask.to(self.device)
        finally:
            if visit:
                self.text_encoder.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return text, mask

    def sample(self, plan: Plan, caption: str, negative: str = "", *, steps: int, guidance: float, seed: int,
               method: str | None = None, progress: bool = True, callback: Callable | None = None) -> Tensor:  # fmt: skip
        """Run the sampler on a plan; returns the normalized latent (C, T, H, W). method: None for
        the model's own (`self.scheduler`). A plan larger than the model was trained on is
        composed at a trained size first, then refined at its own (`kinema.composition`)."""
        kw = dict(steps=steps, guidance=guidance, method=method, progress=progress, callback=callback)
        cfg = self.dit.config
        small = compose_plan(plan, cfg.trained_extent, self.patch, cfg.trained_min_side)
        if small is not None:
            plan = refine_plan(plan, self._sample(small, caption, negative, seed=seed, **kw))
        return self._sample(plan, caption, negative, seed=seed, **kw)

    def _sample(self, plan: Plan, caption: str, negative: str = "", *, steps: int, guidance: float, seed: int,
                method: str | None = None, progress: bool = True, callback: Callable | None = None) -> Tensor:  # fmt: skip
        text, mask = self._text(caption, negative, float(guidance))
        autocast = torch.bfloat16 if self.device.type == "cuda" else None
        model_fn = make_model_fn(self.dit, text, mask, self.patch, autocast)
        noise = get_noise(plan.shape, seed, device=self.device)
        sched = self.scheduler
        times = None
        if sched.get("schedule"):  # a reference scheduler's own times (Wan folders); denoise cuts them for SDEdit
            times = reference_schedule(sched["schedule"], int(steps), sched["shift"])
        if sched.get("integer_timesteps"):  # the reference tells the model its times as whole steps
            model_fn = integer_timesteps(model_fn)
        return denoise(model_fn, noise, plan, int(steps), float(guidance), method=method or sched["method"],
                       patch=self.patch, progress=progress, callback=callback, times=times, strategy=self.strategy,
                       solver_order=int(sched.get("solver_order", 2)),
                       shift_scale=float(self.defaults["shift_scale"]))  # fmt: skip

    def _media(self, media: Media, fps: float | None, width: int | None, height: int | None,
               fit_mode: str = "cover") -> tuple[Tensor, float, tuple[int, int, int, int], tuple[str, ...]]:  # fmt: skip
        """Input frames at the working size: (frames padded to the grid, fps, crop box, notices).
        Kept at their own size unless width / height are given: then fitted to it (`fit`)."""
        if fit_mode not in FITS:
            raise KinemaError(f"fit must be one of {', '.join(FITS)}; got {fit_mode!r}")
        video = as_video(media, fps)
        frames = video.frames
        notes: tuple[str, ...] = ()
        if width is not None or height is not None:
            w = frames.shape[2] if width is None else width
            h = frames.shape[1] if height is None else height
            w, h = self._size(w, h)
            if (w, h) != (frames.shape[2], frames.shape[1]):
                how = "scaled to cover, centre-cropped" if fit_mode == "cover" else "scaled to fit, letterboxed"
                notes = (f"fitted the {frames.shape[2]}x{frames.shape[1]} input to {w}x{h} ({how})",)
            frames = fit_frames(frames, w, h, fit_mode)
        elif max(frames.shape[1:3]) > tasks.MAX_SIDE:  # its own size: within the limit of any size asked
            raise KinemaError(f"the input is {frames.shape[2]}x{frames.shape[1]}, larger than {tasks.MAX_SIDE} pixels "
                              "a side; give width / height (--size) to fit it smaller")  # fmt: skip
        *_, box, grid_note = self._grid(frames.shape[2], frames.shape[1])
        return pad_frames(frames, box), float(fps or video.fps), box, notes + grid_note

    def _tail(self, frames: Tensor, k: int) -> tuple[Tensor, int]:
        """Tail context latents (C, k, h, w) of padded frames; k shrinks to what the clip holds."""
        k = max(1, min(k, 1 + (len(frames) - 1) // self.temporal))
        return self.encode(frames[len(frames) - tasks.tail_span(k, self.temporal) :]), k

    def _head(self, frames: Tensor, k: int, what: str = "a clip to be continued from its start") -> tuple[Tensor, int]:
        """Head context latents (C, k, h, w) of padded frames; needs at least 1 + 4 frames
        (`what`: the clip, named in the error)."""
        k = min(k, (len(frames) - 1) // self.temporal)
        if k < 1:
            raise KinemaError(f"{what} needs at least {1 + self.temporal} frames; got {len(frames)}")
        return tasks.head_context(self.encode(frames[: tasks.head_span(k, self.temporal)])), k

    # ------------------------------------------------------------ tasks

    def generate(self, prompt: str, width: int | None = None, height: int | None = None, seconds: float | None = None,
                 fps: float | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                 negative_prompt: str = "", expand: Expand = None, method: str | None = None,
                 progress: bool = True, callback: Callable | None = None) -> Output:  # fmt: skip
        """Text -> video of exactly width x height and seconds * fps frames (module doc: Durations)."""
        s = self._settings(seconds=seconds, fps=fps, steps=steps, guidance=guidance)
        t = self._timing(s["seconds"], s["fps"])
        W, H, box, notes = self._grid(*self._size(width, height))
        caption, said = self.read_prompt(prompt, seed, expand)
        plan = tasks.text_to_video(self.dit.config.in_channels, tasks.latents_covering(t.made, self.temporal),
                                   *self._latent_hw(W, H))  # fmt: skip
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        frames = to_output_rate(crop_frames(self.decode(z)[: t.made], box), t)
        return Output(Video(frames, t.fps), caption, z, plan, notices=said + notes + t.notices)

    def image(self, prompt: str, width: int | None = None, height: int | None = None, steps: int | None = None,
              guidance: float | None = None, seed: int = 0, negative_prompt: str = "", expand: Expand = None,
              method: str | None = None, progress: bool = True, callback: Callable | None = None) -> Output:  # fmt: skip
        """Text -> image: one latent frame, one pixel frame."""
        s = self._settings(steps=steps, guidance=guidance, fps=None)
        W, H, box, notes = self._grid(*self._size(width, height))
        caption, said = self.read_prompt(prompt, seed, expand)
        plan = tasks.text_to_image(self.dit.config.in_channels, *self._latent_hw(W, H))
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        return Output(Video(crop_frames(self.decode(z), box), float(s["fps"])), caption, z, plan, notices=said + notes)

    def animate(self, image: Media, prompt: str, width: int | None = None, height: int | None = None,
                seconds: float | None = None, fps: float | None = None, steps: int | None = None,
                guidance: float | None = None, seed: int = 0, negative_prompt: str = "", expand: Expand = None,
                method: str | None = None, progress: bool = True, callback: Callable | None = None,
                fit: str = "cover") -> Output:  # fmt: skip
        """Image -> video: latent frame 0 pinned to the encoded image (the first frame of a
        video file). The output has the image's size, or width x height (fitted: `fit`), and
        seconds * fps frames (module doc: Durations); frame 0 is the image's."""
        s = self._settings(seconds=seconds, fps=fps, steps=steps, guidance=guidance)
        t = self._timing(s["seconds"], s["fps"])
        frames, _, box, notes = self._media(image, None, width, height, fit)
        caption, said = self.read_prompt(prompt, seed, expand)
        plan = tasks.image_to_video(self.encode(frames[:1]), tasks.latents_covering(t.made, self.temporal))
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        out = to_output_rate(crop_frames(self.decode(z)[: t.made], box), t)
        return Output(Video(out, t.fps), caption, z, plan, notices=said + notes + t.notices)

    def extend(self, video: Media, prompt: str, direction: str = "forward", seconds: float | None = None,
               fps: float | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
               negative_prompt: str = "", expand: Expand = None, context: int = CONTEXT, method: str | None = None,
               progress: bool = True, callback: Callable | None = None, width: int | None = None,
               height: int | None = None, fit: str = "cover") -> Output:  # fmt: skip
        """Exactly `seconds` of new frames (seconds * the video's rate, rounded to whole frames)
        after (forward) or before (backward) the video, which is kept whole. `context` latent
        frames of it are pinned (1 + 4(k - 1) frames forward, 1 + 4k backward); the 4n new frames
        that cover the count are made and those next to the video kept. fps: read the video at
        this rate (default: its own); the new frames are made at it. width / height: fit the
        video to this size first (default: its own size)."""
        if direction not in ("forward", "backward"):
            raise KinemaError(f"direction must be forward or backward; got {direction!r}")
        frames, rate, box, notes = self._media(video, fps, width, height, fit)
        s = self._settings(seconds=seconds, steps=steps, guidance=guidance)
        count, rounded = self._new_frames(s["seconds"], rate)
        n = -(-count // self.temporal)  # new latents: 4n new pixel frames, count of them kept
        caption, said = self.read_prompt(prompt, seed, expand)
        if direction == "forward":
            ctx, k = self._tail(frames, context)
            plan, task = tasks.extend_forward(ctx, n), "extend_forward"
        else:
            ctx, k = self._head(frames, context, "a video to extend backward")
            plan, task = tasks.extend_backward(ctx, n + 1), "extend_backward"
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        edge = dict(before=frames[-1]) if direction == "forward" else dict(after=frames[0])
        new = match_seams(self.decode(z), tasks.new_frames(task, plan, k, k, self.temporal), **edge)
        whole = torch.cat([frames, new[:count]] if direction == "forward" else [new[len(new) - count :], frames])
        return Output(Video(crop_frames(whole, box), rate), caption, z, plan, notices=said + notes + rounded)

    def connect(self, a: Media, b: Media, prompt: str, seconds: float | None = None, fps: float | None = None,
                steps: int | None = None, guidance: float | None = None, seed: int = 0, negative_prompt: str = "",
                expand: Expand = None, context: int = CONTEXT, method: str | None = None, progress: bool = True,
                callback: Callable | None = None, width: int | None = None, height: int | None = None,
                fit: str = "cover") -> Output:  # fmt: skip
        """A, then exactly `seconds` of frames (seconds * A's rate, whole frames) that lead from
        A's end into B's start, then B. The 4m - 1 middle frames nearest the count are made and
        retimed to it, ends kept (`video.span_indices`), so the middle still leads into B.
        A keeps its size unless width / height are given (then it is fitted: `fit`); B is read
        at A's rate and fitted to A's size the same way."""
        fa, rate, box, notes = self._media(a, fps, width, height, fit)
        vb = as_video(b, rate)
        size = (fa.shape[2] - box[2] - box[3], fa.shape[1] - box[0] - box[1])
        if tuple(vb.frames.shape[2:0:-1]) != size:
            notes += (f"fitted the second clip ({vb.frames.shape[2]}x{vb.frames.shape[1]}) to {size[0]}x{size[1]}",)
        fb = pad_frames(fit_frames(vb.frames, *size, fit), box)
        s = self._settings(seconds=seconds, steps=steps, guidance=guidance)
        count, rounded = self._new_frames(s["seconds"], rate)
        m = max(1, (count + 1 + self.temporal // 2) // self.temporal)  # 4m - 1 middle frames, nearest count
        caption, said = self.read_prompt(prompt, seed, expand)
        tail, ka = self._tail(fa, context)
        head, kb = self._head(fb, context, "the second video of a connect (continued back from its start)")
        plan = tasks.connect(tail, head, m)
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        middle = match_seams(self.decode(z), tasks.new_frames("connect", plan, ka, kb, self.temporal), fa[-1], fb[0])
        if len(middle) != count:
            middle = middle[span_indices(len(middle), count)]
        whole = crop_frames(torch.cat([fa, middle, fb]), box)
        return Output(Video(whole, rate), caption, z, plan, notices=said + notes + rounded)

    def loop(self, prompt: str, width: int | None = None, height: int | None = None, seconds: float | None = None,
             fps: float | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
             negative_prompt: str = "", expand: Expand = None, context: int = CONTEXT, bridge: float = 1 / 3,
             method: str | None = None, progress: bool = True, callback: Callable | None = None) -> Output:  # fmt: skip
        """A seamless loop of seconds * fps frames: a turn of 4K frames made at the model's rate
        (K = seconds * rate / 4), a clip then a bridge from its tail back to its head (`tasks`
        module doc), retimed as a cycle to the asked count (`video.span_indices`), so its last
        frame still leads into its first. `bridge`: the bridge's share of the loop.
        The output's plan and latent are the bridge's: its first latents are the clip's tail
        context, its last latents the clip's head context."""
        s = self._settings(seconds=seconds, fps=fps, steps=steps, guidance=guidance)
        t = self._timing(s["seconds"], s["fps"])
        W, H, box, notes = self._grid(*self._size(width, height))
        K = max(3, (t.made + self.temporal // 2) // self.temporal)
        m = min(K - 2, max(1, round(K * bridge)))  # bridge latents; the clip keeps at least 3
        caption, said = self.read_prompt(prompt, seed, expand)
        kw = dict(steps=s["steps"], guidance=s["guidance"], method=method, progress=progress, callback=callback)
        first = tasks.text_to_video(self.dit.config.in_channels, K - m + 1, *self._latent_hw(W, H))
        clip = self.decode(self.sample(first, caption, negative_prompt, seed=seed, **kw))  # 1 + 4(K - m) frames
        tail, ka = self._tail(clip, context)
        head, kb = self._head(clip, context)
        plan = tasks.connect(tail, head, m)
        z = self.sample(plan, caption, negative_prompt, seed=seed + 1, **kw)
        middle = match_seams(self.decode(z), tasks.new_frames("connect", plan, ka, kb, self.temporal),
                             clip[-1], clip[0])  # 4m - 1 frames  # fmt: skip
        turn = torch.cat([clip, middle])  # 4K frames
        if len(turn) != t.frames:
            turn = turn[span_indices(len(turn), t.frames, cyclic=True)]
        return Output(Video(crop_frames(turn, box), t.fps), caption, z, plan, notices=said + notes + t.notices)

    def edit(self, video: Media, prompt: str, strength: float = 0.6, fps: float | None = None,
             steps: int | None = None, guidance: float | None = None, seed: int = 0, negative_prompt: str = "",
             expand: Expand = None, method: str | None = None, progress: bool = True,
             callback: Callable | None = None, width: int | None = None, height: int | None = None,
             fit: str = "cover") -> Output:  # fmt: skip
        """SDEdit: the video's latent noised to t = strength, then sampled under the new prompt.
        strength 0 gives the VAE reconstruction of the input; 1 ignores the input. The output has
        the input's size (or width x height: fitted, `fit`) and frame count (padded to 1 + 4k
        frames inside, cropped back)."""
        if not 0.0 <= float(strength) <= 1.0:
            raise KinemaError(f"strength must be in [0, 1]; got {strength}")
        frames, rate, box, notes = self._media(video, fps, width, height, fit)
        T = len(frames)
        padded = pad_frames(frames, (0, 0, 0, 0), time_to=1 + -(-(T - 1) // self.temporal) * self.temporal)
        s = self._settings(steps=steps, guidance=guidance)
        caption, said = self.read_prompt(prompt, seed, expand)
        plan = tasks.sdedit(self.encode(padded), float(strength))
        z = self.sample(plan, caption, negative_prompt, steps=s["steps"], guidance=s["guidance"], seed=seed,
                        method=method, progress=progress, callback=callback)  # fmt: skip
        return Output(Video(crop_frames(self.decode(z)[:T], box), rate), caption, z, plan, notices=said + notes)

    def long_windows(self, prompt: str, seconds: float, window: float = 2.0, width: int | None = None,
                     height: int | None = None, fps: float | None = None, steps: int | None = None,
                     guidance: float | None = None, seed: int = 0, negative_prompt: str = "",
                     expand: Expand = None, context: int = CONTEXT, method: str | None = None,
                     progress: bool = True) -> Iterator[Window]:  # fmt: skip
        """A long video as finished windows, in order: window 0 is text -> video, each later one a
        forward extension of the same size from the last frames made. Window w uses seed + w.
        Nothing is kept from one window to the next but `context` latents' worth of pixel frames.
        Exactly seconds * fps frames in all (module doc: Durations): made at the model's rate, the
        last window cut to the total, and each window's frames resampled to fps as they come."""
        s = self._settings(seconds=seconds, fps=fps, steps=steps, guidance=guidance)
        t = self._timing(s["seconds"], s["fps"])
        Wd, Ht, box, _ = self._grid(*self._size(width, height))
        total = t.made
        W = tasks.latent_frames_for(tasks.check_window(window), t.rate, self.temporal)  # latent frames a window
        k = max(1, min(context, W - 1))
        caption, _ = self.read_prompt(prompt, seed, expand)
        kw = dict(steps=s["steps"], guidance=s["guidance"], method=method, progress=progress)
        plan = tasks.text_to_video(self.dit.config.in_channels, W, *self._latent_hw(Wd, Ht))
        frames = self.decode(self.sample(plan, caption, negative_prompt, seed=seed, **kw))
        span = tasks.tail_span(k, self.temporal)
        done, given, index, recent = 0, 0, 0, frames[:0]  # frames made, frames given out
        while True:
            frames = frames[: total - done]
            start, done = done, done + len(frames)
            recent = torch.cat([recent, frames])[-span:] if done < total else recent[:0]  # the next context
            held = plan.frames + (k if index else 0)  # this window's latent (+ the context it was pinned to)
            out = frames
            if t.resampled:  # the output frames whose source frame is in this window
                picks = []
                while given < t.frames and (i := hold_index(given, total, t.rate, t.fps)) < done:
                    picks.append(i - start)
                    given += 1
                out = frames[picks]
            yield Window(index, crop_frames(out, box), held, len(recent))
            if done >= total:
                return
            index += 1
            ctx = self.encode(recent)  # (C, k, h, w)
            plan = tasks.extend_forward(ctx, W - k)
            z = self.sample(plan, caption, negative_prompt, seed=seed + index, **kw)
            new = tasks.new_frames("extend_forward", plan, k, 0, self.temporal)
            frames = match_seams(self.decode(z), new, before=recent[-1])
            del z, ctx

    def long(self, prompt: str, seconds: float, window: float = 2.0, out: str | os.PathLike | None = None,
             on_window: Callable[[Window], None] | None = None, **kw) -> Output:  # fmt: skip
        """A video of any length by windows (see `long_windows`). With `out` (.mp4, .mkv, .mov or
        .webm) each window's frames are encoded to the file as soon as they are made, so memory
        does not grow with the length; without it the frames are returned. `on_window` is called
        with each finished window (after it is written), for progress."""
        t = self._timing(seconds, kw.get("fps") or self.defaults["fps"])  # checked before a file is opened
        window = tasks.check_window(window)
        fps = t.fps
        caption, said = self.read_prompt(prompt, kw.get("seed", 0), kw.get("expand"))
        notes = self._grid(*self._size(kw.get("width"), kw.get("height")))[3] + t.notices
        report = on_window or (lambda win: None)
        if out is None:
            frames = []
            for win in self.long_windows(prompt, seconds, window, **kw):
                frames.append(win.frames)
                report(win)
            return Output(Video(torch.cat(frames), fps), caption, notices=said + notes)
        if self.follower:  # the group's first rank writes the file
            for win in self.long_windows(prompt, seconds, window, **kw):
                report(win)
            return Output(None, caption, notices=said + notes)
        with StreamWriter(out, fps) as writer:
            for win in self.long_windows(prompt, seconds, window, **kw):
                writer.write(win.frames)
                report(win)
        return Output(None, caption, path=Path(out), notices=said + notes)


# ---------------------------------------------------------------- writing a long video


class StreamWriter:
    """Write frames to a video file as they come: H.264 (.mp4, .mkv, .mov) or VP9 (.webm) in
    yuv420p, BT.709 limited range, as `kinema.video.write_video` writes them. Atomic: the file
    appears only when the writer closes without an error. A .gif needs every frame for its
    palette: its frames are kept and written by write_video at the end."""

    CODECS = {".mp4": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".mkv": ("matroska", "libx264"),
              ".webm": ("webm", "libvpx-vp9")}  # fmt: skip

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18):
        self.path, self.fps, self.crf = Path(path), float(fps), crf
        suffix = self.path.suffix.lower()
        if suffix not in (*self.CODECS, ".gif"):
            raise KinemaError(f"{self.path}: a long video is written as .mp4, .mkv, .mov, .webm or .gif")
        if not 0 < self.fps < math.inf:
            raise KinemaError(f"{self.path}: fps must be a positive number; got {fps}")
        self.codec = self.CODECS.get(suffix)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.container = self.stream = None
        self.kept: list[Tensor] = []  # .gif only

    def __enter__(self) -> StreamWriter:
        return self

    def _open(self, width: int, height: int) -> None:
        from fractions import Fraction

        import av

        fmt, codec = self.codec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), "w", format=fmt,
                                 options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else {})  # fmt: skip
        self.stream = self.container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        options = {"crf": str(self.crf)}
        if codec == "libvpx-vp9":
            options.update({"b": "0", "cpu-used": "4", "row-mt": "1"})
        self.stream.options = options
        cc = self.stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
        cc.color_range = 1  # limited

    def write(self, frames: Tensor) -> None:
        """Append uint8 frames (T, H, W, 3); for H.264 an odd H or W is padded to even by edge
        replication (VP9 keeps it)."""
        if self.codec is None:
            self.kept.append(frames)
            return
        import av
        from av.video.reformatter import ColorRange, Colorspace

        H, W = frames.shape[1:3]
        Ws, Hs = stored_size(self.path, W, H)  # H.264 codes even sizes: repeat the last row / column, as write_video
        if (Ws, Hs) != (W, H):
            frames = F.pad(rearrange(frames, "t h w c -> t c h w").float(), (0, Ws - W, 0, Hs - H), mode="replicate")
            frames = rearrange(frames.to(torch.uint8), "t c h w -> t h w c").contiguous()
        if self.container is None:
            self._open(frames.shape[2], frames.shape[1])
        for rgb in frames.numpy():
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            self.container.mux(self.stream.encode(frame))

    def __exit__(self, kind, value, tb) -> None:
        if self.container is not None:
            try:
                if kind is None:
                    self.container.mux(self.stream.encode(None))
            finally:
                self.container.close()
            if kind is None:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        elif kind is None and self.kept:
            from kinema.video import write_video

            write_video(self.path, torch.cat(self.kept), self.fps)


# ---------------------------------------------------------------- packing a model to ship


def pack_model(source: str | os.PathLike, out: str | os.PathLike, *, vae: str | None = None,
               defaults: dict | None = None, expand: bool | None = None,
               dtype: torch.dtype = torch.float16) -> Path:  # fmt: skip
    """Copy a model folder (an export or a run) into `out` as a self-contained folder to ship:
    the DiT and the builtin text encoder stored in `dtype` (float16 halves the files; loading
    gives float32 back), pipeline.json naming `vae` (a shipped VAE name such as "world-vae", or
    the source's VAE copied into out/vae/) and the sampling `defaults` / `expand` given (over the
    source's own defaults)."""
    from safetensors.torch import load_file, save_file

    from kinema.vae import load_vae, save_vae

    src = resolve(source)
    spec = _read_json(src / PIPELINE_FILE)
    unknown = sorted(set(defaults or {}) - set(DEFAULT_KEYS))
    if unknown:
        raise KinemaError(f"unknown defaults {unknown}; known: {sorted(DEFAULT_KEYS)}")
    if "fps_range" in (defaults or {}):
        tasks.check_frame_rates(defaults["fps_range"])
    if vae is not None:
        load_vae(vae)  # a clear error before anything is written if the name does not resolve
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    dit_file, dit_config = spec.get("dit", "dit.safetensors"), spec.get("dit_config", "dit.json")
    state = {k: v.to(dtype).contiguous() for k, v in load_file(str(src / dit_file)).items()}
    save_file(state, str(dst / "dit.safetensors"), metadata={"format": "pt", "model": "kinema.dit"})
    (dst / "dit.json").write_text((src / dit_config).read_text())
    text_spec = str(spec.get("text_encoder", "builtin:."))
    if text_spec.startswith("builtin"):
        text = _load_text(src, text_spec, torch.device("cpu"))
        text.to(dtype).save(dst)
        text_spec = "builtin:."
    if vae is None:  # carry the source's VAE along
        save_vae(_load_vae(src, str(spec.get("vae", "")), torch.device("cpu")), dst / "vae", dtype=dtype)
        vae = "vae"
    doc = {"dit": "dit.safetensors", "dit_config": "dit.json", "text_encoder": text_spec, "vae": vae,
           "step": spec.get("step")}  # fmt: skip
    if expand is not None:
        doc["expand"] = "world" if expand else False
    defaults = {**spec.get("defaults", {}), **(defaults or {})}  # the export's shift_scale stays
    if defaults:
        doc["defaults"] = defaults
    from kinema.llm import STYLE_FILE

    if (src / STYLE_FILE).is_file():  # its prompt-expansion style travels with it
        (dst / STYLE_FILE).write_text((src / STYLE_FILE).read_text(encoding="utf-8"), encoding="utf-8")
    (dst / PIPELINE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return dst


# ---------------------------------------------------------------- a tiny model for tests


def make_test_pipeline(directory: str | os.PathLike, seed: int = 0, hidden: int = 64, depth: int = 2,
                       text_dim: int = 64) -> Path:  # fmt: skip
    """Write a random-init model folder (tiny VAE in vae/, a DiT of `hidden` x `depth`, a 1-layer
    builtin text encoder over Kinema World's words) through the same export as training
    (`train.dit.export_weights`), and return it. The zero-initialised layers of the DiT
    (adaLN-Zero) get small random weights, so that its velocity depends on x, t and the caption.
    For tests and benchmarks of the pipeline, not for pictures."""
    from types import SimpleNamespace

    from kinema.data import world_captions
    from kinema.dit import DiT, DiTConfig
    from kinema.text.encoder import BuiltinTextEncoder, TextEncoderConfig
    from kinema.train.common import EMA, Dist
    from kinema.train.dit import DiTTrainConfig, FlowModel, export_weights
    from kinema.vae import CausalVAE, VAEConfig, save_vae

    out = Path(directory)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        save_vae(CausalVAE(VAEConfig.tiny()).eval(), out / "vae")
        dit = DiT(DiTConfig.tiny(hidden=hidden, depth=depth, heads=max(1, hidden // 32), text_dim=text_dim))
        with torch.no_grad():
            for p in dit.parameters():
                if not p.abs().any():
                    p.normal_(0.0, 0.02)
        text_cfg = TextEncoderConfig(dim=text_dim, depth=1, heads=2)
        text = BuiltinTextEncoder.from_texts(world_captions(60, seed), text_cfg)
        model = FlowModel(dit, text)
        cfg = DiTTrainConfig(vae="vae", hidden=hidden, depth=depth, text_dim=text_dim, text_depth=1, text_heads=2)
        run = SimpleNamespace(model=model, d=Dist(0, 1, 0, torch.device("cpu")), ema=EMA(model, 0.0), cfg=cfg, step=0,
                              extent=(0, 0, 0), min_side=0)  # fmt: skip
        export_weights(run, out)
    return out


# ---------------------------------------------------------------- benchmark


def _bench_child(args: dict) -> None:
    """Run in a fresh interpreter by `bench_generate`: load, generate, print one JSON line."""
    import resource

    t0 = time.perf_counter()
    try:
        pipe = Pipeline.from_pretrained(args["model"], device=args["device"])
        t1 = time.perf_counter()
        out = pipe.generate(args["prompt"], args["width"], args["height"], args["seconds"], args["fps"],
                            args["steps"], seed=0, progress=False)  # fmt: skip
    except KinemaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    T, H, W, _ = out.frames.shape
    print(json.dumps(dict(load_s=t1 - t0, generate_s=t2 - t1, frames=T, width=W, height=H, peak_rss_mib=rss)))


def bench_generate(model: str = "world", width: int | None = None, height: int | None = None, seconds: float = 2.0,
                   fps: float | None = None, steps: int | None = None, device: str = "cpu",
                   prompt: str = "a red ball bounces on green grass") -> list[dict]:  # fmt: skip
    """Wall time and peak RSS of one default generate (model load included) in a fresh process."""
    args = dict(model=str(model), width=width, height=height, seconds=seconds, fps=fps, steps=steps,
                device=device, prompt=prompt)  # fmt: skip
    code = "import json, sys; from kinema.pipeline import _bench_child; _bench_child(json.loads(sys.argv[1]))"
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1].removeprefix("error: ") if lines else f"exit code {res.returncode}"
        raise KinemaError(f"bench generate failed: {why}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    return [dict(model=str(model), size=f"{row['width']}x{row['height']}", frames=row["frames"],
                 wall_s=wall, startup_s=wall - row["load_s"] - row["generate_s"], load_s=row["load_s"],
                 generate_s=row["generate_s"], peak_rss_mib=row["peak_rss_mib"])]  # fmt: skip
