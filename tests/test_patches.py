import random

import pytest
import torch

from kinema.errors import KinemaError
from kinema.patches import (
    grid_size,
    num_tokens,
    pack,
    pack_by_budget,
    patchify,
    positions,
    unpack,
    unpatchify,
)


@pytest.mark.parametrize("patch", [(1, 2, 2), (1, 1, 1), (2, 2, 4)])
def test_patchify_round_trip(patch):
    z = torch.randn(3, 4, 8, 12)
    tokens = patchify(z, patch)
    grid = grid_size(z.shape, patch)
    assert tokens.shape == (num_tokens(z.shape, patch), 3 * patch[0] * patch[1] * patch[2])
    assert torch.equal(unpatchify(tokens, grid, patch), z)


def test_positions_are_patch_coordinates():
    patch = (1, 2, 2)
    T, H, W = 3, 4, 6
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    z = torch.stack([t, h, w]).float()  # each cell holds its own (t, h, w)
    tokens = patchify(z, patch)  # (N, 3 * 4): features are (c, pt, ph, pw)
    pos = positions(grid_size(z.shape, patch))
    assert pos.dtype == torch.long and pos.shape == (T * H // 2 * W // 2, 3)
    origin = tokens.reshape(-1, 3, 4)[:, :, 0]  # the (t, h, w) of each patch's first cell
    assert torch.equal(origin, (pos * torch.tensor(patch)).float())


def test_indivisible_sizes_raise_a_clear_error():
    with pytest.raises(KinemaError, match="W = 5 is not a multiple of 2"):
        patchify(torch.randn(4, 2, 4, 5))
    with pytest.raises(KinemaError, match="T = 3 is not a multiple of 2"):
        grid_size((4, 3, 4, 4), (2, 2, 2))


def test_pack_unpack_round_trip_with_padding():
    lat = [torch.randn(4, 2, 4, 6), torch.randn(4, 1, 6, 4), torch.randn(4, 3, 2, 2)]
    p = pack(lat, pad_to=40)
    n = [12, 6, 3]
    assert p.tokens.shape == (1, 40, 16) and p.positions.shape == (40, 3)
    assert p.cu_seqlens.tolist() == [0, 12, 18, 21]
    assert p.doc_ids.tolist() == [0] * 12 + [1] * 6 + [2] * 3 + [-1] * 19
    assert p.valid.sum() == sum(n)
    assert torch.equal(p.positions[12:18], positions((1, 3, 2)))
    for a, b in zip(unpack(p), lat, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(KinemaError):
        pack(lat, pad_to=20)
    with pytest.raises(KinemaError):
        pack([torch.randn(4, 1, 2, 2), torch.randn(3, 1, 2, 2)])


def test_per_sample_and_per_frame_values():
    p = pack([torch.randn(2, 2, 2, 4), torch.randn(2, 1, 2, 2)], pad_to=8)  # 2x1x2 + 1x1x1 tokens
    assert p.per_sample(torch.tensor([0.5, 0.25]), pad_value=-1).tolist() == [0.5] * 4 + [0.25] + [-1] * 3
    frames = [torch.tensor([True, False]), torch.tensor([True])]
    assert p.per_frame(frames).tolist() == [True, True, False, False, True, False, False, False]


def test_pack_by_budget_never_exceeds_budget_and_keeps_every_sample():
    rng = random.Random(0)
    for _ in range(200):
        budget = rng.randint(8, 300)
        items = [rng.randint(1, budget) for _ in range(rng.randint(1, 40))]
        groups = pack_by_budget(items, budget)
        assert sorted(i for g in groups for i in g) == list(range(len(items)))
        assert all(sum(items[i] for i in g) <= budget for g in groups)
        # first-fit decreasing uses at most 11/9 OPT + 1 groups; OPT >= total / budget
        assert len(groups) <= 11 / 9 * -(-sum(items) // budget) + 1


def test_pack_by_budget_first_fit_decreasing():
    assert pack_by_budget([3, 7, 5, 5, 2], 10) == [[1, 0], [2, 3], [4]]
    with pytest.raises(KinemaError, match="more than the token budget"):
        pack_by_budget([3, 11], 10)
