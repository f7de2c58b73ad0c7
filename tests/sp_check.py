"""Run under torchrun (gloo, CPU): the DiT with its sequences split over the ranks equals the DiT on
one rank: the velocity (packed and unpacked, lengths not divisible by the group) and one training
step's loss and gradients. Rank 0 prints one line "max diff NAME VALUE" per check (the largest over
the ranks) and, on stderr, the seconds a forward+backward took each way ("seconds sp/plain ...").
With the arguments `sample OUT` it samples a clip of the world model instead (`sample`)."""

import sys
import time

import torch
import torch.distributed as dist

from kinema.dit import DiT, DiTConfig
from kinema.parallel import sequence_group


def sample(out: str) -> None:
    """The shipped world model samples one clip with its sequence split over the ranks; rank 0
    saves the latent to `out`."""
    from safetensors.torch import save_file

    from kinema.pipeline import Pipeline

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    pipe = Pipeline.from_pretrained("world", device="cpu").sequence_parallel(sequence_group(dist.get_world_size()))
    res = pipe.generate("a red ball bounces on green grass", width=80, height=48, seconds=1, steps=3, seed=5,
                        progress=False)  # fmt: skip
    # a frame large enough for the ranks to share its decode's tiles
    big = pipe.generate("a red ball bounces on green grass", width=320, height=256, seconds=0.5, steps=1, seed=5,
                        progress=False)  # fmt: skip
    if dist.get_rank() == 0:
        save_file({"latent": res.latent.contiguous(), "big_latent": big.latent.contiguous(),
                   "big_frames": big.frames.contiguous()}, out)  # fmt: skip
    dist.destroy_process_group()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "sample":
        return sample(sys.argv[2])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    group = sequence_group(dist.get_world_size())
    torch.manual_seed(0)
    cfg = DiTConfig(hidden=64, depth=2, heads=4, text_dim=32)
    plain = DiT(cfg)
    with torch.no_grad():  # adaLN-Zero zeros would hide wrong attention: give them values
        for p in plain.parameters():
            p.add_(torch.randn(p.shape) * 0.02)
    sp = DiT(cfg)
    sp.load_state_dict(plain.state_dict())
    sp.sequence_parallel(group)
    g = torch.Generator().manual_seed(1)
    C = cfg.token_dim
    text = torch.randn(3, 5, 32, generator=g)
    tmask = torch.ones(3, 5, dtype=torch.bool)
    tmask[1, 3:] = False

    # unpacked: 2 rows of one 3 x 3 x 5 = 45-token sample each (odd: padded inside)
    from kinema.patches import positions

    pos = positions((3, 3, 5))
    x = torch.randn(2, 45, C, generator=g)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a, b = plain(x, pos, t, text[:2], tmask[:2]), sp(x, pos, t, text[:2], tmask[:2])
    diffs = {"unpacked": (a - b).abs().max().item()}

    # packed: three samples of 12, 20 and 9 tokens and 2 of padding, per-token times (pinned frames at 0)
    grids = [(1, 3, 4), (2, 2, 5), (1, 3, 3)]
    pos = torch.cat([positions(gr) for gr in grids] + [torch.zeros(2, 3, dtype=torch.long)])
    doc = torch.cat([torch.full((gr[0] * gr[1] * gr[2],), i) for i, gr in enumerate(grids)] + [torch.full((2,), -1)])
    L = len(doc)
    x = torch.randn(1, L, C, generator=g)
    t = torch.rand(1, L, generator=g)
    t[0, :6] = 0.0
    target = torch.randn(1, L, C, generator=g)
    with torch.no_grad():
        a, b = plain(x, pos, t, text, tmask, doc_ids=doc), sp(x, pos, t, text, tmask, doc_ids=doc)
    real = doc >= 0  # padding tokens (-1) see other padding, which the split pads further: not compared
    diffs["packed"] = (a - b)[0, real].abs().max().item()
    sp.attention = "flex"  # BlockMasks instead of dense masks: the self-attention one over all tokens
    with torch.no_grad():
        diffs["packed flex"] = (a - sp(x, pos, t, text, tmask, doc_ids=doc))[0, real].abs().max().item()
    sp.attention = "sdpa"

    # one training step: loss and gradients (each rank's are partial: summed over the group)
    seconds = {}
    for name, model in (("plain", plain), ("sp", sp)):
        model.zero_grad()
        start = time.perf_counter()
        v = model(x, pos, t, text, tmask, doc_ids=doc)
        loss = ((v - target) ** 2).mean(-1)[0][doc >= 0].mean()
        loss.backward()
        seconds[name] = time.perf_counter() - start
        if name == "plain":
            want_loss, want = loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}
    for p in sp.parameters():
        dist.all_reduce(p.grad, group=group)
    diffs["loss"] = abs(loss.item() - want_loss)
    diffs["grad"] = max((p.grad - want[n]).abs().max().item() for n, p in sp.named_parameters())
    worst = torch.tensor(list(diffs.values()), dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # over the ranks
    if dist.get_rank() == 0:
        for name, value in zip(diffs, worst.tolist()):
            print("max diff", name, value)
        print(f"seconds sp/plain {seconds['sp']:.4f} {seconds['plain']:.4f}", file=sys.stderr)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
