"""The `kinema` command line. Thin: every command calls the Python API a user would call.

Errors a user can cause (`KinemaError`) become one line on stderr and exit code 2.
Heavy modules (torch, av) are imported inside the commands so `kinema --help` is fast.
"""

from __future__ import annotations

import sys

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
