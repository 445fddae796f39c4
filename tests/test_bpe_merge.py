"""BPE merges inside one pre-token: the fast loop against the textbook one and tiktoken, on
random rank tables, long whitespace-free pieces and runs of one character."""

import math
import random

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.bpe_tokenizer import (
    BpeTokenizer,
    merge_pretoken,
    merge_pretoken_heap,
    merge_pretoken_list,
    merge_pretoken_simple,
)
from llm.pretokenization import GPT2_PATTERN


class ComparisonBudgetExceeded(Exception):
    pass


class Counted(int):
    """An int that counts the comparisons made with it, and whose sums, shifts, ors and ands
    are Counted too: given as the ranks, it counts every comparison of a rank or of a heap key
    made from one, whatever the algorithm. Past `budget` it raises, so a quadratic algorithm
    fails in moments instead of running for minutes."""

    comparisons = 0
    budget = 0


def _counting(name):
    compare = getattr(int, name)

    def method(self, other):
        Counted.comparisons += 1
        if Counted.comparisons > Counted.budget:
            raise ComparisonBudgetExceeded(f"more than {Counted.budget:,} comparisons")
        return compare(self, other)

    return method


def _counted_result(name):
    operation = getattr(int, name)
    return lambda self, other: Counted(operation(self, other))


for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(Counted, _name, _counting(_name))
for _name in ("__add__", "__radd__", "__lshift__", "__or__", "__ror__", "__and__", "__rand__"):
    setattr(Counted, _name, _counted_result(_name))


def random_ranks(rng: random.Random, alphabet: str, count: int) -> dict[bytes, int]:
    """The 256 bytes and up to `count` random tokens over `alphabet`, in random rank order."""
    tokens = {bytes([b]) for b in range(256)}
    for _ in range(count):
        tokens.add("".join(rng.choices(alphabet, k=rng.randint(2, 8))).encode())
    order = list(range(len(tokens)))
    rng.shuffle(order)
    return dict(zip(sorted(tokens), order, strict=True))


def tiktoken_of(ranks: dict[bytes, int]) -> tiktoken.Encoding:
    return tiktoken.Encoding("test", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def test_a_100kb_piece_takes_n_log_n_comparisons():
    # The old loop (min() over every pair's rank for each merge) needs about n^2 / 4 of them
    # here: more than 10^9 instead of a few million.
    rng = random.Random(0)
    ranks = random_ranks(rng, "abc", 300)
    piece = "".join(rng.choices("abc", k=60_000)) + "a" * 20_000 + "ab" * 10_000
    n = len(piece)
    Counted.comparisons, Counted.budget = 0, int(3 * n * math.log2(n))
    ids = merge_pretoken(piece.encode(), {token: Counted(r) for token, r in ranks.items()})
    assert Counted.comparisons > n  # the counting works
    assert list(map(int, ids)) == tiktoken_of(ranks).encode(piece)


rank_tables = st.builds(
    random_ranks,
    st.randoms(use_true_random=False),
    st.sampled_from(["ab", "abc"]),
    st.integers(1, 40),
)
runs = st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 40)), max_size=12).map(
    lambda runs: "".join(c * k for c, k in runs)
)
pieces = st.one_of(st.text("abc", max_size=150), runs, st.text("ab c", max_size=150))


@settings(max_examples=200, deadline=None)
@given(rank_tables, pieces)
def test_fast_merges_equal_the_textbook_loop(ranks, text):
    piece = text.encode()
    expected = merge_pretoken_simple(piece, ranks)
    assert merge_pretoken_list(piece, ranks) == expected
    assert merge_pretoken_heap(piece, ranks) == expected
    assert merge_pretoken(piece, ranks) == expected


def tokenizer_of(ranks: dict[bytes, int]) -> BpeTokenizer:
    return BpeTokenizer({rank: token for token, rank in ranks.items()}, [])


@settings(max_examples=100, deadline=None)
@given(rank_tables, st.lists(pieces, max_size=4).map(" ".join))
def test_encode_equals_tiktoken_on_random_rank_tables(ranks, text):
    assert tokenizer_of(ranks).encode(text) == tiktoken_of(ranks).encode(text)


@pytest.mark.parametrize("length", [65, 1000, 30_000])
@pytest.mark.parametrize("alphabet", ["a", "ab", "abcdefghijklmnopqrstuvwxyz"])
def test_long_whitespace_free_text_equals_tiktoken(length, alphabet):
    rng = random.Random(length)
    ranks = random_ranks(rng, alphabet[:3], 200)
    text = "".join(rng.choices(alphabet, k=length))
    assert tokenizer_of(ranks).encode(text) == tiktoken_of(ranks).encode(text)
