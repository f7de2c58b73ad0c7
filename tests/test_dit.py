import pytest
import torch

from kinema.dit import PRESETS, DiT, DiTConfig, SelfAttention, rope_angles
from kinema.errors import KinemaError
from kinema.flow import flow_loss, interpolate, velocity
from kinema.patches import grid_size, pack, patchify, positions, unpack, unpatchify

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

CFG = DiTConfig(hidden=64, depth=2, heads=4, in_channels=4, text_dim=32)  # head dim 16: rope (4, 6, 6)


def random_model(cfg=CFG, seed=0, **kw) -> DiT:
    """A model with every weight random (a fresh one outputs zeros, which proves nothing)."""
    torch.manual_seed(seed)
    model = DiT(cfg, **kw).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "mod_table" not in name:
                p.normal_(0, p.shape[1] ** -0.5)
            else:
                p.normal_(0, 0.1).add_(1.0 if name.endswith("norm.weight") else 0.0)
    return model


def captions(n=3, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n, length, CFG.text_dim, generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    for i in range(1, n):
        mask[i, length - i :] = False  # captions of different lengths
    return text, mask


LATENTS = [torch.randn(4, 2, 4, 6), torch.randn(4, 1, 6, 4), torch.randn(4, 3, 2, 2)]


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_packed_equals_separate(attention):
    model = random_model(attention=attention)
    text, mask = captions()
    p = pack(LATENTS)
    t_sample = torch.tensor([0.9, 0.3, 0.6])
    with torch.no_grad():
        out = model(p.tokens, p.positions, p.per_sample(t_sample)[None], text, mask, doc_ids=p.doc_ids)
        for i, (z, got) in enumerate(zip(LATENTS, unpack(p, out), strict=True)):
            grid = grid_size(z.shape)
            alone = model(patchify(z)[None], positions(grid), t_sample[i : i + 1], text[i : i + 1], mask[i : i + 1])
            assert alone.abs().mean() > 0.1
            assert (unpatchify(alone[0], grid) - got).abs().max() <= 1e-5


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_padding_and_shared_captions_in_a_pack(attention):
    """Padding tokens change nothing; text_doc lets two samples read one caption."""
    model = random_model(attention=attention)
    text, mask = captions(n=2)
    text_doc = torch.tensor([1, 0, 1])
    t = torch.tensor([0.2, 0.5, 0.7])
    with torch.no_grad():
        outs = []
        for pad_to in (None, 64):
            p = pack(LATENTS, pad_to=pad_to)
            out = model(p.tokens, p.positions, p.per_sample(t)[None], text, mask, p.doc_ids, text_doc)
            assert torch.isfinite(out).all()
            outs.append(unpack(p, out))
        # the same samples as rows of an unpadded batch with row -> caption text_doc
        z = LATENTS[0]
        row = model(patchify(z)[None], positions(grid_size(z.shape)), t[:1], text, mask, text_doc=text_doc[:1])
    for a, b in zip(*outs, strict=True):
        assert (a - b).abs().max() <= 1e-5
    assert (unpatchify(row[0], grid_size(z.shape)) - outs[0][0]).abs().max() <= 1e-5


def test_each_sample_reads_only_its_own_caption():
    model = random_model()
    text, mask = captions()
    p = pack(LATENTS)
    t = p.per_sample(torch.tensor([0.5, 0.5, 0.5]))[None]
    with torch.no_grad():
        a = model(p.tokens, p.positions, t, text, mask, doc_ids=p.doc_ids)
        text2 = text.clone()
        text2[1, 0] += 1.0
        b = model(p.tokens, p.positions, t, text2, mask, doc_ids=p.doc_ids)
    changed = (a - b).abs().amax(-1)[0] > 1e-4  # (L,)
    assert changed.tolist() == (p.doc_ids == 1).tolist()


def test_batched_rows_equal_separate():
    """Unpacked rows (e.g. a conditional and an unconditional copy for guidance) are independent."""
    model = random_model()
    text, mask = captions(n=2)
    z = torch.randn(2, 8, CFG.token_dim)
    pos = positions((2, 2, 2))
    t = torch.tensor([[0.1] * 4 + [0.8] * 4, [0.4] * 8])
    with torch.no_grad():
        both = model(z, pos, t, text, mask)
        for i in range(2):
            one = model(z[i : i + 1], pos, t[i : i + 1], text[i : i + 1], mask[i : i + 1])
            assert (one - both[i : i + 1]).abs().max() <= 1e-5


def test_rope_is_relative():
    torch.manual_seed(0)
    attn = SelfAttention(64, 4).eval()
    x = torch.randn(1, 12, 64)
    pos = positions((2, 2, 3))
    split = (4, 6, 6)

    def run(p):
        cos, sin = rope_angles(p, split, 10000.0)
        return attn(x, cos[None, None], sin[None, None], None)

    base = run(pos)
    shifted = run(pos + torch.tensor([7, -3, 1000]))
    assert (base - shifted).abs().max() <= 1e-5
    swapped = run(pos[:, [0, 2, 1]])  # not invariant to moving tokens relative to each other
    assert (base - swapped).abs().max() > 1e-3
    # the whole model sees positions only through RoPE
    model = random_model()
    text, mask = captions(n=1)
    tok = torch.randn(1, 12, CFG.token_dim)
    with torch.no_grad():
        a = model(tok, pos, torch.tensor([0.5]), text, mask)
        b = model(tok, pos + 100, torch.tensor([0.5]), text, mask)
    assert (a - b).abs().max() <= 1e-5


def test_text_padding_values_do_not_change_the_output():
    model = random_model()
    text, mask = captions()
    p = pack(LATENTS)
    t = p.per_sample(torch.tensor([0.3, 0.6, 0.9]))[None]
    with torch.no_grad():
        a = model(p.tokens, p.positions, t, text, mask, doc_ids=p.doc_ids)
        noisy = torch.where(mask[..., None], text, torch.randn_like(text) * 10)
        b = model(p.tokens, p.positions, t, noisy, mask, doc_ids=p.doc_ids)
        mask2 = mask.clone()
        mask2[2, 1] = False  # masking one more caption token does change sample 2
        c = model(p.tokens, p.positions, t, text, mask2, doc_ids=p.doc_ids)
    assert (a - b).abs().max() <= 1e-5
    assert (a - c)[0, p.doc_ids == 2].abs().max() > 1e-4


def test_per_token_timestep_changes_only_that_tokens_modulation():
    model = random_model()
    t = torch.full((1, 10), 0.5)
    t2 = t.clone()
    t2[0, 3] = 0.0  # a clean conditioning token
    with torch.no_grad():
        c1, mod1 = model.conditioning(t)
        c2, mod2 = model.conditioning(t2)
    diff = (mod1 - mod2).abs().flatten(2).amax(-1)[0]  # (L,)
    assert diff[3] > 1e-3
    assert diff[torch.arange(10) != 3].max() == 0
    assert (c1 - c2).abs().amax(-1)[0, 3] > 1e-3


def test_fresh_model_outputs_zeros_and_blocks_start_as_identity():
    model = DiT(CFG)
    text, mask = captions()
    p = pack(LATENTS)
    t = p.per_sample(torch.tensor([0.3, 0.6, 0.9]))[None]
    out = model(p.tokens, p.positions, t, text, mask, doc_ids=p.doc_ids)
    assert out.shape == p.tokens.shape and torch.equal(out, torch.zeros_like(out))
    x = torch.randn(1, p.length, CFG.hidden)
    ctx, masks, pooled = model._text_and_masks(text, mask, 1, p.length, p.doc_ids, None)
    _, mod = model.conditioning(t, pooled)
    cos, sin = rope_angles(p.positions, CFG.rope_split, CFG.rope_theta)
    assert torch.equal(model.blocks[0](x, mod, cos[None, None], sin[None, None], ctx, masks), x)


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_activation_checkpointing_gives_the_same_gradients(attention):
    """Also: a "flex" model trains on a CPU (through SDPA masks, torch has no CPU flex backward)."""
    grads = []
    for ckpt in (False, True):
        model = random_model(checkpointing=ckpt, attention="sdpa" if not ckpt else attention).train()
        text, mask = captions()
        p = pack(LATENTS)
        t = p.per_sample(torch.tensor([0.3, 0.6, 0.9]))[None]
        model(p.tokens, p.positions, t, text, mask, doc_ids=p.doc_ids).square().mean().backward()
        grads.append(torch.cat([q.grad.flatten() for q in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_config_round_trip_and_validation():
    for name, preset in PRESETS.items():
        cfg = preset()
        assert DiTConfig.from_dict(cfg.to_dict()) == cfg, name
    cfg = DiTConfig.tiny(text_dim=4096, patch=(2, 2, 2), rope_axes=(16, 24, 24), mlp="gelu")
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KinemaError, match="not divisible"):
        DiTConfig(hidden=100, heads=3)
    with pytest.raises(KinemaError, match="rope_axes"):
        DiTConfig(hidden=64, heads=2, rope_axes=(8, 8, 8))
    with pytest.raises(KinemaError, match="unknown DiT config keys"):
        DiTConfig.from_dict({"hidden": 64, "depht": 3})
    with pytest.raises(KinemaError):
        DiT(CFG, attention="xformers")


def test_cross_gate_starts_open_and_lets_the_timestep_close_the_caption():
    gated = random_model()
    with torch.no_grad():  # the pooled caption vector off: only cross-attention reads the caption
        gated.text_pool[2].weight.zero_(), gated.text_pool[2].bias.zero_()
    plain = DiT(DiTConfig(**{**CFG.to_dict(), "cross_gate": False})).eval()
    new = ("cross_gate.", "cross_table")  # the gate's own weights
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not any(n in k for n in new)})
    L = 2 * 2 * 3
    x, pos = torch.randn(1, L, CFG.token_dim), positions((2, 2, 3))
    t = torch.full((1, L), 0.7)
    text, mask = captions(1)
    with torch.no_grad():
        gated.cross_gate.weight.zero_(), gated.cross_gate.bias.zero_()
        for blk in gated.blocks:
            blk.cross_table.zero_()
        torch.testing.assert_close(gated(x, pos, t, text, mask), plain(x, pos, t, text, mask))  # a zero gate: as before
        other = captions(1, seed=9)
        assert not torch.allclose(gated(x, pos, t, text, mask), gated(x, pos, t, *other))
        gated.cross_gate.bias.fill_(-1.0)  # gate -1: the caption path is closed
        torch.testing.assert_close(gated(x, pos, t, text, mask), gated(x, pos, t, *other))
    # configs saved before the gate existed load without it
    old = {k: v for k, v in CFG.to_dict().items() if k != "cross_gate"}
    assert DiTConfig.from_dict(old).cross_gate is False and CFG.cross_gate is True


@pytest.mark.parametrize(
    "name, low, high",
    [("tiny", 2e6, 8e6), ("b", 110e6, 150e6), ("l", 430e6, 570e6), ("xl_1b", 0.9e9, 1.3e9), ("xl_3b", 2.6e9, 3.4e9)],
)
def test_preset_parameter_counts(name, low, high):
    with torch.device("meta"):
        model = DiT(PRESETS[name]())
    assert low <= model.num_params() <= high


def test_flops_formula_counts_every_matmul_weight():
    for cfg in (CFG, DiTConfig.small(mlp="gelu", pooled_text=False)):
        with torch.device("meta"):
            model = DiT(cfg)
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert linear == sum(cfg.matmul_params().values())
    p = CFG.matmul_params()
    f = CFG.flops_per_token(100, 20)
    assert f == pytest.approx(2 * p["per_token"] + 4 * 2 * 64 * 120 + 2 * (p["per_text_token"] * 20 + p["per_caption"]) / 100)


@pytest.mark.slow
def test_tiny_dit_overfits_a_toy_flow_problem():
    """Two clips, four noisy copies of each a step: the loss on a fixed set of (t, noise) falls."""
    torch.manual_seed(0)
    model = DiT(CFG).train()
    copies = 4
    p = pack([torch.randn(4, 2, 4, 4), torch.randn(4, 1, 4, 6)] * copies)
    text, mask = captions(n=2)
    text_doc = torch.arange(2).repeat(copies)
    g = torch.Generator().manual_seed(0)

    def loss_at(t_sample, noise):
        t = p.per_sample(t_sample)[None]
        out = model(interpolate(p.tokens, noise, t), p.positions, t, text, mask, p.doc_ids, text_doc)
        return flow_loss(out, velocity(p.tokens, noise))

    t_eval, noise_eval = torch.linspace(0.05, 0.95, 2 * copies), torch.randn(p.tokens.shape, generator=g)
    with torch.no_grad():
        before = loss_at(t_eval, noise_eval).item()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss = loss_at(torch.rand(2 * copies, generator=g), torch.randn(p.tokens.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_at(t_eval, noise_eval).item()
    assert after < 0.5 * before, (before, after)


def test_empty_dit_takes_a_whole_state_or_names_what_does_not_fit():
    """DiT.empty allocates and initialises nothing; assign_weights makes the file's tensors its own
    (the same outputs as the model saved), and a state that lacks a weight is a KinemaError."""
    from kinema.models.hf import assign_weights

    model = random_model()
    with torch.device("meta"):
        empty = DiT.empty(CFG)
    assert type(empty) is DiT and all(p.is_meta for p in empty.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = assign_weights(empty, state, "weights.safetensors does not match dit.json")
    assert not any(p.is_meta for p in loaded.parameters())
    assert loaded.x_embed.weight.data_ptr() == state["x_embed.weight"].data_ptr()  # taken, not copied
    z = LATENTS[0]
    grid = grid_size(z.shape)
    text, mask = captions(n=1)
    with torch.no_grad():
        args = (patchify(z)[None], positions(grid), torch.tensor([0.4]), text, mask)
        assert torch.equal(loaded(*args), model(*args))
    with torch.device("meta"):
        other = DiT.empty(CFG)
    del state["final.out.bias"]
    with pytest.raises(KinemaError, match=r"(?s)^weights.safetensors does not match dit.json: .*final\.out\.bias"):
        assign_weights(other, state, "weights.safetensors does not match dit.json")
