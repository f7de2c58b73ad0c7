"""Running the command line inside a test process."""

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
