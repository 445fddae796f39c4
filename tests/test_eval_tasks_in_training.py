"""Benchmark tasks during training (eval_tasks): scored at each evaluation and at the end as
`llm.evaluate` scores them, logged, drawn, and in a sweep's summary; bad settings are one-line
errors before any work."""

import pytest
from conftest import train_config

from llm.checkpoint import load_model
from llm.config import ConfigError
from llm.evaluate import evaluate_task
from llm.loading import byte_tokenizer
from llm.run_dir import read_metrics
from llm.sweep import _markdown, _row
from llm.training import train


@pytest.mark.filterwarnings("ignore:inputs longer than the context")  # expected: tested apart
def test_tasks_are_scored_at_each_evaluation_and_at_the_end(token_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = train_config(token_data_dir, run_dir, eval_tasks=["arc_easy:3", "winogrande:2"],
                          eval_sample_tokens=0)  # fmt: skip
    train(config)
    tasks = [r for r in read_metrics(run_dir) if r["type"] == "tasks"]
    assert [r["step"] for r in tasks] == [4, 8, 12]  # every eval_interval, and the final one
    # The last scores are the final model's, as `llm.evaluate` gives them (the ids are bytes:
    # no tokenizer_dir).
    model, _ = load_model(run_dir)
    for name, limit in [("arc_easy", 3), ("winogrande", 2)]:
        metrics, _ = evaluate_task(model, byte_tokenizer(), name, limit)
        assert tasks[-1][f"{name}/acc"] == metrics["acc"]
    assert tasks[-1]["arc_easy/acc_norm"] is not None and "winogrande/acc_norm" not in tasks[-1]
    assert (run_dir / "img" / "tasks.png").stat().st_size > 1000
    row = _row({"name": "run", "values": {}}, read_metrics(run_dir), {})
    assert row["tasks"] == {k: v for k, v in tasks[-1].items() if "/" in k}
    assert "arc_easy/acc" in _markdown(tmp_path, [], [row]).splitlines()[2]  # a column


@pytest.mark.parametrize(
    "tasks, valid, message",
    [
        (["hellaswagg"], True, "unknown task 'hellaswagg'; known: hellaswag"),
        (["arc_easy:0"], True, "'arc_easy:0': N in NAME:N must be a whole number >= 1"),
        (["arc_easy:x"], True, "N in NAME:N must be a whole number"),
        (["arc_easy"], False, "eval_tasks are scored at each evaluation, which needs valid_data"),
    ],
)
def test_bad_eval_tasks_are_errors_before_any_work(token_data_dir, tmp_path, tasks, valid, message):
    overrides = {"eval_tasks": tasks} | ({} if valid else {"valid_data": ""})
    with pytest.raises(ConfigError, match=message):
        train(train_config(token_data_dir, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_eval_tasks_is_a_training_flag():
    from llm.training import load_train_config

    config = load_train_config(["--train_data", "x.npy", "--eval_tasks", "arc_easy:100,piqa"])
    assert config.eval_tasks == ["arc_easy:100", "piqa"]
