"""Running the command line inside a test process."""

import os
import subprocess
import sys

import pytest

from kinema import cli


def run_cli(monkeypatch, capsys, *args):
    """`kinema ARGS` in this process, through cli.main: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["kinema", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def check_task_commands(runs: dict, common: list[str], out_dir) -> None:
    """Run each `kinema ARGS COMMON --out OUT_DIR/NAME` of runs {NAME: (ARGS, (T, H, W))} with
    typer's runner; each exits 0 and writes a video of that many frames at that size."""
    from typer.testing import CliRunner

    from kinema.cli import app
    from kinema.video import read_video

    for name, (args, shape) in runs.items():
        res = CliRunner().invoke(app, [*args, *common, "--out", str(out_dir / name)])
        assert res.exit_code == 0, (name, res.output)
        assert read_video(out_dir / name).frames.shape[:3] == shape, name


def torchrun(args: list, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node NPROC ARGS` (a script and its arguments, or -m and a module), one
    thread a rank; it must exit 0 (a failure shows the tail of its output). Returns its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res
