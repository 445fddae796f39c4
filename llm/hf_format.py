"""Hugging Face's Llama format: our model as a directory that `transformers`, vLLM, llama.cpp's
converter and the Hub read, and such a directory back as our model.

    config.json              LlamaConfig: the shape, rope_theta, rms_norm_eps, tied embeddings
    model.safetensors        the weights under Llama's names (safetensors: tensors only, no code)
    generation_config.json   bos and eos ids
    tokenizer.json           the tokenizer (llm/bpe_files.py), with tokenizer_config.json

Our default architecture is Llama's (pre-norm RMSNorm, SwiGLU, RoPE, optional grouped-query
attention), so each weight maps to one of Llama's. Two differences of layout:
- Q, K and V are one matrix here (qkv_proj), three there (q_proj, k_proj, v_proj).
- RoPE: we rotate adjacent pairs (x[2i], x[2i+1]) of each head, Llama rotates halves (x[i],
  x[i + d_head/2]). Reordering the output rows of the query and key projections, within each
  head the even rows first and the odd rows second, turns one into the other; the scores q.k
  do not change, since queries and keys are reordered alike.
The ablation switches (post-norm, no norm, NoPE, ALiBi, SiLU FFN), QK-norm and a sliding window
have no Llama equivalent; exporting such a model is an error naming the option.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from llm.atomic_write import atomic_write, write_text
from llm.bpe_files import tokenizer_json
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.config import config_to_dict
from llm.transformer import ModelConfig, Transformer, no_weight_init

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"  # a model saved in several files (shards)
# Every file an export writes: `llm.export --force` replaces a directory holding only these.
EXPORT_FILES = (
    "config.json",
    WEIGHTS_NAME,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
# The ModelConfig values Llama's architecture has (the defaults).
LLAMA_OPTIONS = {"norm_position": "pre", "position_encoding": "rope", "ffn": "swiglu",
                 "qk_norm": False, "sliding_window": None}  # fmt: skip


class HfFormatError(ValueError):
    """A model or directory that the Hugging Face Llama format and our model cannot share."""


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def check_llama(config: ModelConfig) -> None:
    """Raise an HfFormatError naming the first option Llama cannot express."""
    for key, needed in LLAMA_OPTIONS.items():
        if getattr(config, key) != needed:
            raise HfFormatError(
                f"{key}={getattr(config, key)!r} has no Llama equivalent (Hugging Face's Llama "
                f"needs {needed!r}), so this model cannot be exported"
            )


def hf_config(config: ModelConfig, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """config.json of a LlamaForCausalLM with our model's shape. rope_theta is written both where
    transformers 4 reads it and where transformers 5 does (rope_parameters)."""
    check_llama(config)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.d_head,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def model_config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a LlamaForCausalLM's config.json; a feature we do not have (another
    architecture, RoPE scaling, biases, another activation) is an HfFormatError naming it."""

    def unsupported(feature: str) -> HfFormatError:
        return HfFormatError(f"{where}: {feature} is not supported (only Llama models load)")

    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads")  # fmt: skip
    missing = [key for key in required if not isinstance(hf.get(key), int)]
    if missing:
        raise HfFormatError(f"{where}: {missing[0]} is missing or not an integer")
    if hf.get("model_type") != "llama":
        raise unsupported(f"model_type {hf.get('model_type')!r}")
    architectures = hf.get("architectures") or ["LlamaForCausalLM"]
    if architectures != ["LlamaForCausalLM"]:
        raise unsupported(f"architectures {architectures}")
    if hf.get("rope_scaling"):
        raise unsupported(f"rope_scaling {hf['rope_scaling']}")
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise unsupported(f"rope_type {rope['rope_type']!r}")
    if hf.get("hidden_act", "silu") != "silu":
        raise unsupported(f"hidden_act {hf['hidden_act']!r}")
    for key in ("attention_bias", "mlp_bias", "quantization_config"):
        if hf.get(key):
            raise unsupported(f"{key} {hf[key]}")
    num_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
    if head_dim * num_heads != hf["hidden_size"]:
        raise unsupported(f"head_dim {head_dim} x {num_heads} heads != hidden_size")
    kv_heads = hf.get("num_key_value_heads") or num_heads
    try:
        return ModelConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf.get("max_position_embeddings", 2048),
            d_model=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            d_ff=hf["intermediate_size"],
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            num_kv_heads=kv_heads if kv_heads != num_heads else None,  # None: ours for MHA
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        )
    except (TypeError, ValueError) as e:
        raise HfFormatError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


def rope_pairs_to_halves(weight: Tensor, num_heads: int) -> Tensor:
    """Reorder a query or key projection's output rows from our RoPE layout to Llama's: within
    each head, the even rows first, then the odd ones."""
    d_model = weight.shape[1]
    per_head = weight.reshape(num_heads, -1, 2, weight.shape[1])  # (heads, d_head/2, pair, d_model)
    return per_head.transpose(1, 2).reshape(-1, d_model)


def rope_halves_to_pairs(weight: Tensor, num_heads: int) -> Tensor:
    """The inverse of rope_pairs_to_halves: Llama's rows back to ours."""
    d_model = weight.shape[1]
    per_head = weight.reshape(num_heads, 2, -1, d_model)  # (heads, half, d_head/2, d_model)
    return per_head.transpose(1, 2).reshape(-1, d_model)


def hf_state_dict(model: Transformer) -> dict[str, Tensor]:
    """Our weights under Llama's names (new contiguous tensors). A tied model has no
    lm_head.weight: Llama then un-embeds with the embedding matrix, as Hugging Face saves it."""
    c = model.config
    check_llama(c)
    state = {"model.embed_tokens.weight": model.embedding.weight,
             "model.norm.weight": model.final_norm.weight}  # fmt: skip
    if not c.tie_embeddings:
        state["lm_head.weight"] = model.lm_head.weight
    q_rows, kv_rows = c.num_heads * c.d_head, c.kv_heads * c.d_head
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}."
        wq, wk, wv = block.attn.qkv_proj.weight.split([q_rows, kv_rows, kv_rows], dim=0)
        state |= {
            prefix + "input_layernorm.weight": block.attn_norm.weight,
            prefix + "post_attention_layernorm.weight": block.ffn_norm.weight,
            prefix + "self_attn.q_proj.weight": rope_pairs_to_halves(wq, c.num_heads),
            prefix + "self_attn.k_proj.weight": rope_pairs_to_halves(wk, c.kv_heads),
            prefix + "self_attn.v_proj.weight": wv,
            prefix + "self_attn.o_proj.weight": block.attn.out_proj.weight,
            prefix + "mlp.gate_proj.weight": block.ffn.w1.weight,
            prefix + "mlp.up_proj.weight": block.ffn.w3.weight,
            prefix + "mlp.down_proj.weight": block.ffn.w2.weight,
        }
    return {name: t.detach().contiguous().clone() for name, t in state.items()}


def state_dict_from_hf(hf: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Our state dict from a LlamaForCausalLM's tensors (the inverse of hf_state_dict). Missing
    or unexpected tensors are an HfFormatError naming them."""
    hf = {k: v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}  # old files
    used = set()

    def take(name: str) -> Tensor:
        if name not in hf:
            raise HfFormatError(f"the weights have no {name}")
        used.add(name)
        return hf[name]

    embedding = take("model.embed_tokens.weight")
    lm_head = embedding if config.tie_embeddings else take("lm_head.weight")
    used.add("lm_head.weight")  # a tied model may carry a copy; ours is the embedding
    state = {"embedding.weight": embedding, "lm_head.weight": lm_head,
             "final_norm.weight": take("model.norm.weight")}  # fmt: skip
    for i in range(config.num_layers):
        prefix, ours = f"model.layers.{i}.", f"blocks.{i}."
        wq = rope_halves_to_pairs(take(prefix + "self_attn.q_proj.weight"), config.num_heads)
        wk = rope_halves_to_pairs(take(prefix + "self_attn.k_proj.weight"), config.kv_heads)
        wv = take(prefix + "self_attn.v_proj.weight")
        state |= {
            ours + "attn_norm.weight": take(prefix + "input_layernorm.weight"),
            ours + "ffn_norm.weight": take(prefix + "post_attention_layernorm.weight"),
            ours + "attn.qkv_proj.weight": torch.cat([wq, wk, wv]),
            ours + "attn.out_proj.weight": take(prefix + "self_attn.o_proj.weight"),
            ours + "ffn.w1.weight": take(prefix + "mlp.gate_proj.weight"),
            ours + "ffn.w3.weight": take(prefix + "mlp.up_proj.weight"),
            ours + "ffn.w2.weight": take(prefix + "mlp.down_proj.weight"),
        }
    unexpected = sorted(set(hf) - used)
    if unexpected:
        shown = ", ".join(unexpected[:3]) + (", ..." if len(unexpected) > 3 else "")
        raise HfFormatError(f"the weights hold {len(unexpected)} tensors we do not use: {shown}")
    return state


# ---------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------


def save_hf(
    directory: str | Path,
    model: Transformer,
    tokenizer: BpeTokenizer,
    bos_id: int | None = None,
    eos_id: int | None = None,
    chat_template: str | None = None,
) -> None:
    """Write model and tokenizer into `directory` in the Hugging Face Llama format. Each file is
    written atomically; llm/export.py makes the whole directory appear at once. bos_id and
    eos_id default to <|endoftext|>: our documents end (and so start) with it."""
    directory = Path(directory)
    if eos_id is None:
        eos_id = tokenizer.special_ids.get(EOT)
    if bos_id is None:
        bos_id = eos_id
    write_json(directory / "config.json", hf_config(model.config, bos_id, eos_id))
    generation = {"bos_token_id": bos_id, "eos_token_id": eos_id}
    write_json(directory / "generation_config.json", generation)
    with atomic_write(directory / WEIGHTS_NAME) as f:
        f.write(save(hf_state_dict(model), metadata={"format": "pt"}))
    save_hf_tokenizer(
        directory, tokenizer, model.config.context_length, bos_id, eos_id, chat_template
    )


def save_hf_tokenizer(
    directory: str | Path,
    tokenizer: BpeTokenizer,
    context_length: int,
    bos_id: int | None = None,
    eos_id: int | None = None,
    chat_template: str | None = None,
) -> None:
    """tokenizer.json and tokenizer_config.json (the bos and eos tokens by name, the chat
    template) in `directory`."""
    directory = Path(directory)
    tokenizer_file = tokenizer_json(
        tokenizer.vocab, tokenizer.merges, tokenizer.special_ids, **tokenizer.settings()
    )
    write_json(directory / "tokenizer.json", tokenizer_file)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
    }
    for name, token_id in (("bos_token", bos_id), ("eos_token", eos_id)):
        if token_id is not None:
            tokenizer_config[name] = tokenizer.decode([token_id])
    if chat_template:
        tokenizer_config["chat_template"] = chat_template
    write_json(directory / "tokenizer_config.json", tokenizer_config)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def is_hf_dir(path: str | Path) -> bool:
    """Whether `path` is a Hugging Face model directory (weights in safetensors files)."""
    path = Path(path)
    return (path / WEIGHTS_NAME).is_file() or (path / INDEX_NAME).is_file()


def read_hf_config(directory: str | Path) -> tuple[ModelConfig, dict]:
    """Our ModelConfig for the model in a Hugging Face directory, and its config.json."""
    path = Path(directory) / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HfFormatError(f"{directory}: no config.json; is this a model directory?") from None
    except json.JSONDecodeError as e:
        raise HfFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    return model_config_from_hf(hf, str(path)), hf


def load_hf_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, dict]:
    """A Transformer (float32, eval mode) holding a Hugging Face Llama directory's weights, and
    a dict like a checkpoint's: model_config, tokenizer_dir (the directory, when it holds a
    tokenizer.json), bos_token_id and eos_token_id (from config.json), chat_template (from
    tokenizer_config.json) and hf=True."""
    directory = Path(directory)
    config, hf = read_hf_config(directory)
    tensors = {}
    for file in weight_files(directory):
        with safe_open(file, framework="pt", device=str(device)) as f:
            tensors |= {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    with no_weight_init():  # the file's weights replace them
        model = Transformer(config).to(device)
    state = state_dict_from_hf(tensors, config)
    try:
        model.load_state_dict(state)  # copies into float32 from the file's dtype
    except RuntimeError as e:  # a shape that does not fit config.json
        raise HfFormatError(f"{directory}: the weights do not fit config.json: {e}") from None
    eos = hf.get("eos_token_id")
    info = {
        "hf": True,
        "model_config": config_to_dict(config),
        "tokenizer_dir": str(directory) if (directory / "tokenizer.json").is_file() else None,
        "bos_token_id": hf.get("bos_token_id"),
        "eos_token_id": eos[0] if isinstance(eos, list) else eos,  # Llama 3 lists several
        "chat_template": read_chat_template(directory),
        "iteration": None,
        "train_config": None,
    }
    return model.eval(), info


def read_chat_template(directory: Path) -> str | None:
    """The chat template in tokenizer_config.json, if any (a list of named templates: the one
    named "default")."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, AttributeError):
        raise HfFormatError(f"{path}: not a JSON object") from None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards that model.safetensors.index.json lists."""
    if (directory / WEIGHTS_NAME).is_file():
        return [directory / WEIGHTS_NAME]
    index = json.loads((directory / INDEX_NAME).read_text(encoding="utf-8"))
    return [directory / name for name in sorted(set(index["weight_map"].values()))]
