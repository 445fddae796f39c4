"""How BPE training and encoding grow with the corpus: time and peak memory from 0.1 GB up.

    nice -n 10 uv run python kernel/benchmarking_scale.py --sizes 0.1,0.5,1 --vocab 10000,32000

Needs no download: it writes the largest corpus once (in --dir, default a temp directory), and
each smaller size is its first part, cut after a document. Half of the documents are stories of
the built-in generator (llm/stories, drawn from a pool of 20 MB of distinct stories), half are
"web-like": words of a Zipf distribution over 2 million made-up words, numbers and
punctuation, so that the number of distinct pre-tokens keeps growing with the size, as it does in
web text (Heaps' law), which a corpus of stories alone would not show. The exponent, 1.2, gives
218 KB of it as many distinct pre-tokens as ../shared/data/owt/valid.txt (8,146 and 8,372).

For each size, in fresh child processes (llm's own code, as the command line runs it):
- training: pre-tokenize with 2 workers, then the merges for each --vocab size, one after the
  other on the same counts (the peak memory covers all of them);
- encoding with 2 workers to a .npy, with our encoder and with --backend tiktoken, by the 10K
  tokenizer trained on the smallest size (the same tokenizer at every size).
Peak memory is the largest PSS of the child and its workers together (benchmarking_tokenizer's
run_child). Results go to DIR/results.json, a table on stdout, and the plot to
docs/img/tokenizer-scale.png (--plot-only redraws it from results.json).
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarking_tokenizer import run_child  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs/img/tokenizer-scale.png"
EOT = "<|endoftext|>"
WORKERS = 2
GB = 1e9


# ---- the corpus


def made_up_words(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct made-up words, with their leading space; some are numbers or carry a
    comma or full stop, as web text's pre-tokens do."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ["a", "e", "i", "o", "u", "ou", "ee"]]
    words = []
    for i in range(count):
        parts, n = [], i
        while True:  # i written in base len(syllables): a distinct word for each i
            parts.append(syllables[n % len(syllables)])
            n //= len(syllables)
            if not n:
                break
        word = "".join(parts)
        kind = rng.random()
        if kind < 0.04:
            word = str(i)
        elif kind < 0.1:
            word = word.capitalize()
        words.append(" " + word + ("," if 0.1 <= kind < 0.16 else "." if kind < 0.22 else ""))
    return words


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    """`size` bytes (at least) of documents, each followed by <|endoftext|>: stories and
    web-like text, half each."""
    from llm.stories import generate_stories

    rng, pick = np.random.default_rng(seed), random.Random(seed)
    stories = [s + "\n" + EOT + "\n" for s in generate_stories(target_bytes=20_000_000, seed=seed)]
    words = np.array(made_up_words(2_000_000, rng), dtype=object)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            parts = []
            for _ in range(1000):
                if pick.random() < 0.5:
                    parts.append(pick.choice(stories))
                else:
                    ranks = np.minimum(rng.zipf(1.2, pick.randint(100, 1500)), len(words)) - 1
                    parts.append("".join(words[ranks]).lstrip() + "\n" + EOT)
            text = "".join(parts)
            f.write(text)
            written += len(text.encode("utf-8"))


def cut_corpus(src: Path, dst: Path, size: int) -> None:
    """The first `size` bytes of src, then up to the end of that document."""
    with src.open("rb") as f:
        data = f.read(size)
        rest = f.read(1 << 20)
    data += rest[: rest.find(EOT.encode()) + len(EOT)]
    dst.write_bytes(data)


# ---- child tasks


def train_task(corpus: str, vocab_sizes: list[int], save_dir: str) -> dict:
    from llm.bpe_tokenizer import BpeTokenizer
    from llm.bpe_training import merge_pairs
    from llm.pretokenization import count_pretokens

    start = time.perf_counter()
    counts = count_pretokens(corpus, [EOT], WORKERS, progress=False)
    result = {"pretokenize_s": time.perf_counter() - start, "distinct_pretokens": len(counts)}
    for vocab_size in vocab_sizes:
        start = time.perf_counter()
        vocab, merges = merge_pairs(counts, vocab_size, [EOT])
        result[f"merge_{vocab_size}_s"] = time.perf_counter() - start
        if save_dir and vocab_size == min(vocab_sizes):  # the tokenizer every size encodes with
            BpeTokenizer(vocab, merges, [EOT]).save(save_dir)
    return result


def encode_task(tokenizer_dir: str, corpus: str, output: str, backend: str) -> dict:
    from llm.bpe_tokenizer import BpeTokenizer

    tokenizer = BpeTokenizer.load(tokenizer_dir)
    start = time.perf_counter()
    tokens = tokenizer.encode_file(corpus, output, WORKERS, progress=False, backend=backend)
    seconds = time.perf_counter() - start
    Path(output).unlink()
    return {"seconds": seconds, "tokens": tokens}


TASKS = {"train_task": train_task, "encode_task": encode_task}


# ---- the parent


def measure(sizes: list[float], vocab_sizes: list[int], work: Path, results: dict) -> None:
    """Measure each size, smallest first, saving results.json after each measurement."""
    biggest = work / f"corpus-{max(sizes)}GB.txt"
    if not biggest.exists():
        print(f"writing {biggest}", file=sys.stderr)
        write_corpus(biggest, int(max(sizes) * GB))
    tokenizer_dir = work / "tokenizer"
    for size in sorted(sizes):
        corpus = work / f"corpus-{size}GB.txt"
        if not corpus.exists():
            cut_corpus(biggest, corpus, int(size * GB))
        row = results.setdefault(str(size), {"bytes": corpus.stat().st_size})
        if "train" not in row:
            row["train"] = run_child(
                "train_task", script=__file__, corpus=str(corpus), vocab_sizes=vocab_sizes,
                save_dir=str(tokenizer_dir) if size == min(sizes) else "",
            )  # fmt: skip
            save(results, work)
            print(f"{size} GB train: {row['train']}", file=sys.stderr)
        for backend in ("tiktoken", "ours"):  # ours, the slower, last
            if backend not in row:
                row[backend] = run_child(
                    "encode_task", script=__file__, tokenizer_dir=str(tokenizer_dir),
                    corpus=str(corpus), output=str(work / "ids.npy"), backend=backend,
                )  # fmt: skip
                save(results, work)
                print(f"{size} GB encode {backend}: {row[backend]}", file=sys.stderr)


def save(results: dict, work: Path) -> None:
    (work / "results.json").write_text(json.dumps(results, indent=1))


def table(results: dict, vocab_sizes: list[int]) -> str:
    merges = " | ".join(f"merge {v // 1000}K s" for v in vocab_sizes)
    lines = [
        f"| GB | distinct pre-tokens | pre-tokenize s | {merges} | training peak MB "
        "| encode s (MB/s), ours | peak MB | encode s (MB/s), tiktoken | peak MB |",
        "|" + "---:|" * (8 + len(vocab_sizes)),
    ]
    for row in sorted(results.values(), key=lambda row: row["bytes"]):
        train, mb = row.get("train"), row["bytes"] / 1e6
        if train is None:
            continue
        cells = [f"{row['bytes'] / GB:.2f}", f"{train['distinct_pretokens']:,}",
                 f"{train['pretokenize_s']:.0f}"]  # fmt: skip
        cells += [f"{train[f'merge_{v}_s']:.0f}" if f"merge_{v}_s" in train else "not run"
                  for v in vocab_sizes]  # fmt: skip
        cells.append(f"{train['peak_mb']:,.0f}")
        for backend in ("ours", "tiktoken"):
            run = row.get(backend)
            if run:
                cells += [
                    f"{run['seconds']:.0f} ({mb / run['seconds']:.1f})",
                    f"{run['peak_mb']:,.0f}",
                ]
            else:
                cells += ["not run", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def projection(results: dict, vocab_sizes: list[int]) -> str:
    """What the largest size measured projects for TinyStories (2.2 GB) and OpenWebText
    (11.9 GB) on 16 cores. Pre-tokenizing and encoding are spread over the workers: 16 instead
    of 2 divides their time by 8 (assuming they keep scaling as from 1 to 2 workers). The merges
    run in one process and grow with the distinct pre-tokens, not the text: given per million."""
    size, row = max(((float(k), v) for k, v in results.items() if "train" in v))
    gb, train = row["bytes"] / GB, row["train"]
    lines = ["| corpus | GB | pre-tokenize, 16 cores | encode ours | encode tiktoken |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, target in [("TinyStories", 2.2), ("OpenWebText", 11.9)]:
        scale = target / gb / (16 / WORKERS)
        cells = [name, f"{target}", f"{train['pretokenize_s'] * scale / 60:.1f} min"]
        for backend in ("ours", "tiktoken"):
            run = row.get(backend)
            cells.append(f"{run['seconds'] * scale / 60:.1f} min" if run else "not measured")
        lines.append("| " + " | ".join(cells) + " |")
    millions = train["distinct_pretokens"] / 1e6
    merges = ", ".join(
        f"{v // 1000}K: {train[f'merge_{v}_s'] / millions:.0f} s"
        for v in vocab_sizes if f"merge_{v}_s" in train
    )  # fmt: skip
    return (f"(from the {size} GB measurements)\n\n" + "\n".join(lines)
            + f"\n\nmerges, one process, per million distinct pre-tokens: {merges}")  # fmt: skip


def plot(results: dict, vocab_sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((v["bytes"] / GB, v) for v in results.values() if "train" in v)
    gb = [g for g, _ in rows]
    fig, (times, memory, distinct) = plt.subplots(1, 3, figsize=(15, 4.5))
    series = {"pre-tokenize (2 workers)": lambda r: r["train"]["pretokenize_s"]}
    for v in vocab_sizes:
        series[f"merges to {v // 1000}K"] = lambda r, v=v: r["train"][f"merge_{v}_s"]
    for backend in ("ours", "tiktoken"):
        series[f"encode, {backend} (2 workers)"] = lambda r, b=backend: r[b]["seconds"]
    for label, value in series.items():
        points = [(g, value(r)) for g, r in rows if _has(r, value)]
        times.plot(*zip(*points, strict=True), "o-", label=label)
    times.set(xlabel="corpus GB", ylabel="seconds", title="time")
    for label, key in [("training", "train"), ("encode, ours", "ours"),
                       ("encode, tiktoken", "tiktoken")]:  # fmt: skip
        points = [(g, r[key]["peak_mb"]) for g, r in rows if key in r]
        memory.plot(*zip(*points, strict=True), "o-", label=label)
    memory.set(xlabel="corpus GB", ylabel="peak MB (PSS, all processes)", title="peak memory")
    distinct.plot(gb, [r["train"]["distinct_pretokens"] for _, r in rows], "o-")
    distinct.set(xlabel="corpus GB", ylabel="distinct pre-tokens", title="distinct pre-tokens")
    for ax in (times, memory, distinct):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    times.legend(fontsize=8)
    memory.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def _has(row: dict, value) -> bool:
    try:
        value(row)
    except KeyError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="0.1,0.5,1", help="corpus sizes in GB")
    parser.add_argument("--vocab", default="10000,32000", help="vocabulary sizes to train")
    parser.add_argument("--dir", help="where the corpora and results.json go (default: a temp dir)")
    parser.add_argument("--plot-only", action="store_true", help="redraw from DIR/results.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(TASKS[spec["task"]](**spec["kwargs"])))
        return
    vocab_sizes = [int(v) for v in args.vocab.split(",")]
    work = Path(args.dir or tempfile.mkdtemp(prefix="tokenizer-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not args.plot_only:
        measure([float(s) for s in args.sizes.split(",")], vocab_sizes, work, results)
    print(table(results, vocab_sizes), "\n", projection(results, vocab_sizes), sep="\n")
    plot(results, vocab_sizes)
    print(f"\nplot: {PLOT}; results: {results_path}")


if __name__ == "__main__":
    main()
