"""Small helpers several test modules share: polling, reading a driver, exporting and verifying records."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.drivers.base import FrameError
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.records import parse_line
from edge_agent.spine.verify import Verifier


def wait_until(pred: Callable[[], object], timeout_s: float = 20.0) -> bool:
    """Poll `pred` every 50 ms until it is true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def read_until(driver: Any, n: int, timeout_s: float = 5.0) -> tuple[list[Any], list[FrameError]]:
    """Up to `n` readings from an open driver within `timeout_s`, and the bad frames it raised meanwhile."""
    got: list[Any] = []
    bad: list[FrameError] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        try:
            r = driver.read(0.2)
        except FrameError as exc:
            bad.append(exc)
            continue
        if r is not None:
            got.append(r)
    return got, bad


def export_records(db_path: Path) -> list[dict[str, Any]]:
    """Every stored record, in seq order, as dicts."""
    ob = Outbox(db_path, readonly=True)
    try:
        return [parse_line(d) for d in ob.export()]
    finally:
        ob.close()


def verify_records(records: list[dict[str, Any]], keys: list[Any]) -> Verifier:
    """A finished strict-order Verifier over `records`."""
    v = Verifier(keys, strict_order=True)
    for r in records:
        v.add(r)
    v.finish()
    return v


def unplug_replug(
    driver: Any, twin: Any, n_after: int, *, lost: str = r"(read|write) failed", timeout_s: float = 3.0
) -> list[Any]:
    """Read, pull the twin's cable, see the driver report it and fail to reopen, plug back, read again.

    Returns the readings after the replug; the twin is stopped and the driver closed either way.
    """
    import pytest

    from edge_agent.drivers.base import DeviceUnavailable

    try:
        driver.open()
        assert read_until(driver, 2, timeout_s)[0], "no reading before the unplug"
        twin.unplug()
        with pytest.raises(DeviceUnavailable, match=lost):
            read_until(driver, 100, 2.0)
        driver.close()
        with pytest.raises(DeviceUnavailable, match="cannot open"):
            driver.open()
        twin.replug()
        driver.open()
        got, _ = read_until(driver, n_after, timeout_s)
    finally:
        driver.close()
        twin.stop()
    return got
