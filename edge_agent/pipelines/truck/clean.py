"""Cleaning: which fixes count, stationary drift, fuel level filtering with refuel/drain events, stable loads."""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from edge_agent.drivers.readings import Fix
from edge_agent.pipelines.truck.config import CleaningConfig
from edge_agent.pipelines.truck.geo import distance_m

# After this many consecutive fixes rejected as jumps, the last accepted fix is the outlier:
# start again from the current one rather than reject the rest of the drive.
REANCHOR_AFTER_JUMPS = 3
# A stationary truck leaves its drift circle only when this many fixes in a row are outside it:
# one noisy fix (multipath off a warehouse wall) is not a move.
DRIFT_EXITS = 3
# A refuel or drain is over when the filtered level has not moved on for this long.
FUEL_SETTLE_S = 60.0
# Share of a trip the fuel-rate integral must cover to stand for the trip's fuel (a dropped sample or
# two is fine; an adapter that was silent for a quarter of the trip is not).
RATE_COVERAGE = 0.9


@dataclass(frozen=True, slots=True)
class FixLimits:
    max_hdop: float = 5.0
    min_satellites: int = 4
    max_speed_kmh: float = 160.0

    @classmethod
    def from_config(cls, c: CleaningConfig) -> FixLimits:
        return cls(c.max_hdop, c.min_satellites, c.max_speed_kmh)


class FixFilter:
    """Drops invalid, zero, imprecise, out-of-order and physically impossible fixes; counts why."""

    def __init__(self, limits: FixLimits) -> None:
        self.limits = limits
        self.last: Fix | None = None
        self.used = 0
        self.rejected: dict[str, int] = {}
        self._jumps = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def check(self, fix: Fix) -> str | None:
        """None when the fix is used, else the reason it was dropped (also counted)."""
        reason = self._reason(fix)
        if reason is None:
            self.used += 1
            self.last = fix
        else:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return reason

    def _reason(self, fix: Fix) -> str | None:  # noqa: PLR0911 - one return per rule
        lim = self.limits
        if not fix.valid:
            return "invalid"
        if abs(fix.lat) < 1e-6 and abs(fix.lon) < 1e-6:
            return "zero"  # 0,0: receivers that report "no position" as zeros
        if fix.hdop is not None and (fix.hdop <= 0 or fix.hdop > lim.max_hdop):
            return "hdop"
        if fix.satellites is not None and fix.satellites < lim.min_satellites:
            return "satellites"
        last = self.last
        if last is None:
            return None
        dt_s = (fix.t_utc - last.t_utc).total_seconds()
        if dt_s <= 0:
            return "time"  # duplicate or out of order
        speed_kmh = distance_m(last.lat, last.lon, fix.lat, fix.lon) / dt_s * 3.6
        if speed_kmh > lim.max_speed_kmh:
            self._jumps += 1
            if self._jumps <= REANCHOR_AFTER_JUMPS:
                return "jump"
        self._jumps = 0
        return None


def clean_fixes(fixes: Iterable[Fix], limits: FixLimits) -> Iterator[Fix]:
    """Drop invalid, imprecise and physically impossible fixes."""
    f = FixFilter(limits)
    for fix in fixes:
        if f.check(fix) is None:
            yield fix


# A consumer GNSS receiver's position error is about HDOP x UERE (user equivalent range error, ~5 m
# 1-sigma for single-frequency code receivers; Kaplan & Hegarty, "Understanding GPS/GNSS", 3rd ed., 7.2).
UERE_M = 5.0
HDOP_UNKNOWN = 2.0  # a receiver that reports no HDOP: assume an ordinary open-sky fix
# Speed allowance not yet used by positions is kept only up to this much (a short lag of positions
# behind the speed, a chord cut through a bend), so speed noise while parked cannot pile up a credit
# that lets later position jitter through.
SPEED_CREDIT_CAP_M = 50.0


class DriftGate:
    """Turns used fixes into distance that holds on weak fixes.

    Two rules. While the reported speed is below `stationary_speed_kmh` and the fix is within
    `drift_radius_m` of the last counted point, nothing is added; once the truck leaves that circle
    (or reports speed), the whole way from the last counted point is added, so a slow crawl is not
    lost. And where a speed is known (the receiver's Doppler speed over ground, or the vehicle's own
    CAN/OBD speed, which is far less noisy than positions), the distance counted never runs ahead of
    the integral of that speed by more than the current fix's stated accuracy (HDOP x UERE): position
    jitter on a cold start, which the receiver's speed does not show, adds nothing.
    """

    def __init__(self, stationary_speed_kmh: float, drift_radius_m: float) -> None:
        self.stationary_speed_kmh = stationary_speed_kmh
        self.drift_radius_m = drift_radius_m
        self.anchor: Fix | None = None
        self.total_m = 0.0
        self.speed_m = 0.0  # integral of the known speeds
        self.clipped_m = 0.0  # position distance refused because the speeds did not allow it
        self.unbounded = 0  # steps without any speed to check the positions against
        self.suppressed = 0
        self._credit_m = 0.0
        self._prev: tuple[Fix, float | None] | None = None
        self._was_moving = False
        self._outside = 0

    def step(self, fix: Fix, vehicle_speed_kmh: float | None = None) -> float:
        """Metres this fix adds to the odometer (vehicle_speed_kmh: the CAN/OBD speed at the fix, if any)."""
        speed = vehicle_speed_kmh if vehicle_speed_kmh is not None else fix.speed_kmh
        prev, self._prev = self._prev, (fix, speed)
        if prev is not None and speed is not None and prev[1] is not None:
            dt_s = (fix.t_utc - prev[0].t_utc).total_seconds()
            if dt_s > 0:
                moved_m = (prev[1] + speed) / 2.0 / 3.6 * dt_s  # trapezoid
                self.speed_m += moved_m
                self._credit_m += moved_m
        d = self._gated(fix)
        if d <= 0.0:
            self._credit_m = min(self._credit_m, SPEED_CREDIT_CAP_M)
            return 0.0
        if speed is None or prev is None or prev[1] is None:
            self.unbounded += 1
            self.total_m += d
            return d
        accuracy_m = UERE_M * (fix.hdop if fix.hdop is not None and fix.hdop > 0 else HDOP_UNKNOWN)
        added = min(d, max(0.0, self._credit_m + accuracy_m))
        self.clipped_m += d - added
        # The credit may go below zero by at most the accuracy: the next steps must earn it back first.
        self._credit_m = min(self._credit_m - added, SPEED_CREDIT_CAP_M)
        self.total_m += added
        return added

    def _gated(self, fix: Fix) -> float:
        """The drift rule: metres from the last counted point, or 0 while a parked truck's fix wanders."""
        a = self.anchor
        if a is None:
            self.anchor = fix
            return 0.0
        d = distance_m(a.lat, a.lon, fix.lat, fix.lon)
        moving = fix.speed_kmh is not None and fix.speed_kmh >= self.stationary_speed_kmh
        was_moving, self._was_moving = self._was_moving, moving
        # The first stopped fix still closes the last moving step (the truck rolled there).
        if not moving and not was_moving:
            self._outside = self._outside + 1 if d > self.drift_radius_m else 0
            if self._outside < DRIFT_EXITS:
                self.suppressed += 1
                return 0.0
        self._outside = 0
        self.anchor = fix
        return d


@dataclass(frozen=True, slots=True)
class FuelEvent:
    kind: str  # "refuel" | "drain"
    t_start: float  # epoch seconds
    t_end: float
    level_before_l: float
    level_after_l: float

    @property
    def amount_l(self) -> float:
        return abs(self.level_after_l - self.level_before_l)


class FuelTracker:
    """Fuel used from rate integration and from filtered tank levels; refuel and drain detection."""

    def __init__(self, c: CleaningConfig) -> None:
        self.c = c
        self._rate_t: list[float] = []
        self._rate_cum_l: list[float] = []
        self._rate_cum_s: list[float] = []  # seconds integrated so far (gaps over fuel_rate_max_gap_s are not)
        self._last_rate: tuple[float, float] | None = None
        self._raw: deque[float] = deque(maxlen=c.fuel_median_samples)
        self._lvl_t: list[float] = []
        self._lvl_l: list[float] = []
        self._window: deque[tuple[float, float]] = deque()
        self._ev: dict[str, float] | None = None
        self._ev_kind = ""
        self.events: list[FuelEvent] = []

    # -- rate -------------------------------------------------------------
    def push_rate(self, t: float, rate_lph: float) -> None:
        if not math.isfinite(rate_lph) or rate_lph < 0:
            return
        cum = self._rate_cum_l[-1] if self._rate_cum_l else 0.0
        cum_s = self._rate_cum_s[-1] if self._rate_cum_s else 0.0
        if self._last_rate is not None:
            t0, r0 = self._last_rate
            dt = t - t0
            if dt <= 0:
                return
            if dt <= self.c.fuel_rate_max_gap_s:
                cum += (r0 + rate_lph) / 2.0 * dt / 3600.0  # trapezoid
                cum_s += dt
        self._last_rate = (t, rate_lph)
        self._rate_t.append(t)
        self._rate_cum_l.append(cum)
        self._rate_cum_s.append(cum_s)

    def rate_used_l(self, t0: float, t1: float) -> float | None:
        """Litres burnt between t0 and t1 by the rate integral; None unless the integral covers at least
        RATE_COVERAGE of the span: an adapter that answered only for part of a trip (it connected late,
        or its samples came further apart than fuel_rate_max_gap_s) would report a fraction of the fuel
        as all of it, down to 0 L."""
        i, j = bisect.bisect_left(self._rate_t, t0), bisect.bisect_right(self._rate_t, t1)
        if j - i < 2:
            return None
        covered_s = _interp(self._rate_t, self._rate_cum_s, t1) - _interp(self._rate_t, self._rate_cum_s, t0)
        if covered_s < RATE_COVERAGE * (t1 - t0):
            return None
        return _interp(self._rate_t, self._rate_cum_l, t1) - _interp(self._rate_t, self._rate_cum_l, t0)

    def _covers(self, first_t: float, last_t: float, t0: float, t1: float) -> bool:
        return first_t - t0 <= self.c.fuel_rate_max_gap_s and t1 - last_t <= self.c.fuel_rate_max_gap_s

    # -- level ------------------------------------------------------------
    def push_level(self, t: float, level_l: float, moving: bool) -> FuelEvent | None:
        """Add one level sample; return a refuel/drain event when one has just finished."""
        if not math.isfinite(level_l) or level_l < 0:
            return None
        self._raw.append(level_l)
        lvl = statistics.median(self._raw)  # slosh filter
        if self._lvl_t and t <= self._lvl_t[-1]:
            return None
        self._lvl_t.append(t)
        self._lvl_l.append(lvl)
        w = self._window
        w.append((t, lvl))
        while w and t - w[0][0] > self.c.fuel_event_window_s:
            w.popleft()
        return self._detect(t, lvl, moving)

    def _detect(self, t: float, lvl: float, moving: bool) -> FuelEvent | None:
        w = self._window
        ev = self._ev
        if ev is None:
            lo_t, lo = min(w, key=lambda p: p[1])
            hi_t, hi = max(w, key=lambda p: p[1])
            if lvl - lo >= self.c.refuel_min_l and lo_t < t:
                self._ev, self._ev_kind = {"t0": lo_t, "l0": lo, "tx": t, "lx": lvl}, "refuel"
            elif hi - lvl >= self.c.drain_min_l and hi_t < t and not moving:
                self._ev, self._ev_kind = {"t0": hi_t, "l0": hi, "tx": t, "lx": lvl}, "drain"
            return None
        further = lvl > ev["lx"] if self._ev_kind == "refuel" else lvl < ev["lx"]
        if further:
            ev["tx"], ev["lx"] = t, lvl
            return None
        if t - ev["tx"] < FUEL_SETTLE_S:
            return None
        done = FuelEvent(self._ev_kind, ev["t0"], ev["tx"], ev["l0"], ev["lx"])
        self.events.append(done)
        self._ev = None
        w.clear()
        w.append((t, lvl))
        return done

    def level_at(self, t: float) -> float | None:
        if not self._lvl_t:
            return None
        return _interp(self._lvl_t, self._lvl_l, t)

    def level_used_l(self, t0: float, t1: float) -> float | None:
        """Level drop between t0 and t1, corrected for refuels (added back) and drains (taken out); None when
        the level did not fall: the trip burnt less than the sensor resolves (or slosh hid it), which is no
        measure of zero fuel, so the trip's CO2 falls back to its tonne-km."""
        i, j = bisect.bisect_left(self._lvl_t, t0), bisect.bisect_right(self._lvl_t, t1)
        if j - i < 2 or not self._covers(self._lvl_t[i], self._lvl_t[j - 1], t0, t1):
            return None
        drop = _interp(self._lvl_t, self._lvl_l, t0) - _interp(self._lvl_t, self._lvl_l, t1)
        for e in self.events:
            if t0 <= e.t_start and e.t_end <= t1:
                drop += e.amount_l if e.kind == "refuel" else -e.amount_l
        return drop if drop > 0 else None

    def events_between(self, t0: float, t1: float) -> list[FuelEvent]:
        return [e for e in self.events if t0 <= e.t_start and e.t_end <= t1]

    def prune(self, before_t: float) -> None:
        """Forget samples older than `before_t` (nothing open needs them)."""
        k = max(bisect.bisect_left(self._rate_t, before_t) - 1, 0)
        del self._rate_t[:k], self._rate_cum_l[:k], self._rate_cum_s[:k]
        k = max(bisect.bisect_left(self._lvl_t, before_t) - 1, 0)
        del self._lvl_t[:k], self._lvl_l[:k]
        self.events = [e for e in self.events if e.t_end >= before_t]


class LoadTracker:
    """Load on board from stable scale readings only: a step function between weighings."""

    def __init__(self, change_min_kg: float) -> None:
        self.change_min_kg = change_min_kg
        self._t: list[float] = []
        self._kg: list[float] = []
        self.unstable = 0

    def push(self, t: float, load_kg: float, stable: bool) -> tuple[float, float] | None:
        """Add a weighing; return (before_kg, after_kg) when the stable load changed enough to tell."""
        if not stable:
            self.unstable += 1
            return None
        if self._t and t <= self._t[-1]:
            return None
        prev = self._kg[-1] if self._kg else None
        if prev is not None and abs(load_kg - prev) < self.change_min_kg:
            return None  # same load, re-weighed: keep the step function flat
        self._t.append(t)
        self._kg.append(load_kg)
        return (prev, load_kg) if prev is not None else None

    def during(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """(time-weighted average kg, peak kg) over [t0, t1]; (None, None) without a weighing by t1."""
        if not self._t or self._t[0] > t1 or t1 <= t0:
            return None, None
        i = max(bisect.bisect_right(self._t, t0) - 1, 0)
        area, peak, t = 0.0, None, max(t0, self._t[i])
        for k in range(i, len(self._t)):
            if self._t[k] > t1:
                break
            seg_end = min(self._t[k + 1], t1) if k + 1 < len(self._t) else t1
            seg_start = max(self._t[k], t)
            if seg_end > seg_start:
                area += self._kg[k] * (seg_end - seg_start)
            peak = self._kg[k] if peak is None else max(peak, self._kg[k])
        span = t1 - max(t0, self._t[0])
        return (area / span if span > 0 else self._kg[i]), peak


def _interp(ts: list[float], vs: list[float], t: float) -> float:
    j = bisect.bisect_left(ts, t)
    if j <= 0:
        return vs[0]
    if j >= len(ts):
        return vs[-1]
    t0, t1 = ts[j - 1], ts[j]
    if t1 == t0:
        return vs[j]
    return vs[j - 1] + (vs[j] - vs[j - 1]) * (t - t0) / (t1 - t0)
