"""Checkpoints: everything needed to continue a run exactly, or to use the model.

A checkpoint is one file written with torch.save holding plain data only:

    model          state dict (no "_orig_mod." / "module." prefixes from torch.compile / DDP)
    optimizer      state dict
    iteration      optimizer steps done
    model_config   ModelConfig as a dict (enough to rebuild the model)
    train_config   the run's config as a dict (or None)
    tokenizer_dir  where the tokenizer lives (or None)
    rng            python, numpy, torch (+ cuda) and data-sampler generator states
    extra          small run state the trainer wants back (a dict of plain values)
    chat_template  the model's chat template, when it has its own (optional)

It is written atomically (llm/atomic_write.py: temp file, fsync, rename), so a crash or a kill
mid-save leaves the previous checkpoint whole, and read with torch.load(weights_only=True), which
refuses anything but tensors and plain containers: a checkpoint from elsewhere cannot run code.

A sharded run (parallel = "fsdp", llm/sharding.py) saves a directory instead, checkpoint.dcp,
with torch.distributed.checkpoint (DCP): each process writes its own slices of the weights and
the optimizer state, and rank 0 adds train_state.pt, the entries above but model and optimizer.
DCP records where each slice belongs, so the run resumes on any number of processes. A save
goes to checkpoint.dcp.tmp, which is renamed when complete (the previous one is kept as
checkpoint.dcp.old during the swap): a run killed mid-save resumes from the last complete one.
DCP's index (.metadata) is a pickle, so load only sharded checkpoints you made; to share a
model, turn it into one file:

    uv run -m llm.checkpoint consolidate RUN_DIR OUT.pt
"""

import dataclasses
import pickle
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from llm.atomic_write import atomic_write
from llm.cli import parse_command, run_main
from llm.config import ConfigError, config_from_dict, config_to_dict
from llm.transformer import ModelConfig, Transformer, no_weight_init

CHECKPOINT_NAME = "checkpoint.pt"  # the file a run directory holds
SHARDED_NAME = "checkpoint.dcp"  # or, for a sharded run, this directory
TRAIN_STATE_NAME = "train_state.pt"  # in it, beside the slices: all but model and optimizer


class CheckpointError(ValueError):
    """A checkpoint that is missing, unsafe, or does not fit the model it is loaded into."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP (.module) and/or torch.compile (._orig_mod) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the `_orig_mod.` (torch.compile) and `module.` (DDP) prefixes from keys."""
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith(("_orig_mod.", "module.")):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    path: str | Path,
    *,
    train_config: Any = None,
    tokenizer_dir: str | Path | None = None,
    data_generator: torch.Generator | None = None,
    extra: dict | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write a checkpoint atomically to `path`; returns the path. chat_template: the model's
    own (a fine-tuned chat model's), which generation and export then use."""
    plain = unwrap(model)
    checkpoint = {
        "model": clean_state_dict(plain.state_dict()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **_train_state(plain, iteration, train_config, tokenizer_dir, data_generator, extra),
    }
    if chat_template:
        checkpoint["chat_template"] = chat_template
    path = Path(path)
    atomic_save(checkpoint, path)
    return path


def _train_state(
    model: nn.Module,
    iteration: int,
    train_config: Any,
    tokenizer_dir: str | Path | None,
    data_generator: torch.Generator | None,
    extra: dict | None,
) -> dict:
    """A checkpoint's entries but model and optimizer."""
    return {
        "iteration": int(iteration),
        "model_config": _as_dict(getattr(model, "config", None)),
        "train_config": _as_dict(train_config),
        "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None,
        "rng": rng_states(data_generator),
        "extra": extra or {},
    }


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through atomic_write: readers see the old file or the new one, never a
    partial write."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint file safely (weights_only=True: tensors and plain data, no code)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        if sharded_checkpoint(path.parent):
            raise CheckpointError(
                f"{path.parent} holds a sharded checkpoint; make one file of it with: "
                f"uv run -m llm.checkpoint consolidate {path.parent} model.pt"
            )
        raise CheckpointError(f"no checkpoint at {path}")
    if not is_checkpoint_file(path):
        raise CheckpointError(f"{path} is not a checkpoint (torch.save writes a zip archive)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds more than tensors and plain data (a pickle that "
            f"could run code), or is not a checkpoint. Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as e:
        # A file cut short (full disk, interrupted copy) fails in the zip reader or unpickler.
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or damaged?): {e!r}"
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no 'model' entry)")
    return checkpoint


def restore_checkpoint(
    checkpoint: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    data_generator: torch.Generator | None = None,
    restore_rng: bool = False,
) -> int:
    """Load a read checkpoint into model (and optimizer, generator, global RNGs); returns the
    iteration. A checkpoint whose tensors do not fit the model is a CheckpointError naming
    the differences."""
    plain = unwrap(model)
    checkpoint["model"] = clean_state_dict(checkpoint["model"])
    _check_fits(checkpoint, plain)
    plain.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        if checkpoint.get("optimizer") is None:
            raise CheckpointError("the checkpoint holds no optimizer state; cannot resume from it")
        optimizer.load_state_dict(checkpoint["optimizer"])
    if restore_rng:
        set_rng_states(checkpoint["rng"], data_generator)
    return int(checkpoint["iteration"])


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    data_generator: torch.Generator | None = None,
    restore_rng: bool = False,
    map_location: str | torch.device = "cpu",
) -> int:
    """Load a checkpoint file into model (and optimizer, ...); returns the iteration."""
    checkpoint = read_checkpoint(path, map_location)
    return restore_checkpoint(
        checkpoint, model, optimizer, data_generator=data_generator, restore_rng=restore_rng
    )


def is_checkpoint_file(path: str | Path) -> bool:
    """Whether `path` is a file torch.save wrote: a zip archive (or, before PyTorch 1.6, a
    pickle). A .npy array or a text file is not one, and is never unpickled."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        start = f.read(4)
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, dict]:
    """A Transformer rebuilt from a checkpoint file or a run directory, in eval mode, with the
    checkpoint dict (for its tokenizer_dir, configs, iteration). Every other format of model is
    read by llm/loading.py."""
    checkpoint = read_checkpoint(path, map_location=device)
    return model_from_checkpoint(checkpoint, path, device), checkpoint


def model_from_checkpoint(
    checkpoint: dict, path: str | Path, device: str | torch.device = "cpu"
) -> Transformer:
    """The Transformer of a read checkpoint (read_checkpoint), in eval mode."""
    with no_weight_init():  # the checkpoint's weights replace them
        model = Transformer(model_config_of(checkpoint, path)).to(device)
    restore_checkpoint(checkpoint, model)
    return model.eval()


def read_model_config(path: str | Path) -> tuple[ModelConfig, str | None]:
    """The model config and the tokenizer directory of a checkpoint file or a run directory
    (sharded too), without building the model."""
    sharded = sharded_checkpoint(path) if Path(path).is_dir() else None
    if sharded is not None and not (Path(path) / CHECKPOINT_NAME).is_file():
        checkpoint = _read_train_state(sharded)
    else:
        checkpoint = read_checkpoint(path)
    return model_config_of(checkpoint, path), checkpoint.get("tokenizer_dir")


def model_config_of(checkpoint: dict, path: str | Path) -> ModelConfig:
    """The ModelConfig a read checkpoint was saved with; a CheckpointError when it has none or
    it does not fit this code."""
    if checkpoint.get("model_config") is None:
        raise CheckpointError(f"{path} holds no model_config; cannot rebuild the model")
    try:
        return config_from_dict(ModelConfig, checkpoint["model_config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its model_config does not fit this code: {e}") from None


def rng_states(data_generator: torch.Generator | None = None) -> dict:
    """Every random number generator's state, as plain data (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        # Only if CUDA is in use: asking for its state would start it (and break fork()).
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "data": data_generator.get_state() if data_generator is not None else None,
    }


def set_rng_states(states: dict, data_generator: torch.Generator | None = None) -> None:
    """Restore what rng_states saved (the inverse of rng_states)."""
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = dict(states["numpy"])
    np_state["state"] = dict(np_state["state"], key=np.array(np_state["state"]["key"], np.uint32))
    np.random.set_state(np_state)
    torch.set_rng_state(states["torch"].cpu())
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    if data_generator is not None:
        if states.get("data") is None:
            raise CheckpointError("the checkpoint holds no data-sampler state; cannot resume")
        data_generator.set_state(states["data"].cpu())


def _check_fits(checkpoint: dict, model: nn.Module) -> None:
    """Raise a CheckpointError listing missing/unexpected keys and shape differences."""
    saved = checkpoint["model"]
    wanted = model.state_dict()
    problems = [f"missing {k}" for k in wanted if k not in saved]
    problems += [f"unexpected {k}" for k in saved if k not in wanted]
    problems += [
        f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in saved and saved[k].shape != v.shape
    ]
    if not problems:
        return
    config_diff = ""
    model_config = getattr(model, "config", None)
    if checkpoint.get("model_config") and dataclasses.is_dataclass(model_config):
        ours = config_to_dict(model_config)
        diffs = [
            f"{k}={v!r} (model has {ours.get(k)!r})"
            for k, v in checkpoint["model_config"].items()
            if ours.get(k) != v
        ]
        config_diff = f"\ncheckpoint model_config differs: {', '.join(diffs)}" if diffs else ""
    shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
    raise CheckpointError(
        f"checkpoint does not fit the model ({len(problems)} problems):\n  {shown}{config_diff}"
    )


def _as_dict(config: Any) -> dict | None:
    if config is None or isinstance(config, dict):
        return config
    return config_to_dict(config)


def sharded_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete sharded checkpoint of run_dir, or None: checkpoint.dcp, or the .old one
    when a save was killed between its two renames."""
    for path in (Path(run_dir) / SHARDED_NAME, Path(run_dir) / f"{SHARDED_NAME}.old"):
        if (path / TRAIN_STATE_NAME).is_file():  # written last
            return path
    return None


def save_sharded(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    run_dir: str | Path,
    *,
    train_config: Any = None,
    tokenizer_dir: str | Path | None = None,
    data_generator: torch.Generator | None = None,
    extra: dict | None = None,
) -> Path:
    """Save a sharded model (llm.sharding) and its optimizer to run_dir/checkpoint.dcp; every
    process of the job calls this. Returns the directory."""
    import torch.distributed.checkpoint as dcp  # here: slow to import, only sharded runs need it
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = Path(run_dir) / SHARDED_NAME
    tmp, old = final.with_name(f"{SHARDED_NAME}.tmp"), final.with_name(f"{SHARDED_NAME}.old")
    is_main = dist.get_rank() == 0
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save
        if old.exists() and not final.exists():
            old.rename(final)  # a save killed between the renames: old is the latest
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    if is_main:
        state = _train_state(model, iteration, train_config, tokenizer_dir, data_generator, extra)
        atomic_save(state, tmp / TRAIN_STATE_NAME)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    data_generator: torch.Generator | None = None,
    restore_rng: bool = False,
) -> tuple[int, dict]:
    """Load a sharded checkpoint directory into a sharded model and its optimizer, whatever the
    number of processes that saved it; every process calls this. Returns (iteration, extra)."""
    import torch.distributed.checkpoint as dcp  # here: slow to import, only sharded runs need it
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    state = _read_train_state(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    slices = {"model": model_state, "optimizer": optimizer_state}
    try:
        dcp.load(slices, checkpoint_id=path)
    except (dcp.CheckpointException, RuntimeError, KeyError, ValueError) as e:  # key, shape
        raise CheckpointError(f"{path} does not fit the model: {str(e).strip()[:500]}") from None
    set_state_dict(
        model, optimizer, model_state_dict=slices["model"], optim_state_dict=slices["optimizer"]
    )
    if restore_rng:
        set_rng_states(state["rng"], data_generator)
    return int(state["iteration"]), state["extra"]


def load_sharded_model(source: str | Path) -> tuple[Transformer, dict]:
    """The whole model of a sharded checkpoint (a run directory or its checkpoint.dcp),
    gathered in one process with no process group, in eval mode, and its train state (the
    checkpoint's entries but model and optimizer)."""
    import torch.distributed.checkpoint as dcp  # here: slow to import, only sharded runs need it

    source = Path(source)
    path = source if (source / TRAIN_STATE_NAME).is_file() else sharded_checkpoint(source)
    if path is None:
        raise CheckpointError(f"no sharded checkpoint in {source} (no {SHARDED_NAME}/)")
    state = _read_train_state(path)
    with no_weight_init():  # only the tensors' shapes are used: DCP fills them
        model = Transformer(model_config_of(state, path))
    whole = {"model": model.state_dict()}
    with warnings.catch_warnings():  # DCP warns that it loads in one process, even when asked to
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(whole, checkpoint_id=path, no_dist=True)  # into the model's own tensors, whole
    return model.eval(), state


def consolidate(source: str | Path, out: str | Path) -> Path:
    """Gather a sharded checkpoint (a run directory or its checkpoint.dcp) into one checkpoint
    file at `out`; one process, no process group. The optimizer state is left out (to continue
    training, resume the sharded run)."""
    model, state = load_sharded_model(source)
    out = Path(out)
    atomic_save({"model": model.state_dict(), "optimizer": None, **state}, out)
    return out


def _read_train_state(path: Path) -> dict:
    try:
        return torch.load(path / TRAIN_STATE_NAME, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path / TRAIN_STATE_NAME} is not readable: {e!r}") from None


@dataclass
class ConsolidateConfig:
    """Turn a sharded checkpoint into one checkpoint file (for generation and export)."""

    source: str  # a run directory saved with parallel = "fsdp", or its checkpoint.dcp
    out: str  # the checkpoint file to write, e.g. model.pt


def main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.checkpoint consolidate RUN_DIR OUT.pt`."""

    def command() -> None:
        _, config = parse_command(
            {"consolidate": (ConsolidateConfig, ConsolidateConfig.__doc__)},
            argv,
            description="Checkpoint tools.",
            prog="uv run -m llm.checkpoint",
            positional={"consolidate": ("source", "out")},
        )
        out = consolidate(config.source, config.out)
        print(f"wrote {out}; generate with: uv run -m llm.generating --checkpoint {out}")

    run_main(command, errors=(CheckpointError, OSError))


if __name__ == "__main__":
    main()
