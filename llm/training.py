"""Train a Transformer language model.

    uv run -m llm.training configs/cpu-small.toml --max_iters 500 --model.d_model 128
    uv run -m llm.training --help                    # every key, its type and default
    uv run -m llm.training --run_dir runs/x --resume # continue a stopped run exactly
    uv run -m llm.training --init_from hf_model/ --train_data mine.npy  # fine-tune given weights

Each optimizer step: the learning rate of the schedule (linear warm-up, then cosine decay to
min_lr at max_iters, or with --schedule wsd a stable phase then a linear decay over the last
decay_fraction of the steps), forward/backward on batch_size random windows (split into
grad_accum_steps micro-batches, and across processes under DDP), gradient clipping, then the
optimizer: AdamW, SGD with lr / sqrt(t + 1) decay, or Muon (with AdamW at adam_lr for the
embeddings and gains). max_lr defaults to the optimizer's (llm/optim.py, OPTIMIZERS: 1e-3,
Muon 0.02), and model.vocab_size to the tokenizer's. Every eval_interval steps the validation
loss on fixed windows, a short greedy sample of text (eval_sample_tokens) and the benchmark
tasks of eval_tasks (llm/evaluate.py); at the end the exact loss on the whole validation split,
and the tasks again. The run directory gets:

    config.json      the effective config          metrics.jsonl  one JSON record per log/eval
    checkpoint.pt    the latest checkpoint         img/loss.png, img/lr.png, img/bits_per_byte.png,
                                                   img/tasks.png (with eval_tasks)
    tensorboard/     with --log_to tensorboard     wandb/         with --log_to wandb

--log_to adds TensorBoard or Weights & Biases (offline) to metrics.jsonl, which is always
written (llm/metric_sinks.py); each needs its extra: `uv sync --extra tensorboard`.

--init_from starts a new run (fresh optimizer, step 0) from the weights of any model
llm/loading.py reads (a run, a checkpoint file, a Hugging Face Llama directory, a GGUF file, a
pretrained name such as smollm2-135m): the model config and, unless given, the
tokenizer are the source's; a [model] setting must equal the source's, except those no weight
depends on (FREE_WITH_INIT_FROM: context_length, attention, zero_init_residual, dropout).

Checkpoints are saved every checkpoint_interval steps, at the end, and on Ctrl-C / SIGTERM
(after the current step; under DDP at the next log, eval or checkpoint step, where the
processes agree to stop). A NaN or infinite loss stops the run, keeping the last checkpoint.

Data parallel (DDP): `torchrun --standalone --nproc_per_node=N -m llm.training CONFIG ...`
(NCCL on GPUs, Gloo on CPU). batch_size is the global batch: each process computes
batch_size / N / grad_accum_steps sequences per micro-step, drawn from one shared sample of
batch_size windows, so a run gives the same result (up to float rounding) on any number of
processes. Several machines: run on each `torchrun --nnodes=M --node_rank=I
--nproc_per_node=N --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 -m llm.training CONFIG`.

Sharded data parallel (--parallel fsdp, llm/sharding.py): the same command, but each process
keeps 1/N of the weights, gradients and optimizer state instead of all of them; it also runs in
one process. Its checkpoint is a directory, checkpoint.dcp, that resumes on any number of
processes (llm/checkpoint.py). --activation_checkpointing recomputes each block's activations in
the backward instead of keeping them, in every mode.
"""

import dataclasses
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from llm.checkpoint import (
    CHECKPOINT_NAME,
    SHARDED_NAME,
    CheckpointError,
    load_sharded,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_sharded,
    sharded_checkpoint,
)
from llm.cli import parse, run_main
from llm.config import ConfigError, config_from_dict, config_to_dict, format_config
from llm.data import (
    DataError,
    DataSource,
    Mixture,
    TokenStream,
    check_tokens,
    eval_starts,
    open_tokens,
    read_windows,
    sample_starts,
)
from llm.device import (
    Distributed,
    autocast,
    autocast_dtype,
    mfu,
    peak_flops,
    resolve_device,
    setup_distributed,
)
from llm.evaluation import evaluate_exact, evaluate_windows, token_bytes_of
from llm.loading import byte_tokenizer, load, load_tokenizer, read_config, require_float
from llm.metric_sinks import TENSORBOARD_DIR, WANDB_DIR, MetricSinks, check_sinks
from llm.optim import (
    OPTIMIZERS,
    cos_lr_scheduler,
    gradient_clip,
    skip_dynamo_import,
    wsd_lr_scheduler,
)
from llm.run_dir import CONFIG_NAME, METRICS_NAME, check_run_dir, read_metrics, start_run_dir
from llm.sharding import nonfinite_parameter, shard_model
from llm.stop_signals import StopSignals
from llm.transformer import MODEL_PRESETS, ModelConfig, Transformer, cross_entropy

if TYPE_CHECKING:
    from llm.bpe_tokenizer import BpeTokenizer


@dataclass
class TrainConfig:
    """One training run: model, data, optimizer, schedule, batch, evaluation and hardware."""

    model_preset: str = "tiny"  # name in MODEL_PRESETS; [model] / --model.KEY override its values
    model: ModelConfig = field(default_factory=lambda: dataclasses.replace(MODEL_PRESETS["tiny"]))
    train_data: str = ""  # token ids of the training split: .npy/.bin file, directory or glob
    data: list[DataSource] = field(default_factory=list)  # or a mixture: [[data]] path, weight
    valid_data: str = ""  # token ids of the validation split ("" = no validation)
    tokenizer_dir: str = ""  # tokenizer of the data (a directory, or a GGUF file's; "" = bytes)
    run_dir: str = "runs/default"  # checkpoint, metrics.jsonl, config.json and img/ go here
    resume: bool = False  # continue the run in run_dir from its checkpoint
    init_from: str = ""  # start from this model's weights: run, checkpoint, HF, GGUF or pretrained
    optimizer: str = "adamw"  # "adamw", "sgd" (SGD, lr / sqrt(t + 1) decay) or "muon" (see adam_lr)
    max_lr: float = OPTIMIZERS["adamw"].max_lr  # peak learning rate (default: the optimizer's)
    min_lr: float = 1e-4  # learning rate at the end of the decay (step max_iters)
    warmup_iters: int = 100  # steps of linear warm-up from 0
    schedule: str = "cosine"  # after warm-up: "cosine" decay, or "wsd" (stable, then linear decay)
    decay_fraction: float = 0.2  # wsd: the share of max_iters spent decaying to min_lr
    max_iters: int = 1000  # optimizer steps in the whole run
    max_train_seconds: float = 0.0  # also stop after this much training time (0 = no limit)
    schedule_on_time: bool = False  # with max_train_seconds: the lr schedule ends when time does
    weight_decay: float = 0.1  # decoupled (AdamW, Muon); matrices only, never norm gains
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW denominator term
    momentum: float = 0.95  # Muon's momentum
    nesterov: bool = True  # Muon: Nesterov momentum (false: plain momentum)
    ns_steps: int = 5  # Muon: Newton-Schulz steps that orthogonalise each update
    adam_lr: float = 1e-3  # Muon: peak lr of embedding, lm_head, gains (AdamW); max_lr is Muon's
    grad_clip: float = 1.0  # max global gradient L2 norm (0 = no clipping)
    batch_size: int = 32  # sequences per optimizer step, over all processes and micro-steps
    grad_accum_steps: int = 1  # micro-steps (forward/backward passes) per optimizer step
    log_interval: int = 10  # steps between train-loss records (mean over the interval)
    eval_interval: int = 200  # steps between validation evaluations on fixed windows
    eval_windows: int = 64  # validation windows in each periodic evaluation
    eval_batch_size: int = 32  # sequences per forward pass during evaluation
    final_eval: str = "exact"  # at the end: "exact" (whole split), "sampled" or "none"
    eval_sample_tokens: int = 32  # greedy tokens after "Once upon a time" at each eval (0 = none)
    eval_tasks: list[str] = field(default_factory=list)  # benchmarks at each eval: "name[:N]"
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + tensorboard, wandb
    checkpoint_interval: int = 1000  # steps between checkpoints (also at the end and on Ctrl-C)
    device: str = "auto"  # "auto" (cuda > mps > cpu), or "cpu", "cuda", "cuda:1", "mps"
    dtype: str = "auto"  # "auto" (bfloat16 autocast on CUDA, else float32), "float32", "bfloat16"
    compile: bool = False  # torch.compile the model (faster on GPUs after a warm-up)
    parallel: str = "ddp"  # "ddp" (each process holds the whole model) or "fsdp" (1/N of it)
    activation_checkpointing: bool = False  # recompute blocks in the backward: less memory
    seed: int = 0  # model initialisation and data order
    threads: int = 0  # torch CPU threads (0 = torch's default)


class TrainingDiverged(RuntimeError):
    """The loss or a weight became NaN or infinite at `step`."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def load_train_config(argv: list[str] | None = None) -> TrainConfig:
    """TrainConfig from `[CONFIG.toml] [--key value]...` (see --help)."""
    return parse(
        TrainConfig, argv, base=_base_config, description=__doc__, prog="uv run -m llm.training"
    )


def _base_config(values: dict) -> TrainConfig:
    """The defaults the given values override: a resumed run's saved config; else the model
    preset's (or --init_from's model), with the optimizer's max_lr and the tokenizer's
    vocab_size unless those are given."""
    if str(values.get("resume", "false")).lower() in ("true", "1", "yes", "on"):
        return _saved_config(Path(values.get("run_dir", TrainConfig.run_dir)))
    model_values = values.get("model", {})
    if values.get("init_from"):
        base = _init_from_base(values["init_from"], model_values)
    else:
        preset = values.get("model_preset", TrainConfig.model_preset)
        if preset not in MODEL_PRESETS:
            presets = ", ".join(MODEL_PRESETS)
            raise ConfigError(f"unknown model_preset {preset!r}; presets: {presets}")
        base = TrainConfig(model_preset=preset, model=dataclasses.replace(MODEL_PRESETS[preset]))
    optimizer = values.get("optimizer", base.optimizer)
    if "max_lr" not in values and optimizer in OPTIMIZERS:  # an unknown one: check_config says
        base.max_lr = OPTIMIZERS[optimizer].max_lr
    tokenizer_dir = values.get("tokenizer_dir", base.tokenizer_dir)
    if tokenizer_dir and Path(tokenizer_dir).exists():  # a missing one: named with the data
        _follow_tokenizer(base, tokenizer_dir, model_values)
    return base


def _saved_config(run_dir: Path) -> TrainConfig:
    """The config a run to resume was saved with."""
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        missing = "the directory does not exist" if not run_dir.is_dir() else f"no {CONFIG_NAME}"
        raise ConfigError(f"no run to resume at {run_dir}: {missing}; start it without --resume")
    return config_from_dict(TrainConfig, json.loads(saved.read_text()))


def _follow_tokenizer(base: TrainConfig, tokenizer_dir: str, model_values: dict) -> None:
    """Set base.model.vocab_size to the tokenizer's, unless [model] gives one: then it must be
    the tokenizer's. A model from --init_from keeps its own, which must hold every token id."""
    try:
        size = load_tokenizer(tokenizer_dir).vocab_size
    except (OSError, ValueError) as e:
        raise ConfigError(f"tokenizer_dir {tokenizer_dir}: {e}") from None
    given = isinstance(model_values, dict) and "vocab_size" in model_values
    if base.init_from and not given:
        if base.model.vocab_size < size:
            raise ConfigError(
                f"the model of {base.init_from} has vocab_size {base.model.vocab_size}, fewer "
                f"ids than the tokenizer in {tokenizer_dir} ({size}): use the model's tokenizer"
            )
    elif not given:
        base.model = dataclasses.replace(base.model, vocab_size=size)
    else:
        wanted = config_from_dict(ModelConfig, model_values, base.model).vocab_size
        if wanted != size:
            raise ConfigError(
                f"model.vocab_size={wanted} differs from the tokenizer in {tokenizer_dir}, "
                f"which has {size} tokens: drop --model.vocab_size (it follows the tokenizer)"
            )


# What --init_from lets a run change: no weight depends on the window length, the attention
# implementation or dropout (fine-tuning on little text often adds it), and the source's weights
# replace the initialisation zero_init_residual sets. Every other model setting is the source's.
FREE_WITH_INIT_FROM = ("context_length", "attention", "zero_init_residual", "dropout")


def _init_from_base(source: str, model_values: dict) -> TrainConfig:
    """The defaults of a run started from the weights at `source` (--init_from): its model
    config and tokenizer (model_preset is unused). [model] keys may repeat the source's values;
    a different one is a ConfigError, except for FREE_WITH_INIT_FROM."""
    try:
        model, tokenizer_dir = read_config(source)
    except (ValueError, OSError) as e:
        raise ConfigError(f"--init_from {source}: {e}") from None
    wanted = config_from_dict(ModelConfig, model_values, model)
    for key in model_values:
        if key not in FREE_WITH_INIT_FROM and getattr(wanted, key) != getattr(model, key):
            raise ConfigError(
                f"model.{key}={getattr(wanted, key)!r} differs from {source}, which has "
                f"{getattr(model, key)!r}: --init_from takes the model from there; drop the setting"
            )
    return TrainConfig(model=model, tokenizer_dir=tokenizer_dir or "", init_from=source)


@dataclass
class _Data:
    """The token splits, and what evaluating on the validation split needs."""

    train: np.ndarray | TokenStream  # token ids of the training split (shards, a Mixture)
    valid: np.ndarray | TokenStream | None = (
        None  # token ids of the validation split (None = no validation)
    )
    valid_starts: np.ndarray | None = None  # the fixed windows of the periodic evaluations
    token_bytes: np.ndarray | None = None  # bytes per token id, for bits/byte
    tokenizer: "BpeTokenizer | None" = None  # to write samples and score tasks (None = neither)
    tasks: list[tuple[str, int | None]] = field(default_factory=list)  # eval_tasks: (name, N)


@dataclass
class _Run:
    """A training run: what the loop works with, and the progress it makes."""

    config: TrainConfig
    world: Distributed
    data: _Data
    model: Transformer
    loss_model: nn.Module  # NextTokenLoss(model), compiled and wrapped in DDP as configured
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # data order (same on every rank)
    autocast_dtype: torch.dtype | None  # None = plain float32
    step: int = 0  # optimizer steps done
    loss_sum: Tensor = field(init=False)  # train loss summed since the last log, on the device
    loss_steps: int = 0  # steps summed in loss_sum
    train_seconds: float = 0.0  # time spent in steps; evaluations and checkpoints not counted
    interval_start: float = 0.0  # time.perf_counter() when the current timing interval began
    interval_first_step: int = 0  # the step it began after
    last_saved: int | None = None  # step of the newest checkpoint (rank 0 writes it)
    last_train: dict = field(default_factory=dict)  # the latest train record
    last_eval: dict = field(default_factory=dict)  # the latest eval record
    stopping: bool = False  # a stop was requested (Ctrl-C, SIGTERM)
    out_of_time: bool = False  # stopped by max_train_seconds
    finished_before: bool = False  # --resume found the run already at max_iters: nothing to do
    sinks: MetricSinks | None = None  # where records go (rank 0 only)
    tokens_per_step: int = field(init=False)
    flops_per_step: float = field(init=False)  # training FLOPs of one step, for MFU
    device_peak_flops: float | None = field(init=False)  # peak FLOP/s (None = unknown)

    def __post_init__(self) -> None:
        ctx = self.config.model.context_length
        self.loss_sum = torch.tensor(0.0, dtype=torch.float32, device=self.world.device)
        self.tokens_per_step = self.config.batch_size * ctx
        self.flops_per_step = self.model.flops_per_token(ctx) * self.tokens_per_step
        self.device_peak_flops = peak_flops(self.world.device, self.autocast_dtype)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def sharded(self) -> bool:
        """FSDP: every rank holds a slice of the model, so every rank evaluates and saves."""
        return self.config.parallel == "fsdp"

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / (SHARDED_NAME if self.sharded else CHECKPOINT_NAME)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_NAME

    def log(self, record: dict) -> None:
        """Send a record to every metric sink (metrics.jsonl and those of --log_to): rank 0."""
        if self.sinks is not None:
            self.sinks.log(record)


class _Due(NamedTuple):
    """What the end of a step does besides counting it."""

    log: bool  # a train record
    evaluate: bool  # on the fixed validation windows
    save: bool  # a checkpoint
    out_of_time: bool  # max_train_seconds is reached: this is the last step


def train(config: TrainConfig) -> dict:
    """Run training as configured; returns the final metrics (see _summary)."""
    check_config(config, int(os.environ.get("WORLD_SIZE", "1")))
    world = setup_distributed(config.device, always=config.parallel == "fsdp")
    try:
        return _train(config, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, world: Distributed) -> dict:
    run = _start_run(config, world)
    if run.finished_before:
        if run.is_main:
            print(_closing_line(run))
        return _summary(run)
    try:
        _train_loop(run)
        final_eval = run.data.valid is not None and config.final_eval != "none"
        if (run.is_main or run.sharded) and final_eval and not run.stopping:
            run.last_eval = _evaluate(run, exact=config.final_eval == "exact")
    except TrainingDiverged as e:  # the log says how the run ended, for llm.sweep and the plots
        run.log({"type": "diverged", "step": e.step, "message": str(e)})
        raise
    finally:
        if run.sinks is not None:
            run.sinks.close()
    if run.is_main:
        from llm.plots import plot_run  # matplotlib takes a second and more to import: not before

        plot_run(run.run_dir)
        print(_closing_line(run))
    return _summary(run)


def _start_run(config: TrainConfig, world: Distributed) -> _Run:
    """Load the data, build the model and optimizer, and restore them from the checkpoint with
    --resume; only then, with everything known to work, set up the run directory. Rank 0 prints
    the config and the model's size."""
    _setup_torch(config)
    if world.is_main:
        check_run_dir(config.run_dir, config.resume, config.parallel == "fsdp")
    data = _load_data(config)  # bad data files fail here, before the config is printed
    if world.is_main:
        print(format_config(config))
        if not config.resume:  # (a resumed run was warned when it started)
            _warn_about_settings(config)
    model = Transformer(config.model).to(world.device)
    if config.init_from and not config.resume:  # the source's weights, a fresh optimizer
        source = load(config.init_from, tokenizer=False)
        require_float(source, f"--init_from {config.init_from}")
        model.load_state_dict(source.model.state_dict())
        if world.is_main:
            print(f"loaded {model.num_parameters():,} parameters from {config.init_from}")
    model.activation_checkpointing = config.activation_checkpointing
    dtype = autocast_dtype(config.dtype, world.device)
    if config.parallel == "fsdp":
        shard_model(model, world.device, dtype)  # before the optimizer takes its parameters
    optimizer = _build_optimizer(model, config, dtype)
    generator = torch.Generator().manual_seed(config.seed)
    step, saved = _resume(config, world, model, optimizer, generator) if config.resume else (0, {})
    loss_model = _loss_model(model, config, world)
    run = _Run(config, world, data, model, loss_model, optimizer, generator, dtype)
    if config.resume:
        run.step = run.last_saved = step
        run.train_seconds = saved.get("train_seconds", 0.0)
        run.loss_sum.fill_(saved.get("loss_sum", 0.0))
        run.loss_steps = saved.get("loss_steps", 0)
    if step >= config.max_iters:  # a finished run, resumed: leave its directory as it is
        run.finished_before = True
        if run.is_main:  # what train() returns: the run's last evaluation
            evals = [r for r in read_metrics(run.run_dir) if r["type"] == "eval"]
            run.last_eval = evals[-1] if evals else {}
        return run
    if world.is_main:
        if config.resume:
            _say_how_the_schedule_changed(config, step)
        resumed_at = step if config.resume else None
        values = config_to_dict(config)
        start_run_dir(config.run_dir, values, resumed_at)
        run.sinks = MetricSinks(run.run_dir, config.log_to, values, resumed_at)
        print(_describe(run))
    return run


def _warn_about_settings(config: TrainConfig) -> None:
    """Settings that can train but are likely mistakes (common when fine-tuning)."""
    if config.warmup_iters >= config.max_iters:
        _warn(
            f"warmup_iters={config.warmup_iters} >= max_iters={config.max_iters}: the learning "
            "rate never reaches max_lr nor decays"
        )
    if not config.valid_data:
        _warn("no valid_data: no validation loss, nothing tells when the model overfits")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _say_how_the_schedule_changed(config: TrainConfig, step: int) -> None:
    """A resumed run whose schedule settings changed (a larger max_iters moves the end of the
    decay) continues on the new schedule: say where the lr jumps."""
    saved = _saved_config(Path(config.run_dir))
    before, after = _lr_at(step, saved), _lr_at(step, config)
    if not math.isclose(before, after, rel_tol=1e-9):
        print(
            f"the {config.schedule} schedule now ends at step {config.max_iters} (it ended at "
            f"{saved.max_iters}): the lr at step {step} jumps from {before:.3g} to {after:.3g}"
        )


def _setup_torch(config: TrainConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls for float32 on Ampere+ GPUs


def _load_data(config: TrainConfig) -> _Data:
    """The training split, and the validation split with what evaluating on it needs."""
    vocab_size, ctx = config.model.vocab_size, config.model.context_length
    train = _load_train(config)
    if not config.valid_data:
        return _Data(train)
    valid = open_tokens(config.valid_data)
    check_tokens(valid, vocab_size, ctx, "valid_data")
    tokenizer = load_tokenizer(config.tokenizer_dir) if config.tokenizer_dir else None
    token_bytes = token_bytes_of(tokenizer, vocab_size)
    if tokenizer is None and config.eval_tasks:
        tokenizer = byte_tokenizer()  # no tokenizer_dir: the ids are bytes
    starts = eval_starts(len(valid), ctx, config.eval_windows)
    tasks = _task_specs(config.eval_tasks)
    return _Data(train, valid, starts, token_bytes, tokenizer, tasks)


def _load_train(config: TrainConfig) -> np.ndarray | TokenStream:
    """The training split, or the Mixture of the [[data]] datasets, each checked alone."""
    vocab_size, ctx = config.model.vocab_size, config.model.context_length
    if not config.data:
        train = open_tokens(config.train_data)
        check_tokens(train, vocab_size, ctx, "train_data")
        return train
    datasets = [open_tokens(source.path) for source in config.data]
    for source, tokens in zip(config.data, datasets, strict=True):
        check_tokens(tokens, vocab_size, ctx, f"data {source.path}")
    return Mixture(datasets, [source.weight for source in config.data])


def _resume(
    config: TrainConfig,
    world: Distributed,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[int, dict]:
    """Restore the model, optimizer and random states from the run's checkpoint; returns its
    step and the run state saved with it (see _save)."""
    path = Path(config.run_dir) / CHECKPOINT_NAME
    sharded = sharded_checkpoint(config.run_dir)
    if config.parallel == "fsdp":
        if sharded is None:
            raise CheckpointError(f"--parallel fsdp resumes a sharded run; {path} is not one")
        step, extra = load_sharded(
            sharded, model, optimizer, data_generator=generator, restore_rng=True
        )
        path = sharded
    else:
        if sharded is not None and not path.is_file():
            raise CheckpointError(f"{sharded} is sharded: resume it with --parallel fsdp")
        checkpoint = read_checkpoint(path, map_location=world.device)
        step = restore_checkpoint(
            checkpoint, model, optimizer, data_generator=generator, restore_rng=True
        )
        extra = checkpoint["extra"]
    if world.is_main:
        print(f"resumed from {path} at step {step}")
    return step, extra


def _loss_model(model: Transformer, config: TrainConfig, world: Distributed) -> nn.Module:
    """NextTokenLoss(model), compiled and wrapped in DDP as configured (a model sharded with
    FSDP is already distributed). The loss is computed inside the compiled module, so
    torch.compile fuses it with the output layer instead of materialising float32 logits in
    several eager passes."""
    loss_model = NextTokenLoss(model)
    if config.compile:
        loss_model = torch.compile(loss_model)
    if world.world_size > 1 and config.parallel == "ddp":
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        # DDP re-sends the buffers (RoPE tables, RmsNorm eps) from rank 0 at each forward: they
        # are equal anyway, and tiny beside the gradients' all-reduce.
        loss_model = DistributedDataParallel(loss_model, device_ids=device_ids)
    return loss_model


def _describe(run: _Run) -> str:
    return (
        f"model: {_parameter_count(run.model)}; "
        f"{run.tokens_per_step:,} tokens per step; device {run.world.device}, "
        f"{'bfloat16 autocast' if run.autocast_dtype else 'float32'}, "
        f"{run.world.world_size} process(es), {run.config.parallel}"
        + (", activation checkpointing" if run.config.activation_checkpointing else "")
    )


def _parameter_count(model: Transformer) -> str:
    """The parameters, tied embeddings counted once, and how many of them the embedding holds."""
    total, embedding = model.num_parameters(), model.embedding.weight.numel()
    if model.config.tie_embeddings:
        shared = "the embedding, shared with the output layer"
        return (
            f"{total:,} parameters ({embedding:,} in {shared}, {total - embedding:,} in the rest)"
        )
    return f"{total:,} parameters ({total - embedding:,} without the input embedding)"


def _train_loop(run: _Run) -> None:
    """Optimizer steps until max_iters, max_train_seconds or a stop request (Ctrl-C, SIGTERM).
    The loss stays on the device until the next sync point, so most steps never wait for it."""
    config = run.config
    run.interval_start, run.interval_first_step = time.perf_counter(), run.step
    bar = _progress_bar(run)
    stop_request = StopSignals(
        "stopping after this step and saving a checkpoint (Ctrl-C again to abort)"
    )
    with stop_request, bar:
        for step in range(run.step, config.max_iters):
            lr = _set_lr(run.optimizer, _schedule_position(run, step), config)
            starts = sample_starts(
                run.data.train, config.batch_size, config.model.context_length, run.generator
            )  # (batch_size,) window starts, the same on every rank
            loss, grad_norm = _train_step(run, starts)
            run.loss_sum += loss
            run.loss_steps += 1
            run.step = step + 1
            _advance(bar, run)

            due = _due(run)
            if run.world.world_size == 1:
                run.stopping = stop_request.requested  # under DDP the ranks agree on it in _sync
            sync_now = due.log or due.evaluate or due.save or run.stopping
            if sync_now and _sync_point(run, due, lr, grad_norm, stop_request.requested, bar):
                break


def _progress_bar(run: _Run) -> tqdm:
    """A bar over the steps; or, when max_train_seconds limits the run, over its training
    seconds, so that it shows the time left rather than steps the run may never reach."""
    config, off = run.config, not run.is_main
    if not config.max_train_seconds:
        return tqdm(total=config.max_iters, initial=run.step, disable=off, unit="step")
    timed = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s trained, {remaining} left"
    bar = tqdm(
        total=config.max_train_seconds, initial=run.train_seconds, disable=off, unit="s",
        bar_format=timed + "{postfix}",
    )  # fmt: skip
    bar.set_description_str(f"step {run.step}", refresh=False)
    return bar


def _advance(bar: tqdm, run: _Run) -> None:
    """Move the bar on by the step just done, or by the training time it took."""
    if not run.config.max_train_seconds:
        bar.update(1)
        return
    elapsed = run.train_seconds + time.perf_counter() - run.interval_start
    bar.set_description_str(f"step {run.step}", refresh=False)
    bar.update(min(elapsed, bar.total) - bar.n)


def _schedule_position(run: _Run, step: int) -> float:
    """Where the lr schedule is at `step`: the step itself, or with schedule_on_time, the share
    of max_train_seconds spent, as a step of max_iters, when that is further. So the decay ends
    when the time does, on a slow or busy machine as on a fast one."""
    config = run.config
    if not config.schedule_on_time:
        return step
    elapsed = run.train_seconds + time.perf_counter() - run.interval_start
    return max(step, config.max_iters * elapsed / config.max_train_seconds)


def _lr_at(step: float, config: TrainConfig) -> float:
    """The learning rate of `step` (0-based): linear warm-up, then cosine decay or WSD."""
    peak, low, warmup, total = config.max_lr, config.min_lr, config.warmup_iters, config.max_iters
    if config.schedule == "wsd":
        return wsd_lr_scheduler(step, peak, low, warmup, _decay_iters(config), total)
    return cos_lr_scheduler(step, peak, low, warmup, total)


def _set_lr(optimizer: torch.optim.Optimizer, step: float, config: TrainConfig) -> float:
    """Set the learning rate of `step` in every group; one with an lr_scale gets lr x lr_scale
    (Muon's AdamW groups: adam_lr / max_lr)."""
    lr = _lr_at(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def _decay_iters(config: TrainConfig) -> int:
    """WSD's decay steps: decay_fraction of max_iters, rounded, at least one."""
    return max(1, round(config.decay_fraction * config.max_iters))


def _train_step(run: _Run, starts: Tensor) -> tuple[Tensor, Tensor | None]:
    """One optimizer step on this rank's share of the batch; returns (mean loss, grad norm)."""
    config, world = run.config, run.world
    accum, ctx = config.grad_accum_steps, config.model.context_length
    # (batch,) -> (micro-steps, ranks, micro-batch): this rank's windows for each micro-step.
    micro_starts = starts.view(accum, world.world_size, -1)[:, world.rank]
    total = torch.zeros((), device=world.device)
    for i, batch_starts in enumerate(micro_starts):
        inputs, targets = read_windows(run.data.train, batch_starts, ctx, world.device)
        # DDP all-reduces gradients during backward; skip it on all but the last micro-step.
        # (FSDP reduce-scatters after each one: keeping whole gradients would cost the memory
        # it saves.)
        skip_sync = world.world_size > 1 and config.parallel == "ddp" and i < accum - 1
        with run.loss_model.no_sync() if skip_sync else nullcontext():
            with autocast(world.device, run.autocast_dtype):
                loss = run.loss_model(inputs, targets) / accum
            loss.backward()
        total += loss.detach()
    grad_norm = (
        gradient_clip(run.loss_model.parameters(), config.grad_clip) if config.grad_clip else None
    )
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total, grad_norm


def _due(run: _Run) -> _Due:
    """What the end of step run.step does. Reads the clock but does not wait for the device."""
    config, done = run.config, run.step
    elapsed = run.train_seconds + time.perf_counter() - run.interval_start
    out_of_time = 0 < config.max_train_seconds <= elapsed
    last = done == config.max_iters or out_of_time
    return _Due(
        log=done % config.log_interval == 0 or last,
        evaluate=run.data.valid is not None and done % config.eval_interval == 0 and not last,
        save=done % config.checkpoint_interval == 0 or last,
        out_of_time=out_of_time,
    )


def _sync_point(
    run: _Run, due: _Due, lr: float, grad_norm: Tensor | None, stop: bool, bar: tqdm
) -> bool:
    """Every rank reaches this at the same step: check the loss, then log, evaluate and save
    as due. Returns whether to stop."""
    mean_loss, run.stopping = _sync(run.loss_sum, run.loss_steps, stop, run.world)
    if not math.isfinite(mean_loss):
        raise _diverged(run, mean_loss, lr)
    seconds = time.perf_counter() - run.interval_start
    run.train_seconds += seconds
    if due.log:
        _log_train(run, mean_loss, lr, grad_norm, seconds, bar)
    if due.evaluate and (run.is_main or run.sharded):
        run.last_eval = _evaluate(run, exact=False)
    if due.save or run.stopping:
        _check_finite(run.model, run.step)  # on every rank, so that all of them stop together
        if run.is_main or run.sharded:
            _save(run)
        run.last_saved = run.step  # on every rank, for the divergence message
    if run.stopping:
        if run.is_main:
            tqdm.write(f"stopped at step {run.step}; checkpoint saved to {run.checkpoint_path}")
        return True
    if due.out_of_time:
        run.out_of_time = True
        tqdm.write(f"stopped at step {run.step}: max_train_seconds reached")
        return True
    # The next timing interval starts now: evaluation and checkpointing are not training time.
    run.interval_start, run.interval_first_step = time.perf_counter(), run.step
    return False


def _sync(loss_sum: Tensor, loss_steps: int, stop: bool, world: Distributed) -> tuple[float, bool]:
    """Mean training loss since the last log (averaged over ranks, in place) and whether any
    rank was asked to stop. The only host sync of the training loop."""
    if world.world_size > 1:
        flag = torch.tensor(float(stop), device=world.device)
        dist.all_reduce(loss_sum)  # Gloo has no AVG: sum, then divide
        loss_sum /= world.world_size
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    return loss_sum.item() / max(loss_steps, 1), stop


def _log_train(
    run: _Run, mean_loss: float, lr: float, grad_norm: Tensor | None, seconds: float, bar: tqdm
) -> None:
    """Record the mean training loss and the throughput of the `seconds` since the last sync
    point, and start a new mean."""
    tokens_per_s = (run.step - run.interval_first_step) * run.tokens_per_step / seconds
    run.last_train = {
        "type": "train",
        "step": run.step,
        "loss": mean_loss,
        "lr": lr,
        # The last step's global gradient norm, before clipping (None when clipping is off).
        "grad_norm": grad_norm.item() if grad_norm is not None else None,
        "tokens": run.step * run.tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(tokens_per_s, run.flops_per_step / run.tokens_per_step, run.device_peak_flops),
        "train_seconds": run.train_seconds,
    }
    run.loss_sum.zero_()
    run.loss_steps = 0
    if run.is_main:
        run.log(run.last_train)
        bar.set_postfix_str(_progress_text(run.last_train))


def _evaluate(run: _Run, exact: bool) -> dict:
    """Validation loss on the fixed windows, or on the whole split (exact); recorded and
    printed by rank 0. Rank 0 alone evaluates, except a sharded model, whose every forward needs
    all ranks: they all compute the same result."""
    config, data, device = run.config, run.data, run.world.device
    if exact:
        result = evaluate_exact(
            run.model, data.valid, config.eval_batch_size, device, data.token_bytes,
            run.autocast_dtype, progress=run.is_main,
        )  # fmt: skip
    else:
        result = evaluate_windows(
            run.model, data.valid, data.valid_starts, config.eval_batch_size, device,
            data.token_bytes, run.autocast_dtype,
        )  # fmt: skip
    record = {"type": "eval", "step": run.step, "exact": exact, **result}
    record["train_seconds"] = run.train_seconds
    if not run.is_main:
        return record
    run.log(record)
    tqdm.write(
        f"step {run.step}: validation loss {result['loss']:.4f}, perplexity "
        f"{result['perplexity']:.2f}, {result['bits_per_byte']:.4f} bits/byte"
        + (" (whole split)" if exact else "")
    )
    sample = run.config.eval_sample_tokens and run.config.tokenizer_dir and not run.sharded
    if sample and not exact:
        _write_sample(run)
    if run.data.tasks and not run.sharded:
        _evaluate_tasks(run)
    return record


def _task_specs(specs: list[str]) -> list[tuple[str, int | None]]:
    """eval_tasks as (name, N), checked (llm/evaluate.py); imported only when there are any."""
    if not specs:
        return []
    from llm.evaluate import task_specs

    try:
        return task_specs(specs)
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None


def _evaluate_tasks(run: _Run) -> None:
    """The benchmark tasks of eval_tasks (llm/eval_tasks.py), scored like `llm.evaluate`: logged
    as a "tasks" record and printed. A sharded model is left out, as for the samples."""
    from llm.evaluate import task_scores

    run.model.eval()
    with autocast(run.world.device, run.autocast_dtype):
        scores = task_scores(run.model, run.data.tokenizer, run.data.tasks)
    run.model.train()
    run.log({"type": "tasks", "step": run.step, **scores})
    tqdm.write(f"step {run.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


SAMPLE_PROMPT = "Once upon a time"


def _write_sample(run: _Run) -> None:
    """A greedy continuation of SAMPLE_PROMPT: printed and logged as a "sample" record (the
    plots skip it). Needs a tokenizer to write text. A sharded model (FSDP) is left out: each of
    its forwards needs every rank."""
    tokenizer = run.data.tokenizer
    prompt = tokenizer.encode(SAMPLE_PROMPT) if tokenizer is not None else []
    if not prompt or max(prompt) >= run.config.model.vocab_size:
        return
    from llm.generating import SamplingConfig, eos_id_of, generate  # only when sampling

    sampling = SamplingConfig(
        max_new_tokens=run.config.eval_sample_tokens, temperature=0.0, eos_id=eos_id_of(tokenizer)
    )
    run.model.eval()  # no dropout: the greedy text is the model's
    with autocast(run.world.device, run.autocast_dtype):
        new_ids = generate(run.model, prompt, sampling)
    run.model.train()
    text = SAMPLE_PROMPT + tokenizer.decode(new_ids)
    run.log({"type": "sample", "step": run.step, "text": text})
    tqdm.write(f"step {run.step} sample: {' '.join(text.split())}")


def _save(run: _Run) -> None:
    """Checkpoint the run, with the state that --resume needs to continue it exactly: rank 0
    writes the whole model, or, sharded, every rank writes its slices."""
    extra = {
        "train_seconds": run.train_seconds,
        "loss_sum": run.loss_sum.item(),
        "loss_steps": run.loss_steps,
    }
    save = save_sharded if run.sharded else save_checkpoint
    path = run.run_dir if run.sharded else run.checkpoint_path
    save(
        run.model, run.optimizer, run.step, path, train_config=run.config,
        tokenizer_dir=run.config.tokenizer_dir or None, data_generator=run.generator,
        extra=extra,
    )  # fmt: skip


def _diverged(run: _Run, loss: float, lr: float) -> TrainingDiverged:
    """The error for a NaN or infinite training loss, with how to recover."""
    if run.last_saved is None:
        advice = "No checkpoint was saved yet: lower max_lr or lengthen warmup_iters."
    else:
        advice = (
            f"The last good checkpoint, step {run.last_saved}, is {run.checkpoint_path}: "
            "lower max_lr or lengthen warmup_iters and continue it with --resume."
        )
    return TrainingDiverged(
        f"the training loss is {loss} at step {run.step} (learning rate {lr:.3g}); stopped. "
        + advice,
        run.step,
    )


def _summary(run: _Run) -> dict:
    """The final metrics that train() returns."""
    return {
        "step": run.step,
        "interrupted": run.stopping,
        "train_loss": run.last_train.get("loss"),
        "tokens_per_s": run.last_train.get("tokens_per_s"),
        "mfu": run.last_train.get("mfu"),
        "train_seconds": run.train_seconds,
        "tokens": run.step * run.tokens_per_step,
        "val_loss": run.last_eval.get("loss"),
        "val_perplexity": run.last_eval.get("perplexity"),
        "val_bits_per_byte": run.last_eval.get("bits_per_byte"),
        "val_exact": run.last_eval.get("exact"),
        "checkpoint": str(run.checkpoint_path),
        "run_dir": str(run.run_dir),
    }


class NextTokenLoss(nn.Module):
    """The training objective as a module: mean cross-entropy of next-token predictions."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:  # (batch, seq) x 2 -> scalar
        return cross_entropy(self.model(inputs), targets)


def _build_optimizer(
    model: Transformer, config: TrainConfig, dtype: torch.dtype | None
) -> torch.optim.Optimizer:
    """The configured optimizer (llm/optim.py, OPTIMIZERS); dtype: the autocast dtype, in
    which Muon orthogonalises."""
    if not config.compile:
        skip_dynamo_import()
    return OPTIMIZERS[config.optimizer].build(model, config, dtype)


def check_config(config: TrainConfig, world_size: int = 1) -> None:
    """Raise a ConfigError naming the first setting that cannot train (before any work)."""
    choices = {
        "optimizer": tuple(OPTIMIZERS),
        "dtype": ("auto", "float32", "bfloat16"),
        "final_eval": ("exact", "sampled", "none"),
        "schedule": ("cosine", "wsd"),
        "parallel": ("ddp", "fsdp"),
    }
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, not {getattr(config, key)!r}")
    positive = ["max_iters", "batch_size", "grad_accum_steps", "log_interval", "eval_interval"]
    positive += ["eval_windows", "eval_batch_size", "checkpoint_interval"]
    for key in positive:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, not {getattr(config, key)}")
    if config.eval_sample_tokens < 0:
        raise ConfigError(
            f"eval_sample_tokens must be >= 0 (0 = no samples), not {config.eval_sample_tokens}"
        )
    check_sinks(config.log_to)
    if config.eval_tasks and not config.valid_data:
        raise ConfigError("eval_tasks are scored at each evaluation, which needs valid_data")
    for key in ["warmup_iters", "grad_clip", "max_train_seconds", "weight_decay", "min_lr"]:
        if not getattr(config, key) >= 0:  # written this way so that NaN fails too
            raise ConfigError(f"{key} must be >= 0 (0 = off), not {getattr(config, key)}")
    for key in ["max_lr", "adam_lr"]:
        if not getattr(config, key) > 0:
            raise ConfigError(f"{key} must be > 0, not {getattr(config, key)}")
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), not {config.momentum}")
    if not 0 < config.decay_fraction <= 1:
        raise ConfigError(f"decay_fraction must be in (0, 1], not {config.decay_fraction}")
    if config.schedule == "wsd" and config.warmup_iters > config.max_iters - _decay_iters(config):
        raise ConfigError(
            f"warmup_iters={config.warmup_iters} runs into the decay, which starts at step "
            f"{config.max_iters - _decay_iters(config)}: lower warmup_iters or decay_fraction"
        )
    if config.ns_steps < 1:
        raise ConfigError(f"ns_steps must be at least 1, not {config.ns_steps}")
    try:
        device = resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.parallel == "fsdp" and device.type == "mps":
        raise ConfigError("parallel = 'fsdp' runs on CUDA or CPU, not MPS: use --parallel ddp")
    per_pass = config.grad_accum_steps * world_size
    if config.batch_size % per_pass:
        raise ConfigError(
            f"batch_size={config.batch_size} must be a multiple of grad_accum_steps x processes "
            f"= {config.grad_accum_steps} x {world_size} = {per_pass}"
        )
    if not config.train_data and not config.data:
        raise ConfigError("train_data is not set: give the .npy token file to train on")
    if config.train_data and config.data:
        raise ConfigError("give train_data or a [[data]] mixture, not both")
    if not all(source.weight > 0 for source in config.data):
        raise ConfigError("each [[data]] weight must be > 0")
    if config.schedule_on_time and not config.max_train_seconds:
        raise ConfigError("schedule_on_time needs max_train_seconds, the time the schedule ends")
    if config.max_train_seconds and world_size > 1:
        raise ConfigError("max_train_seconds works in single-process runs; under DDP set max_iters")


def _check_finite(model: nn.Module, step: int) -> None:
    """Never save non-finite weights over a good checkpoint."""
    name = nonfinite_parameter(model)
    if name is not None:
        raise TrainingDiverged(f"parameter {name} is not finite after step {step}; stopped", step)


def _progress_text(record: dict) -> str:
    text = f"loss {record['loss']:.4f} lr {record['lr']:.2e} {record['tokens_per_s']:,.0f} tok/s"
    return text + (f" MFU {record['mfu']:.1%}" if record["mfu"] is not None else "")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _closing_line(run: _Run) -> str:
    """Where the results are and what to do next."""
    resume = f"uv run -m llm.training --run_dir {run.run_dir} --resume"
    if run.finished_before:
        return (
            f"{run.run_dir} finished at step {run.step}; nothing to do: pass a larger --max_iters "
            f"to continue it ({resume} --max_iters {2 * run.step})"
        )
    if run.stopping:
        return f"continue this run with: {resume}"
    written = f"checkpoint {run.checkpoint_path}, metrics {run.metrics_path}"
    if "tensorboard" in run.config.log_to:
        written += f" and {run.run_dir / TENSORBOARD_DIR}"
    if "wandb" in run.config.log_to:
        written += f" and {run.run_dir / WANDB_DIR}"
    written += f", plots in {run.run_dir / 'img'}"
    if run.out_of_time:
        more = run.config.max_train_seconds * 2
        written += f"; train longer with: {resume} --max_train_seconds {more:g}"
    if run.sharded:
        return (
            f"done at step {run.step}: {written}; make one file of it for generation with: "
            f"uv run -m llm.checkpoint consolidate {run.run_dir} {run.run_dir / CHECKPOINT_NAME}"
        )
    return (
        f"done at step {run.step}: {written}; generate text with: uv run -m llm.generating "
        f"--checkpoint {run.run_dir} --prompt '{SAMPLE_PROMPT}'"
    )


def main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.training`: exit 0 when the run finished, 130 when a signal stopped it
    (checkpoint saved), 2 for a bad setting, 1 for bad data or a diverged run."""
    errors = (DataError, CheckpointError, TrainingDiverged, OSError)
    summary = run_main(lambda: train(load_train_config(argv)), errors)
    if summary["interrupted"]:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
