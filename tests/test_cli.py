"""The command line: help for every command, the world commands end to end, clear errors."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "kinema.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_command():
    res = run("--help")
    assert res.returncode == 0
    for name in ("world", "bench"):
        assert name in res.stdout
    res = run("world", "--help")
    for name in ("render", "dataset"):
        assert name in res.stdout


def test_world_render_writes_video_and_truth(tmp_path):
    out = tmp_path / "clip.mp4"
    res = run("world", "render", "a red ball bounces on green grass", "--size", "96x64",
              "--seconds", "1", "--fps", "8", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["spec"]["objects"][0]["color"] == "red"
    assert meta["spec"]["ground"] == "green grass"
    assert "red" in meta["caption"] and meta["truth"]["frames"] == 8

    from kinema.video import read_video

    video = read_video(out)
    assert tuple(video.frames.shape) == (8, 64, 96, 3)


@pytest.mark.parametrize(
    "args, words",
    [
        (["world", "render", "a giraffe dances"], ["giraffe"]),
        (["world", "render", "a red ball", "--size", "big"], ["--size"]),
        (["world", "render", "a red ball", "--size", "8x8"], ["16"]),
        (["world", "render", "a red ball", "--seconds", "0"], ["second"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    res = run(*args, "--out", str(tmp_path / "x.mp4"))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error:")
    for w in words:
        assert w in res.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_world_dataset_writes_manifest(tmp_path):
    res = run("world", "dataset", "--count", "3", "--out", str(tmp_path / "data"))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"path", "caption", "prompt", "fps", "frames", "width", "height"} <= set(row)
