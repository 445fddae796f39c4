"""llm.plots: the plots of a run from its metrics log, and its command line."""

import json

from llm import plots

PNG = b"\x89PNG\r\n\x1a\n"
RECORDS = [
    {"type": "train", "step": 10, "loss": 4.0, "lr": 1e-3},
    {"type": "train", "step": 20, "loss": 3.0, "lr": 2e-3},
    {"type": "eval", "step": 20, "loss": 3.2, "bits_per_byte": 1.5, "train_seconds": 30.0},
    {"type": "eval", "step": 20, "loss": 3.1, "bits_per_byte": 1.4, "train_seconds": 30.0,
     "exact": True},
]  # fmt: skip


def test_command_line_draws_every_plot_and_prints_the_paths(tmp_path, capsys):
    lines = [json.dumps(r) for r in RECORDS]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n[1, 2]\n{"type": "tr')  # torn
    plots.main([str(tmp_path), "--reference", "nanoGPT=1.1666", "--reference=ours=1.0674"])
    img = tmp_path / "img"
    names = ["loss.png", "lr.png", "bits_per_byte.png"]
    assert capsys.readouterr().out.split() == [str(img / name) for name in names]
    assert sorted(p.name for p in img.iterdir()) == sorted(names)  # no temp file left
    assert all((img / name).read_bytes()[:8] == PNG for name in names)


def test_read_metrics_skips_lines_that_are_not_records(tmp_path):
    lines = ["[1, 2]", json.dumps(RECORDS[0]), '{"step": 3}', "\udcff", json.dumps(RECORDS[1])]
    (tmp_path / "metrics.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    assert plots.read_metrics(tmp_path) == RECORDS[:2]


def test_references_are_name_value_pairs():
    assert plots.parse_references(["a=1", "b c=2.5"]) == {"a": 1.0, "b c": 2.5}


def test_a_run_stopped_before_its_first_record_draws_nothing(tmp_path):
    """Ctrl-C in the first steps: training calls plot_run before any metrics were logged."""
    assert plots.plot_run(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
