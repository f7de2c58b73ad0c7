"""The world benchmark: a fixed suite of prompts, the sources that answer them, the runner, and
the calibration of the judge against real renders (the ceiling) and trivial baselines (floors).

    results = run(source("real"), SUITES["quick"]())       # one ClipResult a case
    make, tasks = sources("PATH")                           # a model's clips and its task answers
    results = run(make, SUITES["quick"](), tasks=tasks)     # + the task metrics on cases with tasks
    totals = aggregate(results)                             # metric -> mean over the clips it applies to
    results = run(make, seed_rounds(SUITES["quick"](), 3))  # 3 rounds on other seeds; round_spread(results, 3)
    print(calibration_table(calibrate("quick")))

A source is anything that turns a prompt into frames: `ClipSource(prompt, width, height,
seconds, fps, seed) -> (T, H, W, 3) uint8`. Prompts are full world captions, so the scene asked
is exactly `kinema.world.text.parse(prompt)` and the judge checks all of it.

    real               renders the prompt with Kinema World
    baseline:frozen    the render's first frame, held        (breaks motion, gravity, the pan)
    baseline:shuffled  the render's frames in random order   (breaks continuity, gravity, hiding)
    baseline:noise     uniform random pixels                 (breaks everything)
    vae:NAME           the render through the VAE NAME and back: the ceiling of any DiT on
                       that VAE (what the compression alone costs each metric)
    NAME or PATH       a trained model, through `model_source` (the generation pipeline's door)

A task source answers the tasks built from a case's real render: `TaskSource(case, real) ->
{task metric: Score}`. Real renders and baselines answer with the render (`task_scores`, as in
calibration); a trained model runs its own animate, extend, loop, connect and edit on it
(`model_task_scores`), so a model's table sits beside the ceiling's and the floors'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from kinema.errors import KinemaError
from kinema.eval import judge as J
from kinema.world.spec import COLORS, BrushSpec, ObjectSpec, SceneSpec

if TYPE_CHECKING:
    from kinema.pipeline import Pipeline

ClipSource = Callable[[str, int, int, float, float, int], np.ndarray]
TaskSource = Callable[["Case", np.ndarray], dict[str, J.Score]]  # (case, its real render) -> task scores
BASELINES = ("frozen", "shuffled", "noise")
TASK_METRICS = ("first_frame", "extend_seam", "loop_seam", "connect", "sdedit")
RELATIVE_METRICS = ("framing",)  # scored against the real render of the same case (`run`)


# ---------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Case:
    name: str
    spec: SceneSpec
    width: int = 160
    height: int = 90
    seconds: float = 3.0
    fps: float = 12.0
    seed: int = 0
    tasks: bool = False  # also calibrate the task metrics on this case

    @property
    def prompt(self) -> str:
        from kinema.world.text import caption

        return caption(self.spec)


def _o(color: str, size: str, shape: str, motion: str, direction: str | None = None) -> ObjectSpec:
    return ObjectSpec(color, size, shape, motion, direction)


def _scene(*objects: ObjectSpec, **kw) -> SceneSpec:
    return SceneSpec(tuple(objects), **kw)


# (name, spec, seed, tasks[, seconds]): every metric is asked by several cases; seeds are fixed
_CORE = [
    ("ball falls", _scene(_o("red", "medium", "ball", "fall")), 1, True),
    ("square falls, star stays", _scene(_o("blue", "large", "square", "fall"), _o("yellow", "small", "star", "static"),
                                        sky="pale yellow", ground="sand"), 2, True),
    ("triangle slides right", _scene(_o("green", "medium", "triangle", "slide", "right"), sky="grey", ground="grey stone"), 3, True),
    ("ball rolls left", _scene(_o("orange", "large", "ball", "roll", "left"), ground="brown earth"), 4, False),
    ("diamond bounces off the walls", _scene(_o("purple", "medium", "diamond", "bounce"), sky="dark blue", ground="sand"), 5, True),
    ("two squares stay", _scene(_o("white", "small", "square", "static"), _o("white", "small", "square", "static"),
                                sky="dark blue"), 6, False),
    ("star leaves and returns", _scene(_o("cyan", "medium", "star", "leave", "right")), 7, False),
    ("ball slides behind the post", _scene(_o("magenta", "medium", "ball", "slide", "left"), occluder=True,
                                           sky="grey", ground="brown earth"), 8, True),
    ("pan past the post", _scene(_o("yellow", "small", "square", "static"), occluder=True, camera="pan right",
                                 sky="light blue", ground="grey stone"), 9, False, 6.0),
    ("diamond falls, camera pans left", _scene(_o("black", "medium", "diamond", "fall"), camera="pan left",
                                               sky="pale yellow", ground="green grass"), 10, False),
    ("still objects, camera pans right", _scene(_o("red", "small", "triangle", "static"), _o("green", "large", "ball", "static"),
                                                camera="pan right", sky="grey", ground="sand"), 11, False),
    ("brush paints a wave", _scene(_o("orange", "medium", "square", "static"), brush=BrushSpec("blue", "wave"),
                                   sky="light blue", ground="green grass"), 12, False),
    ("brush paints a circle", _scene(_o("cyan", "small", "ball", "slide", "right"), brush=BrushSpec("magenta", "circle"),
                                     sky="pale yellow", ground="brown earth"), 13, False),
    ("triangle shatters", _scene(_o("white", "large", "triangle", "shatter"), sky="grey", ground="brown earth"), 14, False),
    ("busy scene", _scene(_o("red", "small", "ball", "fall"), _o("blue", "large", "square", "slide", "right"),
                          occluder=True, camera="pan left", brush=BrushSpec("green", "zigzag"), ground="sand"), 15, False),
    ("empty scene, camera pans left", _scene(camera="pan left", sky="grey", ground="green grass"), 16, False),
]  # fmt: skip

# more of the same claims at other aspect ratios, durations and frame rates, for `full`
_MORE = [
    ("tall: star falls", _scene(_o("magenta", "medium", "star", "fall"), ground="grey stone"), 21, (144, 256, 4.0, 12.0)),
    ("square: two balls fall", _scene(_o("red", "medium", "ball", "fall"), _o("blue", "small", "ball", "fall"),
                                      sky="grey", ground="sand"), 22, (192, 192, 4.0, 12.0)),
    ("wide: square slides left behind the post", _scene(_o("green", "large", "square", "slide", "left"), occluder=True,
                                                        sky="pale yellow"), 23, (320, 120, 4.0, 12.0)),
    ("ball leaves left and returns", _scene(_o("orange", "medium", "ball", "leave", "left"), sky="dark blue",
                                            ground="grey stone"), 24, (256, 144, 5.0, 12.0)),
    ("ball rolls right, camera pans left", _scene(_o("purple", "large", "ball", "roll", "right"), camera="pan left"),
     25, (256, 144, 4.0, 12.0)),
    ("star bounces, square stays", _scene(_o("yellow", "medium", "star", "bounce"), _o("black", "medium", "square", "static"),
                                          sky="light blue", ground="brown earth"), 26, (256, 144, 4.0, 8.0)),
    ("brush zigzag, camera pans right", _scene(_o("white", "medium", "diamond", "static"), brush=BrushSpec("red", "zigzag"),
                                               camera="pan right", sky="grey", ground="green grass"), 27, (256, 144, 4.0, 12.0)),
    ("three still shapes", _scene(_o("red", "large", "star", "static"), _o("cyan", "medium", "triangle", "static"),
                                  _o("orange", "small", "diamond", "static"), sky="pale yellow", ground="sand"), 28, (256, 144, 3.0, 12.0)),
    ("ball falls at 24 fps", _scene(_o("green", "large", "ball", "fall"), sky="dark blue", ground="sand"), 29, (256, 144, 3.0, 24.0)),
    ("diamond slides behind the post, camera pans left", _scene(_o("blue", "medium", "diamond", "slide", "right"), occluder=True,
                                                                camera="pan left", ground="grey stone"), 30, (256, 144, 4.0, 12.0)),
    ("square shatters", _scene(_o("purple", "medium", "square", "shatter"), sky="light blue", ground="green grass"), 31, (256, 144, 3.0, 12.0)),
    ("empty scene, still camera", _scene(sky="pale yellow", ground="brown earth"), 32, (256, 144, 3.0, 12.0)),
]  # fmt: skip


def quick() -> list[Case]:
    """16 small clips (160x90, 3 s at 12 fps): every metric, for tests and CI."""
    return [Case(name, spec, seed=seed, tasks=tasks, seconds=rest[0] if rest else 3.0) for name, spec, seed, tasks, *rest in _CORE]


def full() -> list[Case]:
    """The quick scenes at 256x144 for 4 s, and 12 more at other sizes, aspects, lengths and rates."""
    cases = [Case(name, spec, 256, 144, rest[0] if rest else 4.0, 12.0, seed, tasks) for name, spec, seed, tasks, *rest in _CORE]
    for name, spec, seed, (w, h, seconds, fps) in _MORE:
        cases.append(Case(name, spec, w, h, seconds, fps, seed))
    return cases


# one scene a size, the three in turn: the same prompts at trained sizes and at sizes the model
# never saw, to tell what the size alone costs (`by_group`)
_SIZE_SCENES = [
    _scene(_o("red", "medium", "ball", "fall"), sky="light blue", ground="green grass"),
    _scene(_o("blue", "large", "square", "static"), sky="pale yellow", ground="sand"),
    _scene(_o("yellow", "medium", "star", "slide", "right"), sky="dark blue", ground="grey stone"),
]
_SIZE_GROUPS = {
    "trained": [(224, 128), (128, 224), (160, 160)],
    "wide": [(640, 272), (512, 128), (800, 336)],
    "tall": [(270, 480), (144, 400), (360, 640)],
    "small": [(48, 27), (32, 32), (40, 64)],
    "hd": [(960, 540), (1920, 1080), (540, 960), (1080, 1920)],
}


def sizes() -> list[Case]:
    """16 short clips (5 frames at 8 fps) of three scenes: at sizes inside the world model's
    training (at most 14 x 16 tokens of 16 px), widescreen, vertical, very small and 1920x1080-
    shaped. Names are GROUP: size; compare groups with `by_group`. Slow at the largest sizes."""
    cases, i = [], 0
    for group, shapes in _SIZE_GROUPS.items():
        for w, h in shapes:
            spec = _SIZE_SCENES[i % len(_SIZE_SCENES)]
            cases.append(Case(f"{group}: {w}x{h}", spec, w, h, seconds=0.625, fps=8.0, seed=40 + i))
            i += 1
    return cases


FRAMING_SIZES = {"wide": (224, 128), "tall": (128, 224)}  # inside the shipped world model's training


def framing(sizes: dict[str, tuple[int, int]] | None = None, seconds: float = 2.0, fps: float = 8.0) -> list[Case]:
    """The quick suite's scenes that ask for objects (15) at each size of `sizes` (group name ->
    (width, height); default a widescreen and a vertical one), `seconds` at `fps`, on the quick
    suite's seeds: the same prompts and seeds at every size. Names are GROUP: scene (`by_group`)."""
    sizes = FRAMING_SIZES if sizes is None else sizes
    if not sizes:
        raise KinemaError("framing needs at least one size")
    return [Case(f"{group}: {name}", spec, w, h, seconds, fps, seed)
            for group, (w, h) in sizes.items() for name, spec, seed, *_ in _CORE if spec.objects]  # fmt: skip


def framing_summary(results: list[ClipResult], rounds: int = 1) -> dict:
    """Per group of `by_group` (a size of the framing suite): "groups" the `aggregate` of its clips,
    "spread" its `round_spread` (empty for one round), "shares" the mean framing share of the
    clips and of the real renders of the same cases ({"model", "real"}: the share of frames that
    hold the asked objects wholly in view)."""
    out: dict[str, dict] = {"groups": {}, "spread": {}, "shares": {}}
    for g, rs in group_results(results).items():
        out["groups"][g] = aggregate(rs)
        out["spread"][g] = round_spread(rs, rounds) if rounds > 1 else {}
        shares = {}
        for k, who in enumerate(("model", "real")):
            values = [r.framed[k] for r in rs if r.framed[k] is not None]
            shares[who] = float(np.mean(values)) if values else None
        out["shares"][g] = shares
    return out


SUITES: dict[str, Callable[[], list[Case]]] = {"quick": quick, "full": full, "sizes": sizes, "framing": framing}


def suite(name: str) -> list[Case]:
    if name not in SUITES:
        raise KinemaError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]()


SEED_STEP = 100  # a round's seeds move by this: above every case seed, so no two rounds share a clip


def seed_rounds(cases: list[Case], rounds: int) -> list[Case]:
    """The cases `rounds` times over, round k with every seed moved by k * SEED_STEP (round 0 is
    the suite as it is): the same prompts on other noise and other real renders, so a mean over
    rounds is less at the mercy of one draw (see `round_spread`)."""
    if rounds < 1:
        raise KinemaError(f"rounds must be at least 1; got {rounds}")
    return [replace(c, seed=c.seed + k * SEED_STEP) for k in range(rounds) for c in cases]


# ---------------------------------------------------------------- sources


def real_source(prompt: str, width: int, height: int, seconds: float, fps: float, seed: int) -> np.ndarray:
    """Kinema World's render of the prompt: the ceiling."""
    from kinema.world.render import render
    from kinema.world.text import spec_from_prompt

    return render(spec_from_prompt(prompt, seed), width, height, seconds, fps, seed).frames


def render_case(case: Case) -> np.ndarray:
    """The real render of a case: what its tasks are built from."""
    return real_source(case.prompt, case.width, case.height, case.seconds, case.fps, case.seed)


def degrade(frames: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A trivial baseline made from real frames: frozen, shuffled or noise."""
    rng = np.random.default_rng(seed)
    if kind == "frozen":
        return np.repeat(frames[:1], len(frames), axis=0)
    if kind == "shuffled":
        return frames[rng.permutation(len(frames))]
    if kind == "noise":
        return rng.integers(0, 256, frames.shape, dtype=np.uint8)
    raise KinemaError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")


def baseline_source(kind: str) -> ClipSource:
    if kind not in BASELINES:
        raise KinemaError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")

    def make(prompt: str, width: int, height: int, seconds: float, fps: float, seed: int) -> np.ndarray:
        return degrade(real_source(prompt, width, height, seconds, fps, seed), kind, seed)

    return make


def vae_roundtrip(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The VAE `name` (a shipped name or a save_vae folder) as frames -> frames: uint8 (T, H, W, 3)
    of any size and length encoded (the posterior's mode) and decoded, edge-padded inside to
    whole latent cells and 1 + 4k frames, cropped back to (T, H, W, 3)."""
    import torch

    from kinema.data.cache import decode_latent, encode_frames
    from kinema.pipeline import _pad_box, crop_frames, pad_frames
    from kinema.vae import load_vae

    vae = load_vae(name)
    f, s = vae.config.temporal_factor, vae.config.spatial_factor

    @torch.inference_mode()
    def trip(frames: np.ndarray) -> np.ndarray:
        T, H, W, _ = frames.shape
        box = _pad_box(H, W, s)
        x = pad_frames(torch.from_numpy(np.ascontiguousarray(frames)), box, time_to=1 + -(-(T - 1) // f) * f)
        return crop_frames(decode_latent(vae, encode_frames(vae, x, chunk=1))[:T], box).numpy()

    return trip


def load_model(model: str | Pipeline) -> Pipeline:
    """A model NAME ("world") or folder PATH -> its `kinema.pipeline.Pipeline`; a Pipeline as it is."""
    from kinema.pipeline import Pipeline

    return model if isinstance(model, Pipeline) else Pipeline.from_pretrained(model)


def model_source(model: str | Pipeline) -> ClipSource:
    """THE door for trained models: a model NAME ("world"), folder PATH or loaded Pipeline -> a ClipSource.

    Generates each prompt with the model's defaults (steps, guidance) and the prompt as the
    caption (suite prompts are full world captions, which the world grammar would expand to
    themselves), at exactly the case's size (the pipeline's size rule)."""
    pipe = load_model(model)

    def make(prompt: str, width: int, height: int, seconds: float, fps: float, seed: int) -> np.ndarray:
        return pipe.generate(prompt, width, height, seconds, fps, seed=seed, expand=False, progress=False).frames.numpy()

    return make


def model_task_scores(pipe: Pipeline, case: Case, real: np.ndarray) -> dict[str, J.Score]:
    """Every task metric on the model's own answers to the tasks `task_scores` builds from a real
    render (T frames): animate its first frame; extend its first T // 2 frames forward by the
    rest; a loop, whose seam is judged against the render's steps; connect its first and last
    T // 3 frames; SDEdit it into the scene with the first object recoloured. Sampled as
    `model_source` samples: the model's steps and guidance, the case's seed, the prompt as the
    caption. Every answer has the case's size (inputs keep theirs; the loop is made at it)."""
    import torch

    from kinema.video import Video

    def video(frames: np.ndarray) -> Video:
        return Video(torch.from_numpy(np.ascontiguousarray(frames)), case.fps)

    kw = dict(seed=case.seed, expand=False, progress=False)
    prompt, fps, T = case.prompt, case.fps, len(real)
    half, q = T // 2, T // 3
    given, a, b = real[:half], real[:q], real[T - q :]

    animated = pipe.animate(real[0], prompt, seconds=case.seconds, fps=fps, **kw).frames.numpy()
    extended = pipe.extend(video(given), prompt, "forward", seconds=(T - half) / fps, **kw).frames.numpy()
    looped = pipe.loop(prompt, case.width, case.height, case.seconds, fps, **kw).frames.numpy()
    connected = pipe.connect(video(a), video(b), prompt, seconds=(T - 2 * q) / fps, **kw).frames.numpy()
    scores = {
        "first_frame": J.first_frame(animated, real[0]),
        "extend_seam": J.extension_seam(given, extended),  # given + new frames
        "loop_seam": J.loop_seam(looped, real[:half]),
        "connect": J.connect(a, b, connected[q : len(connected) - q]),  # A + middle + B
        "sdedit": J.NA("the scene has no object to recolour"),
    }
    if case.spec.objects:
        edited = _recolor(case.spec)
        after = pipe.edit(video(real), Case("", edited).prompt, **kw).frames.numpy()
        scores["sdedit"] = J.sdedit(real, after, fps, edited, case.spec)
    return scores


def model_tasks(model: str | Pipeline) -> TaskSource:
    """The task door beside `model_source`: a model NAME, folder PATH or loaded Pipeline -> a TaskSource."""
    pipe = load_model(model)
    return lambda case, real: model_task_scores(pipe, case, real)


def sources(name: str, settings: dict | None = None) -> tuple[ClipSource, TaskSource]:
    """'real', 'baseline:KIND', 'vae:NAME' or a model NAME / PATH -> what answers the prompts
    and what answers the tasks (a model or VAE is loaded once, for both). settings: sampling
    defaults for a model ({"steps": 30, "guidance": 6.0}), in place of its own; "compose": False
    samples sizes beyond the model's training in one pass (`kinema.composition`), as before it."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    compose = settings.pop("compose", True)
    if settings and (name == "real" or name.startswith(("baseline:", "vae:"))):
        raise KinemaError(f"{', '.join(settings)} apply to a trained model, not to {name!r}")
    if name == "real":
        return real_source, lambda case, real: task_scores(case, real, None)
    if name.startswith("baseline:"):
        kind = name.split(":", 1)[1]
        return baseline_source(kind), lambda case, real: task_scores(case, real, kind)
    if name.startswith("vae:"):
        trip = vae_roundtrip(name.split(":", 1)[1])
        return (lambda *args: trip(real_source(*args))), lambda case, real: task_scores(case, real, trip)
    if not compose and (name == "real" or name.startswith(("baseline:", "vae:"))):
        raise KinemaError(f"compose applies to a trained model, not to {name!r}")
    pipe = load_model(name)
    if not compose:  # the model as it was before: every size sampled at once, positions unscaled
        pipe.dit.config = replace(pipe.dit.config, trained_extent=None)
    if settings:
        pipe.defaults.update(pipe._settings(**settings))  # checked as a generate call checks them
    return model_source(pipe), model_tasks(pipe)


def source(name: str) -> ClipSource:
    """'real', 'baseline:KIND', 'vae:NAME' or a model NAME / PATH."""
    return sources(name)[0]


# ---------------------------------------------------------------- running


@dataclass
class ClipResult:
    case: Case
    scores: dict[str, J.Score]
    seconds: float  # to make and judge the clip (and its tasks)
    frames: np.ndarray | None = field(default=None, repr=False)
    seen: J.Seen | None = field(default=None, repr=False)
    framed: tuple[float | None, float | None] = (None, None)  # framing shares: the clip's, the real render's

    def to_dict(self) -> dict:
        c = self.case
        return dict(name=c.name, prompt=c.prompt, spec=c.spec.to_dict(), width=c.width, height=c.height,
                    seconds=c.seconds, fps=c.fps, seed=c.seed, scores={k: v.to_dict() for k, v in self.scores.items()},
                    framed=dict(zip(("model", "real"), self.framed)), judge_seconds=round(self.seconds, 3))  # fmt: skip


def _check_frames(frames: np.ndarray, case: Case) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (case.height, case.width, 3) or frames.dtype != np.uint8 or len(frames) < 2:
        raise KinemaError(
            f"the source gave frames of shape {frames.shape} {frames.dtype} for {case.name!r}; "
            f"expected (T >= 2, {case.height}, {case.width}, 3) uint8"
        )
    return frames


def run(make: ClipSource, cases: list[Case], keep: bool = False, progress: Callable[[str], None] | None = None,
        tasks: TaskSource | None = None) -> list[ClipResult]:  # fmt: skip
    """Make every case's clip with `make` and judge it, framing against the case's real render
    (`J.score_framing`). `keep`: hold frames and what the judge saw (for contact sheets). `tasks`:
    also score the task metrics, answered by `tasks` on the real render of each case that asks
    them (n/a on the others)."""
    results = []
    for case in cases:
        start = time.perf_counter()
        frames = _check_frames(make(case.prompt, case.width, case.height, case.seconds, case.fps, case.seed), case)
        seen = J.see(frames, case.fps, case.spec)
        scores = J.judge(frames, case.fps, case.spec, seen)
        real = render_case(case) if case.spec.objects or (tasks is not None and case.tasks) else None
        share = real_share = J.framing_share(seen, case.spec)
        if share is not None and not np.array_equal(real, frames):  # the real render itself frames as it does
            real_share = J.framing_share(J.see(real, case.fps, case.spec), case.spec)
        scores["framing"] = J.score_framing(share, real_share)
        if tasks is not None:
            unasked = {m: J.NA("the suite asks no tasks of this case") for m in TASK_METRICS}
            scores |= tasks(case, real) if case.tasks else unasked
        results.append(ClipResult(case, scores, time.perf_counter() - start, frames if keep else None,
                                  seen if keep else None, (share, real_share)))  # fmt: skip
        if progress is not None:
            progress(case.name)
    return results


def aggregate(results: list[ClipResult]) -> dict[str, float | None]:
    """Metric -> mean over the clips it applies to (None if it applies to none)."""
    out: dict[str, float | None] = {}
    names = dict.fromkeys(k for r in results for k in r.scores)
    for name in names:
        values = [r.scores[name].value for r in results if r.scores.get(name) and r.scores[name].value is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def group_results(results: list[ClipResult]) -> dict[str, list[ClipResult]]:
    """Group (the part of a case name before ':'; the whole name without one) -> its results, in
    the order groups first appear."""
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        groups.setdefault(r.case.name.split(":", 1)[0], []).append(r)
    return groups


def by_group(results: list[ClipResult], metrics: tuple[str, ...] | None = None) -> dict[str, dict[str, float | None]]:
    """Group (the part of a case name before ':'; the whole name without one) -> `aggregate` of
    its clips, in the order groups first appear; `metrics` keeps those only."""
    out = {}
    for g, rs in group_results(results).items():
        totals = aggregate(rs)
        out[g] = {m: totals.get(m) for m in metrics} if metrics else totals
    return out


def round_spread(results: list[ClipResult], rounds: int) -> dict[str, float | None]:
    """Metric -> standard deviation of its `aggregate` between the rounds of `seed_rounds`
    (results in the order run gave them; None where fewer than two rounds have a value)."""
    if rounds < 1 or len(results) % rounds:
        raise KinemaError(f"{len(results)} results do not split into {rounds} rounds")
    n = len(results) // rounds
    means = [aggregate(results[k * n : (k + 1) * n]) for k in range(rounds)]
    out: dict[str, float | None] = {}
    for name in aggregate(results):
        values = [m[name] for m in means if m.get(name) is not None]
        out[name] = float(np.std(values)) if len(values) >= 2 else None
    return out


# ---------------------------------------------------------------- calibration


def _recolor(spec: SceneSpec) -> SceneSpec:
    """The SDEdit check's edit: the first object in a colour nobody in the scene uses."""
    used = {o.color for o in spec.objects} | ({spec.brush.color} if spec.brush else set())
    new = next(c for c in COLORS if c not in used)
    first = replace(spec.objects[0], color=new)
    return replace(spec, objects=(first, *spec.objects[1:]))


def task_scores(
    case: Case, real: np.ndarray, kind: str | Callable[[np.ndarray], np.ndarray] | None
) -> dict[str, J.Score]:
    """Every task metric on tasks built from a real render, answered by the render itself
    (kind None), by a baseline made from it (kind "frozen", ...) or by the render passed through
    `kind(frames) -> frames` (a VAE round trip)."""
    if kind is None:
        out = lambda f: f  # noqa: E731
    elif callable(kind):
        out = kind
    else:
        out = lambda f: degrade(f, kind, case.seed)  # noqa: E731
    T = len(real)
    half, q = T // 2, T // 3
    pingpong = np.concatenate([real[:half], real[half - 2 : 0 : -1]])  # a real loop: forth and back
    scores = {
        "first_frame": J.first_frame(out(real), real[0]),
        "extend_seam": J.extension_seam(real[:half], out(real)[half:]),
        "loop_seam": J.loop_seam(out(pingpong), real[:half]),
        "connect": J.connect(real[:q], real[T - q :], out(real)[q : T - q]),
        "sdedit": J.NA("the scene has no object to recolour"),
    }
    if case.spec.objects:
        edited = _recolor(case.spec)
        after = real_source(Case("", edited).prompt, case.width, case.height, case.seconds, case.fps, case.seed)
        scores["sdedit"] = J.sdedit(real, out(after), case.fps, edited, case.spec)
    return scores


@dataclass
class Calibration:
    suite: str
    world: dict[str, dict[str, float | None]]  # source -> metric -> aggregate
    tasks: dict[str, dict[str, float | None]]  # source -> task metric -> mean
    seconds: float


# what each baseline must break (score below BREAK_BELOW); the ceiling must reach CEILING
BREAKS = {
    "frozen": ("motion", "gravity", "camera"),
    "shuffled": ("consistency", "gravity", "permanence"),
    "noise": J.METRICS + TASK_METRICS,
}
CEILING, BREAK_BELOW = 0.95, 0.5


def calibrate(suite_name: str = "quick") -> Calibration:
    """The judge on real renders and on each baseline, world and task metrics."""
    start = time.perf_counter()
    cases = suite(suite_name)
    reals = [render_case(c) for c in cases]
    world, tasks = {}, {}
    for kind in (None, *BASELINES):
        label = kind or "real"
        results = []
        for case, frames in zip(cases, reals):
            clip = frames if kind is None else degrade(frames, kind, case.seed)
            results.append(ClipResult(case, J.judge(clip, case.fps, case.spec), 0.0))
        world[label] = aggregate(results)
        task_runs = [ClipResult(c, task_scores(c, f, kind), 0.0) for c, f in zip(cases, reals) if c.tasks]
        tasks[label] = aggregate(task_runs)
    return Calibration(suite_name, world, tasks, time.perf_counter() - start)


def calibration_problems(cal: Calibration) -> list[str]:
    """Every way the calibration misses its thresholds (empty when it holds)."""
    problems = []
    for group in (cal.world, cal.tasks):
        for metric, value in group["real"].items():
            if value is None or value < CEILING:
                problems.append(f"real renders score {value} on {metric} (< {CEILING})")
        for kind, metrics in BREAKS.items():
            for metric in metrics:
                value = group[kind].get(metric, "absent")
                if value == "absent":
                    continue
                if value is None or value >= BREAK_BELOW:
                    problems.append(f"baseline {kind} scores {value} on {metric}, which it breaks (>= {BREAK_BELOW})")
    return problems


def calibration_table(cal: Calibration) -> str:
    """Markdown: one row a metric, one column a source; a baseline's score on a metric it must
    break is marked with *."""
    sources = ["real", *BASELINES]
    lines = [
        f"Judge calibration on the `{cal.suite}` suite: real renders (ceiling, must be >= {CEILING}) "
        f"and trivial baselines (* must be < {BREAK_BELOW}).",
        "",
        "| metric | " + " | ".join(sources) + " |",
        "| --- | " + " | ".join("---:" for _ in sources) + " |",
    ]
    for group, title in ((cal.world, "world"), (cal.tasks, "task")):
        for metric in group["real"]:
            cells = []
            for s in sources:
                v = group[s].get(metric)
                mark = "*" if s in BREAKS and metric in BREAKS[s] else ""
                cells.append("n/a" if v is None else f"{v:.2f}{mark}")
            lines.append(f"| {metric} ({title}) | " + " | ".join(cells) + " |")
    lines += ["", f"{cal.seconds:.1f} s on this machine."]
    return "\n".join(lines)
