"""Sequence parallelism on this machine: one training step (forward + backward) of a DiT on one
sequence, split over the ranks against one rank alone, and the time spent in the all-to-alls.

    torchrun --nproc_per_node 2 benchmarks/sequence_parallel.py [--tokens 4096] [--hidden 384]
             [--depth 4] [--heads 6] [--steps 5]

Each rank runs one thread (the 2-core machine: one core a rank). First the group runs the split
step (each rank 1/K of the tokens, Ulysses all-to-alls around self-attention), then rank 0 runs
the same step alone on all the tokens while the others wait. Printed: the median seconds a step
each way, their ratio, the seconds a step inside all_to_all_single (timed by wrapping it) and
the share of the split step they take. On CPUs with gloo the all-to-all is a memory copy through
loopback sockets; on GPUs with NCCL it is NVLink traffic: the figures are this machine's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from kinema.dit import DiT, DiTConfig
from kinema.parallel import sequence_group
from kinema.patches import positions


def step(model: DiT, x, pos, t, text, mask, target) -> None:
    model.zero_grad(set_to_none=True)
    v = model(x, pos, t, text, mask)
    ((v - target) ** 2).mean().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=4096, help="tokens of the sequence (a 4 x 32 x 32 grid by default)")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    group = sequence_group(world)

    spent = [0.0]
    a2a = dist.all_to_all_single

    def timed(*a, **kw):
        start = time.perf_counter()
        out = a2a(*a, **kw)
        spent[0] += time.perf_counter() - start
        return out

    dist.all_to_all_single = timed  # kinema.parallel calls it through the module

    torch.manual_seed(0)
    cfg = DiTConfig(hidden=args.hidden, depth=args.depth, heads=args.heads, text_dim=64)
    side = int(round((args.tokens / 4) ** 0.5))
    grid = (4, side, args.tokens // (4 * side))
    n = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, n, cfg.token_dim, generator=g)
    target = torch.randn(1, n, cfg.token_dim, generator=g)
    pos, t = positions(grid), torch.tensor([0.5])
    text, mask = torch.randn(1, 16, 64, generator=g), torch.ones(1, 16, dtype=torch.bool)

    split = DiT(cfg).sequence_parallel(group)
    times, comm = [], []
    for i in range(args.steps + 1):  # the first is a warm-up
        dist.barrier()
        spent[0] = 0.0
        start = time.perf_counter()
        step(split, x, pos, t, text, mask, target)
        if i:
            times.append(time.perf_counter() - start)
            comm.append(spent[0])
    dist.barrier()
    if rank == 0:
        alone = DiT(cfg)
        plain = []
        for i in range(args.steps + 1):
            start = time.perf_counter()
            step(alone, x, pos, t, text, mask, target)
            if i:
                plain.append(time.perf_counter() - start)
        s, p, c = statistics.median(times), statistics.median(plain), statistics.median(comm)
        print(f"DiT hidden {args.hidden}, depth {args.depth}, heads {args.heads}; one sequence of {n} tokens; "
              f"{world} ranks x 1 thread (gloo)")  # fmt: skip
        print(f"{'1 rank, all tokens':<34} {p:8.3f} s a step")
        print(f"{f'{world} ranks, {n // world} tokens each':<34} {s:8.3f} s a step   ({p / s:.2f}x faster)")
        print(f"{'  of which in all_to_all_single':<34} {c:8.3f} s a step   ({100 * c / s:.0f}% of the split step)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
