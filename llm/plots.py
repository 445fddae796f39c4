"""Plots of a run, drawn from its metrics log (run_dir/metrics.jsonl):

    img/loss.png   training loss and validation loss against optimizer steps
    img/lr.png     the learning-rate schedule
    img/bits_per_byte.png   validation bits per byte against training time (evaluation excluded)
    img/tasks.png  benchmark task accuracy against steps (a run with eval_tasks)

`uv run -m llm.plots RUN_DIR [--reference NAME=BITS_PER_BYTE ...]` redraws them for any run,
finished or still going; a reference draws a horizontal line, e.g. another model's result.
"""

from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from llm.atomic_write import atomic_write
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.paths import check_writable_dir
from llm.run_dir import METRICS_NAME, read_metrics


def plot_run(run_dir: str | Path, references: dict[str, float] | None = None) -> list[Path]:
    """Draw img/loss.png, img/lr.png, img/bits_per_byte.png and, when the run scored eval_tasks,
    img/tasks.png; returns their paths. A run
    stopped before its first log record has no metrics log yet: nothing is drawn."""
    if not (Path(run_dir) / METRICS_NAME).is_file():
        return []
    records = read_metrics(run_dir)
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    img = Path(run_dir) / "img"
    img.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    sampled = [r for r in evals if not r.get("exact")]
    exact = [r for r in evals if r.get("exact")]
    if sampled:
        steps, losses = [r["step"] for r in sampled], [r["loss"] for r in sampled]
        ax.plot(steps, losses, "o-", label="validation", ms=3)
    if exact:
        steps, losses = [r["step"] for r in exact], [r["loss"] for r in exact]
        ax.plot(steps, losses, "*", ms=12, label="validation (whole split)")
        last = exact[-1]
        ax.annotate(
            f"{last['loss']:.3f} nats"
            + (f", {last['bits_per_byte']:.3f} bits/byte" if "bits_per_byte" in last else ""),
            (last["step"], last["loss"]),
            textcoords="offset points",
            xytext=(-10, 12),
            ha="right",
        )
    ax.set(xlabel="optimizer step", ylabel="loss (nats / token)", title=f"{Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    loss_png = img / "loss.png"
    _save(fig, loss_png)

    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in train], [r["lr"] for r in train])
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    lr_png = img / "lr.png"
    _save(fig, lr_png)
    paths = [loss_png, lr_png, _plot_bits_per_byte(evals, img, references or {})]
    tasks = [r for r in records if r["type"] == "tasks"]
    return paths + ([_plot_tasks(tasks, img)] if tasks else [])


def _plot_tasks(tasks: list[dict], img: Path) -> Path:
    """img/tasks.png: each benchmark task's accuracy (training's eval_tasks) against steps."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for key in sorted({k for r in tasks for k in r if "/" in k}):
        points = [r for r in tasks if key in r]
        ax.plot([r["step"] for r in points], [r[key] for r in points], "o-", ms=3, label=key)
    ax.set(xlabel="optimizer step", ylabel="accuracy", title="benchmark tasks (eval_tasks)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path = img / "tasks.png"
    _save(fig, path)
    return path


def _plot_bits_per_byte(evals: list[dict], img: Path, references: dict[str, float]) -> Path:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for exact, style, label in [(False, "o-", "validation"), (True, "*", "whole split")]:
        points = [r for r in evals if bool(r.get("exact")) == exact and "bits_per_byte" in r]
        if points:
            ax.plot([r["train_seconds"] / 60 for r in points],
                    [r["bits_per_byte"] for r in points], style, ms=12 if exact else 4,
                    label=label)  # fmt: skip
    for name, value in references.items():
        ax.axhline(value, ls="--", lw=1, color="gray")
        ax.text(0.01, value, f" {name}: {value:.4f}", transform=ax.get_yaxis_transform(),
                va="bottom", color="gray")  # fmt: skip
    ax.set(xlabel="training time (minutes, evaluation excluded)", ylabel="bits per byte",
           title="validation bits per byte")  # fmt: skip
    ax.grid(alpha=0.3)
    if evals:
        ax.legend(loc="upper right")
    path = img / "bits_per_byte.png"
    _save(fig, path)
    return path


def _save(fig: Figure, path: Path) -> None:
    """Saved atomically: a viewer never sees a half-written PNG."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)


@dataclass
class PlotsConfig:
    """`uv run -m llm.plots RUN_DIR`: which run to draw, and lines to compare it with."""

    run_dir: str  # the training run directory (it holds metrics.jsonl)
    reference: list[str] = field(default_factory=list)  # NAME=BITS_PER_BYTE lines to draw


def parse_references(words: list[str]) -> dict[str, float]:
    """{name: bits per byte} from NAME=BITS_PER_BYTE words; a ConfigError for a bad one."""
    references = {}
    for word in words:
        name, _, value = word.partition("=")
        try:
            references[name] = float(value)
        except ValueError:
            raise ConfigError(
                f"--reference takes NAME=BITS_PER_BYTE (e.g. nanoGPT=1.1666), got {word!r}"
            ) from None
        if not name:
            raise ConfigError(f"--reference {word!r} has no name before the '='")
    return references


def plot_command(config: PlotsConfig) -> list[Path]:
    """Check the run and the references, draw the plots and print their paths."""
    references = parse_references(config.reference)
    read_metrics(config.run_dir)  # a missing run is an error before anything is written
    check_writable_dir(Path(config.run_dir) / "img", "RUN_DIR")
    paths = plot_run(config.run_dir, references)
    for path in paths:
        print(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    def command() -> None:
        prog = "uv run -m llm.plots"
        plot_command(
            parse(PlotsConfig, argv, description=__doc__, prog=prog, positional=("run_dir",))
        )

    run_main(command, errors=(OSError,))


if __name__ == "__main__":
    main()
