"""Record time and how trustworthy it is: ntp, gps or unsynced (the Pi has no real-time clock)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The record time format lives in the leaf edge_agent.schema (pipelines write it too); importable here as before.
from edge_agent.schema import format_ts

__all__ = ["NTP_SYNC_FLAG", "Clock", "format_ts", "system_clock_synced"]

NTP_SYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def system_clock_synced() -> bool:
    """True when the kernel or timesyncd says the system clock is synchronised."""
    if NTP_SYNC_FLAG.exists():
        return True
    try:
        import ctypes
        import ctypes.util

        class Timex(ctypes.Structure):
            _fields_ = [("modes", ctypes.c_uint), ("pad", ctypes.c_long * 24)]

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = Timex()
        state = libc.adjtimex(ctypes.byref(tx))
        return bool(state != 5)  # TIME_ERROR (5) means unsynchronised
    except (OSError, AttributeError):
        return os.environ.get("EDGE_AGENT_ASSUME_NTP", "") == "1"


class Clock:
    """Gives (time, clock-state). GPS time is used only while the system clock is not synchronised.

    A synchronised system clock (NTP) always wins: a GPS receiver can be spoofed from the roadside,
    and the same time decides whether a signed command has expired. GPS only stands in for a
    clock that has nothing better (a Pi without RTC before NTP reached it).
    """

    def __init__(self, max_skew_s: float = 2.0, *, synced: Callable[[], bool] = system_clock_synced) -> None:
        self.max_skew_s = max_skew_s
        self._lock = threading.Lock()
        self._gps_offset_s: float | None = None  # gps - system, seconds
        self._gps_seen_mono: float | None = None
        self._synced_probe = synced
        self._synced = synced()
        self._synced_checked = time.monotonic()

    def observe_gps(self, gps_utc: datetime) -> None:
        """Feed the time of a valid GPS fix, as soon as it is read."""
        offset = (gps_utc - datetime.now(UTC)).total_seconds()
        with self._lock:
            self._gps_offset_s = offset
            self._gps_seen_mono = time.monotonic()

    @property
    def gps_skew_s(self) -> float | None:
        with self._lock:
            return self._gps_offset_s

    def now(self) -> tuple[datetime, str]:
        t = datetime.now(UTC)
        mono = time.monotonic()
        with self._lock:
            if mono - self._synced_checked > 60:
                self._synced = self._synced_probe()
                self._synced_checked = mono
            offset = self._gps_offset_s
            fresh = self._gps_seen_mono is not None and mono - self._gps_seen_mono < 600
            synced = self._synced
        if synced:
            return t, "ntp"
        if offset is not None and fresh and abs(offset) > self.max_skew_s:
            return t + timedelta(seconds=offset), "gps"
        if offset is not None and fresh:
            return t, "gps"  # the system clock agrees with GPS within the threshold
        return t, "unsynced"

    def security_now(self) -> datetime:
        """The time that decides command expiry and nonce pruning (the same clock for both)."""
        return self.now()[0]
