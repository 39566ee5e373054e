"""The driver contract, its exceptions and the runner that owns reconnects."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class DriverError(Exception):
    """Base of driver errors."""


class DeviceUnavailable(DriverError):
    """Port missing or silent: the runner reopens with backoff."""


class FrameError(DriverError):
    """One malformed frame: counted and dropped, never fatal."""


class Driver(Protocol[R_co]):
    """A small contract: constructors do no I/O; the runner owns retries."""

    name: str

    def open(self) -> None:
        """Open the device; raise DeviceUnavailable when it is not there."""

    def read(self, timeout_s: float) -> R_co | None:
        """Return one reading, or None when nothing complete arrived in time.

        Raise FrameError for one malformed frame, DeviceUnavailable when the
        device went away.
        """

    def close(self) -> None:
        """Close; safe to call twice."""


class DriverRunner(Generic[R]):
    """Runs one driver in its own thread: reads, reconnects with backoff, counts bad frames.

    Logs WARNING once when the device goes away, DEBUG on repeats and INFO on recovery.
    """

    def __init__(
        self,
        driver: Driver[R],
        on_reading: Callable[[R], None],
        stop: threading.Event,
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
        read_timeout_s: float = 0.5,
    ) -> None:
        self.driver = driver
        self.on_reading = on_reading
        self.stop = stop
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.read_timeout_s = read_timeout_s
        self.frames_ok = 0
        self.frames_bad = 0
        self.reconnects = 0
        self.connected = False
        self.last_error: str | None = None
        self.heartbeat = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"driver-{self.driver.name}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        delay = self.backoff_min_s
        warned = False
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.driver.open()
            except DeviceUnavailable as exc:
                self.last_error = str(exc)
                if not warned:
                    log.warning("%s: device unavailable (%s); retrying with backoff", self.driver.name, exc)
                    warned = True
                else:
                    log.debug("%s: still unavailable: %s", self.driver.name, exc)
                self.stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            if warned:
                log.info("%s: device back after %d attempt(s)", self.driver.name, self.reconnects + 1)
            self.connected = True
            warned = False
            delay = self.backoff_min_s
            try:
                self._read_loop()
            except DeviceUnavailable as exc:
                self.last_error = str(exc)
                log.warning("%s: device lost (%s); reopening", self.driver.name, exc)
                warned = True
                self.reconnects += 1
            finally:
                self.connected = False
                self.driver.close()
        self.driver.close()

    def _read_loop(self) -> None:
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                reading = self.driver.read(self.read_timeout_s)
            except FrameError as exc:
                self.frames_bad += 1
                log.debug("%s: dropped bad frame: %s", self.driver.name, exc)
                continue
            if reading is None:
                continue
            self.frames_ok += 1
            self.on_reading(reading)
