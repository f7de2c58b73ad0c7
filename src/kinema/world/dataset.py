"""Write a Kinema World dataset: varied clips, their ground truth and a manifest.

    write_dataset("data/world", count=1000, seed=0)

    data/world/clip_000000.mp4     H.264 video (kinema.video.write_video)
    data/world/clip_000000.json    {"prompt", "caption", "spec", "truth"} (see render.py)
    data/world/manifest.jsonl      one row a clip: path, truth, caption, prompt, fps, frames,
                                   width, height, seed (paths relative to the manifest's folder)

Clip i depends only on (seed, i): its scene (`random_spec`), size (short side in
[min_side, max_side], an aspect among `aspects`, both sides rounded to `multiple`), duration in
[min_seconds, max_seconds], fps among `fps_choices`, and render seed are drawn from
`np.random.default_rng([seed, i])`. Writing is resumable: a clip whose video and JSON both exist
and match its plan is kept, so an interrupted run picks up where it stopped, and a larger
`count` adds clips. Each file is written atomically; the manifest is rewritten at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kinema.errors import KinemaError
from kinema.world.render import MAX_SIDE, MIN_SIDE, random_spec, render, single_spec
from kinema.world.spec import SceneSpec

ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "16:9": (16, 9), "9:16": (9, 16), "2:1": (2, 1)}  # fmt: skip
FPS_CHOICES = (8, 10, 12, 15, 16, 20, 24)


def clip_plan(
    index: int,
    seed: int = 0,
    min_side: int = 64,
    max_side: int = 256,
    min_seconds: float = 1.0,
    max_seconds: float = 6.0,
    fps_choices: tuple[float, ...] = FPS_CHOICES,
    aspects: tuple[str, ...] = tuple(ASPECTS),
    multiple: int = 16,
    single_prob: float = 0.0,
) -> dict:
    """What clip `index` of the dataset `seed` is: spec, width, height, seconds, fps, seed.

    single_prob: the share of clips whose scene is a plain one-object scene (`single_spec`, drawn
    from a stream of its own, so that 0 gives the same dataset as before and sizes do not move).
    """
    rng = np.random.default_rng([seed, index])
    spec = random_spec(rng)
    if single_prob > 0:
        own = np.random.default_rng([seed, index, 3])
        if own.random() < single_prob:
            spec = single_spec(own)
    a, b = ASPECTS[aspects[int(rng.integers(len(aspects)))]]
    short = float(rng.integers(min_side, max_side + 1))
    w, h = (short * a / b, short) if a >= b else (short, short * b / a)

    def snap(v: float) -> int:
        return int(min(max(round(v / multiple) * multiple, multiple, MIN_SIDE), MAX_SIDE))

    return dict(
        spec=spec,
        width=snap(w),
        height=snap(h),
        seconds=round(float(rng.uniform(min_seconds, max_seconds)), 3),
        fps=float(fps_choices[int(rng.integers(len(fps_choices)))]),
        seed=int(rng.integers(2**31)),
    )


def write_dataset(
    out_dir: str | os.PathLike,
    count: int,
    seed: int = 0,
    min_side: int = 64,
    max_side: int = 256,
    min_seconds: float = 1.0,
    max_seconds: float = 6.0,
    fps_choices: tuple[float, ...] = FPS_CHOICES,
    aspects: tuple[str, ...] = tuple(ASPECTS),
    multiple: int = 16,
    progress: bool = True,
) -> Path:
    """Render `count` clips into `out_dir` (see the module docstring); returns the manifest's path."""
    _check(count, seed, min_side, max_side, min_seconds, max_seconds, fps_choices, aspects, multiple)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    knobs = dict(seed=seed, min_side=min_side, max_side=max_side, min_seconds=min_seconds, max_seconds=max_seconds,
                 fps_choices=tuple(fps_choices), aspects=tuple(aspects), multiple=multiple)  # fmt: skip
    rows = []
    for i in tqdm(range(count), desc="kinema world", unit="clip", disable=not progress):
        plan = clip_plan(i, **knobs)
        video, record = out / f"clip_{i:06d}.mp4", out / f"clip_{i:06d}.json"
        row = _existing_row(video, record, plan)
        if row is None:  # the JSON is written after the video: both present means complete
            clip = render(plan["spec"], plan["width"], plan["height"], plan["seconds"], plan["fps"], plan["seed"])
            clip.save(video)
            row = _row(video, record, clip.record())
        rows.append(row)
    manifest = out / "manifest.jsonl"
    _write_atomic(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _row(video: Path, record: Path, doc: dict) -> dict:
    t = doc["truth"]
    return dict(path=video.name, truth=record.name, caption=doc["caption"], prompt=doc["prompt"], fps=t["fps"],
                frames=t["frames"], width=t["width"], height=t["height"], seed=t["seed"])  # fmt: skip


def _existing_row(video: Path, record: Path, plan: dict) -> dict | None:
    """The manifest row of a clip already on disk that matches `plan`, else None."""
    if not (video.exists() and record.exists()):
        return None
    try:
        doc = json.loads(record.read_text())
        t = doc["truth"]
        frames = max(1, round(plan["seconds"] * plan["fps"]))
        same = (t["width"], t["height"], t["fps"], t["frames"], t["seed"]) == (
            plan["width"], plan["height"], plan["fps"], frames, plan["seed"]
        ) and SceneSpec.from_dict(doc["spec"]) == plan["spec"]  # fmt: skip
        return _row(video, record, doc) if same else None
    except (ValueError, KeyError, TypeError, KinemaError):
        return None  # damaged: render it again


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check(count, seed, min_side, max_side, min_seconds, max_seconds, fps_choices, aspects, multiple) -> None:
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(count) or count < 0:
        raise KinemaError(f"count must be a whole number >= 0; got {count!r}")
    if not whole(seed) or seed < 0:
        raise KinemaError(f"seed must be a whole number >= 0; got {seed!r}")
    if not whole(multiple) or not 1 <= multiple <= 256:
        raise KinemaError(f"multiple must be a whole number from 1 to 256; got {multiple!r}")
    if not (whole(min_side) and whole(max_side) and MIN_SIDE <= min_side <= max_side <= MAX_SIDE):
        raise KinemaError(f"need {MIN_SIDE} <= min_side <= max_side <= {MAX_SIDE}; got {min_side!r}, {max_side!r}")
    if not 0 < min_seconds <= max_seconds < np.inf:
        raise KinemaError(f"need 0 < min_seconds <= max_seconds; got {min_seconds!r}, {max_seconds!r}")
    if not fps_choices or not all(0 < f < np.inf for f in fps_choices):
        raise KinemaError(f"fps_choices must be positive numbers; got {fps_choices!r}")
    unknown = [a for a in aspects if a not in ASPECTS]
    if not aspects or unknown:
        raise KinemaError(f"unknown aspect {unknown or aspects!r}; known: {', '.join(ASPECTS)}")
