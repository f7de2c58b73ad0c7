"""The `kinema` command line. Thin: every command calls the Python API a user would call.

Errors a user can cause (`KinemaError`) become one line on stderr and exit code 2.
Heavy modules (torch, av) are imported inside the commands so `kinema --help` is fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from kinema.errors import KinemaError

app = typer.Typer(
    help="Kinema: generate, edit and train video diffusion models; render Kinema World.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
world_app = typer.Typer(help="Kinema World: a procedural world with known physics.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(bench_app, name="bench")
data_app = typer.Typer(help="Data: index a folder of videos and images, caption them, cache VAE latents.", no_args_is_help=True)
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Training, from one CPU process to torchrun on many GPUs.", no_args_is_help=True)
app.add_typer(train_app, name="train")
eval_app = typer.Typer(help="Evaluation: score models; the world judge on Kinema World.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'320x180' -> (320, 180) as (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise KinemaError(f"{option} must look like WIDTHxHEIGHT, e.g. 320x180; got {text!r}") from None
    return w, h


def check_out(out: Path, suffixes: tuple[str, ...] | None, option: str = "--out", example: str = "out") -> None:
    """A file to write, checked before any work: one of `suffixes` (None: any), not a folder, and
    no file where one of its folders would be (folders that are missing are made when it is written)."""
    if out.is_dir():
        name = example + (suffixes[0] if suffixes else "")
        raise KinemaError(f"{option} {out} is a folder; give a file in it, e.g. {out / name}")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        what = f"'{out.suffix}'" if out.suffix else "a file with no extension"
        raise KinemaError(f"{option} {out}: cannot write {what} here; use one of {', '.join(suffixes)}")
    check_folder(out.parent, option, of=out)


def check_folder(folder: Path, option: str, of: Path | None = None) -> None:
    """A folder to write into (made if missing): KinemaError if it, or a folder above it, is a file."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                where = f"{option} {parent}" if parent == folder and of is None else f"{option} {of or folder}: {parent}"
                raise KinemaError(f"{where} is a file, not a folder")
            return


def plural(n: int, word: str) -> str:
    """'1 frame', '2 frames'."""
    return f"{n} {word}{'s' * (n != 1)}"


def _check_one_frame(out: Path, frames: int, what: str, hint: str = "") -> None:
    """A still file (.png, .jpg, .webp) holds one frame: KinemaError if `what` (has / is) more."""
    from kinema.video import STILL_SUFFIXES

    if out.suffix.lower() in STILL_SUFFIXES and frames > 1:
        raise KinemaError(f"--out {out}: a {out.suffix} file holds one frame, but {what} {plural(frames, 'frame')}; "
                          f"write .mp4, .webm or .gif{hint}")  # fmt: skip


def _even_note(path: Path, width: int, height: int) -> str | None:
    """The note that a .mp4 / .mov / .mkv file holds an odd size padded to even, or None."""
    from kinema.video import stored_size

    w, h = stored_size(path, width, height)
    if (w, h) == (width, height):
        return None
    return (f"{path.suffix} (H.264) stores even sizes only: the file is {w}x{h}, the last column / row of "
            f"{width}x{height} repeated; write .webm to keep {width}x{height} exactly")  # fmt: skip


# ---------------------------------------------------------------- generate and edit (kinema.pipeline)

_MODEL = typer.Option("world", "--model", help="'world' (the shipped model) or a model folder: an export, a training run, or a diffusers Wan 2.1 or Wan 2.2 TI2V-5B folder (model_index.json).")
_SIZE = typer.Option(None, help="WIDTHxHEIGHT in pixels, any size up to 8192 a side: made on the model's grid and cropped back; beyond the sizes the model trained on, composed at one of them first, then refined at this size (default: the model's; 128x128 for world).")
_INPUT_SIZE = typer.Option(None, "--size", help="WIDTHxHEIGHT to fit the input to (default: the input's own size).")
_FIT = typer.Option("cover", help="How an input is fitted to --size: cover (scale to cover, centre-crop) or pad (scale to fit, letterbox).")
_SECONDS = typer.Option(None, help="Duration in seconds, any positive number up to 3600 (long ones: add --window; generate makes one over 16 times the model's default duration in windows of the default anyway). The video lasts exactly that at --fps, rounded to whole frames, with a note if rounded (default: the model's; 2).")
_FPS = typer.Option(None, help="The file's frame rate, up to 240 (default: the model's; 8 for world). Frames are made at the nearest rate the model knows (world: 8-12) and resampled in time to this, with a note.")
_STEPS = typer.Option(None, help="Sampling steps (default: the model's; 30).")
_GUIDANCE = typer.Option(None, help="Classifier-free guidance scale; 1 turns it off (default: the model's; 4).")
_SEED = typer.Option(0, help="Seed of the noise and of the prompt expansion.")
_NEGATIVE = typer.Option("", "--negative", help="Negative prompt (default: none, the unconditional caption).")
_EXPAND = typer.Option(None, "--expand", metavar="SPEC", help="Turn a short prompt into a detailed caption in the style the model was trained on: world (the Kinema World grammar, the default of world models), openai:URL (a language model behind an OpenAI-compatible server, e.g. openai:http://127.0.0.1:8000/v1), hf:DIR (a local transformers model) or none. The caption is printed and saved beside the output (OUT with .txt).")
_NO_EXPAND = typer.Option(False, "--no-expand", help="Use the prompt as it is (--expand none).")
_LLM_MODEL = typer.Option(None, "--llm-model", help="Model name at an openai:URL server (default: KINEMA_LLM_MODEL, else the one model it lists). Its API key: KINEMA_LLM_API_KEY or OPENAI_API_KEY.")
_SAMPLER = typer.Option(None, help="Sampler: euler, heun or unipc (default: the model's; euler for Kinema's, a Wan folder's own scheduler).")
_DTYPE = typer.Option(None, help="Weights of a Wan folder in memory: float32 (default), bfloat16 or float16 (half the memory).")
_LORA = typer.Option([], "--lora", metavar="FILE[:SCALE]", help="LoRA adapters to apply, merged into the DiT's weights: a .safetensors file (Kinema's export/lora.safetensors, or a Wan LoRA in diffusers' layout) with an optional scale (default 1). Repeat it for several.")
_OFFLOAD = typer.Option("none", help="GPU memory: none; text (the text encoder leaves the GPU after encoding); blocks (that, and the DiT's blocks stream from CPU memory one at a time).")
_VIDEO_OUT = typer.Option(Path("out.mp4"), help="Video to write (.mp4, .webm, .mkv, .mov or .gif).")


LONG = 16  # generate: a clip over this many times the model's default duration is made in windows unless --window is given
SEEDS = (-(2**63), 2**63 - 1)  # what the noise generator takes, with room for the seed + 1, + 2, ... of later samples


def _early_checks(size: str | None = None, seconds: float | None = None, fps: float | None = None,
                  out: Path | None = None, still: bool = False, seed: int = 0,
                  window: float | None = None) -> tuple[int | None, int | None]:  # fmt: skip
    """Check what needs no model (size, duration, frame rate, seed, output file) before loading one."""
    from kinema.tasks import check_fps, check_seconds, check_size, check_window
    from kinema.video import STILL_SUFFIXES, WRITE_SUFFIXES

    if out is not None:
        check_out(out, WRITE_SUFFIXES if still else tuple(s for s in WRITE_SUFFIXES if s not in STILL_SUFFIXES))
    if seconds is not None:
        check_seconds(seconds)
    if fps is not None:
        check_fps(fps)
    if window is not None:
        check_window(window)
    if not SEEDS[0] <= seed <= SEEDS[1]:
        raise KinemaError(f"--seed must be a whole number from -2^63 to 2^63 - 1; got {seed}")
    if size is None:
        return None, None
    return check_size(*parse_size(size))


def _read_media(path: Path, fps: float | None = None):
    from kinema.video import read_video

    return read_video(path, fps=fps)


_FOLLOWER = False  # under torchrun: a rank other than 0, which samples along but writes nothing


def _pipeline(model: str, dtype: str | None = None, offload: str = "none", lora: list[str] | None = None):
    """The model, its LoRAs merged; under torchrun (WORLD_SIZE > 1) every rank samples each clip
    together (`Pipeline.sequence_parallel`): with an even number of ranks half compute guidance's
    caption row and half its negative row (KINEMA_SPLIT_GUIDANCE=0: not), each half splitting the
    sequence among its ranks; rank 0 writes."""
    global _FOLLOWER
    from kinema.pipeline import Pipeline

    adapters = [_lora_arg(item) for item in lora or ()]  # a bad --lora fails before the model loads
    group = _torchrun_group()
    if group is not None:
        import torch.distributed as dist

        _FOLLOWER = dist.get_rank() != 0
    pipe = Pipeline.from_pretrained(model, dtype=dtype, offload=offload)
    for path, scale in adapters:
        n = pipe.apply_lora(path, scale)
        _say(f"applied the LoRA {path} at scale {scale:g} ({n} weights)")
    if group is not None:
        world = int(os.environ["WORLD_SIZE"])
        split = os.environ.get("KINEMA_SPLIT_GUIDANCE", "1") != "0" and world % 2 == 0
        pipe.sequence_parallel(group, guidance_split=split)
        how = "guidance's two rows on two halves of them, " if split else ""
        _say(f"sampling on {world} ranks: {how}each sequence split among {world // 2 if split else world}")
    return pipe


def _torchrun_group():
    """All ranks as one process group when run under torchrun, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    import atexit

    import torch.distributed as dist

    from kinema.train.common import init_distributed, shutdown

    d = init_distributed()
    atexit.register(shutdown, d)
    return dist.group.WORLD


def _say(text: str) -> None:
    if not _FOLLOWER:
        typer.echo(text)


def _lora_arg(text: str) -> tuple[Path, float]:
    """'FILE' or 'FILE:SCALE' -> (path, scale)."""
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            path, scale = head, float(tail)
        except ValueError:
            path = text  # a colon that belongs to the path
    p = Path(path).expanduser()
    if p.is_dir() and (p / "export" / "lora.safetensors").is_file():
        p = p / "export" / "lora.safetensors"
    elif p.is_dir() and (p / "lora.safetensors").is_file():
        p = p / "lora.safetensors"
    if not p.is_file():
        raise KinemaError(f"--lora {text}: no such LoRA file (give FILE or FILE:SCALE; a run folder's export/lora.safetensors)")
    return p, scale


def _expansion(spec: str | None, off: bool, llm_model: str | None):
    """--expand SPEC / --no-expand / --llm-model -> the pipeline's `expand` argument (called before
    the model loads, so that a bad SPEC fails first)."""
    if off:
        if spec is not None:
            raise KinemaError("give --expand SPEC or --no-expand, not both")
        return False
    if spec is None or spec.strip() in ("world", "none", "off"):
        return spec
    from kinema.llm import LLMError, connect, parse_spec

    try:
        parse_spec(spec.strip())
    except LLMError:
        raise KinemaError(f"--expand takes world, none, openai:URL (an OpenAI-compatible server) or hf:DIR "
                          f"(a local transformers folder); got {spec!r}") from None  # fmt: skip
    return connect(spec.strip(), model=llm_model)


def _echo_caption(result, prompt: str, out: Path) -> None:
    """Print the caption the model read; when it is not the prompt, save it beside the output
    (OUT with .txt: the sidecar `kinema data index` reads)."""
    typer.echo(f"caption: {result.caption}")
    if result.caption != prompt:
        from kinema.data.caption import write_sidecar

        write_sidecar(out, result.caption)
        typer.echo(f"wrote the caption to {out.with_suffix('.txt')}")


def _write(result, out: Path, prompt: str) -> None:
    if _FOLLOWER:
        return
    from kinema.video import write_video

    path = write_video(out, result.frames, result.fps)
    T, H, W, _ = result.frames.shape
    for note in (*result.notices, _even_note(path, W, H)):
        if note:
            typer.echo(f"note: {note}")
    _echo_caption(result, prompt, path)
    typer.echo(f"wrote {path} ({plural(T, 'frame')}, {W}x{H} @ {result.fps:g} fps)")


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Argument(..., help="What to show, e.g. 'a red ball bounces on green grass'."),
    size: str = _SIZE, seconds: float = _SECONDS, fps: float = _FPS, steps: int = _STEPS, guidance: float = _GUIDANCE,
    seed: int = _SEED, negative: str = _NEGATIVE, expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA,
    window: float = typer.Option(None, help="Make a long video in windows of this many seconds, each written as it is done (memory does not grow with --seconds)."),
    out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """Text -> video of any size and duration."""
    width, height = _early_checks(size, seconds, fps, out, seed=seed, window=window)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    kw = dict(width=width, height=height, fps=fps, steps=steps, guidance=guidance, seed=seed, negative_prompt=negative,
              expand=how, method=sampler)  # fmt: skip
    if window is None and seconds is not None and seconds > LONG * pipe.defaults["seconds"]:
        window = float(pipe.defaults["seconds"])
        if not _FOLLOWER:
            typer.echo(f"note: {seconds:g} s is made in windows of {window:g} s (--window), each written as it is done: "
                       "one pass over the whole clip would take time and memory growing with its length squared")  # fmt: skip
    if window is not None:
        from tqdm import tqdm

        seconds = seconds if seconds is not None else pipe.defaults["seconds"]
        rate = fps or pipe.defaults["fps"]
        with tqdm(total=round(seconds * rate), unit="frame", desc="windows", disable=_FOLLOWER, position=1) as bar:
            result = pipe.long(prompt, seconds, window, out=out, on_window=lambda win: bar.update(len(win.frames)), **kw)
        if _FOLLOWER:
            return
        for note in result.notices:
            typer.echo(f"note: {note}")
        if width is not None and (note := _even_note(result.path, width, height)):
            typer.echo(f"note: {note}")
        _echo_caption(result, prompt, result.path)
        typer.echo(f"wrote {result.path}")
        return
    _write(pipe.generate(prompt, seconds=seconds, **kw), out, prompt)


@app.command("image")
def image_cmd(
    prompt: str = typer.Argument(..., help="What to show."),
    size: str = _SIZE, steps: int = _STEPS, guidance: float = _GUIDANCE, seed: int = _SEED, negative: str = _NEGATIVE,
    expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA,
    out: Path = typer.Option(Path("image.png"), help="Image to write (.png, .jpg or .webp)."),
) -> None:  # fmt: skip
    """Text -> image (one frame)."""
    width, height = _early_checks(size, out=out, still=True, seed=seed)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.image(prompt, width, height, steps=steps, guidance=guidance, seed=seed, negative_prompt=negative,
                      expand=how, method=sampler), out, prompt)  # fmt: skip


@app.command("animate")
def animate_cmd(
    image: Path = typer.Argument(..., help="Image (or video: its first frame) to start from."),
    prompt: str = typer.Argument(..., help="What happens next."),
    size: str = _SIZE, seconds: float = _SECONDS, fps: float = _FPS, steps: int = _STEPS, guidance: float = _GUIDANCE,
    seed: int = _SEED, negative: str = _NEGATIVE, expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA, fit: str = _FIT,
    out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """Image -> video: the image is the first frame (default size: the image's)."""
    width, height = _early_checks(size, seconds, fps, out, seed=seed)
    source = _read_media(image)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.animate(source, prompt, width, height, seconds=seconds, fps=fps, steps=steps, guidance=guidance, seed=seed,
                        negative_prompt=negative, expand=how, method=sampler, fit=fit), out, prompt)  # fmt: skip


@app.command("extend")
def extend_cmd(
    video: Path = typer.Argument(..., help="Video to extend; it is kept whole."),
    prompt: str = typer.Argument(..., help="What happens in the new frames."),
    direction: str = typer.Option("forward", help="forward (new frames after the video) or backward (before it)."),
    seconds: float = typer.Option(None, help="Seconds of new frames, made at the video's rate: exactly seconds x rate of them, rounded to whole frames (default: the model's; 2)."),
    fps: float = typer.Option(None, help="Read the video at this rate (default: its own); the new frames are made at it."),
    steps: int = _STEPS, guidance: float = _GUIDANCE, seed: int = _SEED, negative: str = _NEGATIVE,
    expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA, size: str = _INPUT_SIZE, fit: str = _FIT, out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """Extend a video forward or backward in time."""
    if direction not in ("forward", "backward"):
        raise KinemaError(f"--direction must be forward or backward; got {direction!r}")
    width, height = _early_checks(size, seconds, fps, out, seed=seed)
    source = _read_media(video, fps)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.extend(source, prompt, direction, seconds=seconds, steps=steps, guidance=guidance, seed=seed,
                       negative_prompt=negative, expand=how, method=sampler, width=width, height=height,
                       fit=fit), out, prompt)  # fmt: skip


@app.command("loop")
def loop_cmd(
    prompt: str = typer.Argument(..., help="What to show."),
    size: str = _SIZE, seconds: float = _SECONDS, fps: float = _FPS, steps: int = _STEPS, guidance: float = _GUIDANCE,
    seed: int = _SEED, negative: str = _NEGATIVE, expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA,
    out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """A seamless loop: its last frame leads into its first."""
    width, height = _early_checks(size, seconds, fps, out, seed=seed)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.loop(prompt, width, height, seconds=seconds, fps=fps, steps=steps, guidance=guidance, seed=seed,
                     negative_prompt=negative, expand=how, method=sampler), out, prompt)  # fmt: skip


@app.command("connect")
def connect_cmd(
    a: Path = typer.Argument(..., help="First video."),
    b: Path = typer.Argument(..., help="Second video (fitted to the first's size, see --fit)."),
    prompt: str = typer.Argument(..., help="What happens in between."),
    seconds: float = typer.Option(None, help="Seconds of frames between them, made at the first's rate: exactly seconds x rate of them, rounded to whole frames (default: the model's; 2)."),
    fps: float = typer.Option(None, help="Read both videos at this rate (default: the first's); the frames between are made at it."),
    steps: int = _STEPS, guidance: float = _GUIDANCE, seed: int = _SEED, negative: str = _NEGATIVE,
    expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA, size: str = _INPUT_SIZE, fit: str = _FIT, out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """Connect two videos: A, generated frames from A's end to B's start, B."""
    width, height = _early_checks(size, seconds, fps, out, seed=seed)
    first = _read_media(a, fps)
    second = _read_media(b, first.fps)
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.connect(first, second, prompt, seconds=seconds, steps=steps, guidance=guidance, seed=seed,
                        negative_prompt=negative, expand=how, method=sampler, width=width, height=height,
                        fit=fit), out, prompt)  # fmt: skip


@app.command("edit")
def edit_cmd(
    video: Path = typer.Argument(..., help="Video (or image) to edit."),
    prompt: str = typer.Argument(..., help="The new prompt."),
    strength: float = typer.Option(0.6, help="How far from the input: 0 keeps it, 1 ignores it."),
    fps: float = typer.Option(None, help="Read the video at this rate (default: its own)."),
    steps: int = _STEPS, guidance: float = _GUIDANCE, seed: int = _SEED, negative: str = _NEGATIVE,
    expand: str = _EXPAND, no_expand: bool = _NO_EXPAND, llm_model: str = _LLM_MODEL, sampler: str = _SAMPLER, model: str = _MODEL,
    dtype: str = _DTYPE, offload: str = _OFFLOAD, lora: list[str] = _LORA, size: str = _INPUT_SIZE, fit: str = _FIT, out: Path = _VIDEO_OUT,
) -> None:  # fmt: skip
    """SDEdit video -> video: the input noised to STRENGTH, then made again under the new prompt."""
    if not 0.0 <= strength <= 1.0:
        raise KinemaError(f"--strength must be in [0, 1]; got {strength}")
    width, height = _early_checks(size, None, fps, out, still=True, seed=seed)
    source = _read_media(video, fps)
    _check_one_frame(out, len(source.frames), f"{video} has")
    how = _expansion(expand, no_expand, llm_model)
    pipe = _pipeline(model, dtype, offload, lora)
    _write(pipe.edit(source, prompt, strength, steps=steps, guidance=guidance, seed=seed, negative_prompt=negative,
                     expand=how, method=sampler, width=width, height=height, fit=fit), out, prompt)  # fmt: skip


@app.command("plan")
def plan_cmd(
    model: str = typer.Option(..., "--model", help="A Kinema preset (tiny, small, b, l, xl_1b, xl_3b), a Wan config (wan2.1-1.3b, wan2.1-14b, wan2.2-ti2v-5b), a Kinema export folder (dit.json) or a diffusers Wan folder."),
    size: str = typer.Option(..., help="WIDTHxHEIGHT of the video in pixels, e.g. 1920x1080 (rounded up to the model's grid)."),
    seconds: float = typer.Option(..., help="Duration of one sample in seconds."),
    fps: float = typer.Option(None, help="Frames a second (default: the model's; 12 for a Kinema preset, 16 for Wan 2.1, 24 for Wan 2.2)."),
    gpus: int = typer.Option(1, help="GPUs in the job: FSDP2 shards the weights and optimizer state over all of them."),
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", help="Memory of one GPU in GB (10^9 bytes); 90% of it is planned for."),
    sequence_parallel: int = typer.Option(1, "--sequence-parallel", help="K: each sample's tokens split over K GPUs (K divides --gpus and the heads)."),
    training: bool = typer.Option(True, "--training/--sampling", help="Plan a training step (FSDP2, AdamW, EMA) or sampling (bf16 weights, one forward)."),
    checkpointing: bool = typer.Option(True, "--checkpointing/--no-checkpointing", help="Training: recompute each block in the backward pass (keeps only the blocks' inputs)."),
    precision: str = typer.Option("bf16", help="bf16 (autocast, as on a GPU) or fp32 activations."),
    attention: str = typer.Option("flash", help="Training: flash, no N x N anywhere (flex attention, or one unmasked sample a sequence); dense, a packed sequence's N x N bool mask through SDPA (what `train dit` builds with attention=sdpa, the default; attention=flex on a GPU holds none)."),
    cfg_rows: int = typer.Option(2, "--cfg-rows", min=1, help="Sampling: rows in one forward (2: guidance in one batch, 1: none)."),
) -> None:  # fmt: skip
    """Tokens and the estimated memory of each GPU, term by term, and whether it fits.

    Training: float32 master weights, gradients, AdamW moments and EMA sharded by FSDP2 over --gpus, the gathered units, activations with or without checkpointing, the backward's buffers; sampling: bfloat16 weights, one forward, the VAE decode. The formulas are in kinema/plan.py's doc; 10% of a GPU is left for the framework. When it does not fit, the smallest --sequence-parallel that does is named, or else the longest clip that fits.
    """
    from kinema.plan import degrees, fitting_degree, longest_seconds, model_spec, plan

    width, height = parse_size(size)
    spec = model_spec(model)
    kw = dict(width=width, height=height, seconds=seconds, fps=fps, gpus=gpus, gpu_memory_gb=gpu_memory,
              training=training, checkpointing=checkpointing, precision=precision, attention=attention, cfg_rows=cfg_rows)  # fmt: skip
    p = plan(spec, sequence_parallel=sequence_parallel, **kw)
    T, h, w = p["grid"]
    how = f"training, {precision}, " + ("checkpointing" if checkpointing else "no checkpointing") if training else f"sampling, {cfg_rows} rows"
    typer.echo(f"{p['model']}: {p['params'] / 1e9:.2f}B parameters ({spec.config.depth} blocks of {p['block_params'] / 1e6:.0f}M); {how}")
    typer.echo(f"{p['frames']} frames at {p['fps']:g} fps -> {T} x {h} x {w} = {p['tokens']:,} tokens a sample; "
               f"{p['tokens_per_rank']:,} a rank (sequence parallel {p['sequence_parallel']} of {gpus} GPUs)")  # fmt: skip
    print_table([dict(term=r["term"], GiB=round(r["gib"], 2), peak="yes" if r["in_peak"] else "no", formula=r["formula"]) for r in p["rows"]])
    verdict = "fits" if p["fits"] else "does not fit"
    typer.echo(f"peak {p['peak_gib']:.1f} GiB a GPU, {p['budget_gib']:.1f} GiB usable (0.9 x {gpu_memory:g} GB): {verdict}")
    if not p["fits"]:
        k = fitting_degree(spec, **kw)
        if k:
            typer.echo(f"fits with --sequence-parallel {k}")
            return
        top = degrees(spec, gpus)[-1]
        longest = longest_seconds(spec, sequence_parallel=top, **kw)
        typer.echo(f"no --sequence-parallel that divides the GPUs and the {spec.config.heads} heads fits; with {top}, "
                   + (f"the longest clip of this size that fits is {longest:.2f} s" if longest else "not even one frame fits"))  # fmt: skip


# ---------------------------------------------------------------- the web page (kinema.serve)

@app.command("serve")
def serve_cmd(
    model: str = _MODEL, dtype: str = _DTYPE, offload: str = _OFFLOAD,
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 serves every network the machine is on (there is no login)."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to serve on."),
    concurrency: int = typer.Option(1, min=1, help="Generations at once; they share the one model in memory."),
    queue: int = typer.Option(8, min=0, help="Requests waiting beyond those; more are answered 'busy, try again'."),
    max_pixels_frames: int = typer.Option(2_000_000, min=1, help="Largest result: width x height x frames."),
    max_seconds: float = typer.Option(15.0, help="Longest result in seconds, its input included."),
    max_upload_mb: float = typer.Option(20.0, help="Largest upload in MB."),
    output_age: float = typer.Option(60.0, help="Minutes a result file is kept before it is deleted."),
    outputs: Path = typer.Option(None, help="Folder for result files, one subfolder per browser session (default: a temporary folder, deleted on exit)."),
) -> None:  # fmt: skip
    """A web page for every prompting mode (Gradio), served until Ctrl-C: http://HOST:PORT."""
    from kinema.serve import Limits, serve

    if outputs is not None:
        check_folder(outputs, "--outputs")
    limits = Limits(concurrency=concurrency, queue=queue, max_pixels_frames=max_pixels_frames,
                    max_seconds=max_seconds, max_upload_mb=max_upload_mb, output_age=output_age)  # fmt: skip
    serve(model, host, port, limits, outputs=outputs, dtype=dtype, offload=offload)


# ---------------------------------------------------------------- world

@world_app.command("render")
def world_render(
    prompt: str = typer.Argument(..., help="A short prompt ('a red ball bounces on green grass') or a full world caption."),
    size: str = typer.Option("320x180", help="WIDTHxHEIGHT in pixels, each 16..2048."),
    seconds: float = typer.Option(4.0, help="Duration in seconds."),
    fps: float = typer.Option(12.0, help="Frames per second."),
    seed: int = typer.Option(0, help="Seed for everything the prompt leaves open."),
    out: Path = typer.Option(Path("clip.mp4"), help="Video to write (.mp4, .gif or .png); a .json with captions and ground truth is written beside it."),
) -> None:
    """Render a Kinema World clip from a prompt, with its captions and ground truth."""
    from kinema.tasks import duration_notice
    from kinema.video import WRITE_SUFFIXES
    from kinema.world.render import render
    from kinema.world.text import spec_with_notices

    check_out(out, WRITE_SUFFIXES)
    width, height = parse_size(size)
    spec, notices = spec_with_notices(prompt, seed)
    clip = render(spec, width, height, seconds=seconds, fps=fps, seed=seed)
    T = clip.frames.shape[0]
    _check_one_frame(out, T, f"{seconds:g} s at {fps:g} fps is", " (or ask for one frame)")
    video_path, json_path = clip.save(out)
    for note in (*notices, *duration_notice(seconds, fps, T), _even_note(video_path, width, height)):
        if note:
            typer.echo(f"note: {note}")
    typer.echo(f"caption: {clip.caption}")
    typer.echo(f"wrote {video_path} ({plural(T, 'frame')}, {width}x{height} @ {fps:g} fps) and {json_path}")


@world_app.command("dataset")
def world_dataset(
    count: int = typer.Option(100, min=1, help="Number of clips."),
    out: Path = typer.Option(Path("world-data"), help="Folder for the clips and manifest.jsonl."),
    seed: int = typer.Option(0, help="Dataset seed; clip i depends only on (seed, i), so an interrupted run resumes."),
) -> None:
    """Write COUNT clips of varied sizes, aspect ratios and durations plus a JSONL manifest."""
    from kinema.world.dataset import write_dataset

    check_folder(out, "--out")
    manifest = write_dataset(out, count, seed=seed)
    typer.echo(f"wrote {count} clips and {manifest}")


# ---------------------------------------------------------------- data

@data_app.command("index")
def data_index(
    folder: Path = typer.Argument(..., help="Folder of videos and images, searched recursively."),
    out: Path = typer.Option(None, help="Manifest to write (default FOLDER/manifest.jsonl). Skipped files are listed in its .errors.jsonl."),
) -> None:
    """Write a manifest of every readable clip: path, fps, frames, width, height, caption (from a .txt/.json sidecar)."""
    from kinema.data import index_folder

    if out is not None:
        check_out(out, None, example="manifest.jsonl")
    result = index_folder(folder, out or folder / "manifest.jsonl")
    typer.echo(f"indexed {result.rows} clips into {result.manifest}; "
               f"{len(result.errors)} unreadable files skipped (listed in {result.errors_file})")  # fmt: skip


@data_app.command("caption")
def data_caption(
    manifest: Path = typer.Argument(..., help="Manifest from `kinema data index` (or `kinema world dataset`); rewritten in place."),
    captioner: str = typer.Option(..., help="The vision-language model: openai:URL (an OpenAI-compatible server, e.g. openai:http://127.0.0.1:8000/v1) or hf:DIR (a local transformers folder)."),
    llm_model: str = typer.Option(None, "--llm-model", help="Model name at an openai:URL server (default: KINEMA_LLM_MODEL, else the one model it lists)."),
    api_key: str = typer.Option(None, help="API key of the server (default: KINEMA_LLM_API_KEY or OPENAI_API_KEY; local servers take any)."),
    frames: int = typer.Option(8, min=1, help="Frames sent a clip, spread evenly over it (an image sends 1)."),
    size: int = typer.Option(448, min=16, help="Longer side of each frame sent, in pixels (never enlarged)."),
    prompt: Path = typer.Option(None, help="Caption prompt file; {count}, {seconds}, {width}, {height} and {fps} are filled in per clip (default: Kinema's, kinema/prompts/caption.txt: subject, appearance, motion, background, camera, lighting)."),
    overwrite: bool = typer.Option(False, help="Caption every clip, also those that have a caption."),
    concurrency: int = typer.Option(4, min=1, help="Requests in flight at once (hf:DIR answers one at a time)."),
    timeout: float = typer.Option(120.0, help="Seconds one request may take."),
    retries: int = typer.Option(2, min=0, help="Further tries of a request that failed for a transient reason (no connection, timeout, HTTP 429 or 5xx), with exponential back-off."),
    max_tokens: int = typer.Option(300, min=1, help="The longest answer asked for, in tokens."),
    max_chars: int = typer.Option(2000, min=1, help="An answer longer than this many characters is an error, not a caption."),
    sidecars: bool = typer.Option(True, "--sidecars/--no-sidecars", help="Write each caption beside its clip too (clip.txt)."),
    give_up: int = typer.Option(10, min=1, help="Stop the run when this many requests in a row fail (a server that is down, a model it does not know); what was made is saved."),
) -> None:
    """Caption the clips of a manifest with a vision-language model, as the report re-captions its
    training videos. Clips that fail are listed in MANIFEST's .caption-errors.jsonl; a crash,
    kill or Ctrl-C loses nothing, and a rerun resumes."""
    from kinema.data.caption import CaptionOptions, caption_manifest
    from kinema.llm import connect

    options = CaptionOptions(frames=frames, size=size, prompt=prompt, overwrite=overwrite, concurrency=concurrency,
                             max_tokens=max_tokens, max_chars=max_chars, sidecars=sidecars, give_up=give_up)  # fmt: skip
    options.check()
    if not manifest.is_file():
        raise KinemaError(f"no manifest at {manifest}; make one with `kinema data index FOLDER --out {manifest}`")
    chat = connect(captioner, model=llm_model, api_key=api_key, timeout=timeout, retries=retries)
    typer.echo(f"captioning with {chat.name}")
    r = caption_manifest(manifest, chat, options, log=typer.echo)
    typer.echo(f"captioned {r.captioned} clips in {r.seconds:.1f} s ({r.clips_per_second:.2f} clips/s); "
               f"{r.resumed} resumed, {r.skipped} had captions, {len(r.failed)} failed"
               + (f" (listed in {r.errors_file})" if r.failed else ""))  # fmt: skip
    if r.failed and not (r.captioned or r.resumed):
        raise KinemaError(f"no clip was captioned; the first error: {r.failed[0]['error']}")


@data_app.command("encode")
def data_encode(
    manifest: Path = typer.Option(..., help="Manifest from `kinema data index` (or `kinema world dataset`)."),
    vae: str = typer.Option(None, help="VAE folder (written by save_vae) or the name of a shipped VAE."),
    out: Path = typer.Option(..., help="Folder for the latent shards and index.json; a rerun resumes it."),
    text_encoder: str = typer.Option("builtin", help="builtin (trained with the DiT: captions stored) or hf:DIR (frozen: embeddings stored too)."),
    model: Path = typer.Option(None, help="A diffusers Wan 2.1 or Wan 2.2 TI2V-5B folder to fine-tune: its own VAE and umT5 encoder make the latents and the caption embeddings (instead of --vae and --text-encoder), so training holds only the DiT."),
    clips_per_shard: int = typer.Option(64, min=1, help="Clips a shard."),
    max_size: int = typer.Option(None, help="Shrink clips whose longer side exceeds this many pixels."),
    max_frames: int = typer.Option(None, min=1, help="Keep at most this many frames a clip (then trimmed to 1 + 4k)."),
    fps: float = typer.Option(None, help="Resample clips to this frame rate first."),
    dtype: str = typer.Option("float32", help="Stored latent dtype: float32, bfloat16 or float16."),
    chunk: int = typer.Option(None, min=1, help="Encode in time chunks of this many latent frames (bounded memory)."),
    tile: int = typer.Option(None, min=1, help="Encode in spatial tiles of this many latent cells."),
) -> None:
    """Encode a manifest's clips with the VAE into safetensors shards. Run under torchrun for many ranks."""
    from kinema.data import EncodeOptions, encode_manifest
    from kinema.train.common import init_distributed, shutdown
    from kinema.vae import load_vae

    check_folder(out, "--out")
    if not (text_encoder in ("builtin", "none") or text_encoder.startswith(("builtin:", "hf:"))):
        raise KinemaError(f"--text-encoder must be builtin or hf:DIR; got {text_encoder!r}")
    if (model is None) == (vae is None):
        raise KinemaError("give --vae (with --text-encoder) or --model WAN_DIR, one of the two")
    if model is not None:
        from kinema.models.wan import is_wan_folder

        if not is_wan_folder(model):
            raise KinemaError(f"--model {model} is not a diffusers Wan folder (model_index.json naming a Wan pipeline)")
    d = init_distributed()
    try:
        if model is not None:
            from kinema.text.umt5 import WanTextEncoder
            from kinema.vae.wan import load_wan_vae

            codec = load_wan_vae(model / "vae", device=d.device)
            text = WanTextEncoder(model / "text_encoder", model / "tokenizer", device=d.device)
            vae, text_encoder = str(model.resolve()), f"wan:{model.resolve()}"
        else:
            codec = load_vae(vae, device=d.device)
            text = None
            if text_encoder.startswith("hf:"):
                from kinema.text import load_text_encoder

                text = load_text_encoder(text_encoder, device=d.device)
        options = EncodeOptions(clips_per_shard=clips_per_shard, max_size=max_size, max_frames=max_frames, fps=fps,
                                dtype=dtype, chunk=chunk, tile=tile, multiple=2 * codec.config.spatial_factor)  # fmt: skip
        report = encode_manifest(manifest, out, codec, text, options, rank=d.rank, world_size=d.world_size,
                                 vae_name=vae, text_spec=text_encoder)  # fmt: skip
    finally:
        shutdown(d)
    if d.is_main:
        typer.echo(f"encoded {report.clips} clips into {len(report.written)} shards in {out} "
                   f"({len(report.skipped)} shards already done, {len(report.errors)} clips skipped)")  # fmt: skip


# ---------------------------------------------------------------- train

@train_app.command("vae")
def train_vae_cmd(
    run: Path = typer.Argument(..., help="Run folder (config.json, tb/, checkpoints/, export/). A run with a checkpoint resumes exactly, with its saved settings: options not given come from them, and an option that changes one is an error unless named by --override. --steps, --ckpt-every and --workers may change freely (a larger --steps also stretches the cosine schedule). A run folder with no checkpoint yet starts over, with the options given."),
    data: str = typer.Option(None, help="'world' (Kinema World rendered on the fly, the default) or a manifest .jsonl of real videos."),
    vae: str = typer.Option(None, help="VAE preset: tiny (default), small or base."),
    steps: int = typer.Option(None, min=1, help="Total optimizer steps (default 20000)."),
    batch: int = typer.Option(None, min=1, help="Clips a step, over all processes (default 4)."),
    lr: float = typer.Option(None, help="Peak learning rate (default 2e-4; warmup, then cosine to 10%); 1e-3 trains the tiny VAE worse."),
    warmup: int = typer.Option(None, min=0, help="Steps of linear warmup to the peak learning rate (default 200; a short fine-tune wants fewer)."),
    frames: str = typer.Option(None, help="Clip lengths drawn per step, each 1 + 4k; 1 trains on images (default 1,9,17)."),
    sizes: str = typer.Option(None, help="Clip sizes WIDTHxHEIGHT drawn per step, multiples of 8 (default 64x64,96x64,64x96,80x48,48x80)."),
    seed: int = typer.Option(None, help="Seed of the data and the initial weights (default 0)."),
    mse: float = typer.Option(None, min=0, help="Weight of the squared error, what PSNR counts: it weighs the large errors of lost small objects more than L1 does (default 0)."),
    detail: float = typer.Option(None, min=0, help="Extra L1 weight on pixels with edges or motion, those of small and moving objects (default 0: every pixel alike; 4 weighs an object's rim about 5 - 9x)."),
    ckpt_every: int = typer.Option(None, min=1, help="Steps between checkpoints (default 500)."),
    init: str = typer.Option(None, help="Start from the weights of a saved VAE (a folder such as OTHER_RUN/export, or a shipped name): fine-tuning, or a new schedule."),
    freeze_encoder: bool = typer.Option(None, "--freeze-encoder/--train-encoder", help="With --init: train the decoder only, so the latents (and a DiT trained on them) stay valid (default: train both; fixed for the life of a run)."),
    workers: int = typer.Option(None, min=0, help="Processes that render or read the next batches while the model trains (default 0: in this process). Several keep a GPU fed."),
    precision: str = typer.Option(None, help="bf16 (the forward under bfloat16 autocast; weights, optimizer and loss in float32) or fp32; default auto: bf16 on a GPU and on a CPU that computes it natively (a resume keeps the run's own)."),
    override: list[str] = typer.Option([], "--override", help="KEY, a field of VAETrainConfig (lr, batch, sizes, ...): on a resume, let this setting change; the run goes on with the new value, saved in RUN/config.json. Repeat it. freeze_encoder never changes on a resume."),
    export_only: bool = typer.Option(False, "--export-only", help="Only export the latest checkpoint's EMA weights to RUN/export (works while the run trains)."),
) -> None:
    """Train the causal 3D VAE (L1 + SSIM + KL; optionally squared error and edge and motion weights). Many processes: torchrun --nproc_per_node N -m kinema.cli train vae RUN (DDP).

    The EMA weights are exported to RUN/export (safetensors + config.json) at the end.
    """
    import dataclasses

    from kinema.train.common import check_resume, latest_checkpoint
    from kinema.train.vae import VAETrainConfig, check_encoder_kept, export_vae, train_vae

    check_folder(run, "RUN")
    if export_only:
        typer.echo(f"exported the EMA weights to {export_vae(run)}")
        return

    given = dict(vae=vae, data=data, steps=steps, batch=batch, lr=lr, warmup=warmup, seed=seed, mse=mse, detail=detail,
                 ckpt_every=ckpt_every, init=init, freeze_encoder=freeze_encoder, workers=workers,
                 precision=precision)  # fmt: skip
    if frames is not None:
        given["frames"] = parse_ints(frames, "--frames")
    if sizes is not None:
        given["sizes"] = tuple(parse_size(s, "--sizes")[::-1] for s in sizes.split(","))
    given = {k: v for k, v in given.items() if v is not None}
    saved, base = run / "config.json", None
    if saved.is_file():  # resuming: the run's own settings, changed only where an option is given
        try:
            base = VAETrainConfig.from_dict(json.loads(saved.read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KinemaError(f"cannot read the run's settings {saved}: {e}") from None
    cfg = dataclasses.replace(base, **given) if base is not None else VAETrainConfig(**given)
    resuming = base is not None and latest_checkpoint(run / "checkpoints") is not None
    if resuming:
        check_encoder_kept(run, base.freeze_encoder, cfg.freeze_encoder)
    check_resume(run, base.to_dict() if resuming else None, cfg.to_dict(), override,
                 free=("steps", "ckpt_every", "keep", "workers"))  # fmt: skip
    losses = train_vae(cfg, run)
    if losses:
        typer.echo(f"trained to step {cfg.steps}, last loss {losses[-1]:.4f}; EMA weights in {run / 'export'}")
    else:
        typer.echo(f"{run} is already at step {cfg.steps}; raise --steps to train further")


@train_app.command("dit")
def train_dit_cmd(
    run: Path = typer.Argument(..., help="Run folder (config.json, tb/, metrics.jsonl, checkpoints/, export/). A run with a checkpoint resumes exactly, with its saved settings: keys not set come from them, and a --set that changes one is an error unless named by --override. steps, checkpoint_every, keep_checkpoints and world_workers may change freely. A run folder with no checkpoint yet starts over, with the settings given."),
    settings: list[str] = typer.Option([], "--set", help="KEY=VALUE, a field of DiTTrainConfig, e.g. --set vae=weights/vae --set steps=2000. Repeat it."),
    config: Path = typer.Option(None, help="A config.json to start from (default: the run's own, else the defaults). On a resume, its differences from the run's own count as changes."),
    override: list[str] = typer.Option([], "--override", help="KEY, a field of DiTTrainConfig: on a resume, let this setting change (e.g. --override lr --set lr=1e-4); the run goes on with the new value, saved in RUN/config.json. Repeat it."),
    export_only: bool = typer.Option(False, "--export-only", help="Only export the latest checkpoint's EMA weights to RUN/export."),
) -> None:
    """Train the DiT with rectified flow on Kinema World (data=world) or a latent cache (data=FOLDER).

    Keys: model (tiny, small, b, l, xl_1b, xl_3b), hidden, depth, heads, attention, checkpointing, text_encoder, text_dim, text_frozen (the builtin text encoder keeps its first weights), caption_dropout, shift_scale (more high-noise training for small latents), plain_shift_prob (a share of samples at the plain shift: the low-noise steps), data, vae, token_budget, sequences_per_step, steps, lr, warmup, decay_steps, grad_clip, ema_decay, seed, checkpoint_every, init (start from an export), init_reset (modules of it drawn afresh), world_* (clip sizes), world_cache (keep the encoded world in RUN/world_cache), world_workers (render that world in K processes first), world_single_prob (a share of plain one-object scenes), world_thing_weight (loss weight of the cells that hold objects), world_crop (native, or square: every clip cut to its centre square); see DiTTrainConfig.

    Many processes: torchrun --nproc_per_node N -m kinema.cli train dit RUN ... (FSDP2).
    """
    import json

    from kinema.train.common import check_resume, latest_checkpoint
    from kinema.train.dit import DiTTrainConfig, export_dit, train_dit

    check_folder(run, "RUN")
    source = config or (run / "config.json")
    overrides = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise KinemaError(f"--set takes KEY=VALUE; got {item!r}")
        overrides[key.strip()] = value
    base = {}
    if source.is_file():
        try:
            base = json.loads(source.read_text())
        except ValueError as e:
            raise KinemaError(f"{source} is not valid JSON: {e}") from None
    elif config is not None:
        raise KinemaError(f"no config file at {config}")
    cfg = DiTTrainConfig.from_strings(overrides, base)
    own, saved = run / "config.json", None
    if own.is_file() and latest_checkpoint(run / "checkpoints") is not None:  # a resume
        try:
            saved = DiTTrainConfig.from_dict(json.loads(own.read_text())).to_dict()
        except ValueError as e:
            raise KinemaError(f"{own} is not valid JSON: {e}") from None
    check_resume(run, saved, cfg.to_dict(), override,
                 free=("steps", "checkpoint_every", "keep_checkpoints", "world_workers"))  # fmt: skip
    if export_only:
        out = export_dit(run, cfg=cfg)
        typer.echo(f"exported the EMA weights to {out}")
        return
    history = train_dit(run, cfg)
    if history:
        typer.echo(f"trained to step {history[-1]['step']}, loss {history[-1]['loss']:.4f}; weights in {run / 'export'}")
    else:
        typer.echo(f"{run} is already at step {cfg.steps}; raise --set steps=N to train further")


@train_app.command("pack")
def train_pack_cmd(
    source: Path = typer.Argument(..., help="A model folder: a DiT run (its export/) or an export folder."),
    out: Path = typer.Argument(..., help="Folder to write the packed model into."),
    vae: str = typer.Option(None, help="Name of a shipped VAE to refer to (e.g. world-vae); default: copy the source's VAE into OUT/vae."),
    default: list[str] = typer.Option([], "--default", help="KEY=VALUE sampling default stored in pipeline.json (width, height, seconds, fps, steps, guidance, shift_scale; an export's own shift_scale is kept; fps_range=LO,HI: the frame rates the model makes natively). Repeat it."),
    expand: bool = typer.Option(True, "--expand/--no-expand", help="Expand short prompts with the Kinema World grammar by default."),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as float16 (half the size; loaded back as float32)."),
) -> None:
    """Pack a trained model into one self-contained folder to ship (what kinema/weights/world holds).
    A LoRA run (or its lora.safetensors) is merged into its base: a whole diffusers folder for a
    Wan base, a Kinema model folder otherwise."""
    import torch

    from kinema.pipeline import pack_model

    lora = next((p for p in (source, source / "lora.safetensors", source / "export" / "lora.safetensors")
                 if p.is_file() and p.suffix == ".safetensors"), None)  # fmt: skip
    if lora is not None:
        from kinema.train.dit import pack_lora

        dst = pack_lora(lora, out, dtype=torch.float16 if half else torch.float32)
        typer.echo(f"merged {lora} into its base: {dst}")
        return

    defaults = {}
    for item in default:
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            numbers = [float(v) for v in (value.split(",") if key == "fps_range" else [value])]
        except ValueError:
            raise KinemaError(f"--default takes KEY=NUMBER (fps_range=LO,HI); got {item!r}") from None
        numbers = [int(n) if n.is_integer() else n for n in numbers]  # steps=20, not 20.0
        defaults[key] = numbers if key == "fps_range" else numbers[0]
    dst = pack_model(source, out, vae=vae, defaults=defaults, expand=expand,
                     dtype=torch.float16 if half else torch.float32)  # fmt: skip
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    typer.echo(f"packed {source} into {dst} ({size / 2**20:.1f} MiB)")


# ---------------------------------------------------------------- eval

@eval_app.command("world")
def eval_world(
    model: str = typer.Option("real", help="'real' (Kinema World renders: the ceiling), 'baseline:frozen', 'baseline:shuffled', 'baseline:noise', 'vae:NAME' (the renders through that VAE and back: the ceiling of a DiT on it, e.g. vae:world-vae), or a model NAME / checkpoint PATH."),
    suite: str = typer.Option("quick", help="Prompt suite: quick (16 small clips), full (28 clips, several sizes), sizes (16 short clips from 32x32 to 1920x1080 and 1080x1920; slow on a CPU) or framing (the quick scenes with objects at 224x128 and 128x224; see eval framing)."),
    out: Path = typer.Option(Path("eval-world"), help="Folder for scores.json, report.md, clips/*.png and metrics/*.png."),
    seeds: int = typer.Option(1, min=1, help="Rounds of the suite, each with every case's seed moved by 100 (other noise, other real renders): the means pool all rounds, and each gets its spread between rounds, to tell a change from the luck of one draw."),
    steps: int = typer.Option(None, min=1, help="A model's sampling steps, in place of its default."),
    guidance: float = typer.Option(None, help="A model's classifier-free guidance, in place of its default."),
    compose: bool = typer.Option(True, "--compose/--no-compose", help="Sizes beyond a model's training: compose at a trained size, then refine (default), or sample them in one pass (as before; to compare)."),
) -> None:
    """Judge a model on the world benchmark: prompt adherence, consistency, permanence, gravity, persistence, camera, and the tasks (animate, extend, loop, connect, SDEdit) on the real renders of the cases that ask them."""
    from kinema.eval.report import write_report
    from kinema.eval.suite import aggregate, by_group, round_spread, run, seed_rounds, sources
    from kinema.eval.suite import suite as suite_cases

    cases = seed_rounds(suite_cases(suite), seeds)
    make, tasks = sources(model, {"steps": steps, "guidance": guidance, "compose": None if compose else False})
    results = run(make, cases, keep=True, progress=lambda name: typer.echo(f"judged {name}", err=True), tasks=tasks)
    paths = write_report(out, model, suite, results, rounds=seeds)
    spread = round_spread(results, seeds) if seeds > 1 else {}
    rows = []
    for k, v in aggregate(results).items():
        row = {"metric": k, "mean": "n/a" if v is None else v}
        if seeds > 1:
            row["± between rounds"] = "n/a" if spread[k] is None else spread[k]
        rows.append(row)
    print_table(rows)
    groups = by_group(results, ("objects", "horizon"))
    if len(groups) > 1 and len(groups) < len(results):  # a suite of groups (sizes): one row a group
        print_table([{"group": g, **{m: "n/a" if v is None else v for m, v in row.items()}} for g, row in groups.items()])
    typer.echo(f"wrote {paths['scores']} and {paths['report']} (with clips/ and metrics/ PNGs)")


@eval_app.command("framing")
def eval_framing(
    model: str = typer.Option("world", help="A model NAME ('world') or folder PATH; also 'real', 'baseline:KIND' or 'vae:NAME' as in eval world."),
    sizes: str = typer.Option("wide=224x128,tall=128x224", help="The sizes to sample each prompt at: NAME=WIDTHxHEIGHT, comma-separated (a group each)."),
    seeds: int = typer.Option(1, min=1, help="Rounds of the suite on seeds 100 apart; each figure gets its spread between rounds."),
    seconds: float = typer.Option(2.0, min=0.25, help="Seconds a clip."),
    fps: float = typer.Option(8.0, min=1.0, help="Frames a second."),
    steps: int = typer.Option(None, min=1, help="A model's sampling steps, in place of its default."),
    guidance: float = typer.Option(None, help="A model's classifier-free guidance, in place of its default."),
    compose: bool = typer.Option(True, "--compose/--no-compose", help="Sizes beyond a model's training: compose at a trained size, then refine (default), or sample in one pass."),
    out: Path = typer.Option(Path("eval-framing"), help="Folder for framing.json, scores.json, report.md and the clips' contact sheets."),
) -> None:
    """How a model frames what it is asked for: the quick suite's 15 scenes with objects, sampled at a widescreen and a vertical size on the same seeds; for each size the share of frames that hold the asked objects wholly inside the frame (the judge's detections: none touching the edge), beside real renders of the same prompts and seeds, and the judge's metrics (framing = model share / real share, at most 1)."""
    from kinema.eval.report import write_report
    from kinema.eval.suite import framing, framing_summary, run, seed_rounds, sources

    groups = {}
    for item in sizes.split(","):
        name, _, size = item.partition("=")
        try:
            if not name.strip():
                raise KinemaError("no name")
            groups[name.strip()] = parse_size(size)
        except KinemaError:
            raise KinemaError(f"--sizes takes NAME=WIDTHxHEIGHT, comma-separated; got {item!r}") from None
    cases = seed_rounds(framing(groups, seconds, fps), seeds)
    make, _ = sources(model, {"steps": steps, "guidance": guidance, "compose": None if compose else False})
    results = run(make, cases, keep=True, progress=lambda name: typer.echo(f"judged {name}", err=True))
    paths = write_report(out, model, "framing", results, rounds=seeds)
    summary = dict(model=model, sizes={g: list(wh) for g, wh in groups.items()}, seconds=seconds, fps=fps, rounds=seeds,
                   **framing_summary(results, seeds))  # fmt: skip
    (out / "framing.json").write_text(json.dumps(summary, indent=1))
    rows = []
    for g, (w, h) in groups.items():
        agg, spread, share = summary["groups"][g], summary["spread"][g], summary["shares"][g]
        row = {"size": f"{g} {w}x{h}", "in view (model)": share["model"], "in view (real)": share["real"]}
        for m in ("framing", "objects", "motion", "consistency"):
            v = agg.get(m)
            row[m] = "n/a" if v is None else f"{v:.2f}" + (f" ± {spread[m]:.2f}" if spread.get(m) is not None else "")
        rows.append(row)
    print_table(rows)
    typer.echo(f"wrote {out / 'framing.json'} and {paths['report']}")


@eval_app.command("words")
def eval_words_cmd(
    model: str = typer.Option("world", help="A model NAME ('world') or folder PATH (an export, a training run, a packed model)."),
) -> None:
    """Which caption words the model reads: the change of its clean-latent prediction from a noisy real clip when the first object's colour or shape, the sky or the ground is swapped in the caption, beside the change between the two real renders (share = model / real; 0: not read). 3 fixed scenes, t = 0.5, 0.8, 0.95; seconds on a CPU."""
    from kinema.eval.words import read_words
    from kinema.pipeline import Pipeline, set_threads

    set_threads()
    print_table(read_words(Pipeline.from_pretrained(model)))


@eval_app.command("vae")
def eval_vae_cmd(
    model: str = typer.Option("world-vae", help="A shipped VAE name or a folder written by save_vae (e.g. RUN/export)."),
    clips: int = typer.Option(8, min=1, help="Held-out clips per size."),
    frames: int = typer.Option(17, min=1, help="Frames a clip (1 + 4k)."),
) -> None:
    """PSNR (whole clips, first frames, later frames), SSIM, compression ratio and encode/decode speed on held-out Kinema World clips, at a trained size and two unseen sizes."""
    from kinema.vae.evaluate import evaluate_vae

    if (frames - 1) % 4:
        raise KinemaError(f"--frames must be 1 + 4k (1, 5, 9, 17, ...); got {frames}")
    print_table(evaluate_vae(model, clips=clips, frames=frames))


@eval_app.command("calibrate")
def eval_calibrate(
    suite: str = typer.Option("quick", help="Prompt suite: quick or full."),
) -> None:
    """Print the judge's calibration (markdown): real renders against frozen, shuffled and noise baselines; exit 1 if a threshold fails."""
    from kinema.eval.suite import calibrate, calibration_problems, calibration_table

    cal = calibrate(suite)
    typer.echo(calibration_table(cal))
    problems = calibration_problems(cal)
    for problem in problems:
        typer.secho(f"fails: {problem}", fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)


# ---------------------------------------------------------------- bench

@bench_app.command("world")
def bench_world_cmd(
    frames: int = typer.Option(48, min=1, help="Frames rendered per size and repeat."),
) -> None:
    """Kinema World render speed (frames/s, one thread) at 64x64, 256x256 and 1280x720."""
    from kinema.world.bench import bench_world

    rows = bench_world(frames=frames)
    print_table(rows)


@bench_app.command("dit")
def bench_dit_cmd(
    configs: str = typer.Option(None, help="Comma-separated DiT presets (default: tiny,small on a CPU; xl_1b on a GPU)."),
    tokens: str = typer.Option(None, help="Comma-separated tokens a sample (default: 1024 on a CPU; 4096,8192,16384,32768 on a GPU)."),
    steps: int = typer.Option(3, min=1, help="Timed steps (median reported) after one warm-up step."),
) -> None:
    """DiT training tokens/s and forward latency per config; on a GPU, bf16 and MFU."""
    from kinema.train.bench import bench_dit

    try:
        names = tuple(c.strip() for c in configs.split(",")) if configs else None
        counts = tuple(int(n) for n in tokens.split(",")) if tokens else None
    except ValueError:
        raise KinemaError(f"--tokens must be comma-separated whole numbers; got {tokens!r}") from None
    print_table(bench_dit(configs=names, tokens=counts, steps=steps))


@bench_app.command("vae")
def bench_vae_cmd(
    model: str = typer.Option("world-vae", help="A shipped VAE name, a save_vae folder, or a preset (tiny, small, base) with random weights."),
    lengths: str = typer.Option("17,65,257", help="Clip lengths to encode + decode, comma-separated."),
    size: int = typer.Option(128, min=8, help="Square frame size in pixels."),
) -> None:
    """Peak memory (RSS on a CPU, max allocated on a GPU) and time to encode + decode clips of growing length."""
    from kinema.vae.evaluate import bench_vae

    print_table(bench_vae(model, parse_ints(lengths, "--lengths"), size))


@bench_app.command("generate")
def bench_generate_cmd(
    model: str = _MODEL,
    size: str = typer.Option(None, help="WIDTHxHEIGHT (default: the model's)."),
    seconds: float = typer.Option(2.0, help="Clip length in seconds."),
    steps: int = typer.Option(None, help="Sampling steps (default: the model's)."),
) -> None:
    """Wall time and peak RSS of one default generate, model load included, in a fresh process."""
    from kinema.pipeline import bench_generate

    width, height = _early_checks(size, seconds)
    print_table(bench_generate(model, width, height, seconds, steps=steps))

@bench_app.command("compare")
def bench_compare_cmd(
    model: str = typer.Option("wan2.1-1.3b", help="A diffusers Wan folder, or a named config with random weights: wan2.1-1.3b, wan2.1-14b, wan2.2-ti2v-5b, tiny."),
    size: str = typer.Option("256x256", help="WIDTHxHEIGHT of the video the DiT step and the decode are for."),
    frames: int = typer.Option(17, help="Pixel frames (1 + 4k)."),
    steps: int = typer.Option(3, min=1, help="Timed denoising steps a side (their median is reported), the sides alternating, after one warm-up step each."),
    dtype: str = typer.Option("bfloat16", help="The DiT's dtype on both sides: float32, bfloat16 or float16."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale (two rows a step)."),
    dit: bool = typer.Option(True, "--dit/--no-dit", help="Compare a DiT denoising step."),
    vae: bool = typer.Option(True, "--vae/--no-vae", help="Compare a VAE decode."),
    vae_size: str = typer.Option(None, help="WIDTHxHEIGHT of the decode (default: --size)."),
    vae_frames: int = typer.Option(None, help="Pixel frames of the decode (default: --frames)."),
    vae_tile: int = typer.Option(None, help="Kinema decodes in spatial tiles of this many latent pixels (overlap blended); the reference untiled."),
    layers: int = typer.Option(None, min=1, help="A named config built with only this many transformer blocks (where both sides at once would not fit in memory; a step's time scales with them)."),
) -> None:
    """The same Wan weights in Kinema and in the reference (diffusers), side by side: seconds and peak
    memory of a denoising step and of a VAE decode, their ratios, achieved GFLOP/s, max difference."""
    from kinema.models.compare import compare

    print_table(compare(model, *parse_size(size), frames=frames, steps=steps, dtype=dtype, guidance=guidance, vae=vae, dit=dit,
                        vae_frames=vae_frames, vae_size=parse_size(vae_size) if vae_size else None,
                        vae_tile=vae_tile, layers=layers))  # fmt: skip


def print_table(rows: list[dict]) -> None:
    """Print benchmark rows as an aligned table."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for key in rows[0]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # pipes get every column


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'1,9,17' -> (1, 9, 17), or a KinemaError naming the option."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise KinemaError(f"{option} takes comma-separated integers, e.g. 1,9,17; got {text!r}") from None


def main() -> None:
    try:
        app()
    except KinemaError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as e:  # a path that cannot be used
        where = f"{e.filename}: " if e.filename else ""
        typer.secho(f"error: {where}{e.strerror or e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
