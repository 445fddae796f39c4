"""Pre-tokenization: split text into the pieces BPE works inside, and count them in parallel.

BPE never merges across the boundary of a pre-token. GPT-2 cuts text into words with their
leading space, runs of digits, runs of punctuation and runs of whitespace (the regex below), and
special tokens such as <|endoftext|> are cut out before that, so no merge ever crosses them.

To count pre-tokens of a big file with several processes, the file is cut into chunks at points
where cutting changes nothing: the start of a special token, or else a space or newline right
after a printable ASCII character (no pre-token contains a non-space character followed by a
space). Each worker counts the pre-tokens of its chunks; only those counts, not the text, travel
back to the main process, so memory holds one chunk per worker plus the table of distinct
pre-tokens.
"""

import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import regex
from tqdm import tqdm

# The GPT-2 pre-tokenization pattern (Radford et al. 2019), as used by tiktoken's "gpt2".
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)

# Before a space or newline that follows a printable ASCII character: a safe place to cut text.
# (The standard `re` module is faster than `regex` for this simple pattern.)
WHITESPACE_CUT = {
    str: re.compile(r"(?<=[!-~])(?=[ \n])"),
    bytes: re.compile(rb"(?<=[!-~])(?=[ \n])"),
}

CHUNK_BYTES = 1 << 20  # work unit of the parallel passes over a file


def special_token_regex(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """A regex that matches any special token, longest first, so that when tokens overlap
    (<|endoftext|> and <|endoftext|><|endoftext|>) the longer one wins. None if there are none."""
    if not special_tokens:
        return None
    ordered = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(t) for t in ordered) + ")")


def find_cut(text: str | bytes, start: int, end: int, special_tokens: Sequence[str | bytes]) -> int:
    """The first index in [start, end) where `text` can be cut without changing its
    pre-tokenization, preferring the start of a special token; -1 if there is none.

    A cut is refused where a special token spans it. Give `text` at least the length of the
    longest special token of context on both sides of [start, end).
    """
    specials = [t for t in special_tokens if t]
    candidates = [text.find(t, start, end) for t in specials]
    for cut in sorted(c for c in candidates if c >= 0):
        if not _inside_special_token(text, cut, specials):
            return cut
    for match in WHITESPACE_CUT[type(text)].finditer(text, start, end):
        if not _inside_special_token(text, match.start(), specials):
            return match.start()
    return -1


def _inside_special_token(text: str | bytes, cut: int, specials: Sequence[str | bytes]) -> bool:
    """Does an occurrence of a special token start before `cut` and end after it?"""
    return any(text.find(t, max(cut - len(t) + 1, 0), cut + len(t) - 1) >= 0 for t in specials)


def chunk_boundaries(
    path: str | Path, chunk_bytes: int, special_tokens: Sequence[str]
) -> list[int]:
    """Byte offsets [0, ..., file size] cutting the file into chunks of about `chunk_bytes`
    at safe points (see find_cut). A stretch with no safe point stays in one chunk."""
    specials = [t.encode("utf-8") for t in special_tokens]
    margin = max((len(t) for t in specials), default=1)
    window = max(chunk_bytes // 4, 4096)
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        pos = max(chunk_bytes, margin)
        while pos < size:
            f.seek(pos - margin)
            data = f.read(window + 2 * margin)
            cut = find_cut(data, margin, len(data) - margin, specials)
            if cut < 0:
                pos += window
                continue
            bounds.append(pos - margin + cut)
            pos = bounds[-1] + chunk_bytes
    return bounds + [size] if size else bounds


def read_chunk(path: str | Path, start: int, end: int) -> str:
    """Bytes [start, end) of a UTF-8 file as text; a clear error if they are not UTF-8."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 at byte {start + e.start}") from None


def count_chunk_pretokens(
    path: str | Path, start: int, end: int, special_tokens: Sequence[str]
) -> Counter[str]:
    """How often each pre-token occurs in bytes [start, end) of the file."""
    text = read_chunk(path, start, end)
    special_re = special_token_regex(special_tokens)
    segments = special_re.split(text)[::2] if special_re else [text]  # drop the specials
    counts: Counter[str] = Counter()
    for segment in segments:
        counts.update(PRETOKEN_RE.findall(segment))
    return counts


def _count_job(job: tuple) -> tuple[int, Counter[str]]:
    path, start, end, special_tokens = job
    return end - start, count_chunk_pretokens(path, start, end, special_tokens)


def parallel_map(
    fn, jobs: list, num_workers: int, ordered: bool = True, initializer=None, initargs=()
):
    """Yield fn(job) for each job: in this process for one worker or one job, else in a pool
    of `num_workers` processes (in job order if `ordered`, else as they finish)."""
    if num_workers <= 1 or len(jobs) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, jobs)
        return
    with multiprocessing.Pool(min(num_workers, len(jobs)), initializer, initargs) as pool:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, jobs)


def count_pretokens(
    path: str | Path,
    special_tokens: Sequence[str],
    num_workers: int,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> dict[bytes, int]:
    """Count the pre-tokens of a UTF-8 file in `num_workers` processes: {pre-token: count}."""
    bounds = chunk_boundaries(path, chunk_bytes, special_tokens)
    jobs = [(str(path), a, b, list(special_tokens)) for a, b in pairwise(bounds)]
    total: Counter[str] = Counter()
    with tqdm(
        total=bounds[-1], unit="B", unit_scale=True, desc="pre-tokenize", disable=not progress
    ) as bar:
        for nbytes, counts in parallel_map(_count_job, jobs, num_workers, ordered=False):
            total.update(counts)
            bar.update(nbytes)
    return {word.encode("utf-8"): n for word, n in total.items()}
