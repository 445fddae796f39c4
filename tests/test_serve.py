"""llm.serve against the real openai client (and httpx, and a headless Chromium for the page):
one server, started on a free port with a tiny random model, shared by the module."""

import asyncio
import json
import runpy
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from llm.loading import Loaded
from llm.serve import create_app, main
from llm.transformer import ModelConfig, Transformer
from tests.conftest import tiny_tokenizer

KEY = "secret"
CONFIG = ModelConfig(vocab_size=262, context_length=256, d_model=32, num_layers=2, num_heads=4,
                     d_ff=64)  # fmt: skip
MAX_BATCH, MAX_QUEUE = 8, 8


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CONFIG).eval()


@pytest.fixture(scope="module")
def app(model):
    loaded = Loaded(model, tiny_tokenizer(), {}, "test", Path("."))
    return create_app(loaded, "tiny", MAX_BATCH, MAX_QUEUE, api_key=KEY)


@pytest.fixture(scope="module")
def server(app):
    """The base URL of the app running under uvicorn, on a thread."""
    # proto TCP, so that asyncio sets TCP_NODELAY on each connection (with proto 0 it does not,
    # and every response after a connection's first waits 40 ms for the client's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv.should_exit = True
    thread.join()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    """Plain HTTP to the server, with the API key (one client: making one takes 0.1 s)."""
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}) as http:
        yield http


def metric(http: httpx.Client, name: str) -> float:
    text = http.get("/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def chat(client, **kwargs):
    messages = [{"role": "user", "content": "Tell me about the cat."}]
    return client.chat.completions.create(model="tiny", messages=messages, **kwargs)


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert http.get("/health").json() == {"status": "ok"}


def test_chat_streams_the_same_text(client):
    reply = chat(client, temperature=0, max_tokens=20, seed=1)
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage.completion_tokens == 20 or reply.choices[0].finish_reason == "stop"
    chunks = list(chat(client, temperature=0, max_tokens=20, seed=1, stream=True,
                       stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content and text
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].usage.model_dump() == reply.usage.model_dump()
    assert reply.usage.prompt_tokens > 10


def test_n_choices_and_seeds(client):
    reply = chat(client, temperature=1.0, max_tokens=12, n=3, seed=5)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(set(texts)) == 3  # seeds 5, 6, 7
    again = chat(client, temperature=1.0, max_tokens=12, n=3, seed=5)
    assert [c.message.content for c in again.choices] == texts
    assert reply.usage.completion_tokens == 36


def test_stop_strings(client):
    full = client.completions.create(model="tiny", prompt="the cat", max_tokens=40, temperature=0)
    text = full.choices[0].text
    stop = text[5:7]  # two characters from the middle
    assert stop and text.find(stop) >= 1
    cut = client.completions.create(model="tiny", prompt="the cat", max_tokens=40, temperature=0,
                                    stop=[stop, "never seen"])  # fmt: skip
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="the cat", max_tokens=40,
                                         temperature=0, stop=stop, stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text
    # two prompts: the one that stops early gets nothing more while the other goes on
    other = client.completions.create(model="tiny", prompt="a dog", max_tokens=40, temperature=0)
    texts = [text, other.choices[0].text]
    both = client.completions.create(model="tiny", prompt=["the cat", "a dog"], max_tokens=40,
                                     temperature=0, stop=stop)  # fmt: skip
    expected = [t[: t.find(stop)] if stop in t else t for t in texts]
    assert [c.text for c in both.choices] == expected


def test_echo_logprobs_are_the_models(client, http, model):
    tokenizer = tiny_tokenizer()
    prompt = "the cat sat on the mat"
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([ids]))[0, :-1], -1)  # (seq - 1, vocab)
    targets = expected.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    for max_tokens in (0, 1):
        reply = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=2,
                                          max_tokens=max_tokens, temperature=0)  # fmt: skip
        lp = reply.choices[0].logprobs
        assert reply.choices[0].text.startswith(prompt)
        assert len(lp.tokens) == len(ids) + max_tokens and lp.token_logprobs[0] is None
        got = torch.tensor(lp.token_logprobs[1 : len(ids)])
        assert (got - targets).abs().max() < 1e-5
        best = expected[2].max().item()
        assert max(lp.top_logprobs[3].values()) == pytest.approx(best, abs=1e-5)
        assert reply.usage.completion_tokens == max_tokens
    # As lm-evaluation-harness's local-completions sends it (token ids) and reads it (its
    # parse_logprobs: token_logprobs[ctxlen:-1], and whether each is its top_logprobs' max).
    body = {"model": "tiny", "prompt": [ids], "max_tokens": 1, "logprobs": 1, "echo": True,
            "temperature": 0, "seed": 1234}  # fmt: skip
    lp = http.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    assert sum(lp["token_logprobs"][3:-1]) == pytest.approx(float(targets[2:].sum()), abs=1e-4)
    greedy = [
        t == max(top.values())
        for t, top in zip(lp["token_logprobs"][3:-1], lp["top_logprobs"][3:-1], strict=True)
    ]
    assert greedy == (expected[2:].argmax(-1) == torch.tensor(ids[3:])).tolist()


def test_scoring_a_prompt_whose_next_token_ends_the_text(http, model):
    """When max_tokens=1 samples the end-of-text token, it is still the last of the logprobs
    (as vLLM returns it): lm-eval drops that last one before summing the continuation's."""
    g = torch.Generator().manual_seed(0)
    candidates = torch.randint(0, 256, (4000, 6), generator=g)
    eot = tiny_tokenizer().token_id("<|endoftext|>")
    with torch.no_grad():
        logits = model(candidates, last_only=True)[:, -1]
    (row,) = (logits.argmax(-1) == eot).nonzero()[0].tolist()  # a prompt greedy ends at once
    ids = candidates[row].tolist()
    body = {"prompt": ids, "max_tokens": 1, "logprobs": 1, "echo": True, "temperature": 0}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["finish_reason"] == "stop" and lp["tokens"][-1] == "<|endoftext|>"
    assert len(lp["token_logprobs"]) == len(ids) + 1
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([ids]))[0], -1)
    assert lp["token_logprobs"][-2] == pytest.approx(expected[-2, ids[-1]].item(), abs=1e-5)
    assert lp["token_logprobs"][-1] == pytest.approx(expected[-1, eot].item(), abs=1e-5)


async def _complete(server: str, prompts: list[list[int]], lengths: list[int]) -> list[list[int]]:
    """Greedy token ids of the prompts, all sent at once."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as http:

        async def one(prompt: list[int], n: int) -> list[int]:
            body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 0}
            response = await http.post("/v1/completions", json=body)
            return response.json()["choices"][0]["logprobs"]["tokens"]

        return await asyncio.gather(*(one(p, n) for p, n in zip(prompts, lengths, strict=True)))


def test_batching_is_exact(server):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (3, 40, 9, 1, 25, 60,
                                                                           5, 17)]  # fmt: skip
    lengths = [16, 4, 25, 10, 3, 20, 12, 6]
    alone = [asyncio.run(_complete(server, [p], [n]))[0] for p, n in zip(prompts, lengths,
                                                                         strict=True)]  # fmt: skip
    together = asyncio.run(_complete(server, prompts, lengths))
    assert together == alone
    assert sum(map(len, alone)) > 50


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_frees_the_slot(server, app, client, http, monkeypatch, stream):
    scheduler = app.state.server.scheduler
    step = scheduler.step

    def slow_step() -> None:  # 240 tokens then take more than a second: time to go away
        time.sleep(0.005)
        step()

    monkeypatch.setattr(scheduler, "step", slow_step)
    cancelled = metric(http, 'llm_sequences_finished_total{reason="cancelled"}')
    generated = metric(http, "llm_generated_tokens_total")
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": 240, "temperature": 0,
            "stream": stream}  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    if stream:  # read the first event, then close the connection
        with httpx.stream("POST", f"{server}/v1/completions", json=body,
                          headers=headers) as response:  # fmt: skip
            assert next(response.iter_lines()).startswith("data: ")
    else:  # give up waiting
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server}/v1/completions", json=body, headers=headers, timeout=0.2)
    # another client is served meanwhile
    other = client.completions.create(model="tiny", prompt="a", max_tokens=5, temperature=0)
    assert other.usage.completion_tokens == 5
    deadline = time.monotonic() + 5
    while metric(http, "llm_batch_size") or metric(
        http, 'llm_sequences_finished_total{reason="cancelled"}') == cancelled:  # fmt: skip
        assert time.monotonic() < deadline, "the cancelled request still holds its slot"
        time.sleep(0.01)
    assert metric(http, "llm_generated_tokens_total") - generated < 240  # it was cut short
    text = http.get("/metrics").text
    assert "llm_time_to_first_token_seconds_bucket" in text and "llm_queue_length 0" in text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b'["a list"]', 400, None),
        ({"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
        ({"prompt": "hi", "n": 0}, 400, "n"),
        ({"prompt": "hi", "stop": 3}, 400, "stop"),
        ({"prompt": {"text": "hi"}}, 400, "prompt"),
        ({"prompt": [1, 2, 999]}, 400, "prompt"),
        ({"prompt": "x" * 300}, 400, "prompt"),  # longer than the context
        ({"prompt": "hi", "max_tokens": 255}, 400, "max_tokens"),  # beyond the context
        ({"prompt": "hi", "echo": "yes"}, 400, "echo"),
    ],
)
def test_bad_requests(http, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/v1/completions", content=content)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert http.get("/health").status_code == 200


def test_errors_through_the_client(server, client, http):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.BadRequestError, match="context length"):
        chat(client, max_tokens=1000)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[])
    assert http.get("/v1/nothing").json()["error"]["type"] == "not_found_error"


def test_a_flood_is_refused(server, http):
    async def flood() -> list[int]:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as http:
            body = {"prompt": "the", "max_tokens": 100, "temperature": 0}
            responses = await asyncio.gather(*(http.post("/v1/completions", json=body)
                                               for _ in range(24)))  # fmt: skip
            return [r.status_code for r in responses]

    statuses = asyncio.run(flood())
    assert set(statuses) == {200, 429}
    assert statuses.count(200) >= MAX_QUEUE  # at least a full queue was taken
    assert metric(http, "llm_queue_length") == 0


def test_tokenize(http):
    ids = http.post("/tokenize", json={"prompt": "the cat"}).json()
    assert ids["tokens"] == tiny_tokenizer().encode("the cat") and ids["max_model_len"] == 256
    text = http.post("/detokenize", json={"tokens": ids["tokens"]})
    assert text.json() == {"prompt": "the cat"}
    info = http.get("/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>"


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        ([], 2, "give a model: uv run -m llm.serve MODEL"),
        (["no/such/model"], 1, "no/such/model: no such file or directory"),
        (["no/such/model", "--max-batch", "0"], 2, "max_batch must be >= 1"),
        (["no/such/model", "--port", "http"], 2, "port must be int"),
    ],
)
def test_command_line_errors(argv, code, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == code and words in err and err.count("\n") == 1


def test_a_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "llm.serve")  # run afresh, as `python -m llm.serve`
    with pytest.raises(SystemExit, match=r"^error: uvicorn is missing: .*--extra serve`$"):
        runpy.run_module("llm.serve", run_name="__main__")


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_chat_page(server, client):
    messages = [{"role": "user", "content": "Hello there"}]
    greedy = client.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                            max_tokens=30)  # fmt: skip
    assert greedy.choices[0].message.content
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept(KEY))  # the page asks for the API key
        page.goto(server)
        page.fill("#temperature", "0")
        page.fill("#max-tokens", "30")
        page.fill("#input", "Hello there")
        page.click("#send")
        page.wait_for_selector(".assistant:not(:empty)")
        page.wait_for_function("document.getElementById('status').textContent === ''")
        assert page.inner_text(".user") == "Hello there"
        reply = page.inner_text(".assistant")
        page.click("#clear")
        assert page.locator(".msg").count() == 0
        browser.close()
    assert reply == greedy.choices[0].message.content
