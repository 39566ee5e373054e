"""The LLS polling driver: one single-read request per poll, resynchronising on noise."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import serial

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.lls.config import LlsConfig
from edge_agent.drivers.lls.protocol import (
    OP_SINGLE_READ,
    REQUEST_PREFIX,
    RESPONSE_LEN,
    RESPONSE_PREFIX,
    LlsFrame,
    build_request,
    crc8_maxim,
    level_litres,
    parse_lls_frame,
)
from edge_agent.drivers.readings import FuelLevel

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "OP_SINGLE_READ",
    "REQUEST_PREFIX",
    "RESPONSE_LEN",
    "RESPONSE_PREFIX",
    "LlsConfig",
    "LlsDriver",
    "LlsFrame",
    "build_request",
    "crc8_maxim",
    "level_litres",
    "parse_lls_frame",
]

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05


class LlsDriver:
    """Polls one LLS sensor with single-read requests; one read() returns at most one FuelLevel."""

    def __init__(self, cfg: LlsConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._request = build_request(cfg.address)
        self._ser: serial.Serial | None = None
        self._buf = bytearray()
        self._next_poll = 0.0
        self._pending_until: float | None = None
        self._last_answer = 0.0
        self._resync = False
        self.unanswered = 0

    def open(self) -> None:
        self.close()
        self._ser = open_serial(self.cfg.port, baudrate=self.cfg.baud, timeout=_READ_SLICE_S, write_timeout=1.0)
        self._buf.clear()
        self._next_poll = 0.0
        self._pending_until = None
        self._last_answer = time.monotonic()

    def close(self) -> None:
        ser, self._ser = self._ser, None
        close_quietly(ser, self.name)

    def read(self, timeout_s: float) -> FuelLevel | None:
        ser = self._ser
        if ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self._take_frame()
            if frame is not None:
                return self._reading(frame)
            now = time.monotonic()
            if self._pending_until is not None and now > self._pending_until:
                self._pending_until = None
                self.unanswered += 1
                log.debug("%s: no answer from address %s", self.name, self.cfg.address)
                if self._buf and not self._request.startswith(self._buf):
                    noise = bytes(self._buf)
                    self._buf.clear()
                    raise FrameError(f"LLS: no answer, {len(noise)} byte(s) of noise: {noise[:16].hex(' ')}")
            if now - self._last_answer > self.cfg.silence_timeout_s:
                raise DeviceUnavailable(
                    f"{self.cfg.port}: no answer from LLS address {self.cfg.address} "
                    f"for {self.cfg.silence_timeout_s:g} s"
                )
            if self._pending_until is None and now >= self._next_poll:
                self._send(ser)
                self._pending_until = now + self.cfg.response_timeout_s
                self._next_poll = now + self.cfg.poll_interval_s
            if now >= deadline:
                return None
            try:
                chunk = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise DeviceUnavailable(f"{self.cfg.port}: read failed: {exc}") from None
            self._buf += chunk

    def _send(self, ser: serial.Serial) -> None:
        self._buf.clear()  # whatever is left belongs to no request of ours
        try:
            ser.write(self._request)
        except (serial.SerialException, OSError) as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: write failed: {exc}") from None

    def _take_frame(self) -> bytes | None:
        buf = self._buf
        # Half-duplex RS-485 adapters without echo suppression hand our own request back first.
        if buf.startswith(self._request):
            del buf[: len(self._request)]
        if not buf or self._request.startswith(buf):
            return None  # nothing yet, or the echo is still arriving
        start = buf.find(RESPONSE_PREFIX)
        if start < 0:
            if len(buf) > 4 * RESPONSE_LEN:
                noise = bytes(buf)
                buf.clear()
                raise FrameError(f"LLS: {len(noise)} byte(s) of noise: {noise[:16].hex(' ')}")
            return None  # wait: the rest comes with the answer, or is reported when it does not
        if start > 0:
            noise = bytes(buf[:start])
            del buf[:start]
            if self._resync:
                self._resync = False  # the tail of a frame already reported as broken
            else:
                raise FrameError(f"LLS: {len(noise)} byte(s) of noise before a frame: {noise[:16].hex(' ')}")
        if len(buf) < RESPONSE_LEN:
            return None
        frame = bytes(buf[:RESPONSE_LEN])
        try:
            parse_lls_frame(frame)
        except FrameError:
            del buf[:1]  # resynchronise on the next 0x3e
            self._resync = True
            raise
        self._resync = False
        del buf[:RESPONSE_LEN]
        return frame

    def _reading(self, frame: bytes) -> FuelLevel:
        decoded = parse_lls_frame(frame)
        if decoded.address != self.cfg.address:
            raise FrameError(f"LLS frame {frame.hex(' ')}: from address {decoded.address}, expected {self.cfg.address}")
        self._pending_until = None
        self._last_answer = time.monotonic()
        pct = min(max(decoded.level_raw / self.cfg.raw_max * 100.0, 0.0), 100.0)
        return FuelLevel(
            t_mono=time.monotonic(),
            t_utc=datetime.now(UTC),
            level_pct=pct,
            level_l=level_litres(decoded.level_raw, self.cfg),
            source="lls",
            raw=frame.hex(" "),
        )
