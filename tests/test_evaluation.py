"""Validation loss, perplexity and bits per byte against a window-by-window reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL

from llm.data import eval_starts
from llm.evaluation import evaluate_exact, evaluate_windows, token_byte_lengths, token_bytes_of
from llm.transformer import Transformer


def test_exact_evaluation_matches_a_window_by_window_reference():
    torch.manual_seed(0)
    model = Transformer(SMALL)
    tokens = np.random.default_rng(0).integers(0, 64, 16 * 5 + 7).astype(np.uint16)
    token_bytes = np.random.default_rng(1).integers(1, 5, 64)
    nats = 0.0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, 16):  # non-overlapping; the last one is shorter
            window = torch.from_numpy(tokens[start : start + 17].astype(np.int64))[None]
            logits = model(window[:, :-1])[0].double()
            nats += F.cross_entropy(logits, window[0, 1:], reduction="sum").item()
    expected_bytes = int(token_bytes[tokens[1:]].sum())
    for batch_size in (1, 3):
        result = evaluate_exact(model, tokens, batch_size, "cpu", token_bytes)
        assert result["tokens"] == len(tokens) - 1 and result["bytes"] == expected_bytes
        assert result["loss"] == pytest.approx(nats / (len(tokens) - 1), rel=1e-6)
        assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
        assert result["bits_per_byte"] == pytest.approx(
            nats / math.log(2) / expected_bytes, rel=1e-6
        )
    no_tokenizer = evaluate_exact(model, tokens, 4, "cpu")
    assert no_tokenizer["bytes"] == len(tokens) - 1  # 1 byte per id


def test_window_evaluation_matches_reference():
    torch.manual_seed(0)
    model = Transformer(SMALL)
    tokens = np.random.default_rng(2).integers(0, 64, 200)
    starts = eval_starts(len(tokens), 16, 5)
    with torch.no_grad():
        windows = torch.from_numpy(np.stack([tokens[s : s + 17] for s in starts]))
        logits = model(windows[:, :-1]).double()
        nats = F.cross_entropy(logits.reshape(-1, 64), windows[:, 1:].reshape(-1), reduction="sum")
    result = evaluate_windows(model, tokens, starts, 2, "cpu")
    assert result["tokens"] == 5 * 16
    assert result["loss"] == pytest.approx(nats.item() / 80, rel=1e-6)


def test_token_byte_lengths():
    lengths = token_byte_lengths({0: b"a", 1: b"\xc3\xa9t\xc3\xa9", 2: b"<|endoftext|>"}, 4)
    assert lengths.tolist() == [1, 5, 13, 0]
    assert token_bytes_of(None, 3).tolist() == [1, 1, 1]
