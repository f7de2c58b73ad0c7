"""The command line: help for every command, the world commands end to end, clear errors."""

import json
import subprocess
import sys

import pytest

from tests.cli_helpers import run_cli


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
        (["world", "render", "a red ball bounces " * 300], ["(5699 characters)"]),  # not the whole prompt back
        (["generate", "a red ball", "--size", "10000x10000"], ["8192"]),  # not a machine's memory run out
        (["generate", "a red ball", "--seed", "99999999999999999999"], ["--seed"]),
        (["generate", "a red ball", "--window", "0"], ["window"]),
        (["generate", "a red ball", "--expand", "bogus"], ["--expand", "world", "none"]),
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


def test_world_render_notes_an_odd_mp4_size_and_a_rounded_duration(tmp_path, monkeypatch, capsys):
    from kinema.video import read_video

    code, out, err = run_cli(monkeypatch, capsys, "world", "render", "a red ball", "--size", "65x33", "--seconds", "1",
                             "--out", tmp_path / "odd.mp4")  # fmt: skip
    assert code == 0, err
    assert "the file is 66x34" in out and ".webm" in out  # H.264 holds even sizes: said, not silent
    assert read_video(tmp_path / "odd.mp4").frames.shape[1:3] == (34, 66)
    code, out, err = run_cli(monkeypatch, capsys, "world", "render", "a red ball", "--size", "65x33", "--seconds", "0.01",
                             "--out", tmp_path / "odd.webm")  # fmt: skip
    assert code == 0, err
    assert "note: 0.01 s at 12 fps is 1 frame (0.08333 s)" in out and "66x34" not in out
    assert "(1 frame, 65x33" in out and read_video(tmp_path / "odd.webm").frames.shape[:3] == (1, 33, 65)


def test_paths_that_cannot_be_written_are_one_line_errors_before_any_work(tmp_path, monkeypatch, capsys):
    afile, folder = tmp_path / "afile", tmp_path / "folder"
    afile.write_text("keep me")
    folder.mkdir()
    cases = [
        (["generate", "x", "--out", afile / "x.mp4"], f"{afile} is a file, not a folder"),
        (["generate", "x", "--out", afile / "deeper" / "x.mp4"], f"{afile} is a file, not a folder"),
        (["generate", "x", "--out", folder], "is a folder; give a file in it"),
        (["generate", "x", "--out", tmp_path / "noext"], "no extension"),
        (["image", "x", "--out", afile / "x.png"], "is a file, not a folder"),
        (["world", "render", "a red ball", "--out", afile / "x.mp4"], "is a file, not a folder"),
        (["world", "dataset", "--count", "1", "--out", afile], "is a file, not a folder"),
        (["train", "vae", afile, "--steps", "1"], f"RUN {afile} is a file, not a folder"),
        (["train", "dit", afile, "--set", "steps=1"], f"RUN {afile} is a file, not a folder"),
        (["data", "index", folder, "--out", folder], "is a folder"),
        (["data", "index", folder, "--out", afile / "m.jsonl"], "is a file, not a folder"),
        (["data", "encode", "--manifest", afile, "--vae", "world-vae", "--out", afile], "is a file, not a folder"),
        (["serve", "--outputs", afile], "is a file, not a folder"),
    ]
    for args, words in cases:
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, (args, out, err)
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and words in err, (args, err)
    assert afile.read_text() == "keep me" and list(folder.iterdir()) == []


def test_edit_of_a_clip_to_a_still_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import numpy as np

    from kinema import pipeline
    from kinema.video import write_video

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained", no_model)
    write_video(tmp_path / "clip.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    code, _, err = run_cli(monkeypatch, capsys, "edit", tmp_path / "clip.mp4", "x", "--out", tmp_path / "x.png")
    assert code == 2 and "a .png file holds one frame" in err and "has 9" in err
    assert not (tmp_path / "x.png").exists()


def test_a_very_long_generate_is_made_in_windows_without_being_asked(tmp_path, monkeypatch, capsys):
    """Past LONG times the model's default duration, one pass would grow with the length squared
    (an hour at 128x128: one step did not finish in 30 s): generate switches to windows of the
    default length, and says so."""
    from kinema import cli
    from kinema.video import read_video

    monkeypatch.setattr(cli, "LONG", 1)  # the world model's default is 2 s: 3 s is "very long" here
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball rolls right", "--seconds", "3",
                             "--size", "32x32", "--steps", "1", "--out", tmp_path / "long.webm")  # fmt: skip
    assert code == 0, err
    assert "note: 3 s is made in windows of 2 s (--window)" in out
    assert "windows: 100%" in err and "24/24" in err  # the whole clip's progress, in frames
    assert read_video(tmp_path / "long.webm").frames.shape[:3] == (24, 32, 32)
    code, out, err = run_cli(monkeypatch, capsys, "generate", "a red ball rolls right", "--seconds", "2",
                             "--size", "32x32", "--steps", "1", "--out", tmp_path / "short.webm")  # fmt: skip
    assert code == 0 and "windows" not in out + err and read_video(tmp_path / "short.webm").frames.shape[0] == 16


def test_world_dataset_writes_manifest(tmp_path):
    res = run("world", "dataset", "--count", "3", "--out", str(tmp_path / "data"))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"path", "caption", "prompt", "fps", "frames", "width", "height"} <= set(row)
