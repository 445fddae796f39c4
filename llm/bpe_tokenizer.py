"""Byte-level BPE tokenizer: encode text to token ids and back, save and load it, encode files.

Encoding a piece of text works like GPT-2 and tiktoken:
1. cut out the special tokens (longest first), which map straight to their ids;
2. split the rest into pre-tokens with the tokenizer's regex (llm/pretokenization.py: GPT-2's
   by default; SmolLM's, which also cuts every digit off alone, for that model's vocabulary);
3. a pre-token that is a token becomes that token (`ignore_merges`, tiktoken's rule; Hugging
   Face and llama.cpp skip this step for most vocabularies); any other is turned into bytes, and
   the adjacent pair whose concatenation is the token with the lowest rank (id) is merged,
   leftmost first, again and again until no adjacent pair forms a token.
A trained tokenizer's ids are in merge order, so step 3 replays the merges of training.
(Hugging Face merges a pair only if the pair itself is in its merge list; joining any two parts
that make a token, as here, gives the same ids whenever each token is reached through its own
merge: for SmolLM2's vocabulary, kernel/comparing_smollm2_tokenizer.py finds them equal on every
line of 8.6 MB of text.)

`merge_pretoken_simple` is step 3 written as plainly as possible: it looks at every pair for
every merge, O(n^2) for a pre-token of n bytes. Text without whitespace (minified code, base64,
URLs, DNA) makes pre-tokens of megabytes, so the encoder uses `merge_pretoken`, which gives the
same ids in O(n log n) with a priority queue, and the tests check the two agree.
The same words recur constantly (" the", " and,"), so the ids of text segments and of
pre-tokens are cached.

Its command line (`uv run -m llm.bpe_tokenizer`, train and encode) is llm/tokenizer_command.py.
"""

import hashlib
import json
import os
import sys
import warnings
from array import array
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from functools import partial
from heapq import heappop, heappush
from itertools import chain, pairwise
from pathlib import Path

import numpy as np
import regex

from llm.atomic_write import remove_stale_temp_files, write_text
from llm.bpe_files import (
    read_merges,
    read_special_tokens,
    read_tokenizer_json,
    read_vocab,
    write_merges,
    write_special_tokens,
    write_vocab,
)
from llm.pretokenization import (
    CHUNK_BYTES,
    PRETOKENIZERS,
    WHITESPACE_CUT,
    chunk_boundaries,
    find_cut,
    parallel_map,
    pretokenizer_pattern,
    progress_bar,
    read_chunk,
    special_token_regex,
)
from llm.token_file import TokenFileWriter

EOT = "<|endoftext|>"  # the special token that ends each document (GPT-2's, TinyStories')
TIKTOKEN_CHECK_BYTES = 1 << 20  # --backend tiktoken: ids compared with ours on this much text
STREAM_CHARS = 1 << 16  # encode_iterable encodes text in pieces of about this size
CACHE_SIZE = 1 << 17  # entries of each cache (segments, pre-tokens)
MAX_CACHED_CHARS = 256  # longer segments and pre-tokens are encoded each time


class BpeTokenizer:
    """Encoder and decoder for a byte-level BPE vocabulary. Encoding uses the ranks (ids) of
    the tokens, as tiktoken does; `merges` are kept to save the GPT-2 files."""

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
        pretokenizer: str = "gpt2",
        ignore_merges: bool = True,
    ):
        """Special tokens missing from `vocab` {id: bytes} get new ids after the largest one.
        `pretokenizer` names the regex that cuts text into pre-tokens (PRETOKENIZERS in
        llm/pretokenization.py). A vocabulary should hold all 256 single bytes (ours always do);
        bytes it lacks are dropped from the text, as Hugging Face and llama.cpp do (SmolLM2's
        lacks 21, such as 0xFF, which UTF-8 never uses). `ignore_merges`: a pre-token that is
        a token is that token, even where replaying the merges would end elsewhere (tiktoken's
        rule, and ours); False always merges the pre-token from its bytes, as Hugging Face does
        by default and llama.cpp does for GGUF vocabularies."""
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = list(dict.fromkeys(special_tokens or []))
        ids = {b: i for i, b in self.vocab.items()}
        for token in self.special_tokens:
            if not token:
                raise ValueError("a special token is empty")
            if token.encode("utf-8") not in ids:
                new_id = max(self.vocab) + 1
                self.vocab[new_id] = token.encode("utf-8")
                ids[token.encode("utf-8")] = new_id
        self.special_ids = {t: ids[t.encode("utf-8")] for t in self.special_tokens}
        special_bytes = {t.encode("utf-8") for t in self.special_tokens}
        self.ranks = {b: i for b, i in ids.items() if b not in special_bytes}  # mergeable tokens
        self.missing_bytes = bytes(b for b in range(256) if bytes([b]) not in self.ranks)
        if len(self.missing_bytes) > 128:
            raise ValueError(f"the vocabulary lacks {len(self.missing_bytes)} of the 256 single "
                             "bytes; is it a byte-level BPE vocabulary?")  # fmt: skip
        self.pretokenizer = pretokenizer
        self.ignore_merges = ignore_merges
        self._pretoken_re = regex.compile(pretokenizer_pattern(pretokenizer))
        self._vocab_size = max(self.vocab) + 1
        self._special_re = special_token_regex(self.special_tokens)
        self._pretokens = _Cache(self._encode_pretoken)  # {pre-token: ids}
        self._segments = _Cache(self._encode_segment)  # {segment: ids}

    @property
    def vocab_size(self) -> int:
        """Number of token ids: one more than the largest (the size of an embedding table)."""
        return self._vocab_size

    @property
    def id_dtype(self) -> np.dtype:
        """The type of the token arrays written by encode_file: uint16 when every id fits."""
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    def token_id(self, token: str) -> int:
        """The id of a special token, or of a token of the vocabulary given as text."""
        if token in self.special_ids:
            return self.special_ids[token]
        if token.encode("utf-8") in self.ranks:
            return self.ranks[token.encode("utf-8")]
        raise ValueError(f"{token!r} is not a token of this tokenizer")

    # ---- encoding and decoding

    def encode(self, text: str) -> list[int]:
        if self._special_re is None:
            return self._encode_ordinary(text)
        ids = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:  # split() puts the matched special tokens at odd positions
                ids.append(self.special_ids[part])
            elif part:
                ids += self._encode_ordinary(part)
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text that holds no special token. It is first cut at the safe points of
        llm/pretokenization.py into segments (mostly a word with its space and punctuation), and
        each segment is looked up in a cache: the regex runs only on segments not seen."""
        segments = WHITESPACE_CUT.split(text)
        return list(chain.from_iterable(map(self._segments.__getitem__, segments)))

    def _encode_segment(self, segment: str) -> tuple[int, ...]:
        pretokens = self._pretoken_re.findall(segment)
        return tuple(chain.from_iterable(map(self._pretokens.__getitem__, pretokens)))

    def _encode_pretoken(self, pretoken: str) -> tuple[int, ...]:
        """As tiktoken: a pre-token that is a token is that one token, even where merging its
        bytes would end elsewhere (unless not ignore_merges); any other is merged
        (merge_pretoken)."""
        piece = pretoken.encode("utf-8")
        if self.missing_bytes:
            piece = piece.translate(None, self.missing_bytes)
        rank = self.ranks.get(piece) if self.ignore_merges else None
        if rank is not None:
            return (rank,)
        return tuple(merge_pretoken(piece, self.ranks))

    def encode_iterable(self, texts: Iterable[str]) -> Iterator[int]:
        """Ids of "".join(texts), produced lazily: memory stays small for any input size.
        Text is encoded in pieces cut where cutting does not change the result (see find_cut).
        Where no cut is found, the next try waits for twice the text, so that a long stretch
        without whitespace is joined and searched O(1) times per character, not once per text."""
        margin = max((len(t) for t in self.special_tokens), default=1)
        pending: list[str] = []
        size = 0
        wanted = STREAM_CHARS  # try to cut when this much text is pending
        for text in texts:
            pending.append(text)
            size += len(text)
            if size < wanted:
                continue
            buffer = "".join(pending)
            cut = find_cut(buffer, max(size // 2, margin), size - margin, self.special_tokens)
            if cut > 0:
                yield from self.encode(buffer[:cut])
                buffer = buffer[cut:]
            pending, size = [buffer], len(buffer)
            wanted = max(STREAM_CHARS, 2 * size)
        yield from self.encode("".join(pending))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids (a list, numpy array or tensor); bytes that are not valid UTF-8
        become U+FFFD."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        try:
            data = b"".join(map(self.vocab.__getitem__, ids))
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]!r} is not in the vocabulary") from None
        return data.decode("utf-8", errors="replace")

    def encode_file(
        self,
        input_path: str | Path,
        output_path: str | Path,
        num_workers: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        progress: bool = True,
        backend: str = "ours",
    ) -> int:
        """Encode a UTF-8 text file to a .npy array of ids (uint16 when every id fits, else
        uint32), in parallel processes, streamed to disk: memory does not grow with the file.
        An interrupted encode leaves OUTPUT.partial and OUTPUT.progress, and the same call
        continues it (llm/token_file.py); the output appears only when complete. `backend`
        "tiktoken" encodes with tiktoken built from our ranks (to_tiktoken): the same ids,
        checked on the first megabyte. Returns the number of tokens."""
        input_path, output_path = Path(input_path), Path(output_path)
        if input_path.is_dir():
            raise IsADirectoryError(f"{input_path}: is a directory, not a text file")
        if not input_path.is_file():
            raise FileNotFoundError(f"{input_path}: no such file")
        if input_path.stat().st_size == 0:
            raise ValueError(f"{input_path}: the file is empty")
        if output_path.is_dir():
            raise IsADirectoryError(f"{output_path}: is a directory, not a .npy file")
        if backend not in ENCODE_BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(ENCODE_BACKENDS)}, not {backend!r}"
            )
        remove_stale_temp_files(output_path.parent, output_path.name)
        if self.missing_bytes:
            warnings.warn(f"the vocabulary lacks {len(self.missing_bytes)} bytes (e.g. "
                          f"{self.missing_bytes[:4]!r}); they are dropped from {input_path}",
                          stacklevel=2)  # fmt: skip
        if backend == "tiktoken":
            with input_path.open("rb") as f:  # (a character cut at the end is dropped)
                self._check_tiktoken(f.read(TIKTOKEN_CHECK_BYTES).decode("utf-8", "ignore"))
        writer = TokenFileWriter(output_path, self.id_dtype, self._source(input_path))
        if writer.resume_from and progress:
            print(f"continuing {output_path}: {writer.resume_from / 1e6:,.1f} MB of {input_path} "
                  f"were encoded before ({writer.length:,} tokens)")  # fmt: skip
        bounds = chunk_boundaries(input_path, chunk_bytes, self.special_tokens, writer.resume_from)
        jobs = [(str(input_path), a, b) for a, b in pairwise(bounds)]
        workers = num_workers or os.cpu_count() or 1
        init = (self.vocab, self.merges, self.special_tokens, self.settings(), backend)
        try:
            with (
                progress_bar(bounds[-1], f"encode {input_path.name}", progress, bounds[0]) as bar,
                closing(parallel_map(_encode_job, jobs, workers, _init_worker, init)) as results,
            ):
                for end, ids in results:
                    writer.append(ids, end)
                    bar.update(end - bar.n)
        except ValueError:  # bad input: no rerun gets past it, so nothing is worth keeping
            writer.discard()
            raise
        except BaseException:  # an interruption: the progress stays for the next run
            writer.close()
            raise
        return writer.finish()

    def _source(self, input_path: Path) -> dict:
        """What an encode's output depends on, for TokenFileWriter to tell whether a partial
        output is of the same input and tokenizer: the file's path, size and modification
        time, and a hash of the tokenizer."""
        digest = hashlib.sha256()
        for i in sorted(self.vocab):
            digest.update(f"{i}:{self.vocab[i].hex()}\n".encode())
        digest.update(json.dumps([self.special_tokens, self.settings()]).encode())
        stat = input_path.stat()
        return {"input": str(input_path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "tokenizer": digest.hexdigest()}  # fmt: skip

    def _check_tiktoken(self, sample: str) -> None:
        """tiktoken's ids are ours by construction (to_tiktoken); fail before any work if they
        are not, on `sample` (the start of the file)."""
        try:
            encoding = self.to_tiktoken()
        except ImportError:
            raise ValueError("--backend tiktoken needs the tiktoken package: "
                             "uv sync --extra fast") from None  # fmt: skip
        except ValueError as e:
            raise ValueError(f"{e}; encode with --backend ours") from None
        if encoding.encode(sample, allowed_special="all") != self.encode(sample):
            raise ValueError("tiktoken's ids differ from ours on the start of the input: "
                             "use --backend ours")  # fmt: skip

    # ---- files

    @classmethod
    def from_files(
        cls,
        vocab_path: str | Path,
        merges_path: str | Path,
        special_tokens: list[str] | None = None,
    ) -> "BpeTokenizer":
        """Load GPT-2 style vocab.json and merges.txt (see llm/bpe_files.py)."""
        vocab = read_vocab(vocab_path)
        merges = read_merges(merges_path, set(vocab.values()))
        return cls(vocab, merges, special_tokens)

    def settings(self) -> dict:
        """The constructor's options besides the vocabulary: {"pretokenizer", "ignore_merges"}."""
        return {"pretokenizer": self.pretokenizer, "ignore_merges": self.ignore_merges}

    def save(self, directory: str | Path) -> None:
        """Write vocab.json, merges.txt and special_tokens.json into `directory`, and
        settings.json when settings() differ from the defaults (GPT-2's pre-tokenizer,
        ignore_merges)."""
        directory = Path(directory)
        for name in (*TOKENIZER_FILES, SETTINGS_FILE):
            remove_stale_temp_files(directory, name)
        write_vocab(directory / "vocab.json", self.vocab)
        write_merges(directory / "merges.txt", self.merges)
        write_special_tokens(directory / "special_tokens.json", self.special_tokens)
        if self.settings() != DEFAULT_SETTINGS:
            write_text(directory / SETTINGS_FILE, json.dumps(self.settings()) + "\n")
        else:
            (directory / SETTINGS_FILE).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | Path) -> "BpeTokenizer":
        """Load a tokenizer written by save() (special_tokens.json may be absent: none), or,
        from a directory without vocab.json, a Hugging Face tokenizer.json (see
        llm/bpe_files.py)."""
        directory = Path(directory)
        if not (directory / "vocab.json").exists() and (directory / "tokenizer.json").is_file():
            return cls(*read_tokenizer_json(directory / "tokenizer.json"))
        for name in ("vocab.json", "merges.txt"):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory}: no {name} (nor tokenizer.json); is this a tokenizer directory?"
                )
        special_tokens = []
        if (directory / "special_tokens.json").is_file():
            special_tokens = read_special_tokens(directory / "special_tokens.json")
        settings = DEFAULT_SETTINGS
        if (directory / SETTINGS_FILE).is_file():
            settings = read_settings(directory / SETTINGS_FILE)
        vocab = read_vocab(directory / "vocab.json")
        merges = read_merges(directory / "merges.txt", set(vocab.values()))
        return cls(vocab, merges, special_tokens, **settings)

    def to_tiktoken(self, name: str = "llm-bpe"):
        """The same tokenizer as a tiktoken.Encoding (needs the tiktoken package). tiktoken
        always takes a pre-token that is a token whole, and needs every byte in the vocabulary."""
        import tiktoken

        if not self.ignore_merges or self.missing_bytes:
            raise ValueError("tiktoken cannot express this tokenizer (ignore_merges=False, or "
                             "bytes missing from the vocabulary)")  # fmt: skip

        return tiktoken.Encoding(
            name,
            pat_str=pretokenizer_pattern(self.pretokenizer),
            mergeable_ranks=self.ranks,
            special_tokens=self.special_ids,
        )


NO_RANK = sys.maxsize  # greater than every rank: "this pair is not a token"
SHORT_PIECE = 64  # merge_pretoken uses the list loop up to this many bytes, the heap beyond


def merge_pretoken_simple(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """BPE on the bytes of one pre-token, the textbook way, and the reference for the fast
    versions below: start from single bytes; while some adjacent pair of parts joins into a
    token, merge the pair whose token has the lowest rank (the leftmost one on a tie). Returns the
    ranks (ids) of the final parts. O(n^2) for n bytes: every step looks at every pair.

    This is tiktoken's rule. (minbpe merges every occurrence of the best pair in one step, which
    can differ when a merge makes a pair of lower rank: with ranks ab=1, aba=0, "abab" is
    [aba, b] here and [ab, ab] there.)"""
    parts = [bytes([b]) for b in piece]
    while True:
        pair_ranks = [ranks.get(a + b, NO_RANK) for a, b in pairwise(parts)]
        best = min(pair_ranks, default=NO_RANK)
        if best == NO_RANK:
            return [ranks[part] for part in parts]
        i = pair_ranks.index(best)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def merge_pretoken(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """merge_pretoken_simple's result, in O(n log n) time for any length n."""
    if len(piece) <= SHORT_PIECE:
        return merge_pretoken_list(piece, ranks)
    return merge_pretoken_heap(piece, ranks)


def merge_pretoken_list(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """merge_pretoken_simple, as tiktoken does it for short pieces: the parts are offsets into
    `piece`, and the rank of each adjacent pair is kept in a list where only the two pairs beside
    a merge change. Still O(n^2), but the n is in C loops (min, index, del) over a short list: for
    the pre-tokens of ordinary text, a few bytes long, this is the fastest."""
    get = ranks.get
    starts = list(range(len(piece) + 1))  # where each part starts, then the end
    # The rank of the pair each part makes with the next; NO_RANK for the last part.
    pair_ranks = [get(piece[i : i + 2], NO_RANK) for i in range(len(piece) - 1)] + [NO_RANK]
    while (best := min(pair_ranks)) != NO_RANK:
        i = pair_ranks.index(best)
        del starts[i + 1], pair_ranks[i]  # part i now runs to starts[i + 1]
        if i > 0:
            pair_ranks[i - 1] = get(piece[starts[i - 1] : starts[i + 1]], NO_RANK)
        if starts[i + 1] < len(piece):  # (if not, pair_ranks[i] is the last part's NO_RANK)
            pair_ranks[i] = get(piece[starts[i] : starts[i + 2]], NO_RANK)
    return [ranks[piece[a:b]] for a, b in pairwise(starts)]


def merge_pretoken_heap(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """merge_pretoken_simple in O(n log n): each step finds the next merge in a priority queue
    instead of looking at every pair, and changes only its neighbours.

    The parts form a doubly linked list over byte offsets: the part that starts at offset i ends
    at end[i], and the part before it starts at start_before[i]. Every adjacent pair that joins
    into a token is a candidate merge, written as one int, rank << shift | i (i: where the pair
    starts), so that the smallest candidate is the lowest rank and, on a tie, the leftmost pair:
    the one merge_pretoken_simple merges next. The candidates of the single bytes are sorted once
    and taken in order; those that merges create go to a heap; each step takes the smaller of the
    two heads. A merge changes the pairs on both of its sides. Their old candidates are not
    searched for and deleted: key_at[i] holds the candidate of the pair that starts at i now, and
    a candidate that is no longer there is skipped when its turn comes (lazy deletion).
    Arrays, not lists: on pieces of megabytes their compact memory makes the loop twice as fast.
    """
    n = len(piece)
    get = ranks.get
    shift = n.bit_length()
    mask = (1 << shift) - 1  # candidate & mask = where its pair starts
    pair_ranks = [get(piece[i : i + 2]) for i in range(n - 1)]
    keys = [-1 if r is None else r << shift | i for i, r in enumerate(pair_ranks)]
    initial = sorted((key for key in keys if key >= 0), reverse=True)  # pop() takes the smallest
    created: list[int] = []  # heap of the candidates merges create
    key_at = array("q", keys)
    key_at.append(-1)  # -1: no candidate (not a token, or no part starts here)
    end = array("q", range(1, n + 1))
    start_before = array("q", range(-1, n - 1))
    while initial or created:
        if created and (not initial or created[0] < initial[-1]):
            key = heappop(created)
        else:
            key = initial.pop()
        i = key & mask
        if key_at[i] != key:
            continue  # stale: the pair at i changed since this candidate was made
        j = end[i]  # merge the parts at i and j into one, from i to k
        k = end[j]
        end[i] = k
        key_at[i] = key_at[j] = -1
        if k < n:  # the pair (i, k) is new
            start_before[k] = i
            rank = get(piece[i : end[k]])
            if rank is not None:
                key_at[i] = key = rank << shift | i
                heappush(created, key)
        if i > 0:  # and so is the pair (h, i)
            h = start_before[i]
            rank = get(piece[h:k])
            key_at[h] = -1
            if rank is not None:
                key_at[h] = key = rank << shift | h
                heappush(created, key)
    ids = []
    i = 0
    while i < n:
        ids.append(ranks[piece[i : end[i]]])
        i = end[i]
    return ids


class _Cache(dict):
    """{text: ids}, filled on first use by `encode` until it holds CACHE_SIZE entries (frequent
    texts come early, so the first ones are the ones worth keeping). Texts longer than
    MAX_CACHED_CHARS are not kept: they rarely recur."""

    def __init__(self, encode):
        super().__init__()
        self.encode = encode

    def __missing__(self, text: str) -> tuple[int, ...]:
        ids = self.encode(text)
        if len(self) < CACHE_SIZE and len(text) <= MAX_CACHED_CHARS:
            self[text] = ids
        return ids


ENCODE_BACKENDS = ("ours", "tiktoken")
_worker: dict = {}  # the encode function and id dtype of an encode_file worker process


def _init_worker(vocab, merges, special_tokens, settings, backend) -> None:
    tokenizer = BpeTokenizer(vocab, merges, special_tokens, **settings)
    _worker["encode"] = tokenizer.encode
    if backend == "tiktoken":
        _worker["encode"] = partial(tokenizer.to_tiktoken().encode, allowed_special="all")
    _worker["dtype"] = tokenizer.id_dtype


def _encode_job(job: tuple[str, int, int]) -> tuple[int, np.ndarray]:
    """(end of the chunk, its ids)."""
    path, start, end = job
    return end, np.array(_worker["encode"](read_chunk(path, start, end)), dtype=_worker["dtype"])


# ---- the files of a saved tokenizer

TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens.json")
SETTINGS_FILE = "settings.json"  # saved only for settings other than the defaults
DEFAULT_SETTINGS = {"pretokenizer": "gpt2", "ignore_merges": True}


def read_settings(path: Path) -> dict:
    """A tokenizer's settings.json, checked: {"pretokenizer": name, "ignore_merges": bool}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    settings = DEFAULT_SETTINGS | data if isinstance(data, dict) else data
    if (not isinstance(settings, dict) or set(settings) != set(DEFAULT_SETTINGS)
            or not isinstance(settings["ignore_merges"], bool)
            or settings["pretokenizer"] not in PRETOKENIZERS):  # fmt: skip
        raise ValueError(f"{path}: expected {{\"pretokenizer\": one of {', '.join(PRETOKENIZERS)}, "
                         f"\"ignore_merges\": true or false}}, got {data}")  # fmt: skip
    return settings


if __name__ == "__main__":  # `uv run -m llm.bpe_tokenizer`, the command line's old home
    from llm.tokenizer_command import main

    main()
