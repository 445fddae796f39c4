import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL, ctrl_c_at_step, train_config

from llm import plots, training
from llm.bpe_tokenizer import BpeTokenizer
from llm.checkpoint import read_checkpoint
from llm.config import ConfigError
from llm.data import DataError, eval_starts
from llm.run_dir import read_metrics
from llm.training import TrainConfig, TrainingDiverged, load_train_config, train
from llm.transformer import MODEL_PRESETS, Transformer

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"tokens_per_s", "train_seconds", "mfu"}


def metrics(run_dir: Path) -> list[dict]:
    records = read_metrics(run_dir)
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# --- the training loop -----------------------------------------------------------------------


def test_training_learns_and_writes_its_run_directory(token_data_dir, tmp_path):
    run = tmp_path / "run"
    config = train_config(token_data_dir, run, max_iters=40, max_lr=1e-2, batch_size=16)
    result = train(config)
    # Unigram entropy of this data is ~ln 512 = 6.2 nats; its true entropy is ln 2 = 0.69.
    assert result["val_exact"] and result["val_loss"] < 4.0 and result["step"] == 40
    assert result["val_bits_per_byte"] == pytest.approx(result["val_loss"] / math.log(2))
    for name in ["checkpoint.pt", "config.json", "metrics.jsonl", "img/loss.png", "img/lr.png"]:
        assert (run / name).is_file(), name
    records = read_metrics(run)
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_records] == list(range(2, 41, 2))
    assert train_records[-1]["loss"] < train_records[0]["loss"] - 1.0
    assert train_records[0]["lr"] == pytest.approx(5e-3)  # the 2nd step of a 2-step warm-up
    assert all(r["tokens_per_s"] > 0 for r in train_records)
    evals = [r for r in records if r["type"] == "eval"]
    assert [(r["step"], r["exact"]) for r in evals] == [(s, False) for s in range(4, 40, 4)] + [
        (40, True)
    ]
    saved = json.loads((run / "config.json").read_text())
    assert saved["max_iters"] == 40 and saved["model"]["d_model"] == 64
    assert read_checkpoint(run)["iteration"] == 40

    assert (run / "img" / "bits_per_byte.png").is_file()
    (run / "img" / "loss.png").unlink()
    plots.main([str(run), "--reference", "nanoGPT=1.1666"])
    assert (run / "img" / "loss.png").is_file()


@pytest.mark.parametrize(
    "optimizer",
    [
        {},
        {"optimizer": "muon", "max_lr": 0.02, "min_lr": 0.002, "adam_lr": 4e-3},
        # Dropout's masks come from the random state the checkpoint keeps.
        {"model": {**vars(MODEL_PRESETS["tiny"]), "dropout": 0.2}},
    ],
    ids=["adamw", "muon", "dropout"],
)
def test_resume_after_interrupt_is_bit_exact(token_data_dir, tmp_path, monkeypatch, optimizer):
    extra = dict(grad_accum_steps=2, checkpoint_interval=4, **optimizer)
    full = train(train_config(token_data_dir, tmp_path / "full", **extra))

    ctrl_c_at_step(monkeypatch, training, 4)  # the real handler: stop after this step, save
    part = train(train_config(token_data_dir, tmp_path / "split", **extra))
    monkeypatch.undo()
    assert part["interrupted"] and part["step"] == 5  # mid log interval: 5 is not a multiple of 2
    assert read_checkpoint(tmp_path / "split")["iteration"] == 5

    # Resume from the command line: the config comes back from the run directory.
    config = load_train_config(["--run_dir", str(tmp_path / "split"), "--resume"])
    assert config.max_iters == 12 and config.grad_accum_steps == 2
    resumed = train(config)
    assert not resumed["interrupted"] and resumed["step"] == 12

    assert metrics(tmp_path / "split") == metrics(tmp_path / "full")  # losses, evals, lrs
    assert resumed["val_loss"] == full["val_loss"]
    a, b = read_checkpoint(tmp_path / "full"), read_checkpoint(tmp_path / "split")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, state in a["optimizer"]["state"].items():  # moments, momentum buffers, steps
        for name, value in state.items():
            torch.testing.assert_close(value, b["optimizer"]["state"][index][name], rtol=0, atol=0)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])


def test_resuming_a_finished_run_says_so_and_changes_nothing(
    token_data_dir, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    first = train(train_config(token_data_dir, run))
    before = tree(run)
    monkeypatch.setattr(training, "evaluate_exact", None)  # no second whole-split evaluation
    again = train(load_train_config(["--run_dir", str(run), "--resume"]))
    assert again["step"] == first["step"] == 12 and again["val_loss"] == first["val_loss"]
    assert tree(run) == before
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"{run} finished at step 12; nothing to do: pass a larger --max_iters")


def test_extending_a_finished_run_says_where_the_lr_jumps(token_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, valid_data="", final_eval="none"))
    config = load_train_config(["--run_dir", str(run), "--resume", "--max_iters", "16"])
    train(config)
    old = train_config(token_data_dir, run)
    expected = f"jumps from {schedule(12, old):.3g} to {schedule(12, config):.3g}"
    assert schedule(12, old) == old.min_lr and schedule(12, config) > 2 * old.min_lr
    out = capsys.readouterr().out
    assert (
        f"the cosine schedule now ends at step 16 (it ended at 12): the lr at step 12 {expected}"
        in out
    )
    assert [r["step"] for r in read_metrics(run) if r["type"] == "train"][-2:] == [14, 16]


def test_init_from_says_what_it_loaded_and_warns(token_data_dir, tmp_path, capsys):
    source = tmp_path / "source"
    train(train_config(token_data_dir, source, max_iters=2, valid_data="", final_eval="none"))
    weights = read_checkpoint(source)["model"]
    count = sum(v.numel() for k, v in weights.items() if "rope" not in k)
    capsys.readouterr()
    config = train_config(
        token_data_dir, tmp_path / "tuned", init_from=str(source), max_iters=2, warmup_iters=5,
        valid_data="",
    )  # fmt: skip
    train(config)
    out, err = capsys.readouterr()
    assert f"loaded {count:,} parameters from {source}" in out
    assert "warning: warmup_iters=5 >= max_iters=2" in err and "warning: no valid_data" in err


@pytest.mark.parametrize("tie", [False, True])
def test_the_parameter_count_counts_a_tied_matrix_once(tie):
    model = Transformer(dataclasses.replace(SMALL, tie_embeddings=tie))
    unique = {id(p): p.numel() for p in model.parameters()}
    total, embedding = sum(unique.values()), SMALL.vocab_size * SMALL.d_model
    assert total == sum(p.numel() for p in model.state_dict().values()) - (embedding if tie else 0)
    if tie:
        expected = (
            f"{total:,} parameters ({embedding:,} in the embedding, shared with the output layer, "
            f"{total - embedding:,} in the rest)"
        )
    else:
        expected = f"{total:,} parameters ({total - embedding:,} without the input embedding)"
    assert training._parameter_count(model) == expected


def test_sigterm_stops_after_the_step_saves_and_restores_the_handler(
    token_data_dir, tmp_path, monkeypatch
):
    schedule = training.cos_lr_scheduler

    def sigterm_during_step_2(t, *args):
        if t == 2:
            signal.raise_signal(signal.SIGTERM)  # what a cluster scheduler sends before a kill
        return schedule(t, *args)

    def outside_handler(signum, frame):  # reached only if training did not catch SIGTERM
        raise RuntimeError("SIGTERM reached the handler installed outside train()")

    monkeypatch.setattr(training, "cos_lr_scheduler", sigterm_during_step_2)
    previous = signal.signal(signal.SIGTERM, outside_handler)
    try:
        result = train(train_config(token_data_dir, tmp_path / "run"))
        assert signal.getsignal(signal.SIGTERM) is outside_handler  # restored afterwards
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result["interrupted"] and result["step"] == 3
    assert read_checkpoint(tmp_path / "run")["iteration"] == 3


def test_max_train_seconds_ends_the_run_early_with_a_final_evaluation(
    token_data_dir, tmp_path, monkeypatch
):
    clock = iter(range(0, 10_000, 10))  # every perf_counter() call advances 10 s
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    result = train(train_config(token_data_dir, tmp_path / "run", max_train_seconds=35))
    assert 1 < result["step"] < 12 and result["val_exact"] and not result["interrupted"]
    assert read_checkpoint(tmp_path / "run")["iteration"] == result["step"]


def test_the_schedule_on_time_ends_its_decay_when_the_time_runs_out(
    token_data_dir, tmp_path, monkeypatch
):
    clock, train_step = [0.0], training._train_step

    def ten_seconds_each(*args):  # only the steps take time
        clock[0] += 10.0
        return train_step(*args)

    monkeypatch.setattr(training, "_train_step", ten_seconds_each)
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    config = train_config(
        token_data_dir, tmp_path / "run", max_iters=1000, warmup_iters=50, max_train_seconds=100,
        schedule_on_time=True, log_interval=1, final_eval="none",
    )  # fmt: skip
    result = train(config)
    monkeypatch.undo()
    assert result["step"] == 10  # 10 steps of 10 s fill the 100 s
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    # Step k starts after 10 k seconds: the schedule is at step 1000 x 10 k / 100 = 100 k.
    assert lrs == pytest.approx([schedule(100 * k, config) for k in range(10)])
    assert lrs[-1] < 0.15 * config.max_lr  # near the end of the decay, min_lr = 0.1 max_lr


def test_gradient_accumulation_gives_the_same_step(token_data_dir, tmp_path):
    weights = []
    for accum in (1, 4):
        config = train_config(
            token_data_dir,
            tmp_path / str(accum),
            max_iters=3,
            grad_accum_steps=accum,
            valid_data="",
        )
        train(config)
        weights.append(read_checkpoint(config.run_dir)["model"])
    torch.testing.assert_close(weights[0], weights[1], atol=1e-6, rtol=0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(token_data_dir, tmp_path, monkeypatch):
    calls = 0
    loss_fn = training.cross_entropy

    def diverging(logits, targets):
        nonlocal calls
        calls += 1
        loss = loss_fn(logits, targets)
        return loss * float("nan") if calls > 5 else loss  # step 6 diverges

    monkeypatch.setattr(training, "cross_entropy", diverging)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="loss is nan at step 6") as error:
        train(train_config(token_data_dir, run, checkpoint_interval=4))
    assert f"last good checkpoint, step 4, is {run / 'checkpoint.pt'}" in str(error.value)
    checkpoint = read_checkpoint(run)
    assert checkpoint["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    last = read_metrics(run)[-1]  # the log says how the run ended
    assert last["type"] == "diverged" and last["step"] == 6 and "loss is nan" in last["message"]


def test_bad_inputs_fail_before_training(token_data_dir, tmp_path):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.array([1, 2, 600, 3] * 100, dtype=np.uint16))
    with pytest.raises(DataError, match="token id 600, outside the model's vocabulary"):
        train(train_config(token_data_dir, tmp_path / "a", train_data=str(wide)))
    short = tmp_path / "short.npy"
    np.save(short, np.arange(10, dtype=np.uint16))
    with pytest.raises(DataError, match="valid_data has 10 tokens"):
        train(train_config(token_data_dir, tmp_path / "b", valid_data=str(short)))
    with pytest.raises(ConfigError, match="multiple of grad_accum_steps x processes = 3 x 1"):
        train(train_config(token_data_dir, tmp_path / "c", grad_accum_steps=3))
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        train(train_config(token_data_dir, tmp_path / "d", resume=True))


def test_a_finished_run_is_not_overwritten(token_data_dir, tmp_path):
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, max_iters=2, valid_data=""))
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(train_config(token_data_dir, run, max_iters=2, valid_data=""))
    assert (run / "checkpoint.pt").read_bytes() == before


def test_main_reports_errors_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--max_lrr", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: unknown option --max_lrr; did you mean --max_lr?\n"


# --- the training step against a plain PyTorch reference ---------------------------------------


def schedule(t: int, c: TrainConfig) -> float:
    """Linear warm-up from 0, then a half cosine from max_lr down to min_lr at max_iters; or for
    WSD, max_lr until the last decay_fraction of the steps, then a straight line to min_lr."""
    if t < c.warmup_iters:
        return c.max_lr * t / c.warmup_iters
    if c.schedule == "wsd":
        steps_left = (c.max_iters - t) / round(c.decay_fraction * c.max_iters)
        return c.min_lr + (c.max_lr - c.min_lr) * min(1.0, steps_left)
    progress = (t - c.warmup_iters) / (c.max_iters - c.warmup_iters)
    return c.min_lr + (c.max_lr - c.min_lr) * (1 + math.cos(math.pi * progress)) / 2


def reference_training(config: TrainConfig, initial: dict, batches: list, tokens: np.ndarray):
    """The run written with torch's own loss, clipping and AdamW (or SGD with lr / sqrt(t + 1)
    by hand), on the same initial weights and windows. Returns (weights, [(loss, norm, lr)])."""
    model = Transformer(config.model)
    model.load_state_dict(initial)
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, betas=config.betas, eps=config.eps, foreach=False)
    ctx, records = config.model.context_length, []
    for t, starts in enumerate(batches):
        lr = schedule(t, config)
        windows = np.stack([tokens[s : s + ctx + 1] for s in starts.tolist()]).astype(np.int64)
        windows = torch.from_numpy(windows)
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        loss.backward()
        norm = (
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip) if config.grad_clip else None
        )
        with torch.no_grad():
            if config.optimizer == "adamw":
                for group in adamw.param_groups:
                    group["lr"] = lr
                adamw.step()
            else:
                for group in groups:
                    for p in group["params"]:
                        p.mul_(1 - lr * group["weight_decay"])
                        p.add_(p.grad, alpha=-lr / math.sqrt(t + 1))
        model.zero_grad(set_to_none=True)
        records.append((loss.item(), None if norm is None else norm.item(), lr))
    return model.state_dict(), records


@pytest.mark.parametrize(
    "overrides",
    [
        # A large eps and weight decay, and a clip that bites, so that each one shows.
        dict(optimizer="adamw", max_lr=1e-3, eps=1e-4, weight_decay=0.5, grad_clip=0.05),
        dict(optimizer="sgd", max_lr=0.5, weight_decay=0.2, grad_clip=0.0),
        dict(optimizer="adamw", max_lr=1e-3, grad_clip=0.05, schedule="wsd", decay_fraction=0.5),
    ],
)
def test_training_steps_equal_a_plain_pytorch_reference(
    token_data_dir, tmp_path, monkeypatch, overrides
):
    initial, batches = {}, []
    make_model, sample = training.Transformer, training.sample_starts

    def spy_model(*args, **kwargs):
        model = make_model(*args, **kwargs)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    def spy_starts(*args, **kwargs):
        batches.append(sample(*args, **kwargs).clone())
        return batches[-1]

    monkeypatch.setattr(training, "Transformer", spy_model)
    monkeypatch.setattr(training, "sample_starts", spy_starts)
    config = train_config(
        token_data_dir, tmp_path / "run", max_iters=4, warmup_iters=1, min_lr=1e-4,
        betas=(0.8, 0.9), grad_accum_steps=2, log_interval=1, valid_data="", **overrides,
    )  # fmt: skip
    train(config)
    monkeypatch.undo()
    assert len(batches) == 4 and all(b.shape == (8,) for b in batches)

    tokens = np.load(token_data_dir / "train.npy")
    weights, records = reference_training(config, initial, batches, tokens)
    ours = read_checkpoint(tmp_path / "run")["model"]
    torch.testing.assert_close(ours, weights, atol=2e-6, rtol=0)
    moved = max((weights[k] - initial[k]).abs().max().item() for k in weights)
    assert moved > 1e-3  # the tolerance is far below how far the weights moved
    logged = [r for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["tokens"] for r in logged] == [s * 8 * 64 for s in (1, 2, 3, 4)]
    for record, (loss, norm, lr) in zip(logged, records, strict=True):
        assert record["loss"] == pytest.approx(loss, rel=1e-5)
        assert record["lr"] == pytest.approx(lr, rel=1e-12, abs=1e-15)
        if norm is None:
            assert record["grad_norm"] is None
        else:
            assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)
            assert norm > config.grad_clip  # the clip did bite


def test_logged_loss_is_the_mean_over_the_log_interval(token_data_dir, tmp_path):
    losses = {}
    for interval in (1, 3):
        config = train_config(
            token_data_dir,
            tmp_path / str(interval),
            max_iters=7,
            log_interval=interval,
            valid_data="",
        )
        train(config)
        losses[interval] = {
            r["step"]: r["loss"] for r in read_metrics(config.run_dir) if r["type"] == "train"
        }
    per_step = losses[1]
    assert list(losses[3]) == [3, 6, 7]  # and the last step, mid-interval
    for step, first in ((3, 1), (6, 4), (7, 7)):
        expected = np.mean([per_step[s] for s in range(first, step + 1)])
        assert losses[3][step] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("final_eval", ["sampled", "none"])
def test_final_evaluation_modes(token_data_dir, tmp_path, final_eval):
    run = tmp_path / "run"
    result = train(
        train_config(token_data_dir, run, max_iters=6, eval_interval=4, final_eval=final_eval)
    )
    evals = [(r["step"], r["exact"]) for r in read_metrics(run) if r["type"] == "eval"]
    if final_eval == "sampled":  # the fixed windows again, at the last step
        assert evals == [(4, False), (6, False)] and result["val_exact"] is False
    else:  # no final evaluation: the result holds the last periodic one
        assert evals == [(4, False)] and result["val_exact"] is False
    last = [r for r in read_metrics(run) if r["type"] == "eval"][-1]
    assert result["val_loss"] == last["loss"]


# --- what the logs promise: speed, MFU, bits per byte, time limits, finite weights ------------


SMALL_TRAIN_MODEL = TrainConfig().model  # the "tiny" preset that train_config trains


class StepClock:
    """A fake perf_counter that advances `seconds` per training step and never otherwise, so
    that evaluation and checkpointing take no time and each step exactly `seconds`."""

    def __init__(self, monkeypatch, seconds: float) -> None:
        self.now, real_step = 0.0, training._train_step

        def timed_step(run, starts):
            self.now += seconds
            return real_step(run, starts)

        monkeypatch.setattr(training.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(training, "_train_step", timed_step)


def test_tokens_per_second_and_mfu_follow_from_the_clock_and_the_peak(
    token_data_dir, tmp_path, monkeypatch
):
    StepClock(monkeypatch, seconds=0.25)
    monkeypatch.setattr(training, "peak_flops", lambda device, dtype: 1e9)
    train(train_config(token_data_dir, tmp_path / "run", valid_data=""))
    c = SMALL_TRAIN_MODEL
    # PaLM's count, written out: 6 x matmul weights + 12 x layers x d_model x context.
    matmul_weights = c.num_layers * (4 * c.d_model**2 + 3 * c.d_model * c.d_ff)
    flops_per_token = 6 * (matmul_weights + c.d_model * c.vocab_size)
    flops_per_token += 12 * c.num_layers * c.d_model * c.context_length
    tokens_per_step = 8 * c.context_length  # batch_size 8
    for record in [r for r in read_metrics(tmp_path / "run") if r["type"] == "train"]:
        assert record["tokens_per_s"] == pytest.approx(tokens_per_step / 0.25)
        assert record["mfu"] == pytest.approx(tokens_per_step / 0.25 * flops_per_token / 1e9)
        assert record["train_seconds"] == pytest.approx(record["step"] * 0.25)


def test_resuming_a_run_stopped_by_its_time_limit_carries_its_training_time(
    token_data_dir, tmp_path, monkeypatch
):
    StepClock(monkeypatch, seconds=0.25)
    run = tmp_path / "run"
    first = train(train_config(token_data_dir, run, max_train_seconds=1.0, final_eval="none"))
    assert first["step"] == 4 and first["train_seconds"] == pytest.approx(1.0)
    # One more second: 4 more steps, not the 8 a clock starting again from 0 would allow.
    again = train(
        load_train_config(["--run_dir", str(run), "--resume", "--max_train_seconds", "2"])
    )
    assert again["step"] == 8 and again["train_seconds"] == pytest.approx(2.0)


def test_a_time_limited_run_shows_the_time_left_and_how_to_train_longer(
    token_data_dir, tmp_path, monkeypatch, capsys
):
    StepClock(monkeypatch, seconds=0.25)
    bars, make_bar = [], training._progress_bar
    monkeypatch.setattr(
        training, "_progress_bar", lambda run: bars.append(make_bar(run)) or bars[-1]
    )
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, max_train_seconds=1.0, final_eval="none"))
    (bar,) = bars
    assert (bar.total, bar.n, bar.unit, bar.desc) == (1.0, 1.0, "s", "step 4")  # not 4/12 steps
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"done at step 4: checkpoint {run / 'checkpoint.pt'}, metrics ")
    resume = f"uv run -m llm.training --run_dir {run} --resume"
    assert f"; train longer with: {resume} --max_train_seconds 2;" in last


def test_periodic_evaluation_counts_the_bytes_of_the_tokenizers_tokens(token_data_dir, tmp_path):
    vocab = {i: bytes([i]) for i in range(256)}  # then 128 tokens of 2 bytes, 128 of 3
    merges = [(bytes([k]), bytes([7 * k % 256])) for k in range(128)]
    merges += [(merges[k][0] + merges[k][1], bytes([k])) for k in range(128)]
    vocab.update({256 + i: a + b for i, (a, b) in enumerate(merges)})
    tokenizer_dir = tmp_path / "tokenizer"
    BpeTokenizer(vocab, merges).save(tokenizer_dir)
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, tokenizer_dir=str(tokenizer_dir), final_eval="none"))
    valid = np.load(token_data_dir / "valid.npy")
    ctx = SMALL_TRAIN_MODEL.context_length
    predicted = [valid[s + 1 : s + 1 + ctx] for s in eval_starts(len(valid), ctx, 8)]
    expected_bytes = sum(len(vocab[int(t)]) for window in predicted for t in window)
    evals = [r for r in read_metrics(run) if r["type"] == "eval"]
    assert evals and expected_bytes > 1.5 * len(predicted) * ctx  # bytes, not tokens
    for record in evals:
        assert record["bytes"] == expected_bytes
        nats = record["loss"] * record["tokens"]
        assert record["bits_per_byte"] == pytest.approx(nats / math.log(2) / expected_bytes)


def test_a_weight_that_is_not_finite_stops_the_run_before_it_is_saved(
    token_data_dir, tmp_path, monkeypatch
):
    real_step = training._train_step

    def step_that_breaks_a_weight(run, starts):
        result = real_step(run, starts)  # the loss of this step is still finite
        if run.step == 3:  # the 4th step, whose checkpoint is due
            with torch.no_grad():
                run.model.final_norm.weight[0] = float("inf")
        return result

    monkeypatch.setattr(training, "_train_step", step_that_breaks_a_weight)
    run = tmp_path / "run"
    config = train_config(token_data_dir, run, checkpoint_interval=2, log_interval=100)
    with pytest.raises(TrainingDiverged, match="final_norm.weight is not finite after step 4"):
        train(config)
    saved = read_checkpoint(run)
    assert saved["iteration"] == 2 and torch.isfinite(saved["model"]["final_norm.weight"]).all()


# --- the command line: one line for every mistake, nothing changed --------------------------


def tree(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes: to show that a failed start changed nothing."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        training.main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--max_lr", "-1"], 2, "max_lr must be > 0"),
        (["--max_lr", "nan"], 2, "max_lr must be > 0"),
        (["--min_lr", "-1e-4"], 2, "min_lr must be >= 0"),
        (["--device", "cuda:99"], 2, "'cuda:99'"),
        (["--run_dir", "{tmp}/afile"], 2, "is a file, not a directory"),
        (["--run_dir", "{tmp}/afile/run"], 2, "afile/run: .*afile is a file, not a directory"),
        (["--train_data", "{tmp}/missing.npy"], 1, "token file .*missing.npy does not exist"),
        (["--train_data", "{tmp}/afile"], 1, "afile is not a .npy array of token ids \\(a text"),
        (["--resume"], 2, "no run to resume at .*r: the directory does not exist; start it wi"),
        (["--batch_size", "0"], 2, "batch_size must be at least 1"),
        (["--model.num_heads", "0"], 2, "num_heads must be at least 1, not 0"),
        (["--model.context_length", "-8"], 2, "context_length must be at least 1, not -8"),
        (["--model.d_ff", "0"], 2, "d_ff must be at least 1"),
    ],
)
def test_bad_training_settings_are_one_line_errors_that_write_nothing(
    token_data_dir, tmp_path, capsys, flags, code, message
):
    (tmp_path / "afile").write_text("not a directory")
    before = tree(tmp_path)
    base = ["--train_data", str(token_data_dir / "train.npy"), "--run_dir", str(tmp_path / "r")]
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    got_code, err = run_main([*base, *flags, "--max_iters", "2"], capsys)
    assert got_code == code and re.match(f"error: .*{message}", err) and err.count("\n") == 1
    assert tree(tmp_path) == before and not (tmp_path / "r").exists()


def test_resume_with_another_shape_fails_and_keeps_the_run_as_it_was(
    token_data_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, max_iters=2, valid_data="", final_eval="none"))
    before = tree(run)
    capsys.readouterr()
    code, err = run_main(["--run_dir", str(run), "--resume", "--model.d_model", "128"], capsys)
    assert code == 1 and err.startswith("error: checkpoint does not fit the model")
    assert tree(run) == before  # config.json too: a plain --resume still works
    assert train(load_train_config(["--run_dir", str(run), "--resume"]))["step"] == 2


def test_a_start_removes_the_temp_files_of_a_killed_save(token_data_dir, tmp_path):
    run = tmp_path / "run"
    train(train_config(token_data_dir, run, max_iters=2, valid_data="", final_eval="none"))
    dead_pid = 2**22 + 1  # above Linux's pid_max: no process has it
    stale = run / f".checkpoint.pt.{dead_pid}.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(load_train_config(["--run_dir", str(run), "--resume", "--max_iters", "3"]))
    assert not stale.exists() and (run / "checkpoint.pt").is_file()


def test_ctrl_c_before_the_first_log_saves_and_exits_130(token_data_dir, tmp_path, monkeypatch):
    ctrl_c_at_step(monkeypatch, training, 0)
    run = tmp_path / "run"
    argv = ["--train_data", str(token_data_dir / "train.npy"), "--run_dir", str(run)]
    with pytest.raises(SystemExit) as exit_info:
        training.main([*argv, "--log_interval", "100", "--device", "cpu"])
    assert exit_info.value.code == 130
    assert read_checkpoint(run)["iteration"] == 1 and (run / "img" / "loss.png").is_file()


def test_help_into_a_closed_pipe_ends_without_a_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already gone
    done = subprocess.run(
        [sys.executable, "-m", "llm.training", "--help"],
        stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    os.close(write_end)
    assert done.stderr == "" and done.returncode == 1
