"""parallel_map: worker processes that a SIGTERM stops cleanly, whenever it comes."""

import multiprocessing
import os
import signal

import pytest

from llm.pretokenization import parallel_map


class Stop(Exception):
    pass


def raise_stop(signum, frame):
    raise Stop


def sigterm_disposition(job) -> tuple[bool, bool]:
    """(SIGTERM has its default action, SIGTERM is blocked), in a worker."""
    blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, blocked


def test_workers_die_on_sigterm_whatever_the_parent_does():
    # A forked worker inherits its parent's handler; one that raises would keep it alive.
    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        assert list(parallel_map(sigterm_disposition, [1, 2], 2)) == [(True, False)] * 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_while_workers_start_is_raised_once_they_can_be_stopped(monkeypatch):
    # Raised at once, between a worker's start and the pool's record of it, the exception
    # would leave that worker running, stopped by nobody.
    start = multiprocessing.process.BaseProcess.start

    def start_then_sigterm(process):
        start(process)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_then_sigterm)
    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        with pytest.raises(Stop):
            list(parallel_map(abs, [1, 2], 2))
        assert multiprocessing.active_children() == []
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in multiprocessing.active_children():
            process.kill()
