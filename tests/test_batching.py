"""The continuous batching scheduler on its own: requests that join and leave a running batch,
through the cache's growth and its shift when the clock reaches the context, get exactly what
llm.generating gives each of them alone."""

import copy
import dataclasses
from collections.abc import Callable

import pytest
import torch

from llm.batching import Finished, QueueFull, Request, Scheduler, Scores, Token
from llm.generating import SamplingConfig, compile_decoding, generate
from llm.quantize import Quantization, quantize_model
from llm.transformer import ModelConfig, Transformer

CONFIG = ModelConfig(vocab_size=64, context_length=32, d_model=32, num_layers=2, num_heads=4,
                     d_ff=64)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CONFIG).eval()


def run(scheduler: Scheduler, requests: list[tuple[list[int], SamplingConfig]], **kwargs):
    """Submit all, step until done: (token ids, finish reason, outputs) per request, and
    scheduler.clocks, the clock and the running rows after each step."""
    results = [([], [None], []) for _ in requests]
    for (prompt, sampling), (ids, reason, outs) in zip(requests, results, strict=True):

        def emit(out, ids=ids, reason=reason, outs=outs) -> None:
            outs.append(out)
            if isinstance(out, Token) and not out.stop:
                ids.append(out.id)
            elif isinstance(out, Finished):
                reason[0] = out.reason

        scheduler.submit(Request(prompt, sampling, emit, **kwargs))
    scheduler.clocks = []
    while scheduler.rows or scheduler.waiting:
        scheduler.step()
        scheduler.clocks.append((scheduler.clock, len(scheduler.rows)))
    return [(ids, reason[0], outs) for ids, reason, outs in results]


@pytest.mark.parametrize("context", [32, 128])
def test_joining_and_leaving_is_exact(context):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(CONFIG, context_length=context)).eval()
    g = torch.Generator().manual_seed(0)
    lengths = [1, 3, 7, 12, 2, 5, 9, 4, 20]
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in lengths]
    news = [20, 5, 25, 19, 30, 8, 10, 28, 12] if context == 32 else [90, 5, 25, 19, 30, 8, 10]
    prompts = prompts[: len(news)]
    # greedy, and seeded sampling with each request's own settings
    settings = [dict(temperature=0), dict(temperature=0.9, top_p=0.8, seed=3),
                dict(temperature=1.2, top_k=5, seed=4)]  # fmt: skip
    requests = [(p, SamplingConfig(max_new_tokens=n, **settings[i % 3]))
                for i, (p, n) in enumerate(zip(prompts, news, strict=True))]  # fmt: skip
    scheduler = Scheduler(model, max_batch=3, max_queue=len(requests))
    results = run(scheduler, requests)
    for (prompt, sampling), (ids, reason, _) in zip(requests, results, strict=True):
        assert ids == generate(model, prompt, sampling)
        assert reason == "length"
    assert not scheduler.rows and scheduler.stats.generated_tokens == sum(news)
    steps = list(zip(scheduler.clocks, scheduler.clocks[1:], strict=False))
    if context == 32:  # the clock reached the context's end, and the running rows moved left
        assert any(a == context and b < a and rows for (a, rows), (b, _) in steps)
    else:  # the cache grew past its first 64 columns
        assert scheduler.capacity == context and max(c for c, _ in scheduler.clocks) > 64


def test_stop_tokens_cancel_and_scores(model):
    scheduler = Scheduler(model, max_batch=2, max_queue=4)
    prompt = [5, 9, 2, 40]
    greedy = generate(model, prompt, SamplingConfig(max_new_tokens=10, temperature=0))
    sampling = SamplingConfig(max_new_tokens=10, temperature=0)
    ((ids, reason, outs),) = run(scheduler, [(prompt, sampling)], stop_ids=frozenset([greedy[3]]),
                                 logprobs=2, prompt_logprobs=True)  # fmt: skip
    assert ids == greedy[: greedy.index(greedy[3])] and reason == "stop"
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([prompt + greedy])), -1)[0]
    scores = outs[0]
    assert isinstance(scores, Scores)
    want = [expected[i, prompt[i + 1]].item() for i in range(3)]
    assert scores.logprobs == pytest.approx(want, abs=1e-5)
    assert outs[1].logprob == pytest.approx(expected[3, greedy[0]].item(), abs=1e-5)
    assert [t for t, _ in outs[1].top][0] == greedy[0] and len(outs[1].top) == 2
    stop = outs[len(ids) + 1]  # after the scores and the tokens: the stop token, with its logprob
    assert stop.stop and stop.id == greedy[3] and isinstance(outs[-1], Finished)
    assert stop.logprob == pytest.approx(expected[3 + len(ids), greedy[3]].item(), abs=1e-5)

    cancelled = Request(prompt, sampling, lambda out: None, cancelled=True)
    scheduler.submit(cancelled)
    scheduler.step()
    assert not scheduler.rows and not scheduler.waiting


def test_limits(model):
    scheduler = Scheduler(model, max_batch=1, max_queue=1)
    sampling = SamplingConfig(max_new_tokens=30)
    with pytest.raises(ValueError, match="context length 32"):
        scheduler.submit(Request([1, 2, 3], sampling, print))
    scheduler.submit(Request([1], sampling, print))
    with pytest.raises(QueueFull):
        scheduler.submit(Request([1], sampling, print))


def test_a_failing_step_fails_its_requests_and_the_loop_goes_on(model, monkeypatch):
    scheduler = Scheduler(model, max_batch=2, max_queue=4)
    sampling = SamplingConfig(max_new_tokens=5, temperature=0)
    reasons = []

    def emit(out) -> None:
        if isinstance(out, Finished):
            reasons.append(out.reason)

    scheduler.submit(Request([1, 2], sampling, emit))
    scheduler.step()  # running
    for _ in range(2):  # one joins the batch; one waits
        scheduler.submit(Request([3], sampling, emit))
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: 1 / 0)
    scheduler.step()
    assert reasons == ["error", "error"] and not scheduler.rows  # the running one, the joiner
    monkeypatch.setattr(model, "forward", forward)
    ((ids, reason, _),) = run(scheduler, [([4, 5], sampling)])
    assert reason == "length" and ids == generate(model, [4, 5], sampling)
    assert reasons == ["error", "error", "length"]  # the one that waited was served


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantised_model_is_served_as_it_generates_alone(kind):
    """llm.serve --quantize: the scheduler runs a model whose matrices, output layer included,
    are quantised (llm/quantize.py), and its rows get what generate() gives each alone."""
    torch.manual_seed(0)
    model = quantize_model(Transformer(CONFIG).eval(), Quantization(kind, 32, head=True))
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    sampling = SamplingConfig(max_new_tokens=6, temperature=0)
    results = run(Scheduler(model, max_batch=2), [(p, sampling) for p in prompts])
    assert [ids for ids, _, _ in results] == [generate(model, p, sampling) for p in prompts]


def test_a_warmed_up_compiled_model_serves_exactly_and_compiles_nothing_more():
    """llm.serve --compile: warm_up compiles the decoding steps before the first client;
    requests that join and leave, through the cache's growth, then compile nothing new and get
    what generate() gives each of them alone (uncompiled)."""
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(CONFIG, context_length=128)).eval()
    compiled = copy.deepcopy(model)
    graphs = []

    def backend(graph: torch.fx.GraphModule, inputs: list) -> Callable:
        graphs.append(graph)
        return graph.forward  # run as traced: the tokens can be compared exactly

    compile_decoding(compiled, backend)
    Scheduler(compiled, max_batch=3).warm_up()
    warmed_up = len(graphs)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11], [12]]
    news = [90, 5, 25, 12, 30]
    requests = [(p, SamplingConfig(max_new_tokens=n, temperature=0))
                for p, n in zip(prompts, news, strict=True)]  # fmt: skip
    scheduler = Scheduler(compiled, max_batch=3, max_queue=len(requests))
    results = run(scheduler, requests)
    assert [ids for ids, _, _ in results] == [generate(model, p, s) for p, s in requests]
    assert scheduler.capacity == 128  # the cache grew past its first 64 columns
    assert warmed_up >= 1 and len(graphs) == warmed_up
    assert scheduler.stats.generated_tokens == sum(news)  # the warm-up's were not counted
