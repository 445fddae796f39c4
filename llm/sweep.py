"""Sweeps and ablations: one training run per combination of settings, compared in one table and
one plot.

    uv run -m llm.sweep configs/sweeps/lr.toml                     # a study: config + [sweep]
    uv run -m llm.sweep configs/cpu-small.toml --grid max_lr=1e-3,3e-3 \\
        --grid model.d_model=128,256 --out runs/lr-width --max_iters 200
    uv run -m llm.sweep --report runs/lr-width                     # rewrite the summary now

`--grid KEY=V1,V2,...` sweeps any training setting (`uv run -m llm.training --help`), model.*
included; every other `--KEY VALUE` flag applies to all the runs. A sweep TOML is a training
config with a [sweep] table, so that a study is one command:

    max_iters = 360                  # ... the training settings of every run, as in configs/
    [sweep]
    out = "runs/sweep-lr"            # the sweep's directory
    grid = { max_lr = [1e-3, 3e-3], model.ffn = ["swiglu", "silu"] }   # every combination
    variants = [{ batch_size = 8, max_iters = 360 }, { batch_size = 16, max_iters = 180 }]
    # variants (optional): settings that change together; each is crossed with the grid

Flags override the TOML, and a --grid key replaces that key's values in the TOML's grid. Every
combination's config is built and checked before the first run starts. Each run is
`python -m llm.training` in a process of its own, in OUT/NAME where NAME is its values (e.g.
OUT/max_lr=0.001,model.ffn=silu), so a crash or a divergence never stops the sweep. Runs go one
after another; `--parallel N` runs N at a time, each on its `--devices` entry, or on the CPU
with its cores shared out.

Run the same command again to continue a sweep: finished and diverged runs are skipped, a run
with a checkpoint resumes from it, one without starts again. Ctrl-C stops the runs after their
current step, with a checkpoint (exit 130). OUT gets:

    sweep.json                 the runs and their swept values
    summary.md, summary.json   one row per run: its values, how it ended, the final validation
                               loss and bits/byte (whole split), tokens/s, tokens, times
    compare.png                validation bits/byte against steps and training time
    NAME/                      the run directory (see llm.training), with the run's output in
                               train.log and result.json: how its last attempt ended, wall time

Exit status: 0 every run finished or diverged, 1 a run failed, 2 a bad setting, 130 stopped.
"""

import functools
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from tqdm import tqdm

from llm.atomic_write import atomic_write, write_text
from llm.checkpoint import CHECKPOINT_NAME
from llm.cli import help_text, read_args, run_main
from llm.config import ConfigError, closest, config_from_dict, config_to_dict, describe_fields
from llm.data import DataError, open_tokens
from llm.device import resolve_device
from llm.run_dir import CONFIG_NAME, METRICS_NAME, read_metrics
from llm.stop_signals import StopSignals
from llm.training import TrainConfig, check_config, load_train_config

SWEEP_NAME, RESULT_NAME, LOG_NAME = "sweep.json", "result.json", "train.log"
DONE = ("finished", "diverged")  # how a run ended that a rerun of the sweep skips
SET_BY_SWEEP = ("run_dir", "resume")  # OUT/NAME, and whether the run continues
UNCHECKED = (*SET_BY_SWEEP, "device", "threads")  # may change when a run is continued
POLL_SECONDS = 0.2  # how often the sweep looks at its runs


@dataclass
class SweepConfig:
    """The sweep's own options; every other flag is a training setting for all its runs."""

    grid: list[str] = field(default_factory=list)  # KEY=V1,V2,... (repeat the flag per key)
    out: str = ""  # the sweep's directory: a run directory per combination, the summary
    parallel: int = 0  # runs at a time (0 = one per --devices entry, else 1)
    devices: list[str] = field(default_factory=list)  # e.g. cuda:0,cuda:1: one per parallel run
    report: str = ""  # only write the summary and plot of the sweep in this directory


SWEEP_KEYS = [f.name for f in fields(SweepConfig)]


@dataclass
class _Args(SweepConfig, TrainConfig):
    """What the command line holds: the sweep's options and the training settings."""


@dataclass
class Run:
    """One combination of the sweep."""

    name: str  # its directory in OUT, made from its values
    values: dict[str, Any]  # the swept keys' values, as in its config
    flags: list[str]  # llm.training's flags to start it from scratch
    config: TrainConfig  # what those flags give

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)


# --- the plan: options and runs from the command line ---------------------------------------


def load_sweep(argv: list[str]) -> tuple[SweepConfig, list[Run]]:
    """The options and the runs of `[SWEEP.toml] [--grid KEY=V1,V2]... [--KEY VALUE]...`, every
    run's config built and checked: a bad setting is a ConfigError before anything is written."""
    values, show_help = read_args(_Args, argv)
    if show_help:
        print(help_text(SweepConfig, description=__doc__, prog="uv run -m llm.sweep"))
        print("\nEvery other --KEY VALUE is a training setting: uv run -m llm.training --help")
        raise SystemExit(0)
    table = values.pop("sweep", {})
    if not isinstance(table, dict):
        raise ConfigError("sweep must be a table: [sweep] in the TOML")
    toml_grid, variants = table.pop("grid", {}), table.pop("variants", [])
    options = _options(table, {key: values.pop(key) for key in SWEEP_KEYS if key in values})
    if options.report:
        if values or toml_grid or variants or options.grid:
            raise ConfigError("--report takes only the sweep's directory: --report runs/NAME")
        return options, []
    grid = {**_toml_grid(toml_grid), **_cli_grid(options.grid)}
    combinations = _combinations(grid, _variants(variants))
    flag_keys = {word[2:].partition("=")[0].replace("-", "_") for word in argv if word[:2] == "--"}
    _check_keys({key for combination in combinations for key in combination}, flag_keys)
    base = {k: v for k, v in _flatten(values).items() if k not in SET_BY_SWEEP}
    runs = [_plan_run(base, combination, Path(options.out)) for combination in combinations]
    _check_distinct(runs)
    for path in {p for run in runs for p in (run.config.train_data, run.config.valid_data) if p}:
        open_tokens(path)  # DataError if missing, as the runs would all say
    return options, runs


def _options(table: dict, flags: dict) -> SweepConfig:
    """The [sweep] table of the TOML with the sweep's flags over it, checked."""
    try:
        base = config_from_dict(SweepConfig, table)
    except ConfigError as e:
        raise ConfigError(f"[sweep] in the TOML: {e}") from None
    options = config_from_dict(SweepConfig, flags, base)
    if options.parallel < 0:
        raise ConfigError(f"parallel must be at least 1 (0 = automatic), not {options.parallel}")
    for device in options.devices:
        try:
            resolve_device(device)
        except ValueError as e:
            raise ConfigError(f"--devices: {e}") from None
    if not options.out and not options.report:
        raise ConfigError("--out is not set: the sweep's directory (or out = ... in [sweep])")
    return options


def _toml_grid(table: Any) -> dict[str, list]:
    if not isinstance(table, dict):
        raise ConfigError("[sweep] grid must be a table: { KEY = [V1, V2, ...], ... }")
    grid = _flatten(table)
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"[sweep] grid: {key} must be a list of values, not {values!r}")
    return grid


def _cli_grid(words: list[str]) -> dict[str, list[str]]:
    """{key: values} from the --grid words. llm.cli splits each word at its commas, so a word
    with no '=' is one more value of the key before it."""
    grid: dict[str, list[str]] = {}
    key = None
    for word in words:
        if "=" in word:
            key, _, word = word.partition("=")
            if not key or key in grid:
                problem = "has no key" if not key else f"repeats the key {key}"
                raise ConfigError(f"--grid {key}={word}: {problem}; write --grid KEY=V1,V2,...")
            grid[key] = []
        elif key is None:
            got = "nothing" if word == "true" else repr(word)  # a bare --grid reads as true
            raise ConfigError(f"--grid takes KEY=V1,V2,..., not {got}")
        grid[key] += [word] if word else []
    return grid


def _variants(variants: Any) -> list[dict]:
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError("[sweep] variants must be a list of tables: [{ KEY = VALUE, ... }, ...]")
    return [_flatten(variant) for variant in variants]


def _combinations(grid: dict[str, list], variants: list[dict]) -> list[dict]:
    """Every combination of the grid's values, for each variant (its keys first)."""
    if not grid and not variants:
        raise ConfigError("nothing to sweep: give --grid KEY=V1,V2,... or a grid in [sweep]")
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"the grid of {key} is empty: give it at least one value")
    both = sorted({k for variant in variants for k in variant} & grid.keys())
    if both:
        raise ConfigError(f"{both[0]} is in both the grid and the variants: give it in one")
    combinations = [
        dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
    ]
    return [
        {**variant, **combination} for variant in variants or [{}] for combination in combinations
    ]


def _check_keys(swept: set[str], flag_keys: set[str]) -> None:
    known = {key for key, *_ in describe_fields(TrainConfig)}
    for key in sorted(swept):
        if key not in known:
            near = closest(key, known)
            hint = f"did you mean {near!r}?" if near else "uv run -m llm.training --help"
            raise ConfigError(f"unknown key {key!r} in the grid; {hint}")
        if key in SET_BY_SWEEP:
            raise ConfigError(f"{key} cannot be swept: the sweep sets it for each run")
        if key in flag_keys:
            raise ConfigError(f"{key} is swept and also set by --{key}: give one of them")
    reserved = sorted(flag_keys & set(SET_BY_SWEEP))
    if reserved:
        raise ConfigError(
            f"--{reserved[0]}: the sweep sets it (runs go to OUT/NAME, and rerunning the sweep "
            "resumes them); give the sweep's directory with --out"
        )


def _plan_run(base: dict[str, Any], combination: dict[str, Any], out: Path) -> Run:
    """The run of one combination: its flags for llm.training, and the config they give there,
    built and checked here the same way."""
    name = ",".join(f"{key}={_safe(_text(value))}" for key, value in combination.items())
    name = name or "base"  # an empty variant: the sweep file's own settings
    settings = {**base, **combination, "run_dir": str(out / name)}
    flags = [f"--{key}={_text(value)}" for key, value in settings.items()]
    try:
        config = load_train_config(flags)
        check_config(config, world_size=1)
    except ConfigError as e:
        raise ConfigError(f"run {name}: {e}") from None
    values = {key: functools.reduce(getattr, key.split("."), config) for key in combination}
    return Run(name, values, flags, config)


def _check_distinct(runs: list[Run]) -> None:
    names: set[str] = set()
    configs: dict[str, str] = {}
    for run in runs:
        config = json.dumps({**config_to_dict(run.config), "run_dir": ""}, sort_keys=True)
        if config in configs:
            raise ConfigError(
                f"runs {configs[config]} and {run.name} have the same settings: "
                "a value is repeated in the grid"
            )
        if run.name in names:
            raise ConfigError(f"two runs would be named {run.name}: their values differ too little")
        if len(run.name.encode()) > 255:  # the longest file name most file systems take
            raise ConfigError(f"the run name {run.name} is too long for a directory name")
        names.add(run.name)
        configs[config] = run.name


def _check_existing(run: Run) -> None:
    """A run directory left by an earlier start of the sweep must hold the same run."""
    path = run.run_dir / CONFIG_NAME
    if not path.is_file():
        return
    saved = _flatten(json.loads(path.read_text()))
    planned = _flatten(json.loads(json.dumps(config_to_dict(run.config))))
    changed = [k for k in planned.keys() | saved.keys() if saved.get(k) != planned.get(k)]
    changed = sorted(k for k in changed if k not in UNCHECKED)
    if changed:
        raise ConfigError(
            f"{run.run_dir} holds a run with other settings ({', '.join(changed)}); "
            "choose another --out, or delete that directory to run it again"
        )


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _text(value: Any) -> str:
    """A TOML value as a command-line word."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    """A value as part of a directory name: '=' and ',' separate the values, '/' is a path."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


# --- running ---------------------------------------------------------------------------------


@dataclass
class _Job:
    """A run in progress."""

    run: Run
    process: subprocess.Popen
    slot: int  # which of the --parallel places it has (and so its device)
    bar: tqdm  # its steps, read from its metrics log
    started: float  # time.monotonic() at its start
    wall_before: float  # wall time of the earlier attempts it continues


def run_sweep(options: SweepConfig, runs: list[Run]) -> bool:
    """Run every run not done yet, options.parallel at a time; returns False if a signal
    stopped the sweep (the runs it stopped saved a checkpoint)."""
    todo = [run for run in runs if _read_result(run.run_dir).get("status") not in DONE]
    parallel = options.parallel or max(len(options.devices), 1)
    done = len(runs) - len(todo)
    print(f"sweep of {len(runs)} runs in {options.out} ({done} done already)")
    jobs: list[_Job] = []
    forwarded = 0  # signals passed on to the runs so far
    # Ctrl-C and SIGTERM go to each run, which stops after its step with a checkpoint (and at
    # once on a second Ctrl-C); the runs are in sessions of their own, so only we get them.
    signals = StopSignals(
        "stopping the runs after their current step (Ctrl-C again: at once)", once=False
    )
    with signals, tqdm(total=len(runs), initial=done, desc="sweep", unit="run") as bar:
        try:
            while jobs or (todo and not signals.requested):
                while todo and len(jobs) < parallel and not signals.requested:
                    slot = min(set(range(parallel)) - {job.slot for job in jobs})
                    jobs.append(_start(todo.pop(0), slot, options, parallel))
                time.sleep(POLL_SECONDS)
                new = signals.received[forwarded:]  # a signal may come while we forward
                forwarded += len(new)
                for signum in new:
                    for job in jobs:
                        job.process.send_signal(signum)
                jobs = _collect(jobs, signals.requested, bar)
        finally:
            for job in jobs:  # left running only if the sweep itself failed
                job.process.terminate()  # SIGTERM: it stops after its step, with a checkpoint
    return not signals.requested


def _collect(jobs: list[_Job], stopped: bool, bar: tqdm) -> list[_Job]:
    """Show the runs' progress and record those that ended; returns the others."""
    running = []
    for job in jobs:
        _show_progress(job)
        if job.process.poll() is None:
            running.append(job)
        else:
            _finish(job, stopped)
            bar.update()
    return running


def _start(run: Run, slot: int, options: SweepConfig, parallel: int) -> _Job:
    """Start the run in a process of its own: resumed from its checkpoint if it has one, else
    from scratch. Its own process group, so that a Ctrl-C reaches it only through the sweep."""
    resume = (run.run_dir / CHECKPOINT_NAME).is_file()
    flags = [f"--run_dir={run.run_dir}", "--resume"] if resume else list(run.flags)
    wall_before = _read_result(run.run_dir).get("wall_seconds", 0.0) if resume else 0.0
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RESULT_NAME).unlink(missing_ok=True)  # the run is unfinished again
    flags += _placement(run, slot, options, parallel)
    command = [sys.executable, "-m", "llm.training", *flags]
    with (run.run_dir / LOG_NAME).open("a" if resume else "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    tqdm.write(f"{run.name}: {'resumed' if resume else 'started'}; output in {log.name}")
    bar = tqdm(
        total=run.config.max_iters, desc=run.name, position=slot + 1, leave=False, unit="step"
    )
    return _Job(run, process, slot, bar, time.monotonic(), wall_before)


def _placement(run: Run, slot: int, options: SweepConfig, parallel: int) -> list[str]:
    """The run's device (its slot's --devices entry) and, for parallel runs on the CPU, its
    share of the cores."""
    device = options.devices[slot % len(options.devices)] if options.devices else None
    flags = [f"--device={device}"] if device else []
    if parallel > 1 and resolve_device(device or run.config.device).type == "cpu":
        flags.append(f"--threads={max(1, _cpu_count() // parallel)}")
    return flags


def _show_progress(job: _Job) -> None:
    train = [r for r in _records(job.run.run_dir) if r["type"] == "train"]
    if train and train[-1]["step"] != job.bar.n:
        job.bar.n = train[-1]["step"]
        job.bar.set_postfix_str(f"loss {train[-1]['loss']:.4f}")


def _finish(job: _Job, stopped: bool) -> None:
    """Record how the run ended (result.json), and say so."""
    job.bar.close()
    run, code = job.run, job.process.returncode
    records = _records(run.run_dir)
    if code == 0:
        status = "finished"
    elif records and records[-1]["type"] == "diverged":
        status = "diverged"
    else:
        status = "interrupted" if stopped or code == 130 else "failed"
    wall_seconds = job.wall_before + time.monotonic() - job.started
    result = {"status": status, "exit_code": code, "wall_seconds": wall_seconds}
    write_text(run.run_dir / RESULT_NAME, json.dumps(result, indent=2) + "\n")
    tqdm.write(f"{run.name}: {_ending(status, code, records, run.run_dir / LOG_NAME)}")


def _ending(status: str, code: int, records: list[dict], log: Path) -> str:
    if status == "finished":
        final = _final_eval(records)
        if not final:
            return "finished"
        return f"finished, {final['bits_per_byte']:.4f} bits/byte ({_kind(final)})"
    if status == "diverged":
        return f"diverged at step {records[-1]['step']}"
    if status == "interrupted":
        return "stopped; the next start of the sweep resumes it"
    lines = log.read_text(errors="replace").split("\n") if log.is_file() else []
    last = next((line.split("\r")[-1] for line in reversed(lines) if line.strip()), "")
    return f"failed (exit {code}): {last.strip()} (see {log})"


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # the cores this process may use
    return os.cpu_count() or 1


def _records(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir) if (run_dir / METRICS_NAME).is_file() else []


def _read_result(run_dir: Path) -> dict:
    path = run_dir / RESULT_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


# --- the report ------------------------------------------------------------------------------


def write_report(sweep_dir: str | Path) -> list[dict]:
    """Write summary.json, summary.md and compare.png of the sweep in sweep_dir, from its runs'
    metrics logs as they are now; returns the rows."""
    out = Path(sweep_dir)
    plan = _read_plan(out)
    dirs = [out / run["name"] for run in plan["runs"]]
    rows = [
        _row(run, _records(d), _read_result(d)) for run, d in zip(plan["runs"], dirs, strict=True)
    ]
    write_text(out / "summary.json", json.dumps({"runs": rows}, indent=2) + "\n")
    write_text(out / "summary.md", _markdown(out, plan["keys"], rows))
    with atomic_write(out / "compare.png") as f:
        compare_figure(out).savefig(f, format="png", dpi=120)
    return rows


def _read_plan(out: Path) -> dict:
    path = out / SWEEP_NAME
    if not path.is_file():
        raise ConfigError(f"{out} is not a sweep's directory: it has no {SWEEP_NAME}")
    return json.loads(path.read_text())


def _row(run: dict, records: list[dict], result: dict) -> dict:
    """A run's line of the summary. tokens_per_s is over its whole training time."""
    train = [r for r in records if r["type"] == "train"]
    diverged = [r for r in records if r["type"] == "diverged"]
    last, final = (train or [{}])[-1], _final_eval(records)
    status = result.get("status", "unfinished" if records else "not started")
    tasks = [r for r in records if r["type"] == "tasks"]
    return {
        "name": run["name"],
        "values": run["values"],
        "status": "diverged" if diverged else status,
        "diverged_at_step": diverged[-1]["step"] if diverged else None,
        "val_loss": final.get("loss"),
        "val_bits_per_byte": final.get("bits_per_byte"),
        "val_eval": _kind(final) if final else None,
        "tokens_per_s": last["tokens"] / last["train_seconds"] if last else None,
        "tokens": last.get("tokens"),
        "train_seconds": last.get("train_seconds"),
        "wall_seconds": result.get("wall_seconds"),
        "tasks": {k: v for k, v in tasks[-1].items() if "/" in k} if tasks else {},  # the last
    }


def _final_eval(records: list[dict]) -> dict:
    """A run's final evaluation: its last exact one, or else a sampled one that ends its log
    (final_eval = "sampled"); {} when it has none (final_eval = "none", a stopped run)."""
    exact = [r for r in records if r["type"] == "eval" and r["exact"]]
    if exact:
        return exact[-1]
    return records[-1] if records and records[-1]["type"] == "eval" else {}


def _kind(evaluation: dict) -> str:
    return "exact" if evaluation["exact"] else "sampled"


def _markdown(out: Path, keys: list[str], rows: list[dict]) -> str:
    scored = [row for row in rows if row["val_bits_per_byte"] is not None]
    best = min(scored, key=lambda row: row["val_bits_per_byte"]) if scored else None
    tasks = sorted({task for row in rows for task in row.get("tasks", {})})  # eval_tasks' scores
    numbers = ["val loss", "val bits/byte", "eval", *tasks]
    numbers += ["tokens/s", "tokens", "train time", "wall time"]
    head = [*keys, "status", *numbers]
    align = " --- |" * (len(keys) + 1) + " ---: |" * len(numbers)  # numbers to the right
    lines = [f"# Sweep {out}", "", "| " + " | ".join(head) + " |", "|" + align]
    for row in rows:
        status = row["status"]
        if row["diverged_at_step"] is not None:
            status += f" at step {row['diverged_at_step']}"
        bits = _cell(row["val_bits_per_byte"], ".4f")
        cells = [_cell(row["values"].get(key)) for key in keys] + [
            status, _cell(row["val_loss"], ".4f"), f"**{bits}**" if row is best else bits,
            _cell(row["val_eval"]), *(_cell(row.get("tasks", {}).get(t), ".3f") for t in tasks),
            _cell(row["tokens_per_s"], ",.0f"), _cell(row["tokens"], ","),
            _minutes(row["train_seconds"]), _minutes(row["wall_seconds"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        bits, kind = best["val_bits_per_byte"], best["val_eval"]
        lines += ["", f"Best: {best['name']}, {bits:.4f} bits/byte ({kind}), in bold above."]
    lines += [
        "",
        "Validation loss (nats/token) and bits/byte: the run's final evaluation, exact on the "
        "whole validation split or sampled on its fixed windows, as the eval column says; "
        "TASK/acc columns: the last scores of the runs' eval_tasks. "
        "tokens/s: tokens / train time, which excludes evaluation; wall time: the run's "
        "processes from start to end. Runs are in "
        f"{out}/NAME; compare.png plots their validation curves.",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not spec:
        return f"{value:g}"
    return format(value, spec)


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def compare_figure(sweep_dir: str | Path) -> Figure:
    """Validation bits/byte of every run of the sweep against steps and against training time:
    a line for the periodic evaluations, a star for the final one on the whole split."""
    out = Path(sweep_dir)
    fig = Figure(figsize=(13, 5), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for run in _read_plan(out)["runs"]:
        records = _records(out / run["name"])
        evals = [r for r in records if r["type"] == "eval"]
        diverged = [r["step"] for r in records if r["type"] == "diverged"]
        label = run["name"] + (f" (diverged at step {diverged[-1]})" if diverged else "")
        for ax, x, scale in ((by_step, "step", 1), (by_time, "train_seconds", 1 / 60)):
            for exact, style in ((False, "o-"), (True, "*")):
                points = [r for r in evals if r["exact"] == exact]
                xs, ys = [r[x] * scale for r in points], [r["bits_per_byte"] for r in points]
                color = ax.lines[-1].get_color() if exact else None  # the line's, for its star
                ax.plot(xs, ys, style, ms=12 if exact else 3, color=color,
                        label=label if ax is by_step and not exact else None)  # fmt: skip
    by_step.set(xlabel="optimizer step", ylabel="validation bits per byte")
    by_time.set(xlabel="training time (minutes, evaluation excluded)")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{out}: validation bits/byte (star: final, whole split)")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


# --- the command line ------------------------------------------------------------------------


def sweep(argv: list[str]) -> int:
    """Run the sweep of the command line `argv` (or write its report); returns the exit status."""
    options, runs = load_sweep(argv)
    if options.report:
        _report(Path(options.report))
        return 0
    for run in runs:
        _check_existing(run)
    out = Path(options.out)
    keys = list(dict.fromkeys(key for run in runs for key in run.values))
    plan = {"keys": keys, "runs": [{"name": run.name, "values": run.values} for run in runs]}
    write_text(out / SWEEP_NAME, json.dumps(plan, indent=2) + "\n")
    if not run_sweep(options, runs):
        print(f"stopped; continue the sweep with: uv run -m llm.sweep {shlex.join(argv)}")
        return 130
    rows = _report(out)
    return int(any(row["status"] not in DONE for row in rows))


def _report(out: Path) -> list[dict]:
    rows = write_report(out)
    print(f"summary: {out / 'summary.md'}, {out / 'summary.json'}; plot: {out / 'compare.png'}")
    return rows


def main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.sweep`: exit 0 when every run finished or diverged, 1 when a run failed
    (or bad data), 2 for a bad setting, 130 when stopped."""
    argv = sys.argv[1:] if argv is None else argv
    raise SystemExit(run_main(lambda: sweep(argv), errors=(DataError, OSError)))


if __name__ == "__main__":
    main()
