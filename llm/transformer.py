"""A decoder-only Transformer language model, built from tensor operations.

The architecture is the one used by Llama and most modern LMs:

    tokens -> Embedding -> num_layers x TransformerBlock -> RmsNorm -> Linear -> logits
    TransformerBlock(x) = x + Attention(RmsNorm(x)), then h + FFN(RmsNorm(h))      (pre-norm)

with RMSNorm (Zhang & Sennrich, 2019), SwiGLU feed-forward layers (Shazeer, 2020) and rotary
position embeddings, RoPE (Su et al., 2021), applied to queries and keys.

Three switches of ModelConfig swap a part for another design, for ablations: norm_position
("pre", "post" or "none"), position_encoding ("rope", "none" or "alibi") and ffn ("swiglu" or
"silu"); their values are the keys of the tables NORMS, POSITION_ENCODINGS and FFNS. Four
options add other ingredients: grouped-query attention (num_kv_heads), QK-norm (qk_norm),
sliding-window attention (sliding_window) and zero-initialised output projections
(zero_init_residual); dropout regularises small data. The defaults are the model above.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass
class ModelConfig:
    """Shape of the model; saved in every checkpoint so a model can be rebuilt from it.

    MultiHeadAttention, TransformerBlock and Transformer are built from it, so a new model option
    is a field here, read by the layer it changes. The basic layers (Linear, Embedding, RmsNorm,
    RoPE, FFN) take explicit sizes and can be used on their own.
    """

    vocab_size: int = 10_000  # token ids 0 .. vocab_size - 1 (training: follows the tokenizer)
    context_length: int = 256  # the most tokens the model sees at once
    d_model: int = 512  # the width of the residual stream
    num_layers: int = 4  # transformer blocks
    num_heads: int = 16  # attention heads; d_model / num_heads is each head's size
    d_ff: int | None = 1344  # None: 8/3 d_model rounded up to 64 for swiglu, 4 d_model for silu
    rope_theta: float = 10_000.0  # RoPE's base: the slowest rotation's wavelength, about 2 pi theta
    tie_embeddings: bool = False  # the output layer uses the embedding matrix (one matrix)
    attention: str = "fused"  # "fused": F.scaled_dot_product_attention; "ours": from scratch
    norm_position: str = "pre"  # "pre": x + f(norm(x)); "post": norm(x + f(x)); "none": no norms
    position_encoding: str = "rope"  # "rope"; "none" (NoPE: only the causal mask); "alibi"
    ffn: str = "swiglu"  # "swiglu": W2 (SiLU(W1 x) * W3 x); "silu": W2 SiLU(W1 x)
    num_kv_heads: int | None = None  # GQA: K/V heads, each shared by a query group; None: num_heads
    qk_norm: bool = False  # RMSNorm on each head's queries and keys, before RoPE
    zero_init_residual: bool = False  # attention's out_proj and the FFN's W2 start at zero
    dropout: float = 0.0  # in training, drop this share of the embeddings and branch outputs
    norm_eps: float = 1e-5  # the eps of every RMSNorm (Llama 2 and 3 use 1e-5, Llama 1 1e-6)
    sliding_window: int | None = None  # each query sees only the last this many keys; None: all

    def __post_init__(self) -> None:
        for key in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, not {getattr(self, key)}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                names = ", ".join(repr(a) for a in allowed)
                raise ValueError(f"{key} must be one of {names}, not {getattr(self, key)!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model, self.ffn)
        if self.d_ff < 1:
            raise ValueError(f"d_ff must be at least 1 (or None for the default), not {self.d_ff}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, not {self.rope_theta}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, not {self.norm_eps}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must split into num_heads={self.num_heads} heads "
                "of equal size"
            )
        if self.num_kv_heads is not None and (
            self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads
        ):
            raise ValueError(
                f"num_kv_heads must divide num_heads={self.num_heads} (or be None for "
                f"num_heads), not {self.num_kv_heads}"
            )
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(
                f"sliding_window must be at least 1 (or None for full attention), "
                f"not {self.sliding_window}"
            )
        if self.position_encoding == "rope" and self.d_head % 2:
            raise ValueError(
                f"d_model={self.d_model} must split into num_heads={self.num_heads} heads "
                "of even size (RoPE rotates pairs of dimensions)"
            )

    @property
    def d_head(self) -> int:
        """Size of one attention head (queries, keys and values)."""
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads: num_kv_heads, or num_heads (no sharing) when None."""
        return self.num_kv_heads or self.num_heads


def default_d_ff(d_model: int, ffn: str = "swiglu") -> int:
    """The FFN's hidden size when none is given: 4 d_model for the two-matrix SiLU FFN (8 d_model^2
    weights), 8/3 d_model rounded up to a multiple of 64 for the three-matrix SwiGLU, so that both
    hold about the same number of parameters (Shazeer, 2020)."""
    if ffn == "silu":
        return 4 * d_model
    return 64 * math.ceil(8 * d_model / 3 / 64)


# ---------------------------------------------------------------------------------------------
# Basic layers
# ---------------------------------------------------------------------------------------------


_random_init = True  # False inside no_weight_init()


@contextmanager
def no_weight_init() -> Iterator[None]:
    """Build models without drawing random initial weights, for weights loaded right after
    (a checkpoint, a Hugging Face or GGUF file); until then they are uninitialised memory.
    Drawing them takes 4 s for a 135M model on CPU."""
    global _random_init
    previous, _random_init = _random_init, False
    try:
        yield
    finally:
        _random_init = previous


class Linear(nn.Module):
    """y = x W^T, without bias (modern LMs drop it); W is (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, device=device, dtype=dtype)
        )
        std = math.sqrt(2 / (in_features + out_features))
        if _random_init:
            nn.init.trunc_normal_(self.weight, std=std, a=-3 * std, b=3 * std)

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        return x @ self.weight.T


class Embedding(nn.Module):
    """A lookup table: token id -> row of the weight matrix (num_embeddings, embedding_dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype)
        )
        if _random_init:
            nn.init.trunc_normal_(self.weight, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Tensor) -> Tensor:  # (...) -> (..., embedding_dim)
        return self.weight[token_ids]


class RmsNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019), computed in float32 for stability:

        RmsNorm(x) = x / sqrt(mean(x^2) + eps) * g        (g: the learned gain, self.weight)

    mean(x^2) + eps is computed as addcmul(eps, |x|, |x|, 1/d) = eps + |x|^2 / d: one reduction
    (vector_norm) and one addcmul, with no Python number inside a tensor op (`+ eps`, or mean's
    division by d, costs a tensor allocation and a copy per call: a large share of the time when
    decoding one token). The tests check it against the plain formula."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))
        # A 0-dim tensor, not a float: addcmul takes it without a per-call conversion.
        self.register_buffer("eps", torch.tensor(eps, device=device, dtype=dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_model)
        low_precision = x.dtype in (torch.float16, torch.bfloat16)
        x_compute = x.float() if low_precision else x
        norm = torch.linalg.vector_norm(x_compute, dim=-1, keepdim=True)  # sqrt(sum x^2), (..., 1)
        # mean(x^2) + eps = eps + norm * norm / d_model
        mean_square_eps = torch.addcmul(self.eps, norm, norm, value=1 / x.shape[-1])
        out = x_compute * torch.rsqrt(mean_square_eps) * self.weight
        return out.to(x.dtype) if low_precision else out


def silu(x: Tensor) -> Tensor:
    """SiLU (a.k.a. swish): x * sigmoid(x)."""
    return x * torch.sigmoid(x)


class FFN(nn.Module):
    """SwiGLU feed-forward network (Shazeer, 2020): W2 (SiLU(W1 x) * W3 x)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        d_ff = d_ff or default_d_ff(d_model)
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)
        self.w3 = Linear(d_model, d_ff, device, dtype)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., d_model)
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiluFFN(nn.Module):
    """Ungated feed-forward network with a SiLU activation: W2 SiLU(W1 x) (FFN_Swish in Shazeer,
    2020; the original Transformer's FFN with SiLU in place of ReLU and no biases)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        d_ff = d_ff or default_d_ff(d_model, "silu")
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., d_model)
        return self.w2(silu(self.w1(x)))


class Dropout(nn.Module):
    """In training, zero each element with probability p and scale the rest by 1 / (1 - p), so
    the expected output equals the input (Srivastava et al., 2014); the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1 - self.p)


def softmax(x: Tensor, dim: int) -> Tensor:
    """exp(x) / sum(exp(x)), with the max subtracted first so exp never overflows."""
    exp = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return exp / exp.sum(dim=dim, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> Tensor:
    """softmax(Q K^T / sqrt(d_k) + B) V  (Vaswani et al., 2017), B a mask or a bias.

    q: (..., queries, d_k), k: (..., keys, d_k), v: (..., keys, d_v) -> (..., queries, d_v).
    mask: broadcastable to (..., queries, keys), as for F.scaled_dot_product_attention: bool,
    True where a query may attend to a key, or float, added to the scores (-inf: not attended).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., queries, keys)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    return softmax(scores, dim=-1) @ v


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Grouped-query attention, GQA (Ainslie et al., 2023): each key/value head is shared by a
    group of consecutive query heads (query head h reads K/V head h // group).

    q: (batch, heads, seq, d_head); k, v: (batch, kv_heads, keys, d_head) -> like q.
    mask: (seq, keys), (batch, 1, seq, keys), or per query head (heads, seq, keys) or
    (batch, heads, seq, keys), as for scaled_dot_product_attention.
    The queries are split into groups and K, V broadcast over them, so K and V are never copied.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    q = q.unflatten(1, (kv_heads, heads // kv_heads))  # (batch, kv_heads, group, seq, d_head)
    if mask is not None and mask.ndim >= 3 and mask.shape[-3] == heads:
        mask = mask.unflatten(-3, (kv_heads, -1))  # (..., kv_heads, group, seq, keys)
    elif mask is not None and mask.ndim == 4:
        mask = mask.unsqueeze(2)  # (batch, 1, 1, seq, keys)
    out = scaled_dot_product_attention(q, k.unsqueeze(2), v.unsqueeze(2), mask)
    return out.flatten(1, 2)  # (batch, heads, seq, d_head)


# F.scaled_dot_product_attention shares K/V heads itself (enable_gqa) since PyTorch 2.5.
SDPA_HAS_GQA = torch.__version__ >= "2.5"


class RoPE(nn.Module):
    """Rotary position embedding (Su et al., 2021): rotate each pair (x[2i], x[2i+1]) of a query
    or key at position pos by the angle t = pos * theta^(-2i/d_k):

        [x'[2i]    ]   [cos t  -sin t] [x[2i]    ]
        [x'[2i + 1]] = [sin t   cos t] [x[2i + 1]]

    The dot product of two rotated vectors then depends only on their relative position.
    Rotating a pair (a, b) by t gives (a cos t - b sin t, b cos t + a sin t), so for the whole
    vector, without a matrix: x * cos + swap_pairs(x) * signed_sin, with swap_pairs((a, b)) =
    (b, a) and the sine negated on the first element of each pair (the tests check it against
    the rotation, written as complex multiplication). The tables hold each pair's angle twice, one
    column per dimension, are precomputed up to context_length and are not saved in checkpoints
    (they are a pure function of the config).
    """

    def __init__(self, theta: float, d_k: int, context_length: int, device=None) -> None:
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float64) / d_k)
        positions = torch.arange(context_length, device=device, dtype=torch.float64)
        angles = torch.outer(positions, inv_freq).repeat_interleave(2, dim=-1)  # (context, d_k)
        signed_sin = angles.sin()
        signed_sin[:, 0::2] *= -1
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("signed_sin", signed_sin.float(), persistent=False)

    def forward(self, x: Tensor, token_positions: Tensor | slice) -> Tensor:
        """x: (..., seq, d_k); token_positions: (..., seq) broadcastable to x's leading dims, or a
        slice for consecutive positions (a view of the tables, no lookup)."""
        cos, signed_sin = self.cos[token_positions], self.signed_sin[token_positions]  # (.., d_k)
        if cos.dtype != x.dtype:  # e.g. bfloat16 queries under autocast
            cos, signed_sin = cos.to(x.dtype), signed_sin.to(x.dtype)
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for each pair (a, b)
        return x * cos + swapped * signed_sin


class NoPE(nn.Module):
    """No position encoding, NoPE (Kazemnejad et al., 2023): queries and keys are left as they
    are, so the causal mask is the model's only clue to word order. Takes RoPE's place."""

    def forward(self, x: Tensor, token_positions: Tensor | slice) -> Tensor:
        return x


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's head slopes (Press et al., 2022, section 3): for n heads, n a power of 2, the
    geometric sequence m_h = 2^(-8h/n), h = 1 .. n (1/2, 1/4, ..., 1/256 for 8 heads). For other
    n, the rule of the authors' code (github.com/ofirpress/attention_with_linear_biases): the
    slopes of the power of 2 below n, then every other slope of the power of 2 above it, as many
    as are missing (6 heads: 1/4, 1/16, 1/64, 1/256, then 1/2, 1/8)."""
    below = 2 ** math.floor(math.log2(num_heads))

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * h / n) for h in range(1, n + 1)]

    return torch.tensor(geometric(below) + geometric(2 * below)[0::2][: num_heads - below])


class ALiBi(NoPE):
    """Attention with linear biases, ALiBi (Press et al., 2022, "Train Short, Test Long"):
    queries and keys are not rotated (as with NoPE); instead head h adds to the score of query i
    on key j a penalty linear in their distance, with a fixed slope m_h (alibi_slopes):

        score_h(i, j) = q_i . k_j / sqrt(d_head) - m_h (i - j)            (section 3, j <= i)

    No table depends on the context length, so the model runs on longer inputs than it was
    trained on. The slopes are a buffer, not parameters, and not saved in checkpoints."""

    def __init__(self, num_heads: int, device=None) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads).to(device), persistent=False)

    def bias(self, seq: int, start: int, device) -> Tensor:  # (heads, seq, start + seq)
        """-m_h (i - j) for the queries at positions start .. start + seq - 1 and the keys at
        0 .. start + seq - 1 (the scores of future keys are masked out by the caller)."""
        query_pos = torch.arange(start, start + seq, device=device)[:, None]
        key_pos = torch.arange(start + seq, device=device)[None, :]
        return -self.slopes[:, None, None] * (query_pos - key_pos)


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, for every layer, so that decoding one more token
    costs one token's work instead of re-running the whole sequence.

    Buffers are preallocated to their capacity (the context length, or less when the caller knows
    it needs less). `key_mask` (batch, capacity), when set, marks which cached positions are
    real tokens (False = left padding, never attended to).
    """

    keys: list[Tensor]  # per layer: (batch, kv_heads, capacity, d_head)
    values: list[Tensor]
    length: int = 0
    key_mask: Tensor | None = None

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this layer's new keys/values (batch, kv_heads, new, d_head); return all so
        far."""
        start, end = self.length, self.length + k.shape[-2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def with_capacity(self, capacity: int) -> "KVCache":
        """A cache with room for `capacity` tokens that holds this one's `length` (a chat's
        conversation grows past the room it was given)."""
        if self.key_mask is not None:
            raise ValueError("a cache with padding (key_mask) cannot be resized")

        def moved(buffers: list[Tensor]) -> list[Tensor]:
            out = [b.new_zeros(*b.shape[:2], capacity, b.shape[3]) for b in buffers]
            for new, old in zip(out, buffers, strict=True):
                new[:, :, : self.length] = old[:, :, : self.length]
            return out

        return KVCache(keys=moved(self.keys), values=moved(self.values), length=self.length)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with a position encoding (RoPE, NoPE or ALiBi) and an
    optional KV cache.

    config.num_kv_heads < num_heads gives grouped-query attention (Ainslie et al., 2023): K and V
    have num_kv_heads heads, each shared by num_heads / num_kv_heads query heads, so the K/V
    projection and the KV cache shrink by that factor. config.qk_norm applies RMSNorm to each
    head's queries and keys after the projection, before RoPE (Dehghani et al., 2023; OLMo 2;
    Gemma 3): one learned gain of size d_head for queries and one for keys, shared by all heads.
    config.sliding_window limits each query to the last sliding_window keys (causal_mask).

    Positions are a token's index in the sequence, the cached tokens included; token_positions,
    when given, replace them for RoPE only (the masks and ALiBi's bias use the index).
    """

    def __init__(
        self, config: ModelConfig, device=None, dtype=None, position: nn.Module | None = None
    ) -> None:
        """position: the position encoding shared with other layers (the Transformer's); None
        builds one (POSITION_ENCODINGS)."""
        super().__init__()
        d_model = config.d_model
        self.num_heads = config.num_heads
        self.num_kv_heads = config.kv_heads
        self.d_head = config.d_head
        self.attention = config.attention
        self.window = config.sliding_window
        qkv_size = (self.num_heads + 2 * self.num_kv_heads) * self.d_head
        self.qkv_proj = Linear(d_model, qkv_size, device, dtype)  # Q, K and V in one matmul
        self.out_proj = Linear(d_model, d_model, device, dtype)
        self.qk_norm = config.qk_norm
        if self.qk_norm:
            self.q_norm = RmsNorm(self.d_head, config.norm_eps, device, dtype)
            self.k_norm = RmsNorm(self.d_head, config.norm_eps, device, dtype)
        if position is None:
            position = POSITION_ENCODINGS[config.position_encoding](config, device)
        self.position = position
        # Query heads per K/V head. The fused kernel shares K/V heads itself when it can
        # (enable_gqa); on older PyTorch, K and V are repeated per group.
        self.group = self.num_heads // self.num_kv_heads
        self.sdpa_options = {"enable_gqa": True} if self.group > 1 and SDPA_HAS_GQA else {}
        self.repeat_kv = self.group > 1 and not SDPA_HAS_GQA

    def forward(
        self,
        x: Tensor,
        token_positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:  # (batch, seq, d_model) -> (batch, seq, d_model)
        batch, seq, d_model = x.shape
        start = kv_cache.length if kv_cache is not None else 0
        if token_positions is None:
            token_positions = slice(start, start + seq)
        elif token_positions.ndim > 1:
            token_positions = token_positions.unsqueeze(-2)  # (batch, 1, seq): same for all heads
        heads, kv_heads = self.num_heads, self.num_kv_heads
        # (batch, seq, (heads + 2 kv_heads) d_head) -> (batch, heads + 2 kv_heads, seq, d_head)
        qkv = self.qkv_proj(x).view(batch, seq, -1, self.d_head).transpose(1, 2)
        qk, v = qkv.split([heads + kv_heads, kv_heads], dim=1)
        if self.qk_norm:
            q, k = qk.split([heads, kv_heads], dim=1)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=1)  # each with its gain
        qk = self.position(qk, token_positions)  # rotate queries and keys in one call (RoPE)
        q, k = qk.split([heads, kv_heads], dim=1)  # (batch, heads or kv_heads, seq, d_head)
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # (batch, kv_heads, start + seq, d_head)
        is_causal, mask = self._mask(seq, start, x.device, kv_cache)
        if self.attention == "fused":
            if self.repeat_kv:  # (batch, heads, keys, d_head)
                k, v = k.repeat_interleave(self.group, 1), v.repeat_interleave(self.group, 1)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, **self.sdpa_options
            )
        else:
            if is_causal:
                mask = causal_mask(seq, 0, x.device)
            if self.group > 1:
                out = grouped_query_attention(q, k, v, mask)
            else:
                out = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(1, 2).reshape(batch, seq, d_model)  # concatenate the heads
        return self.out_proj(out)

    def _mask(
        self, seq: int, start: int, device, kv_cache: KVCache | None
    ) -> tuple[bool, Tensor | None]:
        """(is_causal, mask): what the new queries may see of the keys so far. The mask is bool,
        (seq, keys) or (batch, 1, seq, keys), or with ALiBi its bias, -inf where masked,
        (heads, seq, keys) or (batch, heads, seq, keys); None when the causal mask is all there
        is to it: on a fresh sequence (is_causal: the fused kernel builds it) or for one new
        token, which sees every earlier key."""
        key_mask = kv_cache.key_mask if kv_cache is not None else None
        if self.window is None and not isinstance(self.position, ALiBi) and key_mask is None:
            if start == 0:
                return True, None
            if seq == 1:
                return False, None
        # The cache keeps every key, also those that slid out of the window: the mask hides them.
        mask = causal_mask(seq, start, device, self.window)  # (seq, start + seq)
        if key_mask is not None:
            # Padding keys are hidden from every query; a padding query still sees itself, so
            # its softmax row is never empty (an empty row gives NaN, which would then leak).
            is_self = (
                torch.arange(start + seq, device=device)
                == torch.arange(start, start + seq, device=device)[:, None]
            )
            mask = mask & (key_mask[:, None, None, : start + seq] | is_self)
        if isinstance(self.position, ALiBi):
            bias = self.position.bias(seq, start, device)  # (heads, seq, start + seq)
            return False, torch.where(mask, bias, float("-inf"))
        return False, mask


def causal_mask(seq: int, start: int, device, window: int | None = None) -> Tensor:
    """(seq, start + seq) bool: query i, at position p = start + i, sees the keys at positions
    0 .. p; with a sliding window (Mistral 7B, Jiang et al., 2023) only the last `window` of them,
    p - window < j <= p."""
    query_pos = torch.arange(start, start + seq, device=device)[:, None]
    key_pos = torch.arange(start + seq, device=device)[None, :]
    mask = key_pos <= query_pos
    if window is not None:
        mask = mask & (key_pos > query_pos - window)
    return mask


# ---------------------------------------------------------------------------------------------
# The choices of ModelConfig's switches, and the presets
# ---------------------------------------------------------------------------------------------

# Each switch's values, by name: what builds the part (ModelConfig allows exactly these names).
# A position encoding is applied to queries and keys, one module shared by all layers.
POSITION_ENCODINGS: dict[str, Callable[[ModelConfig, torch.device | None], nn.Module]] = {
    "rope": lambda c, device: RoPE(c.rope_theta, c.d_head, c.context_length, device),
    "none": lambda c, device: NoPE(),
    "alibi": lambda c, device: ALiBi(c.num_heads, device),
}
# The norm around each sublayer, by norm_position (nn.Identity ignores the sizes it is given).
NORMS: dict[str, type[nn.Module]] = {"pre": RmsNorm, "post": RmsNorm, "none": nn.Identity}
FFNS: dict[str, type[nn.Module]] = {"swiglu": FFN, "silu": SiluFFN}

# The allowed values of ModelConfig's string options, the default first.
CHOICES: dict[str, tuple[str, ...]] = {
    "attention": ("fused", "ours"),
    "norm_position": tuple(NORMS),
    "position_encoding": tuple(POSITION_ENCODINGS),
    "ffn": tuple(FFNS),
}

MODEL_PRESETS: dict[str, ModelConfig] = {
    # CS336 assignment 1 recipe for TinyStories (about 17M non-embedding parameters).
    "tinystories-17m": ModelConfig(),
    # Small enough to train in seconds on a laptop CPU; used by the tests.
    "tiny": ModelConfig(
        vocab_size=512, context_length=64, d_model=64, num_layers=2, num_heads=4, d_ff=None
    ),
    "cpu-small": ModelConfig(d_model=256, num_heads=8, d_ff=688),
    # CS336 assignment 2 model sizes (vocab 10000, context 256 unless told otherwise).
    "cs336-small": ModelConfig(d_model=768, d_ff=3072, num_layers=12, num_heads=12),
    "cs336-medium": ModelConfig(d_model=1024, d_ff=4096, num_layers=24, num_heads=16),
    "cs336-large": ModelConfig(d_model=1280, d_ff=5120, num_layers=36, num_heads=20),
    "cs336-xl": ModelConfig(d_model=1600, d_ff=6400, num_layers=48, num_heads=25),
    "cs336-2.7b": ModelConfig(d_model=2560, d_ff=10240, num_layers=32, num_heads=32),
}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """An attention layer then a feed-forward layer, each with a residual connection and an
    RMSNorm placed by config.norm_position:

        "pre"  (default)  h = x + attn(norm1(x));   out = h + ffn(norm2(h))
        "post"            h = norm1(x + attn(x));   out = norm2(h + ffn(h))   (Vaswani et al., 2017)
        "none"            h = x + attn(x);          out = h + ffn(h)

    Pre-norm keeps an identity path from the input to the output, which trains stably without
    warm-up; post-norm normalises the residual stream itself (Xiong et al., 2020)."""

    def __init__(
        self, config: ModelConfig, device=None, dtype=None, position: nn.Module | None = None
    ) -> None:
        super().__init__()
        d_model = config.d_model

        def norm() -> nn.Module:
            return NORMS[config.norm_position](d_model, config.norm_eps, device, dtype)

        self.post_norm = config.norm_position == "post"
        self.attn_norm = norm()
        self.attn = MultiHeadAttention(config, device, dtype, position)
        self.ffn_norm = norm()
        self.ffn = FFNS[config.ffn](d_model, config.d_ff, device, dtype)
        self.dropout = Dropout(config.dropout)  # on each branch's output, before the sum
        if config.zero_init_residual:
            # Both branches add nothing at first, so a pre-norm block starts as the identity
            # (as in modded-nanogpt); their gradients are not zero, so they still learn.
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.ffn.w2.weight)

    def forward(
        self,
        x: Tensor,
        token_positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:  # (batch, seq, d_model)
        drop = self.dropout
        if self.post_norm:
            x = self.attn_norm(x + drop(self.attn(x, token_positions, kv_cache, layer)))
            return self.ffn_norm(x + drop(self.ffn(x)))
        x = x + drop(self.attn(self.attn_norm(x), token_positions, kv_cache, layer))
        return x + drop(self.ffn(self.ffn_norm(x)))


class Transformer(nn.Module):
    """Token ids (batch, seq) -> next-token logits (batch, seq, vocab_size).

    Only the pre-norm model has a final RMSNorm before the output layer: a pre-norm block adds
    to the residual stream un-normalised, so its last output needs one. A post-norm block
    already ends in a norm, so, as in the original post-norm Transformer (Vaswani et al., 2017;
    Xiong et al., 2020's Post-LN), there is none after the last block (another would only
    rescale by a second gain); norm_position="none" has no norm at all. Either way the model then
    holds no final_norm weight."""

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = Embedding(c.vocab_size, c.d_model, device, dtype)
        self.embedding_dropout = Dropout(c.dropout)
        # Every layer encodes positions alike: one RoPE table (or ALiBi's slopes) serves them all
        # (126 MB saved for a model of 30 layers and 8192 positions).
        position = POSITION_ENCODINGS[c.position_encoding](c, device)
        self.blocks = nn.ModuleList(
            TransformerBlock(c, device, dtype, position) for _ in range(c.num_layers)
        )
        if c.norm_position == "pre":
            self.final_norm = RmsNorm(c.d_model, c.norm_eps, device, dtype)
        else:
            self.final_norm = nn.Identity()
        self.lm_head = Linear(c.d_model, c.vocab_size, device, dtype)
        if c.tie_embeddings:
            # One matrix both embeds and un-embeds (Press & Wolf, 2017); the output layer's small
            # init is kept, since std-1 embeddings would give huge initial logits.
            self.embedding.weight = self.lm_head.weight
        # Training memory for compute: keep only each block's input in the forward and recompute
        # the rest of its activations in the backward (about one extra forward pass).
        self.activation_checkpointing = False

    def forward(
        self,
        token_ids: Tensor,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
        token_positions: Tensor | None = None,
    ) -> Tensor:
        """last_only: return only the last position's logits (batch, 1, vocab), all that
        generation needs; this skips the output layer's matmul for the other positions.
        token_positions (batch, seq): each token's position for RoPE, when rows do not start at
        the cache's column 0 (a server's batch, llm/batching.py); None: the column index."""
        self._check_input(token_ids, kv_cache)
        x = self.embedding_dropout(self.embedding(token_ids))  # (batch, seq, d_model)
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for layer, block in enumerate(self.blocks):
            if recompute:
                x = checkpoint(block, x, token_positions, kv_cache, layer, use_reentrant=False)
            else:
                x = block(x, token_positions, kv_cache, layer)  # None: after the cache
        if kv_cache is not None:
            kv_cache.length += token_ids.shape[1]
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.final_norm(x))  # (batch, seq or 1, vocab_size)

    def _check_input(self, token_ids: Tensor, kv_cache: KVCache | None) -> None:
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be (batch, seq), got shape {tuple(token_ids.shape)}")
        cached = kv_cache.length if kv_cache is not None else 0
        if kv_cache is not None and cached + token_ids.shape[1] > kv_cache.capacity:
            raise ValueError(
                f"input of {token_ids.shape[1]} tokens after {cached} cached tokens does not fit "
                f"the KV cache's {kv_cache.capacity} positions"
            )
        if cached + token_ids.shape[1] > self.config.context_length:
            raise ValueError(
                f"input of {token_ids.shape[1]} tokens"
                + (f" after {cached} cached tokens" if cached else "")
                + f" is longer than the context length {self.config.context_length} "
                f"(shape {tuple(token_ids.shape)})"
            )

    def new_kv_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, capacity: int | None = None
    ) -> KVCache:
        """An empty cache for decoding batch_size sequences of up to `capacity` tokens (default
        and most: context_length). dtype defaults to the weights' (pass the autocast dtype when
        decoding under autocast)."""
        c = self.config
        weight = self.embedding.weight  # (the output layer may be quantised: llm/quantize.py)
        capacity = min(capacity or c.context_length, c.context_length)
        shape = (batch_size, c.kv_heads, capacity, c.d_head)

        def buffers() -> list[Tensor]:
            return [
                torch.zeros(shape, device=weight.device, dtype=dtype or weight.dtype)
                for _ in self.blocks
            ]

        return KVCache(keys=buffers(), values=buffers())

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Count of distinct parameters (a tied matrix counts once)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and not self.config.tie_embeddings:
            n -= self.embedding.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6 N for the matmuls (N = matmul
        parameters, the embedding lookup excluded) plus 12 L d T for attention scores and
        values (PaLM, Chowdhery et al. 2022, appendix B). Used for MFU. Like PaLM's, the count
        is of the scores computed, every key for every query: the causal mask and a sliding
        window hide scores but do not skip them, and ALiBi's bias is an addition per score, not
        a matmul."""
        c = self.config
        seq_len = seq_len or c.context_length
        ffn_matrices = 3 if c.ffn == "swiglu" else 2
        attention = (c.num_heads + 2 * c.kv_heads) * c.d_head * c.d_model + c.d_model * c.d_model
        per_layer = attention + ffn_matrices * c.d_model * c.d_ff
        matmul_params = c.num_layers * per_layer + c.d_model * c.vocab_size
        return 6 * matmul_params + 12 * c.num_layers * c.d_model * seq_len


class _CrossEntropy(torch.autograd.Function):
    """Cross-entropy with its gradient written by hand.

    loss = mean_i (logsumexp(z_i) - z_i[y_i]); d loss / d z_i = (softmax(z_i) - onehot(y_i)) / N.
    Autograd through the forward formula would keep several (N, vocab) intermediates alive;
    here backward recomputes softmax from the logits and the saved log-sum-exp in one pass.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        z = logits.reshape(-1, logits.shape[-1])  # (N, vocab)
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        y = targets.reshape(-1, 1)  # (N, 1)
        max_z = z.amax(dim=-1, keepdim=True)  # subtract the max so exp() cannot overflow
        log_sum_exp = max_z + (z - max_z).exp_().sum(dim=-1, keepdim=True).log_()  # (N, 1)
        ctx.save_for_backward(z, y, log_sum_exp)
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return (log_sum_exp - z.gather(-1, y)).mean()

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None]:
        z, y, log_sum_exp = ctx.saved_tensors
        grad = (z - log_sum_exp).exp_()  # softmax(z), (N, vocab)
        grad.scatter_add_(-1, y, torch.full_like(y, -1, dtype=grad.dtype))
        grad.mul_(grad_loss / z.shape[0])
        return grad.to(ctx.logits_dtype).view(ctx.logits_shape), None


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of -log softmax(logits)[target] over all leading dims, computed stably (log-sum-exp).

    logits: (..., vocab) float, targets: (...) int64 -> scalar (float32 or wider).
    """
    return _CrossEntropy.apply(logits, targets)
