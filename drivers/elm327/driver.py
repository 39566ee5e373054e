"""The ELM327 polling driver: resynchronises and initialises the adapter, then polls PIDs per ECU.

Over 400 lines because it is one state machine (reset, init, support discovery per ECU, the polling
cycle, NO DATA bookkeeping); the parsing it relies on is in protocol.py.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import serial

from edge_agent.drivers.base import DeviceUnavailable, FrameError, close_quietly, open_serial
from edge_agent.drivers.elm327.config import Elm327Config, Quantity
from edge_agent.drivers.elm327.protocol import (
    ANSWER_ERRORS,
    BUS_DOWN,
    DATA_LEN,
    FUEL_PROPERTIES,
    MAX_ANSWER_BYTES,
    NO_DATA_LIMIT,
    PID_FUEL_LEVEL,
    PID_FUEL_RATE,
    PID_MAF,
    PID_SPEED,
    SUPPORT_PIDS,
    BusDown,
    EcuAnswer,
    NoData,
    decode_pid,
    fuel_constants,
    maf_to_fuel_rate_lph,
    merge_support,
    parse_elm_answers,
    parse_elm_response,
    supported_from_bitmap,
)
from edge_agent.drivers.readings import FuelLevel, FuelRate, VehicleSpeed

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "ANSWER_ERRORS",
    "BUS_DOWN",
    "DATA_LEN",
    "FUEL_PROPERTIES",
    "MAX_ANSWER_BYTES",
    "NO_DATA_LIMIT",
    "PID_FUEL_LEVEL",
    "PID_FUEL_RATE",
    "PID_MAF",
    "PID_SPEED",
    "SUPPORT_PIDS",
    "BusDown",
    "EcuAnswer",
    "Elm327Config",
    "Elm327Driver",
    "NoData",
    "ObdReading",
    "Quantity",
    "decode_pid",
    "fuel_constants",
    "maf_to_fuel_rate_lph",
    "merge_support",
    "parse_elm_answers",
    "parse_elm_response",
    "supported_from_bitmap",
]

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05
RESYNC_QUIET_S = 0.25  # no byte for this long: whatever an earlier session left has been drained
RESYNC_MAX_S = 2.0  # an adapter streaming for longer (ATMA left running) is not ours to wait for
ATZ_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class _Pending:
    pid: int
    sent_mono: float


# ---------------------------------------------------------------- driver

ObdReading = FuelRate | FuelLevel | VehicleSpeed

# The PIDs this driver polls, by name, for `describe_sources`.
PID_NAMES = {PID_SPEED: "speed", PID_MAF: "MAF", PID_FUEL_LEVEL: "fuel level", PID_FUEL_RATE: "fuel rate"}


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
        # ECU (answer header) -> service 01 PIDs its support bitmaps flag; merged over every ECU.
        self.ecu_support: dict[str, set[int]] = {}
        # PID -> the ECU whose answer is used: the first (lowest header) that advertises it.
        self.pid_source: dict[int, str] = {}
        self._header = "7DF"
        self._physical = True

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
        self.ecu_support.clear()
        self.pid_source.clear()
        self._header = "7DF"  # after ATZ the adapter sends functional (broadcast) requests
        self._physical = True
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
        self._resynchronise()
        banner = self._reset()
        self.adapter_version = banner.strip().splitlines()[-1].strip() if banner.strip() else ""
        # ATL0/ATS1 only shape the text (the parser reads either form): early clones answer '?'.
        # ATH1: headers on, so that each answer line says which ECU sent it (several ECUs answer
        # a functional request; only some of them have a given PID).
        optional = ("ATL0", "ATS1")
        for command in ("ATE0", *optional, "ATH1", f"ATSP{self.cfg.protocol.upper()}"):
            answer = self._at(command, 1.0)
            if "OK" not in answer.upper() and command not in optional:
                raise DeviceUnavailable(f"{self.cfg.port}: {command}: expected OK, got {answer.strip()[:40]!r}")
        log.info("%s: %s ready on %s", self.name, self.adapter_version or "ELM327", self.cfg.port)

    def _resynchronise(self) -> None:
        """Drain whatever an earlier session left on the line before the reset.

        An adapter left mid-session by another program may still hold an answer and one or more
        `>` prompts. A bare CR ends any half command it holds (ELM327 data sheet: CR alone repeats
        or aborts), then everything is read and dropped until the line has been quiet a while, so
        no leftover prompt can pass for the answer to ATZ.
        """
        self._send_raw(b"\r")
        start = quiet_since = time.monotonic()
        while time.monotonic() - start < RESYNC_MAX_S:
            chunk = self._read_chunk()
            now = time.monotonic()
            if chunk:
                quiet_since = now
            elif now - quiet_since >= RESYNC_QUIET_S:
                break
        self._buf.clear()

    def _reset(self) -> str:
        """ATZ, then the banner; answers without one (a stale prompt arriving late) are skipped."""
        self._send_raw(b"ATZ\r")
        deadline = time.monotonic() + ATZ_TIMEOUT_S
        seen: str | None = None
        while (left := deadline - time.monotonic()) > 0:
            text = self._next_answer(left)
            if text is None:
                break
            if "ELM327" in text.upper():
                return text
            seen = text
        if seen is None:
            raise DeviceUnavailable(f"{self.cfg.port}: no '>' prompt after ATZ within {ATZ_TIMEOUT_S:g} s")
        raise DeviceUnavailable(f"{self.cfg.port}: expected an ELM327 banner after ATZ, got {seen.strip()[:40]!r}")

    def _at(self, command: str, timeout_s: float) -> str:
        self._send_raw(command.encode("ascii") + b"\r")
        return self._collect_answer(timeout_s, required=True, what=command)

    def _next_answer(self, timeout_s: float) -> str | None:
        """The text up to the next `>` prompt, read in slices of at most 50 ms; None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            idx = self._buf.find(b">")
            if idx >= 0:
                text = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                return text.replace(b"\x00", b"").decode("ascii", "replace")
            if time.monotonic() >= deadline:
                return None
            self._buf += self._read_chunk()

    def _collect_answer(self, timeout_s: float, *, required: bool, what: str = "") -> str:
        """Read up to the `>` prompt for at most `timeout_s`; DeviceUnavailable (or "") when none came."""
        text = self._next_answer(timeout_s)
        if text is not None:
            return text
        if required:
            raise DeviceUnavailable(f"{self.cfg.port}: no '>' prompt after {what} within {timeout_s:g} s")
        self._buf.clear()
        return ""

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
        self._address(pid)
        self._buf.clear()
        self._send_raw(f"01{pid:02X}\r".encode("ascii"))
        self._pending = _Pending(pid, now)
        return True

    def _address(self, pid: int) -> None:
        """With several ECUs on CAN 11-bit, ask the PID's own ECU (ATSH 7E0-7E7); support queries go to all (7DF).

        ISO 15765-4: an ECU answering on 7E8+n listens on 7E0+n. One ECU alone needs no addressing.
        An adapter that refuses ATSH goes on with functional requests, picking the right ECU's line.
        """
        if not self._physical or len(self.ecu_support) < 2:
            return
        ecu = None if pid in SUPPORT_PIDS else self.pid_source.get(pid)
        want = "7DF"
        can11 = ecu is not None and len(ecu) == 3 and all(c in "0123456789ABCDEF" for c in ecu)
        if ecu is not None and can11 and 0x7E8 <= int(ecu, 16) <= 0x7EF:
            want = f"{int(ecu, 16) - 8:03X}"
        if want == self._header:
            return
        answer = self._at(f"ATSH{want}", 1.0)
        if "OK" in answer.upper():
            self._header = want
        else:
            self._physical = False
            log.info("%s: adapter refuses ATSH (%r): functional requests from now on", self.name, answer.strip()[:20])

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
            answers = parse_elm_answers(text, pid)
        except NoData:
            if pid in SUPPORT_PIDS:
                self._learn_support(pid, [])
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
            self._learn_support(pid, answers)
            return None
        chosen = self._pick(pid, answers)
        value = decode_pid(pid, chosen.data)
        line = chosen.line
        t_mono, t_utc = time.monotonic(), datetime.now(UTC)
        if pid == PID_SPEED:
            return VehicleSpeed(t_mono=t_mono, t_utc=t_utc, speed_kmh=value, raw=line)
        if pid == PID_FUEL_LEVEL:
            return FuelLevel(t_mono=t_mono, t_utc=t_utc, level_pct=value, level_l=None, source="pid2f", raw=line)
        if pid == PID_FUEL_RATE:
            return FuelRate(t_mono=t_mono, t_utc=t_utc, rate_lph=value, source="pid5e", raw=line)
        rate = maf_to_fuel_rate_lph(value, self._afr, self._density_g_l)
        return FuelRate(t_mono=t_mono, t_utc=t_utc, rate_lph=rate, source="maf", raw=line)

    def _pick(self, pid: int, answers: list[EcuAnswer]) -> EcuAnswer:
        """The answer of the ECU chosen for this PID (the first that advertised it), else the first answer."""
        want = self.pid_source.get(pid)
        return next((a for a in answers if a.ecu == want), answers[0])

    def _learn_support(self, base: int, answers: list[EcuAnswer]) -> None:
        """Merge the support bitmaps of every ECU that answered, and pick an ECU for each PID."""
        for ecu, pids in merge_support(answers, base).items():
            self.ecu_support.setdefault(ecu, set()).update(pids)
        merged: set[int] = set().union(*self.ecu_support.values()) if self.ecu_support else set()
        self._supported = merged
        self.pid_source = {}
        for ecu in sorted(self.ecu_support):
            for pid in self.ecu_support[ecu]:
                self.pid_source.setdefault(pid, ecu)
        if base == SUPPORT_PIDS[-1] or (base + 0x20) not in merged:
            log.info(
                "%s: vehicle supports %d service 01 PIDs over %d ECU(s): %s",
                self.name,
                len(merged),
                len(self.ecu_support),
                self.describe_sources(),
            )

    def describe_sources(self) -> str:
        """Which ECU answers what, for logs, `doctor` and `sensors list`."""
        if not self.ecu_support:
            return "no ECU has answered the PID support query yet"
        parts = []
        for ecu in sorted(self.ecu_support):
            pids = self.ecu_support[ecu]
            mine = [f"{p:02X} {PID_NAMES[p]}" for p in sorted(PID_NAMES) if self.pid_source.get(p) == ecu]
            used = f", used for {', '.join(mine)}" if mine else ""
            parts.append(f"ECU {ecu or '(no header)'}: {len(pids)} PIDs{used}")
        missing = [PID_NAMES[p] for p in (PID_FUEL_RATE, PID_MAF) if p not in self.pid_source]
        if len(missing) == 2:
            parts.append("no ECU has fuel rate (5E) or MAF (10)")
        return "; ".join(parts)

    def discover(self, timeout_s: float) -> dict[str, set[int]]:
        """Ask the support bitmaps now (0100, then 0120 and 0140 where flagged): ECU -> supported PIDs."""
        for base in SUPPORT_PIDS:
            if base and base not in (self._supported or set()):
                break
            self._buf.clear()
            self._send_raw(f"01{base:02X}\r".encode("ascii"))
            text = self._collect_answer(max(timeout_s, 0.5), required=True, what=f"01{base:02X}")
            try:
                self._handle(base, text.encode("ascii", "replace"))
            except FrameError:
                break
        return self.ecu_support
