"""clf.stop_signals: the block's handler runs, each handler is put back exactly, ignored stays ignored, threads."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from clf.stop_signals import STOP_SIGNALS, stop_signals_handled


@pytest.fixture
def own_handlers():
    """SIGINT and SIGTERM handled by Python functions of this test's, and put back after it."""
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    mine = {signum: (lambda received, frame: None) for signum in STOP_SIGNALS}
    for signum, handler in mine.items():
        signal.signal(signum, handler)
    yield mine
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_the_handler_runs_in_the_block_and_the_old_ones_come_back(own_handlers):
    seen: list[tuple[int, object]] = []
    previous: dict[int, object] = {}
    with stop_signals_handled(lambda signum, frame: seen.append((signum, previous[signum])), previous):
        os.kill(os.getpid(), signal.SIGTERM)
    assert seen == [(signal.SIGTERM, own_handlers[signal.SIGTERM])]  # previous was filled before it could run
    assert previous == own_handlers
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == own_handlers


def test_an_ignored_signal_stays_ignored_and_an_exception_still_restores(own_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with pytest.raises(RuntimeError), stop_signals_handled(signal.default_int_handler):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
        raise RuntimeError("the block fails")
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is own_handlers[signal.SIGTERM]


def test_off_the_main_thread_nothing_changes(own_handlers):
    inside: list[dict[int, object]] = []

    def worker() -> None:
        with stop_signals_handled(signal.SIG_IGN):
            inside.append({signum: signal.getsignal(signum) for signum in STOP_SIGNALS})

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert inside == [own_handlers]
