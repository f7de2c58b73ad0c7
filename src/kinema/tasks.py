"""Every prompting mode of the report as a plan for the one sampler (`sampling.denoise`).

A task only says which latent frames are pinned clean and to what, where the sampler starts
and from what time. Latents are normalized, (C, T, H, W); with the 4x8x8 causal VAE a clip of
1 + 4k pixel frames has 1 + k latent frames: latent frame 0 is the first pixel frame alone (an
image), every later latent frame covers the next 4 pixel frames.

    task                 plan
    text -> video        T latent frames, nothing pinned, start from noise     text_to_video
    text -> image        1 latent frame                                          text_to_image
    image -> video       frame 0 pinned to the encoded image                    image_to_video
    extend forward       the input's tail context pinned at the start           extend_forward
    extend backward      the input's head context pinned at the end             extend_backward
    long video           repeated forward extension in windows of equal size    extend_forward
    seamless loop        a clip, then a bridge from its tail back to its head   connect
    connect A -> B       A's tail at the start, B's head at the end             connect
    SDEdit               start from the input's latent noised to t = strength   sdedit

Context frames and the causal VAE. The model learnt pinned frames from real clips (flow.py:
first_k, last_k, first_last), where latent frame 0 is always an image latent and later frames
are 4-frame latents whose encoding saw the frames before them. A context is built to look the
same, by re-encoding pixels rather than cutting latents out of a longer clip:

  tail context (pinned at the start of a window): the last `tail_span(k) = 1 + 4(k - 1)` pixel
      frames of a clip, encoded as a clip of their own -> k latents, the first an image latent.
      The window decodes to those frames again, then 4 new frames per generated latent.
  head context (pinned at the end of a window): the first `head_span(k) = 1 + 4k` pixel frames
      of a clip, encoded, latent 0 dropped (`head_context`) -> k 4-frame latents for pixel
      frames 1 .. 4k, each encoded after the clip's real first frame. In the window, the last
      pixel frame of the latent just before them stands where that first frame stood; it is
      dropped, and the clip's own frames follow, so the output keeps the clip whole.

Frames a window adds (`new_frames`): extend forward by n latents: 4n frames after the input;
extend backward by n + 1 latents: 4n frames before it; connect with m middle latents: 4m - 1
frames between A and B.

Durations. A video of `seconds` for a file at F fps (`timing`): the model makes its frames at
r, F clamped into the rates it makes natively (pipeline.json's "fps_range"), N = seconds * r
of them rounded to whole frames: the 1 + 4k frames that cover N are sampled and the first N
kept. If F is not r, the N frames are resampled in time (sample and hold) to M = seconds * F
frames. What was rounded or resampled is stated in notices. Extend and connect make their new
frames at the input's rate: exactly seconds * rate of them.

Long video. Window 1 is text -> video of `window` latent frames; every later window is a
forward extension of the same size: `context` tail latents re-encoded from the last
`tail_span(context)` pixel frames written, then `window - context` new latents. Each finished
window's new frames go to the writer at once, so what is held (one window's latent, one
context, `tail_span` pixel frames) does not grow with the length of the video.

Seamless loop. Generate a clip C, then connect C's end to C's start: a bridge window with C's
tail context pinned at its start and C's head context at its end. The output is C followed by
the bridge's middle frames; played in a loop, its last frame leads into C's first frame exactly
as the middle of a connect leads into B, so the seam is a seam the model was trained to make
(first_last conditioning), and no frame of C is altered. Tying the last latents to the first
during sampling would pin an image latent (frame 0) into a 4-frame position, which the model
never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kinema.errors import KinemaError
from kinema.sampling import Plan

__all__ = [
    "MAX_FPS",
    "MAX_SECONDS",
    "MAX_SIDE",
    "Plan",
    "Timing",
    "check_fps",
    "check_frame_rates",
    "check_seconds",
    "check_size",
    "check_window",
    "covering_size",
    "connect",
    "duration_notice",
    "extend_backward",
    "extend_forward",
    "frame_count",
    "head_context",
    "head_span",
    "image_to_video",
    "latent_frames_for",
    "latents_covering",
    "new_frames",
    "pixel_frames",
    "sdedit",
    "tail_span",
    "text_to_image",
    "text_to_video",
    "timing",
]

TEMPORAL = 4  # pixel frames per latent frame after the first (the VAE's temporal factor)
SIZE_MULTIPLE = 16  # pixels per token side: the VAE's 8 x the patch's 2
MAX_SECONDS = 3600.0  # the long-video limit; long videos are made in windows, so memory does not grow
MAX_FPS = 240.0
MAX_SIDE = 8192  # pixels a side (8K, where H.264's levels end); 10000x10000 ran until the memory ran out


# ---------------------------------------------------------------- sizes and frame counts


def check_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(width, height) if both are positive whole numbers of pixels up to MAX_SIDE, else
    KinemaError. Any such size is made: on the covering grid (`covering_size`), then cropped back
    (the pipeline)."""
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise KinemaError(f"width and height must be positive whole numbers of pixels; got {width}x{height}")
    if max(width, height) > MAX_SIDE:
        raise KinemaError(f"width and height must be at most {MAX_SIDE} pixels; got {width}x{height}")
    return int(width), int(height)


def covering_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The size rule, for every model and task: the smallest grid size (both sides multiples of
    `multiple`, the model's pixels per token side) that covers width x height. The model makes
    that, and the centre width x height of it is kept: never stretched."""
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def pixel_frames(latent_frames: int, temporal: int = TEMPORAL) -> int:
    """Pixel frames decoded from T latent frames: 1 + temporal (T - 1)."""
    return 1 + temporal * (latent_frames - 1)


def latent_frames_for(seconds: float, fps: float, temporal: int = TEMPORAL, minimum: int = 2) -> int:
    """Latent frames of the clip of 1 + temporal k pixel frames nearest to seconds * fps frames
    (at least `minimum` latent frames: a video has at least 1 + temporal frames)."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise KinemaError(f"seconds must be a positive number; got {seconds}")
    if not (fps > 0 and math.isfinite(fps)):
        raise KinemaError(f"fps must be a positive number; got {fps}")
    return max(minimum, 1 + round((seconds * fps - 1) / temporal))


def _positive(value, name: str, limit: float, why: str = "") -> float:
    """`value` as a float if it is a positive finite number up to `limit`, else KinemaError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise KinemaError(f"{name} must be a number; got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise KinemaError(f"{name} must be a positive number; got {value}")
    if v > limit:
        raise KinemaError(f"{name} must be at most {limit:g}{why}; got {value:g}")
    return v


def check_seconds(seconds: float) -> float:
    """`seconds` as a float if it is a positive finite number up to MAX_SECONDS, else KinemaError."""
    return _positive(seconds, "seconds", MAX_SECONDS, " (the long-video limit)")


def check_fps(fps: float) -> float:
    """`fps` as a float if it is a positive finite number up to MAX_FPS, else KinemaError."""
    return _positive(fps, "fps", MAX_FPS)


def check_window(window: float) -> float:
    """A long video's window in seconds as a float if it is a positive finite number up to
    MAX_SECONDS, else KinemaError."""
    return _positive(window, "window", MAX_SECONDS, " seconds")


def check_frame_rates(rates) -> tuple[float, float]:
    """A model's "fps_range" [lo, hi] as floats, 0 < lo <= hi <= MAX_FPS, else KinemaError."""
    try:
        lo, hi = (float(r) for r in rates)
    except (TypeError, ValueError):
        raise KinemaError(f"fps_range must be two numbers [lo, hi]; got {rates!r}") from None
    if not (0 < lo <= hi <= MAX_FPS):
        raise KinemaError(f"fps_range must be [lo, hi] with 0 < lo <= hi <= {MAX_FPS:g}; got {rates!r}")
    return lo, hi


def frame_count(seconds: float, fps: float, minimum: int = 2) -> int:
    """Whole frames in `seconds` at `fps`: seconds * fps rounded half up, at least `minimum`."""
    return max(minimum, math.floor(seconds * fps + 0.5 + 1e-9))  # 1e-9: 2.05 s * 30 is 61.5, not 61.4999...


def latents_covering(frames: int, temporal: int = TEMPORAL, minimum: int = 2) -> int:
    """Latent frames of the shortest clip of 1 + temporal k pixel frames that holds `frames`."""
    return max(minimum, 1 + -(-(frames - 1) // temporal))


def duration_notice(seconds: float, fps: float, frames: int) -> tuple[str, ...]:
    """The notice that `frames` at `fps` is not exactly `seconds`, or none."""
    if abs(frames / fps - seconds) <= 1e-9 * max(1.0, seconds):
        return ()
    return (f"{seconds:g} s at {fps:g} fps is {frames} frame{'s' * (frames != 1)} ({frames / fps:.4g} s)",)


@dataclass(frozen=True)
class Timing:
    """How a duration is made: `made` frames at the model's `rate`, shown as `frames` at `fps`."""

    seconds: float
    fps: float  # the file's rate F
    rate: float  # the rate the model makes frames at: F clamped into its frame rates
    made: int  # N = seconds * rate, whole frames
    frames: int  # M = seconds * fps, whole frames: the output
    notices: tuple[str, ...] = ()

    @property
    def resampled(self) -> bool:
        return self.fps != self.rate


def timing(seconds: float, fps: float, frame_rates: tuple[float, float]) -> Timing:
    """The duration rule (module doc): `seconds` for a file at `fps`, by a model that makes frames
    natively at rates in `frame_rates` (lo, hi). Checks seconds and fps (KinemaError)."""
    seconds, fps = check_seconds(seconds), check_fps(fps)
    lo, hi = frame_rates
    rate = min(max(fps, lo), hi)
    made, frames = frame_count(seconds, rate), frame_count(seconds, fps)
    notes = duration_notice(seconds, fps, frames)
    if fps > hi:
        notes += (f"{fps:g} fps is above the model's {hi:g} fps: made at {hi:g} fps and resampled in time "
                  "(frames repeated)",)  # fmt: skip
    elif fps < lo:
        notes += (f"{fps:g} fps is below the model's {lo:g} fps: made at {lo:g} fps and resampled in time "
                  "(frames dropped)",)  # fmt: skip
    return Timing(seconds, fps, rate, made, frames, notes)


def tail_span(k: int, temporal: int = TEMPORAL) -> int:
    """Pixel frames at a clip's end whose encoding, as a clip of their own, is k tail context latents."""
    return 1 + temporal * (k - 1)


def head_span(k: int, temporal: int = TEMPORAL) -> int:
    """Pixel frames at a clip's start whose encoding, latent 0 dropped, is k head context latents."""
    return 1 + temporal * k


def head_context(latent: Tensor) -> Tensor:
    """The head context from the latent (C, 1 + k, H, W) of a clip's first `head_span(k)` frames:
    its k 4-frame latents (the image latent of frame 0 dropped)."""
    if latent.shape[1] < 2:
        raise KinemaError("a head context needs the latent of at least 1 + 4 pixel frames")
    return latent[:, 1:]


def new_frames(task: str, plan: Plan, context: int = 0, end_context: int = 0, temporal: int = TEMPORAL) -> slice:
    """Which pixel frames of a decoded window are new (to be joined to the inputs):

    text_to_video, image_to_video: all of them
    extend_forward (context = tail latents): after the decoded context, temporal x new latents
    extend_backward (end_context = head latents): before the slot of the clip's first frame
    connect (context, end_context): between A's decoded tail and the slot of B's first frame
    """
    T = plan.frames
    if task in ("text_to_video", "text_to_image", "image_to_video", "sdedit"):
        return slice(0, pixel_frames(T, temporal))
    if task == "extend_forward":
        return slice(tail_span(context, temporal), pixel_frames(T, temporal))
    if task == "extend_backward":
        return slice(0, temporal * (T - end_context - 1))
    if task == "connect":
        start = tail_span(context, temporal)
        return slice(start, start + temporal * (T - context - end_context) - 1)
    raise KinemaError(f"unknown task {task!r}")


# ---------------------------------------------------------------- plans


def _empty(shape: tuple[int, int, int, int]) -> Tensor:
    return torch.zeros(shape[1], dtype=torch.bool)


def text_to_video(channels: int, frames: int, height: int, width: int) -> Plan:
    """Nothing pinned: a latent (channels, frames, height, width) from noise (latent units)."""
    if frames < 1:
        raise KinemaError(f"a clip needs at least 1 latent frame; got {frames}")
    shape = (channels, frames, height, width)
    return Plan(shape, _empty(shape))


def text_to_image(channels: int, height: int, width: int) -> Plan:
    """One latent frame: an image is a 1-frame video."""
    return text_to_video(channels, 1, height, width)


def image_to_video(image: Tensor, frames: int) -> Plan:
    """Latent frame 0 pinned to the encoded image (C, 1, H, W); `frames` latent frames in all."""
    C, one, H, W = image.shape
    if one != 1:
        raise KinemaError(f"image_to_video takes the latent of one image (C, 1, H, W); got {tuple(image.shape)}")
    if frames < 2:
        raise KinemaError("an animation needs at least 2 latent frames (1 + 4 pixel frames)")
    shape = (C, frames, H, W)
    values = torch.zeros(shape, dtype=image.dtype, device=image.device)
    values[:, :1] = image
    pinned = _empty(shape)
    pinned[0] = True
    return Plan(shape, pinned, values)


def extend_forward(context: Tensor, new: int) -> Plan:
    """A tail context (C, k, H, W) pinned at the start, then `new` generated latent frames."""
    return connect(context, None, new)


def extend_backward(context: Tensor, new: int) -> Plan:
    """`new` generated latent frames, then a head context (C, k, H, W) pinned at the end."""
    return connect(None, context, new)


def connect(start: Tensor | None, end: Tensor | None, middle: int) -> Plan:
    """`start` (C, ka, H, W) pinned at the start, `middle` generated latents, `end` (C, kb, H, W)
    pinned at the end; either context may be None (extension)."""
    if middle < 1:
        raise KinemaError(f"a window needs at least 1 latent frame to generate; got {middle}")
    parts = [c for c in (start, end) if c is not None]
    if not parts:
        raise KinemaError("connect needs a start or an end context")
    C, _, H, W = parts[0].shape
    if any((c.shape[0], c.shape[2], c.shape[3]) != (C, H, W) for c in parts):
        raise KinemaError(f"the contexts have different sizes: {[tuple(c.shape) for c in parts]}")
    ka = 0 if start is None else start.shape[1]
    kb = 0 if end is None else end.shape[1]
    shape = (C, ka + middle + kb, H, W)
    values = torch.zeros(shape, dtype=parts[0].dtype, device=parts[0].device)
    pinned = _empty(shape)
    if start is not None:
        values[:, :ka] = start
        pinned[:ka] = True
    if end is not None:
        values[:, ka + middle :] = end
        pinned[ka + middle :] = True
    return Plan(shape, pinned, values)


def sdedit(latent: Tensor, strength: float) -> Plan:
    """Start from the input's latent (C, T, H, W) noised to t = strength; nothing pinned.

    strength 0 returns the input latent unchanged (no step); strength 1 starts from pure noise
    and ignores the input."""
    if not 0.0 <= strength <= 1.0:
        raise KinemaError(f"strength must be in [0, 1]; got {strength}")
    shape = tuple(latent.shape)
    if strength >= 1.0:
        return Plan(shape, _empty(shape))
    return Plan(shape, _empty(shape), start=latent, t_start=float(strength))
