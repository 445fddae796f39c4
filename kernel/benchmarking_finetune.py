"""Fine-tuning step time and peak memory on SmolLM2-135M: our LoRA, our full fine-tuning, and
peft + transformers LoRA on the same weights, batch, sequence length and rank.

    uv run python kernel/benchmarking_finetune.py --steps 5 --batch 4 --seq 128 --rank 8
    uv run python kernel/benchmarking_finetune.py --steps 3 --rounds 3  # in turn, on a busy host

Each case runs in a process of its own (peak RSS is per process): load the model, then `steps`
optimizer steps (AdamW over the trained parameters) on fixed random token ids, the loss on every
position; the first step is a warm-up and not timed. Prints a markdown table (median step
seconds, peak RSS) for docs/benchmarks.md, and our LoRA step's time over peft's in each round.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ours(lora: bool, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    from llm.loading import load
    from llm.lora import LoraSettings, apply_lora
    from llm.post_training import get_response_log_probs, sft_microbatch_train_step

    model = load("smollm2-135m").model.train()
    if lora:
        apply_lora(model, LoraSettings(args.rank, 2.0 * args.rank, 0.0, TARGETS))

    def step(ids: torch.Tensor) -> None:
        log_probs = get_response_log_probs(model, ids[:, :-1], ids[:, 1:])["log_probs"]
        mask = torch.ones_like(log_probs, dtype=torch.bool)
        sft_microbatch_train_step(log_probs, mask, 1, float(mask.shape[1]))

    return model, step


def peft_model(hf_dir: str, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                        target_modules=TARGETS, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(hf, config).train()

    def step(ids: torch.Tensor) -> None:
        model(input_ids=ids, labels=ids).loss.backward()

    return model, step


def run_case(case: str, hf_dir: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if case == "peft":
        model, step = peft_model(hf_dir, args)
    else:
        model, step = ours(case == "ours-lora", args)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    ids = torch.randint(0, 49152, (args.batch, args.seq + 1))
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        step(ids)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {
        "case": case,
        "step_s": statistics.median(times[1:]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "trained": sum(p.numel() for p in trained),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="times each case runs, in turn")
    parser.add_argument("--case", default="")
    parser.add_argument("--hf_dir", default="")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.hf_dir, args)))
        return
    from llm.export import export

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = str(export("smollm2-135m", Path(tmp) / "hf"))
        runs = {case: [] for case in ("ours-lora", "ours-full", "peft")}
        for _ in range(args.rounds):  # round-robin: every case sees the same swings of speed
            for case, results in runs.items():
                command = [sys.executable, __file__, "--case", case, "--hf_dir", hf_dir]
                command += [f"--{k}={v}" for k, v in vars(args).items()
                            if k not in ("case", "hf_dir", "rounds")]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"batch {args.batch} x {args.seq} tokens, rank {args.rank}, {args.threads} threads, "
          f"{args.rounds} round(s)")  # fmt: skip
    print("| case | trained parameters | step (s, median of rounds) | peak RSS (GB, max) |")
    print("| --- | ---: | ---: | ---: |")
    for case, results in runs.items():
        step = statistics.median(r["step_s"] for r in results)
        peak = max(r["peak_rss_gb"] for r in results)
        print(f"| {case} | {results[0]['trained']:,} | {step:.2f} | {peak:.2f} |")
    pairs = zip(runs["ours-lora"], runs["peft"], strict=True)
    ratios = [ours_run["step_s"] / peft_run["step_s"] for ours_run, peft_run in pairs]
    print("ours-lora / peft step time, by round:", ", ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
