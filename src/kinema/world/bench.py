"""How fast Kinema World renders: frames per second on one thread, per frame size.

    rows = bench_world()        # [{"size": "64x64", "frames_per_s": ..., ...}, ...]

Each row times `render` end to end (scene planning, physics, drawing, ground truth) on one
thread in this process: numpy's element-wise kernels are single-threaded and no pool is used.
The best of `repeats` runs is reported, after one small warm-up render (imports, caches).
"""

from __future__ import annotations

import time

from kinema.errors import KinemaError
from kinema.world.render import render
from kinema.world.spec import BrushSpec, ObjectSpec, SceneSpec

# A typical scene: three moving objects (one shatters), the post, a pan with parallax, a brush.
BENCH_SPEC = SceneSpec(
    objects=(
        ObjectSpec("red", "medium", "ball", "roll", "right"),
        ObjectSpec("blue", "small", "square", "slide", "left"),
        ObjectSpec("yellow", "medium", "star", "shatter"),
    ),
    camera="pan right",
    occluder=True,
    brush=BrushSpec("magenta", "wave"),
)


def bench_world(
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (256, 256), (1280, 720)),
    frames: int = 48,
    repeats: int = 3,
    fps: float = 12.0,
    seed: int = 0,
    spec: SceneSpec = BENCH_SPEC,
) -> list[dict]:
    """Render `spec` at each (width, height) `repeats` times; one row per size, with the best
    time: {size, frames, best_s, frames_per_s, ms_per_frame, megapixels_per_s}."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise KinemaError(f"frames must be a whole number >= 1; got {frames!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise KinemaError(f"repeats must be a whole number >= 1; got {repeats!r}")
    render(spec, 64, 64, fps=fps, frames=2, seed=seed)  # warm-up
    rows = []
    for width, height in sizes:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            clip = render(spec, width, height, fps=fps, frames=frames, seed=seed)
            times.append(time.perf_counter() - start)
            del clip
        best = min(times)
        rows.append(
            dict(
                size=f"{width}x{height}",
                frames=frames,
                best_s=round(best, 4),
                frames_per_s=round(frames / best, 1),
                ms_per_frame=round(1000 * best / frames, 3),
                megapixels_per_s=round(frames * width * height / best / 1e6, 1),
            )
        )
    return rows
