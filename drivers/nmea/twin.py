"""A GPS receiver twin on a pty: replays an NMEA log or drives a scenario, writing real NMEA 0183.

It shares no code with drivers/nmea/driver.py: checksums, coordinates and times are formatted here
from the standard (NMEA 0183 v4.10: $ttRMC/GGA/VTG/GSA field layout, XOR checksum) so that a
misunderstanding cannot hide in both.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import xor
from pathlib import Path

from edge_agent.drivers.ptytwin import PtyTwin

START_WAIT_S = 30.0  # longest a scenario route waits for start_after

EARTH_RADIUS_M = 6_371_008.8  # mean radius; the twin's own (spherical) dead reckoning


def nmea_line(body: str) -> bytes:
    """'$' + body + '*' + two upper-case hex digits of the XOR of body's bytes + CR LF."""
    cs = reduce(xor, body.encode("ascii"), 0)
    return f"${body}*{cs:02X}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class Leg:
    """A stretch of the scenario: hold `speed_kmh` on `heading_deg` for `duration_s` (speed 0: a stop)."""

    duration_s: float
    speed_kmh: float = 0.0
    heading_deg: float = 0.0


def _lat(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:02d}{(a - d) * 60:07.4f}", "N" if v >= 0 else "S"


def _lon(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:03d}{(a - d) * 60:07.4f}", "E" if v >= 0 else "W"


def epoch_sentences(
    t: datetime,
    lat: float,
    lon: float,
    speed_kmh: float,
    course_deg: float,
    *,
    talker: str = "GN",
    satellites: int = 9,
    hdop: float = 0.9,
    valid: bool = True,
) -> list[bytes]:
    """One receiver epoch: RMC, VTG, GGA, GSA, as a u-blox receiver orders them."""
    hhmmss = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
    ddmmyy = t.strftime("%d%m%y")
    la, ns = _lat(lat)
    lo, ew = _lon(lon)
    kn = speed_kmh / 1.852
    status, quality, mode = ("A", 1, "A") if valid else ("V", 0, "N")
    prns = ",".join([f"{p:02d}" for p in range(1, satellites + 1)][:12] + [""] * max(0, 12 - satellites))
    return [
        nmea_line(f"{talker}RMC,{hhmmss},{status},{la},{ns},{lo},{ew},{kn:.3f},{course_deg:.2f},{ddmmyy},,,{mode}"),
        nmea_line(f"{talker}VTG,{course_deg:.2f},T,,M,{kn:.3f},N,{speed_kmh:.3f},K,{mode}"),
        nmea_line(f"{talker}GGA,{hhmmss},{la},{ns},{lo},{ew},{quality},{satellites:02d},{hdop:.2f},45.0,M,0.0,M,,"),
        nmea_line(f"{talker}GSA,A,{3 if valid else 1},{prns},{hdop * 1.6:.2f},{hdop:.2f},{hdop * 1.3:.2f}"),
    ]


def drive(
    legs: Sequence[Leg], start_lat: float, start_lon: float, start_t: datetime, step_s: float = 1.0
) -> Iterator[tuple[datetime, float, float, float, float]]:
    """(t, lat, lon, speed_kmh, course_deg) every step_s along the legs, by spherical dead reckoning."""
    lat, lon, t = start_lat, start_lon, start_t
    yield t, lat, lon, 0.0, legs[0].heading_deg if legs else 0.0
    for leg in legs:
        steps = round(leg.duration_s / step_s)
        for _ in range(steps):
            d = leg.speed_kmh / 3.6 * step_s / EARTH_RADIUS_M
            h = math.radians(leg.heading_deg)
            p1, l1 = math.radians(lat), math.radians(lon)
            p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(h))
            l2 = l1 + math.atan2(math.sin(h) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
            lat, lon = math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0
            t += timedelta(seconds=step_s)
            yield t, lat, lon, leg.speed_kmh, leg.heading_deg


# Where the time (and date) sit in each sentence type, counting fields after the header.
_TIME_FIELD = {"RMC": 0, "GGA": 0, "GLL": 4, "ZDA": 0, "GNS": 0, "GBS": 0, "GST": 0}


def _rewrite(line: str, shift: timedelta, base: datetime) -> str:
    """The same sentence with its UTC time (and RMC/ZDA date) moved by `shift`; checksum recomputed."""
    body = line[1:].split("*", 1)[0]
    fields = body.split(",")
    kind = fields[0][2:]
    i = _TIME_FIELD.get(kind)
    if i is None or len(fields) <= i + 1 or len(fields[i + 1]) < 6:
        return line
    raw = fields[i + 1]
    try:
        frac = raw[6:]
        tod = timedelta(hours=int(raw[0:2]), minutes=int(raw[2:4]), seconds=int(raw[4:6]))
    except ValueError:
        return line
    new = datetime.combine(base.date(), datetime.min.time(), UTC) + tod + shift
    fields[i + 1] = new.strftime("%H%M%S") + frac
    if kind == "RMC" and len(fields) > 9 and len(fields[9]) == 6:
        fields[9] = new.strftime("%d%m%y")
    if kind == "ZDA" and len(fields) > 4:
        fields[2], fields[3], fields[4] = new.strftime("%d"), new.strftime("%m"), new.strftime("%Y")
    return nmea_line(",".join(fields)).decode("ascii").rstrip()


class NmeaTwin(PtyTwin):
    """Replays a log (`log=`) or drives a scenario (`legs=`) on a pty, like a USB GPS would.

    Replay writes the log's lines at `lines_per_s`, optionally looping and optionally with
    times rewritten so that the first epoch is "now". A scenario writes one epoch every
    `epoch_s` of NMEA time, `speedup` times faster than real time. `garbage_every=N` puts a
    line of noise on the wire after every N epochs (or lines).
    """

    name = "nmea"

    def __init__(
        self,
        link: str | Path | None = None,
        *,
        log: str | Path | None = None,
        lines_per_s: float = 50.0,
        loop: bool = False,
        rewrite_time: bool = False,
        legs: Sequence[Leg] | None = None,
        start_lat: float = 39.9042,
        start_lon: float = 116.4074,
        start_t: datetime | None = None,
        epoch_s: float = 1.0,
        speedup: float = 1.0,
        talker: str = "GN",
        garbage_every: int = 0,
        start_after: threading.Event | None = None,
    ) -> None:
        super().__init__(link)
        # A scenario route starts once this is set (the vehicle bus answered the agent), at most
        # START_WAIT_S later: on a busy machine the agent may open the bus seconds after the GPS, and a
        # trip that began before it would have no fuel readings.
        self.start_after = start_after
        if (log is None) == (legs is None):
            raise ValueError("NmeaTwin: expected exactly one of log= (replay) or legs= (scenario)")
        self.log = Path(log) if log is not None else None
        self.lines_per_s = lines_per_s
        self.loop = loop
        self.rewrite_time = rewrite_time
        self.legs = list(legs or [])
        self.start_lat, self.start_lon = start_lat, start_lon
        self.start_t = start_t
        self.epoch_s = epoch_s
        self.speedup = speedup
        self.talker = talker
        self.garbage_every = garbage_every
        self.epochs_sent = 0
        self.lines_sent = 0
        self.done = False

    def serve(self) -> None:
        if self.log is not None:
            self._replay(self.log)
        else:
            self._scenario()
        self.done = True
        self.stop_event.wait()

    def _send(self, data: bytes) -> None:
        # Unplugged: the bytes are lost, as on a real wire (the receiver keeps talking).
        if self.write(data):
            self.lines_sent += 1

    def _noise(self, n: int) -> None:
        if self.garbage_every and n % self.garbage_every == 0:
            self._send(b"\x00\xff$GPR\x13MC,12*\xfe garbage\r\n")

    def _replay(self, path: Path) -> None:
        lines = [ln for ln in path.read_bytes().decode("ascii", "replace").splitlines() if ln and ln[0] in "$!"]
        first = self.start_t or datetime.now(UTC)
        while not self.stop_event.is_set():
            shift = None
            for n, line in enumerate(lines, 1):
                if self.stop_event.is_set():
                    return
                out = line
                if self.rewrite_time:
                    if shift is None:
                        shift = self._shift_for(lines, first)
                    out = _rewrite(line, shift, first) if shift is not None else line
                self._send(out.encode("ascii", "replace") + b"\r\n")
                self._noise(n)
                self.stop_event.wait(1.0 / self.lines_per_s)
            if not self.loop:
                return
            first = datetime.now(UTC)

    @staticmethod
    def _shift_for(lines: list[str], now: datetime) -> timedelta | None:
        for line in lines:
            fields = line[1:].split("*", 1)[0].split(",")
            i = _TIME_FIELD.get(fields[0][2:])
            if i is not None and len(fields) > i + 1 and fields[i + 1][:6].isdigit():
                raw = fields[i + 1]
                tod = timedelta(hours=int(raw[0:2]), minutes=int(raw[2:4]), seconds=int(raw[4:6]))
                midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
                return now - (midnight + tod)
        return None

    def _scenario(self) -> None:
        waited = time.monotonic()
        if self.start_after is not None:
            deadline = waited + START_WAIT_S
            while not self.start_after.wait(0.05) and not self.stop_event.is_set() and time.monotonic() < deadline:
                pass
        waited = time.monotonic() - waited
        start_t = (
            (self.start_t + timedelta(seconds=waited)) if self.start_t else datetime.now(UTC).replace(microsecond=0)
        )
        # Epochs are paced on the wall clock, not by sleeping a fixed time after each: on a busy
        # machine sleeps add up and the route would run slower than the other twins' clocks.
        t0 = time.monotonic()
        for n, (t, lat, lon, v, course) in enumerate(
            drive(self.legs, self.start_lat, self.start_lon, start_t, self.epoch_s), 1
        ):
            if self.stop_event.is_set():
                return
            for line in epoch_sentences(t, lat, lon, v, course, talker=self.talker):
                self._send(line)
            self.epochs_sent += 1
            self._noise(n)
            self.stop_event.wait(max(0.0, t0 + n * self.epoch_s / self.speedup - time.monotonic()))
