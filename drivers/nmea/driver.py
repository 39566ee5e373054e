"""The NMEA 0183 serial driver: opens the port (with autobaud), splits lines, hands on one Fix per epoch."""

from __future__ import annotations

import logging
import time as _time
from collections import deque
from typing import Any

import serial

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.nmea.config import NmeaConfig
from edge_agent.drivers.nmea.epochs import FixAssembler, NmeaDecoder, NmeaStats, decode_lines
from edge_agent.drivers.nmea.protocol import (
    AUTOBAUD_RATES,
    KNOT_KMH,
    MAX_LINE_CHARS,
    MIN_FIELDS,
    USED_TYPES,
    BadChecksum,
    Sentence,
    nmea_checksum,
    parse_sentence,
    split_checksum,
)
from edge_agent.drivers.readings import Fix

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "AUTOBAUD_RATES",
    "KNOT_KMH",
    "MAX_LINE_CHARS",
    "MIN_FIELDS",
    "USED_TYPES",
    "BadChecksum",
    "Fix",
    "FixAssembler",
    "NmeaConfig",
    "NmeaDecoder",
    "NmeaDriver",
    "NmeaStats",
    "Sentence",
    "decode_lines",
    "nmea_checksum",
    "parse_sentence",
    "split_checksum",
]

log = logging.getLogger(__name__)
EPOCH_QUIET_S = 0.2  # a line this long quiet after an epoch with position and speed: the epoch is complete
EPOCH_QUIET_LONG_S = 1.0  # ... and after an epoch with a position only, from a receiver that gives no speed


# ---------------------------------------------------------------- the driver


class NmeaDriver:
    """Reads NMEA lines from a serial port and returns one Fix per receiver epoch."""

    def __init__(self, cfg: NmeaConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.decoder = NmeaDecoder(cfg.require_checksum)
        self.baud = cfg.baud
        self._ser: Any = None
        self._buf = bytearray()
        self._lines: deque[bytes] = deque()
        self._last_byte_mono = 0.0
        self._last_sentence_mono = 0.0

    @property
    def stats(self) -> NmeaStats:
        return self.decoder.stats

    def open(self) -> None:
        self.close()
        rates = (
            [self.cfg.baud, *[r for r in AUTOBAUD_RATES if r != self.cfg.baud]]
            if self.cfg.autobaud
            else [self.cfg.baud]
        )
        last_exc: Exception | None = None
        for rate in rates:
            ser = open_serial(self.cfg.port, baudrate=rate, timeout=0.2)
            if not self.cfg.autobaud or self._probe(ser):
                self._ser, self.baud = ser, rate
                self._buf.clear()
                self._lines.clear()
                self._last_byte_mono = self._last_sentence_mono = _time.monotonic()
                if self.cfg.autobaud:
                    log.info("%s: receiver talks at %s baud", self.name, rate)
                return
            try:
                ser.close()
            except (serial.SerialException, OSError) as exc:
                last_exc = exc
        raise DeviceUnavailable(
            f"{self.cfg.port}: no valid NMEA at any of {', '.join(str(r) for r in rates)} baud"
            + (f" ({last_exc})" if last_exc else "")
        )

    def _probe(self, ser: Any) -> bool:
        """True when a checksummed NMEA line arrives within about 2.5 s (a 1 Hz receiver, 2 bursts)."""
        deadline = _time.monotonic() + 2.5
        buf = bytearray()
        try:
            while _time.monotonic() < deadline:
                buf += ser.read(max(1, min(ser.in_waiting, 4096)))
                while b"\n" in buf:
                    raw, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    text = raw.decode("ascii", "replace").strip()
                    i = text.rfind("$")
                    if i >= 0 and "*" in text[i:]:
                        try:
                            _, ok = split_checksum(text[i:])
                        except FrameError:
                            continue
                        if ok:
                            self._lines.append(raw[raw.rfind(b"$") :])
                            return True
                if len(buf) > 4 * MAX_LINE_CHARS:
                    buf = buf[-MAX_LINE_CHARS:]
        except (serial.SerialException, OSError):
            return False
        return False

    def read(self, timeout_s: float) -> Fix | None:
        if self._ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        deadline = _time.monotonic() + min(timeout_s, 1.0)
        while True:
            # Bytes that never make a sentence: a receiver at another baud rate, or another device on the port.
            garbled_s = self._last_byte_mono - self._last_sentence_mono
            if garbled_s > self.cfg.silence_timeout_s:
                raise DeviceUnavailable(
                    f"{self.cfg.port}: data but no valid NMEA sentence for {garbled_s:.0f} s at {self.baud} baud "
                    "(expected $GPRMC,...*hh lines: set the receiver's baud, or autobaud = true, or check that "
                    "the GPS is on this port)"
                )
            while self._lines:
                fix = self._feed(self._lines.popleft())
                if fix is not None:
                    return fix
            now = _time.monotonic()
            if now >= deadline:
                return None
            got = self._read_bytes(min(deadline - now, 0.2))
            if got:
                self._last_byte_mono = _time.monotonic()
                self._split(got)
                continue
            quiet_s = _time.monotonic() - self._last_byte_mono
            if quiet_s > self.cfg.silence_timeout_s:
                raise DeviceUnavailable(f"{self.cfg.port}: no data for {quiet_s:.0f} s")
            dec = self.decoder
            if quiet_s >= EPOCH_QUIET_S and (
                dec.open_has_motion() or (quiet_s >= EPOCH_QUIET_LONG_S and not dec.sends_speed())
            ):
                # The burst of this epoch is over: hand the fix on now rather than at the next epoch. A
                # burst a busy host split after GGA still has RMC/VTG to come, for as long as the host
                # keeps it: a receiver that gave a speed last epoch waits for it (or the next epoch);
                # a GGA-only receiver's epoch goes after EPOCH_QUIET_LONG_S.
                fix = self.decoder.flush()
                if fix is not None:
                    return fix

    def _read_bytes(self, timeout_s: float) -> bytes:
        ser = self._ser
        try:
            ser.timeout = max(0.01, timeout_s)
            data: bytes = ser.read(max(1, min(ser.in_waiting, 4096)))
            if data and ser.in_waiting:
                data += ser.read(min(ser.in_waiting, 4096))
        except (serial.SerialException, OSError, TypeError) as exc:
            # TypeError: pyserial's posix read when the fd was closed under it (unplugged)
            raise DeviceUnavailable(f"{self.cfg.port}: read failed: {exc}") from None
        return data

    def _split(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            self._lines.append(bytes(self._buf[:nl]))
            del self._buf[: nl + 1]
        if len(self._buf) > MAX_LINE_CHARS:
            # A line with no end: noise on the wire. Keep from the last '$' on, if it is recent.
            start = self._buf.rfind(b"$")
            self._lines.append(bytes(self._buf[: start if start > 0 else len(self._buf)]))
            del self._buf[: start if start > 0 else len(self._buf)]

    def _feed(self, raw: bytes) -> Fix | None:
        # Two sentences glued by a lost CR LF, or noise before '$': the head is a bad frame,
        # the tail a fresh line.
        start = raw.rfind(b"$")
        if start > 0:
            self._lines.appendleft(raw[start:])
            raw = raw[:start]
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            self.decoder.stats.bad_frames += 1
            raise FrameError(f"non-ASCII bytes on the line: {raw[:16]!r}") from None
        fix = self.decoder.feed_line(text)
        if text.strip():  # feed_line raises FrameError for anything but a valid sentence
            self._last_sentence_mono = _time.monotonic()
        return fix

    def close(self) -> None:
        ser, self._ser = self._ser, None
        close_quietly(ser, self.name)
