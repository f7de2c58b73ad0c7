"""The shipped world model ("world") end to end on the CPU, with the weights inside the package:
the README's command, and every task checked for its own property by the world judge (the
first frame kept, seams, end points, the layout kept under an edit).

The floors sit under what the shipped model measured (3 seeds, closing note of issue 6), so a
regression in the model, the sampler or a task's plan shows here. Where the small CPU-trained
model does not yet pass the judge (the shapes and motions of a generated clip, the edit's
recolouring: 0.1 measured), the test checks what it does do (the sky and the object colour asked)
or the structure the task guarantees (inputs kept whole, sizes, frame counts) and no score is
asserted."""

import numpy as np
import pytest
import torch

from kinema import cli
from kinema.eval import judge as J
from kinema.pipeline import WORLD_DIR, Pipeline
from kinema.video import Video, read_video
from kinema.world.render import render
from kinema.world.text import parse, spec_from_prompt

pytestmark = pytest.mark.slow

SIZE = dict(width=96, height=96)
FAST = dict(steps=12, progress=False, expand=False)
# measured (seeds 0 - 2): the sky asked 11 of 12 (chance 3), the object colour asked 12 of 12 (chance
# about 1); the tasks on the `real` clip (sampling seed 0): first_frame 1.0, extend seams forward
# 0.95 and backward 1.0, loop seam 1.0, connect 0.83
FLOORS = dict(sky=10, colour=10, first_frame=0.9, seam=0.8)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained("world")


@pytest.fixture(scope="module")
def real():
    """A real Kinema World clip: 2 s at 8 fps, 96 x 96, as the tasks' input."""
    spec = spec_from_prompt("a red ball rolls to the right on green grass", seed=1)
    clip = render(spec, 96, 96, seconds=2.0, fps=8.0, seed=1)
    return clip.frames, clip.caption


def test_shipped_files_fit_the_budget():
    files = [p for p in WORLD_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20
    assert max(p.stat().st_size for p in files) <= 16 * 2**20
    assert all(p.suffix in (".json", ".safetensors") for p in files)  # no pickles


def test_readme_command_writes_a_video_of_the_prompt(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.mp4"
    monkeypatch.setattr("sys.argv", ["kinema", "generate", "a red ball bounces on green grass", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code in (0, None), capsys.readouterr().err
    caption = capsys.readouterr().out.split("caption: ", 1)[1].splitlines()[0]
    video = read_video(out)
    T, H, W, _ = video.frames.shape
    assert min(H, W) >= 128 and T / video.fps == 2.0  # the default 2 s, exactly
    spec = parse(caption)
    assert [(o.color, o.shape) for o in spec.objects] == [("red", "ball")]
    # the sky is the caption's (the object's shape and motion are not asserted: blobs yet)
    assert sky_of(video.frames.float()) == spec.sky


def sky_of(frames: torch.Tensor) -> str:
    """The world sky colour nearest to the mean of a clip's top rows (uint8 (T, H, W, 3) as float)."""
    from kinema.world.text import SKY_COLORS

    top = frames[:, : frames.shape[1] // 5].mean(dim=(0, 1, 2))
    return min(SKY_COLORS, key=lambda k: float((top - torch.tensor(SKY_COLORS[k], dtype=torch.float32)).abs().mean()))  # noqa: E501


def test_the_caption_sets_the_sky(pipe):
    """Text following, measured where the world is simplest: the sky's colour, asked in the caption,
    for each sky of the world and 3 seeds (chance: 1 in 4)."""
    from kinema.world.text import SKY_COLORS

    asked = "A large red ball bounces. The camera stays still, facing far mountains and near hills. " \
            "The sky is {} and the ground is green grass."  # fmt: skip
    right = {}
    for sky in SKY_COLORS:
        for seed in range(3):
            frames = pipe.generate(asked.format(sky), seconds=1, steps=12, guidance=4, seed=seed, expand=False,
                                   progress=False, **SIZE).frames.float()  # fmt: skip
            right[sky, seed] = sky_of(frames) == sky
    assert all(right["dark blue", seed] for seed in range(3))
    assert sum(right.values()) >= FLOORS["sky"]


def test_the_caption_sets_the_object_colour(pipe):
    """The colour of what the model draws: the judge's palette label held by most of the clip's
    object pixels (judge.thing_mask: neither sky, ground nor hills) is the one the caption asks, for
    four colours and 3 seeds. The shapes are blobs yet, so only the colour is checked."""
    import collections

    asked = "A large {} {} stays still. The camera stays still, facing far mountains and near hills. " \
            "The sky is light blue and the ground is grey stone."  # fmt: skip
    right = 0
    for colour, shape in (("red", "ball"), ("blue", "square"), ("yellow", "star"), ("green", "triangle")):
        for seed in range(3):
            frames = pipe.generate(asked.format(colour, shape), seconds=1, steps=20, guidance=4, seed=seed,
                                   expand=False, progress=False, width=128, height=128).frames.numpy()  # fmt: skip
            labels, things = J.segment(frames), J.thing_mask(frames)
            drawn = collections.Counter(labels[things & (labels < len(J.PALETTE))].tolist()).most_common(1)
            right += bool(drawn) and J.PALETTE[drawn[0][0]] == colour
    assert right >= FLOORS["colour"]


def test_the_shipped_model_reads_its_words(pipe):
    """The word probe (kinema eval words), near t = 1, as a share of the real change (measured): a
    swapped sky 0.41, ground 0.49, object colour 0.11, object shape 0.065."""
    from kinema.eval.words import read_words

    rows = {(r["attribute"], r["t"]): r for r in read_words(pipe)}
    assert rows["sky", 0.95]["share"] >= 0.3 and rows["ground", 0.95]["share"] >= 0.3
    assert rows["object colour", 0.95]["share"] >= 0.06 and rows["object shape", 0.95]["share"] >= 0.03
    assert rows["sky", 0.95]["share"] > rows["sky", 0.5]["share"]  # read most where the frame tells least


def test_image(pipe):
    out = pipe.image("a blue square on grey rock", **SIZE, **FAST)
    assert out.frames.shape == (1, 96, 96, 3)


def test_animate_keeps_the_first_frame(pipe, real):
    frames, caption = real
    out = pipe.animate(frames[0], caption, seconds=2.0, fps=8.0, **FAST)
    assert out.frames.shape == (16, 96, 96, 3)
    assert J.first_frame(out.frames.numpy(), frames[0]).value >= FLOORS["first_frame"]


def test_extend_forward_and_backward_keep_the_input_with_no_visible_seam(pipe, real):
    frames, caption = real
    given = Video(torch.from_numpy(frames[:9]), 8.0)
    fwd = pipe.extend(given, caption, "forward", seconds=1.0, **FAST).frames.numpy()
    assert len(fwd) == 9 + 8 and np.array_equal(fwd[:9], frames[:9])
    assert J.extension_seam(frames[:9], fwd).value >= FLOORS["seam"]
    back = pipe.extend(given, caption, "backward", seconds=1.0, **FAST).frames.numpy()
    assert np.array_equal(back[-9:], frames[:9]) and len(back) == 8 + 9
    assert J.seam(back, len(back) - 9, frames[:5]).value >= FLOORS["seam"]


def test_loop_makes_4k_frames_with_no_visible_seam(pipe, real):
    _, caption = real
    out = pipe.loop(caption, seconds=2.0, fps=8.0, **SIZE, **FAST).frames.numpy()
    assert out.shape[1:] == (96, 96, 3) and len(out) % 4 == 0
    assert J.loop_seam(out, real[0]).value >= FLOORS["seam"]


def test_connect_keeps_a_and_b_around_a_bridge_with_no_visible_seams(pipe, real):
    frames, caption = real
    a, b = frames[:6], frames[-6:]
    out = pipe.connect(Video(torch.from_numpy(a), 8.0), Video(torch.from_numpy(b), 8.0), caption, seconds=0.5,
                       **FAST).frames.numpy()  # fmt: skip
    assert np.array_equal(out[:6], a) and np.array_equal(out[-6:], b) and len(out) == 6 + 4 + 6
    assert J.connect(a, b, out[6:-6]).value >= FLOORS["seam"]


def test_edit_keeps_size_and_length_and_strength_orders_the_change(pipe, real):
    frames, caption = real
    asked = caption.replace("red ball", "blue ball")
    given = Video(torch.from_numpy(frames), 8.0)
    light = pipe.edit(given, asked, strength=0.3, **FAST).frames.numpy()
    strong = pipe.edit(given, asked, strength=0.9, **FAST).frames.numpy()
    assert light.shape == strong.shape == frames.shape
    change = lambda out: np.abs(out.astype(np.int16) - frames.astype(np.int16)).mean()  # noqa: E731
    assert change(light) < change(strong)  # the judge's sdedit (recolouring) scores 0.1 today
