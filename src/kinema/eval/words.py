"""Which words of a caption a model reads: one attribute of the scene swapped at a time.

    rows = read_words(Pipeline.from_pretrained("world"))    # kinema eval words --model world
    print(rows[0])  # {"attribute": "object colour", "t": 0.8, "model": ..., "real": ..., "share": ...}

The world judge scores finished clips; when a small model draws no object at all it scores 0 and
says nothing of why. This probe looks one level lower, at the model's prediction of the clean
latent from a noisy real clip: for a real render of a scene, noised to time t, the model predicts
x0 = x_t - t v under the scene's caption and under the caption with one attribute swapped (the
first object's colour or shape, the sky, the ground), the same noise for all. The change of that
prediction is measured where the attribute lives (the object's latent cells for the object's
words, the whole frame for the sky and the ground) and set beside the change between the two
real renders in the same cells, the change the words ask for:

    model  mean |x0_hat(swapped caption) - x0_hat(caption)| over the cells
    real   mean |x0(swapped render) - x0(render)| over the cells
    share  model / real: 0 when the words are not read at all

At low noise the clip shows its colours and the model need not read them; near t = 1 only the
caption tells, and the share of a model that follows it approaches what the uncertainty left (for
an object whose place is unknown, less than 1). "caption vs empty" is the change from the empty
caption (the unconditional input), over the whole frame, against the real change of every
attribute together: how much the text moves the prediction at all. Deterministic: fixed scenes,
render seeds and noise. No learned weights besides the model's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from kinema.world.spec import ObjectSpec, SceneSpec

TIMES: tuple[float, ...] = (0.5, 0.8, 0.95)
SIZE = 96  # pixels a side
FRAMES = 17  # 1 + 4k, at 8 fps
FPS = 8.0

ATTRIBUTES: tuple[str, ...] = ("object colour", "object shape", "sky", "ground")
# (scene, the value swapped in for each attribute); one object, a still camera, nothing in front
CASES: list[tuple[SceneSpec, dict[str, str]]] = [
    (SceneSpec((ObjectSpec("red", "large", "ball", "fall"),), sky="dark blue", ground="green grass"),
     dict(zip(ATTRIBUTES, ("yellow", "square", "grey", "sand")))),
    (SceneSpec((ObjectSpec("blue", "large", "square", "slide", "right"),), sky="pale yellow", ground="sand"),
     dict(zip(ATTRIBUTES, ("orange", "triangle", "light blue", "brown earth")))),
    (SceneSpec((ObjectSpec("green", "large", "star", "static"),), sky="grey", ground="grey stone"),
     dict(zip(ATTRIBUTES, ("magenta", "diamond", "dark blue", "green grass")))),
]  # fmt: skip


def swapped(spec: SceneSpec, attribute: str, value: str) -> SceneSpec:
    """The scene with one attribute changed: the first object's colour or shape, the sky or the ground."""
    if attribute in ("object colour", "object shape"):
        first = spec.objects[0]
        first = replace(first, color=value) if attribute == "object colour" else replace(first, shape=value)
        return replace(spec, objects=(first, *spec.objects[1:]))
    return replace(spec, **{attribute: value})


def object_cells(frames: np.ndarray, color: str, temporal: int, spatial: int) -> Tensor:
    """Latent cells (T', H', W') bool that hold any pixel of the object colour `color` in the frames
    they encode (`judge.latent_cells`)."""
    from kinema.eval.judge import PALETTE, latent_cells, segment

    return torch.from_numpy(latent_cells(segment(frames) == PALETTE.index(color), temporal, spatial))


def _mean_abs(a: Tensor, b: Tensor, cells: Tensor | None) -> float:
    """Mean |a - b| over channels and the selected cells (C, T, H, W) of two latents."""
    diff = (a - b).abs().mean(0)  # (T, H, W)
    return float(diff[cells].mean()) if cells is not None else float(diff.mean())


@torch.inference_mode()
def read_words(pipe, times: tuple[float, ...] = TIMES, cases=CASES, seed: int = 0) -> list[dict]:
    """One row per attribute (and "caption vs empty") and time: model, real and share, each the mean
    over the cases. `pipe` is a `kinema.pipeline.Pipeline`."""
    from kinema.sampling import get_noise, make_model_fn
    from kinema.world.render import render
    from kinema.world.text import caption

    temporal, spatial = pipe.temporal, pipe.vae.config.spatial_factor
    sums: dict[tuple[str, float], list[tuple[float, float]]] = {}  # (attribute, t) -> (model, real) a case
    for i, (spec, values) in enumerate(cases):
        specs = [spec] + [swapped(spec, a, values[a]) for a in ATTRIBUTES]
        clips = [render(s, SIZE, SIZE, frames=FRAMES, fps=FPS, seed=seed + i).frames for s in specs]
        x0s = [pipe.encode(torch.from_numpy(c)) for c in clips]  # (C, T', H', W') each, normalized
        color, new_color = spec.objects[0].color, values["object colour"]
        cells = object_cells(clips[0], color, temporal, spatial)
        regions = {
            "object colour": cells | object_cells(clips[1], new_color, temporal, spatial),
            "object shape": cells | object_cells(clips[2], color, temporal, spatial),
            "sky": None,
            "ground": None,
        }
        rows = [caption(s) for s in specs] + [""]
        text, mask = pipe.text_encoder(rows)
        model_fn = make_model_fn(pipe.dit, text.to(pipe.device), mask.to(pipe.device), pipe.patch)
        noise = get_noise(x0s[0].shape, seed + i, device=pipe.device)
        every = float(np.mean([_mean_abs(x0, x0s[0], None) for x0 in x0s[1:]]))  # real change, whole frame
        for t in times:
            x_t = (1 - t) * x0s[0] + t * noise  # (C, T', H', W')
            batch = x_t[None].expand(len(rows), *x_t.shape)
            v = model_fn(batch, torch.full((len(rows), x_t.shape[1]), float(t), device=pipe.device))
            pred = batch - t * v  # (R, C, T', H', W') predicted clean latents
            for j, attribute in enumerate(ATTRIBUTES, start=1):
                region = regions[attribute]
                sums.setdefault((attribute, t), []).append(
                    (_mean_abs(pred[j], pred[0], region), _mean_abs(x0s[j], x0s[0], region))
                )
            sums.setdefault(("caption vs empty", t), []).append((_mean_abs(pred[0], pred[-1], None), every))
    out = []
    for (attribute, t), pairs in sums.items():
        model, real = (float(np.mean(v)) for v in zip(*pairs))
        out.append(dict(attribute=attribute, t=t, model=round(model, 4), real=round(real, 4),
                        share=round(model / real, 3) if real > 0 else None))  # fmt: skip
    order = {a: k for k, a in enumerate((*ATTRIBUTES, "caption vs empty"))}
    return sorted(out, key=lambda r: (order[r["attribute"]], r["t"]))
