"""`kinema data caption` through a real OpenAI-compatible server: a run over a manifest of world
clips with their captions removed, its clips per second, a `kill -9` in the middle of a second
run and its resume, and the message of each kind of failure.

    python benchmarks/caption_server.py [--clips 60] [--frames 4] [--concurrency 4] [--out runs/caption-bench]
    python benchmarks/caption_server.py --url http://127.0.0.1:8000/v1 --model NAME   # your own server

Without --url it makes the small random vision-language model of the tests (tests/llm_models.py)
and starts `transformers serve` for it on 127.0.0.1: the figures are then the plumbing's (frame
sampling, JPEG encoding, HTTP, the journal and the manifest), the model's own time being small.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kinema.data import index_folder  # noqa: E402
from kinema.data.caption import caption_errors_path, journal_path, read_journal  # noqa: E402
from kinema.world.dataset import write_dataset  # noqa: E402


def caption_cmd(manifest: Path, url: str, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kinema.cli", "data", "caption", str(manifest), "--captioner", f"openai:{url}",
            "--llm-model", model, *extra]  # fmt: skip


def fresh_manifest(clips: list[Path], folder: Path) -> Path:
    """The clips copied into `folder` without their caption sidecars, indexed: empty captions."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    return index_folder(folder, folder / "manifest.jsonl", progress=False).manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--url", help="An OpenAI-compatible server's API root (default: start transformers serve)")
    ap.add_argument("--model", help="The model name at --url")
    ap.add_argument("--out", type=Path, default=Path("runs/caption-bench"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    server = None
    models = {}
    if args.url is None:
        from tests.llm_models import Server, make_models

        models = make_models(args.out / "models")
        server = Server(args.out / "serve.log")
        args.url, args.model = server.url, str(models["vlm"])
    elif not args.model:
        ap.error("--url needs --model")
    try:
        world = args.out / "world"
        if not (world / "manifest.jsonl").is_file():
            write_dataset(world, args.clips, seed=7)
        clips = sorted(world.glob("*.mp4"))[: args.clips]
        opts = ["--frames", str(args.frames), "--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens)]
        rows = []

        # 1. a whole run
        manifest = fresh_manifest(clips, args.out / "clips")
        res = subprocess.run(caption_cmd(manifest, args.url, args.model, *opts), capture_output=True, text=True)
        print(res.stdout.strip())
        if res.returncode:
            sys.exit(f"the caption run failed: {res.stderr.strip()[-2000:]}")
        rate = re.search(r"captioned (\d+) clips in ([\d.]+) s \(([\d.]+) clips/s\)", res.stdout)
        rows.append(("whole run", f"{rate[1]} clips in {rate[2]} s", f"{rate[3]} clips/s"))

        # 2. kill -9 a run a third of the way in, then resume it
        manifest = fresh_manifest(clips, args.out / "clips")
        journal = journal_path(manifest)
        proc = subprocess.Popen(caption_cmd(manifest, args.url, args.model, *opts), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        while proc.poll() is None and not (journal.is_file() and journal.read_text().count("\n") >= len(clips) // 3):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = len(read_journal(journal))
        res = subprocess.run(caption_cmd(manifest, args.url, args.model, *opts), capture_output=True, text=True)
        print(res.stdout.strip())
        resumed = re.search(r"captioned (\d+) clips .*; (\d+) resumed", res.stdout)
        rows.append(("kill -9, then rerun", f"{done} in the journal at the kill",
                     f"rerun: {resumed[2]} resumed + {resumed[1]} captioned = {int(resumed[1]) + int(resumed[2])}"))

        # 3. failures: each one line, the manifest untouched
        bad = [("server down", caption_cmd(manifest, "http://127.0.0.1:9/v1", args.model, "--overwrite", "--retries", "1")),
               ("timeout", caption_cmd(manifest, args.url, args.model, "--overwrite", "--timeout", "0.001", "--retries", "1")),
               ("HTTP 500 (unknown model)", caption_cmd(manifest, args.url, "no-such-model", "--overwrite", "--retries", "1")),
               ("over-long answer", caption_cmd(manifest, args.url, args.model, "--overwrite", "--max-chars", "3"))]
        if models:
            bad.append(("empty answer", caption_cmd(manifest, args.url, str(models["mute"]), "--overwrite")))
        before = manifest.read_text()
        for name, cmd in bad:
            start = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
            intact = manifest.read_text() == before
            rows.append((name, f"exit {res.returncode} in {time.perf_counter() - start:.1f} s, manifest "
                         f"{'unchanged' if intact else 'CHANGED'}", line.replace(str(args.out), "OUT")[:160]))  # fmt: skip
        errors = caption_errors_path(manifest)
        print(f"\nerrors file of the last run: {errors} ({len(errors.read_text().splitlines())} clips listed)\n")
        width = max(len(r[0]) for r in rows)
        for r in rows:
            print(f"{r[0]:<{width}} | {r[1]} | {r[2]}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
