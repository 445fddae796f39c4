"""The tokenizer's command line: the README commands, --help, one-line errors that leave every
file as it was, no input ever overwritten, and clean stops (stale temp files, SIGTERM)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.tokenizer_command import main

STORY = "Once upon a time, a little cat named Tom found a big red ball. 'It's mine!' he said.\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(f"{STORY * (1 + i % 3)}{EOT}\n" for i in range(30)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tok")
    main(["train", "--input", str(corpus), "--vocab-size", "300", "--out", str(directory)])
    return directory


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of main(argv) in this process."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_readme_train_and_encode(corpus, tmp_path, monkeypatch, capsys):
    tok = tmp_path / "tok"
    argv = ["train", "--input", str(corpus), "--vocab-size", "300", "--out", str(tok)]
    code, out, _ = run(argv + ["--workers", "1"], capsys)
    assert code == 0
    assert out.endswith(f"encode text with: uv run -m llm.bpe_tokenizer encode --tokenizer {tok} "
                        "--input FILE --output FILE.npy\n")  # fmt: skip
    argv = ["encode", "--tokenizer", str(tok), "--input", str(corpus), "--output", "c.npy"]
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(argv, capsys)
    next_step = f"uv run -m llm.training --train_data c.npy --tokenizer_dir {tok}"
    tokens = len(np.load("c.npy"))
    assert (code, out) == (0, f"wrote c.npy: {tokens:,} tokens\ntrain on it with: {next_step}\n")
    tokenizer = BpeTokenizer.load(tok)
    assert tokenizer.vocab_size == 300 and tokenizer.special_tokens == [EOT]
    assert np.load("c.npy").tolist() == tokenizer.encode(corpus.read_text(encoding="utf-8"))


def test_default_pipeline_on_tinystories(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    text = corpus.read_text(encoding="utf-8")
    (tmp_path / "data/TinyStoriesV2-GPT4-train.txt").write_text(text, encoding="utf-8")
    (tmp_path / "data/TinyStoriesV2-GPT4-valid.txt").write_text(text[:2000], encoding="utf-8")
    code, stdout, _ = run(["--vocab-size", "300", "--workers", "1"], capsys)
    assert code == 0 and stdout.endswith(
        "; train on them with: uv run -m llm.training configs/cpu-small.toml\n"
    )
    out = tmp_path / "data/tinystories-bpe-10k"
    tok = BpeTokenizer.load(out)
    assert tok.vocab_size == 300
    for split in ("train", "valid"):
        text = (tmp_path / f"data/TinyStoriesV2-GPT4-{split}.txt").read_text(encoding="utf-8")
        assert np.load(out / f"{split}.npy").tolist() == tok.encode(text)


def test_readme_pipeline_with_input_valid_and_out(corpus, tmp_path, capsys):
    valid = tmp_path / "valid.txt"
    valid.write_text(STORY, encoding="utf-8")
    out = tmp_path / "tok-10k"
    argv = ["--input", str(corpus), "--valid", str(valid), "--out", str(out), "--workers", "2"]
    code, stdout, stderr = run([*argv, "--vocab-size", "300"], capsys)
    assert code == 0 and stderr == ""
    assert sorted(p.name for p in out.iterdir()) == [
        "merges.txt",
        "special_tokens.json",
        "train.npy",
        "valid.npy",
        "vocab.json",
    ]
    assert np.load(out / "valid.npy").tolist() == BpeTokenizer.load(out).encode(STORY)


def test_help_lists_every_option_with_its_default(capsys):
    for argv, options in [
        (["train", "--help"], ["input", "vocab_size", "out", "special_tokens", "workers"]),
        (["encode", "--help"], ["tokenizer", "input", "output", "workers", "backend"]),
        (["--help"], ["input", "valid", "out", "vocab_size", "special_tokens", "workers"]),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        listed = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
        assert listed == [f"--{name}" for name in options], argv
    assert "default: 'data/TinyStoriesV2-GPT4-train.txt'" in text and "default: 10000" in text
    assert "train " in text and "encode " in text  # the commands, listed by the bare --help


def test_too_small_a_corpus_is_one_warning_line(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("abab")
    argv = ["train", "--input", str(tmp_path / "c.txt"), "--vocab-size", "1000"]
    code, _, stderr = run([*argv, "--out", str(tmp_path / "tok"), "--workers", "1"], capsys)
    assert code == 0
    assert stderr == (
        "warning: only 2 merges possible on this corpus: the vocabulary has 259 tokens,"
        " not the 1,000 asked for\n"
    )


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` with its bytes (None for a directory or a link)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        if p.is_file() and not p.is_symlink()
        else None
        for p in sorted(directory.rglob("*"))
    }


BAD_INPUTS = [
    # (argv with {dir} for the test directory, exit code, the message on stderr)
    (["train", "--input", "{dir}/missing.txt", "--vocab-size", "300", "--out", "{dir}/t"], 1,
     "{dir}/missing.txt: no such file"),
    (["train", "--input", "{dir}/tok", "--vocab-size", "300", "--out", "{dir}/t"], 1,
     "{dir}/tok: is a directory, not a text file"),
    (["train", "--input", "{dir}/empty.txt", "--vocab-size", "300", "--out", "{dir}/t"], 1,
     "{dir}/empty.txt: the corpus is empty"),
    (["train", "--input", "{dir}/latin1.txt", "--vocab-size", "300", "--out", "{dir}/t"], 1,
     "{dir}/latin1.txt: not valid UTF-8 at byte 3"),
    (["train", "--input", "{dir}/c.txt", "--vocab-size", "256", "--out", "{dir}/t"], 2,
     "vocab size 256 is smaller than 256 bytes + 1 special tokens"),
    (["train", "--input", "{dir}/c.txt", "--vocab-size", "10k", "--out", "{dir}/t"], 2,
     "vocab_size must be int, got '10k'"),
    (["train", "--input", "{dir}/c.txt", "--vocab", "300", "--out", "{dir}/t"], 2,
     "unknown option --vocab; did you mean --vocab_size?"),
    (["train", "--input", "{dir}/c.txt", "--out", "{dir}/t"], 2,
     "missing required setting: --vocab_size"),
    (["train", "--input", "{dir}/c.txt", "--vocab-size", "300", "--out", "{dir}/c.txt"], 1,
     "{dir}/c.txt: is a file, not a directory"),
    (["train", "--input", "{dir}/tok/vocab.json", "--vocab-size", "300", "--out", "{dir}/tok"],
     2, "the output {dir}/tok/vocab.json is the input {dir}/tok/vocab.json: not overwriting it"),
    (["train", "--input", "{dir}/c.txt", "--vocab-size", "300", "--out", "{dir}/t",
      "--special-tokens", ""], 2, "a special token is empty"),
    (["train", "--input", "{dir}/c.txt", "--vocab-size", "300", "--out", "{dir}/t",
      "--workers", "-1"], 2, "workers must be 0 (one per CPU) or more"),
    (["trian", "--input", "{dir}/c.txt"], 2, "unexpected argument 'trian'"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/c.txt", "--output", "{dir}/c.txt"],
     2, "the output {dir}/c.txt is the input {dir}/c.txt: not overwriting it"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/c.txt", "--output", "{dir}/link"],
     2, "the output {dir}/link is the input {dir}/c.txt: not overwriting it"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/hard", "--output", "{dir}/c.txt"],
     2, "the output {dir}/c.txt is the input {dir}/hard: not overwriting it"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/c.txt", "--output",
      "{dir}/tok/merges.txt"], 2,
     "the output {dir}/tok/merges.txt is the input {dir}/tok/merges.txt: not overwriting it"),
    (["encode", "--tokenizer", "{dir}", "--input", "{dir}/c.txt", "--output", "{dir}/c.npy"], 1,
     "{dir}: no vocab.json (nor tokenizer.json); is this a tokenizer directory?"),
    (["encode", "--tokenizer", "{dir}/c.txt", "--input", "{dir}/c.txt", "--output",
      "{dir}/c.npy"], 1,
     "{dir}/c.txt: no vocab.json (nor tokenizer.json); is this a tokenizer directory?"),
    (["encode", "--tokenizer", "{dir}/bad-tok", "--input", "{dir}/c.txt", "--output",
      "{dir}/c.npy"], 1, "{dir}/bad-tok/vocab.json:1: expected a JSON object"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/latin1.txt", "--output",
      "{dir}/c.npy"], 1, "{dir}/latin1.txt: not valid UTF-8 at byte 3"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/missing.txt", "--output",
      "{dir}/c.npy"], 1, "{dir}/missing.txt: no such file"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/c.txt", "--output", "{dir}/tok"],
     1, "{dir}/tok: is a directory, not a .npy file"),
    (["encode", "--tokenizer", "{dir}/tok", "--input", "{dir}/c.txt"], 2,
     "missing required setting: --output"),
    (["--input", "{dir}/c.txt", "--out", "{dir}", "--vocab-size", "300"], 2,
     "the output {dir}/train.npy is the input {dir}/c.txt: not overwriting it"),
    (["--input", "{dir}/c.txt", "--valid", "{dir}/missing.txt", "--out", "{dir}/t"], 1,
     "{dir}/missing.txt not found (the validation split; or pass --valid FILE)"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, message", BAD_INPUTS)
def test_bad_input_is_one_line_and_changes_nothing(
    tokenizer_dir, tmp_path, capsys, argv, code, message
):
    (tmp_path / "c.txt").write_text(STORY)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("abcé".encode("latin-1"))
    (tmp_path / "link").symlink_to(tmp_path / "c.txt")
    os.link(tmp_path / "c.txt", tmp_path / "hard")
    (tmp_path / "train.npy").symlink_to(tmp_path / "c.txt")  # the pipeline's output
    (tmp_path / "tok").mkdir()
    for name in ("vocab.json", "merges.txt", "special_tokens.json"):
        (tmp_path / "tok" / name).write_bytes((tokenizer_dir / name).read_bytes())
    (tmp_path / "bad-tok").mkdir()
    (tmp_path / "bad-tok/vocab.json").write_text("[1, 2]")
    (tmp_path / "bad-tok/merges.txt").write_text("")
    before = snapshot(tmp_path)
    argv = [word.format(dir=tmp_path) for word in argv]
    exit_code, _, stderr = run(argv, capsys)
    assert exit_code == code
    assert stderr.startswith(f"error: {message.format(dir=tmp_path)}") and stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_missing_tinystories_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run([], capsys)
    assert code == 1
    assert stderr == (
        "error: data/TinyStoriesV2-GPT4-train.txt not found: run `uv run -m llm.data download"
        " tinystories`, or pass --input FILE\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data/TinyStoriesV2-GPT4-train.txt").write_text(STORY)
    code, _, stderr = run(["--vocab-size", "300"], capsys)
    assert code == 1 and "TinyStoriesV2-GPT4-valid.txt not found" in stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["TinyStoriesV2-GPT4-train.txt"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_encode_removes_the_temp_file_of_a_killed_run(tokenizer_dir, corpus, tmp_path, capsys):
    stale = tmp_path / f".c.npy.{dead_pid()}.x7f2.tmp"
    stale.write_bytes(b"\x93NUMPY half of a file")
    argv = ["--tokenizer", str(tokenizer_dir), "--input", str(corpus), "--output"]
    assert run(["encode", *argv, str(tmp_path / "c.npy")], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_stops_an_encode_cleanly(tokenizer_dir, tmp_path):
    # 4 MB of words never seen: seconds of work for 2 processes, stopped as soon as it starts.
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
    (tmp_path / "big.txt").write_bytes(rng.choice(letters, 4_000_000).tobytes())
    argv = ["encode", "--tokenizer", str(tokenizer_dir), "--input", "big.txt", "--output", "b.npy"]
    child = subprocess.Popen(
        [sys.executable, "-m", "llm.bpe_tokenizer", *argv, "--workers", "2"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers too
    )
    deadline = time.monotonic() + 60
    # Wait for the workers: the encode is under way. (A signal that came sooner, as the
    # tokenizer loads, could land in a garbage collector's __del__, where Python drops it.)
    while len(running_in_group(child.pid)) < 2:
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    stderr = child.communicate(timeout=60)[1]
    assert child.returncode == 1, stderr
    assert stderr.startswith("error: terminated (SIGTERM); unfinished files were removed, but")
    # What it finished stays, for the same command to continue (tests/test_encode_stream.py).
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.npy.partial",
        "b.npy.progress",
        "big.txt",
    ]
    assert running_in_group(child.pid) == []  # no worker is left behind


def running_in_group(pgid: int) -> list[str]:
    """The processes of a process group that still run (zombies do not): "pid state"."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:  # it ended meanwhile
            continue
        if int(group) == pgid and state != "Z":
            running.append(f"{stat.parent.name} {state}")
    return running
