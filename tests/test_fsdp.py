"""FSDP (parallel = "fsdp"): 2 Gloo processes holding half the model each train exactly like
one process; their sharded checkpoints resume on 1 or 2 processes and consolidate into one file;
activation checkpointing changes no gradient.

One launch of 2 forked ranks (conftest.ranks_context) runs five jobs in turn;
every run uses a constant learning rate, so that a 10-step run resumed to 20 steps is the first
half of a 20-step run."""

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
from conftest import markov_tokens, ranks_context

from llm import plots
from llm.checkpoint import consolidate, load_model, read_checkpoint
from llm.loading import load, read_config
from llm.training import load_train_config, train
from llm.transformer import Transformer


def _rank_main(rank: int, jobs: list[tuple[int, list[str]]]) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo",
    )  # fmt: skip
    for port, argv in jobs:
        os.environ["MASTER_PORT"] = str(port)
        train(load_train_config(argv))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in plots.read_metrics(run_dir) if r["type"] == "train"}


def _final_eval(run_dir) -> float:
    return [r["loss"] for r in plots.read_metrics(run_dir) if r["type"] == "eval"][-1]


def _grad_norms(run_dir) -> list[float]:
    return [r["grad_norm"] for r in plots.read_metrics(run_dir) if r["type"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories: `single` (one process, 20 steps, DDP mode: the reference); `fsdp` (2
    processes, 20 steps, activation checkpointing); `two_to_one` (2 processes to step 10, then
    1 to step 20, from a checkpoint whose next save was killed); `one_to_two` (the reverse);
    `single_muon` and `fsdp_muon` (6 steps); `single_tied_sgd` and `fsdp_tied_sgd` (6 steps, tied
    embeddings, SGD)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    tokens = markov_tokens(5000)
    np.save(tmp / "train.npy", tokens[:4000])
    np.save(tmp / "valid.npy", tokens[4000:])
    args = [
        "--train_data", str(tmp / "train.npy"), "--valid_data", str(tmp / "valid.npy"),
        "--final_eval", "sampled", "--eval_windows", "8", "--model.context_length", "16",
        "--model.d_model", "32", "--model.num_heads", "2", "--model.d_ff", "64",
        "--max_lr", "1e-3", "--min_lr", "1e-3", "--warmup_iters", "0", "--batch_size", "8",
        "--grad_accum_steps", "2", "--grad_clip", "0.5", "--log_interval", "1",
        "--device", "cpu", "--threads", "1",
    ]  # fmt: skip
    fsdp = [*args, "--parallel", "fsdp"]
    muon = ["--optimizer", "muon", "--max_lr", "0.02", "--min_lr", "0.02", "--max_iters", "6"]
    tied_sgd = ["--model.tie_embeddings", "--optimizer", "sgd", "--max_lr", "0.05",
                "--min_lr", "0.05", "--max_iters", "6"]  # fmt: skip
    threads = torch.get_num_threads()
    train(load_train_config([*args, "--max_iters", "20", "--run_dir", str(tmp / "single")]))
    train(load_train_config([*fsdp, "--max_iters", "10", "--run_dir", str(tmp / "one_to_two")]))
    train(load_train_config([*args, *muon, "--run_dir", str(tmp / "single_muon")]))
    train(load_train_config([*args, *tied_sgd, "--run_dir", str(tmp / "single_tied_sgd")]))
    resume = ["--resume", "--max_iters", "20", "--run_dir"]
    jobs = [
        [*fsdp, "--max_iters", "20", "--activation_checkpointing", "--run_dir", str(tmp / "fsdp")],
        [*fsdp, "--max_iters", "10", "--run_dir", str(tmp / "two_to_one")],
        [*resume, str(tmp / "one_to_two")],
        [*fsdp, *muon, "--run_dir", str(tmp / "fsdp_muon")],
        [*fsdp, *tied_sgd, "--run_dir", str(tmp / "fsdp_tied_sgd")],
    ]
    jobs = [(_free_port(), argv) for argv in jobs]
    context = ranks_context()
    ranks = [context.Process(target=_rank_main, args=(r, jobs)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=600)  # four short jobs; minutes only on a starved machine
        if process.exitcode is None:
            process.kill()
    assert [p.exitcode for p in ranks] == [0, 0]
    # As if killed in its next save, between the two renames: a partial new checkpoint, and the
    # last complete one moved aside.
    checkpoint = tmp / "two_to_one" / "checkpoint.dcp"
    checkpoint.rename(checkpoint.with_name("checkpoint.dcp.old"))
    checkpoint.with_name("checkpoint.dcp.tmp").mkdir()
    (checkpoint.with_name("checkpoint.dcp.tmp") / "__0_0.distcp").write_bytes(b"partial")
    train(load_train_config([*resume, str(tmp / "two_to_one")]))
    torch.set_num_threads(threads)
    return tmp


def test_fsdp_trains_like_one_process(runs):
    single, fsdp = _losses(runs / "single"), _losses(runs / "fsdp")
    assert list(fsdp) == list(range(1, 21))
    assert max(abs(fsdp[s] - single[s]) for s in single) < 1e-5
    # The norm of the sharded gradients is the whole gradient's, and clipping was on.
    norms = _grad_norms(runs / "single")
    np.testing.assert_allclose(_grad_norms(runs / "fsdp"), norms, rtol=1e-5)
    assert min(norms) > 0.5
    # Every rank evaluates the sharded model (each forward needs them all), with the same result.
    assert abs(_final_eval(runs / "fsdp") - _final_eval(runs / "single")) < 1e-5

    # The consolidated checkpoint holds the same weights, and load_model's model the same logits.
    out = consolidate(runs / "fsdp", runs / "fsdp.pt")
    reference = read_checkpoint(runs / "single")["model"]
    torch.testing.assert_close(read_checkpoint(out)["model"], reference, atol=1e-5, rtol=0)
    model, checkpoint = load_model(out)
    assert checkpoint["iteration"] == 20
    expected = Transformer(model.config)
    expected.load_state_dict(reference)
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), expected(tokens), atol=1e-4, rtol=0)
    # The weights moved far more than the tolerance, so the comparisons mean something.
    torch.manual_seed(0)  # the runs' seed: their initial weights
    for name, value in Transformer(model.config).named_parameters():
        assert (reference[name] - value).abs().max() > 1e-4, name


def test_the_loader_reads_a_sharded_run_as_its_consolidated_checkpoint(runs, tmp_path):
    """`--checkpoint RUN_DIR` (llm/loading.py) gathers a sharded run in one process, without
    consolidating it to a file first."""
    loaded = load(runs / "one_to_two", tokenizer=False)  # vocab 512: no tokenizer made the ids
    assert loaded.format == "sharded" and loaded.info["iteration"] == 20
    whole = read_checkpoint(consolidate(runs / "one_to_two", tmp_path / "whole.pt"))["model"]
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, whole[name]), name
    assert read_config(runs / "one_to_two")[0] == loaded.model.config


@pytest.mark.parametrize("run", ["two_to_one", "one_to_two"])
def test_sharded_checkpoint_resumes_on_another_number_of_processes(runs, run):
    resumed, fsdp = _losses(runs / run), _losses(runs / "fsdp")
    assert list(resumed) == list(range(1, 21))
    assert max(abs(resumed[s] - fsdp[s]) for s in range(11, 21)) < 1e-5
    # The final save replaced the checkpoint whole and left nothing else behind.
    assert sorted(p.name for p in runs.glob(f"{run}/checkpoint*")) == ["checkpoint.dcp"]


def test_activation_checkpointing_gives_the_same_gradients(small_config):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(small_config, num_layers=2))
    tokens = torch.randint(0, small_config.vocab_size, (2, small_config.context_length))
    saved = []  # the tensors the forward keeps for the backward, outside checkpointed blocks
    grads = []
    for recompute in (False, True):
        model.activation_checkpointing = recompute
        model.zero_grad()
        saved.append(0)
        with torch.autograd.graph.saved_tensors_hooks(_count_into(saved), lambda t: t):
            loss = model(tokens).square().mean()
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    torch.testing.assert_close(grads[1], grads[0], atol=0, rtol=0)
    assert saved[1] < saved[0] / 2  # the blocks' activations were recomputed, not kept


def _count_into(counts: list[int]):
    def pack(t: torch.Tensor) -> torch.Tensor:
        counts[-1] += t.numel()
        return t

    return pack


def test_fsdp_muon_orthogonalises_whole_matrices(runs):
    """Each process gathers a sharded matrix's whole update for Newton-Schulz: on slices alone
    the updates, and so the weights, would differ from one process's."""
    single, fsdp = _losses(runs / "single_muon"), _losses(runs / "fsdp_muon")
    assert max(abs(fsdp[s] - single[s]) for s in single) < 1e-5
    weights = read_checkpoint(consolidate(runs / "fsdp_muon", runs / "fsdp_muon.pt"))["model"]
    reference = read_checkpoint(runs / "single_muon")["model"]
    torch.testing.assert_close(weights, reference, atol=1e-5, rtol=0)


def test_fsdp_with_tied_embeddings_and_sgd_trains_like_one_process(runs):
    """One matrix both embeds and un-embeds, sharded once; SGD updates each process's slice."""
    single, fsdp = _losses(runs / "single_tied_sgd"), _losses(runs / "fsdp_tied_sgd")
    assert list(fsdp) == list(range(1, 7))
    assert max(abs(fsdp[s] - single[s]) for s in single) < 1e-5
    weights = read_checkpoint(consolidate(runs / "fsdp_tied_sgd", runs / "tied.pt"))["model"]
    reference = read_checkpoint(runs / "single_tied_sgd")["model"]
    torch.testing.assert_close(weights, reference, atol=1e-5, rtol=0)
    model, _ = load_model(runs / "tied.pt")
    assert model.lm_head.weight is model.embedding.weight
