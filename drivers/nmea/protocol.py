"""NMEA 0183 over bytes: checksum, sentence parsing, per-epoch fix assembly (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, time

import pynmea2

from edge_agent.drivers.base import FrameError

KNOT_KMH = 1.852  # NMEA 0183 speed over ground is in knots; 1 kn = 1.852 km/h exactly
MAX_LINE_CHARS = 512  # NMEA 0183 caps a sentence at 82 chars, but proprietary ones run longer ($PMTKCHN: 203)
# Sentence types that carry what a fix needs; everything else (TXT, GBS, GST, RMB, proprietary $P...)
# is counted as "ignored", never as an error.
USED_TYPES = frozenset({"RMC", "GGA", "VTG", "GSA", "GSV", "GLL", "ZDA", "GNS"})
# Fewest fields (after the header) each type has in any NMEA version seen in the wild: fewer means
# a truncated sentence, which matters most for the ones that arrive without a checksum.
MIN_FIELDS = {"RMC": 11, "GGA": 14, "GLL": 5, "VTG": 4, "GSA": 17, "GSV": 3, "ZDA": 4, "GNS": 12}
AUTOBAUD_RATES = (4800, 9600, 38400, 115200, 19200, 57600)


class BadChecksum(FrameError):
    """A sentence whose *hh checksum does not match its body."""


# ---------------------------------------------------------------- pure parsing


@dataclass(frozen=True, slots=True)
class Sentence:
    """What one NMEA sentence says that a fix can use; None where the sentence is silent or the field empty."""

    talker: str
    kind: str  # RMC, GGA, ...
    tod: time | None = None  # UTC time of day
    day: date | None = None
    lat: float | None = None
    lon: float | None = None
    valid: bool | None = None  # RMC/GLL status A, GGA quality > 0, GSA mode 2/3
    quality: int | None = None
    satellites: int | None = None  # used in the fix (GGA), or PRNs listed in GSA
    in_view: int | None = None  # GSV
    hdop: float | None = None
    altitude_m: float | None = None
    speed_kmh: float | None = None
    course_deg: float | None = None
    raw: str = ""


def nmea_checksum(body: str) -> int:
    """XOR of every character between '$' and '*' (NMEA 0183 section 5.2.1)."""
    value = 0
    for b in body.encode("ascii", "replace"):
        value ^= b
    return value


def split_checksum(line: str) -> tuple[str, bool | None]:
    """('GPRMC,...', ok) for '$GPRMC,...*hh'; ok is None when the sentence carries no checksum."""
    if not line or line[0] not in "$!":
        raise FrameError(f"not an NMEA sentence: expected '$' first, got {line[:16]!r}")
    star = line.rfind("*")
    if star < 0:
        return line[1:], None
    body, given = line[1:star], line[star + 1 :].strip()
    if len(given) != 2:
        raise BadChecksum(f"bad checksum field: expected 2 hex digits after '*', got {given[:8]!r}")
    try:
        want = int(given, 16)
    except ValueError:
        raise BadChecksum(f"bad checksum field: expected 2 hex digits after '*', got {given!r}") from None
    return body, nmea_checksum(body) == want


def _float(s: str) -> float | None:
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None  # NaN and inf are not measurements


def _int(s: str) -> int | None:
    v = _float(s)
    return int(v) if v is not None else None


def _coord(value: str, hemi: str, degree_digits: int) -> float | None:
    """ddmm.mmmm (lat) or dddmm.mmmm (lon) with N/S/E/W to signed decimal degrees."""
    if not value or hemi not in ("N", "S", "E", "W"):
        return None
    dot = value.find(".")
    head = value if dot < 0 else value[:dot]
    if len(head) < degree_digits + 2 or not head.isdigit():
        return None
    deg = int(head[:-2])
    minutes = _float(value[len(head) - 2 :])
    if minutes is None or minutes >= 60:
        return None
    v = deg + minutes / 60.0
    limit = 90.0 if degree_digits == 2 else 180.0
    if v > limit:
        return None
    return -v if hemi in ("S", "W") else v


def _tod(s: str) -> time | None:
    if len(s) < 6 or not s[:6].isdigit():
        return None
    hh, mm, ss = int(s[0:2]), int(s[2:4]), int(s[4:6])
    frac = _float("0" + s[6:]) if len(s) > 6 and s[6] == "." else 0.0
    if hh > 23 or mm > 59 or ss > 60 or frac is None:  # 60: a leap second
        return None
    return time(hh, mm, min(ss, 59), round(frac * 1e6) if frac < 1 else 0)


def _ddmmyy(s: str) -> date | None:
    if len(s) != 6 or not s.isdigit():
        return None
    dd, mm, yy = int(s[0:2]), int(s[2:4]), int(s[4:6])
    # Two-digit years: NMEA receivers in service date from 1980 (GPS epoch) on.
    year = 1900 + yy if yy >= 80 else 2000 + yy
    try:
        return date(year, mm, dd)
    except ValueError:
        return None


def parse_sentence(line: str) -> Sentence:
    """One line of NMEA 0183 (any talker) to a Sentence; raise FrameError (BadChecksum) for a bad line.

    Sentence types that carry nothing a fix uses come back with only talker and kind set.
    """
    line = line.strip()
    if len(line) > MAX_LINE_CHARS:
        raise FrameError(f"line too long: expected at most {MAX_LINE_CHARS} characters, got {len(line)}")
    body, ok = split_checksum(line)
    if ok is False:
        raise BadChecksum(f"checksum mismatch in {line[:24]!r}...")
    head = body.split(",", 1)[0]
    if head.startswith("P") or len(head) != 5:
        # Proprietary ($PMTK, $PSRF, $PGLOR, ...) or a non-standard header: nothing for a fix.
        return Sentence(talker=head[:1], kind=head, raw=line)
    talker, kind = head[:2], head[2:]
    if not talker.isalpha() or not talker.isupper():
        raise FrameError(f"bad talker id: expected two capital letters, got {talker!r}")
    if kind not in USED_TYPES:
        return Sentence(talker=talker, kind=kind, raw=line)
    try:
        # pynmea2 does the framing (talker/type/fields); values are converted here so that an
        # empty or garbled field becomes None instead of pynmea2's 0.0 or an exception.
        msg = pynmea2.parse("$" + body, check=False)
        f: list[str] = list(msg.data)
    except (pynmea2.ParseError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise FrameError(f"unparsable {head}: {exc}") from None
    if len(f) < MIN_FIELDS[kind]:
        raise FrameError(f"truncated {head}: expected at least {MIN_FIELDS[kind]} fields, got {len(f)}")
    f += [""] * (20 - len(f))  # optional trailing fields (mode indicator, system id) read as empty
    return _decode(talker, kind, f, line)


def _decode(talker: str, kind: str, f: list[str], raw: str) -> Sentence:  # noqa: PLR0911 - one case per type
    if kind == "RMC":
        knots = _float(f[6])
        return Sentence(
            talker,
            kind,
            tod=_tod(f[0]),
            day=_ddmmyy(f[8]),
            lat=_coord(f[2], f[3], 2),
            lon=_coord(f[4], f[5], 3),
            # Status A = data valid; NMEA 2.3+ mode indicator N (no fix) or S (simulator) override it.
            valid=f[1] == "A" and f[11][:1] not in ("N", "S"),
            speed_kmh=knots * KNOT_KMH if knots is not None else None,
            course_deg=_float(f[7]),
            raw=raw,
        )
    if kind in ("GGA", "GNS"):
        valid: bool | None
        if kind == "GGA":
            quality = _int(f[5])
            valid = None if quality is None else quality > 0
        else:  # GNS mode letters per constellation: any of A/D/P/R/F/E means a fix
            quality = None
            valid = any(c in "ADPRFE" for c in f[5]) if f[5] else None
        return Sentence(
            talker,
            kind,
            tod=_tod(f[0]),
            lat=_coord(f[1], f[2], 2),
            lon=_coord(f[3], f[4], 3),
            valid=valid,
            quality=quality,
            satellites=_int(f[6]),
            hdop=_float(f[7]),
            altitude_m=_float(f[8]),
            raw=raw,
        )
    if kind == "GLL":
        return Sentence(
            talker,
            kind,
            tod=_tod(f[4]),
            lat=_coord(f[0], f[1], 2),
            lon=_coord(f[2], f[3], 3),
            valid=(f[5] == "A" and f[6][:1] not in ("N", "S")) if f[5] else None,
            raw=raw,
        )
    if kind == "VTG":
        kmh = _float(f[6])
        if kmh is None:
            knots = _float(f[4])
            kmh = knots * KNOT_KMH if knots is not None else None
        return Sentence(talker, kind, speed_kmh=kmh, course_deg=_float(f[0]), raw=raw)
    if kind == "GSA":
        mode = _int(f[1])
        used = sum(1 for prn in f[2:14] if prn)
        return Sentence(
            talker,
            kind,
            valid=None if mode is None else mode >= 2,
            satellites=used or None,
            hdop=_float(f[15]),
            raw=raw,
        )
    if kind == "GSV":
        return Sentence(talker, kind, in_view=_int(f[2]), raw=raw)
    # ZDA: time, day, month, year
    dd, mm, yyyy = _int(f[1]), _int(f[2]), _int(f[3])
    day = None
    if dd and mm and yyyy:
        try:
            day = date(yyyy, mm, dd)
        except ValueError:
            day = None
    return Sentence(talker, kind, tod=_tod(f[0]), day=day, raw=raw)
