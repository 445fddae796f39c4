"""Side-by-side benchmark of our BPE tokenizer against Hugging Face `tokenizers` and tiktoken.

    uv run python kernel/benchmarking_tokenizer.py                  # everything (5-10 minutes)
    uv run python kernel/benchmarking_tokenizer.py --sections train
    uv run python kernel/benchmarking_tokenizer.py --sections encode,cold,long

Training: ours (2 worker processes) vs HF's BpeTrainer (ByteLevel pre-tokenizer, 2 threads), same
corpus, vocab size and special token. Encoding: ours vs tiktoken built from our own ranks (so the
ids are identical): one process vs one thread, and a whole file encoded by 2 worker processes vs
tiktoken encode_batch with 2 threads. Cold: a fresh tokenizer's first pass over a text (every
word is new to its caches) and its second pass (cached words), each against tiktoken in the same
process. Long: one 10 MB pre-token (no whitespace) through encode, encode_iterable and
encode_file, against tiktoken.

Every measurement runs in a fresh child process. Wall time is taken inside the child around the
work only (no interpreter start or imports). Ours and the peer run alternately, twice each (A B B
A), and the faster run of each counts: the 2 cores are shared, and load from others comes and
goes. Peak memory is the largest sum, sampled every 10 ms,
of the proportional set size (PSS) of the child and all its descendants, so worker processes
count and pages they share are not counted twice.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT.parent / "shared/data/docs/train.txt"
DOCS_VALID = ROOT.parent / "shared/data/docs/valid.txt"
TINYSTORIES = ROOT.parent / "shared/data/tinystories/train.txt"
TINYSTORIES_VALID = ROOT.parent / "shared/data/tinystories/valid.txt"
OWT = ROOT.parent / "shared/data/owt/valid.txt"
# llm.bpe_tokenizer.EOT, written out: importing it would load our tokenizer into the children
# that measure Hugging Face's, and its memory would count against theirs.
EOT = "<|endoftext|>"


# ---- child tasks: each returns a dict of results


def train_ours(corpus: str, vocab_size: int, workers: int, save_dir: str) -> dict:
    from llm.bpe_tokenizer import BpeTokenizer
    from llm.bpe_training import merge_pairs
    from llm.pretokenization import count_pretokens

    start = time.perf_counter()
    counts = count_pretokens(corpus, [EOT], workers, progress=False)
    pretokenized = time.perf_counter()
    cpu = time.process_time()
    vocab, merges = merge_pairs(counts, vocab_size, [EOT])
    end = time.perf_counter()
    BpeTokenizer(vocab, merges, [EOT]).save(save_dir)
    return {
        "seconds": end - start,
        "pretokenize_s": pretokenized - start,
        "merge_s": end - pretokenized,
        "merge_cpu_s": time.process_time() - cpu,
        "distinct_pretokens": len(counts),
    }


def train_hf(corpus: str, vocab_size: int) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    tokenizer.train([corpus], trainer)
    return {"seconds": time.perf_counter() - start, "vocab": tokenizer.get_vocab_size()}


def encode_one_process(tokenizer_dir: str, path: str) -> dict:
    """Ours (a fresh tokenizer: empty cache) vs tiktoken, one thread, best of 2 each."""
    from llm.bpe_tokenizer import BpeTokenizer

    text = Path(path).read_text(encoding="utf-8")
    enc = BpeTokenizer.load(tokenizer_dir).to_tiktoken()
    ours, theirs = [], []
    for _ in range(2):
        tokenizer = BpeTokenizer.load(tokenizer_dir)
        start = time.perf_counter()
        ids = tokenizer.encode(text)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected = enc.encode(text, allowed_special="all")
        theirs.append(time.perf_counter() - start)
        assert ids == expected, "ids differ from tiktoken"
    mb = len(text.encode("utf-8")) / 1e6
    return {"ours_mb_s": mb / min(ours), "tiktoken_mb_s": mb / min(theirs), "tokens": len(ids)}


def encode_file_ours(tokenizer_dir: str, path: str, workers: int) -> dict:
    from llm.bpe_tokenizer import BpeTokenizer

    tokenizer = BpeTokenizer.load(tokenizer_dir)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n = tokenizer.encode_file(path, Path(tmp) / "ids.npy", workers, progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "mb_s": os.path.getsize(path) / 1e6 / seconds, "tokens": n}


def encode_batch_tiktoken(tokenizer_dir: str, path: str, threads: int) -> dict:
    from llm.bpe_tokenizer import BpeTokenizer

    enc = BpeTokenizer.load(tokenizer_dir).to_tiktoken()
    documents = Path(path).read_text(encoding="utf-8").split(EOT)
    start = time.perf_counter()
    batches = enc.encode_ordinary_batch(documents, num_threads=threads)
    seconds = time.perf_counter() - start
    n = sum(map(len, batches)) + len(documents) - 1
    return {"seconds": seconds, "mb_s": os.path.getsize(path) / 1e6 / seconds, "tokens": n}


def encode_cold_warm(tokenizer_dir: str, path: str, repeat: int = 7) -> dict:
    """A fresh tokenizer's first pass over the text (the cold path: every word is merged) and
    second pass (words from the cache), and tiktoken's pass, alternating; best of `repeat`."""
    from llm.bpe_tokenizer import BpeTokenizer

    text = Path(path).read_text(encoding="utf-8")
    enc = BpeTokenizer.load(tokenizer_dir).to_tiktoken()
    cold, warm, theirs = [], [], []
    for _ in range(repeat):
        tokenizer = BpeTokenizer.load(tokenizer_dir)
        start = time.perf_counter()
        ids = tokenizer.encode(text)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = tokenizer.encode(text)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected = enc.encode(text, allowed_special="all")
        theirs.append(time.perf_counter() - start)
        assert ids == again == expected, "ids differ from tiktoken"
    mb = len(text.encode("utf-8")) / 1e6
    return {
        "cold_mb_s": mb / min(cold),
        "warm_mb_s": mb / min(warm),
        "tiktoken_mb_s": mb / min(theirs),
        "seconds": min(cold),
    }


def encode_long_piece(tokenizer_dir: str, letters: str, size: int, mode: str) -> dict:
    """One pre-token of `size` random letters (seed 0), through `mode` (encode, encode_iterable
    in pieces of 65,536 characters, or encode_file), then tiktoken; the ids must be equal."""
    import random

    import numpy as np

    from llm.bpe_tokenizer import BpeTokenizer

    text = "".join(random.Random(0).choices(letters, k=size))
    tokenizer = BpeTokenizer.load(tokenizer_dir)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "long.txt").write_text(text, encoding="utf-8")
        start = time.perf_counter()
        if mode == "encode":
            ids = tokenizer.encode(text)
        elif mode == "encode_iterable":
            pieces = (text[i : i + 65536] for i in range(0, len(text), 65536))
            ids = list(tokenizer.encode_iterable(pieces))
        else:
            tokenizer.encode_file(Path(tmp, "long.txt"), Path(tmp, "ids.npy"), 2, progress=False)
            ids = np.load(Path(tmp, "ids.npy")).tolist()
        seconds = time.perf_counter() - start
    start = time.perf_counter()
    expected = tokenizer.to_tiktoken().encode_ordinary(text)
    tiktoken_seconds = time.perf_counter() - start
    assert ids == expected, "ids differ from tiktoken"
    peak_kb = max(
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {
        "seconds": seconds,
        "tiktoken_seconds": tiktoken_seconds,
        "tokens": len(ids),
        "peak_mb": peak_kb / 1024,  # the largest RSS of this process or of a worker
    }


TASKS = {
    f.__name__: f
    for f in (
        train_ours,
        train_hf,
        encode_one_process,
        encode_file_ours,
        encode_batch_tiktoken,
        encode_cold_warm,
        encode_long_piece,
    )
}


# ---- the parent: run a task in a child process and watch its memory


def run_child(task: str, watch_memory: bool = True, script: str = __file__, **kwargs) -> dict:
    """Run TASKS[task](**kwargs) of `script` (this one, or another with the same --child
    argument) in a new process; add its peak tree memory (MB). Reading the PSS of a process of
    hundreds of MB every 10 ms slows it down (twice as slow for the long pre-token), so tasks
    that measure their own peak RSS run with watch_memory=False."""
    cmd = [sys.executable, script, "--child", json.dumps({"task": task, "kwargs": kwargs})]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = [0]
    watcher = threading.Thread(target=_watch_memory, args=(child, peak), daemon=True)
    if watch_memory:
        watcher.start()
    out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{task} failed with exit code {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    if watch_memory:
        watcher.join()
        result["peak_mb"] = peak[0] / 1024
    return result


def run_pair(a: tuple[str, dict], b: tuple[str, dict], repeat: int = 2) -> tuple[dict, dict]:
    """Run two tasks alternately (A B B A ...) to even out the load of a shared machine; keep
    each one's fastest run, with the largest peak memory seen."""
    runs: dict[int, list[dict]] = {0: [], 1: []}
    for i in range(repeat):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            task, kwargs = (a, b)[which]
            runs[which].append(run_child(task, **kwargs))
    return tuple(_best(runs[which]) for which in (0, 1))


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"]) | {"peak_mb": max(r["peak_mb"] for r in runs)}


def _watch_memory(child: subprocess.Popen, peak: list[int]) -> None:
    while child.poll() is None:
        peak[0] = max(peak[0], sum(_pss_kb(pid) for pid in _tree(child.pid)))
        time.sleep(0.01)


def _tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid] + [p for c in children for p in _tree(int(c))]


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- the report


def bench_training(tokenizer_dirs: dict[str, str], tmp: str) -> list[str]:
    rows = [
        "| corpus | vocab | ours s (pre-tokenize + merge) | HF s | time ratio"
        " | ours MB | HF MB | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, corpus, vocab_size in [
        ("docs/train.txt", DOCS, 10_000),
        ("docs/train.txt", DOCS, 32_000),
        ("tinystories/train.txt", TINYSTORIES, 10_000),
    ]:
        save_dir = tokenizer_dirs.setdefault(f"{name}-{vocab_size}", tempfile.mkdtemp(dir=tmp))
        ours, hf = run_pair(
            (
                "train_ours",
                dict(corpus=str(corpus), vocab_size=vocab_size, workers=2, save_dir=save_dir),
            ),
            ("train_hf", dict(corpus=str(corpus), vocab_size=vocab_size)),
        )
        print(f"train {name} {vocab_size}: ours {ours} | HF {hf}", file=sys.stderr)
        seconds = f"{ours['seconds']:.2f} ({ours['pretokenize_s']:.2f} + {ours['merge_s']:.2f})"
        rows.append(
            f"| {name} | {vocab_size:,} | {seconds} | {hf['seconds']:.2f} "
            f"| {ours['seconds'] / hf['seconds']:.2f}x | {ours['peak_mb']:.0f} "
            f"| {hf['peak_mb']:.0f} | {ours['peak_mb'] / hf['peak_mb']:.2f}x |"
        )
    return rows


def ensure_tokenizer(tokenizer_dirs: dict[str, str], tmp: str, name: str, corpus: Path) -> str:
    """The directory of a 10K tokenizer trained on `corpus`, trained now if not yet."""
    key = f"{name}-10000"
    if key not in tokenizer_dirs:
        tokenizer_dirs[key] = tempfile.mkdtemp(dir=tmp)
        run_child(
            "train_ours",
            corpus=str(corpus),
            vocab_size=10_000,
            workers=2,
            save_dir=tokenizer_dirs[key],
        )
    return tokenizer_dirs[key]


def bench_encoding(tokenizer_dirs: dict[str, str], tmp: str) -> list[str]:
    ensure_tokenizer(tokenizer_dirs, tmp, "tinystories/train.txt", TINYSTORIES)
    ensure_tokenizer(tokenizer_dirs, tmp, "docs/train.txt", DOCS)
    rows = [
        "| text (10K vocab trained on it) | mode | ours MB/s | tiktoken MB/s | ratio"
        " | ours peak MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, path, key in [
        ("tinystories/train.txt", TINYSTORIES, "tinystories/train.txt-10000"),
        ("docs/train.txt", DOCS, "docs/train.txt-10000"),
    ]:
        single = run_child("encode_one_process", tokenizer_dir=tokenizer_dirs[key], path=str(path))
        ratio = single["ours_mb_s"] / single["tiktoken_mb_s"]
        rows.append(
            f"| {name} | 1 process vs 1 thread | {single['ours_mb_s']:.2f} "
            f"| {single['tiktoken_mb_s']:.2f} | {ratio:.2f}x | |"
        )
        ours, theirs = run_pair(
            (
                "encode_file_ours",
                dict(tokenizer_dir=tokenizer_dirs[key], path=str(path), workers=2),
            ),
            (
                "encode_batch_tiktoken",
                dict(tokenizer_dir=tokenizer_dirs[key], path=str(path), threads=2),
            ),
        )
        assert ours["tokens"] == theirs["tokens"], (ours, theirs)
        rows.append(
            f"| {name} | file, 2 processes vs encode_batch 2 threads | {ours['mb_s']:.2f} | "
            f"{theirs['mb_s']:.2f} | {ours['mb_s'] / theirs['mb_s']:.2f}x | {ours['peak_mb']:.0f} |"
        )
        print(f"encode {name}: {single} | {ours} | {theirs}", file=sys.stderr)
    docs_dir = tokenizer_dirs["docs/train.txt-10000"]  # peak memory for 3 sizes of input
    small = run_child("encode_file_ours", tokenizer_dir=docs_dir, path=str(DOCS_VALID), workers=2)
    rows.append(
        f"| docs/valid.txt (4 MB) | file, 2 processes | {small['mb_s']:.2f} | | "
        f"| {small['peak_mb']:.0f} |"
    )
    triple = Path(tmp) / "docs_train_x3.txt"
    triple.write_bytes(DOCS.read_bytes() * 3)
    big = run_child("encode_file_ours", tokenizer_dir=docs_dir, path=str(triple), workers=2)
    rows.append(
        f"| docs/train.txt x3 (113 MB) | file, 2 processes | {big['mb_s']:.2f} | | "
        f"| {big['peak_mb']:.0f} |"
    )
    return rows


def bench_cold(tokenizer_dirs: dict[str, str], tmp: str) -> list[str]:
    rows = [
        "| text | tokenizer (10K, trained on) | ours cold MB/s | ours warm MB/s | tiktoken MB/s"
        " | cold ratio | warm ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for text_name, text, tokenizer_name, corpus in [
        ("owt/valid.txt", OWT, "docs/train.txt", DOCS),
        ("owt/valid.txt", OWT, "owt/valid.txt", OWT),
        ("tinystories/valid.txt", TINYSTORIES_VALID, "tinystories/train.txt", TINYSTORIES),
    ]:
        directory = ensure_tokenizer(tokenizer_dirs, tmp, tokenizer_name, corpus)
        r = run_child("encode_cold_warm", tokenizer_dir=directory, path=str(text))
        print(f"cold {text_name} / {tokenizer_name}: {r}", file=sys.stderr)
        rows.append(
            f"| {text_name} | {tokenizer_name} | {r['cold_mb_s']:.2f} | {r['warm_mb_s']:.2f} "
            f"| {r['tiktoken_mb_s']:.2f} | {r['cold_mb_s'] / r['tiktoken_mb_s']:.2f}x "
            f"| {r['warm_mb_s'] / r['tiktoken_mb_s']:.2f}x |"
        )
    return rows


def bench_long(tokenizer_dirs: dict[str, str], tmp: str) -> list[str]:
    directory = ensure_tokenizer(tokenizer_dirs, tmp, "owt/valid.txt", OWT)
    rows = [
        "| 10 MB pre-token | ours | ours s | tiktoken s | time ratio | ours peak RSS MB | tokens |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, letters, modes in [
        ("random a-z", "abcdefghijklmnopqrstuvwxyz", ["encode", "encode_iterable", "encode_file"]),
        ('"aaaa..."', "a", ["encode"]),
    ]:
        for mode in modes:
            r = run_child(
                "encode_long_piece",
                watch_memory=False,
                tokenizer_dir=directory,
                letters=letters,
                size=10**7,
                mode=mode,
            )
            print(f"long {name} {mode}: {r}", file=sys.stderr)
            rows.append(
                f"| {name} | {mode} | {r['seconds']:.1f} | {r['tiktoken_seconds']:.1f} "
                f"| {r['seconds'] / r['tiktoken_seconds']:.1f}x | {r['peak_mb']:.0f} "
                f"| {r['tokens']:,} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections",
        default="train,encode,cold,long",
        help="comma-separated: train, encode, cold, long",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(TASKS[spec["task"]](**spec["kwargs"])))
        return
    for corpus in (DOCS, TINYSTORIES, TINYSTORIES_VALID, OWT):
        if not corpus.is_file():
            raise SystemExit(f"error: {corpus} not found (the shared benchmark data)")
    tokenizer_dirs: dict[str, str] = {}
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in sections:
            print("\n".join(["### Training", "", *bench_training(tokenizer_dirs, tmp), ""]))
        if "encode" in sections:
            print("\n".join(["### Encoding", "", *bench_encoding(tokenizer_dirs, tmp), ""]))
        if "cold" in sections:
            print("\n".join(["### Cold and warm", "", *bench_cold(tokenizer_dirs, tmp), ""]))
        if "long" in sections:
            print("\n".join(["### One long pre-token", "", *bench_long(tokenizer_dirs, tmp), ""]))


if __name__ == "__main__":
    main()
