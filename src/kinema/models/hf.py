"""Reading Hugging Face style model folders (diffusers and transformers save_pretrained).

A folder holds config.json and its weights as one safetensors file or as shards listed in a
`*.safetensors.index.json` ({"weight_map": {name: shard file}}). Nothing here unpickles, and
nothing touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from kinema.errors import KinemaError


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
