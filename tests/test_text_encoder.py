import sys

import pytest
import torch

from kinema.errors import KinemaError
from kinema.text import (
    BuiltinTextEncoder,
    HFTextEncoder,
    TextEncoder,
    TextEncoderConfig,
    WordTokenizer,
    drop_captions,
    load_text_encoder,
)

CAPTIONS = ["A red ball bounces on green grass.", "Two blue squares slide left", ""]
SMALL = TextEncoderConfig(dim=32, depth=2, heads=2, max_length=16)


def encoder(seed=0) -> BuiltinTextEncoder:
    torch.manual_seed(seed)
    return BuiltinTextEncoder.from_texts(CAPTIONS, SMALL).eval()


def test_tokenizer_lowercases_splits_punctuation_and_maps_unknown_words():
    tok = WordTokenizer(["a", "red", "ball", "."])
    assert tok.vocab[:3] == ["<pad>", "<unk>", "<bos>"]
    ids = tok.encode("A RED ball, purple.")
    assert ids == [tok.bos_id, tok.index["a"], tok.index["red"], tok.index["ball"], tok.unk_id, tok.unk_id, tok.index["."]]
    assert tok.encode("") == [tok.bos_id]
    assert len(tok.encode("a " * 100, max_length=8)) == 8
    built = WordTokenizer.from_texts(["b a a", "c a b"], max_size=5)
    assert built.vocab == ["<pad>", "<unk>", "<bos>", "a", "b"]


def test_builtin_encoder_shapes_and_mask():
    enc = encoder()
    assert isinstance(enc, TextEncoder) and enc.dim == 32
    tokens, mask = enc(CAPTIONS)
    lengths = [1 + 8, 1 + 5, 1]  # <bos> + words and punctuation
    assert tokens.shape == (3, max(lengths), 32) and tokens.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == lengths
    assert torch.equal(tokens[~mask], torch.zeros_like(tokens[~mask]))
    assert torch.isfinite(tokens).all()
    with pytest.raises(KinemaError):
        enc("a single string")


def test_padding_does_not_change_a_captions_tokens():
    enc = encoder()
    with torch.no_grad():
        alone, m1 = enc([CAPTIONS[1]])
        batch, m2 = enc(CAPTIONS)
    n = int(m1.sum())
    torch.testing.assert_close(alone[0, :n], batch[1, :n], atol=1e-6, rtol=0)


def test_unknown_words_share_the_unk_embedding():
    enc = encoder()
    with torch.no_grad():
        a, _ = enc(["a zebra ball"])
        b, _ = enc(["a giraffe ball"])
    torch.testing.assert_close(a, b)


def test_save_load_round_trip(tmp_path):
    enc = encoder(seed=3)
    enc.save(tmp_path / "te")
    assert sorted(p.name for p in (tmp_path / "te").iterdir()) == ["text_encoder.json", "text_encoder.safetensors"]
    for spec in (f"builtin:{tmp_path / 'te'}", str(tmp_path / "te")):
        loaded = load_text_encoder(spec)
        assert isinstance(loaded, BuiltinTextEncoder)
        assert loaded.tokenizer.vocab == enc.tokenizer.vocab and loaded.config == enc.config
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(CAPTIONS), enc(CAPTIONS), atol=0, rtol=0)
    with pytest.raises(KinemaError, match="no builtin text encoder"):
        BuiltinTextEncoder.load(tmp_path / "missing")


def test_unknown_spec_raises():
    with pytest.raises(KinemaError, match="unknown text encoder"):
        load_text_encoder("t5-xxl")


def test_hf_bad_path_raises(tmp_path):
    with pytest.raises(KinemaError, match="not a directory"):
        load_text_encoder(f"hf:{tmp_path / 'nowhere'}")


def test_hf_without_transformers_raises(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # an install without it: the import fails
    with pytest.raises(KinemaError, match="pip install transformers"):
        HFTextEncoder(tmp_path)


def test_drop_captions():
    caps = [f"caption {i}" for i in range(1000)]
    g = torch.Generator().manual_seed(0)
    assert drop_captions(caps, 0.0, g) == caps
    assert drop_captions(caps, 1.0, g) == [""] * 1000
    dropped = drop_captions(caps, 0.1, torch.Generator().manual_seed(1))
    assert dropped == drop_captions(caps, 0.1, torch.Generator().manual_seed(1))
    assert 60 < sum(d == "" for d in dropped) < 140
    assert all(d in ("", c) for d, c in zip(dropped, caps, strict=True))
