"""Modbus RTU over bytes: CRC-16, read requests, reply parsing, value decoding and block planning (pure)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.modbus.config import FUNCTION_CODES, RegisterSpec

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
