"""Kinema's umT5 encoder equals transformers' UMT5EncoderModel, and WanTextEncoder equals diffusers'
WanPipeline prompt embeddings, on tiny random models and a tiny tokenizer built here (no network)."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.errors import KinemaError
from kinema.text import WanTextEncoder, load_umt5
from kinema.text.umt5 import UMT5Config, clean_prompt, load_wan_tokenizer, relative_position_bucket

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TOL = 1e-5
WORDS = "a red ball bounces on the grass cat dog runs jumps over fence blue sky slowly".split()

SHAPES = {
    "d32-h2-l2": dict(d_model=32, d_kv=16, num_heads=2, num_layers=2, d_ff=48),
    "d64-h4-l3": dict(d_model=64, d_kv=8, num_heads=4, num_layers=3, d_ff=96),  # heads * d_kv != d_model
    "d32-h4-l2-relu": dict(d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=40, feed_forward_proj="relu"),
}


def _hf_model(seed: int, **kw):
    """A random transformers UMT5EncoderModel whose weights are none of them trivially 0 or 1."""
    torch.manual_seed(seed)
    config = transformers.UMT5Config(
        vocab_size=64, relative_attention_num_buckets=32, relative_attention_max_distance=128, **kw
    )
    model = transformers.UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.normal_(1.0, 0.2)
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)  # large enough that a wrong bucket or a missing bias shows
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A T5-style tokenizer: Unigram over a few words and the letters, </s> appended, <pad>=0 </s>=1 <unk>=2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -1.0 - i / 10) for i, w in enumerate(WORDS)]
    vocab += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    wrapped = transformers.T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    )
    d = tmp_path_factory.mktemp("wan") / "tokenizer"
    wrapped.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def wan_dirs(tmp_path_factory, tokenizer_dir):
    model = _hf_model(7, d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=40)  # gated-gelu, as umT5
    d = tmp_path_factory.mktemp("wan") / "text_encoder"
    model.save_pretrained(d)
    return model, d, tokenizer_dir


def _padded_batch(lengths, L, vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), L), generator=g)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)
    return ids.masked_fill(~mask, 0), mask


# ---------------------------------------------------------------- the encoder


def test_relative_buckets_match_transformers():
    config = transformers.UMT5Config(vocab_size=8, d_model=8, d_kv=4, num_heads=2, num_layers=1, d_ff=8)
    attn = transformers.UMT5EncoderModel(config).encoder.block[0].layer[0].SelfAttention
    offsets = torch.arange(-700, 701)
    for buckets, distance in [(32, 128), (64, 256)]:
        attn.relative_attention_num_buckets, attn.relative_attention_max_distance = buckets, distance
        want = attn._relative_position_bucket(offsets)
        assert torch.equal(relative_position_bucket(offsets, buckets, distance), want)


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_matches_transformers(shape, tmp_path):
    ref = _hf_model(1, **SHAPES[shape])
    ref.save_pretrained(tmp_path)
    ours = load_umt5(tmp_path)
    assert ours.config == UMT5Config(vocab_size=64, **SHAPES[shape])
    ids, mask = _padded_batch([150, 37, 5, 1], L=150)  # offsets past max_distance, a one-token row
    with torch.no_grad():
        got = ours(ids, mask)
        for impl in ("sdpa", "eager"):
            ref.set_attn_implementation(impl)
            want = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            assert (got - want).abs().max().item() <= TOL, impl
        full = ids[:, :40]
        assert (ours(full) - ref(input_ids=full).last_hidden_state).abs().max().item() <= TOL


def test_sharded_checkpoint_loads_the_same(tmp_path):
    ref = _hf_model(2, **SHAPES["d64-h4-l3"])
    ref.save_pretrained(tmp_path / "one")
    ref.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    one, shards = load_umt5(tmp_path / "one"), load_umt5(tmp_path / "shards")
    for (k, a), (_, b) in zip(one.state_dict().items(), shards.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_embedding_under_its_tied_name_loads(tmp_path):
    """A checkpoint may hold the tied embedding as encoder.embed_tokens.weight instead of shared.weight."""
    ref = _hf_model(3, **SHAPES["d32-h2-l2"])
    ref.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["encoder.embed_tokens.weight"] = state.pop("shared.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    assert torch.equal(load_umt5(tmp_path).embed.weight, ref.shared.weight)


def test_loads_in_bfloat16(tmp_path):
    _hf_model(4, **SHAPES["d32-h2-l2"]).save_pretrained(tmp_path)
    model = load_umt5(tmp_path, dtype=torch.bfloat16)
    ids, mask = _padded_batch([9, 4], L=9)
    assert model(ids, mask).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in model.parameters())


def test_bad_folders_are_kinema_errors(tmp_path):
    with pytest.raises(KinemaError, match="config.json is missing"):
        load_umt5(tmp_path)
    _hf_model(5, **SHAPES["d32-h2-l2"]).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    weights.unlink()
    with pytest.raises(KinemaError, match="no safetensors weights"):
        load_umt5(tmp_path)
    save_file({k: v for k, v in state.items() if "block.1.layer.0.SelfAttention.q" not in k}, str(weights))
    where = re.escape(str(tmp_path))
    with pytest.raises(KinemaError, match=f"{where}.*missing encoder.block.1.layer.0.SelfAttention.q.weight"):
        load_umt5(tmp_path)
    save_file(state, str(weights))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"d_ff": 50}))
    with pytest.raises(KinemaError, match=f"{where}.*do not match"):
        load_umt5(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config | {"model_type": "t5"}))
    with pytest.raises(KinemaError, match="not umt5"):
        load_umt5(tmp_path)


# ---------------------------------------------------------------- Wan's prompt embeddings


def test_clean_prompt_matches_wan():
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    for text in ["  a &amp;amp; b\t\n c ", "x\u3000y\u00a0z\u2009w", "sep\x1cmiddle\x1f", "&lt;b&gt; caf&eacute;", ""]:
        assert clean_prompt(text) == prompt_clean(text), repr(text)


PROMPTS = [
    "a red ball bounces on the grass",
    "  the cat &amp;amp; the dog\n\n jumps   over the fence ",  # html entities twice, whitespace runs
    "",  # the unconditional caption: only </s>
    "a blue sky zzq " + "a dog runs slowly over the grass " * 6,  # unknown letters; 32 tokens truncate it
]


@pytest.mark.parametrize("max_length", [512, 32])
def test_wan_text_encoder_matches_wan_pipeline(max_length, wan_dirs):
    from diffusers import WanPipeline

    model, te_dir, tok_dir = wan_dirs
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir)
    pipe = WanPipeline(tokenizer=reference_tokenizer, text_encoder=model, vae=None, scheduler=None)
    with torch.no_grad():
        want = pipe._get_t5_prompt_embeds(PROMPTS, max_sequence_length=max_length)  # (B, max_length, D)
    encoder = WanTextEncoder(te_dir, tok_dir, max_length=max_length)
    tokens, mask = encoder(PROMPTS)
    assert encoder.dim == 32 and tokens.dtype == torch.float32
    assert tokens.shape == want.shape == (len(PROMPTS), max_length, 32)
    assert mask.shape == (len(PROMPTS), max_length) and mask.dtype == torch.bool and bool(mask.all())
    assert (tokens - want).abs().max().item() <= TOL
    # the same ids as transformers' tokenizer, and the long prompt really was truncated
    ours = [e.ids for e in load_wan_tokenizer(tok_dir, max_length).encode_batch([clean_prompt(p) for p in PROMPTS])]
    theirs = reference_tokenizer(
        [clean_prompt(p) for p in PROMPTS], padding="max_length", max_length=max_length, truncation=True
    ).input_ids
    assert ours == theirs
    if max_length == 32:
        assert ours[-1][-1] == 1 and 0 not in ours[-1]  # cut to 31 tokens + </s>
    lengths = [r.index(0) if 0 in r else max_length for r in ours]
    for row, n in zip(tokens, lengths, strict=True):
        assert bool((row[n:] == 0).all()) and bool((row[:n].abs().sum(-1) > 0).all())


def test_wan_tokens_can_be_saved_for_backward(wan_dirs):
    """The encoder runs under inference_mode, but its outputs can feed a layer that is trained."""
    _, te_dir, tok_dir = wan_dirs
    tokens, _ = WanTextEncoder(te_dir, tok_dir, max_length=16)(["a cat"])
    head = torch.nn.Linear(32, 1)
    head(tokens).sum().backward()
    assert head.weight.grad is not None


def test_wan_missing_tokenizer_is_a_kinema_error(wan_dirs, tmp_path):
    _, te_dir, _ = wan_dirs
    (tmp_path / "spiece.model").write_bytes(b"")
    with pytest.raises(KinemaError, match="tokenizer.json is missing"):
        WanTextEncoder(te_dir, tmp_path)
    with pytest.raises(KinemaError, match="list of captions"):
        WanTextEncoder(wan_dirs[1], wan_dirs[2], max_length=8)("one string")
