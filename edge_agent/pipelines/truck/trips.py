"""Trips cut from cleaned fixes by ignition or speed with hysteresis and minimum durations (after Traccar)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.drivers.readings import Fix
from edge_agent.pipelines.truck.config import TripConfig


@dataclass(frozen=True, slots=True)
class Trip:
    """One finished trip: where and when it began and ended, and what the odometer said."""

    start: Fix
    end: Fix
    distance_m: float
    idle_s: float  # stopped inside the trip (traffic, loading) for less than min_parking_s
    max_speed_kmh: float
    gaps: int  # holes between used fixes longer than TripConfig.gap_s
    gap_s: float
    end_reason: str  # "parked" | "ignition_off" | "no_data" | "end_of_data"

    @property
    def duration_s(self) -> float:
        return float((self.end.t_utc - self.start.t_utc).total_seconds())


class TripDetector:
    """A small state machine over used fixes (and ignition, when a source gives it).

    Motion rules follow Traccar's: a trip starts when the speed reaches `start_speed_kmh`; it ends
    where the vehicle stopped (speed below `stop_speed_kmh`) once it has stayed stopped for
    `min_parking_s`; a gap in the data longer than `max_gap_s` ends it at the last fix. A trip is
    kept only when it lasted `min_trip_s` and covered `min_trip_km`.
    """

    def __init__(self, c: TripConfig) -> None:
        self.c = c
        self.last: Fix | None = None
        self.odometer_m = 0.0
        self.ignition: bool | None = None  # None: no ignition source seen
        self.discarded = 0
        self._open: dict[str, float] | None = None
        self._start: Fix | None = None
        self._stop_fix: Fix | None = None
        self._stop_odo = 0.0
        self._stop_idle_s = 0.0

    @property
    def in_trip(self) -> bool:
        return self._start is not None

    @property
    def trip_start(self) -> Fix | None:
        return self._start

    def push(self, fix: Fix, added_m: float, speed_kmh: float) -> Trip | None:
        """One used fix with the distance it added and its speed; a Trip when one has just ended."""
        done: Trip | None = None
        prev = self.last
        if prev is not None and self._start is not None:
            dt = (fix.t_utc - prev.t_utc).total_seconds()
            if dt > self.c.max_gap_s:
                done = self._close(prev, "no_data")
            elif self._open is not None and dt > self.c.gap_s:
                self._open["gaps"] += 1
                self._open["gap_s"] += dt
        self.odometer_m += added_m
        self.last = fix
        if self.ignition is not None and self.c.use_ignition:
            if self._start is not None:
                self._track(fix, speed_kmh)
            return done
        if self._start is None:
            if speed_kmh >= self.c.start_speed_kmh:
                self._begin(prev if prev is not None and done is None else fix, added_m)
                self._track(fix, speed_kmh)
            return done
        return self._track(fix, speed_kmh) or done

    def push_ignition(self, on: bool) -> Trip | None:
        """Ignition on starts a trip at the last fix, off ends it there (when use_ignition)."""
        was, self.ignition = self.ignition, on
        if not self.c.use_ignition or self.last is None or was == on:
            return None
        if on and self._start is None:
            self._begin(self.last, 0.0)
            return None
        if not on and self._start is not None:
            return self._close(self.last, "ignition_off")
        return None

    def finish(self) -> Trip | None:
        """End of data (replay end, service stop): close an open trip where it stands."""
        if self._start is None or self.last is None:
            return None
        if self._stop_fix is not None and self.ignition is None:
            return self._close(self._stop_fix, "end_of_data", odo=self._stop_odo)
        return self._close(self.last, "end_of_data")

    # -- internals ----------------------------------------------------------
    def _begin(self, start: Fix, added_m: float) -> None:
        self._start = start
        # The fix that began the trip may already have moved: count that way too.
        self._open = {"odo0": self.odometer_m - added_m, "idle_s": 0.0, "vmax": 0.0, "gaps": 0, "gap_s": 0.0}
        self._stop_fix = None

    def _track(self, fix: Fix, speed_kmh: float) -> Trip | None:
        o = self._open
        assert o is not None  # noqa: S101 - only called with a trip open
        o["vmax"] = max(o["vmax"], speed_kmh)
        if self.ignition is not None and self.c.use_ignition:
            return None
        if speed_kmh < self.c.stop_speed_kmh:
            if self._stop_fix is None:
                self._stop_fix, self._stop_odo = fix, self.odometer_m
            elif (fix.t_utc - self._stop_fix.t_utc).total_seconds() >= self.c.min_parking_s:
                return self._close(self._stop_fix, "parked", odo=self._stop_odo)
        elif speed_kmh >= self.c.start_speed_kmh and self._stop_fix is not None:
            # Moving again before min_parking_s: the stop was idling inside the trip.
            o["idle_s"] += (fix.t_utc - self._stop_fix.t_utc).total_seconds()
            self._stop_fix = None
        return None

    def _close(self, end: Fix, reason: str, odo: float | None = None) -> Trip | None:
        start, o = self._start, self._open
        self._start, self._open, self._stop_fix = None, None, None
        if start is None or o is None:
            return None
        dist_m = (self.odometer_m if odo is None else odo) - o["odo0"]
        trip = Trip(start, end, dist_m, o["idle_s"], o["vmax"], int(o["gaps"]), o["gap_s"], reason)
        if trip.duration_s < self.c.min_trip_s or dist_m < self.c.min_trip_km * 1000.0:
            self.discarded += 1
            return None
        return trip
