"""Framing (`kinema eval framing`, the judge's `framing`) and square-cropped world training data."""

import json

import numpy as np
import pytest

from kinema.eval import judge as J
from kinema.eval import suite as S
from kinema.world.render import render
from kinema.world.spec import ObjectSpec, SceneSpec
from tests.cli_helpers import run_cli

FPS = 8.0


def still(*objects: ObjectSpec) -> SceneSpec:
    return SceneSpec(tuple(objects), sky="light blue", ground="green grass")


def share(frames: np.ndarray, spec: SceneSpec) -> float | None:
    return J.framing_share(J.see(frames, FPS, spec), spec)


def test_an_object_cut_by_the_frame_edge_is_not_in_view():
    spec = still(ObjectSpec("red", "large", "ball", "static"))
    frames = render(spec, 192, 112, frames=9, fps=FPS, seed=1).frames
    assert share(frames, spec) == 1.0
    box = J.see(frames, FPS, spec).detections[0][0].box
    cut = np.ascontiguousarray(frames[:, :, : (box[0] + box[2]) // 2])  # the right half of the ball is gone
    assert share(cut, spec) == 0.0
    gone = np.ascontiguousarray(frames[:, :, : max(box[0] - 4, 16)])  # the ball is not in the frame at all
    assert share(gone, spec) == 0.0
    assert share(frames, still()) is None  # nothing asked, nothing to frame


def test_two_objects_of_one_colour_count_each():
    spec = still(ObjectSpec("white", "small", "square", "static"), ObjectSpec("white", "small", "square", "static"))
    frames = render(spec, 224, 128, frames=9, fps=FPS, seed=6).frames
    seen = J.see(frames, FPS, spec)
    assert all(sum(d.color == "white" for d in dets) == 2 for dets in seen.detections)
    assert share(frames, spec) == 1.0
    boxes = sorted(d.box for d in seen.detections[0])
    one = np.ascontiguousarray(frames[:, :, : (boxes[1][0] + boxes[1][2]) // 2])  # the right square cut
    assert share(one, spec) == pytest.approx(0.5)


def test_score_framing_is_relative_to_the_real_render():
    assert J.score_framing(0.45, 0.9).value == pytest.approx(0.5)
    assert J.score_framing(1.0, 0.8).value == 1.0  # never above 1
    assert J.score_framing(None, None).value is None
    assert J.score_framing(0.0, 0.0).value is None


def centre_of_wider(prompt, width, height, seconds, fps, seed):
    """The prompt rendered twice as wide, its centre kept: objects off the centre are cut or gone."""
    frames = S.real_source(prompt, 2 * width, height, seconds, fps, seed)
    return np.ascontiguousarray(frames[:, :, width // 2 : width // 2 + width])


def test_run_scores_framing_against_the_real_render():
    cases = S.framing({"wide": (160, 96)}, seconds=1.0)
    assert len(cases) == sum(bool(spec.objects) for _, spec, *_ in S._CORE)
    assert all(c.name.startswith("wide: ") and (c.width, c.height) == (160, 96) for c in cases)
    real = S.run(S.real_source, cases)
    assert all(r.scores["framing"].value == 1.0 and r.framed[0] == r.framed[1] for r in real)
    cropped = S.run(centre_of_wider, cases)
    for r, ref in zip(cropped, real):
        assert r.framed[1] == ref.framed[0]  # the same real render of the same case
        assert r.scores["framing"].value == pytest.approx(min(1.0, r.framed[0] / r.framed[1]))
    summary = S.framing_summary(cropped)
    assert summary["shares"]["wide"]["model"] < 0.8 * summary["shares"]["wide"]["real"]
    assert summary["groups"]["wide"]["framing"] < 0.8 and summary["spread"]["wide"] == {}


def test_cli_eval_framing(monkeypatch, capsys, tmp_path):
    out = tmp_path / "framing"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", "framing", "--model", "real", "--sizes", "w=128x80,t=80x128",
                                "--seeds", "2", "--seconds", "0.5", "--out", out)  # fmt: skip
    assert code == 0, err
    doc = json.loads((out / "framing.json").read_text())
    assert doc["sizes"] == {"w": [128, 80], "t": [80, 128]} and doc["rounds"] == 2
    for g in ("w", "t"):
        assert doc["groups"][g]["framing"] == 1.0 and doc["spread"][g]["framing"] == 0.0
        assert 0.5 < doc["shares"][g]["model"] == doc["shares"][g]["real"] <= 1.0
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores["clips"]) == 2 * len(S.framing({"w": (128, 80), "t": (80, 128)})) and "framing" in scores["aggregate"]
    assert "w 128x80" in stdout and "framing" in (out / "report.md").read_text()
    for bad in ("wide:128x80", "wide=128by80", "=128x80"):
        code, _, err = run_cli(monkeypatch, capsys, "eval", "framing", "--model", "real", "--sizes", bad, "--out", out)
        assert code == 2 and "NAME=WIDTHxHEIGHT" in err and bad in err


# ---------------------------------------------------------------- square crops of the world


def test_square_crop_keeps_the_centre_of_the_native_render():
    from kinema.data.loader import WorldStream, render_planned
    from kinema.vae import load_vae

    vae = load_vae("world-vae")
    native = WorldStream(vae, 1024, min_side=64, max_side=112, clips=6)
    square = WorldStream(vae, 1024, min_side=64, max_side=112, clips=6, crop="square")
    assert native._fingerprint() != square._fingerprint()  # caches of the two never mix
    wide = 0
    for i in range(6):
        a, b = native.plan(i), square.plan(i)
        side = min(a["width"], a["height"])
        assert (b["width"], b["height"]) == (side, side) and b["tokens"] <= a["tokens"]
        fa, ca = render_planned(a, 4)
        fb, cb = render_planned(b, 4)
        y0, x0 = (a["height"] - side) // 2, (a["width"] - side) // 2
        assert ca == cb and np.array_equal(fb, fa[:, y0 : y0 + side, x0 : x0 + side])
        wide += a["width"] != a["height"]
    assert wide >= 2  # the plans are not all square already
    with pytest.raises(Exception, match="crop must be one of native, square"):
        WorldStream(vae, 1024, crop="circle")


def test_world_crop_setting_is_checked():
    from kinema.errors import KinemaError
    from kinema.train.dit import DiTTrainConfig

    assert DiTTrainConfig(vae="world-vae", world_crop="square").world_crop == "square"
    with pytest.raises(KinemaError, match="world_crop must be one of"):
        DiTTrainConfig(vae="world-vae", world_crop="wide")
    with pytest.raises(KinemaError, match="world_crop shape Kinema World data"):
        DiTTrainConfig(data="latents", world_crop="square")
