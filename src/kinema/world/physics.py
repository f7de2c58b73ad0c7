"""Kinema World physics: where every object is at every frame, in size-independent units.

Units. A length is a fraction of the frame height: the frame is `aspect` (= width / height) wide
and 1 high, x to the right, y down, so the same scene at 64x36 and 1280x720 moves identically
(pixels = units * height). Time is in seconds. Angles are radians, counter-clockwise as seen.

World and camera. Objects live in world coordinates; the camera's x offset is `cam_speed * t`
and an object is on screen at x - cam. The frame's edges are walls for the objects that move by
themselves (slide, roll, bounce, and falling bodies until they rest): a wall moves with the
camera and reflects the velocity relative to it, so on screen a bounce looks the same whether
the camera pans or not. The ground line is the floor; the top edge is a ceiling for bounce only.

Motions (spec.MOTIONS):
    static   fixed in the world (on the ground or in the air); an immovable obstacle
    slide    on the ground, constant horizontal speed, reflected by walls and other objects
    roll     as slide, and turns by -dx / r (rolls without slipping)
    fall     dropped from the upper part; gravity; bounces on the floor with restitution e
             until a rebound is slower than REST_SPEED, then rests (with ground friction)
    bounce   no gravity; reflects off the four walls (the floor is the ground line)
    leave    scripted on screen: moves out on its side, waits out of frame, comes back to where
             it started and stays; an immovable obstacle for the others while it moves
    shatter  falls from high; at its first floor contact it breaks into 4-8 shards of its colour
             that fly apart under gravity, bounce (e = 0.35), slide to rest with friction

Integration is exact between events: a body moves ballistically (constant acceleration) over a
substep, and every floor, wall or ceiling contact inside it is solved for its exact time, so a
falling body follows a parabola between bounces whatever the frame rate. Contacts between objects
(bounding circles, elastic, masses proportional to area) are resolved at the end of each
substep by an impulse and a positional correction, so at every frame no two objects overlap;
substeps are short enough that no object crosses more than ~40% of the smallest radius relative
to another. Shards collide with the objects, the floor and walls, not with each other.

`plan(spec, aspect, duration, rng)` draws everything the spec leaves open (positions, speeds,
timings, backgrounds, brush path) from `rng`, in an order that does not depend on the pixel
size; `simulate(layout, times)` is deterministic and uses no randomness.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from kinema.world.spec import SIZES, SceneSpec

GRAVITY = 2.2  # frame heights / s^2: a drop of half the frame takes ~0.67 s
REST_SPEED = 0.12  # a rebound slower than this (frame heights / s) ends in rest
MAX_SPEED = 2.0  # a body squeezed between others is never shot faster than this
SHARD_RESTITUTION = 0.35
GROUND_FRICTION = 4.0  # 1/s: exponential decay of the horizontal speed of a body resting on the ground
LAYER_RATES = {"far": 0.25, "near": 0.5, "ground": 1.0}  # screen motion per unit of camera motion
OCCLUDER_TOP = (0.10, 0.16)  # the post's top, as a fraction of the height
BRUSH_RADIUS = 0.018  # stroke radius / short side

# Shapes as convex polygons of unit radius, counter-clockwise, y up (the ball and the star are
# handled on their own: a circle, and a pentagram = the points inside >= 4 of its 5 lines).
_S = 0.74  # the square's half side: its corners reach 1.05 r
POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-_S, -_S], [_S, -_S], [_S, _S], [-_S, _S]]),
    "triangle": np.array([[math.cos(a), math.sin(a)] for a in np.radians([210, 330, 90])]),
    "diamond": np.array([[0.0, -1.0], [0.72, 0.0], [0.0, 1.0], [-0.72, 0.0]]),
}
STAR_POINTS = np.array([[math.cos(a), math.sin(a)] for a in np.radians(90 + 72 * np.arange(5))])


def half_planes(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (k, 2) and offsets (k,) of a counter-clockwise convex polygon:
    a point p is inside when every n . p - d <= 0."""
    edges = np.roll(vertices, -1, axis=0) - vertices
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return normals, np.einsum("kd,kd->k", normals, vertices)


def star_lines() -> tuple[np.ndarray, np.ndarray]:
    """The pentagram's 5 lines (point i to point i + 2) as outward normals and offsets."""
    a, b = STAR_POINTS, np.roll(STAR_POINTS, -2, axis=0)
    edges = b - a
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return normals, np.einsum("kd,kd->k", normals, a)


# ---------------------------------------------------------------- the plan of a scene


@dataclass
class Shard:
    offset: tuple[float, float]  # from the parent's centre at impact, units
    velocity: tuple[float, float]
    omega: float
    radius: float
    vertices: np.ndarray  # (k, 2) unit radius, counter-clockwise, y up


@dataclass
class Leave:
    """A screen-space script: out at speed v, wait, back to x0, stay."""

    x0: float
    exit_x: float
    speed: float
    t_out: float  # fully out
    t_back: float  # starts coming back
    t_home: float  # back at x0
    direction: int  # +1 right, -1 left

    def screen_x(self, t: float) -> tuple[float, float]:
        """(x on screen, screen velocity) at time t."""
        if t < self.t_out:
            return self.x0 + self.direction * self.speed * t, self.direction * self.speed
        if t < self.t_back:
            return self.exit_x, 0.0
        if t < self.t_home:
            return self.exit_x - self.direction * self.speed * (t - self.t_back), -self.direction * self.speed
        return self.x0, 0.0


@dataclass
class Body:
    """One object's physical state (units, world coordinates)."""

    index: int
    kind: str  # a motion, or "shard"
    shape: str  # a spec shape, or "shard"
    r: float
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    angle: float = 0.0
    omega: float = 0.0
    restitution: float = 1.0
    parent: int | None = None
    vertices: np.ndarray | None = None  # shards only
    leave: Leave | None = None
    shards: list[Shard] = field(default_factory=list)  # shatter only
    resting: bool = False
    alive: bool = True
    broke_at: float | None = None
    # fixed by the kind (plain attributes: the simulation reads them in its inner loops)
    movable: bool = field(init=False)  # static and scripted bodies have infinite mass
    lock_y: bool = field(init=False)  # slide and roll stay on the ground
    gravity: bool = field(init=False)
    mass: float = field(init=False)
    outline: tuple[tuple[float, float], ...] = field(init=False)  # shard vertices as floats

    def __post_init__(self) -> None:
        self.movable = self.kind not in ("static", "leave")
        self.lock_y = self.kind in ("slide", "roll")
        self.gravity = self.kind in ("fall", "shatter", "shard")
        self.mass = self.r * self.r
        self.outline = tuple(map(tuple, self.vertices.tolist())) if self.vertices is not None else ()

    @property
    def walls(self) -> bool:
        return self.kind in ("slide", "roll", "bounce") or (self.gravity and not self.resting)

    def bottom(self) -> float:
        """Distance from the centre to the lowest point (shards: at the current angle)."""
        if not self.outline:
            return self.r
        c, s = math.cos(self.angle), math.sin(self.angle)
        return max(-(vx * s + vy * c) for vx, vy in self.outline) * self.r


@dataclass
class Layer:
    """A parallax layer: top(x) = base - sum_k amp_k * bump(freq_k * x + phase_k), x in the
    layer's own units (screen x / height + rate * camera offset); bumps lie in [0, 1]."""

    base: float
    amps: tuple[float, ...]
    freqs: tuple[float, ...]
    phases: tuple[float, ...]
    peaked: bool  # mountains (sharp peaks) or hills (smooth)
    rate: float

    def top(self, x: np.ndarray) -> np.ndarray:
        out = np.full(x.shape, self.base, dtype=np.float64)
        for a, f, p in zip(self.amps, self.freqs, self.phases):
            if self.peaked:  # a triangle wave: straight slopes, sharp peaks
                u = f * x + p / (2 * math.pi)
                out -= a * (1.0 - 2.0 * np.abs(u - np.floor(u + 0.5)))
            else:
                out -= a * (0.5 + 0.5 * np.sin(2 * math.pi * f * x + p))
        return out


@dataclass
class BrushPath:
    path: str
    radius: float  # stroke radius, units
    x0: float
    x1: float
    yc: float
    amp: float
    phase: float
    turns: float
    duration: float  # seconds to draw the whole path; the tip then stays

    def tip(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.clip(np.asarray(t, dtype=np.float64) / self.duration, 0.0, 1.0)
        if self.path == "circle":
            a = self.phase + 2 * math.pi * self.turns * u
            cx = 0.5 * (self.x0 + self.x1)
            return cx + self.amp * np.cos(a), self.yc - self.amp * np.sin(a)
        x = self.x0 + (self.x1 - self.x0) * u
        w = self.turns * u + self.phase / (2 * math.pi)
        if self.path == "wave":
            return x, self.yc + self.amp * np.sin(2 * math.pi * w)
        return x, self.yc + self.amp * (4 * np.abs(w - np.floor(w + 0.5)) - 1)  # zigzag

    def y_range(self) -> tuple[float, float]:
        return self.yc - self.amp - self.radius, self.yc + self.amp + self.radius


@dataclass
class Layout:
    aspect: float
    duration: float
    ground: float  # y of the ground line
    cam_speed: float  # units / s, + when the camera pans right
    layers: list[Layer]
    occluder: tuple[float, float, float, float] | None  # x0, x1, y0, y1 on screen, units
    brush: BrushPath | None
    bodies: list[Body]
    passer: int | None  # the object chosen to pass behind the occluder

    def cam(self, t: float) -> float:
        return self.cam_speed * t


def plan(spec: SceneSpec, aspect: float, duration: float, rng: np.random.Generator) -> Layout:
    """Draw everything the spec leaves open. Uses `rng` in a fixed order (pixel size plays no part)."""
    A, D = aspect, duration
    short = min(1.0, A)
    ground = float(rng.uniform(0.76, 0.80))
    cam_speed = 0.0
    if spec.camera != "static":
        cam_speed = float(rng.uniform(0.08, 0.13)) * (1.0 if spec.camera == "pan right" else -1.0)
    layers = [
        Layer(0.58, tuple(rng.uniform(0.6, 1.0, 3) * (0.09, 0.05, 0.03)), tuple(rng.uniform(0.8, 1.25, 3) * (0.9, 1.9, 3.7)),
              tuple(rng.uniform(0, 2 * math.pi, 3)), True, LAYER_RATES["far"]),
        Layer(0.70, tuple(rng.uniform(0.7, 1.0, 2) * (0.04, 0.025)), tuple(rng.uniform(0.8, 1.25, 2) * (0.7, 1.6)),
              tuple(rng.uniform(0, 2 * math.pi, 2)), False, LAYER_RATES["near"]),
    ]  # fmt: skip

    radii = [SIZES[o.size] * short for o in spec.objects]
    passer = _choose_passer(spec, cam_speed) if spec.occluder else None
    occluder = None
    post_x = 0.5 * A
    if spec.occluder:
        post_x = A * (0.5 + float(rng.uniform(-0.03, 0.03)))
        hw = max(0.85 * radii[passer], 0.05 * short) if passer is not None else 0.06 * short
        occluder = (post_x - hw, post_x + hw, float(rng.uniform(*OCCLUDER_TOP)), ground + 0.02)

    # The passer, leavers, sliders and rollers first: static objects are then kept out of their
    # way (a static object would stop a slide at once, and a leaver, scripted, would go through it).
    laned = ("slide", "roll", "leave")
    rank = {"slide": 1, "roll": 1, "leave": 2}
    order = sorted(range(len(spec.objects)), key=lambda i: (0 if i == passer else rank.get(spec.objects[i].motion, 3), i))
    placed: dict[int, Body] = {}
    lanes: list[tuple[float, float, float, float]] = []
    for i in order:
        obj = spec.objects[i]
        body = None
        for attempt in range(30):  # re-draw the start until it is clear of the objects placed so far
            body = _place(i, obj.motion, obj.direction, radii[i], A, D, ground, cam_speed, occluder, i == passer, attempt >= 10, rng)
            clear = all(math.hypot(body.x - b.x, body.y - b.y) > body.r + b.r + 0.01 for b in placed.values())
            if body.kind == "static":
                clear = clear and not any(_blocks(body, lane) for lane in lanes)
            if body.kind == "leave":  # two scripted leavers would go through each other
                mine = _lane(body, occluder, ground, A)
                clear = clear and not any(_crosses(mine, lane) for lane in lanes)
            if clear:
                break
        body.shape = obj.shape
        placed[i] = body
        lane = _lane(body, occluder, ground, A) if (i == passer or body.kind in laned) else None
        if lane is not None:
            lanes.append(lane)
    bodies = [placed[i] for i in range(len(spec.objects))]

    brush = None
    if spec.brush is not None:
        path = spec.brush.path
        amp = float(rng.uniform(0.05, 0.08)) if path != "circle" else float(rng.uniform(0.06, 0.09)) * short
        span = A * float(rng.uniform(0.6, 0.75))
        left = 0.5 * (A - span) + A * float(rng.uniform(-0.05, 0.05))
        x0, x1 = (left, left + span) if rng.random() < 0.5 else (left + span, left)
        if path == "circle":  # a circle sits to one side of the middle, where the post may stand
            cx = A * (0.5 + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.2, 0.28)))
            x0, x1 = cx, cx
        brush = BrushPath(
            path=path, radius=BRUSH_RADIUS * short, x0=x0, x1=x1, yc=float(rng.uniform(0.18, 0.26)), amp=amp,
            phase=float(rng.uniform(0, 2 * math.pi)), turns=float(rng.choice([1.5, 2.0, 2.5])) if path != "circle" else 1.0,
            duration=float(np.clip(D * rng.uniform(0.75, 0.95), 1.0, 6.0)),
        )  # fmt: skip
    return Layout(A, D, ground, cam_speed, layers, occluder, brush, bodies, passer)


_PASS_ORDER = ("slide", "roll", "leave", "bounce", "fall", "shatter")


def _choose_passer(spec: SceneSpec, cam_speed: float) -> int | None:
    """The object that will pass behind the post: the best horizontal mover, else (with a
    panning camera) a static object the pan carries behind it."""
    for motion in _PASS_ORDER:
        for i, obj in enumerate(spec.objects):
            if obj.motion == motion:
                return i
    if cam_speed != 0.0:
        for i, obj in enumerate(spec.objects):
            return i
    return None


def _lane(b: Body, occluder, ground: float, A: float) -> tuple[float, float, float, float] | None:
    """The region (x0, x1, y0, y1) a body sweeps on its way at the start, or None if it roams."""
    if b.kind == "leave":
        xs = (b.leave.x0, b.leave.exit_x)
        return min(xs) - b.r, max(xs) + b.r, b.y - b.r, b.y + b.r
    if b.kind in ("slide", "roll"):  # from its start to the wall ahead
        wall = A if b.vx > 0 else 0.0
        return min(b.x, wall) - b.r, max(b.x, wall) + b.r, b.y - b.r, b.y + b.r
    if occluder is None or b.kind not in ("fall", "shatter"):
        return None
    post_x, hw = 0.5 * (occluder[0] + occluder[1]), 0.5 * (occluder[1] - occluder[0])
    beyond = post_x + math.copysign(hw + 2 * b.r, post_x - b.x)
    return min(b.x, beyond) - b.r, max(b.x, beyond) + b.r, b.y - b.r, ground


def _crosses(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _blocks(b: Body, lane: tuple[float, float, float, float]) -> bool:
    x0, x1, y0, y1 = lane
    return b.x + b.r > x0 and b.x - b.r < x1 and b.y + b.r > y0 and b.y - b.r < y1


def _place(index, motion, direction, r, A, D, ground, cam_speed, occluder, passer, crowded, rng) -> Body:
    """Start state of one object; `passer` objects get a start and speed that take them behind the
    post; `crowded`: the preferred starts were taken, use the whole frame."""
    sign = 1.0 if direction == "right" else -1.0
    floor = ground - r
    post_x = 0.5 * (occluder[0] + occluder[1]) if occluder else 0.5 * A
    hw = 0.5 * (occluder[1] - occluder[0]) if occluder else 0.0

    def x_any() -> float:
        return float(rng.uniform(r, A - r))

    def x_beside_post() -> tuple[float, float]:
        """A start on a random side of the post and the distance to get past it."""
        side = -1.0 if rng.random() < 0.5 else 1.0
        room = max(0.5 * A - hw - 2 * r, 0.0)
        x = post_x + side * (hw + r + float(rng.uniform(0.3, 0.9)) * room)
        x = min(max(x, r), A - r)
        return x, abs(post_x - x) + hw + r

    body = Body(index, motion, "", r, 0.0, floor)
    if motion == "static":
        on_ground = rng.random() < 0.5
        body.y = floor if on_ground else float(rng.uniform(0.25, max(floor - 0.1, 0.26)))
        body.x = x_any()
        if passer:  # the pan carries it behind the post at t_cross
            body.x = post_x + cam_speed * float(rng.uniform(0.35, 0.6)) * D
    elif motion in ("slide", "roll"):
        speed = float(rng.uniform(0.2, 0.38))
        start = float(rng.uniform(r, max(A - r if crowded else 0.45 * A, r)))  # from the side it moves away from
        body.x = start if sign > 0 else A - start
        if passer:  # start on the side it comes from, get past the post by 3/4 of the clip
            room = max(post_x - hw - 2 * r, 0.0) if sign > 0 else max(A - post_x - hw - 2 * r, 0.0)
            start = r + float(rng.uniform(0.0, 0.5)) * room
            body.x = start if sign > 0 else A - start
            speed = max(speed, (abs(post_x - body.x) + hw + r) / (0.75 * D))
        body.vx = sign * speed + cam_speed  # the speed is the one seen on screen
    elif motion in ("fall", "shatter"):
        body.restitution = float(rng.uniform(0.6, 0.8))
        if motion == "fall":
            body.y = min(float(rng.uniform(0.10, 0.25)) + r, floor - 0.1)
            body.x = x_any()
        else:
            body.y = min(float(rng.uniform(0.02, 0.06)) + r, floor - 0.1)
            body.x = float(rng.uniform(max(r, 0.2 * A), min(A - r, 0.8 * A)))
        if passer:  # thrown across the post: a fall passes it while bouncing, a shatter before it lands
            body.x, dist = x_beside_post()
            airborne = math.sqrt(2.0 * max(floor - body.y, 1e-3) / GRAVITY)
            body.vx = math.copysign(dist / (0.6 * D if motion == "fall" else airborne), post_x - body.x)
        if motion == "shatter":
            body.shards = _shards(r, rng)
    elif motion == "bounce":
        speed = float(rng.uniform(0.4, 0.65))
        angle = float(rng.uniform(math.radians(25), math.radians(65)))
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        vx *= 1.0 if rng.random() < 0.5 else -1.0
        vy *= 1.0 if rng.random() < 0.5 else -1.0
        body.x = x_any()
        body.y = float(rng.uniform(r, max(floor, r + 1e-6)))
        if passer:  # at the post's height, heading for it
            body.x, dist = x_beside_post()
            body.y = float(rng.uniform(min(occluder[2] + r, floor), floor))
            vx = math.copysign(max(abs(vx), dist / (0.7 * D)), post_x - body.x)
        body.vx, body.vy = vx + cam_speed, vy
    elif motion == "leave":
        on_ground = rng.random() < 0.6
        body.y = floor if on_ground else float(rng.uniform(0.25, max(floor - 0.1, 0.26)))
        # start on the side away from the exit, so the way out and back crosses the middle
        x0 = float(rng.uniform(0.15, 0.4)) * A
        x0 = min(max(x0, r), A - r)
        x0 = x0 if sign > 0 else A - x0
        exit_x = A + r + 0.02 if sign > 0 else -r - 0.02
        t_out = float(rng.uniform(0.28, 0.36)) * D
        speed = max(abs(exit_x - x0) / t_out, 0.3)
        t_out = abs(exit_x - x0) / speed
        t_back = t_out + float(rng.uniform(0.12, 0.2)) * D
        body.leave = Leave(x0, exit_x, speed, t_out, t_back, t_back + t_out, int(sign))
        body.x = x0
    return body


def _shards(r: float, rng: np.random.Generator) -> list[Shard]:
    n = int(rng.integers(4, 9))
    shards = []
    for k in range(n):
        a = 2 * math.pi * (k + float(rng.uniform(-0.3, 0.3))) / n
        dist = float(rng.uniform(0.2, 0.55)) * r
        ox, oy = dist * math.cos(a), -dist * math.sin(a)
        out = float(rng.uniform(0.25, 0.6))
        velocity = (out * math.cos(a) + float(rng.uniform(-0.08, 0.08)), -float(rng.uniform(0.35, 0.9)))
        m = int(rng.integers(3, 5))
        gaps = rng.uniform(0.7, 1.3, m)
        angles = float(rng.uniform(0, 2 * math.pi)) + np.cumsum(gaps / gaps.sum() * 2 * math.pi)
        vertices = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        size = r * float(rng.uniform(1.1, 1.3)) / math.sqrt(n)  # together about the object's area
        shards.append(Shard((ox, oy), velocity, float(rng.uniform(-9, 9)), size, vertices))
    return shards


# ---------------------------------------------------------------- simulation


@dataclass
class Track:
    """One body over the frames: x, y in world units (NaN where it does not exist), angle."""

    index: int
    kind: str
    shape: str
    r: float
    parent: int | None
    vertices: np.ndarray | None
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    first: int  # first frame where it exists
    last: int  # last frame where it exists (inclusive)


def simulate(layout: Layout, times: np.ndarray) -> list[Track]:
    """Run the world over `times` (seconds, increasing, times[0] = 0) and sample every body.
    The layout is left as it was (its bodies are copied)."""
    bodies = [copy.copy(b) for b in layout.bodies]
    T = len(times)
    records: dict[int, list] = {}  # index -> [x, y, angle], one entry a frame

    def record(k: int) -> None:
        for b in bodies:
            if b.index not in records:
                records[b.index] = [np.full(T, np.nan), np.full(T, np.nan), np.zeros(T)]
            if b.alive:
                rec = records[b.index]
                rec[0][k], rec[1][k], rec[2][k] = b.x, b.y, b.angle

    next_index = [len(bodies)]
    t = float(times[0])
    _apply_scripts(bodies, layout, t)
    _collide(bodies, layout, t)  # starts that could not be drawn clear of each other
    record(0)
    for k in range(1, T):
        dt = float(times[k]) - t
        n = _substeps(bodies, dt)
        h = dt / n
        for _ in range(n):
            new = []
            for b in bodies:
                if b.alive and b.kind not in ("static", "leave"):
                    new += _advance(b, t, h, layout, next_index)
            bodies += new
            t += h
            _apply_scripts(bodies, layout, t)
            _collide(bodies, layout, t)
        t = float(times[k])
        record(k)

    tracks = []
    for b in bodies:
        x, y, angle = records[b.index]
        exists = np.flatnonzero(~np.isnan(x))
        first, last = (int(exists[0]), int(exists[-1])) if exists.size else (T, -1)
        tracks.append(Track(b.index, b.kind, b.shape, b.r, b.parent, b.vertices, x, y, angle, first, last))
    return tracks


def _substeps(bodies: list[Body], dt: float) -> int:
    """Enough substeps that no body moves more than 40% of an object's radius relative to another
    (shards are light debris: their own size does not count)."""
    movers = [b for b in bodies if b.alive]
    if len(movers) < 2:
        return 1
    vmax = max(math.hypot(b.vx, b.vy) for b in movers)
    rmin = min((b.r for b in movers if b.kind != "shard"), default=movers[0].r)
    return max(1, min(64, math.ceil(2.0 * vmax * dt / (0.4 * rmin))))


def _apply_scripts(bodies: list[Body], layout: Layout, t: float) -> None:
    for b in bodies:
        if b.leave is not None:
            xs, vs = b.leave.screen_x(t)
            cam_t = min(t, b.leave.t_home)  # once home it stays put in the world
            b.x = xs + layout.cam(cam_t)
            b.vx = vs + (layout.cam_speed if t < b.leave.t_home else 0.0)


def _advance(b: Body, t: float, h: float, L: Layout, next_index: list[int]) -> list[Body]:
    """Move one body over [t, t + h], solving each floor / wall / ceiling contact exactly."""
    remaining = h
    for _ in range(32):
        if remaining <= 0.0:
            break
        g = GRAVITY if b.gravity and not b.resting else 0.0
        tau, event = remaining, None
        if b.gravity or b.kind == "bounce":  # the floor
            y_floor = L.ground - b.bottom()
            if not b.resting:
                dy = y_floor - b.y
                if dy <= 0.0 and (b.vy > 0.0 or (b.vy == 0.0 and g > 0.0)):
                    hit = 0.0
                elif g > 0.0:
                    hit = (-b.vy + math.sqrt(max(b.vy * b.vy + 2.0 * g * dy, 0.0))) / g
                elif b.vy > 0.0:
                    hit = dy / b.vy
                else:
                    hit = math.inf
                if hit < tau:
                    tau, event = max(hit, 0.0), "floor"
        if b.kind == "bounce" and b.vy < 0.0:  # the ceiling
            hit = max(b.y - b.r, 0.0) / -b.vy
            if hit < tau:
                tau, event = hit, "ceiling"
        if b.walls:
            u = b.vx - L.cam_speed  # velocity relative to the walls
            xs = b.x - L.cam(t + (h - remaining))
            hit = math.inf
            if u < 0.0:
                hit, side = max(xs - b.r, 0.0) / -u, "left"
            elif u > 0.0:
                hit, side = max(L.aspect - b.r - xs, 0.0) / u, "right"
            if hit < tau:
                tau, event = hit, side

        _ballistic(b, tau, g)
        remaining -= tau
        if event == "floor":
            b.y = L.ground - b.bottom()
            if b.kind == "shatter":
                return _break(b, t + h - remaining, remaining, L, next_index)
            if b.kind == "bounce":
                b.vy = -b.vy
            else:
                rebound = b.restitution * b.vy
                if b.kind == "shard":
                    b.vx *= 0.7
                    b.omega *= 0.4
                if rebound < REST_SPEED:
                    b.vy, b.resting = 0.0, True
                    b.omega = 0.0
                else:
                    b.vy = -rebound
        elif event == "ceiling":
            b.vy = -b.vy
        elif event in ("left", "right"):
            b.vx = 2.0 * L.cam_speed - b.vx
    return []


def _ballistic(b: Body, tau: float, g: float) -> None:
    if tau <= 0.0:
        return
    if b.resting and b.vx != 0.0:
        decay = math.exp(-GROUND_FRICTION * tau)
        b.x += b.vx * (1.0 - decay) / GROUND_FRICTION
        b.vx = b.vx * decay if abs(b.vx * decay) > 1e-4 else 0.0
    else:
        b.x += b.vx * tau
    b.y += b.vy * tau + 0.5 * g * tau * tau
    b.vy += g * tau
    if b.kind == "roll":
        b.angle -= b.vx * tau / b.r  # rolling to the right turns clockwise
    else:
        b.angle += b.omega * tau


def _break(b: Body, t: float, remaining: float, L: Layout, next_index: list[int]) -> list[Body]:
    """The shatter body hits the floor at time t: it is gone, its shards fly for `remaining` s."""
    b.alive, b.broke_at = False, t
    shards = []
    for s in b.shards:
        piece = Body(
            next_index[0], "shard", "shard", s.radius, b.x + s.offset[0], b.y + s.offset[1],
            vx=s.velocity[0] + 0.5 * b.vx, vy=s.velocity[1], omega=s.omega,
            restitution=SHARD_RESTITUTION, parent=b.index, vertices=s.vertices,
        )  # fmt: skip
        piece.y = min(piece.y, L.ground - piece.bottom())
        next_index[0] += 1
        _advance(piece, t, remaining, L, next_index)
        shards.append(piece)
    return shards


def _collide(bodies: list[Body], L: Layout, t: float) -> None:
    """Elastic contacts between bounding circles: impulse along the normal, then push apart."""
    active = [b for b in bodies if b.alive]
    for _ in range(2):
        touched = False
        for i in range(len(active)):
            a = active[i]
            for j in range(i + 1, len(active)):
                c = active[j]
                if not (a.movable or c.movable) or a.kind == c.kind == "shard":
                    continue
                dx, dy = c.x - a.x, c.y - a.y
                reach = a.r + c.r
                if dx * dx + dy * dy >= reach * reach:
                    continue
                dist = math.hypot(dx, dy)
                nx, ny = (dx / dist, dy / dist) if dist > 1e-12 else (1.0, 0.0)
                wa, wc = _inverse_mass(a), _inverse_mass(c)
                w = (wa[0] * nx * nx + wa[1] * ny * ny) + (wc[0] * nx * nx + wc[1] * ny * ny)
                if w <= 1e-12:
                    continue
                touched = True
                closing = (c.vx - a.vx) * nx + (c.vy - a.vy) * ny
                if closing < 0.0:
                    j_imp = -(1.0 + min(a.restitution, c.restitution)) * closing / w
                    a.vx -= wa[0] * nx * j_imp
                    a.vy -= wa[1] * ny * j_imp
                    c.vx += wc[0] * nx * j_imp
                    c.vy += wc[1] * ny * j_imp
                push = (reach - dist + 1e-9) / w
                a.x -= wa[0] * nx * push
                a.y -= wa[1] * ny * push
                c.x += wc[0] * nx * push
                c.y += wc[1] * ny * push
                for body in (a, c):  # lifted off the ground: gravity takes over again
                    if body.resting and (body.vy < 0.0 or body.y < L.ground - body.bottom() - 1e-9):
                        body.resting = False
        for b in active:
            _keep_inside(b, L, t)
            speed = math.hypot(b.vx, b.vy)
            if speed > MAX_SPEED:
                b.vx, b.vy = b.vx * MAX_SPEED / speed, b.vy * MAX_SPEED / speed
        if not touched:
            break


def _inverse_mass(b: Body) -> tuple[float, float]:
    """(1/m along x, 1/m along y): zero for immovable bodies, and along y for ground-locked ones."""
    if not b.movable:
        return 0.0, 0.0
    inv = 1.0 / b.mass
    return inv, (0.0 if b.lock_y else inv)


def _keep_inside(b: Body, L: Layout, t: float) -> None:
    if not b.movable:
        return
    if b.gravity or b.kind == "bounce" or b.lock_y:
        b.y = min(b.y, L.ground - b.bottom())
    if b.kind == "bounce":
        b.y = max(b.y, b.r)
    if b.walls:
        cam = L.cam(t)
        b.x = min(max(b.x, cam + b.r), cam + L.aspect - b.r)
