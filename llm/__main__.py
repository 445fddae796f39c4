"""The quickstart: `uv run -m llm` trains a small language model from nothing and lets it write.

Offline and in a few minutes on a laptop CPU, it runs the whole pipeline on the built-in story
corpus (llm/stories.py):

    corpus -> BPE tokenizer -> token arrays (.npy) -> training -> checkpoint + plots -> stories

Everything goes to a fresh run directory (runs/quickstart-DATE-TIME unless --out says otherwise).
"""

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from llm.bpe_tokenizer import BpeTokenizer
from llm.bpe_training import train_bpe
from llm.checkpoint import load_model
from llm.generating import SamplingConfig, eos_id_of, generate
from llm.stories import write_corpus
from llm.training import TrainConfig, train
from llm.transformer import ModelConfig

EOT = "<|endoftext|>"
PROMPTS = ["Once upon a time", "One day, a little dog named", "Lily wanted to"]

# Small enough to learn the story corpus in about three minutes on two CPU cores.
MODEL = ModelConfig(
    vocab_size=1024, context_length=256, d_model=128, num_layers=4, num_heads=4, d_ff=None
)


def stage(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def run(args: argparse.Namespace) -> dict:
    """The whole pipeline; returns the run directory, final metrics and the stories written."""
    out = args.out or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            sys.exit(f"error: {out} is not empty; choose another --out or pass --overwrite")
        if not {p.name for p in out.iterdir()} <= {"data", "tokenizer", "model"}:
            sys.exit(f"error: {out} holds files that a quickstart did not write; not removing it")
        shutil.rmtree(out)
    data, tokenizer_dir = out / "data", out / "tokenizer"
    began = time.perf_counter()

    stage(1, f"writing the built-in story corpus to {data}")
    train_txt, valid_txt = write_corpus(data, int(args.train_mb * 1e6), int(args.train_mb * 1e5))

    stage(2, f"training a {args.vocab_size}-token BPE tokenizer on {train_txt.name}")
    vocab, merges = train_bpe(train_txt, args.vocab_size, [EOT], num_workers=2)
    tokenizer = BpeTokenizer(vocab, merges, [EOT])
    tokenizer.save(tokenizer_dir)

    stage(3, "encoding the train and validation text to token arrays")
    for split in (train_txt, valid_txt):
        tokenizer.encode_file(split, split.with_suffix(".npy"), num_workers=2)

    stage(4, "training the model")
    config = TrainConfig(
        model_preset="tiny",
        model=dataclasses.replace(MODEL, vocab_size=args.vocab_size),
        train_data=str(train_txt.with_suffix(".npy")),
        valid_data=str(valid_txt.with_suffix(".npy")),
        tokenizer_dir=str(tokenizer_dir),
        run_dir=str(out / "model"),
        max_iters=args.max_iters,
        batch_size=16,
        max_lr=3e-3,
        min_lr=3e-4,
        warmup_iters=30,
        log_interval=20,
        eval_interval=100,
        eval_windows=32,
        checkpoint_interval=args.max_iters,
        device=args.device,
        seed=args.seed,
    )
    metrics = train(config)

    stage(5, "writing stories")
    model, _ = load_model(out / "model", device="cpu")
    eos = eos_id_of(tokenizer)
    stories = []
    for i, prompt in enumerate(PROMPTS):
        sampling = SamplingConfig(max_new_tokens=200, eos_id=eos, seed=i)
        ids = generate(model, tokenizer.encode(prompt), sampling)
        stories.append(prompt + tokenizer.decode(ids))
        print(f"\n--- {prompt!r}\n{stories[-1]}")

    minutes = (time.perf_counter() - began) / 60
    print(
        f"\nDone in {minutes:.1f} min. Validation loss {metrics['val_loss']:.3f} nats/token "
        f"({metrics['val_bits_per_byte']:.3f} bits/byte) on the whole validation split.\n"
        f"  corpus and token arrays  {data}\n  tokenizer                {tokenizer_dir}\n"
        f"  checkpoint and metrics   {out / 'model'}\n"
        f"  plots                    {out / 'model' / 'img'}\n\nNext:\n"
        f"  uv run -m llm.generating --checkpoint {out / 'model'} --prompt 'Once upon a time'\n"
        "  uv run -m llm.data download tinystories       # real data (needs internet)\n"
        "  uv run -m llm.bpe_tokenizer                   # 10K tokenizer + token arrays\n"
        "  uv run -m llm.training configs/cpu-small.toml # train on TinyStories"
    )
    return {"out": out, "metrics": metrics, "stories": stories}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m llm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="run directory (default: a new one in runs/)")
    parser.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out")
    parser.add_argument("--train-mb", type=float, default=3.0, help="size of the train corpus")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--max-iters", type=int, default=600, help="optimizer steps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main()
