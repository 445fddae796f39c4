"""BPE training: merges worked out by hand, against a naive reference, and in parallel."""

import warnings
from collections import Counter

import pytest
import regex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm.bpe_training import train_bpe
from llm.pretokenization import (
    GPT2_PATTERN,
    PRETOKENIZERS,
    WHITESPACE_CUT,
    chunk_boundaries,
    count_pretokens,
)

EOT = "<|endoftext|>"

# Most corpora here are too small for the vocabulary asked: a warning says so (tested below).
pytestmark = pytest.mark.filterwarnings("ignore:only .* possible on this corpus")


def train(tmp_path, text, vocab_size, special_tokens=(), **kwargs):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    kwargs = {"num_workers": 1, "progress": False} | kwargs
    return train_bpe(path, vocab_size, list(special_tokens), **kwargs)


def naive_train(text: str, vocab_size: int, special_tokens: list[str]):
    """Reference BPE: recount every pair after each merge (slow and obvious)."""
    if special_tokens:
        alternatives = "|".join(regex.escape(t) for t in sorted(special_tokens, key=len)[::-1])
        segments = regex.split(alternatives, text)
    else:
        segments = [text]
    words = Counter(
        tuple(bytes([b]) for b in pre.encode())
        for s in segments
        for pre in regex.findall(GPT2_PATTERN, s)
    )
    vocab = [bytes([i]) for i in range(256)] + [t.encode() for t in special_tokens]
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # most frequent, then greatest
        merges.append(best)
        vocab.append(best[0] + best[1])
        merged = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return dict(enumerate(vocab)), merges


def test_vocab_layout(tmp_path):
    vocab, merges = train(tmp_path, "hello hello world", 262, [EOT])
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert vocab[256] == EOT.encode()
    assert len(vocab) == 262 and len(merges) == 5
    assert [vocab[257 + i] for i in range(5)] == [a + b for a, b in merges]


def test_hand_worked_counts(tmp_path):
    # Pre-tokens: "ab" x1, " ab" x2, " cd" x2.
    # Pairs: (a,b) 3, (' ',a) 2, (' ',c) 2, (c,d) 2 -> merge (a,b).
    # Then (' ',ab) 2, (' ',c) 2, (c,d) 2: a tie; (c,d) has the greatest first byte string.
    # Then (' ',ab) 2, (' ',cd) 2: same first part, b"cd" > b"ab" -> (' ',cd), then (' ',ab).
    _, merges = train(tmp_path, "ab ab ab cd cd", 256 + 4)
    assert merges == [(b"a", b"b"), (b"c", b"d"), (b" ", b"cd"), (b" ", b"ab")]


def test_hand_worked_overlap_and_prefix_tie(tmp_path):
    # "aaab" is one pre-token. (a,a) occurs twice (overlapping), (a,b) once -> merge (a,a),
    # left to right: [aa, a, b]. Then (aa,a) and (a,b) tie at 1: b"aa" > b"a" (a longer
    # string is greater than its prefix) -> (aa,a), then (aaa,b).
    _, merges = train(tmp_path, "aaab", 256 + 3)
    assert merges == [(b"a", b"a"), (b"aa", b"a"), (b"aaa", b"b")]


def test_tie_goes_to_greater_pair(tmp_path):
    # All pairs occur once: (a,b), (' ',c), (c,d). Greatest first part: b"c" -> (c,d);
    # then (a,b) and (' ',cd): b"a" > b" " -> (a,b).
    _, merges = train(tmp_path, "ab cd", 256 + 3)
    assert merges == [(b"c", b"d"), (b"a", b"b"), (b" ", b"cd")]


def test_stops_when_nothing_is_left_to_merge_and_says_so(tmp_path):
    message = "^only 2 merges possible on this corpus: the vocabulary has 258 tokens, not the 1,000"
    with pytest.warns(UserWarning, match=message + " asked for$"):
        vocab, merges = train(tmp_path, "abab", 1000)
    assert merges == [(b"a", b"b"), (b"ab", b"ab")]
    assert len(vocab) == 258
    with pytest.warns(UserWarning, match="^only 1 merge possible.* 257 tokens, not the 258 "):
        train(tmp_path, "ab", 258)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the size asked for, or less, is no surprise
        assert len(train(tmp_path, "abab", 258)[0]) == len(train(tmp_path, "abab", 257)[0]) + 1


def test_special_tokens_are_never_merged(tmp_path):
    text = f"xy{EOT}xy{EOT}{EOT}yx<|endoftext|x" * 20
    vocab, merges = train(tmp_path, text, 300, [EOT])
    pieces = [p for s in text.split(EOT) for p in regex.findall(GPT2_PATTERN, s)]
    for a, b in merges:  # every merged token lies inside a pre-token of the text between specials
        assert any((a + b).decode() in p for p in pieces), (a, b)
    assert [v for v in vocab.values() if EOT.encode() in v] == [EOT.encode()]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["a", "b", "ab", " ", "  ", "\n", "'s", "é", "1", EOT, "<|"]),
            st.text(max_size=4),
        ),
        max_size=60,
    ),
    st.integers(256 + 1, 256 + 40),
)
def test_matches_naive_reference(tmp_path_factory, pieces, vocab_size):
    text = "".join(pieces)
    assume(text)
    tmp_path = tmp_path_factory.mktemp("c")
    expected = naive_train(text, vocab_size, [EOT])
    assert train(tmp_path, text, vocab_size, [EOT]) == expected
    assert train(tmp_path, text, vocab_size, [EOT], chunk_bytes=8) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=3),
            st.sampled_from(
                [" ", "  ", "\n", "\t", "\x1c", "\x85", "\u3000", "!", "'s", "a", "1", "²"]
            ),
        ),
        max_size=20,
    ).map("".join)
)
def test_whitespace_cuts_keep_the_pretokens(text):
    for pattern in PRETOKENIZERS.values():  # GPT-2's and SmolLM's
        pretokens = regex.findall(pattern, text)
        for match in WHITESPACE_CUT.finditer(text):
            cut = match.start()
            assert (
                regex.findall(pattern, text[:cut]) + regex.findall(pattern, text[cut:]) == pretokens
            )


SPECIALS = [EOT, "<| |>", "<|a|>", "|><|"]  # one holds a space; "|><|" overlaps "<|a|><|a|>"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["a", "b", " ", "  ", "\n", "\t", " \n", "é", "!", "'ll", "<|", "|>", *SPECIALS]
            + ["日本", "。", "\u3000", "\x1c", "\x85", "\u2028", "🙂"]
        ),
        max_size=80,
    )
)
def test_chunking_does_not_change_pretoken_counts(tmp_path_factory, pieces):
    text = "".join(pieces)
    path = tmp_path_factory.mktemp("c") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    split = "|".join(regex.escape(t) for t in sorted(SPECIALS, key=len, reverse=True))
    expected = Counter(
        p.encode() for s in regex.split(split, text) for p in regex.findall(GPT2_PATTERN, s)
    )
    for chunk_bytes in (1, 3, 16):
        bounds = chunk_boundaries(path, chunk_bytes, SPECIALS)
        assert bounds == sorted(set(bounds)) and bounds[-1] == len(text.encode())
        assert count_pretokens(path, SPECIALS, 1, chunk_bytes, progress=False) == expected


def test_same_result_with_1_and_2_workers(tmp_path):
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve", "123", "it's"]
    text = "".join(f"{' '.join(words[i % 7 :] + words[: i % 5])}.\n{EOT}\n" for i in range(300))
    one = train(tmp_path, text, 400, [EOT], num_workers=1, chunk_bytes=1000)
    two = train(tmp_path, text, 400, [EOT], num_workers=2, chunk_bytes=1000)
    assert one == two
    assert one == naive_train(text, 400, [EOT])


def test_text_without_spaces_is_cut_at_newlines(tmp_path):
    text = "日本語のテキスト。\n" * 200 + "終わり"
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    assert len(chunk_boundaries(path, 64, [])) > 10
    assert train(tmp_path, text, 300, chunk_bytes=64) == naive_train(text, 300, [])


def test_file_without_special_tokens_is_cut_at_spaces(tmp_path):
    text = "lorem ipsum dolor sit amet, consectetur   adipiscing\n\n elit " * 50
    path = tmp_path / "c.txt"
    path.write_text(text)
    assert len(chunk_boundaries(path, 64, [])) > 10
    assert train(tmp_path, text, 300, chunk_bytes=64) == naive_train(text, 300, [])


@pytest.mark.parametrize(
    "text, vocab_size, specials, message",
    [
        (None, 300, [], "no such file"),
        ("", 300, [], "empty"),
        ("abc", 256, [EOT], "smaller than 256"),
        ("abc", 300, [""], "special token is empty"),
        ("abc", 300, ["\n"], "single byte"),
        ("abc", 300, [EOT, EOT], "repeated"),
    ],
)
def test_bad_arguments(tmp_path, text, vocab_size, specials, message):
    path = tmp_path / "corpus.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train_bpe(path, vocab_size, specials, num_workers=1, progress=False)


def test_invalid_utf8_names_the_offset(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 6"):
        train_bpe(path, 300, [], num_workers=1, progress=False)
    # In a later chunk, the offset is still the one in the file, not in the chunk.
    path.write_bytes(b"fine text " * 100 + b"\xff")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 1000"):
        train_bpe(path, 300, [], num_workers=1, chunk_bytes=64, progress=False)


def test_longer_special_token_wins_over_its_prefix(tmp_path):
    # "<s>" is a prefix of "<s>>": cut out "<s>>" whole, or a stray ">" pre-token would remain.
    path = tmp_path / "corpus.txt"
    path.write_text("a<s>>b<s>c", encoding="utf-8")
    for specials in (["<s>", "<s>>"], ["<s>>", "<s>"]):
        counts = count_pretokens(path, specials, 1, progress=False)
        assert counts == {b"a": 1, b"b": 1, b"c": 1}
