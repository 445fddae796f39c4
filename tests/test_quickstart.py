"""The quickstart (`uv run -m llm`) end to end at a tiny size: every artefact, and learning."""

import math

import numpy as np
import pytest

from llm.__main__ import PROMPTS, main
from llm.bpe_tokenizer import BpeTokenizer
from llm.checkpoint import read_checkpoint


def test_quickstart_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    result = main(["--out", str(out), "--train-mb", "0.3", "--vocab-size", "320",
                   "--max-iters", "40"])  # fmt: skip
    tokenizer = BpeTokenizer.load(out / "tokenizer")
    assert tokenizer.vocab_size == 320 and tokenizer.special_tokens == ["<|endoftext|>"]
    train = np.load(out / "data" / "train.npy", mmap_mode="r")
    text = (out / "data" / "train.txt").read_text()
    assert tokenizer.decode(train[:500]) == text[: len(tokenizer.decode(train[:500]))]
    assert train.dtype == np.uint16 and train.max() < 320
    assert (out / "data" / "valid.npy").is_file()
    assert read_checkpoint(out / "model")["iteration"] == 40
    for png in ("loss.png", "lr.png"):
        assert (out / "model" / "img" / png).stat().st_size > 1000
    # The model learned: far below the loss of a uniform guess over the vocabulary.
    assert result["metrics"]["val_exact"]
    assert result["metrics"]["val_loss"] < math.log(320) - 1.5
    stories = result["stories"]
    assert [s[: len(p)] for s, p in zip(stories, PROMPTS, strict=True)] == PROMPTS
    assert sum(len(s.split()) for s in stories) > 30
    printed = capsys.readouterr().out
    assert "uv run -m llm.generating --checkpoint" in printed


def test_quickstart_never_overwrites_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        main(["--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="did not write"):
        main(["--out", str(tmp_path), "--overwrite"])
    assert (tmp_path / "notes.txt").read_text() == "mine"
