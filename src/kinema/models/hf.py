"""Reading Hugging Face style model folders (diffusers and transformers save_pretrained).

A folder holds config.json and its weights as one safetensors file or as shards listed in a
`*.safetensors.index.json` ({"weight_map": {name: shard file}}). Nothing here unpickles, and
nothing touches the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from kinema.errors import KinemaError

M = TypeVar("M", bound=torch.nn.Module)


def read_config(folder: str | os.PathLike, name: str = "config.json") -> dict:
    """The JSON object `name` in `folder`, or a KinemaError that names the file."""
    path = Path(folder) / name
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KinemaError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise KinemaError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise KinemaError(f"{path} is not a JSON object")
    return doc


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of a folder: the shards of its index file, or its one .safetensors file."""
    d = Path(folder)
    indexes = sorted(d.glob("*.safetensors.index.json"))
    if indexes:
        index = read_config(d, indexes[0].name)
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards:
            raise KinemaError(f"{indexes[0]} lists no weights")
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise KinemaError(f"{indexes[0]} names shards that are missing: {', '.join(missing)}")
        return [d / s for s in shards]
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise KinemaError(f"no safetensors weights in {d} (pickled .bin or .pt files are not read)")
    if len(files) > 1:
        raise KinemaError(f"{d} holds several safetensors files and no index: {', '.join(f.name for f in files)}")
    return files


def load_state(folder: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> dict[str, Tensor]:  # fmt: skip
    """Every tensor of a folder's safetensors weights (all shards), cast to dtype if given."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for f in weight_files(folder):
        try:
            part = load_file(str(f), device=str(device))
        except (SafetensorError, OSError) as e:
            raise KinemaError(f"cannot read the weights {f}: {e}") from None
        for k, v in part.items():
            state[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return state


# safetensors dtype names -> torch dtypes
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


class LazyState:
    """A folder's safetensors weights read one tensor at a time, as they are taken: a converter
    that pops each tensor, turns it into its own and drops it holds the model once, not twice.

    Tensors are read with plain file reads into fresh memory, not mapped from the file: a tensor
    made from a memory map keeps the file's pages resident for as long as any other tensor of the
    same file lives, so converted weights (q, k, v fused into one) would be held twice.
    Supports `name in state`, `state.pop(name)` (reads it), `len(state)` and iteration over the
    names not taken yet; `dtype` casts each floating tensor as it is read."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None):  # fmt: skip
        self.device, self.dtype = torch.device(device), dtype
        self.where: dict[str, tuple[Path, int, int, torch.dtype, list[int]]] = {}
        for f in weight_files(folder):
            try:
                with open(f, "rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(n))
                for name, info in header.items():
                    if name != "__metadata__":
                        start, end = info["data_offsets"]
                        self.where[name] = (f, 8 + n + start, end - start, SAFETENSORS_DTYPES[info["dtype"]],
                                            list(info["shape"]))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise KinemaError(f"cannot read the weights {f}: not a safetensors file ({e})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.where

    def __len__(self) -> int:
        return len(self.where)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.where))

    def pop(self, name: str) -> torch.Tensor:
        path, offset, size, dtype, shape = self.where.pop(name)
        raw = torch.empty(size, dtype=torch.uint8)
        with open(path, "rb") as fh:
            fh.seek(offset)
            if fh.readinto(raw.numpy()) != size:
                raise KinemaError(f"{path} is truncated: {name} is cut short")
        v = raw.view(dtype).reshape(shape)
        if self.dtype is not None and v.is_floating_point():
            v = v.to(self.dtype)
        return v.to(self.device)


def assign_weights(model: M, state: Mapping[str, Tensor], mismatch: str) -> M:
    """`model`, built on the meta device (nothing allocated, nothing initialised), takes the tensors
    of `state` as its own: every weight, and nothing it lacks. A mismatch is a KinemaError that
    begins with `mismatch` (what failed to fit what) and names the offending keys."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise KinemaError(f"{mismatch}: {e}") from None
    return model


def release_freed_memory() -> None:
    """Hand the memory freed by a load's temporaries back to the system (glibc's malloc_trim):
    glibc keeps freed heap blocks for reuse, so without it a loader's transient copies stay in
    the process's resident size. A no-op where glibc is not the allocator."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
