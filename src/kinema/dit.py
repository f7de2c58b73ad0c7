"""The diffusion transformer: spacetime patch tokens + caption -> velocity, for rectified flow.

    tokens (B, L, C*pt*ph*pw) --x_embed--> x (B, L, D)
    t (B, L) per token --sinusoid, MLP--> c (B, L, D)  (+ pooled caption vector, optional)
    c --SiLU, Linear--> shared modulation (B, L, 6D); each block adds its own learned (6, D) table
    block:  x += gate1 * SelfAttn(modulate(LN(x), shift1, scale1))   3D RoPE, QK RMSNorm,
                                                                    block-diagonal when packed
            x += (1 + gate3) * CrossAttn(LN(x), caption tokens)      each sample its own caption
            x += gate2 * MLP(modulate(LN(x), shift2, scale2))        SwiGLU or GELU-tanh
    final:  Linear(modulate(LN(x), shift, scale)) -> v (B, L, C*pt*ph*pw)

Timesteps are per token, so clean conditioning frames (t = 0) and noisy frames share a sequence;
the modulation is therefore computed per token. A DiT-style per-block Linear(D, 6D) applied to
every token would cost 12 D^2 FLOPs per token per block, as much as the attention projections;
instead one shared projection is computed once and each block adds a learned table (the
"adaLN-single" of PixArt-alpha, also used by Wan). Gates, tables, the shared projection, the
cross-attention output and the final layer start at zero (adaLN-Zero): every block starts as the
identity and a fresh model outputs zeros.

The cross-attention gate (`cross_gate`): gate3 = shared Linear(SiLU(c)) + a per-block table,
both zero at first. Softmax attention returns a convex mix of the caption's values, so without
a gate the caption's contribution has the same size at every noise level. At low noise the
frame shows what the caption says and that contribution only perturbs; a small model then
shrinks the caption values towards zero for every t, and the text path dies before the rare
high-noise steps, where only the caption tells what to draw, can teach it. The gate lets the
timestep close it at low noise and keep it open at high noise.

Attention runs through `scaled_dot_product_attention` (flash / cuDNN kernels on a GPU when there
is no mask: one sample a row) or, for packed sequences, either SDPA with a dense block-diagonal
boolean mask (simple; O(L^2) memory) or flex attention with a BlockMask built from the document
ids (`attention="flex"`; skips the blocks between samples; compiled on a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

from kinema.errors import KinemaError

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a DiT; saved as JSON next to its weights (to_dict / from_dict).

    hidden, depth, heads: width D, number of blocks, attention heads (head dim = D / heads)
    in_channels, patch:   latent channels and spacetime patch; a token has C * pt * ph * pw features
    text_dim:             width of the text encoder's tokens (256 builtin, 4096 for T5-XXL, ...)
    mlp, mlp_ratio:       "swiglu" (hidden 2/3 * ratio * D, rounded up to 64) or "gelu" (ratio * D)
    rope_axes:            head-dim channels given to the (t, h, w) rotary axes; None: about 1/4 to
                          time and the rest split between height and width (64 -> (16, 24, 24))
    rope_theta:           rotary base period
    pooled_text:          add the masked mean of the caption tokens, projected, to the timestep
                          embedding (a global caption vector in the modulation, as SD3 / flux do
                          with their pooled CLIP vector)
    freq_dim:             width of the sinusoidal timestep features
    cross_gate:           scale each block's cross-attention by (1 + a timestep-driven gate); see
                          the module doc (configs saved before it existed read as False)
    qk_norm:              "head": RMSNorm of each head's queries and keys (head_dim wide);
                          "across": one RMSNorm over all heads (hidden wide), as Wan does
    text_norm:            RMSNorm the caption tokens before their projection (Wan: none)
    final_mod:            "linear": the final shift and scale are Linear(SiLU(c)); "table": a
                          learned (2, D) table plus c itself, as Wan does
    ffn_dim:              the MLP's hidden width, overriding mlp_ratio (Wan 2.1 1.3B: 8960)
    trained_extent:       the largest token grid (t, h, w) the model was trained on, or None. A
                          sample larger than it in h or w has its spatial rotary angles scaled by
                          one factor (the aspect kept) into that range, the slow frequencies only
                          (`position_scale`, `frequency_scale`); a t entry > 0 does the same in
                          time; 0 never scales that axis. Packed sequences (training) keep theirs.
    trained_min_side:     the shortest spatial side (tokens) of any sample trained on; 0: unknown.
                          With trained_extent, the pipeline composes smaller frames at this size
                          and scales them down (`kinema.composition`)

    Presets take overrides: DiTConfig.l(text_dim=4096) for a T5-XXL text encoder.
    """

    hidden: int = 256
    depth: int = 4
    heads: int = 4
    in_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 256
    mlp: str = "swiglu"
    mlp_ratio: float = 4.0
    rope_axes: tuple[int, int, int] | None = None
    rope_theta: float = 10000.0
    pooled_text: bool = True
    freq_dim: int = 256
    cross_gate: bool = True
    qk_norm: str = "head"
    text_norm: bool = True
    final_mod: str = "linear"
    ffn_dim: int | None = None
    trained_extent: tuple[int, int, int] | None = None
    trained_min_side: int = 0

    def __post_init__(self):
        problems = []
        if self.hidden % self.heads:
            problems.append(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        elif self.head_dim % 2:
            problems.append(f"head dim {self.head_dim} must be even for rotary embeddings")
        elif sum(self.rope_split) != self.head_dim or any(d % 2 or d <= 0 for d in self.rope_split):
            problems.append(f"rope_axes {self.rope_axes} must be 3 positive even numbers summing to {self.head_dim}")
        if self.mlp not in ("swiglu", "gelu"):
            problems.append(f"mlp must be 'swiglu' or 'gelu', not {self.mlp!r}")
        if len(self.patch) != 3 or any(p <= 0 for p in self.patch):
            problems.append(f"patch must be 3 positive sizes (pt, ph, pw), not {self.patch}")
        if self.freq_dim % 2:
            problems.append(f"freq_dim {self.freq_dim} must be even")
        if self.qk_norm not in ("head", "across"):
            problems.append(f"qk_norm must be 'head' or 'across', not {self.qk_norm!r}")
        if self.final_mod not in ("linear", "table"):
            problems.append(f"final_mod must be 'linear' or 'table', not {self.final_mod!r}")
        if self.ffn_dim is not None and self.ffn_dim <= 0:
            problems.append(f"ffn_dim must be positive, not {self.ffn_dim}")
        if self.trained_extent is not None and (len(self.trained_extent) != 3 or any(e < 0 for e in self.trained_extent)):
            problems.append(f"trained_extent must be 3 sizes >= 0 (t, h, w), not {self.trained_extent}")
        if self.trained_min_side < 0:
            problems.append(f"trained_min_side must be >= 0, not {self.trained_min_side}")
        if problems:
            raise KinemaError("bad DiT config: " + "; ".join(problems))

    # ------------------------------------------------------------ derived sizes

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def token_dim(self) -> int:
        return self.in_channels * math.prod(self.patch)

    @property
    def mlp_hidden(self) -> int:
        if self.ffn_dim is not None:
            return self.ffn_dim
        if self.mlp == "gelu":
            return int(self.hidden * self.mlp_ratio)
        h = int(2 * self.hidden * self.mlp_ratio / 3)
        return -(-h // 64) * 64

    @property
    def rope_split(self) -> tuple[int, int, int]:
        if self.rope_axes is not None:
            return tuple(self.rope_axes)
        d = self.head_dim
        t = 2 * (d // 8)
        h = 2 * ((d - t) // 4)
        return (t, h, d - t - h)

    # ------------------------------------------------------------ presets

    @classmethod
    def tiny(cls, **kw) -> DiTConfig:
        """~5M parameters: CPU training on Kinema World."""
        return cls(**{**dict(hidden=256, depth=4, heads=4), **kw})

    @classmethod
    def small(cls, **kw) -> DiTConfig:
        """~30M parameters."""
        return cls(**{**dict(hidden=384, depth=12, heads=6), **kw})

    @classmethod
    def b(cls, **kw) -> DiTConfig:
        """~130M parameters."""
        return cls(**{**dict(hidden=768, depth=13, heads=12), **kw})

    @classmethod
    def l(cls, **kw) -> DiTConfig:  # noqa: E743 (the conventional size name)
        """~500M parameters."""
        return cls(**{**dict(hidden=1024, depth=28, heads=16), **kw})

    @classmethod
    def xl_1b(cls, **kw) -> DiTConfig:
        """~1.1B parameters; head dim 128."""
        return cls(**{**dict(hidden=1536, depth=28, heads=12), **kw})

    @classmethod
    def xl_3b(cls, **kw) -> DiTConfig:
        """~3B parameters; head dim 128."""
        return cls(**{**dict(hidden=2560, depth=28, heads=20), **kw})

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch"] = list(self.patch)
        d["rope_axes"] = list(self.rope_axes) if self.rope_axes is not None else None
        d["trained_extent"] = list(self.trained_extent) if self.trained_extent is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KinemaError(f"unknown DiT config keys {sorted(unknown)}; known keys: {sorted(known)}")
        d = {"cross_gate": False, **d}  # saved before the gate existed: none
        if "patch" in d:
            d["patch"] = tuple(d["patch"])
        for key in ("rope_axes", "trained_extent"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    # ------------------------------------------------------------ FLOPs

    def matmul_params(self) -> dict[str, int]:
        """Weights of the matrix multiplies, split by what they multiply.

        per_token: used once per video token (patch embed, timestep MLP, modulation, self-attention,
                   cross-attention queries and output, MLP, final layer)
        per_text_token: used once per caption token (caption projection, cross-attention keys and
                   values in every block)
        per_caption: used once per caption (pooled-caption MLP)
        """
        D, Dt, F_ = self.hidden, self.text_dim, self.mlp_hidden
        mlp = (3 if self.mlp == "swiglu" else 2) * D * F_
        block_tok = 4 * D * D + 2 * D * D + mlp  # qkv + proj, cross q + proj, MLP
        per_token = (
            self.token_dim * D  # x_embed
            + self.freq_dim * D + D * D  # timestep MLP
            + 6 * D * D  # shared modulation
            + (D * D if self.cross_gate else 0)  # shared cross-attention gate
            + self.depth * block_tok
            + (2 * D * D if self.final_mod == "linear" else 0) + D * self.token_dim  # final modulation + output
        )
        per_text_token = Dt * D + D * D + self.depth * 2 * D * D
        per_caption = (Dt * D + D * D) if self.pooled_text else 0
        return {"per_token": per_token, "per_text_token": per_text_token, "per_caption": per_caption}

    def flops_per_token(self, seq_len: int, text_len: int) -> float:
        """Forward FLOPs per video token of a sample of seq_len tokens with a text_len caption.

        The usual estimate (Kaplan et al. 2020; PaLM appendix B): 2 FLOPs per weight per token for
        the matrix multiplies, plus attention scores and weighted values, 2 * 2 * D per key per
        layer, here for seq_len self-attention keys and text_len cross-attention keys:

            2 N_token + 4 depth D (seq_len + text_len) + 2 (N_text text_len + N_caption) / seq_len

        (caption-side work is shared by the sample's seq_len tokens). Training (forward + backward)
        is 3x this, plus one more forward per checkpointed block. For a packed sequence sum
        n_i * flops_per_token(n_i, text_len_i) over its samples. Norms, activations and RoPE are
        left out (a few percent).
        """
        p = self.matmul_params()
        attn = 4 * self.depth * self.hidden * (seq_len + text_len)
        text = 2 * (p["per_text_token"] * text_len + p["per_caption"]) / seq_len
        return 2 * p["per_token"] + attn + text


PRESETS: dict[str, Callable[..., DiTConfig]] = {
    "tiny": DiTConfig.tiny,
    "small": DiTConfig.small,
    "b": DiTConfig.b,
    "l": DiTConfig.l,
    "xl_1b": DiTConfig.xl_1b,
    "xl_3b": DiTConfig.xl_3b,
}


# ---------------------------------------------------------------- embeddings


def timestep_features(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(...) t in [0, 1] -> (..., dim) sinusoidal features of 1000 t (as DiT's integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_angles(positions: Tensor, axes: tuple[int, int, int], theta: float,
                extent: tuple[int, int, int] | None = None) -> tuple[Tensor, Tensor]:
    """(..., L, 3) integer positions -> cos, sin (..., L, head_dim / 2), float32.

    Axis a (t, h or w) gets axes[a] channels: axes[a] / 2 frequencies theta^(-2i / axes[a]).
    Angles are computed in float64, so that shifted positions give the same rotations to fp32.
    extent: the trained token grid (DiTConfig.trained_extent); a sample beyond it has its angles
    scaled into the trained range (`position_scale`, `frequency_scale`).
    """
    scale = position_scale(positions, extent)  # (..., 1, 3) or None
    parts = []
    for a, d in enumerate(axes):
        inv = theta ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float64) / d)  # (d/2,)
        if scale is not None:
            inv = inv * frequency_scale(inv, scale[..., a, None], extent[a])  # (..., 1, d/2)
        parts.append(positions[..., a, None].double() * inv)  # (..., L, d/2)
    ang = torch.cat(parts, dim=-1)  # (..., L, head_dim/2)
    return ang.cos().float(), ang.sin().float()


RAMP = (1.0, 2.0)  # turns inside the extent: up to 1 interpolated, from 2 kept, a ramp between


def position_scale(positions: Tensor, extent: tuple[int, int, int] | None) -> Tensor | None:
    """(..., L, 3) positions of one sample a row -> (..., 1, 3) float64 factor of each axis, or
    None when every row lies inside the trained extent (the common case: nothing changes).

    A row whose grid (largest position + 1) exceeds the extent in h or w gets one factor for both
    spatial axes, min(extent / grid) over them, so a 1920x1080 frame is seen at the scale of the
    largest trained frame of its aspect; t has its own factor when extent[0] > 0 (0: never).
    """
    if extent is None:
        return None
    grid = positions.amax(dim=-2, keepdim=True).double() + 1  # (..., 1, 3)
    ext = torch.tensor(extent, device=positions.device, dtype=torch.float64)
    ratio = torch.where(ext > 0, ext / grid, torch.ones_like(grid)).clamp(max=1.0)  # (..., 1, 3)
    spatial = ratio[..., 1:].amin(dim=-1, keepdim=True)  # (..., 1, 1): one factor keeps the aspect
    scale = torch.cat([ratio[..., :1], spatial, spatial], dim=-1)
    return None if bool((scale == 1).all()) else scale


def frequency_scale(inv: Tensor, scale: Tensor, extent: int) -> Tensor:
    """Per frequency, the factor of its angle: interpolation by parts, as YaRN does for text.

    Rotations that turn less than once inside the trained extent say where in the frame a token
    is: they are slowed by `scale`, so the whole frame falls inside the angles trained (one sky,
    one ground, instead of the scene repeated). Those that turn at least twice tell neighbours
    apart: every angle of them was seen, so they are kept, and neighbouring tokens stay as far
    apart as in training (plain interpolation squeezes them and blurs every edge into a grid).
    In between, a linear ramp. inv (d/2,), scale (..., 1, 1) -> (..., 1, d/2).
    """
    if extent <= 0:
        return torch.ones_like(inv)
    turns = extent * inv / (2 * math.pi)
    keep = ((turns - RAMP[0]) / (RAMP[1] - RAMP[0])).clamp(0.0, 1.0)  # 0: interpolate, 1: keep
    return scale * (1 - keep) + keep


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (B, H, L, d) by the angles (B or 1, 1, L, d/2), in float32:
    each pair as a complex number times e^(i angle), one complex multiply (no stacking of halves)."""
    pairs = rearrange(x.float(), "... (d two) -> ... d two", two=2).contiguous()  # (B, H, L, d/2, 2)
    out = torch.view_as_real(torch.view_as_complex(pairs) * torch.complex(cos, sin))  # (B, H, L, d/2, 2)
    return rearrange(out, "... d two -> ... (d two)").type_as(x)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


# ---------------------------------------------------------------- attention


@dataclass
class AttentionMasks:
    """Masks shared by every block of one forward pass.

    self_mask:  None (each row one sample: full attention), a bool (1, 1, L, L) block-diagonal
                mask for SDPA, or a flex BlockMask over document ids
    cross_mask: a bool (B, 1, L or 1, K) mask for SDPA, or a flex BlockMask; True = attend
    """

    self_mask: Tensor | BlockMask | None
    cross_mask: Tensor | BlockMask


_compiled_flex = None


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | BlockMask | None) -> Tensor:
    """q (B, H, Lq, d), k, v (B, H, Lk, d) -> (B, H, Lq, d); a BlockMask selects flex attention."""
    if isinstance(mask, BlockMask):
        global _compiled_flex
        if q.is_cuda:  # the fused kernel exists only compiled; eager materialises the scores
            if _compiled_flex is None:
                _compiled_flex = torch.compile(flex_attention)
            return _compiled_flex(q, k, v, block_mask=mask)
        return flex_attention(q, k, v, block_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _block_mask(mask_mod, q_len: int, kv_len: int, device: torch.device) -> BlockMask:
    # On a GPU the block mask is built by a compiled kernel, without an L x L tensor.
    return create_block_mask(mask_mod, None, None, q_len, kv_len, device=device, _compile=device.type == "cuda")


def _qk_norm(dim: int, heads: int, across: bool) -> nn.RMSNorm:
    """RMSNorm of queries or keys: per head (head_dim wide) or across all heads (dim wide)."""
    return nn.RMSNorm(dim if across else dim // heads, eps=1e-6)


def split_linear(linear: nn.Module, x: Tensor, parts: int) -> tuple[Tensor, ...]:
    """A fused projection's outputs (q, k, v or k, v). A plain Linear runs one product per part, so
    each comes out contiguous (slicing one product's output would leave strided q, k, v, which the
    norms and attention read more slowly); a wrapped one (a LoRA adapter) runs as its wrapper says."""
    if type(linear) is nn.Linear:
        return tuple(F.linear(x, w, b) for w, b in zip(linear.weight.chunk(parts), linear.bias.chunk(parts)))
    return tuple(part.contiguous() for part in linear(x).chunk(parts, dim=-1))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, across: bool = False):
        super().__init__()
        self.heads = heads
        self.across = across  # the norms see all heads at once (before the split into heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = _qk_norm(dim, heads, across)
        self.k_norm = _qk_norm(dim, heads, across)
        self.proj = nn.Linear(dim, dim)
        self.sp_group = None  # a sequence-parallel group: x holds this rank's tokens (`kinema.parallel`)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | BlockMask | None) -> Tensor:
        q, k, v = split_linear(self.qkv, x, 3)  # (B, L, D) each
        if self.across:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(a, "b l (h d) -> b h l d", h=self.heads) for a in (q, k, v))  # (B, H, L, d)
        if not self.across:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.sp_group is None:
            out = attend(q, k, v, mask)  # (B, H, L, d)
        else:  # Ulysses: every token, this rank's heads; then back to this rank's tokens, every head
            from kinema.parallel import heads_to_seq, seq_to_heads

            q, k, v = (seq_to_heads(a, self.sp_group) for a in (q, k, v))  # (B, H/K, L, d)
            out = heads_to_seq(attend(q, k, v, mask), self.sp_group)  # (B, H, L/K, d)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, across: bool = False):
        super().__init__()
        self.heads = heads
        self.across = across
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = _qk_norm(dim, heads, across)
        self.k_norm = _qk_norm(dim, heads, across)
        self.proj = nn.Linear(dim, dim)

    def keys(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Caption tokens (B or 1, K, D) -> normed keys and values (B or 1, H, K, d)."""
        k, v = split_linear(self.kv, context, 2)  # (B, K, D) each
        if self.across:
            k = self.k_norm(k)
        k, v = (rearrange(a, "b k (h d) -> b h k d", h=self.heads) for a in (k, v))  # (B, H, K, d)
        return (k if self.across else self.k_norm(k)), v

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | BlockMask) -> Tensor:
        # x: (B, L, D); context: (B or 1, K, D) caption tokens
        q = self.q(x)  # (B, L, D)
        if self.across:
            q = self.q_norm(q)
        q = rearrange(q, "b l (h d) -> b h l d", h=self.heads)  # (B, H, L, d)
        if not self.across:
            q = self.q_norm(q)
        k, v = self.keys(context)  # (B, H, K, d)
        out = attend(q, k, v, mask)  # (B, H, L, d)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, kind: str):
        super().__init__()
        self.kind = kind
        self.up = nn.Linear(dim, 2 * hidden if kind == "swiglu" else hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            a, b = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(a) * b)
        return self.down(F.gelu(self.up(x), approximate="tanh"))


# ---------------------------------------------------------------- blocks


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        D = config.hidden
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        across = config.qk_norm == "across"
        self.attn = SelfAttention(D, config.heads, across)
        self.norm2 = nn.LayerNorm(D, eps=1e-6)
        self.cross = CrossAttention(D, config.heads, across)
        self.norm3 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(D, config.mlp_hidden, config.mlp)
        self.mod_table = nn.Parameter(torch.zeros(6, D))  # added to the shared modulation
        self.cross_table = nn.Parameter(torch.zeros(D)) if config.cross_gate else None  # added to the shared gate

    def forward(
        self, x: Tensor, mod: Tensor, cos: Tensor, sin: Tensor, context: Tensor, masks: AttentionMasks,
        gate: Tensor | None = None,
    ) -> Tensor:
        # x: (B, L, D); mod: (B, L, 6, D) shared modulation; gate: (B, L, D) shared cross gate or None
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.mod_table).unbind(dim=-2)  # 6 x (B, L, D)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin, masks.self_mask)
        cross = self.cross(self.norm2(x), context, masks.cross_mask)
        x = x + (cross if gate is None else (1 + gate + self.cross_table) * cross)
        x = x + gate2 * self.mlp(modulate(self.norm3(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    """LN, shift and scale from c, then the output projection. The shift and scale come from
    Linear(SiLU(c)) (kind "linear"), or from a learned (2, D) table plus c itself ("table", Wan)."""

    def __init__(self, dim: int, out_dim: int, kind: str = "linear"):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mod = nn.Linear(dim, 2 * dim) if kind == "linear" else None
        self.mod_table = nn.Parameter(torch.zeros(2, dim)) if kind == "table" else None
        self.out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if self.mod is not None:
            shift, scale = self.mod(F.silu(c)).chunk(2, dim=-1)  # (B, L, D) each
        else:
            shift, scale = (self.mod_table + c[..., None, :]).unbind(dim=-2)  # (B, L, D) each
        return self.out(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Text-conditioned diffusion transformer over spacetime patch tokens (see the module doc).

    attention:     "sdpa" (dense block-diagonal masks for packed sequences) or "flex" (BlockMask);
                   an attribute, free to change between calls; it is not part of the weights.
                   On a CPU with gradients enabled "flex" falls back to the SDPA masks, because
                   torch has no flex-attention backward on a CPU
    checkpointing: recompute each block in the backward pass (torch.utils.checkpoint)

    For FSDP2, shard each of `blocks` and then the root; to build large models without memory,
    construct under torch.device("meta"), then `to_empty(device=...)` and `init_weights()`.
    """

    def __init__(self, config: DiTConfig, attention: str = "sdpa", checkpointing: bool = False):
        super().__init__()
        if attention not in ("sdpa", "flex"):
            raise KinemaError(f"attention must be 'sdpa' or 'flex', not {attention!r}")
        self.config = config
        self.attention = attention
        self.checkpointing = checkpointing
        D = config.hidden
        self.x_embed = nn.Linear(config.token_dim, D)
        self.t_embed = nn.Sequential(nn.Linear(config.freq_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.text_norm = nn.RMSNorm(config.text_dim, eps=1e-6) if config.text_norm else nn.Identity()
        self.text_embed = nn.Sequential(nn.Linear(config.text_dim, D), nn.GELU(approximate="tanh"), nn.Linear(D, D))
        self.text_pool = (
            nn.Sequential(nn.Linear(config.text_dim, D), nn.SiLU(), nn.Linear(D, D)) if config.pooled_text else None
        )
        self.t_mod = nn.Linear(D, 6 * D)
        self.cross_gate = nn.Linear(D, D) if config.cross_gate else None
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.depth))
        self.final = FinalLayer(D, config.token_dim, config.final_mod)
        self.sp_group = None
        self.row_group = None
        self.init_weights()

    @classmethod
    def empty(cls, config: DiTConfig) -> DiT:
        """A DiT of this config on the meta device, its weights not initialised: for a file that
        gives every weight (`kinema.models.hf.assign_weights`). Only the meta device makes it free;
        call it under `torch.device("meta")`."""
        dit = _Unset(config)
        dit.__class__ = cls
        return dit

    def row_parallel(self, group) -> DiT:
        """Split a batch of as many rows as `group` has ranks (guidance's caption and negative
        caption) over them: rank r computes row r, and the rows are gathered (None: off). It
        composes with `sequence_parallel` on the other dimension of a (rows x sequence) mesh."""
        self.row_group = group
        return self

    def sequence_parallel(self, group) -> DiT:
        """Split each sequence over the ranks of `group` (`kinema.parallel`; None: off). Every rank
        of the group then calls forward with the same whole inputs and gets the whole output."""
        if group is not None:
            import torch.distributed as dist

            K = dist.get_world_size(group)
            if self.config.heads % K:
                raise KinemaError(f"sequence parallelism over {K} ranks needs the heads ({self.config.heads}) "
                                  "to split evenly among them")  # fmt: skip
        self.sp_group = group
        for block in self.blocks:
            block.attn.sp_group = group
        return self

    @torch.no_grad()
    def init_weights(self) -> None:
        """DiT initialisation: Xavier linears, N(0, 0.02) timestep MLP, adaLN-Zero zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                m.reset_parameters()
        for lin in (self.t_embed[0], self.t_embed[2]):
            nn.init.normal_(lin.weight, std=0.02)
        zero = [self.t_mod, self.final.out] + [m for m in (self.cross_gate, self.final.mod) if m is not None]
        if self.final.mod_table is not None:
            nn.init.zeros_(self.final.mod_table)
        for blk in self.blocks:
            nn.init.zeros_(blk.mod_table)
            if blk.cross_table is not None:
                nn.init.zeros_(blk.cross_table)
            zero.append(blk.cross.proj)
        for lin in zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------ conditioning

    def conditioning(self, t: Tensor, pooled: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-token conditioning vector c (B, L, D) and shared modulation (B, L, 6, D).

        t: (B, L) per-token time; pooled: (B or 1, L or 1, D) projected caption vector or None.
        """
        c = self.t_embed(timestep_features(t, self.config.freq_dim).to(self.x_embed.weight.dtype))  # (B, L, D)
        if pooled is not None:
            c = c + pooled
        mod = rearrange(self.t_mod(F.silu(c)), "b l (six d) -> b l six d", six=6)  # (B, L, 6, D)
        return c, mod

    def _text_and_masks(
        self, text: Tensor, text_mask: Tensor, B: int, L: int, doc_ids: Tensor | None, text_doc: Tensor | None,
        mine: slice | None = None,
    ) -> tuple[Tensor, AttentionMasks, Tensor | None]:
        """Caption keys, attention masks and per-token pooled caption vectors for one forward.
        mine: the tokens this rank holds under sequence parallelism (the self-attention mask
        spans all L tokens, the cross-attention mask and pooled vectors only these)."""
        Bt, Lt, _ = text.shape
        dev = text.device
        text = self.text_norm(text)  # (Bt, Lt, Dt)
        ctx = self.text_embed(text)  # (Bt, Lt, D)
        pooled = None
        if self.text_pool is not None:
            w = text_mask.to(text.dtype)[..., None]  # (Bt, Lt, 1)
            mean = (text * w).sum(1) / w.sum(1).clamp(min=1)  # (Bt, Dt) over real tokens
            pooled = self.text_pool(mean)  # (Bt, D)

        if doc_ids is None:  # one sample a row: row b reads caption text_doc[b]
            rows = text_doc if text_doc is not None else torch.arange(B, device=dev)
            if rows.shape != (B,) or (text_doc is None and Bt != B):
                raise KinemaError(
                    f"{B} token rows need {B} captions or a text_doc of {B} caption indices; got {Bt} captions"
                )
            self_mask = None
            cross_mask = text_mask[rows][:, None, None, :]  # (B, 1, 1, Lt)
            pooled_tok = pooled[rows][:, None, :] if pooled is not None else None  # (B, 1, D)
            return ctx[rows], AttentionMasks(self_mask, cross_mask), pooled_tok

        # packed: B = 1, token i belongs to sample doc_ids[i] (-1: padding) and reads the caption
        # text_doc[doc_ids[i]]; the caption keys of every row are laid side by side
        if B != 1 or doc_ids.shape != (L,):
            raise KinemaError(f"a packed sequence has tokens (1, L) and doc_ids (L,); got B = {B}, doc_ids {tuple(doc_ids.shape)}")
        rows = text_doc if text_doc is not None else torch.arange(Bt, device=dev)
        text_row = rows[doc_ids.clamp(min=0)]  # (L,) caption row of each token
        key_row = torch.arange(Bt, device=dev).repeat_interleave(Lt)  # (K,) K = Bt * Lt
        key_ok = text_mask.reshape(-1)  # (K,)
        context = rearrange(ctx, "bt lt d -> 1 (bt lt) d")  # (1, K, D)
        first, last = (mine.start, mine.stop) if mine is not None else (0, L)  # the queries of cross-attention
        pooled_tok = pooled[text_row[first:last]][None] if pooled is not None else None  # (1, L, D)
        # torch has no flex-attention backward on a CPU: there, training uses the SDPA masks
        # (same result), and flex serves inference
        if self.attention == "flex" and not (dev.type == "cpu" and torch.is_grad_enabled()):

            def same_doc(b, h, q, kv):
                return doc_ids[q] == doc_ids[kv]

            def own_caption(b, h, q, kv):
                return (text_row[q + first] == key_row[kv]) & key_ok[kv]

            masks = AttentionMasks(
                _block_mask(same_doc, L, L, doc_ids.device), _block_mask(own_caption, last - first, Bt * Lt, dev)
            )
        else:
            self_mask = (doc_ids[:, None] == doc_ids[None, :])[None, None]  # (1, 1, L, L)
            cross_mask = ((text_row[first:last, None] == key_row[None, :]) & key_ok[None, :])[None, None]  # (1, 1, L, K)
            masks = AttentionMasks(self_mask, cross_mask)
        return context, masks, pooled_tok

    # ------------------------------------------------------------ forward

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        t: Tensor,
        text: Tensor,
        text_mask: Tensor,
        doc_ids: Tensor | None = None,
        text_doc: Tensor | None = None,
    ) -> Tensor:
        """Predict the velocity v of every token.

        tokens:    (B, L, C*pt*ph*pw) noisy patch tokens (x_t); B = 1 for a packed sequence
        positions: (L, 3) or (B, L, 3) integer (t, h, w) of each token within its sample
        t:         (B, L) per-token time in [0, 1], 0 = clean (conditioning tokens), or (B,) per row
        text:      (B_text, L_text, text_dim) caption tokens from a TextEncoder
        text_mask: (B_text, L_text) bool, True on real caption tokens (each row needs at least one)
        doc_ids:   (L,) long, sample index of each token of a packed sequence (-1: padding),
                   see `patches.pack`; None: each of the B rows is one sample
        text_doc:  (S,) long, caption row of each sample (packed) or of each row (unpacked);
                   None: sample i reads caption i
        returns:   (B, L, C*pt*ph*pw) velocity, same shape as tokens
        """
        B, L, _ = tokens.shape
        cfg = self.config
        if t.ndim == 1:
            t = t[:, None].expand(B, L)  # (B, L)
        if t.shape != (B, L):
            raise KinemaError(f"t must be (B, L) = {(B, L)} or (B,); got {tuple(t.shape)}")
        if positions.shape[-2:] != (L, 3):
            raise KinemaError(f"positions must be (L, 3) or (B, L, 3) with L = {L}; got {tuple(positions.shape)}")
        if text.shape[:2] != text_mask.shape or text.shape[-1] != cfg.text_dim:
            raise KinemaError(
                f"text must be (B_text, L_text, {cfg.text_dim}) with a (B_text, L_text) mask; "
                f"got {tuple(text.shape)} and {tuple(text_mask.shape)}"
            )
        text_mask = text_mask.bool()
        if self.row_group is not None and doc_ids is None and B > 1:
            return self._row_parallel_forward(tokens, positions, t, text, text_mask, text_doc)
        if self.sp_group is not None:
            return self._sequence_parallel_forward(tokens, positions, t, text, text_mask, doc_ids, text_doc)

        x = self.x_embed(tokens)  # (B, L, D)
        context, masks, pooled = self._text_and_masks(text, text_mask, B, L, doc_ids, text_doc)
        # every token of a row at one time (sampling without pins): the conditioning of one token
        # a row, broadcast, is the same numbers for a 1/L of the work and memory
        shared_t = doc_ids is None and bool((t == t[:, :1]).all())
        c, mod = self.conditioning(t[:, :1] if shared_t else t, pooled)  # (B, L or 1, D), (B, L or 1, 6, D)
        gate = self.cross_gate(F.silu(c)) if self.cross_gate is not None else None  # (B, L or 1, D)
        extent = cfg.trained_extent if doc_ids is None else None  # packed (training): as they are
        cos, sin = rope_angles(positions, cfg.rope_split, cfg.rope_theta, extent)  # (L or B L, d/2)
        if cos.ndim == 2:
            cos, sin = cos[None, None], sin[None, None]  # (1, 1, L, d/2)
        else:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, d/2)

        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mod, cos, sin, context, masks, gate, use_reentrant=False)
            else:
                x = block(x, mod, cos, sin, context, masks, gate)  # (B, L, D)
        return self.final(x, c)  # (B, L, C*pt*ph*pw)

    def _row_parallel_forward(self, tokens: Tensor, positions: Tensor, t: Tensor, text: Tensor, text_mask: Tensor,
                              text_doc: Tensor | None) -> Tensor:  # fmt: skip
        """`forward` of an unpacked batch with each rank of `row_group` computing one row."""
        import torch.distributed as dist

        B = tokens.shape[0]
        R, r = dist.get_world_size(self.row_group), dist.get_rank(self.row_group)
        if B != R:
            raise KinemaError(f"a row-parallel forward takes {R} rows, one a rank; got {B}")
        rows = text_doc if text_doc is not None else torch.arange(B, device=tokens.device)
        row_group, self.row_group = self.row_group, None  # this rank's row: an ordinary forward
        try:
            mine = self.forward(tokens[r : r + 1], positions[r : r + 1] if positions.ndim == 3 else positions,
                                t[r : r + 1], text, text_mask, text_doc=rows[r : r + 1])  # fmt: skip
        finally:
            self.row_group = row_group
        parts = [torch.empty_like(mine) for _ in range(R)]
        dist.all_gather(parts, mine.contiguous(), group=row_group)  # sampling only: no gradient through it
        return torch.cat(parts)

    def _sequence_parallel_forward(self, tokens: Tensor, positions: Tensor, t: Tensor, text: Tensor,
                                   text_mask: Tensor, doc_ids: Tensor | None, text_doc: Tensor | None) -> Tensor:  # fmt: skip
        """`forward` with this rank's share of the tokens (see `kinema.parallel`): the sequence is
        padded to a multiple of the group, each rank runs its slice through every block (self-
        attention trades slices for heads and back), and the slices are gathered."""
        from kinema.parallel import gather_sequence, local_slice

        B, L, _ = tokens.shape
        cfg = self.config
        padded, mine = local_slice(L, self.sp_group)
        pad = padded - L
        valid = None
        if pad:
            tokens = F.pad(tokens, (0, 0, 0, pad))
            positions = F.pad(positions, (0, 0, 0, pad))
            t = F.pad(t, (0, pad))
            if doc_ids is not None:
                doc_ids = F.pad(doc_ids, (0, pad), value=-1)  # padding: a document of its own
            else:
                valid = torch.arange(padded, device=tokens.device) < L
        context, masks, pooled = self._text_and_masks(text, text_mask, B, padded, doc_ids, text_doc, mine)
        if valid is not None:  # unpacked and padded: the real tokens are the only keys
            masks = AttentionMasks(valid[None, None, None, :], masks.cross_mask)
        shared_t = doc_ids is None and bool((t[:, :L] == t[:, :1]).all())
        c, mod = self.conditioning(t[:, :1] if shared_t else t[:, mine], pooled)
        gate = self.cross_gate(F.silu(c)) if self.cross_gate is not None else None
        extent = cfg.trained_extent if doc_ids is None else None
        cos, sin = rope_angles(positions, cfg.rope_split, cfg.rope_theta, extent)  # the whole sample's scale
        cos, sin = cos[..., mine, :], sin[..., mine, :]
        cos, sin = (cos[None, None], sin[None, None]) if cos.ndim == 2 else (cos[:, None], sin[:, None])
        x = self.x_embed(tokens[:, mine])  # (B, L/K, D)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mod, cos, sin, context, masks, gate, use_reentrant=False)
            else:
                x = block(x, mod, cos, sin, context, masks, gate)
        return gather_sequence(self.final(x, c), self.sp_group)[:, :L]  # (B, L, C*pt*ph*pw)

    # ------------------------------------------------------------ sizes

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int, text_len: int) -> float:
        """Forward FLOPs per token; see DiTConfig.flops_per_token."""
        return self.config.flops_per_token(seq_len, text_len)


# ---------------------------------------------------------------- memory: streaming blocks


def offload_blocks(dit: DiT, device: torch.device | str, frozen_only: bool = False) -> DiT:
    """Keep the DiT's blocks in CPU memory and bring each to `device` only for its own forward
    (hooks on every block): the accelerator then holds the embeddings, the final layer and one
    block at a time, for the time of copying each block's weights once a forward. Everything
    but the blocks goes to `device`. On a CUDA device the CPU copies are pinned, so the copies
    are asynchronous. Returns the DiT (changed in place).

    frozen_only (training LoRA adapters on a frozen base): only the frozen weights of a block
    travel; the trained ones (the adapters) stay on `device`, where their gradients and optimizer
    state are. With activation checkpointing the backward pass recomputes each block, and the
    hooks bring its weights again; without it autograd would keep every block's device copy."""
    device = torch.device(device)
    for name, child in dit.named_children():
        if name != "blocks":
            child.to(device)
    for p in dit.parameters(recurse=False):
        p.data = p.data.to(device)
    pin = device.type == "cuda"
    for block in dit.blocks:
        travel = {n: p for n, p in block.named_parameters() if not (frozen_only and p.requires_grad)}
        for n, p in block.named_parameters():
            p.data = p.data.to("cpu" if n in travel else device)
            if pin and n in travel:
                p.data = p.data.pin_memory()
        cpu = {n: p.data for n, p in travel.items()}

        def bring(module, args, device=device, travel=travel):
            for p in travel.values():
                p.data = p.data.to(device, non_blocking=True)

        def send_back(module, args, output, cpu=cpu, travel=travel):
            for n, p in travel.items():
                p.data = cpu[n]  # the CPU copy never changed: drop the device copy

        block.register_forward_pre_hook(bring)
        block.register_forward_hook(send_back)
    return dit


class _Unset(DiT):
    """`DiT.empty`'s build: a DiT whose constructor leaves the weights as they are (on the meta
    device a normal_ would also cost a second of lazy imports)."""

    def init_weights(self) -> None:
        pass
