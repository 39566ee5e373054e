"""Pseudo-terminal plumbing shared by all serial twins: a stable symlink, unplug and replug."""

from __future__ import annotations

import contextlib
import os
import select
import termios
import threading
import tty
from pathlib import Path
from typing import Self


class PtyTwin:
    """Base of a serial-device twin on the master side of os.openpty().

    The driver under test opens `path` (a symlink to the current slave, so it survives
    `unplug()`/`replug()`, which close the pty and open a fresh one) through
    serial.serial_for_url(path), unchanged. Subclasses implement `serve()`, a loop that
    runs until `self.stop_event` is set, using `write()` / `read_request()`.
    """

    name = "twin"

    def __init__(self, link: str | os.PathLike[str] | None = None) -> None:
        self._link = Path(link) if link is not None else None
        self.stop_event = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._plugged = threading.Event()

    # -- lifecycle --------------------------------------------------------
    @property
    def path(self) -> str:
        """What a driver opens: the stable symlink if one was asked for, else the slave device."""
        return str(self._link) if self._link is not None else self._slave_name

    def start(self) -> Self:
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name=f"twin-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._plugged.set()
        if self._thread is not None:
            self._thread.join(3)
        self._close_pty()
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the cable: the pty closes, a driver reading it gets an error or EOF.

        The symlink goes too, as /dev/ttyUSB0 does when a USB adapter is pulled: left in place
        it would name a /dev/pts number the kernel may hand to another program's pty.
        """
        self._plugged.clear()
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()
        self._close_pty()

    def replug(self) -> None:
        """Plug back in: a fresh pty behind the same symlink."""
        self._open_pty()

    # -- I/O for subclasses ------------------------------------------------
    def write(self, data: bytes) -> bool:
        """Write bytes to the line; False when unplugged (the bytes are lost, as on a wire)."""
        with self._lock:
            fd = self._master
        if fd is None:
            return False
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            return False
        return True

    def read_request(self, timeout_s: float, terminator: bytes = b"\r", max_len: int = 4096) -> bytes | None:
        """Read bytes the driver sent until `terminator` (for command/response devices)."""
        buf = bytearray()
        deadline = _now() + timeout_s
        while not self.stop_event.is_set():
            with self._lock:
                fd = self._master
            if fd is None:
                self._plugged.wait(0.05)
                if _now() > deadline:
                    return None
                continue
            remaining = deadline - _now()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], min(remaining, 0.05))
                if not ready:
                    continue
                chunk = os.read(fd, 1)
            except OSError:
                self._plugged.wait(0.05)
                continue
            buf += chunk
            if buf.endswith(terminator) or len(buf) >= max_len:
                return bytes(buf)
        return None

    def read_available(self, timeout_s: float) -> bytes:
        """Whatever bytes the driver sent within `timeout_s` (for binary request/response)."""
        with self._lock:
            fd = self._master
        if fd is None:
            self.stop_event.wait(timeout_s)
            return b""
        try:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                return b""
            return os.read(fd, 4096)
        except OSError:
            return b""

    def wait_plugged(self, timeout_s: float) -> bool:
        return self._plugged.wait(timeout_s)

    def serve(self) -> None:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    # -- internals --------------------------------------------------------
    def _run(self) -> None:
        try:
            self.serve()
        finally:
            self.stop_event.set()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        with self._lock:
            self._master, self._slave = master, slave
            self._slave_name = os.ttyname(slave)
        if self._link is not None:
            tmp = self._link.with_name(self._link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_name)
            os.replace(tmp, self._link)
        self._plugged.set()

    def _close_pty(self) -> None:
        with self._lock:
            master, slave = self._master, self._slave
            self._master = self._slave = None
        for fd in (master, slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _now() -> float:
    import time

    return time.monotonic()
