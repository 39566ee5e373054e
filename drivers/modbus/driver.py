"""Modbus RTU meters (temperature, energy): config and register maps, pure frame/value decoding, the polling driver."""

from __future__ import annotations

import functools
import importlib.resources
import logging
import math
import struct
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from edge_agent.drivers.base import DeviceUnavailable, FrameError
from edge_agent.drivers.readings import MeterReading
from edge_agent.errors import ConfigError
from edge_agent.schema import Expect

log = logging.getLogger(__name__)

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
REGISTER_WORDS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
FUNCTION_CODES: dict[str, int] = {"holding": 0x03, "input": 0x04}

# Modbus application protocol v1.1b3, section 7: exception codes a slave answers with.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

# Modbus application protocol v1.1b3, 6.3/6.4: at most 125 registers per read request.
MAX_READ_REGISTERS = 125

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"


# ---------------------------------------------------------------- config


class RegisterSpec(BaseModel):
    """One value of a meter: where it lives, how its words decode, what unit it is in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[
        str, Field(pattern=NAME_PATTERN), Expect("a lower-case name of letters, digits and '_', e.g. temperature_c")
    ]
    address: Annotated[
        int, Field(ge=0, le=65535), Expect("a protocol register address 0-65535 (manual's 30001 / 40001 is 0)")
    ]
    function: Annotated[Literal["holding", "input"], Expect('"holding" (function 03) or "input" (function 04)')] = (
        "holding"
    )
    type: Annotated[RegisterType, Expect('"int16", "uint16", "int32", "uint32" or "float32"')] = "uint16"
    # Order of the two 16-bit words of a 32-bit value: "big" = high word first (ABCD, Modbus
    # convention, Eastron), "little" = low word first (CDAB, many PLCs and gateways).
    word_order: Annotated[
        Literal["big", "little"], Expect('"big" (high word first, ABCD) or "little" (low word first, CDAB)')
    ] = "big"
    scale: Annotated[float, Expect("a number the raw value is multiplied by, e.g. 0.1")] = 1.0
    offset: Annotated[float, Expect("a number added after scaling")] = 0.0
    unit: Annotated[str, Field(max_length=16), Expect("a unit of up to 16 characters, e.g. kWh or °C")] = ""
    # Absolute change (in `unit`) that makes the sensor pipeline send a record; None: the section default.
    deadband: Annotated[float | None, Field(ge=0), Expect("an absolute change >= 0 in the register's unit")] = None

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


class MeterMap(BaseModel):
    """A register map file in config/meters/: which meter, which document, which registers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: Annotated[str, Expect("the maker's name")]
    model: Annotated[str, Expect("the meter model")]
    document: Annotated[str, Expect("the vendor document the addresses come from")]
    # Factory serial settings, used when the meter's config does not set them.
    baud: Annotated[int | None, Field(ge=300, le=115200), Expect("a baud rate such as 2400 or 9600")] = None
    parity: Annotated[Literal["N", "E", "O"] | None, Expect('"N", "E" or "O"')] = None
    # The cumulative kWh register the sensor pipeline turns into CO2 (None: not an energy meter).
    energy_register: Annotated[str | None, Expect("the name of one of the map's registers")] = None
    max_registers_per_read: Annotated[int, Field(ge=1, le=MAX_READ_REGISTERS), Expect("an integer 1-125")] = 64
    registers: Annotated[list[RegisterSpec], Field(min_length=1), Expect("a non-empty list of [[registers]]")]

    @model_validator(mode="after")
    def _check(self) -> MeterMap:
        _check_unique_names(self.registers)
        if self.energy_register is not None and self.energy_register not in {r.name for r in self.registers}:
            raise ValueError(f"energy_register {self.energy_register!r} is not one of the registers")
        return self


def shipped_maps() -> list[str]:
    """Names of the register maps shipped in config/meters/ (file names without .toml)."""
    folder = importlib.resources.files("edge_agent.resources.config") / "meters"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def map_path(name: str, base: Path | None = None) -> Path:
    """A shipped map's file, or a map given as a path (relative paths against `base`)."""
    if name.endswith(".toml") or "/" in name:
        p = Path(name)
        return p if p.is_absolute() or base is None else base / p
    folder = importlib.resources.files("edge_agent.resources.config") / "meters"
    return Path(str(folder / f"{name}.toml"))


@functools.lru_cache(maxsize=32)
def load_map(path: Path) -> MeterMap:
    """Read and validate one register map file; ConfigError names the map file and the key."""
    from edge_agent.settings import format_validation_error  # the agent config imports this module

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(shipped_maps()) or "none"
        raise ConfigError([f"{path}: meter map not found (shipped maps: {known})"]) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read meter map: {exc}"]) from None
    try:
        return MeterMap.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc, MeterMap)) from None


class ModbusMeterConfig(BaseModel):
    """One Modbus RTU meter on an RS-485 line: serial settings, unit id and its register map."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[Literal["modbus"], Expect('"modbus"')] = "modbus"
    name: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
        Expect("1-64 letters, digits, '.', '_' or '-', e.g. cold-room-1"),
    ]
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=300, le=115200), Expect("a baud rate such as 2400, 9600 or 19200")] = 9600
    parity: Annotated[Literal["N", "E", "O"], Expect('"N" (none), "E" (even) or "O" (odd)')] = "N"
    stop_bits: Annotated[Literal[1, 2], Expect("1 or 2")] = 1
    unit_id: Annotated[int, Field(ge=1, le=247), Expect("a Modbus unit (slave) id 1-247")] = 1
    poll_interval_s: Annotated[float, Field(ge=0.1, le=3600), Expect("a number of seconds 0.1-3600")] = 10.0
    # Per request; also bounds how long the driver blocks, so at most 1 s.
    timeout_s: Annotated[float, Field(gt=0, le=1.0), Expect("a number of seconds > 0 and <= 1")] = 0.5
    # A shipped map name (config/meters/NAME.toml) or a path to a map file.
    map: Annotated[
        str | None,
        Field(min_length=1),
        Expect("the name of a shipped meter map (see config/meters/) or a path to a .toml map"),
    ] = None
    # Registers of your own, added to the map's (a same-named register replaces the map's).
    registers: Annotated[list[RegisterSpec], Expect("a list of [[...registers]] tables")] = Field(default_factory=list)
    energy_register: Annotated[str | None, Expect("the name of one of this meter's registers")] = None
    max_registers_per_read: Annotated[int | None, Field(ge=1, le=MAX_READ_REGISTERS), Expect("an integer 1-125")] = None
    # Unused registers a single read may span to merge two blocks (0: only adjacent ones; some
    # meters answer "illegal data address" for gaps).
    max_gap_registers: Annotated[int, Field(ge=0, le=32), Expect("an integer 0-32")] = 0
    # Polls without any answer before the driver reports the meter as gone (the runner reopens).
    silent_polls_max: Annotated[int, Field(ge=1, le=100), Expect("an integer 1-100")] = 3

    _map: MeterMap | None = PrivateAttr(default=None)
    _resolved: tuple[RegisterSpec, ...] = PrivateAttr(default=())

    @field_validator("map")
    @classmethod
    def _check_map(cls, v: str | None) -> str | None:
        if v is not None and not (v.endswith(".toml") or "/" in v) and v not in shipped_maps():
            raise ValueError("unknown map")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> ModbusMeterConfig:
        meter_map = load_map(map_path(self.map)) if self.map is not None else None
        by_name: dict[str, RegisterSpec] = {}
        if meter_map is not None:
            by_name.update((r.name, r) for r in meter_map.registers)
            if "baud" not in self.model_fields_set and meter_map.baud is not None:
                self.baud = meter_map.baud
            if "parity" not in self.model_fields_set and meter_map.parity is not None:
                self.parity = meter_map.parity
            if self.energy_register is None:
                self.energy_register = meter_map.energy_register
            if self.max_registers_per_read is None:
                self.max_registers_per_read = meter_map.max_registers_per_read
        _check_unique_names(self.registers)
        by_name.update((r.name, r) for r in self.registers)
        if not by_name:
            raise ValueError('no registers: set map = "<name>" or add [[...registers]] tables')
        if self.energy_register is not None and self.energy_register not in by_name:
            raise ValueError(f"energy_register {self.energy_register!r} names no register of this meter")
        self._map = meter_map
        self._resolved = tuple(by_name.values())
        return self

    @property
    def all_registers(self) -> tuple[RegisterSpec, ...]:
        """The map's registers merged with the meter's own."""
        return self._resolved

    @property
    def model_name(self) -> str | None:
        """The map's "vendor model", for records and `sensors list`."""
        return f"{self._map.vendor} {self._map.model}" if self._map is not None else None


def _check_unique_names(registers: Sequence[RegisterSpec]) -> None:
    seen: set[str] = set()
    for r in registers:
        if r.name in seen:
            raise ValueError(f"register name {r.name!r} is used twice")
        seen.add(r.name)


# ---------------------------------------------------------------- pure frame and value decoding


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); the frame carries it low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def build_read_request(unit_id: int, function: int, address: int, count: int) -> bytes:
    """An RTU read request (function 03 or 04) with its CRC."""
    body = struct.pack(">BBHH", unit_id, function, address, count)
    return body + struct.pack("<H", crc16_modbus(body))


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """One RTU frame whose CRC checked out."""

    unit_id: int
    function: int
    payload: bytes  # between function code and CRC
    raw: bytes

    @property
    def is_exception(self) -> bool:
        return self.function >= 0x80


def parse_frame(frame: bytes) -> RtuFrame:
    """Check one complete RTU frame (unit, function, data, CRC); FrameError says what is wrong."""
    if len(frame) < 4:
        raise FrameError(f"RTU frame too short: expected >= 4 bytes, got {len(frame)} ({frame.hex(' ')})")
    body, crc_got = frame[:-2], frame[-2] | frame[-1] << 8
    crc_want = crc16_modbus(body)
    if crc_got != crc_want:
        raise FrameError(f"RTU frame CRC mismatch: expected {crc_want:04X}, got {crc_got:04X} ({frame.hex(' ')})")
    return RtuFrame(unit_id=frame[0], function=frame[1], payload=bytes(frame[2:-2]), raw=bytes(frame))


def parse_read_response(frame: bytes, unit_id: int, function: int, count: int) -> list[int]:
    """The register words of a 03/04 response; FrameError for a wrong unit, function, length or an exception."""
    f = parse_frame(frame)
    if f.unit_id != unit_id:
        raise FrameError(f"RTU reply from unit {f.unit_id}, expected unit {unit_id}")
    if f.function == function | 0x80:
        code = f.payload[0] if f.payload else -1
        raise FrameError(f"unit {unit_id} answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")
    if f.function != function:
        raise FrameError(f"RTU reply has function {f.function:02X}, expected {function:02X}")
    if not f.payload or f.payload[0] != 2 * count or len(f.payload) != 1 + 2 * count:
        raise FrameError(f"RTU reply byte count wrong: expected {2 * count} data bytes, got {f.payload.hex(' ')}")
    return [int.from_bytes(f.payload[1 + 2 * i : 3 + 2 * i], "big") for i in range(count)]


def decode_value(words: Sequence[int], spec: RegisterSpec) -> float:
    """A register's engineering value from its 16-bit words: type, word order, scale and offset."""
    if len(words) != spec.words:
        raise FrameError(f"{spec.name}: expected {spec.words} register word(s), got {len(words)}")
    if spec.words == 2:
        hi, lo = (words[0], words[1]) if spec.word_order == "big" else (words[1], words[0])
        data = struct.pack(">HH", hi, lo)
    else:
        data = struct.pack(">H", words[0])
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}[spec.type]
    raw: float = struct.unpack(fmt, data)[0]
    if not math.isfinite(raw):  # NaN/inf: a float32 register that holds no value (yet)
        raise FrameError(f"{spec.name}: register holds no number ({data.hex(' ')})")
    # Keep the digits the register carries (float32: ~7 significant, 32-bit ints: 10), so records
    # say 0.98 and not 0.9800000190734863, nor 61.50000000000001 after scaling.
    digits = 7 if spec.type == "float32" else 10
    return float(f"{raw * spec.scale + spec.offset:.{digits}g}")


@dataclass(frozen=True, slots=True)
class Block:
    """One read request covering one or more registers of the same function."""

    function: int
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]


def plan_blocks(registers: Sequence[RegisterSpec], max_count: int = 64, max_gap: int = 0) -> list[Block]:
    """Group registers into as few reads as the meter allows (same function, gap <= max_gap, <= max_count)."""
    blocks: list[Block] = []
    for name, code in FUNCTION_CODES.items():
        specs = sorted((r for r in registers if r.function == name), key=lambda r: r.address)
        current: list[RegisterSpec] = []
        start = end = 0
        for r in specs:
            r_end = r.address + r.words
            if current and r.address - end <= max_gap and max(end, r_end) - start <= max_count:
                current.append(r)
                end = max(end, r_end)
                continue
            if current:
                blocks.append(Block(code, start, end - start, tuple(current)))
            current, start, end = [r], r.address, r_end
        if current:
            blocks.append(Block(code, start, end - start, tuple(current)))
    return blocks


def decode_block(block: Block, words: Sequence[int]) -> dict[str, float]:
    """Values of every register in a block from the words read."""
    if len(words) != block.count:
        raise FrameError(f"expected {block.count} words from {block.address}, got {len(words)}")
    return {
        r.name: decode_value(words[r.address - block.address : r.address - block.address + r.words], r)
        for r in block.registers
    }


# ---------------------------------------------------------------- the driver


class ModbusMeterDriver:
    """Polls one meter every poll_interval_s through pymodbus's serial RTU client.

    The port is opened by us with serial.serial_for_url (so a pty, /dev/ttyUSB0 or a
    pyserial URL all work and open errors carry pyserial's message) and handed to the
    pymodbus client, which then frames requests and replies (CRC, resync on garbage).
    """

    def __init__(self, cfg: ModbusMeterConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.blocks = plan_blocks(cfg.all_registers, cfg.max_registers_per_read or 64, cfg.max_gap_registers)
        self._client: ModbusSerialClient | None = None
        self._next_poll_mono = 0.0
        self._silent_polls = 0
        self._rx = bytearray()
        self._warned_blocks: set[int] = set()

    def open(self) -> None:
        self.close()
        try:
            port = serial.serial_for_url(
                self.cfg.port,
                baudrate=self.cfg.baud,
                parity=self.cfg.parity,
                stopbits=self.cfg.stop_bits,
                bytesize=8,
                timeout=self.cfg.timeout_s,
                write_timeout=self.cfg.timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceUnavailable(f"{self.cfg.port}: {exc}") from None
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
        self._silent_polls = 0
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
        port = client.socket if client is not None else None
        if client is not None:
            client.socket = None
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException):
                log.debug("%s: error closing port", self.name)

    def read(self, timeout_s: float) -> MeterReading | None:
        """Wait (at most timeout_s) until the next poll is due, then poll every block once."""
        wait_s = self._next_poll_mono - time.monotonic()
        if wait_s > 0:
            time.sleep(min(wait_s, timeout_s))
            if self._next_poll_mono - time.monotonic() > 0:
                return None
        now = time.monotonic()
        self._next_poll_mono = max(self._next_poll_mono + self.cfg.poll_interval_s, now)
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
            self._silent_polls = 0
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
        raise FrameError(f"{self.cfg.port}: unit {self.cfg.unit_id}: " + "; ".join(problems))

    def _read_block(self, block: Block) -> list[int]:
        client = self._client
        if client is None or client.socket is None:
            raise DeviceUnavailable(f"{self.cfg.port}: port closed")
        try:
            if block.function == FUNCTION_CODES["input"]:
                rr = client.read_input_registers(block.address, count=block.count, device_id=self.cfg.unit_id)
            else:
                rr = client.read_holding_registers(block.address, count=block.count, device_id=self.cfg.unit_id)
        except (ConnectionException, OSError, serial.SerialException):
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
