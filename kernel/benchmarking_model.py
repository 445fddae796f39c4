"""Time the model: forward, forward + backward, and a full training step (with our AdamW);
or, with --memory, measure the peak memory per process of a training step.

    uv run kernel/benchmarking_model.py --size tinystories-17m --batch-size 8 --compare-hf
    uv run kernel/benchmarking_model.py --size tinystories-17m --memory --processes 2

With --compare-hf, Hugging Face's LlamaForCausalLM with the same weights is timed in the same
run, step for step alternating with ours, so both see the same machine load; the last line gives
our speed as a ratio of theirs. Results for this project are in docs/benchmarks.md.

--memory runs one training step (forward, backward, AdamW; after a first step that creates the
optimizer state) in each mode: one process, DDP and FSDP over --processes processes, each with
and without activation checkpointing; every process gets --batch-size sequences. It reports the
largest peak over the processes. On CUDA the peak is torch.cuda.max_memory_allocated. On CPU it
is the peak resident memory of the process during the step (VmHWM, reset just before it through
/proc/self/clear_refs) less the resident memory before the model was built (Python, torch,
Gloo). For that difference to be the training's memory: glibc's mmap threshold is fixed at
64 KB, so that every larger tensor gets its own mapping, returned to the system when the tensor
is freed (resident memory follows the live tensors, not what the allocator keeps for reuse);
and the processes are forked from one that already ran a step of a tiny model, so that the
modules PyTorch imports on first use are loaded before the baseline is taken.
"""

import ctypes
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from llm.cli import parse, run_main
from llm.device import autocast, peak_flops, resolve_device, setup_distributed
from llm.optim import AdamW
from llm.sharding import shard_model
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
    memory: bool = False  # measure peak memory per process of a training step instead
    processes: int = 2  # --memory: processes of the DDP and FSDP measurements

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
    if args.memory:
        return memory_table(args)
    config = replace(MODEL_PRESETS[args.size], attention=args.attention)
    if args.context_length:
        config = replace(config, context_length=args.context_length)
    torch.manual_seed(0)
    model = Transformer(config).to(device)
    models = {"ours": model}
    if args.compare_hf:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from hf_llama import to_hf_llama  # tests/hf_llama.py, the tests' reference

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


MEMORY_MODES = [  # (name, processes: 1 or --processes, parallel, activation checkpointing)
    ("one process", False, "ddp", False),
    ("one process + AC", False, "ddp", True),
    ("DDP", True, "ddp", False),
    ("DDP + AC", True, "ddp", True),
    ("FSDP", True, "fsdp", False),
    ("FSDP + AC", True, "fsdp", True),
]


def memory_table(args: BenchConfig) -> None:
    """Peak memory per process of a training step in each mode, as a markdown table."""
    if resolve_device(args.device).type == "cpu":
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD (glibc), see the top
        _warm_up()
    print(
        f"{args.size}, batch {args.batch_size} per process, "
        f"{'bf16' if args.bf16 else 'fp32'}, {args.device}, {args.processes} processes\n"
        "| mode | processes | peak memory per process (MB) |\n| --- | ---: | ---: |"
    )
    cpu = resolve_device(args.device).type == "cpu"
    context = multiprocessing.get_context("fork" if cpu else "spawn")  # CUDA cannot fork
    for name, multi, parallel, recompute in MEMORY_MODES:
        n = args.processes if multi else 1
        results = context.Queue()
        with socket.socket() as s:  # a free port for this job's rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        workers = [
            context.Process(
                target=_memory_worker, args=(r, n, port, parallel, recompute, args, results)
            )
            for r in range(n)
        ]
        for w in workers:
            w.start()
        peaks = [results.get(timeout=600) for _ in workers]
        for w in workers:
            w.join()
        print(f"| {name} | {n} | {max(peaks) / 2**20:,.0f} |", flush=True)


def _warm_up() -> None:
    """One training step of a tiny model with activation checkpointing: what it imports and
    sets up on first use is then in place in the processes forked from this one."""
    model = Transformer(MODEL_PRESETS["tiny"])
    model.activation_checkpointing = True
    optimizer = AdamW(model.parameters())
    ids = torch.randint(0, 512, (1, 9))
    cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
    optimizer.step()


def _memory_worker(
    rank: int, world: int, port: int, parallel: str, recompute: bool, args: BenchConfig, results
) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
    )  # fmt: skip
    torch.set_num_threads(args.threads or 1)
    dist = setup_distributed(args.device, always=parallel == "fsdp")
    device, dtype = dist.device, torch.bfloat16 if args.bf16 else None
    baseline = _resident_bytes() if device.type == "cpu" else 0
    config = replace(MODEL_PRESETS[args.size], attention=args.attention)
    if args.context_length:
        config = replace(config, context_length=args.context_length)
    torch.manual_seed(0)
    model = Transformer(config).to(device)
    model.activation_checkpointing = recompute
    if parallel == "fsdp":
        shard_model(model, device, dtype)
    loss_model = DistributedDataParallel(model) if parallel == "ddp" and world > 1 else model
    optimizer = AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, config.context_length + 1))
    ids = ids.to(device)

    def step() -> None:
        with autocast(device, dtype):
            loss = cross_entropy(loss_model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the optimizer state, which the measured step then holds
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current resident memory
        step()
        peak = _status_bytes("VmHWM") - baseline
    results.put(peak)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _resident_bytes() -> int:
    return _status_bytes("VmRSS")


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    raise RuntimeError(f"no {key} in /proc/self/status: --memory on CPU needs Linux")


if __name__ == "__main__":
    main()
