"""What training or sampling a DiT on a video size holds in each GPU's memory: `kinema plan`.

    p = plan("xl_3b", 1920, 1080, seconds=60, fps=24, gpus=64, gpu_memory_gb=80, sequence_parallel=4)
    p["tokens"], p["tokens_per_rank"], p["peak_gib"], p["fits"]
    rows = p["rows"]                    # one row a term: GiB, in the peak or not, its formula
    fitting_degree("xl_3b", width=1920, height=1080, seconds=60, gpus=64)   # the smallest K that
                                        # fits, or None
    longest_seconds("xl_3b", width=1920, height=1080, seconds=60, gpus=64, sequence_parallel=4)

The model is a Kinema preset (tiny, small, b, l, xl_1b, xl_3b), a named Wan config (wan2.1-1.3b,
wan2.1-14b, wan2.2-ti2v-5b) or a folder: a Kinema export (dit.json) or a diffusers Wan folder.

Tokens. frames = round(seconds * fps) (fps: the model's default when not given: 12 for a Kinema
preset, pipeline.json's for an export, 16 for Wan 2.1 and 24 for Wan 2.2 TI2V-5B, as
`models.wan`'s defaults say), T = 1 + (frames - 1) // 4 latent frames (the VAEs are causal and
4x in time), h = ceil(H / g), w = ceil(W / g) with g the grid in pixels: the VAE's spatial factor
times the patch, 8 * 2 = 16 (Kinema's VAE and Wan 2.1's), 16 * 2 = 32 (Wan 2.2). A sample has
N = T h w tokens; with sequence parallelism over K ranks (`kinema.parallel`) each rank holds
n = ceil(N / K) of them through the DiT.

Notation: P the DiT's parameters, P_b one block's, P_r = P - depth P_b the rest (embeddings,
shared modulation, final layer), all counted on the meta device; W GPUs; D, F, H, d = D / H the
width, MLP width, heads and head width; b the bytes of an activation (2 bf16, 4 fp32).
GiB = 2^30 bytes; --gpu-memory is in GB (10^9 bytes), as the vendors count.

Training (`kinema.train.dit`: FSDP2 over all W ranks, bf16 autocast, float32 master weights,
AdamW, EMA of the trained parameters; the latents come from a cache, so no VAE is loaded):

    weights          4 P / W          float32 master weights, sharded
    gradients        4 P / W          float32, reduce-scattered into shards
    AdamW moments    8 P / W          exp_avg and exp_avg_sq, float32
    EMA              4 P / W          float32 shadow of every trained parameter
    FSDP2 gathered   W > 1: 2 P_r + 2 * 2 P_b + 6 P_b: the root unit stays gathered (bf16) from
                     the forward to the backward; the block computing and the next one
                     prefetched, in bf16; one block's unsharded bf16 gradient and its float32 copy
                     for the reduce-scatter (fp32: 4 P_r + 2 * 4 P_b + 4 P_b). W = 1 (no FSDP2):
                     under bf16 autocast the bfloat16 copies of the weights that the forward
                     casts, 2 P, live into the backward
    activations      the values autograd saves, counted tensor by tensor (`block_elements`): one
                     block saves per token
                         E_b = (31 + 2 g + q) D + m F + 2 d
                     g = 1 with the cross-attention gate (its sum and the cross output), q = 1
                     with per-head QK norms (Kinema's; 0 across heads, Wan's), m = 4 for SwiGLU
                     (up output 2F, SiLU F, product F), 2 for GELU; 2 d the rotary angles (complex
                     float32). The D terms: the block input, the three norms and two modulations,
                     the qkv input, q and k before and after their norms, the rotated q, k, v
                     and the attention output, the projection inputs, the cross path, the
                     modulation sum (6 D) and the residual branches. Outside the blocks, once:
                         E_o = token_dim + freq_dim + (4 + g + f) D
                     (timestep MLP, the conditioning's SiLU, the gate, the final layer: f = 5 with
                     a Linear modulation, 4 with Wan's table). In bytes: fp32 4 E; bf16 (a GPU
                     under FSDP2, which hands the forward bf16 parameters, and CUDA autocast)
                         B_b = 2 (E_b + 2 D) + 2 (8 D + 2 d),    B_o = 2 E_o + 2 D
                     every value 2 bytes, and: autocast casts the qkv input (the float32 product
                     of a float32 LayerNorm output) once for each of its three products, 2 D more;
                     float32 at 4 bytes: the LayerNorm outputs that a product saves (norm1's and
                     norm3's; norm2's feeds a Linear, which saves its bf16 cast), the q/k RMSNorm
                     inputs and outputs of both attentions (6 D) and the rotary angles (2 d); the
                     final norm's output, D
                     Without checkpointing:  depth n B_b + n B_o
                     With checkpointing:     depth n D b (each block's input) + n B_o
    backward         the gradients in flight while the first blocks of the backward run, per
                     token: the shared modulation's (6 D) and the conditioning's and gate's (2 D),
                     accumulated over all blocks, and the block's own. Measured (the tolerance test
                     below): 9 - 11 D without checkpointing, 17 - 18 D with, taken as
                         without checkpointing:  n 11 D b
                         with checkpointing:     n B_b + n 18 D b  (the block recomputed, too)
    attention        one self-attention call over all N tokens for its H / K heads: q, k, v and
                     the output, 4 N (D / K) b, and the log-sum-exp, N (H / K) 4 (flash attention
                     and SDPA without a mask keep no N x N scores). It is inside the block terms
                     above (a rank's share of q, k, v, out is the same size), shown for scale;
                     the all-to-all adds 2 n D b while a tensor is in flight
    dense mask       only with --attention dense: a packed sequence through SDPA holds the bool
                     (N x N) block-diagonal mask, N^2 bytes, on every rank. That is what
                     `kinema train dit` does with attention=sdpa (the default), and on a CPU
                     with gradients; --attention flash (the default here) assumes flex
                     attention (attention=flex on a GPU, with or without sequence parallelism)
                     or one unmasked sample a sequence. Sampling
                     runs one unmasked sample a row: no mask

Sampling (--sampling; `Pipeline` with sequence parallelism: every rank holds the whole model):

    weights          2 P (bfloat16, not sharded)
    activations      rows n (6 D + 2 F) b, as `models.memory` estimates: inside one block at a
                     time, no backward; rows = 2 with classifier-free guidance in one batch
    VAE decode       after the denoising, one latent frame (4 pixel frames) at a time, the
                     frames leave for the CPU: the VAE's weights in float32 (Kinema's 4x8x8 VAE,
                     `VAEConfig.base()`: 96 channels at full size in its last up-block, like
                     Wan 2.1's; Wan 2.2's 256 at half) + 4 live float32 tensors of the last
                     up-block for 4 frames + the 4 decoded frames, 3 H W 4 bytes each (H, W
                     rounded up to the grid: the decode's size before the crop). In training
                     it is shown but not in the peak (a latent cache: no VAE on the device)
    text encoder     not counted: captions are encoded first and the encoder leaves the device
                     (`--offload text`; `models.memory` has umT5's 11 GiB)

Peak: training, the sum of the terms, an upper bound (the gradients fill in while the
activations drain: not all of them exist at the peak); sampling, the larger of denoising (weights
+ activations) and decoding (weights + VAE decode). It fits when peak <= 0.9 x the GPU's memory:
10% is left for the framework (CUDA context, NCCL buffers, the allocator's fragmentation), which
the terms leave out.

How good it is (tests/test_plan.py):
- E_b and E_o equal the bytes autograd saves in float32 (saved-tensor hooks) within 3%, for
  Kinema's block layout, Wan's, and SwiGLU or GELU.
- bf16: with bf16 parameters under CPU autocast (the forward FSDP2 gives), the saved bytes are
  B_b - 8 D and B_o - 2 D within 5%; the rule's 8 D and 2 D more are CUDA autocast's float32
  LayerNorm outputs and the qkv casts, which CPU autocast does not make. A single process with
  float32 parameters under autocast (W = 1) keeps the modulation sum and the residual stream in
  float32 too: about 20% more than B_b.
- One float32 training step (gradients + activations + backward terms) against the growth of a
  fresh CPU process's peak resident set (Linux VmHWM), for hidden 256 and 384, depth 2 and 3,
  Kinema's and Wan's layouts, 1.5k - 2k tokens, with and without checkpointing: the estimate is
  6 - 13% above the measurement (mostly the gradients, counted whole); the test holds
  estimate / measured within [0.95, 1.20]. On a GPU it compares with max_memory_allocated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from kinema.errors import KinemaError

GIB = 2**30
HEADROOM = 0.9  # of a GPU's memory the estimate may use: 10% for the framework
FRAMES_PER_LATENT = 4  # the VAEs' temporal factor
# gradient buffers of the backward a token, in D (measured, see the module doc): without and with checkpointing
BACKWARD_FULL, BACKWARD_CKPT = 11, 18


@dataclass(frozen=True)
class ModelSpec:
    """What the estimate needs of a model: its DiT config and sizes, its VAE's, its default fps."""

    name: str
    config: object  # DiTConfig
    params: int  # P
    block_params: int  # P_b
    vae_spatial: int  # pixels a latent cell
    vae_params: float
    vae_last: float  # channels of the VAE's last up-block, per pixel of a frame (at its resolution)
    fps: float


def _count(cfg) -> tuple[int, int]:
    from kinema.dit import DiT

    with torch.device("meta"):
        dit = DiT(cfg)
    return sum(p.numel() for p in dit.parameters()), sum(p.numel() for p in dit.blocks[0].parameters())


def _kinema_vae() -> tuple[float, float]:
    from kinema.vae.model import VAEConfig, count_params

    cfg = VAEConfig.base()
    return float(count_params(cfg)), cfg.base_channels * cfg.channel_mults[0] / cfg.patch_size**2


def config_spec(cfg, name: str = "custom", fps: float | None = None) -> ModelSpec:
    """The spec of a Kinema DiTConfig (Kinema's 4x8x8 VAE; fps default: the pipeline's)."""
    from kinema.pipeline import DEFAULTS

    return ModelSpec(name, cfg, *_count(cfg), 8, *_kinema_vae(), float(fps or DEFAULTS["fps"]))


def model_spec(model: str) -> ModelSpec:
    """A Kinema preset, a named Wan config, a Kinema export folder (dit.json) or a diffusers Wan folder."""
    from kinema.dit import PRESETS, DiTConfig
    from kinema.models.compare import WAN_CONFIGS
    from kinema.models.memory import WAN22_VAE_LAST, WAN22_VAE_PARAMS, WAN_VAE_LAST, WAN_VAE_PARAMS, _dit_params
    from kinema.models.wan import WAN22_TI2V_DEFAULTS, WAN_DEFAULTS

    if model in PRESETS:
        return config_spec(PRESETS[model](), model)
    if model in WAN_CONFIGS and model != "tiny":
        total, block, cfg = _dit_params(model)
        if model.startswith("wan2.2"):
            return ModelSpec(model, cfg, total, block, 16, WAN22_VAE_PARAMS, WAN22_VAE_LAST, WAN22_TI2V_DEFAULTS["fps"])
        return ModelSpec(model, cfg, total, block, 8, WAN_VAE_PARAMS, WAN_VAE_LAST, WAN_DEFAULTS["fps"])
    path = Path(model).expanduser()
    for folder in (path, path / "export"):
        if (folder / "dit.json").is_file():
            cfg = DiTConfig.from_dict(json.loads((folder / "dit.json").read_text()))
            spec = folder / "pipeline.json"
            fps = json.loads(spec.read_text()).get("defaults", {}).get("fps") if spec.is_file() else None
            return config_spec(cfg, str(path), fps)
    from kinema.models.hf import read_config
    from kinema.models.wan import wan_dit_config, wan_transformer_dir

    transformer = wan_transformer_dir(path) if path.is_dir() else None
    if transformer is not None:
        cfg = wan_dit_config(read_config(transformer))
        wan22 = cfg.in_channels == 48  # Wan 2.2's 4x16x16 VAE
        vae = (16, WAN22_VAE_PARAMS, WAN22_VAE_LAST, WAN22_TI2V_DEFAULTS["fps"]) if wan22 else \
            (8, WAN_VAE_PARAMS, WAN_VAE_LAST, WAN_DEFAULTS["fps"])  # fmt: skip
        return ModelSpec(str(path), cfg, *_count(cfg), *vae)
    names = [*PRESETS, *(n for n in WAN_CONFIGS if n != "tiny")]
    raise KinemaError(f"unknown model {model!r}: give one of {', '.join(names)}, or a folder with dit.json "
                      "(a Kinema export) or a diffusers Wan folder")  # fmt: skip


# ---------------------------------------------------------------- per-token counts


def block_elements(cfg) -> int:
    """E_b: values one DiT block saves for its backward, per token (see the module doc)."""
    g, q = int(cfg.cross_gate), int(cfg.qk_norm == "head")
    m = 4 if cfg.mlp == "swiglu" else 2
    return (31 + 2 * g + q) * cfg.hidden + m * cfg.mlp_hidden + 2 * cfg.head_dim


def outside_elements(cfg) -> int:
    """E_o: values saved per token outside the blocks (timestep MLP, conditioning, final layer)."""
    f = 5 if cfg.final_mod == "linear" else 4
    return cfg.token_dim + cfg.freq_dim + (4 + int(cfg.cross_gate) + f) * cfg.hidden


def block_bytes(cfg, precision: str) -> int:
    """B_b: bytes one block saves per token, float32 or under bf16 autocast."""
    E, D = block_elements(cfg), cfg.hidden
    return 4 * E if precision == "fp32" else 2 * (E + 2 * D) + 2 * (8 * D + 2 * cfg.head_dim)


def outside_bytes(cfg, precision: str) -> int:
    """B_o: bytes saved per token outside the blocks."""
    E = outside_elements(cfg)
    return 4 * E if precision == "fp32" else 2 * E + 2 * cfg.hidden


# ---------------------------------------------------------------- the plan


def tokens(spec: ModelSpec, width: int, height: int, frames: int) -> tuple[int, int, int, int]:
    """(N, T, h, w): tokens of one sample, latent frames (in tokens) and the token grid."""
    cfg = spec.config
    pt, ph, pw = cfg.patch
    T = math.ceil((1 + (frames - 1) // FRAMES_PER_LATENT) / pt)
    h = math.ceil(height / (spec.vae_spatial * ph))
    w = math.ceil(width / (spec.vae_spatial * pw))
    return T * h * w, T, h, w


def check_degree(spec: ModelSpec, gpus: int, sequence_parallel: int) -> None:
    K, heads = sequence_parallel, spec.config.heads
    if K < 1:
        raise KinemaError(f"--sequence-parallel must be >= 1; got {K}")
    if gpus % K:
        raise KinemaError(f"--sequence-parallel {K} must divide --gpus {gpus} (each sequence takes K ranks)")
    if heads % K:
        raise KinemaError(f"--sequence-parallel {K} must divide the model's {heads} attention heads "
                          "(each rank attends with heads / K of them)")  # fmt: skip


def plan(model: str | ModelSpec, width: int, height: int, seconds: float, fps: float | None = None,
         gpus: int = 1, gpu_memory_gb: float = 80.0, sequence_parallel: int = 1, training: bool = True,
         checkpointing: bool = True, precision: str = "bf16", attention: str = "flash",
         cfg_rows: int = 2) -> dict:  # fmt: skip
    """The estimate of the module doc: tokens, every term in GiB with its formula, peak and verdict."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    if width <= 0 or height <= 0:
        raise KinemaError(f"--size must be positive; got {width}x{height}")
    fps = spec.fps if fps is None else fps
    if not (0 < seconds < math.inf and 0 < fps < math.inf):
        raise KinemaError(f"--seconds and --fps must be positive numbers; got {seconds} s at {fps} fps")
    if gpus < 1 or not 0 < gpu_memory_gb < math.inf:
        raise KinemaError(f"--gpus must be >= 1 and --gpu-memory > 0; got {gpus} and {gpu_memory_gb}")
    if precision not in ("bf16", "fp32"):
        raise KinemaError(f"precision must be bf16 or fp32; got {precision!r}")
    if attention not in ("flash", "dense"):
        raise KinemaError(f"--attention must be flash or dense; got {attention!r}")
    if cfg_rows < 1:
        raise KinemaError(f"cfg_rows must be >= 1; got {cfg_rows}")
    check_degree(spec, gpus, sequence_parallel)

    cfg, P, Pb, W, K = spec.config, spec.params, spec.block_params, gpus, sequence_parallel
    D, F, H, depth = cfg.hidden, cfg.mlp_hidden, cfg.heads, cfg.depth
    frames = max(1, round(seconds * fps))
    N, T, h, w = tokens(spec, width, height, frames)
    n = math.ceil(N / K)
    b = 4 if precision == "fp32" else 2
    rows = []  # (term, bytes, in the peak, formula)

    def add(term: str, value: float, formula: str, counted: bool = True) -> None:
        rows.append(dict(term=term, gib=value / GIB, in_peak=counted, formula=formula))

    if training:
        add("weights (fp32, sharded)", 4 * P / W, "4 P / W")
        add("gradients (fp32, sharded)", 4 * P / W, "4 P / W")
        add("AdamW moments (fp32, sharded)", 8 * P / W, "8 P / W")
        add("EMA (fp32, sharded)", 4 * P / W, "4 P / W")
        if W > 1:
            g = b + (4 if b == 2 else 0)  # a block's unsharded gradient (+ its float32 copy under bf16)
            gathered = (P - depth * Pb) * b + 2 * Pb * b + Pb * g
            add("FSDP2 gathered units", gathered, f"{b} P_r + 2 x {b} P_b + {g} P_b (root, 2 blocks, 1 block's grads)")
        elif precision == "bf16":
            add("bf16 weight copies (no FSDP2)", 2 * P, "2 P (autocast's casts, W = 1)")
        Bb, Bo = block_bytes(cfg, precision), outside_bytes(cfg, precision)
        if checkpointing:
            add("activations (checkpointed)", depth * n * D * b + n * Bo, f"depth n D {b} + n B_o")
            add("block recomputed + backward", n * Bb + n * BACKWARD_CKPT * D * b, f"n B_b + n {BACKWARD_CKPT} D {b}")
        else:
            add("activations (all blocks)", depth * n * Bb + n * Bo, "depth n B_b + n B_o")
            add("backward working set", n * BACKWARD_FULL * D * b, f"n {BACKWARD_FULL} D {b}")
        if attention == "dense":
            add("dense N x N mask (packed SDPA)", N * N, "N^2 bool")
    else:
        add("weights (bf16, whole)", 2 * P, "2 P")
        add("activations (one forward)", cfg_rows * n * (6 * D + 2 * F) * b, f"{cfg_rows} n (6 D + 2 F) {b}")
    attn = cfg_rows if not training else 1
    add("attention call (in the above)", attn * (4 * N * (D / K) * b + N * (H / K) * 4),
        f"{attn} x (4 N (D/K) {b} + N (H/K) 4)", counted=False)  # fmt: skip
    pixels = h * spec.vae_spatial * cfg.patch[1] * w * spec.vae_spatial * cfg.patch[2]  # the grid's, before the crop
    vae = spec.vae_params * 4 + 4 * spec.vae_last * FRAMES_PER_LATENT * pixels * 4 + FRAMES_PER_LATENT * 3 * pixels * 4
    vae_note = f"{spec.vae_params:.3g} x 4 + 4 x {spec.vae_last:g} x 4 frames x H W x 4 + 4 x 3 H W x 4"
    add("VAE decode" + (" (not in training)" if training else ""), vae, vae_note, counted=False)

    step = sum(r["gib"] for r in rows if r["in_peak"])
    if training:
        peak = step
    else:
        peak = max(step, rows[0]["gib"] + vae / GIB)  # decoding: the DiT's weights + the VAE
    budget = HEADROOM * gpu_memory_gb * 1e9 / GIB
    return dict(model=spec.name, mode="training" if training else "sampling", frames=frames, fps=fps,
                latent_frames=T, grid=(T, h, w), tokens=N, tokens_per_rank=n, gpus=W, sequence_parallel=K,
                params=P, block_params=Pb, checkpointing=checkpointing if training else None,
                precision=precision, rows=rows, peak_gib=peak, budget_gib=budget, fits=peak <= budget)  # fmt: skip


def degrees(spec: ModelSpec, gpus: int) -> list[int]:
    """Sequence-parallel degrees that can run: 1, 2, 4, 8, ... dividing both the GPUs and the heads."""
    out, K = [], 1
    while K <= gpus:
        if gpus % K == 0 and spec.config.heads % K == 0:
            out.append(K)
        K *= 2
    return out


def fitting_degree(model: str | ModelSpec, **kw) -> int | None:
    """The smallest sequence-parallel degree (1, 2, 4, ...) with which `plan(model, **kw)` fits, or None."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    kw.pop("sequence_parallel", None)
    for K in degrees(spec, kw.get("gpus", 1)):
        if plan(spec, sequence_parallel=K, **kw)["fits"]:
            return K
    return None


def longest_seconds(model: str | ModelSpec, **kw) -> float | None:
    """The longest clip (1 + 4k frames, at most kw's seconds) with which `plan(model, **kw)` fits,
    in seconds, or None when one latent frame does not fit."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    fps = kw.pop("fps", None) or spec.fps
    seconds = kw.pop("seconds")

    def fits(T: int) -> bool:
        return plan(spec, seconds=(1 + FRAMES_PER_LATENT * (T - 1)) / fps, fps=fps, **kw)["fits"]

    lo, hi = 0, 1 + (max(1, round(seconds * fps)) - 1) // FRAMES_PER_LATENT  # fits(lo) (0: none), hi: asked
    if fits(hi):
        return (1 + FRAMES_PER_LATENT * (hi - 1)) / fps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return (1 + FRAMES_PER_LATENT * (lo - 1)) / fps if lo else None
