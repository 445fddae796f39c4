"""DDP: 2 Gloo processes train exactly like one process with the same global batch (each rank
computes different windows; gradients are averaged).

The processes get the environment torchrun would give them (RANK, WORLD_SIZE, ...) and run
the same code as `torchrun --standalone --nproc_per_node=2 -m llm.training`. They are forked
from a server process that imported the training code once (conftest.ranks_context), which
starts them in milliseconds where fresh interpreters would spend seconds importing torch."""

import os
import socket

import numpy as np
import pytest
import torch
from conftest import ranks_context

from llm import plots
from llm.checkpoint import read_checkpoint
from llm.training import load_train_config, main, train
from llm.transformer import Transformer


def _rank_main(rank: int, port: int, argv: list[str]) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
    )  # fmt: skip
    main(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Muon: every rank computes the same orthogonalised update from the all-reduced gradient. Its
# AdamW part (embedding, lm_head, gains) at a smaller lr: see the tolerance below.
@pytest.mark.parametrize(
    "optimizer",
    [["--max_lr", "1e-3"], ["--optimizer", "muon", "--max_lr", "0.02", "--adam_lr", "3e-4"]],
    ids=["adamw", "muon"],
)
def test_two_gloo_processes_match_one_process(tmp_path, optimizer):
    tokens = np.random.default_rng(0).integers(0, 512, 6000).astype(np.uint16)
    np.save(tmp_path / "train.npy", tokens[:5000])
    np.save(tmp_path / "valid.npy", tokens[5000:])
    args = [
        "--train_data", str(tmp_path / "train.npy"), "--valid_data", str(tmp_path / "valid.npy"),
        "--max_iters", "4", "--warmup_iters", "1", "--batch_size", "8", *optimizer,
        "--log_interval", "2", "--eval_interval", "2", "--eval_windows", "4",
        "--final_eval", "sampled", "--device", "cpu", "--threads", "1",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    single = train(load_train_config([*args, "--run_dir", str(tmp_path / "single")]))
    torch.set_num_threads(threads)

    # 2 ranks x 2 micro-steps x 2 sequences: exercises no_sync on the inner micro-step.
    ddp_run = tmp_path / "ddp"
    ddp_args = [*args, "--grad_accum_steps", "2", "--run_dir", str(ddp_run)]
    context = ranks_context()
    port = _free_port()
    ranks = [context.Process(target=_rank_main, args=(r, port, ddp_args)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [p.exitcode for p in ranks] == [0, 0]

    ddp_weights = read_checkpoint(ddp_run)["model"]
    single_weights = read_checkpoint(tmp_path / "single")["model"]
    torch.testing.assert_close(ddp_weights, single_weights, atol=1e-6, rtol=0)
    # The weights moved 100x more than the tolerance, so the comparison means something. (A
    # small lr: Adam gives small, rounding-dominated gradient elements full-size steps, so at
    # lr 1e-2 float32 summation order alone moves some weights by ~1e-6.)
    torch.manual_seed(0)  # the run's seed: its initial weights
    start = Transformer(load_train_config(args).model)
    for name, value in start.named_parameters():
        assert (single_weights[name] - value).abs().max() > 1e-4, name

    # Only rank 0 wrote the log: one record per step, no duplicates; losses match too.
    ddp_log = [r for r in plots.read_metrics(ddp_run) if r["type"] == "train"]
    assert [r["step"] for r in ddp_log] == [2, 4]
    assert abs(ddp_log[-1]["loss"] - single["train_loss"]) < 1e-5
