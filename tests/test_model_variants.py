"""Every model variant through the same checks: KV-cached decoding (prefill, one token per step,
chunks, left-padded batches) equals recomputing the whole sequence, the fused attention kernel
equals ours (outputs and gradients), checkpoints rebuild the variant, and the parameter and FLOP
counts follow the formulas. Each variant's own equations are checked in test_ablations.py and
test_attention_variants.py."""

import dataclasses
from pathlib import Path

import pytest
import torch

from llm.checkpoint import load_model, save_checkpoint
from llm.transformer import (
    FFN,
    MODEL_PRESETS,
    ModelConfig,
    RmsNorm,
    RoPE,
    Transformer,
    cross_entropy,
)

# 6 heads of size 8: K/V heads can be 6 (plain multi-head), 3, 2 or 1 (multi-query); 6 is not a
# power of 2, so ALiBi takes slopes from two geometric sequences.
SMALL = ModelConfig(
    vocab_size=53, context_length=24, d_model=48, num_layers=2, num_heads=6, d_ff=40
)
# Every value of every switch and option at least once, and the combinations that share code:
# grouped-query attention with each position encoding and with the sliding window's mask.
VARIANTS = [
    {},
    {"norm_position": "post", "position_encoding": "none", "ffn": "silu"},
    {"norm_position": "none", "num_kv_heads": 2, "zero_init_residual": True},
    {"num_kv_heads": 1, "qk_norm": True},
    {"num_kv_heads": 3, "qk_norm": True, "position_encoding": "none", "ffn": "silu"},
    {"position_encoding": "alibi"},
    {"position_encoding": "alibi", "num_kv_heads": 2, "qk_norm": True, "norm_position": "post"},
    {"sliding_window": 5},
    {"sliding_window": 5, "num_kv_heads": 3, "position_encoding": "alibi"},
    {"sliding_window": 1, "position_encoding": "none"},  # each token sees only itself
]


def variant_id(variant: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in variant.items()) or "default"


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def config_with(**changes) -> ModelConfig:
    return dataclasses.replace(SMALL, **changes)


def small_model(**changes) -> Transformer:
    """A SMALL model with its norm gains moved away from 1 and every zero-initialised matrix away
    from 0, so that a gain applied in the wrong place (or not at all) changes the output."""
    model = Transformer(config_with(**changes))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.5 * torch.randn_like(p))
            elif not p.any():
                p.normal_(std=0.1)
    return model


# --- the KV cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_kv_cache_decoding_equals_full_recompute(variant, attention):
    """A prefill longer than the window, single tokens, then chunks that start mid-sequence."""
    model = small_model(**variant, attention=attention).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 24))
    cache = model.new_kv_cache(batch_size=2)
    with torch.no_grad():
        full = model(ids)
        pieces, start = [], 0
        for n in (7, 1, 1, 6, 1, 8):
            pieces.append(model(ids[:, start : start + n], kv_cache=cache))
            start += n
    assert cache.length == 24 and cache.keys[0].shape[1] == model.config.kv_heads
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_left_padded_batch_decodes_each_sequence_as_if_alone(variant, attention):
    """Sequences of 10 and 13 tokens in one batch, the first left-padded with 3 (key_mask):
    prefill, then one token per step. RoPE, ALiBi and the window depend on distances only, so
    the padded sequence's logits equal its own, although its positions are shifted by 3."""
    model = small_model(**variant, attention=attention).eval()
    short = torch.randint(0, SMALL.vocab_size, (10,))
    long = torch.randint(0, SMALL.vocab_size, (13,))
    batch = torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short]), long])
    cache = model.new_kv_cache(batch_size=2)
    cache.key_mask = torch.ones(2, SMALL.context_length, dtype=torch.bool)
    cache.key_mask[0, :3] = False
    with torch.no_grad():
        steps = [model(batch[:, :8], cache)]  # prefill
        steps += [model(batch[:, i : i + 1], cache) for i in range(8, 13)]  # one token per step
        out = torch.cat(steps, dim=1)
        expected = [model(short[None]), model(long[None])]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1, 3:], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:], expected[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [{"num_kv_heads": 2, "qk_norm": True}, {"sliding_window": 5, "position_encoding": "alibi"}],
    ids=variant_id,
)
def test_kv_cache_decoding_traces_as_one_graph_for_torch_compile(variant):
    """fullgraph=True raises on any graph break (e.g. a symbolic cache length reaching SDPA's
    is_causal); the "eager" backend traces without compiling, so the test stays fast."""
    model = small_model(**variant).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    ids = torch.randint(0, SMALL.vocab_size, (1, 12))
    cache = model.new_kv_cache(batch_size=1)
    with torch.no_grad():
        steps = [compiled(ids[:, :8], cache, last_only=True)]
        steps += [compiled(ids[:, i : i + 1], cache, last_only=True) for i in range(8, 12)]
        expected = model(ids)[:, 7:]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


# --- the fused kernel -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_fused_attention_equals_ours_outputs_and_gradients(variant):
    ours = small_model(**variant, attention="ours")
    fused = Transformer(config_with(**variant, attention="fused"))
    fused.load_state_dict(ours.state_dict())
    ids = torch.randint(0, SMALL.vocab_size, (2, 20))
    targets = torch.randint(0, SMALL.vocab_size, (2, 20))
    losses = []
    for model in (ours, fused):
        loss = cross_entropy(model(ids), targets)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(ours.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


# --- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_checkpoint_rebuilds_the_variant(variant, tmp_path):
    model = small_model(**variant)
    path = save_checkpoint(model, None, 7, tmp_path / "checkpoint.pt")
    loaded, checkpoint = load_model(path)
    assert checkpoint["model_config"] == dataclasses.asdict(model.config)
    assert {key: checkpoint["model_config"][key] for key in variant} == variant
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    ids = torch.randint(0, SMALL.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model.eval()(ids))


def test_legacy_checkpoint_loads_with_the_default_switches():
    path = Path(__file__).parent / "fixtures" / "legacy-checkpoint-b112436.ckpt"
    model, checkpoint = load_model(path)
    assert "norm_position" not in checkpoint["model_config"]  # written before the switches
    assert "sliding_window" not in checkpoint["model_config"]
    c = model.config
    assert (c.norm_position, c.position_encoding, c.ffn) == ("pre", "rope", "swiglu")
    assert (c.num_kv_heads, c.qk_norm, c.sliding_window) == (None, False, None)
    assert isinstance(model.final_norm, RmsNorm) and isinstance(model.blocks[0].ffn, FFN)
    assert isinstance(model.blocks[0].attn.position, RoPE)


# --- parameter and FLOP counts --------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_parameter_count_and_flops(variant, tie):
    c = config_with(**variant, tie_embeddings=tie)
    model = Transformer(c, device="meta")
    v, t, d, d_ff, layers, d_head = 53, 24, 48, 40, 2, 8
    kv = variant.get("num_kv_heads", 6)
    attention = d * (6 + 2 * kv) * d_head + d * d  # qkv_proj, out_proj
    ffn = (2 if variant.get("ffn") == "silu" else 3) * d * d_ff
    norm_position = variant.get("norm_position", "pre")
    gains = (0 if norm_position == "none" else 2 * d) + (2 * d_head if c.qk_norm else 0)
    final_gain = d if norm_position == "pre" else 0
    embeddings = v * d if tie else 2 * v * d
    # ALiBi's slopes and RoPE's tables are buffers; the window is a mask: no parameters.
    expected = layers * (attention + ffn + gains) + embeddings + final_gain
    assert model.num_parameters() == expected
    assert model.num_parameters(exclude_embeddings=True) == expected - (0 if tie else v * d)
    matmuls = layers * (attention + ffn) + v * d  # the output layer; the embedding is a lookup
    # Attention scores and values, every key for every query (masked ones too, as computed).
    assert model.flops_per_token() == 6 * matmuls + 12 * layers * d * t


def test_parameter_count_and_flops_of_tinystories_preset():
    model = Transformer(MODEL_PRESETS["tinystories-17m"], device="meta")
    c = model.config
    per_layer = 4 * c.d_model**2 + 3 * c.d_model * c.d_ff + 2 * c.d_model
    expected = c.num_layers * per_layer + 2 * c.vocab_size * c.d_model + c.d_model
    assert model.num_parameters() == expected == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(exclude_embeddings=True) == expected - c.vocab_size * c.d_model
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2) - (
        c.vocab_size * c.d_model
    )
    attention = 12 * c.num_layers * c.d_model * c.context_length
    assert model.flops_per_token() == 6 * matmul_params + attention
