"""The Modbus RTU meter driver: polls register blocks through pymodbus, on a port the meters of one line share."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from edge_agent.drivers.base import DeviceUnavailable, FrameError, open_serial
from edge_agent.drivers.modbus.config import (
    FUNCTION_CODES,
    MAX_READ_REGISTERS,
    NAME_PATTERN,
    REGISTER_WORDS,
    MeterMap,
    ModbusMeterConfig,
    RegisterSpec,
    RegisterType,
)
from edge_agent.drivers.modbus.maps import load_map, map_path, shipped_maps
from edge_agent.drivers.modbus.protocol import (
    EXCEPTION_NAMES,
    Block,
    RtuFrame,
    build_read_request,
    crc16_modbus,
    decode_block,
    decode_value,
    parse_frame,
    parse_read_response,
    plan_blocks,
)
from edge_agent.drivers.readings import MeterReading

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "EXCEPTION_NAMES",
    "FUNCTION_CODES",
    "MAX_READ_REGISTERS",
    "NAME_PATTERN",
    "REGISTER_WORDS",
    "Block",
    "ExceptionReply",
    "MeterMap",
    "ModbusMeterConfig",
    "ModbusMeterDriver",
    "RegisterSpec",
    "RegisterType",
    "RtuFrame",
    "build_read_request",
    "crc16_modbus",
    "decode_block",
    "decode_value",
    "load_map",
    "map_path",
    "parse_frame",
    "parse_read_response",
    "plan_blocks",
    "shipped_maps",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the driver


class _Line:
    """One RS-485 line, opened once in this process and shared by every meter on it (each by its unit id):
    a second open of the port would find it locked, and two clients' requests would cross on the wire.
    A request and its reply hold `lock`."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.users = 0
        self.failed = False  # the port itself failed (unplugged): the next meter to attach opens it afresh


_LINES: dict[str, _Line] = {}
_LINES_LOCK = threading.Lock()


def _attach(cfg: ModbusMeterConfig) -> _Line:
    with _LINES_LOCK:
        line = _LINES.get(cfg.port)
        if line is None or line.failed or not line.port.is_open:
            port = open_serial(
                cfg.port,
                baudrate=cfg.baud,
                parity=cfg.parity,
                stopbits=cfg.stop_bits,
                bytesize=8,
                timeout=cfg.timeout_s,
                write_timeout=cfg.timeout_s,
            )
            line = _LINES[cfg.port] = _Line(port)
        line.users += 1
        return line


def _detach(url: str, line: _Line, name: str) -> None:
    """The last meter off a line closes its port; a port that failed is opened afresh by the next attach."""
    with _LINES_LOCK:
        line.users -= 1
        if line.users > 0:
            return
        if _LINES.get(url) is line:
            del _LINES[url]
        try:
            line.port.close()
        except (OSError, serial.SerialException):
            log.debug("%s: error closing port", name)


class ModbusMeterDriver:
    """Polls one meter every poll_interval_s through pymodbus's serial RTU client.

    The port is opened by us with open_serial (so a pty, /dev/ttyUSB0 or a
    pyserial URL all work and open errors carry pyserial's message) and handed to the
    pymodbus client, which then frames requests and replies (CRC, resync on garbage).
    """

    def __init__(self, cfg: ModbusMeterConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.blocks = plan_blocks(cfg.all_registers, cfg.max_registers_per_read or 64, cfg.max_gap_registers)
        self._client: ModbusSerialClient | None = None
        self._line: _Line | None = None
        self._next_poll_mono = 0.0
        self._silent_polls = self._garbled_polls = 0
        self._rx = bytearray()
        self._warned_blocks: set[int] = set()

    def open(self) -> None:
        self.close()
        self._line = _attach(self.cfg)
        port = self._line.port
        _quiet_pymodbus()
        client = ModbusSerialClient(
            self.cfg.port,
            framer=FramerType.RTU,
            baudrate=self.cfg.baud,
            parity=self.cfg.parity,
            stopbits=self.cfg.stop_bits,
            bytesize=8,
            timeout=self.cfg.timeout_s,
            retries=0,  # the next poll is the retry; the runner owns reconnects
            trace_packet=self._trace,
        )
        client.socket = port
        client.socket.inter_byte_timeout = client.inter_byte_timeout
        self._client = client
        self._silent_polls = self._garbled_polls = 0
        self._next_poll_mono = 0.0
        # A port that opens is not yet a meter that answers (an RS-485 adapter stays plugged in
        # when the meter loses power): ask once, so the runner backs off quietly while it is silent.
        try:
            self._read_block(self.blocks[0])
        except _NoAnswer:
            if not self._rx:
                self.close()
                raise DeviceUnavailable(f"{self.cfg.port}: unit {self.cfg.unit_id} does not answer") from None
        except FrameError:
            pass  # it answered, if badly: poll() reports what is wrong
        except DeviceUnavailable:
            self.close()
            raise

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.socket = None  # the line's port is not the client's to close
        line, self._line = self._line, None
        if line is not None:
            _detach(self.cfg.port, line, self.name)

    def read(self, timeout_s: float) -> MeterReading | None:
        """Wait (at most timeout_s) until the next poll is due, then poll every block once."""
        wait_s = self._next_poll_mono - time.monotonic()
        if wait_s > 0:
            time.sleep(min(wait_s, timeout_s))
            if self._next_poll_mono - time.monotonic() > 0:
                return None
        now = time.monotonic()
        # On schedule: the next poll one interval after this one was due (no drift). The first poll, or
        # one more than an interval late, sets the schedule afresh from now: no second poll at once.
        due = self._next_poll_mono + self.cfg.poll_interval_s
        self._next_poll_mono = due if due > now else now + self.cfg.poll_interval_s
        return self.poll()

    def poll(self) -> MeterReading | None:
        """Read every block once; values of the blocks that answered, or an error when none did."""
        if self._client is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        t_mono, t_utc = time.monotonic(), datetime.now(UTC)
        values: dict[str, float] = {}
        raws: list[str] = []
        problems: list[str] = []
        garbled = silent = False
        for i, block in enumerate(self.blocks):
            self._rx.clear()
            try:
                words = self._read_block(block)
                values.update(decode_block(block, words))
                raws.append(bytes(self._rx).hex(" "))
            except ExceptionReply as exc:
                problems.append(str(exc))
                if i not in self._warned_blocks:
                    self._warned_blocks.add(i)
                    log.warning("%s: %s; check the register map", self.name, exc)
            except FrameError as exc:
                problems.append(str(exc))
                garbled = True
            except _NoAnswer:
                if self._rx:
                    garbled = True
                    problems.append(f"unreadable reply {bytes(self._rx[:64]).hex(' ')}")
                else:
                    silent = True
                    problems.append("no answer")
                    break  # a silent meter would cost one timeout per block: give up this poll
        if values:
            self._silent_polls = self._garbled_polls = 0
            return MeterReading(
                t_mono=t_mono,
                t_utc=t_utc,
                meter=self.name,
                values=values,
                units={r.name: r.unit for b in self.blocks for r in b.registers if r.name in values},
                raw=" | ".join(raws),
            )
        if silent and not garbled:
            self._silent_polls += 1
            if self._silent_polls >= self.cfg.silent_polls_max:
                self._silent_polls = 0
                raise DeviceUnavailable(
                    f"{self.cfg.port}: unit {self.cfg.unit_id} did not answer {self.cfg.silent_polls_max} polls"
                )
            return None
        self._silent_polls = 0
        self._garbled_polls = self._garbled_polls + 1 if garbled else 0
        if self._garbled_polls >= self.cfg.silent_polls_max:
            # Every reply unreadable: the line's settings differ from the meter's (or another device answers).
            self._garbled_polls = 0
            raise DeviceUnavailable(
                f"{self.cfg.port}: unit {self.cfg.unit_id}: no readable reply in {self.cfg.silent_polls_max} polls "
                f"({problems[-1]}); expected the meter at {self.cfg.baud} baud, parity {self.cfg.parity}, "
                f"stop bits {self.cfg.stop_bits}: set those to the meter's"
            )
        raise FrameError(f"{self.cfg.port}: unit {self.cfg.unit_id}: " + "; ".join(problems))

    def _read_block(self, block: Block) -> list[int]:
        client, line = self._client, self._line
        if client is None or client.socket is None or line is None:
            raise DeviceUnavailable(f"{self.cfg.port}: port closed")
        try:
            with line.lock:  # one request and its reply at a time on the line
                # Another meter's failed request may have closed the shared port (pymodbus closes it).
                if line.failed or not line.port.is_open:
                    raise DeviceUnavailable(f"{self.cfg.port}: serial port went away (the line failed)")
                if block.function == FUNCTION_CODES["input"]:
                    rr = client.read_input_registers(block.address, count=block.count, device_id=self.cfg.unit_id)
                else:
                    rr = client.read_holding_registers(block.address, count=block.count, device_id=self.cfg.unit_id)
        except (ConnectionException, OSError, serial.SerialException):
            line.failed = True
            raise DeviceUnavailable(f"{self.cfg.port}: serial port went away (read or write failed)") from None
        except ModbusException:
            if client.socket is None:
                raise DeviceUnavailable(f"{self.cfg.port}: serial port went away (read failed)") from None
            raise _NoAnswer from None
        if rr.isError():
            raise ExceptionReply(self.cfg.unit_id, getattr(rr, "exception_code", -1), block)
        words = list(rr.registers)
        if len(words) != block.count:
            raise FrameError(f"expected {block.count} registers at {block.address}, got {len(words)}")
        return words

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            # pymodbus passes the whole receive buffer each time it grows.
            self._rx[:] = data[:512]
        return data


class ExceptionReply(FrameError):
    """The meter answered a read with a Modbus exception (usually: a register the map has wrong)."""

    def __init__(self, unit_id: int, code: int, block: Block) -> None:
        super().__init__(
            f"unit {unit_id} answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) "
            f"to a read of {block.count} register(s) at {block.address}"
        )
        self.code = code
        self.block = block


class _NoAnswer(Exception):
    """No valid reply within timeout_s."""


def _quiet_pymodbus() -> None:
    # pymodbus logs every unanswered request at ERROR; the runner already reports a meter
    # going away (once) and coming back, so its own logger stays quiet unless set by the user.
    pm = logging.getLogger("pymodbus.logging")
    if pm.level == logging.NOTSET:
        pm.setLevel(logging.CRITICAL)
