"""What every training run shares: processes, checkpoints, EMA and logging.

One process on a CPU and `torchrun --nproc_per_node N` run the same code: `init_distributed`
reads torchrun's environment and falls back to a single process without a process group.

Checkpoints are folders `step-000100/` under the run folder, written by
torch.distributed.checkpoint (each rank writes its own shards) into `step-000100.tmp/` and
renamed when every rank is done, so a crash never leaves a half checkpoint that looks whole.
Each rank's RNG state sits beside the shards as safetensors; `latest` names the newest step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from kinema.errors import KinemaError


# ---------------------------------------------------------------- precision

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_native() -> bool:
    """Whether this machine computes bfloat16 in hardware: a CUDA GPU, or a CPU with AVX-512 BF16
    or AMX (where bfloat16 matmuls run about 3.8x faster than float32 ones; elsewhere the CPU
    emulates them, slower than float32)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """"auto" -> "bf16" where the hardware computes it natively, else "fp32"; others as they are."""
    if precision not in PRECISIONS:
        raise KinemaError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_native() else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The forward's context: bfloat16 autocast for "bf16" (weights, optimizer state, gradients
    and the loss stay float32; autocast keeps norms, softmax and reductions in float32), none
    for "fp32". A run that resolved "auto" to bf16 on one machine keeps it when resumed on
    another; on a CPU that only emulates bfloat16 this warns, since it is much slower there."""
    if precision == "bf16":
        if device.type == "cpu" and not bf16_native():
            warnings.warn("bf16 on a CPU without native bfloat16 (no AVX-512 BF16 or AMX): PyTorch emulates it, and "
                          "3D convolutions take a slow path (a VAE forward measured about 90x slower than float32 on an "
                          "AVX2 CPU); fp32 trains faster here (a resumed run changes it with --override precision)",
                          stacklevel=2)
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- processes

@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> Dist:
    """Join torchrun's process group when there is one (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, dev)


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is left alone)."""
    value = value.detach().clone()
    if d.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= d.world_size
    return value


def shutdown(d: Dist) -> None:
    if d.distributed and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- RNG

def rng_state(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Every random state a step uses: torch's global CPU (and CUDA) state and named generators."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    for name, g in generators.items():
        state[f"gen.{name}"] = g.get_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[f"gen.{name}"])


# ---------------------------------------------------------------- checkpoints

def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under a run folder, or None."""
    marker = Path(root) / "latest"
    if not marker.exists():
        return None
    path = Path(root) / marker.read_text().strip()
    return path if path.is_dir() else None


def save_checkpoint(
    root: Path,
    step: int,
    state: dict,
    meta: dict,
    d: Dist,
    generators: dict[str, torch.Generator] | None = None,
    keep: int = 2,
) -> Path:
    """Write `state` (model / optimizer / EMA state dicts, sharded or not) as checkpoint `step`.

    `meta` (JSON: step, data position, config) is written by rank 0. Older checkpoints beyond
    `keep` are removed once the new one is complete.
    """
    import torch.distributed.checkpoint as dcp

    root = Path(root)
    final = _step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    with warnings.catch_warnings():  # one process: DCP warns that it assumes one process
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(tmp), no_dist=not d.distributed)
    save_file(rng_state(generators or {}), str(tmp / f"rng-rank{d.rank}.safetensors"))
    barrier(d)
    if d.is_main:
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "world_size": d.world_size}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        marker_tmp = root / "latest.tmp"
        marker_tmp.write_text(final.name)
        os.replace(marker_tmp, root / "latest")
        old = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
        for p in old[:-keep] if keep > 0 else []:
            shutil.rmtree(p, ignore_errors=True)
    barrier(d)
    return final


def load_checkpoint(
    path: Path,
    state: dict,
    d: Dist,
    generators: dict[str, torch.Generator] | None = None,
) -> dict:
    """Load a checkpoint into `state` in place (and the RNG states); return its meta."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise KinemaError(f"{path} is not a complete checkpoint (no meta.json)")
    meta = json.loads(meta_file.read_text())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.load(state, checkpoint_id=str(path), no_dist=not d.distributed)
        except dcp.api.CheckpointException as e:  # a BaseException; each rank's error inside
            why = "; ".join(str(exc).splitlines()[0] for exc, _ in e.failures.values())
            raise KinemaError(f"cannot load the checkpoint {path} into the model these settings build ({why}); "
                              "a resume cannot change the model's shapes: use a new run folder") from None
    rng_file = path / f"rng-rank{d.rank}.safetensors"
    if meta.get("world_size") == d.world_size and rng_file.exists():
        set_rng_state(load_file(str(rng_file)), generators or {})
    return meta


def train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: "EMA",
                trainable_only: bool = False) -> dict:  # fmt: skip
    """Model, optimizer and EMA state to save or to load into in place. Works on FSDP2 shards;
    an optimizer that has not stepped yet gets its moments created, so loading fills them.
    trainable_only: leave out frozen parameters (a LoRA run's base, read from its files instead)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(ignore_frozen_params=trainable_only)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optim": optim_state, "ema": ema.state_dict()}


def apply_train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                      trainable_only: bool = False) -> None:  # fmt: skip
    """Put a loaded `train_state` back into the model and optimizer (EMA loads in place)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    options = StateDictOptions(strict=not trainable_only)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=options)


# ---------------------------------------------------------------- resuming

def check_resume(run: Path, saved: dict | None, wanted: dict, override=(), free=()) -> None:
    """Refuse to resume a run with settings other than those it was trained with.

    `saved` is the config of a run that has a checkpoint (None: a new run, or one that stopped
    before its first checkpoint, which starts over with any settings); `wanted` is the config the
    command asks for. Both are dicts of the same config class (its `to_dict()`), so 3e-4 and
    0.0003, tuples and lists, compare equal. Keys in `free` (how long and how often the run
    goes) and those named by `--override KEY` may differ; any other difference is an error that
    names each key with both values. An override that names no key of the config is an error.
    """
    override = [k.replace("-", "_") for k in override]
    unknown = [k for k in override if k not in wanted]
    if unknown:
        raise KinemaError(f"--override {unknown[0]}: not a setting of this run; known: {', '.join(wanted)}")
    if saved is None:
        return
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(wanted))
    changed = [k for k in wanted if wanted[k] != saved.get(k) and k not in free and k not in override]
    if changed:
        diffs = ", ".join(f"{k} from {json.dumps(saved.get(k))} to {json.dumps(wanted[k])}" for k in changed)
        flags = " ".join(f"--override {k}" for k in changed)
        raise KinemaError(f"{run} has a checkpoint, so it resumes with the settings it was trained with, but this "
                          f"command changes {diffs}. Pass --override KEY to change it on resume (here: {flags}), "
                          "or use a new run folder")  # fmt: skip


# ---------------------------------------------------------------- EMA

class EMA:
    """Exponential moving average of a model's trained parameters (works on FSDP2 shards too);
    frozen ones (a frozen encoder, a LoRA run's base) are not copied and stay as they are."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def decay_at(self, step: int | None) -> float:
        """The decay after `step` optimizer steps: min(decay, (1 + step) / (10 + step)), so the
        average forgets the random initialisation within the first few hundred steps; a plain
        0.999 would keep ~60% of it at step 500. None: the plain decay."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        params = dict(model.named_parameters())
        names = list(self.shadow)
        weight = 1 - self.decay_at(step)
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n, v in state.items():
            self.shadow[n].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n])


# ---------------------------------------------------------------- logging

class Logger:
    """TensorBoard scalars and a progress bar on rank 0; silent elsewhere."""

    def __init__(self, run_dir: Path, d: Dist, total: int, initial: int = 0, desc: str = "train"):
        self.enabled = d.is_main
        self.writer = None
        self.bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:  # tensorboard is optional
                self.writer = None
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items()}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
