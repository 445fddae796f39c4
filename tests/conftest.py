"""Shared test setup: one CPU thread for the whole suite, and the small model and data the
tests train and check.

Tiny models run fastest, and deterministically, on one thread; the machine's other core is then
free for the tests that start processes of their own (DDP, the command lines)."""

import dataclasses

import numpy as np
import pytest
import torch

from llm.transformer import ModelConfig

torch.set_num_threads(1)

# A model small enough that a forward/backward pass takes milliseconds.
SMALL = ModelConfig(
    vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=2, d_ff=64
)


@pytest.fixture
def small_config() -> ModelConfig:
    """A fresh copy of SMALL (tests may change it)."""
    return dataclasses.replace(SMALL)


def markov_tokens(n: int, vocab: int = 512, seed: int = 0) -> np.ndarray:
    """A learnable sequence: each token is followed by one of 2 fixed successors."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, (vocab, 2))
    choices = rng.integers(0, 2, n)
    out = np.empty(n, dtype=np.uint16)
    token = 0
    for i in range(n):
        out[i] = token
        token = successors[token, choices[i]]
    return out


@pytest.fixture(scope="session")
def token_data_dir(tmp_path_factory):
    """train.npy (20,000 ids) and valid.npy (4,000 ids) of a learnable sequence, vocab 512."""
    path = tmp_path_factory.mktemp("tokens")
    tokens = markov_tokens(24_000)
    np.save(path / "train.npy", tokens[:20_000])
    np.save(path / "valid.npy", tokens[20_000:])
    return path
