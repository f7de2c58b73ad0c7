"""Small random Wan 2.1 models built with the reference classes (diffusers, transformers), saved as
a diffusers folder: the oracle of Kinema's Wan loader. Test-only: diffusers and transformers are
development extras, never imports of Kinema itself."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a red ball bounces on green grass blue sky the cat walks slowly over wet sand under grey "
         "clouds camera pans left right fast small big dog runs through snow at night").split()  # fmt: skip


def perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter: zero- and one-initialised weights then matter, so a wrong
    weight mapping cannot hide behind them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale)
    return module


def tiny_tokenizer():
    """A word-level tokenizer that, like T5's, ends every caption with </s> and pads with <pad>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_transformer(heads: int = 2, head_dim: int = 12, layers: int = 2, channels: int = 4, text_dim: int = 16,
                     ffn: int = 40, seed: int = 0):  # fmt: skip
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                                  in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=32,
                                  ffn_dim=ffn, num_layers=layers, rope_max_seq_len=64)  # fmt: skip
    return perturb(model, seed=seed).eval()


def tiny_vae(channels: int = 4, base: int = 8, seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = AutoencoderKLWan(base_dim=base, z_dim=channels, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                             attn_scales=[], temperal_downsample=[False, True, True],
                             latents_mean=(torch.randn(channels, generator=g) * 0.3).tolist(),
                             latents_std=(torch.rand(channels, generator=g) + 0.5).tolist())  # fmt: skip
    return perturb(model, 0.05, seed).eval()


def tiny_text_encoder(d_model: int = 16, seed: int = 0):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0)  # fmt: skip
    return perturb(UMT5EncoderModel(config), 0.05, seed).eval()


def wan_pipeline(scheduler: str = "unipc", shift: float = 3.0, channels: int = 4, text_dim: int = 16, seed: int = 0,
                 **transformer_kw):  # fmt: skip
    """A reference WanPipeline of tiny random parts."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

    if scheduler == "unipc":
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                        num_train_timesteps=1000)  # fmt: skip
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    return WanPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=tiny_text_encoder(text_dim, seed),
        vae=tiny_vae(channels, seed=seed),
        transformer=tiny_transformer(channels=channels, text_dim=text_dim, seed=seed, **transformer_kw),
        scheduler=sched,
    )


def save_wan_folder(path: Path, **kw):
    """Save a tiny reference WanPipeline as a diffusers folder; returns (folder, pipeline)."""
    pipe = wan_pipeline(**kw)
    pipe.save_pretrained(str(path))
    return Path(path), pipe


def tiny_vae_22(channels: int = 8, base: int = 8, decoder_base: int = 12, seed: int = 0):
    """A tiny random Wan 2.2 TI2V VAE: Wan2.2-TI2V-5B's layout (is_residual, patch_size 2: 4x16x16,
    dim_mult [1, 2, 4, 4], a wider decoder) with few channels and one residual block a level."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = AutoencoderKLWan(base_dim=base, decoder_base_dim=decoder_base, z_dim=channels, dim_mult=[1, 2, 4, 4],
                             num_res_blocks=1, attn_scales=[], temperal_downsample=[False, True, True],
                             is_residual=True, patch_size=2, in_channels=12, out_channels=12,
                             scale_factor_spatial=16, scale_factor_temporal=4,
                             latents_mean=(torch.randn(channels, generator=g) * 0.3).tolist(),
                             latents_std=(torch.rand(channels, generator=g) + 0.5).tolist())  # fmt: skip
    return perturb(model, 0.05, seed).eval()
