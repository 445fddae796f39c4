"""The quickstart: `uv run -m llm` trains a small language model from nothing and lets it write.

Offline and in a few minutes on a laptop CPU, it runs the whole pipeline on the built-in story
corpus (llm/stories):

    corpus -> BPE tokenizer -> token arrays (.npy) -> training -> checkpoint + plots -> stories

Everything goes to a fresh run directory (runs/quickstart-DATE-TIME unless --out says otherwise).
Every setting and the run directory are checked before any work, and the run's time is estimated
from a quick measure of this machine. If a stage before the stories fails, what the quickstart
wrote is removed again. Ctrl-C during training stops after the current step, keeps the
checkpoint, and says how to continue.
"""

import dataclasses
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.bpe_training import train_bpe
from llm.checkpoint import CheckpointError, load_model
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.data import DataError
from llm.device import resolve_device
from llm.generating import SamplingConfig, eos_id_of, generate
from llm.optim import AdamW
from llm.paths import check_writable_dir
from llm.stories import write_corpus
from llm.training import TrainConfig, TrainingDiverged, train
from llm.transformer import ModelConfig, Transformer, cross_entropy

PROMPTS = ["Once upon a time", "One day, a little dog named", "Lily wanted to"]

# Small enough to learn the story corpus in about three minutes on two CPU cores.
MODEL = ModelConfig(
    vocab_size=1024, context_length=256, d_model=128, num_layers=4, num_heads=4, d_ff=None
)
BATCH_SIZE = 16
EVAL_WINDOWS = 32  # validation windows of the periodic evaluations
MIN_TRAIN_MB = 0.1  # the validation text (a tenth) must hold a few context windows
STORIES_CPU_OUT = "runs/quickstart"  # where configs/stories-cpu.toml reads the stories
PARTS = ("data", "tokenizer", "model")  # what a quickstart writes in its run directory
ERRORS = (OSError, DataError, CheckpointError, TrainingDiverged)  # one line, exit status 1

# The time model, from the default run on an idle 2-core CPU (2.4 minutes in all): a training
# step there takes about 0.21 s (0.46 of a step of the cpu-small model, which takes 0.5 s there;
# docs/benchmarks.md), and nearly all the time is training.
REFERENCE_STEP_SECONDS = 0.21  # one training step of the quickstart model there
SECONDS_PER_MB = 1.2  # corpus, tokenizer, encoding and the final evaluation, per train MB
FIXED_SECONDS = 8.0  # start-up, plots and the stories
TRAINING_OVERHEAD = 1.05  # batches, logging and periodic evaluation on top of the steps
BUSY_LOAD = 0.5  # warn when the load average is above this share of the CPU cores
MEASURE_SECONDS, MEASURE_STEPS = 3.0, 12  # measuring the step time: for this long, at most


@dataclass
class QuickstartConfig:
    """`uv run -m llm`: the whole pipeline at a size a laptop CPU trains in minutes."""

    out: str = ""  # run directory ("" = a new runs/quickstart-DATE-TIME)
    overwrite: bool = False  # reuse a non-empty --out that holds an earlier quickstart run
    train_mb: float = 3.0  # size of the generated training text in MB (validation: a tenth)
    vocab_size: int = 1024  # BPE vocabulary: 256 bytes, <|endoftext|>, then one per merge
    max_iters: int = 600  # optimizer steps
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1" or "mps"
    seed: int = 0  # model initialisation and data order


def stage(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def check_config(config: QuickstartConfig) -> torch.device:
    """Raise a ConfigError for a bad setting; returns the device to train on."""
    if config.vocab_size < 257:
        raise ConfigError(
            f"--vocab-size must be at least 257 (256 bytes + {EOT}), not {config.vocab_size}"
        )
    if config.max_iters < 1:
        raise ConfigError(f"--max-iters must be at least 1, not {config.max_iters}")
    if not (math.isfinite(config.train_mb) and config.train_mb >= MIN_TRAIN_MB):
        raise ConfigError(f"--train-mb must be at least {MIN_TRAIN_MB}, not {config.train_mb}")
    try:
        return resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(f"--device: {e}") from None


def check_out(out: Path, overwrite: bool) -> None:
    """Raise a ConfigError unless the run can go to `out` without touching anything of value."""
    check_writable_dir(out, "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"{out} is not empty; choose another --out or pass --overwrite")
    if not {p.name for p in out.iterdir()} <= set(PARTS):
        raise ConfigError(f"{out} holds files that a quickstart did not write; not removing it")


def make_run_dir(out: Path) -> Path | None:
    """Create `out`, or empty an earlier quickstart's parts from it (check_out allowed that).
    Returns the topmost directory this created, None when `out` existed."""
    if out.is_dir():
        for name in PARTS:
            if (out / name).exists():
                shutil.rmtree(out / name)
        return None
    top = out
    while not top.parent.exists():
        top = top.parent
    out.mkdir(parents=True)
    return top


@contextmanager
def removed_on_failure(out: Path, created: Path | None) -> Iterator[None]:
    """If the block fails or is interrupted, remove what the run wrote: the directories the
    quickstart created, or only its parts in a directory that existed before."""
    try:
        yield
    except BaseException:
        for path in [created] if created else [out / name for name in PARTS]:
            shutil.rmtree(path, ignore_errors=True)
        raise


def measure_step_seconds(model_config: ModelConfig, device: torch.device) -> float:
    """Seconds per training step of the quickstart model here, on random tokens: the median of
    the steps that fit in MEASURE_SECONDS (MEASURE_STEPS of them at most, 3 at least), after one
    warm-up step. The median, so that a step slowed by another program does not set it."""
    model = Transformer(model_config).to(device)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    shape = (BATCH_SIZE, model_config.context_length + 1)
    batch = torch.randint(0, model_config.vocab_size, shape, generator=torch.Generator())
    batch = batch.to(device)
    times = []
    while len(times) < 4 or (sum(times[1:]) < MEASURE_SECONDS and len(times) <= MEASURE_STEPS):
        began = time.perf_counter()
        cross_entropy(model(batch[:, :-1]), batch[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def estimate_seconds(config: QuickstartConfig, step_seconds: float, on_cpu: bool) -> float:
    """The whole run's time: the measured steps, and the other stages scaled from the reference
    machine by the measured speed (on a GPU they run on a CPU of unknown speed: unscaled)."""
    speed = step_seconds / REFERENCE_STEP_SECONDS if on_cpu else 1.0
    steps = step_seconds * config.max_iters * TRAINING_OVERHEAD
    return steps + speed * (FIXED_SECONDS + SECONDS_PER_MB * config.train_mb)


def busy_warning(load: float, cpus: int) -> str | None:
    """A warning when other programs keep the CPUs busy, which slows the whole run."""
    if load < BUSY_LOAD * cpus:
        return None
    return (
        f"warning: this machine looks busy (load average {load:.1f} on {cpus} CPU cores): "
        "the run will take longer than on an idle machine"
    )


def print_plan(config: QuickstartConfig, device: torch.device, out: Path) -> float:
    """Say what will run, where, and for about how long; returns the estimate in seconds."""
    model_config = dataclasses.replace(MODEL, vocab_size=config.vocab_size)
    step_seconds = measure_step_seconds(model_config, device)
    estimate = estimate_seconds(config, step_seconds, device.type == "cpu")
    print(
        f"Quickstart into {out}: {config.train_mb:g} MB of stories, a {config.vocab_size}-token "
        f"tokenizer, {config.max_iters} training steps on {device}.\n"
        f"Estimated time: about {estimate / 60:.1f} min (a training step takes "
        f"{step_seconds:.2f} s here now; other programs using the CPU change it).",
        flush=True,
    )
    warning = busy_warning(os.getloadavg()[0], os.cpu_count() or 1)
    if warning:
        print(warning, file=sys.stderr)
    return estimate


def prepare_data(config: QuickstartConfig, out: Path) -> BpeTokenizer:
    """Stages 1-3: the corpus, a tokenizer trained on it, and both splits as token arrays."""
    data, tokenizer_dir = out / "data", out / "tokenizer"
    stage(1, f"writing the built-in story corpus to {data}")
    train_txt, valid_txt = write_corpus(
        data, int(config.train_mb * 1e6), int(config.train_mb * 1e5)
    )

    stage(2, f"training a {config.vocab_size}-token BPE tokenizer on {train_txt.name}")
    vocab, merges = train_bpe(train_txt, config.vocab_size, [EOT], num_workers=2)
    tokenizer = BpeTokenizer(vocab, merges, [EOT])
    tokenizer.save(tokenizer_dir)

    stage(3, "encoding the train and validation text to token arrays")
    for split in (train_txt, valid_txt):
        tokenizer.encode_file(split, split.with_suffix(".npy"), num_workers=2)
    return tokenizer


def train_model(config: QuickstartConfig, out: Path, vocab_size: int) -> dict:
    """Stage 4: train the model on the token arrays; returns train()'s final metrics."""
    stage(4, "training the model")
    return train(
        TrainConfig(
            model_preset="tiny",
            model=dataclasses.replace(MODEL, vocab_size=vocab_size),
            train_data=str(out / "data" / "train.npy"),
            valid_data=str(out / "data" / "valid.npy"),
            tokenizer_dir=str(out / "tokenizer"),
            run_dir=str(out / "model"),
            max_iters=config.max_iters,
            batch_size=BATCH_SIZE,
            max_lr=3e-3,
            min_lr=3e-4,
            warmup_iters=30,
            log_interval=20,
            eval_interval=100,
            eval_windows=EVAL_WINDOWS,
            checkpoint_interval=config.max_iters,
            device=config.device,
            seed=config.seed,
        )
    )


def write_stories(model_dir: Path, tokenizer: BpeTokenizer) -> list[str]:
    """Stage 5: the trained model continues each prompt."""
    stage(5, "writing stories")
    model, _ = load_model(model_dir, device="cpu")
    eos = eos_id_of(tokenizer)
    stories = []
    for i, prompt in enumerate(PROMPTS):
        sampling = SamplingConfig(max_new_tokens=200, eos_id=eos, seed=i)
        ids = generate(model, tokenizer.encode(prompt), sampling)
        stories.append(prompt + tokenizer.decode(ids))
        print(f"\n--- {prompt!r}\n{stories[-1]}")
    return stories


def stop_interrupted(out: Path, metrics: dict, max_iters: int) -> None:
    """Training stopped on Ctrl-C: say where the partial run is and exit 130, no stories."""
    print(
        f"interrupted at step {metrics['step']} of {max_iters}: the partial run is in {out}; "
        f"continue it with: uv run -m llm.training --run_dir {out / 'model'} --resume",
        file=sys.stderr,
    )
    raise SystemExit(130)


def validation_text(metrics: dict) -> str:
    """The final validation loss, saying truthfully what it was measured on."""
    if metrics["val_loss"] is None:
        return "No validation loss (no evaluation ran)."
    where = "the whole validation split" if metrics["val_exact"] else (
        f"{EVAL_WINDOWS} sampled validation windows (an estimate, not the whole split)"
    )  # fmt: skip
    bits = metrics["val_bits_per_byte"]
    per_byte = f" ({bits:.3f} bits/byte)" if bits is not None else ""
    return f"Validation loss {metrics['val_loss']:.3f} nats/token{per_byte} on {where}."


def print_summary(out: Path, metrics: dict, minutes: float, estimate: float) -> None:
    print(
        f"\nDone in {minutes:.1f} min (estimated {estimate / 60:.1f}). "
        f"{validation_text(metrics)}\n"
        f"  corpus and token arrays  {out / 'data'}\n"
        f"  tokenizer                {out / 'tokenizer'}\n"
        f"  checkpoint and metrics   {out / 'model'}\n"
        f"  plots                    {out / 'model' / 'img'}\n\nNext:\n"
        f"  uv run -m llm.generating --checkpoint {out / 'model'} --prompt 'Once upon a time'\n"
        f"{next_training(out)}\n"
        "  uv run -m llm.data download tinystories   # real data: 2.2 GB, needs internet; then\n"
        "                                            # README.md, 'The TinyStories recipe'"
    )


def next_training(out: Path) -> str:
    """The command that trains a bigger model on this run's stories (configs/stories-cpu.toml
    reads runs/quickstart; another --out is given as flags)."""
    command = "  uv run -m llm.training configs/stories-cpu.toml"
    if out != Path(STORIES_CPU_OUT):
        command += (
            f" --train_data {out / 'data' / 'train.npy'} --valid_data {out / 'data' / 'valid.npy'}"
            f" --tokenizer_dir {out / 'tokenizer'}"
        )
    return command + "\n      # a 3x bigger model on these stories: 10 minutes, no download"


def run(config: QuickstartConfig) -> dict:
    """The whole pipeline; returns the run directory, final metrics and the stories written."""
    device = check_config(config)
    out = Path(config.out or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S"))
    check_out(out, config.overwrite)
    began = time.perf_counter()
    estimate = print_plan(config, device, out)
    created = make_run_dir(out)
    with removed_on_failure(out, created):
        tokenizer = prepare_data(config, out)
        metrics = train_model(config, out, tokenizer.vocab_size)
    if metrics["interrupted"]:
        stop_interrupted(out, metrics, config.max_iters)
    stories = write_stories(out / "model", tokenizer)
    print_summary(out, metrics, (time.perf_counter() - began) / 60, estimate)
    return {"out": out, "metrics": metrics, "stories": stories, "estimate_seconds": estimate}


def main(argv: list[str] | None = None) -> dict:
    return run_main(
        lambda: run(parse(QuickstartConfig, argv, description=__doc__, prog="uv run -m llm")),
        errors=ERRORS,
    )


if __name__ == "__main__":
    main()
