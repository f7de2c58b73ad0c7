"""The world judge: what a clip of Kinema World shows, read from its pixels alone, and scores.

    seen = see(frames, fps, spec)        segmentation, objects, tracks, background, camera
    scores = judge(frames, fps, spec)    {metric: Score(value in [0, 1] or None, reason)}

Deterministic, no learned weights, and blind to the ground truth of the clip it judges: it gets
the frames and the spec that was asked (the prompt read by `kinema.world.text`), and knows the
world's rules (its palette, its backgrounds, where its hills lie, how fast things may move).

Seeing, step by step:
    colours     every pixel -> the nearest colour the world paints with (objects' palette, post,
                skies, grounds, hills, rolling spots), through a 64^3 lookup table; farther than
                MAX_COLOR_DISTANCE from all of them -> unknown
    components  4-connected regions of one palette colour, vectorised: runs along rows are
                linked to the runs below and labelled by repeated minima and pointer jumps
    detections  components of at least `min_area` (the brush's colour is its stroke, not an
                object); two pieces of one colour either side of the post are joined; the shape
                is the most likely under Gaussian box features measured on renders, the size
                class comes from the box; `clipped` when it touches the frame's edge or the post
    tracks      per colour, detections linked to the nearest predicted centroid, frame by frame
    background  sky and ground names, the ground line
    camera      screen motion of the far and the near hill bands: masked SSD over whole-pixel
                shifts against frames 0, t-1, t-2, t-4, parabolic sub-pixel peak, median

Metrics (each a `Score`; None where the prompt asks nothing it could check):
    objects      asked objects present with the right colour, shape, size; count; sky and ground
    motion       each asked object moves as asked (static, slide / roll / leave direction, fall
                 and bounce, shatter, bounce off the walls)
    consistency  per track: colour, size, shape stable; motion continuous (no jumps back and
                 forth); nothing appears or vanishes in the open; the background holds still
                 (static camera) or pans steadily
    permanence   what hides behind the post or leaves the frame comes back the same, where and
                 how it should
    gravity      falling bodies follow parabolas with downward acceleration, bouncing at the floor
    persistence  the painted stroke never shrinks, and grows while the brush paints
    camera       (pans) both hill bands move against the pan, the near band more than the far
    horizon      one horizon where the world puts it: sky across the top rows, ground across the
                 bottom rows and nowhere above the ground line (a scene tiled at a size the model
                 never saw repeats its bands down the frame)
    framing      (scored by the suite's runner, beside a real render of the same prompt and seed)
                 the share of frames that hold the asked objects wholly inside the frame, against
                 the real render's: a model that frames its subjects badly cuts them at the edge
Task metrics (for the tasks of kinema.tasks): first_frame, seam, loop_seam, connect, sdedit.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from kinema.errors import KinemaError
from kinema.world.spec import (
    COLORS,
    GROUND_COLORS,
    OCCLUDER_COLOR,
    SIZES,
    SKY_COLORS,
    SceneSpec,
)

PALETTE = list(COLORS)  # label i < len(PALETTE) is the object colour PALETTE[i]
POST, BACKGROUND, MARK, UNKNOWN = 10, 11, 12, 255
MAX_COLOR_DISTANCE = 60.0  # RGB distance to the nearest world colour; farther is unknown
FAR_BAND, NEAR_BAND = (0.42, 0.575), (0.60, 0.72)  # rows of the far and near hills / height
MAX_SPEED = 2.5  # frame heights / s: faster than anything in the world moves
MIN_AREA = 0.3  # a detection covers at least this fraction of the smallest object's area

# shape -> width and height of its box in radii (physics.POLYGONS; star: 2 cos 18, 1 + cos 36),
# and the pixels a render's box lacks (thin tips fade below half coverage), measured
BOX_RADII = {
    "ball": (2.0, 2.0, 0.6, 0.6),
    "square": (1.48, 1.48, 0.6, 0.6),
    "triangle": (1.732, 1.5, 1.8, 1.6),
    "diamond": (1.44, 2.0, 1.2, 2.0),
    "star": (1.902, 1.809, 3.7, 3.6),
}


@dataclass(frozen=True)
class Score:
    value: float | None  # in [0, 1], 1 = good; None: does not apply to this clip
    reason: str

    def to_dict(self) -> dict:
        return {"score": None if self.value is None else round(float(self.value), 4), "reason": self.reason}


def _score(value: float, reason: str) -> Score:
    return Score(float(min(max(value, 0.0), 1.0)), reason)


NA = functools.partial(Score, None)


# ---------------------------------------------------------------- colours


@functools.cache
def _world_colors() -> tuple[np.ndarray, np.ndarray]:
    """Every colour the world paints with (C, 3) and its label (C,)."""
    from kinema.world.render import _mark_color, layer_colors

    colors, labels = [], []
    for i, rgb in enumerate(COLORS.values()):
        colors.append(rgb), labels.append(i)
        colors.append(tuple(_mark_color(rgb))), labels.append(MARK)  # a rolling ball's spot
    colors.append(OCCLUDER_COLOR), labels.append(POST)
    for sky, ground in itertools.product(SKY_COLORS, GROUND_COLORS):
        for rgb in (SKY_COLORS[sky], GROUND_COLORS[ground], *layer_colors(sky, ground)):
            colors.append(rgb), labels.append(BACKGROUND)
    return np.array(colors, np.float32), np.array(labels, np.uint8)


@functools.cache
def _lut() -> np.ndarray:
    """(64^3,) label of each 6-bit RGB cell, from the world colour nearest its centre."""
    colors, labels = _world_colors()
    c = np.arange(64, dtype=np.float32) * 4 + 1.5
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)  # (64^3, 3)
    d2 = (grid**2).sum(1, keepdims=True) - 2 * grid @ colors.T + (colors**2).sum(1)[None]  # (64^3, C)
    near = d2.argmin(1)
    return np.where(d2[np.arange(len(near)), near] <= MAX_COLOR_DISTANCE**2, labels[near], UNKNOWN).astype(np.uint8)


def segment(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) uint8 labels: palette index, POST, BACKGROUND, MARK or UNKNOWN."""
    q = (frames >> 2).astype(np.int32)
    return _lut()[(q[..., 0] << 12) | (q[..., 1] << 6) | q[..., 2]]


def thing_mask(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) bool: the pixels of what a caption names one by one (objects,
    their pieces and marks, brush strokes), not the sky, ground, hills or post."""
    labels = segment(frames)
    return (labels < len(PALETTE)) | (labels == MARK)


def latent_cells(mask: np.ndarray, temporal: int, spatial: int) -> np.ndarray:
    """A pixel mask (T, H, W) of a 1 + temporal k frame clip -> (T', H', W') bool: the latent cells
    that encode any masked pixel (latent frame 0: pixel frame 0; latent frame j >= 1: the
    `temporal` frames ending at pixel frame temporal * j; cells of spatial x spatial pixels)."""
    T, H, W = mask.shape
    if (T - 1) % temporal or H % spatial or W % spatial:
        raise KinemaError(f"a {T}x{H}x{W} mask does not tile into {temporal}x{spatial}x{spatial} latent cells")
    rest = mask[1:].reshape(-1, temporal, H, W).any(1)
    groups = np.concatenate([mask[:1], rest])  # (T', H, W)
    return groups.reshape(len(groups), H // spatial, spatial, W // spatial, spatial).any((2, 4))


def nearest_name(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    d = np.linalg.norm(np.array(list(table.values()), float) - np.asarray(rgb, float), axis=1)
    return names[int(d.argmin())]


# ---------------------------------------------------------------- connected components


def components(classes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, H, W) classes and mask -> (T, H, W) int64 component ids (the flat index of the
    component's first pixel; -1 outside `valid`), 4-connected among pixels of one class.

    Runs of one class along each row are the nodes; pixels linked to the row below link their
    runs; the runs' labels fall to the smallest linked one by repeated minima and pointer jumps."""
    T, H, W = classes.shape
    same_x = valid[..., 1:] & valid[..., :-1] & (classes[..., 1:] == classes[..., :-1])  # (T, H, W-1)
    start = valid.copy()
    start[..., 1:] &= ~same_x
    run = np.cumsum(start.reshape(-1)) - 1  # run index of every pixel (valid ones)
    first_pixel = np.flatnonzero(start.reshape(-1))  # (R,)
    same_y = valid[:, 1:] & valid[:, :-1] & (classes[:, 1:] == classes[:, :-1])  # (T, H-1, W)
    t, y, x = np.nonzero(same_y)
    upper = (t * H + y) * W + x
    edges = np.unique(np.stack([run[upper], run[upper + W]], 1), axis=0) if upper.size else np.zeros((0, 2), np.int64)
    a, b = edges[:, 0], edges[:, 1]
    label = np.arange(len(first_pixel))
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        for _ in range(3):
            new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    ids = first_pixel[label][run].reshape(T, H, W) if len(first_pixel) else np.zeros((T, H, W), np.int64)
    return np.where(valid, ids, -1)


# ---------------------------------------------------------------- detections


@dataclass
class Detection:
    frame: int
    color: str
    cx: float  # centroid, px
    cy: float
    area: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive
    rgb: tuple[float, float, float]
    shape: str = ""
    size: str = ""
    edge: bool = False  # touches the frame's edge
    post: bool = False  # touches the post
    root: int = field(default=-1, repr=False)  # the component's id in the clip's id map

    @property
    def clipped(self) -> bool:
        return self.edge or self.post

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0] + 1

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1] + 1


def _component_table(frames: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per component: frame, class, area, centroid, box, mean colour (vectorised)."""
    T, H, W = labels.shape
    flat = ids.reshape(-1)
    where = np.flatnonzero(flat >= 0)
    if where.size == 0:
        return {k: np.zeros(0, np.int64) for k in ("t", "cls", "area", "cx", "cy", "x0", "y0", "x1", "y1", "root", "r", "g", "b")}
    roots, inv = np.unique(flat[where], return_inverse=True)
    t, rem = np.divmod(where, H * W)
    y, x = np.divmod(rem, W)
    area = np.bincount(inv)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(area)[:-1]])
    xs, ys = x[order], y[order]
    rgb = frames.reshape(-1, 3)[where].astype(np.float64)
    table = dict(
        t=roots // (H * W),
        cls=labels.reshape(-1)[roots],
        area=area,
        cx=np.bincount(inv, x) / area + 0.5,
        cy=np.bincount(inv, y) / area + 0.5,
        x0=np.minimum.reduceat(xs, starts),
        x1=np.maximum.reduceat(xs, starts),
        y0=np.minimum.reduceat(ys, starts),
        y1=np.maximum.reduceat(ys, starts),
        root=roots,
    )
    for i, ch in enumerate("rgb"):
        table[ch] = np.bincount(inv, rgb[:, i]) / area
    return table


# shape -> how far below its centre the box ends, in radii; the world's floor stops the bounding
# circle, so a square, a triangle or a star rests with its box a little above the ground
BOX_BOTTOM = {"ball": 1.0, "square": 0.74, "triangle": 0.5, "diamond": 1.0, "star": 0.809}

# Shape features (fill of the box, width / height, centroid height in the box, fill of the box's
# bottom-centre, fill of its top rows), mean and spread over many renders, at radii of
# SHAPE_RADII px: thin parts blur away on small objects, so the table is read at the radius the
# box implies for each candidate shape (linear in 1 / radius between the rows).
SHAPE_RADII = np.array([5.0, 6.3, 7.6, 10.1, 15.1])
SHAPE_TABLE = {  # shape -> rows of (mean x5, spread x5), one row per radius
    "ball": [(0.79, 1.01, 0.50, 0.94, 0.52, 0.04, 0.08, 0.02, 0.12, 0.08),
             (0.79, 1.00, 0.50, 0.97, 0.51, 0.02, 0.03, 0.02, 0.07, 0.10),
             (0.79, 1.00, 0.50, 0.94, 0.47, 0.03, 0.05, 0.01, 0.08, 0.09),
             (0.79, 1.00, 0.50, 0.96, 0.50, 0.02, 0.04, 0.01, 0.06, 0.06),
             (0.79, 1.00, 0.50, 0.95, 0.47, 0.01, 0.02, 0.01, 0.04, 0.05)],
    "square": [(1.00, 1.01, 0.50, 1.00, 0.99, 0.02, 0.07, 0.00, 0.00, 0.03),
               (1.00, 1.01, 0.50, 1.00, 0.99, 0.01, 0.07, 0.00, 0.00, 0.03),
               (1.00, 0.99, 0.50, 1.00, 1.00, 0.00, 0.06, 0.00, 0.00, 0.01),
               (1.00, 1.00, 0.50, 1.00, 1.00, 0.01, 0.05, 0.00, 0.00, 0.01),
               (1.00, 1.00, 0.50, 1.00, 1.00, 0.00, 0.02, 0.00, 0.00, 0.02)],
    "triangle": [(0.58, 1.18, 0.64, 1.00, 0.18, 0.04, 0.10, 0.02, 0.00, 0.06),
                 (0.56, 1.15, 0.65, 1.00, 0.14, 0.03, 0.09, 0.01, 0.00, 0.04),
                 (0.55, 1.16, 0.65, 1.00, 0.15, 0.02, 0.07, 0.01, 0.00, 0.03),
                 (0.53, 1.15, 0.66, 1.00, 0.11, 0.02, 0.05, 0.01, 0.03, 0.03),
                 (0.52, 1.15, 0.66, 1.00, 0.09, 0.01, 0.02, 0.01, 0.00, 0.02)],
    "diamond": [(0.58, 0.74, 0.50, 0.80, 0.23, 0.06, 0.05, 0.02, 0.19, 0.09),
                (0.56, 0.74, 0.50, 0.56, 0.26, 0.04, 0.06, 0.01, 0.13, 0.06),
                (0.55, 0.74, 0.50, 0.69, 0.21, 0.02, 0.05, 0.01, 0.11, 0.05),
                (0.53, 0.73, 0.50, 0.62, 0.20, 0.02, 0.04, 0.01, 0.08, 0.04),
                (0.52, 0.73, 0.50, 0.67, 0.17, 0.02, 0.01, 0.01, 0.07, 0.03)],
    "star": [(0.48, 1.09, 0.53, 0.61, 0.19, 0.06, 0.22, 0.04, 0.25, 0.06),
             (0.44, 1.08, 0.55, 0.50, 0.13, 0.03, 0.11, 0.04, 0.20, 0.04),
             (0.41, 1.07, 0.55, 0.31, 0.12, 0.03, 0.11, 0.02, 0.17, 0.04),
             (0.39, 1.05, 0.55, 0.26, 0.08, 0.02, 0.07, 0.02, 0.13, 0.02),
             (0.36, 1.06, 0.55, 0.23, 0.07, 0.01, 0.05, 0.01, 0.08, 0.01)],
}  # fmt: skip
SPREAD_FLOOR = np.array([0.02, 0.04, 0.015, 0.08, 0.03])
MIN_SHAPE_SIDE = 5  # px: a box narrower or lower than this has no shape to speak of


def shape_features(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool crop of one object -> its 5 shape features (see SHAPE_TABLE)."""
    h, w = mask.shape
    ys = np.nonzero(mask)[0]
    bottom = mask[int(h * 0.82) :, int(w * 0.35) : max(int(math.ceil(w * 0.65)), int(w * 0.35) + 1)]
    top = mask[: max(1, round(h * 0.15))]
    return np.array([mask.mean(), w / h, (ys.mean() + 0.5) / h, bottom.mean(), top.mean()])


def _box_radius(shape: str, w: int, h: int) -> float:
    bw, bh, dw, dh = BOX_RADII[shape]
    return 0.5 * ((w + dw) / bw + (h + dh) / bh)


def classify_shape(mask: np.ndarray) -> str:
    """The most likely shape (Gaussian features, read at the radius each shape would have with
    this box); "" when the box is too small."""
    h, w = mask.shape
    if min(h, w) < MIN_SHAPE_SIDE:
        return ""
    f = shape_features(mask)
    best, best_cost = "", math.inf
    for shape, rows in SHAPE_TABLE.items():
        u = np.clip(1.0 / _box_radius(shape, w, h), 1.0 / SHAPE_RADII[-1], 1.0 / SHAPE_RADII[0])
        table = np.array(rows)
        row = np.array([np.interp(u, 1.0 / SHAPE_RADII[::-1], table[::-1, j]) for j in range(10)])
        spread = np.maximum(row[5:], SPREAD_FLOOR)
        cost = float((((f - row[:5]) / spread) ** 2).sum() + 2.0 * np.log(spread).sum())
        if cost < best_cost:
            best, best_cost = shape, cost
    return best


def size_class(shape: str, w: int, h: int, short: int) -> str:
    """The size word whose radius (SIZES, / short side) is nearest the box's, in log scale."""
    r = _box_radius(shape or "ball", w, h) / short
    names = list(SIZES)
    return names[int(np.argmin([abs(math.log(r / SIZES[s])) for s in names]))]


def min_area(width: int, height: int) -> float:
    short = min(width, height)
    smallest = min(SIZES.values()) * short
    return max(6.0, MIN_AREA * 1.12 * smallest * smallest)  # 1.12 r^2: the star, the smallest shape


def _post_boxes(labels: np.ndarray, ids: np.ndarray, table: dict, least: float) -> list[tuple[int, int, int, int] | None]:
    """Per frame: the box of the largest post-coloured component, or None. The post stands still
    on the screen, so every frame's box that overlaps the median box becomes the median box,
    grown by a pixel for its soft rim."""
    T, H, W = labels.shape
    boxes: list = [None] * T
    best = np.zeros(T)
    for i in np.flatnonzero((table["cls"] == POST) & (table["area"] >= least)):
        t = int(table["t"][i])
        if table["area"][i] > best[t]:
            best[t] = table["area"][i]
            boxes[t] = tuple(int(table[k][i]) for k in ("x0", "y0", "x1", "y1"))
    found = [b for b in boxes if b is not None]
    if not found:
        return boxes
    x0, y0, x1, y1 = (int(v) for v in np.median(np.array(found), axis=0))
    steady = (max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, W - 1), min(y1 + 1, H - 1))
    return [steady if b is not None and _touches(b, steady, 0) else b for b in boxes]


def _touches(box, other, margin: int = 2) -> bool:
    return not (box[2] + margin < other[0] or other[2] + margin < box[0] or box[3] + margin < other[1] or other[3] + margin < box[1])


def _merge(a: Detection, b: Detection) -> Detection:
    area = a.area + b.area
    mix = lambda u, v: (u * a.area + v * b.area) / area  # noqa: E731
    box = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]), max(a.box[3], b.box[3]))
    rgb = tuple(mix(u, v) for u, v in zip(a.rgb, b.rgb))
    return Detection(a.frame, a.color, mix(a.cx, b.cx), mix(a.cy, b.cy), area, box, rgb, edge=a.edge or b.edge, post=True)


def _detections(table: dict, ids: np.ndarray, posts: list, least: float, skip: set[str]) -> list[list[Detection]]:
    """Components -> per-frame detections of object colours (not the brush's), joined across the post."""
    T, H, W = ids.shape
    out: list[list[Detection]] = [[] for _ in range(T)]
    near_post = np.zeros(len(table["t"]), bool)
    for t in {t for t, p in enumerate(posts) if p is not None}:  # slivers beside the post may join
        x0, y0, x1, y1 = posts[t]
        near_post |= (table["t"] == t) & (table["x1"] >= x0 - 2) & (table["x0"] <= x1 + 2) & (table["y1"] >= y0 - 2) & (table["y0"] <= y1 + 2)
    keep = np.flatnonzero((table["cls"] < len(PALETTE)) & ((table["area"] >= least) | (near_post & (table["area"] >= 2))))
    for i in keep:
        color = PALETTE[int(table["cls"][i])]
        if color in skip:
            continue
        t = int(table["t"][i])
        box = tuple(int(table[k][i]) for k in ("x0", "y0", "x1", "y1"))
        det = Detection(t, color, float(table["cx"][i]), float(table["cy"][i]), int(table["area"][i]), box,
                        (float(table["r"][i]), float(table["g"][i]), float(table["b"][i])), root=int(table["root"][i]))  # fmt: skip
        det.edge = box[0] <= 0 or box[1] <= 0 or box[2] >= W - 1 or box[3] >= H - 1
        det.post = posts[t] is not None and _touches(box, posts[t])
        out[t].append(det)
    short = min(W, H)
    for t in range(T):
        dets = _join_across_post(out[t], posts[t])
        dets = [d for d in dets if d.area >= least]
        for d in dets:
            if d.clipped:
                continue
            x0, y0, x1, y1 = d.box
            d.shape = classify_shape(ids[t, y0 : y1 + 1, x0 : x1 + 1] == d.root)
            d.size = size_class(d.shape, d.width, d.height, short)
        out[t] = dets
    return out


def _join_across_post(dets: list[Detection], post) -> list[Detection]:
    """Two pieces of one colour on both sides of the post, at about one height, are one object."""
    if post is None:
        return dets
    mid = 0.5 * (post[0] + post[2] + 1)
    out = sorted(dets, key=lambda d: -d.area)
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(out, 2):
            if a.color == b.color and a.post and b.post and (a.cx - mid) * (b.cx - mid) < 0 \
                    and abs(a.cy - b.cy) < 0.6 * max(a.height, b.height):  # fmt: skip
                out = [d for d in out if d is not a and d is not b] + [_merge(a, b)]
                merged = True
                break
    return out


# ---------------------------------------------------------------- tracks


def _most(values: list):
    """The most common value (ties: the smallest), deterministic."""
    return max(sorted(set(values)), key=values.count)


def mode(dets: list[Detection], attr: str) -> str:
    """The most common non-empty value of `attr` ("shape", "size") over unclipped detections, or ""."""
    values = [getattr(d, attr) for d in dets if not d.clipped and getattr(d, attr)]
    return _most(values) if values else ""


@dataclass
class Track:
    """One object followed over the frames: its detections, at most one a frame."""

    color: str
    dets: list[Detection] = field(default_factory=list)

    @property
    def frames(self) -> np.ndarray:
        return np.array([d.frame for d in self.dets])

    def mode(self, attr: str) -> str:
        """The most common non-empty value of `attr` over the unclipped detections, or ""."""
        return mode(self.dets, attr)

    def predict(self, frame: int) -> tuple[float, float]:
        """Where it should be at `frame`: constant velocity from its last two detections."""
        a = self.dets[-1]
        if len(self.dets) < 2:
            return a.cx, a.cy
        b = self.dets[-2]
        gap = max(a.frame - b.frame, 1)
        k = min(frame - a.frame, 3)  # do not extrapolate far
        return a.cx + (a.cx - b.cx) / gap * k, a.cy + (a.cy - b.cy) / gap * k


def track(detections: list[list[Detection]]) -> list[Track]:
    """Link detections frame by frame, per colour: each goes to the track whose predicted centroid
    is nearest (greedy over pairs, nearest first); detections left over start new tracks."""
    tracks: list[Track] = []
    for t, dets in enumerate(detections):
        for color in sorted({d.color for d in dets}):
            mine = [d for d in dets if d.color == color]
            theirs = [tr for tr in tracks if tr.color == color]
            pairs = sorted(
                (math.dist(tr.predict(t), (d.cx, d.cy)), i, j) for i, tr in enumerate(theirs) for j, d in enumerate(mine)
            )
            used_t, used_d = set(), set()
            for _, i, j in pairs:
                if i not in used_t and j not in used_d:
                    theirs[i].dets.append(mine[j])
                    used_t.add(i), used_d.add(j)
            for j, d in enumerate(mine):
                if j not in used_d:
                    tracks.append(Track(color, [d]))
    return tracks


# ---------------------------------------------------------------- background and camera


def read_background(frames: np.ndarray, labels: np.ndarray) -> tuple[list[str], list[str], float]:
    """Per frame the sky and ground names (median colour of the top 12% and bottom 8% of rows,
    background pixels only), and the ground line (px): the top of the run of ground-coloured
    rows at the bottom of the middle frame (H if there is none)."""
    T, H, W = labels.shape
    skies, grounds = [], []
    for t in range(T):
        for rows, table, out in ((slice(0, max(1, int(0.12 * H))), SKY_COLORS, skies),
                                 (slice(min(H - 1, int(0.92 * H)), H), GROUND_COLORS, grounds)):  # fmt: skip
            px = frames[t, rows][labels[t, rows] == BACKGROUND]
            px = px if len(px) else frames[t, rows].reshape(-1, 3)
            out.append(nearest_name(np.median(px, axis=0), table))
    ground = np.array(GROUND_COLORS[_most(grounds)], np.float32)
    mid = frames[T // 2].astype(np.float32)
    rows = (np.linalg.norm(mid - ground, axis=-1) < 40).mean(1) >= 0.5  # (H,) mostly ground
    end = H - 1
    while end > H - 6 and not rows[end]:  # the lowest rows may be spoilt (a border, a blur)
        end -= 1
    top = end + 1
    while top > 0 and rows[top - 1]:  # the run of ground rows above
        top -= 1
    return skies, grounds, float(top)


def background_rows(frames: np.ndarray, sky: str, ground: str, most: int = 8) -> np.ndarray:
    """(2, H): per row, the share of its pixels that are the sky's and the ground's colour (the
    nearest of the four background colours, the two hill shades included, and within 40 of it),
    the mean over at most `most` frames spread over the clip."""
    from kinema.world.render import layer_colors

    colors = np.array([SKY_COLORS[sky], GROUND_COLORS[ground], *layer_colors(sky, ground)], np.float32)  # (4, 3)
    pick = np.unique(np.linspace(0, len(frames) - 1, min(most, len(frames))).round().astype(int))
    px = frames[pick].astype(np.float32)  # (N, H, W, 3)
    dist = np.stack([np.linalg.norm(px - c, axis=-1) for c in colors])  # (4, N, H, W)
    nearest, close = dist.argmin(0), dist.min(0) < 40
    return np.stack([((nearest == k) & close).mean(axis=(0, 2)) for k in (0, 1)])  # (2, H)


def _band_shifts(band: np.ndarray, weight: np.ndarray, ref: np.ndarray, ref_w: np.ndarray, reach: int) -> np.ndarray:
    """Per frame n, the sub-pixel d that best explains band[n](x) = ref[n](x + d): masked mean
    squared difference over whole-pixel d in [-reach, reach], then a parabola through the best
    three. NaN where too little is seen, the band has no texture to match (the error hardly
    changes with d) or the best d lies at the end of the range.
    band (N, h, W, 3), weight (N, h, W); ref, ref_w the same or one frame (h, W, 3), (h, W).
    sum w_b w_r (b - r)^2 = corr(w_b |b|^2, w_r) - 2 sum_c corr(w_b b_c, w_r r_c) + corr(w_b, w_r |r|^2)."""
    N, h, W, _ = band.shape
    one = ref.ndim == 3

    def corr(u: np.ndarray, v: np.ndarray) -> np.ndarray:  # (N, h, W), (N | -, h, W) -> (N, 2 reach + 1)
        pad = [(0, 0)] * (v.ndim - 1) + [(reach, reach)]
        win = np.lib.stride_tricks.sliding_window_view(np.pad(v, pad), W, axis=-1)  # (N | -, h, 2r+1, W)
        return np.einsum("nyx,ydx->nd" if one else "nyx,nydx->nd", u, win)

    err = corr(weight * (band**2).sum(-1), ref_w) + corr(weight, ref_w * (ref**2).sum(-1))
    for c in range(3):
        err -= 2 * corr(weight * band[..., c], ref_w * ref[..., c])
    cover = corr(weight, ref_w)
    err = np.where(cover > 0.3 * W * h, err / np.maximum(cover, 1), np.inf)  # (N, 2r+1)
    i = np.argmin(err, axis=1)
    rows = np.arange(N)
    best = err[rows, i]
    worst = np.where(np.isfinite(err), err, -np.inf).max(1)
    textured = worst - best > 1.0 + 0.1 * np.maximum(best, 0.0)  # grey levels^2
    inner = (i > 0) & (i < 2 * reach) & np.isfinite(best) & textured
    j = np.clip(i, 1, 2 * reach - 1) if reach > 0 else i
    a, b, c = err[rows, j - 1], err[rows, j], err[rows, j + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        den = a - 2 * b + c
        sub = np.where(np.isfinite(den) & (den > 0), 0.5 * (a - c) / den, 0.0)
    return np.where(inner, i - reach + np.clip(sub, -0.5, 0.5), np.nan)


def camera_motion(frames: np.ndarray, labels: np.ndarray, detections: list[list[Detection]], posts: list) -> dict[str, np.ndarray]:
    """Screen motion (px, + to the right) of the far and the near hill bands since frame 0.
    Objects (their whole boxes, with a rolling spot), the post, the brush and unknown pixels are
    masked, with a 3 px margin. Frame t is matched against frames 0, t - 1, t - 2 and t - 4 (the
    near ones within the shift the world's fastest pan makes); its motion is the median of the
    answers, so one bad match (a band mostly covered, a pan out of reach of frame 0) does not
    count."""
    T, H, W = labels.shape
    hidden = (labels <= POST) | (labels == UNKNOWN)
    for t, dets in enumerate(detections):
        for x0, y0, x1, y1 in [d.box for d in dets] + ([posts[t]] if posts[t] is not None else []):
            hidden[t, y0 : y1 + 1, x0 : x1 + 1] = True
    hidden = _dilate(hidden, 3)  # blurred rims of still things would pull the match to 0
    reach = max(2, W // 6)
    out = {}
    for name, (a, b) in (("far", FAR_BAND), ("near", NEAR_BAND)):
        rows = slice(int(a * H), max(int(b * H), int(a * H) + 1))
        band = frames[:, rows].astype(np.float32)
        weight = (~hidden[:, rows]).astype(np.float32)
        answers = {0: _band_shifts(band[1:], weight[1:], band[0], weight[0], reach)}  # lag 0: frame 0
        for lag in (1, 2, 4):
            if lag < T:
                near = min(reach, 3 + math.ceil(0.02 * H * lag))  # the world pans slower than this
                answers[lag] = _band_shifts(band[lag:], weight[lag:], band[:-lag], weight[:-lag], near)
        motion = np.zeros(T)
        for t in range(1, T):
            got = [-answers[0][t - 1]] + [motion[t - lag] - answers[lag][t - lag] for lag in (1, 2, 4) if lag <= t]
            got = [g for g in got if math.isfinite(g)]
            motion[t] = float(np.median(got)) if got else motion[t - 1]
        out[name] = motion
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Grow a (T, H, W) mask by r pixels along rows and columns (a square of side 2r + 1)."""
    out = mask.copy()
    for axis in (1, 2):
        grown = out.copy()
        n = out.shape[axis]
        for k in range(1, r + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
            grown[tuple(hi)] |= out[tuple(lo)]
            grown[tuple(lo)] |= out[tuple(hi)]
        out = grown
    return out


# ---------------------------------------------------------------- seeing a clip


@dataclass
class Seen:
    """Everything the judge reads from a clip."""

    width: int
    height: int
    fps: float
    labels: np.ndarray = field(repr=False)  # (T, H, W) uint8
    detections: list[list[Detection]] = field(repr=False)
    tracks: list[Track]
    posts: list  # per frame: the post's box or None
    skies: list[str]
    grounds: list[str]
    ground_y: float
    rows: np.ndarray = field(repr=False)  # (2, H): share of each row that is the sky's, the ground's colour
    camera: dict[str, np.ndarray]  # far, near: screen motion since frame 0, px
    brush: str | None  # the asked brush's colour, whose pixels are the stroke
    pieces: np.ndarray = field(repr=False)  # (T, colours): regions of >= 4 px away from the post
    memo: dict = field(default_factory=dict, repr=False)  # answers the metrics share

    @property
    def frames(self) -> int:
        return int(self.labels.shape[0])

    def tracks_of(self, color: str) -> list[Track]:
        return sorted((t for t in self.tracks if t.color == color), key=lambda t: -len(t.dets))


def see(frames: np.ndarray, fps: float, spec: SceneSpec) -> Seen:
    """Read a clip (T, H, W, 3) uint8; `spec` (what was asked) only names the brush's colour."""
    frames = np.ascontiguousarray(frames)
    T, H, W, _ = frames.shape
    labels = segment(frames)
    ids = components(labels, labels <= POST)
    table = _component_table(frames, labels, ids)
    least = min_area(W, H)
    posts = _post_boxes(labels, ids, table, 4 * least)
    brush = spec.brush.color if spec.brush is not None else None
    detections = _detections(table, ids, posts, least, {brush} if brush else set())
    skies, grounds, ground_y = read_background(frames, labels)
    rows = background_rows(frames, _most(skies), _most(grounds))
    return Seen(W, H, float(fps), labels, detections, track(detections), posts, skies, grounds, ground_y, rows,
                camera_motion(frames, labels, detections, posts), brush, _pieces(table, posts))  # fmt: skip


def _pieces(table: dict, posts: list) -> np.ndarray:
    """(T, colours) count of regions of at least 4 px that do not touch the post."""
    out = np.zeros((len(posts), len(PALETTE)), int)
    for i in np.flatnonzero((table["cls"] < len(PALETTE)) & (table["area"] >= 4)):
        t = int(table["t"][i])
        box = tuple(int(table[k][i]) for k in ("x0", "y0", "x1", "y1"))
        if posts[t] is None or not _touches(box, posts[t]):
            out[t, int(table["cls"][i])] += 1
    return out


# ---------------------------------------------------------------- helpers for the metrics

METRICS = ("objects", "motion", "consistency", "permanence", "gravity", "persistence", "camera", "horizon")


def _ramp(x: float, bad: float, good: float) -> float:
    """0 at `bad`, 1 at `good`, linear between (either order)."""
    return float(min(max((x - bad) / (good - bad), 0.0), 1.0))


def _counts(seen: Seen, color: str) -> np.ndarray:
    """Detections of `color` per frame."""
    return np.array([sum(d.color == color for d in dets) for dets in seen.detections])


def _held(counts: np.ndarray, frames: int = 3) -> int:
    """The largest count that holds for `frames` frames in a row (a glitch of one frame is not an object)."""
    if len(counts) < frames:
        return int(counts.min(initial=0))
    runs = np.lib.stride_tricks.sliding_window_view(counts, frames).min(1)
    return int(runs.max())


def break_frame(seen: Seen, spec: SceneSpec, color: str) -> int:
    """When a shattering colour breaks (else T): the first frame it touches the floor or (one
    object of the colour) its area jumps by more than 15%, or the frame before the first two in
    a row where it shows more pieces than objects asked."""
    key = ("break", color)
    if key not in seen.memo:
        asked = sum(o.color == color for o in spec.objects)
        more = (seen.pieces[:, PALETTE.index(color)] > asked) | (_counts(seen, color) > asked)
        both = more[:-1] & more[1:]
        end = max(int(np.argmax(both)) - 1, 0) if both.any() else seen.frames  # a frame early: pieces touch at first
        before = [d for dets in seen.detections[:end] for d in dets if d.color == color]
        shape = mode(before, "shape") or "ball"
        for k, d in enumerate(before):
            if _lowest(d, shape) >= seen.ground_y - 2:  # the bounding circle reaches the floor
                end = d.frame
                break
            usual = [e.area for e in before[max(k - 4, 0) : k] if not e.clipped]
            if asked == 1 and len(usual) >= 2 and not d.clipped and abs(math.log(d.area / np.median(usual))) > math.log(1.15):
                end = d.frame  # one object of this colour suddenly grows or shrinks: it is breaking
                break
        seen.memo[key] = end
    return seen.memo[key]


def _shattering(spec: SceneSpec) -> set[str]:
    return {o.color for o in spec.objects if o.motion == "shatter"}


def _until_break(seen: Seen, spec: SceneSpec, tr: Track) -> list[Detection]:
    if tr.color not in _shattering(spec):
        return tr.dets
    end = break_frame(seen, spec, tr.color)
    return [d for d in tr.dets if d.frame < end]


def _lowest(d: Detection, shape: str) -> float:
    """The bottom of `d`'s bounding circle (what the world's floor stops), px."""
    shape = shape or "ball"
    return d.box[3] + 1.0 + (1.0 - BOX_BOTTOM[shape]) * _box_radius(shape, d.width, d.height)


def match_objects(seen: Seen, spec: SceneSpec) -> list[Track | None]:
    """Each asked object -> the track that shows it: same colour; among several objects of one
    colour, the assignment of the longest tracks that agrees best on shape and size."""
    out: list[Track | None] = [None] * len(spec.objects)
    for color in sorted({o.color for o in spec.objects}):
        idx = [i for i, o in enumerate(spec.objects) if o.color == color]
        cands = sorted(seen.tracks_of(color), key=lambda t: -len(_until_break(seen, spec, t)))
        cands = [t for t in cands if len(_until_break(seen, spec, t)) >= 3][: len(idx)]
        looks = [(mode(_until_break(seen, spec, t), "shape"), mode(_until_break(seen, spec, t), "size")) for t in cands]
        best, best_agree = None, -1
        for perm in itertools.permutations(range(len(idx)), len(cands)):
            agree = sum((looks[k][0] == spec.objects[idx[p]].shape) + (looks[k][1] == spec.objects[idx[p]].size)
                        for k, p in enumerate(perm))  # fmt: skip
            if agree > best_agree:
                best, best_agree = perm, agree
        for k, p in enumerate(best or ()):
            out[idx[p]] = cands[k]
    return out


def _series(dets: list[Detection]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frames, x, y of detections."""
    a = np.array([(d.frame, d.cx, d.cy) for d in dets], float).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2]


def _ground_motion(seen: Seen) -> np.ndarray:
    """Screen motion of the ground (and of what stands still in the world), from the near band."""
    from kinema.world.physics import LAYER_RATES

    return seen.camera["near"] * (LAYER_RATES["ground"] / LAYER_RATES["near"])


def _join(notes: list[str], ok: str) -> str:
    return "; ".join(notes) if notes else ok


# ---------------------------------------------------------------- prompt adherence


def score_objects(seen: Seen, spec: SceneSpec) -> Score:
    """Asked objects present with the right colour, shape and size; their count; sky and ground."""
    per_object, notes = object_scores(seen, spec)
    asked: dict[str, int] = {}
    for o in spec.objects:
        asked[o.color] = asked.get(o.color, 0) + 1
    missing = extra = 0
    for color in PALETTE:
        if color == seen.brush:
            continue
        n = _held(_counts(seen, color))
        want = asked.get(color, 0)
        if color in _shattering(spec):
            n = min(n, want)
        missing += max(want - n, 0)
        extra += max(n - want, 0)
        if n > want:
            notes.append(f"{n - want} {color} object(s) not asked for")
    count = max(0.0, 1.0 - (missing + extra) / max(len(spec.objects), 1))
    sky = _most(seen.skies)
    ground = _most(seen.grounds)
    background = 0.5 * (sky == spec.sky) + 0.5 * (ground == spec.ground)
    if sky != spec.sky:
        notes.append(f"sky looks {sky}, asked {spec.sky}")
    if ground != spec.ground:
        notes.append(f"ground looks {ground}, asked {spec.ground}")
    if spec.objects:
        value = 0.6 * float(np.mean(per_object)) + 0.2 * count + 0.2 * background
    else:
        value = 0.5 * count + 0.5 * background
    return _score(value, _join(notes, f"{len(spec.objects)} object(s), sky and ground as asked"))


def object_scores(seen: Seen, spec: SceneSpec) -> tuple[list[float], list[str]]:
    """Per asked object: 1/3 for being there (its colour), 1/3 each for shape and size (left out
    when it is never seen whole); and notes on what is wrong."""
    notes, per_object = [], []
    for obj, tr in zip(spec.objects, match_objects(seen, spec)):
        name = f"{obj.size} {obj.color} {obj.shape}"
        if tr is None:
            per_object.append(0.0)
            notes.append(f"no {obj.color} object for the {name}")
            continue
        parts = [1.0]
        for attr in ("shape", "size"):
            got = mode(_until_break(seen, spec, tr), attr)
            if got:  # unknown when never seen whole
                parts.append(float(got == getattr(obj, attr)))
                if got != getattr(obj, attr):
                    notes.append(f"the {name} looks {got}")
        per_object.append(float(np.mean(parts)))
    return per_object, notes


def score_motion(seen: Seen, spec: SceneSpec) -> Score:
    """Each asked object moves as asked; the mean over objects."""
    if not spec.objects:
        return NA("no objects asked")
    scores, notes = [], []
    for obj, tr in zip(spec.objects, match_objects(seen, spec)):
        if tr is None:
            scores.append(0.0)
            notes.append(f"{obj.color} {obj.shape} not seen")
            continue
        value, note = _MOTION_CHECKS[obj.motion](seen, spec, obj, tr)
        if value is not None:
            scores.append(value)
        if note:
            notes.append(f"{obj.color} {obj.shape}: {note}")
    if not scores:
        return NA(_join(notes, "no motion could be judged"))
    return _score(float(np.mean(scores)), _join(notes, "every object moves as asked"))


def _whole(dets: list[Detection]) -> list[Detection]:
    """The unclipped detections if there are 3 or more (their centroids are true), else all."""
    clean = [d for d in dets if not d.clipped]
    return clean if len(clean) >= 3 else dets


def _static(seen, spec, obj, tr) -> tuple[float | None, str]:
    whole = [d for d in tr.dets if not d.clipped]
    if len(whole) < 3:
        return None, "never seen whole"
    f, x, y = _series(whole)
    x = x - _ground_motion(seen)[f.astype(int)]  # fixed in the world, so it moves with the ground
    spread = max(np.ptp(x), np.ptp(y)) / seen.height
    value = _ramp(spread, 0.12, 0.04)
    return value, "" if value == 1.0 else f"moves {spread:.2f} frame heights while it should stay"


def _directed(seen, spec, obj, tr) -> tuple[float, str]:
    f, x, y = _series(tr.dets)
    sign = 1.0 if obj.direction == "right" else -1.0
    first = f <= f[0] + max(3, 0.4 * (f[-1] - f[0]))  # before any wall could turn it
    dx = (x[first][-1] - x[first][0]) * sign / seen.height
    notes = []
    direction = _ramp(dx, 0.0, 0.04)
    if direction < 1.0:
        notes.append(f"does not move {obj.direction} ({dx:+.2f})")
    if obj.motion == "leave":
        out, back = _left_and_back(seen, tr, obj.direction)
        if not out:
            notes.append(f"never leaves on the {obj.direction}")
        elif not back:
            notes.append("does not come back")
        return (direction + out + back) / 3.0, "; ".join(notes)
    level = _ramp(np.ptp(y) / seen.height, 0.1, 0.04)
    if level < 1.0:
        notes.append("does not keep to the ground")
    return 0.75 * direction + 0.25 * level, "; ".join(notes)


def _left_and_back(seen: Seen, tr: Track, direction: str) -> tuple[float, float]:
    """(left the frame on `direction`'s side, then seen again)."""
    dets = tr.dets
    for k, d in enumerate(dets):
        if not (d.box[2] >= seen.width - 2 if direction == "right" else d.box[0] <= 1):
            continue
        if k == len(dets) - 1:
            return float(d.frame < seen.frames - 1), 0.0
        if dets[k + 1].frame - d.frame >= 2:
            return 1.0, 1.0
    return 0.0, 0.0


def _turns(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of lowest points (y down) seen in three frames in a row: down before, not further
    down after."""
    if len(y) < 3:
        return np.zeros(0, int)
    k = np.arange(1, len(y) - 1)
    seen = (f[k] - f[k - 1] == 1) & (f[k + 1] - f[k] == 1)
    return k[seen & (y[k] > y[k - 1]) & (y[k] >= y[k + 1])]


def _fall(seen, spec, obj, tr) -> tuple[float, str]:
    dets = _until_break(seen, spec, tr)
    f, x, y = _series(dets)
    if len(y) < 3:
        return 0.0, "not seen falling"
    drop = (y.max() - y[0]) / seen.height
    fell = _ramp(drop, 0.02, 0.08) if np.argmax(y) > 0 else 0.0
    notes = [] if fell == 1.0 else [f"drops only {drop:.2f} frame heights"]
    if obj.motion == "shatter":
        broke = float(break_frame(seen, spec, obj.color) < seen.frames)
        if not broke:
            notes.append("does not break into pieces")
        return 0.5 * fell + 0.5 * broke, "; ".join(notes)
    rise = 0.0
    for k in _turns(f, y):
        rise = max(rise, (y[k] - y[k:].min()) / seen.height)
    bounced = _ramp(rise, 0.005, 0.02)
    if bounced < 1.0:
        notes.append("does not bounce")
    return 0.5 * fell + 0.5 * bounced, "; ".join(notes)


def _bounce(seen, spec, obj, tr) -> tuple[float, str]:
    f, x, y = _series(_whole(tr.dets))
    sx, sy = np.ptp(x) / seen.height, np.ptp(y) / seen.height
    value = 0.5 * _ramp(sx, 0.02, 0.08) + 0.5 * _ramp(sy, 0.02, 0.08)
    return value, "" if value == 1.0 else f"moves {sx:.2f} across and {sy:.2f} up and down (frame heights)"


_MOTION_CHECKS = {
    "static": _static,
    "slide": _directed,
    "roll": _directed,
    "leave": _directed,
    "fall": _fall,
    "shatter": _fall,
    "bounce": _bounce,
}


# ---------------------------------------------------------------- temporal consistency


def score_consistency(seen: Seen, spec: SceneSpec) -> Score:
    """Product of: appearance stable per track (colour, size, shape), continuous motion, no
    object appearing or vanishing in the open, and a background that holds (a still camera's
    hills do not move, a pan's move steadily; sky and ground keep their colours)."""
    notes: list[str] = []
    background = _background_consistency(seen, spec, notes)
    if not spec.objects:
        return _score(background, _join(notes, "the background holds"))
    tracks = [(tr, _until_break(seen, spec, tr)) for tr in seen.tracks]
    tracks = [(tr, dets) for tr, dets in tracks if dets]
    if not tracks:
        return _score(0.0, "no object seen to follow")
    appearance = _appearance(tracks, notes)
    continuity = _continuity(seen, tracks, notes)
    events = _pop_events(seen, spec, notes)
    pops = max(0.0, 1.0 - 0.6 * events)
    value = appearance * continuity * pops * background
    return _score(value, _join(notes, "objects keep their looks, move continuously, none pops in or out"))


def _appearance(tracks: list[tuple[Track, list[Detection]]], notes: list[str]) -> float:
    """Mean over tracks (by length) of the worst of: shape, area and colour agreeing with the
    track's own usual look, over its unclipped detections."""
    scores, weights = [], []
    for tr, dets in tracks:
        clean = [d for d in dets if not d.clipped]
        if len(clean) < 3:
            continue
        shapes = [d.shape for d in clean if d.shape and min(d.width, d.height) >= 10]  # small ones blur
        shape = _most(shapes) if shapes else ""
        same_shape = np.mean([s == shape for s in shapes]) if shapes else 1.0
        area = np.array([d.area for d in clean], float)
        same_area = np.mean(np.abs(np.log(area / np.median(area))) <= math.log(1.35))
        rgb = np.array([d.rgb for d in clean])
        same_rgb = np.mean(np.linalg.norm(rgb - np.median(rgb, 0), axis=1) <= 30)
        worst = min(same_shape, same_area, same_rgb)
        if worst < 0.9:
            what = min((same_shape, "shape"), (same_area, "size"), (same_rgb, "colour"))[1]
            notes.append(f"{tr.color} object changes {what} ({worst:.0%} of frames agree)")
        scores.append(_ramp(worst, 0.5, 0.9))
        weights.append(len(clean))
    return float(np.average(scores, weights=weights)) if scores else 1.0


def _continuity(seen: Seen, tracks: list[tuple[Track, list[Detection]]], notes: list[str]) -> float:
    """Moving tracks: the mean step between consecutive frames over the mean distance between any
    two of its positions is ~3 / n for smooth motion and ~1 for frames in random order; and no
    step faster than MAX_SPEED."""
    scores, weights = [], []
    limit = MAX_SPEED * seen.height / seen.fps + 2.0
    for tr, dets in tracks:
        if len(dets) < 8:
            continue
        f, x, y = _series(dets)
        p = np.stack([x, y], 1)
        spread = np.linalg.norm(p[:, None] - p[None], axis=-1).mean() * len(p) / max(len(p) - 1, 1)
        if spread < 0.05 * seen.height:
            continue
        consecutive = np.diff(f) == 1
        if consecutive.sum() < 4:
            continue
        steps = np.linalg.norm(np.diff(p, axis=0), axis=1)[consecutive]
        ratio = steps.mean() / spread
        jumps = float(np.mean(steps > limit))
        value = _ramp(ratio, 0.6, 0.35) * (1.0 - jumps)
        if value < 1.0:
            notes.append(f"{tr.color} object jumps around (step / spread {ratio:.2f}, {jumps:.0%} too fast)")
        scores.append(value)
        weights.append(len(dets))
    return float(np.average(scores, weights=weights)) if scores else 1.0


def _near_edge(seen: Seen, box, margin: float) -> bool:
    return box[0] <= margin or box[1] <= margin or box[2] >= seen.width - 1 - margin or box[3] >= seen.height - 1 - margin


def _near_post(seen: Seen, box, t: int, margin: float) -> bool:
    post = seen.posts[min(max(t, 0), seen.frames - 1)]
    return post is not None and _touches(box, post, int(math.ceil(margin)))


def _excused(seen: Seen, d: Detection, step: float) -> bool:
    """Could `d` be at the last (or first) frame it is seen because it went out (came in) at the
    frame's edge or behind the post? `step`: how far it moves in a frame."""
    margin = 2.0 + 1.5 * step
    return d.clipped or _near_edge(seen, d.box, margin) or _near_post(seen, d.box, d.frame, margin)


def _pop_events(seen: Seen, spec: SceneSpec, notes: list[str]) -> int:
    """Objects that appear or vanish in the open: away from the frame's edges and the post (a
    shattering object's pieces excepted, from its break on)."""
    events = 0
    T = seen.frames
    for tr in seen.tracks:
        dets = tr.dets
        end = break_frame(seen, spec, tr.color) if tr.color in _shattering(spec) else T
        if len(dets) < 2 and max(d.area for d in dets) < 2 * min_area(seen.width, seen.height):
            continue  # a speck for one frame: not an object
        for k, d in enumerate(dets):
            before = dets[k - 1] if k > 0 else None
            after = dets[k + 1] if k + 1 < len(dets) else None
            nb = before or after
            step = math.dist((d.cx, d.cy), (nb.cx, nb.cy)) / max(abs(nb.frame - d.frame), 1) if nb else 0.0
            appears = (before is None and d.frame > 0) or (before is not None and d.frame - before.frame > 1)
            vanishes = (after is None and d.frame < T - 1) or (after is not None and after.frame - d.frame > 1)
            for happened, what in ((appears, "appears"), (vanishes, "vanishes")):
                if happened and d.frame < end - 1 and not _excused(seen, d, step):
                    events += 1
                    notes.append(f"a {tr.color} object {what} in the open at frame {d.frame}")
    return events


def _background_consistency(seen: Seen, spec: SceneSpec, notes: list[str]) -> float:
    steady = [np.mean([s == _most(v) for s in v]) for v in (seen.skies, seen.grounds)]
    colours = _ramp(min(steady), 0.7, 0.95)
    if colours < 1.0:
        notes.append("the sky or the ground changes colour")
    far, near = seen.camera["far"], seen.camera["near"]
    if spec.camera == "static":
        moved = max(np.abs(far).max(), np.abs(near).max())
        hills = _ramp(moved, 0.05 * seen.width, max(1.5, 0.01 * seen.width))
        if hills < 1.0:
            notes.append(f"the hills move {moved:.1f} px under a still camera")
    else:
        hills = min(_steadiness(far), _steadiness(near))
        if hills < 1.0:
            notes.append("the hills do not pan steadily")
    return colours * hills


def _steadiness(motion: np.ndarray) -> float:
    """Share of frames on a steady line through frame 0 (slope: the median of motion / frame;
    a frame is on it within 1 px or 15% of the whole motion), mapped 0.6 -> 0, 0.9 -> 1."""
    if len(motion) < 3 or np.ptp(motion) < 1.0:
        return 1.0
    t = np.arange(1, len(motion), dtype=float)
    slope = float(np.median(motion[1:] / t))
    residual = np.abs(motion[1:] - slope * t)
    on_line = float(np.mean(residual <= max(1.0, 0.15 * np.abs(motion).max())))
    return _ramp(on_line, 0.6, 0.9)


# ---------------------------------------------------------------- object permanence


@dataclass
class Episode:
    """A track out of sight (missing, or mostly hidden) between two whole detections."""

    track: Track
    before: list[Detection]  # the last detections before (nearest last)
    after: list[Detection]  # the first detections after (nearest first)
    where: str  # "post" or "edge"


def episodes(seen: Seen, spec: SceneSpec) -> list[Episode]:
    """Stretches where a tracked object went behind the post or out of the frame and came back
    whole. Mostly hidden = missing frames, or a detection under half the object's usual area."""
    out = []
    for tr in seen.tracks:
        dets = _until_break(seen, spec, tr)
        clean = [k for k, d in enumerate(dets) if not d.clipped]
        if len(clean) < 2:
            continue
        usual = float(np.median([dets[k].area for k in clean]))
        for a, b in zip(clean[:-1], clean[1:]):
            inside = dets[a + 1 : b]
            missing = dets[b].frame - dets[a].frame - 1 > len(inside)
            small = any(d.area < 0.5 * usual for d in inside)
            if not (missing or small):
                continue
            post = any(d.post for d in inside) or _near_post(seen, dets[a].box, dets[a].frame, 3 + 0.1 * seen.height)
            out.append(Episode(tr, dets[max(a - 2, 0) : a + 1][::-1], dets[b : b + 3], "post" if post else "edge"))
    return out


def _velocity(dets: list[Detection]) -> np.ndarray:
    """px / frame from the first two of `dets` (in either time order), or zeros."""
    if len(dets) < 2 or dets[0].frame == dets[1].frame:
        return np.zeros(2)
    a, b = dets[0], dets[1]
    return np.array([a.cx - b.cx, a.cy - b.cy]) / (a.frame - b.frame)


def _hide_point(seen: Seen, ep: Episode) -> np.ndarray:
    """Where it went: the post's centre at the object's height, or the nearest point of the edge."""
    d = ep.before[0]
    post = seen.posts[d.frame]
    if ep.where == "post" and post is not None:
        return np.array([0.5 * (post[0] + post[2] + 1), d.cy])
    gaps = [d.box[0], seen.width - 1 - d.box[2], d.box[1], seen.height - 1 - d.box[3]]
    side = int(np.argmin(gaps))
    return np.array([[0.0, d.cy], [seen.width, d.cy], [d.cx, 0.0], [d.cx, seen.height]][side])


def judge_episode(seen: Seen, ep: Episode) -> tuple[float, str]:
    """Same look after as before; it went toward the hiding place and came away from it; behind
    the post it comes out on the other side, out of the frame it comes back on the same side."""
    first, last = ep.before[0], ep.after[0]
    notes = []
    same = 1.0
    shape_in, shape_out = mode(ep.before, "shape"), mode(ep.after, "shape")
    if shape_in and shape_out and shape_in != shape_out:
        same = 0.0
        notes.append(f"went in a {shape_in}, came back a {shape_out}")
    area_in = np.median([d.area for d in ep.before if not d.clipped])
    area_out = np.median([d.area for d in ep.after if not d.clipped])
    if abs(math.log(area_out / area_in)) > math.log(1.4):
        same = 0.0
        notes.append(f"came back {area_out / area_in:.1f}x the area")
    hide = _hide_point(seen, ep)
    slow = 0.3
    v_in, v_out = _velocity(ep.before), _velocity(ep.after)
    to_in = hide - np.array([first.cx, first.cy])
    to_out = np.array([last.cx, last.cy]) - hide
    went = float(np.linalg.norm(v_in) < slow or v_in @ to_in > 0)
    came = float(np.linalg.norm(v_out) < slow or v_out @ to_out > 0)
    side_in, side_out = np.sign(first.cx - hide[0]), np.sign(last.cx - hide[0])
    if ep.where == "post":
        side = float(side_in != side_out or np.linalg.norm(v_in) < slow)
    else:
        side = float(math.dist((first.cx, first.cy), (last.cx, last.cy)) < 0.5 * max(seen.width, seen.height))
    if not went:
        notes.append("was not heading there")
    if not came:
        notes.append("did not come out of it")
    if not side:
        notes.append("came back on the wrong side")
    return same * went * came * side, "; ".join(notes)


def score_permanence(seen: Seen, spec: SceneSpec) -> Score:
    """Mean over episodes of `judge_episode`. Applies when the prompt has a post or an object
    that leaves; with no episode seen: 0 if something should have left and come back, else None."""
    leavers = [o for o in spec.objects if o.motion == "leave"]
    if not (spec.occluder or leavers) or not spec.objects:
        return NA("nothing asked to hide or leave")
    eps = episodes(seen, spec)
    swaps = swapped(seen, spec)
    if not eps and not swaps:
        if leavers:
            return _score(0.0, "nothing left the frame and came back")
        if not seen.tracks:
            return _score(0.0, "no object seen")
        return NA("nothing passed behind the post")
    scores, notes = [0.0] * len(swaps), list(swaps)
    for ep in eps:
        value, note = judge_episode(seen, ep)
        scores.append(value)
        if note:
            where = f"behind the post at frame {ep.before[0].frame}" if ep.where == "post" else f"out of frame at frame {ep.before[0].frame}"
            notes.append(f"{ep.track.color} object {where}: {note}")
    return _score(float(np.mean(scores)), _join(notes, f"{len(eps)} time(s) hidden, each came back the same"))


def swapped(seen: Seen, spec: SceneSpec) -> list[str]:
    """Objects that went behind the post or out of the frame while, from 3 frames before to a
    second after, an object of another colour first came out of the same place: one note each."""
    out = []
    starts = [tr for tr in seen.tracks if tr.dets[0].frame > 0 and tr.color not in _shattering(spec)]
    for tr in seen.tracks:
        if tr.color in _shattering(spec):
            continue
        last = tr.dets[-1]
        if last.frame >= seen.frames - 1 or not _excused(seen, last, 0.0):
            continue
        for new in starts:
            first = new.dets[0]
            if new.color == tr.color or not -3 <= first.frame - last.frame <= seen.fps or not _excused(seen, first, 0.0):
                continue
            at_post = last.post and first.post
            same_side = _near_edge(seen, last.box, 2) and _near_edge(seen, first.box, 2) and (last.cx < seen.width / 2) == (first.cx < seen.width / 2)
            if at_post or same_side:
                out.append(f"a {tr.color} object went {'behind the post' if at_post else 'out of frame'} at frame {last.frame} "
                           f"and a {new.color} one came out at frame {first.frame}")  # fmt: skip
                break
    return out


# ---------------------------------------------------------------- gravity


def score_gravity(seen: Seen, spec: SceneSpec) -> Score:
    """Falling objects: between bounces the height fits a parabola whose acceleration is the
    world's gravity (within a factor of 1.5) pointing down, and each bounce happens at the floor.
    Per object: (share of flights that fit) x (share of bounces at the floor); the mean over objects."""
    from kinema.world.physics import GRAVITY

    fallers = [(o, tr) for o, tr in zip(spec.objects, match_objects(seen, spec)) if o.motion in ("fall", "shatter")]
    if not fallers:
        return NA("nothing asked to fall")
    g = GRAVITY * seen.height  # px / s^2
    scores, notes = [], []
    for obj, tr in fallers:
        if tr is None:
            scores.append(0.0)
            notes.append(f"no {obj.color} {obj.shape} to follow")
            continue
        dets = [d for d in _until_break(seen, spec, tr) if not d.post and d.box[1] > 0 and d.box[3] < seen.height - 1]
        flights, turns, crowded, why = _fall_checks(dets, seen, g, bounces=obj.motion == "fall")
        if not flights and (len(dets) < 4 or crowded):
            notes.append(f"{obj.color} {obj.shape}: its fall is too hidden or crowded to judge")
            continue
        if not flights:  # it moved, alone, and no stretch of it is a fall
            moved = len(dets) >= 4 and np.ptp(_series(dets)[2]) >= 0.05 * seen.height
            why = "no stretch of its motion is a fall" if moved else "never falls"
        scores.append(float(np.mean(flights)) * (float(np.mean(turns)) if turns else 1.0) if flights else 0.0)
        if why:
            notes.append(f"{obj.color} {obj.shape}: {why}")
    if not scores:
        return NA(_join(notes, "no fall seen"))
    return _score(float(np.mean(scores)), _join(notes, "falls follow gravity and bounce on the floor"))


def _contacts(seen: Seen, dets: list[Detection]) -> np.ndarray:
    """Per detection: does it touch another object (bounding circles, radius ~0.68 of the box's
    longer side, plus a frame's motion)? Collisions are not gravity's doing."""
    out = np.zeros(len(dets), bool)
    for k, d in enumerate(dets):
        r = 0.68 * max(d.width, d.height)
        step = math.dist((d.cx, d.cy), (dets[k - 1].cx, dets[k - 1].cy)) if k else 0.0
        for e in seen.detections[d.frame]:
            if e is not d and math.dist((d.cx, d.cy), (e.cx, e.cy)) <= r + 0.68 * max(e.width, e.height) + step:
                out[k] = True
    return out


def _fall_checks(dets: list[Detection], seen: Seen, g: float, bounces: bool = True) -> tuple[list[float], list[float], bool, str]:
    """One pass / fail per flight between bounces and per bounce (if it `bounces`: a shattering
    body does not); flights are cut where the body touches another, and turns there are not judged.
    Returns (flights, bounces, whether it touched another, notes)."""
    if len(dets) < 4:
        return [], [], False, ""
    f, _, y = _series(dets)
    t = f / seen.fps
    touch = _contacts(seen, dets)
    touch[1:] |= touch[:-1]
    touch[:-1] |= touch[1:]
    turns = np.array([k for k in _turns(f, y) if not touch[k]], int)
    checks, landings, notes = [], [], []
    edges = sorted({-1, *turns.tolist(), *np.flatnonzero(touch).tolist(), len(y)})
    for a, b in zip(edges[:-1], edges[1:]):
        ts, ys = t[a + 1 : b], y[a + 1 : b]
        if len(ts) < 4 or np.ptp(ys) < max(1.5, 0.02 * seen.height):
            continue
        coef, res, *_ = np.polyfit(ts - ts[0], ys, 2, full=True)
        rms = math.sqrt(float(res[0]) / len(ts)) if len(res) else 0.0
        acc = 2.0 * coef[0]
        ok = 0.67 * g <= acc <= 1.5 * g and rms <= 0.6 + 0.01 * seen.height
        checks.append(float(ok))
        if not ok:
            notes.append(f"flight from frame {int(f[a + 1])}: acceleration {acc / g:.2f} g, misfit {rms:.1f} px")
    shape = mode(dets, "shape") or "ball"
    for k in turns if bounces else []:
        step = max(abs(y[k] - y[k - 1]), abs(y[k + 1] - y[k]))
        bottom = _lowest(dets[k], shape)
        ok = abs(bottom - seen.ground_y) <= 2.0 + step
        landings.append(float(ok))
        if not ok:
            notes.append(f"turns at frame {int(f[k])}, {seen.ground_y - bottom:.0f} px above the floor")
    return checks, landings, bool(touch.any()), "; ".join(notes)


# ---------------------------------------------------------------- persistent state


def score_persistence(seen: Seen, spec: SceneSpec) -> Score:
    """The brush's stroke: what is painted (its colour in three frames in a row) stays painted in
    every later frame unless something stands in front of it; and it grows while the brush paints."""
    if spec.brush is None:
        return NA("no brush asked")
    labels = seen.labels
    brush = PALETTE.index(spec.brush.color)
    paint = labels == brush  # (T, H, W)
    hidden = _dilate(((labels <= POST) | (labels == MARK)) & ~paint, 1)  # objects and the post stand in front
    if len(paint) < 4:
        return NA("too short to see a stroke")
    stable = paint[:-2] & paint[1:-1] & paint[2:]  # (T-2, H, W): painted three frames in a row
    stable = _drop_specks(stable, max(4.0, min_area(seen.width, seen.height) / 3))
    painted = np.logical_or.accumulate(stable, axis=0)  # painted by frame k + 2
    area = painted.reshape(len(painted), -1).sum(1)
    # gone at frame k + 3: not painted, not behind anything, not beside paint (the brush's tip,
    # wider than the stroke, leaves a thin rim behind as it moves on)
    gone = painted[:-1] & ~paint[3:] & ~hidden[3:] & ~_dilate(paint[3:], 1)
    loss = float(gone.any(0).sum() / max(area[-1], 1))
    keeps = _ramp(loss, 0.2, 0.02)
    least = 0.002 * seen.width * seen.height
    grows = _ramp(area[-1] / max(area[0], least), 1.2, 2.0) if area[-1] >= least else 0.0
    notes = []
    if area[-1] < least:
        notes.append("nothing painted")
    elif grows < 1.0:
        notes.append(f"the stroke does not grow ({area[0]} -> {area[-1]} px)")
    if keeps < 1.0:
        notes.append(f"{loss:.0%} of the painted area disappears")
    return _score(keeps * grows, _join(notes, f"the stroke grows to {area[-1]} px and never shrinks"))


def _drop_specks(mask: np.ndarray, least: float) -> np.ndarray:
    """Keep the 4-connected regions of `mask` (T, H, W) of at least `least` pixels."""
    ids = components(mask.astype(np.uint8), mask)
    flat = ids.reshape(-1)
    inside = flat >= 0
    if not inside.any():
        return mask
    roots, inv, counts = np.unique(flat[inside], return_inverse=True, return_counts=True)
    keep = np.zeros_like(mask).reshape(-1)
    keep[np.flatnonzero(inside)] = counts[inv] >= least
    return keep.reshape(mask.shape)


# ---------------------------------------------------------------- camera


def score_camera(seen: Seen, spec: SceneSpec) -> Score:
    """A pan: both hill bands move against it, steadily, the near band more than the far one
    (the world's ratio is 2; 1.4 to 3 passes). A still camera is checked under consistency."""
    if spec.camera == "static":
        return NA("the camera is asked to stay still (checked under consistency)")
    far, near = seen.camera["far"], seen.camera["near"]
    want = -1.0 if spec.camera == "pan right" else 1.0  # the world moves against the pan
    notes = []
    moves = _ramp(abs(near[-1]) / seen.height, 0.01, 0.03)
    if moves < 1.0:
        notes.append(f"the near hills move only {abs(near[-1]):.1f} px")
    direction = float(np.sign(near[-1]) == want and np.sign(far[-1]) == want)
    if not direction:
        notes.append(f"the hills move the wrong way (far {far[-1]:+.1f} px, near {near[-1]:+.1f} px)")
    ratio = abs(near[-1]) / max(abs(far[-1]), 1e-6)
    parallax = min(_ramp(ratio, 1.0, 1.4), _ramp(ratio, 4.5, 3.0))
    if parallax < 1.0:
        notes.append(f"near / far motion {ratio:.2f}, should be about 2")
    steady = min(_steadiness(far), _steadiness(near))
    if steady < 1.0:
        notes.append("the pan is not steady")
    value = moves * direction * parallax * steady
    return _score(value, _join(notes, f"pans with parallax: near {near[-1]:+.1f} px, far {far[-1]:+.1f} px"))


# ---------------------------------------------------------------- horizon

# Where the world's bands lie (fractions of the height; `kinema.world.physics.plan`): the ground
# line at 0.76 - 0.80, the far mountains' tops no higher than 0.41, so rows above SKY_ROWS are sky
# and rows below GROUND_ROWS ground, wherever the hills and the camera are.
SKY_ROWS, GROUND_ROWS, ABOVE_GROUND = 0.35, 0.84, 0.72
ROW_SHARE = 0.5  # a row is sky (ground) when this share of it has the colour; objects cover the rest


def score_horizon(seen: Seen, spec: SceneSpec) -> Score:
    """One horizon at the world's height: the mean of three shares of rows, each as it should
    be: the top rows (above 35%) sky, the bottom rows (below 84%) ground, and no ground-coloured
    row above 72%. A frame whose bands repeat (a second horizon) fails the last two."""
    H = seen.height
    sky, ground = seen.rows >= ROW_SHARE  # (H,), (H,)
    y = (np.arange(H) + 0.5) / H
    parts = {"sky at the top": sky[y < SKY_ROWS].mean(), "ground at the bottom": ground[y > GROUND_ROWS].mean(),
             "no ground above the horizon": 1.0 - ground[y < ABOVE_GROUND].mean()}  # fmt: skip
    parts = {k: float(v) for k, v in parts.items() if not np.isnan(v)}
    notes = [f"{k}: {v:.0%} of those rows" for k, v in parts.items() if v < 0.95]
    value = float(np.mean(list(parts.values()))) if parts else 0.0
    return _score(value, _join(notes, f"one horizon, ground line at {seen.ground_y / H:.0%} of the height"))


# ---------------------------------------------------------------- the judge


SCORERS = {
    "objects": score_objects,
    "motion": score_motion,
    "consistency": score_consistency,
    "permanence": score_permanence,
    "gravity": score_gravity,
    "persistence": score_persistence,
    "camera": score_camera,
    "horizon": score_horizon,
}


def judge(frames: np.ndarray, fps: float, spec: SceneSpec, seen: Seen | None = None) -> dict[str, Score]:
    """Every world metric of one clip; `seen` if it was already read."""
    seen = seen if seen is not None else see(frames, fps, spec)
    return {name: scorer(seen, spec) for name, scorer in SCORERS.items()}


# ---------------------------------------------------------------- framing
# Relative to a real render of the same prompt and seed (how much of the time the world itself
# keeps the objects in view: one that leaves the frame is out of it on purpose), so it is scored
# by the suite's runner, which has that render, not by `judge`.


def framing_share(seen: Seen, spec: SceneSpec) -> float | None:
    """The share of frames in which the asked objects are wholly inside the frame, the mean over
    the objects: an object of a colour asked n times counts as in view in a frame for each of up to
    n detections of that colour that do not touch the frame's edge (one behind the post is in
    the frame, only hidden). None for a scene without objects."""
    asked: dict[str, int] = {}
    for o in spec.objects:
        asked[o.color] = asked.get(o.color, 0) + 1
    if not asked or seen.frames == 0:
        return None
    whole = 0.0
    for color, n in asked.items():
        for dets in seen.detections:
            whole += min(n, sum(d.color == color and not d.edge for d in dets))
    return whole / (seen.frames * len(spec.objects))


def score_framing(share: float | None, real: float | None) -> Score:
    """A clip's framing against the real render's: min(1, share / real). n/a without objects or
    when the real render never shows them all whole."""
    if share is None or real is None:
        return NA("the prompt asks for no object")
    if real <= 0:
        return NA("the real render never shows the asked objects wholly in view")
    return _score(share / real, f"asked objects wholly in view in {share:.0%} of frames (real render {real:.0%})")


# ---------------------------------------------------------------- task metrics
# For the tasks of kinema.tasks; each takes frames (T, H, W, 3) uint8 and what the task was given.

PSNR_RANGE = (10.0, 30.0)  # dB mapped to 0 and 1: 30 dB is a faithful copy of this flat world
SEAM_RANGE = (2.5, 5.0)  # seam jump / typical change: 2.5 or less is seamless (a bounce), 5 or more a cut
LOCAL_STEPS = 4  # a seam is compared with this many steps beside it


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def first_frame(frames: np.ndarray, image: np.ndarray) -> Score:
    """Animate: the first frame is the given image (PSNR, 10 dB -> 0, 30 dB -> 1)."""
    if frames.shape[1:] != image.shape:
        return _score(0.0, f"frame size {frames.shape[1:3]} is not the image's {image.shape[:2]}")
    db = psnr(frames[0], image)
    return _score(_ramp(db, *PSNR_RANGE), f"first frame {db:.1f} dB from the image")


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames, grey levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def typical_change(frames: np.ndarray) -> float:
    """The upper quartile of a clip's frame-to-frame changes (at least half a grey level): what a
    step of this clip may look like, a bounce's fast step included."""
    steps = [_change(frames[t], frames[t + 1]) for t in range(len(frames) - 1)]
    return max(float(np.quantile(steps, 0.75)) if steps else 0.0, 0.5)


def seam(frames: np.ndarray, at: int, reference: np.ndarray | None = None) -> Score:
    """The step from frame at - 1 to frame at against the typical step, the worse of two ways:
    pixels (mean absolute change, against the typical change of `reference`, the clip the task
    was given, or else of `frames` away from the seam) and objects (each tracked object's move
    across the seam against its own moves in the frames around it, so a jump back to where it
    was is a jump even when the pixels change as much as in any step). SEAM_RANGE maps the
    ratio: 2.5x or less -> 1, 5x or more -> 0."""
    if not 0 < at < len(frames):
        return NA("no seam inside the clip")
    if frames[at].shape != frames[at - 1].shape:
        return _score(0.0, "the frames on both sides of the seam differ in size")
    jump = _change(frames[at - 1], frames[at])
    if reference is None:
        reference = np.concatenate([frames[: at - 1], frames[at:]]) if len(frames) > 3 else frames
    pixels = jump / typical_change(reference)
    moves = _object_jump(frames, at)
    ratio = max(pixels, moves)
    what = f"pixels change {pixels:.1f}x the typical step" + (f", objects move {moves:.1f}x theirs" if moves else "")
    return _score(_ramp(ratio, SEAM_RANGE[1], SEAM_RANGE[0]), f"at the seam {what}")


def _object_jump(frames: np.ndarray, at: int) -> float:
    """The largest ratio, over objects seen on both sides of the seam, of the move across it to the
    upper quartile of their moves (at least 1 px) in the LOCAL_STEPS frames on each side."""
    lo, hi = max(at - LOCAL_STEPS - 1, 0), min(at + LOCAL_STEPS + 1, len(frames))
    seen = see(frames[lo:hi], 1.0, SceneSpec(()))  # tracks only: the frame rate plays no part
    worst = 0.0
    for tr in seen.tracks:
        at_ = {d.frame + lo: d for d in tr.dets}
        if at - 1 not in at_ or at not in at_:
            continue
        steps = [math.dist((at_[k].cx, at_[k].cy), (at_[k + 1].cx, at_[k + 1].cy)) for k in range(lo, hi - 1)
                 if k != at - 1 and k in at_ and k + 1 in at_]  # fmt: skip
        typical = max(float(np.quantile(steps, 0.75)) if steps else 0.0, 1.0)
        move = math.dist((at_[at - 1].cx, at_[at - 1].cy), (at_[at].cx, at_[at].cy))
        worst = max(worst, move / typical)
    return worst


def loop_seam(frames: np.ndarray, reference: np.ndarray | None = None) -> Score:
    """Seamless loop: the last frame leads into the first like any other step."""
    return seam(np.concatenate([frames, frames[:1]]), len(frames), reference)


def extension_seam(given: np.ndarray, out: np.ndarray) -> Score:
    """Extend forward: `out` continues `given` (the clip extended; `out` holds the new frames,
    or the whole result starting with `given`); the jump against the last steps of `given`."""
    new = out[len(given) :] if len(out) > len(given) and np.array_equal(out[: len(given)], given) else out
    return seam(np.concatenate([given, new]), len(given), given[-LOCAL_STEPS - 1 :])


def connect(a: np.ndarray, b: np.ndarray, middle: np.ndarray) -> Score:
    """Connect two videos: `middle` starts where A ends and ends where B starts (the worse seam,
    each against the steps of A's end or B's start)."""
    whole = np.concatenate([a, middle, b])
    start = seam(whole, len(a), a[-LOCAL_STEPS - 1 :])
    end = seam(whole, len(a) + len(middle), b[: LOCAL_STEPS + 1])
    worse = min((start, "start"), (end, "end"), key=lambda s: s[0].value)
    return _score(worse[0].value, f"start: {start.reason}; end: {end.reason}")


def sdedit(given: np.ndarray, out: np.ndarray, fps: float, spec: SceneSpec, given_spec: SceneSpec | None = None) -> Score:
    """SDEdit video -> video: the layout is kept (IoU of the object masks, any colour, over all
    frames: 0.4 -> 0, 0.8 -> 1) and the edit asked is done: with `given_spec` (the input's scene),
    the objects, sky or ground that `spec` changes are there as asked; without it, `objects` of
    `spec`. The worse of the two."""
    if given.shape != out.shape:
        return _score(0.0, f"output {out.shape} is not the input's size {given.shape}")
    masks = []
    brushes = {b.brush.color for b in (spec, given_spec) if b is not None and b.brush is not None}
    for frames in (given, out):
        labels = segment(frames)
        masks.append((labels < len(PALETTE)) & ~np.isin(labels, [PALETTE.index(c) for c in brushes]))
    union = float((masks[0] | masks[1]).sum())
    iou = float((masks[0] & masks[1]).sum()) / union if union else 1.0
    layout = _ramp(iou, 0.4, 0.8)
    done, why = _edit_done(see(out, fps, spec), spec, given_spec)
    return _score(min(layout, done), f"layout IoU {iou:.2f}; edit: {why}")


def _edit_done(seen: Seen, spec: SceneSpec, before: SceneSpec | None) -> tuple[float, str]:
    if before is None:
        asked = score_objects(seen, spec)
        return asked.value, asked.reason
    per_object, notes = object_scores(seen, spec)
    parts = [v for i, v in enumerate(per_object) if i >= len(before.objects) or spec.objects[i] != before.objects[i]]
    for what, names in (("sky", seen.skies), ("ground", seen.grounds)):
        if getattr(spec, what) != getattr(before, what):
            got = _most(names)
            parts.append(float(got == getattr(spec, what)))
            if got != getattr(spec, what):
                notes.append(f"{what} looks {got}, asked {getattr(spec, what)}")
    if not parts:
        return 1.0, "nothing to change"
    return float(np.mean(parts)), _join(notes, "the change asked is there")
