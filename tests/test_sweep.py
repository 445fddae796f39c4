import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm import sweep
from llm.checkpoint import read_checkpoint
from llm.run_dir import read_metrics
from llm.training import load_train_config

REPO = Path(__file__).resolve().parents[1]

# A sweep of four runs of a tiny model: one finishes, one diverges at once (a huge learning rate,
# no clipping), one is long enough to be stopped mid-run, and one fails at its start (its context
# is longer than the validation split).
SWEEP_TOML = """
train_data = "{data}/train.npy"
valid_data = "{data}/valid.npy"
batch_size = 4
warmup_iters = 1
grad_clip = 0
log_interval = 1
eval_interval = 4
eval_windows = 4
checkpoint_interval = 40
device = "cpu"

[model]
d_model = 32
num_layers = 1
context_length = 16

[sweep]
out = "{out}"
variants = [
    {{ max_lr = 1e-3, max_iters = 8 }},
    {{ max_lr = 1e6, max_iters = 8 }},
    {{ max_lr = 1e-3, max_iters = 200, eval_interval = 50 }},
    {{ max_iters = 8, model.context_length = 5000 }},
]
"""
NAMES = [
    "max_lr=0.001,max_iters=8",
    "max_lr=1000000.0,max_iters=8",
    "max_lr=0.001,max_iters=200,eval_interval=50",
    "max_iters=8,model.context_length=5000",
]
FINISHED, DIVERGED, LONG, FAILED = NAMES


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(argv)
    return exit_info.value.code


def ctrl_c_once(path: Path, process: subprocess.Popen) -> None:
    """Ctrl-C in a terminal, once `path` exists: SIGINT to the process group of `process`."""
    deadline = time.monotonic() + 300
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)


def fingerprint(path: Path) -> tuple:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def swept(token_data_dir, tmp_path_factory):
    """The sweep's command, stopped by a Ctrl-C once its long run has a checkpoint, then run
    again (two runs at a time) as if the sweep had also died while its diverging run, which has
    no checkpoint, ran."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    toml = tmp / "sweep.toml"
    toml.write_text(SWEEP_TOML.format(data=token_data_dir, out=out))
    with (tmp / "output").open("w") as output:
        command = [sys.executable, "-m", "llm.sweep", str(toml)]
        first = subprocess.Popen(
            command, stdout=output, stderr=output, cwd=REPO, start_new_session=True
        )
        ctrl_c_once(out / LONG / "checkpoint.pt", first)
        first.wait(timeout=300)
    long_result = json.loads((out / LONG / "result.json").read_text())
    stopped = {
        "code": first.returncode,
        "output": (tmp / "output").read_text(),
        "long_result": long_result,
        "long_step": read_checkpoint(out / LONG)["iteration"],
        "summary": (out / "summary.json").exists(),
        "finished": {
            name: fingerprint(out / FINISHED / name) for name in ("checkpoint.pt", "train.log")
        },
        "diverged_step": read_metrics(out / DIVERGED)[-1]["step"],
    }
    assert not (out / DIVERGED / "checkpoint.pt").exists()  # diverged before its first one
    (out / DIVERGED / "result.json").unlink()
    long_result["wall_seconds"] = 1000.0  # as if its first part had taken that long
    (out / LONG / "result.json").write_text(json.dumps(long_result))
    code = exit_code([str(toml), "--parallel", "2"])
    return {"out": out, "toml": toml, "stopped": stopped, "code": code}


def test_ctrl_c_stops_the_runs_with_a_checkpoint_and_exits_130(swept):
    stopped = swept["stopped"]
    assert stopped["code"] == 130
    assert 40 <= stopped["long_step"] < 200  # stopped mid-run, after its first checkpoint
    assert stopped["long_result"]["status"] == "interrupted"
    log = (swept["out"] / LONG / "train.log").read_text()
    assert f"stopped at step {stopped['long_step']}; checkpoint saved" in log
    assert not stopped["summary"]  # only a sweep that ran to its end writes one
    assert "continue the sweep with: uv run -m llm.sweep " in stopped["output"]


def test_a_rerun_skips_finished_runs_resumes_stopped_ones_and_restarts_the_rest(swept):
    out = swept["out"]
    assert swept["code"] == 1  # the run that fails at its start failed again
    finished = {name: fingerprint(out / FINISHED / name) for name in ("checkpoint.pt", "train.log")}
    assert finished == swept["stopped"]["finished"]  # not run again

    long_log = (out / LONG / "train.log").read_text()
    step = swept["stopped"]["long_step"]
    assert f"resumed from {out / LONG / 'checkpoint.pt'} at step {step}" in long_log
    steps = [r["step"] for r in read_metrics(out / LONG) if r["type"] == "train"]
    assert steps == list(range(1, 201))
    assert read_checkpoint(out / LONG)["iteration"] == 200

    assert "resumed" not in (out / DIVERGED / "train.log").read_text()  # from scratch
    assert read_metrics(out / DIVERGED)[-1]["step"] == swept["stopped"]["diverged_step"]
    assert "valid_data has 4000 tokens" in (out / FAILED / "train.log").read_text()
    results = [json.loads((out / name / "result.json").read_text()) for name in NAMES]
    assert [r["status"] for r in results] == ["finished", "diverged", "finished", "failed"]
    assert [r["exit_code"] for r in results] == [0, 1, 0, 1]
    assert results[2]["wall_seconds"] > 1000  # both parts of the stopped run

    # Two at a time on the CPU: each got half of the cores.
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for name in (DIVERGED, LONG):
        assert json.loads((out / name / "config.json").read_text())["threads"] == threads


def test_summary_rows_are_the_runs_own_numbers(swept):
    out = swept["out"]
    rows = json.loads((out / "summary.json").read_text())["runs"]
    assert [row["name"] for row in rows] == NAMES
    assert rows[0]["values"] == {"max_lr": 0.001, "max_iters": 8}
    assert rows[3]["values"] == {"max_iters": 8, "model.context_length": 5000}
    for row in rows[:3]:
        records = read_metrics(out / row["name"])
        train = [r for r in records if r["type"] == "train"][-1]
        assert row["tokens"] == train["tokens"] and row["train_seconds"] == train["train_seconds"]
        assert row["tokens_per_s"] == pytest.approx(train["tokens"] / train["train_seconds"])
        result = json.loads((out / row["name"] / "result.json").read_text())
        assert row["wall_seconds"] == result["wall_seconds"] > 0
    for row in (rows[0], rows[2]):
        final = read_metrics(out / row["name"])[-1]
        assert final["type"] == "eval" and final["exact"]
        assert (row["val_loss"], row["val_bits_per_byte"]) == (
            final["loss"],
            final["bits_per_byte"],
        )
        assert row["status"] == "finished" and row["diverged_at_step"] is None
    assert rows[1]["status"] == "diverged" and rows[1]["val_loss"] is None
    assert rows[1]["diverged_at_step"] == swept["stopped"]["diverged_step"]
    assert rows[3]["status"] == "failed" and rows[3]["tokens"] is None

    table = (out / "summary.md").read_text()
    assert f"| 0.001 | 8 | - | - | finished | {rows[0]['val_loss']:.4f} |" in table
    assert f"| diverged at step {rows[1]['diverged_at_step']} | - |" in table
    best = min((rows[0], rows[2]), key=lambda row: row["val_bits_per_byte"])
    assert f"Best: {best['name']}" in table


def test_compare_plot_has_a_curve_per_run_against_steps_and_time(swept):
    out = swept["out"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = sweep.compare_figure(out)
    by_step, by_time = fig.axes
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    step = swept["stopped"]["diverged_step"]
    assert labels == [FINISHED, f"{DIVERGED} (diverged at step {step})", LONG, FAILED]
    long_curve = by_step.lines[4]  # two lines per run: periodic evaluations, final one
    assert list(long_curve.get_xdata()) == [50, 100, 150]
    assert list(by_step.lines[5].get_xdata()) == [200]
    evals = [r for r in read_metrics(out / LONG) if r["type"] == "eval"]
    assert list(by_time.lines[5].get_xdata()) == pytest.approx([evals[-1]["train_seconds"] / 60])


def test_report_rewrites_the_summary_on_demand(swept, capsys):
    out = swept["out"]
    before = (out / "summary.json").read_text()
    (out / "summary.json").unlink()
    assert exit_code(["--report", str(out)]) == 0
    assert (out / "summary.json").read_text() == before


def test_a_rerun_with_other_settings_changes_nothing(swept, capsys):
    out = swept["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert exit_code([str(swept["toml"]), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: .*max_lr=0.001,max_iters=8 holds a run with other .*seed.*\n", err)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_grid_flags_over_a_sweep_toml_give_every_combination(token_data_dir, tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text(
        f'train_data = "{token_data_dir}/train.npy"\nmax_iters = 5\n'
        '[sweep]\nout = "runs/x"\ngrid = { max_lr = [1e-3, 2e-3], model.d_model = [32, 64] }\n'
    )
    argv = [str(toml), "--grid", "max_lr=1e-2,3e-2,1e-1", "--out", str(tmp_path / "o"), "--seed=3"]
    options, runs = sweep.load_sweep(argv)
    assert options.out == str(tmp_path / "o") and options.parallel == 0
    assert [run.name for run in runs] == [
        f"max_lr={lr},model.d_model={d}" for lr in ("1e-2", "3e-2", "1e-1") for d in (32, 64)
    ]
    run = runs[1]
    assert run.values == {"max_lr": 0.01, "model.d_model": 64}
    assert run.config == load_train_config(run.flags)  # the run's own command line gives it
    config = run.config
    assert (config.max_lr, config.model.d_model, config.max_iters, config.seed) == (0.01, 64, 5, 3)
    assert config.run_dir == str(tmp_path / "o" / run.name)
    assert not (tmp_path / "o").exists()


def test_an_empty_variant_is_the_base_run_in_a_directory_of_its_own(token_data_dir, tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text(
        f'train_data = "{token_data_dir}/train.npy"\nmax_lr = 2e-3\n'
        f'[sweep]\nout = "{tmp_path / "o"}"\nvariants = [{{}}, {{ max_lr = 1e-3 }}]\n'
    )
    _, runs = sweep.load_sweep([str(toml)])
    assert [run.name for run in runs] == ["base", "max_lr=0.001"]
    assert runs[0].config.run_dir == str(tmp_path / "o" / "base")
    assert [run.config.max_lr for run in runs] == [2e-3, 1e-3]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grid", "max_lrr=1,2"], "unknown key 'max_lrr' in the grid; did you mean 'max_lr'\\?"),
        (["--grid", "max_iters=10,ten"], "run max_iters=ten: max_iters must be int, got 'ten'"),
        (["--grid", "model.d_model=32,33"], "run model.d_model=33: .*d_model=33 must split"),
        (["--grid", "optimizer=adamw,adam"], "run optimizer=adam: optimizer must be one of"),
        (["--grid", "max_lr="], "the grid of max_lr is empty"),
        (["--grid", "max_lr=1", "--grid", "max_lr=2"], "--grid max_lr=2: repeats the key"),
        (["--grid", "1e-3,2e-3"], "--grid takes KEY=V1,V2,..., not '1e-3'"),
        (["--grid"], "--grid takes KEY=V1,V2,..., not nothing"),
        (["--grid", "=1,2"], "--grid =1: has no key"),
        (["--grid", "max_lr=1e-3,0.001"], "same settings: a value is repeated"),
        ([], "nothing to sweep"),
        (["--grid", "run_dir=a,b"], "run_dir cannot be swept"),
        (["--grid", "max_lr=1,2", "--max_lr", "3"], "max_lr is swept and also set by --max_lr"),
        (["--grid", "max_lr=1,2", "--resume"], "--resume: the sweep sets it"),
        (["--grid", "max_lr=1,2", "--parallel", "-1"], "parallel must be at least 1"),
        (["--grid", "max_lr=1,2", "--report", "{tmp}"], "--report takes only"),
    ],
)
def test_bad_grids_are_one_line_errors_that_create_nothing(
    token_data_dir, tmp_path, capsys, flags, message
):
    base = ["--train_data", str(token_data_dir / "train.npy"), "--out", str(tmp_path / "out")]
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    assert exit_code([*base, *flags]) == 2
    err = capsys.readouterr().err
    assert re.match(f"error: .*{message}", err) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_report_needs_a_sweeps_directory(tmp_path, capsys):
    assert exit_code(["--report", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path} is not a sweep's directory: it has no sweep.json\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_data_is_named_before_any_run(tmp_path, capsys):
    argv = ["--train_data", str(tmp_path / "none.npy"), "--grid", "seed=1,2", "--out"]
    assert exit_code([*argv, str(tmp_path / "out")]) == 1
    assert re.match(r"error: token file .*none.npy does not exist", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", sorted((REPO / "configs/sweeps").glob("*.toml")), ids=str)
def test_the_study_sweeps_build_every_run(path, token_data_dir):
    data = [f"--{split}_data={token_data_dir / split}.npy" for split in ("train", "valid")]
    options, runs = sweep.load_sweep([str(path), *data])
    assert options.out == f"runs/sweep-{path.stem}" and len(runs) >= 4
    assert {run.config.model.context_length for run in runs} == {256}


def _records(*evals: tuple[int, bool, float], last_train: int = 8) -> list[dict]:
    """A metrics log: a train record, then (step, exact, bits/byte) evaluations in order; a
    stopped run's log ends with a train record after them (last_train beyond their steps)."""
    train = {"type": "train", "step": 8, "tokens": 512, "train_seconds": 2.0}
    records = [train] + [
        {"type": "eval", "step": step, "exact": exact, "loss": 2 * bits, "bits_per_byte": bits}
        for step, exact, bits in evals
    ]
    return records + ([{**train, "step": last_train}] if last_train > 8 else [])


def test_summary_shows_a_sampled_final_eval_says_which_kind_and_marks_the_best():
    runs = [{"name": n, "values": {"max_lr": lr}} for n, lr in [("a", 1), ("b", 2), ("c", 3)]]
    finished = {"status": "finished", "wall_seconds": 3.0}
    rows = [
        sweep._row(runs[0], _records((4, False, 1.5), (8, False, 1.25)), finished),  # "sampled"
        sweep._row(runs[1], _records((4, False, 1.0), (8, True, 1.75)), finished),  # "exact"
        sweep._row(runs[2], _records((4, False, 0.5), last_train=12), {"status": "interrupted"}),
    ]
    assert [(r["val_bits_per_byte"], r["val_loss"], r["val_eval"]) for r in rows] == [
        (1.25, 2.5, "sampled"),
        (1.75, 3.5, "exact"),
        (None, None, None),  # its last evaluation is not its final one
    ]
    table = sweep._markdown(Path("out"), ["max_lr"], rows)
    assert "| 1 | finished | 2.5000 | **1.2500** | sampled | 256 |" in table
    assert "| 2 | finished | 3.5000 | 1.7500 | exact | 256 |" in table
    assert "| 3 | interrupted | - | - | - | 256 |" in table
    assert "Best: a, 1.2500 bits/byte (sampled), in bold above." in table
