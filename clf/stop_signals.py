"""SIGINT and SIGTERM (the stop signals) handled another way for a stretch of code, then put back exactly.

Training defers them while checkpoints are written, `clf serve` while ray.init runs and ignores them while Ray shuts
down: one context manager does the swapping for all three. Ground module: the standard library only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Stop signals whose handler ran. Python swallows an exception that a handler raises while some C code runs (an
# extension module's import, a finaliser: "Exception ignored in ..."), and the command would carry on: long phases
# look here before they start (see clf.serve.ray_app).
_received: set[int] = set()


def record_stop(signum: int) -> None:
    """Remember that `signum` arrived (called by the handler that raises for it)."""
    _received.add(signum)


def stop_received(signum: int) -> bool:
    """Whether `signum` arrived since the last forget_stops()."""
    return signum in _received


def forget_stops() -> None:
    """A new command starts (several run in one process under tests): no signal has arrived for it yet."""
    _received.clear()


@contextmanager
def stop_signals_handled(handler: Callable[[int, Any], Any] | int,
                         previous: dict[int, Any] | None = None) -> Iterator[None]:
    """Inside the block ``handler`` handles SIGINT and SIGTERM; afterwards each handler is put back exactly.

    A signal that is ignored (SIG_IGN, as a background job inherits SIGINT) stays ignored, and one whose handler was
    not set from Python (getsignal gives None, which cannot be put back) is left alone. Off the main thread, where
    Python cannot set handlers, nothing changes.

    Args:
        handler: what handles the stop signals in the block: a function (signum, frame), or signal.SIG_IGN.
        previous: filled with every stop signal's handler from before (signum -> handler), before ``handler`` is
            installed, for a handler that hands a signal on to what would have handled it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    if previous is not None:
        previous.update(saved)
    replaced = {signum: before for signum, before in saved.items() if before not in (signal.SIG_IGN, None)}
    for signum in replaced:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in replaced.items():
            signal.signal(signum, before)
