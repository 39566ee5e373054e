"""The signal relay every long-running command stops through (edge_agent/signals.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_agent.signals import SignalRelay
from tests.helpers import wait_until

# The main thread holds a lock when the signals come, as it does inside Event.wait() and Event.clear().
# signal.raise_signal() runs Python's handler inside the call, in this thread: a handler that needed the
# lock (Event.set() on the event being waited on, as the agent's once did) would wait there for ever.
CHILD = """
import signal, threading
from edge_agent.signals import SignalRelay

held = threading.Lock()
got, both = [], threading.Event()
# What the process had before: under nohup SIGHUP is ignored (SIG_IGN), and that is what comes back.
before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))

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
print(signal.getsignal(signal.SIGTERM) is before[0], signal.getsignal(signal.SIGHUP) is before[1])
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


# One thread, waiting in a SimpleQueue for 1 s, three times; SIGHUP comes while it waits. The handler is still
# running when the wait's deadline passes, as a handler (or the wait for the GIL after one) does on a busy
# machine. CPython 3.11's and 3.12's own get(timeout=...) then wait for ever: the ingest worker did, after SIGTERM.
SLOW_HANDLER_CHILD = """
import queue, signal, threading, time
from edge_agent.signals import get_within

q = queue.SimpleQueue()
deadline = 0.0

def slow(_signum, _frame):
    while (left := deadline - time.monotonic()) > 0:
        threading.Event().wait(left)
    print("handled", flush=True)

signal.signal(signal.SIGHUP, slow)
for _ in range(3):
    deadline = time.monotonic() + 1.0
    print("waiting", flush=True)
    try:
        get_within(q, 1.0)
    except queue.Empty:
        print("empty", flush=True)
"""


def _asleep(pid: int) -> bool:
    """The process's only thread is blocked (state S): here, inside the queue's wait."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"


def test_get_within__ends_by_its_timeout_when_a_slow_signal_handler_runs_during_the_wait() -> None:
    child = subprocess.Popen([sys.executable, "-c", SLOW_HANDLER_CHILD], stdout=subprocess.PIPE, text=True)
    guard = threading.Timer(60, child.kill)  # a wait that never ends shows as a missing line, not a hung suite
    guard.start()
    try:
        assert child.stdout is not None
        for _ in range(3):
            assert child.stdout.readline() == "waiting\n"
            assert wait_until(lambda: _asleep(child.pid), 10)
            os.kill(child.pid, signal.SIGHUP)
            lines = [child.stdout.readline(), child.stdout.readline()]
            # the handler runs as the wait ends: before or after Empty is raised
            assert sorted(lines) == ["empty\n", "handled\n"], f"the wait did not end by its timeout: {lines}"
        assert child.wait(10) == 0
    finally:
        guard.cancel()
        child.kill()
        child.wait()
