"""The report's two training findings, reproduced on Kinema World with the world judge in place of
its pictures.

    python benchmarks/training_findings.py scaling   # quality against training compute, 1 : 4 : 16
    python benchmarks/training_findings.py aspect    # native aspect ratios against square crops

Both train the same small DiT (the shipped world model's shape: `tiny`, a frozen builtin text
encoder, on world-vae latents) from scratch on the same fixed world of rendered clips, one
process a run, and write their tables and strips into docs/ (`--docs`).

scaling  One run, stopped at each budget (base steps x 1, 4, 16), exported, and resumed exactly.
         The learning rate is constant after warm-up and the EMA's decay depends on the step only,
         so the run stopped at a budget is the run trained for that budget. Each export is scored
         with `kinema eval world --seeds 2` (quick suite) and `kinema eval words`; the table gives
         the judge's means with their spread between the two rounds against FLOPs (the trainer's
         count: 3 x the matmul FLOPs of each packed sequence) and CPU hours (the training
         process's CPU time, step by step). The strip is the same prompt and seed from each budget.
aspect   Two runs of the same size and compute (the same steps of the same token budget): one on
         the world's native sizes (widescreen, vertical, square, packed together: the scaling
         run's stages), one on the same clips cut to the centre square of their shorter side
         (world_crop=square), compared at 4x and 16x the base budget. Both are sampled at a
         widescreen and a vertical size on the same prompts and seeds (`kinema eval framing`): the
         share of frames that hold every asked object wholly in view, beside real renders, and the
         judge's metrics, with spreads.

Everything resumes: a budget whose export exists is not trained again, a run stopped mid-stage
continues from its last checkpoint, and a finished evaluation is read back from its scores.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kinema.eval.judge import METRICS as JUDGE_METRICS  # the world metrics
from kinema.eval.suite import TASK_METRICS

# the recipe of every run: the shipped world model's shape and curriculum, sized for a CPU
RECIPE = {
    "vae": "world-vae",
    "model": "tiny",
    "text_frozen": "true",
    "shift_scale": "12",
    "plain_shift_prob": "0.5",
    "token_budget": "1024",
    "sequences_per_step": "2",
    "lr": "5e-4",
    "warmup": "50",
    "world_min_side": "64",
    "world_max_side": "112",
    "world_min_seconds": "1",
    "world_max_seconds": "2",
    "world_image_prob": "0.1",
    "world_single_prob": "0.3",
    "world_thing_weight": "4",
    "world_clips": "1500",
    "world_cache": "true",
    "world_workers": "1",  # render and encode the fixed world before the first step: steps time training only
    "seed": "0",
    "keep_checkpoints": "2",
}
# a full world caption, as the judge's suites prompt (the grammar's own words): the quick suite's first scene
STRIP_PROMPT = ("A large red ball falls from above and bounces on the ground until it settles. The camera stays still, "
                "facing far mountains and near hills. The sky is light blue and the ground is green grass.")
STRIP_SIZE, STRIP_SECONDS, STRIP_FPS, STRIP_SEED = (192, 112), 2.0, 8.0, 3
FRAMING_SIZES = "wide=192x112,tall=112x192"  # inside the native run's sizes (short side 64 - 112)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kinema(*args: str, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), KINEMA_THREADS=str(threads), PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "kinema.cli", *args], check=True, env=env)


# ---------------------------------------------------------------- training


def train_to(run: Path, steps: int, out: Path, threads: int, crop: str = "native") -> Path:
    """Train (or resume) `run` to `steps` and copy its export to `out` with stage.json (steps,
    FLOPs, seconds, CPU hours: the sum of the steps' process CPU time); a stage already exported is kept as it is."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / ".lock", "w") as lock:  # one process trains a run; another waits, then finds the stage made
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _train_to(run, steps, out, threads, crop)


def _train_to(run: Path, steps: int, out: Path, threads: int, crop: str) -> Path:
    if (out / "stage.json").is_file():
        return out
    sets = {**RECIPE, "steps": str(steps), "checkpoint_every": "100", "world_crop": crop}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    log(f"== training {run.name} to step {steps} ({threads} thread{'s' * (threads > 1)})")
    kinema("train", "dit", str(run), *args, threads=threads)
    rows = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():  # a resumed step's last record counts
        r = json.loads(line)
        rows[r["step"]] = r
    done = [rows[s] for s in sorted(rows) if s <= steps]
    if len(done) != steps:
        raise SystemExit(f"{run}/metrics.jsonl holds {len(done)} of the {steps} steps")
    seconds = sum(r["step_s"] for r in done)
    cpu = sum(r["cpu_s"] for r in done)  # the process's CPU time a step: what another process sharing the cores cost is not in it
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "export", tmp)
    stage = dict(steps=steps, crop=crop, flops=sum(r.get("flops", 0.0) for r in done), seconds=seconds,
                 threads=threads, cpu_hours=cpu / 3600, tokens=sum(r["tokens"] for r in done),
                 loss_last_50=statistics.mean(r["loss"] for r in done[-50:]))  # fmt: skip
    (tmp / "stage.json").write_text(json.dumps(stage, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- scoring


def judge(model: Path, out: Path, seeds: int, threads: int) -> dict:
    """`kinema eval world --model MODEL --seeds N` (quick suite): aggregate and spread."""
    if not (out / "scores.json").is_file():
        log(f"== judging {model.name}")
        kinema("eval", "world", "--model", str(model), "--seeds", str(seeds), "--out", str(out), threads=threads)
    return json.loads((out / "scores.json").read_text())


def words(model: Path, out: Path, threads: int) -> list[dict]:
    """`kinema eval words`: which caption words the model reads (rows of attribute, t, share)."""
    path = out / "words.json"
    if not path.is_file():
        import torch

        from kinema.eval.words import read_words
        from kinema.pipeline import Pipeline

        torch.set_num_threads(threads)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(read_words(Pipeline.from_pretrained(str(model))), indent=1))
    return json.loads(path.read_text())


def framing(model: Path, out: Path, seeds: int, threads: int) -> dict:
    """`kinema eval framing` at a widescreen and a vertical size, one pass (no composition)."""
    if not (out / "framing.json").is_file():
        log(f"== framing {model.name}")
        kinema("eval", "framing", "--model", str(model), "--seeds", str(seeds), "--sizes", FRAMING_SIZES,
               "--no-compose", "--out", str(out), threads=threads)  # fmt: skip
    return json.loads((out / "framing.json").read_text())


def strip(models: dict[str, Path], path: Path, threads: int, sizes: list[tuple[int, int]] | None = None) -> None:
    """One row a model (and the real render): 6 frames of the same prompt and seed, labelled."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from kinema.eval.suite import real_source, sources

    torch.set_num_threads(threads)
    sizes = sizes or [STRIP_SIZE]
    makers = {name: sources(str(model), {"compose": False})[0] for name, model in models.items()}  # one pass, as judged
    rows: list[tuple[str, np.ndarray]] = []
    for w, h in sizes:
        tag = f" {w}x{h}" if len(sizes) > 1 else ""
        rows.append((f"real render{tag}", real_source(STRIP_PROMPT, w, h, STRIP_SECONDS, STRIP_FPS, STRIP_SEED)))
        for name, make in makers.items():
            rows.append((f"{name}{tag}", make(STRIP_PROMPT, w, h, STRIP_SECONDS, STRIP_FPS, STRIP_SEED)))
    font, label_w, gap, count = ImageFont.load_default(), 150, 4, 6
    widths = [label_w + count * (f.shape[2] + gap) for _, f in rows]
    sheet = Image.new("RGB", (max(widths) + gap, sum(f.shape[1] + gap for _, f in rows) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 4), f'"{STRIP_PROMPT[:90]}...", seed {STRIP_SEED}, {STRIP_SECONDS:g} s at {STRIP_FPS:g} fps', fill="black", font=font)
    y = 20
    for name, frames in rows:
        draw.text((gap, y + frames.shape[1] // 2 - 5), name, fill="black", font=font)
        for k, t in enumerate(np.linspace(0, len(frames) - 1, count).round().astype(int)):
            sheet.paste(Image.fromarray(frames[t]), (label_w + k * (frames.shape[2] + gap), y))
        y += frames.shape[1] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _pm(mean, spread, digits: int = 2) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None else "")


def _overall(doc: dict, metrics=JUDGE_METRICS) -> tuple[float, float | None]:
    """The mean of the judge's metrics in a scores.json, and its spread between the rounds."""
    rounds = doc.get("rounds", 1)
    clips = doc["clips"]
    n = len(clips) // rounds

    def mean_of(part: list[dict]) -> float:
        per_metric = []
        for m in metrics:
            values = [c["scores"][m]["score"] for c in part if c["scores"].get(m, {}).get("score") is not None]
            if values:
                per_metric.append(statistics.mean(values))
        return statistics.mean(per_metric)

    rounds_means = [mean_of(clips[k * n : (k + 1) * n]) for k in range(rounds)]
    return mean_of(clips), (float(np.std(rounds_means)) if rounds > 1 else None)


def _words_row(rows: list[dict], t: float = 0.8) -> dict[str, float | None]:
    return {r["attribute"]: r["share"] for r in rows if r["t"] == t}


# ---------------------------------------------------------------- the two findings


def scaling(args) -> tuple[str, str]:
    run = args.out / "native"
    budgets = [args.base_steps * r for r in args.ratios]
    stages = {}
    for steps in sorted(budgets):
        stages[steps] = train_to(run, steps, args.out / "exports" / f"native-{steps}", args.threads)
    scores = {s: judge(p, args.out / "eval" / p.name, args.seeds, args.threads) for s, p in stages.items()}
    reads = {s: words(p, args.out / "eval" / p.name, args.threads) for s, p in stages.items()}
    real = judge(Path("real"), args.out / "eval" / "real", args.seeds, args.threads)
    strip({f"{s // args.base_steps}x ({s} steps)": p for s, p in stages.items()}, args.docs / "compute_scaling.png", args.threads)

    base = budgets[0]
    info = {s: json.loads((p / "stage.json").read_text()) for s, p in stages.items()}
    overall = {s: _overall(scores[s]) for s in budgets}
    head = ["compute", "steps", "GFLOPs", "CPU hours", "train loss (last 50 steps)", "judge: mean of the world metrics"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---:" for _ in head) + " |"]
    for s in budgets:
        st = info[s]
        lines.append(f"| {s // base}x | {s} | {st['flops'] / 1e9:,.0f} | {st['cpu_hours']:.2f} | {st['loss_last_50']:.3f} | {_pm(*overall[s], 3)} |")
    lines.append(f"| real renders | | | | | {_pm(*_overall(real), 3)} |")
    cols = [f"{s // base}x" for s in budgets] + ["real renders"]
    docs = [scores[s] for s in budgets] + [real]
    lines += ["", f"Each metric, mean ± spread between the {args.seeds} rounds of the quick suite (tasks: on the cases that ask them):", "",
              "| metric | " + " | ".join(cols) + " |", "| --- | " + " | ".join("---:" for _ in cols) + " |"]  # fmt: skip
    for m in (*JUDGE_METRICS, "framing", *TASK_METRICS):
        lines.append(f"| {m} | " + " | ".join(_pm(d["aggregate"].get(m), d["spread"].get(m)) for d in docs) + " |")
    attrs = list(_words_row(reads[budgets[0]]))
    lines += ["", "Caption words read (`kinema eval words`, share at t = 0.8; 0: not read, about 1: read as the real change):", "",
              "| compute | " + " | ".join(attrs) + " |", "| --- | " + " | ".join("---:" for _ in attrs) + " |"]  # fmt: skip
    for s in budgets:
        row = _words_row(reads[s])
        lines.append(f"| {s // base}x | " + " | ".join("n/a" if row[a] is None else f"{row[a]:.2f}" for a in attrs) + " |")

    means = [overall[s][0] for s in budgets]
    rising = all(b > a for a, b in zip(means, means[1:]))
    gap = means[-1] - means[0]
    noise = float(np.hypot(overall[budgets[0]][1] or 0.0, overall[budgets[-1]][1] or 0.0))
    verdict = (f"The judge's mean goes {' -> '.join(f'{m:.3f}' for m in means)} over "
               f"{' : '.join(str(s // base) for s in budgets)} compute; {budgets[-1] // base}x against 1x: "
               f"{gap:+.3f}, spreads between rounds combined {noise:.3f}. ")
    verdict += ("Reproduced: quality grows with compute at every step of the ladder." if rising and gap > 2 * noise
                else "Not reproduced on these budgets: the mean does not rise at every step of the ladder." if not rising
                else "Weakly: the mean rises at every step, but the whole gain is within twice the spread.")
    first, last = scores[budgets[0]], scores[budgets[-1]]
    moves: dict[str, list[str]] = {"up": [], "down": [], "level": []}
    for m in (*JUDGE_METRICS, "framing", *TASK_METRICS):
        a, b = first["aggregate"].get(m), last["aggregate"].get(m)
        if a is None or b is None:
            continue
        spread = float(np.hypot(first["spread"].get(m) or 0.0, last["spread"].get(m) or 0.0))
        way = "up" if b - a > max(2 * spread, 0.01) else "down" if a - b > max(2 * spread, 0.01) else "level"
        moves[way].append(f"{m} {a:.2f} -> {b:.2f}")
    verdict += (f" Metric by metric, {budgets[-1] // base}x against 1x beyond twice the spread: up on "
                + "; ".join(moves["up"] or ["none"]) + "; down on " + "; ".join(moves["down"] or ["none"])
                + "; level on " + "; ".join(moves["level"] or ["none"]) + ".")  # fmt: skip
    return "\n".join(lines), verdict


def aspect(args) -> tuple[str, str]:
    budgets = [args.base_steps * r for r in args.aspect_ratios]
    arms: dict[int, dict[str, Path]] = {}
    for steps in budgets:  # the square runs first: the native stages may still be training in `scaling`
        arms[steps] = {"square": train_to(args.out / "square", steps, args.out / "exports" / f"square-{steps}", args.threads, crop="square")}
    for steps in budgets:
        arms[steps] = {"native": train_to(args.out / "native", steps, args.out / "exports" / f"native-{steps}", args.threads),
                       **arms[steps]}  # fmt: skip
    frames = {(s, a): framing(p, args.out / "framing" / p.name, args.seeds, args.threads) for s in budgets for a, p in arms[s].items()}
    sizes = [tuple(int(v) for v in spec.split("=")[1].split("x")) for spec in FRAMING_SIZES.split(",")]
    last = budgets[-1]
    strip({f"{a} ({last} steps)": p for a, p in arms[last].items()}, args.docs / "native_vs_square.png", args.threads, sizes)

    groups = list(frames[(last, "native")]["groups"])
    metrics = ["framing", *JUDGE_METRICS]
    head = ["training", "size", "in view: model", "in view: real", *metrics]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | " + " | ".join("---:" for _ in head[2:]) + " |"]
    for (steps, a), doc in frames.items():
        for g in groups:
            row, spread, share = doc["groups"][g], doc["spread"].get(g, {}), doc["shares"][g]
            w, h = doc["sizes"][g]
            cells = [f"{a}, {steps // args.base_steps}x ({steps} steps)", f"{g} {w}x{h}", f"{share['model']:.3f}",
                     f"{share['real']:.3f}", *(_pm(row.get(m), spread.get(m)) for m in metrics)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")

    verdicts = []
    for steps in budgets:
        n, q = frames[(steps, "native")], frames[(steps, "square")]
        for metric, what in (("framing", "framing (objects wholly in view)"), ("horizon", "composition (horizon)")):
            notes, wins = [], 0
            for g in groups:
                diff = n["groups"][g][metric] - q["groups"][g][metric]
                noise = float(np.hypot(n["spread"][g].get(metric) or 0.0, q["spread"][g].get(metric) or 0.0))
                wins += diff > 2 * noise
                notes.append(f"{g} native {n['groups'][g][metric]:.2f} against square {q['groups'][g][metric]:.2f} "
                             f"({diff:+.2f}, spreads combined {noise:.2f})")  # fmt: skip
            verdict = f"At {steps // args.base_steps}x ({steps} steps), {what}: " + "; ".join(notes) + ": "
            verdict += ("reproduced, the native model is better at every size, beyond twice the spread." if wins == len(groups)
                        else "partly reproduced, the native model is better beyond twice the spread at some sizes only." if wins
                        else "not reproduced, at no size is the native model better beyond twice the spread.")  # fmt: skip
            verdicts.append(verdict)
    return "\n".join(lines), "\n\n".join(f"- {v}" for v in verdicts)


TITLES = {
    "scaling": ("compute_scaling", "Sample quality against training compute", "compute_scaling.png"),
    "aspect": ("native_vs_square", "Native aspect ratios against square crops", "native_vs_square.png"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("finding", choices=("scaling", "aspect"))
    p.add_argument("--out", type=Path, default=Path("runs/findings"), help="runs, exports and evaluations")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="where the tables (markdown) and strips (PNG) go")
    p.add_argument("--base-steps", type=int, default=150, help="optimizer steps of the smallest budget")
    p.add_argument("--ratios", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16], help="budgets in base steps")
    p.add_argument("--aspect-ratios", type=lambda s: [int(v) for v in s.split(",")], default=[4, 16],
                   help="the aspect runs' budgets, in base steps (the strip shows the last)")
    p.add_argument("--seeds", type=int, default=2, help="rounds of each evaluation suite (spread between rounds)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each process (one process at a time)")
    args = p.parse_args()
    start = time.perf_counter()
    table, verdict = scaling(args) if args.finding == "scaling" else aspect(args)
    name, title, picture = TITLES[args.finding]
    doc = args.docs / f"{name}.md"
    recipe = " ".join(f"{k}={v}" for k, v in RECIPE.items())
    command = " ".join(["python benchmarks/training_findings.py", *sys.argv[1:]])
    doc.write_text(f"# {title}\n\nMade by `{command}` (this call {time.perf_counter() - start:.0f} s: runs, stages "
                   f"and evaluations made before are read back; {args.threads} thread a process). Every run: `kinema train dit` with {recipe}.\n\n"
                   f"{table}\n\n![{title}]({picture})\n\n**Verdict:**\n\n{verdict}\n")  # fmt: skip
    print(table, verdict, sep="\n\n")
    log(f"{args.finding}: {time.perf_counter() - start:.0f} s; written to {doc}")


if __name__ == "__main__":
    main()
