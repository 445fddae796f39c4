"""BPE encoding: equal to tiktoken, round trips, streaming, .npy files, GPT-2 files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm import bpe_tokenizer
from llm.bpe_files import token_to_str, tokenizer_json
from llm.bpe_tokenizer import BpeTokenizer
from llm.bpe_training import train_bpe
from llm.pretokenization import GPT2_PATTERN, SMOLLM_PATTERN, find_cut

EOT = "<|endoftext|>"
CORPUS = (
    "Once upon a time, a little cat named Tom found a big red ball. He said: 'It's mine!'\n"
    "Tom's friend didn't agree; they've played  together   for 12 days in 2024.\n"
    "Ünïcödé wörds, 日本語のテキスト, emoji 🙂🙂 and numbers 3.14159 appear too.\n"
    "    def f(x):  \n        return x \n\n\t\tdone\t\n   \n"
)


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("".join(f"{CORPUS * (1 + i % 3)}{EOT}\n" for i in range(40)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus_path):
    vocab, merges = train_bpe(corpus_path, 400, [EOT], num_workers=1, progress=False)
    return BpeTokenizer(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def tiktoken_encoding(tokenizer):
    """tiktoken built directly from our ranks and the GPT-2 pattern: an independent encoder."""
    ranks = {b: i for i, b in tokenizer.vocab.items() if i != tokenizer.token_id(EOT)}
    return tiktoken.Encoding(
        "ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 256}
    )


def test_basic_properties(tokenizer):
    assert tokenizer.vocab_size == 400
    assert tokenizer.token_id(EOT) == 256
    assert tokenizer.special_tokens == [EOT]
    assert tokenizer.encode(EOT) == [256]
    assert len(tokenizer.encode(" little cat")) < len(" little cat")  # merges are used
    for whitespace in ("  ", "   ", "\n   "):  # so cutting whitespace wrongly would show
        assert whitespace.encode() in tokenizer.ranks
    with pytest.raises(ValueError, match="not a token"):
        tokenizer.token_id("<|nope|>")


WHITESPACE = [" ", "  ", "\n", "\n\n", " \n", "\t", "\r\n", "\u3000", "\x1c", "\x85", "\u2028"]
text_with_specials = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.just(EOT),
        st.sampled_from(CORPUS.split(" ")),
        st.sampled_from(WHITESPACE),
        st.text("ab", min_size=60, max_size=300),  # long pre-tokens take the heap path
        st.builds(str.__mul__, st.sampled_from(["a", "1", "!", " ", "ab"]), st.integers(2, 300)),
    ),
    max_size=16,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text_with_specials)
def test_equals_tiktoken_and_round_trips(tokenizer, tiktoken_encoding, text):
    ids = tokenizer.encode(text)
    assert ids == tiktoken_encoding.encode(text, allowed_special="all")
    assert tokenizer.decode(ids) == text


def test_equals_tiktoken_on_corpus(tokenizer, tiktoken_encoding, corpus_path):
    text = corpus_path.read_text(encoding="utf-8")
    assert tokenizer.encode(text) == tiktoken_encoding.encode(text, allowed_special="all")
    export = tokenizer.to_tiktoken()
    assert export.encode(text, allowed_special="all") == tokenizer.encode(text)


def test_decode_invalid_utf8_gives_replacement_char(tokenizer):
    assert tokenizer.decode([0xFF]) == "\ufffd"
    snowman = tokenizer.encode("☃")  # 3 bytes
    assert tokenizer.decode(snowman[:-1] + tokenizer.encode("!")) == "\ufffd!"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([10**6])
    ids = tokenizer.encode(CORPUS)
    assert tokenizer.decode(np.array(ids, dtype=np.uint16)) == CORPUS  # arrays work too


def test_overlapping_special_tokens_match_longest_first(tokenizer):
    double = EOT + EOT
    tok = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT, double])
    ids = tok.encode(f"a{EOT}{EOT}b{EOT}{EOT}{EOT}")
    assert ids == [
        *tok.encode("a"),
        tok.token_id(double),
        *tok.encode("b"),
        tok.token_id(double),
        256,
    ]
    assert tok.decode(ids) == f"a{EOT}{EOT}b{EOT}{EOT}{EOT}"
    assert tok.token_id(double) == tokenizer.vocab_size  # a new id after the largest


def test_special_token_text_is_plain_text_without_special_tokens(tokenizer):
    plain = BpeTokenizer(tokenizer.vocab, tokenizer.merges)
    assert 256 not in plain.encode(EOT)  # no special tokens: "<|endoftext|>" is ordinary text


def test_encode_iterable_equals_encode_on_a_file(tokenizer, corpus_path, monkeypatch):
    monkeypatch.setattr(bpe_tokenizer, "STREAM_CHARS", 100)  # force many cuts
    text = corpus_path.read_text(encoding="utf-8")
    with open(corpus_path, encoding="utf-8") as f:
        streamed = tokenizer.encode_iterable(f)
        assert not isinstance(streamed, list)
        assert list(streamed) == tokenizer.encode(text)


def test_encode_iterable_searches_a_long_stretch_without_cuts_a_few_times(tokenizer, monkeypatch):
    # 300,000 characters without whitespace, in texts of 100: trying to cut after every text
    # would search about 300,000^2 / 400 characters for a cut; doubling the wait, a few times n.
    searched = []

    def counting_find_cut(text, start, end, special_tokens):
        searched.append(end - start)
        return find_cut(text, start, end, special_tokens)

    monkeypatch.setattr(bpe_tokenizer, "find_cut", counting_find_cut)
    text = "ab" * 150_000 + " the end"
    pieces = [text[i : i + 100] for i in range(0, len(text), 100)]
    assert list(tokenizer.encode_iterable(pieces)) == tokenizer.encode(text)
    assert 0 < sum(searched) < 2 * len(text)


@settings(max_examples=50, deadline=None)
@given(text_with_specials, st.lists(st.integers(0, 200), max_size=8))
def test_encode_iterable_with_arbitrary_pieces(tokenizer, text, cuts):
    bpe_tokenizer.STREAM_CHARS, saved = 8, bpe_tokenizer.STREAM_CHARS
    try:
        bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        assert list(tokenizer.encode_iterable(pieces)) == tokenizer.encode(text)
    finally:
        bpe_tokenizer.STREAM_CHARS = saved


@pytest.mark.parametrize("workers", [1, 2])
def test_encode_file_equals_encode(tokenizer, corpus_path, tmp_path, workers):
    out = tmp_path / "ids.npy"
    n = tokenizer.encode_file(
        corpus_path, out, num_workers=workers, chunk_bytes=500, progress=False
    )
    ids = np.load(out, mmap_mode="r")
    assert ids.dtype == np.uint16 and n == len(ids)
    assert ids.tolist() == tokenizer.encode(corpus_path.read_text(encoding="utf-8"))
    assert [p.name for p in tmp_path.iterdir()] == ["ids.npy"]  # no temporary file left


def test_encode_file_uses_uint32_for_large_vocabularies(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)} | {70_000: b"ab"}
    tok = BpeTokenizer(vocab, [(b"a", b"b")])
    (tmp_path / "in.txt").write_text("abc ab")
    tok.encode_file(tmp_path / "in.txt", tmp_path / "out.npy", num_workers=1, progress=False)
    ids = np.load(tmp_path / "out.npy")
    assert ids.dtype == np.uint32 and ids.tolist() == [70_000, ord("c"), ord(" "), 70_000]


@pytest.mark.parametrize("workers", [1, 2])
def test_encode_file_failure_leaves_no_output(tokenizer, tmp_path, workers):
    (tmp_path / "bad.txt").write_bytes(b"fine text " * 100 + b"\xff")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 1000"):
        tokenizer.encode_file(
            tmp_path / "bad.txt", tmp_path / "out.npy", workers, chunk_bytes=100, progress=False
        )
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]


def test_encode_file_to_a_directory_fails_cleanly(tokenizer, corpus_path, tmp_path):
    (tmp_path / "out.npy").mkdir()
    with pytest.raises(OSError):
        tokenizer.encode_file(corpus_path, tmp_path / "out.npy", num_workers=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_save_load_round_trip(tokenizer, corpus_path, tmp_path):
    tokenizer.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "merges.txt",
        "special_tokens.json",
        "vocab.json",
    ]
    loaded = BpeTokenizer.load(tmp_path / "tok")
    assert loaded.vocab == tokenizer.vocab and loaded.merges == tokenizer.merges
    assert loaded.special_tokens == [EOT]
    text = corpus_path.read_text(encoding="utf-8")
    assert loaded.encode(text) == tokenizer.encode(text)


def test_files_use_the_gpt2_byte_alphabet(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["Ġ"] == ord(" ") and vocab["!"] == ord("!") and vocab["Ċ"] == ord("\n")
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    first = merges[1].split(" ")
    assert [tokenizer.vocab[vocab[t]] for t in first] == list(tokenizer.merges[0])


def test_our_files_load_in_hugging_face_tokenizers(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    hf = Tokenizer(models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    for line in CORPUS.splitlines(keepends=True) + ["unseen words: zebra, quixotic 987"]:
        assert hf.encode(line).ids == tokenizer.encode(line)
        assert hf.decode(tokenizer.encode(line)) == line


def test_hugging_face_files_load_in_ours(corpus_path, tmp_path):
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train([str(corpus_path)], trainer)
    vocab_path, merges_path = hf.model.save(str(tmp_path))
    ours = BpeTokenizer.from_files(vocab_path, merges_path)
    assert ours.vocab_size == hf.get_vocab_size()
    for line in CORPUS.splitlines(keepends=True):
        assert ours.encode(line) == hf.encode(line).ids


@pytest.mark.parametrize(
    "vocab_text, merges_text, message",
    [
        ('{"a": 0,\n "b": 1,\n', "#version: 0.2\n", r"vocab.json:3: not valid JSON"),
        ('["a", "b"]', "", r"vocab.json:1: expected a JSON object"),
        ('{\n"a": 0,\n"b": "x"\n}', "", r"vocab.json:3: the id of 'b' is 'x'"),
        ('{\n"a": 0,\n"a b": 1\n}', "", r"vocab.json:3: ' ' in 'a b' is not a GPT-2 byte"),
        ('{\n"a": 0,\n"b": 0\n}', "", r"vocab.json:3: token 'b' or id 0 appears twice"),
        (None, "#version: 0.2\nĠ t\nĠ t h\n", r"merges.txt:3: expected two tokens"),
        (None, "#version: 0.2\nĠ t\nq zz\n", r"merges.txt:3: 'zz' is not in the vocabulary"),
        ('{\n"a": 0,\n"b": -1\n}', "", r"vocab.json:3: the id of 'b' is -1, not an int >= 0"),
        ('{\n"a": 0,\n"b": true\n}', "", r"vocab.json:3: the id of 'b' is True"),
        (None, "#version: 0.2\nĠ t\na b\n", r"merges.txt:3: 'ab' is not in the vocabulary"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, vocab_text, merges_text, message):
    full_vocab = {i: bytes([i]) for i in range(256)} | {256: b" t"}
    BpeTokenizer(full_vocab, [(b" ", b"t")]).save(tmp_path)
    if vocab_text is not None:
        (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BpeTokenizer.load(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [("[1, 2]", "expected a list"), ('["a",\n', "special_tokens.json:2: not valid JSON")],
)
def test_malformed_special_tokens_file(tokenizer, tmp_path, text, message):
    tokenizer.save(tmp_path)
    (tmp_path / "special_tokens.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        BpeTokenizer.load(tmp_path)


def hugging_face_json(tokenizer: BpeTokenizer) -> dict:
    return tokenizer_json(
        tokenizer.vocab, tokenizer.merges, tokenizer.special_ids, **tokenizer.settings()
    )


def hugging_face(tokenizer: BpeTokenizer) -> Tokenizer:
    """The same vocabulary in Hugging Face `tokenizers`, with its own pre-tokenizer and BPE."""
    return Tokenizer.from_str(json.dumps(hugging_face_json(tokenizer)))


def test_bytes_missing_from_the_vocabulary_are_dropped_as_hugging_face_does(tokenizer):
    """SmolLM2's vocabulary lacks 21 bytes; Hugging Face (and llama.cpp) drop them."""
    missing = [ord("x"), 0x04, 0xF1]
    vocab = {i: b for i, b in tokenizer.vocab.items() if not set(missing) & set(b)}
    merges = [(a, b) for a, b in tokenizer.merges if a + b in vocab.values()]
    lacking = BpeTokenizer(vocab, merges, [EOT])
    assert lacking.missing_bytes == bytes(sorted(missing))
    reference = hugging_face(lacking)
    for text in ["x", "fox", "a\x04b", ".\x04.", "q\U00040000r", f"box{EOT}xx lexx", CORPUS]:
        assert lacking.encode(text) == reference.encode(text).ids, text


def test_a_vocabulary_without_most_bytes_is_refused():
    with pytest.raises(ValueError, match="lacks 156 of the 256 single bytes"):
        BpeTokenizer({i: bytes([i]) for i in range(100)}, [])


# ---- pre-tokenizers: GPT-2's, and SmolLM's (every digit alone, then GPT-2's)

SMOLLM_REFERENCE = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ]
)
# Characters where the two patterns differ: digits (also ² and Ⅷ), whitespace before them.
PRETOKEN_ALPHABET = list(" \t\n\r\x0b\x85\u00a0\u3000 0123456789²½Ⅷ abcZé'sdmtlvre.,!-_😀中")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(st.sampled_from(PRETOKEN_ALPHABET), max_size=30),
        # Characters assigned in both Unicode versions (Python's `regex` knows newer ones).
        st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=30),
    )
)
def test_smollm_pattern_equals_hugging_face_digits_then_byte_level(text):
    pieces = [token_to_str(p.encode()) for p in regex.findall(SMOLLM_PATTERN, text)]
    assert pieces == [piece for piece, _ in SMOLLM_REFERENCE.pre_tokenize_str(text)]


def test_pretokenizer_changes_the_ids_where_digits_follow_spaces(tokenizer):
    smollm = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT], pretokenizer="smollm")
    two_spaces = tokenizer.token_id("  ")
    assert smollm.encode("a  1") == [tokenizer.token_id("a"), two_spaces, tokenizer.token_id("1")]
    assert tokenizer.encode("a  1")[1] != two_spaces  # GPT-2: " ", " 1"
    assert smollm.encode("12") == [tokenizer.token_id("1"), tokenizer.token_id("2")]


@pytest.fixture(scope="module")
def smollm_tokenizers(tokenizer):
    """Our vocabulary with SmolLM's pre-tokenizer, here and in Hugging Face `tokenizers`."""
    smollm = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT], pretokenizer="smollm")
    return smollm, hugging_face(smollm)


@settings(max_examples=100, deadline=None)
@given(text_with_specials)
def test_smollm_pretokenizer_encodes_as_hugging_face(smollm_tokenizers, text):
    ours, reference = smollm_tokenizers
    assert ours.encode(text) == reference.encode(text).ids
    assert ours.decode(ours.encode(text)) == text


def test_pretokenizer_survives_save_load_and_tokenizer_json(tokenizer, corpus_path, tmp_path):
    smollm = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT], pretokenizer="smollm")
    smollm.save(tmp_path / "ours")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "tokenizer.json").write_text(json.dumps(hugging_face_json(smollm)))
    text = corpus_path.read_text(encoding="utf-8")
    for loaded in (BpeTokenizer.load(tmp_path / "ours"), BpeTokenizer.load(hf_dir)):
        assert loaded.pretokenizer == "smollm"
        assert loaded.encode(text) == smollm.encode(text)
    tokenizer.save(tmp_path / "ours")  # back to GPT-2's: the name file goes
    assert BpeTokenizer.load(tmp_path / "ours").pretokenizer == "gpt2"


def test_unknown_pretokenizer_is_named(tokenizer):
    with pytest.raises(ValueError, match="unknown pre-tokenizer 'llama3'; known: gpt2, smollm"):
        BpeTokenizer(tokenizer.vocab, tokenizer.merges, pretokenizer="llama3")


def test_token_id_of_ordinary_tokens_equals_tiktoken(tokenizer, tiktoken_encoding):
    texts = [tokenizer.vocab[i].decode("utf-8", "replace") for i in range(257, 400)]
    texts = [t for t in texts if t.encode("utf-8") in tokenizer.ranks]  # whole characters
    assert len(texts) > 50
    for text in ["a", " ", "\n", *texts]:
        assert tokenizer.token_id(text) == tiktoken_encoding.encode_single_token(text)


def test_special_token_with_a_space_survives_streaming(tokenizer, monkeypatch):
    # A special token holding whitespace must not be cut at a piece boundary: the streaming
    # cut keeps a margin of the longest special token's length from the end of the buffer.
    tok = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT, "<| |>"])
    monkeypatch.setattr(bpe_tokenizer, "STREAM_CHARS", 8)
    text = "ab<| |>cd  <| |><| |> x<|endoftext|>y <| |>" * 20
    expected = tok.encode(text)
    assert expected.count(tok.token_id("<| |>")) == 80
    for size in (1, 2, 3, 5, 7):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(tok.encode_iterable(pieces)) == expected, size


def test_empty_special_token_is_refused(tokenizer):
    with pytest.raises(ValueError, match="a special token is empty"):
        BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT, ""])


@pytest.mark.parametrize("largest_id, dtype", [(65_535, np.uint16), (65_536, np.uint32)])
def test_encode_file_dtype_at_the_uint16_boundary(tmp_path, largest_id, dtype):
    vocab = {i: bytes([i]) for i in range(256)} | {largest_id: b"ab"}
    tok = BpeTokenizer(vocab, [(b"a", b"b")])
    (tmp_path / "in.txt").write_text("ab c")
    tok.encode_file(tmp_path / "in.txt", tmp_path / "out.npy", num_workers=1, progress=False)
    ids = np.load(tmp_path / "out.npy")
    assert ids.dtype == dtype and ids.tolist() == [largest_id, ord(" "), ord("c")]


def test_encode_file_missing_or_empty_input(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt: no such file"):
        tokenizer.encode_file(tmp_path / "missing.txt", tmp_path / "out.npy", progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt: the file is empty"):
        tokenizer.encode_file(tmp_path / "empty.txt", tmp_path / "out.npy", progress=False)
    assert not (tmp_path / "out.npy").exists()


def test_written_files_are_readable_by_others(tokenizer, corpus_path, tmp_path):
    # Temporary files are private (0o600); the finished files get the usual 0o644.
    tokenizer.save(tmp_path / "tok")
    tokenizer.encode_file(corpus_path, tmp_path / "ids.npy", num_workers=1, progress=False)
    paths = [*(tmp_path / "tok").iterdir(), tmp_path / "ids.npy"]
    assert len(paths) == 4
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_a_pretoken_that_is_a_token_is_that_token():
    # Merging the bytes of "abcd" stops at [a, bc, d] ("bc" comes first; "abc" and "bcd" are no
    # tokens), but "abcd" is a token: tiktoken takes the pre-token whole, and so must we.
    vocab = {b: bytes([b]) for b in range(256)} | {256: b"bc", 257: b"ab", 258: b"cd", 259: b"abcd"}
    tok = BpeTokenizer(vocab, [])
    enc = tok.to_tiktoken()
    assert enc.encode("abcd xabcd") == [259, ord(" "), ord("x"), ord("a"), 256, ord("d")]
    assert tok.encode("abcd xabcd") == enc.encode("abcd xabcd")


@pytest.mark.parametrize("ignore_merges", [True, False])
def test_ignore_merges_false_replays_the_merges_as_hugging_face(ignore_merges, tmp_path):
    """As above, "abcd" is a token the merges do not reach from its bytes: with ignore_merges it
    is that token; without, [a, bc, d], as in Hugging Face's BPE with the same option (and in
    llama.cpp for GGUF files)."""
    vocab = {b: bytes([b]) for b in range(256)} | {256: b"bc", 257: b"ab", 258: b"cd", 259: b"abcd"}
    merges = [(b"b", b"c"), (b"a", b"b"), (b"c", b"d"), (b"ab", b"cd")]
    tok = BpeTokenizer(vocab, merges, ignore_merges=ignore_merges)
    expected = [259] if ignore_merges else [ord("a"), 256, ord("d")]
    assert tok.encode("abcd") == hugging_face(tok).encode("abcd").ids == expected
    tok.save(tmp_path)
    assert BpeTokenizer.load(tmp_path).encode("abcd") == expected


def test_tiktoken_export_refuses_what_tiktoken_cannot_express(tokenizer):
    replaying = BpeTokenizer(tokenizer.vocab, tokenizer.merges, [EOT], ignore_merges=False)
    with pytest.raises(ValueError, match="tiktoken cannot express this tokenizer"):
        replaying.to_tiktoken()


@pytest.mark.parametrize(
    "text", ['["smollm"]', '{"pretokenizer": "llama3"}', '{"ignore_merges": "no"}', '{"x": 1}']
)
def test_a_bad_settings_file_is_named(tokenizer, tmp_path, text):
    tokenizer.save(tmp_path)
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(ValueError, match="settings.json: expected"):
        BpeTokenizer.load(tmp_path)


def test_encoding_a_file_with_bytes_the_vocabulary_lacks_warns(tokenizer, tmp_path):
    vocab = {i: b for i, b in tokenizer.vocab.items() if b"x" not in b}
    merges = [(a, b) for a, b in tokenizer.merges if a + b in vocab.values()]
    lacking = BpeTokenizer(vocab, merges, [EOT])
    (tmp_path / "in.txt").write_text("a fox")
    with pytest.warns(UserWarning, match="the vocabulary lacks 1 bytes"):
        lacking.encode_file(tmp_path / "in.txt", tmp_path / "out.npy", 1, progress=False)
    assert np.load(tmp_path / "out.npy").tolist() == lacking.encode("a fo")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_writers_remove_temp_files_that_killed_runs_left(tokenizer, corpus_path, tmp_path):
    pid = dead_pid()
    stale = [f".ids.npy.{pid}.k2j4.tmp", f".vocab.json.{pid}.x81q.tmp", f".merges.txt.{pid}.a.tmp"]
    alive = [f".ids.npy.{os.getpid()}.zz9.tmp", f".other.npy.{pid}.k2j4.tmp"]  # running; not ours
    for name in stale + alive:
        (tmp_path / name).write_bytes(b"half a file")
    tokenizer.encode_file(corpus_path, tmp_path / "ids.npy", num_workers=1, progress=False)
    tokenizer.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        alive + ["ids.npy", "merges.txt", "special_tokens.json", "vocab.json"]
    )
