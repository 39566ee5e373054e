"""ELM327 and SAE J1979 over text: answer parsing, PID decoding, support bitmaps (pure, no I/O).

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

from dataclasses import dataclass

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.elm327.config import Elm327Config

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


class NoData(FrameError):
    """The vehicle did not answer this PID (`NO DATA`)."""


class BusDown(FrameError):
    """The adapter reports the vehicle bus absent (`UNABLE TO CONNECT`, `CAN ERROR`, ...)."""


# ---------------------------------------------------------------- pure parsing and decoding


def _is_hex(text: str) -> bool:
    return all(c in "0123456789ABCDEF" for c in text)


@dataclass(frozen=True, slots=True)
class EcuAnswer:
    """One ECU's answer to a service 01 request: who answered (the header, "" with headers off) and the data."""

    ecu: str  # "7E8" (CAN 11-bit), "18DAF110" (CAN 29-bit), "10" (source byte on J1850/ISO 9141/KWP)
    data: bytes
    line: str


def split_header(compact: str) -> tuple[str, str] | None:
    """(ECU, message hex) of one answer line printed with ATH1, or None when it has no header we know.

    ELM327 data sheet, "Headers" (ATH1): CAN 11-bit lines start with the 3-digit identifier and the
    ISO 15765-2 PCI length byte ("7E8 06 41 00 ..."); CAN 29-bit with 4 identifier bytes
    ("18 DA F1 10 06 41 00 ..."); J1850, ISO 9141 and KWP lines with 3 header bytes (priority,
    target, source) and end with a checksum byte ("48 6B 10 41 00 ... CS").
    """
    if not _is_hex(compact):
        return None
    if len(compact) % 2 and len(compact) >= 5:
        ecu, rest = compact[:3], compact[3:]
    elif compact[:4] in ("18DA", "18DB") and len(compact) >= 10:
        ecu, rest = compact[:8], compact[8:]
    elif len(compact) >= 10:
        return compact[4:6], compact[6:-2]
    else:
        return None
    pci = int(rest[:2], 16)
    # A single frame's PCI is its length (0-7); a first frame (1x) is multi-frame, not a PID answer.
    return (ecu, rest[2 : 2 + 2 * pci]) if pci <= 7 else None


def parse_elm_answers(text: str, pid: int, mode: int = 0x01, *, headers: bool = True) -> list[EcuAnswer]:  # noqa: PLR0912 - one branch per adapter message
    """Every ECU's answer to `mode pid` in one ELM327 answer (text before `>`), headers on or off.

    With `headers` False (ATH0), a line with a header is not an answer: the adapter was not set up so.
    Tolerates an echo of the request, `SEARCHING...`, `BUS INIT: ...OK`, spaces or none. Raises
    NoData, BusDown or FrameError (garbage, truncated answer) when no ECU gave a usable answer.
    """
    request = f"{mode:02X}{pid:02X}"
    answer = f"{mode + 0x40:02X}{pid:02X}"
    need = DATA_LEN.get(pid, 1) if mode == 0x01 else 1
    seen: list[str] = []
    found: list[EcuAnswer] = []
    for raw_line in text.replace("\n", "\r").split("\r"):
        line = raw_line.strip().upper()
        compact = line.replace(" ", "")
        if not line or line in ("SEARCHING...", "OK") or compact == request:
            continue
        if line.startswith("BUS INIT") and line.endswith("OK"):
            continue
        seen.append(line)
        if compact == "NODATA":
            if found:
                continue
            raise NoData(f"{request}: NO DATA (the vehicle does not answer this PID)")
        if line == "?":
            raise FrameError(f"{request}: adapter answered '?' (command not understood)")
        if line.startswith("BUS INIT") or line in BUS_DOWN:
            raise BusDown(f"{request}: adapter reports {line!r} (ignition off or no OBD bus?)")
        if line in ANSWER_ERRORS:
            raise FrameError(f"{request}: adapter reports {line!r}")
        if compact.startswith(answer):
            ecu, body = "", compact
        else:
            split = split_header(compact) if headers else None
            if split is None or not split[1].startswith(answer):
                continue
            ecu, body = split
        if not _is_hex(body) or len(body) % 2:
            raise FrameError(f"{request}: garbled answer {line!r}")
        data = bytes.fromhex(body[len(answer) :])
        if len(data) < need:
            raise FrameError(f"{request}: truncated answer {line!r}: expected {need} data byte(s), got {len(data)}")
        found.append(EcuAnswer(ecu, data[:need], raw_line.strip()))
    if found:
        return found
    if not seen:
        raise FrameError(f"{request}: empty answer")
    raise FrameError(f"{request}: expected an answer starting {answer}, got {' | '.join(seen)[:80]!r}")


def parse_elm_response(text: str, pid: int, mode: int = 0x01) -> bytes:
    """The data bytes of the first ECU's answer to `mode pid` (see parse_elm_answers for every ECU's)."""
    return parse_elm_answers(text, pid, mode, headers=False)[0].data


def merge_support(answers: list[EcuAnswer], base: int) -> dict[str, set[int]]:
    """ECU -> PIDs it flags in its support bitmap for `base` (0x00, 0x20, 0x40): every ECU counts."""
    out: dict[str, set[int]] = {}
    for a in answers:
        out.setdefault(a.ecu, set()).update(supported_from_bitmap(base, a.data))
    return out


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
