"""The world benchmark on a trained model: the model's own animate, extend, loop, connect and
SDEdit answers to the tasks built from real renders, judged like calibration judges the renders
themselves, through `run` and `kinema eval world`. The model is the random-init tiny one: the
tests check what reaches the judge (sizes, frame counts, inputs kept whole), not the scores."""

import json
from dataclasses import replace

import numpy as np
import pytest

from kinema.eval import judge as J
from kinema.eval import suite as S
from kinema.pipeline import PIPELINE_FILE, Pipeline, make_test_pipeline


def _small(name: str, width: int, height: int, **kw) -> S.Case:
    case = next(c for c in S.quick() if c.name == name)
    return replace(case, width=width, height=height, seconds=2.0, fps=8.0, **kw)


# 72x40 is no multiple of 16 (the model makes 80x48 and crops); 16 frames, so thirds of 5 frames
CASES = [
    _small("square falls, star stays", 72, 40),
    _small("empty scene, camera pans left", 64, 48, tasks=True),  # nothing to recolour: no SDEdit
    _small("ball rolls left", 64, 48),  # asks no tasks
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny model with 2 sampling steps as its default, so the CLI samples fast too."""
    directory = make_test_pipeline(tmp_path_factory.mktemp("model") / "m")
    spec = json.loads((directory / PIPELINE_FILE).read_text())
    (directory / PIPELINE_FILE).write_text(json.dumps({**spec, "defaults": {"steps": 2}}))
    return directory


@pytest.fixture(scope="module")
def pipe(model_dir):
    return Pipeline.from_pretrained(model_dir)


def _spy(monkeypatch, name: str, seen: dict) -> None:
    """Record the arguments each judge function of the tasks is given."""
    judge = getattr(J, name)

    def spy(*args):
        seen[name] = args
        return judge(*args)

    monkeypatch.setattr(J, name, spy)


def test_every_task_metric_judges_what_the_model_made(pipe, monkeypatch):
    seen = {}
    for name in ("first_frame", "extension_seam", "loop_seam", "connect", "sdedit"):
        _spy(monkeypatch, name, seen)
    case = CASES[0]
    real = S.render_case(case)
    T, size = len(real), real.shape[1:]
    scores = S.model_task_scores(pipe, case, real)

    assert list(scores) == list(S.TASK_METRICS)
    for metric, score in scores.items():
        assert 0.0 <= score.value <= 1.0, (metric, score)
    frames, image = seen["first_frame"]
    assert frames.shape[1:] == size and len(frames) == T and np.array_equal(image, real[0])  # exactly as long
    given, out = seen["extension_seam"]
    assert np.array_equal(given, real[: T // 2]) and len(out) == T  # given + exactly the rest
    assert out.shape[1:] == size and np.array_equal(out[: len(given)], given)  # the given clip kept whole
    frames, reference = seen["loop_seam"]
    assert frames.shape[1:] == size and len(frames) == 16 and np.array_equal(reference, real[: T // 2])
    a, b, middle = seen["connect"]
    assert np.array_equal(a, real[: T // 3]) and np.array_equal(b, real[T - T // 3 :])
    assert middle.shape[1:] == size and len(middle) == T - 2 * (T // 3)  # exactly the T - 2q frames asked
    given, out, fps, edited, before = seen["sdedit"]
    assert np.array_equal(given, real) and out.shape == real.shape and fps == case.fps
    assert before == case.spec and edited == S._recolor(case.spec)


def test_run_adds_the_task_metrics_to_the_cases_that_ask_them(model_dir, monkeypatch):
    loads = []
    load = Pipeline.from_pretrained
    monkeypatch.setattr(Pipeline, "from_pretrained", lambda *a, **kw: loads.append(a) or load(*a, **kw))
    make, tasks = S.sources(str(model_dir))
    results = S.run(make, CASES, tasks=tasks)
    assert len(loads) == 1  # one Pipeline answers the prompts and the tasks

    for r in results:
        assert set(r.scores) == set(J.METRICS) | set(S.TASK_METRICS) | set(S.RELATIVE_METRICS)
    full, empty, unasked = (r.scores for r in results)
    assert all(full[m].value is not None for m in S.TASK_METRICS)
    assert empty["sdedit"].value is None and all(empty[m].value is not None for m in S.TASK_METRICS[:-1])
    assert all(unasked[m].value is None for m in S.TASK_METRICS)
    totals = S.aggregate(results)
    assert all(0.0 <= totals[m] <= 1.0 for m in S.TASK_METRICS)
    assert totals["sdedit"] == full["sdedit"].value  # the mean over the cases it applies to


def test_real_renders_answer_the_tasks_as_in_calibration():
    make, tasks = S.sources("real")
    results = S.run(make, CASES[:2], tasks=tasks)
    for case, r in zip(CASES, results):
        expected = S.task_scores(case, S.render_case(case), None)
        assert {m: r.scores[m] for m in S.TASK_METRICS} == expected
    assert S.aggregate(results)["first_frame"] == 1.0


def test_cli_eval_world_lists_the_task_metrics_for_a_model(model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kinema.cli import app

    monkeypatch.setitem(S.SUITES, "quick", lambda: CASES)
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "world", "--model", str(model_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for metric in S.TASK_METRICS:
        assert metric in res.output
    doc = json.loads((out / "scores.json").read_text())
    assert set(S.TASK_METRICS) <= set(doc["aggregate"]) and doc["aggregate"]["first_frame"] is not None
    assert all(set(S.TASK_METRICS) <= set(clip["scores"]) for clip in doc["clips"])
    report = (out / "report.md").read_text()
    for metric in S.TASK_METRICS:
        assert f"| [{metric}](metrics/{metric}.png) |" in report and (out / "metrics" / f"{metric}.png").is_file()


def test_the_vae_source_judges_the_renders_through_the_vae_and_back():
    make, tasks = S.sources("vae:world-vae")
    case = replace(CASES[0], width=70, height=42, seconds=1.5)  # 12 frames: no 1 + 4k, no multiple of 8
    real = S.render_case(case)
    frames = make(case.prompt, case.width, case.height, case.seconds, case.fps, case.seed)
    assert frames.shape == real.shape and frames.dtype == np.uint8
    err = (frames.astype(float) - real.astype(float)) ** 2
    psnr = 10 * np.log10(255.0**2 / err.mean())
    assert 20.0 < psnr < 60.0, psnr  # close to the render, but not the render: it went through the VAE
    scores = tasks(case, real)
    assert set(scores) == set(S.TASK_METRICS) and all(s.value is not None for s in scores.values())
    assert scores["first_frame"].value > 0.5  # the round trip keeps the first frame


def test_an_unknown_vae_source_is_a_clear_error(tmp_path):
    from kinema.errors import KinemaError

    with pytest.raises(KinemaError):
        S.sources(f"vae:{tmp_path / 'nothing'}")


def test_seed_rounds_repeat_the_suite_on_other_seeds():
    rounds = S.seed_rounds(CASES, 3)
    assert [c.name for c in rounds] == [c.name for c in CASES] * 3
    assert rounds[: len(CASES)] == CASES  # round 0 is the suite as it is
    seeds = [c.seed for c in rounds]
    assert seeds[len(CASES) :] == [s + S.SEED_STEP * k for k in (1, 2) for s in seeds[: len(CASES)]]
    assert len(set(seeds)) == len(seeds)  # no clip drawn twice
    with pytest.raises(S.KinemaError, match="at least 1"):
        S.seed_rounds(CASES, 0)


def test_round_spread_is_the_spread_of_the_round_means():
    def result(value):
        return S.ClipResult(CASES[0], {"objects": J.Score(value, ""), "sdedit": J.NA("not asked")}, 0.0)

    results = [result(v) for v in (0.2, 0.4, 0.6, 0.8, 1.0, 1.0)]  # rounds of 2: means 0.3, 0.7, 1.0
    spread = S.round_spread(results, 3)
    assert spread["objects"] == pytest.approx(np.std([0.3, 0.7, 1.0]))
    assert spread["sdedit"] is None  # no round has a value
    assert S.round_spread(results, 1)["objects"] is None  # one round: no spread
    with pytest.raises(S.KinemaError, match="do not split"):
        S.round_spread(results, 4)


def test_cli_eval_world_runs_seed_rounds_with_the_sampling_asked(model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import kinema.pipeline as P
    from kinema.cli import app

    monkeypatch.setitem(S.SUITES, "quick", lambda: CASES[:1])
    sampled = []
    denoise = P.denoise

    def spy(model_fn, x, plan, steps, guidance=1.0, **kw):
        sampled.append((steps, guidance))
        return denoise(model_fn, x, plan, steps, guidance, **kw)

    monkeypatch.setattr(P, "denoise", spy)
    out = tmp_path / "eval"
    args = ["eval", "world", "--model", str(model_dir), "--out", str(out), "--seeds", "2", "--steps", "3", "--guidance", "1.5"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    # the clip and its tasks, both rounds alike, sampled as asked, not with the model's 2 steps
    assert set(sampled) == {(3, 1.5)} and len(sampled) >= 2 and len(sampled) % 2 == 0
    doc = json.loads((out / "scores.json").read_text())
    assert doc["rounds"] == 2 and [c["seed"] for c in doc["clips"]] == [CASES[0].seed, CASES[0].seed + S.SEED_STEP]
    assert doc["spread"]["objects"] is not None and "± between rounds" in res.output
    assert "± " in (out / "report.md").read_text()
    res = CliRunner().invoke(app, ["eval", "world", "--model", "real", "--guidance", "2", "--out", str(out)])
    assert res.exit_code != 0 and "apply to a trained model" in str(res.exception)
