"""Barcode-scanner twins: a serial scanner on a pty, and a keyboard-wedge scanner as a FIFO of input events."""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from edge_agent.drivers.ptytwin import PtyTwin

# A CDC-ACM scanner on a full-speed USB link sends at most one 64-byte bulk packet per frame (1 ms).
USB_PACKET_BYTES = 64


class ScannerTwin(PtyTwin):
    """Types barcodes on a serial line as a CDC-ACM / RS-232 scanner does: prefix + code + suffix + terminator.

    `scan(code)` injects one read; `scenario` is a list of (delay_s, code) played once after start.
    `raw(bytes)` puts arbitrary bytes on the line (line noise, a half-sent code).
    """

    name = "scanner"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        prefix: str = "",
        suffix: str = "",
        terminator: str = "\r",
        encoding: str = "utf-8",
        scenario: Iterable[tuple[float, str]] = (),
        packet_gap_s: float = 0.001,
    ) -> None:
        super().__init__(link)
        self.prefix, self.suffix, self.terminator, self.encoding = prefix, suffix, terminator, encoding
        self.scenario = list(scenario)
        self.packet_gap_s = packet_gap_s
        self._out: queue.Queue[bytes] = queue.Queue()
        self.sent: list[str] = []

    def __enter__(self) -> ScannerTwin:
        self.start()
        return self

    def scan(self, code: str) -> None:
        """Queue one barcode read, framed as the scanner is programmed."""
        self._out.put((self.prefix + code + self.suffix + self.terminator).encode(self.encoding))
        self.sent.append(code)

    def raw(self, data: bytes) -> None:
        self._out.put(data)

    def serve(self) -> None:
        t0 = time.monotonic()
        pending = sorted(self.scenario, key=lambda item: item[0])
        while not self.stop_event.is_set():
            while pending and time.monotonic() - t0 >= pending[0][0]:
                self.scan(pending.pop(0)[1])
            try:
                data = self._out.get(timeout=0.02)
            except queue.Empty:
                continue
            for i in range(0, len(data), USB_PACKET_BYTES):
                self.write(data[i : i + USB_PACKET_BYTES])
                if self.packet_gap_s:
                    self.stop_event.wait(self.packet_gap_s)


# ---------------------------------------------------------------- keyboard wedge

# US layout, character -> (linux key code, shift), written out from the key caps rather than
# shared with the driver's keymap, so a wrong entry cannot hide in both.
_ROWS = (
    ("1234567890-=", "!@#$%^&*()_+", 2),
    ("qwertyuiop[]", "QWERTYUIOP{}", 16),
    ("asdfghjkl;'`", 'ASDFGHJKL:"~', 30),
    ("\\zxcvbnm,./", "|ZXCVBNM<>?", 43),
)
_CHAR_KEYS: dict[str, tuple[int, bool]] = {" ": (57, False)}
for _plain, _shifted, _first in _ROWS:
    for _i, (_p, _s) in enumerate(zip(_plain, _shifted, strict=True)):
        _CHAR_KEYS[_p] = (_first + _i, False)
        _CHAR_KEYS[_s] = (_first + _i, True)
_CTRL_CHARS = {"\x1d": 27}  # GS = Ctrl+]
LEFTSHIFT, LEFTCTRL, ENTER, TAB = 42, 29, 28, 15
_EVENT = struct.Struct("@llHHi")  # struct input_event, native layout
EV_SYN, EV_KEY, SYN_REPORT = 0, 1, 0


def key_events_for(text: str, terminator: str = "enter") -> list[tuple[int, int]]:
    """(key code, value) presses and releases a US-layout keyboard wedge sends to type `text` + terminator."""
    out: list[tuple[int, int]] = []

    def tap(code: int, modifier: int | None) -> None:
        if modifier is not None:
            out.append((modifier, 1))
        out.extend(((code, 1), (code, 0)))
        if modifier is not None:
            out.append((modifier, 0))

    for ch in text:
        if ch in _CTRL_CHARS:
            tap(_CTRL_CHARS[ch], LEFTCTRL)
            continue
        if ch not in _CHAR_KEYS:
            raise ValueError(f"{ch!r} cannot be typed on a US keyboard")
        code, shift = _CHAR_KEYS[ch]
        tap(code, LEFTSHIFT if shift else None)
    tap(ENTER if terminator == "enter" else TAB, None)
    return out


class HidScannerTwin:
    """A keyboard-wedge scanner without uinput: a FIFO carrying the `struct input_event`s a real one produces."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def start(self) -> HidScannerTwin:
        if not (self.path.exists() and stat.S_ISFIFO(self.path.stat().st_mode)):
            os.mkfifo(self.path, 0o600)
        # O_RDWR keeps the FIFO open with no reader yet and never blocks (Linux).
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        return self

    def stop(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> HidScannerTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send_keys(self, keys: Iterable[tuple[int, int]]) -> None:
        """Write key events, each followed by a SYN_REPORT as the kernel does."""
        now = time.time()
        sec, usec = int(now), int((now % 1) * 1e6)
        data = b"".join(
            _EVENT.pack(sec, usec, EV_KEY, code, value) + _EVENT.pack(sec, usec, EV_SYN, SYN_REPORT, 0)
            for code, value in keys
        )
        with self._lock:
            if self._fd is None:
                raise RuntimeError("twin not started")
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def scan(self, code: str, terminator: str = "enter") -> None:
        self.send_keys(key_events_for(code, terminator))
