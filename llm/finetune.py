"""Fine-tune a model on conversations: supervised fine-tuning (SFT) or DPO, fully or with LoRA.

    uv run -m llm.finetune                       # the quickstart model on the story instructions
    uv run -m llm.finetune configs/finetune-smollm2-lora.toml
    uv run -m llm.finetune --model RUN_OR_HF_OR_GGUF --train_data chats.jsonl --valid_data v.jsonl
    uv run -m llm.finetune --method dpo --train_data pairs.jsonl --beta 0.1
    uv run -m llm.finetune --run_dir runs/finetune --resume   # continue a stopped run exactly

The model is anything llm/loading.py loads (a run, a checkpoint, a Hugging Face directory, a
GGUF file, a pretrained name such as smollm2-135m). The data is JSONL (llm/chat_data.py):
conversations {"messages": [...]} or {"prompt", "completion"} for SFT, preference pairs
{"prompt", "chosen", "rejected"} for DPO, rendered with the model's chat template. A model
without one (ours) gets ChatML (llm/chat.py), and its tokenizer gains <|im_start|> and
<|im_end|> as special tokens, with new rows in the embedding and the output layer (the mean of
the others). With no train_data, the built-in story instructions (llm/stories/instructions.py)
are made on the fly, and the run scores the model's answers to held-out instructions before
and after.

SFT minimises -log p of the assistant's tokens only (the response mask), averaged per token
over the whole optimizer step: every response token weighs the same, however long its
conversation (llm/post_training.py, sft_microbatch_train_step with normalize_constant =
tokens / sequences). DPO (Rafailov et al., 2023) minimises -log sigmoid(beta * margin), the
margin being how much more the policy prefers the chosen reply than the reference model does;
the reference is the starting model, frozen, run without gradient on each batch.

Sequences are padded, not packed: each example is one row, right-padded to the batch's longest
(the padding masked out). Packing would let an example attend to the one before it, since the
model has no per-document mask; conversations here are short and of similar lengths, so
padding wastes little.

Full fine-tuning trains every weight; with --lora the model is frozen and LoRA adapters train
(llm/lora.py; lora_rank, lora_alpha, lora_dropout, lora_targets among q_proj k_proj v_proj
o_proj gate_proj up_proj down_proj). The run directory gets what a training run's does
(checkpoint.pt, config.json, metrics.jsonl, img/, llm/run_dir.py), and tokenizer/; a LoRA run's
checkpoint holds the merged model (generate with it, export it with llm.export), its adapters
(to resume) and adapter/, the adapters in PEFT's format for the source model exported with
llm.export. Checkpoints are written every checkpoint_interval steps, at the end, and on Ctrl-C.
"""

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from llm.bpe_tokenizer import BpeTokenizer
from llm.chat import END_OF_TURN
from llm.chat_data import (
    ChatDataError,
    Example,
    Preference,
    conversation,
    encode_conversation,
    load_preferences,
    load_sft,
)
from llm.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
    set_rng_states,
)
from llm.cli import parse, run_main
from llm.config import ConfigError, config_from_dict, config_to_dict, format_config
from llm.device import autocast, autocast_dtype, resolve_device
from llm.evaluation import token_bytes_of
from llm.generating import SamplingConfig, chat_prompt, generate
from llm.loading import load, models_help, require_float
from llm.lora import (
    TARGETS,
    LoraSettings,
    apply_lora,
    check_lora_settings,
    merged_state_dict,
    save_peft_adapter,
)
from llm.metric_sinks import MetricSinks, check_sinks
from llm.optim import OPTIMIZERS, cos_lr_scheduler, gradient_clip, skip_dynamo_import
from llm.post_training import (
    dpo_loss,
    get_response_log_probs,
    masked_normalize,
    pad_examples,
    sequence_log_prob,
    sft_microbatch_train_step,
)
from llm.run_dir import CONFIG_NAME, check_run_dir, start_run_dir
from llm.stop_signals import StopSignals
from llm.stories.instructions import instruction_data, score
from llm.transformer import Transformer, no_weight_init

CHAT_TOKENS = ("<|im_start|>", END_OF_TURN)  # what ChatML needs of a tokenizer
TOKENIZER_DIR = "tokenizer"  # in the run directory
ADAPTER_DIR = "adapter"  # in a LoRA run's directory: the PEFT files


@dataclass
class FinetuneConfig:
    """One fine-tuning run: the model, the data, the method, the optimizer and the schedule."""

    model: str = "runs/quickstart/model"  # the model to start from: run, checkpoint, HF, GGUF, name
    train_data: str = ""  # JSONL conversations or pairs ("" = the built-in story instructions)
    valid_data: str = ""  # JSONL held out for the validation loss ("" = none, or the built-in's)
    run_dir: str = "runs/finetune"  # checkpoint, metrics.jsonl, config.json, img/, tokenizer/
    resume: bool = False  # continue the run in run_dir from its checkpoint
    method: str = "sft"  # "sft" (learn the assistant turns) or "dpo" (learn the preferences)
    beta: float = 0.1  # DPO: how far the policy may move from the reference (larger: less)
    lora: bool = False  # train LoRA adapters on a frozen model instead of every weight
    lora_rank: int = 8  # the adapters' rank r
    lora_alpha: float = 16.0  # the adapters' scale is lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: list[str] = field(default_factory=lambda: list(TARGETS))  # matrices to adapt
    too_long: str = "error"  # a conversation longer than the context: "error" or "drop" it
    story_examples: int = 4000  # built-in data: instruction/story pairs to train on
    score_examples: int = 50  # built-in data: held-out instructions scored before and after
    optimizer: str = "adamw"  # "adamw" or "sgd" (llm/optim.py)
    max_lr: float = 1e-3  # peak learning rate (LoRA and small models take more than large ones)
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_iters: int = 20  # steps of linear warm-up
    max_iters: int = 1300  # optimizer steps
    weight_decay: float = 0.0  # decoupled weight decay of the trained matrices
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW denominator term
    grad_clip: float = 1.0  # max global gradient L2 norm (0 = no clipping)
    batch_size: int = 16  # conversations (or pairs) per optimizer step
    grad_accum_steps: int = 1  # micro-steps per optimizer step
    eval_batch_size: int = 16  # conversations per forward pass in the validation
    log_interval: int = 10  # steps between train records
    eval_interval: int = 100  # steps between validations
    checkpoint_interval: int = 100  # steps between checkpoints (also at the end and on Ctrl-C)
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + tensorboard, wandb
    device: str = "auto"  # "auto" (cuda > mps > cpu), or "cpu", "cuda", "mps"
    dtype: str = "auto"  # "auto" (bfloat16 autocast on CUDA, else float32), "float32", "bfloat16"
    seed: int = 0  # adapters' initialisation and data order
    threads: int = 0  # torch CPU threads (0 = torch's default)

    @property
    def built_in(self) -> bool:
        return not self.train_data


def load_finetune_config(argv: list[str] | None = None) -> FinetuneConfig:
    """FinetuneConfig from `[CONFIG.toml] [--key value]...` (a resumed run: its saved config)."""
    return parse(
        FinetuneConfig, argv, base=_base_config, description=f"{__doc__}\n{models_help()}",
        prog="uv run -m llm.finetune",
    )  # fmt: skip


def _base_config(values: dict) -> FinetuneConfig:
    if str(values.get("resume", "false")).lower() not in ("true", "1", "yes", "on"):
        return FinetuneConfig()
    run_dir = Path(values.get("run_dir", FinetuneConfig.run_dir))
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        raise ConfigError(f"no run to resume at {run_dir}: no {CONFIG_NAME}")
    return config_from_dict(FinetuneConfig, json.loads(saved.read_text()))


def check_config(config: FinetuneConfig) -> None:
    """Raise a ConfigError naming the first setting that cannot run (before any work)."""
    choices = {
        "method": ("sft", "dpo"),
        "too_long": ("error", "drop"),
        "optimizer": ("adamw", "sgd"),
        "dtype": ("auto", "float32", "bfloat16"),
    }
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {allowed}, not {getattr(config, key)!r}")
    positive = ["max_iters", "batch_size", "grad_accum_steps", "eval_batch_size"]
    positive += ["log_interval", "eval_interval", "checkpoint_interval"]
    for key in positive:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, not {getattr(config, key)}")
    for key in ["max_lr", "beta"]:
        if not getattr(config, key) > 0:
            raise ConfigError(f"{key} must be > 0, not {getattr(config, key)}")
    for key in ["min_lr", "warmup_iters", "weight_decay", "grad_clip", "score_examples"]:
        if not getattr(config, key) >= 0:
            raise ConfigError(f"{key} must be >= 0, not {getattr(config, key)}")
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"batch_size={config.batch_size} must be a multiple of grad_accum_steps="
            f"{config.grad_accum_steps}"
        )
    if config.lora:
        try:
            check_lora_settings(_lora_settings(config))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.built_in and config.method == "dpo":
        raise ConfigError("method 'dpo' needs train_data: a JSONL file of preference pairs")
    if config.built_in and config.story_examples < 1:
        raise ConfigError(f"story_examples must be at least 1, not {config.story_examples}")
    check_sinks(config.log_to)
    try:
        resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _lora_settings(config: FinetuneConfig) -> LoraSettings:
    return LoraSettings(
        config.lora_rank, config.lora_alpha, config.lora_dropout, list(config.lora_targets)
    )


# ---------------------------------------------------------------------------------------------
# The model, its tokenizer and the data
# ---------------------------------------------------------------------------------------------


def with_chat_tokens(tokenizer: BpeTokenizer) -> BpeTokenizer:
    """The tokenizer with ChatML's special tokens (new ids after the largest), or itself."""
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.special_tokens]
    if not missing:
        return tokenizer
    special = tokenizer.special_tokens + missing
    return BpeTokenizer(tokenizer.vocab, tokenizer.merges, special, **tokenizer.settings())


def grow_vocab(model: Transformer, vocab_size: int) -> Transformer:
    """The model with vocab_size rows in its embedding and output layer; each new row is the
    mean of the old ones (a neutral start: an average token, an average logit)."""
    old = model.config.vocab_size
    if vocab_size <= old:
        return model
    config = dataclasses.replace(model.config, vocab_size=vocab_size)
    with no_weight_init():
        grown = Transformer(config).to(model.lm_head.weight.device, model.lm_head.weight.dtype)
    state = model.state_dict()
    for key in ("embedding.weight", "lm_head.weight"):
        rows = state[key]
        state[key] = torch.cat([rows, rows.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    grown.load_state_dict(state)
    return grown


@dataclass
class _Start:
    """The model to fine-tune and what comes with it."""

    model: Transformer
    tokenizer: BpeTokenizer
    template: str | None  # the model's chat template (None: ChatML, llm/chat.py)
    end_of_turn: int | None  # the id generation stops at


def _start_model(config: FinetuneConfig, device: torch.device) -> _Start:
    """The source model on device, its tokenizer with the chat tokens its template needs (and
    the rows for them), and with LoRA, its adapters."""
    try:
        loaded = load(config.model, device)
    except (ValueError, OSError) as e:
        hint = ""
        if config.model == FinetuneConfig.model:
            hint = " (make the quickstart model with `uv run -m llm --out runs/quickstart`)"
        raise ConfigError(f"--model {config.model}: {e}{hint}") from None
    require_float(loaded, f"--model {config.model}")
    model, tokenizer, template = loaded.model, loaded.tokenizer, loaded.info.get("chat_template")
    if template is None:
        tokenizer = with_chat_tokens(tokenizer)
        if tokenizer.vocab_size > model.config.vocab_size:
            if config.lora:
                raise ConfigError(
                    f"{config.model} has no chat tokens ({', '.join(CHAT_TOKENS)}) and LoRA "
                    "keeps its embeddings frozen, so it could not learn them: fine-tune it "
                    "fully first (lora = false), then use LoRA on that run"
                )
            model = grow_vocab(model, tokenizer.vocab_size)
    end = tokenizer.special_ids.get(END_OF_TURN, loaded.info.get("eos_token_id"))
    model.train()
    if config.lora:
        apply_lora(model, _lora_settings(config))
    return _Start(model, tokenizer, template, end)


@dataclass
class _Data:
    train: list  # Examples (SFT) or Preferences (DPO)
    valid: list
    score_records: list[dict]  # built-in data: held-out instructions to score


def _load_data(config: FinetuneConfig, start: _Start) -> _Data:
    """The training and validation examples, tokenized and checked (before anything is written)."""
    context = start.model.config.context_length
    args = (start.tokenizer, start.template, context)
    if config.built_in:
        train_records, valid_records = instruction_data(config.story_examples, 200, config.seed)
        train = _story_examples(train_records, start, context)
        valid = _story_examples(valid_records, start, context)
        if not train:
            raise ChatDataError(
                f"no story instruction fits the context of {config.model} ({context} tokens)"
            )
        return _Data(train, valid, valid_records[: config.score_examples])
    loader = load_sft if config.method == "sft" else load_preferences
    train, dropped = loader(config.train_data, *args, config.too_long)
    valid, dropped_valid = (
        loader(config.valid_data, *args, config.too_long) if config.valid_data else ([], 0)
    )
    if dropped or dropped_valid:
        print(
            f"dropped {dropped + dropped_valid} conversations longer than the context ({context})"
        )
    return _Data(train, valid, [])


def _story_examples(records: list[dict], start: _Start, context: int) -> list[Example]:
    """The built-in pairs as examples; a story too long for this tokenizer's context is left out."""
    examples = [
        encode_conversation(conversation(r, "story instructions"), start.tokenizer, start.template)
        for r in records
    ]
    return [e for e in examples if len(e.ids) - 1 <= context]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    config: FinetuneConfig
    start: _Start
    data: _Data
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype | None
    reference: Transformer | None = None  # DPO: the frozen starting model
    step: int = 0
    train_seconds: float = 0.0
    sinks: MetricSinks | None = None
    stopping: bool = False
    last: dict = field(default_factory=dict)  # the latest train, eval and score records

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def model(self) -> Transformer:
        return self.start.model

    def log(self, record: dict) -> None:
        self.last[record["type"]] = record
        if self.sinks is not None:
            self.sinks.log(record)


def finetune(config: FinetuneConfig) -> dict:
    """Run fine-tuning as configured; returns the last record of each type ("train", "eval",
    "score"), the step reached and whether a stop request interrupted the run."""
    check_config(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    check_run_dir(config.run_dir, config.resume)
    device = resolve_device(config.device)
    start = _start_model(config, device)
    data = _load_data(config, start)  # bad data fails here, before anything is written
    print(format_config(config))
    dtype = autocast_dtype(config.dtype, device)
    skip_dynamo_import()  # (torch.optim would import torch._dynamo: seconds, for nothing here)
    optimizer = OPTIMIZERS[config.optimizer].build(start.model, config, dtype)
    generator = torch.Generator().manual_seed(config.seed)
    reference = None
    if config.method == "dpo":
        reference = _reference_model(config, start)
    run = _Run(config, start, data, optimizer, generator, device, dtype, reference)
    if config.resume:
        _resume(run)
    _open_run_dir(run)
    print(_describe(run))
    try:
        if run.step == 0 and data.score_records:
            _score(run)
        _train_loop(run)
        if not run.stopping:
            if data.valid:
                _evaluate(run, final=True)
            if data.score_records:
                _score(run)
    finally:
        if run.sinks is not None:
            run.sinks.close()
    from llm.plots import plot_run  # matplotlib is slow to import: only now

    plot_run(run.run_dir)
    print(_closing_line(run))
    return dict(run.last, step=run.step, interrupted=run.stopping)


def _reference_model(config: FinetuneConfig, start: _Start) -> Transformer:
    """DPO's reference: the starting model, frozen (a LoRA run's: its merged model at step 0,
    which is the source itself, since B starts at zero)."""
    with no_weight_init():
        reference = Transformer(start.model.config).to(start.model.lm_head.weight.device)
    reference.load_state_dict(merged_state_dict(start.model) if config.lora else
                              copy.deepcopy(start.model.state_dict()))  # fmt: skip
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference.eval()


def _open_run_dir(run: _Run) -> None:
    """The run directory, metrics sinks and the tokenizer, once everything is known to work."""
    values = config_to_dict(run.config)
    resumed_at = run.step if run.config.resume else None
    start_run_dir(run.run_dir, values, resumed_at)
    run.start.tokenizer.save(run.run_dir / TOKENIZER_DIR)
    run.sinks = MetricSinks(run.run_dir, run.config.log_to, values, resumed_at)


def _describe(run: _Run) -> str:
    total = sum(p.numel() for p in run.model.parameters())
    trained = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    what = "LoRA adapters" if run.config.lora else "full fine-tuning"
    return (
        f"{run.config.method.upper()}, {what}: {trained:,} of {total:,} parameters trained; "
        f"{len(run.data.train):,} training and {len(run.data.valid):,} validation examples; "
        f"device {run.device}"
    )


def _train_loop(run: _Run) -> None:
    """Optimizer steps until max_iters or a stop request (Ctrl-C, SIGTERM)."""
    config = run.config
    bar = tqdm(total=config.max_iters, initial=run.step, unit="step")
    stop = StopSignals("stopping after this step and saving a checkpoint (Ctrl-C again to abort)")
    loss_sum, steps, seconds = 0.0, 0, 0.0  # since the last train record
    with stop, bar:
        for step in range(run.step, config.max_iters):
            began = time.perf_counter()
            lr = cos_lr_scheduler(
                step, config.max_lr, config.min_lr, config.warmup_iters, config.max_iters
            )
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            loss_sum += _train_step(run)
            steps, seconds = steps + 1, seconds + time.perf_counter() - began
            run.train_seconds += time.perf_counter() - began
            run.step = step + 1
            bar.update(1)
            run.stopping = stop.requested
            last = run.step == config.max_iters
            save = run.step % config.checkpoint_interval == 0 or last or run.stopping
            if run.step % config.log_interval == 0 or save:
                _log_train(run, loss_sum / steps, lr, steps / seconds, bar)
                loss_sum, steps, seconds = 0.0, 0, 0.0
            if run.step % config.eval_interval == 0 and run.data.valid and not last:
                _evaluate(run, final=False)
            if save:
                _save(run)
            if run.stopping:
                tqdm.write(f"stopped at step {run.step}; checkpoint saved")
                return


def _log_train(run: _Run, loss: float, lr: float, steps_per_s: float, bar: tqdm) -> None:
    if not math.isfinite(loss):
        raise CheckpointError(f"the training loss is {loss} at step {run.step}: lower max_lr")
    run.log({"type": "train", "step": run.step, "loss": loss, "lr": lr,
             "steps_per_s": steps_per_s, "train_seconds": run.train_seconds})  # fmt: skip
    bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} {steps_per_s:.2f} steps/s")


def _train_step(run: _Run) -> float:
    """One optimizer step on batch_size examples drawn at random; returns the step's loss."""
    config = run.config
    chosen = torch.randperm(len(run.data.train), generator=run.generator)[: config.batch_size]
    items = [run.data.train[i] for i in chosen.tolist()]
    micro = len(items) // config.grad_accum_steps
    if config.method == "sft":  # the step's response tokens, for the per-token mean
        tokens = sum(sum(e.mask[1:]) for e in items)
    total = 0.0
    for i in range(config.grad_accum_steps):
        part = items[i * micro : (i + 1) * micro]
        with autocast(run.device, run.dtype):
            if config.method == "sft":
                total += _sft_micro_step(run, part, tokens / len(items))
            else:
                total += _dpo_micro_step(run, part)
    params = [p for p in run.model.parameters() if p.requires_grad]
    if config.grad_clip:
        gradient_clip(params, config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total


def _batch(examples: list[Example], device: torch.device) -> dict[str, Tensor]:
    batch = pad_examples([e.ids for e in examples], [e.mask for e in examples])
    return {key: value.to(device) for key, value in batch.items()}


def _sft_micro_step(run: _Run, examples: list[Example], per_sequence_tokens: float) -> float:
    batch = _batch(examples, run.device)
    log_probs = get_response_log_probs(run.model, batch["input_ids"], batch["labels"])["log_probs"]
    loss, _ = sft_microbatch_train_step(
        log_probs, batch["response_mask"], run.config.grad_accum_steps, per_sequence_tokens
    )
    return loss.item()


def _dpo_losses(run: _Run, pairs: list[Preference]) -> tuple[Tensor, Tensor]:
    """Each pair's DPO loss and reward margin (beta * margin), the policy's with gradient, the
    reference's log-probabilities without."""
    chosen = _batch([p.chosen for p in pairs], run.device)
    rejected = _batch([p.rejected for p in pairs], run.device)
    with torch.no_grad():
        ref_chosen = sequence_log_prob(run.reference, chosen)
        ref_rejected = sequence_log_prob(run.reference, rejected)
    policy_chosen = sequence_log_prob(run.model, chosen)
    policy_rejected = sequence_log_prob(run.model, rejected)
    beta = run.config.beta
    losses = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return losses, beta * margin.detach()


def _dpo_micro_step(run: _Run, pairs: list[Preference]) -> float:
    losses, _ = _dpo_losses(run, pairs)
    loss = losses.mean() / run.config.grad_accum_steps
    loss.backward()
    return loss.item()


@torch.no_grad()
def _evaluate(run: _Run, final: bool) -> dict:
    """The validation loss on the whole held-out set: SFT, nats per response token (and bits
    per byte of the responses); DPO, the mean pair loss and the share of pairs ranked right."""
    run.model.eval()
    size = run.config.eval_batch_size
    parts = [run.data.valid[i : i + size] for i in range(0, len(run.data.valid), size)]
    with autocast(run.device, run.dtype):
        record = _sft_eval(run, parts) if run.config.method == "sft" else _dpo_eval(run, parts)
    run.model.train()
    record = {"type": "eval", "step": run.step, "exact": final, **record,
              "train_seconds": run.train_seconds}  # fmt: skip
    run.log(record)
    tqdm.write(f"step {run.step}: validation loss {record['loss']:.4f}")
    return record


def _sft_eval(run: _Run, parts: list[list[Example]]) -> dict:
    token_bytes = torch.as_tensor(
        token_bytes_of(run.start.tokenizer, run.model.config.vocab_size), device=run.device
    )
    nats, tokens, nbytes = 0.0, 0, 0
    for part in parts:
        batch = _batch(part, run.device)
        log_probs = get_response_log_probs(run.model, batch["input_ids"], batch["labels"])
        mask = batch["response_mask"]
        nats -= masked_normalize(log_probs["log_probs"], mask, 1.0).item()
        tokens += int(mask.sum())
        nbytes += int(token_bytes[batch["labels"]][mask].sum())
    loss = nats / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)),
            "bits_per_byte": nats / math.log(2) / max(nbytes, 1)}  # fmt: skip


def _dpo_eval(run: _Run, parts: list[list[Preference]]) -> dict:
    losses, margins = [], []
    for part in parts:
        loss, margin = _dpo_losses(run, part)
        losses.append(loss)
        margins.append(margin)
    loss, margin = torch.cat(losses), torch.cat(margins)
    return {"loss": loss.mean().item(), "accuracy": (margin > 0).float().mean().item()}


@torch.no_grad()
def generate_answers(run: _Run, prompts: list[str]) -> list[str]:
    """The model's greedy reply to each prompt as a user turn, up to its end of turn, in batches
    of eval_batch_size. A reply that does not end is cut at twice the longest reply of the
    training data: a model of long context (SmolLM2's 8,192) would otherwise reserve a KV cache
    for its whole context for every prompt of the batch."""
    start, context = run.start, run.model.config.context_length
    longest = max(sum(example.mask) for example in run.data.train)
    answers = []
    run.model.eval()
    for first in range(0, len(prompts), run.config.eval_batch_size):
        batch = prompts[first : first + run.config.eval_batch_size]
        ids = [chat_prompt(start.tokenizer, [{"role": "user", "content": p}], start.template)
               for p in batch]  # fmt: skip
        room = max(min(context - max(len(i) for i in ids), 2 * longest), 1)
        sampling = SamplingConfig(max_new_tokens=room, temperature=0.0, eos_id=start.end_of_turn)
        with autocast(run.device, run.dtype):
            replies = generate(run.model, ids, sampling)
        answers += [start.tokenizer.decode(reply) for reply in replies]
    run.model.train()
    return answers


def _score(run: _Run) -> None:
    """The built-in data's score: the share of held-out instructions whose story holds every
    requested element; logged, with one sample."""
    records = run.data.score_records
    answers = generate_answers(run, [r["prompt"] for r in records])
    value = score(answers, records)
    run.log({"type": "score", "step": run.step, "score": value, "examples": len(records)})
    run.log({"type": "sample", "step": run.step, "prompt": records[0]["prompt"],
             "text": answers[0]})  # fmt: skip
    tqdm.write(f"step {run.step}: story instruction score {value:.1%} ({len(records)} held out)")
    tqdm.write(f"  {records[0]['prompt']}\n  -> {' '.join(answers[0].split())}")


def _save(run: _Run) -> None:
    """The checkpoint: the model (merged, for LoRA, with its adapters in extra to resume), the
    optimizer and the random states; a LoRA run also writes its PEFT files."""
    config, path = run.config, run.run_dir / CHECKPOINT_NAME
    model, extra = run.model, {"train_seconds": run.train_seconds}
    if config.lora:
        extra["lora"] = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        with no_weight_init():
            plain = Transformer(model.config)
        plain.load_state_dict(merged_state_dict(model))
        model = plain
        save_peft_adapter(
            run.model, _lora_settings(config), run.run_dir / ADAPTER_DIR, config.model
        )
    save_checkpoint(
        model, run.optimizer, run.step, path, train_config=config,
        tokenizer_dir=run.run_dir / TOKENIZER_DIR, data_generator=run.generator, extra=extra,
        chat_template=run.start.template,
    )  # fmt: skip


def _resume(run: _Run) -> None:
    """Restore the weights (or adapters), the optimizer and the random states."""
    checkpoint = read_checkpoint(run.run_dir / CHECKPOINT_NAME, map_location=run.device)
    if run.config.lora:
        missing = run.model.load_state_dict(checkpoint["extra"]["lora"], strict=False)
        lora = {n for n, p in run.model.named_parameters() if p.requires_grad}
        if lora & set(missing.missing_keys) or missing.unexpected_keys:
            raise CheckpointError(f"{run.run_dir}: its adapters do not fit the model's")
    else:
        run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_states(checkpoint["rng"], run.generator)
    run.step = int(checkpoint["iteration"])
    run.train_seconds = checkpoint["extra"].get("train_seconds", 0.0)
    print(f"resumed from {run.run_dir / CHECKPOINT_NAME} at step {run.step}")


def _closing_line(run: _Run) -> str:
    if run.stopping:
        return f"continue with: uv run -m llm.finetune --run_dir {run.run_dir} --resume"
    extra = f"; PEFT adapter in {run.run_dir / ADAPTER_DIR}" if run.config.lora else ""
    return (
        f"done at step {run.step}: checkpoint, metrics and plots in {run.run_dir}{extra}; talk "
        f"to it with: uv run -m llm.generating --checkpoint {run.run_dir} --chat"
    )


def main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.finetune`: exit 0 when done, 130 when stopped (checkpoint saved), 2 for a
    bad setting, 1 for bad data."""
    errors = (ChatDataError, CheckpointError, OSError, ValueError)
    summary = run_main(lambda: finetune(load_finetune_config(argv)), errors)
    if summary["interrupted"]:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
