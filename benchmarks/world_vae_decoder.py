"""Fine-tune the world VAE's decoder on this CPU, two losses side by side, and score both.

    python benchmarks/world_vae_decoder.py [--steps 400] [--out runs/world2]

The encoder stays frozen (`--freeze-encoder`), so the latents, and the shipped world DiT trained
on them, stay valid: a better decoder improves every clip the shipped model makes, with no new
DiT. Two arms start from the shipped `world-vae` with the same data, seed and schedule:

    plain   the shipped loss: L1 + 0.2 (1 - SSIM)
    detail  plus the squared error (--mse 1) and L1 weighted up on edges and motion (--detail 4),
            the pixels of small and moving objects that the plain mean hardly counts

Each arm trains in its own process with one thread (the two share the machine's cores), checkpoints
every 50 steps and resumes where it stopped when the command is run again. Then every arm's export
and the shipped VAE are scored on held-out clips (`kinema eval vae`: PSNR of the whole clips, of
first frames and of the later, temporally folded frames) and by the world judge on real renders
sent through the VAE and back (`kinema eval world --model vae:PATH --seeds 2`: the most a DiT on
that VAE can score). Prints both tables; scores are kept in OUT/ and read back on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = "64x64,96x64,64x96,128x128,160x96,96x160,128x80,80x128"
ARMS = {"plain": [], "detail": ["--mse", "1", "--detail", "4"]}
JUDGED = ("objects", "motion", "consistency", "permanence", "gravity", "camera", "sdedit", "connect")


def kinema(*args: str, threads: int, log: Path) -> subprocess.Popen:
    """Start `kinema ARGS` on `threads` threads, its output appended to `log`."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), KINEMA_THREADS=str(threads), PYTHONUNBUFFERED="1")
    with open(log, "a") as out:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "kinema.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def train_command(run: Path, steps: int, extra: list[str]) -> list[str]:
    return ["train", "vae", str(run), "--init", "world-vae", "--freeze-encoder", "--batch", "8",
            "--frames", "1,9,17", "--sizes", SIZES, "--steps", str(steps), "--warmup", "20", "--lr", "1e-4",
            "--ckpt-every", "50", "--precision", "fp32", "--workers", "0", *extra]  # fmt: skip


def scores(model: str, out: Path, threads: int) -> dict:
    """The VAE table and the judge's ceiling of one VAE, computed once and kept in OUT."""
    path = out / "scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch

    from kinema.vae.evaluate import evaluate_vae

    torch.set_num_threads(threads)
    table = evaluate_vae(model)
    judge = out / "judge"
    if not (judge / "scores.json").is_file():  # a judge run that finished is read back
        res = kinema("eval", "world", "--model", f"vae:{model}", "--seeds", "2", "--out", str(judge),
                     threads=threads, log=out / "judge.log")  # fmt: skip
        if res.wait():
            sys.exit(f"error: eval world of vae:{model} failed; see {out / 'judge.log'}")
    j = json.loads((judge / "scores.json").read_text())
    result = {"vae": table, "judge": j["aggregate"], "spread": j["spread"]}
    path.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="optimizer steps of each arm (batch 8)")
    p.add_argument("--threads", type=int, default=2, help="threads for the scoring (training: one an arm)")
    p.add_argument("--out", type=Path, default=Path("runs/world2"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    procs = {name: kinema(*train_command(args.out / f"dec_{name}", args.steps, extra), threads=1,
                          log=args.out / f"dec_{name}.log") for name, extra in ARMS.items()}  # fmt: skip
    for name, proc in procs.items():
        if proc.wait():
            sys.exit(f"error: the {name} arm failed; see {args.out / f'dec_{name}.log'}")
    # scores of an arm are kept per step count: a rerun with more --steps scores the new export
    models = {"shipped": ("world-vae", "score_shipped"),
              **{name: (str(args.out / f"dec_{name}" / "export"), f"score_{name}-{args.steps}") for name in ARMS}}
    results = {name: scores(m, args.out / folder, args.threads) for name, (m, folder) in models.items()}

    print(f"\nheld-out clips, 17 frames (kinema eval vae); decoders fine-tuned {args.steps} steps")
    print(f"{'vae':>8} {'size':>8} {'PSNR dB':>8} {'first':>7} {'later':>7} {'SSIM':>7}")
    for name, r in results.items():
        for row in r["vae"]:
            print(f"{name:>8} {row['size']:>8} {row['psnr_db']:8.2f} {row['first_db']:7.2f} {row['later_db']:7.2f} "
                  f"{row['ssim']:7.4f}")
    print("\nthe judge on real renders through each VAE (--seeds 2; mean and spread between rounds)")
    print(f"{'metric':>12} " + " ".join(f"{n:>14}" for n in results))
    for metric in JUDGED:
        cells = [f"{r['judge'][metric]:.3f} ± {r['spread'].get(metric, 0):.3f}" for r in results.values()]
        print(f"{metric:>12} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
