"""Serial scales and axle-load units: MT-SICS and continuous ASCII weight lines, config and driver.

Protocols followed:
- MT-SICS: Mettler Toledo "MT-SICS Interface Command Set for Excellence balances" reference
  manual (level 0 commands S, SI: response `S S     12.34 kg` stable, `S D ...` dynamic,
  `S I` busy, `S +` / `S -` overload / underload; `ES`, `ET`, `EL` errors), lines end CR LF.
- Continuous ASCII as sent by A&D indicators and the many indicators copying them (A&D
  FX-i/FZ-i and AD-4329 instruction manuals, "standard format": `ST,+00012.34  g`, header ST
  stable, US unstable, OL overload, QT count; indicators with gross/net add `GS`/`NT`, e.g.
  `ST,GS,+00012.34kg`), and the KERN format recorded from a KERN EW 6200-2NM (`+0026.90 G S`:
  sign, value, unit, S stable / U unstable; KERN EW operating manual, section "Interface").
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.readings import Weighing
from edge_agent.schema import Expect

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 128  # longest legitimate line is ~25 bytes; more means a missing terminator
_READ_SLICE_S = 0.05  # pyserial read timeout; read() loops over slices until its own deadline


class ScaleConfig(BaseModel):
    """One scale or axle-load indicator on a serial port."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scale"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = "scale"
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=300, le=115200), Expect("a baud rate such as 1200, 9600 or 19200")] = 9600
    parity: Annotated[Literal["N", "E", "O"], Expect('"N", "E" or "O"')] = "N"
    stopbits: Annotated[Literal[1, 2], Expect("1 or 2")] = 1
    protocol: Annotated[Literal["mt-sics", "continuous", "auto"], Expect('"mt-sics", "continuous" or "auto"')] = "auto"
    # MT-SICS: ask for a value instead of waiting for a stream. "SI" answers at once (S S stable
    # or S D dynamic); "S" waits for a stable value.
    poll: bool = False
    poll_command: Annotated[Literal["SI", "S"], Expect('"SI" or "S"')] = "SI"
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 0.5
    # Nothing heard for this long (stream) or no answer to polls: the device counts as gone.
    # 0 turns this off, for scales that print only when a key is pressed.
    silence_timeout_s: Annotated[float, Field(ge=0, le=3600), Expect("a number of seconds >= 0 (0: never)")] = 10.0


@dataclass(frozen=True, slots=True)
class ScaleValue:
    """One decoded weight line."""

    load_kg: float
    stable: bool
    gross: bool
    value: float  # as displayed, in `unit`
    unit: str
    protocol: str  # "mt-sics" | "continuous"


# Mass units seen on indicators, to kilograms. "G" upper case is what KERN sends for grams.
_KG_PER_UNIT = {
    "kg": 1.0,
    "g": 0.001,
    "mg": 1e-6,
    "t": 1000.0,
    "lb": 0.45359237,
    "oz": 0.028349523125,
    "ct": 0.0002,  # metric carat
}

_NUMBER = r"[-+]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
_MT_SICS_VALUE = re.compile(rf"^S\s+([SD])\s+({_NUMBER})\s+([A-Za-z%]+)$")
_MT_SICS_STATE = re.compile(r"^S\s+([I+\-])$")
_MT_SICS_ERROR = re.compile(r"^(ES|ET|EL)$")
_AND_LINE = re.compile(rf"^(ST|US|OL|QT)\s*,\s*(?:(GS|NT|TR|G|N)\s*,\s*)?({_NUMBER})?\s*([A-Za-z%]*)$")
_KERN_LINE = re.compile(r"^([-+ ])\s*(\d+(?:\.\d*)?)\s+([A-Za-z%]+)\s+([A-Z])$")

_MT_SICS_STATES = {"I": "busy (command not executable now)", "+": "overload", "-": "underload"}
_MT_SICS_ERRORS = {"ES": "syntax error", "ET": "transmission error", "EL": "logical error"}


def _to_kg(value: float, unit: str, line: str) -> float:
    factor = _KG_PER_UNIT.get(unit.lower())
    if factor is None:
        raise FrameError(f"scale line {line!r}: unit {unit!r} is not a mass (expected g, kg, t, lb, oz or ct)")
    return value * factor


def _number(text: str, line: str) -> float:
    try:
        return float(text.replace(" ", ""))
    except ValueError:
        raise FrameError(f"scale line {line!r}: expected a number, got {text!r}") from None


def parse_mt_sics_line(line: str) -> ScaleValue:
    """Decode one MT-SICS weight response (`S S     12.34 kg`); raise FrameError otherwise."""
    m = _MT_SICS_VALUE.match(line)
    if m is None:
        state = _MT_SICS_STATE.match(line)
        if state is not None:
            raise FrameError(f"scale line {line!r}: MT-SICS reports {_MT_SICS_STATES[state.group(1)]}")
        err = _MT_SICS_ERROR.match(line)
        if err is not None:
            raise FrameError(f"scale line {line!r}: MT-SICS {_MT_SICS_ERRORS[err.group(1)]}")
        raise FrameError(f"scale line {line!r}: expected an MT-SICS weight like 'S S     12.34 kg'")
    status, number, unit = m.groups()
    value = _number(number, line)
    # MT-SICS S/SI return the net weight (the balance's tare applied).
    return ScaleValue(_to_kg(value, unit, line), status == "S", False, value, unit, "mt-sics")


def parse_continuous_line(line: str) -> ScaleValue:
    """Decode one continuous-output line (A&D style `ST,GS,+00012.34kg` or KERN `+0026.90 G S`)."""
    m = _AND_LINE.match(line)
    if m is not None:
        header, kind, number, unit = m.groups()
        if header == "OL":
            raise FrameError(f"scale line {line!r}: indicator reports overload")
        if number is None or not unit:
            raise FrameError(f"scale line {line!r}: expected a value and a unit after the header")
        if header == "QT":
            raise FrameError(f"scale line {line!r}: a piece count, not a weight")
        value = _number(number, line)
        gross = kind not in ("NT", "N")
        return ScaleValue(_to_kg(value, unit, line), header == "ST", gross, value, unit, "continuous")
    m = _KERN_LINE.match(line)
    if m is not None:
        sign, number, unit, flag = m.groups()
        if flag not in ("S", "U"):
            raise FrameError(f"scale line {line!r}: stability flag {flag!r} (expected S or U; overload?)")
        value = _number(number, line) * (-1.0 if sign == "-" else 1.0)
        return ScaleValue(_to_kg(value, unit, line), flag == "S", True, value, unit, "continuous")
    raise FrameError(f"scale line {line!r}: expected 'ST,GS,+00012.34kg' or '+0026.90 G S'")


def parse_scale_line(raw: bytes, protocol: str = "auto") -> ScaleValue:
    """Decode one line (with or without CR LF) in `protocol`; raise FrameError on anything else."""
    try:
        line = raw.decode("ascii").strip("\r\n\x00 ")
    except UnicodeDecodeError:
        raise FrameError(f"scale line {raw[:40]!r}: not ASCII") from None
    if not line:
        raise FrameError("scale line is empty")
    if not line.isprintable():
        raise FrameError(f"scale line {line[:40]!r}: control characters inside")
    if protocol == "mt-sics":
        return parse_mt_sics_line(line)
    if protocol == "continuous":
        return parse_continuous_line(line)
    if line.startswith("S ") or line in _MT_SICS_ERRORS:
        return parse_mt_sics_line(line)
    return parse_continuous_line(line)


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
