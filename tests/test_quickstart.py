"""The quickstart (`uv run -m llm`): end to end at a tiny size (every artefact, and learning),
then its control flow (Ctrl-C, failures, what it claims) with the slow stages replaced."""

import dataclasses
import math
import shlex
from pathlib import Path

import numpy as np
import pytest

import llm.__main__ as quickstart
from llm.__main__ import PROMPTS, QuickstartConfig, main
from llm.bpe_tokenizer import BpeTokenizer
from llm.checkpoint import read_checkpoint
from llm.config import load_toml
from llm.data import DataError


def test_quickstart_pipeline_end_to_end(tmp_path, capsys, monkeypatch):
    # The quickstart's model with a shorter context and half the layers: 8x cheaper steps.
    small = dataclasses.replace(quickstart.MODEL, context_length=64, num_layers=2)
    monkeypatch.setattr(quickstart, "MODEL", small)
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
    assert f"Estimated time: about {result['estimate_seconds'] / 60:.1f} min" in printed
    assert "on the whole validation split" in printed
    assert "uv run -m llm.generating --checkpoint" in printed


# --- the control flow, with instant stages ------------------------------------------------------

FINISHED = {"step": 600, "interrupted": False, "val_loss": 1.25, "val_bits_per_byte": 0.5,
            "val_exact": True}  # fmt: skip


class FakeStages:
    """An idle machine; stages 1-3 make the data directory and return a byte-level tokenizer;
    train() makes the model directory and returns FINISHED updated with `result`, or raises
    `error`. Counts the times stories were written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.result: dict = {}
        self.error: BaseException | None = None
        self.stories = 0
        monkeypatch.setattr(quickstart, "measure_step_seconds", lambda *_: 0.01)
        monkeypatch.setattr(quickstart.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle
        monkeypatch.setattr(quickstart, "prepare_data", self.prepare_data)
        monkeypatch.setattr(quickstart, "train", self.train)
        monkeypatch.setattr(quickstart, "load_model", self.load_model)
        monkeypatch.setattr(quickstart, "generate", lambda *_, **__: list(b" and they played."))

    def prepare_data(self, config: QuickstartConfig, out: Path) -> BpeTokenizer:
        (out / "data").mkdir()
        (out / "data" / "train.npy").write_bytes(b"tokens")
        return BpeTokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"])

    def train(self, config) -> dict:
        Path(config.run_dir).mkdir()
        if self.error:
            raise self.error
        return {**FINISHED, **self.result}

    def load_model(self, *_, **__):
        self.stories += 1
        return None, {}


@pytest.fixture
def fake(monkeypatch) -> FakeStages:
    return FakeStages(monkeypatch)


def test_ctrl_c_in_training_stops_without_stories_and_keeps_the_run(fake, tmp_path, capsys):
    fake.result = {"interrupted": True, "step": 7, "val_loss": None, "val_exact": None}
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(out)])
    assert exit_.value.code == 130
    printed = capsys.readouterr()
    assert fake.stories == 0 and "[5/5]" not in printed.out and "Done" not in printed.out
    assert f"interrupted at step 7 of 600: the partial run is in {out}" in printed.err
    assert f"--run_dir {out / 'model'} --resume" in printed.err
    assert (out / "data" / "train.npy").is_file() and (out / "model").is_dir()


@pytest.mark.parametrize(
    "result, claim",
    [
        ({"val_exact": True}, "on the whole validation split."),
        ({"val_exact": False}, "on 32 sampled validation windows (an estimate, not the whole"),
        ({"val_exact": None, "val_loss": None}, "No validation loss"),
    ],
)
def test_the_summary_says_what_the_validation_loss_was_measured_on(fake, tmp_path, capsys,
                                                                   result, claim):  # fmt: skip
    fake.result = result
    main(["--out", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert claim in printed and fake.stories == 1
    assert ("whole validation split" in printed) == bool(result["val_exact"])


@pytest.mark.parametrize(
    "error, code, line",
    [(DataError("valid_data holds token id 999"), 1, "error: valid_data holds token id 999\n"),
     (KeyboardInterrupt(), 130, "interrupted\n")],  # a second Ctrl-C aborts training at once
)  # fmt: skip
def test_a_failing_stage_removes_what_the_quickstart_created(fake, tmp_path, capsys, error,
                                                             code, line):  # fmt: skip
    fake.error = error
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "new" / "run")])
    assert exit_.value.code == code and capsys.readouterr().err == line
    assert list(tmp_path.iterdir()) == []  # "new" was created too: both are gone
    (tmp_path / "mine").mkdir()  # a directory that existed before is kept, and left empty
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "mine")])
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
    assert list((tmp_path / "mine").iterdir()) == []


def test_overwrite_replaces_only_an_earlier_quickstart(fake, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.npy").write_bytes(b"old")
    (tmp_path / "model").mkdir()
    main(["--out", str(tmp_path), "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["train.npy"]


def test_the_plan_warns_when_the_machine_is_busy(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quickstart.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    monkeypatch.setattr(quickstart.os, "cpu_count", lambda: 2)
    main(["--out", str(tmp_path / "run")])
    printed = capsys.readouterr()
    assert "looks busy (load average 3.5 on 2 CPU cores)" in printed.err
    assert "Estimated time: about" in printed.out
    monkeypatch.setattr(quickstart.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    main(["--out", str(tmp_path / "run2")])
    assert "busy" not in capsys.readouterr().err


# --- the time estimate ---------------------------------------------------------------------------


def test_the_estimate_matches_the_reference_machine_and_scales_with_speed():
    step, defaults = quickstart.REFERENCE_STEP_SECONDS, QuickstartConfig()
    estimate = quickstart.estimate_seconds
    # the documented time of the default run on an idle 2-core machine
    assert estimate(defaults, step, on_cpu=True) / 60 == pytest.approx(2.4, abs=0.1)
    # a machine half as fast takes twice as long, in every stage
    assert estimate(defaults, 2 * step, True) == pytest.approx(2 * estimate(defaults, step, True))
    more_steps = estimate(QuickstartConfig(max_iters=1200), step, True) - estimate(
        defaults, step, True
    )
    assert more_steps == pytest.approx(600 * step * quickstart.TRAINING_OVERHEAD)
    # on a GPU only the training steps are measured; the CPU stages keep the reference time
    gpu_steps = estimate(defaults, 0.001, on_cpu=False) - estimate(defaults, 0.0, on_cpu=False)
    assert gpu_steps == pytest.approx(0.001 * 600 * quickstart.TRAINING_OVERHEAD)
    cpu_stages = estimate(defaults, 0.0, on_cpu=False)
    assert cpu_stages == pytest.approx(estimate(defaults, step, True) - more_steps)


@pytest.mark.parametrize(
    "load, cpus, busy",
    [(0.3, 2, False), (0.99, 2, False), (1.0, 2, True), (3.0, 2, True), (7.9, 16, False),
     (8.0, 16, True)],
)  # fmt: skip
def test_busy_warning_compares_the_load_with_the_cores(load, cpus, busy):
    assert (quickstart.busy_warning(load, cpus) is not None) == busy


def test_the_next_step_trains_on_this_runs_stories(tmp_path):
    """The closing lines' training command reads the stories this run wrote: by default
    (runs/quickstart) through configs/stories-cpu.toml's own paths, else through flags."""
    toml = load_toml(Path(__file__).parents[1] / "configs" / "stories-cpu.toml")
    default = Path(quickstart.STORIES_CPU_OUT)
    assert (toml["train_data"], toml["valid_data"], toml["tokenizer_dir"]) == (
        str(default / "data" / "train.npy"), str(default / "data" / "valid.npy"),
        str(default / "tokenizer"),
    )  # fmt: skip
    assert "vocab_size" not in toml.get("model", {})  # it follows the tokenizer
    assert "--train_data" not in quickstart.next_training(default)
    words = shlex.split(quickstart.next_training(tmp_path), comments=True)
    assert words[:5] == ["uv", "run", "-m", "llm.training", "configs/stories-cpu.toml"]
    flags = dict(zip(words[5::2], words[6::2], strict=True))
    assert flags == {"--train_data": str(tmp_path / "data" / "train.npy"),
                     "--valid_data": str(tmp_path / "data" / "valid.npy"),
                     "--tokenizer_dir": str(tmp_path / "tokenizer")}  # fmt: skip
