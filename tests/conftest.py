"""Shared test setup: one CPU thread in each test process, and the small model and data the
tests train and check.

Tiny models run fastest, and deterministically, on one thread. The suite uses the machine's
cores by running one worker process per core instead (pytest-xdist, set in pyproject.toml)."""

import dataclasses
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from llm.transformer import ModelConfig

torch.set_num_threads(1)

# A model small enough that a forward/backward pass takes milliseconds.
SMALL = ModelConfig(
    vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=2, d_ff=64
)


def ranks_context() -> multiprocessing.context.BaseContext:
    """How the DDP and FSDP tests start their 2 ranks. Forked from a fresh server process that
    has imported the training code once (forkserver): a rank starts in milliseconds, and never
    inherits this worker's autograd state (after some tests, autograd has started threads here,
    and PyTorch then refuses to run a backward in a forked child). With a GPU: spawned."""
    if torch.cuda.is_available():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["llm.training"])
    return context


def ctrl_c_at_step(monkeypatch, module, step: int):
    """Ctrl-C (SIGINT to this process) while `module`'s training loop asks its learning-rate
    schedule for `step`: the run's own handler then stops it after that step and saves. Returns
    the real schedule, for putting back."""
    schedule = module.cos_lr_scheduler

    def schedule_then_ctrl_c(t, *args):
        if t == step:
            signal.raise_signal(signal.SIGINT)
        return schedule(t, *args)

    monkeypatch.setattr(module, "cos_lr_scheduler", schedule_then_ctrl_c)
    return schedule


@pytest.fixture
def small_config() -> ModelConfig:
    """A fresh copy of SMALL (tests may change it)."""
    return dataclasses.replace(SMALL)


def markov_tokens(n: int, vocab: int = 512, seed: int = 0) -> np.ndarray:
    """A learnable sequence: each token is followed by one of 2 fixed successors."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, (vocab, 2))
    choices = rng.integers(0, 2, n)
    out = np.empty(n, dtype=np.uint16)
    token = 0
    for i in range(n):
        out[i] = token
        token = successors[token, choices[i]]
    return out


def train_config(token_data_dir: Path, run_dir: Path, **overrides):
    """A TrainConfig of a few seconds on CPU: the "tiny" model on token_data_dir's data."""
    from llm.config import config_from_dict
    from llm.training import TrainConfig

    values = {
        "train_data": str(token_data_dir / "train.npy"),
        "valid_data": str(token_data_dir / "valid.npy"),
        "run_dir": str(run_dir),
        "max_iters": 12,
        "warmup_iters": 2,
        "batch_size": 8,
        "log_interval": 2,
        "eval_interval": 4,
        "eval_windows": 8,
        "checkpoint_interval": 100,
        "device": "cpu",
        **overrides,
    }
    return config_from_dict(TrainConfig, values)


def tiny_tokenizer():
    """Bytes, a few merges (one with a leading space), and <|endoftext|>."""
    from llm.bpe_tokenizer import EOT, BpeTokenizer

    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"c", b"a"), (b"ca", b"t")]
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return BpeTokenizer(vocab, merges, [EOT])


@pytest.fixture(scope="session")
def token_data_dir(tmp_path_factory):
    """train.npy (20,000 ids) and valid.npy (4,000 ids) of a learnable sequence, vocab 512."""
    path = tmp_path_factory.mktemp("tokens")
    tokens = markov_tokens(24_000)
    np.save(path / "train.npy", tokens[:20_000])
    np.save(path / "valid.npy", tokens[20_000:])
    return path


# transformers' reference results for tests/test_smollm2.py take 15 s of Python to compute
# (tests/transformers_smollm2.py). When a test that needs them is collected, a process of their
# own starts computing them at once, on the core the rest of the suite leaves free, and the
# `transformers_smollm2` fixture waits for it.
SMOLLM2_REFERENCE: dict = {}


def start_smollm2_reference() -> None:
    out = Path(tempfile.mkdtemp(prefix="smollm2-reference-")) / "reference.pt"
    script = Path(__file__).with_name("transformers_smollm2.py")
    log = open(out.with_name("log.txt"), "w")  # noqa: SIM115 (closed at the session's end)
    process = subprocess.Popen([sys.executable, str(script), str(out)], stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    SMOLLM2_REFERENCE.update(process=process, out=out, log=log)


def pytest_collection_finish(session: pytest.Session) -> None:
    if any("transformers_smollm2" in getattr(item, "fixturenames", ()) for item in session.items):
        start_smollm2_reference()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "process" in SMOLLM2_REFERENCE:
        SMOLLM2_REFERENCE["process"].kill()  # (if it still runs)
        SMOLLM2_REFERENCE["process"].wait()
        SMOLLM2_REFERENCE["log"].close()
        shutil.rmtree(SMOLLM2_REFERENCE["out"].parent, ignore_errors=True)


@pytest.fixture(scope="session")
def transformers_smollm2() -> dict:
    """tests/transformers_smollm2.py's results, computed since collection."""
    if "process" not in SMOLLM2_REFERENCE:
        start_smollm2_reference()
    process, out = SMOLLM2_REFERENCE["process"], SMOLLM2_REFERENCE["out"]
    if process.wait(timeout=300) != 0:
        raise RuntimeError("tests/transformers_smollm2.py failed:\n"
                           + out.with_name("log.txt").read_text()[-3000:])  # fmt: skip
    return torch.load(out, weights_only=True)
