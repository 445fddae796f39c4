"""Time greedy decoding and measure the memory of SmolLM2-135M-Instruct from its GGUF file (Q4_1,
with Q8_0 embeddings), ours against transformers, in float32, bfloat16 and quantised:

    ours-fp32  llm.gguf_format.load_gguf, then llm.generating.generate (KV cache, greedy)
    ours-bf16  the same, load_gguf(..., dtype=torch.bfloat16)
    ours-int8  llm.loading.load(..., quantization=int8, output layer too): llm/quantize.py
    ours-int4  the same in int4, groups of 32: the file's Q4_1 blocks as they are, the output
               layer (the Q8_0 embedding, tied) in int8
    ours-int4-bf16  the same with bfloat16 activations (the kernels' own type: no casts)
    ours-*-compiled  ours-fp32, -int8, -int4 with their one-token steps compiled
               (llm.generating.compile_decoding; the compile happens in the warm-up call)
    hf-fp32    AutoModelForCausalLM.from_pretrained(gguf_file=...), then hf.generate (greedy)
    hf-bf16    the same, hf.to(torch.bfloat16)
    llama.cpp  llama-cpp-python on the file itself, when it is installed (not a dependency: it
               builds llama.cpp from source, about 6 minutes here); greedy, n_threads=threads

    uv run kernel/benchmarking_pretrained.py                    # 128 new tokens, 2 rounds x 3
    uv run kernel/benchmarking_pretrained.py --rounds 3 --threads 2
    uv run kernel/benchmarking_pretrained.py --variants ours-fp32,hf-fp32
    uv run kernel/benchmarking_pretrained.py --new_tokens 16 --repeats 1 --rounds 1  # a quick check

Each variant runs in a fresh process of its own (this script with --variant), so that its memory
figures are its own; the set of processes runs --rounds times, round-robin, so that all variants
see the same swings of the machine's speed. A process loads the model, generates once untimed,
then --repeats times timed. The figures:

    load s           loading the model, imports done before (transformers: its GGUF conversion)
    warm-up s        the untimed first generation of each round: for the compiled variants, the
                     compile (Inductor caches it on disk: a later round, or run, starts faster)
    RSS after load   resident memory once loaded (after malloc_trim, so freed memory is not
                     counted: the conversion's float32 copies, the float32 weights of bf16)
    peak RSS         the process's peak resident memory (ru_maxrss) after generating: the
                     loading's peak, as a rule (transformers' includes its GGUF conversion)
    prefill ms       a 1-token generation (the prompt's forward pass, the first token), median
    decode tok/s     new tokens over the whole call, prefill included; median over every timed
                     call of every round
    same tokens      against hf-fp32, up to its first end-of-turn token (min_new_tokens makes
                     transformers go on past it; ours is run without eos_id, so both always
                     make exactly --new_tokens tokens). bf16 rounds differently from fp32, so
                     its greedy choice may part from hf-fp32's after a while (token 57 of this
                     prompt, for ours-bf16); ours-fp32 should match it all the way
    weights MB/token the bytes of the matrices one decoding step reads (every Linear or
                     quantised layer, the output layer included; the embedding's one row and
                     the norms left out; llama.cpp: its file's tensors)
    GB/s             weights MB/token x decode tok/s: the memory bandwidth the decoding draws
                     on, against the machine's own, measured last (memory_bandwidth: a 1 GB
                     float32 matrix times a vector, as decoding reads weights; its sum; a copy)

--accuracy KB (default 8) then scores our float32, bfloat16, int8, int4 and int4-bf16 models in
this process on the first KB kilobytes of --text (held-out TinyStories by default): bits per
byte and next-token agreement with float32, as `kernel/benchmarking_quantize.py --accuracy`
does for any model (its function).
"""

import ctypes
import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from llm.chat import render_chat
from llm.cli import parse, run_main
from llm.generating import SamplingConfig, compile_decoding, generate
from llm.gguf_format import (
    GgufError,
    GgufFile,
    gguf_module,
    load_gguf,
    pretrained_path,
    tokenizer_from_gguf,
)
from llm.loading import load as load_model
from llm.quantize import QuantizedLinear
from llm.transformer import Linear

from benchmarking_quantize import ACCURACY_VARIANTS, TEXT, accuracy  # (this script's folder)

VARIANTS = ["ours-fp32", "ours-bf16", "ours-int8", "ours-int4", "ours-int4-bf16",
            "ours-fp32-compiled", "ours-int8-compiled", "ours-int4-compiled", "hf-fp32",
            "hf-bf16", "llama.cpp"]  # fmt: skip
COMPILED = "-compiled"  # a variant of ours with its one-token steps compiled (compile_decoding)
# variant -> (quantisation, dtype of the activations, embeddings and norms): --accuracy's own
QUANTIZED = {f"ours-{name}": ACCURACY_VARIANTS[name] for name in ("int8", "int4", "int4-bf16")}
PROMPT = "Write a long story about a robot who learns to paint, with many details."


def default_variants() -> list[str]:
    """Every variant; llama.cpp only where llama-cpp-python is installed."""
    return [v for v in VARIANTS if v != "llama.cpp" or importlib.util.find_spec("llama_cpp")]


@dataclass
class BenchConfig:
    """What to measure."""

    model: str = "smollm2-135m"  # a model of llm.gguf_format.PRETRAINED
    new_tokens: int = 128  # tokens to generate, greedily
    repeats: int = 3  # timed generations per process, after one untimed
    rounds: int = 2  # times the set of processes runs, round-robin
    threads: int = 1  # CPU threads of every process (torch.set_num_threads)
    variants: list[str] = field(default_factory=lambda: default_variants())  # which to run
    accuracy: int = 8  # kilobytes of --text to score each of ours on (0: no accuracy)
    text: str = TEXT  # held-out text for --accuracy
    variant: str = ""  # internal: run this one variant here and print its results as JSON

    def __post_init__(self) -> None:
        for name in self.variants + ([self.variant] if self.variant else []):
            if name not in VARIANTS:
                raise ValueError(f"a variant must be one of {', '.join(VARIANTS)}, not {name!r}")
        if self.new_tokens < 1 or self.repeats < 1 or self.rounds < 1 or self.threads < 1:
            raise ValueError("new_tokens, repeats, rounds and threads must be at least 1")


# ---------------------------------------------------------------------------------------------
# One variant, in its own process
# ---------------------------------------------------------------------------------------------


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # "VmRSS:   123456 kB"
    raise RuntimeError(f"no {key} in /proc/self/status: this benchmark needs Linux")


def import_libraries(variant: str) -> None:
    """Import what loading imports on first use, so that load s and the RSS before it leave
    imports out (torch's own are in every process's baseline anyway)."""
    gguf_module()
    if variant.startswith("hf"):
        import transformers.modeling_gguf_pytorch_utils  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401


def load(variant: str, path: Path):
    """(model, generate function of (prompt, n) -> new token ids) of a variant."""
    dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
    if variant.startswith("ours"):
        model = load_ours(variant.removesuffix(COMPILED), path)
        if variant.endswith(COMPILED):
            compile_decoding(model)  # compiles in the warm-up call
        greedy = SamplingConfig(temperature=0)  # eos_id None: exactly n tokens
        return model, lambda prompt, n: generate(model, prompt, replace(greedy, max_new_tokens=n))
    if variant == "llama.cpp":
        return load_llama_cpp(path)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    hf = hf.to(dtype).eval()

    @torch.inference_mode()
    def generate_hf(prompt: list[int], n: int) -> list[int]:
        ids = torch.tensor([prompt])
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,  # never stop early
            pad_token_id=0,
        )
        return out[0, len(prompt) :].tolist()

    return hf, generate_hf


def load_ours(variant: str, path: Path) -> torch.nn.Module:
    if variant in QUANTIZED:
        quantization, dtype = QUANTIZED[variant]
        return load_model(path, dtype=dtype, tokenizer=False, quantization=quantization).model
    dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
    model, _, _ = load_gguf(path, dtype=dtype)  # dequantised straight to dtype
    return model


def load_llama_cpp(path: Path):
    """llama-cpp-python's Llama on the file, greedy; its own bytes are the file's tensors."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)

    def generate_llama_cpp(prompt: list[int], n: int) -> list[int]:
        llm.reset()
        out = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) == n:
                return out
        return out

    return llm, generate_llama_cpp


def weight_bytes(model) -> int:
    """Bytes of the matrices a decoding step reads: every Linear's weight, or, for a quantised
    layer, what its kernel reads (the integers and the kernel's scales); see the top."""
    if not isinstance(model, torch.nn.Module):  # llama.cpp: its tensors, about the file
        return sum(t.n_bytes for t in gguf_module().GGUFReader(model.model_path).tensors)
    total = 0
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            names = (
                ("kernel_q", "kernel_scale_zero")
                if module.kind == "int4"
                else ("weight_q", "kernel_scale")
            )
            total += sum(getattr(module, n).nbytes for n in names)
        elif isinstance(module, torch.nn.Linear | Linear):
            total += module.weight.nbytes
    return total


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def run_variant(args: BenchConfig) -> dict:
    """Load, warm up and time one variant; its figures as a dict."""
    torch.set_num_threads(args.threads)
    path = pretrained_path(args.model)
    import_libraries(args.variant)
    rss_before_load = status_mb("VmRSS")
    start = time.perf_counter()
    model, generate_fn = load(args.variant, path)
    load_s = time.perf_counter() - start
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap memory back (see the top)
    rss_after_load, load_peak = status_mb("VmRSS"), status_mb("VmHWM")
    prompt = json.loads(sys.stdin.read())  # the parent's prompt_ids
    warmup_s = timed(generate_fn, prompt, args.new_tokens)[1]  # (compiled: with the compile)
    prefill, whole, tokens = [], [], []
    for _ in range(args.repeats):
        prefill.append(timed(generate_fn, prompt, 1)[1])
        tokens, seconds = timed(generate_fn, prompt, args.new_tokens)
        whole.append(seconds)
    return {
        "weight_bytes": weight_bytes(model),
        "load_s": load_s,
        "warmup_s": warmup_s,
        "rss_before_load_mb": rss_before_load,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vm_hwm_mb": status_mb("VmHWM"),
        "load_peak_mb": load_peak,
        "prefill_s": prefill,
        "whole_s": whole,
        "tokens": tokens,
        "prompt_tokens": len(prompt),
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# The whole benchmark: every variant in its own process, round-robin
# ---------------------------------------------------------------------------------------------


def prompt_ids(path: Path) -> tuple[list[int], int]:
    """The chat prompt's token ids and the end-of-turn token id, from the GGUF's metadata."""
    file = GgufFile(path)
    tokenizer = tokenizer_from_gguf(file)
    text = render_chat([{"role": "user", "content": PROMPT}], file.get("tokenizer.chat_template"))
    return tokenizer.encode(text), int(file.get("tokenizer.ggml.eos_token_id"))


def spawn(args: BenchConfig, variant: str, prompt: list[int]) -> dict:
    """Run one variant in a fresh process of this script; its results."""
    command = [sys.executable, __file__, "--variant", variant, "--model", args.model]
    command += ["--new_tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, input=json.dumps(prompt), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"error: the {variant} process failed (exit {done.returncode})")
    return json.loads(done.stdout.splitlines()[-1])


def merge(runs: list[dict]) -> dict:
    """One variant's figures over the rounds: medians, the largest peak, every timing, the last
    round's tokens."""
    return {
        "weight_bytes": runs[-1]["weight_bytes"],
        "load_s": statistics.median(r["load_s"] for r in runs),
        "warmup_s": [r["warmup_s"] for r in runs],
        "rss_before_load_mb": statistics.median(r["rss_before_load_mb"] for r in runs),
        "rss_after_load_mb": statistics.median(r["rss_after_load_mb"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "vm_hwm_mb": max(r["vm_hwm_mb"] for r in runs),
        "load_peak_mb": max(r["load_peak_mb"] for r in runs),
        "prefill_s": [t for r in runs for t in r["prefill_s"]],
        "whole_s": [t for r in runs for t in r["whole_s"]],
        "tokens": runs[-1]["tokens"],
    }


def same_tokens(tokens: list[int], reference: list[int], eos_id: int) -> str:
    """Whether tokens equal the reference up to the reference's first eos_id (included)."""
    end = reference.index(eos_id) + 1 if eos_id in reference else len(reference)
    for i, (a, b) in enumerate(zip(tokens[:end], reference[:end], strict=True)):
        if a != b:
            return f"no: from token {i} of {end}"
    return f"yes ({end}{' to EOS' if end < len(reference) else ''})"


def table(args: BenchConfig, results: dict[str, dict], eos_id: int) -> str:
    def rate(r: dict) -> float:
        return args.new_tokens / statistics.median(r["whole_s"])

    def ratio(r: dict, to: str) -> str:
        return f"{rate(r) / rate(results[to]):.2f}x" if to in results else "-"

    reference = results.get("hf-fp32")
    lines = [
        "| variant | load s | warm-up s | RSS after load MB | peak RSS MB | first token ms "
        "| decode tok/s | vs ours-fp32 | vs hf-fp32 | weights MB/token | GB/s "
        "| same tokens as hf-fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        prefill_ms = statistics.median(r["prefill_s"]) * 1e3
        same = same_tokens(r["tokens"], reference["tokens"], eos_id) if reference else "-"
        mb = r["weight_bytes"] / 1e6
        warmup = ", ".join(f"{t:.0f}" for t in r["warmup_s"])
        lines.append(
            f"| {name} | {r['load_s']:.1f} | {warmup} | {r['rss_after_load_mb']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} | {prefill_ms:.0f} | {rate(r):.1f} | "
            f"{ratio(r, 'ours-fp32')} | {ratio(r, 'hf-fp32')} | {mb:.0f} | "
            f"{mb * rate(r) / 1e3:.2f} | {same} |"
        )
    return "\n".join(lines)


def notes(args: BenchConfig, results: dict[str, dict]) -> str:
    """The spread of the timings, and what to read the memory figures against."""
    before = ", ".join(f"{name} {r['rss_before_load_mb']:,.0f}" for name, r in results.items())
    lines = [
        f"RSS before load MB (torch and the loading's libraries imported): {before}",
        "peak RSS: the process's largest resident memory (ru_maxrss), loading and generating; "
        "for hf-* it includes transformers' GGUF conversion. decode tok/s counts prefill in.",
    ]
    for name, r in results.items():
        rates = sorted(args.new_tokens / t for t in r["whole_s"])
        prefill = sorted(t * 1e3 for t in r["prefill_s"])
        lines.append(
            f"{name}: {len(rates)} timed calls, tok/s {rates[0]:.1f} to {rates[-1]:.1f}, "
            f"prefill ms {prefill[0]:.0f} to {prefill[-1]:.0f}"
        )
        if r["vm_hwm_mb"] > r["load_peak_mb"] * 1.01:
            lines.append(
                f"{name}: generating raised the peak above loading's {r['load_peak_mb']:,.0f} MB"
            )
        # ru_maxrss also counts the address space that exec replaced (this script's, forked)
        if r["peak_rss_mb"] > r["vm_hwm_mb"] * 1.01:
            lines.append(
                f"{name}: ru_maxrss {r['peak_rss_mb']:,.0f} MB > VmHWM {r['vm_hwm_mb']:,.0f} MB: "
                "the peak is this script's, inherited by the fork before exec; trust VmHWM"
            )
    return "\n".join(lines)


def memory_bandwidth(gigabytes: float = 1.0, repeats: int = 3) -> tuple[float, float, float]:
    """GB/s of this machine on the current thread count, best of `repeats`: (sum, copy, matvec).
    sum reads a float32 tensor of `gigabytes` once; copy reads and writes it (2 bytes moved per
    byte); matvec multiplies it, as a (rows, 1024) matrix, by one vector: a decoding step's own
    access pattern. One thread's sum is partly compute-bound: matvec is the better figure."""
    src = torch.ones(int(gigabytes * 1e9) // 4096 * 1024)  # whole rows of 1024
    dst, x = torch.empty_like(src), torch.ones(1, 1024)
    matrix = src.view(-1, 1024)
    best = [float("inf")] * 3
    for _ in range(repeats):
        for i, (fn, *args) in enumerate(
            [(torch.sum, src), (dst.copy_, src), (torch.mm, x, matrix.T)]
        ):
            best[i] = min(best[i], timed(fn, *args)[1])
    return gigabytes / best[0], 2 * gigabytes / best[1], gigabytes / best[2]


def machine_line(when: str) -> str:
    loads = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average (1, 5, 15 min) {when}: {loads} on {os.cpu_count()} CPUs"


def run_all(args: BenchConfig) -> None:
    path = pretrained_path(args.model)
    prompt, eos_id = prompt_ids(path)
    version = importlib.metadata.version
    print(
        f"{args.model} ({path.name}), CPU, torch {torch.__version__}, transformers "
        f"{version('transformers')}, threads={args.threads}, batch 1, {len(prompt)}-token chat "
        f"prompt + {args.new_tokens} new tokens, greedy; {args.rounds} round(s) of "
        f"{args.repeats} timed call(s) per variant after 1 untimed",
        flush=True,
    )
    print(machine_line("at start"), flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    for i in range(args.rounds):
        for name in args.variants:
            runs[name].append(spawn(args, name, prompt))
            print(f"  round {i + 1}: {name} done", flush=True)
    print(machine_line("at end"))
    torch.set_num_threads(args.threads)  # after the runs: its 2 GB would be in their ru_maxrss
    read, copy, matvec = memory_bandwidth()
    print(f"memory bandwidth, {args.threads} thread(s), GB/s: {matvec:.1f} multiplying a 1 GB "
          f"matrix by a vector, {read:.1f} summing it, {copy:.1f} copying it (read + write)",
          flush=True)  # fmt: skip
    results = {name: merge(rs) for name, rs in runs.items()}
    print(table(args, results, eos_id))
    print(notes(args, results))
    if args.accuracy:
        print(accuracy(path, args.text, args.accuracy))


def main() -> None:
    prog = "uv run kernel/benchmarking_pretrained.py"
    args = run_main(lambda: parse(BenchConfig, description=__doc__, prog=prog))
    if args.variant:
        print(json.dumps(run_variant(args)))
    else:
        run_main(lambda: run_all(args), errors=(GgufError,))


if __name__ == "__main__":
    main()
