"""The driver contract, its exceptions and the runner that owns reconnects."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class DriverError(Exception):
    """Base of driver errors."""


class DeviceUnavailable(DriverError):
    """Port missing or silent: the runner reopens with backoff."""


class NotSerialDevice(DeviceUnavailable):
    """The port is a regular file or a directory (a recorded log, a mistyped path that exists): no plugging in will
    help."""


class PortBusy(DeviceUnavailable):
    """Another process holds the port's lock: the running agent, when a probe (doctor, sensors list) asks."""


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

    Logs WARNING once when the device goes away, DEBUG on repeats and INFO on recovery (the first
    reading after an outage, not a mere open that fails again). A connection that opens but yields
    nothing backs off like a failed open, so a flapping device is not reopened in a hot loop.
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
        self.reading_errors = 0
        self._outage = False
        self._outage_attempts = 0
        self.heartbeat = time.monotonic()
        self._thread: threading.Thread | None = None

    @property
    def recovering(self) -> bool:
        """Lost (last_error says why) and no reading since, though the port may have opened again: a device that
        opens but then never reads (garbage at a wrong baud rate) is 'connected' only between its failures."""
        return self._outage

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"driver-{self.driver.name}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        delay = self.backoff_min_s
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.driver.open()
            except Exception as exc:  # noqa: BLE001 - a driver bug must not end the thread
                self._note_outage("device unavailable", exc)
                self.driver.close()
                self.stop.wait(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self.connected = True
            frames_before = self.frames_ok
            try:
                self._read_loop()
            except Exception as exc:  # noqa: BLE001 - DeviceUnavailable, or a driver bug: reopen either way
                self.reconnects += 1
                self._note_outage("device lost", exc)
            finally:
                self.connected = False
                self.driver.close()
            if self.frames_ok > frames_before:
                delay = self.backoff_min_s  # it worked for a while: reopen at once
            else:
                # Opened but nothing came through (a flapping device): back off as for a failed open.
                self.stop.wait(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, self.backoff_max_s)
        self.driver.close()

    def _note_outage(self, what: str, exc: Exception) -> None:
        """WARNING for the first failure of an outage, DEBUG for the repeats; a traceback if unexpected."""
        self.last_error = str(exc) or type(exc).__name__
        unexpected = not isinstance(exc, DeviceUnavailable)
        if not self._outage:
            self._outage = True
            self._outage_attempts = 0
            log.warning(
                "%s: %s (%s); retrying with backoff", self.driver.name, what, self.last_error, exc_info=unexpected
            )
        else:
            log.debug("%s: still unavailable: %s", self.driver.name, self.last_error)
        self._outage_attempts += 1

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
            if self._outage:
                self._outage = False
                log.info("%s: device back after %d attempt(s)", self.driver.name, self._outage_attempts)
            try:
                self.on_reading(reading)
            except Exception:  # a pipeline bug must not stop the device being read
                self.reading_errors += 1
                if self.reading_errors == 1:
                    log.exception("%s: reading handler failed (further failures logged at DEBUG)", self.driver.name)
                else:
                    log.debug("%s: reading handler failed again", self.driver.name)


def open_serial(port: str, **settings: Any) -> Any:
    """serial.serial_for_url(port, **settings); DeviceUnavailable naming the port when it cannot open.

    A pty path, /dev/ttyUSB0, /dev/serial/by-id/... and pyserial URLs (socket://, rfc2217://) all work.
    The port is locked for this process (`exclusive`, an flock): a probe run beside the agent (doctor,
    sensors list) then finds it busy (PortBusy) instead of resetting an adapter the agent is using.
    """
    import serial

    settings.setdefault("exclusive", True)
    try:
        return serial.serial_for_url(port, **settings)
    except (serial.SerialException, OSError, ValueError) as exc:
        if "exclusively lock" in str(exc):
            raise PortBusy(f"{port}: {BUSY}") from None
        # pyserial only says "Inappropriate ioctl for device" of a file, "[Errno 21] ... Is a directory" of a folder
        # (/dev/serial/by-id/ itself rather than the link in it)
        what = "a regular file" if os.path.isfile(port) else "a directory" if os.path.isdir(port) else None
        if what is not None:
            raise NotSerialDevice(
                f"{port}: cannot open: {what}, not a serial device (expected a tty such as /dev/ttyUSB0, "
                "a pty or a pyserial URL such as socket://host:port)"
            ) from None
        raise DeviceUnavailable(f"{port}: cannot open: {exc}") from None


BUSY = "in use by another process (the running agent?), left alone"


def close_quietly(ser: Any, name: str) -> None:
    """Close a port that may already be gone (unplugged); a failure is only worth a DEBUG line."""
    import serial

    if ser is None:
        return
    try:
        ser.close()
    except (serial.SerialException, OSError) as exc:
        log.debug("%s: close failed: %s", name, exc)
