"""Scale weight lines over bytes: MT-SICS and continuous ASCII (A&D, KERN) parsing (pure, no I/O).

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

import re
from dataclasses import dataclass

from edge_agent.drivers.base import FrameError

MAX_LINE_BYTES = 128  # longest legitimate line is ~25 bytes; more means a missing terminator


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
