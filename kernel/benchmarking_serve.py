"""Measure llm.serve's continuous batching: the same requests sent one at a time, then by
`--clients` concurrent clients; total generated tokens/s of each, their ratio, and the time to
first token (p50, p95) as a streaming client sees it.

    uv run kernel/benchmarking_serve.py                              # tinystories-17m shape
    uv run kernel/benchmarking_serve.py --model smollm2-135m --requests 16 --max-tokens 32
    uv run kernel/benchmarking_serve.py --model smollm2-135m --quantize int4 --compile

The server runs in a process of its own (llm.serve's app under uvicorn, on a free 127.0.0.1
port); this process only sends requests. Without --model, the model is the tinystories-17m
shape with random weights (vocab cut to the tokenizer's), with the quickstart's
tokenizer (`--tokenizer`). Every request samples (temperature 0.8) with its own seed, so both
passes generate the same tokens (continuous batching is exact); the totals are checked equal.
Bounded: `--requests` requests of at most `--max-tokens` tokens, and `--timeout` seconds.
Results for this project are in docs/benchmarks.md.
"""

import asyncio
import dataclasses
import json
import multiprocessing
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from llm.cli import parse, run_main

PROMPTS = [
    "Once upon a time, there was a little girl named Lily.",
    "Tom had a big red ball. One day,",
    "The sun was shining and the birds were singing.",
    "Once upon a time, in a small town, there lived a dog",
    "Sam and his mom went to the park.",
    "There was a tiny bug who wanted to fly.",
    "One day, a boy found a shiny key under a rock.",
    "Mia loved to paint. She",
]


@dataclass
class ServeBenchConfig:
    """The model, the load, and its bounds."""

    model: str = ""  # a model for llm.loading (e.g. smollm2-135m); "": random tinystories-17m
    tokenizer: str = "runs/quickstart/tokenizer"  # the random model's (uv run -m llm writes it)
    requests: int = 32  # requests in each pass
    clients: int = 16  # concurrent clients in the batched pass
    max_tokens: int = 64  # tokens to generate per request at most
    max_batch: int = 16  # the server's --max-batch
    threads: int = 2  # torch threads of the server
    quantize: str = ""  # the server's --quantize (int8 or int4, the output layer in int8 too)
    compile: bool = False  # the server's --compile: its decoding steps compiled before serving
    timeout: float = 600.0  # seconds for the whole benchmark at most


def serve(config: ServeBenchConfig, sock: socket.socket) -> None:
    """The server process: load (or build) the model, serve it on sock."""
    import uvicorn

    from llm.loading import Loaded, load, load_tokenizer
    from llm.quantize import Quantization
    from llm.serve import create_app
    from llm.transformer import MODEL_PRESETS, Transformer

    torch.set_num_threads(config.threads)
    torch.set_grad_enabled(False)
    if config.model:
        quantization = Quantization(config.quantize, head=True) if config.quantize else None
        loaded = load(config.model, quantization=quantization)
    else:
        tokenizer = load_tokenizer(config.tokenizer)
        shape = dataclasses.replace(MODEL_PRESETS["tinystories-17m"],
                                    vocab_size=tokenizer.vocab_size)  # fmt: skip
        torch.manual_seed(0)
        loaded = Loaded(Transformer(shape).eval(), tokenizer, {}, "random", Path("."))
    app = create_app(loaded, "bench", config.max_batch, config.requests, compiled=config.compile)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


async def one(http: httpx.AsyncClient, i: int, config: ServeBenchConfig) -> tuple[float, int]:
    """(time to first token, tokens generated) of request i, streamed."""
    body = {"model": "bench", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": config.max_tokens,
            "temperature": 0.8, "seed": i, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    began, first, tokens = time.perf_counter(), None, None
    async with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"]:
                first = time.perf_counter() - began
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return first, tokens


async def run_pass(base: str, config: ServeBenchConfig, clients: int) -> dict:
    """Send the requests with `clients` at a time; totals and latencies."""
    queue = list(range(config.requests))
    results, failed = [], []

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop(0)
            try:
                results.append(await one(http, i, config))
            except httpx.HTTPError as e:
                failed.append(f"request {i}: {e}")

    async with httpx.AsyncClient(base_url=base, timeout=config.timeout) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ttft = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"clients": clients, "tokens": tokens, "seconds": elapsed,
            "tokens_per_s": tokens / elapsed, "ttft_p50": statistics.median(ttft),
            "ttft_p95": ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))],
            "failed": len(failed), "errors": failed[:3]}  # fmt: skip


def run(config: ServeBenchConfig) -> None:
    # proto TCP, so that asyncio sets TCP_NODELAY on each connection (with proto 0 it does not,
    # and every response after a connection's first waits 40 ms for the client's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    context = multiprocessing.get_context("spawn")
    server = context.Process(target=serve, args=(config, sock), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                httpx.get(f"{base}/health").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or not server.is_alive():
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        asyncio.run(run_pass(base, dataclasses.replace(config, requests=2), 1))  # warm-up

        async def both() -> list[dict]:
            return [await run_pass(base, config, 1), await run_pass(base, config, config.clients)]

        alone, together = asyncio.run(asyncio.wait_for(both(), config.timeout))
    finally:
        server.terminate()
        server.join()
    print(f"model: {config.model or 'tinystories-17m shape, random weights'}"
          f"{' ' + config.quantize if config.quantize else ''}; {config.requests} requests of up "
          f"to {config.max_tokens} tokens; server: max_batch {config.max_batch}, "
          f"{config.threads} torch threads{', --compile' if config.compile else ''}")  # fmt: skip
    print("| clients | tokens | seconds | tokens/s | TTFT p50 (s) | TTFT p95 (s) | failed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in (alone, together):
        print(f"| {r['clients']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} "
              f"| {r['ttft_p50']:.3f} | {r['ttft_p95']:.3f} | {r['failed']} |")  # fmt: skip
    print(f"speed-up: {together['tokens_per_s'] / alone['tokens_per_s']:.2f}x")
    for error in alone["errors"] + together["errors"]:
        print(f"failed: {error}")
    if alone["tokens"] != together["tokens"]:
        raise SystemExit(f"error: the passes generated {alone['tokens']} and "
                         f"{together['tokens']} tokens: batching changed the output")  # fmt: skip


def main() -> None:
    run_main(lambda: run(parse(ServeBenchConfig, prog="uv run kernel/benchmarking_serve.py",
                               description=__doc__)),
             errors=(ValueError, OSError, RuntimeError))  # fmt: skip


if __name__ == "__main__":
    main()
