"""The manifest: one JSON row a clip of a folder of videos and images.

    index_folder("footage/", "footage/manifest.jsonl")

    footage/manifest.jsonl          {"path", "caption", "fps", "frames", "width", "height"} a row;
                                    paths relative to the manifest's folder
    footage/manifest.errors.jsonl   {"path", "error"} a row: files that could not be read, skipped

Captions come from a sidecar beside the file with the same stem: `clip.txt` (its text) or
`clip.json` (its "caption" field, as Kinema World writes it). No sidecar: an empty caption, to be
filled by `kinema data caption`. A file that cannot be read is listed with the reason in the
errors file and skipped: one bad file never stops an index of a million. Hidden files and
folders (names starting with ".", e.g. half-written temporaries) are not scanned.

A Kinema World dataset's own manifest.jsonl (`kinema world dataset`) has the same columns and
can be used directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from kinema.errors import KinemaError
from kinema.video import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif", ".apng", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}  # fmt: skip
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
COLUMNS = ("path", "caption", "fps", "frames", "width", "height")


@dataclass(frozen=True)
class IndexResult:
    manifest: Path
    errors_file: Path
    rows: int
    errors: list[dict]


def errors_path(manifest: str | os.PathLike) -> Path:
    """The companion file listing what an index skipped: manifest.jsonl -> manifest.errors.jsonl."""
    m = Path(manifest)
    return m.with_name(m.stem + ".errors.jsonl")


def find_media(folder: str | os.PathLike) -> list[Path]:
    """Video and image files under `folder`, sorted, skipping hidden files and folders."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and p.suffix.lower() in MEDIA_SUFFIXES:
                found.append(p)
    return sorted(found)


def read_caption(media: Path) -> str:
    """The caption in a sidecar beside `media` (.txt text, or .json "caption"), else ""."""
    txt, js = media.with_suffix(".txt"), media.with_suffix(".json")
    if txt.is_file():
        return txt.read_text(encoding="utf-8", errors="replace").strip()
    if js.is_file():
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise KinemaError(f"caption sidecar {js.name} is not valid JSON ({e})") from None
        caption = doc.get("caption", "") if isinstance(doc, dict) else ""
        return caption.strip() if isinstance(caption, str) else ""
    return ""


def index_folder(folder: str | os.PathLike, out: str | os.PathLike, progress: bool = True) -> IndexResult:
    """Probe every video and image under `folder`; write the manifest and its errors file."""
    from tqdm import tqdm

    from kinema.video import probe

    root = Path(folder)
    if not root.is_dir():
        raise KinemaError(f"{root} is not a folder; give the folder of videos and images to index")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = find_media(root)
    rows, errors = [], []
    bar = tqdm(files, desc="index", unit="file", disable=not progress, dynamic_ncols=True)
    for path in bar:
        rel = Path(os.path.relpath(path.resolve(), out.parent.resolve())).as_posix()
        try:
            info = probe(path)
            caption = read_caption(path)
        except KinemaError as e:  # VideoError included: unreadable, truncated, no video stream...
            errors.append({"path": rel, "error": str(e)})
            bar.write(f"skipped {path}: {e}")
            continue
        except (OSError, ValueError, RuntimeError) as e:  # anything else a broken file can raise
            errors.append({"path": rel, "error": f"{type(e).__name__}: {e}"})
            bar.write(f"skipped {path}: {type(e).__name__}: {e}")
            continue
        rows.append(dict(path=rel, caption=caption, fps=info.fps, frames=info.frames,
                         width=info.width, height=info.height))  # fmt: skip
    bar.close()
    err_file = errors_path(out)
    write_jsonl(out, rows)
    write_jsonl(err_file, errors)
    return IndexResult(out, err_file, len(rows), errors)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest, with "path" made absolute (relative paths are from its folder)."""
    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"no manifest at {path}; make one with `kinema data index FOLDER --out {path}`")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["path"] = str((path.parent / row["path"]).resolve())
        except (ValueError, KeyError, TypeError) as e:
            raise KinemaError(f"{path}:{n} is not a manifest row with a 'path' ({e})") from None
        row.setdefault("caption", "")
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON lines, atomically (a temporary file renamed over the target)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)
