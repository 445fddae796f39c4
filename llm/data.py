"""Token data for training: memory-mapped .npy arrays of token ids, random training windows
and fixed validation windows.

A split is one long 1-D array of token ids (documents joined by <|endoftext|>). A training
example is a window of context_length + 1 consecutive ids: the model reads the first
context_length and predicts each next one.

A split may also come in shards (a directory or glob of .npy files, or of the .bin shards of
llm.c and modded-nanoGPT): `open_tokens` makes them one TokenStream, read as if concatenated.
A Mixture samples several such datasets in proportion to weights (`[[data]]` in the TOML).
Every random choice is drawn from the one torch.Generator that checkpoints save, so a resumed
run reads the same windows as an unbroken one.

Command line: `uv run -m llm.data download tinystories|owt|fineweb-edu` fetches a dataset
(llm/download.py).
"""

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

_CHECK_CHUNK = 1 << 24  # ids scanned at a time when checking a split (16M ids = 32-128 MB)
# llm.c's .bin shard: a header of 256 int32 (magic, version, token count, then zeros), then the
# tokens. Its GPT-2 shards (magic 20240520, version 1) hold uint16 ids, its Llama 3 shards
# (magic 20240801, version 7) uint32.
BIN_HEADER_INTS = 256
BIN_FORMATS = {(20240520, 1): np.uint16, (20240801, 7): np.uint32}


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


def load_bin_shard(path: str | Path) -> np.ndarray:
    """A .bin token shard of llm.c / modded-nanoGPT (see BIN_FORMATS), memory-mapped read-only."""
    path = Path(path)
    header = np.fromfile(path, dtype="<i4", count=BIN_HEADER_INTS)
    if len(header) < BIN_HEADER_INTS or (int(header[0]), int(header[1])) not in BIN_FORMATS:
        raise DataError(
            f"{path} is not an llm.c token shard (a header of 256 int32 starting with magic "
            "20240520, version 1, or 20240801, version 7)"
        )
    dtype = np.dtype(BIN_FORMATS[int(header[0]), int(header[1])])
    count, offset = int(header[2]), BIN_HEADER_INTS * 4
    if path.stat().st_size != offset + count * dtype.itemsize:
        raise DataError(
            f"{path}: its header says {count:,} tokens, but the file holds "
            f"{(path.stat().st_size - offset) / dtype.itemsize:,.0f}: truncated or damaged"
        )
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


class TokenStream:
    """Several token arrays (shards) read as one: len() is their total, and a slice is the
    slice of their concatenation, so windows may run from one shard into the next."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(s) for s in shards])  # shard i is [off[i], off[i+1])
        self.dtype = np.result_type(*(s.dtype for s in shards))
        self.ndim = 1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise IndexError("a TokenStream is read in contiguous slices")
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        for i in range(max(first, 0), len(self.shards)):
            if self.offsets[i] >= stop:
                break
            lo, hi = start - self.offsets[i], stop - self.offsets[i]
            parts.append(self.shards[i][max(lo, 0) : hi])
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)


def shard_paths(spec: str | Path) -> list[Path]:
    """The files a data setting names, in order: one file; every .npy and .bin file in a
    directory; or the files a glob pattern matches (`data/fineweb/train_*.bin`), sorted."""
    spec = str(spec)
    if Path(spec).is_dir():
        paths = sorted(p for p in Path(spec).iterdir() if p.suffix in (".npy", ".bin"))
        if not paths:
            raise DataError(f"the directory {spec} holds no .npy or .bin token shards")
        return paths
    if glob.has_magic(spec):
        paths = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not paths:
            raise DataError(f"no token files match {spec}")
        return paths
    return [Path(spec)]


def open_tokens(spec: str | Path) -> "np.ndarray | TokenStream":
    """A split given as a .npy file, a .bin shard, a directory or a glob of them: one array,
    or a TokenStream over the shards (each memory-mapped)."""
    shards = [
        load_bin_shard(p) if p.suffix == ".bin" and p.is_file() else load_tokens(p)
        for p in shard_paths(spec)
    ]
    return shards[0] if len(shards) == 1 else TokenStream(shards)


@dataclass
class DataSource:
    """One dataset of a mixture: `[[data]]` in a training TOML."""

    path: str  # a .npy or .bin file, a directory of shards, or a glob of them
    weight: float = 1.0  # share of the training windows drawn from it (weights are normalised)


class Mixture(TokenStream):
    """Datasets sampled in proportion to their weights. Its token space is the datasets one
    after another; every window lies inside one of them, never across two."""

    def __init__(self, datasets: list["np.ndarray | TokenStream"], weights: list[float]) -> None:
        if len(weights) != len(datasets) or not all(w > 0 for w in weights):
            raise DataError(f"a mixture needs one weight > 0 per dataset, got {weights}")
        super().__init__(datasets)
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    def sample_starts(
        self, batch_size: int, context_length: int, generator: torch.Generator | None
    ) -> Tensor:
        """For each window, a dataset drawn by weight, then a start uniform over where a full
        window fits in it; both drawn from `generator`."""
        which = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        spans = torch.from_numpy(np.diff(self.offsets) - context_length)  # starts per dataset
        # A uniform int below each span: a 62-bit draw mod span (bias < span / 2**62).
        draw = torch.randint(0, 1 << 62, (batch_size,), generator=generator)
        return torch.from_numpy(self.offsets[:-1])[which] + draw % spans[which]


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
    tokens: "np.ndarray | TokenStream",
    batch_size: int,
    context_length: int,
    generator: torch.Generator | None,
) -> Tensor:
    """batch_size random window starts, uniform over every position a full window fits (a
    Mixture: in proportion to its weights)."""
    if isinstance(tokens, Mixture):
        return tokens.sample_starts(batch_size, context_length, generator)
    return torch.randint(0, len(tokens) - context_length, (batch_size,), generator=generator)


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
    tokens: "np.ndarray | TokenStream",
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A random batch: (inputs, targets), each (batch_size, context_length) int64 on device.

    Pass a seeded torch.Generator to make the sequence of batches reproducible (and
    resumable: its state is saved in checkpoints).
    """
    starts = sample_starts(tokens, batch_size, context_length, generator)
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
