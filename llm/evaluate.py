"""Benchmark evaluation: zero-shot multiple choice scored by log-likelihood, the way
lm-evaluation-harness (0.4.13, its `hf` backend) scores it, offline (tasks: llm/eval_tasks.py).

    uv run -m llm.evaluate smollm2-135m --tasks hellaswag,arc_easy,arc_challenge,piqa,winogrande
    uv run -m llm.evaluate runs/tinystories --tasks arc_easy --limit 100 --output results.json

Each answer is a request (context, continuation); its score is the sum of the log-probabilities
of the continuation's tokens given the context. The tokens are the harness's: encode(context +
continuation) and encode(context), the continuation being the tokens the first has beyond the
second's length; a trailing space of the context moves to the continuation first; an empty
context is the end-of-text token. An input longer than the model's context (context_length + 1
tokens, the last one never fed) loses its oldest context tokens, as in the harness; a
continuation longer than the context is an error.

Speed: the requests that share a context (the answers of one question) share one forward pass
over it. A batch of distinct contexts is left-padded and run once, filling a KV cache; the cache
is then repeated once per continuation, and the continuations run on it, 8 at a time, sorted by
length (one pass over all of them pads half its positions on HellaSwag); only their real
positions are scored (a log-softmax over the vocabulary), not the padding. The model runs in
its own dtype (--dtype bfloat16 halves the work on CPUs that have it).
"""

import json
import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from llm.atomic_write import atomic_write
from llm.bpe_tokenizer import BpeTokenizer
from llm.checkpoint import CheckpointError
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.device import resolve_device
from llm.eval_tasks import TASKS, Example, examples, require_data, task_of
from llm.generating import DTYPES, eos_id_of, left_pad
from llm.loading import load, models_help
from llm.quantize import QuantizeOptions
from llm.transformer import KVCache, Transformer

# ---------------------------------------------------------------------------------------------
# Log-likelihoods of continuations
# ---------------------------------------------------------------------------------------------


def encode_request(
    tokenizer: BpeTokenizer, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's hf backend makes them (HFLM._encode_pair
    and LM.loglikelihood)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:  # "Answer: " + "x" -> "Answer:" + " x": the space belongs to the answer's token
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = tokenizer.encode(context)
    continuation_ids = tokenizer.encode(context + continuation)[len(context_ids) :]
    if not context_ids:  # a document starts after an end-of-text token
        eot = eos_id_of(tokenizer)
        if eot is None:
            raise ValueError("an empty context needs the tokenizer's <|endoftext|> token")
        if continuation_ids[:1] == [eot]:  # the harness's rule: it becomes the context
            context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
        else:
            context_ids = [eot]
    if not continuation_ids:
        raise ValueError(f"the continuation {continuation!r} has no tokens to score")
    return context_ids, continuation_ids


def fit_context(context: list[int], continuation: list[int], length: int) -> list[int]:
    """The context's last tokens that fit with the continuation in `length` + 1 tokens (the
    last token is never fed to the model)."""
    if len(continuation) > length:
        raise ValueError(
            f"a continuation of {len(continuation)} tokens is longer than the model's context "
            f"({length})"
        )
    return context[max(0, len(context) + len(continuation) - length - 1) :]


def loglikelihoods(
    model: Transformer,
    tokenizer: BpeTokenizer,
    requests: list[tuple[str, str]],
    batch_size: int = 8,
    progress: str | None = None,
) -> list[tuple[float, bool]]:
    """For each (context, continuation): the sum of the log-probabilities of the continuation's
    tokens given the context, and whether greedy decoding would produce exactly those tokens
    (lm-eval's is_greedy). Requests with the same context tokens share one pass over them;
    batch_size is the number of distinct contexts run at once. `progress`: the description of
    a progress bar (None: no bar)."""
    length = model.config.context_length
    encoded = [encode_request(tokenizer, c, x) for c, x in requests]
    pairs = [(fit_context(c, x, length), x) for c, x in encoded]
    if any(len(c) < len(e) for (c, _), (e, _) in zip(pairs, encoded, strict=True)):
        warnings.warn(f"inputs longer than the context ({length}) lose their oldest tokens",
                      stacklevel=2)  # fmt: skip
    groups: dict[tuple[int, ...], list[int]] = {}  # context ids -> the requests that share it
    for i, (context, _) in enumerate(pairs):
        groups.setdefault(tuple(context), []).append(i)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    bar = tqdm(total=len(requests), desc=progress, unit="request", disable=progress is None)
    began, tokens = time.perf_counter(), 0
    for batch in batches(groups, pairs, batch_size, length):
        members = [(row, i) for row, context in enumerate(batch) for i in groups[context]]
        continuations = [pairs[i][1] for _, i in members]
        rows = [row for row, _ in members]
        scores = score_batch(model, [list(c) for c in batch], continuations, rows)
        for (_, i), score in zip(members, scores, strict=True):
            results[i] = score
        tokens += sum(len(c) for c in batch) + sum(len(c) for c in continuations)
        bar.update(len(members))
        bar.set_postfix(tokens_per_s=f"{tokens / (time.perf_counter() - began):.0f}")
    bar.close()
    return results


def batches(
    groups: dict[tuple[int, ...], list[int]],
    pairs: list[tuple[list[int], list[int]]],
    batch_size: int,
    length: int,
) -> list[list[tuple[int, ...]]]:
    """The distinct contexts in batches of at most batch_size, longest first (similar lengths
    together: less padding), each batch fitting the context: its longest context (left-padded
    width) plus its longest continuation, less the last token, at most `length` tokens."""
    out: list[list[tuple[int, ...]]] = []
    width = longest = 0
    for context in sorted(groups, key=len, reverse=True):
        most = max(len(pairs[i][1]) for i in groups[context])
        if out and len(out[-1]) < batch_size and width + max(longest, most) - 1 <= length:
            out[-1].append(context)
            longest = max(longest, most)
        else:
            out.append([context])
            width, longest = len(context), most
    return out


CONTINUATIONS_PER_PASS = 8  # HellaSwag, SmolLM2-135M, 2 CPU threads: 20% faster than 32 at once


@torch.inference_mode()
def score_batch(
    model: Transformer, contexts: list[list[int]], continuations: list[list[int]], rows: list[int]
) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) of each continuation after contexts[rows[i]]: one pass over
    the distinct contexts, then passes over the continuations on copies of their KV cache,
    CONTINUATIONS_PER_PASS at a time, shortest first (similar lengths together: little
    padding)."""
    device = model.embedding.weight.device
    ids, is_real = left_pad(contexts)  # (batch, width): every context ends in the last column
    width, longest = ids.shape[1], max(len(c) for c in continuations)
    cache = model.new_kv_cache(len(contexts), capacity=width + longest - 1)
    if not is_real.all():
        cache.key_mask = torch.ones(len(contexts), cache.capacity, dtype=torch.bool, device=device)
        cache.key_mask[:, :width] = is_real.to(device)  # the continuations' keys are all real
    last = model(ids.to(device), cache, last_only=True)  # (batch, 1, vocab): the first token's
    rows_t = torch.tensor(rows, device=device)
    firsts = torch.tensor([c[0] for c in continuations], device=device)
    sums, greedy = token_scores(last[rows_t, 0], firsts)  # (n,), n = number of continuations
    by_length = sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
    parts = [by_length[start : start + CONTINUATIONS_PER_PASS]
             for start in range(0, len(by_length), CONTINUATIONS_PER_PASS)]  # fmt: skip
    misses = torch.zeros_like(sums)  # per continuation: its tokens that are not the most likely
    for part in (torch.tensor(p, device=device) for p in parts if len(continuations[p[-1]]) > 1):
        inputs, is_real = right_pad([continuations[i][:-1] for i in part.tolist()])
        targets, _ = right_pad([continuations[i][1:] for i in part.tolist()])
        rest = model(inputs.to(device), repeat_rows(cache, rows_t[part]))  # (part, width, vocab)
        is_real = is_real.to(device)  # scored: the real positions only, not the padding
        scores, hits = token_scores(rest[is_real], targets.to(device)[is_real])
        owner = part[is_real.nonzero()[:, 0]]  # the continuation of each real position
        sums = sums.index_add(0, owner, scores)
        misses = misses.index_add(0, owner, (~hits).to(misses.dtype))
    greedy &= misses == 0
    return list(zip(sums.tolist(), greedy.tolist(), strict=True))


def token_scores(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """For logits (k, vocab) and targets (k,): the log-probability of each target (in float32
    at least) and whether it is the most likely token."""
    logprobs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    return logprobs.gather(-1, targets[:, None]).squeeze(-1), logprobs.argmax(dim=-1) == targets


def right_pad(sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
    """ids (n, width) left-aligned, padded with 0, and is_real (n, width)."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    is_real = torch.zeros(len(sequences), width, dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        is_real[row, : len(sequence)] = True
    return ids, is_real


def repeat_rows(cache: KVCache, rows: Tensor) -> KVCache:
    """A cache whose row i is a copy of cache's row rows[i] (one per continuation)."""
    return KVCache(
        keys=[k[rows] for k in cache.keys],
        values=[v[rows] for v in cache.values],
        length=cache.length,
        key_mask=None if cache.key_mask is None else cache.key_mask[rows],
    )


# ---------------------------------------------------------------------------------------------
# A task's metrics
# ---------------------------------------------------------------------------------------------


def predictions(example: Example, lls: list[float]) -> tuple[int, int]:
    """(pred, pred_norm): the most likely answer, and the most likely per character of the
    answer (lm-eval's acc_norm: divided by len(choice), the delimiter not counted). Ties go to
    the first, as numpy's argmax."""
    per_char = [ll / len(choice) for ll, choice in zip(lls, example.choices, strict=True)]
    return lls.index(max(lls)), per_char.index(max(per_char))


def mean_stderr(values: list[float]) -> float | None:
    """The standard error of the mean, as lm-eval computes it: the sample standard deviation
    (n - 1) over sqrt(n); None for fewer than 2 values (the harness's "N/A")."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def evaluate_task(
    model: Transformer,
    tokenizer: BpeTokenizer,
    task: str,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[dict, list[dict]]:
    """(metrics, samples) of the model on the task's first `limit` rows (all when None).
    metrics: acc, acc_norm (None where the harness does not report it), acc_stderr, n;
    samples: one dict per example (task, index, pred, pred_norm: acc_norm's choice, target,
    loglikelihoods)."""
    reports_norm = task_of(task).acc_norm
    rows = examples(task, limit)
    requests = [r for example in rows for r in example.requests]
    scores = loglikelihoods(model, tokenizer, requests, batch_size, task if progress else None)
    samples, correct, correct_norm, start = [], [], [], 0
    for example in rows:
        lls = [ll for ll, _ in scores[start : start + len(example.requests)]]
        start += len(example.requests)
        pred, pred_norm = predictions(example, lls)
        correct.append(float(pred == example.target))
        correct_norm.append(float(pred_norm == example.target))
        samples.append({"task": task, "index": example.index, "pred": pred,
                        "pred_norm": pred_norm, "target": example.target,
                        "loglikelihoods": lls})  # fmt: skip
    metrics = {
        "acc": sum(correct) / len(rows),
        "acc_norm": sum(correct_norm) / len(rows) if reports_norm else None,
        "acc_stderr": mean_stderr(correct),
        "n": len(rows),
    }
    return metrics, samples


def task_specs(specs: list[str]) -> list[tuple[str, int | None]]:
    """Training's eval_tasks, "name" or "name:N" (its first N examples), as (name, N); a
    ValueError for an unknown task or a bad N, an ImportError when the task's data is missing."""
    parsed = []
    for spec in specs:
        name, _, count = spec.partition(":")
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"eval_tasks: {spec!r}: N in NAME:N must be a whole number >= 1")
        if task_of(name).generate is None:  # read from the eval extra's data, not generated
            require_data()
        parsed.append((name, int(count) if count else None))
    return parsed


def task_scores(
    model: Transformer, tokenizer: BpeTokenizer, specs: list[tuple[str, int | None]]
) -> dict[str, float]:
    """{"TASK/acc": ..., "TASK/acc_norm": ...} of the model on each task's examples: what a
    training run logs at each evaluation (a "tasks" record)."""
    scores = {}
    for name, limit in specs:
        metrics, _ = evaluate_task(model, tokenizer, name, limit)
        scores |= {f"{name}/{key}": metrics[key] for key in ("acc", "acc_norm")}
    return {key: value for key, value in scores.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaluateConfig(QuantizeOptions):
    """`uv run -m llm.evaluate MODEL --tasks ...`: the model, the tasks, where results go."""

    model: str  # run, checkpoint file, HF directory, GGUF file or pretrained name
    tasks: str = "hellaswag,arc_easy,arc_challenge,piqa,winogrande"  # comma-separated
    limit: int | None = None  # the first N rows of each task's split (None: all)
    output: str = ""  # results.json: the metrics of each task ("" = not written)
    samples: str = ""  # samples.jsonl: one line per example ("" = not written)
    batch_size: int = 8  # distinct contexts per forward pass
    dtype: str = "float32"  # the weights' type: "float32" or "bfloat16"
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "mps"

    def __post_init__(self) -> None:
        for name in self.task_names():
            task_of(name)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1 (leave it out for all rows), got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self.quantization()

    def task_names(self) -> list[str]:
        return [name.strip() for name in self.tasks.split(",") if name.strip()]


def run(config: EvaluateConfig) -> dict:
    """Evaluate, print the table, write the files (only once every task is done); returns the
    results."""
    try:
        device = resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if any(task_of(name).generate is None for name in config.task_names()):
        require_data()  # a missing eval extra fails before the model loads
    loaded = load(config.model, device, DTYPES[config.dtype], quantization=config.quantization())
    results, samples = {"model": config.model, "tasks": {}}, []
    for name in config.task_names():
        metrics, task_samples = evaluate_task(
            loaded.model, loaded.tokenizer, name, config.limit, config.batch_size, progress=True
        )
        results["tasks"][name] = metrics
        samples += task_samples
    print(table(results["tasks"]))
    written = []
    if config.output:
        with atomic_write(config.output, "w") as f:
            f.write(json.dumps(results, indent=2) + "\n")
        written.append(f"results to {config.output}")
    if config.samples:
        with atomic_write(config.samples, "w") as f:
            f.writelines(json.dumps(sample) + "\n" for sample in samples)
        written.append(f"{len(samples)} samples to {config.samples}")
    print(f"wrote {' and '.join(written)}" if written else "wrote nothing (--output, --samples)")
    return results


def table(tasks: dict[str, dict]) -> str:
    """The metrics as a text table, one row per task."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{'task':<15} {'n':>6} {'acc':>8} {'acc_norm':>8} {'stderr':>8}"]
    for name, m in tasks.items():
        lines.append(f"{name:<15} {m['n']:>6} {number(m['acc']):>8} "
                     f"{number(m['acc_norm']):>8} {number(m['acc_stderr']):>8}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    tasks = f"Tasks: {', '.join(TASKS)}."
    run_main(
        lambda: run(
            parse(
                EvaluateConfig,
                argv,
                prog="uv run -m llm.evaluate",
                description=f"{__doc__}\n{tasks}\n{models_help()}",
                positional=("model",),
            )
        ),  # fmt: skip
        errors=(CheckpointError, ValueError, OSError, ImportError),
    )


if __name__ == "__main__":
    main()
