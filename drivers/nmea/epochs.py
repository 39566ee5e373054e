"""NMEA sentences to fixes: per-epoch assembly (same UTC time of day), the line decoder and its counters (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.nmea.protocol import USED_TYPES, BadChecksum, Sentence, parse_sentence
from edge_agent.drivers.readings import Fix

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
        # Whether this receiver gives a speed (RMC/VTG) with its epochs, as the last closed epoch showed;
        # until one closed, assume it does.
        self._sends_speed = True

    def feed(self, s: Sentence) -> Fix | None:  # noqa: PLR0912 - one branch per sentence type
        """Add one sentence; return the previous epoch's Fix when this one starts a new epoch."""
        out: Fix | None = None
        if s.tod is not None and (self._epoch is None or s.tod != self._epoch.tod):
            if self._epoch is None and s.tod == self._done_tod:
                self.stats.late += 1
                return None
            out = self.flush()  # the closing epoch keeps its own date: a new day is this sentence's
            self._epoch = _Epoch(tod=s.tod)
            self._roll_date(s.tod)
        if s.day is not None:
            self._day = s.day
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

    def open_has_motion(self) -> bool:
        """Whether the open epoch has its position and its speed (RMC or VTG seen), so handing it on
        before the next epoch starts loses nothing."""
        ep = self._epoch
        return ep is not None and ep.lat is not None and ep.speed_kmh is not None

    def sends_speed(self) -> bool:
        """Whether the last closed epoch with a position had a speed: an open epoch still without one
        then waits for it (or for the next epoch), however long a busy host keeps the rest of its burst."""
        return self._sends_speed

    def flush(self) -> Fix | None:
        """Hand on the open epoch (if it has a position and a date) and close it."""
        ep, self._epoch = self._epoch, None
        if ep is None:
            return None
        self._done_tod = ep.tod
        if ep.lat is not None:
            self._sends_speed = ep.speed_kmh is not None
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

    def open_has_motion(self) -> bool:
        return self.assembler.open_has_motion()

    def sends_speed(self) -> bool:
        return self.assembler.sends_speed()


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
