"""Reading and writing videos and images, in the one layout the whole project uses.

Layout
------
- In memory a clip is a `Video`: `frames` is a uint8 tensor (T, H, W, 3), RGB, channels last,
  row 0 at the top, and `fps` is its frame rate. An image is a 1-frame video.
- The models see float (3, T, H, W) in [-1, 1]: `to_model` and `from_model` convert, and are
  exact inverses on uint8 frames.

Reading (`read_video`, `probe`)
- Videos (mp4, mov, mkv, webm, avi, gif, apng, ...) are decoded with PyAV; still and animated
  images (png, jpg, webp, bmp, tiff) with Pillow, which also knows animated WebP and EXIF
  orientation. A display rotation stored in a video (phones) is applied, and non-square pixels
  (an anamorphic video's sample aspect ratio) are stretched to square ones, never shrunk, so
  frames come out upright and in shape, as a player shows them.
- Frame times are index / fps at the stream's average rate, counted from `start_frame`: a
  variable-rate file (or an animated image with uneven delays) is read as if it had a constant
  rate. A one-frame GIF is a still and gets `DEFAULT_FPS`, as other stills do.
- `fps=` resamples by sample and hold: output frame k shows the source frame that is on screen
  at time k / fps (see `resample_indices`). Frames that are dropped are decoded (later frames
  depend on them) but never converted to RGB, and decoding stops once `max_frames` are kept.
- `hold_indices` and `span_indices` retime frames in memory to an exact count (the pipeline's
  durations at any fps, a loop's turn, a connect's middle).

Writing (`write_video`), chosen by extension
- .mp4 .mov .mkv: H.264 (libx264), yuv420p, BT.709, `crf` quality; mp4 and mov are written
  with the index at the front so they play while downloading. yuv420p H.264 cannot code an odd
  width or height (its crop window moves in steps of 2 pixels), so an odd size is padded to the
  next even one by repeating the last column / row, and reading the file gives that padded
  size. Write .webm to keep an odd size exactly.
- .webm: VP9 (libvpx), yuv420p, any size, `crf` quality.
- .gif: one palette for the whole clip, ordered dithering; lossy, and a GIF stores delays in
  1/100 s, so a rate that does not divide 100 reads back as the nearest average.
- .png (lossless), .jpg, .webp (lossless): exactly one frame; more raises `VideoError`.
Writes are atomic: a hidden temporary file in the target folder is renamed over the target
only once complete, so a failed write leaves nothing and an old file stays intact.

Every failure a user can cause raises `kinema.errors.VideoError` naming the file and the reason.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace
from einops import rearrange
from PIL import Image, ImageOps

from kinema.errors import VideoError

DEFAULT_FPS = 24.0  # the rate given to still images and to videos that do not state one
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
_EPS = 1e-6  # slack for float frame times, e.g. 3 * (10 / 30) landing just below 1


@dataclass(frozen=True, eq=False)  # no ==: a tensor comparison has no single truth value
class Video:
    """A clip: `frames` uint8 (T, H, W, 3) RGB and `fps` frames per second."""

    frames: torch.Tensor
    fps: float


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reads without decoding the whole file: size as `read_video` returns it."""

    width: int
    height: int
    fps: float
    frames: int
    duration: float  # seconds


# ---------------------------------------------------------------- model layout

def to_model(frames: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float (..., 3, T, H, W) in [-1, 1], on the input's device."""
    x = _as_tensor(frames, "to_model")
    if x.dtype != torch.uint8 or x.ndim < 4 or x.shape[-1] != 3:
        raise VideoError(
            f"to_model expects uint8 frames (T, H, W, 3); got {x.dtype} {tuple(x.shape)}"
        )
    x = rearrange(x, "... t h w c -> ... c t h w").contiguous().to(dtype)
    return x.div_(127.5).sub_(1.0)


def from_model(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """float (..., 3, T, H, W) in [-1, 1] -> uint8 (..., T, H, W, 3); clamps, rounds, NaN -> grey."""
    x = _as_tensor(x, "from_model")
    if x.ndim < 4 or x.shape[-4] != 3:
        raise VideoError(f"from_model expects (3, T, H, W); got {tuple(x.shape)}")
    x = torch.nan_to_num(x.detach().float(), nan=0.0)
    x = x.add(1.0).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8)
    return rearrange(x, "... c t h w -> ... t h w c").contiguous()


# ---------------------------------------------------------------- frame rate

def _source_index(k: int, src_fps: float, dst_fps: float) -> int:
    """The source frame on screen at output time k / dst_fps."""
    return math.floor(k * src_fps / dst_fps + _EPS)


def resample_indices(n_src: int, src_fps: float, dst_fps: float) -> list[int]:
    """Source frame index for each output frame when `n_src` frames at `src_fps` play at `dst_fps`.

    Output frame k takes the source frame on screen at time k / dst_fps (sample and hold), and
    outputs run while that time is inside the clip. Halving the rate keeps frames 0, 2, 4, ...;
    tripling it repeats each frame three times; frame 0 is always kept.
    """
    if n_src < 0 or not (src_fps > 0 and dst_fps > 0) or math.isinf(src_fps) or math.isinf(dst_fps):
        raise VideoError(f"resample_indices needs n_src >= 0 and finite fps > 0; got {n_src}, {src_fps}, {dst_fps}")
    indices = []
    while (i := _source_index(len(indices), src_fps, dst_fps)) < n_src:
        indices.append(i)
    return indices


def hold_index(k: int, n_src: int, src_fps: float, dst_fps: float) -> int:
    """The source frame that output frame k shows when `n_src` frames at `src_fps` play at
    `dst_fps`: the one on screen at time k / dst_fps, the last frame held past the end."""
    return min(n_src - 1, _source_index(k, src_fps, dst_fps))


def hold_indices(n_src: int, src_fps: float, dst_fps: float, count: int) -> list[int]:
    """Exactly `count` output frames of `n_src` frames at `src_fps` played at `dst_fps`, by sample
    and hold (`hold_index`): as `resample_indices`, but the count is given, so a clip made at one
    rate lasts exactly count / dst_fps seconds at another (frames repeated or dropped)."""
    if n_src < 1 or count < 0 or not (0 < src_fps < math.inf and 0 < dst_fps < math.inf):
        raise VideoError(f"hold_indices needs n_src >= 1, count >= 0 and finite fps > 0; got {n_src}, {count}, "
                         f"{src_fps}, {dst_fps}")  # fmt: skip
    return [hold_index(k, n_src, src_fps, dst_fps) for k in range(count)]


def span_indices(n_src: int, count: int, cyclic: bool = False) -> list[int]:
    """`n_src` frames retimed to exactly `count`, their span stretched or squeezed in time.

    cyclic=False: frames that lie between two others (the middle of a connect): the first and
    the last are kept, and output k shows the source frame nearest to its place in between.
    cyclic=True: one turn of a loop (the frame after the last is the first): output k shows the
    frame on screen at k / count of the turn (sample and hold), so the turn stays seamless.
    """
    if n_src < 1 or count < 0:
        raise VideoError(f"span_indices needs n_src >= 1 and count >= 0; got {n_src}, {count}")
    if cyclic:
        return [k * n_src // count for k in range(count)]
    if count == 1:
        return [(n_src - 1) // 2]
    return [math.floor(k * (n_src - 1) / (count - 1) + 0.5) for k in range(count)]


def _pick(
    source: Iterable, to_rgb: Callable[[object], np.ndarray], src_fps: float,
    fps: float | None, start_frame: int, max_frames: int | None,
) -> tuple[list[np.ndarray], int, bool]:
    """Stream `source` and keep the frames `resample_indices` would pick, converting only those.

    Returns (kept RGB frames, source frames seen, whether it stopped early at max_frames).
    """
    dst_fps = src_fps if fps is None else fps
    kept: list[np.ndarray] = []
    seen = 0
    for i, frame in enumerate(source):
        seen = i + 1
        j = i - start_frame
        if j < 0:
            continue
        rgb = None
        while _source_index(len(kept), src_fps, dst_fps) == j:  # 0, 1 or several outputs
            rgb = to_rgb(frame) if rgb is None else rgb
            kept.append(rgb)
            if max_frames is not None and len(kept) >= max_frames:
                return kept, seen, True
    return kept, seen, False


# ---------------------------------------------------------------- reading

def read_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    start_frame: int = 0,
) -> Video:
    """Decode a video or image file into uint8 (T, H, W, 3) RGB frames.

    fps: resample to this rate (sample and hold); None keeps the file's own rate. For a still
        image it only sets `Video.fps` (default `DEFAULT_FPS`); the image stays one frame.
    max_frames: keep at most this many output frames, and stop decoding there.
    start_frame: first source frame to keep, counted at the file's own rate.
    """
    path = _check_file(path)
    if fps is not None and not (0 < fps < math.inf):
        raise VideoError(f"{path}: fps must be a positive number; got {fps}")
    if max_frames is not None and max_frames < 1:
        raise VideoError(f"{path}: max_frames must be at least 1; got {max_frames}")
    if start_frame < 0:
        raise VideoError(f"{path}: start_frame must be >= 0; got {start_frame}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path, fps, max_frames, start_frame)

    with _av_errors(path, "decode"), _open(path) as container:
        stream = _video_stream(container, path)
        src_fps = _stream_fps(stream)
        _check_index(path, container, stream)
        decoded = _Tail(container.decode(stream))
        kept, seen, stopped = _pick(decoded, _FrameToRGB(stream), src_fps, fps, start_frame, max_frames)
        if not stopped:
            _check_duration(path, container, stream, seen, src_fps, decoded.last)
    _check_kept(path, kept, seen, start_frame)
    frames = torch.from_numpy(np.stack(kept))  # (T, H, W, 3)
    return Video(frames, float(fps or src_fps))


def spread_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `n_frames` (the middle of each of `count` equal
    parts), at most one each: what a captioner is shown of a clip."""
    count = max(1, min(int(count), int(n_frames)))
    return [int((i + 0.5) * n_frames / count) for i in range(count)]


def read_frames_at(path: str | os.PathLike, indices: list[int]) -> np.ndarray:
    """The frames at these indices (counted at the file's own rate), uint8 (K, H, W, 3), decoding
    only up to the last one. An index past the end gives the last frame."""
    path = _check_file(path)
    if not indices or min(indices) < 0:
        raise VideoError(f"{path}: frame indices must be >= 0; got {indices}")
    wanted, stop = set(indices), max(indices)
    found: dict[int, np.ndarray] = {}
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with _pil_errors(path), Image.open(path) as image:
            end = min(getattr(image, "n_frames", 1), stop + 1)
            for i in range(end):
                if i in wanted or i == end - 1:
                    image.seek(i)
                    found[i] = _image_to_rgb(image)
    else:
        with _av_errors(path, "decode"), _open(path) as container:
            stream = _video_stream(container, path)
            to_rgb, seen = _FrameToRGB(stream), None
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    found[i] = to_rgb(frame)
                seen = (i, frame)
                if i >= stop:
                    break
            if seen is not None and seen[0] not in found:  # fewer frames than asked for: the last stands in
                found[seen[0]] = to_rgb(seen[1])
    if not found:
        raise VideoError(f"{path}: the video has no frames")
    last = max(found)
    return np.stack([found.get(i, found[last]) for i in indices])


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, rate, frame count and duration of a video or image, as `read_video` would return it.

    Decodes the first frame (for the displayed size), and every frame only when the container
    does not store its frame count (mkv, webm). It catches truncated files (an mp4 index that
    points past the end, fewer frames than an mkv's duration), not every damaged frame.
    """
    path = _check_file(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_image(path)
    with _av_errors(path, "decode"), _open(path) as container:
        stream = _video_stream(container, path)
        src_fps = _stream_fps(stream)
        _check_index(path, container, stream)
        decoded = container.decode(stream)
        first = next(decoded, None)
        if first is None:
            raise VideoError(f"{path}: the video has no frames")
        height, width = _FrameToRGB(stream)(first).shape[:2]
        frames = stream.frames
        if frames <= 0:  # not in the header: count by decoding
            rest = _Tail(decoded)
            frames = 1 + sum(1 for _ in rest)
            _check_duration(path, container, stream, frames, src_fps, rest.last or first)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = frames / src_fps
    return VideoInfo(width, height, src_fps, frames, duration)


def _open(path: Path):
    # Tags that are not UTF-8 must not make a video unreadable.
    return av.open(str(path), metadata_errors="replace")


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _stream_fps(stream) -> float:
    if stream.codec_context.name == "gif" and stream.frames == 1:
        return DEFAULT_FPS  # a still: its one delay is no frame rate
    if stream.codec_context.name == "gif" and stream.frames > 0 and stream.duration:
        # Delays are whole 1/100 s and may alternate (4, 4, 5 for 24 fps): take the mean.
        return stream.frames / float(stream.duration * stream.time_base)
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate < 10_000:
            return float(rate)
    return DEFAULT_FPS


class _FrameToRGB:
    """av.VideoFrame -> uint8 (H, W, 3), upright and with square pixels; later frames take the
    first frame's size."""

    def __init__(self, stream):
        self.size: tuple[int, int] | None = None
        self.quarter_turns = 0
        sar = stream.sample_aspect_ratio  # None or 0 when unknown; beyond 1:16 - 16:1 is damage
        self.sar = sar if sar and 1 / 16 <= sar <= 16 else 1

    def __call__(self, frame) -> np.ndarray:
        if self.size is None:
            width, height = frame.width, frame.height
            if self.sar > 1:  # wide pixels: stretch the width
                width = round(width * self.sar)
            elif self.sar < 1:  # tall pixels: stretch the height
                height = round(height / self.sar)
            self.size = (width, height)
            self.quarter_turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise
        width, height = self.size
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # (H, W, 3)
        return np.rot90(rgb, self.quarter_turns) if self.quarter_turns else rgb


class _Tail:
    """Iterate `frames`, remembering the last one (`last`)."""

    def __init__(self, frames: Iterable):
        self.frames, self.last = frames, None

    def __iter__(self):
        for frame in self.frames:
            self.last = frame
            yield frame


def _check_duration(path: Path, container, stream, seen: int, src_fps: float, last) -> None:
    """mkv / webm store a duration but no frame count: raise if a fully decoded video, whose last
    frame is `last` (the `seen`-th), ends clearly before its duration (a download that stopped
    early). Its end is the last frame's time plus a frame, so a variable rate (a long pause) is no
    shortfall. The video's duration is its own DURATION tag (FFmpeg and mkvmerge write one a
    stream, in the header), else the file's when the video is its only stream (beside audio, the
    file's may be the audio's, longer)."""
    if stream.frames > 0:
        return  # a counted or indexed container (mp4: `_check_index`)
    seconds = _tag_seconds(stream.metadata.get("DURATION"))
    if seconds is None and len(container.streams) == 1 and container.duration:
        seconds = container.duration / av.time_base
    if not seconds:
        return
    if last is not None and last.pts is not None and stream.time_base:
        end = float((last.pts - (stream.start_time or 0)) * stream.time_base) + 1 / src_fps
    else:
        end = seen / src_fps
    if end < seconds - max(2 / src_fps, seconds / 20):
        raise VideoError(
            f"{path}: truncated: its header gives {seconds:.2f} s but the {seen} frames that decode "
            f"end at {end:.2f} s; re-download or re-encode the file"
        )


def _tag_seconds(tag: str | None) -> float | None:
    """A Matroska DURATION tag, "HH:MM:SS.nnnnnnnnn", in seconds; None if absent or malformed."""
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


def _check_index(path: Path, container, stream) -> None:
    """Raise if the container's sample index (mp4, mov) points past the end of the file."""
    end = max((e.pos + e.size for e in stream.index_entries), default=0)
    if container.size > 0 and end > container.size:
        raise VideoError(
            f"{path}: truncated: the index needs {end} bytes but the file has {container.size}; "
            "re-download or re-encode the file"
        )


def _check_kept(path: Path, kept: list, seen: int, start_frame: int) -> None:
    if seen == 0:
        raise VideoError(f"{path}: the video has no frames")
    if not kept:
        raise VideoError(f"{path}: start_frame={start_frame} is past the end; the file has {seen} frame(s)")


def _read_image(path: Path, fps: float | None, max_frames: int | None, start_frame: int) -> Video:
    with _pil_errors(path), Image.open(path) as image:
        n = getattr(image, "n_frames", 1)
        if n == 1:  # a still: one frame whatever the rate
            src_fps = fps = fps or DEFAULT_FPS
        else:  # animated WebP / PNG
            src_fps = _image_fps(image)

        def each_frame():
            for i in range(n):
                image.seek(i)
                yield image

        kept, seen, _ = _pick(each_frame(), _image_to_rgb, src_fps, fps, start_frame, max_frames)
    _check_kept(path, kept, seen, start_frame)
    frames = torch.from_numpy(np.stack(kept))  # (T, H, W, 3)
    return Video(frames, float(fps or src_fps))


def _probe_image(path: Path) -> VideoInfo:
    with _pil_errors(path), Image.open(path) as image:
        height, width = _image_to_rgb(image).shape[:2]  # decodes the first frame, upright
        frames = getattr(image, "n_frames", 1)
        fps = _image_fps(image) if frames > 1 else DEFAULT_FPS
    return VideoInfo(width, height, fps, frames, frames / fps)


def _image_fps(image: Image.Image) -> float:
    """Rate of an animated image: its frame count over the sum of its frames' delays (in
    milliseconds), so uneven delays (a first frame held longer) give the mean rate, as a GIF's."""
    total = 0.0
    for i in range(image.n_frames):
        image.seek(i)
        image.load()  # WebP reports the delay once the frame is decoded
        total += image.info.get("duration") or 0
    image.seek(0)
    return 1000.0 * image.n_frames / total if total > 0 else DEFAULT_FPS


def _image_to_rgb(image: Image.Image) -> np.ndarray:
    """Pillow image -> uint8 (H, W, 3), EXIF orientation applied, alpha dropped. A 16-bit
    greyscale image (Pillow's modes I;16* and I) is scaled to 8 bits, not clipped at 255."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image, dtype=np.float64) / 257  # 0 - 65535 -> 0 - 255
        return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.array(image.convert("RGB"))


# ---------------------------------------------------------------- writing

_H264 = dict(codec="libx264", even=True)
_CONTAINERS = {  # suffix -> (PyAV format, codec settings)
    ".mp4": ("mp4", _H264),
    ".mov": ("mov", _H264),
    ".mkv": ("matroska", _H264),
    ".webm": ("webm", dict(codec="libvpx-vp9", even=False)),
}
_STILLS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
           ".webp": ("WEBP", {"lossless": True})}
WRITE_SUFFIXES = (*_CONTAINERS, ".gif", *_STILLS)
STILL_SUFFIXES = tuple(_STILLS)  # files of one frame


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: float, *, crf: int = 18) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames (or one (H, W, 3) image) to `path`; returns the path.

    The format follows the extension (see the module docstring). `crf` is the quality of
    .mp4/.mov/.mkv (0-51) and .webm (0-63): lower is better, 18 looks lossless; other formats
    ignore it. Parent folders are created; the write is atomic.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise VideoError(f"{path}: cannot write '{suffix}' files; use one of {', '.join(WRITE_SUFFIXES)}")
    array = _as_frames(frames, path)  # (T, H, W, 3) uint8
    if not (0 < fps < math.inf):
        raise VideoError(f"{path}: fps must be a positive number; got {fps}")
    if not 0 <= crf <= (63 if suffix == ".webm" else 51):
        raise VideoError(f"{path}: crf {crf} is out of range (0-51; 0-63 for .webm)")
    if suffix in _STILLS and len(array) != 1:
        raise VideoError(
            f"{path}: a {suffix} file holds one frame but got {len(array)}; "
            "write frames[i] for one of them, or use .mp4 / .gif for the clip"
        )

    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _av_errors(path, "encode"):
            if suffix in _CONTAINERS:
                container_format, settings = _CONTAINERS[suffix]
                _write_encoded(tmp, array, fps, crf, container_format, **settings)
            elif suffix == ".gif":
                _write_gif(tmp, array, fps)
            else:
                image_format, options = _STILLS[suffix]
                Image.fromarray(array[0]).save(tmp, format=image_format, **options)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise VideoError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def stored_size(path: str | os.PathLike, width: int, height: int) -> tuple[int, int]:
    """The (width, height) a file at `path` holds frames of width x height at: .mp4, .mov and
    .mkv (yuv420p H.264) pad an odd side to the next even one (module doc); the others keep it."""
    settings = _CONTAINERS.get(Path(path).suffix.lower(), (None, {}))[1]
    if settings.get("even"):
        return width + width % 2, height + height % 2
    return width, height


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it is there; a path that cannot hold it (its folder is a file) holds none."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _write_encoded(tmp: Path, frames: np.ndarray, fps: float, crf: int, container_format: str,
                   codec: str, even: bool) -> None:
    """H.264 or VP9 in yuv420p, tagged BT.709 limited range."""
    _, h, w, _ = frames.shape
    if even and (h % 2 or w % 2):  # repeat the last row / column up to an even size
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = h + h % 2, w + w % 2
    options = {"crf": str(crf)}
    if codec == "libvpx-vp9":
        options.update({"b": "0", "cpu-used": "4", "row-mt": "1"})  # constant quality
    container_options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}

    with av.open(str(tmp), "w", format=container_format, options=container_options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = options
        cc = stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
        cc.color_range = 1  # limited ("MPEG")
        for rgb in frames:  # (H, W, 3)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    """One palette from all frames (palettegen), then ordered dithering (paletteuse)."""
    t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    graph = av.filter.Graph()
    source = graph.add_buffer(width=w, height=h, format="rgb24", time_base=1 / rate)
    split = graph.add("split")
    palette = graph.add("palettegen", "stats_mode=full")
    use = graph.add("paletteuse", "dither=bayer:bayer_scale=4")
    sink = graph.add("buffersink")
    source.link_to(split)
    split.link_to(use, 0, 0)  # frames
    split.link_to(palette, 1, 0)
    palette.link_to(use, 0, 1)  # the palette, once all frames are seen
    use.link_to(sink)
    graph.configure()

    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i, 1 / rate
        graph.push(frame)
    graph.push(None)

    with av.open(str(tmp), "w", format="gif") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "pal8"
        for _ in range(t):
            container.mux(stream.encode(graph.pull()))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------- checks

def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video or image file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    return path


def _as_tensor(x: torch.Tensor | np.ndarray, who: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x
    raise VideoError(f"{who} expects a torch.Tensor or numpy array; got {type(x).__name__}")


def _as_frames(frames: torch.Tensor | np.ndarray, path: Path) -> np.ndarray:
    """Frames to write -> contiguous uint8 numpy (T, H, W, 3); an (H, W, 3) image gets T = 1."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise VideoError(f"{path}: frames must be a torch.Tensor or numpy array; got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8:
        raise VideoError(
            f"{path}: frames must be uint8 RGB (T, H, W, 3); got {frames.dtype} "
            "(model output in [-1, 1]: convert with from_model)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise VideoError(f"{path}: frames must have shape (T, H, W, 3) with T, H, W >= 1; got {frames.shape}")
    return np.ascontiguousarray(frames)


@contextmanager
def _av_errors(path: Path, doing: str):
    """PyAV / FFmpeg errors -> VideoError naming the file and FFmpeg's reason."""
    try:
        yield
    except av.error.FFmpegError as err:
        reason = err.strerror or str(err)
        if err.log:  # (level, component, message) of FFmpeg's last log line
            reason += f": {err.log[2].strip()}"
        hint = "; is it a complete video file?" if doing == "decode" else ""
        raise VideoError(f"{path}: cannot {doing} ({reason}){hint}") from None


@contextmanager
def _pil_errors(path: Path):
    """Pillow errors -> VideoError naming the file."""
    try:
        yield
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise VideoError(f"{path}: cannot read as an image ({err})") from None
