"""The tokenizer's command line: train a BPE tokenizer on a text file, encode text files to
.npy arrays of token ids, or both on TinyStories (the default). llm/bpe_tokenizer.py is the
tokenizer itself.

    uv run -m llm.bpe_tokenizer                      # TinyStories: train 10K, encode train+valid
    uv run -m llm.bpe_tokenizer train --input corpus.txt --vocab-size 10000 --out tok/
    uv run -m llm.bpe_tokenizer encode --tokenizer tok/ --input corpus.txt --output corpus.npy

An interrupted encode (Ctrl-C, SIGTERM, a crash) keeps what it finished in corpus.npy.partial
and corpus.npy.progress: the same command again continues from there.

(`uv run -m llm.tokenizer_command` is the same.)
"""

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from llm.bpe_tokenizer import (
    ENCODE_BACKENDS,
    EOT,
    SETTINGS_FILE,
    TOKENIZER_FILES,
    BpeTokenizer,
)
from llm.bpe_training import check_training_args, check_vocab_size, train_bpe
from llm.cli import parse_command, run_main
from llm.config import ConfigError
from llm.stop_signals import Terminated, sigterm_raises

DEFAULT_TRAIN = "data/TinyStoriesV2-GPT4-train.txt"
DEFAULT_VALID = "data/TinyStoriesV2-GPT4-valid.txt"


@dataclass
class TrainOptions:
    input: str  # training text (UTF-8)
    vocab_size: int  # tokens in all: 256 bytes + special tokens + one per merge
    out: str  # directory for vocab.json, merges.txt and special_tokens.json
    special_tokens: list[str] = field(default_factory=lambda: [EOT])  # never split ("," for none)
    workers: int = 0  # processes (0 = one per CPU)

    def __post_init__(self):
        check_vocab_size(self.vocab_size, self.special_tokens)
        check_workers(self.workers)


@dataclass
class EncodeOptions:
    tokenizer: str  # tokenizer directory, or a GGUF file or model name whose tokenizer to use
    input: str  # text file (UTF-8)
    output: str  # .npy file of token ids to write
    workers: int = 0  # processes (0 = one per CPU)
    backend: str = "ours"  # "ours", or "tiktoken" built from our ranks (same ids, faster)

    def __post_init__(self):
        check_workers(self.workers)
        if self.backend not in ENCODE_BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(ENCODE_BACKENDS)}, not {self.backend!r}"
            )


@dataclass
class PipelineOptions:
    input: str = DEFAULT_TRAIN  # training text; also encoded to OUT/train.npy
    valid: str = ""  # text encoded to OUT/valid.npy ("": TinyStories valid with the default input)
    out: str = "data/tinystories-bpe-10k"  # directory for the tokenizer and the .npy files
    vocab_size: int = 10_000  # tokens in all: 256 bytes + special tokens + one per merge
    special_tokens: list[str] = field(default_factory=lambda: [EOT])  # never split ("," for none)
    workers: int = 0  # processes (0 = one per CPU)

    def __post_init__(self):
        check_vocab_size(self.vocab_size, self.special_tokens)
        check_workers(self.workers)


COMMANDS = {
    "train": (TrainOptions, "train a tokenizer on a text file"),
    "encode": (EncodeOptions, "encode a text file to a .npy array of token ids"),
    "pipeline": (PipelineOptions, "train on TinyStories (or --input), encode train and valid"),
}


def check_workers(workers: int) -> None:
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU) or more, not {workers}")


def run_train(options: TrainOptions) -> BpeTokenizer:
    """The `train` command."""
    out = Path(options.out)
    check_training_args(options.input, options.vocab_size, options.special_tokens)
    check_outputs([out / name for name in TOKENIZER_FILES], inputs=[Path(options.input)])
    tokenizer = _train_and_save(
        options.input, options.vocab_size, options.special_tokens, out, options.workers
    )
    print(f"encode text with: uv run -m llm.bpe_tokenizer encode --tokenizer {out} "
          "--input FILE --output FILE.npy")  # fmt: skip
    return tokenizer


def _train_and_save(
    input_path: str, vocab_size: int, special_tokens: list[str], out: Path, workers: int
) -> BpeTokenizer:
    print(f"training a {vocab_size:,}-token BPE tokenizer on {input_path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vocab, merges = train_bpe(input_path, vocab_size, special_tokens, workers)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    tokenizer = BpeTokenizer(vocab, merges, special_tokens)
    tokenizer.save(out)
    print(f"saved {out}/vocab.json, merges.txt, special_tokens.json")
    return tokenizer


def run_encode(options: EncodeOptions) -> None:
    """The `encode` command."""
    directory, output = Path(options.tokenizer), Path(options.output)
    tokenizer_files = [directory / name for name in (*TOKENIZER_FILES, SETTINGS_FILE)]
    if not directory.is_dir():  # a GGUF file: it must not be the output either
        tokenizer_files = [directory]
    check_outputs([output], inputs=[Path(options.input), *tokenizer_files])
    tokenizer = _tokenizer(options.tokenizer)
    _encode(tokenizer, Path(options.input), output, options.workers, options.backend)
    print(f"train on it with: uv run -m llm.training --train_data {output} "
          f"--tokenizer_dir {options.tokenizer}")  # fmt: skip


def _tokenizer(source: str) -> BpeTokenizer:
    """A tokenizer directory, or the tokenizer of a GGUF file or a pretrained model's (read by
    llm/loading.py, imported only then: it brings PyTorch)."""
    if Path(source).is_dir():
        return BpeTokenizer.load(source)
    from llm.loading import load_tokenizer

    return load_tokenizer(source)


def _encode(
    tokenizer: BpeTokenizer,
    input_path: Path,
    output_path: Path,
    workers: int,
    backend: str = "ours",
) -> None:
    n = tokenizer.encode_file(input_path, output_path, workers, backend=backend)
    print(f"wrote {output_path}: {n:,} tokens")


def run_pipeline(options: PipelineOptions) -> None:
    """The default command: train on the TinyStories train split, encode train and valid."""
    train_path, out = Path(options.input), Path(options.out)
    if not train_path.exists():
        hint = "run `uv run -m llm.data download tinystories`, or pass --input FILE"
        default = options.input == DEFAULT_TRAIN
        raise FileNotFoundError(f"{train_path} not found" + (f": {hint}" if default else ""))
    valid = options.valid or (DEFAULT_VALID if options.input == DEFAULT_TRAIN else "")
    splits = {"train": train_path} | ({"valid": Path(valid)} if valid else {})
    if valid and not splits["valid"].exists():
        raise FileNotFoundError(f"{valid} not found (the validation split; or pass --valid FILE)")
    check_training_args(train_path, options.vocab_size, options.special_tokens)
    outputs = [out / name for name in (*TOKENIZER_FILES, "train.npy", "valid.npy")]
    check_outputs(outputs, inputs=list(splits.values()))
    tokenizer = _train_and_save(
        options.input, options.vocab_size, options.special_tokens, out, options.workers
    )
    for name, path in splits.items():
        _encode(tokenizer, path, out / f"{name}.npy", options.workers)
    print(f"done. Tokenizer and token arrays are in {out}/", end="")
    if out == Path(PipelineOptions.out):  # the TinyStories presets read them from there
        print("; train on them with: uv run -m llm.training configs/cpu-small.toml", end="")
    print()


def check_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse to write where writing would destroy an input (the same file, also through a
    symbolic or hard link), or where a directory is expected and a file stands."""
    for output in outputs:
        if not output.parent.is_dir() and output.parent.exists():
            raise NotADirectoryError(f"{output.parent}: is a file, not a directory")
        for path in inputs:
            if output.exists() and path.exists() and os.path.samefile(output, path):
                raise ConfigError(f"the output {output} is the input {path}: not overwriting it")


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        name, options = parse_command(
            COMMANDS,
            argv,
            default="pipeline",
            description=__doc__,
            prog="uv run -m llm.bpe_tokenizer",
        )
        {"train": run_train, "encode": run_encode, "pipeline": run_pipeline}[name](options)

    stopped = (
        "terminated (SIGTERM); unfinished files were removed, but an encode keeps the part it "
        "finished: run it again to continue"
    )
    with sigterm_raises(stopped):
        run_main(run, errors=(OSError, ValueError, Terminated))


if __name__ == "__main__":
    main()
