"""Serve a model over HTTP with OpenAI's API, so that any program that speaks it (the openai
clients, chat front-ends, lm-evaluation-harness's local-completions) can use it:

    uv run -m llm.serve runs/tinystories                  # http://127.0.0.1:8000, chat page at /
    uv run -m llm.serve smollm2-135m --port 8080 --api-key secret

Endpoints (OpenAI's schemas; the tokenizer ones as vLLM's):

    GET  /                      a chat page (llm/static/chat.html)
    GET  /v1/models             the one model served
    POST /v1/chat/completions   messages in the model's chat template; stream: server-sent events
    POST /v1/completions        prompts (text or token ids); echo + logprobs score the prompt
    GET  /health, /metrics      liveness; Prometheus counters, gauges and a histogram
    POST /tokenize, /detokenize, GET /tokenizer_info

The model runs on one thread that owns it (llm/batching.py: continuous batching); the HTTP
handlers, on uvicorn's event loop, validate a request, submit one batching Request per choice
and read the tokens back from an asyncio queue. Text is decoded incrementally (TextStream) and
held back while it could be the start of a stop string. A client that goes away cancels its
requests, which leave the batch at the next step. Errors have OpenAI's shape:
{"error": {"message", "type", "param", "code"}}.
"""

import asyncio
import dataclasses
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import (
        FileResponse,
        JSONResponse,
        PlainTextResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Route
except ImportError as e:
    MISSING = f"{e.name} is missing: serving needs `uv sync --extra serve`"
    if __name__ == "__main__":
        raise SystemExit(f"error: {MISSING}") from None
    raise ImportError(MISSING) from None

import torch

from llm.batching import Finished, QueueFull, Request, Scheduler, Scores, Token
from llm.chat import END_OF_TURN
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.device import resolve_device
from llm.generating import (
    DTYPES,
    CompileError,
    SamplingConfig,
    TextStream,
    chat_prompt,
    compile_decoding,
    eos_id_of,
)
from llm.loading import Loaded, load, models_help
from llm.quantize import QuantizeOptions

PAGE = Path(__file__).with_name("static") / "chat.html"
WATCH_SECONDS = 0.25  # how often a non-streaming request checks that its client is still there
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds


@dataclass(kw_only=True)
class ServeConfig(QuantizeOptions):
    """`uv run -m llm.serve MODEL`: the model and how to serve it (--quantize int8|int4: see
    llm/quantize.py)."""

    model: str = ""  # the model: run, checkpoint, HF directory, GGUF file or pretrained name
    host: str = "127.0.0.1"  # the address to listen on (0.0.0.0: every interface)
    port: int = 8000  # the TCP port
    max_batch: int = 16  # requests decoded together at most (rows of the KV cache)
    max_queue: int = 64  # requests waiting at most; more are refused with 429
    api_key: str = ""  # when set, /v1 requests need the header "Authorization: Bearer KEY"
    name: str = ""  # the model's name in the API (default: MODEL's last path part)
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"
    dtype: str = "float32"  # the weights' type: "float32" or "bfloat16"
    compile: bool = False  # torch.compile the decoding steps, before serving (a minute or so)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("give a model: uv run -m llm.serve MODEL (see --help)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self.quantization()
        if self.max_batch < 1 or self.max_queue < 0:
            raise ValueError("max_batch must be >= 1 and max_queue >= 0")


# ---------------------------------------------------------------------------------------------
# Errors and request fields
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_error", 500: "server_error"}  # fmt: skip

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                 "param": self.param, "code": self.code}  # fmt: skip
        return JSONResponse({"error": error}, status_code=self.status)


def _get(body: dict, name: str, kinds: tuple[type, ...], default=None, ok=None, what: str = ""):
    """body[name] checked to be of one of the types (and to pass `ok`), or the default."""
    value = body.get(name)
    if value is None:
        return default
    wrong_type = isinstance(value, bool) and bool not in kinds
    if wrong_type or not isinstance(value, kinds) or (ok is not None and not ok(value)):
        raise ApiError(400, f"'{name}' must be {what}, got {json.dumps(value)[:80]}", name,
                       "invalid_value")  # fmt: skip
    return value


def _stops(body: dict) -> list[str]:
    stop = _get(
        body,
        "stop",
        (str, list),
        [],
        lambda s: isinstance(s, str) or (len(s) <= 4 and all(isinstance(x, str) and x for x in s)),
        "a string or up to 4 strings",
    )
    return [stop] if isinstance(stop, str) else stop


def _sampling(
    body: dict, prompt_tokens: int, context: int, default_max: int, prompt_field: str
) -> SamplingConfig:
    """The sampling fields of a request (OpenAI's defaults: temperature 1, top_p 1)."""
    number = (int, float)
    temperature = _get(body, "temperature", number, 1.0, lambda t: 0 <= t <= 2, "in [0, 2]")
    top_p = _get(body, "top_p", number, 1.0, lambda p: 0 < p <= 1, "in (0, 1]")
    top_k = _get(body, "top_k", (int,), 0, lambda k: k >= 0, "an integer >= 0")
    seed = _get(body, "seed", (int,), None, None, "an integer")
    room = context - prompt_tokens
    if room < 0 or (room == 0 and default_max):
        message = (
            f"the prompt has {prompt_tokens} tokens: too many for the context length {context}"
        )
        raise ApiError(400, message, prompt_field, "context_length_exceeded")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _get({name: max_tokens}, name, (int,), min(default_max, room),
                      lambda m: m >= 0, "an integer >= 0")  # fmt: skip
    if max_tokens > room:
        raise ApiError(400, f"{name}={max_tokens} with a prompt of {prompt_tokens} tokens is "
                       f"beyond the context length {context} (at most {room})", name,
                       "context_length_exceeded")  # fmt: skip
    return SamplingConfig(max_new_tokens=max_tokens, temperature=float(temperature),
                          top_p=float(top_p), top_k=top_k, seed=seed)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Generating choices: batching Requests -> text pieces
# ---------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """What a choice adds at one step: text, the token (when it ended text), or its end."""

    index: int
    text: str = ""
    token: Token | None = None
    finish_reason: str | None = None


@dataclass
class _Choice:
    """Tokens -> text for one choice, ending at its stop strings."""

    text: TextStream
    stops: list[str]
    request: Request
    held: str = ""  # text that could be the start of a stop string
    scores: Scores | None = None
    tokens: list[Token] = field(default_factory=list)
    done: bool = False

    def add(self, index: int, out: Token | Scores | Finished) -> Piece | None:
        if isinstance(out, Scores):
            self.scores = out
            return None
        if isinstance(out, Finished):
            if out.reason == "error":
                raise ApiError(500, f"generation failed: {out.message}", None, "server_error")
            self.done = True
            text, self.held = self.held + self.text.finish(), ""
            return Piece(index, text, None, "length" if out.reason == "length" else "stop")
        self.tokens.append(out)
        if out.stop:  # no text: its log-probability only
            return Piece(index, "", out)
        text = self.held + self.text.add(out.id)
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:  # a stop string: the text ends before it, and the request is cancelled
            self.done, self.request.cancelled = True, True
            return Piece(index, text[: min(found)], out, "stop")
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])),
                   default=0)  # fmt: skip
        text, self.held = (text[:-keep], text[-keep:]) if keep else (text, "")
        return Piece(index, text, out)


class Server:
    """The state behind the endpoints: the model's scheduler, tokenizer and metrics."""

    def __init__(self, loaded: Loaded, name: str, scheduler: Scheduler, api_key: str = "") -> None:
        self.model, self.tokenizer, self.info = loaded.model, loaded.tokenizer, loaded.info
        self.name, self.scheduler, self.api_key = name, scheduler, api_key
        self.context = self.model.config.context_length
        eos = self.info.get("eos_token_id")
        eos = eos_id_of(self.tokenizer) if eos is None else eos
        self.eos_ids = frozenset() if eos is None else frozenset([eos])
        turn = self.tokenizer.special_ids.get(END_OF_TURN)
        self.chat_stop_ids = self.eos_ids | ({turn} if turn is not None else set())
        self.created = int(time.time())
        self.responses: dict[tuple[str, int], int] = {}  # (path, status) -> count
        self.ttft: list[int] = [0] * (len(TTFT_BUCKETS) + 1)  # a histogram; last: +Inf
        self.ttft_sum = 0.0

    def generate(
        self,
        watch: HttpRequest | None,
        prompts: list[list[int]],
        sampling: SamplingConfig,
        n: int,
        stop_ids: frozenset[int],
        stops: list[str],
        logprobs: int | None = None,
        prompt_logprobs: bool = False,
    ) -> AsyncIterator[tuple[Piece, _Choice]]:
        """Submit n choices for each prompt (choice index = prompt * n + i, with seed + i) now
        (429 when the queue is full), and return the iterator of their pieces as they come.
        Leaving it early (a disconnect) cancels them all. `watch`: see _pieces."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        choices = []
        for prompt in prompts:
            for i in range(n):
                seed = None if sampling.seed is None else sampling.seed + i
                emit = _emitter(loop, queue, len(choices))
                request = Request(prompt, dataclasses.replace(sampling, seed=seed), emit,
                                  stop_ids, logprobs, prompt_logprobs)  # fmt: skip
                choices.append(_Choice(TextStream(self.tokenizer.vocab), stops, request))
        try:
            for choice in choices:
                self.scheduler.submit(choice.request)
        except QueueFull as e:
            for choice in choices:
                choice.request.cancelled = True
            raise ApiError(429, f"the server is busy ({e}): try again later", None,
                           "too_many_requests") from None  # fmt: skip
        return self._pieces(watch, queue, choices, time.monotonic())

    async def _pieces(
        self, watch: HttpRequest | None, queue: asyncio.Queue, choices: list[_Choice], began: float
    ) -> AsyncIterator[tuple[Piece, _Choice]]:
        """The pieces, as the model's thread sends them. `watch`: a request whose client is
        checked every WATCH_SECONDS (a streaming response needs none: Starlette cancels it when
        its client goes)."""
        first, check_at = True, began + WATCH_SECONDS
        try:
            while not all(c.done for c in choices):
                if watch is None:
                    index, out = await queue.get()
                else:
                    try:
                        index, out = await asyncio.wait_for(queue.get(), WATCH_SECONDS)
                    except TimeoutError:
                        index = out = None
                    if time.monotonic() >= check_at:
                        if await watch.is_disconnected():
                            return
                        check_at = time.monotonic() + WATCH_SECONDS
                    if out is None:
                        continue
                if choices[index].done:  # ended by a stop string: what was on its way is dropped
                    continue
                if first and isinstance(out, Token):
                    self._observe_ttft(time.monotonic() - began)
                    first = False
                piece = choices[index].add(index, out)
                if piece is not None:
                    yield piece, choices[index]
        finally:
            for choice in choices:
                choice.request.cancelled = True

    def _observe_ttft(self, seconds: float) -> None:
        bucket = next((i for i, b in enumerate(TTFT_BUCKETS) if seconds <= b), len(TTFT_BUCKETS))
        self.ttft[bucket] += 1
        self.ttft_sum += seconds

    def token_text(self, token: int) -> str:
        return self.tokenizer.vocab[token].decode("utf-8", errors="replace")

    def top_dict(self, top) -> dict[str, float]:
        return {self.token_text(t): lp for t, lp in top}


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int) -> Callable:
    """A Request's emit: hands (index, output) from the model's thread to the event loop."""
    return lambda out: loop.call_soon_threadsafe(queue.put_nowait, (index, out))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def sse(events: AsyncIterator[dict]) -> StreamingResponse:
    """Server-sent events: each dict as `data: JSON`, then `data: [DONE]`."""

    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


# ---------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------


async def json_body(http: HttpRequest) -> dict:
    try:
        body = json.loads(await http.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(
            400, f"the request body is not valid JSON: {e}", None, "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    return body


def _message_text(message) -> dict[str, str]:
    """A chat message with its content as one string (OpenAI also allows a list of parts)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ApiError(400, "each message must be an object with a 'role'", "messages")
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ApiError(400, "a message's 'content' must be a string or a list of text parts",
                       "messages")  # fmt: skip
    return {"role": message["role"], "content": content}


def _n(body: dict) -> int:
    return _get(body, "n", (int,), 1, lambda n: 1 <= n <= 16, "an integer in [1, 16]")


async def chat_completions(server: Server, http: HttpRequest) -> Response:
    body = await json_body(http)
    messages = _get(body, "messages", (list,), None, bool, "a non-empty list of messages")
    if messages is None:
        raise ApiError(400, "'messages' is required", "messages", "missing_required_parameter")
    messages = [_message_text(m) for m in messages]
    try:
        prompt = chat_prompt(server.tokenizer, messages, server.info.get("chat_template"))
    except ValueError as e:
        raise ApiError(400, str(e), "messages") from None
    sampling = _sampling(body, len(prompt), server.context, server.context, "messages")
    n, stops = _n(body), _stops(body)
    stream = _get(body, "stream", (bool,), False, None, "true or false")
    options = _get(body, "stream_options", (dict,), {}, None, "an object")
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": server.name}  # fmt: skip
    watch = None if stream else http
    pieces = server.generate(watch, [prompt], sampling, n, server.chat_stop_ids, stops)
    if stream:

        async def chunks() -> AsyncIterator[dict]:
            chunk = {**base, "object": "chat.completion.chunk"}
            for i in range(n):
                delta = {"role": "assistant", "content": ""}
                yield {**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}
            generated = 0
            async for piece, _ in pieces:
                generated += piece.token is not None
                if piece.text or piece.finish_reason:
                    delta = {"content": piece.text} if piece.text else {}
                    choice = {"index": piece.index, "delta": delta,
                              "finish_reason": piece.finish_reason}  # fmt: skip
                    yield {**chunk, "choices": [choice]}
            if options.get("include_usage"):
                yield {**chunk, "choices": [], "usage": usage(len(prompt), generated)}

        return sse(chunks())
    texts, reasons, generated = [""] * n, [None] * n, 0
    async for piece, _ in pieces:
        texts[piece.index] += piece.text
        reasons[piece.index] = piece.finish_reason or reasons[piece.index]
        generated += piece.token is not None
    choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                "logprobs": None, "finish_reason": reasons[i]} for i in range(n)]  # fmt: skip
    return JSONResponse({**base, "object": "chat.completion", "choices": choices,
                         "usage": usage(len(prompt), generated)})  # fmt: skip


def _prompts(server: Server, body: dict) -> list[list[int]]:
    """A completion's prompts: a string, strings, token ids, or lists of token ids."""
    prompt = body.get("prompt")
    vocab = server.model.config.vocab_size

    def ids(p) -> list[int]:
        if isinstance(p, str):
            return (
                server.tokenizer.encode(p) or list(server.eos_ids)[:1]
            )  # "": after an end of text
        if isinstance(p, list) and p and all(type(t) is int and 0 <= t < vocab for t in p):
            return p
        message = (f"'prompt' must be a string, a list of strings, a list of token ids "
                   f"(0 to {vocab - 1}) or a list of such lists")  # fmt: skip
        raise ApiError(400, message, "prompt", "invalid_value")

    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and type(prompt[0]) is int):
        prompts = [ids(prompt)]
    elif isinstance(prompt, list) and prompt:
        prompts = [ids(p) for p in prompt]
    else:
        prompts = [ids(prompt)]  # the error
    if any(not p for p in prompts):
        raise ApiError(400, "the prompt is empty and the tokenizer has no end-of-text token",
                       "prompt")  # fmt: skip
    return prompts


async def completions(server: Server, http: HttpRequest) -> Response:
    body = await json_body(http)
    prompts = _prompts(server, body)
    sampling = _sampling(body, max(map(len, prompts)), server.context, 16, "prompt")
    n, stops = _n(body), _stops(body)
    echo = _get(body, "echo", (bool,), False, None, "true or false")
    logprobs = _get(body, "logprobs", (int,), None, lambda k: 0 <= k <= 20, "an integer in [0, 20]")
    stream = _get(body, "stream", (bool,), False, None, "true or false")
    options = _get(body, "stream_options", (dict,), {}, None, "an object")
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.name}
    watch = None if stream else http
    pieces = server.generate(watch, prompts, sampling, n, server.eos_ids, stops, logprobs,
                           prompt_logprobs=echo and logprobs is not None)  # fmt: skip
    prompt_tokens = sum(map(len, prompts))
    count = len(prompts) * n

    def prompt_of(index: int) -> list[int]:
        return prompts[index // n]

    if stream:

        async def chunks() -> AsyncIterator[dict]:
            chunk = {**base, "object": "text_completion"}
            generated = 0
            if echo:
                for i in range(count):
                    text = server.tokenizer.decode(prompt_of(i))
                    yield {**chunk, "choices": [_completion_choice(i, text, None, None)]}
            async for piece, _ in pieces:
                generated += piece.token is not None
                lp = None
                if logprobs is not None and piece.token is not None:
                    lp = _logprobs(server, [piece.token.id], [piece.token.logprob],
                                   [server.top_dict(piece.token.top)])  # fmt: skip
                yield {**chunk, "choices": [_completion_choice(piece.index, piece.text, lp,
                                                               piece.finish_reason)]}  # fmt: skip
            if options.get("include_usage"):
                yield {**chunk, "choices": [], "usage": usage(prompt_tokens, generated)}

        return sse(chunks())
    texts, reasons, generated = [""] * count, [None] * count, 0
    finals: dict[int, _Choice] = {}
    async for piece, choice in pieces:
        texts[piece.index] += piece.text
        reasons[piece.index] = piece.finish_reason or reasons[piece.index]
        generated += piece.token is not None
        finals[piece.index] = choice
    choices = []
    for i in range(count):
        text, lp, choice = texts[i], None, finals.get(i)
        if echo:
            text = server.tokenizer.decode(prompt_of(i)) + text
        if logprobs is not None and choice is not None:
            lp = _choice_logprobs(server, choice, prompt_of(i) if echo else None, logprobs)
        choices.append(_completion_choice(i, text, lp, reasons[i]))
    return JSONResponse({**base, "object": "text_completion", "choices": choices,
                         "usage": usage(prompt_tokens, generated)})  # fmt: skip


def _completion_choice(index: int, text: str, logprobs, finish_reason) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def _choice_logprobs(server: Server, choice: _Choice, echoed: list[int] | None, k: int) -> dict:
    """OpenAI's legacy logprobs object: tokens, token_logprobs, top_logprobs, text_offset; with
    echo the prompt's tokens come first (the first one has no log-probability: None)."""
    ids, lps, tops = [], [], []
    if echoed is not None:
        scores = choice.scores
        ids += echoed
        lps += [None] + (scores.logprobs if scores else [])
        tops += [None] + ([server.top_dict(t) for t in scores.top] if scores and scores.top
                          else [{} for _ in echoed[1:]])  # fmt: skip
    ids += [t.id for t in choice.tokens]
    lps += [t.logprob for t in choice.tokens]
    tops += [server.top_dict(t.top) if k else {} for t in choice.tokens]
    return _logprobs(server, ids, lps, tops)


def _logprobs(server: Server, ids: list[int], lps: list, tops: list) -> dict:
    tokens = [server.token_text(t) for t in ids]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


async def models(server: Server, http: HttpRequest) -> Response:
    model = {"id": server.name, "object": "model", "created": server.created, "owned_by": "llm",
             "max_model_len": server.context}  # fmt: skip
    return JSONResponse({"object": "list", "data": [model]})


async def tokenize(server: Server, http: HttpRequest) -> Response:
    body = await json_body(http)
    if "messages" in body:
        messages = [_message_text(m) for m in _get(body, "messages", (list,), [], None, "a list")]
        tokens = chat_prompt(server.tokenizer, messages, server.info.get("chat_template"))
    else:
        tokens = server.tokenizer.encode(_get(body, "prompt", (str,), "", None, "a string"))
    return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": server.context})


async def detokenize(server: Server, http: HttpRequest) -> Response:
    body = await json_body(http)
    vocab = server.model.config.vocab_size
    tokens = _get(
        body,
        "tokens",
        (list,),
        None,
        lambda ts: all(type(t) is int and 0 <= t < vocab for t in ts),
        f"a list of token ids (0 to {vocab - 1})",
    )
    if tokens is None:
        raise ApiError(400, "'tokens' is required", "tokens", "missing_required_parameter")
    return JSONResponse({"prompt": server.tokenizer.decode(tokens)})


async def tokenizer_info(server: Server, http: HttpRequest) -> Response:
    """What lm-evaluation-harness's remote tokenizer reads (as vLLM's endpoint)."""
    eos = next(iter(server.eos_ids), None)
    return JSONResponse({"eos_token": None if eos is None else server.token_text(eos),
                         "chat_template": server.info.get("chat_template"),
                         "model_max_length": server.context})  # fmt: skip


async def health(server: Server, http: HttpRequest) -> Response:
    return JSONResponse({"status": "ok"})


async def page(server: Server, http: HttpRequest) -> Response:
    return FileResponse(PAGE, media_type="text/html")


async def metrics(server: Server, http: HttpRequest) -> Response:
    """Prometheus' text format: one `name{labels} value` line per sample."""
    s = server.scheduler.stats
    lines = ["# TYPE llm_requests_total counter"]
    lines += [f'llm_requests_total{{path="{p}",status="{c}"}} {v}'
              for (p, c), v in sorted(server.responses.items())]  # fmt: skip
    lines += ["# TYPE llm_sequences_finished_total counter"]
    lines += [f'llm_sequences_finished_total{{reason="{r}"}} {v}'
              for r, v in sorted(s.finished.items())]  # fmt: skip
    lines += [
        "# TYPE llm_prompt_tokens_total counter",
        f"llm_prompt_tokens_total {s.prompt_tokens}",
        "# TYPE llm_generated_tokens_total counter",
        f"llm_generated_tokens_total {s.generated_tokens}",
        "# TYPE llm_queue_length gauge",
        f"llm_queue_length {len(server.scheduler.waiting)}",
        "# TYPE llm_batch_size gauge",
        f"llm_batch_size {s.running}",
        "# TYPE llm_generated_tokens_per_second gauge",
        f"llm_generated_tokens_per_second {s.tokens_per_second():.3f}",
        "# TYPE llm_time_to_first_token_seconds histogram",
    ]
    total = 0
    for bound, count in zip([*TTFT_BUCKETS, math.inf], server.ttft, strict=True):
        total += count
        le = "+Inf" if bound == math.inf else bound
        lines.append(f'llm_time_to_first_token_seconds_bucket{{le="{le}"}} {total}')
    lines += [f"llm_time_to_first_token_seconds_sum {server.ttft_sum:.6f}",
              f"llm_time_to_first_token_seconds_count {total}"]  # fmt: skip
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


ENDPOINTS = [  # (path, method, handler, needs the API key)
    ("/", "GET", page, False),
    ("/health", "GET", health, False),
    ("/metrics", "GET", metrics, False),
    ("/v1/models", "GET", models, True),
    ("/v1/chat/completions", "POST", chat_completions, True),
    ("/v1/completions", "POST", completions, True),
    ("/tokenize", "POST", tokenize, True),
    ("/detokenize", "POST", detokenize, True),
    ("/tokenizer_info", "GET", tokenizer_info, True),
]


def _endpoint(server: Server, path: str, handler: Callable, keyed: bool) -> Callable:
    """The handler with the API key check, errors as OpenAI's JSON, and responses counted."""

    async def endpoint(http: HttpRequest) -> Response:
        try:
            wanted = f"Bearer {server.api_key}"
            if keyed and server.api_key and http.headers.get("authorization") != wanted:
                raise ApiError(401, "invalid API key: send 'Authorization: Bearer KEY'", None,
                               "invalid_api_key")  # fmt: skip
            response = await handler(server, http)
        except ApiError as e:
            response = e.response()
        key = (path, response.status_code)
        server.responses[key] = server.responses.get(key, 0) + 1
        return response

    return endpoint


def create_app(loaded: Loaded, name: str, max_batch: int = 16, max_queue: int = 64,
               api_key: str = "", compiled: bool = False) -> Starlette:  # fmt: skip
    """The ASGI app; the model's thread starts and stops with it (its lifespan). compiled: the
    model's decoding steps compiled (llm.generating.compile_decoding) and warmed up here."""
    server = Server(loaded, name, Scheduler(loaded.model, max_batch, max_queue), api_key)
    if compiled:
        compile_decoding(loaded.model)
        server.scheduler.warm_up()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=server.scheduler.run, args=(stop,), name="model",
                                  daemon=True)  # fmt: skip
        thread.start()
        yield
        stop.set()
        thread.join()

    async def not_found(http: HttpRequest, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return ApiError(status, f"no endpoint {http.method} {http.url.path}").response()

    routes = [Route(path, _endpoint(server, path, handler, keyed), methods=[method])
              for path, method, handler, keyed in ENDPOINTS]  # fmt: skip
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found})  # fmt: skip
    app.state.server = server
    return app


def run(config: ServeConfig) -> None:
    try:
        device = resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    loaded = load(config.model, device, DTYPES[config.dtype], quantization=config.quantization())
    name = config.name or Path(config.model.rstrip("/")).name
    c = loaded.model.config
    print(f"serving {name} ({loaded.format}, {loaded.model.num_parameters():,} parameters, "
          f"context {c.context_length}) on {device}: "
          f"http://{config.host}:{config.port}/")  # fmt: skip
    if config.compile:
        print("compiling the decoding steps (--compile: a minute or so)...")
    app = create_app(loaded, name, config.max_batch, config.max_queue, config.api_key,
                     config.compile)  # fmt: skip
    torch.set_grad_enabled(False)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    run_main(
        lambda: run(
            parse(
                ServeConfig,
                argv,
                prog="uv run -m llm.serve",
                positional=("model",),
                description=f"{__doc__}\n{models_help()}",
            )
        ),  # fmt: skip
        errors=(ValueError, OSError, CompileError),
    )


if __name__ == "__main__":
    main()
