"""Validation loss, perplexity and bits per byte.

    loss           mean negative log-likelihood of the predicted tokens, in nats per token
    perplexity     exp(loss)
    bits_per_byte  total nats / ln 2 / total UTF-8 bytes of the predicted tokens

Bits per byte does not depend on the tokenizer (a tokenizer with longer tokens has a higher
loss per token but fewer tokens), so it compares runs with different vocabularies.

Two ways to evaluate a split:
- `evaluate_exact`: the whole split cut into non-overlapping windows of context_length
  predictions (the last, shorter window included): every token but the first is predicted
  exactly once. The number to report.
- `evaluate_windows`: a fixed sample of windows (see data.eval_starts); cheap enough to run
  every few hundred steps, and the same windows every time so the curve is comparable.
"""

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from llm.bpe_tokenizer import BpeTokenizer
from llm.data import read_windows
from llm.device import autocast
from llm.transformer import cross_entropy


def token_byte_lengths(vocab: dict[int, bytes], vocab_size: int) -> np.ndarray:
    """(vocab_size,) int64: the UTF-8 byte length of each token id's text."""
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for token_id, token_bytes in vocab.items():
        if token_id < vocab_size:
            lengths[token_id] = len(token_bytes)
    return lengths


def token_bytes_of(tokenizer: BpeTokenizer | None, vocab_size: int) -> np.ndarray:
    """Byte lengths of the tokenizer's token ids; without a tokenizer, ids are bytes (1 each)."""
    if tokenizer is None:
        return np.ones(vocab_size, dtype=np.int64)
    return token_byte_lengths(tokenizer.vocab, vocab_size)


@torch.no_grad()
def evaluate_exact(
    model: nn.Module,
    tokens: np.ndarray,
    batch_size: int,
    device: str | torch.device,
    token_bytes: np.ndarray | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Exact evaluation of a whole split: every token after the first is predicted once, with as
    much context as its non-overlapping window of context_length tokens gives."""
    context_length = model.config.context_length
    num_targets = len(tokens) - 1
    full_windows = num_targets // context_length
    starts = np.arange(full_windows, dtype=np.int64) * context_length
    nats = 0.0
    batches = range(0, full_windows, batch_size)
    for i in tqdm(batches, desc="exact eval", disable=not progress, unit="batch"):
        inputs, targets = read_windows(tokens, starts[i : i + batch_size], context_length, device)
        nats += _sum_nats(model, inputs, targets, autocast_dtype)
    remainder = num_targets - full_windows * context_length  # the last, shorter window
    if remainder:
        start = full_windows * context_length
        inputs, targets = read_windows(tokens, np.array([start]), remainder, device)
        nats += _sum_nats(model, inputs, targets, autocast_dtype)
    num_bytes = _count_bytes(tokens, 1, len(tokens), token_bytes)
    return _metrics(nats, num_targets, num_bytes)


@torch.no_grad()
def evaluate_windows(
    model: nn.Module,
    tokens: np.ndarray,
    starts: np.ndarray,
    batch_size: int,
    device: str | torch.device,
    token_bytes: np.ndarray | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Evaluate the windows of context_length predictions that begin at `starts`."""
    context_length = model.config.context_length
    nats, num_bytes = 0.0, 0
    for i in range(0, len(starts), batch_size):
        batch_starts = starts[i : i + batch_size]
        inputs, targets = read_windows(tokens, batch_starts, context_length, device)
        nats += _sum_nats(model, inputs, targets, autocast_dtype)
        for s in batch_starts:
            num_bytes += _count_bytes(tokens, s + 1, s + 1 + context_length, token_bytes)
    return _metrics(nats, len(starts) * context_length, num_bytes)


def _sum_nats(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, autocast_dtype
) -> float:
    """Total negative log-likelihood (nats) of targets (batch, seq) given inputs."""
    was_training = model.training
    model.eval()
    with autocast(inputs.device, autocast_dtype):
        logits = model(inputs)  # (batch, seq, vocab)
    model.train(was_training)
    return cross_entropy(logits.float(), targets).item() * targets.numel()


def _count_bytes(tokens: np.ndarray, start: int, end: int, token_bytes: np.ndarray | None) -> int:
    """UTF-8 bytes of tokens[start:end] (1 per token without a tokenizer), read in chunks."""
    if token_bytes is None:
        return end - start
    chunk = 1 << 22
    return sum(
        int(token_bytes[tokens[i : min(i + chunk, end)]].sum()) for i in range(start, end, chunk)
    )


def _metrics(nats: float, num_tokens: int, num_bytes: int) -> dict[str, float]:
    loss = nats / num_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": nats / math.log(2) / num_bytes,
        "tokens": num_tokens,
        "bytes": num_bytes,
    }
