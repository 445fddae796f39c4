"""Export a trained model to the Hugging Face Llama format (llm/hf_format.py), so that
`transformers`, vLLM, llama.cpp's converter and the Hub can use it:

    uv run -m llm.export runs/cpu-small exported/    # a run directory or a checkpoint file
    uv run -m llm.export model.gguf exported/        # a llama GGUF file (llm/gguf_format.py)
    uv run -m llm.export smollm2-135m exported/      # a pretrained model, by name

OUT_DIR then holds config.json, model.safetensors, generation_config.json, tokenizer.json and
tokenizer_config.json, and loads with `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and
`AutoTokenizer.from_pretrained(OUT_DIR)`. The files are written into a temp directory beside
OUT_DIR, which is renamed to OUT_DIR once complete: an interrupted export leaves no half-written
model. A non-empty OUT_DIR is refused unless --force, which replaces an earlier export (a
directory holding other files is never deleted).

With --quantize int8 or int4 (llm/quantize.py), OUT is a file instead: a quantised checkpoint,
which every command loads back bit for bit (written atomically; an existing file is replaced
only with --force):

    uv run -m llm.export smollm2-135m smollm2-int4.pt --quantize int4 --quantize_head
"""

from dataclasses import dataclass
from pathlib import Path

from llm.atomic_write import atomic_directory
from llm.checkpoint import CheckpointError
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.gguf_format import PRETRAINED
from llm.hf_format import EXPORT_FILES, check_llama, save_hf
from llm.loading import load, models_help, read_config
from llm.paths import check_writable_dir
from llm.quantize import Quantization, QuantizeOptions, save_quantized


@dataclass
class ExportConfig(QuantizeOptions):
    """`uv run -m llm.export SOURCE OUT_DIR`: what to export, and where."""

    source: str  # the model: run, checkpoint file, GGUF file, HF directory or pretrained name
    out_dir: str  # the directory to write (--quantize: the file); must be new unless --force
    force: bool = False  # replace an earlier export in out_dir

    def __post_init__(self) -> None:
        self.quantization()


def export(source: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write the model (and its tokenizer) at `source` to `out_dir` in the Hugging Face Llama
    format; returns out_dir."""
    out = Path(out_dir)
    check_out_dir(out, force)
    loaded = load(source)
    model, tokenizer, info = loaded.model, loaded.tokenizer, loaded.info
    check_llama(model.config)  # before writing anything
    with atomic_directory(out) as temp:
        save_hf(temp, model, tokenizer, info.get("bos_token_id"), info.get("eos_token_id"),
                info.get("chat_template"))  # fmt: skip
    return out


def export_quantized(
    source: str | Path, out: str | Path, quantization: Quantization, force: bool = False
) -> Path:
    """Write the model at `source`, quantised, as a checkpoint file `out` that names its
    tokenizer (the source's, by absolute path or pretrained name); returns out."""
    out = Path(out)
    if out.is_dir() or (out.exists() and not force):
        what = "a directory" if out.is_dir() else "a file already (--force replaces it)"
        raise ConfigError(f"OUT {out} is {what}; --quantize writes one checkpoint file")
    check_writable_dir(out.parent, "OUT's directory")
    loaded = load(source, tokenizer=False, quantization=quantization)
    _, tokenizer = read_config(source)
    if str(source) in PRETRAINED:  # by name: found wherever the package is installed
        tokenizer = str(source)
    elif tokenizer:
        tokenizer = str(Path(tokenizer).resolve())
    save_quantized(loaded.model, out, {**loaded.info, "tokenizer_dir": tokenizer})
    return out


def check_out_dir(out: Path, force: bool) -> None:
    """Raise a ConfigError unless out can become the export: absent or empty, or, with force,
    holding only the files of an earlier export."""
    check_writable_dir(out, "OUT_DIR")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not force:
        raise ConfigError(
            f"OUT_DIR {out} is not empty; choose another, or pass --force to replace an earlier "
            "export"
        )
    others = [name for name in present if name not in EXPORT_FILES]
    if others:
        raise ConfigError(
            f"OUT_DIR {out} holds {', '.join(others[:3])}, which an export does not write; "
            "not deleting it: choose another OUT_DIR"
        )


def main(argv: list[str] | None = None) -> None:
    def command() -> None:
        config = parse(
            ExportConfig, argv, prog="uv run -m llm.export",
            description=f"{__doc__}\n{models_help()}",
            positional=("source", "out_dir"),
        )  # fmt: skip
        if config.quantize:
            out = export_quantized(config.source, config.out_dir, config.quantization(),
                                   config.force)  # fmt: skip
            size = f"{out.stat().st_size / 1e6:.1f} MB"
            print(f"wrote {out} ({size}, {config.quantize}); try it with: "
                  f"uv run -m llm.generating --checkpoint {out} --prompt 'Once upon'")  # fmt: skip
            return
        out = export(config.source, config.out_dir, config.force)
        print(
            f"exported {config.source} to {out} (Hugging Face Llama format); try it with: "
            f"uv run -m llm.generating --checkpoint {out} --prompt 'Once upon a time'"
        )

    run_main(command, errors=(CheckpointError, ValueError, OSError))


if __name__ == "__main__":
    main()
