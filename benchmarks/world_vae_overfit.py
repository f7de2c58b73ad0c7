"""Can the world VAE's latent hold a few clips at 32 dB? Train it on them alone and watch.

    python benchmarks/world_vae_overfit.py [--steps 1200] [--init world-vae] [--threads 1]

A question for the second-generation world VAE (issue: >= 32 dB at every size): is the 4x8x8x16
latent of the tiny preset too small for Kinema World's clips, or does it need more training? Here
the shipped VAE (or a fresh tiny one, `--init tiny`) trains, encoder and decoder, on 4 fixed clips
(64x64, 17 frames: the size where it scores worst) and nothing else, with the squared error added
to the shipped loss. Before training and every 100 steps it prints, as JSON lines, the PSNR of the clips' first frames
(a latent frame of their own) and of the later ones (folded four to a latent frame), from the
posterior mean. Reaching 32 dB here shows what the latent can hold, not what a VAE generalises to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from kinema.errors import KinemaError
from kinema.train.vae import VAETrainConfig, world_batch
from kinema.vae import CausalVAE, LossWeights, VAEConfig, load_vae, psnr, vae_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps on the same 4 clips")
    p.add_argument("--init", default="world-vae", help="world-vae (shipped), a VAE folder, or tiny (a fresh one)")
    p.add_argument("--lr", type=float, default=1e-4, help="constant learning rate (AdamW)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = VAETrainConfig(sizes=((64, 64),), frames=(17,))
    x = torch.cat([world_batch(data, step, range(2)) for step in range(2)])  # (4, 3, 17, 64, 64)
    try:
        model = CausalVAE(VAEConfig.tiny()) if args.init == "tiny" else load_vae(args.init).train()
    except KinemaError as e:
        sys.exit(f"error: {e}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    weights = LossWeights(l1=1.0, mse=1.0, ssim=0.2, kl=1e-6)
    gen = torch.Generator().manual_seed(0)
    start = time.time()

    def report(step: int, loss: float | None) -> None:
        with torch.no_grad():
            model.eval()
            r = model.decode(model.encode(x).mode()).clamp(-1, 1)
            model.train()
        first, later = psnr(r[:, :, :1], x[:, :, :1]).item(), psnr(r[:, :, 1:], x[:, :, 1:]).item()
        print(json.dumps({"step": step, "seconds": round(time.time() - start), "loss": loss,
                          "first_db": round(first, 2), "later_db": round(later, 2)}), flush=True)  # fmt: skip

    report(0, None)
    for step in range(1, args.steps + 1):
        recon, posterior = model(x, generator=gen)
        loss, parts = vae_loss(x, recon, posterior, weights)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            report(step, round(parts["loss"], 4))


if __name__ == "__main__":
    main()
