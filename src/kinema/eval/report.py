"""The world benchmark's report: scores.json, report.md, a contact sheet per clip (frames with
the judge's tracked boxes) and a bar plot per metric, drawn with Pillow.

    paths = write_report(out_dir, "real", "quick", results)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kinema.eval import judge as J
from kinema.eval.suite import SEED_STEP, ClipResult, aggregate, round_spread
from kinema.world.spec import COLORS

GOOD, FAIR, BAD, NONE = (46, 160, 67), (230, 160, 30), (210, 50, 50), (190, 190, 190)
INK, PAPER, RULE = (30, 30, 30), (255, 255, 255), (225, 225, 225)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _grade(value: float | None) -> tuple[int, int, int]:
    if value is None:
        return NONE
    return GOOD if value >= 0.8 else FAIR if value >= 0.5 else BAD


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    return "-".join(part for part in keep.split("-") if part)


# ---------------------------------------------------------------- pictures


def contact_sheet(frames: np.ndarray, seen: J.Seen | None, count: int = 8, columns: int = 4, min_width: int = 240) -> Image.Image:
    """`count` frames spread over the clip in a grid, enlarged to at least `min_width` px a tile,
    each with the frame number and the judge's boxes: every detection outlined in its colour
    (dashed when clipped by the edge or the post), with its track number."""
    T, H, W, _ = frames.shape
    picks = np.unique(np.linspace(0, T - 1, min(count, T)).round().astype(int))
    scale = max(1, -(-min_width // W))
    track_of = {}
    if seen is not None:
        for k, tr in enumerate(seen.tracks):
            for d in tr.dets:
                track_of[id(d)] = k
    tw, th, gap = W * scale, H * scale, 4
    rows = -(-len(picks) // columns)
    sheet = Image.new("RGB", (columns * (tw + gap) + gap, rows * (th + gap) + gap), PAPER)
    font = _font()
    for n, t in enumerate(picks):
        tile = Image.fromarray(frames[t]).resize((tw, th), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for d in seen.detections[t] if seen is not None else []:
            x0, y0, x1, y1 = (v * scale for v in d.box)
            box = (x0 - 2, y0 - 2, x1 + scale + 1, y1 + scale + 1)
            draw.rectangle(box, outline=(0, 0, 0), width=3)
            draw.rectangle(box, outline=COLORS[d.color] if not d.clipped else (255, 255, 255), width=1)
            draw.text((box[0] + 2, max(box[1] - 11, 0)), f"#{track_of.get(id(d), '?')}", fill=(0, 0, 0), font=font)
        draw.rectangle((0, 0, 28, 11), fill=(0, 0, 0))
        draw.text((2, 0), f"{t}", fill=(255, 255, 255), font=font)
        r, c = divmod(n, columns)
        sheet.paste(tile, (gap + c * (tw + gap), gap + r * (th + gap)))
    return sheet


def bar_plot(title: str, labels: list[str], values: list[float | None], width: int = 640) -> Image.Image:
    """Horizontal bars in [0, 1], one a label; green >= 0.8, amber >= 0.5, red below, grey n/a."""
    font = _font()
    left, row, top = min(260, max(80, 7 * max((len(s) for s in labels), default=4))), 18, 28
    height = top + row * len(labels) + 24
    img = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), title, fill=INK, font=font)
    span = width - left - 50
    for q in (0.0, 0.5, 0.8, 1.0):
        x = left + int(q * span)
        draw.line((x, top - 4, x, top + row * len(labels)), fill=RULE)
        draw.text((x - 6, top + row * len(labels) + 4), f"{q:g}", fill=INK, font=font)
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row
        text = label if len(label) * 6 < left - 12 else label[: (left - 12) // 6 - 1] + "~"
        draw.text((8, y + 3), text, fill=INK, font=font)
        if value is None:
            draw.text((left + 4, y + 3), "n/a", fill=NONE, font=font)
            continue
        draw.rectangle((left, y + 3, left + max(int(value * span), 1), y + row - 3), fill=_grade(value))
        draw.text((left + int(value * span) + 4, y + 3), f"{value:.2f}", fill=INK, font=font)
    return img


# ---------------------------------------------------------------- files


def _save(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _value(score: J.Score | None) -> float | None:
    """A score's value; None where the metric does not apply or was not scored on this clip."""
    return None if score is None else score.value


def _cell(score: J.Score | None) -> str:
    if _value(score) is None:
        return "n/a"
    mark = "" if score.value >= 0.8 else " ⚠" if score.value >= 0.5 else " ✗"
    return f"{score.value:.2f}{mark}"


def write_report(
    out: str | os.PathLike, model: str, suite_name: str, results: list[ClipResult], rounds: int = 1
) -> dict[str, Path]:
    """Write scores.json, report.md, clips/<n>-<name>.png contact sheets and metrics/<metric>.png
    bar plots under `out`. Results should hold frames and what the judge saw (run(keep=True));
    rounds > 1: they are `seed_rounds` of the suite, and each mean gets its spread between rounds."""
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    totals = aggregate(results)
    metrics = list(totals)
    names = [f"{i + 1}. {r.case.name}" for i, r in enumerate(results)]

    spread = round_spread(results, rounds) if rounds > 1 else {}
    doc = dict(model=model, suite=suite_name, rounds=rounds,
               aggregate={k: None if v is None else round(v, 4) for k, v in totals.items()},
               spread={k: None if v is None else round(v, 4) for k, v in spread.items()},
               clips=[r.to_dict() for r in results], judge_seconds=round(sum(r.seconds for r in results), 3))  # fmt: skip
    scores_path = out / "scores.json"
    _write_text(scores_path, json.dumps(doc, indent=1))

    plots = {}
    for m in metrics:
        path = out / "metrics" / f"{m}.png"
        title = f"{m}: {'n/a' if totals[m] is None else f'{totals[m]:.2f}'} over the clips it applies to ({model}, {suite_name})"
        _save(bar_plot(title, names, [_value(r.scores.get(m)) for r in results]), path)
        plots[m] = path
    overview = out / "metrics" / "overview.png"
    _save(bar_plot(f"{model} on the {suite_name} suite: mean per metric", metrics, [totals[m] for m in metrics]), overview)

    sheets = []
    for i, r in enumerate(results):
        path = out / "clips" / f"{i + 1:02d}-{_slug(r.case.name)}.png"
        if r.frames is not None:
            _save(contact_sheet(r.frames, r.seen), path)
        sheets.append(path)

    lines = [
        f"# World judge: `{model}` on the `{suite_name}` suite",
        "",
        f"{len(results)} clips; judged in {sum(r.seconds for r in results):.1f} s. Scores are in [0, 1], 1 is good;",
        "n/a: the case asks nothing the metric checks. ⚠ below 0.8, ✗ below 0.5.",
        *([f"{rounds} rounds of the suite, each on seeds {SEED_STEP} above the last; ± is the standard deviation "
           "of a metric's mean between rounds."] if rounds > 1 else []),
        "",
        "![overview](metrics/overview.png)",
        "",
        "| metric | mean | clips |",
        "| --- | ---: | ---: |",
    ]
    for m in metrics:
        n = sum(_value(r.scores.get(m)) is not None for r in results)
        mean = "n/a" if totals[m] is None else f"{totals[m]:.2f}"
        if spread.get(m) is not None:
            mean += f" ± {spread[m]:.2f}"
        lines.append(f"| [{m}](metrics/{m}.png) | {mean} | {n} |")
    lines += ["", "## Clips", "", "| clip | " + " | ".join(metrics) + " |", "| --- | " + " | ".join("---:" for _ in metrics) + " |"]
    for name, r in zip(names, results):
        lines.append(f"| {name} | " + " | ".join(_cell(r.scores.get(m)) for m in metrics) + " |")
    for name, r, sheet in zip(names, results, sheets):
        c = r.case
        lines += ["", f"### {name}", "", f"> {c.prompt}", "",
                  f"{c.width}x{c.height}, {c.seconds:g} s at {c.fps:g} fps, seed {c.seed}.", ""]  # fmt: skip
        if r.frames is not None:
            lines += [f"![{c.name}](clips/{sheet.name})", ""]
        for m in metrics:
            s = r.scores.get(m)
            if _value(s) is not None:
                lines.append(f"- **{m}** {_cell(s)}: {s.reason}")
    lines += ["", "## Metrics", ""] + [f"![{m}](metrics/{m}.png)" for m in metrics]
    report = out / "report.md"
    _write_text(report, "\n".join(lines) + "\n")
    return dict(scores=scores_path, report=report, overview=overview, **{f"metric:{m}": p for m, p in plots.items()})
