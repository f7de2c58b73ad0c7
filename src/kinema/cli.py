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


# ---------------------------------------------------------------- bench

@bench_app.command("world")
def bench_world_cmd(
    frames: int = typer.Option(48, min=1, help="Frames rendered per size and repeat."),
) -> None:
    """Kinema World render speed (frames/s, one thread) at 64x64, 256x256 and 1280x720."""
    from kinema.world.bench import bench_world

    rows = bench_world(frames=frames)
    print_table(rows)


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
