"""Time the model: forward, forward + backward, and a full training step (with our AdamW).

    uv run kernel/benchmarking_model.py --size tinystories-17m --batch-size 8 --compare-hf

With --compare-hf, Hugging Face's LlamaForCausalLM with the same weights is timed in the same
run, step for step alternating with ours, so both see the same machine load; the last line gives
our speed as a ratio of theirs. Results for this project are in docs/benchmarks.md.
"""

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from llm.cli import parse, run_main
from llm.device import peak_flops, resolve_device
from llm.optim import AdamW
from llm.transformer import MODEL_PRESETS, Transformer, cross_entropy


def hf_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss LlamaForCausalLM computes: PyTorch's cross-entropy on float32 logits."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


LOSSES = {"ours": cross_entropy, "hf-llama": hf_loss}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, loss_fn, mode: str, ids, targets, autocast) -> Callable[[], None]:
    """One unit of work of the given mode, as a closure that the timer calls."""
    optimizer = AdamW(model.parameters(), lr=1e-4) if mode == "train" else None

    def logits():
        out = model(ids)
        return out.logits if hasattr(out, "logits") else out

    def step() -> None:
        if mode == "forward":
            with torch.no_grad(), autocast():
                logits()
            return
        with autocast():
            loss = loss_fn(logits(), targets)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    return step


def time_steps(steps: dict[str, Callable], warmup: int, n: int, device) -> dict[str, list[float]]:
    """Run each step function warmup + n times, round-robin, and return n timings of each."""
    times = {name: [] for name in steps}
    for i in range(warmup + n):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


@dataclass
class BenchConfig:
    """What to time."""

    size: str = "tinystories-17m"  # a model preset (llm.transformer.MODEL_PRESETS)
    batch_size: int = 8  # sequences per step
    context_length: int = 0  # tokens per sequence (0 = the preset's)
    mode: str = "all"  # forward, backward (= forward + backward), train (+ AdamW), or all
    warmup: int = 2  # untimed steps first
    steps: int = 5  # timed steps
    attention: str = "fused"  # "fused" (PyTorch's SDPA kernel) or "ours"
    bf16: bool = False  # bf16 autocast (CUDA)
    compile: bool = False  # torch.compile the model
    compare_hf: bool = False  # also time Hugging Face's LlamaForCausalLM, alternating
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    threads: int = 0  # CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        if self.size not in MODEL_PRESETS:
            raise ValueError(f"size must be one of {', '.join(MODEL_PRESETS)}, not {self.size!r}")
        if self.attention not in ("fused", "ours"):
            raise ValueError(f"attention must be 'fused' or 'ours', not {self.attention!r}")
        if self.mode not in ("forward", "backward", "train", "all"):
            raise ValueError(f"mode must be forward, backward, train or all, not {self.mode!r}")


def main() -> None:
    args = run_main(
        lambda: parse(BenchConfig, description=__doc__, prog="uv run kernel/benchmarking_model.py")
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = run_main(lambda: resolve_device(args.device), errors=(ValueError,))
    config = replace(MODEL_PRESETS[args.size], attention=args.attention)
    if args.context_length:
        config = replace(config, context_length=args.context_length)
    torch.manual_seed(0)
    model = Transformer(config).to(device)
    models = {"ours": model}
    if args.compare_hf:
        from hf_llama import to_hf_llama  # kernel/hf_llama.py, beside this script

        models["hf-llama"] = to_hf_llama(model).train()
    if args.compile:
        models = {name: torch.compile(m) for name, m in models.items()}

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()

    seq = config.context_length
    ids = torch.randint(0, config.vocab_size, (args.batch_size, seq), device=device)
    targets = torch.randint(0, config.vocab_size, (args.batch_size, seq), device=device)
    tokens = args.batch_size * seq
    peak = peak_flops(device, torch.bfloat16 if args.bf16 else None)  # known for bf16 only
    modes = ["forward", "backward", "train"] if args.mode == "all" else [args.mode]

    print(
        f"{args.size}: {model.num_parameters() / 1e6:.1f}M parameters, batch {args.batch_size} x "
        f"{seq}, {device}, {'bf16 autocast' if args.bf16 else 'fp32'}, attention={args.attention}"
        f"{', compiled' if args.compile else ''}, threads={torch.get_num_threads()}"
    )
    for mode in modes:
        steps = {
            name: make_step(m, LOSSES[name], mode, ids, targets, autocast)
            for name, m in models.items()
        }
        times = time_steps(steps, args.warmup, args.steps, device)
        for name, ts in times.items():
            mean, std = statistics.mean(ts), statistics.stdev(ts) if len(ts) > 1 else 0.0
            flops = model.flops_per_token(seq) * tokens / (3 if mode == "forward" else 1)
            mfu = f", MFU {flops / mean / peak:.1%}" if peak else ""
            print(
                f"  {mode:8s} {name:8s} {mean * 1e3:9.1f} ms +- {std * 1e3:6.1f} ms  "
                f"{tokens / mean:10,.0f} tokens/s{mfu}"
            )
        if "hf-llama" in times:
            ratio = statistics.mean(times["hf-llama"]) / statistics.mean(times["ours"])
            print(f"  {mode:8s} ours / hf-llama speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
