"""Kinema World in words: detailed captions, short prompts, and reading both back.

    caption(spec)              -> one paragraph that says everything in the spec
    short_prompt(spec)         -> "a large red ball falls and bounces, a blue square slides right"
    parse(caption)             -> the spec again: parse(caption(spec)) == spec for every valid spec
    spec_from_prompt(p, seed)  -> a full spec: what the prompt says, the rest drawn from the seed;
                                  a full caption leaves nothing open, so it reads to its own spec

    expand(p, seed)            -> caption(spec_from_prompt(p, seed)): the report's "turn short
                                  prompts into detailed captions", done by a grammar
    spec_with_notices(p, seed) -> (spec_from_prompt(p, seed), notices): one short sentence for
                                  each kind of thing the reader changed or left out, e.g.
                                  ["read 'orb' as 'ball'", "left out: fluffy"]
    expand_prompt(p, seed)     -> (expand(p, seed), notices)

Caption grammar (one sentence each, in this order; words in {} come from `spec.py`):

    objects   [Nearby, | Meanwhile, | Also, ] a {size} {colour} {shape} {motion phrase}.
              Consecutive identical objects share a sentence: "two small red balls roll ...".
              Sizes read "small", "medium-sized", "large". Motion phrases (two wordings each,
              picked by the sentence's position, never at random):
                static   stays still | sits motionless
                slide    slides to the {dir} | glides steadily to the {dir}
                fall     falls from above and bounces on the ground until it settles | ...
                bounce   flies freely and bounces off the walls | ...
                roll     rolls to the {dir} along the ground | ...
                leave    leaves the frame on the {dir} and comes back | ...
                shatter  falls from high up and shatters into pieces when it hits the ground | ...
              No objects: "The scene is empty."
    occluder  A wooden post stands in the middle of the scene, hiding whatever passes behind it.
    brush     A brush paints a {colour} {wave|circle|zigzag}, and the stroke stays on the canvas.
    camera    The camera stays still, facing far mountains and near hills.
              The camera pans {dir} over far mountains and near hills; the near hills drift past
              faster than the far mountains.
    background  The sky is {sky} and the ground is {ground}.

Example:
    A large red ball falls from above and bounces on the ground until it settles. Nearby, a
    medium-sized blue square glides steadily to the right. Meanwhile, a small yellow star stays
    still. A wooden post stands in the middle of the scene, hiding whatever passes behind it.
    The camera pans left over far mountains and near hills; the near hills drift past faster
    than the far mountains. The sky is light blue and the ground is green grass.
Its short prompt: "a large red ball falls and bounces, a blue square slides right" (the first
one or two objects; the size is left out when it is medium).

Reading. `parse` and `spec_from_prompt` share one reader: a walk over tokens, never a regex
over the sentence. Text is lower-cased, split into words (".", "!", "?", ";", ":" end a
sentence; "," is a pause), and each run of words is matched, longest first, against a lexicon
of phrases. A noun phrase ("two small red balls", "a rolling ball") names objects; the motion
and direction words after it apply to it, and to every noun joined to it ("and", "with", ",")
before a verb ("a red ball and a blue square slide left"). "it" / "they" refer back to the last subject.
`parse` then demands that every field is given; `spec_from_prompt` fills the open ones.

Synonyms (user words -> spec vocabulary):
    sizes     tiny, little -> small; medium-sized, mid-sized -> medium; big, huge -> large
    colours   pink -> magenta; violet -> purple; aqua, teal -> cyan
    shapes    circle, sphere, disc, dot -> ball; box, cube, block -> square;
              object, thing, shape -> any shape (left open)
    motions   stays, sits, rests, stands, still, static, motionless, stationary, fixed,
                "does not move" -> static
              slides, glides, moves, travels -> slide
              falls, drops, bounces, bouncing, jumps, hops -> fall: a user who writes "a red ball
                bounces on green grass" means a ball bouncing on the ground under gravity
              "bounces off the walls / edges / sides", "bounces around", flies, floats,
                ricochets -> bounce (no gravity, reflects off the four walls)
              rolls -> roll; leaves, exits, returns, "comes back", "leaves the frame" -> leave
              shatters, breaks, smashes -> shatter
              Two motion words for one object merge where one implies the other:
              falls + shatters -> shatter, slides + rolls -> roll, slides + leaves -> leave.
    directions  left, leftward(s), "from right to left" -> left; and the mirror for right
    camera    "camera pans left", "pans right", "the camera moves left" -> pan; "static camera",
              "the camera is still" -> static
    occluder  post, pole, pillar, occluder ("behind a post")
    brush     brush, paints, draws; paths wave, zigzag, circle / loop ("a brush paints a blue
              wave"); "circle" right after a brush names its path, elsewhere a ball
    skies     "{tone} sky" with tone light blue / blue / sunny -> light blue; pale yellow /
              yellow / pale -> pale yellow; grey / cloudy / overcast -> grey; dark blue / dark /
              black / night -> dark blue; "at night" -> dark blue
    grounds   green grass, grass, grassy; brown earth, earth, dirt, soil; sand, beach, desert,
              sandy; grey stone, stone, rock, rocky ("on green grass", "the ground is sand")
    counts    one .. ten, 1 .. 10 ("two blue squares"); more than MAX_OBJECTS objects is an error
    empty     "an empty scene": no objects
    collisions  collide, collides, collision ("two balls collide", "a ball crashes into a
              square"): the objects slide towards each other, so the physics makes them hit
Everyday words (SYNONYMS, below the lexicon): a word or phrase the lexicon lacks -> the lexicon
words it reads as ("crimson" -> "red", "orb" -> "ball", "plummets" -> "falls", "meadow" ->
"grass", "bounces twice" -> "bounces", "crash" -> "collide", "leaves a trail" -> "paints a
stroke"); a prompt that uses one gets the notice "read 'orb' as 'ball'".
Filler words (a, an, the, and, on, in, over, under, with, of, its, to, from, behind, ...) are
skipped. Any other word is an error in `parse`; in a prompt it is left out with a notice
("left out: fluffy"), and adjectives whose noun was left out make an object of any shape ("a red
giraffe bounces": a red object that falls). Only a prompt with nothing to draw, every word
unknown or filler, raises KinemaError naming the first unknown word and the vocabulary.
Two motions for one object that do not merge: `parse` raises; a prompt keeps the first
("kept 'rolls'; left out 'flies'"), since an object has one motion a clip. Contradictions stay
errors in both: two colours or directions for one object, more than MAX_OBJECTS objects, a roll
for anything but a ball, a direction for a motion that takes none.

Filling (`spec_from_prompt`), with `random.Random(seed)`, in a fixed order:
    - objects: never added when the prompt names any; otherwise one or two random objects
      (none for "an empty scene").
    - per object: a missing shape (a ball if it rolls), size, colour (preferring colours nobody
      uses yet, so the objects stay distinguishable), motion and direction. An object with no
      motion said stays still ("a red ball on green grass"); with only a direction said, it
      takes a directed motion (roll only for balls); objects that collide slide towards each
      other, the first to the right, the next to the left, and so on.
    - brush colour and path, if the prompt mentions a brush; the pan direction, if it says the
      camera pans; sky and ground when not said.
    - an occluder, a brush or a camera pan is never added unless the prompt asks for it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from kinema.errors import KinemaError
from kinema.world.spec import (
    BRUSH_PATHS,
    COLORS,
    DIRECTED_MOTIONS,
    DIRECTIONS,
    GROUND_COLORS,
    MAX_OBJECTS,
    MOTIONS,
    SHAPES,
    SIZES,
    SKY_COLORS,
    BrushSpec,
    ObjectSpec,
    SceneSpec,
)

__all__ = [
    "SYNONYMS",
    "caption",
    "short_prompt",
    "parse",
    "expand",
    "expand_prompt",
    "spec_from_prompt",
    "spec_with_notices",
]

# ---------------------------------------------------------------- words to write

_SIZE_TEXT = {"small": "small", "medium": "medium-sized", "large": "large"}
_PLURAL = {shape: shape + "s" for shape in SHAPES}
_COUNT_TEXT = {2: "two", 3: "three", 4: "four"}
_OPENERS = ("", "Nearby, ", "Meanwhile, ", "Also, ")

# motion -> wordings, each (singular, plural); {d} is the direction. Both must read back.
_MOTION_TEXT: dict[str, tuple[tuple[str, str], ...]] = {
    "static": (("stays still", "stay still"), ("sits motionless", "sit motionless")),
    "slide": (
        ("slides to the {d}", "slide to the {d}"),
        ("glides steadily to the {d}", "glide steadily to the {d}"),
    ),
    "fall": (
        (
            "falls from above and bounces on the ground until it settles",
            "fall from above and bounce on the ground until they settle",
        ),
        ("drops under gravity and bounces a few times", "drop under gravity and bounce a few times"),
    ),
    "bounce": (
        ("flies freely and bounces off the walls", "fly freely and bounce off the walls"),
        (
            "floats weightlessly and bounces off the edges of the frame",
            "float weightlessly and bounce off the edges of the frame",
        ),
    ),
    "roll": (
        ("rolls to the {d} along the ground", "roll to the {d} along the ground"),
        ("rolls along the ground to the {d}", "roll along the ground to the {d}"),
    ),
    "leave": (
        ("leaves the frame on the {d} and comes back", "leave the frame on the {d} and come back"),
        ("exits to the {d} and returns a moment later", "exit to the {d} and return a moment later"),
    ),
    "shatter": (
        (
            "falls from high up and shatters into pieces when it hits the ground",
            "fall from high up and shatter into pieces when they hit the ground",
        ),
        ("drops and breaks into pieces on impact", "drop and break into pieces on impact"),
    ),
}
_SHORT_MOTION_TEXT: dict[str, tuple[str, str]] = {
    "static": ("stays still", "stay still"),
    "slide": ("slides {d}", "slide {d}"),
    "fall": ("falls and bounces", "fall and bounce"),
    "bounce": ("bounces off the walls", "bounce off the walls"),
    "roll": ("rolls {d}", "roll {d}"),
    "leave": ("exits {d} and returns", "exit {d} and return"),
    "shatter": ("falls and shatters", "fall and shatter"),
}
_OCCLUDER_TEXT = "A wooden post stands in the middle of the scene, hiding whatever passes behind it."
_BRUSH_TEXT = "A brush paints a {color} {path}, and the stroke stays on the canvas."
_CAMERA_TEXT = {
    "static": "The camera stays still, facing far mountains and near hills.",
    "pan": "The camera pans {d} over far mountains and near hills; "
    "the near hills drift past faster than the far mountains.",
}
_BACKGROUND_TEXT = "The sky is {sky} and the ground is {ground}."

# ---------------------------------------------------------------- writing


def caption(spec: SceneSpec) -> str:
    """One paragraph: objects in spec order, then occluder, brush, camera and background."""
    sentences = _object_sentences(spec.objects)
    if spec.occluder:
        sentences.append(_OCCLUDER_TEXT)
    if spec.brush is not None:
        sentences.append(_BRUSH_TEXT.format(color=spec.brush.color, path=spec.brush.path))
    sentences.append(_camera_sentence(spec.camera))
    sentences.append(_BACKGROUND_TEXT.format(sky=spec.sky, ground=spec.ground))
    return " ".join(sentences)


def short_prompt(spec: SceneSpec) -> str:
    """What a user would type: the first one or two objects and their motions."""
    first = spec.objects[:2]
    if not first:
        return f"an empty scene on {spec.ground} under a {spec.sky} sky"
    clauses = []
    for obj, count in _runs(first):
        size = "" if obj.size == "medium" else f"{obj.size} "
        shape = obj.shape if count == 1 else _PLURAL[obj.shape]
        verb = _SHORT_MOTION_TEXT[obj.motion][count > 1].format(d=obj.direction)
        clauses.append(f"{_count_word(count)} {size}{obj.color} {shape} {verb}")
    return ", ".join(clauses)


def _object_sentences(objects: tuple[ObjectSpec, ...]) -> list[str]:
    if not objects:
        return ["The scene is empty."]
    sentences = []
    for i, (obj, count) in enumerate(_runs(objects)):
        shape = obj.shape if count == 1 else _PLURAL[obj.shape]
        wordings = _MOTION_TEXT[obj.motion]
        motion = wordings[i % len(wordings)][count > 1].format(d=obj.direction)
        text = f"{_count_word(count)} {_SIZE_TEXT[obj.size]} {obj.color} {shape} {motion}."
        opener = _OPENERS[i % len(_OPENERS)]
        sentences.append(opener + text if opener else text[0].upper() + text[1:])
    return sentences


def _runs(objects) -> list[tuple[ObjectSpec, int]]:
    """Consecutive identical objects as (object, how many)."""
    return [(obj, len(list(group))) for obj, group in itertools.groupby(objects)]


def _count_word(count: int) -> str:
    return "a" if count == 1 else _COUNT_TEXT[count]


def _camera_sentence(camera: str) -> str:
    if camera == "static":
        return _CAMERA_TEXT["static"]
    return _CAMERA_TEXT["pan"].format(d=camera.removeprefix("pan "))


# ---------------------------------------------------------------- the lexicon
# Every phrase the reader knows -> (kind, value). Kinds:
#   stop, end, pause, copula, pronoun, empty, count, size, color, tone, shape, circle, motion,
#   direction, camera, occluder, brush, paint, path, sky_noun, sky, ground_noun, ground

_STOP_WORDS = """
a an the and on in over under with of its their to from at by as while then into onto along
across through toward towards past around up down off above below behind beside near far
before after until when where each few times some very slowly quickly fast slow gently freely
steadily also nearby meanwhile there here this that which who scene view background foreground
video clip shot world frame edges edge walls wall sides side middle center centre wooden
mountains hills parallax drift drifts faster than facing hiding whatever passes pass passing
stroke strokes canvas trail settles settle gravity weightlessly moment later high impact pieces
hits hit day clear bright lands land keeps keep goes go
upon out for next against again other another my our your his her these those inside within
beneath atop so just
""".split()

_SIZE_WORDS = {
    "small": "small", "tiny": "small", "little": "small",
    "medium": "medium", "medium-sized": "medium", "mid-sized": "medium",
    "large": "large", "big": "large", "huge": "large",
}  # fmt: skip
_COLOR_WORDS = {c: c for c in COLORS}
_COLOR_WORDS |= {"pink": "magenta", "violet": "purple", "aqua": "cyan", "teal": "cyan"}
_SHAPE_WORDS: dict[str, str | None] = {
    "ball": "ball", "balls": "ball", "sphere": "ball", "spheres": "ball",
    "disc": "ball", "discs": "ball", "dot": "ball", "dots": "ball",
    "square": "square", "squares": "square", "box": "square", "boxes": "square",
    "cube": "square", "cubes": "square", "block": "square", "blocks": "square",
    "triangle": "triangle", "triangles": "triangle",
    "diamond": "diamond", "diamonds": "diamond",
    "star": "star", "stars": "star",
    "object": None, "objects": None, "thing": None, "things": None, "shape": None, "shapes": None,
}  # fmt: skip
_COUNT_WORDS = {
    w: n for n, w in enumerate("one two three four five six seven eight nine ten".split(), start=1)
} | {str(n): n for n in range(1, 11)}


def _split(*lines: str) -> list[str]:
    return [word for line in lines for word in line.split()]


_BOUNCE_PHRASES = [
    f"{verb} {where}"
    for verb in ("bounces", "bounce", "bouncing")
    for where in ("off the walls", "off walls", "off the edges", "off the sides", "around")
]
_MOTION_WORDS: dict[str, list[str]] = {
    "static": _split(
        "stays stay staying still static sits sit sitting rests rest resting stands stand standing",
        "motionless stationary fixed",
    )
    + ["does not move", "do not move", "doesn't move", "don't move", "stays put", "stay put"],
    "slide": _split(
        "slides slide sliding glides glide gliding",
        "moves move moving travels travel travelling",
    ),
    "fall": _split(
        "falls fall falling drops drop dropping dropped",
        "bounces bounce bouncing jumps jump hops hop",
    ),
    "bounce": _split("flies fly flying floats float floating ricochets ricochet") + _BOUNCE_PHRASES,
    "roll": _split("rolls roll rolling rolled"),
    "leave": _split("leaves leave leaving exits exit exiting returns return returning")
    + ["comes back", "come back", "coming back", "leaves the frame", "leave the frame", "leaving the frame"],
    "shatter": _split("shatters shatter shattering breaks break breaking smashes smash smashing")
    + ["breaks apart", "break apart"],
    "pan": _split("pans pan panning panned"),
}
_DIRECTION_WORDS = {
    "left": "left", "leftward": "left", "leftwards": "left",
    "from right to left": "left", "right to left": "left",
    "right": "right", "rightward": "right", "rightwards": "right",
    "from left to right": "right", "left to right": "right",
}  # fmt: skip
# A colour or tone word in front of "sky" / "ground", or after "the sky is" / "the ground is".
_SKY_TONES = {
    "light blue": "light blue", "blue": "light blue", "sunny": "light blue",
    "pale yellow": "pale yellow", "yellow": "pale yellow", "pale": "pale yellow",
    "grey": "grey", "gray": "grey", "cloudy": "grey", "overcast": "grey",
    "dark blue": "dark blue", "dark": "dark blue", "black": "dark blue",
}  # fmt: skip
_GROUND_TONES = {
    "green grass": "green grass", "green": "green grass", "grassy": "green grass",
    "brown earth": "brown earth", "brown": "brown earth",
    "sand": "sand", "yellow": "sand", "sandy": "sand",
    "grey stone": "grey stone", "grey": "grey stone", "gray": "grey stone",
    "rocky": "grey stone", "stony": "grey stone",
}  # fmt: skip
_GROUND_WORDS = {
    "green grass": "green grass", "grass": "green grass",
    "brown earth": "brown earth", "earth": "brown earth", "dirt": "brown earth", "soil": "brown earth",
    "sand": "sand", "beach": "sand", "desert": "sand",
    "grey stone": "grey stone", "gray stone": "grey stone", "stone": "grey stone",
    "rock": "grey stone", "rocks": "grey stone",
}  # fmt: skip
_PATH_WORDS = {"wave": "wave", "waves": "wave", "zigzag": "zigzag", "zig-zag": "zigzag", "loop": "circle"}
_COLLIDE_WORDS = _split("collide collides colliding collision")

# Everyday words -> the lexicon words they read as; each use gives the notice "read 'orb' as
# 'ball'". To teach the reader a word, add a line: the key must not be in the lexicon and the
# value must be lexicon words (both tested). Only what the world draws: shapes ball, square,
# triangle, diamond, star; the colours of spec.COLORS; skies light blue, pale yellow, grey, dark
# blue; grounds green grass, brown earth, sand, grey stone; one motion an object.
SYNONYMS: dict[str, str] = {
    # shapes
    "orb": "ball", "orbs": "balls", "marble": "ball", "marbles": "balls",
    "bubble": "ball", "bubbles": "balls", "globe": "ball", "globes": "balls",
    "rectangle": "square", "rectangles": "squares", "brick": "square", "bricks": "squares",
    "crate": "square", "crates": "squares", "tile": "square", "tiles": "squares",
    "pyramid": "triangle", "pyramids": "triangles", "wedge": "triangle", "wedges": "triangles",
    "rhombus": "diamond", "gem": "diamond", "gems": "diamonds", "jewel": "diamond",
    "jewels": "diamonds", "crystal": "diamond", "crystals": "diamonds",
    "pentagram": "star", "starfish": "star",
    # object colours
    "crimson": "red", "scarlet": "red", "ruby": "red", "cherry": "red", "maroon": "red",
    "amber": "orange", "tangerine": "orange", "coral": "orange",
    "gold": "yellow", "golden": "yellow", "lemon": "yellow", "mustard": "yellow",
    "lime": "green", "emerald": "green", "olive": "green", "jade": "green",
    "turquoise": "cyan",
    "navy": "blue", "azure": "blue", "cobalt": "blue", "sapphire": "blue",
    "indigo": "purple", "lilac": "purple", "lavender": "purple", "plum": "purple", "mauve": "purple",
    "fuchsia": "magenta", "rose": "magenta", "hot pink": "magenta",
    "ivory": "white", "snow-white": "white", "ebony": "black", "jet-black": "black",
    # skies
    "navy sky": "dark blue sky", "starry": "dark sky", "nighttime": "night", "midnight": "night",
    "rainy": "grey sky", "stormy": "grey sky", "foggy": "grey sky", "misty": "grey sky",
    "clouds": "grey sky", "cloudy day": "grey sky", "sunny day": "light blue sky",
    "sunshine": "light blue sky", "sunset": "pale yellow sky", "sunrise": "pale yellow sky",
    "dawn": "pale yellow sky",
    # grounds
    "lawn": "grass", "meadow": "grass", "field": "grass", "park": "grass", "garden": "grass",
    "turf": "grass", "pasture": "grass",
    "mud": "earth", "muddy": "earth", "clay": "earth",
    "dune": "sand", "dunes": "sand", "shore": "sand", "seaside": "sand",
    "pavement": "stone", "concrete": "stone", "asphalt": "stone", "road": "stone",
    "street": "stone", "gravel": "stone", "cobblestones": "stone",
    # motions (an object has one)
    "plummets": "falls", "plummet": "fall", "tumbles": "falls", "tumble": "fall",
    "plunges": "falls", "plunge": "fall", "descends": "falls", "descend": "fall",
    "leaps": "bounces", "leap": "bounce", "skips": "bounces", "skip": "bounce",
    "jumping": "bouncing", "hopping": "bouncing",
    "skates": "slides", "skate": "slide", "skids": "slides", "skid": "slide", "zooms": "slides",
    "zoom": "slide", "races": "slides", "race": "slide", "crawls": "slides", "crawl": "slide",
    "creeps": "slides", "creep": "slide",
    "trundles": "rolls", "trundle": "roll",
    "soars": "flies", "soar": "fly", "zips around": "bounces around",
    "vanishes": "leaves", "vanish": "leave", "disappears": "leaves", "disappear": "leave",
    "departs": "leaves", "depart": "leave", "offscreen": "leaves the frame",
    "explodes": "shatters", "explode": "shatter", "bursts": "shatters", "burst": "shatter",
    "crumbles": "shatters", "crumble": "shatter", "cracks": "shatters", "crack": "shatter",
    "splinters": "shatters", "splinter": "shatter",
    "waits": "stays", "wait": "stay", "remains": "stays", "remain": "stay", "lies": "rests",
    "lie": "rest", "hangs": "stays", "hang": "stay", "hovers": "stays", "hover": "stay",
    "idle": "still",
    # counts of bounces: a falling object bounces until it settles; the count is not kept
    "bounces once": "bounces", "bounces twice": "bounces", "bounces thrice": "bounces",
    "bounces two times": "bounces", "bounces three times": "bounces", "bounces several times": "bounces",
    "bounce once": "bounce", "bounce twice": "bounce", "bounce thrice": "bounce",
    "bounce two times": "bounce", "bounce three times": "bounce", "bounce several times": "bounce",
    # things that hit each other: the objects slide towards each other and collide
    "crash": "collide", "crashes": "collides", "crashing": "colliding",
    "bump": "collide", "bumps": "collides", "bumping": "colliding",
    "hit each other": "collide", "hits each other": "collides", "smash into": "collide",
    "smashes into": "collides", "run into": "collide", "runs into": "collides",
    # painted marks: the brush paints a wave, circle or zigzag
    "line": "stroke", "lines": "strokes", "leaves a trail": "paints a stroke",
    "leave a trail": "paint a stroke", "leaving a trail": "painting a stroke",
    "scribbles": "paints", "scribble": "paint", "sketches": "draws", "sketch": "draw",
    "pen": "brush", "pencil": "brush", "marker": "brush", "crayon": "brush",
    "squiggle": "zigzag", "zig zag": "zigzag", "spiral": "loop", "swirl": "loop", "wavy line": "wave",
}  # fmt: skip


def _build_lexicon() -> dict[str, tuple[str, object]]:
    entries: list[tuple[str, str, object]] = [(w, "stop", None) for w in _STOP_WORDS]
    entries += [(".", "end", None), (",", "pause", None)]
    entries += [(w, "copula", None) for w in ("is", "are", "was", "were", "be")]
    entries += [(w, "pronoun", None) for w in ("it", "they", "them")]
    entries += [("empty", "empty", None)]
    entries += [(w, "count", n) for w, n in _COUNT_WORDS.items()]
    entries += [(w, "size", s) for w, s in _SIZE_WORDS.items()]
    entries += [(w, "color", c) for w, c in _COLOR_WORDS.items()]
    tones = (_SKY_TONES.keys() | _GROUND_TONES.keys()) - _COLOR_WORDS.keys() - _GROUND_WORDS.keys()
    entries += [(w, "tone", None) for w in sorted(tones)]
    entries += [(w, "shape", s) for w, s in _SHAPE_WORDS.items()]
    entries += [("circle", "circle", None), ("circles", "circle", None)]
    entries += [(w, "motion", m) for m, words in _MOTION_WORDS.items() for w in words]
    entries += [(w, "direction", d) for w, d in _DIRECTION_WORDS.items()]
    entries += [(w, "collide", None) for w in _COLLIDE_WORDS]
    entries += [("camera", "camera", None)]
    entries += [(w, "occluder", None) for w in ("post", "pole", "pillar", "occluder")]
    entries += [(w, "brush", None) for w in ("brush", "paintbrush", "paint brush")]
    entries += [(w, "paint", None) for w in _split("paints paint painting painted draws draw drawing")]
    entries += [(w, "path", p) for w, p in _PATH_WORDS.items()]
    entries += [("sky", "sky_noun", None), ("night", "sky", "dark blue"), ("ground", "ground_noun", None)]
    entries += [(w, "ground", g) for w, g in _GROUND_WORDS.items()]
    lexicon: dict[str, tuple[str, object]] = {}
    for phrase, kind, value in entries:
        assert phrase not in lexicon, f"{phrase!r} is in the lexicon twice"
        lexicon[phrase] = (kind, value)
    return lexicon


_LEXICON = _build_lexicon()
_LONGEST = max(len(p.split()) for p in [*_LEXICON, *SYNONYMS])


def _vocabulary() -> str:
    return (
        f"it knows colours: {', '.join(COLORS)}; sizes: {', '.join(SIZES)}; "
        f"shapes: {', '.join(SHAPES)}; motions: {', '.join(MOTIONS)} (as verbs: stays, slides, "
        f"falls, bounces off the walls, rolls, leaves, shatters); directions: {', '.join(DIRECTIONS)}; "
        f"skies: {', '.join(SKY_COLORS)}; grounds: {', '.join(GROUND_COLORS)}; "
        f"camera: still, pans left, pans right; a post (occluder); a brush that paints a "
        f"{' / '.join(BRUSH_PATHS)}; counts one to {MAX_OBJECTS}"
    )


def _fail(message: str) -> KinemaError:
    return KinemaError(f"{message}; {_vocabulary()}")


def _quote(text: str, limit: int = 80) -> str:
    """The prompt as an error message quotes it: repr, a long one cut to its first `limit` characters."""
    text = text.strip()
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str
    value: object
    text: str  # the words it was read from, for messages
    read_as: str | None = None  # the everyday words (a SYNONYMS key) it was read from


def _words(text: str) -> list[str]:
    chars = []
    for ch in text.lower().replace("\u2019", "'"):
        if ch in ".!?;:":
            chars.append(" . ")
        elif ch == ",":
            chars.append(" , ")
        elif ch.isalnum() or ch in "-'":
            chars.append(ch)
        else:
            chars.append(" ")
    return [w.strip("-'") for w in "".join(chars).split() if w.strip("-'")]


def _tokens(text: str, lenient: bool = False) -> list[_Token]:
    """Longest-first match of word runs against the lexicon and SYNONYMS. A synonym becomes the
    tokens of its lexicon words, each marked with `read_as`. A word matching neither raises, or
    with `lenient` becomes an "unknown" token."""
    words, tokens, i = _words(text), [], 0
    while i < len(words):
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            phrase = " ".join(words[i : i + n])
            if phrase in _LEXICON:
                tokens.append(_Token(*_LEXICON[phrase], phrase))
                break
            if phrase in SYNONYMS:
                tokens += [_Token(t.kind, t.value, t.text, phrase) for t in _tokens(SYNONYMS[phrase])]
                break
        else:
            if not lenient:
                raise _unknown(words[i], text)
            n = 1
            tokens.append(_Token("unknown", None, words[i]))
        i += n
    return tokens


def _unknown(word: str, text: str) -> KinemaError:
    return _fail(f"Kinema World does not know {word!r} (in {_quote(text)})")


# ---------------------------------------------------------------- the draft a text describes


@dataclass
class _Group:
    """One noun phrase: `count` objects alike in everything the text says."""

    words: list[str]
    count: int = 1
    size: str | None = None
    color: str | None = None
    shape: str | None = None
    motion: str | None = None
    direction: str | None = None
    motion_text: str | None = None  # the words that gave the motion, for notices
    left_out: list[str] = field(default_factory=list)  # motions after the first, in a prompt
    collide: bool = False  # "two balls collide": slide towards each other

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class _Camera:
    motion: str | None = None  # static | pan
    direction: str | None = None


@dataclass
class _Brush:
    color: str | None = None
    path: str | None = None


@dataclass
class _Draft:
    groups: list[_Group] = field(default_factory=list)
    sky: str | None = None
    ground: str | None = None
    camera: _Camera | None = None
    occluder: bool = False
    brush: _Brush | None = None
    empty: bool = False


# Two motion words for one object: the second may refine the first.
_MERGED_MOTIONS = {("fall", "shatter"): "shatter", ("roll", "slide"): "roll", ("leave", "slide"): "leave"}
_ATTRIBUTIVE_BEFORE = {"count", "size", "color", "shape", "circle", "camera"}  # "a rolling ball"
_KEEP_JOINABLE = {"count", "size", "color", "shape", "circle", "motion", "pause"}
_OBJECT_WORDS = {"count", "size", "color", "motion", "direction", "collide"}  # what describes an object


class _Reader:
    """Walks the tokens of one text and fills a `_Draft`.

    `pending` holds the adjectives of a noun phrase until its noun arrives; `subject` is what
    motion and direction words apply to: a list of groups, "camera", "brush" or "occluder".
    `lenient` (prompts): unknown words and a second motion are left out and noted, not errors.
    """

    def __init__(self, text: str, lenient: bool = False):
        self.text = text.strip()
        self.lenient = lenient
        self.read_as: dict[str, str] = {}  # everyday words -> the lexicon words read
        self.left_out: list[str] = []  # unknown words
        self.orphans = False  # an unknown word since the last noun: it may have been the noun
        self.draft = _Draft()
        self.pending: dict[str, _Token] = {}
        self.subject: list[_Group] | str | None = None
        self.last_subject: list[_Group] | str | None = None
        self.joinable = False  # a noun now joins the subject ("a ball and a square slide")
        self.expect: str | None = None  # "sky" / "ground" right after "the sky is"
        self.prev = ""

    def read(self) -> _Draft:
        tokens = _tokens(self.text, self.lenient)
        nexts, nxt = [], None  # the next known token after each token
        for tok in reversed(tokens):
            nexts.append(nxt)
            nxt = tok if tok.kind != "unknown" else nxt
        for tok, nxt in zip(tokens, reversed(nexts)):
            if tok.read_as is not None:
                self.read_as[tok.read_as] = SYNONYMS[tok.read_as]
            if tok.kind == "unknown":
                self.left_out.append(tok.text)
                self.orphans = True
                continue
            if tok.kind == "stop":
                continue
            expect, self.expect = self.expect, None
            if tok.kind not in _KEEP_JOINABLE:
                self.joinable = False
            self._step(tok, nxt, expect)
            self.prev = tok.kind
        self._end_sentence()
        return self.draft

    def _step(self, tok: _Token, nxt: _Token | None, expect: str | None) -> None:
        match tok.kind:
            case "end":
                self._end_sentence()
            case "pause":
                pass
            case "copula":
                self.expect = {"sky_noun": "sky", "ground_noun": "ground"}.get(self.prev)
            case "pronoun":
                self.subject = self.subject or self.last_subject
            case "color" | "tone" if expect:
                self._set_background(expect, tok)
            case "count" | "size" | "color" | "tone":
                self._pend(tok)
            case "direction":
                self._direct(tok)
            case "motion":
                self._move(tok, nxt)
            case "shape":
                self._noun(tok, tok.value)
            case "circle":
                if self.subject == "brush" and self.draft.brush.path is None:
                    self._path(tok, "circle")
                else:
                    self._noun(tok, "ball")
            case "path":
                self._path(tok, tok.value)
            case "camera":
                self._camera(tok)
            case "occluder":
                self._take_pending(tok)
                self.draft.occluder = True
                if self.subject is None:
                    self._set_subject("occluder")
            case "brush" | "paint":  # "a blue brush", "blue paint"
                self._brush_color(self._take_pending(tok, "color"))
                self._set_subject("brush")
            case "sky_noun" | "ground_noun" | "sky" | "ground":  # "a grey sky", "on grey stone"
                what = tok.kind.removesuffix("_noun")
                for adjective in self._take_pending(tok, "color", "tone").values():
                    self._set_background(what, adjective)
                if tok.value is not None:
                    self._set(what, tok.value)
            case "empty":
                self._take_pending(tok)
                self.draft.empty = True
            case "collide":
                self._collide(tok, nxt)

    # -------- noun phrases

    def _pend(self, tok: _Token) -> None:
        if tok.kind in self.pending:
            old = self.pending[tok.kind].text
            raise _fail(f"two {tok.kind}s for one thing, {old!r} and {tok.text!r}, in {_quote(self.text)}")
        self.pending[tok.kind] = tok

    def _take_pending(self, noun: _Token, *allowed: str) -> dict[str, _Token]:
        """The adjectives in front of `noun`; an adjective that cannot describe it is an error
        (in a prompt, adjectives left without their unknown noun first become an object)."""
        if not self.pending.keys() <= set(allowed):
            self._draw_orphans()
        taken, self.pending = self.pending, {}
        for kind, tok in taken.items():
            if kind not in allowed:
                raise _fail(f"{tok.text!r} cannot describe {noun.text!r} in {_quote(self.text)}")
        return taken

    def _noun(self, tok: _Token, shape: str | None) -> None:
        words = self._take_pending(tok, *_OBJECT_WORDS)
        self.orphans = False
        group = _Group(words=[t.text for t in words.values()] + [tok.text], shape=shape)
        group.count = words["count"].value if "count" in words else 1
        group.size = words["size"].value if "size" in words else None
        group.color = words["color"].value if "color" in words else None
        group.collide = "collide" in words
        if "motion" in words:
            self._apply_motion(group, words["motion"])
        if "direction" in words:
            group.direction = words["direction"].value
        self.draft.groups.append(group)
        if self.joinable and isinstance(self.subject, list):
            self.subject.append(group)
        else:
            self._set_subject([group])
        self.joinable = True

    def _set_subject(self, subject: list[_Group] | str) -> None:
        self.subject = self.last_subject = subject

    def _draw_orphans(self) -> None:
        """In a prompt, adjectives whose noun was an unknown word ("a red giraffe bounces") make
        an object of any shape."""
        if self.lenient and self.orphans and self.pending and self.pending.keys() <= _OBJECT_WORDS:
            self._noun(_Token("shape", None, "object"), None)

    def _end_sentence(self) -> None:
        self._draw_orphans()
        self.orphans = False
        if self.pending:
            words = " ".join(t.text for t in self.pending.values())
            raise _fail(f"{words!r} does not describe anything in {_quote(self.text)}")
        self.subject, self.joinable, self.expect = None, False, None

    # -------- motion and direction

    def _move(self, tok: _Token, nxt: _Token | None) -> None:
        if tok.value == "pan":
            self._camera(tok)
            return
        attributive = nxt is not None and nxt.kind in _ATTRIBUTIVE_BEFORE  # "a rolling ball"
        if self.subject is None and not attributive:
            self._draw_orphans()  # "a red giraffe rolls": the red object rolls
        if self.subject is None or attributive:
            self._pend(tok)
        elif isinstance(self.subject, list):
            for group in self.subject:
                self._apply_motion(group, tok)
            self.joinable = False
        elif self.subject == "camera":
            self._camera_motion(tok)
        elif tok.value != "static":  # "the post stands", "the stroke stays": nothing to record
            raise _fail(f"{tok.text!r} cannot describe the {self.subject} in {_quote(self.text)}")

    def _apply_motion(self, group: _Group, tok: _Token) -> None:
        old, new = group.motion, tok.value
        said = tok.read_as or tok.text
        if old is None:
            group.motion, group.motion_text = new, said
        elif old == new:
            group.motion_text += f" and {said}"
        elif tuple(sorted((old, new))) in _MERGED_MOTIONS:
            group.motion = _MERGED_MOTIONS[tuple(sorted((old, new)))]
            group.motion_text += f" and {said}"
        elif self.lenient:  # one motion a clip: the first one said
            group.left_out.append(said)
            return
        else:
            raise _fail(f"{group.text!r} gives two motions, {old} and {new}, in {_quote(self.text)}")
        group.words.append(tok.text)

    def _collide(self, tok: _Token, nxt: _Token | None) -> None:
        attributive = nxt is not None and nxt.kind in _ATTRIBUTIVE_BEFORE  # "colliding balls"
        if self.subject is None and not attributive:
            self._draw_orphans()
        if self.subject is None or attributive:
            self._pend(tok)
        elif isinstance(self.subject, list):
            for group in self.subject:
                group.words.append(tok.text)
                group.collide = True
            self.joinable = False
        else:
            raise _fail(f"{tok.text!r} cannot describe the {self.subject} in {_quote(self.text)}")

    def _direct(self, tok: _Token) -> None:
        if self.subject is None:  # "to the left, a ball rolls"
            self._pend(tok)
        elif isinstance(self.subject, list):
            for group in self.subject:
                if group.left_out and group.motion not in DIRECTED_MOTIONS:  # "falls, then slides left"
                    group.left_out[-1] += f" {tok.read_as or tok.text}"
                    continue
                group.words.append(tok.text)
                group.direction = self._same(group.direction, tok.value, "directions")
            self.joinable = False
        elif self.subject == "camera":
            camera = self.draft.camera
            camera.direction = self._same(camera.direction, tok.value, "camera directions")
        else:
            raise _fail(f"{tok.text!r} cannot describe the {self.subject} in {_quote(self.text)}")

    # -------- camera, brush, background

    def _camera(self, tok: _Token) -> None:
        if self.draft.camera is None:
            self.draft.camera = _Camera()
        words = self._take_pending(tok, "motion", "direction")  # "a static camera"
        self._set_subject("camera")
        if "motion" in words:
            self._camera_motion(words["motion"])
        if "direction" in words:
            self._direct(words["direction"])
        if tok.kind == "motion":  # "pans"
            self._camera_motion(tok)

    def _camera_motion(self, tok: _Token) -> None:
        motion = {"static": "static", "slide": "pan", "pan": "pan"}.get(tok.value)
        if motion is None:
            raise _fail(f"the camera can only stay still or pan, not {tok.text!r}, in {_quote(self.text)}")
        camera = self.draft.camera
        camera.motion = self._same(camera.motion, motion, "camera motions")

    def _brush(self) -> _Brush:
        if self.draft.brush is None:
            self.draft.brush = _Brush()
        return self.draft.brush

    def _brush_color(self, adjectives: dict[str, _Token]) -> None:
        brush = self._brush()
        if "color" in adjectives:
            brush.color = self._same(brush.color, adjectives["color"].value, "brush colours")

    def _path(self, tok: _Token, path: str) -> None:
        self._brush_color(self._take_pending(tok, "color"))  # "paints a blue wave"
        brush = self._brush()
        brush.path = self._same(brush.path, path, "brush paths")
        if self.subject is None:
            self._set_subject("brush")

    def _set_background(self, what: str, tok: _Token) -> None:
        tones = _SKY_TONES if what == "sky" else _GROUND_TONES
        if tok.text not in tones:
            known = ", ".join(SKY_COLORS if what == "sky" else GROUND_COLORS)
            raise _fail(f"{tok.text!r} is not a {what} of Kinema World ({known}) in {_quote(self.text)}")
        self._set(what, tones[tok.text])

    def _set(self, what: str, value: str) -> None:
        setattr(self.draft, what, self._same(getattr(self.draft, what), value, f"{what} colours"))

    def _same(self, old: str | None, new: str, what: str) -> str:
        if old is not None and old != new:
            raise _fail(f"two {what}, {old!r} and {new!r}, in {_quote(self.text)}")
        return new


# ---------------------------------------------------------------- reading


def parse(caption: str) -> SceneSpec:
    """The spec a detailed caption describes. Every field must be given; else KinemaError."""
    draft = _Reader(caption).read()
    _check_count(draft, caption)
    objects = []
    for group in draft.groups:
        missing = [name for name in ("size", "color", "shape", "motion") if getattr(group, name) is None]
        if group.motion in DIRECTED_MOTIONS and group.direction is None:
            missing.append("direction")
        if missing:
            raise _fail(f"the caption does not give the {', '.join(missing)} of {group.text!r}")
        objects += _objects(group)
    camera = draft.camera
    if camera is None or camera.motion != "static" and camera.direction is None:
        raise _fail(f"the caption does not say what the camera does: {caption.strip()!r}")
    if draft.brush is not None and None in (draft.brush.color, draft.brush.path):
        raise _fail(f"the caption does not give the brush's colour and path: {caption.strip()!r}")
    for what in ("sky", "ground"):
        if getattr(draft, what) is None:
            raise _fail(f"the caption does not give the {what}: {caption.strip()!r}")
    return _scene(draft, objects, _camera_name(draft.camera, None))


def spec_from_prompt(short_prompt: str, seed: int = 0) -> SceneSpec:
    """The scene a short prompt asks for; what it leaves open is drawn from `random.Random(seed)`."""
    return spec_with_notices(short_prompt, seed)[0]


def spec_with_notices(short_prompt: str, seed: int = 0) -> tuple[SceneSpec, list[str]]:
    """`spec_from_prompt`, and one short sentence for each kind of thing the reader changed or
    left out: "read 'orb' as 'ball'", "left out: fluffy", "kept 'rolls'; left out 'flies'"."""
    reader = _Reader(short_prompt, lenient=True)
    draft = reader.read()
    if reader.left_out and draft == _Draft():
        raise _unknown(reader.left_out[0], short_prompt)  # nothing to draw
    _check_count(draft, short_prompt)
    rng = random.Random(seed)
    if draft.empty and draft.groups:
        raise _fail(f"the prompt says the scene is empty but names objects: {short_prompt.strip()!r}")
    if not draft.groups and not draft.empty:
        draft.groups = [_Group(words=["an object"]) for _ in range(rng.choice((1, 2)))]
    notices = []
    if reader.read_as:
        notices.append("read " + ", ".join(f"{said!r} as {read!r}" for said, read in reader.read_as.items()))
    if reader.left_out:
        notices.append("left out: " + ", ".join(dict.fromkeys(reader.left_out)))
    for group in draft.groups:
        if group.left_out:
            notices.append(f"kept {group.motion_text!r}; left out {', '.join(map(repr, group.left_out))}")
    _pair_colliders(draft.groups, notices)
    sides = itertools.cycle(("right", "left"))  # colliders slide towards each other
    used = {g.color for g in draft.groups} | {draft.brush.color if draft.brush else None}
    objects = []
    for group in draft.groups:
        for _ in range(group.count):
            obj = _fill_object(group, rng, used, next(sides) if group.collide else None)
            used.add(obj.color)
            objects.append(obj)
    if draft.brush is not None:
        draft.brush.color = draft.brush.color or _fresh_color(rng, used)
        draft.brush.path = draft.brush.path or rng.choice(BRUSH_PATHS)
    camera = _camera_name(draft.camera, rng)
    draft.sky = draft.sky or rng.choice(list(SKY_COLORS))
    draft.ground = draft.ground or rng.choice(list(GROUND_COLORS))
    return _scene(draft, objects, camera), notices


def expand(short_prompt: str, seed: int = 0) -> str:
    """A detailed caption for a short prompt: `caption(spec_from_prompt(short_prompt, seed))`."""
    return caption(spec_from_prompt(short_prompt, seed))


def expand_prompt(short_prompt: str, seed: int = 0) -> tuple[str, list[str]]:
    """(the caption `expand` gives, the notices of `spec_with_notices`)."""
    spec, notices = spec_with_notices(short_prompt, seed)
    return caption(spec), notices


def _pair_colliders(groups: list[_Group], notices: list[str]) -> None:
    """A collision needs two objects: when the prompt says one collides ("a ball crashes into a
    square"), every object does; in a scene of one object, none does (with a notice)."""
    said = [g for g in groups if g.collide]
    if not said or sum(g.count for g in said) >= 2:
        return
    alone = sum(g.count for g in groups) < 2
    if alone:
        notices.append("left out the collision: it needs two objects")
    for group in groups:
        group.collide = not alone


def _check_count(draft: _Draft, text: str) -> None:
    total = sum(g.count for g in draft.groups)
    if total > MAX_OBJECTS:
        raise KinemaError(f"{_quote(text)} names {total} objects; a scene holds at most {MAX_OBJECTS}")


def _fill_object(group: _Group, rng: random.Random, used: set, collide_side: str | None) -> ObjectSpec:
    """One object of `group`; `collide_side`: the direction it slides to meet the others."""
    shape = group.shape or ("ball" if group.motion == "roll" else rng.choice(SHAPES))
    size = group.size or rng.choice(list(SIZES))
    color = group.color or _fresh_color(rng, used)
    motion = group.motion
    if motion is None and collide_side is not None:
        motion = "slide"
    elif motion is None and group.direction is not None:
        motion = rng.choice([m for m in DIRECTED_MOTIONS if m != "roll" or shape == "ball"])
    elif motion is None:  # no motion said: a still object
        motion = "static"
    direction = group.direction
    if motion in DIRECTED_MOTIONS and direction is None:
        direction = collide_side or rng.choice(DIRECTIONS)
    filled = _Group(group.words, 1, size, color, shape, motion, direction)
    return _objects(filled)[0]


def _fresh_color(rng: random.Random, used: set) -> str:
    unused = [c for c in COLORS if c not in used]
    return rng.choice(unused or list(COLORS))


def _objects(group: _Group) -> list[ObjectSpec]:
    try:
        obj = ObjectSpec(group.color, group.size, group.shape, group.motion, group.direction)
    except KinemaError as error:
        raise KinemaError(f"{error} (in {group.text!r})") from None
    return [obj] * group.count


def _camera_name(camera: _Camera | None, rng: random.Random | None) -> str:
    """The spec's camera: static unless the text says it pans (or moves left / right)."""
    if camera is None or camera.motion in (None, "static") and camera.direction is None:
        return "static"
    if camera.motion == "static":
        direction = camera.direction
        raise KinemaError(f"a still camera does not move {direction}; say 'the camera pans {direction}'")
    direction = camera.direction or rng.choice(DIRECTIONS)
    return f"pan {direction}"


def _scene(draft: _Draft, objects: list[ObjectSpec], camera: str) -> SceneSpec:
    brush = BrushSpec(draft.brush.color, draft.brush.path) if draft.brush else None
    return SceneSpec(tuple(objects), draft.sky, draft.ground, camera, draft.occluder, brush)
