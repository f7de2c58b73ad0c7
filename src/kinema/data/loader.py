"""Packed training batches from the latent cache (`ShardDataset`) or from Kinema World rendered on
the fly (`WorldStream`): the same `Batch`es, the same order rules.

    data = ShardDataset("latents/", token_budget=4096, seed=0, rank=r, world_size=W)
    for batch in data.next_batches(8):          # this rank's share of the next 8 global sequences
        batch.packed, batch.captions            # Packed (1, L <= 4096, D), one caption a sample

Order. Epoch e shuffles the samples with a generator seeded by (seed, e), cuts the order into
windows of `window` samples, packs each window into sequences of at most `token_budget` tokens
(`pack_by_budget`), then shuffles the sequences (seeded by (seed, e) too). Concatenating the
epochs numbers every sequence with a global index g = 0, 1, 2, ...; the order depends only on
(seed, the data, budget, window), never on the number of ranks.

Ranks. A training step takes the next G sequences, g in [p, p + G); rank r gets those with
g = r (mod W). One process (W = 1) gets all G, so a 1-process run and a W-rank run see the same
samples at every step. The state is one integer, `position` = p, the number of global
sequences handed out, saved in a checkpoint and restored with `load_state_dict`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kinema.errors import KinemaError
from kinema.patches import DEFAULT_PATCH, Packed, Patch, num_tokens, pack, pack_by_budget, patchify


@dataclass
class Batch:
    """One packed sequence: the unit of a micro-batch.

    packed:   the latents, packed (tokens (1, L, D), positions, doc ids, grids)
    captions: one caption a sample
    text:     precomputed caption embeddings [(L_i, D)] one a sample (frozen external text
              encoder), or None (the captions are encoded during training)
    ids:      the sample ids (index into the dataset, or the world clip number)
    index:    the global sequence index g (seeds this sequence's noise and timesteps)
    weights:  (L,) float loss weight of each token, or None (all 1); see `WorldStream`
    """

    packed: Packed
    captions: list[str]
    text: list[Tensor] | None
    ids: list[int]
    index: int
    weights: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """Real tokens (padding excluded)."""
        return int(self.packed.cu_seqlens[-1])


def seeded(*key: int | str) -> torch.Generator:
    """A CPU generator seeded by a hash of `key`: independent streams for (seed, epoch), (seed, g)..."""
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


class PackedSequences:
    """The order, packing and rank split shared by every source (see the module docstring).

    A source defines `epoch_ids(epoch)` (the samples of an epoch, in order), `tokens(i)` (the
    token count of sample i) and `load(i)` -> (latent (C, T, H, W), caption, text or None).
    """

    def __init__(
        self,
        token_budget: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        patch: Patch = DEFAULT_PATCH,
        window: int = 256,
        pad: bool = False,
    ):
        if token_budget < 1:
            raise KinemaError(f"token_budget must be positive; got {token_budget}")
        if not 0 <= rank < world_size:
            raise KinemaError(f"rank {rank} is not in [0, world_size = {world_size})")
        if window < 1:
            raise KinemaError(f"window must be >= 1; got {window}")
        self.token_budget = int(token_budget)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.patch = tuple(patch)
        self.window = int(window)
        self.pad = bool(pad)
        self.position = 0
        self._starts = [0]  # global index of the first sequence of epochs 0, 1, ...
        self._epochs: OrderedDict[int, list[list[int]]] = OrderedDict()

    # ------------------------------------------------------------ the source

    def epoch_ids(self, epoch: int) -> list[int]:
        raise NotImplementedError

    def tokens(self, i: int) -> int:
        raise NotImplementedError

    def load(self, i: int) -> tuple[Tensor, str, Tensor | None]:
        raise NotImplementedError

    def weights(self, i: int) -> Tensor | None:
        """Per-cell loss weights (T, H, W) of sample i's latent, or None (all 1)."""
        return None

    # ------------------------------------------------------------ order

    def epoch_sequences(self, epoch: int) -> list[list[int]]:
        """The sequences of an epoch, each a list of sample ids, in training order."""
        if epoch in self._epochs:
            self._epochs.move_to_end(epoch)
            return self._epochs[epoch]
        ids = [i for i in self.epoch_ids(epoch) if self.tokens(i) <= self.token_budget]
        seqs = []
        for w in range(0, len(ids), self.window):
            chunk = ids[w : w + self.window]
            for group in pack_by_budget([self.tokens(i) for i in chunk], self.token_budget):
                seqs.append([chunk[j] for j in group])
        order = torch.randperm(len(seqs), generator=seeded(self.seed, epoch, "sequences")).tolist()
        seqs = [seqs[j] for j in order]
        self._epochs[epoch] = seqs
        while len(self._epochs) > 2:
            self._epochs.popitem(last=False)
        return seqs

    def locate(self, g: int) -> tuple[int, int]:
        """(epoch, index in the epoch) of global sequence g."""
        if g < 0:
            raise KinemaError(f"sequence index must be >= 0; got {g}")
        while self._starts[-1] <= g:
            e = len(self._starts) - 1
            n = len(self.epoch_sequences(e))
            if n == 0:
                raise KinemaError(f"no sample fits the token budget {self.token_budget}; raise it or crop the data")
            self._starts.append(self._starts[-1] + n)
        e = bisect.bisect_right(self._starts, g) - 1
        return e, g - self._starts[e]

    def sequence(self, g: int) -> Batch:
        """Load and pack global sequence g."""
        e, j = self.locate(g)
        ids = self.epoch_sequences(e)[j]
        latents, captions, texts = [], [], []
        for i in ids:
            z, caption, text = self.load(i)
            latents.append(z)
            captions.append(caption)
            texts.append(text)
        packed = pack(latents, self.patch, pad_to=self.token_budget if self.pad else None)
        text = None if any(t is None for t in texts) else texts
        maps = [self.weights(i) for i in ids]
        weights = None
        if any(m is not None for m in maps):
            cells = [torch.ones(z.shape[1:]) if m is None else m for z, m in zip(latents, maps, strict=True)]
            weights = torch.zeros(packed.tokens.shape[1])  # padding: 0
            per = torch.cat([patchify(m[None].float(), self.patch).amax(-1) for m in cells])  # a token: its heaviest cell
            weights[: len(per)] = per
        return Batch(packed, captions, text, list(ids), g, weights)

    # ------------------------------------------------------------ this rank's batches

    def next_batches(self, count: int) -> list[Batch]:
        """This rank's share of the next `count` global sequences (count / world_size of them)."""
        if count % self.world_size:
            raise KinemaError(f"{count} sequences a step do not split evenly over {self.world_size} ranks")
        start, self.position = self.position, self.position + count
        return [self.sequence(g) for g in range(start + self.rank, start + count, self.world_size)]

    def __iter__(self) -> Iterator[Batch]:
        """One batch of this rank per round of world_size global sequences, endlessly."""
        while True:
            yield from self.next_batches(self.world_size)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


# ---------------------------------------------------------------- the latent cache


class ShardDataset(PackedSequences):
    """Clips encoded by `kinema data encode` (see kinema.data.cache), packed by token budget.

    Samples larger than the budget are left out, with a warning; `skipped` lists them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        token_budget: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        patch: Patch = DEFAULT_PATCH,
        window: int = 256,
        pad: bool = False,
    ):
        from kinema.data.cache import INDEX

        super().__init__(token_budget, seed, rank, world_size, patch, window, pad)
        self.root = Path(root)
        index_file = self.root / INDEX
        if not index_file.is_file():
            raise KinemaError(
                f"no latent cache in {self.root} (no {INDEX}); make one with "
                f"`kinema data encode --manifest M --vae V --out {self.root}`"
            )
        index = json.loads(index_file.read_text())
        self.settings: dict = index.get("settings", {})
        self.items: list[dict] = [{**item, "file": s["file"]} for s in index["shards"] for item in s["items"]]
        if not self.items:
            raise KinemaError(f"the latent cache in {self.root} holds no clips")
        try:
            self._tokens = [num_tokens(item["latent"], self.patch) for item in self.items]
        except KinemaError as e:
            raise KinemaError(f"{self.root}: a cached latent does not fit patch {self.patch}: {e}") from None
        self.skipped = [i for i, n in enumerate(self._tokens) if n > self.token_budget]
        if self.skipped:
            warnings.warn(
                f"{len(self.skipped)} of {len(self.items)} cached clips have more tokens than the budget "
                f"{self.token_budget} (largest {max(self._tokens)}) and are left out; raise the budget or "
                "re-encode with --max-size / --max-frames",
                stacklevel=2,
            )
        self._files: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def captions(self) -> list[str]:
        return [item.get("caption", "") for item in self.items]

    @property
    def text_dim(self) -> int | None:
        """Width of the stored caption embeddings, or None when only captions are stored."""
        return self.settings.get("text_dim") if self.settings.get("embeddings") else None

    @property
    def text_pad_to(self) -> int | None:
        """The length stored embeddings are padded back to with attended zeros (Wan's umT5), or None."""
        return self.settings.get("text_pad_to")

    def null_text(self) -> Tensor:
        """The empty caption's embedding (L, D), for caption dropout with stored embeddings."""
        from safetensors.torch import load_file

        from kinema.data.cache import NULL_TEXT

        path = self.root / NULL_TEXT
        if not path.is_file():
            raise KinemaError(f"{self.root} has no {NULL_TEXT}: it was encoded without a frozen text encoder")
        return load_file(str(path))["text"].float()

    def epoch_ids(self, epoch: int) -> list[int]:
        return torch.randperm(len(self.items), generator=seeded(self.seed, epoch, "samples")).tolist()

    def tokens(self, i: int) -> int:
        return self._tokens[i]

    def load(self, i: int) -> tuple[Tensor, str, Tensor | None]:
        from safetensors import safe_open

        item = self.items[i]
        f = self._files.get(item["file"])
        if f is None:
            f = self._files[item["file"]] = safe_open(str(self.root / item["file"]), framework="pt")
        latent = f.get_tensor(item["key"]).float()
        text = f.get_tensor(item["text"]).float() if item.get("text") else None
        return latent, item.get("caption", ""), text


# ---------------------------------------------------------------- Kinema World on the fly


CROPS = ("native", "square")


def world_captions(count: int = 300, seed: int = 0) -> list[str]:
    """Captions and short prompts of `count` random world scenes: enough text for the vocabulary
    of a builtin text encoder trained on Kinema World (the grammar's words saturate by ~100)."""
    from kinema.world import text
    from kinema.world.render import random_spec

    out = []
    for i in range(count):
        spec = random_spec(np.random.default_rng([seed, i, 7]))
        out += [text.caption(spec), text.short_prompt(spec)]
    return out


class WorldStream(PackedSequences):
    """Kinema World clips rendered, VAE-encoded and packed on the fly: the same batches as
    `ShardDataset`, without a cache.

    Clip i depends only on (seed, i): scene, size, duration and fps from `clip_plan`, and with
    probability `image_prob` it is a single frame (an image) picked from the clip. Frames are
    trimmed to 1 + 4k and cut further so that a clip fits the token budget.

    clips = None (endless): epoch e is clips [e epoch_size, (e + 1) epoch_size), new clips every
    epoch, so the stream never repeats. clips = N: a fixed world of N clips, reshuffled every
    epoch like a ShardDataset; `cache` then keeps their latents in memory after the first use,
    and `cache_dir` on disk too (one safetensors file a clip, under a subfolder named by a
    fingerprint of the VAE weights and every setting that shapes a clip), so that a resumed run
    does not encode its world again. Rendering and encoding run in this process, on the VAE's
    device. single_prob: the share of plain one-object scenes (`clip_plan`); thing_weight: the
    loss weight of the latent cells that hold an object or a brush stroke (`weights`).
    crop: "native" keeps each clip's own size and aspect ratio; "square" renders it at that size
    and keeps the centre square of its shorter side, as trainers that crop every clip to a
    square do (what falls outside is lost, though the caption still names it).
    """

    def __init__(
        self,
        vae,
        token_budget: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        patch: Patch = DEFAULT_PATCH,
        window: int = 64,
        pad: bool = False,
        min_side: int = 64,
        max_side: int = 128,
        min_seconds: float = 0.5,
        max_seconds: float = 2.0,
        fps_choices: Sequence[float] = (8.0, 12.0),
        max_frames: int | None = None,
        image_prob: float = 0.2,
        epoch_size: int = 1024,
        clips: int | None = None,
        cache: bool = False,
        cache_dir: str | os.PathLike | None = None,
        single_prob: float = 0.0,
        thing_weight: float = 1.0,
        crop: str = "native",
    ):
        super().__init__(token_budget, seed, rank, world_size, patch, window, pad)
        if crop not in CROPS:
            raise KinemaError(f"crop must be one of {', '.join(CROPS)}; got {crop!r}")
        self.crop = crop
        if not 0 <= image_prob <= 1:
            raise KinemaError(f"image_prob must be in [0, 1]; got {image_prob}")
        if not 0 <= single_prob <= 1:
            raise KinemaError(f"single_prob must be in [0, 1]; got {single_prob}")
        if not thing_weight > 0:
            raise KinemaError(f"thing_weight must be positive; got {thing_weight}")
        self.thing_weight = float(thing_weight)
        self._things: dict[int, np.ndarray] = {}  # clip -> its latent cells that hold a thing
        if epoch_size < 1 or (clips is not None and clips < 1):
            raise KinemaError(f"epoch_size and clips must be >= 1; got {epoch_size}, {clips}")
        if not (fps_choices and all(0 < f < float("inf") for f in fps_choices)):
            raise KinemaError(f"the world's frame rates (world_fps) must be positive numbers; got {tuple(fps_choices)}")
        if not 0 < min_side <= max_side:
            raise KinemaError(f"the world's sizes need 0 < world_min_side <= world_max_side; got {min_side}, {max_side}")
        if not 0 < min_seconds <= max_seconds < float("inf"):
            raise KinemaError(f"the world's durations need 0 < world_min_seconds <= world_max_seconds; "
                              f"got {min_seconds}, {max_seconds}")  # fmt: skip
        self.vae = vae
        self.knobs = dict(min_side=int(min_side), max_side=int(max_side), min_seconds=float(min_seconds),
                          max_seconds=float(max_seconds), fps_choices=tuple(float(f) for f in fps_choices))  # fmt: skip
        if single_prob > 0:  # only then: the fingerprint of a cache made without it stays
            self.knobs["single_prob"] = float(single_prob)
        self.max_frames = max_frames
        self.image_prob = float(image_prob)
        self.epoch_size = int(epoch_size)
        self.clips = clips
        self.cache: dict[int, tuple[Tensor, str, None]] | None = {} if cache or cache_dir is not None else None
        self._plans: OrderedDict[int, dict] = OrderedDict()
        self.plan(0)  # check the knobs now
        self.cache_dir = None
        if cache_dir is not None:
            if clips is None:
                raise KinemaError("a world cache on disk needs a fixed world (clips = N)")
            self.cache_dir = Path(cache_dir) / self._fingerprint()
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _fingerprint(self) -> str:
        """A short hash of what a clip's latent depends on: the VAE's weights and the clip settings."""
        h = hashlib.sha1()
        for name, p in sorted(self.vae.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        settings = dict(self.knobs, seed=self.seed, token_budget=self.token_budget, patch=list(self.patch),
                        max_frames=self.max_frames, image_prob=self.image_prob)  # fmt: skip
        if self.crop != "native":  # only then: the fingerprint of a cache made without it stays
            settings["crop"] = self.crop
        h.update(json.dumps(settings, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def _cached_file(self, i: int) -> Path:
        return self.cache_dir / f"clip-{i:07d}.safetensors"

    def plan(self, i: int) -> dict:
        """Clip i: clip_plan's spec, size, fps and seed, plus frames, image frame and tokens."""
        from kinema.world.dataset import clip_plan

        if i in self._plans:
            return self._plans[i]
        p = clip_plan(i, seed=self.seed, **self.knobs)
        if self.crop == "square":  # rendered at its own size, then cut to the centre square
            p["native"] = (p["width"], p["height"])
            p["width"] = p["height"] = min(p["width"], p["height"])
        cfg = self.vae.config
        f, s = cfg.temporal_factor, cfg.spatial_factor
        n = max(1, round(p["seconds"] * p["fps"]))
        if self.max_frames is not None:
            n = min(n, self.max_frames)
        rng = np.random.default_rng([self.seed, i, 1])
        image_frame = int(rng.integers(n)) if rng.random() < self.image_prob else None
        per_frame = num_tokens((1, p["height"] // s, p["width"] // s), self.patch)  # tokens a latent frame
        fit = max(0, self.token_budget // per_frame)  # latent frames that fit the budget
        latent_frames = 1 if image_frame is not None else min(1 + (n - 1) // f, fit)
        p.update(frames=n, image_frame=image_frame, latent_frames=latent_frames,
                 tokens=per_frame * max(latent_frames, 1) if fit else self.token_budget + 1)  # fmt: skip
        self._plans[i] = p
        while len(self._plans) > 2 * (self.clips or self.epoch_size):  # the plans of about two epochs
            self._plans.popitem(last=False)
        return p

    def epoch_ids(self, epoch: int) -> list[int]:
        if self.clips is not None:
            return torch.randperm(self.clips, generator=seeded(self.seed, epoch, "samples")).tolist()
        return list(range(epoch * self.epoch_size, (epoch + 1) * self.epoch_size))

    def tokens(self, i: int) -> int:
        return self.plan(i)["tokens"]

    def load(self, i: int) -> tuple[Tensor, str, Tensor | None]:
        from kinema.data.cache import encode_frames

        if self.cache is not None and i in self.cache:
            return self.cache[i]
        if self.cache_dir is not None and self._cached_file(i).is_file():
            from safetensors import safe_open

            try:
                with safe_open(str(self._cached_file(i)), "pt") as fh:
                    out = (fh.get_tensor("latent"), fh.metadata()["caption"], None)
                    cells = fh.get_tensor("things").bool().numpy() if "things" in fh.keys() else None
            except Exception as e:  # damaged from outside (files are written whole): make it again
                warnings.warn(f"{self._cached_file(i)} is unreadable ({e}); encoding the clip again", stacklevel=2)
            else:
                self.cache[i] = out
                if cells is not None and self.thing_weight != 1:
                    self._things[i] = cells
                return out
        frames, caption = render_planned(self.plan(i), self.vae.config.temporal_factor)
        # while the frames are here: `weights` need not render them again
        cells = self._thing_cells(frames) if self.thing_weight != 1 else None
        return self._keep(i, (encode_frames(self.vae, torch.from_numpy(frames)), caption, None), cells)

    def weights(self, i: int) -> Tensor | None:
        """With thing_weight w != 1: w on the latent cells that hold an object, a piece of one or a
        brush stroke (`judge.thing_mask`, exact on renders), 1 elsewhere. Such things cover a few
        per cent of the pixels, so the plain loss is nearly all sky and ground; a small model
        learns the background first and the things its caption names last. The cells come from
        the clip's render (not the VAE; noted by `load` or `prefill` when they render) and, in a fixed world,
        are kept in memory (and in the clip's cache file, so a resumed run reads them too)."""
        if self.thing_weight == 1:
            return None
        # an endless stream never comes back to a clip: its cells are dropped once read
        cells = self._things.get(i) if self.clips is not None else self._things.pop(i, None)
        if cells is None:  # a clip whose latent came from the cache
            cells = self._thing_cells(render_planned(self.plan(i), self.vae.config.temporal_factor)[0])
            if self.clips is not None:
                self._things[i] = cells
        return 1 + (self.thing_weight - 1) * torch.from_numpy(cells).float()

    def _thing_cells(self, frames: np.ndarray) -> np.ndarray:
        return thing_cells(frames, self.vae.config.temporal_factor, self.vae.config.spatial_factor)

    def _keep(self, i: int, out: tuple[Tensor, str, None], cells: np.ndarray | None = None) -> tuple[Tensor, str, None]:
        if self.cache is not None:
            self.cache[i] = out
        if cells is not None:
            self._things[i] = cells
        if self.cache_dir is not None:  # written whole, then renamed: a killed run leaves no half file
            from safetensors.torch import save_file

            tensors = {"latent": out[0].contiguous()}
            if cells is not None:
                tensors["things"] = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.uint8))
            tmp = self._cached_file(i).with_suffix(f".tmp{os.getpid()}")
            save_file(tensors, str(tmp), metadata={"caption": out[1]})
            os.replace(tmp, self._cached_file(i))
        return out

    def prefill(self, workers: int, progress: bool = True) -> int:
        """Encode every clip of a fixed world not yet cached, `workers` processes rendering ahead
        of the encoder (which stays in this process, on the VAE's device); returns how many."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from tqdm import tqdm

        from kinema.data.cache import encode_frames

        if self.clips is None or self.cache is None:
            raise KinemaError("prefill needs a fixed, cached world (clips = N with a cache)")
        todo = [i for i in range(self.clips) if i not in self.cache
                and not (self.cache_dir is not None and self._cached_file(i).is_file())]  # fmt: skip
        if not todo:
            return 0
        f, s = self.vae.config.temporal_factor, self.vae.config.spatial_factor
        spatial = s if self.thing_weight != 1 else None  # the children find the thing cells too
        # fork: the children only render (numpy), they never touch the parent's GPU context
        with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("fork")) as pool:
            n = len(todo)
            rendered = pool.map(_render_for_cache, [self.plan(i) for i in todo], [f] * n, [spatial] * n, chunksize=4)
            for i, (frames, caption, cells) in tqdm(zip(todo, rendered), total=n, desc="encode world",
                                                    disable=not progress):  # fmt: skip
                self._keep(i, (encode_frames(self.vae, torch.from_numpy(frames)), caption, None), cells)
        return len(todo)


def render_planned(p: dict, temporal_factor: int) -> tuple[np.ndarray, str]:
    """The frames (n, H, W, 3) uint8 and caption of a planned world clip: one frame for an image,
    else 1 + temporal_factor (latent_frames - 1) frames. A plan with "native" (W, H) is rendered
    at that size and its centre (width x height) cut out."""
    from kinema.world.render import render

    W, H = p.get("native", (p["width"], p["height"]))
    n = p["image_frame"] + 1 if p["image_frame"] is not None else 1 + temporal_factor * (p["latent_frames"] - 1)
    clip = render(p["spec"], W, H, n / p["fps"], p["fps"], p["seed"], frames=n)
    frames = clip.frames[-1:] if p["image_frame"] is not None else clip.frames
    if (W, H) != (p["width"], p["height"]):
        x0, y0 = (W - p["width"]) // 2, (H - p["height"]) // 2
        frames = np.ascontiguousarray(frames[:, y0 : y0 + p["height"], x0 : x0 + p["width"]])
    return frames, clip.caption


def _render_for_cache(p: dict, temporal_factor: int, spatial_factor: int | None) -> tuple:
    """`prefill`'s work in a child process: `render_planned`'s frames and caption, and with
    spatial_factor the clip's `thing_cells` (else None), found while the frames are at hand."""
    frames, caption = render_planned(p, temporal_factor)
    cells = None if spatial_factor is None else thing_cells(frames, temporal_factor, spatial_factor)
    return frames, caption, cells


def thing_cells(frames: np.ndarray, temporal_factor: int, spatial_factor: int) -> np.ndarray:
    """(T', H', W') bool: the latent cells of a render that hold an object, a piece of one or a
    brush stroke (`judge.thing_mask`, exact on renders)."""
    from kinema.eval.judge import latent_cells, thing_mask

    return latent_cells(thing_mask(frames), temporal_factor, spatial_factor)
