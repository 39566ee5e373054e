"""RS-485 capacitive fuel-level sensors speaking the Omnicomm LLS protocol: config, frames, driver.

Protocol followed: Omnicomm "LLS 20160/20230/20310 fuel level sensors: operation manual",
appendix "Data exchange protocol" (binary, RS-485, 19200 8N1 by default). Single data request:
`31 AA 06 CC` (prefix 0x31, network address AA, operation 0x06, CRC8); the sensor answers
`3E AA 06 TT LL LL FF FF CC`: TT temperature in degC (signed byte), LL LL relative level in counts
(little-endian, 0..1023 or 0..4095 as set up), FF FF the measuring generator's frequency
(little-endian), CC a CRC8 over every byte before it: Dallas/Maxim 1-Wire CRC, polynomial
x^8 + x^5 + x^4 + 1, reflected (0x8C), initial value 0. The same frame layout is spoken by the
many LLS-compatible sensors (Escort TD, Technoton DUT-E in LLS mode, the Chinese "LLS-compatible"
capacitive probes), so this driver covers them too.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.readings import FuelLevel
from edge_agent.schema import Expect

log = logging.getLogger(__name__)

REQUEST_PREFIX = 0x31
RESPONSE_PREFIX = 0x3E
OP_SINGLE_READ = 0x06
RESPONSE_LEN = 9
_READ_SLICE_S = 0.05


class LlsConfig(BaseModel):
    """One Omnicomm LLS (or LLS-compatible) level sensor on an RS-485 line, polled by network address."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lls"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "lls"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=1200, le=115200), Expect("a baud rate such as 9600 or 19200")] = 19200
    address: Annotated[int, Field(ge=0, le=254), Expect("a sensor network address 0-254")] = 1
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 1.0
    response_timeout_s: Annotated[float, Field(gt=0, le=1), Expect("a number of seconds > 0 and <= 1")] = 0.3
    # No valid answer for this long: the sensor (or its cable) counts as gone.
    silence_timeout_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 10.0
    # Raw level (N) of a full scale; LLS sensors are set up to 0..1023 or 0..4095 (default) counts.
    raw_max: Annotated[int, Field(ge=1, le=65535), Expect("the sensor's full-scale raw level, 1-65535")] = 4095
    # Tank calibration table: [raw level, litres] points, raw strictly increasing, interpolated linearly.
    calibration: Annotated[
        list[tuple[int, float]],
        Expect("a list of [raw level, litres] pairs with raw strictly increasing, at least 2"),
    ] = Field(default_factory=list)
    # Used when there is no calibration table: litres = raw * litres_per_count.
    litres_per_count: Annotated[float | None, Field(gt=0), Expect("a number of litres per raw count > 0")] = None

    @field_validator("calibration")
    @classmethod
    def _check_calibration(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if v and (len(v) < 2 or any(b[0] <= a[0] for a, b in itertools.pairwise(v))):
            raise ValueError("calibration needs >= 2 points with raw strictly increasing")
        return v


@dataclass(frozen=True, slots=True)
class LlsFrame:
    """One decoded single-read answer."""

    address: int
    temperature_c: int
    level_raw: int
    frequency_raw: int


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8_maxim(data: bytes) -> int:
    """Dallas/Maxim CRC8 (poly 0x31 reflected, init 0), as the LLS protocol appendix specifies."""
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def build_request(address: int) -> bytes:
    """The single-read request for one sensor address."""
    body = bytes((REQUEST_PREFIX, address, OP_SINGLE_READ))
    return body + bytes((crc8_maxim(body),))


def parse_lls_frame(frame: bytes) -> LlsFrame:
    """Decode one 9-byte single-read answer; raise FrameError on any inconsistency."""
    if len(frame) != RESPONSE_LEN:
        raise FrameError(f"LLS frame {frame.hex(' ')}: expected {RESPONSE_LEN} bytes, got {len(frame)}")
    if frame[0] != RESPONSE_PREFIX:
        raise FrameError(f"LLS frame {frame.hex(' ')}: expected prefix 3e, got {frame[0]:02x}")
    if frame[2] != OP_SINGLE_READ:
        raise FrameError(f"LLS frame {frame.hex(' ')}: expected operation 06, got {frame[2]:02x}")
    crc = crc8_maxim(frame[:-1])
    if crc != frame[-1]:
        raise FrameError(f"LLS frame {frame.hex(' ')}: CRC8 mismatch (computed {crc:02x}, got {frame[-1]:02x})")
    temperature_c = frame[3] - 256 if frame[3] >= 128 else frame[3]
    level_raw = int.from_bytes(frame[4:6], "little")
    frequency_raw = int.from_bytes(frame[6:8], "little")
    return LlsFrame(frame[1], temperature_c, level_raw, frequency_raw)


def level_litres(level_raw: int, cfg: LlsConfig) -> float | None:
    """Litres from a raw level by the tank calibration table (clamped at its ends) or litres per count."""
    table = cfg.calibration
    if table:
        raws = [p[0] for p in table]
        if level_raw <= raws[0]:
            return table[0][1]
        if level_raw >= raws[-1]:
            return table[-1][1]
        i = bisect.bisect_right(raws, level_raw)
        (r0, l0), (r1, l1) = table[i - 1], table[i]
        return l0 + (l1 - l0) * (level_raw - r0) / (r1 - r0)
    if cfg.litres_per_count is not None:
        return level_raw * cfg.litres_per_count
    return None


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
