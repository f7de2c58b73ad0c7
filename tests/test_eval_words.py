"""The word probe: which caption words a model reads (kinema.eval.words)."""

import subprocess
import sys

import pytest
import torch

from kinema.eval.words import ATTRIBUTES, CASES, FRAMES, SIZE, object_cells, read_words, swapped
from kinema.pipeline import Pipeline, make_test_pipeline
from kinema.world.render import render

ONE_CASE = CASES[:1]
TIMES = (0.5, 0.95)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_test_pipeline(tmp_path_factory.mktemp("model") / "m")


def test_swapped_changes_only_the_named_attribute():
    spec, values = CASES[0]
    colour = swapped(spec, "object colour", values["object colour"])
    assert colour.objects[0].color == values["object colour"] and colour.objects[0].shape == spec.objects[0].shape
    assert (colour.sky, colour.ground) == (spec.sky, spec.ground)
    assert swapped(spec, "object shape", values["object shape"]).objects[0].shape == values["object shape"]
    assert swapped(spec, "sky", values["sky"]).objects == spec.objects


def test_object_cells_hold_the_object_and_little_else():
    spec, _ = CASES[0]
    frames = render(spec, SIZE, SIZE, frames=FRAMES, fps=8.0, seed=0).frames
    cells = object_cells(frames, spec.objects[0].color, 4, 8)
    assert cells.shape == (1 + (FRAMES - 1) // 4, SIZE // 8, SIZE // 8)
    assert cells.any(dim=(1, 2)).all()  # the object is seen in every latent frame
    assert cells.float().mean() < 0.3  # a large ball: a few cells of each frame


def test_a_model_that_reads_no_caption_reads_no_words(model_dir):
    pipe = Pipeline.from_pretrained(model_dir)
    with torch.no_grad():  # close both caption paths: the cross-attention keys' source and the pooled vector
        for lin in (pipe.dit.text_embed[2], pipe.dit.text_pool[2]):
            lin.weight.zero_(), lin.bias.zero_()
    rows = read_words(pipe, TIMES, ONE_CASE)
    assert [r["attribute"] for r in rows] == [a for a in (*ATTRIBUTES, "caption vs empty") for _ in TIMES]
    assert all(r["model"] == 0.0 and r["share"] == 0.0 for r in rows)
    assert all(r["real"] > 0 for r in rows)  # every swap changes the real render where it is measured


def test_a_model_that_reads_its_caption_moves_with_every_word(model_dir):
    rows = read_words(Pipeline.from_pretrained(model_dir), TIMES, ONE_CASE)
    assert all(r["model"] > 0 and r["share"] > 0 for r in rows)


def test_cli_prints_the_table_and_rejects_an_unknown_model(model_dir):
    ok = subprocess.run([sys.executable, "-m", "kinema.cli", "eval", "words", "--model", str(model_dir)],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    for attribute in (*ATTRIBUTES, "caption vs empty"):
        assert attribute in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "kinema.cli", "eval", "words", "--model", "no-such-model"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and bad.stderr.strip()
