"""Data: the manifest skips bad files, the latent cache resumes and reads back, the loader packs
within the budget, covers every sample once an epoch, splits over ranks, and resumes; Kinema
World streams the same batches."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from kinema.data import (
    EncodeOptions,
    ShardDataset,
    WorldStream,
    encode_manifest,
    index_folder,
    prepare_clip,
    read_manifest,
    write_index,
    write_shard,
)
from kinema.errors import KinemaError
from kinema.vae import CausalVAE, VAEConfig, save_vae
from kinema.video import write_video
from tests.cli_helpers import torchrun



def tiny_vae(seed: int = 0) -> CausalVAE:
    torch.manual_seed(seed)
    return CausalVAE(VAEConfig.tiny()).eval()


def colour_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth moving colours (codec-friendly): uint8 (T, H, W, 3)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    phase = seed + 0.3 * t
    rgb = np.stack([np.sin(0.1 * x + phase), np.cos(0.13 * y - phase), np.sin(0.07 * (x + y))], -1)
    return ((rgb + 1) * 120).astype(np.uint8)


def media_folder(tmp_path):
    """Two videos, an image, sidecar captions, a broken file and a hidden file."""
    folder = tmp_path / "footage"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.mp4", colour_clip(10, 40, 56), fps=10)
    (folder / "a.txt").write_text("a red ball bounces\n")
    write_video(folder / "sub" / "b.mp4", colour_clip(5, 32, 32, seed=1), fps=8)
    (folder / "sub" / "b.json").write_text(json.dumps({"caption": "a blue square slides left"}))
    write_video(folder / "c.png", colour_clip(1, 48, 32, seed=2), fps=1)
    (folder / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (folder / ".hidden.mp4").write_bytes(b"half written")
    return folder


# ---------------------------------------------------------------- manifest


def test_index_lists_bad_file_with_its_reason_and_skips_it(tmp_path):
    folder = media_folder(tmp_path)
    result = index_folder(folder, tmp_path / "manifest.jsonl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert {r["path"] for r in rows} == {"footage/a.mp4", "footage/sub/b.mp4", "footage/c.png"}
    by = {r["path"]: r for r in rows}
    assert by["footage/a.mp4"] == dict(path="footage/a.mp4", caption="a red ball bounces", fps=10.0, frames=10,
                                       width=56, height=40)  # fmt: skip
    assert by["footage/sub/b.mp4"]["caption"] == "a blue square slides left"
    assert by["footage/c.png"]["caption"] == "" and by["footage/c.png"]["frames"] == 1
    errors = [json.loads(line) for line in result.errors_file.read_text().splitlines()]
    assert result.errors_file.name == "manifest.errors.jsonl"
    assert [e["path"] for e in errors] == ["footage/broken.mp4"] and errors[0]["error"]
    # paths resolve from the manifest's folder
    assert read_manifest(tmp_path / "manifest.jsonl")[0]["path"] == str(folder / "a.mp4")


def test_index_cli_prints_skipped_files(tmp_path):
    folder = media_folder(tmp_path)
    res = subprocess.run([sys.executable, "-m", "kinema.cli", "data", "index", str(folder)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stdout + res.stderr and "broken.mp4" in res.stdout + res.stderr
    assert "indexed 3 clips" in res.stdout
    assert (folder / "manifest.jsonl").is_file() and (folder / "manifest.errors.jsonl").is_file()


# ---------------------------------------------------------------- latent cache


def test_prepare_clip_trims_to_1_plus_4k_and_crops_the_centre():
    frames = torch.arange(10 * 50 * 70 * 3).reshape(10, 50, 70, 3).to(torch.uint8)
    out = prepare_clip(frames)
    assert tuple(out.shape) == (9, 48, 64, 3)
    assert torch.equal(out, frames[:9, 1:49, 3:67])
    assert tuple(prepare_clip(frames, max_frames=6).shape) == (5, 48, 64, 3)
    assert tuple(prepare_clip(frames, max_size=35).shape) == (9, 16, 32, 3)  # 25 x 35 -> 16 x 32
    with pytest.raises(KinemaError, match="smaller than 16"):
        prepare_clip(frames[:, :10])


def test_encode_is_resumable_and_its_shards_read_back(tmp_path):
    folder = media_folder(tmp_path)
    index_folder(folder, tmp_path / "m.jsonl", progress=False)
    (folder / "c.png").unlink()  # indexed, then gone: the encoder skips it, listed with the reason
    vae, out = tiny_vae(), tmp_path / "latents"
    opts = EncodeOptions(clips_per_shard=2)
    # two ranks, one after the other (no process group): each writes its own shard
    r1 = encode_manifest(tmp_path / "m.jsonl", out, vae, options=opts, rank=1, world_size=2, progress=False)
    r0 = encode_manifest(tmp_path / "m.jsonl", out, vae, options=opts, rank=0, world_size=2, progress=False)
    assert (r0.written, r1.written) == ([0], [1])
    assert r0.clips + r1.clips == 2 and [e["path"].endswith("c.png") for e in r0.errors + r1.errors] == [True]

    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 2 and len(index["errors"]) == 1
    data = ShardDataset(out, token_budget=1000)
    shapes = {item["path"].split("/")[-1]: tuple(item["latent"]) for item in data.items}
    assert shapes == {"a.mp4": (16, 3, 4, 6), "b.mp4": (16, 2, 4, 4)}  # 10 x 40 x 56 -> 9 x 32 x 48 -> 3 x 4 x 6
    assert data.captions == ["a red ball bounces", "a blue square slides left"]
    z, caption, text = data.load(0)
    assert tuple(z.shape) == (16, 3, 4, 6) and caption == "a red ball bounces" and text is None
    # the stored latent is the VAE's normalized posterior mode of the prepared clip
    from kinema.data.cache import encode_frames
    from kinema.video import read_video

    frames = prepare_clip(read_video(folder / "a.mp4").frames)
    assert torch.allclose(z, encode_frames(vae, frames), atol=1e-6)

    # a second run writes nothing; a lost shard is written again, alone
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    again = encode_manifest(tmp_path / "m.jsonl", out, vae, options=opts, progress=False)
    assert again.written == [] and again.skipped == [0, 1]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == stamps
    (out / "shard-000001.json").unlink()
    assert encode_manifest(tmp_path / "m.jsonl", out, vae, options=opts, progress=False).written == [1]
    # other settings into the same folder are refused
    with pytest.raises(KinemaError, match="other settings"):
        encode_manifest(tmp_path / "m.jsonl", out, vae, options=EncodeOptions(clips_per_shard=3), progress=False)


class FrozenEncoder:
    """Stands in for a frozen external text encoder (hf:DIR): 1 + one token a word, width 24."""

    dim = 24

    def __call__(self, captions):
        n = [1 + len(c.split()) for c in captions]
        tokens, mask = torch.zeros(len(captions), max(n), 24), torch.zeros(len(captions), max(n), dtype=torch.bool)
        for i, k in enumerate(n):
            tokens[i, :k] = torch.arange(k * 24).reshape(k, 24) / 100 + i
            mask[i, :k] = True
        return tokens, mask


def test_encode_stores_frozen_text_embeddings(tmp_path):
    folder = media_folder(tmp_path)
    index_folder(folder, tmp_path / "m.jsonl", progress=False)
    encode_manifest(tmp_path / "m.jsonl", tmp_path / "latents", tiny_vae(), FrozenEncoder(), text_spec="hf:t5",
                    progress=False)  # fmt: skip
    data = ShardDataset(tmp_path / "latents", token_budget=1000)
    assert data.text_dim == 24 and tuple(data.null_text().shape) == (1, 24)
    _, caption, text = data.load(0)
    assert caption == "a red ball bounces" and tuple(text.shape) == (5, 24)  # real tokens only, no padding
    assert data.next_batches(1)[0].text is not None


@pytest.mark.slow
def test_encode_cli(tmp_path):
    folder = media_folder(tmp_path)
    index_folder(folder, tmp_path / "m.jsonl", progress=False)
    save_vae(tiny_vae(), tmp_path / "vae")
    cmd = [sys.executable, "-m", "kinema.cli", "data", "encode", "--manifest", str(tmp_path / "m.jsonl"),
           "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "latents"), "--max-size", "32"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert "encoded 3 clips" in res.stdout
    bad = subprocess.run([*cmd, "--text-encoder", "t5"], capture_output=True, text=True, timeout=120, env=_env())
    assert bad.returncode == 2 and "--text-encoder must be builtin or hf:DIR" in bad.stderr
    data = ShardDataset(tmp_path / "latents", token_budget=1000)
    assert all(max(item["width"], item["height"]) <= 32 for item in data.items)


def _env():
    import os

    return dict(os.environ)


@pytest.mark.slow
def test_encode_under_torchrun_splits_shards_over_ranks(tmp_path):
    folder = media_folder(tmp_path)
    index_folder(folder, tmp_path / "m.jsonl", progress=False)
    save_vae(tiny_vae(), tmp_path / "vae")
    torchrun(["-m", "kinema.cli", "data", "encode", "--manifest", tmp_path / "m.jsonl", "--vae", tmp_path / "vae",
              "--out", tmp_path / "latents", "--clips-per-shard", "1"], timeout=180)  # fmt: skip
    data = ShardDataset(tmp_path / "latents", token_budget=1000)
    assert len(data) == 3 and sorted(p.name for p in (tmp_path / "latents").glob("shard-*.safetensors")) == [
        "shard-000000.safetensors", "shard-000001.safetensors", "shard-000002.safetensors"]  # fmt: skip
    # the same cache, re-run with one process: nothing left to do
    again = encode_manifest(tmp_path / "m.jsonl", tmp_path / "latents", tiny_vae(), vae_name=str(tmp_path / "vae"),
                            options=EncodeOptions(clips_per_shard=1), progress=False)  # fmt: skip
    assert again.written == [] and again.skipped == [0, 1, 2]


# ---------------------------------------------------------------- loader


def synthetic_cache(root, sizes, shard_size=5, seed=0):
    """A latent cache of random latents with the given (T, H, W) sizes, captions 'clip i'."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    items = [dict(latent=torch.randn(16, *s, generator=g), caption=f"clip {i}") for i, s in enumerate(sizes)]
    for k in range(0, len(items), shard_size):
        write_shard(root, k // shard_size, items[k : k + shard_size])
    write_index(root)
    return items


def random_sizes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))) for _ in range(n)]


def test_loader_never_exceeds_the_budget_and_covers_every_sample_once_an_epoch(tmp_path):
    sizes = random_sizes(40) + [(8, 8, 8)]  # 1 to 27 tokens each; the last has 128: over the budget
    synthetic_cache(tmp_path, sizes)
    with pytest.warns(UserWarning, match="1 of 41"):
        data = ShardDataset(tmp_path, token_budget=40, seed=3, window=16)
    assert data.skipped == [40]
    for epoch in (0, 1):
        seqs = data.epoch_sequences(epoch)
        assert sorted(i for s in seqs for i in s) == list(range(40))
        assert all(sum(data.tokens(i) for i in s) <= 40 for s in seqs)
    assert data.epoch_sequences(0) != data.epoch_sequences(1)  # reshuffled every epoch

    n = len(data.epoch_sequences(0)) + len(data.epoch_sequences(1))
    seen = []
    for _ in range(n):
        (batch,) = data.next_batches(1)
        assert batch.num_tokens <= 40 and batch.packed.length <= 40
        assert batch.captions == [f"clip {i}" for i in batch.ids]
        seen += batch.ids
    assert sorted(seen) == sorted(list(range(40)) * 2)


def test_loader_is_deterministic_splits_over_ranks_and_resumes(tmp_path):
    synthetic_cache(tmp_path, random_sizes(30, seed=1))
    one = ShardDataset(tmp_path, token_budget=48, seed=7)
    ranks = [ShardDataset(tmp_path, token_budget=48, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(5):  # steps of 4 global sequences
        single = one.next_batches(4)
        split = [ranks[0].next_batches(4), ranks[1].next_batches(4)]
        assert [b.index for b in single] == [b.index for pair in zip(*split) for b in pair]
        assert [b.ids for b in single] == [b.ids for pair in zip(*split) for b in pair]
    # resuming from the integer position gives the very same batches
    fresh = ShardDataset(tmp_path, token_budget=48, seed=7)
    fresh.load_state_dict(one.state_dict())
    assert one.state_dict() == {"position": 20}
    a, b = one.next_batches(3), fresh.next_batches(3)
    assert [x.ids for x in a] == [x.ids for x in b]
    assert all(torch.equal(x.packed.tokens, y.packed.tokens) for x, y in zip(a, b))
    other_seed = ShardDataset(tmp_path, token_budget=48, seed=8)
    assert other_seed.epoch_sequences(0) != one.epoch_sequences(0)
    with pytest.raises(KinemaError, match="split evenly"):
        ranks[0].next_batches(3)


def test_world_stream_packs_clips_and_images_within_the_budget():
    vae = tiny_vae()
    kw = dict(min_side=32, max_side=64, min_seconds=0.5, max_seconds=1.5, fps_choices=(8.0,), image_prob=0.5,
              clips=12, seed=1)  # fmt: skip
    stream = WorldStream(vae, 64, **kw)
    batches = stream.next_batches(3)
    grids = [g for b in batches for g in b.packed.grids]
    assert any(g[0] == 1 for g in grids) and any(g[0] > 1 for g in grids)  # images and videos
    assert all(b.num_tokens <= 64 for b in batches)
    from kinema.world.text import caption

    assert all(c == caption(stream.plan(i)["spec"]) for b in batches for i, c in zip(b.ids, b.captions))
    # clip i depends only on (seed, i); the plan knows its tokens before rendering
    again = WorldStream(vae, 64, **kw).next_batches(3)
    assert [b.ids for b in again] == [b.ids for b in batches]
    assert torch.equal(again[0].packed.tokens, batches[0].packed.tokens)
    for b in batches:
        for i, g in zip(b.ids, b.packed.grids):
            assert stream.tokens(i) == g[0] * g[1] * g[2]


@pytest.mark.parametrize("bad, words", [(dict(fps_choices=(0.0,)), "world_fps"), (dict(fps_choices=()), "world_fps"),
                                        (dict(min_seconds=0.0), "world_min_seconds"),
                                        (dict(min_side=0), "world_min_side"), (dict(min_side=96, max_side=64), "world_max_side"),
                                        (dict(min_seconds=2.0, max_seconds=1.0), "world_min_seconds")])  # fmt: skip
def test_world_stream_rejects_frame_rates_and_durations_it_cannot_render(bad, words):
    # world_fps=0 divided by zero in the first batch's render
    with pytest.raises(KinemaError, match=words):
        WorldStream(tiny_vae(), 64, **bad)


def test_encode_options_reject_a_rate_that_keeps_no_frame():
    # --fps 0 skipped every clip and reported success
    for fps in (0.0, -8.0, float("nan"), float("inf")):
        with pytest.raises(KinemaError, match="fps must be a positive number"):
            EncodeOptions(fps=fps)


def test_world_stream_single_prob_gives_one_object_scenes_in_their_own_cache(tmp_path):
    from kinema.world.text import caption

    vae = tiny_vae()
    kw = dict(min_side=32, max_side=48, min_seconds=0.5, max_seconds=1.0, fps_choices=(8.0,), clips=6, seed=3)
    plain = WorldStream(vae, 64, cache_dir=tmp_path, **kw)
    single = WorldStream(vae, 64, cache_dir=tmp_path, single_prob=1.0, **kw)
    assert WorldStream(vae, 64, cache_dir=tmp_path, single_prob=0.0, **kw).cache_dir == plain.cache_dir
    assert single.cache_dir != plain.cache_dir  # another world: its latents never mix with the plain one's
    for i in range(6):
        spec = single.plan(i)["spec"]
        assert len(spec.objects) == 1 and spec.camera == "static" and spec.brush is None and not spec.occluder
        assert single.load(i)[1] == caption(spec)
        assert single.tokens(i) == plain.tokens(i)  # the same sizes and lengths
    with pytest.raises(KinemaError, match="single_prob"):
        WorldStream(vae, 64, single_prob=-0.1, **kw)


def test_world_stream_weighs_the_tokens_that_hold_things():
    from kinema.eval.judge import latent_cells, thing_mask
    from kinema.patches import patchify

    vae = tiny_vae()
    kw = dict(min_side=64, max_side=64, min_seconds=1.0, max_seconds=1.0, fps_choices=(8.0,), clips=4, seed=5,
              image_prob=0.0, pad=True)  # fmt: skip
    plain = WorldStream(vae, 256, **kw)
    heavy = WorldStream(vae, 256, thing_weight=5.0, **kw)
    assert plain.next_batches(1)[0].weights is None
    batch = heavy.next_batches(1)[0]
    w = batch.weights
    assert w.shape == (batch.packed.tokens.shape[1],) and set(w.unique().tolist()) <= {0.0, 1.0, 5.0}
    assert (w[~batch.packed.valid] == 0).all() and (w[batch.packed.valid] >= 1).all()
    f, s = vae.config.temporal_factor, vae.config.spatial_factor
    for i, start, grid in zip(batch.ids, batch.packed.cu_seqlens[:-1].tolist(), batch.packed.grids):
        from kinema.data.loader import render_planned

        frames, _ = render_planned(heavy.plan(i), f)
        cells = torch.from_numpy(latent_cells(thing_mask(frames), f, s)).float()
        want = 1 + 4 * patchify(cells[None], heavy.patch).amax(-1)  # a token is heavy if any of its cells is
        got = w[start : start + len(want)]
        assert torch.equal(got, want) and 0 < (got == 5).float().mean() < 0.7  # things are there, and small
    with pytest.raises(KinemaError, match="thing_weight"):
        WorldStream(vae, 256, thing_weight=0.0, **kw)


def test_prefill_encodes_the_same_world_in_worker_processes(tmp_path):
    vae = tiny_vae()
    kw = dict(min_side=32, max_side=48, min_seconds=0.5, max_seconds=1.0, fps_choices=(8.0,), clips=5, seed=4,
              image_prob=0.4)  # fmt: skip
    want = [WorldStream(vae, 64, cache=True, **kw).load(i) for i in range(5)]
    filled = WorldStream(vae, 64, cache_dir=tmp_path, **kw)
    assert filled.prefill(workers=2, progress=False) == 5
    assert len(list(filled.cache_dir.glob("clip-*.safetensors"))) == 5
    for i, (z, caption, _) in enumerate(want):
        got = WorldStream(vae, 64, cache_dir=tmp_path, **kw).load(i)  # read back from disk
        assert torch.allclose(got[0], z, atol=1e-6) and got[1] == caption
    assert filled.prefill(workers=2, progress=False) == 0  # nothing left to do
    with pytest.raises(KinemaError, match="fixed"):
        WorldStream(vae, 64, cache=True, **{**kw, "clips": None}).prefill(2)


def test_the_thing_cells_are_found_once_and_kept_in_the_world_cache(tmp_path, monkeypatch):
    """prefill's workers find each clip's thing cells while they render it, and the cache files
    keep them: a resumed run weighs its tokens without rendering a clip again."""
    import kinema.world.render as render
    from kinema.data.loader import render_planned, thing_cells

    vae = tiny_vae()
    f, s = vae.config.temporal_factor, vae.config.spatial_factor
    kw = dict(min_side=32, max_side=48, min_seconds=0.5, max_seconds=1.0, fps_choices=(8.0,), clips=4, seed=7,
              image_prob=0.3, thing_weight=3.0)  # fmt: skip
    filled = WorldStream(vae, 64, cache_dir=tmp_path, **kw)
    assert filled.prefill(workers=2, progress=False) == 4
    want = {i: thing_cells(render_planned(filled.plan(i), f)[0], f, s) for i in range(4)}
    assert all(filled._things[i].shape == want[i].shape and (filled._things[i] == want[i]).all() for i in range(4))
    assert any(c.any() for c in want.values())

    def no_render(*a, **k):
        raise AssertionError("a cached clip was rendered again")

    monkeypatch.setattr(render, "render", no_render)
    again = WorldStream(vae, 64, cache_dir=tmp_path, **kw)  # a resumed run: a new process, same folder
    for i in range(4):
        again.load(i)
        assert torch.equal(again.weights(i), 1 + 2 * torch.from_numpy(want[i]).float())


def test_world_cache_on_disk_serves_a_new_stream_the_same_latents(tmp_path, monkeypatch):
    vae = tiny_vae()
    kw = dict(min_side=32, max_side=48, min_seconds=0.5, max_seconds=1.0, fps_choices=(8.0,), clips=4, seed=2)
    first = WorldStream(vae, 64, cache_dir=tmp_path, **kw)
    want = [first.load(i) for i in range(4)]
    files = sorted(first.cache_dir.glob("clip-*.safetensors"))
    assert len(files) == 4 and first.cache_dir.parent == tmp_path

    import kinema.world.render as render

    def no_render(*a, **k):
        raise AssertionError("a cached clip was rendered again")

    monkeypatch.setattr(render, "render", no_render)
    again = WorldStream(vae, 64, cache_dir=tmp_path, **kw)  # a resumed run: a new process, same folder
    for i, (z, caption, _) in enumerate(want):
        got = again.load(i)
        assert torch.equal(got[0], z) and got[1] == caption
    # a file damaged from outside is encoded again (with a warning), not a crash
    monkeypatch.undo()
    files[1].write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        got = WorldStream(vae, 64, cache_dir=tmp_path, **kw).load(1)
    assert torch.equal(got[0], want[1][0]) and got[1] == want[1][1]
    assert torch.equal(WorldStream(vae, 64, cache_dir=tmp_path, **kw).load(1)[0], want[1][0])  # rewritten
    # another setting or other VAE weights: another folder, never the stale latents
    assert WorldStream(vae, 64, cache_dir=tmp_path, **{**kw, "seed": 3}).cache_dir != first.cache_dir
    other = tiny_vae()
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert WorldStream(other, 64, cache_dir=tmp_path, **kw).cache_dir != first.cache_dir
    with pytest.raises(KinemaError, match="fixed world"):
        WorldStream(vae, 64, cache_dir=tmp_path, **{**kw, "clips": None})


def test_weights_of_a_freshly_encoded_clip_do_not_render_it_again(monkeypatch):
    import kinema.data.loader as loader

    vae = tiny_vae()
    kw = dict(min_side=32, max_side=32, min_seconds=0.5, max_seconds=0.5, fps_choices=(8.0,), image_prob=0.0)
    calls = []
    real = loader.render_planned
    monkeypatch.setattr(loader, "render_planned", lambda *a: calls.append(1) or real(*a))
    for clips in (3, None):  # a fixed world and an endless stream
        calls.clear()
        stream = WorldStream(vae, 64, thing_weight=3.0, clips=clips, seed=6, **kw)
        batch = stream.next_batches(1)[0]
        assert len(calls) == len(batch.ids) and batch.weights is not None
    assert not stream._things  # the endless stream keeps no cells once they are read
