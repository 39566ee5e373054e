"""Omnicomm LLS frames over bytes: request, CRC8, answer parsing and tank calibration (pure, no I/O).

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
from dataclasses import dataclass

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.lls.config import LlsConfig

REQUEST_PREFIX = 0x31
RESPONSE_PREFIX = 0x3E
OP_SINGLE_READ = 0x06
RESPONSE_LEN = 9


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
