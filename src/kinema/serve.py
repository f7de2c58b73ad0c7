"""The web page: every prompting mode of the `Pipeline` on one Gradio page, served so that it stays up.

    kinema serve                                   # http://127.0.0.1:7860, the shipped world model
    kinema serve --model RUN --host 0.0.0.0 --port 8000 --concurrency 1 --queue 8

    app = build_app(Pipeline.from_pretrained("world"), Limits(), Outputs(folder))   # a gr.Blocks

The page has a tab per mode (`MODES`): text -> video, text -> image, animate an image, extend
forward or backward, loop, connect two videos, edit, long video. Each tab holds the prompt, the
caption the model will read (the prompt expanded, shown as you type and after generating;
edit it to use your own words as they are), the notes of the prompt expander and of size and
duration fitting, size, duration, seed, steps, guidance and sampler, a progress bar fed by the
sampler's steps, and the result as a playable video or image with a download button.

Staying up:
- one model in memory; every mode's event shares one concurrency slot group (`concurrency`
  generations at once) and Gradio's queue holds at most `queue` more: a request beyond that is
  refused at once with Gradio's "busy, try again" message, never queued without bound;
- each request is bounded before any work: width x height x frames and seconds of the result,
  sampling steps, and uploads (size on disk; then `video.probe` refuses a file that would
  decode too large before `video.read_video`, the CLI's reader, decodes it). A user's mistake
  (`KinemaError`) is shown on the page as its message; the server keeps serving;
- result files live in one folder per browser session (`Outputs`; named by a hash of Gradio's
  session id), so one session never lists another's, and a cleaner thread deletes files older
  than `output_age` minutes (Gradio's own copies too: `delete_cache`).
It binds 127.0.0.1 unless told otherwise; there is no login.

The page calls the same Python API a user calls; nothing here changes how a video is made.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kinema import tasks
from kinema.errors import KinemaError

if TYPE_CHECKING:
    from kinema.pipeline import Output, Pipeline

try:
    import gradio as gr
except ImportError:
    raise KinemaError(
        "the web page needs Gradio: pip install -e '.[serve]' in a checkout (or pip install 'gradio>=6,<7')"
    ) from None

MAX_STEPS = 100  # sampling steps a request may ask for
SAMPLERS = ("euler", "heun", "unipc")
UPLOAD_HINT = "Upload a video (mp4, webm, mkv, mov, gif) or an image (png, jpg, webp)."


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one server accepts. The defaults suit the shipped model on a laptop CPU
    (2 million pixel-frames: 128x128 for 15 s at 8 fps, or 256x256 for 30 frames)."""

    concurrency: int = 1  # generations at once; they share the one model in memory
    queue: int = 8  # requests waiting beyond those; more are answered "busy, try again"
    max_pixels_frames: int = 2_000_000  # width x height x frames of a result
    max_seconds: float = 15.0  # duration of a result, its input included
    max_upload_mb: float = 20.0  # size of an uploaded file
    output_age: float = 60.0  # minutes a result file is kept

    def __post_init__(self):
        for name in ("concurrency", "max_pixels_frames"):
            if int(getattr(self, name)) < 1:
                raise KinemaError(f"{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.queue < 0:
            raise KinemaError(f"queue must be 0 or more; got {self.queue}")
        for name in ("max_seconds", "max_upload_mb", "output_age"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise KinemaError(f"{name.replace('_', '-')} must be a positive number; got {getattr(self, name)}")

    def describe(self) -> str:
        """One line for the page."""
        return (f"Limits of this server: results up to {self.max_pixels_frames:,} pixel-frames (width x height x "
                f"frames) and {self.max_seconds:g} s, at most {MAX_STEPS} steps; uploads up to "
                f"{self.max_upload_mb:g} MB; {self.concurrency} generation(s) at a time and {self.queue} waiting; "
                f"results are deleted after {self.output_age:g} minutes.")  # fmt: skip

    def check(self, width: int, height: int, frames: int, seconds: float) -> None:
        """KinemaError if a result of width x height x frames lasting `seconds` is over the limits."""
        work = width * height * frames
        if work > self.max_pixels_frames:
            raise KinemaError(
                f"{width}x{height} x {frames} frames is {work:,} pixel-frames; this server makes at most "
                f"{self.max_pixels_frames:,} (--max-pixels-frames): ask for a smaller size or fewer seconds"
            )
        if seconds > self.max_seconds + 1e-9:
            raise KinemaError(
                f"the result would last {seconds:.3g} s; this server makes at most {self.max_seconds:g} s "
                "(--max-seconds)"
            )


def read_upload(path: str | Path | None, limits: Limits, what: str = "file"):
    """An uploaded file as a `Video`, read by the CLI's reader (`video.read_video`) after a
    probe that refuses a file over the limits before it is decoded. Messages name the file by
    its own name, never by the server's path."""
    from kinema.video import probe, read_video

    if not path:
        raise KinemaError(f"upload the {what} first")
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > limits.max_upload_mb * 2**20:
            raise KinemaError(f"{p}: is larger than {limits.max_upload_mb:g} MB (--max-upload-mb)")
        info = probe(p)
        limits.check(info.width, info.height, info.frames, info.duration)
        return read_video(p)
    except KinemaError as e:
        message = str(e).replace(str(p), p.name)
        if "cannot" in message:  # a file the reader cannot decode: say what it can
            message += ("" if message.endswith(("?", ".")) else ".") + f" {UPLOAD_HINT}"
        raise KinemaError(message) from None


def describe_upload(path: str | Path | None, limits: Limits) -> str:
    """'clip.mp4: 640x360, 24 frames at 8 fps (3 s)' for an uploaded file, or what is wrong with
    it ('⚠ clip.mp4: cannot decode ...', `read_upload`): shown beside the upload as it lands."""
    if not path:
        return ""
    try:
        video = read_upload(path, limits)
    except KinemaError as e:
        return f"⚠ {e}"
    T, H, W, _ = video.frames.shape
    if T == 1:
        return f"{Path(path).name}: an image, {W}x{H}"
    return f"{Path(path).name}: {W}x{H}, {T} frames at {video.fps:g} fps ({T / video.fps:.3g} s)"


# ---------------------------------------------------------------- result files


class Outputs:
    """Result files, one folder per browser session under `root`, deleted after `age` seconds
    by `start`'s cleaner thread (one thread, stopped by `stop`)."""

    def __init__(self, root: str | Path, age: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.age = float(age)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def folder(self, session: str | None) -> Path:
        """The session's folder, named by a hash: a session id comes from the client and never
        becomes a path as it is."""
        name = hashlib.sha256((session or "anonymous").encode()).hexdigest()[:24]
        return self.root / name

    def new_file(self, session: str | None, mode: str, suffix: str) -> Path:
        folder = self.folder(session)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{mode}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}"

    def files(self, session: str | None, newest: int = 20) -> list[Path]:
        """The session's result files, newest first (at most `newest`)."""
        folder = self.folder(session)
        found = [p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")] if folder.is_dir() else []
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:newest]

    def remove_old(self, now: float | None = None) -> int:
        """Delete files older than `age` (and emptied session folders); returns how many files."""
        now = time.time() if now is None else now
        removed = 0
        for folder in [d for d in self.root.iterdir() if d.is_dir()]:
            for f in folder.iterdir():
                try:
                    if f.is_file() and now - f.stat().st_mtime > self.age:
                        f.unlink()
                        removed += 1
                except FileNotFoundError:  # a file written or removed meanwhile
                    pass
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        return removed

    def start(self) -> None:
        """Run `remove_old` every quarter of the age (10 s to 5 min) until `stop`."""
        period = min(300.0, max(10.0, self.age / 4))

        def loop():
            while not self._stop.wait(period):
                self.remove_old()

        self._thread = threading.Thread(target=loop, name="kinema-outputs-cleaner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


# ---------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    """One tab: a Pipeline method and the fields its form has."""

    key: str  # the Pipeline method, the tab's id and the endpoint's api_name ("/generate")
    label: str
    about: str
    uploads: tuple[str, ...] = ()  # upload fields: "image", "video", "second"
    seconds: str | None = "Seconds"  # the seconds field's label, or None
    fps: bool = True  # a frame-rate field (modes that make frames at a rate they are given)
    extras: tuple[str, ...] = ()  # "direction", "strength", "window"
    still: bool = False  # the result is an image

    @property
    def fields(self) -> tuple[str, ...]:
        """The form's values, in the order the endpoint takes them."""
        timing = (("seconds",) if self.seconds else ()) + (("fps",) if self.fps else ())
        return (*self.uploads, "prompt", "caption", "width", "height", *timing, *self.extras,
                "seed", "steps", "guidance", "sampler", "negative", "expand")  # fmt: skip


MODES = (
    Mode("generate", "Text → video", "A video of any size and duration from a prompt."),
    Mode("image", "Text → image", "One frame from a prompt.", seconds=None, fps=False, still=True),
    Mode("animate", "Animate an image", "The image is the first frame; the prompt says what happens next.",
         uploads=("image",)),
    Mode("extend", "Extend", "New frames after (forward) or before (backward) a video, which is kept whole.",
         uploads=("video",), seconds="Seconds of new frames", fps=False, extras=("direction",)),
    Mode("loop", "Loop", "A clip whose last frame leads into its first."),
    Mode("connect", "Connect two videos", "The first video, frames that lead from its end to the second's "
         "start, then the second (fitted to the first's size).", uploads=("video", "second"),
         seconds="Seconds between them", fps=False),
    Mode("edit", "Edit", "The video made again under a new prompt; strength 0 keeps it, 1 ignores it.",
         uploads=("video",), seconds=None, fps=False, extras=("strength",)),
    Mode("long", "Long video", "A long video made window by window, each a forward extension of the last.",
         extras=("window",)),
)  # fmt: skip


class StepProgress:
    """The sampler's callback (`sampling.denoise`: step i of n) shown on the page's progress bar;
    tasks that sample more than once (loop; sizes composed at a trained size first) count passes."""

    def __init__(self, progress):
        self.progress = progress
        self.passes = 0

    def __call__(self, i: int, n: int, _latent=None) -> None:
        if i == 1:
            self.passes += 1
        self.progress((i, n), desc=f"sampling, pass {self.passes}" if self.passes > 1 else "sampling", unit="steps")


# ---------------------------------------------------------------- making a result


class Studio:
    """The one pipeline, the limits and the result files; `make` serves every mode."""

    def __init__(self, pipe: Pipeline, limits: Limits, outputs: Outputs):
        self.pipe = pipe
        self.limits = limits
        self.outputs = outputs

    def preview(self, prompt: str, seed, expand) -> tuple[str, str]:
        """(caption, notes) as the prompt is typed: the caption the model will read. A prompt
        it cannot read gives its message as the note, not an error."""
        if not (prompt or "").strip():
            return "", ""
        try:
            caption, notes = self.pipe.read_prompt(prompt, int(seed or 0), expand)
        except KinemaError as e:
            return "", f"⚠ {e}"
        return caption, "\n".join(notes)

    def make(self, mode: Mode, v: dict, session: str | None, progress) -> tuple[Path, Output, tuple[str, ...]]:
        """(result file, the pipeline's Output, notes) for the form values `v` of `mode`."""
        media = [read_upload(v[u], self.limits, "image" if u == "image" else "video") for u in mode.uploads]
        text, expand, notes = self._prompt(v)
        size = dict(width=_whole(v["width"], "width") or None, height=_whole(v["height"], "height") or None)
        self._check(mode, v, media, size)
        kw = dict(steps=self._steps(v["steps"]), guidance=v["guidance"], seed=_whole(v["seed"], "seed") or 0,
                  negative_prompt=v["negative"] or "", expand=expand, method=self._sampler(v["sampler"]),
                  progress=False, callback=StepProgress(progress))  # fmt: skip
        path = self.outputs.new_file(session, mode.key, ".png" if mode.still else ".mp4")
        out = self._run(mode, text, v, media, size, kw, path)
        if out.video is not None:
            from kinema.video import write_video

            write_video(path, out.frames, out.fps)
        return path, out, notes + out.notices

    def _prompt(self, v: dict) -> tuple[str, bool | None, tuple[str, ...]]:
        """(text, expand, notes): the prompt, read as the pipeline reads it; or the caption,
        used as it is, when it is not the one the prompt reads as (it was edited, or an API
        caller sent its own)."""
        prompt, caption = (v["prompt"] or "").strip(), (v["caption"] or "").strip()
        seed = _whole(v["seed"], "seed") or 0
        if caption and (not prompt or caption != self.preview(prompt, seed, v["expand"])[0]):
            return caption, False, ("used the caption as written (it is not the prompt's expansion)",)
        if not prompt:
            raise KinemaError("type a prompt first")
        return prompt, v["expand"], ()

    def _steps(self, steps) -> int:
        n = int(self.pipe.defaults["steps"] if steps is None else steps)
        if not 1 <= n <= MAX_STEPS:
            raise KinemaError(f"steps must be 1 to {MAX_STEPS}; got {steps}")
        return n

    def _sampler(self, name) -> str | None:
        if name and name not in SAMPLERS:
            raise KinemaError(f"sampler must be one of {', '.join(SAMPLERS)}; got {name!r}")
        return name or None

    def _check(self, mode: Mode, v: dict, media: list, size: dict) -> None:
        """The limits on the result, from the request alone, before any work."""
        d = self.pipe.defaults
        seconds = tasks.check_seconds(d["seconds"] if v.get("seconds") is None else v["seconds"])
        first = media[0].frames if media else None
        width = size["width"] or (first.shape[2] if first is not None else int(d["width"]))
        height = size["height"] or (first.shape[1] if first is not None else int(d["height"]))
        if mode.fps:  # frames made at the given rate
            fps = tasks.check_fps(d["fps"] if v.get("fps") is None else v["fps"])
            frames = tasks.frame_count(seconds, fps)
        elif mode.seconds:  # new frames at the input's rate, the inputs kept
            rate = media[0].fps
            frames = sum(len(m.frames) for m in media) + tasks.frame_count(seconds, rate, minimum=1)
            seconds = frames / rate
        else:  # an image, or an edit of the input
            frames = 1 if mode.still else len(first)
            seconds = 0.0 if mode.still else frames / media[0].fps
        self.limits.check(width, height, frames, seconds)

    def _run(self, mode: Mode, text: str, v: dict, media: list, size: dict, kw: dict, path: Path):
        """The Pipeline method of `mode` (see pipeline.py for what each does)."""
        p, seconds, fps = self.pipe, v.get("seconds"), v.get("fps")
        match mode.key:
            case "generate":
                return p.generate(text, seconds=seconds, fps=fps, **size, **kw)
            case "image":
                return p.image(text, **size, **kw)
            case "animate":
                return p.animate(media[0], text, seconds=seconds, fps=fps, **size, **kw)
            case "extend":
                return p.extend(media[0], text, v["direction"] or "forward", seconds=seconds, **size, **kw)
            case "loop":
                return p.loop(text, seconds=seconds, fps=fps, **size, **kw)
            case "connect":
                return p.connect(media[0], media[1], text, seconds=seconds, **size, **kw)
            case "edit":
                return p.edit(media[0], text, 0.6 if v["strength"] is None else float(v["strength"]), **size, **kw)
            case "long":
                return self._long(text, v, size, kw, path)
        raise KinemaError(f"unknown mode {mode.key!r}")

    def _long(self, text: str, v: dict, size: dict, kw: dict, path: Path):
        """`Pipeline.long` to `path`, each window written as it is done; the page's bar counts
        the frames written (`on_window`), as `long` samples window by window."""
        p, d = self.pipe, self.pipe.defaults
        report = kw.pop("callback").progress  # the page's gr.Progress: frames written, not steps
        seconds = d["seconds"] if v["seconds"] is None else v["seconds"]
        fps = d["fps"] if v["fps"] is None else v["fps"]
        total = tasks.timing(seconds, fps, p.frame_rates).frames
        done = 0

        def written(win) -> None:
            nonlocal done
            done += len(win.frames)
            report((done, total), desc=f"window {win.index + 1} written", unit="frames")

        report((0, total), desc="window 1", unit="frames")
        return p.long(text, seconds, float(v["window"] or 2.0), out=path, on_window=written, fps=fps, **size, **kw)


def _whole(value, name: str) -> int | None:
    """A form number as a whole number, None if empty."""
    if value is None or value == "":
        return None
    if float(value) != int(float(value)):
        raise KinemaError(f"{name} must be a whole number; got {value}")
    return int(float(value))


# ---------------------------------------------------------------- the page


def build_app(pipe: Pipeline, limits: Limits, outputs: Outputs) -> gr.Blocks:
    """The page: a header, a tab per mode, this session's results. Not launched."""
    studio = Studio(pipe, limits, outputs)
    age = int(limits.output_age * 60)
    with gr.Blocks(title="Kinema", analytics_enabled=False,
                   delete_cache=(min(300, max(10, age // 4)), age)) as app:  # Gradio's copies of files
        gr.Markdown(f"# Kinema\nModel: `{pipe.name or 'world'}`. {limits.describe()}")
        history = gr.File(label="This session's results", file_count="multiple", interactive=False, render=False,
                          elem_id="history")  # fmt: skip
        with gr.Tabs():
            for mode in MODES:
                with gr.Tab(mode.label, id=mode.key, elem_id=f"tab-{mode.key}"):
                    _tab(studio, mode, history)
        history.render()
    return app


def _tab(studio: Studio, mode: Mode, history) -> None:
    """One mode's form, result and events."""
    pipe, d, key = studio.pipe, studio.pipe.defaults, mode.key
    c: dict[str, object] = {}  # field name -> component
    gr.Markdown(mode.about)
    with gr.Row():
        with gr.Column():
            for u in mode.uploads:
                label = {"image": "Image (or a video: its first frame)", "video": "Video",
                         "second": "Second video"}[u]  # fmt: skip
                c[u] = gr.File(label=label, type="filepath", elem_id=f"{key}-{u}")
                info = gr.Textbox(label="Upload check", interactive=False, lines=1, elem_id=f"{key}-{u}-info")
                c[u].upload(lambda p: describe_upload(p, studio.limits), c[u], info, queue=False,
                            api_visibility="private")  # fmt: skip
                c[u].clear(lambda: "", None, info, queue=False, api_visibility="private")
            c["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="a red ball bounces on green grass",
                                     elem_id=f"{key}-prompt")  # fmt: skip
            c["caption"] = gr.Textbox(label="Caption the model reads (expanded from the prompt; edit it to use "
                                      "your own words as they are)", lines=3, elem_id=f"{key}-caption")  # fmt: skip
            notes = gr.Textbox(label="Notes (prompt reading, size and duration fitting)", interactive=False,
                               lines=2, elem_id=f"{key}-notes")  # fmt: skip
            own = " (0: the input's)" if mode.uploads else ""  # 0 or empty: the input's size, or the model's
            with gr.Row():
                c["width"] = gr.Number(value=0 if own else int(d["width"]), label=f"Width{own}", precision=0,
                                       minimum=0, elem_id=f"{key}-width")  # fmt: skip
                c["height"] = gr.Number(value=0 if own else int(d["height"]), label=f"Height{own}", precision=0,
                                        minimum=0, elem_id=f"{key}-height")  # fmt: skip
                if mode.seconds:
                    c["seconds"] = gr.Number(value=float(d["seconds"]) * (3 if key == "long" else 1),
                                             label=mode.seconds, minimum=0.05, maximum=studio.limits.max_seconds,
                                             elem_id=f"{key}-seconds")  # fmt: skip
                if mode.fps:
                    c["fps"] = gr.Number(value=float(d["fps"]), label="Frames per second", minimum=1,
                                         maximum=tasks.MAX_FPS, elem_id=f"{key}-fps")  # fmt: skip
            if "direction" in mode.extras:
                c["direction"] = gr.Radio(["forward", "backward"], value="forward", label="Direction",
                                          elem_id=f"{key}-direction")  # fmt: skip
            if "strength" in mode.extras:
                c["strength"] = gr.Slider(0, 1, value=0.6, step=0.05, label="Strength", elem_id=f"{key}-strength")
            if "window" in mode.extras:
                c["window"] = gr.Number(value=2.0, label="Window (seconds)", minimum=0.5, elem_id=f"{key}-window")
            with gr.Row():
                c["seed"] = gr.Number(value=0, label="Seed", precision=0, elem_id=f"{key}-seed")
                c["steps"] = gr.Slider(1, MAX_STEPS, value=int(d["steps"]), step=1, label="Steps",
                                       elem_id=f"{key}-steps")  # fmt: skip
                c["guidance"] = gr.Slider(1, 15, value=float(d["guidance"]), step=0.5, label="Guidance",
                                          elem_id=f"{key}-guidance")  # fmt: skip
                c["sampler"] = gr.Dropdown(list(SAMPLERS), value=pipe.scheduler["method"], label="Sampler",
                                           elem_id=f"{key}-sampler")  # fmt: skip
            with gr.Accordion("More", open=False):
                c["negative"] = gr.Textbox(label="Negative prompt", elem_id=f"{key}-negative")
                c["expand"] = gr.Checkbox(value=pipe.expand, label="Expand the prompt into a detailed caption",
                                          elem_id=f"{key}-expand")  # fmt: skip
            button = gr.Button("Generate", variant="primary", elem_id=f"{key}-generate")
        with gr.Column():
            if mode.still:
                result = gr.Image(label="Result", type="filepath", interactive=False, buttons=["download"],
                                  elem_id=f"{key}-result")  # fmt: skip
            else:
                result = gr.Video(label="Result", format=None, interactive=False, buttons=["download"],
                                  elem_id=f"{key}-result")  # fmt: skip
    # the caption as the prompt is typed (Generate uses the caption if it was edited since)
    show = dict(fn=studio.preview, inputs=[c["prompt"], c["seed"], c["expand"]],
                outputs=[c["caption"], notes], queue=False, trigger_mode="always_last",
                show_progress="hidden", api_visibility="private")  # fmt: skip
    for field in ("prompt", "seed", "expand"):
        c[field].change(**show)
    button.click(_handler(studio, mode), [c[f] for f in mode.fields], [result, c["caption"], notes, history],
                 api_name=key, concurrency_id="model", concurrency_limit=studio.limits.concurrency)  # fmt: skip


def _handler(studio: Studio, mode: Mode):
    """The Generate button of `mode`: form values in, (result, caption, notes, session files) out.
    A user's mistake is shown as its message (gr.Error), not as a traceback."""

    def run(request: gr.Request, *values_and_progress):
        *values, progress = values_and_progress
        v = dict(zip(mode.fields, values))
        session = getattr(request, "session_hash", None)
        try:
            path, out, notes = studio.make(mode, v, session, progress)
        except KinemaError as e:
            raise gr.Error(str(e), print_exception=False) from None
        files = [str(f) for f in studio.outputs.files(session)]
        return str(path), out.caption, "\n".join(notes), files

    # Gradio reads the signature: it passes the gr.Request first, then the form's values, then a
    # gr.Progress last (found by its default); and the endpoint's parameters are named after the
    # form's fields, so gradio_client can call predict(prompt=..., width=..., api_name="/generate")
    # and a field left out takes the page's default (or None: the model's).
    P = inspect.Parameter
    run.__signature__ = inspect.Signature(
        [P("request", P.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
        + [P(f, P.POSITIONAL_OR_KEYWORD, default=None) for f in mode.fields]
        + [P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    )
    run.__name__ = f"make_{mode.key}"
    return run


# ---------------------------------------------------------------- serving


def serve(model: str = "world", host: str = "127.0.0.1", port: int = 7860, limits: Limits | None = None,
          outputs: str | Path | None = None, dtype: str | None = None, offload: str = "none") -> None:  # fmt: skip
    """Load the model once and serve the page until interrupted (Ctrl-C or SIGTERM). outputs:
    the folder for result files (default: a fresh temporary folder, deleted on exit)."""
    from kinema.pipeline import Pipeline

    limits = limits or Limits()
    pipe = Pipeline.from_pretrained(model, dtype=dtype, offload=offload)
    own = outputs is None
    store = Outputs(tempfile.mkdtemp(prefix="kinema-serve-") if own else outputs, limits.output_age * 60)
    app = build_app(pipe, limits, store)
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: serving on {host}: anyone who can reach it can use the model (there is no login)")
    if threading.current_thread() is threading.main_thread():  # SIGTERM and SIGINT (also where a
        for sig in (signal.SIGTERM, signal.SIGINT):  # shell started it in the background) end it as Ctrl-C
            signal.signal(sig, _interrupt)
    store.start()
    try:
        try:
            app.launch(server_name=host, server_port=port, max_file_size=int(limits.max_upload_mb * 2**20),
                       theme=_theme(), ssr_mode=False, show_error=False, prevent_thread_lock=True)  # fmt: skip
        except OSError as e:  # the port is taken, or the address is not this machine's
            raise KinemaError(f"cannot serve on {host}:{port} ({e}); pass another --port or --host") from None
        app.block_thread()  # until Ctrl-C / SIGTERM; it closes the server
    finally:
        store.stop()
        if own:
            shutil.rmtree(store.root, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _theme():
    """Gradio's default look with the system's fonts: the page loads nothing from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])  # fmt: skip
