"""inspect_data.py on a tiny story corpus with a tiny BPE tokenizer made here."""

import math
import re
from collections import Counter

import numpy as np
import pytest

import inspect_data
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.bpe_training import train_bpe
from llm.stories import write_corpus


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
    assert f"histogram         {png} (document lengths" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["valid.png"]  # no temp file left


def test_text_mode_encodes_the_same_tokens(data, capsys):
    root, tokenizer, text, ids = data
    out = _run(capsys, "--text", str(root / "text" / "valid.txt"), "--tokenizer",
               str(root / "tok"), "--png", str(root / "text.png"))  # fmt: skip
    assert f"tokens            {len(ids):,} (uint16)" in out  # as encode_file would store them
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
    """The one error line that inspect_data prints (exit status 1) for bad data, after any
    progress bar (which splitlines cuts at its carriage returns)."""
    with pytest.raises(SystemExit) as exit_:
        inspect_data.main(list(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("error:") == 1
    line = err.splitlines()[-1]
    assert line.startswith("error: ")
    return line


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
    assert "1-D array of integer token ids" in message


def test_error_on_too_little_data(data, capsys, tmp_path):
    root, *_ = data
    np.save(tmp_path / "short.npy", np.array([1, 2, 3], dtype=np.uint16))
    message = _error(
        capsys, "--tokens", str(tmp_path / "short.npy"), "--tokenizer", str(root / "tok")
    )
    assert "fewer than context_length + 1" in message


def test_frequent_tokens_and_document_statistics(data, capsys):
    root, tokenizer, text, ids = data
    out = _run(capsys, "--tokens", str(root / "valid.npy"), "--tokenizer", str(root / "tok"),
               "--png", str(root / "stats.png"), "--top", "7")  # fmt: skip
    counts = Counter(ids.tolist())
    table = out.split("most frequent")[1].split("batch diversity")[0].splitlines()[1:]
    rows = [line.split() for line in table]
    assert [int(r[0]) for r in rows] == list(range(1, 8))  # exactly --top rows, ranked
    listed = [(int(r[1]), int(r[2].replace(",", ""))) for r in rows]
    assert [c for _, c in listed] == sorted(counts.values(), reverse=True)[:7]
    assert all(counts[i] == c for i, c in listed)
    assert all(f"{c / len(ids):.2%}" in line for (_, c), line in zip(listed, table, strict=True))
    # Document lengths: the tokens before each end-of-text token (the file ends with "\n" after
    # the last one, which is not a document).
    docs = np.diff([-1, *np.flatnonzero(ids == tokenizer.token_id(EOT))]) - 1
    assert f"median {np.median(docs):.0f}, 90th percentile {np.percentile(docs, 90):.0f}" in out
    assert f"min {docs.min():,}, max {docs.max():,}" in out
    longer = int((docs > 32).sum())
    assert f"{longer:,} ({longer / len(docs):.1%}) are longer than the context length 32" in out


def test_data_without_end_of_text_is_one_document_with_a_warning(data, capsys, tmp_path):
    root, tokenizer, text, _ = data
    ids = np.array(tokenizer.encode(text.replace(EOT, "")), dtype=np.uint16)
    np.save(tmp_path / "plain.npy", ids)
    out = _run(capsys, "--tokens", str(tmp_path / "plain.npy"), "--tokenizer", str(root / "tok"),
               "--png", str(tmp_path / "plain.png"))  # fmt: skip
    assert f"warning           no {EOT} in the data: it is one long document" in out
    assert f"documents         1; tokens per document: mean {len(ids):.1f}" in out


def test_error_on_empty_token_array_or_non_utf8_text(data, capsys, tmp_path):
    root, *_ = data
    np.save(tmp_path / "none.npy", np.zeros(0, dtype=np.uint16))
    message = _error(
        capsys, "--tokens", str(tmp_path / "none.npy"), "--tokenizer", str(root / "tok")
    )
    assert "none.npy holds no tokens" in message
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    message = _error(
        capsys, "--text", str(tmp_path / "latin1.txt"), "--tokenizer", str(root / "tok")
    )
    assert "latin1.txt is not UTF-8 text" in message


def test_error_on_an_empty_or_damaged_token_file(data, capsys, tmp_path):
    """An empty file (np.load raises EOFError) and a truncated .npy both get the one-line error."""
    root, *_ = data
    good = (root / "valid.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(good[:300])
    message = _error(
        capsys, "--tokens", str(tmp_path / "cut.npy"), "--tokenizer", str(root / "tok")
    )
    assert "cut.npy is not a .npy array of token ids" in message
    (tmp_path / "empty.npy").write_bytes(b"")
    message = _error(
        capsys, "--tokens", str(tmp_path / "empty.npy"), "--tokenizer", str(root / "tok")
    )
    assert "empty.npy is not a .npy array of token ids" in message


def test_documents_longer_than_the_context_are_counted_strictly(data):
    _, tokenizer, _, _ = data
    eot, a = tokenizer.token_id(EOT), tokenizer.token_id("a")
    ids = np.array([a] * 32 + [eot] + [a] * 33 + [eot] + [a] * 5 + [eot] + [a] * 40)
    report = inspect_data.build_report(
        ids, tokenizer, "synthetic", context_length=32, batch_size=2, num_batches=3, num_bytes=1
    )
    assert report.doc_lengths.tolist() == [32, 33, 5, 40]  # the tail is a document too
    text = inspect_data.format_report(report)
    assert "2 (50.0%) are longer than the context length 32" in text  # 33 and 40, not 32
