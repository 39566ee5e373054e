"""The vehicle's own series beside the GPS: cumulative counters (fuel used, odometer, energy) and its speed."""

from __future__ import annotations

import bisect
import math
from collections import deque


class CounterTrack:
    """A vehicle's cumulative counter (total fuel used, odometer, traction energy): its value over time.

    The amount over a trip is the counter's difference, read where samples bracket the trip's ends.
    A counter that went backwards (an ECU reset, another ECU's value) starts a new series, so no
    difference is taken across it.
    """

    def __init__(self, max_edge_s: float = 120.0) -> None:
        self.max_edge_s = max_edge_s  # a sample this close to a trip's end still stands for it
        self._t: list[float] = []
        self._v: list[float] = []
        self._series: list[int] = []
        self.resets = 0

    def push(self, t: float, value: float) -> None:
        if not math.isfinite(value) or (self._t and t <= self._t[-1]):
            return
        series = self._series[-1] if self._series else 0
        if self._v and value < self._v[-1]:
            series += 1
            self.resets += 1
        self._t.append(t)
        self._v.append(value)
        self._series.append(series)

    def delta(self, t0: float, t1: float) -> float | None:
        """The counter's increase from t0 to t1; None without samples near both ends in one series."""
        if len(self._t) < 2 or t1 <= t0:
            return None
        i = bisect.bisect_left(self._t, t0)
        j = bisect.bisect_right(self._t, t1) - 1
        i = min(i, len(self._t) - 1)
        if j < 0 or j < i or self._series[i] != self._series[j]:
            return None
        if self._t[i] - t0 > self.max_edge_s or t1 - self._t[j] > self.max_edge_s:
            return None
        return self._at(t1, j, j + 1) - self._at(t0, i, i - 1)

    def _at(self, t: float, inside: int, outside: int) -> float:
        """The counter at a trip's end t: between the trip's first (or last) sample and its neighbour outside
        the trip, when the two bracket t within max_edge_s in one series; else the sample inside.

        A counter read once a second (in the demo, every 30 s of the truck's sped-up time) has moved on by
        its first sample in a trip: taking that sample for the trip's start lost the road (or litres)
        driven before it, and likewise at the trip's end.
        """
        if not 0 <= outside < len(self._t) or self._series[outside] != self._series[inside]:
            return self._v[inside]
        (ta, va), (tb, vb) = sorted(((self._t[inside], self._v[inside]), (self._t[outside], self._v[outside])))
        if not ta <= t <= tb or tb - ta > self.max_edge_s:
            return self._v[inside]
        return va + (vb - va) * (t - ta) / (tb - ta)

    def prune(self, before_t: float) -> None:
        k = max(bisect.bisect_left(self._t, before_t) - 1, 0)
        del self._t[:k], self._v[:k], self._series[:k]


class SpeedTrack:
    """The vehicle's own (CAN/OBD) speed over time, looked up at each fix to bound the GPS distance."""

    def __init__(self, max_age_s: float = 2.0, keep: int = 64) -> None:
        self.max_age_s = max_age_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)

    def push(self, t: float, speed_kmh: float) -> None:
        if math.isfinite(speed_kmh) and speed_kmh >= 0:
            self._samples.append((t, speed_kmh))

    def at(self, t: float) -> float | None:
        """The sample nearest t, if one is within max_age_s."""
        best = min(self._samples, key=lambda s: abs(s[0] - t), default=None)
        return best[1] if best is not None and abs(best[0] - t) <= self.max_age_s else None
