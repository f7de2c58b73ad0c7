"""What a Kinema World scene is made of: the vocabulary and the scene spec.

A `SceneSpec` is everything a caption says about a clip: objects (colour, size, shape, motion),
the occluder, the brush, the camera and the background. Exact positions, speeds and timings are
not in the spec; the renderer draws them from the seed. `parse(caption(spec)) == spec` holds for
every spec (see `kinema.world.text`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# ---------------------------------------------------------------- vocabulary

# Object colours: far apart in RGB and hue, none close to a background or the occluder.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 20),
    "green": (30, 170, 40),
    "cyan": (0, 200, 220),
    "blue": (30, 60, 220),
    "purple": (130, 40, 180),
    "magenta": (235, 40, 200),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}

# Backgrounds: muted so that object colours stand out.
SKY_COLORS: dict[str, tuple[int, int, int]] = {
    "light blue": (150, 195, 235),
    "pale yellow": (240, 230, 180),
    "grey": (170, 170, 175),
    "dark blue": (25, 35, 80),
}
GROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "green grass": (85, 140, 70),
    "brown earth": (120, 90, 60),
    "sand": (210, 190, 140),
    "grey stone": (110, 110, 115),
}
OCCLUDER_COLOR: tuple[int, int, int] = (95, 75, 60)  # a wooden post, darker than every sky
BRUSH_COLORS = COLORS

SHAPES: tuple[str, ...] = ("ball", "square", "triangle", "diamond", "star")
SIZES: dict[str, float] = {"small": 0.07, "medium": 0.11, "large": 0.16}  # radius / short side

# Motions of an object.
#   static   stays where it is, on the ground or in the air
#   slide    moves horizontally at constant speed (direction left | right)
#   fall     dropped from above, falls under gravity and bounces on the ground, losing energy
#   bounce   flies without gravity and reflects off the four walls
#   roll     rolls along the ground (direction left | right), turning as it goes
#   leave    leaves the frame on one side (direction) and comes back
#   shatter  falls from high and breaks into pieces when it hits the ground
MOTIONS: tuple[str, ...] = ("static", "slide", "fall", "bounce", "roll", "leave", "shatter")
DIRECTED_MOTIONS: tuple[str, ...] = ("slide", "roll", "leave")
DIRECTIONS: tuple[str, ...] = ("left", "right")
CAMERAS: tuple[str, ...] = ("static", "pan left", "pan right")
BRUSH_PATHS: tuple[str, ...] = ("wave", "circle", "zigzag")

MAX_OBJECTS = 4


# ---------------------------------------------------------------- spec

@dataclass(frozen=True, order=True)
class ObjectSpec:
    color: str
    size: str
    shape: str
    motion: str
    direction: str | None = None  # only for DIRECTED_MOTIONS

    def __post_init__(self) -> None:
        from kinema.errors import KinemaError

        checks = [
            (self.color in COLORS, f"colour {self.color!r}", COLORS),
            (self.size in SIZES, f"size {self.size!r}", SIZES),
            (self.shape in SHAPES, f"shape {self.shape!r}", SHAPES),
            (self.motion in MOTIONS, f"motion {self.motion!r}", MOTIONS),
        ]
        for ok, what, known in checks:
            if not ok:
                raise KinemaError(f"unknown {what}; Kinema World knows: {', '.join(known)}")
        if self.motion in DIRECTED_MOTIONS:
            if self.direction not in DIRECTIONS:
                raise KinemaError(f"motion {self.motion!r} needs a direction: left or right")
        elif self.direction is not None:
            raise KinemaError(f"motion {self.motion!r} takes no direction")
        if self.motion == "roll" and self.shape != "ball":
            raise KinemaError("only a ball can roll")


@dataclass(frozen=True)
class BrushSpec:
    color: str
    path: str

    def __post_init__(self) -> None:
        from kinema.errors import KinemaError

        if self.color not in BRUSH_COLORS:
            raise KinemaError(f"unknown brush colour {self.color!r}; known: {', '.join(BRUSH_COLORS)}")
        if self.path not in BRUSH_PATHS:
            raise KinemaError(f"unknown brush path {self.path!r}; known: {', '.join(BRUSH_PATHS)}")


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    sky: str = "light blue"
    ground: str = "green grass"
    camera: str = "static"
    occluder: bool = False
    brush: BrushSpec | None = None

    def __post_init__(self) -> None:
        from kinema.errors import KinemaError

        if self.sky not in SKY_COLORS:
            raise KinemaError(f"unknown sky {self.sky!r}; known: {', '.join(SKY_COLORS)}")
        if self.ground not in GROUND_COLORS:
            raise KinemaError(f"unknown ground {self.ground!r}; known: {', '.join(GROUND_COLORS)}")
        if self.camera not in CAMERAS:
            raise KinemaError(f"unknown camera {self.camera!r}; known: {', '.join(CAMERAS)}")
        if len(self.objects) > MAX_OBJECTS:
            raise KinemaError(f"at most {MAX_OBJECTS} objects in a scene, got {len(self.objects)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "SceneSpec":
        return SceneSpec(
            objects=tuple(ObjectSpec(**o) for o in d["objects"]),
            sky=d["sky"],
            ground=d["ground"],
            camera=d["camera"],
            occluder=d["occluder"],
            brush=BrushSpec(**d["brush"]) if d.get("brush") else None,
        )
