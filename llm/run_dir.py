"""A training run's directory and the metrics log in it (llm/plots.py draws from the log):

    config.json      the effective config          metrics.jsonl  one JSON record per event
    checkpoint.pt    the latest checkpoint         img/           the plots
                     (checkpoint.dcp/ when sharded)

Nothing in it changes until a run is known to start: `check_run_dir` only looks, and
`start_run_dir` is called once the data, the model and (with --resume) the checkpoint loaded.
"""

import json
from pathlib import Path

from llm.atomic_write import remove_stale_temp_files, write_text
from llm.checkpoint import CHECKPOINT_NAME, SHARDED_NAME, sharded_checkpoint
from llm.config import ConfigError
from llm.paths import check_writable_dir

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


def check_run_dir(run_dir: str | Path, resume: bool, sharded: bool = False) -> None:
    """Raise ConfigError if a run cannot start in run_dir: a resume with no checkpoint, a new run
    over a finished one, or a directory that cannot be created or written. Writes nothing.
    sharded: the run saves checkpoint.dcp/ (FSDP) rather than checkpoint.pt."""
    run_dir = Path(run_dir)
    check_writable_dir(run_dir, "--run_dir")
    file, directory = run_dir / CHECKPOINT_NAME, sharded_checkpoint(run_dir)
    if resume and not (directory if sharded else file.is_file()):
        wanted = run_dir / SHARDED_NAME if sharded else file
        raise ConfigError(f"--resume: there is no checkpoint to resume at {wanted}")
    if not resume and (file.is_file() or directory):
        raise ConfigError(
            f"{run_dir} already holds a run ({directory or file}); continue it with --resume, "
            "or choose another --run_dir"
        )


def start_run_dir(run_dir: str | Path, config: dict, resume_step: int | None) -> None:
    """Make the run directory ready for a run that is about to start: remove the temp files of
    killed writers, start the metrics log afresh (or, resuming at resume_step, drop what was
    logged after it) and write config.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run_dir)
    metrics = run_dir / METRICS_NAME
    if resume_step is None:
        write_text(metrics, "")  # empty: a run that died before its first checkpoint left one
    else:
        truncate_metrics(metrics, resume_step)
    write_text(run_dir / CONFIG_NAME, json.dumps(config, indent=2))


def append_metrics(path: str | Path, record: dict) -> None:
    """Add one record to the log. Appending a line is all-or-nothing in practice; a torn last
    line (a kill mid-write) is skipped by read_metrics and dropped on resume."""
    with Path(path).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl; a line that is not a record (a torn last line from
    a crash) is skipped."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}: is {run_dir} a training run directory?")
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "type" in record:
            records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after the checkpoint we resume from, at `step`. (A finished run
    is not resumed: a final evaluation at `step` stays, as a true record of the run so far.)"""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if _keep(line, step)]
        write_text(path, "".join(line + "\n" for line in kept))


def _keep(line: str, step: int) -> bool:
    try:
        return json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
        return False  # a torn line
