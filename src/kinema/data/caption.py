"""Re-captioning: a detailed caption for every clip of a manifest, from a vision-language model.

    chat = kinema.llm.connect("openai:http://127.0.0.1:8000/v1")      # or "hf:DIR"
    result = caption_manifest("footage/manifest.jsonl", chat, CaptionOptions(frames=8))

The report trains on videos re-captioned by a highly descriptive captioner; this is that step for
a folder of one's own clips (`kinema data caption`). For each clip without a caption (or every
clip, with overwrite), `frames` frames spread evenly over it, their longer side shrunk to `size`,
are sent with the caption prompt (kinema/prompts/caption.txt, or one's own file: {count},
{seconds}, {width}, {height} and {fps} are filled in per clip). The answer goes into the manifest
("caption", and "captioned_by": the model) and into a sidecar beside the clip (clip.txt, which
`kinema data index` reads back).

Nothing is lost to a crash, `kill -9` or Ctrl-C: each caption is appended to a journal
(manifest.captions.jsonl) the moment it arrives, and the manifest is rewritten atomically (a
temporary file renamed over it) every few seconds and at the end. A rerun applies the journal
and goes on with the clips still to do; the journal is removed when a run completes. A clip that
fails after the retries (unreadable, server error, empty or over-long answer) is listed with the
reason in manifest.caption-errors.jsonl and left uncaptioned for the next run; it never stops the
others. Only `give_up` requests failing in a row (a server that is down, a model name it does not
know) stop the run, with what was made saved.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from kinema.data.manifest import write_jsonl
from kinema.errors import KinemaError

SAVE_EVERY = 5.0  # seconds between two rewrites of the manifest during a run


@dataclass(frozen=True)
class CaptionOptions:
    frames: int = 8  # frames sent a clip (1 for a still image)
    size: int = 448  # longer side of each frame sent, in pixels (never enlarged)
    prompt: str | os.PathLike | None = None  # caption prompt file (default: kinema/prompts/caption.txt)
    overwrite: bool = False  # caption clips that already have one, too
    concurrency: int = 4  # requests in flight at once
    max_tokens: int = 300  # the longest answer asked for
    max_chars: int = 2000  # a longer answer is an error, not a caption
    sidecars: bool = True  # write clip.txt beside each clip
    give_up: int = 10  # stop the run when this many requests in a row failed (a server down, a wrong model)

    def check(self) -> None:
        for name in ("frames", "size", "concurrency", "max_tokens", "max_chars", "give_up"):
            if int(getattr(self, name)) < 1:
                raise KinemaError(f"{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")


@dataclass
class CaptionResult:
    manifest: Path
    errors_file: Path
    captioned: int = 0  # clips captioned by this run
    resumed: int = 0  # captions of an interrupted run, taken from its journal
    skipped: int = 0  # clips that had a caption (or a sidecar with one) and were left alone
    failed: list[dict] = field(default_factory=list)  # {"path", "error"}
    seconds: float = 0.0
    interrupted: bool = False
    failed_in_a_row: int = 0  # requests (not unreadable clips) that failed since the last caption

    @property
    def clips_per_second(self) -> float:
        return self.captioned / self.seconds if self.seconds > 0 else 0.0


def journal_path(manifest: str | os.PathLike) -> Path:
    m = Path(manifest)
    return m.with_name(m.stem + ".captions.jsonl")


def caption_errors_path(manifest: str | os.PathLike) -> Path:
    m = Path(manifest)
    return m.with_name(m.stem + ".caption-errors.jsonl")


def read_prompt_template(path: str | os.PathLike | None) -> str:
    if path is None:
        return (resources.files("kinema") / "prompts" / "caption.txt").read_text(encoding="utf-8")
    p = Path(path)
    if not p.is_file():
        raise KinemaError(f"--prompt {p}: no such file")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise KinemaError(f"--prompt {p} is empty")
    return text


def fill_prompt(template: str, row: dict, count: int) -> str:
    """The template with {count}, {seconds}, {width}, {height} and {fps} filled from the row;
    other braces are left as they are."""
    fps = float(row.get("fps") or 0)
    frames = int(row.get("frames") or 1)
    fields = {"count": count, "width": row.get("width", "?"), "height": row.get("height", "?"),
              "fps": f"{fps:g}", "seconds": f"{frames / fps:.1f}" if fps > 0 else "?"}  # fmt: skip
    return re.sub(r"\{(count|seconds|width|height|fps)\}", lambda m: str(fields[m.group(1)]), template)


def sample_frames(path: str | os.PathLike, n_frames: int, count: int, size: int) -> np.ndarray:
    """`count` frames spread over the clip, the longer side shrunk to `size`: uint8 (K, H, W, 3)."""
    from PIL import Image

    from kinema.video import read_frames_at, spread_indices

    frames = read_frames_at(path, spread_indices(max(1, n_frames), count))
    H, W = frames.shape[1:3]
    if max(H, W) <= size:
        return frames
    s = size / max(H, W)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in frames])


def read_rows(manifest: Path) -> list[dict]:
    """The manifest's rows as written (paths relative to its folder, kept so for the rewrite)."""
    from kinema.data.manifest import read_manifest

    absolute = read_manifest(manifest)  # checks every row, names a bad line
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row, a in zip(rows, absolute):
        row["_file"] = a["path"]
        row.setdefault("caption", "")
    return rows


def read_journal(path: Path) -> dict[str, dict]:
    """Captions an interrupted run recorded, by manifest path; a torn last line is ignored."""
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                done[str(entry["path"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return done


def write_sidecar(media: Path, caption: str) -> None:
    side = media.with_suffix(".txt")
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(caption + "\n", encoding="utf-8")
    os.replace(tmp, side)


def caption_manifest(manifest: str | os.PathLike, chat, options: CaptionOptions = CaptionOptions(),
                     progress: bool = True, log=print) -> CaptionResult:  # fmt: skip
    """Caption the clips of a manifest (see the module doc). Returns what was done; a Ctrl-C
    saves everything first, then raises KeyboardInterrupt (result.interrupted is set on it)."""
    from tqdm import tqdm

    options.check()
    manifest = Path(manifest)
    rows = read_rows(manifest)
    template = read_prompt_template(options.prompt)
    result = CaptionResult(manifest, caption_errors_path(manifest))
    journal_file = journal_path(manifest)

    journal = read_journal(journal_file)
    todo = []
    for row in rows:
        entry = journal.get(row["path"])
        if entry is not None:  # done by an interrupted run
            row["caption"], row["captioned_by"] = entry["caption"], entry.get("captioned_by", "")
            result.resumed += 1
        elif options.overwrite or not str(row["caption"]).strip():
            side = "" if options.overwrite else _sidecar_caption(Path(row["_file"]))
            if side:  # a sidecar written since the index: read, not asked again
                row["caption"] = side
                result.skipped += 1
            else:
                todo.append(row)
        else:
            result.skipped += 1
    if result.resumed:
        log(f"resuming: {result.resumed} captions from the interrupted run's journal {journal_file.name}")
    _save(manifest, rows)

    def work(row: dict) -> tuple[str, str]:
        frames = sample_frames(row["_file"], int(row.get("frames") or 1), options.frames, options.size)
        from kinema.llm import check_answer, user

        reply = chat([user(fill_prompt(template, row, len(frames)), list(frames))], max_tokens=options.max_tokens)
        return check_answer(reply, options.max_chars), reply.model

    bar = tqdm(total=len(todo), desc="caption", unit="clip", disable=not progress, dynamic_ncols=True)
    start = last_save = time.perf_counter()
    pending: dict[Future, dict] = {}
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=options.concurrency)
    with open(journal_file, "a", encoding="utf-8") as jf:
        try:
            while True:
                while len(pending) < 2 * options.concurrency:  # submitted lazily: memory stays flat
                    row = next(queue, None)
                    if row is None:
                        break
                    pending[pool.submit(work, row)] = row
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    _record(fut, pending.pop(fut), result, jf, options, bar)
                if result.failed_in_a_row >= options.give_up:
                    break
                if time.perf_counter() - last_save > SAVE_EVERY:
                    _save(manifest, rows)
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            result.interrupted = True
            bar.write("interrupted: saving the captions made so far (requests in flight are waited for)")
        finally:
            # after a Ctrl-C or giving up: what has not started never will; what has is recorded
            for fut in pending:
                fut.cancel()
            for fut, row in pending.items():
                if not fut.cancelled():
                    _record(fut, row, result, jf, options, bar)
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            result.seconds = time.perf_counter() - start
            _save(manifest, rows)
            write_jsonl(result.errors_file, result.failed)
    if result.interrupted:
        raise KeyboardInterrupt
    if result.failed_in_a_row >= options.give_up:
        from kinema.llm import LLMError

        raise LLMError(f"stopped: {result.failed_in_a_row} requests in a row failed, the last with: "
                       f"{result.failed[-1]['error']}. The {result.captioned} captions made are saved; the failures are "
                       f"listed in {result.errors_file}; rerun to resume")  # fmt: skip
    journal_file.unlink(missing_ok=True)  # the manifest holds it all
    return result


def _sidecar_caption(media: Path) -> str:
    """The caption of a sidecar written since the index (an unreadable one: none)."""
    from kinema.data.manifest import read_caption

    try:
        return read_caption(media)
    except KinemaError:
        return ""


def _record(fut: Future, row: dict, result: CaptionResult, journal, options: CaptionOptions, bar) -> None:
    """One finished clip: into the row, the journal (flushed to disk) and its sidecar; or a failure."""
    from kinema.llm import LLMError

    try:
        caption, model = fut.result()
    except (KinemaError, OSError, ValueError, RuntimeError) as e:  # a bad clip or answer: listed, not fatal
        result.failed.append({"path": row["path"], "error": str(e)})
        result.failed_in_a_row += isinstance(e, LLMError)
        bar.write(f"failed {row['path']}: {e}")
        bar.update(1)
        bar.set_postfix(failed=len(result.failed))
        return
    row["caption"], row["captioned_by"] = caption, model
    result.failed_in_a_row = 0
    journal.write(json.dumps({"path": row["path"], "caption": caption, "captioned_by": model}) + "\n")
    journal.flush()
    os.fsync(journal.fileno())
    if options.sidecars:
        try:
            write_sidecar(Path(row["_file"]), caption)
        except OSError as e:
            bar.write(f"note: no sidecar for {row['path']} ({e}); the manifest has its caption")
    result.captioned += 1
    bar.update(1)


def _save(manifest: Path, rows: list[dict]) -> None:
    write_jsonl(manifest, [{k: v for k, v in row.items() if k != "_file"} for row in rows])
