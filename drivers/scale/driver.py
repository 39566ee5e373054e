"""The scale driver: streams or polls (MT-SICS SI/S) weight lines and hands on Weighings."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import serial

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.readings import Weighing
from edge_agent.drivers.scale.config import ScaleConfig
from edge_agent.drivers.scale.protocol import (
    MAX_LINE_BYTES,
    ScaleValue,
    parse_continuous_line,
    parse_mt_sics_line,
    parse_scale_line,
)

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "MAX_LINE_BYTES",
    "ScaleConfig",
    "ScaleDriver",
    "ScaleValue",
    "parse_continuous_line",
    "parse_mt_sics_line",
    "parse_scale_line",
]

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05  # pyserial read timeout; read() loops over slices until its own deadline


class ScaleDriver:
    """Reads weight lines from one scale; polls with MT-SICS S/SI when configured."""

    def __init__(self, cfg: ScaleConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._ser: serial.Serial | None = None
        self._buf = bytearray()
        self._next_poll = 0.0
        self._last_heard = 0.0
        self._protocol = "mt-sics" if cfg.poll else cfg.protocol

    def open(self) -> None:
        self.close()
        self._ser = open_serial(
            self.cfg.port,
            baudrate=self.cfg.baud,
            parity=self.cfg.parity,
            stopbits=self.cfg.stopbits,
            timeout=_READ_SLICE_S,
            write_timeout=1.0,
        )
        self._buf.clear()
        self._next_poll = 0.0
        self._last_heard = time.monotonic()

    def close(self) -> None:
        ser, self._ser = self._ser, None
        close_quietly(ser, self.name)

    def read(self, timeout_s: float) -> Weighing | None:
        ser = self._ser
        if ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._take_line()
            if line is not None:
                return self._weighing(line)
            now = time.monotonic()
            if self.cfg.silence_timeout_s and now - self._last_heard > self.cfg.silence_timeout_s:
                raise DeviceUnavailable(f"{self.cfg.port}: silent for {self.cfg.silence_timeout_s:g} s")
            if self.cfg.poll and now >= self._next_poll:
                self._write(ser, self.cfg.poll_command.encode("ascii") + b"\r\n")
                self._next_poll = now + self.cfg.poll_interval_s
            if now >= deadline:
                return None
            try:
                chunk = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise DeviceUnavailable(f"{self.cfg.port}: read failed: {exc}") from None
            if chunk:
                self._last_heard = time.monotonic()
                self._buf += chunk

    def _write(self, ser: serial.Serial, data: bytes) -> None:
        try:
            ser.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: write failed: {exc}") from None

    def _take_line(self) -> bytes | None:
        """One complete line from the buffer (CR LF, LF or lone CR ends it); FrameError if too long."""
        buf = self._buf
        while True:
            ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = bytes(buf[:end])
            del buf[: end + 1]
            if len(line) > MAX_LINE_BYTES:
                raise FrameError(f"scale: line longer than {MAX_LINE_BYTES} bytes (starts {line[:40]!r})")
            if line.strip():
                return line
        if len(buf) > MAX_LINE_BYTES:
            dropped = bytes(buf[:40])
            buf.clear()
            raise FrameError(f"scale: line longer than {MAX_LINE_BYTES} bytes (starts {dropped!r})")
        return None

    def _weighing(self, line: bytes) -> Weighing:
        value = parse_scale_line(line, self._protocol)
        return Weighing(
            t_mono=time.monotonic(),
            t_utc=datetime.now(UTC),
            load_kg=value.load_kg,
            stable=value.stable,
            gross=value.gross,
            raw=line.decode("ascii", "replace"),
        )
