"""Where a training run's metrics go: every record to metrics.jsonl, and with --log_to also to
TensorBoard and Weights & Biases.

metrics.jsonl is always written: the plots, --resume and llm.sweep read it. The other sinks
are for watching a run live and comparing runs; each needs its optional package, checked
before any work (`check_sinks`) and imported only when chosen:

    tensorboard  event files in RUN_DIR/tensorboard/ (`uv sync --extra tensorboard`, then
                 `uv run tensorboard --logdir runs`): each number of a record is a scalar
                 TYPE/KEY at its step (train/loss, eval/loss, eval_exact/bits_per_byte...),
                 texts (generated samples, the config) are text
    wandb        a Weights & Biases run in RUN_DIR/wandb/ (`uv sync --extra wandb`), offline
                 unless WANDB_MODE says otherwise: `uv run wandb sync RUN_DIR/wandb/offline-*`
                 uploads it

Only rank 0 of a distributed run makes sinks. Each sink gets the run config once, at the start.
"""

import importlib.util
import json
import os
from pathlib import Path

from llm.config import ConfigError
from llm.run_dir import METRICS_NAME, append_metrics

SINKS = ("jsonl", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # made by wandb itself under the run directory (wandb.init's dir)


def check_sinks(names: list[str]) -> None:
    """Raise a ConfigError for an unknown sink or one whose package is not installed."""
    for name in names:
        if name not in SINKS:
            raise ConfigError(f"log_to: unknown sink {name!r}; sinks: {', '.join(SINKS)}")
        if name != "jsonl" and importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"--log_to {name} needs the {name} package: install it with "
                f"`uv sync --extra {name}`"
            )


class MetricSinks:
    """The sinks of one run: `log(record)` sends a record to each of them, `close()` flushes."""

    def __init__(
        self, run_dir: str | Path, names: list[str], config: dict, resumed_at: int | None
    ) -> None:
        """resumed_at: the step a resumed run continues from (what a sink logged after it is
        obsolete), or None for a new run."""
        run_dir = Path(run_dir)
        self.sinks = [JsonlSink(run_dir / METRICS_NAME)]
        if "tensorboard" in names:
            self.sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR, config, resumed_at))
        if "wandb" in names:
            self.sinks.append(WandbSink(run_dir, config))

    def log(self, record: dict) -> None:
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class JsonlSink:
    """metrics.jsonl, one JSON record per line (llm/run_dir.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, record: dict) -> None:
        append_metrics(self.path, record)

    def close(self) -> None:
        pass


def _scalars(record: dict) -> dict[str, float]:
    """The numbers of a record as {tag: value}: TYPE/KEY, an exact evaluation's TYPE being
    eval_exact so that its curve is apart from the sampled one."""
    kind = record["type"] + ("_exact" if record.get("exact") else "")
    return {
        f"{kind}/{key}": float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _texts(record: dict) -> dict[str, str]:
    """The texts of a record (a sample, a divergence message) as {tag: text}."""
    return {
        f"{record['type']}/{key}": value
        for key, value in record.items()
        if key != "type" and isinstance(value, str)
    }


class TensorBoardSink:
    """TensorBoard event files, written by torch's SummaryWriter (it needs `tensorboard`)."""

    def __init__(self, log_dir: Path, config: dict, resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides what an earlier process logged after the resumed step,
        # as the resume drops those records from metrics.jsonl.
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(str(log_dir), purge_step=purge)
        if resumed_at is None:
            text = "```\n" + json.dumps(config, indent=2) + "\n```"  # markdown: keep the lines
            self.writer.add_text("config", text, 0)

    def log(self, record: dict) -> None:
        step = record["step"]
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        for tag, text in _texts(record).items():
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run, offline by default (no account, no network needed)."""

    def __init__(self, run_dir: Path, config: dict) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = wandb.init(
            project="llm", name=run_dir.name, dir=str(run_dir), config=config, mode=mode
        )

    def log(self, record: dict) -> None:
        data = {**_scalars(record), **_texts(record)}
        self.run.log(data, step=record["step"])

    def close(self) -> None:
        self.run.finish()
