"""Metric sinks: TensorBoard's files, read back with TensorBoard's own reader, and the calls to
Weights & Biases hold exactly what metrics.jsonl holds; a missing extra is named up front."""

import importlib.machinery
import json
import sys
import types

import numpy as np
import pytest
import torch
from conftest import train_config

from llm import metric_sinks, training
from llm.bpe_tokenizer import BpeTokenizer
from llm.config import ConfigError
from llm.run_dir import read_metrics
from llm.training import train


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a record, as the sinks should show them."""
    return {
        k: v
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def tag(record: dict, key: str) -> str:
    return record["type"] + ("_exact" if record.get("exact") else "") + "/" + key


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A 512-token BPE tokenizer, the size of the test data's vocabulary."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(bytes([k]), bytes([7 * k % 256])) for k in range(256)]
    vocab.update({256 + i: a + b for i, (a, b) in enumerate(merges)})
    path = tmp_path_factory.mktemp("tokenizer")
    BpeTokenizer(vocab, merges).save(path)
    return path


def greedy_text(weights: dict, config, tokenizer: BpeTokenizer, n: int) -> str:
    """The reference sample: argmax of a full forward pass per token, no KV cache."""
    model = training.Transformer(config.model)
    model.load_state_dict(weights)
    model.eval()
    ids = tokenizer.encode(training.SAMPLE_PROMPT)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return tokenizer.decode(ids)


def test_tensorboard_holds_what_metrics_jsonl_holds(
    token_data_dir, tokenizer_dir, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    weights, save = {}, training._save

    def keep_weights(run):  # the weights each sample was generated with
        weights[run.step] = {k: v.clone() for k, v in run.model.state_dict().items()}
        save(run)

    monkeypatch.setattr(training, "_save", keep_weights)
    run = tmp_path / "run"
    config = train_config(
        token_data_dir, run, tokenizer_dir=str(tokenizer_dir), log_to=["jsonl", "tensorboard"],
        checkpoint_interval=4, eval_sample_tokens=6,
    )  # fmt: skip
    train(config)
    records = read_metrics(run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()

    expected: dict[str, list] = {}
    for record in records:
        for key, value in numbers(record).items():
            expected.setdefault(tag(record, key), []).append((record["step"], np.float32(value)))
    assert {"train/loss", "eval/loss", "eval_exact/bits_per_byte"} <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for name, points in expected.items():
        assert [(e.step, np.float32(e.value)) for e in events.Scalars(name)] == points, name

    def texts(name: str) -> list[tuple[int, str]]:
        found = events.Tensors(f"{name}/text_summary")
        return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in found]

    samples = [r for r in records if r["type"] == "sample"]
    assert [r["step"] for r in samples] == [4, 8]  # at each periodic evaluation
    assert texts("sample/text") == [(r["step"], r["text"]) for r in samples]
    tokenizer = BpeTokenizer.load(tokenizer_dir)
    for record in samples:
        assert record["text"] == greedy_text(weights[record["step"]], config, tokenizer, 6)
    ((step, text),) = texts("config")
    assert step == 0 and json.loads(text.strip("`\n")) == json.loads(
        (run / "config.json").read_text()
    )


class FakeWandb(types.ModuleType):
    """Records what the W&B sink calls: wandb.init(...), run.log(data, step), run.finish()."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.calls: list[tuple] = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return types.SimpleNamespace(
            log=lambda data, step: self.calls.append(("log", data, step)),
            finish=lambda: self.calls.append(("finish",)),
        )


def test_wandb_gets_the_config_once_and_every_record(token_data_dir, tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, log_to=["wandb"], max_iters=6))
    (init, *logs, finish) = fake.calls
    assert init[0] == "init" and finish == ("finish",)
    assert json.loads(json.dumps(init[1]["config"])) == json.loads(
        (run / "config.json").read_text()
    )
    assert init[1]["mode"] == "offline" and init[1]["dir"] == str(run)
    expected = [
        ("log", {tag(r, k): v for k, v in numbers(r).items()}, r["step"]) for r in read_metrics(run)
    ]
    assert logs == expected and len(logs) == 3 + 2  # train at 2, 4, 6; eval at 4, exact at 6


@pytest.mark.parametrize(
    "log_to, message",
    [
        (
            ["tensorboard"],
            r"^--log_to tensorboard needs the tensorboard package: .*uv sync --extra tensorboard",
        ),
        (["jsonl", "mlflow"], r"^log_to: unknown sink 'mlflow'; sinks: jsonl, tensorboard, wandb$"),
    ],
)
def test_a_sink_that_cannot_work_is_named_before_any_work(
    token_data_dir, tmp_path, monkeypatch, log_to, message
):
    find_spec = metric_sinks.importlib.util.find_spec
    monkeypatch.setattr(
        metric_sinks.importlib.util,
        "find_spec",
        lambda name: None if name == "tensorboard" else find_spec(name),
    )
    with pytest.raises(ConfigError, match=message):
        train(train_config(token_data_dir, tmp_path / "run", log_to=log_to))
    assert not (tmp_path / "run").exists()
