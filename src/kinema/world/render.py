"""Kinema World renderer: a `SceneSpec` -> RGB frames and their ground truth.

    clip = render(spec, width=320, height=180, seconds=4.0, fps=12.0, seed=0)
    clip.frames   uint8 (T, H, W, 3) RGB      clip.truth   JSON-serialisable ground truth
    clip.prompt / clip.caption                from kinema.world.text

The physics (and the meaning of every unit) is in `physics.py`; this file draws it. What the
spec leaves open comes from `np.random.default_rng(seed)`, so (spec, size, duration, fps, seed)
gives the same bytes every time, and the same scene at two sizes of one aspect shows the same
motion scaled.

Layers, back to front:
    sky | far mountains, near hills (1-D height profiles scrolled at LAYER_RATES of the camera)
    | ground (the bottom ~22%) | brush stroke (screen space: painted on the view, it never
    moves or shrinks; the tip is a disc 1.6x the stroke's width) | objects (world space) | the
    wooden post (screen space: fixed in the middle of the frame, in front of the objects).
Objects are flat fills of their exact palette colour with a ~1 px antialiased rim (coverage from
a signed distance); a rolling ball carries a darker spot that turns with it. Mountains and hills
take shades derived from the sky and ground, chosen far from every object colour.

Ground truth (`clip.truth`, pixels, y down, angles counter-clockwise as seen):
    width, height, fps, frames, seconds, seed, spec
    ground_y                      the ground line
    camera: {motion, x: [..], rates: {far, near, ground}}
           x is the camera offset: screen x = world x - x; a layer moves by rate * x
    occluder: {x0, x1, y0, y1} | None
    brush: {color, rgb, path, radius, tip_radius, x: [..], y: [..], painted: [..]} | None
           x, y: the tip; painted: pixels whose stroke coverage is >= 0.5, never decreasing
    objects: [{id, parent, color, rgb, shape, size, radius, motion, direction,
               x: [..], y: [..], angle: [..], visible: [..], state: [..]}]
Per-frame fields are lists with one entry a frame. x, y is the centre; radius is the bounding
circle (collisions), every shape lies inside it. `visible` is the fraction of the object's area
in the frame and not behind the post (other objects are not counted). `state` is "visible";
"occluded" when half or more of it is behind the post; "out_of_frame" when less than half of it
is in the frame; "shattered" after a shatter object broke (x, y, angle are then null). Shards
are objects of their own: `parent` = the id of the object that broke, its colour, shape and
motion "shard", size null, state "absent" (null x, y, angle) before they exist.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError
from kinema.world import physics
from kinema.world.physics import LAYER_RATES, POLYGONS, BrushPath, Layout, Track, half_planes, star_lines
from kinema.world.spec import (
    BRUSH_COLORS,
    BRUSH_PATHS,
    COLORS,
    DIRECTED_MOTIONS,
    DIRECTIONS,
    GROUND_COLORS,
    MOTIONS,
    OCCLUDER_COLOR,
    SHAPES,
    SIZES,
    SKY_COLORS,
    BrushSpec,
    ObjectSpec,
    SceneSpec,
)

MIN_SIDE, MAX_SIDE = 16, 2048
MAX_BYTES = 4 << 30  # one clip in memory
TIP_SCALE = 1.6  # the brush tip's radius / the stroke's radius


@dataclass
class Clip:
    frames: np.ndarray = field(repr=False)  # (T, H, W, 3) uint8 RGB
    fps: float
    spec: SceneSpec
    truth: dict = field(repr=False)
    prompt: str = ""
    caption: str = ""

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    def record(self) -> dict:
        """What the JSON beside a saved clip holds: prompt, caption, spec, truth."""
        return dict(prompt=self.prompt, caption=self.caption, spec=self.spec.to_dict(), truth=self.truth)

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the video (format from the extension, see kinema.video.write_video) and, beside
        it with the suffix .json, `record()`; both atomically. Returns (video path, json path)."""
        from kinema.video import write_video

        video = write_video(path, self.frames, self.fps)
        record = Path(video).with_suffix(".json")
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.record(), separators=(",", ":")))
        os.replace(tmp, record)
        return Path(video), record


def render(
    spec: SceneSpec,
    width: int = 320,
    height: int = 180,
    seconds: float = 4.0,
    fps: float = 12.0,
    seed: int = 0,
    frames: int | None = None,
) -> Clip:
    """Render `spec` as T = frames or max(1, round(seconds * fps)) frames of width x height."""
    T = _check(spec, width, height, seconds, fps, seed, frames)
    W, H = int(width), int(height)
    fps = float(fps)
    times = np.arange(T) / fps
    rng = np.random.default_rng(int(seed))
    layout = physics.plan(spec, W / H, T / fps, rng)
    tracks = physics.simulate(layout, times)
    out = np.empty((T, H, W, 3), dtype=np.uint8)
    truth = _Painter(spec, layout, tracks, W, H, fps, times).paint(out)
    truth.update(seed=int(seed), spec=spec.to_dict())
    prompt, caption = _words(spec)
    return Clip(frames=out, fps=fps, spec=spec, truth=truth, prompt=prompt, caption=caption)


def _check(spec, width, height, seconds, fps, seed, frames) -> int:
    if not isinstance(spec, SceneSpec):
        raise KinemaError(f"render needs a SceneSpec, got {type(spec).__name__}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not MIN_SIDE <= v <= MAX_SIDE:
            raise KinemaError(f"{name} must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}; got {v!r}")
    for name, v in (("fps", fps), ("seconds", seconds)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 < v < math.inf:
            raise KinemaError(f"{name} must be a positive number; got {v!r}")
    if frames is None:
        T = max(1, round(seconds * fps))
    else:
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise KinemaError(f"frames must be a whole number >= 1; got {frames!r}")
        T = int(frames)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise KinemaError(f"seed must be a whole number >= 0; got {seed!r}")
    size = T * int(width) * int(height) * 3
    if size > MAX_BYTES:
        raise KinemaError(
            f"{T} frames of {width}x{height} need {size / 2**30:.1f} GiB; "
            f"render at most {MAX_BYTES >> 30} GiB: fewer frames, a lower fps or a smaller size"
        )
    return T


def _words(spec: SceneSpec) -> tuple[str, str]:
    """(short prompt, caption), or empty strings while kinema.world.text does not exist."""
    try:
        from kinema.world import text
    except ModuleNotFoundError as e:
        if e.name != "kinema.world.text":
            raise
        return "", ""
    return text.short_prompt(spec), text.caption(spec)


# ---------------------------------------------------------------- random scenes


def random_spec(rng: np.random.Generator) -> SceneSpec:
    """A varied valid scene: 1-3 objects mostly (sometimes 4) of distinct colours; an occluder,
    a brush (of yet another colour) and a camera pan each about a third of the time."""
    n = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
    colors = [str(c) for c in rng.permutation(list(COLORS))]
    objects = []
    for color in colors[:n]:
        motion = str(rng.choice(MOTIONS))
        shape = "ball" if motion == "roll" else str(rng.choice(SHAPES))
        direction = str(rng.choice(DIRECTIONS)) if motion in DIRECTED_MOTIONS else None
        objects.append(ObjectSpec(color, str(rng.choice(list(SIZES))), shape, motion, direction))
    sky = str(rng.choice(list(SKY_COLORS)))
    ground = str(rng.choice(list(GROUND_COLORS)))
    camera = str(rng.choice(["static", "pan left", "pan right"], p=[0.6, 0.2, 0.2]))
    occluder = bool(rng.random() < 0.35)
    brush = None
    if rng.random() < 0.35:
        brush = BrushSpec(colors[n] if colors[n] in BRUSH_COLORS else "red", str(rng.choice(BRUSH_PATHS)))
    if occluder and camera == "static" and all(o.motion == "static" for o in objects):
        o = objects[0]  # something must pass behind the post
        objects[0] = ObjectSpec(o.color, o.size, o.shape, "slide", str(rng.choice(DIRECTIONS)))
    return SceneSpec(tuple(objects), sky=sky, ground=ground, camera=camera, occluder=occluder, brush=brush)


def single_spec(rng: np.random.Generator) -> SceneSpec:
    """A plain scene: one object (any colour, size, shape and motion) under a still camera, with no
    post and no brush; the curriculum scene of a small model, whose caption names one thing to draw."""
    motion = str(rng.choice(MOTIONS))
    shape = "ball" if motion == "roll" else str(rng.choice(SHAPES))
    direction = str(rng.choice(DIRECTIONS)) if motion in DIRECTED_MOTIONS else None
    obj = ObjectSpec(str(rng.choice(list(COLORS))), str(rng.choice(list(SIZES))), shape, motion, direction)
    return SceneSpec((obj,), sky=str(rng.choice(list(SKY_COLORS))), ground=str(rng.choice(list(GROUND_COLORS))))


# ---------------------------------------------------------------- colours


def _mix(a, b, t: float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a + (np.asarray(b, dtype=np.float64) - a) * t


@functools.cache
def layer_colors(sky: str, ground: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(far mountains, near hills) shades for a sky and a ground: hazy mixes of the two, pushed
    toward a few muted tones, picked to stay far from every object colour, the post, the sky,
    the ground and each other."""
    s, g = np.array(SKY_COLORS[sky], float), np.array(GROUND_COLORS[ground], float)
    tones = [(150, 140, 170), (100, 110, 140), (128, 128, 128), (140, 110, 130), (90, 120, 120), (60, 60, 70), (200, 200, 210)]  # fmt: skip
    avoid = np.array([*COLORS.values(), OCCLUDER_COLOR], float)
    fars = np.array([_mix(_mix(s, g, p), t, q) for p in (0.2, 0.35, 0.5) for t in tones for q in (0.2, 0.4)])
    nears = np.array([_mix(_mix(g, s, p), t, q) for p in (0.0, 0.2) for t in tones for q in (0.2, 0.4, 0.6)])

    def gap(c, others):  # (n, 3), (m, 3) -> (n,) distance to the closest of `others`
        return np.linalg.norm(c[:, None] - others[None], axis=-1).min(axis=1)

    score_far = np.minimum(gap(fars, avoid), gap(fars, s[None]))
    score_near = np.minimum.reduce([gap(nears, avoid), gap(nears, g[None]), gap(nears, s[None])])
    pair = np.linalg.norm(fars[:, None] - nears[None], axis=-1)
    score = np.minimum(np.minimum(score_far[:, None], score_near[None]), pair)
    haze = gap(fars, s[None])[:, None] < gap(nears, s[None])[None]  # the far layer nearer the sky
    score = np.where(haze, score, score - 1000.0)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    far, near = (tuple(int(v) for v in np.rint(c)) for c in (fars[i], nears[j]))
    return far, near


def _mark_color(rgb) -> np.ndarray:
    """The turning spot on a rolling ball: darker, or lighter on a dark ball."""
    rgb = np.asarray(rgb, float)
    return np.rint(rgb * 0.55 if rgb.mean() > 60 else _mix(rgb, (255, 255, 255), 0.45))


# ---------------------------------------------------------------- drawing primitives
# Pixel (i, j) covers [j, j + 1) x [i, i + 1); its centre is (j + 0.5, i + 0.5). Coverage of a
# shape = clip(0.5 - signed distance, 0, 1): a ~1 px antialiased rim, exact colour inside.


def _blend(region: np.ndarray, cov: np.ndarray, rgb_u8: np.ndarray, rgb_f: np.ndarray) -> None:
    """Paint `rgb` over `region` (h, w, 3) uint8 in place with coverage `cov` (h, w) float32."""
    if cov.size <= 2048:  # small: blend every pixel, fewer calls (cov = 1 gives rgb exactly)
        under = region.astype(np.float32)
        under += cov[..., None] * (rgb_f - under)
        under += 0.5
        region[...] = under
        return
    np.copyto(region, rgb_u8, where=(cov >= 1.0)[..., None])
    ys, xs = np.nonzero((cov > 0.0) & (cov < 1.0))
    if ys.size:
        a = cov[ys, xs][:, None]
        under = region[ys, xs].astype(np.float32)
        region[ys, xs] = (under + a * (rgb_f - under) + 0.5).astype(np.uint8)


def _coverage_from_sd(sd: np.ndarray) -> np.ndarray:
    np.subtract(0.5, sd, out=sd)
    return np.clip(sd, 0.0, 1.0, out=sd)


class _Shape:
    """One object's look: a signed distance in pixels around a centre, at any angle."""

    def __init__(self, shape: str, radius_px: float, vertices: np.ndarray | None = None):
        self.shape, self.R, self.vertices = shape, float(radius_px), vertices
        if shape in POLYGONS or shape == "shard":
            verts = POLYGONS[shape] if shape in POLYGONS else vertices
            self.normals, self.offsets = half_planes(verts)
        elif shape == "star":
            self.normals, self.offsets = star_lines()
        if shape != "ball":
            self.offsets_px = (self.offsets * self.R).astype(np.float32)
            self.normals32 = self.normals.astype(np.float32)

    def sd(self, px: np.ndarray, py: np.ndarray, angle: float) -> np.ndarray:
        """Signed distance (h, w) float32 at column offsets px (w,) and row offsets py (h,)."""
        if self.shape == "ball":
            d = np.sqrt((px * px)[None, :] + (py * py)[:, None])
            d -= np.float32(self.R)
            return d
        n = self.normals32
        if angle != 0.0:
            c, s = math.cos(angle), math.sin(angle)
            n = self.normals
            n = np.stack([n[:, 0] * c - n[:, 1] * s, n[:, 0] * s + n[:, 1] * c], axis=1).astype(np.float32)
        # n . (px, -py) - d: the normals are in y-up coordinates, rows go down
        lines = [((nx * px)[None, :], (-ny * py - d)[:, None]) for (nx, ny), d in zip(n, self.offsets_px)]
        if self.shape != "star":
            out = None
            for a, b in lines:
                s_k = a + b
                out = s_k if out is None else np.maximum(out, s_k, out=out)
            return out
        # a pentagram is the set of points inside at least 4 of its 5 lines: the second
        # largest line distance is <= 0 there, and is the distance to the nearest edge
        first = lines[0][0] + lines[0][1]
        second = np.full_like(first, -np.inf)
        tmp = np.empty_like(first)
        for a, b in lines[1:]:
            s_k = a + b
            np.minimum(first, s_k, out=tmp)
            np.maximum(second, tmp, out=second)
            np.maximum(first, s_k, out=first)
        return second

    def draw(self, frame, cx, cy, angle, rgb_u8, rgb_f, grid) -> None:
        H, W = frame.shape[:2]
        R = self.R * 1.06 + 1.0
        x0, x1 = max(int(cx - R), 0), min(int(cx + R) + 2, W)
        y0, y1 = max(int(cy - R), 0), min(int(cy + R) + 2, H)
        if x0 >= x1 or y0 >= y1:
            return
        px = grid[x0:x1] - np.float32(cx)
        py = grid[y0:y1] - np.float32(cy)
        cov = _coverage_from_sd(self.sd(px, py, angle))
        _blend(frame[y0:y1, x0:x1], cov, rgb_u8, rgb_f)

    def samples(self, n: int = 24) -> np.ndarray:
        """Points (S, 2) inside the shape at angle 0, in units of its radius, y down: used to
        measure the fraction of the object that is in the frame or behind the post."""
        probe = _Shape(self.shape, n / 2, self.vertices)
        c = np.arange(n, dtype=np.float32) + 0.5 - n / 2
        inside = probe.sd(c, c, 0.0) <= 0.0
        ys, xs = np.nonzero(inside)
        return np.stack([(xs + 0.5 - n / 2) / (n / 2), (ys + 0.5 - n / 2) / (n / 2)], axis=1)


class _Box:
    """A fixed axis-aligned box (the post): a solid interior and an antialiased rim, precomputed."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, W: int, H: int):
        def cover(a: float, b: float, n: int):
            i0, i1 = max(int(math.floor(a)), 0), min(int(math.ceil(b)), n)
            idx = np.arange(i0, i1)
            return i0, np.clip(np.minimum(idx + 1, b) - np.maximum(idx, a), 0, 1).astype(np.float32)

        bx, cx = cover(x0, x1, W)
        by, cy = cover(y0, y1, H)
        cov = cy[:, None] * cx[None, :]
        full = np.nonzero(cov >= 1.0)
        if full[0].size:  # the interior is a rectangle
            self.inner = (slice(by + full[0].min(), by + full[0].max() + 1), slice(bx + full[1].min(), bx + full[1].max() + 1))
        else:
            self.inner = None
        ys, xs = np.nonzero((cov > 0.0) & (cov < 1.0))
        self.rim = (ys + by, xs + bx)
        self.alpha = cov[ys, xs][:, None]

    def draw(self, frame, rgb_u8, rgb_f) -> None:
        if self.inner is not None:
            frame[self.inner] = rgb_u8
        if self.alpha.size:
            under = frame[self.rim].astype(np.float32)
            frame[self.rim] = (under + self.alpha * (rgb_f - under) + 0.5).astype(np.uint8)


class _Backdrop:
    """Sky, far mountains, near hills and ground for every frame, written straight into it.

    Rows [0, yb0) are sky, [yb0, ys) sky and far mountains only, [ys, yg) solid far mountains
    and near hills (the far layer's tops all lie above ys, the near layer's below), [yg, H)
    ground. With a panning camera each of the two middle bands is cut from a wide strip
    rendered once per quarter-pixel phase of the layer's shift: a frame is four row copies.
    """

    PHASES = 4

    def __init__(self, layout: Layout, sky, ground, layer_rgb, W: int, H: int, cam: np.ndarray):
        self.L, self.W, self.H = layout, W, H
        self.sky, self.layer_rgb = sky, layer_rgb
        far, near = layout.layers
        gy = layout.ground * H
        self.yg = yg = min(int(math.floor(gy)), H - 1)
        self.yb0 = max(int(math.floor((far.base - sum(far.amps)) * H)) - 1, 0)
        self.ys = min(int(math.ceil(far.base * H)), yg)
        self.ground = np.empty((H - yg, W, 3), np.uint8)
        self.ground[:] = ground
        self.ground[0] = np.rint(_mix(layer_rgb[1], ground, min(yg + 1 - gy, 1.0))).astype(np.uint8)
        self.sky_rows = np.empty((self.yb0, W, 3), np.uint8)
        self.sky_rows[:] = sky
        # the near hills never reach above ys: checked, else every frame is drawn in full
        self.split = int(math.floor((near.base - sum(near.amps)) * H)) >= self.ys
        self.static = None
        self.shift = None
        if layout.cam_speed == 0.0 or not self.split:
            if layout.cam_speed == 0.0:
                self.static = np.empty((yg - self.yb0, W, 3), np.uint8)
                self._draw(self.static, self.yb0, layout.layers, np.zeros(2))
        else:
            # per frame and layer: the shift in pixels, rounded to a quarter pixel
            q = np.rint(np.outer(cam * H, [far.rate, near.rate]) * self.PHASES).astype(np.int64)  # (T, 2)
            self.shift = q
            self.base = np.floor_divide(q.min(axis=0), self.PHASES)  # (2,) whole pixels
            self.span = W + int(np.floor_divide(q.max(axis=0), self.PHASES).max() - self.base.min()) + 2
            self.strips: dict[tuple[int, int], np.ndarray] = {}

    def _draw(self, band: np.ndarray, y0: int, layers, offsets: np.ndarray) -> None:
        """Sky, then each layer from its top down, its rim antialiased; column j of `band` shows
        layer x = (j + 0.5 + offsets[i]) / H."""
        band[:] = self.sky
        hb, w = band.shape[:2]
        if hb == 0:
            return
        rows = np.arange(y0, y0 + hb, dtype=np.float32)[:, None]
        cols = np.arange(w)
        centres = np.arange(w, dtype=np.float64) + 0.5
        for layer, rgb, off in zip(layers, self.layer_rgb, offsets):
            top = (layer.top((centres + off) / self.H) * self.H).astype(np.float32)  # (w,)
            np.copyto(band, rgb, where=(rows >= top[None, :])[..., None])
            edge = np.floor(top).astype(np.int64)
            a = (edge + 1 - top).astype(np.float32)
            ok = (edge >= y0) & (edge < y0 + hb) & (a < 1.0)
            r, c, a = edge[ok] - y0, cols[ok], a[ok][:, None]
            under = band[r, c].astype(np.float32)
            band[r, c] = (under + a * (rgb.astype(np.float32) - under) + 0.5).astype(np.uint8)

    def _strip(self, which: int, phase: int) -> np.ndarray:
        key = (which, phase)
        if key not in self.strips:
            y0, y1 = (self.yb0, self.ys) if which == 0 else (self.ys, self.yg)
            strip = np.empty((y1 - y0, self.span, 3), np.uint8)
            off = self.base[which] + phase / self.PHASES
            self._draw(strip, y0, self.L.layers, np.array([off, off]))
            self.strips[key] = strip
        return self.strips[key]

    def draw(self, frame: np.ndarray, k: int, cam: float) -> None:
        frame[: self.yb0] = self.sky_rows
        if self.static is not None:
            frame[self.yb0 : self.yg] = self.static
        elif self.shift is None:  # no split: draw both layers in full
            rates = np.array([layer.rate for layer in self.L.layers])
            self._draw(frame[self.yb0 : self.yg], self.yb0, self.L.layers, rates * cam * self.H)
        else:
            for which, (y0, y1) in enumerate(((self.yb0, self.ys), (self.ys, self.yg))):
                whole, phase = divmod(int(self.shift[k, which]), self.PHASES)
                i = whole - int(self.base[which])
                frame[y0:y1] = self._strip(which, phase)[:, i : i + self.W]
        frame[self.yg :] = self.ground


class _Brush:
    """The stroke, in screen space: a coverage canvas over the rows the path can reach (all of
    them sky), to which each frame adds the capsule from the previous tip to the current one, so
    the painted area never shrinks; the tip is a disc TIP_SCALE times the stroke's radius."""

    def __init__(self, path: BrushPath, color: str, sky: np.ndarray, W: int, H: int, times: np.ndarray, grid):
        self.color, self.path, self.grid = color, path.path, grid
        self.R = path.radius * H  # stroke radius, px
        ymin, ymax = path.y_range()
        self.c0 = max(int(math.floor((ymin - path.radius * TIP_SCALE) * H)) - 1, 0)
        self.c1 = min(int(math.ceil((ymax + path.radius * TIP_SCALE) * H)) + 1, H)
        x, y = path.tip(times)
        self.x, self.y = x * H, y * H  # (T,) tip centre, px
        self.sky = sky.astype(np.float32)
        self.rgb_u8, self.rgb_f = np.array(BRUSH_COLORS[color], np.uint8), np.array(BRUSH_COLORS[color], np.float32)
        self.canvas = np.empty((self.c1 - self.c0, W, 3), np.uint8)
        self.canvas[:] = sky
        self.alpha = np.zeros((self.c1 - self.c0, W), np.float32)
        self.painted = np.zeros(len(times), np.int64)  # pixels with coverage >= 0.5, per frame
        self.total = 0
        self.tip = _Shape("ball", self.R * TIP_SCALE)

    def draw(self, frame: np.ndarray, k: int) -> None:
        j = max(k - 1, 0)
        self.total += self._stamp(self.x[j], self.y[j], self.x[k], self.y[k])
        self.painted[k] = self.total
        frame[self.c0 : self.c1] = self.canvas
        self.tip.draw(frame, self.x[k], self.y[k], 0.0, self.rgb_u8, self.rgb_f, self.grid)

    def _stamp(self, ax: float, ay: float, bx: float, by: float) -> int:
        """Paint the capsule from (ax, ay) to (bx, by) (px); returns how many pixels it newly painted."""
        R, c0 = self.R, self.c0
        h, W = self.alpha.shape
        x0, x1 = max(int(min(ax, bx) - R) - 1, 0), min(int(max(ax, bx) + R) + 2, W)
        y0, y1 = max(int(min(ay, by) - R) - 1 - c0, 0), min(int(max(ay, by) + R) + 2 - c0, h)
        if x0 >= x1 or y0 >= y1:
            return 0
        px = self.grid[x0:x1] - np.float32(ax)  # (w,)
        py = self.grid[y0 + c0 : y1 + c0] - np.float32(ay)  # (h,)
        dx, dy = np.float32(bx - ax), np.float32(by - ay)
        ll = float(dx * dx + dy * dy)
        if ll > 1e-12:  # distance to the segment: project, clamp, measure
            u = ((px * (dx / ll))[None, :] + (py * (dy / ll))[:, None]).clip(0.0, 1.0)  # (h, w)
            qx = px[None, :] - u * dx
            qy = py[:, None] - u * dy
            d = np.sqrt(qx * qx + qy * qy)
        else:
            d = np.sqrt((px * px)[None, :] + (py * py)[:, None])
        cov = np.clip(np.float32(R + 0.5) - d, 0.0, 1.0)
        old = self.alpha[y0:y1, x0:x1]
        before = int(np.count_nonzero(old >= 0.5))
        np.maximum(old, cov, out=old)
        after = int(np.count_nonzero(old >= 0.5))
        self.canvas[y0:y1, x0:x1] = (self.sky + old[..., None] * (self.rgb_f - self.sky) + 0.5).astype(np.uint8)
        return after - before

    def truth(self) -> dict:
        return dict(color=self.color, rgb=self.rgb_u8.tolist(), path=self.path, radius=_r(self.R),
                    tip_radius=_r(self.R * TIP_SCALE), x=_r(self.x), y=_r(self.y), painted=self.painted.tolist())  # fmt: skip


# ---------------------------------------------------------------- the painter


class _Painter:
    """Draws every frame of a simulated scene and assembles its ground truth."""

    def __init__(self, spec: SceneSpec, layout: Layout, tracks: list[Track], W: int, H: int, fps: float, times: np.ndarray):
        self.spec, self.L, self.tracks, self.W, self.H = spec, layout, tracks, W, H
        self.fps, self.times = fps, times
        self.sky = np.array(SKY_COLORS[spec.sky], np.uint8)
        self.ground = np.array(GROUND_COLORS[spec.ground], np.uint8)
        far, near = layer_colors(spec.sky, spec.ground)
        self.layer_rgb = [np.array(far, np.uint8), np.array(near, np.uint8)]
        self.grid = np.arange(max(W, H), dtype=np.float32) + 0.5  # pixel centres
        self.cam = layout.cam_speed * times  # (T,) units

    # ------------------------------------------------------------ frames

    def paint(self, out: np.ndarray) -> dict:
        T, H, W = out.shape[:3]
        L = self.L
        backdrop = _Backdrop(L, self.sky, self.ground, self.layer_rgb, W, H, self.cam)

        post = None
        if L.occluder is not None:
            ox0, ox1, oy0, oy1 = (v * H for v in L.occluder)
            post = _Box(ox0, ox1, oy0, oy1, W, H)
        post_rgb = (np.array(OCCLUDER_COLOR, np.uint8), np.array(OCCLUDER_COLOR, np.float32))

        brush = None
        if L.brush is not None:
            brush = _Brush(L.brush, self.spec.brush.color, self.sky, W, H, self.times, self.grid)

        looks = self._looks()
        pos = [self._screen(tr) for tr in self.tracks]

        for k in range(T):
            frame = out[k]
            backdrop.draw(frame, k, float(self.cam[k]))
            if brush is not None:
                brush.draw(frame, k)
            for tr, (sx, sy), look in zip(self.tracks, pos, looks):
                if tr.first <= k <= tr.last:
                    shape, rgb_u8, rgb_f, mark = look
                    shape.draw(frame, sx[k], sy[k], tr.angle[k], rgb_u8, rgb_f, self.grid)
                    if mark is not None:  # the turning spot of a rolling ball
                        turn = tr.angle[k]
                        mx = sx[k] + 0.5 * shape.R * math.cos(turn)
                        my = sy[k] - 0.5 * shape.R * math.sin(turn)
                        mark[0].draw(frame, mx, my, 0.0, mark[1], mark[2], self.grid)
            if post is not None:
                post.draw(frame, *post_rgb)

        return self._truth(pos, brush.truth() if brush is not None else None)

    def _looks(self):
        """Per track: (shape, rgb uint8, rgb float32, rolling spot or None)."""
        looks = []
        for tr in self.tracks:
            color = self._color_name(tr)
            rgb = COLORS[color]
            shape = _Shape(tr.shape, tr.r * self.H, tr.vertices)
            mark = None
            if tr.kind == "roll":
                m = _mark_color(rgb)
                mark = (_Shape("ball", 0.22 * tr.r * self.H), m.astype(np.uint8), m.astype(np.float32))
            looks.append((shape, np.array(rgb, np.uint8), np.array(rgb, np.float32), mark))
        return looks

    def _color_name(self, tr: Track) -> str:
        index = tr.index if tr.parent is None else tr.parent
        return self.spec.objects[index].color

    def _screen(self, tr: Track) -> tuple[np.ndarray, np.ndarray]:
        """Centre in pixels on screen, per frame (NaN where the body does not exist)."""
        return (tr.x - self.cam) * self.H, tr.y * self.H

    # ------------------------------------------------------------ truth

    def _truth(self, pos, brush_truth) -> dict:
        L, H, W, T = self.L, self.H, self.W, len(self.times)
        objects = []
        for tr, (sx, sy) in zip(self.tracks, pos):
            vis, states = self._visibility(tr, sx / H, sy / H)
            obj = self.spec.objects[tr.index] if tr.parent is None else None
            parent = self.spec.objects[tr.parent] if tr.parent is not None else obj
            exists = ~np.isnan(sx)
            objects.append(dict(
                id=tr.index, parent=tr.parent, color=parent.color, rgb=list(COLORS[parent.color]),
                shape=tr.shape, size=parent.size if obj is not None else None, radius=_r(tr.r * H),
                motion=obj.motion if obj is not None else "shard", direction=obj.direction if obj is not None else None,
                x=_r(sx, exists), y=_r(sy, exists), angle=_r(tr.angle, exists, 4), visible=_r(vis), state=states,
            ))  # fmt: skip
        occ = None
        if L.occluder is not None:
            occ = dict(zip(("x0", "x1", "y0", "y1"), _r(np.array(L.occluder) * H)))
        return dict(
            width=W, height=H, fps=self.fps, frames=T, seconds=T / self.fps, ground_y=_r(L.ground * H),
            camera=dict(motion=self.spec.camera, x=_r(self.cam * H), rates=dict(LAYER_RATES)),
            occluder=occ, brush=brush_truth, objects=objects,
        )  # fmt: skip

    def _visibility(self, tr: Track, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Fraction visible and state per frame, measured on sample points inside the shape
        (in frame-height units, so it does not depend on the pixel size)."""
        shape = _Shape(tr.shape, 1.0, tr.vertices)
        pts = shape.samples()  # (S, 2) unit radius, y down
        ang = np.nan_to_num(tr.angle)[:, None]  # (T, 1)
        if tr.shape == "shard":  # turn the points with the shard (counter-clockwise as seen)
            c, s = np.cos(ang), np.sin(ang)
            ox = pts[None, :, 0] * c + pts[None, :, 1] * s
            oy = -pts[None, :, 0] * s + pts[None, :, 1] * c
        else:
            ox, oy = pts[None, :, 0], pts[None, :, 1]
        px = np.nan_to_num(sx, nan=-1e9)[:, None] + tr.r * ox  # (T, S)
        py = np.nan_to_num(sy, nan=-1e9)[:, None] + tr.r * oy
        inside = (px >= 0) & (px <= self.L.aspect) & (py >= 0) & (py <= 1)
        hidden = np.zeros_like(inside)
        if self.L.occluder is not None:
            x0, x1, y0, y1 = self.L.occluder
            hidden = inside & (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
        n = pts.shape[0]
        on = inside.sum(1) / n
        hid = hidden.sum(1) / n
        vis = on - hid
        states = []
        for k in range(len(sx)):
            if np.isnan(sx[k]):
                states.append("shattered" if tr.kind == "shatter" and k > tr.last else "absent")
            elif on[k] < 0.5:
                states.append("out_of_frame")
            elif hid[k] >= 0.5:
                states.append("occluded")
            else:
                states.append("visible")
        vis[np.isnan(sx)] = 0.0
        return vis, states


def _r(v, exists: np.ndarray | None = None, digits: int = 3):
    """Round for JSON: a float, or a list with None where `exists` is False."""
    if np.isscalar(v) or np.ndim(v) == 0:
        return round(float(v), digits)
    values = np.round(np.asarray(v, dtype=np.float64), digits).tolist()
    if exists is not None:
        values = [x if e else None for x, e in zip(values, exists.tolist())]
    return values
