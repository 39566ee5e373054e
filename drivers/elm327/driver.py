"""OBD-II fuel data through an ELM327 adapter: config, pure response parsing and the polling driver.

Documents followed:
- ELM Electronics, "ELM327 OBD to RS232 Interpreter" data sheet (ELM327DSL, v1.5 command set):
  AT commands (Z reset, E0 echo off, L0 linefeeds off, H0 headers off, SP h protocol), the `>`
  prompt that ends every answer, `SEARCHING...` while ATSP0 looks for the bus protocol, and the
  messages `NO DATA`, `?`, `UNABLE TO CONNECT`, `BUS INIT: ...ERROR`, `CAN ERROR`, `STOPPED`,
  `BUFFER FULL`, `<RX ERROR`, `LV RESET` (section "Messages and Alerts").
- SAE J1979 / ISO 15031-5 service 01 PIDs as tabulated in Wikipedia "OBD-II PIDs":
  0x00/0x20/0x40 supported-PID bitmaps, 0x0D speed = A km/h, 0x2F fuel tank level = 100A/255 %,
  0x5E engine fuel rate = (256A+B)/20 L/h, 0x10 MAF air flow rate = (256A+B)/100 g/s.
- MAF fallback, fuel rate L/h = MAF g/s * 3600 / (AFR * density g/L). Stoichiometric AFR 14.7
  for petrol and 14.5 for diesel (Heywood, "Internal Combustion Engine Fundamentals", 1988,
  Appendix D fuel data); density at 15 degC: petrol 720-775 kg/m3 (EN 228), diesel 820-845 kg/m3
  (EN 590): midpoints 745 and 832 g/L. Diesels run lean (lambda 1.2-4), so a stoichiometric AFR
  overstates their fuel: set `afr` to the engine's mean AFR when it is known.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.readings import FuelLevel, FuelRate, VehicleSpeed
from edge_agent.schema import Expect

log = logging.getLogger(__name__)

Quantity = Literal["speed", "fuel_rate", "fuel_level"]
_ALL_QUANTITIES: tuple[Quantity, ...] = ("speed", "fuel_rate", "fuel_level")

PID_SPEED = 0x0D
PID_MAF = 0x10
PID_FUEL_LEVEL = 0x2F
PID_FUEL_RATE = 0x5E
SUPPORT_PIDS = (0x00, 0x20, 0x40)
# Data bytes in each answer (SAE J1979).
DATA_LEN = {0x00: 4, 0x20: 4, 0x40: 4, PID_SPEED: 1, PID_MAF: 2, PID_FUEL_LEVEL: 1, PID_FUEL_RATE: 2}

# (stoichiometric air/fuel mass ratio, density g/L): see the module docstring for sources.
FUEL_PROPERTIES: dict[str, tuple[float, float]] = {"petrol": (14.7, 745.0), "diesel": (14.5, 832.0)}

# Adapter messages meaning the vehicle bus is not there (ignition off, wrong protocol, wiring).
BUS_DOWN = ("UNABLE TO CONNECT", "CAN ERROR", "BUS ERROR", "BUS BUSY", "FB ERROR", "ERROR")
# Adapter messages meaning this one answer went wrong.
ANSWER_ERRORS = ("STOPPED", "BUFFER FULL", "<RX ERROR", "DATA ERROR", "<DATA ERROR")
NO_DATA_LIMIT = 3  # consecutive NO DATA before a PID counts as unsupported
MAX_ANSWER_BYTES = 2048
_READ_SLICE_S = 0.05


class NoData(FrameError):
    """The vehicle did not answer this PID (`NO DATA`)."""


class BusDown(FrameError):
    """The adapter reports the vehicle bus absent (`UNABLE TO CONNECT`, `CAN ERROR`, ...)."""


class Elm327Config(BaseModel):
    """One ELM327 (or clone) OBD-II adapter on a serial port (USB, Bluetooth SPP rfcomm, UART)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["elm327"]
    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")] = (
        "elm327"
    )
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=1200, le=2_000_000), Expect("a baud rate such as 9600, 38400 or 115200")] = 38400
    # Time between the start of two polling cycles (speed, fuel rate, level).
    poll_interval_s: Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")] = 1.0
    # How long one request may take before it counts as unanswered; the first request after
    # ATSP0 may show SEARCHING... for several seconds while the adapter finds the bus protocol.
    response_timeout_s: Annotated[float, Field(gt=0, le=30), Expect("a number of seconds > 0 and <= 30")] = 5.0
    # ATSP argument: "0" automatic, 1-9 / A-C a fixed OBD protocol (ELM327 data sheet, "ATSP h").
    protocol: Annotated[str, Field(pattern=r"^[0-9A-Ca-c]$"), Expect('one protocol digit "0"-"9" or "A"-"C"')] = "0"
    # What the MAF fallback assumes is burnt: sets the air/fuel ratio and fuel density.
    fuel_type: Annotated[Literal["petrol", "diesel"], Expect('"petrol" or "diesel"')] = "diesel"
    # Overrides of the fuel_type defaults (e.g. a diesel's measured mean lambda * 14.5).
    afr: Annotated[float | None, Field(gt=1, lt=100), Expect("an air/fuel mass ratio between 1 and 100")] = None
    fuel_density_g_l: Annotated[
        float | None, Field(gt=500, lt=1200), Expect("a fuel density in g/L between 500 and 1200")
    ] = None
    pids: Annotated[
        list[Quantity],
        Field(min_length=1),
        Expect('a non-empty list of "speed", "fuel_rate", "fuel_level"'),
    ] = Field(default_factory=lambda: list(_ALL_QUANTITIES))


# ---------------------------------------------------------------- pure parsing and decoding


def _is_hex(text: str) -> bool:
    return all(c in "0123456789ABCDEF" for c in text)


def parse_elm_response(text: str, pid: int, mode: int = 0x01) -> bytes:
    """The data bytes of the first ECU answer to `mode pid` in one ELM327 answer (text before `>`).

    Tolerates an echo of the request, `SEARCHING...`, `BUS INIT: ...OK`, spaces or none, and
    answers from several ECUs. Raises NoData, BusDown or FrameError (garbage, truncated answer).
    """
    request = f"{mode:02X}{pid:02X}"
    answer = f"{mode + 0x40:02X}{pid:02X}"
    need = DATA_LEN.get(pid, 1) if mode == 0x01 else 1
    seen: list[str] = []
    for raw_line in text.replace("\n", "\r").split("\r"):
        line = raw_line.strip().upper()
        compact = line.replace(" ", "")
        if not line or line in ("SEARCHING...", "OK") or compact == request:
            continue
        if line.startswith("BUS INIT") and line.endswith("OK"):
            continue
        seen.append(line)
        if compact == "NODATA":
            raise NoData(f"{request}: NO DATA (the vehicle does not answer this PID)")
        if line == "?":
            raise FrameError(f"{request}: adapter answered '?' (command not understood)")
        if line.startswith("BUS INIT") or line in BUS_DOWN:
            raise BusDown(f"{request}: adapter reports {line!r} (ignition off or no OBD bus?)")
        if line in ANSWER_ERRORS:
            raise FrameError(f"{request}: adapter reports {line!r}")
        if not compact.startswith(answer):
            continue
        if not _is_hex(compact) or len(compact) % 2:
            raise FrameError(f"{request}: garbled answer {line!r}")
        data = bytes.fromhex(compact[len(answer) :])
        if len(data) < need:
            raise FrameError(f"{request}: truncated answer {line!r}: expected {need} data byte(s), got {len(data)}")
        return data[:need]
    if not seen:
        raise FrameError(f"{request}: empty answer")
    raise FrameError(f"{request}: expected an answer starting {answer}, got {' | '.join(seen)[:80]!r}")


def decode_pid(pid: int, data: bytes) -> float:
    """The physical value of a service 01 PID (SAE J1979 scaling)."""
    if pid == PID_SPEED:
        return float(data[0])
    if pid == PID_FUEL_LEVEL:
        return data[0] * 100.0 / 255.0
    if pid == PID_FUEL_RATE:
        return (data[0] * 256 + data[1]) / 20.0
    if pid == PID_MAF:
        return (data[0] * 256 + data[1]) / 100.0
    raise ValueError(f"PID {pid:02X} is not decoded here")


def supported_from_bitmap(base: int, data: bytes) -> set[int]:
    """PIDs base+1 .. base+32 flagged in a 4-byte support bitmap (bit 7 of byte 0 = base+1)."""
    bits = int.from_bytes(data[:4], "big")
    return {base + i + 1 for i in range(32) if bits & (1 << (31 - i))}


def maf_to_fuel_rate_lph(maf_g_s: float, afr: float, density_g_l: float) -> float:
    """Fuel volume flow from intake air mass flow: g/s air -> g/s fuel -> L/h."""
    return maf_g_s / afr / density_g_l * 3600.0


def fuel_constants(cfg: Elm327Config) -> tuple[float, float]:
    """(AFR, density g/L) for the MAF fallback: the fuel type's defaults unless overridden."""
    afr, density = FUEL_PROPERTIES[cfg.fuel_type]
    return (cfg.afr or afr, cfg.fuel_density_g_l or density)


@dataclass(frozen=True, slots=True)
class _Pending:
    pid: int
    sent_mono: float


# ---------------------------------------------------------------- driver

ObdReading = FuelRate | FuelLevel | VehicleSpeed


class Elm327Driver:
    """Initialises an ELM327, then polls speed, fuel rate (or MAF) and fuel level in a cycle.

    One read() returns at most one reading. Support bitmaps (0100/0120/0140) are asked once per
    connection; a PID that is not supported, or answers NO DATA three times running, is dropped,
    and fuel rate then comes from MAF (PID 0x10) when the vehicle has it.
    """

    def __init__(self, cfg: Elm327Config) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._afr, self._density_g_l = fuel_constants(cfg)
        self._ser: serial.Serial | None = None
        self._buf = bytearray()
        self._queue: deque[int] = deque()
        self._pending: _Pending | None = None
        self._next_cycle = 0.0
        self._timeouts = 0
        self._supported: set[int] | None = None
        self._no_data: dict[int, int] = {}
        self._dropped: set[int] = set()
        self._said_no_fuel_rate = False
        self.adapter_version = ""

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        self.close()
        self._ser = open_serial(self.cfg.port, baudrate=self.cfg.baud, timeout=_READ_SLICE_S, write_timeout=1.0)
        self._buf.clear()
        self._queue.clear()
        self._pending = None
        self._timeouts = 0
        self._next_cycle = 0.0
        self._supported = None
        self._no_data.clear()
        self._dropped.clear()
        try:
            self._initialise()
        except DeviceUnavailable:
            self.close()
            raise

    def close(self) -> None:
        ser, self._ser = self._ser, None
        close_quietly(ser, self.name)

    def _initialise(self) -> None:
        # A stray CR first ends whatever half command the adapter holds (ELM327 data sheet).
        self._send_raw(b"\r")
        self._collect_answer(0.3, required=False)
        banner = self._at("ATZ", 2.0)
        if "ELM327" not in banner.upper():
            got = banner.strip()[:40]
            raise DeviceUnavailable(f"{self.cfg.port}: expected an ELM327 banner after ATZ, got {got!r}")
        self.adapter_version = banner.strip().splitlines()[-1].strip() if banner.strip() else ""
        # ATL0/ATS1 only shape the text (the parser reads either form): early clones answer '?'.
        optional = ("ATL0", "ATS1")
        for command in ("ATE0", *optional, "ATH0", f"ATSP{self.cfg.protocol.upper()}"):
            answer = self._at(command, 1.0)
            if "OK" not in answer.upper() and command not in optional:
                raise DeviceUnavailable(f"{self.cfg.port}: {command}: expected OK, got {answer.strip()[:40]!r}")
        log.info("%s: %s ready on %s", self.name, self.adapter_version or "ELM327", self.cfg.port)

    def _at(self, command: str, timeout_s: float) -> str:
        self._send_raw(command.encode("ascii") + b"\r")
        return self._collect_answer(timeout_s, required=True, what=command)

    def _collect_answer(self, timeout_s: float, *, required: bool, what: str = "") -> str:
        """Read up to the `>` prompt, in slices of at most 50 ms, for at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            idx = self._buf.find(b">")
            if idx >= 0:
                text = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                return text.replace(b"\x00", b"").decode("ascii", "replace")
            if time.monotonic() >= deadline:
                if required:
                    raise DeviceUnavailable(f"{self.cfg.port}: no '>' prompt after {what} within {timeout_s:g} s")
                self._buf.clear()
                return ""
            self._buf += self._read_chunk()

    # -- I/O ---------------------------------------------------------------
    def _send_raw(self, data: bytes) -> None:
        if self._ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: write failed: {exc}") from None

    def _read_chunk(self) -> bytes:
        if self._ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        try:
            return bytes(self._ser.read(self._ser.in_waiting or 1))
        except (serial.SerialException, OSError) as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: read failed: {exc}") from None

    # -- polling -----------------------------------------------------------
    def _cycle(self) -> list[int]:
        pids: list[int] = []
        if self._supported is None:
            pids += SUPPORT_PIDS
        for quantity in self.cfg.pids:
            if quantity == "speed":
                pids.append(PID_SPEED)
            elif quantity == "fuel_level":
                pids.append(PID_FUEL_LEVEL)
            else:
                pid = self._fuel_rate_pid()
                if pid is not None:
                    pids.append(pid)
        return [p for p in pids if p in SUPPORT_PIDS or self._usable(p)]

    def _usable(self, pid: int) -> bool:
        if pid in self._dropped:
            return False
        return self._supported is None or not self._supported or pid in self._supported

    def _fuel_rate_pid(self) -> int | None:
        for pid in (PID_FUEL_RATE, PID_MAF):
            if self._usable(pid):
                return pid
        if not self._said_no_fuel_rate:
            log.warning("%s: vehicle answers neither PID 5E (fuel rate) nor 10 (MAF): no fuel rate", self.name)
            self._said_no_fuel_rate = True
        return None

    def read(self, timeout_s: float) -> ObdReading | None:
        if self._ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            pending = self._pending
            if pending is None:
                if self._send_next(now):
                    continue
            else:
                answered, reading = self._take_answer(pending, now)
                if reading is not None:
                    return reading
                if answered:
                    continue
            if now >= deadline:
                return None
            self._buf += self._read_chunk()

    def _send_next(self, now: float) -> bool:
        """Send the next request of the cycle (starting a cycle when one is due); False if none is."""
        if not self._queue and now >= self._next_cycle:
            self._queue.extend(self._cycle())
            self._next_cycle = now + self.cfg.poll_interval_s
        while self._queue and not (self._queue[0] in SUPPORT_PIDS or self._usable(self._queue[0])):
            self._queue.popleft()  # learnt unsupported since the cycle was planned
        if not self._queue:
            return False
        pid = self._queue.popleft()
        self._buf.clear()
        self._send_raw(f"01{pid:02X}\r".encode("ascii"))
        self._pending = _Pending(pid, now)
        return True

    def _take_answer(self, pending: _Pending, now: float) -> tuple[bool, ObdReading | None]:
        """(answered, reading) once the `>` prompt is in; raises on timeouts and bad answers."""
        idx = self._buf.find(b">")
        if idx >= 0:
            text = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            self._pending = None
            self._timeouts = 0
            return True, self._handle(pending.pid, text)
        if len(self._buf) > MAX_ANSWER_BYTES:
            self._buf.clear()
            self._pending = None
            raise FrameError(f"01{pending.pid:02X}: no '>' prompt within {MAX_ANSWER_BYTES} bytes")
        if now - pending.sent_mono > self.cfg.response_timeout_s:
            self._pending = None
            self._buf.clear()
            self._timeouts += 1
            if self._timeouts >= 2:
                raise DeviceUnavailable(
                    f"{self.cfg.port}: adapter silent: no '>' prompt for {self._timeouts} requests in a row"
                )
            raise FrameError(f"01{pending.pid:02X}: no answer within {self.cfg.response_timeout_s:g} s")
        return False, None

    def _handle(self, pid: int, raw: bytes) -> ObdReading | None:
        text = raw.replace(b"\x00", b"").decode("ascii", "replace")
        if "ELM327" in text.upper():
            raise DeviceUnavailable(f"{self.cfg.port}: adapter reset itself (banner {text.strip()[:30]!r})")
        try:
            data = parse_elm_response(text, pid)
        except NoData:
            if pid in SUPPORT_PIDS:
                self._learn_support(pid, b"")
                return None
            count = self._no_data.get(pid, 0) + 1
            self._no_data[pid] = count
            if count >= NO_DATA_LIMIT and pid not in self._dropped:
                self._dropped.add(pid)
                log.info("%s: PID %02X answered NO DATA %d times: no longer asked", self.name, pid, count)
            raise
        except BusDown as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: {exc}") from None
        self._no_data.pop(pid, None)
        if pid in SUPPORT_PIDS:
            self._learn_support(pid, data)
            return None
        line = next(
            (
                ln.strip()
                for ln in text.replace("\n", "\r").split("\r")
                if ln.replace(" ", "").upper().startswith(f"41{pid:02X}")
            ),
            text.strip(),
        )
        value = decode_pid(pid, data)
        t_mono, t_utc = time.monotonic(), datetime.now(UTC)
        if pid == PID_SPEED:
            return VehicleSpeed(t_mono=t_mono, t_utc=t_utc, speed_kmh=value, raw=line)
        if pid == PID_FUEL_LEVEL:
            return FuelLevel(t_mono=t_mono, t_utc=t_utc, level_pct=value, level_l=None, source="pid2f", raw=line)
        if pid == PID_FUEL_RATE:
            return FuelRate(t_mono=t_mono, t_utc=t_utc, rate_lph=value, source="pid5e", raw=line)
        rate = maf_to_fuel_rate_lph(value, self._afr, self._density_g_l)
        return FuelRate(t_mono=t_mono, t_utc=t_utc, rate_lph=rate, source="maf", raw=line)

    def _learn_support(self, base: int, data: bytes) -> None:
        found = supported_from_bitmap(base, data) if data else set()
        if self._supported is None:
            self._supported = set()
        self._supported |= found
        if base == SUPPORT_PIDS[-1]:
            log.info(
                "%s: vehicle supports %d service 01 PIDs (5E fuel rate: %s, 10 MAF: %s)",
                self.name,
                len(self._supported),
                PID_FUEL_RATE in self._supported,
                PID_MAF in self._supported,
            )
