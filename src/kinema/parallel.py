"""Sequence parallelism: one sequence's tokens split over the ranks of a group (Ulysses).

    group = sequence_group(2)              # under torchrun: ranks {0, 1}, {2, 3}, ... each a group
                                           # (the "sequence" dimension of a data x sequence mesh)
    dit.sequence_parallel(group)           # every rank of the group then runs the same forward

The report samples up to a minute of HD video: millions of tokens, more activations than one GPU
holds. With sequence parallelism over K ranks each rank keeps 1/K of a sequence's tokens through
the whole DiT: patch embedding, modulation, cross-attention and MLP run on its own tokens. Only
self-attention needs every token: there an all-to-all trades the split, from (its tokens, all
heads) to (all tokens, its heads), so each rank attends over the whole sequence for H / K heads,
and a second all-to-all trades back (DeepSpeed-Ulysses; Wan and Open-Sora 2.0 do the same).

Every rank of a group is given the whole sequence (the latent tokens are small) and returns the
whole velocity, gathered at the end: the caller's code does not change. A sequence whose length
is not a multiple of K is padded inside (padding tokens attend nowhere that matters and are cut).
The gather's backward keeps each rank's own part of the gradient: every rank of a group computes
the same loss on the same output, so its slice of that gradient is the whole of its share. The
parameters' gradients are then partial sums over the group's ranks, which FSDP2's reduction over
all ranks adds up (`kinema.train.dit`).

Only `torch.distributed` collectives: all_to_all_single and all_gather (NCCL on GPUs, gloo on
CPUs).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from kinema.errors import KinemaError


def sequence_mesh(size: int, device_type: str = "cpu"):
    """The 2D device mesh ("data", "sequence") of all ranks: consecutive ranks in groups of `size`
    share a sequence (r // size: the data index, r % size: the place in the sequence). Every rank
    must call it (making groups is collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise KinemaError("sequence parallelism runs under torchrun (torch.distributed is not initialised)")
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if size < 1 or world % size:
        raise KinemaError(f"sequence_parallel = {size} must divide the number of ranks ({world})")
    return init_device_mesh(device_type, (world // size, size), mesh_dim_names=("data", "sequence"))


def row_sequence_mesh(device_type: str = "cpu"):
    """The 2D mesh ("rows", "sequence") of all ranks for guided sampling: ranks [0, W/2) compute
    the caption's row, [W/2, W) the negative caption's, each half splitting the sequence."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if world % 2:
        raise KinemaError(f"splitting guidance's two rows needs an even number of ranks; got {world}")
    return init_device_mesh(device_type, (2, world // 2), mesh_dim_names=("rows", "sequence"))


def sequence_group(size: int, device_type: str = "cpu"):
    """This rank's sequence-parallel process group (the "sequence" dimension of `sequence_mesh`)."""
    return sequence_mesh(size, device_type).get_group("sequence")


class _SeqToHeads(torch.autograd.Function):
    """(B, H, L/K, d) this rank's tokens, all heads -> (B, H/K, L, d) all tokens, this rank's heads."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return _seq_to_heads(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _heads_to_seq(grad.contiguous(), ctx.group), None


class _HeadsToSeq(torch.autograd.Function):
    """The inverse: (B, H/K, L, d) -> (B, H, L/K, d)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return _heads_to_seq(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _seq_to_heads(grad.contiguous(), ctx.group), None


def _seq_to_heads(x: Tensor, group) -> Tensor:
    K = dist.get_world_size(group)
    B, H, Ll, d = x.shape
    send = x.reshape(B, K, H // K, Ll, d).transpose(0, 1).contiguous()  # (K, B, H/K, Ll, d): part j to rank j
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[i]: rank i's tokens, my heads
    return recv.permute(1, 2, 0, 3, 4).reshape(B, H // K, K * Ll, d)


def _heads_to_seq(x: Tensor, group) -> Tensor:
    K = dist.get_world_size(group)
    B, h, L, d = x.shape
    send = x.reshape(B, h, K, L // K, d).permute(2, 0, 1, 3, 4).contiguous()  # (K, B, h, Ll, d): rank j's tokens
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[j]: my tokens, rank j's heads
    return recv.transpose(0, 1).reshape(B, K * h, L // K, d)


def seq_to_heads(x: Tensor, group) -> Tensor:
    return _SeqToHeads.apply(x, group)


def heads_to_seq(x: Tensor, group) -> Tensor:
    return _HeadsToSeq.apply(x, group)


class _GatherSeq(torch.autograd.Function):
    """(B, L/K, C) this rank's tokens -> (B, L, C) the group's, in rank order. Backward: this
    rank's slice of the gradient (every rank of the group has the same loss)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        K, r = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(K, dim=1)[r].contiguous(), None


def gather_sequence(x: Tensor, group) -> Tensor:
    return _GatherSeq.apply(x, group)


def local_slice(length: int, group) -> tuple[int, slice]:
    """(padded length, this rank's slice of it): the length rounded up to a multiple of the group."""
    K, r = dist.get_world_size(group), dist.get_rank(group)
    padded = -(-length // K) * K
    n = padded // K
    return padded, slice(r * n, (r + 1) * n)
