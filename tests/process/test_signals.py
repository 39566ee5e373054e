"""The signal relay every long-running command stops through (edge_agent/signals.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from edge_agent.signals import SignalRelay

# The main thread holds a lock when the signals come, as it does inside Event.wait() and Event.clear().
# signal.raise_signal() runs Python's handler inside the call, in this thread: a handler that needed the
# lock (Event.set() on the event being waited on, as the agent's once did) would wait there for ever.
CHILD = """
import signal, threading
from edge_agent.signals import SignalRelay

held = threading.Lock()
got, both = [], threading.Event()

def on_signal(signum):
    with held:
        got.append(signum)
    if len(got) == 2:
        both.set()

with SignalRelay(on_signal, (signal.SIGTERM, signal.SIGHUP)):
    with held:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGHUP)
    print(both.wait(30), got, flush=True)
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)
"""


def test_signal_relay__acts_on_signals_that_land_while_the_main_thread_holds_a_lock_then_restores_handlers() -> None:
    try:
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"a signal handler waited for a lock its own thread held:\n{exc.stdout!r}")
    assert out.stdout.splitlines() == [f"True [{int(signal.SIGTERM)}, {int(signal.SIGHUP)}]", "True True"]


def test_signal_relay__outside_the_main_thread_refuses_and_leaves_the_handlers_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SignalRelay(lambda _signum: None).start()
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=start)
    t.start()
    t.join(10)
    assert len(errors) == 1, "Python installs handlers only in the main thread: start() must say so"
    assert signal.getsignal(signal.SIGTERM) is before
