"""`kinema plan`: tokens, the memory terms, and the estimate against what autograd saves, a CPU
process's peak resident memory and (when there is one) a GPU's allocator."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kinema.dit import DiT, DiTConfig
from kinema.errors import KinemaError
from kinema.plan import (
    GIB,
    block_bytes,
    block_elements,
    config_spec,
    fitting_degree,
    longest_seconds,
    model_spec,
    outside_bytes,
    outside_elements,
    plan,
)

from cli_helpers import run_cli

WAN_LAYOUT = dict(mlp="gelu", qk_norm="across", cross_gate=False, final_mod="table", pooled_text=False, text_norm=False)
STATE = ("weights", "AdamW", "EMA")  # exist before a step: the measured growth is on top of them


def row(p: dict, prefix: str) -> float:
    return next(r["gib"] for r in p["rows"] if r["term"].startswith(prefix))


def step_gib(p: dict) -> float:
    """What one training step adds to the memory: every term in the peak but the standing state."""
    return sum(r["gib"] for r in p["rows"] if r["in_peak"] and not r["term"].startswith(STATE))


def grid_plan(cfg: DiTConfig, grid: tuple[int, int, int], **kw) -> dict:
    """The plan of one sample whose token grid is (T, h, w) (16-pixel cells, 1 + 4 (T - 1) frames)."""
    T, h, w = grid
    p = plan(config_spec(cfg), 16 * w, 16 * h, seconds=1 + 4 * (T - 1), fps=1, **kw)
    assert p["grid"] == grid
    return p


# ---------------------------------------------------------------- tokens and terms


def test_one_minute_of_1080p_is_three_million_tokens():
    p = plan("wan2.1-14b", 1920, 1080, seconds=60, fps=24, gpus=64, sequence_parallel=8)
    assert p["frames"] == 1440 and p["grid"] == (360, 68, 120)  # 1080 / 16 = 67.5: rounded up to the grid
    assert p["tokens"] == 360 * 68 * 120 == 2_937_600
    assert p["tokens_per_rank"] == 2_937_600 // 8
    p22 = plan("wan2.2-ti2v-5b", 1920, 1080, seconds=60, fps=24)  # a 32-pixel grid
    assert p22["grid"] == (360, 34, 60)


def test_default_fps_is_the_models():
    assert plan("tiny", 64, 64, seconds=2)["fps"] == 12  # Kinema's pipeline default
    assert plan("wan2.1-1.3b", 832, 480, seconds=81 / 16)["frames"] == 81  # Wan 2.1 makes 16 fps
    assert plan("wan2.2-ti2v-5b", 1280, 704, seconds=121 / 24)["frames"] == 121


def test_sharded_state_divides_by_the_gpus():
    one, many = plan("xl_1b", 512, 512, seconds=2, gpus=1), plan("xl_1b", 512, 512, seconds=2, gpus=8)
    P = one["params"]
    assert row(one, "weights") == pytest.approx(4 * P / GIB)
    assert row(one, "AdamW") == pytest.approx(8 * P / GIB)
    for term in ("weights", "gradients", "AdamW", "EMA"):
        assert row(many, term) == pytest.approx(row(one, term) / 8)
    assert row(one, "bf16 weight copies") == pytest.approx(2 * P / GIB)  # autocast's casts without FSDP2
    assert row(many, "FSDP2 gathered") < row(one, "bf16 weight copies")  # the root and a few blocks only


def test_sequence_parallelism_divides_the_activations():
    base = dict(width=1280, height=720, seconds=10, fps=24, gpus=8)
    k1, k4 = plan("xl_1b", **base), plan("xl_1b", sequence_parallel=4, **base)
    assert k4["tokens_per_rank"] == -(-k1["tokens"] // 4)
    assert row(k4, "activations") == pytest.approx(row(k1, "activations") / 4, rel=1e-3)
    assert row(k4, "weights") == row(k1, "weights")  # FSDP2 shards over all GPUs either way


def test_checkpointing_keeps_only_the_block_inputs():
    base = dict(width=1280, height=720, seconds=5, fps=24, gpus=8)
    full, ckpt = plan("l", checkpointing=False, **base), plan("l", checkpointing=True, **base)
    cfg, n = model_spec("l").config, full["tokens_per_rank"]
    assert row(ckpt, "activations") * GIB == cfg.depth * n * cfg.hidden * 2 + n * outside_bytes(cfg, "bf16")
    assert ckpt["peak_gib"] < full["peak_gib"] / 4


def test_sampling_holds_bf16_weights_and_no_optimizer():
    p = plan("wan2.1-14b", 832, 480, seconds=81 / 16, gpus=8, training=False)
    terms = [r["term"] for r in p["rows"]]
    assert not any(t.startswith(("gradients", "AdamW", "EMA")) for t in terms)
    assert row(p, "weights") == pytest.approx(2 * p["params"] / GIB)  # whole on every GPU
    assert 30 < p["peak_gib"] < 40  # models.memory's 14B 480p denoise phase, less the text encoder


def test_dense_mask_is_n_squared():
    p = plan("small", 256, 256, seconds=2, fps=8, attention="dense")
    assert row(p, "dense") * GIB == p["tokens"] ** 2


def test_fits_leaves_ten_percent():
    p = plan("tiny", 64, 64, seconds=1, gpu_memory_gb=1.0)
    assert p["budget_gib"] == pytest.approx(0.9e9 / GIB)
    assert p["fits"] == (p["peak_gib"] <= p["budget_gib"])


def test_fitting_degree_is_the_smallest_that_fits():
    kw = dict(width=1280, height=720, seconds=20, fps=24, gpus=8, gpu_memory_gb=80)
    k = fitting_degree("xl_1b", **kw)
    assert k is not None and k > 1
    assert plan("xl_1b", sequence_parallel=k, **kw)["fits"]
    assert not plan("xl_1b", sequence_parallel=k // 2, **kw)["fits"]


def test_longest_seconds_is_the_last_that_fits():
    kw = dict(width=1920, height=1080, fps=24, gpus=64, gpu_memory_gb=80, sequence_parallel=8)
    s = longest_seconds("wan2.1-14b", seconds=60, **kw)
    assert 1 < s < 60 and round(s * 24) % 4 == 1  # 1 + 4k frames
    assert plan("wan2.1-14b", seconds=s, **kw)["fits"]
    assert not plan("wan2.1-14b", seconds=s + 4 / 24, **kw)["fits"]
    assert longest_seconds("tiny", width=64, height=64, seconds=2) == pytest.approx(2 - 3 / 12)  # 21 of 24 frames


@pytest.mark.parametrize(
    "model, kw, words",
    [
        ("nope", {}, "unknown model"),
        ("tiny", dict(width=0), "must be positive"),
        ("tiny", dict(seconds=-1), "must be positive"),
        ("tiny", dict(seconds=float("nan")), "must be positive"),
        ("tiny", dict(seconds=float("inf")), "must be positive"),
        ("tiny", dict(gpu_memory_gb=float("nan")), "--gpu-memory > 0"),
        ("tiny", dict(gpus=6, sequence_parallel=4), "divide --gpus"),
        ("xl_3b", dict(sequence_parallel=8), "20 attention heads"),
    ],
)
def test_bad_input_raises(model, kw, words):
    with pytest.raises(KinemaError, match=words):
        plan(model, **{**dict(width=64, height=64, seconds=1.0, gpus=8), **kw})


def test_model_folder_reads_dit_json_and_fps(tmp_path):
    (tmp_path / "dit.json").write_text(json.dumps(DiTConfig.small().to_dict()))
    (tmp_path / "pipeline.json").write_text(json.dumps({"defaults": {"fps": 8}}))
    spec = model_spec(str(tmp_path))
    assert spec.config == DiTConfig.small() and spec.fps == 8
    assert spec.params == model_spec("small").params


def test_wan_folder_reads_its_transformer_config(tmp_path):
    from kinema.models.compare import WAN_CONFIGS

    config = {"_class_name": "WanTransformer3DModel", "text_dim": 4096, **WAN_CONFIGS["wan2.1-1.3b"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = model_spec(str(tmp_path))
    assert spec.params == model_spec("wan2.1-1.3b").params and spec.fps == 16 and spec.vae_spatial == 8


# ---------------------------------------------------------------- the estimate against measurements


def saved_bytes(cfg: DiTConfig, bf16_params: bool = False, L: int = 512) -> tuple[float, float]:
    """(bytes a token one block saves for its backward, bytes a token saved outside the blocks),
    from autograd's saved-tensor hooks (each storage once, parameters left out), as the difference
    of a 2-block and a 1-block model. bf16_params: bfloat16 parameters under CPU autocast, the
    forward FSDP2's MixedPrecisionPolicy gives."""

    def total(depth: int) -> int:
        torch.manual_seed(0)
        dit = DiT(replace(cfg, depth=depth))
        if bf16_params:
            dit = dit.to(torch.bfloat16)
        params = {p.untyped_storage().data_ptr() for p in dit.parameters()}
        seen = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                seen.setdefault(s.data_ptr(), s.nbytes())
            return t

        pos = torch.stack(torch.meshgrid(*(torch.arange(s) for s in (2, 16, L // 32)), indexing="ij"), -1)
        args = (torch.randn(1, L, cfg.token_dim), pos.reshape(-1, 3), torch.rand(1, L),  # per-token t, as in training
                torch.randn(1, 16, cfg.text_dim), torch.ones(1, 16, dtype=torch.bool))  # fmt: skip
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_params):
                dit(*args)
        return sum(seen.values())

    one, two = total(1), total(2)
    return (two - one) / L, (2 * one - two) / L


@pytest.mark.parametrize("layout", [{}, WAN_LAYOUT, dict(mlp="gelu")], ids=["kinema", "wan", "gelu"])
def test_counts_match_what_autograd_saves(layout):
    cfg = DiTConfig(hidden=256, heads=4, **layout)
    block, outside = saved_bytes(cfg)
    assert block == pytest.approx(4 * block_elements(cfg), rel=0.03)
    assert outside == pytest.approx(4 * outside_elements(cfg), rel=0.03)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("layout", [{}, WAN_LAYOUT], ids=["kinema", "wan"])
def test_bf16_bytes_match_autocast_with_bf16_parameters(layout):
    """CPU autocast keeps LayerNorm outputs in bf16 and the qkv input is cast once (the parameters
    are bf16 already); CUDA autocast runs LayerNorm in float32, so the rule adds 8 D bytes there
    (norm1 and norm3 outputs at 4 bytes, the qkv input cast for each of its 3 products)."""
    cfg = DiTConfig(hidden=256, heads=4, **layout)
    block, outside = saved_bytes(cfg, bf16_params=True)
    assert block == pytest.approx(block_bytes(cfg, "bf16") - 8 * cfg.hidden, rel=0.03)
    assert outside == pytest.approx(outside_bytes(cfg, "bf16") - 2 * cfg.hidden, rel=0.05)


# One float32 training step (forward, backward, AdamW, EMA) of each case, in a fresh process: the
# growth of its peak resident set (VmHWM, reset through /proc/self/clear_refs just before the
# step) over the resident set before it. A tiny step first makes AdamW's moments, so the growth
# is the step's: gradients, activations, the backward's buffers. glibc's mmap threshold is fixed
# (MALLOC_MMAP_THRESHOLD_), so that freed tensors leave the resident set at once instead of
# lingering in the heap, as they do once glibc raises the threshold by itself.
MEASURE = r"""
import gc, json, sys
from pathlib import Path
import torch
from kinema.dit import DiT, DiTConfig
from kinema.train.common import EMA

torch.set_num_threads(1)

def status(key):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024

def inputs(cfg, T, h, w):
    L = T * h * w
    pos = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    return (torch.randn(1, L, cfg.token_dim), pos.reshape(-1, 3), torch.rand(1, L), torch.randn(1, 16, cfg.text_dim),
            torch.ones(1, 16, dtype=torch.bool)), torch.randn(1, L, cfg.token_dim)

def measure(config, grid, ckpt):
    torch.manual_seed(0)
    cfg = DiTConfig(**config)
    dit = DiT(cfg, checkpointing=ckpt)  # one unmasked sample: SDPA keeps no L x L
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4, foreach=False)
    ema = EMA(dit, 0.999)

    def step(args, target):
        ((dit(*args) - target) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(dit)

    step(*inputs(cfg, 1, 2, 2))
    args, target = inputs(cfg, *grid)
    before = status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")
    step(args, target)
    growth = status("VmHWM:") - before
    del dit, opt, ema, args, target
    gc.collect()
    return growth

print(json.dumps([measure(c["config"], c["grid"], c["ckpt"]) for c in json.loads(sys.argv[1])]))
"""

CASES = [  # (config, token grid): ~1.5-2k tokens, so activations dominate as they do at scale
    (dict(hidden=256, depth=2, heads=4), (2, 32, 32)),
    (dict(hidden=384, depth=2, heads=6), (2, 24, 32)),
    (dict(hidden=256, depth=3, heads=4, **WAN_LAYOUT), (2, 32, 32)),
]
TOLERANCE = (0.95, 1.20)  # estimate / measured: an upper bound (the gradients count whole), by at most 20%


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_estimate_matches_cpu_peak_memory():
    cases = [dict(config=c, grid=g, ckpt=ck) for c, g in CASES for ck in (False, True)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    res = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cases)], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    report = []
    for case, growth in zip(cases, json.loads(res.stdout), strict=True):
        p = grid_plan(DiTConfig(**case["config"]), case["grid"], precision="fp32", checkpointing=case["ckpt"])
        ratio = step_gib(p) * GIB / growth
        report.append(f"{case['config']} {case['grid']} ckpt={case['ckpt']}: measured {growth / 2**20:.0f} MiB, "
                      f"estimated {step_gib(p) * 1024:.0f} MiB, ratio {ratio:.2f}")  # fmt: skip
    print("\n".join(report))
    for line in report:
        assert TOLERANCE[0] <= float(line.rsplit(" ", 1)[1]) <= TOLERANCE[1], "\n".join(report)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_estimate_matches_gpu_memory(precision):
    """One training step on the GPU, one process: the growth of max_memory_allocated against the
    plan's step terms. bf16: parameters cast to bf16 under autocast (what FSDP2 gives the forward),
    so the gradients are bf16 too: 2 P instead of the plan's 4 P (float32 shards)."""
    dev = torch.device("cuda")
    for config, grid in CASES:
        for ckpt in (False, True):
            cfg = DiTConfig(**config)
            torch.manual_seed(0)
            dit = DiT(cfg, checkpointing=ckpt).to(dev)
            if precision == "bf16":
                dit = dit.to(torch.bfloat16)
            T, h, w = grid
            L = T * h * w
            pos = torch.stack(torch.meshgrid(*(torch.arange(s) for s in grid), indexing="ij"), -1).reshape(-1, 3)
            text = torch.randn(1, 16, cfg.text_dim, device=dev)
            args = (torch.randn(1, L, cfg.token_dim, device=dev), pos.to(dev), torch.rand(1, L, device=dev), text,
                    torch.ones(1, 16, dtype=torch.bool, device=dev))  # fmt: skip
            target = torch.randn(1, L, cfg.token_dim, device=dev)
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                v = dit(*args)
            ((v.float() - target) ** 2).mean().backward()
            torch.cuda.synchronize()
            growth = torch.cuda.max_memory_allocated() - before
            p = grid_plan(cfg, grid, precision=precision, checkpointing=ckpt)
            est = step_gib(p) * GIB
            if precision == "bf16":
                est -= row(p, "gradients") * GIB / 2 + row(p, "bf16 weight copies") * GIB  # bf16 grads; no casts
            assert 0.9 <= est / growth <= 1.3, (config, grid, ckpt, growth, est)
            del dit, v, args, target
            torch.cuda.empty_cache()


# ---------------------------------------------------------------- the command


def test_plan_command_prints_tokens_terms_and_verdict(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "plan", "--model", "wan2.1-14b", "--size", "1920x1080",
                             "--seconds", "60", "--fps", "24", "--gpus", "64", "--gpu-memory", "80",
                             "--sequence-parallel", "8")  # fmt: skip
    assert code in (0, None), err
    assert "2,937,600 tokens a sample; 367,200 a rank" in out
    for term in ("AdamW moments", "FSDP2 gathered", "activations (checkpointed)", "attention call", "VAE decode"):
        assert term in out
    assert "does not fit" in out and "GiB usable (0.9 x 80 GB)" in out


def test_plan_command_sampling_fits(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "plan", "--model", "wan2.1-1.3b", "--size", "832x480",
                           "--seconds", "5", "--sampling", "--gpu-memory", "24")  # fmt: skip
    assert code in (0, None)
    assert "sampling" in out and ": fits" in out and "AdamW" not in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "nope", "--size", "64x64", "--seconds", "1"], "unknown model"),
        (["--model", "tiny", "--size", "0x64", "--seconds", "1"], "must be positive"),
        (["--model", "tiny", "--size", "big", "--seconds", "1"], "WIDTHxHEIGHT"),
        (["--model", "tiny", "--size", "64x64", "--seconds", "nan"], "must be positive"),
        (["--model", "xl_3b", "--size", "64x64", "--seconds", "1", "--gpus", "8", "--sequence-parallel", "8"], "heads"),
    ],
)
def test_plan_command_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, args, words):
    code, _, err = run_cli(monkeypatch, capsys, "plan", *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
