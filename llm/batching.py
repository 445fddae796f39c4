"""Continuous batching: one model decodes many requests at once, and requests join and leave the
batch at every step (Orca, Yu et al., 2022; vLLM and llama.cpp's server do the same).

Decoding one token costs about the same for 1 sequence as for 16: the time goes into reading the
weights, not into arithmetic. So a server that decodes its requests together produces many
times the tokens per second of one that answers them in turn. A static batch (start together,
stop together) wastes rows on requests that already ended and makes new ones wait for the
slowest; continuous batching instead runs this loop, one iteration per decode step:

    1. drop the rows whose request was cancelled (its client went away, or a stop string ended it)
    2. admit waiting requests into free rows: *prefill* their prompts (one forward pass over the
       prompt, whose keys and values land in the shared KV cache) and sample each one's first
       token
    3. *decode*: one forward pass over the newest token of every row, then sample each row's
       next token with its own settings (temperature, top-p, top-k, seed) and send it on
    4. rows whose request finished (a stop token, or max_new_tokens) leave; the last row moves
       into the hole, so the running rows are always cache rows 0 .. n-1

The KV cache is one buffer (rows, kv_heads, columns, d_head) per layer, with a single column
clock: every row's tokens end at column `clock`, and the decode step writes the new tokens'
keys there. A row that joined later starts at a later column; the columns before it are
masked out (the cache's key_mask) and each row passes its own token positions to RoPE, so a
request's output is the same as if it ran alone. When the clock reaches the buffer's end, the
buffer grows (up to the context length), or every row moves left by the columns no row uses.

`Scheduler.run` is this loop, on the one thread that owns the model; `submit` (any thread)
queues a request and returns at once. A request's results come back through its `emit`
callback: `Scores` (its prompt's log-probabilities, when asked), then one `Token` per step, then
`Finished`.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llm.generating import SamplingConfig, left_pad, sample_next
from llm.transformer import KVCache, Transformer

TopLogprobs = list[tuple[int, float]]  # (token id, log-probability), most likely first


@dataclass
class Token:
    """A generated token, with its log-probability and the most likely alternatives (when the
    request asked for logprobs). The last one may be a stop token (stop=True), which ends the
    request: sent for its log-probability (as vLLM does), never as text."""

    id: int
    logprob: float | None = None
    top: TopLogprobs | None = None
    stop: bool = False


@dataclass
class Scores:
    """The log-probability of each prompt token after the first, given the tokens before it."""

    logprobs: list[float]
    top: list[TopLogprobs] | None = None


@dataclass
class Finished:
    reason: str  # "stop" (a stop token), "length" (max_new_tokens), "cancelled" or "error"
    message: str = ""  # for "error": what went wrong


Output = Token | Scores | Finished


@dataclass(eq=False)
class Request:
    """One sequence to generate. sampling.max_new_tokens may be 0 (score the prompt only)."""

    prompt: list[int]
    sampling: SamplingConfig
    emit: Callable[[Output], None]  # called on the model's thread: must not block
    stop_ids: frozenset[int] = frozenset()  # generation ends at any of these (see Token)
    logprobs: int | None = None  # None: no log-probs; k: the chosen token's, and the top k
    prompt_logprobs: bool = False  # send the prompt's Scores before the first token
    cancelled: bool = False  # set by any thread: the request leaves at the next step


@dataclass(eq=False)
class _Row:
    request: Request
    start: int  # the cache column of its first token
    last: int = 0  # the newest token, fed to the model at the next decode step
    generated: int = 0
    generator: torch.Generator | None = None


@dataclass
class Stats:
    """Counters for /metrics (read from other threads; each field is replaced whole)."""

    running: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # by reason
    recent: deque = field(default_factory=lambda: deque(maxlen=256))  # (time, tokens) per step

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds."""
        now = time.monotonic()
        return sum(n for t, n in list(self.recent) if now - t <= window) / window


class QueueFull(Exception):
    """More requests wait than the scheduler's max_queue."""


class Scheduler:
    """The continuous batching loop (see the module docstring) around one model."""

    def __init__(self, model: Transformer, max_batch: int = 16, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, "
                             f"got {max_batch} and {max_queue}")  # fmt: skip
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.device = model.embedding.weight.device  # (lm_head may be quantised)
        self.context = model.config.context_length
        self.waiting: deque[Request] = deque()
        self.wakeup = threading.Condition()
        self.rows: list[_Row] = []
        self.clock = 0  # every running row's tokens end at this cache column
        self.stats = Stats()
        self._allocate(min(self.context, 64))

    # ---- the interface for other threads

    def submit(self, request: Request) -> None:
        """Queue a request (QueueFull when max_queue requests already wait)."""
        room = self.context - request.sampling.max_new_tokens
        if not 0 < len(request.prompt) <= room:
            raise ValueError(
                f"the prompt has {len(request.prompt)} tokens: it needs 1 to "
                f"{room} (the context length {self.context} less max_new_tokens)"
            )
        with self.wakeup:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already")
            self.waiting.append(request)
            self.wakeup.notify()

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; sleeps while there is nothing to do."""
        while not stop.is_set():
            with self.wakeup:
                if not self.rows and not self.waiting:
                    self.wakeup.wait(timeout=0.1)
            self.step()

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Run two short requests through the loop before serving: decoding steps of two rows,
        then of one, so that a model whose steps are compiled (llm.generating.compile_decoding)
        compiles them now rather than on its first clients. Errors are raised, not sent to the
        requests as step() does; the counters start again at zero afterwards."""
        for new_tokens in (3, 6):
            sampling = SamplingConfig(max_new_tokens=new_tokens, temperature=0)
            self.submit(Request([0], sampling, emit=lambda output: None))
        while self.rows or self.waiting:
            self._admit()
            if self.rows:
                self._decode()
        self.stats = Stats()

    # ---- the loop

    @torch.inference_mode()
    def step(self) -> None:
        """One iteration: drop cancelled rows, admit waiting requests, decode one token."""
        try:
            self._leave([r for r in self.rows if r.request.cancelled], "cancelled")
            self._admit()
            if self.rows:
                self._decode()
            self._compact()
        except Exception as e:  # a bug or out of memory: fail these requests, keep serving
            self._leave(list(self.rows), "error", f"{type(e).__name__}: {e}")
            self.clock = 0
        self.stats.running = len(self.rows)

    def _admit(self) -> None:
        joining = []
        with self.wakeup:
            while self.waiting and len(self.rows) + len(joining) < self.max_batch:
                request = self.waiting.popleft()
                if not request.cancelled:
                    joining.append(request)
        # Prompts to score need every position's logits: (width, vocab) each, so one at a time.
        scored = [r for r in joining if r.prompt_logprobs]
        plain = [r for r in joining if not r.prompt_logprobs]
        groups = ([plain] if plain else []) + [[r] for r in scored]
        for i, group in enumerate(groups):
            try:
                self._prefill(group)
            except Exception as e:  # these requests never got a row: fail them here
                for request in (r for g in groups[i:] for r in g):
                    request.emit(Finished("error", f"{type(e).__name__}: {e}"))
                raise

    def _prefill(self, requests: list[Request]) -> None:
        """Run the prompts through the model into new rows whose tokens end at the clock, and
        sample each one's first token."""
        width = max(len(r.prompt) for r in requests)
        if not self.rows:
            self.clock = 0
        if self.clock < width:  # make room before the clock: move the running rows right
            self._room(width)
            self._shift(self.clock - width)
        first = len(self.rows)
        rows = [_Row(r, self.clock - len(r.prompt), generator=_generator(r, self.device))
                for r in requests]  # fmt: skip
        ids, is_real = left_pad([r.prompt for r in requests])  # (k, width)
        positions = (is_real.cumsum(dim=1) - 1).clamp(min=0)  # each prompt starts at 0
        self.key_mask[first:, : self.clock] = False
        self.key_mask[first : first + len(rows), self.clock - width : self.clock] = is_real
        cache = self._cache(first, len(rows), self.clock - width)
        scored = requests[0].prompt_logprobs
        logits = self.model(ids.to(self.device), cache, last_only=not scored,
                            token_positions=positions.to(self.device))  # fmt: skip
        self.rows += rows
        self.stats.prompt_tokens += int(is_real.sum())
        if scored:
            request = requests[0]
            request.emit(_scores(logits[0, :-1], request.prompt[1:], request.logprobs))
        self._sampled(rows, logits[:, -1])

    def _decode(self) -> None:
        """Feed every row's newest token at the clock column; sample the next ones."""
        if self.clock == self.capacity:
            if self.capacity < self.context:
                self._room(self.clock + 1)
            else:  # full: move every row left, past the columns no row uses any more
                self._shift(min(r.start for r in self.rows))
        n = len(self.rows)
        tokens = torch.tensor([[r.last] for r in self.rows], device=self.device)  # (n, 1)
        positions = torch.tensor([[self.clock - r.start] for r in self.rows], device=self.device)
        self.key_mask[:n, self.clock] = True
        logits = self.model(tokens, self._cache(0, n, self.clock), last_only=True,
                            token_positions=positions)[:, -1]  # (n, vocab) # fmt: skip
        self.clock += 1
        self._sampled(list(self.rows), logits)
        self.stats.recent.append((time.monotonic(), n))

    def _sampled(self, rows: list[_Row], logits: Tensor) -> None:
        """Sample each row's next token from its logits (rows, vocab), send it on, and let the
        finished rows leave."""
        done: dict[str, list[_Row]] = {"stop": [], "length": []}
        for row, row_logits in zip(rows, logits, strict=True):
            s = row.request.sampling
            if row.generated >= s.max_new_tokens:  # max_new_tokens 0: only the prompt's scores
                done["length"].append(row)
                continue
            token = int(sample_next(row_logits[None], s.temperature, s.top_p, s.top_k,
                                    row.generator))  # fmt: skip
            stop = token in row.request.stop_ids
            row.last, row.generated = token, row.generated + 1
            row.request.emit(_token(token, row_logits, row.request.logprobs, stop))
            self.stats.generated_tokens += 1
            if stop:
                done["stop"].append(row)
            elif row.generated == s.max_new_tokens:
                done["length"].append(row)
        for reason, leaving in done.items():
            self._leave(leaving, reason)

    def _leave(self, leaving: list[_Row], reason: str, message: str = "") -> None:
        """Finish these rows' requests; the last running row moves into each freed row."""
        for row in leaving:
            i, last = self.rows.index(row), len(self.rows) - 1
            if i != last:
                for buffer in self.keys + self.values + [self.key_mask]:
                    buffer[i] = buffer[last]
                self.rows[i] = self.rows[last]
            self.rows.pop()
            row.request.emit(Finished(reason, message))
            self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1

    # ---- the KV cache

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @torch.inference_mode()  # (always: a compiled step sees the same kind of tensor each time)
    def _allocate(self, capacity: int) -> None:
        c, weight = self.model.config, self.model.embedding.weight
        shape = (self.max_batch, c.kv_heads, capacity, c.d_head)
        self.keys = [weight.new_zeros(shape) for _ in range(c.num_layers)]
        self.values = [weight.new_zeros(shape) for _ in range(c.num_layers)]
        self.key_mask = torch.zeros(self.max_batch, capacity, dtype=torch.bool, device=self.device)

    def _room(self, columns: int) -> None:
        """Grow the buffers (doubling, at most to the context length) to hold `columns`."""
        if columns <= self.capacity:
            return
        keys, values, key_mask, old = self.keys, self.values, self.key_mask, self.capacity
        self._allocate(min(max(columns, 2 * old), self.context))
        for new, buffer in zip(self.keys + self.values, keys + values, strict=True):
            new[:, :, :old] = buffer  # (rows, kv_heads, columns, d_head)
        self.key_mask[:, :old] = key_mask

    def _compact(self) -> None:
        """Move the rows left once more than half the columns before the clock are unused (the
        rows that used them left), so that attention reads fewer columns."""
        unused = min((r.start for r in self.rows), default=0)
        if unused > self.clock // 2:
            self._shift(unused)

    def _shift(self, by: int) -> None:
        """Move the running rows `by` columns left (by > 0) or right (by < 0)."""
        n, clock = len(self.rows), self.clock
        for buffer in self.keys + self.values:  # (rows, heads, columns, d_head)
            buffer[:n, :, max(0, -by) : clock - by] = buffer[:n, :, max(0, by) : clock].clone()
        self.key_mask[:n, max(0, -by) : clock - by] = self.key_mask[:n, max(0, by) : clock].clone()
        if by < 0:
            self.key_mask[:n, :-by] = False
        for row in self.rows:
            row.start -= by
        self.clock -= by

    def _cache(self, first: int, n: int, length: int) -> KVCache:
        """A view of rows first .. first + n - 1 of the buffers, holding `length` columns."""
        rows = slice(first, first + n)
        return KVCache(keys=[k[rows] for k in self.keys], values=[v[rows] for v in self.values],
                       length=length, key_mask=self.key_mask[rows])  # fmt: skip


def _generator(request: Request, device: torch.device) -> torch.Generator | None:
    seed = request.sampling.seed
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def _top(logprobs: Tensor, k: int) -> TopLogprobs:  # logprobs: (vocab,)
    values, ids = torch.topk(logprobs, k)
    return list(zip(ids.tolist(), values.tolist(), strict=True))


def _token(token: int, logits: Tensor, logprobs: int | None, stop: bool) -> Token:
    if logprobs is None:
        return Token(token, stop=stop)
    lp = torch.log_softmax(logits.float(), dim=-1)
    return Token(token, float(lp[token]), _top(lp, logprobs) if logprobs else [], stop)


def _scores(logits: Tensor, targets: list[int], logprobs: int | None) -> Scores:
    """Scores of the targets (seq,) under the logits (seq, vocab) that predict them."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (seq, vocab)
    chosen = lp.gather(-1, torch.tensor(targets, device=lp.device)[:, None])[:, 0].tolist()
    top = [_top(row, logprobs) for row in lp] if logprobs else None
    return Scores(chosen, top)
