"""The model options of ModelConfig beyond the ablation switches: grouped-query attention
(num_kv_heads), QK-norm (qk_norm), zero-initialised output projections (zero_init_residual) and
dropout.
Each is checked against its definition written out in plain PyTorch, and through the KV cache,
both attention paths, the ablation switches, checkpoints, flags and the parameter and FLOP
counts."""

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F

import llm.transformer
from llm.checkpoint import load_model, save_checkpoint
from llm.config import ConfigError, config_from_dict
from llm.training import load_train_config
from llm.transformer import ModelConfig, MultiHeadAttention, Transformer, cross_entropy

# 6 heads of size 8: K/V heads can be 6 (plain multi-head), 3, 2 or 1 (multi-query).
SMALL = ModelConfig(
    vocab_size=53, context_length=24, d_model=48, num_layers=2, num_heads=6, d_ff=40
)
VARIANTS = [
    {"num_kv_heads": 2},
    {"num_kv_heads": 1, "qk_norm": True},
    {"num_kv_heads": 3, "qk_norm": True, "position_encoding": "none"},
    {"qk_norm": True, "norm_position": "post", "ffn": "silu"},
    {"num_kv_heads": 2, "zero_init_residual": True, "norm_position": "none"},
]


def variant_id(variant: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in variant.items())


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def config_with(**changes) -> ModelConfig:
    return dataclasses.replace(SMALL, **changes)


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Move the norm gains away from 1 and every zero-initialised matrix away from 0, so that a
    gain applied in the wrong place (or not at all) changes the output."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.5 * torch.randn_like(p))
            elif not p.any():
                p.normal_(std=0.1)
    return module


def small_model(**changes) -> Transformer:
    return perturb(Transformer(config_with(**changes)))


# --- attention written out from the papers --------------------------------------------------


def rms_norm(x, weight):
    """RMSNorm (Zhang & Sennrich, 2019): x / sqrt(mean(x^2) + eps) * g."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight


def rotate(x, positions, theta):
    """RoPE as complex multiplication: pair (a, b) at position p becomes (a + ib) e^(i p w_k)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[..., None].double() * freqs  # (..., seq, d/2)
    pairs = torch.view_as_complex(x.double().unflatten(-1, (d // 2, 2)).contiguous())
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


def reference_attention(mha, config, x, positions=None):
    """Causal attention with num_kv_heads K/V heads, each repeated for its group of
    num_heads / num_kv_heads query heads (Ainslie et al., 2023), and, with qk_norm, RMSNorm of
    every head's queries and keys (shared gains) before RoPE."""
    heads, kv_heads, d_head = config.num_heads, config.kv_heads, config.d_head
    seq = x.shape[-2]
    positions = torch.arange(seq) if positions is None else positions[:, None]  # per sequence
    wq, wk, wv = mha.qkv_proj.weight.split([heads * d_head, kv_heads * d_head, kv_heads * d_head])

    def split_heads(t):  # (batch, seq, n * d_head) -> (batch, n, seq, d_head)
        return t.unflatten(-1, (-1, d_head)).transpose(1, 2)

    q, k, v = (split_heads(F.linear(x, w)) for w in (wq, wk, wv))
    k = k.repeat_interleave(heads // kv_heads, dim=1)  # query head h reads K/V head h // group
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    if config.qk_norm:
        q, k = rms_norm(q, mha.q_norm.weight), rms_norm(k, mha.k_norm.weight)
    if config.position_encoding == "rope":
        q, k = rotate(q, positions, config.rope_theta), rotate(k, positions, config.rope_theta)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)  # (batch, heads, seq, seq)
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    out = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1) @ v
    return F.linear(out.transpose(1, 2).flatten(-2), mha.out_proj.weight)


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize("position_encoding", ["rope", "none"])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("num_kv_heads", [6, 3, 2, 1])
def test_attention_matches_its_definition_in_float64(
    num_kv_heads, qk_norm, position_encoding, attention
):
    config = config_with(
        num_kv_heads=num_kv_heads, qk_norm=qk_norm, position_encoding=position_encoding,
        attention=attention, rope_theta=500.0,
    )  # fmt: skip
    mha = perturb(MultiHeadAttention(config, dtype=torch.float64))
    x = torch.randn(3, 10, 48, dtype=torch.float64)
    expected = reference_attention(mha, config, x)
    # Not exact: the RoPE tables are float32 (rounded once).
    torch.testing.assert_close(mha(x), expected, atol=1e-6, rtol=0)
    positions = torch.tensor(
        [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [3] * 10]
    )
    torch.testing.assert_close(
        mha(x, positions), reference_attention(mha, config, x, positions), atol=1e-6, rtol=0
    )


def test_qk_norm_gains_are_one_per_head_dimension_for_queries_and_keys():
    model = Transformer(config_with(qk_norm=True, num_kv_heads=2))
    names = {
        n: tuple(p.shape) for n, p in model.named_parameters() if "q_norm" in n or "k_norm" in n
    }
    assert names == {
        f"blocks.{i}.attn.{qk}_norm.weight": (SMALL.d_head,) for i in (0, 1) for qk in "qk"
    }
    assert all((p == 1).all() for n, p in model.named_parameters() if "_norm" in n)
    assert not any("_norm" in n for n, _ in Transformer(SMALL).blocks[0].attn.named_parameters())


def test_qk_norm_bounds_the_attention_logits():
    """With QK-norm (unit gains) every query and key has norm sqrt(d_head), so q.k / sqrt(d_head)
    is at most sqrt(d_head) whatever the inputs' scale: attention cannot saturate."""
    mha = MultiHeadAttention(config_with(qk_norm=True, position_encoding="none"))
    x = 1000 * torch.randn(2, 10, 48)
    captured = {}
    mha.k_norm.register_forward_hook(lambda m, i, out: captured.setdefault("k", out))
    mha.q_norm.register_forward_hook(lambda m, i, out: captured.setdefault("q", out))
    mha(x)
    for t in captured.values():
        torch.testing.assert_close(
            t.norm(dim=-1), torch.full(t.shape[:-1], 8**0.5), rtol=1e-4, atol=0
        )


# --- grouped-query attention ----------------------------------------------------------------


def test_gqa_shrinks_the_projection_and_the_kv_cache():
    mha_model, gqa_model = Transformer(SMALL), Transformer(config_with(num_kv_heads=2))
    d_head = SMALL.d_head
    assert mha_model.blocks[0].attn.qkv_proj.weight.shape == (3 * 48, 48)
    assert gqa_model.blocks[0].attn.qkv_proj.weight.shape == ((6 + 2 * 2) * d_head, 48)
    cache = gqa_model.new_kv_cache(batch_size=3)
    assert [k.shape for k in cache.keys + cache.values] == [(3, 2, 24, d_head)] * 4
    with torch.no_grad():
        gqa_model(torch.randint(0, 53, (3, 5)), cache)
    assert cache.keys[0].shape == (3, 2, 24, d_head)
    assert mha_model.new_kv_cache(3).keys[0].shape == (3, 6, 24, d_head)


def test_num_kv_heads_equal_to_num_heads_is_plain_multi_head_attention():
    plain, same = Transformer(SMALL), Transformer(config_with(num_kv_heads=6))
    assert SMALL.kv_heads == 6 and same.config.kv_heads == 6
    assert {n: p.shape for n, p in plain.state_dict().items()} == {
        n: p.shape for n, p in same.state_dict().items()
    }
    same.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 53, (2, 12))
    torch.testing.assert_close(same(ids), plain(ids))


@pytest.mark.parametrize("enable_gqa", [True, False])
def test_fused_path_with_and_without_sdpas_enable_gqa(enable_gqa, monkeypatch):
    """PyTorch >= 2.5 shares the K/V heads inside F.scaled_dot_product_attention
    (enable_gqa=True); older versions get K and V repeated per group first. Both must equal our
    own attention, with and without the cache."""
    monkeypatch.setattr(llm.transformer, "SDPA_HAS_GQA", enable_gqa)
    fused = small_model(num_kv_heads=2, attention="fused").eval()
    attn = fused.blocks[0].attn
    assert (attn.sdpa_options, attn.repeat_kv) == (
        ({"enable_gqa": True}, False) if enable_gqa else ({}, True)
    )
    ours = Transformer(config_with(num_kv_heads=2, attention="ours")).eval()
    ours.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 53, (2, 24))
    with torch.no_grad():
        expected = ours(ids)
        torch.testing.assert_close(fused(ids), expected, atol=1e-5, rtol=1e-5)
        cache = fused.new_kv_cache(2)
        steps = [fused(ids[:, :9], cache)] + [fused(ids[:, i : i + 1], cache) for i in range(9, 24)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_default_model_gets_no_gqa_work():
    attn = Transformer(SMALL).blocks[0].attn
    assert attn.group == 1 and attn.sdpa_options == {} and not attn.repeat_kv and not attn.qk_norm


# --- zero-initialised output projections ----------------------------------------------------


@pytest.mark.parametrize("norm_position", ["pre", "none"])
@pytest.mark.parametrize("attention", ["ours", "fused"])
def test_zero_init_blocks_start_as_the_identity(norm_position, attention):
    model = Transformer(
        config_with(zero_init_residual=True, norm_position=norm_position, attention=attention)
    )
    for block in model.blocks:
        assert not block.attn.out_proj.weight.any() and not block.ffn.w2.weight.any()
    ids = torch.randint(0, 53, (2, 16))
    x = model.embedding(ids)
    torch.testing.assert_close(model.blocks[0](x), x, atol=0, rtol=0)
    # The whole model is then the embedding path: embedding -> final norm -> output layer.
    torch.testing.assert_close(model(ids), model.lm_head(model.final_norm(x)))
    assert Transformer(SMALL).blocks[0].ffn.w2.weight.abs().min() > 0  # the default is not zero


@pytest.mark.parametrize("ffn", ["swiglu", "silu"])
def test_zero_init_still_trains_every_parameter(ffn):
    """At step 0 only the zeroed matrices (and the embedding path) get gradients, since every
    branch's output passes through one of them; after one step they are no longer zero and
    every parameter gets a gradient."""
    model = Transformer(config_with(zero_init_residual=True, qk_norm=True, num_kv_heads=2, ffn=ffn))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(0, 53, (4, 17))
    zeroed = {n for n, p in model.named_parameters() if not p.any()}
    assert zeroed == {
        f"blocks.{i}.{m}" for i in (0, 1) for m in ("attn.out_proj.weight", "ffn.w2.weight")
    }
    for step in range(2):
        optimizer.zero_grad()
        cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        if step == 0:
            assert with_grad == zeroed | {"embedding.weight", "final_norm.weight", "lm_head.weight"}
        else:
            assert with_grad == {n for n, _ in model.named_parameters()}
        optimizer.step()


# --- every option through the cache, both attention paths, checkpoints, counts --------------


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_kv_cache_decoding_equals_full_recompute(variant, attention):
    model = small_model(**variant, attention=attention).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 24))
    cache = model.new_kv_cache(batch_size=2)
    with torch.no_grad():
        full = model(ids)
        pieces, start = [], 0
        for n in (5, 1, 1, 17):
            pieces.append(model(ids[:, start : start + n], kv_cache=cache))
            start += n
    assert cache.keys[0].shape[1] == model.config.kv_heads
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["ours", "fused"])
def test_kv_cache_key_mask_ignores_left_padding_with_gqa(attention):
    """The padding mask is (batch, 1, seq, keys): per sequence, the same for every head group."""
    model = small_model(num_kv_heads=2, qk_norm=True, attention=attention).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 10))
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], dim=1)
    cache = model.new_kv_cache(batch_size=2)
    cache.key_mask = torch.ones(2, SMALL.context_length, dtype=torch.bool)
    cache.key_mask[0, :3] = False  # only the first sequence is padded
    with torch.no_grad():
        out = torch.cat([model(padded[:, :8], cache), model(padded[:, 8:], cache)], dim=1)
        expected = model(ids[:1])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1, 3:], expected, atol=1e-5, rtol=1e-5)


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


def test_kv_cache_decoding_traces_as_one_graph_for_torch_compile():
    model = small_model(num_kv_heads=2, qk_norm=True).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    ids = torch.randint(0, SMALL.vocab_size, (1, 12))
    cache = model.new_kv_cache(batch_size=1)
    with torch.no_grad():
        steps = [compiled(ids[:, :8], cache, last_only=True)]
        steps += [compiled(ids[:, i : i + 1], cache, last_only=True) for i in range(8, 12)]
        expected = model(ids)[:, 7:]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_stays_close_to_float32():
    model = small_model(num_kv_heads=2, qk_norm=True).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 20))
    with torch.no_grad():
        expected = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache = model.new_kv_cache(2, torch.bfloat16)
            logits = torch.cat([model(ids[:, :8], cache), model(ids[:, 8:], cache)], dim=1)
    assert logits.dtype == cache.keys[0].dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=5e-2, rtol=2e-2)


def test_checkpoint_rebuilds_every_option(tmp_path):
    options = {"num_kv_heads": 3, "qk_norm": True, "zero_init_residual": True}
    model = small_model(**options)
    path = save_checkpoint(model, None, 7, tmp_path / "checkpoint.pt")
    loaded, checkpoint = load_model(path)
    assert checkpoint["model_config"] == dataclasses.asdict(model.config)
    assert {key: checkpoint["model_config"][key] for key in options} == options
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    ids = torch.randint(0, SMALL.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model.eval()(ids))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("num_kv_heads", [None, 3, 1])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_parameter_count_and_flops(qk_norm, num_kv_heads, tie):
    config = ModelConfig(
        vocab_size=1000, context_length=128, d_model=96, num_layers=3, num_heads=6, d_ff=256,
        num_kv_heads=num_kv_heads, qk_norm=qk_norm, tie_embeddings=tie,
    )  # fmt: skip
    model = Transformer(config, device="meta")
    v, t, d, layers, d_head = 1000, 128, 96, 3, 16
    kv = num_kv_heads or 6
    attention = d * (6 + 2 * kv) * d_head + d * d  # qkv_proj, out_proj
    gains = 2 * d + (2 * d_head if qk_norm else 0)
    embeddings = v * d if tie else 2 * v * d
    expected = layers * (attention + 3 * d * 256 + gains) + embeddings + d
    assert model.num_parameters() == expected
    matmuls = layers * (attention + 3 * d * 256) + v * d  # the embedding is a lookup
    # Attention scores and values: every query head still sees every key.
    assert model.flops_per_token() == 6 * matmuls + 12 * layers * d * t


# --- dropout -----------------------------------------------------------------------------------


def test_dropout_zeroes_a_share_p_and_keeps_the_mean():
    x = torch.rand(200_000) + 1  # no zeros of its own
    drop = llm.transformer.Dropout(0.3)
    y = drop(x)
    dropped = y == 0
    # Binomial(200000, 0.3): standard deviation 0.001 in the share.
    assert abs(dropped.float().mean().item() - 0.3) < 0.005
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.7)  # the kept ones, scaled up
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01  # unbiased
    assert torch.equal(drop.eval()(x), x)


def test_dropout_acts_in_training_only_and_is_reproducible():
    ids = torch.randint(0, SMALL.vocab_size, (2, 16))
    plain = small_model()
    model = Transformer(config_with(dropout=0.5))
    model.load_state_dict(plain.state_dict())  # the same weights: no dropout parameters
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), plain.eval()(ids), rtol=0, atol=0)
        model.train()
        torch.manual_seed(1)
        first = model(ids)
        torch.manual_seed(1)
        assert torch.equal(model(ids), first)  # the masks follow torch's random state
        assert not torch.allclose(first, plain(ids), atol=1e-3)
    # The embedding's and each block's dropout act on the output, each alone.
    drops = [m for m in model.modules() if isinstance(m, llm.transformer.Dropout)]
    assert len(drops) == 1 + SMALL.num_layers
    with torch.no_grad():
        for active in drops:
            for module in drops:
                module.p = 0.5 if module is active else 0.0
            assert not torch.allclose(model(ids), plain.train()(ids), atol=1e-3)
        active.p = 0.0
        torch.testing.assert_close(model(ids), plain(ids), rtol=0, atol=0)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, float("nan")])
def test_dropout_must_be_a_probability_below_one(dropout):
    with pytest.raises(ValueError, match=rf"^dropout must be in \[0, 1\), not {dropout}$"):
        config_with(dropout=dropout)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("num_kv_heads", [0, -2, 4, 12])
def test_num_kv_heads_must_divide_num_heads(num_kv_heads):
    message = f"num_kv_heads must divide num_heads=6 (or be None for num_heads), not {num_kv_heads}"
    with pytest.raises(ValueError) as error:
        config_with(num_kv_heads=num_kv_heads)
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(ModelConfig, {"num_heads": 6, "d_model": 48, "num_kv_heads": num_kv_heads})


def test_options_are_training_flags():
    config = load_train_config(
        ["--model.num_heads", "8", "--model.num_kv_heads", "2", "--model.qk_norm", "true",
         "--model.zero_init_residual", "true"]
    ).model  # fmt: skip
    assert (config.num_kv_heads, config.qk_norm, config.zero_init_residual) == (2, True, True)
    assert config.kv_heads == 2
    assert load_train_config(["--model.num_kv_heads", "none"]).model.num_kv_heads is None
    defaults = load_train_config([]).model
    assert (defaults.num_kv_heads, defaults.qk_norm, defaults.zero_init_residual) == (
        None,
        False,
        False,
    )
