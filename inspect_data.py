"""Look at a dataset the way the model will see it, before spending compute on it.

    uv run inspect_data.py --tokens data/train.npy --tokenizer runs/quickstart/tokenizer
    uv run inspect_data.py --text data/stories/valid.txt --tokenizer runs/quickstart/tokenizer

Reports the token count, vocabulary coverage, the unigram entropy (the loss to beat), the most
frequent tokens (decoded), how often each special token appears, document lengths (documents end
at <|endoftext|>), and batch diversity: how many distinct tokens a random training batch holds,
and whether sampled windows repeat. Writes a PNG with the document length histogram and the
token frequency curve.

A bad setting is one line on stderr with exit status 2; a missing file or tokenizer, ids outside
the tokenizer's vocabulary, or token data that the tokenizer does not reproduce (it was encoded
with another tokenizer) is one line with exit status 1.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llm.atomic_write import atomic_write
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.data import DataError, load_tokens
from llm.paths import check_writable_dir

CHUNK = 1 << 24  # ids counted at a time, so a memory-mapped split larger than RAM works


class InspectError(Exception):
    """Bad input; the message says what is wrong and what to do."""


@dataclass
class Report:
    source: str
    num_tokens: int
    dtype: str
    vocab_size: int
    counts: np.ndarray  # (vocab_size,) occurrences of each id
    top: list[tuple[int, int, str]]  # (id, count, decoded) of the most frequent tokens
    specials: dict[str, tuple[int, int]]  # special token -> (id, count)
    doc_lengths: np.ndarray  # tokens in each document, separators excluded
    context_length: int
    batch_shape: tuple[int, int]
    batch_distinct: np.ndarray  # distinct token ids in each sampled batch
    windows: int  # sampled windows at distinct positions
    repeated_windows: int  # of those, windows whose tokens equal another sampled window's
    roundtrip_checked: int  # leading tokens re-encoded identically (tokens mode)
    num_bytes: int | None = None  # text mode: size of the text


def load_tokenizer(directory: Path) -> BpeTokenizer:
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise InspectError(
            f"tokenizer directory {directory} {problem}; pass the directory the tokenizer "
            "was saved to (the one used to encode the data)"
        )
    try:
        return BpeTokenizer.load(directory)
    except (OSError, ValueError, KeyError) as e:
        raise InspectError(f"could not load a tokenizer from {directory}: {e}") from e


def encode_text_file(path: Path, tokenizer: BpeTokenizer) -> tuple[np.ndarray, int]:
    """Token ids of a UTF-8 text file and its size in bytes (encoded as a stream of lines), in
    the type that encoding it to a .npy file would give them."""
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise InspectError(f"text file {path} {problem}")
    size = path.stat().st_size

    def lines(bar: tqdm) -> Iterator[str]:
        with open(path, encoding="utf-8", newline="") as f:
            for line in f:
                bar.update(len(line.encode("utf-8")))
                yield line

    with tqdm(total=size, unit="B", unit_scale=True, desc=f"encoding {path.name}") as bar:
        try:
            ids = np.fromiter(tokenizer.encode_iterable(lines(bar)), dtype=tokenizer.id_dtype)
        except UnicodeDecodeError as e:
            raise InspectError(f"{path} is not UTF-8 text ({e}); pass a .npy with --tokens") from e
    return ids, size


def count_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) occurrences of each id; an id outside [0, vocab_size) is an error."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    bad, low, high = 0, 0, 0
    for start in range(0, len(ids), CHUNK):
        chunk = np.asarray(ids[start : start + CHUNK], dtype=np.int64)
        inside = (chunk >= 0) & (chunk < vocab_size)
        bad += len(chunk) - int(inside.sum())
        low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
        counts += np.bincount(chunk[inside], minlength=vocab_size)
    if bad:
        raise InspectError(
            f"{bad:,} of {len(ids):,} ids ({bad / len(ids):.3%}) are outside the tokenizer's "
            f"vocabulary [0, {vocab_size}) (smallest {low}, largest {high}): the data was encoded "
            "with another tokenizer; pass the tokenizer directory that encoded it"
        )
    return counts


def positions_of(ids: np.ndarray, value: int) -> np.ndarray:
    """Indices where ids == value, scanning a memory-mapped array a chunk at a time."""
    found = [
        np.flatnonzero(np.asarray(ids[s : s + CHUNK]) == value) + s
        for s in range(0, len(ids), CHUNK)
    ]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def document_lengths(ids: np.ndarray, separator: int | None) -> np.ndarray:
    """Tokens per document, split on the separator id (not counted). Tokens after the last
    separator are a document too; without a separator the whole array is one document."""
    if separator is None:
        return np.array([len(ids)])
    bounds = np.concatenate([[-1], positions_of(ids, separator)])
    lengths = np.diff(bounds) - 1
    tail = len(ids) - 1 - bounds[-1]
    return np.append(lengths, tail) if tail else lengths


def batch_diversity(
    ids: np.ndarray, batch_size: int, context_length: int, num_batches: int, seed: int
) -> tuple[np.ndarray, int, int]:
    """Samples batches of random windows as training does. Returns the distinct ids in each
    batch, the number of windows at distinct positions, and how many of those have exactly
    the tokens of another sampled window (duplicated text in the data)."""
    if len(ids) < context_length + 1:
        raise InspectError(
            f"the data has {len(ids):,} tokens, fewer than context_length + 1 = "
            f"{context_length + 1}; use more data or a smaller --context-length"
        )
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - context_length, size=(num_batches, batch_size))
    distinct = np.empty(num_batches, dtype=np.int64)
    seen: dict[bytes, set[int]] = {}  # window tokens -> the positions they were sampled at
    for b, batch_starts in enumerate(starts):
        windows = np.stack([np.asarray(ids[s : s + context_length]) for s in batch_starts])
        distinct[b] = len(np.unique(windows))
        for s, window in zip(batch_starts, windows, strict=True):
            seen.setdefault(window.tobytes(), set()).add(int(s))
    positions = sum(len(p) for p in seen.values())
    repeated = sum(len(p) for p in seen.values() if len(p) > 1)
    return distinct, positions, repeated


def check_roundtrip(ids: np.ndarray, tokenizer: BpeTokenizer, max_tokens: int = 4096) -> int:
    """Decodes the leading tokens and encodes them again: data encoded with this tokenizer
    comes back identical; data from another tokenizer does not. Returns the tokens checked."""
    head = np.asarray(ids[:max_tokens]).tolist()
    if not head:
        return 0
    try:
        again = tokenizer.encode(tokenizer.decode(head))
    except ValueError as e:  # an id inside the range that has no token
        raise InspectError(f"the tokenizer cannot decode this data: {e}") from e
    # the window may cut the last word in two, which can re-encode differently: ignore the tail
    checked = max(len(head) - 16, 1)
    if again[:checked] != head[:checked]:
        pairs = enumerate(zip(head, again, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(head), len(again)))
        raise InspectError(
            f"the tokenizer does not reproduce this data: decoding and re-encoding its first "
            f"{len(head):,} tokens differs from token {first} on. The data was encoded with "
            "another tokenizer; pass the tokenizer directory that encoded it"
        )
    return checked


def _documents(ids: np.ndarray, separator: int | None, tokenizer: BpeTokenizer) -> np.ndarray:
    """Document lengths, without the lone newline that follows the last separator in files
    laid out like TinyStories ("story\n<|endoftext|>\n")."""
    lengths = document_lengths(ids, separator)
    tail = np.asarray(ids[len(ids) - lengths[-1] :]).tolist()
    if len(lengths) > 1 and ids[-1] != separator and not tokenizer.decode(tail).strip():
        return lengths[:-1]
    return lengths


def build_report(
    ids: np.ndarray,
    tokenizer: BpeTokenizer,
    source: str,
    context_length: int = 256,
    batch_size: int = 32,
    num_batches: int = 100,
    top: int = 20,
    seed: int = 0,
    num_bytes: int | None = None,
) -> Report:
    if len(ids) == 0:
        raise InspectError(f"{source} holds no tokens")
    vocab_size = tokenizer.vocab_size
    counts = count_ids(ids, vocab_size)
    roundtrip = check_roundtrip(ids, tokenizer) if num_bytes is None else 0
    specials = {}
    for token in tokenizer.special_tokens:
        token_id = tokenizer.token_id(token)
        specials[token] = (token_id, int(counts[token_id]))
    separator = specials[EOT][0] if EOT in specials else None
    order = np.argsort(-counts, kind="stable")[:top]
    top_tokens = [(int(i), int(counts[i]), tokenizer.decode([int(i)])) for i in order if counts[i]]
    distinct, windows, repeated = batch_diversity(
        ids, batch_size, context_length, num_batches, seed
    )
    return Report(
        source=source,
        num_tokens=len(ids),
        dtype=str(ids.dtype),
        vocab_size=vocab_size,
        counts=counts,
        top=top_tokens,
        specials=specials,
        doc_lengths=_documents(ids, separator, tokenizer),
        context_length=context_length,
        batch_shape=(batch_size, context_length),
        batch_distinct=distinct,
        windows=windows,
        repeated_windows=repeated,
        roundtrip_checked=roundtrip,
        num_bytes=num_bytes,
    )


def format_report(r: Report) -> str:
    used = int((r.counts > 0).sum())
    lengths = r.doc_lengths
    lines = [f"tokens            {r.num_tokens:,} ({r.dtype})"]
    if r.num_bytes is not None:
        lines.append(
            f"text              {r.num_bytes:,} bytes, {r.num_bytes / r.num_tokens:.2f} "
            "bytes per token"
        )
    lines += [
        "ids out of range  0 (0.000%)",
        f"vocabulary        {used:,} of {r.vocab_size:,} ids used ({used / r.vocab_size:.1%}); "
        f"{r.vocab_size - used:,} never appear",
    ]
    p = r.counts[r.counts > 0] / r.num_tokens
    lines.append(
        f"unigram entropy   {-(p * np.log(p)).sum():.3f} nats per token: the loss of a "
        "model that ignores context (a trained model must get well below it)"
    )
    if r.roundtrip_checked:
        lines.append(
            f"round trip        the first {r.roundtrip_checked:,} tokens decode and "
            "re-encode identically"
        )
    for token, (token_id, count) in r.specials.items():
        lines.append(f"special token     {token} (id {token_id}): {count:,} times")
    if EOT not in r.specials or r.specials[EOT][1] == 0:
        lines.append(f"warning           no {EOT} in the data: it is one long document")
    long_docs = int((lengths > r.context_length).sum())
    lines += [
        f"documents         {len(lengths):,}; tokens per document: mean {lengths.mean():.1f}, "
        f"median {np.median(lengths):.0f}, 90th percentile {np.percentile(lengths, 90):.0f}, "
        f"min {lengths.min():,}, max {lengths.max():,}",
        f"                  {long_docs:,} ({long_docs / len(lengths):.1%}) are longer than the "
        f"context length {r.context_length}",
        f"most frequent     {'rank':>4}  {'id':>6}  {'count':>12}  {'share':>6}  token",
    ]
    for rank, (token_id, count, text) in enumerate(r.top, 1):
        share = count / r.num_tokens
        lines.append(
            f"                  {rank:>4}  {token_id:>6}  {count:>12,}  {share:>6.2%}  {text!r}"
        )
    batch, seq = r.batch_shape
    d = r.batch_distinct
    lines += [
        f"batch diversity   {len(d)} random batches of {batch} x {seq} tokens: distinct ids per "
        f"batch mean {d.mean():,.0f} (min {d.min():,}, max {d.max():,}) of {batch * seq:,}",
        f"repeated windows  {r.repeated_windows:,} of {r.windows:,} sampled windows "
        f"({r.repeated_windows / r.windows:.2%}) have the same tokens as another one",
    ]
    return "\n".join(lines)


def plot_report(r: Report, path: Path) -> None:
    """Document length histogram and token frequency by rank, saved atomically as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(12, 4.5), layout="tight")
    left, right = fig.subplots(1, 2)
    left.hist(r.doc_lengths, bins=min(60, max(len(r.doc_lengths), 1)), color="tab:blue")
    left.axvline(r.context_length, color="tab:red", ls="--", label=f"context {r.context_length}")
    left.set(
        title=f"document lengths ({len(r.doc_lengths):,} documents)",
        xlabel="tokens",
        ylabel="documents",
    )
    left.legend()
    freq = np.sort(r.counts[r.counts > 0])[::-1]
    right.loglog(np.arange(1, len(freq) + 1), freq, color="tab:green")
    right.set(title="token frequency by rank", xlabel="rank", ylabel="count")
    fig.suptitle(r.source)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


@dataclass
class InspectConfig:
    """`uv run inspect_data.py --tokens FILE.npy | --text FILE.txt --tokenizer DIR`."""

    tokenizer: str  # the tokenizer directory (the one that encoded the data)
    tokens: str = ""  # .npy file of token ids (give this or --text)
    text: str = ""  # UTF-8 text file, encoded here with the tokenizer (give this or --tokens)
    context_length: int = 256  # tokens per training window
    batch_size: int = 32  # windows per sampled batch
    num_batches: int = 100  # batches sampled for the diversity numbers
    top: int = 20  # most frequent tokens to show
    seed: int = 0  # for the sampled batches
    png: str = ""  # where the plot goes ("" = runs/inspect/NAME.png)


def check_config(config: InspectConfig) -> Path:
    """Raise a ConfigError for a bad setting; returns the plot's path, checked writable."""
    if bool(config.tokens) == bool(config.text):
        raise ConfigError("give exactly one of --tokens FILE.npy and --text FILE.txt")
    for key in ("context_length", "batch_size", "num_batches", "top"):
        if getattr(config, key) < 1:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive integer, not {getattr(config, key)}")
    source = Path(config.tokens or config.text)
    png = Path(config.png) if config.png else Path("runs/inspect") / f"{source.stem}.png"
    if png.is_dir():
        raise ConfigError(f"--png {png} is a directory; give the path of a .png file")
    check_writable_dir(png.parent, "--png", given=png)
    return png


def inspect(config: InspectConfig) -> Report:
    """Check the settings, build the report, write the plot and print the report."""
    png = check_config(config)
    path = Path(config.tokens or config.text)
    tokenizer = load_tokenizer(Path(config.tokenizer))
    if config.tokens:
        ids, num_bytes = load_tokens(path), None
    else:
        ids, num_bytes = encode_text_file(path, tokenizer)
    report = build_report(
        ids, tokenizer, str(path), config.context_length, config.batch_size,
        config.num_batches, config.top, config.seed, num_bytes,
    )  # fmt: skip
    plot_report(report, png)
    print(f"{path} with the tokenizer in {config.tokenizer} (vocabulary {report.vocab_size:,})")
    print(format_report(report))
    print(f"histogram         {png} (document lengths, token frequency by rank)")
    return report


def main(argv: list[str] | None = None) -> None:
    def command() -> None:
        description = __doc__.split("\n\n")[0]
        inspect(parse(InspectConfig, argv, description=description, prog="uv run inspect_data.py"))

    run_main(command, errors=(InspectError, DataError, OSError))


if __name__ == "__main__":
    main()
