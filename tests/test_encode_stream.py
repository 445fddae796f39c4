"""Encoding a file to .npy: streamed in bounded memory, resumed after an interruption, and the
tiktoken backend (ids equal to ours, or a one-line refusal)."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from conftest import tiny_tokenizer

from llm import bpe_tokenizer
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.bpe_training import train_bpe
from llm.stories import SEPARATOR, generate_stories
from llm.tokenizer_command import main

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "far", "from", "home"]


def documents_file(path: Path, size: int, tokenizer: BpeTokenizer, seed: int = 0) -> np.ndarray:
    """Write `size` bytes of 64 documents, each ending in <|endoftext|>, in a random order; return
    the ids of the file written another way: the concatenated ids of each document, encoded
    alone (a special token cuts the text, so nothing crosses it)."""
    rng = random.Random(seed)
    docs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 300))) + EOT + "\n"
        for _ in range(64)
    ]
    ids = [tokenizer.encode(doc) for doc in docs]
    order = []
    while sum(len(docs[i]) for i in order) < size:
        order.append(rng.randrange(64))
    path.write_text("".join(docs[i] for i in order), encoding="utf-8")
    return np.concatenate([ids[i] for i in order]).astype(np.uint16)


MEMORY_CHECK = """
import sys
from pathlib import Path
from llm.bpe_tokenizer import BpeTokenizer, EOT

def peak_rss():  # bytes: this process's high-water mark (VmHWM; ru_maxrss counts the parent's)
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return int(status.split()[0]) * 1024

vocab = {i: bytes([i]) for i in range(256)}
merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"c", b"a"), (b"ca", b"t")]
for a, b in merges:
    vocab[len(vocab)] = a + b
tokenizer = BpeTokenizer(vocab, merges, [EOT])
tokenizer.encode("warm up the cat")  # (the first encode compiles and caches)
before = peak_rss()
tokenizer.encode_file(sys.argv[1], sys.argv[2], 1, chunk_bytes=1 << 16, progress=False)
print(peak_rss() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_streaming_encode_stays_in_bounded_memory_and_equals_one_piece(tmp_path):
    """The peak memory of an encode grows by less than the size of its file (3 MB: about 1.5 MB
    streamed whatever the size; in one piece, 30 MB), and the output equals the text encoded
    another way."""
    expected = documents_file(tmp_path / "big.txt", 3_000_000, tiny_tokenizer())
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHECK, tmp_path / "big.txt", tmp_path / "big.npy"],
        capture_output=True, text=True, check=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    growth = int(result.stdout)
    assert growth < (tmp_path / "big.txt").stat().st_size, f"peak memory grew {growth:,} bytes"
    assert np.array_equal(np.load(tmp_path / "big.npy"), expected)


def interrupt_at_chunk(monkeypatch, k: int) -> list:
    """Make the k-th chunk an encode reaches raise KeyboardInterrupt; returns the jobs seen."""
    encode_job, calls = bpe_tokenizer._encode_job, []

    def interrupted(job):
        calls.append(job)
        if len(calls) == k:
            raise KeyboardInterrupt
        return encode_job(job)

    monkeypatch.setattr(bpe_tokenizer, "_encode_job", interrupted)
    return calls


def test_an_interrupted_encode_continues_where_it_stopped(tmp_path, monkeypatch):
    tokenizer = tiny_tokenizer()
    text, out = tmp_path / "in.txt", tmp_path / "out.npy"
    expected = documents_file(text, 200_000, tokenizer)
    calls = interrupt_at_chunk(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        tokenizer.encode_file(text, out, 1, chunk_bytes=10_000, progress=False)
    monkeypatch.undo()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy.partial",
                                                          "out.npy.progress"]  # fmt: skip
    done = int((tmp_path / "out.npy.progress").read_text().splitlines()[-1].split()[0])
    assert done == calls[4][1] > 0  # 4 chunks are done; the 5th starts there
    # A kill in the middle of a write: ids past the last progress line, and half a line.
    with (tmp_path / "out.npy.partial").open("ab") as f:
        f.write(b"\x01\x02\x03")
    with (tmp_path / "out.npy.progress").open("a") as f:
        f.write("199999 9")
    calls = interrupt_at_chunk(monkeypatch, 3)  # interrupted again, after 2 more chunks
    with pytest.raises(KeyboardInterrupt):
        tokenizer.encode_file(text, out, 1, chunk_bytes=10_000, progress=False)
    assert calls[0][1] == done  # it went on from there, not from 0
    calls = interrupt_at_chunk(monkeypatch, 0)  # never: only counts the chunks encoded
    n = tokenizer.encode_file(text, out, 1, chunk_bytes=10_000, progress=False)
    assert calls[0][1] > done
    assert n == len(expected) and np.array_equal(np.load(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]


def test_progress_of_another_input_or_tokenizer_is_not_reused(tmp_path, monkeypatch):
    tokenizer, text, out = tiny_tokenizer(), tmp_path / "in.txt", tmp_path / "out.npy"
    documents_file(text, 100_000, tokenizer)
    for change in ["input", "tokenizer"]:
        interrupt_at_chunk(monkeypatch, 5)
        with pytest.raises(KeyboardInterrupt):
            tokenizer.encode_file(text, out, 1, chunk_bytes=10_000, progress=False)
        monkeypatch.undo()
        if change == "input":
            expected = documents_file(text, 100_000, tokenizer, seed=1)
        else:
            tokenizer = BpeTokenizer(tokenizer.vocab, tokenizer.merges[:2], [EOT])
            expected = np.array(tokenizer.encode(text.read_text()), dtype=np.uint16)
        tokenizer.encode_file(text, out, 1, chunk_bytes=10_000, progress=False)
        assert np.array_equal(np.load(out), expected), change
        out.unlink()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 400-token tokenizer trained on generated stories, saved; and held-out stories."""
    path = tmp_path_factory.mktemp("tiktoken")
    stories = list(generate_stories(num_stories=120, seed=0))
    (path / "train.txt").write_text(SEPARATOR.join(stories[:80]) + SEPARATOR, encoding="utf-8")
    (path / "held_out.txt").write_text(
        SEPARATOR.join(stories[80:]) + " 1234567 ünïcödé 😀 \t\n x  ", encoding="utf-8"
    )
    vocab, merges = train_bpe(path / "train.txt", 400, [EOT], num_workers=1, progress=False)
    BpeTokenizer(vocab, merges, [EOT]).save(path / "tok")
    return path


def test_tiktoken_backend_writes_our_ids_on_held_out_text(trained, tmp_path, capsys):
    ours = BpeTokenizer.load(trained / "tok")
    text = (trained / "held_out.txt").read_text(encoding="utf-8")
    argv = ["encode", "--tokenizer", str(trained / "tok"), "--input", str(trained / "held_out.txt")]
    main([*argv, "--output", str(tmp_path / "tt.npy"), "--backend", "tiktoken", "--workers", "1"])
    ids = np.load(tmp_path / "tt.npy")
    assert ids.tolist() == ours.encode(text) and ours.token_id(EOT) in ids
    encoder = bpe_tokenizer._worker["encode"]  # (one worker: it ran in this process)
    assert isinstance(encoder.func.__self__, tiktoken.Encoding)  # tiktoken wrote them


def test_tiktoken_backend_refuses_what_tiktoken_cannot_express(trained, tmp_path, capsys):
    replaying = BpeTokenizer.load(trained / "tok")
    replaying.ignore_merges = False
    replaying.save(tmp_path / "tok")
    argv = ["encode", "--tokenizer", str(tmp_path / "tok"), "--input", str(trained / "train.txt")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output", str(tmp_path / "x.npy"), "--backend", "tiktoken"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 1 and stderr.count("\n") == 1
    assert (
        stderr.startswith("error: tiktoken cannot express this tokenizer")
        and "--backend ours" in stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # nothing written


def test_tiktoken_backend_checks_its_ids_before_encoding(trained, tmp_path, monkeypatch):
    """Were tiktoken's ids ever not ours (here: a wrong regex), the check at the start says so."""
    tokenizer = BpeTokenizer.load(trained / "tok")
    wrong = tiktoken.Encoding("wrong", pat_str=r"\S+|\s+", mergeable_ranks=tokenizer.ranks,
                              special_tokens=tokenizer.special_ids)  # fmt: skip
    monkeypatch.setattr(BpeTokenizer, "to_tiktoken", lambda self: wrong)
    with pytest.raises(ValueError, match="tiktoken's ids differ from ours"):
        tokenizer.encode_file(trained / "train.txt", tmp_path / "x.npy", 1, backend="tiktoken")
