"""Re-captioning (`kinema data caption`) and prompt expansion (`--expand SPEC`) against a real
OpenAI-compatible server: `transformers serve` on 127.0.0.1, serving small random models made here
(tests/llm_models.py), and the same models loaded locally (hf:DIR).

The models are random, so their captions are gibberish: these tests check the plumbing (every clip
captioned once, its frames sent as images the server reads, the journal that survives kill -9 and
the resume, the atomic manifest, the errors file, each kind of bad answer's message), not prose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kinema.data.caption import (CaptionOptions, caption_errors_path, caption_manifest, fill_prompt, journal_path,
                                 read_journal)  # fmt: skip
from kinema.errors import KinemaError
from kinema.llm import LLMError, connect, count_images, expand_prompt, load_style, parse_spec, user
from kinema.video import read_frames_at, spread_indices, write_video
from tests.cli_helpers import run_cli
from tests.llm_models import TOKENS_PER_IMAGE, Server, free_port, make_models, read_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Spy:
    """A real chat model, with every request and reply kept to look at afterwards."""

    def __init__(self, chat):
        self.chat, self.name = chat, chat.name
        self.calls: list[tuple[list[dict], object]] = []

    def __call__(self, messages, *, max_tokens):
        reply = self.chat(messages, max_tokens=max_tokens)
        self.calls.append((messages, reply))
        return reply


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve") / "serve.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Six world clips of different sizes and rates, without their captions."""
    from kinema.world.dataset import write_dataset

    root = tmp_path_factory.mktemp("world")
    write_dataset(root, 6, seed=3, progress=False)
    return sorted(root.glob("*.mp4"))


def footage(rendered, folder: Path, copies: int = 1) -> Path:
    """A folder of the rendered clips (each `copies` times), indexed: a manifest with no captions."""
    from kinema.data import index_folder

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for clip in rendered:
            shutil.copy(clip, folder / f"{clip.stem}_{k}.mp4")
    manifest = index_folder(folder, folder / "manifest.jsonl", progress=False).manifest
    assert all(row["caption"] == "" for row in read_jsonl(manifest))
    return manifest


# ---------------------------------------------------------------- pieces


def test_frames_are_spread_over_the_clip(tmp_path):
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10) * 20  # frame i is marked i * 20
    write_video(tmp_path / "a.png", frames[:1], 8)
    write_video(tmp_path / "a.gif", frames, 8)
    assert spread_indices(10, 4) == [1, 3, 6, 8] and spread_indices(3, 8) == [0, 1, 2] and spread_indices(1, 5) == [0]
    got = read_frames_at(tmp_path / "a.gif", [1, 3, 6, 8, 40])  # past the end: the last frame
    assert [int(round(v / 20)) for v in got[:, 0, 0, 0]] == [1, 3, 6, 8, 9]
    assert read_frames_at(tmp_path / "a.png", [0, 2]).shape == (2, 16, 16, 3)


def test_the_caption_prompt_is_filled_per_clip():
    row = {"fps": 12.0, "frames": 30, "width": 320, "height": 180}
    text = fill_prompt("{count} frames of {seconds} s, {width}x{height} at {fps}; {other}", row, 8)
    assert text == "8 frames of 2.5 s, 320x180 at 12; {other}"


@pytest.mark.parametrize("spec, message", [("gpt", "openai:URL .* or hf:DIR"), ("openai:localhost:8000", "http"),
                                           ("hf:", "openai:URL"), ("hf:/no/such/folder", "no config.json")])
def test_a_bad_spec_says_what_is_expected(spec, message):
    with pytest.raises(LLMError, match=message):
        connect(spec)


def test_bad_cli_input_is_a_message(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "data", "caption", tmp_path / "none.jsonl", "--captioner", "openai:http://x")
    assert code == 2 and "no manifest at" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "generate", "a ball", "--expand", "gpt4", "--out", tmp_path / "a.mp4")
    assert code == 2 and "openai:URL" in err and not (tmp_path / "a.mp4").exists()
    code, _, err = run_cli(monkeypatch, capsys, "image", "a ball", "--expand", "world", "--no-expand")
    assert code == 2 and "not both" in err


# ---------------------------------------------------------------- captioning through the server


@pytest.mark.slow
def test_every_clip_is_captioned_once_with_its_frames(server, models, rendered, tmp_path):
    manifest = footage(rendered, tmp_path / "clips", copies=2)
    before = read_jsonl(manifest)
    chat = Spy(connect(f"openai:{server.url}", model=str(models["vlm"])))
    result = caption_manifest(manifest, chat, CaptionOptions(frames=3, max_tokens=12, concurrency=3), progress=False)

    rows = read_jsonl(manifest)
    assert result.captioned == len(rows) == 12 and not result.failed and result.clips_per_second > 0
    assert len(chat.calls) == 12  # one request a clip
    assert all(count_images(messages) == 3 for messages, _ in chat.calls)  # three frames, as image parts
    assert [{k: v for k, v in r.items() if k not in ("caption", "captioned_by")} for r in rows] == \
        [{k: v for k, v in r.items() if k != "caption"} for r in before]  # fmt: skip
    for row in rows:
        assert row["caption"] and row["captioned_by"] == str(models["vlm"])
        assert (manifest.parent / row["path"]).with_suffix(".txt").read_text().strip() == row["caption"]
    assert read_jsonl(caption_errors_path(manifest)) == [] and not journal_path(manifest).exists()
    # the sidecars are what `kinema data index` reads back
    from kinema.data import index_folder

    again = read_jsonl(index_folder(manifest.parent, tmp_path / "again.jsonl", progress=False).manifest)
    assert sorted(r["caption"] for r in again) == sorted(r["caption"] for r in rows)

    # a rerun asks for nothing: every clip has its caption
    rerun = caption_manifest(manifest, chat, CaptionOptions(frames=3, max_tokens=12), progress=False)
    assert rerun.captioned == 0 and rerun.skipped == 12 and len(chat.calls) == 12


@pytest.mark.slow
def test_the_server_reads_every_frame_as_an_image(server, models, rendered, tmp_path):
    """The model's prompt grows by one image's tokens per frame sent: the frames reach the model."""
    manifest = footage(rendered[:1], tmp_path / "one")
    chat = Spy(connect(f"openai:{server.url}", model=str(models["vlm"])))
    for k in (1, 3):
        caption_manifest(manifest, chat, CaptionOptions(frames=k, max_tokens=8, overwrite=True), progress=False)
    one, three = (reply.prompt_tokens for _, reply in chat.calls)
    assert three - one == 2 * TOKENS_PER_IMAGE + (len("3") - len("1"))  # the prompt text says how many


def start_and_stop(cmd: list[str], journal: Path, sig: int, after: int = 3) -> subprocess.Popen:
    """Start a caption run and send it `sig` once `after` captions are in its journal."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= after:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    return proc


def caption_cmd(manifest: Path, url: str, model: Path) -> list[str]:
    return [sys.executable, "-m", "kinema.cli", "data", "caption", str(manifest), "--captioner", f"openai:{url}",
            "--llm-model", str(model), "--frames", "4", "--max-tokens", "24", "--concurrency", "1"]  # fmt: skip


@pytest.mark.slow
def test_a_kill_9_loses_nothing_and_the_rerun_resumes(server, models, rendered, tmp_path):
    manifest = footage(rendered, tmp_path / "clips", copies=5)  # 30 clips
    journal = journal_path(manifest)
    cmd = caption_cmd(manifest, server.url, models["vlm"])
    start_and_stop(cmd, journal, signal.SIGKILL)

    rows = read_jsonl(manifest)  # still whole: rewritten only by renaming a finished file over it
    assert len(rows) == 30
    done = read_journal(journal)
    assert 3 <= len(done) < 30

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(done)} captions" in res.stdout
    assert f"captioned {30 - len(done)} clips" in res.stdout and f"{len(done)} resumed" in res.stdout
    rows = read_jsonl(manifest)
    assert all(r["caption"] for r in rows) and not journal.exists()
    by_path = {r["path"]: r["caption"] for r in rows}
    assert all(by_path[p] == e["caption"] for p, e in done.items())  # what the killed run made is kept


@pytest.mark.slow
def test_bad_clips_and_bad_answers_are_listed_and_lose_nothing(server, models, rendered, tmp_path, monkeypatch,
                                                               capsys):  # fmt: skip
    manifest = footage(rendered[:3], tmp_path / "clips")
    broken = tmp_path / "clips" / f"{rendered[1].stem}_0.mp4"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated after the index
    url = f"openai:{server.url}"
    vlm = str(models["vlm"])

    result = caption_manifest(manifest, connect(url, model=vlm), CaptionOptions(frames=2, max_tokens=8), progress=False)
    errors = read_jsonl(caption_errors_path(manifest))
    assert result.captioned == 2 and [e["path"] for e in errors] == [broken.name]
    assert [bool(r["caption"]) for r in read_jsonl(manifest)] == [True, False, True]

    cases = [  # (CLI options, the message)
        (["--llm-model", str(models["mute"])], "answered with an empty caption"),
        (["--llm-model", vlm, "--max-chars", "3"], "over-long caption: .* characters, the limit is 3"),
        (["--llm-model", vlm, "--timeout", "0.001", "--retries", "1"], r"did not answer within 0.001 s \(after 2 tries\)"),
        # a model the server cannot load: HTTP 500 (under load its failed load can also drop the
        # connection, a reset: either way a transient failure, retried, then said)
        (["--llm-model", str(tmp_path / "no-such-model"), "--retries", "1", "--concurrency", "1"],
         r"(answered HTTP 500|cannot be reached).*\(after 2 tries\)"),
    ]
    before = manifest.read_text()
    for options, message in cases:
        code, out, err = run_cli(monkeypatch, capsys, "data", "caption", manifest, "--captioner", url, "--overwrite",
                                 "--frames", 1, *options)  # fmt: skip
        assert code == 2 and "no clip was captioned" in err, (options, out, err)
        errors = read_jsonl(caption_errors_path(manifest))
        answered = [e for e in errors if e["path"] != broken.name]  # the broken clip fails as before
        assert len(answered) == 2 and all(re.search(message, e["error"]) for e in answered), (options, errors)
        assert manifest.read_text() == before  # the captions made earlier are all still there

    # a server that is not there, and a URL the server refuses (HTTP 404): one clear line each, and
    # the run stops after --give-up requests in a row failed, not after one failure a clip
    down = f"openai:http://127.0.0.1:{free_port()}/v1"
    for spec, message in ((down, "cannot be reached .*is the server running"), (url.removesuffix("/v1") + "/nope", "HTTP 404")):
        code, _, err = run_cli(monkeypatch, capsys, "data", "caption", manifest, "--captioner", spec, "--llm-model", vlm,
                               "--overwrite", "--retries", 0, "--concurrency", 1, "--give-up", 2)  # fmt: skip
        assert code == 2 and re.search(message, err) and "Traceback" not in err, err
        assert "stopped: 2 requests in a row failed" in err and "rerun to resume" in err
    assert manifest.read_text() == before


# ---------------------------------------------------------------- the local path (hf:DIR)


@pytest.mark.slow
def test_a_local_model_folder_captions_and_expands(models, rendered, tmp_path):
    manifest = footage(rendered[:2], tmp_path / "clips")
    chat = Spy(connect(f"hf:{models['vlm']}"))
    result = caption_manifest(manifest, chat, CaptionOptions(frames=2, max_tokens=8, concurrency=2), progress=False)
    assert result.captioned == 2 and all(r["caption"] for r in read_jsonl(manifest))
    asked = chat.calls[0][0][0]["content"][-1]["text"]
    bare = chat([user(asked)], max_tokens=4).prompt_tokens  # the same request without the frames
    assert chat.calls[0][1].prompt_tokens - bare == 2 * TOKENS_PER_IMAGE  # both frames reached the model

    with pytest.raises(LLMError, match="text-only model"):
        connect(f"hf:{models['text']}")(chat.calls[0][0], max_tokens=4)
    assert expand_prompt(connect(f"hf:{models['text']}"), "a red ball", load_style(None, "kinema")).strip()


# ---------------------------------------------------------------- prompt expansion


@pytest.mark.slow
def test_expand_through_the_server_prints_and_saves_the_caption(server, models, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "image", "a red ball", "--expand", f"openai:{server.url}",
                             "--llm-model", models["text"], "--steps", 1, "--size", "32x32",
                             "--out", tmp_path / "a.png")  # fmt: skip
    assert code == 0, err
    caption = next(line for line in out.splitlines() if line.startswith("caption: "))[len("caption: "):]
    assert caption and caption != "a red ball" and f"prompt expanded by {models['text']}" in out
    assert (tmp_path / "a.txt").read_text().strip() == caption


def test_each_model_is_prompted_in_its_own_style(models, tmp_path):
    from kinema.pipeline import Pipeline, make_test_pipeline

    world = Pipeline.from_pretrained("world")
    chat = Spy(connect(f"hf:{models['text']}"))
    caption, notices = world.read_prompt("a red ball", expand=chat)
    messages = chat.calls[0][0]
    own = json.loads((Path(world.folder) / "expand.json").read_text())
    assert messages[0] == {"role": "system", "content": own["instruction"]}
    assert messages[2]["content"] == own["examples"][0]["caption"]  # the world's captions, as earlier turns
    assert messages[-1]["content"] == "a red ball" and caption and notices

    folder = make_test_pipeline(tmp_path / "m")
    mine = {"instruction": "Write like a ship's log.", "examples": [{"prompt": "p", "caption": "c"}]}
    (folder / "expand.json").write_text(json.dumps(mine))
    pipe = Pipeline.from_pretrained(folder)
    pipe.read_prompt("a red ball", expand=chat)
    assert [m["content"] for m in chat.calls[1][0]] == ["Write like a ship's log.", "p", "c", "a red ball"]
    assert load_style(tmp_path, "wan").instruction != load_style(tmp_path, "kinema").instruction  # Wan's default
    assert pipe.read_prompt("a red ball", expand="none") == ("a red ball", ())
    with pytest.raises(KinemaError, match="not a prompt-expansion style"):
        (folder / "expand.json").write_text("{}")
        Pipeline.from_pretrained(folder).read_prompt("a red ball", expand=chat)
    assert parse_spec(f"hf:{models['text']}") == ("hf", str(models["text"]))


@pytest.mark.slow
def test_ctrl_c_saves_the_manifest_and_exits_130(server, models, rendered, tmp_path):
    manifest = footage(rendered, tmp_path / "clips", copies=3)  # 18 clips
    proc = start_and_stop(caption_cmd(manifest, server.url, models["vlm"]), journal_path(manifest), signal.SIGINT)
    said = proc.stdout.read() + proc.stderr.read()
    assert proc.returncode == 130 and "interrupted: saving the captions" in said and "Traceback" not in said, said
    rows = read_jsonl(manifest)
    done = read_journal(journal_path(manifest))
    assert len(rows) == 18 and 3 <= len(done) < 18
    assert sum(bool(r["caption"]) for r in rows) == len(done)  # the manifest itself holds what was made
    res = subprocess.run(caption_cmd(manifest, server.url, models["vlm"]), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and f"captioned {18 - len(done)} clips" in res.stdout, res.stdout + res.stderr
