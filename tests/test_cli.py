"""The command-line layer (llm/cli.py, llm/config.py): help text and the errors a user sees."""

import dataclasses

import pytest

from llm import generating
from llm.cli import help_text, parse
from llm.config import ConfigError, config_from_dict, describe_fields


@dataclasses.dataclass
class Inner:
    d_model: int = 8  # width of the model
    num_layers: int = 2  # blocks


@dataclasses.dataclass
class Base:
    max_iters: int = 10  # optimizer steps
    lr: float = 0.1  # the base's words for lr


@dataclasses.dataclass
class Child(Base):
    lr: float = 0.2  # the child's words win
    model: Inner = dataclasses.field(default_factory=Inner)
    name: str = "run"  # what to call it


def test_help_shows_the_comments_of_inherited_fields():
    text = help_text(Child)
    assert "      optimizer steps" in text  # written on Base only
    assert "the child's words win" in text and "the base's words" not in text
    assert "      width of the model" in text and "      what to call it" in text


def test_generating_help_explains_the_sampling_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generating.main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for option in ("--temperature", "--top_p", "--top_k", "--max_new_tokens", "--seed"):
        (row,) = [i for i, line in enumerate(lines) if line.startswith(f"  {option} ")]
        assert lines[row + 1].startswith("      ") and lines[row + 1].strip()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-iter", "3"], "unknown option --max-iter; did you mean --max_iters?"),
        (["--max_iter=3"], "unknown option --max_iter; did you mean --max_iters?"),
        (["--model.d_modle", "3"], "unknown option --model.d_modle; did you mean --model.d_model?"),
        (["--nmae", "x"], "unknown option --nmae; did you mean --name?"),
        (["--zzz", "1"], "unknown option --zzz; see --help"),
        (["--model.zzz", "1"], "unknown option --model.zzz; see --help"),
    ],
)
def test_an_unknown_option_suggests_the_nearest(argv, message):
    with pytest.raises(ConfigError) as error:
        parse(Child, argv)
    assert str(error.value) == message


def test_an_unknown_toml_key_suggests_the_nearest(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("max_iters = 3\n[model]\nd_modle = 4\n")
    with pytest.raises(ConfigError) as error:
        parse(Child, [str(toml)])
    assert str(error.value) == "unknown config key 'model.d_modle'; did you mean 'model.d_model'?"


def test_an_unknown_key_with_nothing_near_lists_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        config_from_dict(Child, {"model": {"zzz": 1}})
    assert str(error.value) == (
        "unknown config key 'model.zzz'; valid keys are: model.d_model, model.num_layers"
    )


def test_known_options_still_parse():
    config = parse(Child, ["--max-iters", "3", "--model.d_model=16", "--lr", "0.5"])
    assert (config.max_iters, config.model.d_model, config.lr) == (3, 16, 0.5)


def test_every_option_of_every_command_has_help():
    """--help describes each option: a field's comment must sit on its own line (a formatter
    that wraps the annotation would hide it)."""
    from llm.__main__ import QuickstartConfig
    from llm.download import DownloadConfig
    from llm.evaluate import EvaluateConfig
    from llm.export import ExportConfig
    from llm.generating import GenerateConfig
    from llm.plots import PlotsConfig
    from llm.tokenizer_command import EncodeOptions, PipelineOptions, TrainOptions
    from llm.training import TrainConfig

    commands = (QuickstartConfig, DownloadConfig, EvaluateConfig, ExportConfig, GenerateConfig,
                PlotsConfig, EncodeOptions, PipelineOptions, TrainOptions, TrainConfig)  # fmt: skip
    for cls in commands:
        missing = [name for name, _, _, help in describe_fields(cls) if not help]
        assert not missing, f"{cls.__name__}: no help for {missing}"
