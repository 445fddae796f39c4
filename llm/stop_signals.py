"""Stopping a command on Ctrl-C (SIGINT) or SIGTERM, cleanly, the two ways our commands need.

`StopSignals`: a request to stop, which the program acts on when it is ready. A training run
finishes its step and saves a checkpoint; a sweep passes the request on to its runs and waits
for them. A cluster scheduler sends SIGTERM before it kills a job, so both signals count.

    with StopSignals("stopping after this step") as stop:
        while not stop.requested:
            step()

`sigterm_raises`: for a command with nothing to save (the tokenizer's), SIGTERM stops it at
once, as Ctrl-C does, by raising an exception, so that every `with` block cleans up: temp files
are deleted and worker processes stopped. SIGTERM's default action ends the process on the spot.

Both put the previous handlers back at the end of their block. (llm/pretokenization.py has a
third, `_sigterm_held`, of another kind: it holds a SIGTERM back while worker processes are
forked, then delivers it to whatever handler is in place.)
"""

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class StopSignals:
    """Inside the `with` block, SIGINT and SIGTERM do not interrupt: each one is added to
    `received` and announced on stderr as "SIGINT: `message`". With `once` (the default), the
    first signal gives Ctrl-C back its previous handler, so that a second Ctrl-C interrupts at
    once; without it, every signal is only noted (a sweep forwards each to its runs). Only the
    main thread may set handlers: in another thread the block changes nothing."""

    def __init__(self, message: str, once: bool = True) -> None:
        self.message = message
        self.once = once
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self.once:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])
        tqdm.write(f"{signal.Signals(signum).name}: {self.message}", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Terminated(Exception):
    """SIGTERM arrived inside `sigterm_raises`."""


@contextmanager
def sigterm_raises(message: str) -> Iterator[None]:
    """Inside the block, SIGTERM raises Terminated(message) in the main thread."""

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(message)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
