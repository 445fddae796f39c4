"""Validation loss of trained models on windows longer than they were trained on: ALiBi's claim
(Press et al., 2022, "Train Short, Test Long") that a model trained on L tokens keeps its loss on
longer inputs, where RoPE's does not.

    uv run kernel/length_extrapolation.py runs/sweep-attention --factor 2

Each run (a run directory, or a sweep's directory: every run in it) is rebuilt with
context_length = factor x its own and its weights loaded unchanged: no weight depends on the
context length (RoPE's tables and ALiBi's slopes are buffers, rebuilt). The validation split is
cut into non-overlapping windows of factor x L tokens, and the mean loss (nats per token) is
printed, as a Markdown table, for the positions 0 .. L-1 of each window (what the model was
trained on) and for the positions L .. factor x L - 1 (never seen in training).
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llm.checkpoint import load_model
from llm.cli import parse, run_main
from llm.transformer import Transformer, no_weight_init


def longer(model: Transformer, factor: int) -> Transformer:
    """The same weights in a model with factor x the context length."""
    config = dataclasses.replace(model.config, context_length=factor * model.config.context_length)
    with no_weight_init():  # the model's weights replace them
        extended = Transformer(config)
    extended.load_state_dict(model.state_dict())
    return extended.eval()


@torch.no_grad()
def loss_per_position(model: Transformer, tokens: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(context_length,): the mean loss at each position of non-overlapping windows."""
    seq = model.config.context_length
    windows = torch.from_numpy(tokens[: (len(tokens) - 1) // seq * seq + 1].astype(np.int64))
    inputs = windows[:-1].view(-1, seq)  # (windows, seq)
    targets = windows[1:].view(-1, seq)
    total = torch.zeros(seq, dtype=torch.float64)
    for i in range(0, len(inputs), batch_size):
        logits = model(inputs[i : i + batch_size])  # (batch, seq, vocab)
        nats = F.cross_entropy(
            logits.transpose(1, 2), targets[i : i + batch_size], reduction="none"
        )
        total += nats.double().sum(0)
    return (total / len(inputs)).numpy()


def run_dirs(path: str) -> list[Path]:
    """path itself if it is a run directory, else the run directories inside it (a sweep's)."""
    if (Path(path) / "checkpoint.pt").exists():
        return [Path(path)]
    return sorted(p.parent for p in Path(path).glob("*/checkpoint.pt"))


@dataclass
class ExtrapolationConfig:
    """What to evaluate."""

    runs: str = "runs/sweep-attention"  # a run directory, or a sweep's directory (every run)
    factor: int = 2  # evaluate on windows of factor x the training context
    valid: str = ""  # .npy validation tokens; "": each run's own valid_data
    threads: int = 1


def main() -> None:
    prog = "uv run kernel/length_extrapolation.py"
    args = run_main(
        lambda: parse(ExtrapolationConfig, description=__doc__, prog=prog, positional=("runs",))
    )
    torch.set_num_threads(args.threads)
    f = args.factor
    print(f"| run | windows of L: loss | windows of {f}L: positions < L | positions >= L |")
    print("| --- | ---: | ---: | ---: |")
    for run in run_dirs(args.runs):
        model, checkpoint = load_model(run)
        tokens = np.load(args.valid or checkpoint["train_config"]["valid_data"], mmap_mode="r")
        L = model.config.context_length
        trained = loss_per_position(model, tokens).mean()
        extended = loss_per_position(longer(model, f), tokens)
        long_loss, short_loss = extended[L:].mean(), extended[:L].mean()
        print(f"| {run.name} | {trained:.4f} | {short_loss:.4f} | {long_loss:.4f} |")


if __name__ == "__main__":
    main()
