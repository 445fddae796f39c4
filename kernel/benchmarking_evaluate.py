"""Time benchmark evaluation of SmolLM2-135M-Instruct on HellaSwag's first rows, ours against
lm-evaluation-harness 0.4.13's `hf` backend, and check that both make the same predictions:

    ours-fp32  llm.loading.load(MODEL), then llm.evaluate.evaluate_task("hellaswag", N)
    ours-bf16  the same, the weights in bfloat16 (--dtype bfloat16)
    hf-fp32    the harness's HFLM(pretrained=HF_DIR, dtype=float32), then lm_eval.evaluator.evaluate
               on its own hellaswag task reading the same local data (tests/lm_eval_tasks/)
    hf-bf16    the same, dtype=bfloat16

    uv run -m llm.export smollm2-135m runs/smollm2-hf              # the harness's model, once
    uv run kernel/benchmarking_evaluate.py                          # 200 rows, 2 threads
    uv run kernel/benchmarking_evaluate.py --rows 50 --variants ours-bf16,hf-bf16
    uv run kernel/benchmarking_evaluate.py --rounds 2 --threads 1

HF_DIR is the GGUF model exported to Hugging Face (`llm.export`): the same dequantised weights.
Each variant runs in a fresh process of its own (this script with --variant), so its peak memory
is its own; the set of processes runs --rounds times, round-robin, so all see the same swings of
the machine's speed. A process imports its libraries, loads the model (timed apart: load s),
evaluates the first --warmup rows untimed, then all --rows rows timed: tokenising the requests,
the forward passes and the metrics (the harness: building its requests from the docs too; its
task objects are built before the clock starts, reading the --rows rows only). The figures:

    eval s        wall time of the timed evaluation (median over the rounds)
    requests/s    the task's requests (4 endings per row) over eval s
    tokens/s      context + continuation tokens of every request over eval s, counted once with
                  our tokenizer (the harness's tokens are the same ones) for all the variants:
                  the work a naive scorer does, not what each one feeds its model (ours feeds a
                  shared context once)
    peak RSS MB   the process's largest resident memory (VmHWM): loading and evaluating
    agreement     per example, acc and acc_norm equal to the reference's (hf-fp32; ours-bf16
                  against hf-bf16 too), and the largest log-likelihood difference
"""

import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llm.cli import parse, run_main

VARIANTS = ["ours-fp32", "ours-bf16", "hf-fp32", "hf-bf16"]
TASK = "hellaswag"
TASKS_DIR = Path(__file__).resolve().parent.parent / "tests" / "lm_eval_tasks"


@dataclass
class BenchConfig:
    """What to measure."""

    model: str = "smollm2-135m"  # what ours loads (llm.loading.load)
    hf_dir: str = "runs/smollm2-hf"  # the same model as a Hugging Face directory (llm.export)
    rows: int = 200  # HellaSwag's first rows (validation split), 4 requests each
    warmup: int = 8  # rows evaluated untimed first, in each process
    batch_size: int = 8  # ours: distinct contexts per forward pass (llm.evaluate's default)
    hf_batch_size: int = 32  # the harness: requests per forward pass (8 rows of 4 endings)
    rounds: int = 1  # times the set of processes runs, round-robin
    threads: int = 2  # CPU threads of every process (torch.set_num_threads)
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))  # which to run
    variant: str = ""  # internal: run this one variant here and print its results as JSON

    def __post_init__(self) -> None:
        for name in self.variants + ([self.variant] if self.variant else []):
            if name not in VARIANTS:
                raise ValueError(f"a variant must be one of {', '.join(VARIANTS)}, not {name!r}")
        if min(self.rows, self.batch_size, self.hf_batch_size, self.rounds, self.threads) < 1:
            raise ValueError("rows, batch sizes, rounds and threads must be at least 1")


# ---------------------------------------------------------------------------------------------
# One variant, in its own process
# ---------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM in /proc/self/status, Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def ours(args: BenchConfig):
    """(load s, evaluate) of ours. evaluate(rows): the per-example (acc, acc_norm,
    log-likelihoods) and the seconds it took."""
    from llm.evaluate import evaluate_task
    from llm.loading import load

    dtype = torch.bfloat16 if args.variant.endswith("bf16") else torch.float32
    start = time.perf_counter()
    loaded = load(args.model, torch.device("cpu"), dtype)
    load_s = time.perf_counter() - start

    def evaluate(rows: int) -> tuple[list[tuple[float, float, list[float]]], float]:
        start = time.perf_counter()
        _, samples = evaluate_task(loaded.model, loaded.tokenizer, TASK, rows, args.batch_size)
        seconds = time.perf_counter() - start
        out = [(float(s["pred"] == s["target"]), float(s["pred_norm"] == s["target"]),
                s["loglikelihoods"]) for s in samples]  # fmt: skip
        return out, seconds

    return load_s, evaluate


def harness(args: BenchConfig):
    """(load s, evaluate) of lm-evaluation-harness's hf backend on its own hellaswag task."""
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import lm_eval.tasks
    from lm_eval.evaluator import evaluate as lm_evaluate
    from lm_eval.models.huggingface import HFLM

    dtype = "bfloat16" if args.variant.endswith("bf16") else "float32"
    start = time.perf_counter()
    lm = HFLM(pretrained=args.hf_dir, dtype=dtype, device="cpu", batch_size=args.hf_batch_size)
    load_s = time.perf_counter() - start
    builtin = Path(lm_eval.tasks.__file__).parent
    manager = lm_eval.tasks.TaskManager(
        include_path=[str(TASKS_DIR), str(builtin / TASK)], include_defaults=False,
        metadata={"rows": args.rows},
    )  # fmt: skip

    def evaluate(rows: int) -> tuple[list[tuple[float, float, list[float]]], float]:
        tasks = lm_eval.tasks.get_task_dict([f"{TASK}_offline"], manager)  # reads the rows
        start = time.perf_counter()
        results = lm_evaluate(lm, tasks, limit=rows, bootstrap_iters=0, verbosity="ERROR")
        seconds = time.perf_counter() - start
        samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
        lls = [[ll for ll, _ in s["filtered_resps"]] for s in samples]
        return [(s["acc"], s["acc_norm"], ll) for s, ll in zip(samples, lls, strict=True)], seconds

    return load_s, evaluate


def run_variant(args: BenchConfig) -> dict:
    """Load, warm up and time one variant; its figures as a dict."""
    torch.set_num_threads(args.threads)
    load_s, evaluate = (ours if args.variant.startswith("ours") else harness)(args)
    evaluate(min(args.warmup, args.rows))
    examples, eval_s = evaluate(args.rows)
    return {
        "load_s": load_s,
        "eval_s": eval_s,
        "peak_rss_mb": peak_rss_mb(),
        "examples": examples,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# The whole benchmark: every variant in its own process, round-robin
# ---------------------------------------------------------------------------------------------


def request_tokens(args: BenchConfig) -> tuple[int, int]:
    """(requests, context + continuation tokens of them) of the first rows, as our tokenizer and
    llm.evaluate encode them (the harness's hf backend makes the same tokens)."""
    from llm.eval_tasks import examples
    from llm.evaluate import encode_request, fit_context
    from llm.loading import load_tokenizer, read_config

    tokenizer, (config, _) = load_tokenizer(args.model), read_config(args.model)
    requests = [r for example in examples(TASK, args.rows) for r in example.requests]
    tokens = 0
    for context, continuation in requests:
        context_ids, continuation_ids = encode_request(tokenizer, context, continuation)
        context_ids = fit_context(context_ids, continuation_ids, config.context_length)
        tokens += len(context_ids) + len(continuation_ids)
    return len(requests), tokens


def spawn(args: BenchConfig, variant: str) -> dict:
    """Run one variant in a fresh process of this script; its results."""
    command = [sys.executable, __file__, "--variant", variant, "--model", args.model]
    for name in ("hf_dir", "rows", "warmup", "batch_size", "hf_batch_size", "threads"):
        command += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"error: the {variant} process failed (exit {done.returncode})")
    return json.loads(done.stdout.splitlines()[-1])


def merge(runs: list[dict]) -> dict:
    """One variant's figures over the rounds: median times, the largest peak, every eval time,
    the last round's examples."""
    return {
        "load_s": statistics.median(r["load_s"] for r in runs),
        "eval_s": statistics.median(r["eval_s"] for r in runs),
        "all_eval_s": [r["eval_s"] for r in runs],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "examples": runs[-1]["examples"],
    }


def agreement(mine: list, reference: list) -> str:
    """How many examples have the same acc and the same acc_norm, and the largest difference of
    a log-likelihood."""
    n = len(reference)
    acc = sum(a[0] == b[0] for a, b in zip(mine, reference, strict=True))
    norm = sum(a[1] == b[1] for a, b in zip(mine, reference, strict=True))
    diff = max(abs(x - y) for a, b in zip(mine, reference, strict=True)
               for x, y in zip(a[2], b[2], strict=True))  # fmt: skip
    return f"acc {acc}/{n}, acc_norm {norm}/{n}, max abs loglikelihood diff {diff:.3g}"


def table(results: dict[str, dict], requests: int, tokens: int) -> str:
    reference = results.get("hf-fp32")
    lines = [
        "| variant | load s | eval s | requests/s | tokens/s | vs hf-fp32 | peak RSS MB "
        "| acc | acc_norm |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        ratio = f"{reference['eval_s'] / r['eval_s']:.2f}x" if reference else "-"
        n = len(r["examples"])
        acc = sum(e[0] for e in r["examples"]) / n
        norm = sum(e[1] for e in r["examples"]) / n
        lines.append(
            f"| {name} | {r['load_s']:.1f} | {r['eval_s']:.1f} | {requests / r['eval_s']:.1f} | "
            f"{tokens / r['eval_s']:,.0f} | {ratio} | {r['peak_rss_mb']:,.0f} | {acc:.4f} | "
            f"{norm:.4f} |"
        )
    return "\n".join(lines)


def agreements(results: dict[str, dict]) -> list[str]:
    pairs = [(name, "hf-fp32") for name in results if name != "hf-fp32"]
    if "ours-bf16" in results and "hf-bf16" in results:
        pairs.append(("ours-bf16", "hf-bf16"))
    return [
        f"agreement {mine} vs {peer}: "
        f"{agreement(results[mine]['examples'], results[peer]['examples'])}"
        for mine, peer in pairs
        if peer in results
    ]


def projection(results: dict[str, dict], rows: int, full: int = 10_042) -> list[str]:
    """HellaSwag's whole validation split at each variant's rate (the issue's goal: < 30 min)."""
    return [f"{name}: {full} rows would take {r['eval_s'] / rows * full / 60:.1f} min"
            for name, r in results.items()]  # fmt: skip


def machine_line(when: str) -> str:
    loads = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average (1, 5, 15 min) {when}: {loads} on {os.cpu_count()} CPUs"


def run_all(args: BenchConfig) -> None:
    if any(v.startswith("hf") for v in args.variants) and not Path(args.hf_dir).is_dir():
        raise SystemExit(
            f"error: no {args.hf_dir}: uv run -m llm.export {args.model} {args.hf_dir}"
        )
    requests, tokens = request_tokens(args)
    version = importlib.metadata.version
    print(
        f"{args.model}, HellaSwag first {args.rows} rows ({requests} requests, {tokens:,} context "
        f"+ continuation tokens), CPU, torch {torch.__version__}, lm-eval {version('lm-eval')}, "
        f"transformers {version('transformers')}, threads={args.threads}, ours batch "
        f"{args.batch_size} contexts, harness batch {args.hf_batch_size} requests; "
        f"{args.rounds} round(s), {args.warmup} warm-up rows per process",
        flush=True,
    )
    print(machine_line("at start"), flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    for i in range(args.rounds):
        for name in args.variants:
            runs[name].append(spawn(args, name))
            print(f"  round {i + 1}: {name} done, {runs[name][-1]['eval_s']:.1f} s", flush=True)
    print(machine_line("at end"))
    results = {name: merge(rs) for name, rs in runs.items()}
    print(table(results, requests, tokens))
    for line in agreements(results) + projection(results, args.rows):
        print(line)


def main() -> None:
    prog = "uv run kernel/benchmarking_evaluate.py"
    args = run_main(lambda: parse(BenchConfig, description=__doc__, prog=prog))
    if args.variant:
        print(json.dumps(run_variant(args)))
    else:
        run_main(lambda: run_all(args))


if __name__ == "__main__":
    main()
