"""TrainConfig from TOML and flags, its defaults, and the settings refused before any work."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import train_config

from llm import training
from llm.bpe_tokenizer import BpeTokenizer
from llm.config import ConfigError, config_from_toml, format_config
from llm.optim import OPTIMIZERS, AdamW, Muon, SGDDecay
from llm.training import load_train_config, train
from llm.transformer import ModelConfig

REPO = Path(__file__).resolve().parents[1]


def test_toml_then_flags_override(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'model_preset = "tiny"\nmax_iters = 50\nmax_lr = 3e-3\n'
        "[model]\nd_model = 32\nnum_heads = 2\n"
    )
    argv = [str(toml), "--max_iters", "7", "--model.num_layers=3", "--betas", "0.8,0.9"]
    config = load_train_config(argv + ["--compile", "--seed", "1e3"])
    assert config.max_iters == 7 and config.max_lr == 3e-3 and config.seed == 1000
    assert config.model.d_model == 32 and config.model.num_heads == 2
    assert config.model.num_layers == 3 and config.model.vocab_size == 512  # rest from "tiny"
    assert config.betas == (0.8, 0.9) and config.compile is True
    assert load_train_config(["--config", str(toml)]).max_iters == 50
    assert "model.d_model = 32" in format_config(config)


def test_model_preset_chooses_the_defaults():
    config = load_train_config(["--model_preset", "cs336-small", "--model.num_layers", "2"])
    assert (config.model.d_model, config.model.num_layers) == (768, 2)
    with pytest.raises(ConfigError, match="unknown model_preset 'huge'; presets: tinystories-17m"):
        load_train_config(["--model_preset", "huge"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_lrr", "1"], r"unknown option --max_lrr; did you mean --max_lr\?"),
        (
            ["--model.d_modle", "8"],
            r"unknown option --model.d_modle; did you mean --model.d_model\?",
        ),
        (["--max_iters", "abc"], "max_iters must be int, got 'abc'"),
        (["--max_iters", "1.5"], "max_iters must be int"),
        (["--compile", "maybe"], "compile must be bool"),
        (["--betas", "0.9"], "betas must have 2 items"),
        (["--model.num_heads", "5"], "num_heads=5 heads"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_config_values_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(argv)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(schedule="step"), r"^schedule must be one of \('cosine', 'wsd'\), not 'step'$"),
        (dict(decay_fraction=0.0), r"^decay_fraction must be in \(0, 1\], not 0.0$"),
        (dict(schedule_on_time=True), "^schedule_on_time needs max_train_seconds, the time"),
        (
            dict(schedule="wsd", max_iters=100, warmup_iters=90),
            "^warmup_iters=90 runs into the decay, which starts at step 80: lower",
        ),
    ],
)
def test_bad_schedules_are_named_before_any_work(token_data_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(train_config(token_data_dir, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_toml_is_rejected(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[model]\nlayers = 4\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.layers'"):
        load_train_config([str(toml)])
    toml.write_text("max_iters = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_train_config([str(toml)])


def test_help_lists_every_key_with_type_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_train_config(["--model_preset", "tinystories-17m", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--model.d_model" in text and "default: 512" in text  # the preset's value
    assert "--max_lr" in text and "float" in text and "peak learning rate" in text
    assert "--model.d_ff" in text and "int | None" in text


def test_model_config_loads_from_toml(tmp_path):
    toml = tmp_path / "model.toml"
    toml.write_text("d_model = 128\nnum_heads = 4\nd_ff = 'none'\ntie_embeddings = true\n")
    config = config_from_toml(ModelConfig, toml)
    assert config.d_model == 128 and config.tie_embeddings and config.d_ff == 384  # 8/3 * 128


@pytest.mark.parametrize("name", ["tinystories-17m", "cpu-small"])
def test_shipped_configs_load(name):
    config = load_train_config([str(REPO / "configs" / f"{name}.toml")])
    training.check_config(config, world_size=1)
    if name == "tinystories-17m":  # the CS336 recipe: ~327M tokens through the 17M model
        tokens = config.max_iters * config.batch_size * config.model.context_length
        assert config.model == ModelConfig() and 3.2e8 < tokens < 3.4e8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(optimizer="adam"),
            r"optimizer must be one of \('adamw', 'sgd', 'muon'\), not 'adam'",
        ),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(final_eval="all"), "final_eval must be one of"),
        (dict(max_iters=0), "max_iters must be at least 1, not 0"),
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(log_interval=0), "log_interval must be at least 1"),
        (dict(eval_batch_size=0), "eval_batch_size must be at least 1"),
        (dict(checkpoint_interval=0), "checkpoint_interval must be at least 1"),
        (dict(train_data=""), "train_data is not set"),
        (dict(warmup_iters=-1), "warmup_iters must be >= 0"),
        (dict(grad_clip=-1.0), "grad_clip must be >= 0"),
        (dict(max_train_seconds=-5.0), "max_train_seconds must be >= 0"),
    ],
)
def test_bad_settings_are_named_before_anything_is_written(
    token_data_dir, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        train(train_config(token_data_dir, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, max_lr",
    [
        (["--optimizer", "muon"], 0.02),  # Jordan et al.'s Muon default, not AdamW's
        (["--optimizer", "muon", "--max_lr", "0.005"], 0.005),
        (["--optimizer", "sgd"], 1e-3),
        ([], 1e-3),
    ],
)
def test_max_lr_defaults_to_the_chosen_optimizers(argv, max_lr, capsys):
    assert load_train_config(argv).max_lr == max_lr
    if "--max_lr" not in argv:  # --help shows the default the optimizer gives
        with pytest.raises(SystemExit):
            load_train_config([*argv, "--help"])
        assert re.search(rf"--max_lr +float +default: {max_lr!r}\n", capsys.readouterr().out)


def test_optimizer_table_builds_each_optimizer():
    config = load_train_config([])
    model = training.Transformer(training.TrainConfig().model)
    built = {
        name: type(training._build_optimizer(model, replace(config, optimizer=name), None))
        for name in OPTIMIZERS
    }
    assert built == {"adamw": AdamW, "sgd": SGDDecay, "muon": Muon}


def tokenizer_of(path: Path, merges: int) -> Path:
    """A byte-level tokenizer of 256 + merges tokens."""
    pairs = [(bytes([k]), bytes([(k + 1) % 256])) for k in range(merges)]
    vocab = {i: bytes([i]) for i in range(256)} | {256 + i: a + b for i, (a, b) in enumerate(pairs)}
    BpeTokenizer(vocab, pairs).save(path)
    return path


def test_vocab_size_follows_the_tokenizer_unless_given(tmp_path):
    tok = str(tokenizer_of(tmp_path / "tok", 44))
    assert load_train_config(["--tokenizer_dir", tok]).model.vocab_size == 300
    # A preset's vocab_size is not a setting of the user's: the tokenizer's wins.
    preset = load_train_config(["--model_preset", "tinystories-17m", "--tokenizer_dir", tok])
    assert preset.model.vocab_size == 300 and preset.model.d_model == 512
    assert (
        load_train_config(["--tokenizer_dir", tok, "--model.vocab_size", "300"]).model.vocab_size
        == 300
    )
    with pytest.raises(
        ConfigError,
        match=r"^model.vocab_size=512 differs from the tokenizer in .*tok, which has 300",
    ):
        load_train_config(["--tokenizer_dir", tok, "--model.vocab_size", "512"])


def test_resume_of_a_run_that_does_not_exist_names_it(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^no run to resume at .*x: the directory does not exist; start it without --resume$",
    ):
        load_train_config(["--run_dir", str(tmp_path / "x"), "--resume"])
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match=r"^no run to resume at .*x: no config.json; start"):
        load_train_config(["--run_dir", str(tmp_path / "x"), "--resume"])


def test_a_missing_data_file_fails_before_the_config_is_printed(token_data_dir, tmp_path, capsys):
    argv = ["--train_data", str(token_data_dir / "train.npy"), "--run_dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_info:
        training.main([*argv, "--valid_data", str(tmp_path / "missing.npy"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1 and "missing.npy does not exist" in err and out == ""


def test_help_describes_the_schedules_optimizers_plots_and_sinks(capsys):
    with pytest.raises(SystemExit):
        load_train_config(["--help"])
    text = capsys.readouterr().out
    for word in [
        "wsd",
        "cosine",
        "Muon",
        "SGD",
        "AdamW",
        "bits_per_byte.png",
        "tensorboard",
        "wandb",
    ]:
        assert word in text, word
