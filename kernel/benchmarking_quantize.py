"""Time one quantised layer's two paths against float matmuls, on SmolLM2-135M's matrix shapes
(one token, batch 1, as in decoding), round-robin:

    float32, bfloat16   x @ W^T with W in that type (the plain Linear)
    int8-ref, int4-ref  the reference path of llm/quantize.py: dequantise W, then x @ W^T
    int8, int4          the fast path: PyTorch's packed kernel, the input cast to bfloat16
    int8-fp32, int4-fp32  the same kernels given float32 input, to show why the fast path casts

    uv run kernel/benchmarking_quantize.py                 # 1 thread
    uv run kernel/benchmarking_quantize.py --threads 2

Prints microseconds per call (median) and the GB/s of the bytes each path's weights take.

--accuracy MODEL scores a whole model instead (any source llm.loading reads: a run directory,
a checkpoint, a Hugging Face directory, a GGUF file, smollm2-135m) on the first --kb kilobytes
of --text, in windows of 256 tokens: float32, bfloat16, int8 and int4 (the output layer in int8;
groups of 32), the quantised ones both through the kernels and through their float32 reference
path ("ref": the weights' rounding alone), and through the kernels with the output layer left
in float32 ("float head": what --quantize does without --quantize_head). For each: bits per
byte, and next-token agreement with float32 (the share of positions where the most likely token
is the same).

    uv run kernel/benchmarking_quantize.py --accuracy runs/tinystories-cpu-15min --kb 32
"""

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.cli import parse, run_main
from llm.loading import load
from llm.quantize import Int4Linear, Int8Linear, Quantization, QuantizedLinear

# held-out text for --accuracy: the shared data beside the checkout
TEXT = str(Path(__file__).resolve().parents[2] / "shared/data/tinystories/valid.txt")
ACCURACY_VARIANTS = {  # name -> (quantisation, dtype of the activations, embeddings and norms)
    "fp32": (None, torch.float32),
    "bf16": (None, torch.bfloat16),
    "int8": (Quantization("int8", head=True), torch.float32),
    "int8 ref": (Quantization("int8", head=True), torch.float32),
    "int8, float head": (Quantization("int8"), torch.float32),  # --quantize int8 alone
    "int4": (Quantization("int4", 32, head=True), torch.float32),
    "int4 ref": (Quantization("int4", 32, head=True), torch.float32),
    "int4, float head": (Quantization("int4", 32), torch.float32),
    "int4-bf16": (Quantization("int4", 32, head=True), torch.bfloat16),
}
SHAPES = {  # SmolLM2-135M: name -> (out_features, in_features)
    "qkv 960x576": (960, 576),
    "w1/w3 1536x576": (1536, 576),
    "w2 576x1536": (576, 1536),
    "head 49152x576": (49152, 576),
}


@dataclass
class BenchConfig:
    """What to time."""

    threads: int = 1  # CPU threads
    repeats: int = 50  # timed calls per path and shape (round-robin, in 5 rounds)
    accuracy: str = ""  # a model to score instead of timing layers (any source llm.loading reads)
    kb: int = 8  # --accuracy: kilobytes of --text to score on
    text: str = TEXT  # --accuracy: held-out text


def paths(w: torch.Tensor) -> dict[str, tuple]:
    """name -> (function of x (1, in) float32, bytes of weights it reads)."""
    w_bf16 = w.bfloat16()
    int8, int4 = Int8Linear.from_float(w), Int4Linear.from_float(w, 32)
    int8_bytes = int8.weight_q.nbytes + int8.kernel_scale.nbytes
    int4_bytes = int4.kernel_q.nbytes + int4.kernel_scale_zero.nbytes
    scale_zero_fp32 = int4.kernel_scale_zero.float()

    def reference(layer):
        return lambda x: x @ layer.dequantize(x.dtype).T

    return {
        "float32": (lambda x: x @ w.T, w.nbytes),
        "bfloat16": (lambda x: x.bfloat16() @ w_bf16.T, w_bf16.nbytes),
        "int8-ref": (reference(int8), int8_bytes),
        "int4-ref": (reference(int4), int4_bytes),
        "int8": (int8, int8_bytes),
        "int4": (int4, int4_bytes),
        "int8-fp32": (lambda x: torch._weight_int8pack_mm(x, int8.weight_q, int8.scale),
                      int8.weight_q.nbytes),
        "int4-fp32": (lambda x: torch._weight_int4pack_mm_for_cpu(
            x, int4.kernel_q, 32, scale_zero_fp32), int4_bytes),
    }  # fmt: skip


@torch.inference_mode()
def accuracy(source: str | Path, text_path: str, kb: int, window: int = 256) -> str:
    """A markdown table: bits per byte of each of ACCURACY_VARIANTS on the first kb KB of
    text_path, and how often its most likely next token is float32's."""
    text = Path(text_path).read_text(encoding="utf-8")[: kb * 1024]
    ids = torch.tensor(load(source).tokenizer.encode(text))
    n_bytes = len(text.encode("utf-8"))
    windows = [ids[i : i + window + 1] for i in range(0, len(ids) - 1, window)]
    lines = [f"{source}: the first {kb} KB of {text_path} ({len(ids)} tokens, {n_bytes} bytes, "
             f"windows of {window})",
             "| variant | bits per byte | vs fp32 | next token = fp32's |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    reference = None
    for variant, (quantization, dtype) in ACCURACY_VARIANTS.items():
        model = load(source, dtype=dtype, tokenizer=False, quantization=quantization).model
        for module in model.modules():  # " ref": the float32 reference path, not the kernels
            if isinstance(module, QuantizedLinear):
                module.fast = not variant.endswith(" ref")
        nats, best = 0.0, []
        for w in windows:
            logits = model(w[None, :-1]).float()[0]  # (window, vocab)
            nats += torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum").item()
            best.append(logits.argmax(-1))
        bpb, best = nats / math.log(2) / n_bytes, torch.cat(best)
        reference = reference or (bpb, best)
        agree = (best == reference[1]).float().mean().item()
        lines.append(f"| {variant} | {bpb:.4f} | {100 * (bpb / reference[0] - 1):+.2f}% | "
                     f"{100 * agree:.2f}% |")  # fmt: skip
    return "\n".join(lines)


@torch.inference_mode()
def main() -> None:
    args = run_main(lambda: parse(BenchConfig, description=__doc__,
                                  prog="uv run kernel/benchmarking_quantize.py"))  # fmt: skip
    torch.set_num_threads(args.threads)
    if args.accuracy:
        print(accuracy(args.accuracy, args.text, args.kb))
        return
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, one token (1 x in)")
    print("| shape | " + " | ".join(paths(torch.randn(64, 64)).keys()) + " |")
    print("| --- |" + " ---: |" * 8)
    for name, (out_features, in_features) in SHAPES.items():
        w = torch.randn(out_features, in_features) / in_features**0.5
        x = torch.randn(1, in_features)
        contenders = paths(w)
        times = {path: [] for path in contenders}
        for _ in range(5):
            for path, (fn, _) in contenders.items():
                fn(x)
                start = time.perf_counter()
                for _ in range(max(1, args.repeats // 5)):
                    fn(x)
                times[path].append((time.perf_counter() - start) / max(1, args.repeats // 5))
        cells = []
        for path, (_, nbytes) in contenders.items():
            seconds = statistics.median(times[path])
            cells.append(f"{seconds * 1e6:,.0f} us ({nbytes / seconds / 1e9:.1f} GB/s)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
