"""Pre-tokenization: split text into the pieces BPE works inside, and count them in parallel.

BPE never merges across the boundary of a pre-token. GPT-2 cuts text into words with their
leading space, runs of digits, runs of punctuation and runs of whitespace (the regex below), and
special tokens such as <|endoftext|> are cut out before that, so no merge ever crosses them.

To count pre-tokens of a big file with several processes, the file is cut into chunks at points
where cutting changes nothing: the start of a special token, or else between a non-whitespace
and a whitespace character (no pre-token contains such a pair). Each worker counts the
pre-tokens of its chunks; only those counts, not the text, travel back to the main process, so
memory holds one chunk per worker plus the table of distinct pre-tokens.
"""

import codecs
import multiprocessing
import os
import re
import signal
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from itertools import pairwise
from pathlib import Path

import regex
from tqdm import tqdm

# The GPT-2 pre-tokenization pattern (Radford et al. 2019), as used by tiktoken's "gpt2".
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM's (and StarCoder's): every digit alone, then GPT-2's pattern on the text between them
# (Hugging Face: Digits(individual_digits) then ByteLevel; llama.cpp: pre-tokenizer "smollm").
# In one regex, whitespace before a digit ends a piece as it would at the end of the text, so
# GPT-2's \s+(?!\S) becomes \s+(?![^\s\p{N}]).
SMOLLM_PATTERN = r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
# The pre-tokenizers a BpeTokenizer can use, by name. Encoding cuts text at WHITESPACE_CUT,
# which must never change a pattern's pieces: tests/test_bpe_tokenizer.py checks it for each.
PRETOKENIZERS = {"gpt2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN}
PRETOKEN_RE = regex.compile(GPT2_PATTERN)


def pretokenizer_pattern(name: str) -> str:
    """The regex of a pre-tokenizer named in PRETOKENIZERS; a ValueError naming the others."""
    if name not in PRETOKENIZERS:
        raise ValueError(f"unknown pre-tokenizer {name!r}; known: {', '.join(PRETOKENIZERS)}")
    return PRETOKENIZERS[name]


# Between a non-whitespace and a whitespace character: a safe place to cut text, as no pre-token
# (of either pattern) holds such a pair. (The `re` module is faster than `regex` here, but its
# \s also counts \x1c-\x1f, which the patterns' \s does not: hence the explicit classes.)
WHITESPACE_CUT = re.compile(r"(?<=[\S\x1c-\x1f])(?=[^\S\x1c-\x1f])")

CHUNK_BYTES = 1 << 20  # work unit of the parallel passes over a file


def special_token_regex(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """A regex that matches any special token, longest first, so that when tokens overlap
    (<|endoftext|> and <|endoftext|><|endoftext|>) the longer one wins. None if there are none."""
    if not special_tokens:
        return None
    ordered = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(t) for t in ordered) + ")")


def find_cut(text: str, start: int, end: int, special_tokens: Sequence[str]) -> int:
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
    for match in WHITESPACE_CUT.finditer(text, start, end):
        if not _inside_special_token(text, match.start(), specials):
            return match.start()
    return -1


def _inside_special_token(text: str, cut: int, specials: Sequence[str]) -> bool:
    """Does an occurrence of a special token start before `cut` and end after it?"""
    return any(text.find(t, max(cut - len(t) + 1, 0), cut + len(t) - 1) >= 0 for t in specials)


def chunk_boundaries(
    path: str | Path, chunk_bytes: int, special_tokens: Sequence[str], start: int = 0
) -> list[int]:
    """Byte offsets [start, ..., file size] cutting the file from `start` (0, or a boundary
    found before) into chunks of about `chunk_bytes` at safe points (see find_cut). A stretch
    with no safe point stays in one chunk. Each boundary depends only on the one before, so
    starting at a boundary gives the same ones after it."""
    margin = max((len(t) for t in special_tokens), default=1)
    window = max(chunk_bytes // 4, 4096)
    size = os.path.getsize(path)
    bounds = [start]
    with open(path, "rb") as f:
        pos = start + chunk_bytes
        while pos < size:
            f.seek(pos)
            skipped, text = _decode_window(f.read(window))
            cut = find_cut(text, margin, len(text) - margin, special_tokens)
            if cut < 0:
                pos += window
                continue
            bounds.append(pos + skipped + len(text[:cut].encode("utf-8", "surrogateescape")))
            pos = bounds[-1] + chunk_bytes
    return bounds + [size] if size > start else bounds


def _decode_window(data: bytes) -> tuple[int, str]:
    """Decode bytes read from inside a file: skip the tail of a character cut at the start (at
    most 3 bytes) and leave out one cut at the end. Invalid bytes become one surrogate each, so
    that text offsets map back to byte offsets. Returns (bytes skipped, text)."""
    skipped = 0
    while skipped < min(3, len(data)) and 0x80 <= data[skipped] < 0xC0:
        skipped += 1
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    return skipped, decoder.decode(data[skipped:])


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


def parallel_map(fn, jobs: list, num_workers: int, initializer=None, initargs=()) -> Iterator:
    """Yield fn(job) for each job, in order: in this process for one worker or one job, else in
    a pool of processes. At most 4 jobs per worker are in flight, so results that wait for an
    earlier, slower job cannot pile up in memory. Closing the generator stops the workers (use
    `with closing(parallel_map(...))` where an error can leave it unfinished)."""
    if num_workers <= 1 or len(jobs) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, jobs)
        return
    with ExitStack() as stack:
        with _sigterm_held():  # while the workers are forked
            workers = min(num_workers, len(jobs))
            pool = multiprocessing.Pool(workers, _start_worker, (initializer, initargs))
            stack.enter_context(pool)  # from here on, leaving the block stops the workers
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.apply_async(fn, (job,)))
            if len(pending) >= 4 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@contextmanager
def _sigterm_held() -> Iterator[None]:
    """Hold a SIGTERM back until the end of the block, then deliver it to the handler in place.

    Not one of llm/stop_signals.py's ways to stop, but a guard under them: a handler that raises
    (its sigterm_raises) must not run while workers are forked: raised inside fork's
    bookkeeping, the exception is ignored; raised between a fork and the pool's record of the
    worker, it leaves a worker that nobody stops. Inside the block, the handler only notes the
    signal, and SIGTERM is blocked, so that the workers begin with it blocked (they inherit
    their parent's handlers, which _start_worker replaces)."""
    received = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # only the main thread may set handlers (and only it runs them)
        previous = signal.signal(signal.SIGTERM, lambda *_: received.append(True))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if received:
        signal.raise_signal(signal.SIGTERM)


def _start_worker(initializer, initargs) -> None:
    """Let SIGTERM kill a worker, as Pool.terminate expects. A forked worker inherits its
    parent's handlers (one that raises would keep it alive) and its blocked SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0) -> Iterator[tqdm]:
    """A tqdm bar of bytes (MB/s and time left), shown only on a terminal, and redrawn every
    second: when one chunk takes long (a megabyte without whitespace is a single pre-token),
    the clock keeps running instead of the bar looking hung. `initial`: bytes done before."""
    off = None if enabled else True
    bar = tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, disable=off)
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(1.0):
            bar.refresh()

    thread = threading.Thread(target=redraw, daemon=True)
    with bar:
        if not bar.disable:
            thread.start()
        try:
            yield bar
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()


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
    with (
        progress_bar(bounds[-1], "pre-tokenize", progress) as bar,
        closing(parallel_map(_count_job, jobs, num_workers)) as results,
    ):
        for nbytes, counts in results:
            total.update(counts)
            bar.update(nbytes)
    return {word.encode("utf-8"): n for word, n in total.items()}
