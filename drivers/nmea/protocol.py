"""NMEA 0183 over bytes: checksum, sentence parsing, per-epoch fix assembly (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pynmea2

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.readings import Fix

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


# ---------------------------------------------------------------- epoch assembly


@dataclass
class NmeaStats:
    """Counters a technician and the replay summary read: what came in and what was dropped."""

    sentences: int = 0  # lines that looked like NMEA ('$' or '!')
    bad_checksum: int = 0
    bad_frames: int = 0  # garbled, truncated, unparsable (not counting bad checksums)
    no_checksum: int = 0
    ignored: int = 0  # valid sentences of types a fix does not use
    by_type: dict[str, int] = field(default_factory=dict)
    by_talker: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    epochs_no_position: int = 0
    epochs_no_date: int = 0
    late: int = 0  # sentences of an epoch already handed on


@dataclass
class _Epoch:
    tod: time
    lat: float | None = None
    lon: float | None = None
    pos_rank: int = 9  # GGA 0 < GNS 1 < RMC 2 < GLL 3: which sentence's position we hold
    valid: list[bool] = field(default_factory=list)
    quality: int | None = None
    satellites: int | None = None
    gsa_used: int = 0
    hdop: float | None = None
    altitude_m: float | None = None
    speed_kmh: float | None = None
    course_deg: float | None = None
    raw: list[str] = field(default_factory=list)


_POS_RANK = {"GGA": 0, "GNS": 1, "RMC": 2, "GLL": 3}


class FixAssembler:
    """Merges the sentences of one receiver epoch (same UTC time of day) into one Fix.

    Sentences with a time (RMC, GGA, GLL, GNS, ZDA) open or continue an epoch; VTG, GSA and GSV
    join the open one. The epoch is handed on when a sentence with a different time arrives, or
    when the line goes quiet (`flush`). The date comes from RMC or ZDA and rolls over at midnight
    for receivers that only send GGA.
    """

    def __init__(self, stats: NmeaStats | None = None) -> None:
        self.stats = stats if stats is not None else NmeaStats()
        self._epoch: _Epoch | None = None
        self._day: date | None = None
        self._last_tod: time | None = None
        self._done_tod: time | None = None

    def feed(self, s: Sentence) -> Fix | None:  # noqa: PLR0912 - one branch per sentence type
        """Add one sentence; return the previous epoch's Fix when this one starts a new epoch."""
        out: Fix | None = None
        if s.day is not None:
            self._day = s.day
        if s.tod is not None and (self._epoch is None or s.tod != self._epoch.tod):
            if self._epoch is None and s.tod == self._done_tod:
                self.stats.late += 1
                return None
            out = self.flush()
            self._epoch = _Epoch(tod=s.tod)
            self._roll_date(s.tod)
        ep = self._epoch
        if ep is None:
            return out
        if s.kind == "ZDA":
            return out
        if s.valid is not None:
            ep.valid.append(s.valid)
        if s.lat is not None and s.lon is not None and _POS_RANK.get(s.kind, 9) < ep.pos_rank:
            ep.lat, ep.lon, ep.pos_rank = s.lat, s.lon, _POS_RANK[s.kind]
        if s.kind == "GGA":
            ep.quality = s.quality
            ep.satellites = s.satellites if s.satellites is not None else ep.satellites
            ep.altitude_m = s.altitude_m
            ep.hdop = s.hdop if s.hdop is not None else ep.hdop
        elif s.kind == "GNS":
            ep.satellites = ep.satellites if ep.satellites is not None else s.satellites
            ep.hdop = ep.hdop if ep.hdop is not None else s.hdop
            ep.altitude_m = ep.altitude_m if ep.altitude_m is not None else s.altitude_m
        elif s.kind == "GSA":
            ep.gsa_used += s.satellites or 0  # one GSA per constellation on multi-GNSS receivers
            ep.hdop = ep.hdop if ep.hdop is not None else s.hdop
        if s.speed_kmh is not None and (ep.speed_kmh is None or s.kind == "RMC"):
            ep.speed_kmh = s.speed_kmh
        if s.course_deg is not None and (ep.course_deg is None or s.kind == "RMC"):
            ep.course_deg = s.course_deg
        if len(ep.raw) < 8:
            ep.raw.append(s.raw)
        return out

    def flush(self) -> Fix | None:
        """Hand on the open epoch (if it has a position and a date) and close it."""
        ep, self._epoch = self._epoch, None
        if ep is None:
            return None
        self._done_tod = ep.tod
        self.stats.epochs += 1
        if ep.lat is None or ep.lon is None:
            self.stats.epochs_no_position += 1
            return None
        if self._day is None:
            self.stats.epochs_no_date += 1
            return None
        t_utc = datetime.combine(self._day, ep.tod, tzinfo=UTC)
        return Fix(
            t_utc=t_utc,
            lat=ep.lat,
            lon=ep.lon,
            speed_kmh=ep.speed_kmh,
            course_deg=ep.course_deg,
            valid=bool(ep.valid) and all(ep.valid),
            fix_quality=ep.quality,
            satellites=ep.satellites if ep.satellites is not None else (ep.gsa_used or None),
            hdop=ep.hdop,
            altitude_m=ep.altitude_m,
            raw="\n".join(ep.raw),
        )

    def _roll_date(self, tod: time) -> None:
        # A GGA-only receiver gives no date after the first RMC/ZDA: step it at midnight.
        if self._day is not None and self._last_tod is not None and tod < self._last_tod:
            back_s = (self._last_tod.hour - tod.hour) * 3600 + (self._last_tod.minute - tod.minute) * 60
            if back_s > 12 * 3600:
                self._day += timedelta(days=1)
        self._last_tod = tod


class NmeaDecoder:
    """Lines in, Fixes out: checksum, parse, count, assemble. Shared by the driver and the offline replay."""

    def __init__(self, require_checksum: bool = False) -> None:
        self.require_checksum = require_checksum
        self.stats = NmeaStats()
        self.assembler = FixAssembler(self.stats)

    def feed_line(self, line: str) -> Fix | None:
        """One text line (without or with CR LF); raise FrameError for a bad one (already counted)."""
        line = line.strip()
        if not line:
            return None
        if line[0] not in "$!":
            self.stats.bad_frames += 1
            raise FrameError(f"not an NMEA sentence: expected '$' first, got {line[:16]!r}")
        self.stats.sentences += 1
        try:
            s = parse_sentence(line)
        except BadChecksum:
            self.stats.bad_checksum += 1
            raise
        except FrameError:
            self.stats.bad_frames += 1
            raise
        if "*" not in line:
            self.stats.no_checksum += 1
            if self.require_checksum:
                self.stats.bad_frames += 1
                raise FrameError(f"no checksum: expected '*hh' at the end of {line[:24]!r}")
        st = self.stats
        st.by_type[s.kind] = st.by_type.get(s.kind, 0) + 1
        st.by_talker[s.talker] = st.by_talker.get(s.talker, 0) + 1
        if s.kind not in USED_TYPES:
            st.ignored += 1
            return None
        return self.assembler.feed(s)

    def flush(self) -> Fix | None:
        return self.assembler.flush()


def decode_lines(lines: Any, decoder: NmeaDecoder | None = None) -> list[Fix]:
    """Every Fix in an iterable of text lines; bad lines are counted in decoder.stats and skipped."""
    dec = decoder or NmeaDecoder()
    fixes: list[Fix] = []
    for line in lines:
        try:
            fix = dec.feed_line(line)
        except FrameError:
            continue
        if fix is not None:
            fixes.append(fix)
    last = dec.flush()
    if last is not None:
        fixes.append(last)
    return fixes
