"""Signals (SIGTERM, SIGINT, SIGHUP) handed to a thread of their own, so that acting on one takes no risk.

Python runs a signal handler in the main thread, between two bytecodes of whatever that thread was doing.
A handler that calls `threading.Event.set()` waits for the event's lock, and when the signal landed while
the main thread was inside `wait()` or `clear()` of that same event, its own thread holds that lock: the
process never stops. An agent in CI ignored SIGTERM for 30 s (its main loop entered `stop_event.wait()` 200
times a second, with health records every 5 ms); a child process doing only that hung on 100 of 200 SIGTERMs.

Here the handler only writes the signal's number into a pipe, which takes no lock. A daemon thread reads
the pipe and calls `on_signal(signum)` as ordinary code, which may then log, set events and take locks.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_QUIT = 0  # not a signal number: tells the relay thread to end
# The signals our processes handle (the relay's, and faulthandler's stack dump): those that can cut a wait short.
HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1})

T = TypeVar("T")


class SignalRelay:
    """Calls `on_signal(signum)` from the `signals` thread for each of `signals` this process receives.

    `start()` must run in the main thread (Python's rule for installing handlers: ValueError elsewhere);
    `stop()`, or leaving the `with` block, puts the previous handlers back.
    """

    def __init__(self, on_signal: Callable[[int], None], signals: Iterable[int] = STOP_SIGNALS) -> None:
        self._on_signal = on_signal
        self._signals = tuple(signals)
        self._old: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)  # a full pipe drops a repeat signal; it never blocks the handler

    def start(self) -> SignalRelay:
        try:
            for s in self._signals:
                self._old[s] = signal.signal(s, self._handler)
        except ValueError:
            self._restore()
            self._close()
            raise
        self._thread = threading.Thread(target=self._relay, name="signals", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._restore()
        if self._thread is not None:
            self._write(_QUIT)
            self._thread.join(5)
            self._thread = None
        self._close()

    def __enter__(self) -> SignalRelay:
        return self.start()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.stop()

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self._write(signum)  # nothing else here: no lock, no logging, no event

    def _write(self, value: int) -> None:
        # A full pipe already holds signals to act on; a closed one belongs to a stopped relay.
        with contextlib.suppress(OSError):
            os.write(self._w, bytes([value]))

    def _relay(self) -> None:
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            for signum in data:
                if signum == _QUIT:
                    return
                try:
                    self._on_signal(signum)
                except Exception:
                    log.exception("acting on %s failed", signal.Signals(signum).name)

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def _close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._r = self._w = -1


@contextlib.contextmanager
def stack_dumps() -> Iterator[None]:
    """A stuck process says where: every thread's stack goes to stderr (the journal) on SIGUSR1, and on
    SIGABRT (systemd's watchdog, or a stop stuck past TimeoutStopSec). faulthandler writes them from C,
    so they come out even when every Python thread is blocked."""
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        yield
    finally:
        faulthandler.unregister(signal.SIGUSR1)


def get_within(q: queue.SimpleQueue[T], timeout: float) -> T:
    """`q.get(timeout=timeout)`, but sure to end by its timeout (queue.Empty) when a signal lands meanwhile.

    The C SimpleQueue.get of CPython 3.11 and 3.12 (not 3.13) waits for ever when a signal interrupts its
    wait and the deadline passes before it waits again (running the handler, or getting the GIL back): the
    time left turns negative, which the lock reads as "no timeout". The ingest worker's main thread sat in
    get(timeout=0.2) for good after SIGTERM in CI. Here the handled signals are blocked in this thread for the wait, so
    none can interrupt it: the kernel gives them to another thread, and Python runs their handlers in the
    main thread as soon as the wait ends (at the latest when the mask is restored). queue.Queue has no
    such fault, but costs ten times as much per message.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        return q.get(timeout=timeout)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
