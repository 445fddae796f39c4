"""The attention options of ModelConfig: grouped-query attention (num_kv_heads), QK-norm
(qk_norm), ALiBi (position_encoding="alibi") and sliding-window attention (sliding_window); and
zero-initialised output projections (zero_init_residual) and dropout.
Each is checked against its definition written out in plain PyTorch, on both attention paths,
and as flags. The KV cache, the fused kernel, checkpoints and the parameter and FLOP counts are
checked for every variant in test_model_variants.py."""

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F

import llm.transformer
from llm.config import ConfigError, config_from_dict
from llm.training import load_train_config
from llm.transformer import (
    ModelConfig,
    MultiHeadAttention,
    Transformer,
    alibi_slopes,
    cross_entropy,
)

# 6 heads of size 8: K/V heads can be 6 (plain multi-head), 3, 2 or 1 (multi-query).
SMALL = ModelConfig(
    vocab_size=53, context_length=24, d_model=48, num_layers=2, num_heads=6, d_ff=40
)


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


# --- ALiBi and the sliding window ------------------------------------------------------------


# ALiBi's slopes for SMALL's 6 heads: those of 4 heads, then every other one of 8 heads' (1/2, 1/8).
SLOPES_OF_6_HEADS = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]


def test_alibi_slopes_are_the_papers():
    """Press et al. 2022, section 3: 2^(-8h/n) for n a power of 2; for 6 and 12 heads the
    official code's interleaving (the slopes of 4 or 8 heads, then every other slope of 8 or 16
    heads), here written out by hand."""
    expected = {
        8: [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8],
        6: SLOPES_OF_6_HEADS,
        12: [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8,
             2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5],
        1: [2**-8],
    }  # fmt: skip
    for heads, slopes in expected.items():
        torch.testing.assert_close(alibi_slopes(heads), torch.tensor(slopes))
    model = Transformer(config_with(position_encoding="alibi"))  # 6 heads
    torch.testing.assert_close(
        model.blocks[1].attn.position.slopes, torch.tensor(SLOPES_OF_6_HEADS)
    )
    assert not any("slopes" in name for name in model.state_dict())  # a buffer, not saved
    assert not any("slopes" in name for name, _ in model.named_parameters())  # nor learned


def attention_from_the_equations(mha, x, slopes=None, window=None, theta=None):
    """Causal attention one query and one key at a time, from the papers' equations:

        score_h(i, j) = q_i . k_j / sqrt(d_head) - m_h (i - j)     (ALiBi, Press et al. 2022)

    over the keys j with i - window < j <= i (Mistral 7B's sliding window, Jiang et al. 2023;
    all j <= i without one), then softmax over those j and the sum of their values. Query head
    h reads K/V head h // (heads / kv_heads). slopes None: no bias; theta: queries and keys
    rotated by RoPE (rotate), else not (NoPE)."""
    heads, kv_heads, d = mha.num_heads, mha.num_kv_heads, mha.d_head
    wq, wk, wv = mha.qkv_proj.weight.split([heads * d, kv_heads * d, kv_heads * d])
    batch, seq, _ = x.shape
    out = torch.zeros(batch, seq, heads * d, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            kv = h // (heads // kv_heads)
            q = x[b] @ wq[h * d : (h + 1) * d].T  # (seq, d)
            k, v = x[b] @ wk[kv * d : (kv + 1) * d].T, x[b] @ wv[kv * d : (kv + 1) * d].T
            if theta is not None:
                q, k = rotate(q, torch.arange(seq), theta), rotate(k, torch.arange(seq), theta)
            for i in range(seq):
                keys = [j for j in range(i + 1) if window is None or j > i - window]
                scores = torch.stack([q[i] @ k[j] / math.sqrt(d) for j in keys])
                if slopes is not None:
                    scores = scores - torch.tensor([slopes[h] * (i - j) for j in keys])
                weights = torch.softmax(scores, dim=0)
                out[b, i, h * d : (h + 1) * d] = sum(
                    w * v[j] for w, j in zip(weights, keys, strict=True)
                )
    return out @ mha.out_proj.weight.T


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize(
    "position_encoding, window, num_kv_heads",
    [
        ("alibi", None, 6),
        ("alibi", None, 2),
        ("alibi", 4, 3),
        ("none", 4, 6),
        ("rope", 4, 2),
        ("rope", 1, 6),
    ],  # fmt: skip
)
def test_alibi_and_sliding_window_match_their_equations_in_float64(
    position_encoding, window, num_kv_heads, attention
):
    config = config_with(
        position_encoding=position_encoding, sliding_window=window, num_kv_heads=num_kv_heads,
        attention=attention,
    )  # fmt: skip
    mha = MultiHeadAttention(config, dtype=torch.float64)
    x = torch.randn(2, 10, 48, dtype=torch.float64)
    slopes = SLOPES_OF_6_HEADS if position_encoding == "alibi" else None
    theta = config.rope_theta if position_encoding == "rope" else None
    expected = attention_from_the_equations(mha, x, slopes, window, theta)
    # Not exact for RoPE: its tables are float32 (rounded once).
    torch.testing.assert_close(mha(x), expected, atol=1e-6, rtol=0)


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


@pytest.mark.parametrize("alibi_window", [False, True])
@pytest.mark.parametrize("enable_gqa", [True, False])
def test_fused_path_with_and_without_sdpas_enable_gqa(enable_gqa, alibi_window, monkeypatch):
    """PyTorch >= 2.5 shares the K/V heads inside F.scaled_dot_product_attention
    (enable_gqa=True); older versions get K and V repeated per group first. Both must equal our
    own attention, with and without the cache, also with a mask per query head (ALiBi's)."""
    monkeypatch.setattr(llm.transformer, "SDPA_HAS_GQA", enable_gqa)
    options = {"position_encoding": "alibi", "sliding_window": 5} if alibi_window else {}
    fused = small_model(num_kv_heads=2, attention="fused", **options).eval()
    attn = fused.blocks[0].attn
    assert (attn.sdpa_options, attn.repeat_kv) == (
        ({"enable_gqa": True}, False) if enable_gqa else ({}, True)
    )
    ours = Transformer(config_with(num_kv_heads=2, attention="ours", **options)).eval()
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


@pytest.mark.parametrize("attention", ["ours", "fused"])
@pytest.mark.parametrize("alibi_window", [False, True])
def test_bfloat16_autocast_stays_close_to_float32(alibi_window, attention):
    """Also with ALiBi's bias, which must follow the queries into bfloat16."""
    options = {"position_encoding": "alibi", "sliding_window": 5} if alibi_window else {}
    model = small_model(num_kv_heads=2, qk_norm=True, attention=attention, **options).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 20))
    with torch.no_grad():
        expected = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache = model.new_kv_cache(2, torch.bfloat16)
            logits = torch.cat([model(ids[:, :8], cache), model(ids[:, 8:], cache)], dim=1)
    assert logits.dtype == cache.keys[0].dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=5e-2, rtol=2e-2)


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


@pytest.mark.parametrize("window", [0, -3])
def test_sliding_window_must_be_at_least_one(window):
    message = f"sliding_window must be at least 1 (or None for full attention), not {window}"
    with pytest.raises(ValueError) as error:
        config_with(sliding_window=window)
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(ModelConfig, {"sliding_window": window})


def test_options_are_training_flags():
    config = load_train_config(
        ["--model.num_heads", "8", "--model.num_kv_heads", "2", "--model.qk_norm", "true",
         "--model.zero_init_residual", "true", "--model.position_encoding", "alibi",
         "--model.sliding_window", "64"]
    ).model  # fmt: skip
    assert (config.num_kv_heads, config.qk_norm, config.zero_init_residual) == (2, True, True)
    assert (config.position_encoding, config.sliding_window) == ("alibi", 64)
    assert config.kv_heads == 2
    assert load_train_config(["--model.num_kv_heads", "none"]).model.num_kv_heads is None
    assert load_train_config(["--model.sliding_window", "none"]).model.sliding_window is None
    defaults = load_train_config([]).model
    assert (defaults.num_kv_heads, defaults.qk_norm, defaults.zero_init_residual) == (
        None,
        False,
        False,
    )
    assert defaults.sliding_window is None
