"""inspect_data.py on a tiny story corpus with a tiny BPE tokenizer made here."""

import math
import re
from collections import Counter

import numpy as np
import pytest

import inspect_data
from llm.bpe_tokenizer import BpeTokenizer
from llm.bpe_training import train_bpe
from llm.stories import write_corpus

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    train, valid = write_corpus(root / "text", 60_000, 8_000, seed=1, progress=False)
    vocab, merges = train_bpe(train, 320, [EOT], num_workers=1, progress=False)
    BpeTokenizer(vocab, merges, [EOT]).save(root / "tok")
    tokenizer = BpeTokenizer.load(root / "tok")
    text = valid.read_text()
    ids = np.array(tokenizer.encode(text), dtype=np.uint16)
    np.save(root / "valid.npy", ids)
    return root, tokenizer, text, ids


def _run(capsys, *argv: str) -> str:
    inspect_data.main([*argv, "--context-length", "32", "--batch-size", "4", "--num-batches", "20"])
    return capsys.readouterr().out


def test_token_report_matches_an_independent_count(data, capsys):
    root, tokenizer, text, ids = data
    png = root / "plots" / "valid.png"
    out = _run(capsys, "--tokens", str(root / "valid.npy"), "--tokenizer", str(root / "tok"),
               "--png", str(png), "--top", "5")  # fmt: skip
    eot_id = tokenizer.encode(EOT)[0]
    counts = Counter(ids.tolist())
    assert f"tokens            {len(ids):,} (uint16)" in out
    assert f"{EOT} (id {eot_id}): {text.count(EOT):,} times" in out
    assert f"{len(counts):,} of {tokenizer.vocab_size:,} ids used" in out
    assert "ids out of range  0 (0.000%)" in out
    entropy = -sum(c / len(ids) * math.log(c / len(ids)) for c in counts.values())
    assert f"unigram entropy   {entropy:.3f} nats per token" in out
    assert re.search(r"the first [\d,]+ tokens decode and re-encode identically", out)
    # the most frequent token, decoded, with its count
    (top_id, top_count), *_ = counts.most_common(1)
    assert f"{top_id:>6}  {top_count:>12,}" in out and repr(tokenizer.decode([top_id])) in out
    # documents: split the id list by hand
    docs, current = [], 0
    for i in ids.tolist():
        if i == eot_id:
            docs.append(current)
            current = 0
        else:
            current += 1
    assert len(docs) == text.count(EOT) and current == 1  # the final "\n" is not a document
    assert f"documents         {len(docs):,}; tokens per document: mean {np.mean(docs):.1f}" in out
    assert f"max {max(docs):,}" in out
    assert "batch diversity   20 random batches of 4 x 32 tokens" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob("*.tmp"))


def test_text_mode_encodes_the_same_tokens(data, capsys):
    root, tokenizer, text, ids = data
    out = _run(capsys, "--text", str(root / "text" / "valid.txt"), "--tokenizer",
               str(root / "tok"), "--png", str(root / "text.png"))  # fmt: skip
    assert f"tokens            {len(ids):,} (int64)" in out
    assert f"{len(text.encode()):,} bytes, {len(text.encode()) / len(ids):.2f} bytes per" in out
    assert (root / "text.png").exists()


def test_document_lengths_and_trailing_document():
    ids = np.array([5, 5, 0, 7, 0, 0, 3, 3, 3])  # separator 0: docs of 2, 1, 0 and a tail of 3
    assert inspect_data.document_lengths(ids, 0).tolist() == [2, 1, 0, 3]
    assert inspect_data.document_lengths(ids[:6], 0).tolist() == [2, 1, 0]
    assert inspect_data.document_lengths(ids, None).tolist() == [9]


def test_batch_diversity_finds_repeated_windows():
    unique = np.random.default_rng(0).permutation(10_000)
    distinct, windows, repeated = inspect_data.batch_diversity(unique, 8, 16, 10, seed=0)
    assert repeated == 0 and (distinct == 8 * 16).sum() > 5  # windows rarely overlap
    periodic = np.tile(np.arange(50), 200)  # the same 50 tokens again and again
    distinct, windows, repeated = inspect_data.batch_diversity(periodic, 8, 16, 10, seed=0)
    assert (distinct <= 50).all() and repeated > windows // 2


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        inspect_data.main(list(argv))
    return str(exit_.value.code)


def test_errors_on_missing_files(data, capsys, tmp_path):
    root, *_ = data
    message = _error(
        capsys, "--tokens", str(tmp_path / "nope.npy"), "--tokenizer", str(root / "tok")
    )
    assert "nope.npy does not exist" in message
    message = _error(capsys, "--text", str(tmp_path / "nope.txt"), "--tokenizer", str(root / "tok"))
    assert "nope.txt does not exist" in message
    message = _error(capsys, "--tokens", str(root / "valid.npy"), "--tokenizer", str(tmp_path))
    assert "could not load a tokenizer" in message
    message = _error(
        capsys, "--tokens", str(root / "valid.npy"), "--tokenizer", str(tmp_path / "x")
    )
    assert "tokenizer directory" in message and "does not exist" in message


def test_error_on_ids_out_of_range(data, capsys, tmp_path):
    root, tokenizer, _, ids = data
    bad = ids.astype(np.int32)
    bad[[3, 10]] = tokenizer.vocab_size + 7
    np.save(tmp_path / "bad.npy", bad)
    message = _error(
        capsys, "--tokens", str(tmp_path / "bad.npy"), "--tokenizer", str(root / "tok")
    )
    assert f"2 of {len(ids):,} ids" in message and "outside the tokenizer's vocabulary" in message
    assert f"largest {tokenizer.vocab_size + 7}" in message


def test_error_on_data_from_another_tokenizer(data, capsys, tmp_path):
    root, tokenizer, _, ids = data
    other = (ids.astype(np.int64) * 7 + 3) % tokenizer.vocab_size  # in range, but other ids
    np.save(tmp_path / "other.npy", other)
    message = _error(
        capsys, "--tokens", str(tmp_path / "other.npy"), "--tokenizer", str(root / "tok")
    )
    assert "does not reproduce this data" in message


def test_error_on_a_non_integer_array(data, capsys, tmp_path):
    root, *_ = data
    np.save(tmp_path / "floats.npy", np.zeros(100, dtype=np.float32))
    message = _error(
        capsys, "--tokens", str(tmp_path / "floats.npy"), "--tokenizer", str(root / "tok")
    )
    assert "1-D integer array" in message


def test_error_on_too_little_data(data, capsys, tmp_path):
    root, *_ = data
    np.save(tmp_path / "short.npy", np.array([1, 2, 3], dtype=np.uint16))
    with pytest.raises(SystemExit) as exit_:
        inspect_data.main(
            ["--tokens", str(tmp_path / "short.npy"), "--tokenizer", str(root / "tok")]
        )
    assert "fewer than context_length + 1" in str(exit_.value.code)
