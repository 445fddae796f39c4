"""Ctrl-C and SIGTERM as a stop request (StopSignals) or as an exception (sigterm_raises), with
the handlers from before put back afterwards."""

import signal
import threading

import pytest

from llm.stop_signals import StopSignals, Terminated, sigterm_raises


@pytest.fixture
def outside_handlers():
    """Handlers installed before the block, which must see nothing inside it."""
    seen = []
    handlers = {
        sig: lambda signum, frame: seen.append(signum) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    yield handlers, seen
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_signals_become_a_stop_request_and_the_handlers_come_back(outside_handlers, capsys):
    handlers, seen = outside_handlers
    with StopSignals("stopping soon") as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.received == [signal.SIGTERM]
    assert seen == []
    assert capsys.readouterr().err == "SIGTERM: stopping soon\n"
    for sig, handler in handlers.items():
        assert signal.getsignal(sig) is handler


def test_a_second_ctrl_c_interrupts_at_once():
    # Python's own Ctrl-C handler before the block, whatever an earlier test in this worker
    # process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), StopSignals("stopping") as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.received == [signal.SIGINT]
            signal.raise_signal(signal.SIGINT)  # the default handler again: KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_without_once_every_signal_is_noted(outside_handlers):
    with StopSignals("stopping", once=False) as stop:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            signal.raise_signal(sig)
    assert stop.received == [signal.SIGINT, signal.SIGINT, signal.SIGTERM]
    assert outside_handlers[1] == []


def test_outside_the_main_thread_nothing_changes(outside_handlers):
    errors = []

    def enter_and_leave():
        try:
            with StopSignals("stopping"):
                pass
        except ValueError as e:  # signal.signal outside the main thread
            errors.append(e)

    thread = threading.Thread(target=enter_and_leave)
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is outside_handlers[0][signal.SIGINT]


def test_sigterm_raises_inside_the_block_only(outside_handlers):
    handlers, seen = outside_handlers
    with pytest.raises(Terminated, match="^cleaned up$"), sigterm_raises("cleaned up"):
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM] and seen == []
    signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
