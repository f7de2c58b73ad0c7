"""Text: caption encoders for the DiT's cross-attention, and caption dropout for guidance.

    encoder = load_text_encoder("builtin:weights/text")   # or "hf:/path/to/t5"
    tokens, mask = encoder(["a red ball bounces"])        # (B, L, D) float, (B, L) bool
"""

from kinema.text.encoder import (
    BuiltinTextEncoder,
    HFTextEncoder,
    TextEncoder,
    TextEncoderConfig,
    WordTokenizer,
    drop_captions,
    load_text_encoder,
)
from kinema.text.umt5 import WanTextEncoder, load_umt5

__all__ = [
    "BuiltinTextEncoder",
    "HFTextEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "WanTextEncoder",
    "WordTokenizer",
    "drop_captions",
    "load_text_encoder",
    "load_umt5",
]
