"""Bad input to each command line: exit status 2 (a bad setting) or 1 (bad data, a missing file,
no network), exactly one line on stderr that names the problem, and nothing written or changed.

Each table row is (arguments, exit status, words the error line must hold). `{tmp}` in an
argument is the test's directory, which holds the fixtures made by `workspace` and is the
current directory (where default outputs such as runs/ would go).
"""

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import inspect_data
import llm.__main__ as quickstart
from llm import checkpoint, download, plots
from llm.bpe_tokenizer import BpeTokenizer
from llm.download import RemoteFile


def _writes_into_read_only_directories() -> bool:
    """True for root (or a process with CAP_DAC_OVERRIDE): read-only directories do not stop it,
    so the rows that expect them to cannot fail."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o555)
        try:
            Path(directory, "probe").touch()
        except PermissionError:
            return False
        finally:
            os.chmod(directory, 0o755)
    return True


PRIVILEGED = _writes_into_read_only_directories()
read_only = pytest.mark.skipif(PRIVILEGED, reason="this user can write in read-only directories")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """tmp_path as the current directory, holding: `file` (a plain file), `full/notes.txt` (a
    directory of someone's files), `readonly/` (mode 555), `tok/` (a byte-level tokenizer),
    `ids.npy` (2,000 token ids), `text.txt`, and `run/metrics.jsonl` (a training run)."""
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    BpeTokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"]).save(tmp_path / "tok")
    np.save(tmp_path / "ids.npy", np.arange(2000, dtype=np.uint16) % 95 + 32)  # printable ASCII
    (tmp_path / "text.txt").write_text("Once upon a time.\n<|endoftext|>\n" * 50)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 3.0}\n')
    (tmp_path / "readonly").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    (tmp_path / "readonly").chmod(0o755)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind, size, modification time and mode."""
    return {
        str(p.relative_to(root)): (
            p.is_dir(),
            p.stat().st_size,
            p.stat().st_mtime_ns,
            p.stat().st_mode,
        )  # fmt: skip
        for p in root.rglob("*")
    }


def check_fails(main, argv: list[str], root: Path, code: int, words: list[str], capsys) -> None:
    """main(argv) exits `code` with one stderr line holding `words`, and changes nothing."""
    argv = [a.replace("{tmp}", str(root)) for a in argv]
    before = snapshot(root)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == code, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word.replace("{tmp}", str(root)) in err
    assert snapshot(root) == before


def _no_work(*_, **__):
    raise AssertionError("the quickstart started work despite a bad setting")


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["--vocab-size", "100"], 2, ["--vocab-size must be at least 257", "not 100"]),
        (["--max-iters", "0"], 2, ["--max-iters must be at least 1, not 0"]),
        (["--max-iters", "many"], 2, ["max_iters must be int", "'many'"]),
        (["--train-mb", "0"], 2, ["--train-mb must be at least 0.1, not 0.0"]),
        (["--train-mb", "inf"], 2, ["--train-mb"]),
        (["--epochs", "3"], 2, ["unknown option --epochs; see --help"]),
        (["--device", "tpu"], 2, ["--device: unknown device 'tpu'"]),
        pytest.param(["--device", "cuda"], 2, ["--device", "CUDA is not available"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
        (["--out", "{tmp}/file"], 2, ["--out {tmp}/file is a file, not a directory"]),
        (["--out", "{tmp}/file/run"], 2, ["{tmp}/file is a file"]),
        pytest.param(["--out", "{tmp}/readonly/run"], 2, ["cannot write in {tmp}/readonly"],
                     marks=read_only),
        (["--out", "{tmp}/full"], 2, ["{tmp}/full is not empty", "--overwrite"]),
        (["--out", "{tmp}/full", "--overwrite"], 2, ["did not write; not removing it"]),
    ],
)  # fmt: skip
def test_quickstart_bad_input(workspace, monkeypatch, capsys, argv, code, words):
    monkeypatch.setattr(quickstart, "measure_step_seconds", _no_work)
    monkeypatch.setattr(quickstart, "write_corpus", _no_work)
    check_fails(quickstart.main, argv, workspace, code, words, capsys)


TOK = ["--tokenizer", "{tmp}/tok"]


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (TOK, 2, ["exactly one of --tokens FILE.npy and --text FILE.txt"]),
        (["--tokens", "ids.npy", "--text", "text.txt", *TOK], 2, ["exactly one of"]),
        (["--tokens", "ids.npy"], 2, ["missing required setting: --tokenizer"]),
        (["--tokens", "ids.npy", *TOK, "--top", "0"], 2, ["--top must be a positive integer"]),
        (["--tokens", "ids.npy", *TOK, "--context-length", "-5"], 2, ["--context-length must be"]),
        (["--tokens", "ids.npy", *TOK, "--png", "{tmp}"], 2, ["is a directory"]),
        (["--tokens", "ids.npy", *TOK, "--png", "file/x.png"], 2, ["file/x.png: file is a file"]),
        pytest.param(["--tokens", "ids.npy", *TOK, "--png", "readonly/x.png"], 2,
                     ["--png readonly", "read-only"], marks=read_only),
        (["--tokens", "nope.npy", *TOK], 1, ["token file nope.npy does not exist"]),
        (["--tokens", "tok", *TOK], 1, ["token file tok is not a file"]),
        (["--tokens", "text.txt", *TOK], 1, ["text.txt is not a .npy array of token ids"]),
        (["--text", "nope.txt", *TOK], 1, ["text file nope.txt does not exist"]),
        (["--tokens", "ids.npy", "--tokenizer", "nope"], 1, ["tokenizer directory nope does not"]),
        (["--tokens", "ids.npy", "--tokenizer", "file"], 1, ["file is not a directory"]),
        (["--tokens", "ids.npy", "--tokenizer", "full"], 1, ["could not load a tokenizer"]),
        (["--tokens", "ids.npy", *TOK, "--context-length", "5000"], 1, ["fewer than context"]),
    ],
)  # fmt: skip
def test_inspect_data_bad_input(workspace, capsys, argv, code, words):
    check_fails(inspect_data.main, argv, workspace, code, words, capsys)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "argv, code, words",
    [
        ([], 2, ["the command must be one of download; none was given"]),
        (["upload"], 2, ["'upload' is not one of them"]),
        (["download"], 2, ["missing required setting: --dataset"]),
        (["download", "wiki"], 2, ["unknown dataset 'wiki'; choose one of tinystories, owt"]),
        (["download", "owt", "--split", "test"], 2, ["--split must be one of all, train, valid"]),
        (["download", "owt", "--timeout", "0"], 2, ["--timeout must be a positive number"]),
        (["download", "owt", "--data-dir", "file"], 2, ["--data-dir file is a file"]),
        pytest.param(["download", "owt", "--data-dir", "readonly/d"], 2, ["read-only"],
                     marks=read_only),
        (["download", "owt", "--data-dir", "new/data"], 1,
         ["could not reach 127.0.0.1", "by hand", "-> new/data/owt_train.txt.gz"]),
    ],
)  # fmt: skip
def test_data_download_bad_input(workspace, monkeypatch, capsys, argv, code, words):
    """Offline is a closed local port, never the network: nothing is created, not even the
    data directory."""
    base = f"http://127.0.0.1:{_closed_port()}/x"
    remotes = (RemoteFile("train", f"{base}/owt_train.txt.gz"),
               RemoteFile("valid", f"{base}/owt_valid.txt.gz"))  # fmt: skip
    monkeypatch.setitem(download.DATASETS, "owt", remotes)
    check_fails(download.data_main, argv, workspace, code, words, capsys)


@pytest.mark.parametrize(
    "argv, code, words",
    [
        ([], 2, ["missing required setting: --run_dir"]),
        (["nope"], 1, ["no metrics log at nope/metrics.jsonl", "a training run directory?"]),
        (["full"], 1, ["no metrics log at full/metrics.jsonl"]),
        (["run", "--reference", "nanoGPT"], 2, ["takes NAME=BITS_PER_BYTE", "'nanoGPT'"]),
        (["run", "--reference", "a=1", "b=x"], 2, ["got 'b=x'"]),
        (["run", "--reference", "=1.1"], 2, ["has no name"]),
        (["run", "extra"], 2, ["unexpected argument 'extra'"]),
    ],
)  # fmt: skip
def test_plots_bad_input(workspace, capsys, argv, code, words):
    check_fails(plots.main, argv, workspace, code, words, capsys)


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["consolidate"], 2, ["missing required setting: --source, --out"]),
        (["consolidate", "run", "out.pt"], 1, ["no sharded checkpoint in run"]),
        (["merge", "run", "out.pt"], 2, ["must be one of consolidate", "'merge'"]),
    ],
)  # fmt: skip
def test_checkpoint_consolidate_bad_input(workspace, capsys, argv, code, words):
    check_fails(checkpoint.main, argv, workspace, code, words, capsys)


def test_plots_into_a_blocked_or_read_only_run(workspace, capsys):
    (workspace / "run" / "img").write_text("a file where the plots go")
    check_fails(plots.main, ["run"], workspace, 2, ["run/img is a file"], capsys)
    if not PRIVILEGED:
        (workspace / "run" / "img").unlink()
        (workspace / "run").chmod(0o555)
        check_fails(plots.main, ["run"], workspace, 2, ["read-only"], capsys)
        (workspace / "run").chmod(0o755)


@pytest.mark.parametrize(
    "main, argv, options",
    [
        (quickstart.main, [], ["--out", "--overwrite", "--train_mb", "--vocab_size", "--device"]),
        (inspect_data.main, [], ["--tokens", "--text", "--tokenizer", "--png", "--top"]),
        (download.data_main, ["download"], ["--dataset", "--split", "--data_dir", "--timeout"]),
        (download.main, [], ["--dataset", "--split", "--data_dir", "--timeout"]),
        (plots.main, [], ["--run_dir", "--reference"]),
        (checkpoint.main, ["consolidate"], ["--source", "--out"]),
    ],
)  # fmt: skip
def test_help_lists_every_option_and_exits_0(main, argv, options, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    printed = capsys.readouterr()
    assert exit_.value.code == 0 and printed.err == ""
    for option in options:
        assert f"  {option} " in printed.out
