"""The model switches of ModelConfig (norm_position, position_encoding, ffn), each checked
against the papers' equations written out in plain PyTorch, on both attention paths. The KV
cache, the fused kernel, checkpoints and the counts are checked for every variant in
test_model_variants.py."""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from llm.config import ConfigError, config_from_dict
from llm.training import load_train_config
from llm.transformer import (
    FFN,
    ALiBi,
    ModelConfig,
    MultiHeadAttention,
    NoPE,
    RmsNorm,
    RoPE,
    SiluFFN,
    Transformer,
    default_d_ff,
)

from hf_llama import NOT_LLAMA, to_hf_llama

SMALL = ModelConfig(
    vocab_size=53, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=40
)
SWITCHES = {
    "norm_position": ("pre", "post", "none"),
    "position_encoding": ("rope", "none", "alibi"),
    "ffn": ("swiglu", "silu"),
}
VARIANTS = [
    dict(zip(SWITCHES, values, strict=True)) for values in itertools.product(*SWITCHES.values())
]


def variant_id(variant: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in variant.items())


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def small_model(**changes) -> Transformer:
    """A SMALL model with its norm gains moved away from 1, so that a gain applied in the wrong
    place (or not at all) changes the output."""
    model = Transformer(dataclasses.replace(SMALL, **changes))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.5 * torch.randn_like(p))
    return model


# --- the switches written out from the papers -----------------------------------------------


def rms_norm(x, weight):
    """RMSNorm (Zhang & Sennrich, 2019): x / sqrt(mean(x^2) + eps) * g."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight


def rotate(x, theta):
    """RoPE as complex multiplication: pair (a, b) at position p becomes (a + ib) e^(i p w_k)."""
    seq, d = x.shape[-2:]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * freqs  # (seq, d/2)
    pairs = torch.view_as_complex(x.double().unflatten(-1, (d // 2, 2)).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def attention(x, mha, num_heads, position_encoding="none", theta=10_000.0):
    """softmax(Q K^T / sqrt(d_head) + causal mask) V per head, with Q, K rotated by RoPE, or
    left as they are (NoPE), or with ALiBi's bias -m_h (i - j) added to the scores, m_h =
    2^(-8h/n) for n heads, n a power of 2 (Press et al., 2022)."""
    seq, d = x.shape[-2:]
    q, k, v = F.linear(x, mha.qkv_proj.weight).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (num_heads, d // num_heads)).transpose(-3, -2) for t in (q, k, v))
    if position_encoding == "rope":
        q, k = rotate(q, theta).to(x.dtype), rotate(k, theta).to(x.dtype)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // num_heads)  # (batch, heads, seq, seq)
    if position_encoding == "alibi":
        slopes = torch.tensor([2 ** (-8 * h / num_heads) for h in range(1, num_heads + 1)])
        distance = torch.arange(seq)[:, None] - torch.arange(seq)[None, :]  # i - j
        scores = scores - slopes[:, None, None] * distance  # (heads, seq, seq) bias
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    out = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1) @ v
    return F.linear(out.transpose(-3, -2).flatten(-2), mha.out_proj.weight)


def feed_forward(x, ffn, kind):
    """SwiGLU: W2 (SiLU(W1 x) * W3 x); SiLU: W2 SiLU(W1 x) (Shazeer, 2020)."""
    hidden = F.silu(F.linear(x, ffn.w1.weight))
    if kind == "swiglu":
        hidden = hidden * F.linear(x, ffn.w3.weight)
    return F.linear(hidden, ffn.w2.weight)


def reference_logits(model, ids):
    """The whole model, each block from its norm placement's equation."""
    c = model.config
    x = model.embedding.weight[ids]

    def attend(x, block):
        return attention(x, block.attn, c.num_heads, c.position_encoding, c.rope_theta)

    for block in model.blocks:
        g1, g2 = getattr(block.attn_norm, "weight", None), getattr(block.ffn_norm, "weight", None)
        if c.norm_position == "pre":  # x + f(norm(x))
            x = x + attend(rms_norm(x, g1), block)
            x = x + feed_forward(rms_norm(x, g2), block.ffn, c.ffn)
        elif c.norm_position == "post":  # norm(x + f(x)), Vaswani et al. (2017)
            x = rms_norm(x + attend(x, block), g1)
            x = rms_norm(x + feed_forward(x, block.ffn, c.ffn), g2)
        else:  # x + f(x)
            x = x + attend(x, block)
            x = x + feed_forward(x, block.ffn, c.ffn)
    if c.norm_position == "pre":  # post-norm blocks end in a norm; "none" has none
        x = rms_norm(x, model.final_norm.weight)
    return F.linear(x, model.lm_head.weight)


@pytest.mark.parametrize("attention_path", ["ours", "fused"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_variant_matches_its_equations_in_float64(variant, attention_path):
    model = small_model(**variant, attention=attention_path).double()
    ids = torch.randint(0, SMALL.vocab_size, (2, SMALL.context_length))
    with torch.no_grad():
        # Not exact: the RoPE tables are float32 (rounded once), as in the Hugging Face test.
        torch.testing.assert_close(model(ids), reference_logits(model, ids), atol=1e-6, rtol=0)


def test_silu_ffn_is_w2_silu_w1():
    ffn = SiluFFN(8, 24)
    x = torch.randn(5, 8)
    assert [name for name, _ in ffn.named_parameters()] == ["w1.weight", "w2.weight"]
    torch.testing.assert_close(ffn(x), F.silu(x @ ffn.w1.weight.T) @ ffn.w2.weight.T)


def test_layers_follow_the_switches():
    post = small_model(norm_position="post", position_encoding="none", ffn="silu")
    block = post.blocks[0]
    assert isinstance(block.attn_norm, RmsNorm) and isinstance(block.ffn_norm, RmsNorm)
    assert type(block.attn.position) is NoPE and isinstance(block.ffn, SiluFFN)
    alibi = small_model(position_encoding="alibi")
    assert isinstance(alibi.blocks[0].attn.position, ALiBi)
    assert alibi.blocks[1].attn.position is alibi.blocks[0].attn.position  # one for all layers
    assert isinstance(small_model().blocks[0].attn.position, RoPE)
    assert "final_norm.weight" not in post.state_dict()
    assert not any("norm" in name for name in small_model(norm_position="none").state_dict())
    assert isinstance(small_model().blocks[0].ffn, FFN)


# --- NoPE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention_path", ["ours", "fused"])
def test_nope_attention_is_causal_softmax_without_rotation(attention_path):
    config = dataclasses.replace(SMALL, position_encoding="none", attention=attention_path)
    mha = MultiHeadAttention(config)
    x = torch.randn(3, 10, 32)
    expected = attention(x, mha, SMALL.num_heads, "none")
    torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)
    positions = torch.randint(0, SMALL.context_length, (3, 10))  # given positions are ignored
    torch.testing.assert_close(mha(x, positions), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_position", ["pre", "post", "none"])
def test_without_positions_the_last_token_cannot_see_the_order_of_the_others(norm_position):
    """The last query attends to every key; without positions attention is a weighted sum
    over a set, so permuting the earlier tokens leaves the first layer's last output (and a
    1-layer model's last logits) unchanged. With RoPE or ALiBi it changes."""
    ids = torch.randint(0, SMALL.vocab_size, (2, 12))
    shuffled = torch.cat([ids[:, torch.randperm(11)], ids[:, 11:]], dim=1)
    assert not torch.equal(ids, shuffled)
    for position_encoding in ("none", "rope", "alibi"):
        model = small_model(norm_position=norm_position, position_encoding=position_encoding)
        one_layer = small_model(
            norm_position=norm_position, position_encoding=position_encoding, num_layers=1
        )
        model, one_layer = model.double(), one_layer.double()
        with torch.no_grad():
            first = [model.blocks[0](model.embedding(t))[:, -1] for t in (ids, shuffled)]
            last_logits = [one_layer(t)[:, -1] for t in (ids, shuffled)]
        for a, b in (first, last_logits):
            if position_encoding == "none":
                torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
            else:
                assert (a - b).abs().max() > 1e-3


def test_default_d_ff_keeps_the_ffn_parameters_about_equal():
    assert default_d_ff(512) == 1408 and default_d_ff(512, "silu") == 2048
    assert ModelConfig(ffn="silu", d_ff=None).d_ff == 2048
    assert ModelConfig(ffn="silu", d_ff=100).d_ff == 100  # an explicit d_ff is used as given
    assert SiluFFN(64).w1.weight.shape == (256, 64)
    for d in (256, 512, 768, 1024):
        swiglu, silu = 3 * d * default_d_ff(d), 2 * d * default_d_ff(d, "silu")
        assert swiglu == pytest.approx(silu, rel=0.05)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("norm_position", "'pre', 'post', 'none'"),
        ("position_encoding", "'rope', 'none', 'alibi'"),
        ("ffn", "'swiglu', 'silu'"),
        ("attention", "'fused', 'ours'"),
    ],
)
def test_unknown_switch_values_are_one_line_errors(key, allowed):
    message = f"{key} must be one of {allowed}, not 'Pre'"
    with pytest.raises(ValueError) as error:
        ModelConfig(**{key: "Pre"})
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=message):  # the same from TOML and --model.KEY flags
        config_from_dict(ModelConfig, {key: "Pre"})


def test_switches_are_training_flags():
    config = load_train_config(
        ["--model.norm_position", "post", "--model.position_encoding", "none",
         "--model.ffn", "silu", "--model.d_ff", "none"]
    ).model  # fmt: skip
    assert (config.norm_position, config.position_encoding, config.ffn) == ("post", "none", "silu")
    assert config.d_ff == 4 * config.d_model


def test_odd_head_size_is_fine_without_rope():
    assert ModelConfig(d_model=12, num_heads=4, position_encoding="none").d_head == 3
    with pytest.raises(ValueError, match="even size"):
        ModelConfig(d_model=12, num_heads=4)
    with pytest.raises(ValueError, match="heads of equal size"):
        ModelConfig(d_model=30, num_heads=4, position_encoding="none")


@pytest.mark.parametrize("switch", NOT_LLAMA)
def test_the_hf_reference_refuses_what_llama_cannot_express(switch):
    model = Transformer(dataclasses.replace(SMALL, **switch))
    with pytest.raises(ValueError, match=f"{next(iter(switch))}=.* has no Llama equivalent"):
        to_hf_llama(model)
