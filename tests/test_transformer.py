"""Every block of llm/transformer.py against an independent reference: PyTorch's own ops, a
complex-number RoPE, and Hugging Face's LlamaForCausalLM for the whole model."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from llm.transformer import (
    FFN,
    MODEL_PRESETS,
    Embedding,
    Linear,
    ModelConfig,
    MultiHeadAttention,
    RmsNorm,
    RoPE,
    Transformer,
    TransformerBlock,
    cross_entropy,
    default_d_ff,
    scaled_dot_product_attention,
    silu,
    softmax,
)

from hf_llama import to_hf_llama

SMALL = ModelConfig(
    vocab_size=97, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=48
)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def config_with(**changes) -> ModelConfig:
    return dataclasses.replace(SMALL, **changes)


def small_model(**changes) -> Transformer:
    return Transformer(config_with(**changes))


# --- basic layers ---------------------------------------------------------------------------


def test_linear_matches_f_linear_and_init():
    layer = Linear(300, 200)
    assert layer.weight.shape == (200, 300)
    x = torch.randn(2, 5, 300)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight))
    std = math.sqrt(2 / 500)
    assert layer.weight.abs().max() <= 3 * std
    assert layer.weight.std().item() == pytest.approx(std * 0.986, rel=0.05)  # trunc at 3 sigma


def test_embedding_matches_f_embedding_and_init():
    emb = Embedding(1000, 64)
    ids = torch.randint(0, 1000, (3, 7))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb.weight.abs().max() <= 3.0
    assert emb.weight.std().item() == pytest.approx(0.986, rel=0.05)


@pytest.mark.parametrize("scale", [1.0, 1e-3])  # 1e-3: mean(x^2) is below eps, so eps matters
def test_rmsnorm_matches_the_textbook_formula(scale):
    norm = RmsNorm(16, eps=1e-5, dtype=torch.float64)
    norm.weight.data = torch.randn(16, dtype=torch.float64)
    x = torch.randn(4, 3, 16, dtype=torch.float64) * scale
    expected = x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_matches_torch_and_keeps_dtype():
    norm = RmsNorm(16, eps=1e-5)
    norm.weight.data = torch.randn(16)
    x = torch.randn(4, 3, 16)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5))
    x16 = x.to(torch.bfloat16)
    out = norm.to(torch.bfloat16)(x16)
    assert out.dtype == torch.bfloat16
    expected = F.rms_norm(x16.float(), (16,), norm.weight.float(), eps=1e-5)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)


def test_silu_and_ffn_match_torch():
    x = torch.randn(5, 8)
    torch.testing.assert_close(silu(x), F.silu(x))
    ffn = FFN(8, 24)
    expected = F.linear(
        F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight
    )
    torch.testing.assert_close(ffn(x), expected)


def test_default_d_ff_is_8_thirds_rounded_to_64():
    assert default_d_ff(512) == 1408  # 8/3 * 512 = 1365.3 -> 1408
    assert default_d_ff(768) == 2048
    assert FFN(512).w1.weight.shape == (1408, 512)
    assert ModelConfig(d_ff=None).d_ff == 1408


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch(dim):
    x = torch.randn(4, 5, 6) * 5
    torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim))


def test_softmax_and_cross_entropy_are_stable_on_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    probs = softmax(logits, -1)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    targets = torch.tensor([1, 2])
    loss = cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))


def test_cross_entropy_matches_torch_on_any_batch_dims():
    logits = torch.randn(2, 3, 4, 11)
    targets = torch.randint(0, 11, (2, 3, 4))
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(cross_entropy(logits, targets), expected)


# --- attention ------------------------------------------------------------------------------


def test_sdpa_matches_torch_without_and_with_mask_or_bias():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True  # every query sees at least one key
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    bias = torch.randn(3, 5, 7).masked_fill(~mask, float("-inf"))  # a float mask is added
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, bias),
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
    )


def test_sdpa_causal_on_extra_batch_dims():
    q, k, v = (torch.randn(2, 2, 3, 6, 8) for _ in range(3))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def rope_with_complex_numbers(x, positions, theta):
    """Independent RoPE: each adjacent pair (a, b) is the complex number a + ib, multiplied by
    e^(i t) with t = pos * w_k: the 2x2 rotation [[cos t, -sin t], [sin t, cos t]] of (a, b)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[..., None].double() * freqs  # (..., seq, d/2)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def test_rope_matches_complex_rotation():
    rope = RoPE(10_000.0, 16, context_length=50)
    x = torch.randn(2, 3, 7, 16)
    positions = torch.tensor([0, 1, 5, 9, 20, 33, 49])
    expected = rope_with_complex_numbers(x, positions, 10_000.0).float()
    torch.testing.assert_close(rope(x, positions), expected, atol=1e-5, rtol=1e-5)
    assert "cos" not in rope.state_dict()  # buffers are not saved in checkpoints


def test_rope_takes_per_sequence_positions():
    rope = RoPE(500.0, 8, context_length=20)
    x = torch.randn(2, 4, 8)
    positions = torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13]])
    expected = rope_with_complex_numbers(x, positions, 500.0).float()
    torch.testing.assert_close(rope(x, positions), expected, atol=1e-5, rtol=1e-5)


def test_rope_takes_a_slice_for_consecutive_positions():
    rope = RoPE(10_000.0, 8, context_length=20)
    x = torch.randn(3, 7, 8)
    torch.testing.assert_close(rope(x, slice(5, 12)), rope(x, torch.arange(5, 12)))


def test_rope_keeps_dot_products_relative():
    rope = RoPE(10_000.0, 8, context_length=40)
    q, k = torch.randn(8), torch.randn(8)
    dot = [
        rope(q[None], torch.tensor([p + 3])) @ rope(k[None], torch.tensor([p])).T for p in (0, 20)
    ]
    torch.testing.assert_close(dot[0], dot[1])


def reference_attention(
    mha: MultiHeadAttention,
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    theta: float = 10_000.0,
) -> torch.Tensor:
    """Causal multi-head attention written out with PyTorch's own ops, head by head."""
    seq, d = x.shape[-2:]
    wq, wk, wv = mha.qkv_proj.weight.chunk(3)
    positions = torch.arange(seq) if positions is None else positions
    heads = []
    for h in range(mha.num_heads):
        rows = slice(h * mha.d_head, (h + 1) * mha.d_head)
        q = rope_with_complex_numbers(F.linear(x, wq[rows]), positions, theta).to(x.dtype)
        k = rope_with_complex_numbers(F.linear(x, wk[rows]), positions, theta).to(x.dtype)
        heads.append(F.scaled_dot_product_attention(q, k, F.linear(x, wv[rows]), is_causal=True))
    return F.linear(torch.cat(heads, dim=-1), mha.out_proj.weight)


@pytest.mark.parametrize("attention", ["ours", "fused"])
def test_multihead_attention_matches_reference(attention):
    mha = MultiHeadAttention(config_with(attention=attention, rope_theta=500.0))
    x = torch.randn(3, 10, 32)
    expected = reference_attention(mha, x, theta=500.0)
    torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["ours", "fused"])
def test_multihead_attention_takes_positions_per_sequence(attention):
    mha = MultiHeadAttention(config_with(attention=attention))
    x = torch.randn(2, 6, 32)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [9, 10, 11, 12, 13, 14]])
    expected = torch.cat([reference_attention(mha, x[i : i + 1], positions[i]) for i in range(2)])
    torch.testing.assert_close(mha(x, positions), expected, atol=1e-5, rtol=1e-5)


def test_block_is_pre_norm():
    block = TransformerBlock(SMALL)
    x = torch.randn(2, 6, 32)
    h = x + block.attn(block.attn_norm(x))
    torch.testing.assert_close(block(x), h + block.ffn(block.ffn_norm(h)))


# --- gradients ------------------------------------------------------------------------------


def test_gradcheck_blocks_in_float64():
    d = torch.float64
    x = torch.randn(2, 5, 8, dtype=d, requires_grad=True)
    config = config_with(d_model=8, num_heads=2, d_ff=12, context_length=8, attention="ours")
    layers = [
        Linear(8, 6, dtype=d),
        RmsNorm(8, dtype=d),
        FFN(8, 12, dtype=d),
        MultiHeadAttention(config, dtype=d),
        TransformerBlock(config, dtype=d),
    ]
    for layer in layers:
        assert torch.autograd.gradcheck(layer, (x,)), type(layer).__name__
    q, k, v = (torch.randn(2, 4, 6, dtype=d, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(scaled_dot_product_attention, (q, k, v))
    logits = torch.randn(3, 4, 7, dtype=d, requires_grad=True)
    targets = torch.randint(0, 7, (3, 4))
    assert torch.autograd.gradcheck(lambda z: cross_entropy(z, targets), (logits,))
    assert torch.autograd.gradcheck(lambda z: softmax(z, -1), (logits,))
    emb = Embedding(10, 4, dtype=d)
    ids = torch.randint(0, 10, (2, 3))
    weight = torch.randn(10, 4, dtype=d, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(emb, {"weight": w}, (ids,)), (weight,)
    )


# --- the whole model ------------------------------------------------------------------------


@pytest.mark.parametrize("num_kv_heads", [None, 2, 1])  # 4 query heads: MHA, GQA, MQA
@pytest.mark.parametrize("tie", [False, True])
def test_transformer_matches_hf_llama_in_float64(tie, num_kv_heads):
    model = small_model(tie_embeddings=tie, num_kv_heads=num_kv_heads).double()
    hf = to_hf_llama(model)
    assert hf.config.num_key_value_heads == (num_kv_heads or SMALL.num_heads)
    ids = torch.randint(0, SMALL.vocab_size, (3, SMALL.context_length))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.shape == (3, SMALL.context_length, SMALL.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_bfloat16_autocast_stays_close_to_float32():
    """The mixed-precision training path on CPU: bfloat16 logits, loss and gradients close to
    float32's (bfloat16 keeps about 3 significant digits)."""
    model = small_model()
    ids = torch.randint(0, SMALL.vocab_size, (2, 20))
    grads = []
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(ids)
            loss = cross_entropy(logits, ids)
        assert logits.dtype == (torch.bfloat16 if autocast else torch.float32)
        model.zero_grad()
        loss.backward()
        grads.append((loss.detach(), model.embedding.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=2e-2, rtol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=2e-3, rtol=5e-2)


@pytest.mark.parametrize("attention", ["ours", "fused"])
def test_kv_cache_holds_bfloat16_when_decoding_under_autocast(attention):
    """new_kv_cache(batch, torch.bfloat16) under bfloat16 autocast stores keys and values in
    bfloat16 (half the memory of float32), close to a float32 decode's, and the logits stay
    within bfloat16 rounding of the float32 decode's."""
    model = small_model(attention=attention).eval()
    ids = torch.randint(0, SMALL.vocab_size, (2, 24))

    def decode(cache):  # prefill 8 tokens, then one token at a time
        steps = [model(ids[:, :8], cache)] + [model(ids[:, i : i + 1], cache) for i in range(8, 24)]
        return torch.cat(steps, dim=1)

    with torch.no_grad():
        reference_cache = model.new_kv_cache(batch_size=2)
        reference = decode(reference_cache)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache = model.new_kv_cache(2, torch.bfloat16)
            logits = decode(cache)
    assert {t.dtype for t in cache.keys + cache.values} == {torch.bfloat16}
    cached = torch.stack(cache.keys + cache.values).float()  # (2 * layers, batch, heads, ...)
    expected = torch.stack(reference_cache.keys + reference_cache.values)
    torch.testing.assert_close(cached, expected, atol=2e-2, rtol=2e-2)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=4e-2, rtol=2e-2)
    # Without a dtype the cache takes the weights' dtype.
    assert model.to(torch.bfloat16).new_kv_cache(1).keys[0].dtype == torch.bfloat16


def test_last_only_gives_the_last_positions_logits():
    model = small_model().eval()
    ids = torch.randint(0, SMALL.vocab_size, (3, 11))
    with torch.no_grad():
        last = model(ids, last_only=True)
        assert last.shape == (3, 1, SMALL.vocab_size)
        torch.testing.assert_close(last, model(ids)[:, -1:])
        cache = model.new_kv_cache(batch_size=3)
        model(ids[:, :7], kv_cache=cache)
        torch.testing.assert_close(model(ids[:, 7:], cache, last_only=True), last)


def test_clear_errors_for_bad_input_shapes():
    model = small_model()
    with pytest.raises(ValueError, match=r"longer than the context length 24 \(shape \(1, 25\)\)"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must be \(batch, seq\), got shape \(25,\)"):
        model(torch.zeros(25, dtype=torch.long))
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, 20, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="after 20 cached tokens"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(d_model=30, num_heads=4)


def test_tied_embeddings_share_one_matrix():
    untied, tied = small_model(), small_model(tie_embeddings=True)
    assert tied.embedding.weight is tied.lm_head.weight
    matrix = SMALL.vocab_size * SMALL.d_model
    assert untied.num_parameters() - tied.num_parameters() == matrix
    assert untied.num_parameters(exclude_embeddings=True) == untied.num_parameters() - matrix


# --- snapshots ------------------------------------------------------------------------------


def summary(t: torch.Tensor) -> dict:
    """Floats rounded to 4 decimals so the snapshots hold across BLAS libraries and CPUs."""
    flat = t.detach().double().flatten()
    return {
        "shape": list(t.shape),
        "first": [round(v, 4) for v in flat[:6].tolist()],
        "mean": round(flat.mean().item(), 4),
        "abs_mean": round(flat.abs().mean().item(), 4),
    }


def test_snapshot_of_each_block(snapshot):
    x = torch.randn(2, 6, 16)
    config = config_with(d_model=16, num_heads=2, d_ff=32, context_length=8)
    results = {}
    for name, make in [
        ("linear", lambda: Linear(16, 8)),
        ("rmsnorm", lambda: RmsNorm(16)),
        ("ffn", lambda: FFN(16, 32)),
        ("attention", lambda: MultiHeadAttention(config)),
        ("block", lambda: TransformerBlock(config)),
    ]:
        torch.manual_seed(1)
        results[name] = summary(make()(x))
    torch.manual_seed(1)
    model = Transformer(MODEL_PRESETS["tiny"])
    results["transformer"] = summary(model(torch.arange(12).view(2, 6)))
    assert results == snapshot
