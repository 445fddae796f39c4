"""llm/loading.py: every format a user may name loads the same model, through one table; a
path that holds no model is a one-line error naming it and what was expected; --init_from
trains from a GGUF file."""

import re

import numpy as np
import pytest
import torch
from conftest import SMALL, markov_tokens
from test_gguf_model import vocabulary, write_tiny_llama_gguf

from llm import generating, loading, tokenizer_command, training
from llm.checkpoint import read_checkpoint, save_checkpoint
from llm.export import export
from llm.gguf_format import GgufFile, pretrained_path, tokenizer_from_gguf
from llm.loading import LoadError, load, load_tokenizer, read_config, resolve
from llm.run_dir import read_metrics
from llm.transformer import ModelConfig, Transformer

BYTES = ModelConfig(**{**vars(SMALL), "vocab_size": 256})  # raw-byte ids need no tokenizer


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One model saved as a run, a checkpoint file and a Hugging Face directory, and a tiny
    GGUF file; with the model itself, for reference."""
    tmp = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    model = Transformer(BYTES).eval()
    (tmp / "run").mkdir()
    save_checkpoint(model, None, 3, tmp / "run" / "checkpoint.pt")
    save_checkpoint(model, None, 3, tmp / "model.pt")
    export(tmp / "run", tmp / "hf")
    write_tiny_llama_gguf(tmp / "tiny.gguf", quant="Q8_0")
    return tmp, model


@pytest.mark.parametrize("name, format", [("run", "run"), ("model.pt", "checkpoint"),
                                          ("hf", "hf"), ("tiny.gguf", "gguf")])  # fmt: skip
def test_each_format_is_recognised_and_loads_the_same_weights(sources, name, format):
    tmp, model = sources
    loaded = load(tmp / name)
    assert loaded.format == format and loaded.path == tmp / name
    assert not loaded.model.training
    if format == "gguf":  # its own weights and tokenizer: the GGUF tests compare them
        assert loaded.tokenizer.vocab_size == loaded.model.config.vocab_size == len(vocabulary()[0])
        return
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), model(ids), atol=1e-5, rtol=0)
    assert loaded.tokenizer.vocab == {i: bytes([i]) for i in range(256)}


def test_dtype_is_applied_to_every_format(sources):
    tmp, _ = sources
    for name in ("run", "hf", "tiny.gguf"):
        model = load(tmp / name, dtype=torch.bfloat16).model
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}, name


def test_a_pretrained_name_is_its_installed_file():
    path, entry = resolve("smollm2-135m")
    assert path == pretrained_path("smollm2-135m") and entry.name == "gguf"


def test_read_config_names_the_tokenizer_without_loading_weights(sources, tmp_path):
    tmp, model = sources
    assert read_config(tmp / "tiny.gguf")[1] == str(tmp / "tiny.gguf")  # its own tokenizer
    assert read_config(tmp / "hf") == (model.config, str(tmp / "hf"))
    # A tokenizer_dir recorded relative to the run is found there.
    (tmp_path / "run" / "tok").mkdir(parents=True)
    save_checkpoint(model, None, 0, tmp_path / "run" / "checkpoint.pt", tokenizer_dir="tok")
    assert read_config(tmp_path / "run")[1] == str(tmp_path / "run" / "tok")


def test_load_tokenizer_takes_a_gguf_file_or_nothing(sources):
    tmp, _ = sources
    ours = load_tokenizer(tmp / "tiny.gguf")
    reference = tokenizer_from_gguf(GgufFile(tmp / "tiny.gguf"))
    assert ours.vocab == reference.vocab and ours.special_tokens == reference.special_tokens
    assert load_tokenizer("").vocab == {i: bytes([i]) for i in range(256)}


@pytest.mark.parametrize("what", ["missing", "npy", "text", "empty dir"])
def test_a_path_without_a_model_is_one_error_naming_it(tmp_path, what):
    path = tmp_path / "x"
    if what == "npy":
        np.save(path.with_suffix(".npy"), np.arange(5))
        path = path.with_suffix(".npy")
    elif what == "text":
        path.write_text("hello")
    elif what == "empty dir":
        path.mkdir()
    reason = {
        "missing": "no such file or directory",
        "npy": "a NumPy array",
        "text": "not a model file",
        "empty dir": "a directory that holds no model",
    }
    reason = reason[what]
    with pytest.raises(LoadError) as error:
        load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message
    for kind in ("a GGUF file", "a run directory", "a Hugging Face", "smollm2-135m"):
        assert kind in message


def test_the_generating_command_says_an_npy_file_is_not_a_checkpoint(tmp_path, capsys):
    np.save(tmp_path / "mine.npy", np.arange(5))
    with pytest.raises(SystemExit) as exit_info:
        generating.main(["--checkpoint", str(tmp_path / "mine.npy"), "--prompt", "x"])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"error: .*mine\.npy: a NumPy array .*not a model; expected", line)
    assert "pickle" not in line


def test_a_new_format_is_one_entry(sources, monkeypatch):
    """The table is the only place formats are known: an entry added to it is used."""
    tmp, model = sources
    (tmp / "custom").mkdir(exist_ok=True)
    entry = loading.Format(
        "custom", "a custom directory", lambda p: p.name == "custom",
        lambda p, device, dtype: (model, loading.byte_tokenizer(), {}),
        lambda p: (model.config, None),
    )  # fmt: skip
    monkeypatch.setattr(loading, "FORMATS", [*loading.FORMATS, entry])
    assert load(tmp / "custom").format == "custom"
    assert "a custom directory" in loading.expected()


def test_init_from_a_gguf_file_trains(sources, tmp_path):
    """The run takes the GGUF's model and tokenizer; its first step (learning rate 0 in warm-up)
    keeps the file's weights; then the loss falls, and the run's checkpoint loads with the
    file's tokenizer."""
    tmp, _ = sources
    gguf = tmp / "tiny.gguf"
    source = load(gguf)
    tokens = markov_tokens(3_000, vocab=source.model.config.vocab_size)
    np.save(tmp_path / "train.npy", tokens[:2_500])
    np.save(tmp_path / "valid.npy", tokens[2_500:])
    argv = ["--init_from", str(gguf), "--train_data", str(tmp_path / "train.npy"),
            "--valid_data", str(tmp_path / "valid.npy"), "--model.context_length", "16",
            "--batch_size", "8", "--final_eval", "none", "--device", "cpu", "--eval_windows", "4",
            "--warmup_iters", "2", "--max_lr", "1e-2", "--log_interval", "1"]  # fmt: skip
    config = training.load_train_config([*argv, "--max_iters", "1", "--run_dir",
                                         str(tmp_path / "one")])  # fmt: skip
    assert config.tokenizer_dir == str(gguf)
    assert config.model.num_kv_heads == 2 and config.model.rope_theta == 100_000.0
    training.train(config)
    saved = read_checkpoint(tmp_path / "one")
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(saved["model"][name], tensor), name
    summary = training.train(training.load_train_config(
        [*argv, "--max_iters", "40", "--eval_interval", "20", "--run_dir", str(tmp_path / "two")]
    ))  # fmt: skip
    first = [r for r in read_metrics(tmp_path / "two") if r["type"] == "train"][0]["loss"]
    assert summary["train_loss"] < first - 1
    assert load(tmp_path / "two").tokenizer.vocab == source.tokenizer.vocab


def test_the_encode_command_takes_a_gguf_files_tokenizer(sources, tmp_path):
    tmp, _ = sources
    text = "the cat sat on the mat.\n" * 20
    (tmp_path / "mine.txt").write_text(text)
    tokenizer_command.main(["encode", "--tokenizer", str(tmp / "tiny.gguf"), "--input",
                            str(tmp_path / "mine.txt"), "--output", str(tmp_path / "mine.npy"),
                            "--workers", "1"])  # fmt: skip
    expected = tokenizer_from_gguf(GgufFile(tmp / "tiny.gguf")).encode(text)
    assert np.load(tmp_path / "mine.npy").tolist() == expected
    gguf = tmp_path / "copy.gguf"
    gguf.write_bytes((tmp / "tiny.gguf").read_bytes())
    before = gguf.read_bytes()
    argv = ["encode", "--tokenizer", str(gguf), "--input", str(tmp_path / "mine.txt")]
    with pytest.raises(SystemExit) as exit_info:  # the tokenizer's file is never the output
        tokenizer_command.main([*argv, "--output", str(gguf)])
    assert exit_info.value.code == 2 and gguf.read_bytes() == before
