"""Train a byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2, Radford et al. 2019).

The vocabulary starts as the 256 byte values plus the special tokens. Training repeats one step:
find the most frequent pair of adjacent tokens inside the pre-tokens of the corpus, and merge it
into a new token. Ties go to the lexicographically greater pair, compared as byte strings.

Two ideas make it fast:
1. Work on distinct pre-tokens ("words") with their counts, not on the corpus: "the" occurring a
   million times is one word with count 1,000,000. Counting them runs in parallel processes
   (see llm/pretokenization.py).
2. Never recount everything. A merge of (a, b) only changes the words that contain (a, b), found
   through an index pair -> words, and in them only the pairs that touch an occurrence. A
   priority queue (heap) yields the most frequent pair. Heap entries are not updated when a count
   falls; a stale entry is noticed when it comes to the top and is pushed back with its current
   count ("lazy deletion").

A word is kept as a str with one character per token, chr(token id), and a pair as a str of two
such characters. Then the parts of a word between occurrences of a pair are `word.split(pair)`,
and the merged word is `chr(new_id).join(parts)`: the same left-to-right, non-overlapping
replacement as BPE, done by Python's C string code.
"""

import heapq
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from llm.pretokenization import CHUNK_BYTES, count_pretokens


def train_bpe(
    input_path: str | Path,
    vocab_size: int,
    special_tokens: list[str],
    num_workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train BPE on a UTF-8 text file.

    Returns vocab {id: bytes} (ids 0-255 are the bytes, then the special tokens, then one token
    per merge) and the merges in the order they were made. The result does not depend on
    `num_workers` (processes for pre-tokenization, default: all CPUs) or `chunk_bytes`.
    Warns when the corpus runs out of pairs to merge before the vocabulary reaches `vocab_size`.
    """
    check_training_args(input_path, vocab_size, special_tokens)
    workers = num_workers or os.cpu_count() or 1
    word_counts = count_pretokens(input_path, special_tokens, workers, chunk_bytes, progress)
    vocab, merges = merge_pairs(word_counts, vocab_size, special_tokens, progress)
    if len(vocab) < vocab_size:
        made = f"{len(merges):,} merge" + ("s" if len(merges) != 1 else "")
        warnings.warn(
            f"only {made} possible on this corpus: the vocabulary has {len(vocab):,} tokens,"
            f" not the {vocab_size:,} asked for",
            stacklevel=2,
        )
    return vocab, merges


def check_training_args(input_path: str | Path, vocab_size: int, special_tokens: list[str]) -> None:
    """Raise a ValueError (or an OSError) that says what is wrong with the arguments."""
    path = Path(input_path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a text file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the corpus is empty")
    check_vocab_size(vocab_size, special_tokens)


def check_vocab_size(vocab_size: int, special_tokens: list[str]) -> None:
    """Raise a ValueError if the special tokens or the vocabulary size cannot work."""
    if any(not t for t in special_tokens):
        raise ValueError("a special token is empty")
    if any(len(t.encode("utf-8")) == 1 for t in special_tokens):
        raise ValueError("a special token is a single byte, which is a token already")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special tokens are repeated: {special_tokens}")
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"vocab size {vocab_size} is smaller than 256 bytes"
            f" + {len(special_tokens)} special tokens"
        )


def merge_pairs(
    word_counts: dict[bytes, int],
    vocab_size: int,
    special_tokens: list[str],
    progress: bool = False,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """The BPE merge loop over {pre-token bytes: count}; see the module docstring."""
    vocab = {i: bytes([i]) for i in range(256)}
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    token_ids = {b: i for i, b in vocab.items()}
    order = [descending(vocab[i]) for i in range(len(vocab))]  # tie-break key of each token
    words = [word.decode("latin-1") for word in word_counts]  # byte b -> chr(b): token ids
    counts = list(word_counts.values())
    pair_counts, pair_words = count_pairs(words, counts)

    def heap_entry(pair: str) -> tuple:  # most frequent first, then the greater (bytes, bytes)
        return -pair_counts[pair], order[ord(pair[0])], order[ord(pair[1])], pair

    heap = [heap_entry(pair) for pair in pair_counts]
    heapq.heapify(heap)
    merges = []
    bar = tqdm(
        total=vocab_size - len(vocab),
        desc="merge",
        unit="tok",
        disable=None if progress else True,  # None: on a terminal only
    )
    while len(vocab) < vocab_size and heap:
        neg_count, _, _, pair = heapq.heappop(heap)
        if -neg_count != pair_counts[pair]:  # stale: the pair lost occurrences since its push
            if pair_counts[pair] > 0:
                heapq.heappush(heap, heap_entry(pair))
            continue
        a, b = vocab[ord(pair[0])], vocab[ord(pair[1])]
        merges.append((a, b))
        new_id = token_ids.get(a + b)  # if a + b exists, made from another pair, reuse it (as HF)
        if new_id is None:
            new_id = token_ids[a + b] = len(vocab)
            vocab[new_id] = a + b
            order.append(descending(a + b))
            bar.update()
        for gained in merge_in_words(pair, chr(new_id), words, counts, pair_counts, pair_words):
            heapq.heappush(heap, heap_entry(gained))
    bar.close()
    return vocab, merges


def count_pairs(words: list[str], counts: list[int]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Occurrences of each adjacent pair, and the index pair -> ids of the words containing it.
    The index holds lists, cheaper than sets: a word may be listed more than once."""
    pair_counts: dict[str, int] = defaultdict(int)
    pair_words: dict[str, list[int]] = defaultdict(list)
    for w, (word, n) in enumerate(zip(words, counts, strict=True)):
        for i in range(len(word) - 1):
            pair = word[i : i + 2]
            pair_counts[pair] += n
            pair_words[pair].append(w)
    return pair_counts, pair_words


def descending(b: bytes) -> tuple[int, ...]:
    """A key that sorts byte strings in reverse: x < y exactly when descending(x) > descending(y).
    The end marker 256 ranks a prefix after its extensions, as reverse order requires."""
    return (*(255 - x for x in b), 256)


def merge_in_words(
    pair: str,
    new_token: str,
    words: list[str],
    counts: list[int],
    pair_counts: dict[str, int],
    pair_words: dict[str, list[int]],
) -> set[str]:
    """Replace `pair` by `new_token` in every word that contains it, updating the pair counts
    and the index for those words only. Returns the pairs that gained occurrences (they contain
    new_token); every other pair can only have lost some."""
    gained = set()
    for w in pair_words.pop(pair):
        parts = words[w].split(pair)
        if len(parts) == 1:  # listed twice, or lost the pair earlier: the index is never pruned
            continue
        n = counts[w]
        for old in pairs_at_joins(parts, pair):
            pair_counts[old] -= n
        for new in pairs_at_joins(parts, new_token):
            pair_counts[new] += n
            pair_words[new].append(w)
            gained.add(new)
        words[w] = new_token.join(parts)
    return gained


def pairs_at_joins(parts: list[str], sep: str) -> Iterator[str]:
    """The adjacent pairs of sep.join(parts) that touch a separator, each once.

    Joining the parts of a word with the old pair or with the new token gives the word before or
    after the merge; the pairs inside the parts are the same in both, so only these change.
    """
    for j in range(1, len(parts)):
        before = parts[j - 1][-1:] or (sep[-1] if j > 1 else "")  # an empty part: previous sep
        around = before + sep + parts[j][:1]
        for i in range(len(around) - 1):
            yield around[i : i + 2]
