"""The README's commands work as written: every shell block marked `<!-- runnable -->` runs, in
the README's order, in a fresh copy of the repository, with tiny settings appended (each command
as written, but a few steps of a small model). The Chinese README has the same commands."""

import re
import runpy
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- runnable"

# Appended to each command (later flags win): the same command, at a size the tests can afford.
TINY_MODEL = ["--model.d_model", "32", "--model.num_layers", "1", "--model.num_heads", "2",
              "--model.d_ff", "64", "--model.context_length", "32"]  # fmt: skip
TINY_TRAINING = ["--max_iters", "4", "--max_train_seconds", "0", "--schedule_on_time", "false",
                 "--batch_size", "2", "--warmup_iters", "1", "--log_interval", "1",
                 "--eval_interval", "2", "--eval_windows", "2", "--eval_batch_size", "2",
                 "--checkpoint_interval", "2", "--final_eval", "sampled",
                 "--device", "cpu"]  # fmt: skip
TINY = {
    "llm": ["--train-mb", "0.1", "--max-iters", "4", "--vocab-size", "300", "--device", "cpu"],
    "llm.bpe_tokenizer train": ["--vocab-size", "300", "--workers", "1"],
    "llm.bpe_tokenizer encode": ["--workers", "1"],
    "llm.training": TINY_TRAINING,
    "llm.generating": ["--max-new-tokens", "5", "--device", "cpu"],
    "llm.export": [],
    "llm.plots": [],
    "inspect_data.py": [],
}


def runnable_commands(readme: Path) -> list[list[str]]:
    """The commands of the marked shell blocks, as argument lists, in order."""
    blocks = re.findall(rf"^{MARK}.*?-->\n```bash\n(.*?)```", readme.read_text(), re.S | re.M)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def command_name(words: list[str]) -> tuple[str, list[str]]:
    """`uv run -m llm.training ARGS` -> ("llm.training", ARGS); a script is named by its file;
    the tokenizer's subcommands by module and subcommand."""
    assert words[:2] == ["uv", "run"], f"not a `uv run` command: {shlex.join(words)}"
    words = words[2:]
    if words[0] == "-m":
        name, args = words[1], words[2:]
    else:
        name, args = words[0], words[1:]
    if name == "llm.bpe_tokenizer" and args and args[0] in ("train", "encode"):
        name = f"{name} {args[0]}"
    return name, args


def run(words: list[str]) -> None:
    """The command in this process (a new Python would cost seconds each), as `uv run` would."""
    name, args = command_name(words)
    if name not in TINY:
        pytest.fail(f"README command {shlex.join(words)}: add its tiny settings to TINY")
    tiny = TINY[name]
    if name == "llm.training" and not {"--init_from", "--resume"} & set(args):
        tiny = tiny + TINY_MODEL  # a resumed or initialised run keeps its model
    sys.argv = [name.split()[0], *args, *tiny]
    try:
        if name.endswith(".py"):
            runpy.run_path(name, run_name="__main__")
        else:  # as `python -m`: the module runs again as __main__ (its imports stay loaded)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "'llm.* found in sys.modules", RuntimeWarning)
                runpy.run_module(name.split()[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert e.code in (0, None), f"{shlex.join(words)} exited with {e.code}"


def test_the_readme_commands_run_as_written(tmp_path, monkeypatch):
    commands = runnable_commands(REPO / "README.md")
    assert len(commands) >= 10  # the marks were found
    for name in ("configs", "inspect_data.py"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    for words in commands:
        run(words)
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "mine" / "checkpoint.pt").is_file()


def test_the_chinese_readme_has_the_same_commands():
    assert runnable_commands(REPO / "README.zh-CN.md") == runnable_commands(REPO / "README.md")
