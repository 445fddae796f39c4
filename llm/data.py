"""Token data for training: memory-mapped .npy arrays of token ids, random training windows
and fixed validation windows.

A split is one long 1-D array of token ids (documents joined by <|endoftext|>). A training
example is a window of context_length + 1 consecutive ids: the model reads the first
context_length and predicts each next one.

Command line: `uv run -m llm.data download tinystories|owt` fetches a dataset (llm/download.py).
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

_CHECK_CHUNK = 1 << 24  # ids scanned at a time when checking a split (16M ids = 32-128 MB)


class DataError(ValueError):
    """Token data that is missing, malformed, or does not fit the model."""


def load_tokens(path: str | Path) -> np.ndarray:
    """Open a .npy array of token ids memory-mapped: pages are read from disk on demand, so a
    split far larger than RAM works and opening it costs nothing."""
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        how = "uv run -m llm.bpe_tokenizer encode --tokenizer TOK --input TEXT --output FILE.npy"
        if "tinystories" in str(path):  # the presets' data: downloaded, then encoded
            how = "uv run -m llm.data download tinystories, then uv run -m llm.bpe_tokenizer"
        raise DataError(f"token file {path} {problem}; make it first: {how}")
    with path.open("rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(
            f"{path} is not a .npy array of token ids (a text file? encode it first: uv run -m "
            f"llm.bpe_tokenizer encode --tokenizer TOKENIZER_DIR --input {path} --output "
            f"{path.with_suffix('.npy')})"
        )
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as e:  # EOFError: an empty file
        raise DataError(f"{path} is not a .npy array of token ids: {e}") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DataError(
            f"{path} must hold a 1-D array of integer token ids, got shape {tokens.shape} "
            f"and dtype {tokens.dtype}"
        )
    return tokens


def check_tokens(
    tokens: np.ndarray, vocab_size: int, context_length: int, name: str = "tokens"
) -> None:
    """Fail early, with a clear message, if a split cannot train or evaluate this model: too
    short for one window, or holding ids outside [0, vocab_size)."""
    if len(tokens) < context_length + 1:
        raise DataError(
            f"{name} has {len(tokens)} tokens, fewer than context_length + 1 = "
            f"{context_length + 1} needed for one example; use more data or a shorter context"
        )
    low, high = 0, 0
    chunks = range(0, len(tokens), _CHECK_CHUNK)
    for start in tqdm(chunks, desc=f"checking {name}", disable=len(chunks) < 8, leave=False):
        chunk = tokens[start : start + _CHECK_CHUNK]
        low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise DataError(
            f"{name} holds token id {bad}, outside the model's vocabulary [0, {vocab_size}); "
            "the data was encoded with another tokenizer, or model.vocab_size is too small"
        )


def sample_starts(
    num_tokens: int, batch_size: int, context_length: int, generator: torch.Generator | None
) -> Tensor:
    """batch_size random window starts, uniform over every position a full window fits."""
    return torch.randint(0, num_tokens - context_length, (batch_size,), generator=generator)


def read_windows(
    tokens: np.ndarray, starts: Tensor | np.ndarray, context_length: int, device: str | torch.device
) -> tuple[Tensor, Tensor]:
    """Inputs and targets (batch, context_length) int64 for windows starting at `starts`;
    targets are the inputs shifted left by one."""
    windows = np.stack([tokens[s : s + context_length + 1] for s in np.asarray(starts)])
    windows = torch.from_numpy(windows.astype(np.int64))  # (batch, context_length + 1)
    if torch.device(device).type == "cuda":
        windows = windows.pin_memory().to(device, non_blocking=True)
    else:
        windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]


def get_batch(
    tokens: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A random batch: (inputs, targets), each (batch_size, context_length) int64 on device.

    Pass a seeded torch.Generator to make the sequence of batches reproducible (and
    resumable: its state is saved in checkpoints).
    """
    starts = sample_starts(len(tokens), batch_size, context_length, generator)
    return read_windows(tokens, starts, context_length, device)


def eval_starts(num_tokens: int, context_length: int, num_windows: int) -> np.ndarray:
    """Fixed validation windows: num_windows starts spread evenly over the split. The same for
    every run and resume, so validation losses are comparable; capped at the number of
    non-overlapping windows."""
    last = num_tokens - context_length - 1  # the last start with a full window
    num_windows = max(1, min(num_windows, (num_tokens - 1) // context_length))
    return np.linspace(0, last, num_windows).round().astype(np.int64)


if __name__ == "__main__":  # `uv run -m llm.data download DATASET`, a command of llm/download.py
    from llm.download import data_main

    data_main()
