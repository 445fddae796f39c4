"""Our tokenizer read from SmolLM2's GGUF file against Hugging Face's on real text: the same
vocabulary and merges (transformers reads them from the same file) with SmolLM2's own
pre-tokenizer (Digits, then ByteLevel: what its tokenizer.json has, and the "smollm" the file
names; transformers itself would use GPT-2's). Every line of each file is encoded by both; the
ids must be identical.

    uv run kernel/comparing_smollm2_tokenizer.py     # the project's benchmark texts, 8.6 MB
    uv run kernel/comparing_smollm2_tokenizer.py --files a.txt,b.txt

Results for this project are in docs/benchmarks.md.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

from llm.cli import parse, run_main
from llm.gguf_format import GgufFile, pretrained_path, tokenizer_from_gguf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = [DATA / "tinystories/valid.txt", DATA / "tinystories/train.txt",
         DATA / "owt/valid.txt", DATA / "docs/valid.txt"]  # fmt: skip


@dataclass
class CompareConfig:
    """Which texts to encode with both tokenizers."""

    files: list[str] = field(default_factory=lambda: [str(f) for f in FILES])  # UTF-8 texts


def reference(path: Path) -> Tokenizer:
    """transformers' tokenizer from the GGUF file, with SmolLM2's pre-tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return backend


def compare(files: list[str]) -> None:
    path = pretrained_path("smollm2-135m")
    ours, theirs = tokenizer_from_gguf(GgufFile(path)), reference(path)
    print("| file | MB | tokens | lines | lines with other ids | ours s | HF s (encode_batch) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in files:
        lines = Path(name).read_text(encoding="utf-8").split("\n")
        began = time.perf_counter()
        mine = [ours.encode(line) for line in lines]
        ours_s, began = time.perf_counter() - began, time.perf_counter()
        hf = [e.ids for e in theirs.encode_batch(lines, add_special_tokens=False)]
        hf_s = time.perf_counter() - began
        differ = [i for i, (a, b) in enumerate(zip(mine, hf, strict=True)) if a != b]
        size = sum(len(line.encode("utf-8")) + 1 for line in lines) / 1e6
        print(f"| {Path(name).parent.name}/{Path(name).name} | {size:.2f} | "
              f"{sum(map(len, mine)):,} | {len(lines):,} | {len(differ)} | {ours_s:.1f} | "
              f"{hf_s:.1f} |")  # fmt: skip
        for i in differ[:3]:
            print(f"  line {i + 1}: {lines[i][:80]!r}: ours {mine[i][:12]}, HF {hf[i][:12]}")


def main() -> None:
    run_main(
        lambda: compare(parse(CompareConfig, description=__doc__).files),
        errors=(OSError, ValueError),
    )


if __name__ == "__main__":
    main()
