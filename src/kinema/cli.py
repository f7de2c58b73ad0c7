"""The `kinema` command line. Thin: every command calls the Python API a user would call.

Errors a user can cause (`KinemaError`) become one line on stderr and exit code 2.
Heavy modules (torch, av) are imported inside the commands so `kinema --help` is fast.
"""

from __future__ import annotations

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
data_app = typer.Typer(help="Data: index a folder of videos and images, cache VAE latents.", no_args_is_help=True)
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Training, from one CPU process to torchrun on many GPUs.", no_args_is_help=True)
app.add_typer(train_app, name="train")
eval_app = typer.Typer(help="Evaluation: score models; the world judge on Kinema World.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def parse_size(text: str) -> tuple[int, int]:
    """'320x180' -> (320, 180) as (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise KinemaError(f"--size must look like WIDTHxHEIGHT, e.g. 320x180; got {text!r}") from None
    return w, h


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
    from kinema.world.render import render
    from kinema.world.text import spec_from_prompt

    width, height = parse_size(size)
    spec = spec_from_prompt(prompt, seed)
    clip = render(spec, width, height, seconds=seconds, fps=fps, seed=seed)
    video_path, json_path = clip.save(out)
    typer.echo(f"caption: {clip.caption}")
    typer.echo(f"wrote {video_path} ({clip.frames.shape[0]} frames, {width}x{height} @ {fps:g} fps) and {json_path}")


@world_app.command("dataset")
def world_dataset(
    count: int = typer.Option(100, min=1, help="Number of clips."),
    out: Path = typer.Option(Path("world-data"), help="Folder for the clips and manifest.jsonl."),
    seed: int = typer.Option(0, help="Dataset seed; clip i depends only on (seed, i), so an interrupted run resumes."),
) -> None:
    """Write COUNT clips of varied sizes, aspect ratios and durations plus a JSONL manifest."""
    from kinema.world.dataset import write_dataset

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

    result = index_folder(folder, out or folder / "manifest.jsonl")
    typer.echo(f"indexed {result.rows} clips into {result.manifest}; "
               f"{len(result.errors)} unreadable files skipped (listed in {result.errors_file})")  # fmt: skip


@data_app.command("encode")
def data_encode(
    manifest: Path = typer.Option(..., help="Manifest from `kinema data index` (or `kinema world dataset`)."),
    vae: str = typer.Option(..., help="VAE folder (written by save_vae) or the name of a shipped VAE."),
    out: Path = typer.Option(..., help="Folder for the latent shards and index.json; a rerun resumes it."),
    text_encoder: str = typer.Option("builtin", help="builtin (trained with the DiT: captions stored) or hf:DIR (frozen: embeddings stored too)."),
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

    if not (text_encoder in ("builtin", "none") or text_encoder.startswith(("builtin:", "hf:"))):
        raise KinemaError(f"--text-encoder must be builtin or hf:DIR; got {text_encoder!r}")
    options = EncodeOptions(clips_per_shard=clips_per_shard, max_size=max_size, max_frames=max_frames, fps=fps,
                            dtype=dtype, chunk=chunk, tile=tile)  # fmt: skip
    d = init_distributed()
    try:
        model = load_vae(vae, device=d.device)
        text = None
        if text_encoder.startswith("hf:"):
            from kinema.text import load_text_encoder

            text = load_text_encoder(text_encoder, device=d.device)
        report = encode_manifest(manifest, out, model, text, options, rank=d.rank, world_size=d.world_size,
                                 vae_name=vae, text_spec=text_encoder)  # fmt: skip
    finally:
        shutdown(d)
    if d.is_main:
        typer.echo(f"encoded {report.clips} clips into {len(report.written)} shards in {out} "
                   f"({len(report.skipped)} shards already done, {len(report.errors)} clips skipped)")  # fmt: skip


# ---------------------------------------------------------------- train

@train_app.command("dit")
def train_dit_cmd(
    run: Path = typer.Argument(..., help="Run folder (config.json, tb/, metrics.jsonl, checkpoints/, export/). An existing run resumes exactly."),
    settings: list[str] = typer.Option([], "--set", help="KEY=VALUE, a field of DiTTrainConfig, e.g. --set vae=weights/vae --set steps=2000. Repeat it."),
    config: Path = typer.Option(None, help="A config.json to start from (default: the run's own, else the defaults)."),
    export_only: bool = typer.Option(False, "--export-only", help="Only export the latest checkpoint's EMA weights to RUN/export."),
) -> None:
    """Train the DiT with rectified flow on Kinema World (data=world) or a latent cache (data=FOLDER).

    Keys: model (tiny, small, b, l, xl_1b, xl_3b), hidden, depth, heads, attention, checkpointing, text_encoder, text_dim, caption_dropout, data, vae, token_budget, sequences_per_step, steps, lr, warmup, decay_steps, grad_clip, ema_decay, seed, checkpoint_every, world_* (clip sizes); see DiTTrainConfig.

    Many processes: torchrun --nproc_per_node N -m kinema.cli train dit RUN ... (FSDP2).
    """
    import json

    from kinema.train.dit import DiTTrainConfig, export_dit, train_dit

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
    if export_only:
        out = export_dit(run, cfg=cfg)
        typer.echo(f"exported the EMA weights to {out}")
        return
    history = train_dit(run, cfg)
    if history:
        typer.echo(f"trained to step {history[-1]['step']}, loss {history[-1]['loss']:.4f}; weights in {run / 'export'}")
    else:
        typer.echo(f"{run} is already at step {cfg.steps}; raise --set steps=N to train further")


# ---------------------------------------------------------------- eval

@eval_app.command("world")
def eval_world(
    model: str = typer.Option("real", help="'real' (Kinema World renders: the ceiling), 'baseline:frozen', 'baseline:shuffled', 'baseline:noise', or a model NAME / checkpoint PATH."),
    suite: str = typer.Option("quick", help="Prompt suite: quick (16 small clips) or full (28 clips, several sizes)."),
    out: Path = typer.Option(Path("eval-world"), help="Folder for scores.json, report.md, clips/*.png and metrics/*.png."),
) -> None:
    """Judge a model on the world benchmark: prompt adherence, consistency, permanence, gravity, persistence, camera."""
    from kinema.eval.report import write_report
    from kinema.eval.suite import aggregate, run, source
    from kinema.eval.suite import suite as suite_cases

    cases = suite_cases(suite)
    make = source(model)
    results = run(make, cases, keep=True, progress=lambda name: typer.echo(f"judged {name}", err=True))
    paths = write_report(out, model, suite, results)
    print_table([{"metric": k, "mean": "n/a" if v is None else v} for k, v in aggregate(results).items()])
    typer.echo(f"wrote {paths['scores']} and {paths['report']} (with clips/ and metrics/ PNGs)")


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


def print_table(rows: list[dict]) -> None:
    """Print benchmark rows as an aligned table."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for key in rows[0]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


def main() -> None:
    try:
        app()
    except KinemaError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
