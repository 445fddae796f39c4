"""Time greedy decoding on the same weights, round-robin in one run, three ways:

    cache      llm.generating.generate: prefill the prompt once, then one token per step
               through the KV cache
    recompute  no cache: every step runs the whole sequence so far (what nanoGPT does)
    hf-llama   Hugging Face LlamaForCausalLM.generate(use_cache=True, greedy), same weights

and ours with other weights (--modes, on by default; their tokens differ from float32's, so
they are compared, not required equal):

    cache-bf16  the model in bfloat16
    cache-int8  llm.quantize: int8 matrices, the output layer too (PyTorch's packed kernel)
    cache-int4  int4 in groups of 32, the output layer in int8

each with the bytes of weights one decoding step reads and the GB/s that implies, and with
--compile, both compiled (like for like):

    cache+compile     generate(compile_decoding(model), ...): the one-token steps compiled
    hf-llama+compile  HF generate with its static cache and torch.compile(hf.forward)

    uv run kernel/benchmarking_generation.py                 # tinystories-17m, 16 + 200 tokens
    uv run kernel/benchmarking_generation.py --profile       # + the top ops of our decode step
    uv run kernel/benchmarking_generation.py --compile       # + both compiled

All must produce the same 200 tokens (checked); the converted HF model's logits are
checked against ours first. Tokens/s counts new tokens over the whole call, prefill included.
Results for this project are in docs/benchmarks.md.
"""

import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from llm.cli import parse, run_main
from llm.generating import SamplingConfig, compile_decoding, generate
from llm.quantize import Quantization, quantize_model
from llm.transformer import MODEL_PRESETS, Transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from benchmarking_pretrained import weight_bytes  # noqa: E402  (this folder's, on sys.path)

from hf_llama import to_hf_llama  # noqa: E402  (tests/hf_llama.py, the tests' reference)


@torch.inference_mode()
def generate_by_recomputing(model: Transformer, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding without a cache: each step is a forward pass over every token so far."""
    tokens = torch.tensor([prompt])
    for _ in range(new_tokens):
        window = tokens[:, -model.config.context_length :]
        next_id = model(window, last_only=True)[:, -1].argmax(-1)
        tokens = torch.cat([tokens, next_id[:, None]], dim=1)
    return tokens[0, len(prompt) :].tolist()


@torch.inference_mode()
def generate_hf(hf, prompt: list[int], new_tokens: int, **cache_options) -> list[int]:
    ids = torch.tensor([prompt])
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # never stop early
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
        **cache_options,
    )
    return out[0, len(prompt) :].tolist()


@torch.inference_mode()
def check_same_logits(model: Transformer, hf, prompt: list[int]) -> float:
    ids = torch.tensor([prompt])
    diff = (model(ids) - hf(ids).logits).abs().max().item()
    if diff > 1e-3:
        raise SystemExit(f"the converted HF model disagrees with ours: max |logit diff| {diff}")
    return diff


def time_round_robin(runs: dict[str, Callable[[], list[int]]], warmup: int, repeats: int):
    """Call each run warmup + repeats times, alternating, so all see the same machine load.
    Returns {name: [seconds]} of the timed calls and the output of each run's last call."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, list[int]] = {}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times, outputs


def profile_decode(model: Transformer, prompt: list[int], new_tokens: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, prompt, SamplingConfig(max_new_tokens=new_tokens, temperature=0))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


@dataclass
class BenchConfig:
    """What to time."""

    size: str = "tinystories-17m"  # a model preset (llm.transformer.MODEL_PRESETS)
    prompt_tokens: int = 16  # length of the (random) prompt
    new_tokens: int = 200  # tokens to generate, greedily
    warmup: int = 1  # untimed rounds first
    repeats: int = 5  # timed rounds; each times every contender once
    threads: int = 2  # CPU threads
    profile: bool = False  # print our top ops afterwards
    compile: bool = False  # also time ours and HF's compiled
    modes: bool = True  # also time ours in bfloat16, int8 and int4

    def __post_init__(self) -> None:
        if self.size not in MODEL_PRESETS:
            raise ValueError(f"size must be one of {', '.join(MODEL_PRESETS)}, not {self.size!r}")


def main() -> None:
    prog = "uv run kernel/benchmarking_generation.py"
    args = run_main(lambda: parse(BenchConfig, description=__doc__, prog=prog))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Transformer(MODEL_PRESETS[args.size]).eval()
    hf = to_hf_llama(model)
    prompt = torch.randint(0, model.config.vocab_size, (args.prompt_tokens,)).tolist()
    n = args.new_tokens
    print(
        f"{args.size}: {model.num_parameters() / 1e6:.1f}M parameters, float32 CPU, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}, batch 1, "
        f"{args.prompt_tokens}-token prompt + {n} new tokens, greedy"
    )
    print(f"HF conversion: max |logit difference| = {check_same_logits(model, hf, prompt):.1e}")

    runs = {
        "cache": lambda: generate(model, prompt, SamplingConfig(max_new_tokens=n, temperature=0)),
        "recompute": lambda: generate_by_recomputing(model, prompt, n),
        "hf-llama": lambda: generate_hf(hf, prompt, n),
    }
    models = {"cache": model}
    if args.modes:
        models["cache-bf16"] = copy.deepcopy(model).to(torch.bfloat16)
        for kind in ("int8", "int4"):
            spec = Quantization(kind, 32, head=True)
            models[f"cache-{kind}"] = quantize_model(copy.deepcopy(model), spec)
        for name in ("cache-bf16", "cache-int8", "cache-int4"):
            runs[name] = partial(generate, models[name], prompt,
                                 SamplingConfig(max_new_tokens=n, temperature=0))  # fmt: skip
    if args.compile:
        compiled = compile_decoding(copy.deepcopy(model))  # (it changes the model it is given)
        hf_compiled = to_hf_llama(model)
        hf_compiled.forward = torch.compile(hf_compiled.forward)
        runs["cache+compile"] = lambda: generate(
            compiled, prompt, SamplingConfig(max_new_tokens=n, temperature=0)
        )
        runs["hf-llama+compile"] = lambda: generate_hf(
            hf_compiled, prompt, n, cache_implementation="static"
        )
        for name in ("cache+compile", "hf-llama+compile"):
            start = time.perf_counter()
            runs[name]()  # compiles (ours: the decode step; HF: prefill and decode)
            print(f"{name}: first call (compiling) took {time.perf_counter() - start:.1f} s")
    load_before = os.getloadavg()[0]
    times, outputs = time_round_robin(runs, args.warmup, args.repeats)
    same = {name: sum(a == b for a, b in zip(out, outputs["cache"], strict=True))
            for name, out in outputs.items()}  # fmt: skip
    if any(same[name] != n for name in same if name not in models or name == "cache"):
        raise SystemExit("the float32 decoders produced different tokens")
    print(
        f"all produced the same {n} tokens; warm-up {args.warmup}, {args.repeats} timed; "
        f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(above the thread count, other work shared the cores)"
    )

    rates = {name: [n / t for t in ts] for name, ts in times.items()}
    for name, rs in rates.items():
        line = (
            f"  {name:16s} mean {statistics.mean(rs):7.1f} tokens/s  median "
            f"{statistics.median(rs):7.1f}  min {min(rs):7.1f}  max {max(rs):7.1f}"
        )
        if name in models:
            mb = weight_bytes(models[name]) / 1e6
            line += (f"  {mb:6.1f} MB of weights/token, {mb * statistics.mean(rs) / 1e3:5.2f} "
                     f"GB/s, {same[name]}/{n} tokens as float32's")  # fmt: skip
        print(line)
    comparisons = [("cache", "recompute", 5.0), ("cache", "hf-llama", 1.5)]  # issue 5's targets
    if args.modes:  # issue 22's target for the quantised ones; none for bfloat16
        comparisons += [("cache-bf16", "hf-llama", None), ("cache-int8", "hf-llama", 2.0),
                        ("cache-int4", "hf-llama", 2.0), ("cache-int8", "cache", None),
                        ("cache-int4", "cache", None)]  # fmt: skip
    if args.compile:
        comparisons.append(("cache+compile", "hf-llama+compile", None))  # no target
    for ours, peer, target in comparisons:
        mean = statistics.mean(rates[ours]) / statistics.mean(rates[peer])
        median = statistics.median(rates[ours]) / statistics.median(rates[peer])
        line = f"  {ours} / {peer}: {mean:.2f}x (medians {median:.2f}x)"
        if target is not None:
            line += f", target {target}x " + ("met" if mean >= target else "NOT met")
        print(line)
    if args.profile:
        profile_decode(model, prompt, n)


if __name__ == "__main__":
    main()
