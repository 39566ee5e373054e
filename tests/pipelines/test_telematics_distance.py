"""Distance on weak fixes: a synthetic noisy-fix track with a known true path, every real receiver log, CAN speed."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.nmea.epochs import decode_lines
from edge_agent.drivers.readings import Fix, VehicleSpeed
from edge_agent.emissions import load_factors
from edge_agent.pipelines.truck.clean import UERE_M
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.pipeline import TruckPipeline

DATA = Path(__file__).parents[1] / "data" / "nmea"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M_PER_DEG = 111_319.49  # metres per degree of longitude on the equator (WGS84 a * pi / 180)


def _fix(t_s: float, x_m: float, y_m: float, speed_kmh: float | None, hdop: float, sats: int) -> Fix:  # noqa: PLR0917
    return Fix(
        t_utc=T0 + timedelta(seconds=t_s),
        lat=y_m / M_PER_DEG,
        lon=x_m / M_PER_DEG,
        speed_kmh=speed_kmh,
        course_deg=90.0,
        valid=True,
        fix_quality=1,
        satellites=sats,
        hdop=hdop,
        altitude_m=20.0,
        raw="",
    )


def noisy_track(seed: int, jitter_m: float = 25.0) -> tuple[list[Fix], float]:
    """A cold start then a drive, and the true path length in metres.

    0-60 s: cold start with 4-5 satellites and HDOP 3.5; the truck creeps at 4 km/h (the receiver's
    Doppler speed says so, within 0.5 km/h) while the positions jump 10-40 m each second.
    60-180 s: an open-sky drive at 36 km/h with HDOP 0.9 and 2 m of noise. 180-240 s: parked.
    """
    rng = random.Random(seed)
    fixes, x_true, true_m = [], 0.0, 0.0
    for t in range(241):
        if t < 60:
            v, hdop, sats, noise = 4.0, 3.5, rng.choice((4, 5)), jitter_m
        elif t < 180:
            v, hdop, sats, noise = 36.0, 0.9, 9, 2.0
        else:
            v, hdop, sats, noise = 0.0, 0.9, 9, 2.0
        if t > 0:
            x_true += v / 3.6
            true_m += v / 3.6
        ang = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(0.4, 1.0) * noise
        reported = max(0.0, v + rng.uniform(-0.5, 0.5)) if v > 0 else rng.uniform(0.0, 0.4)
        fixes.append(_fix(t, x_true + r * math.cos(ang), r * math.sin(ang), reported, hdop, sats))
    return fixes, true_m


def _replay(fixes: list[Fix]) -> dict[str, float]:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    for f in fixes:
        pipe.push_fix(f)
    return pipe.summary()


def test_noisy_track__distance_stays_within_the_true_path_plus_the_fixes_accuracy() -> None:
    fixes, true_m = noisy_track(seed=7)
    s = _replay(fixes)
    got_m = s["distance_km"] * 1000
    positions_m = got_m + s["distance_clipped_km"] * 1000
    assert positions_m > true_m + 500  # the jitter alone, summed, is more than a third of the drive
    assert true_m - 0.03 * true_m <= got_m <= true_m + UERE_M * 3.5 + 1.0
    assert s["distance_clipped_km"] > 0.5


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(5.0, 60.0))
def test_noisy_track__never_more_than_the_speeds_allow_plus_accuracy(seed: int, jitter_m: float) -> None:
    fixes, true_m = noisy_track(seed, jitter_m)
    s = _replay(fixes)
    assert s["distance_km"] * 1000 <= s["speed_distance_km"] * 1000 + UERE_M * 3.5 + 1e-6
    assert s["distance_km"] * 1000 >= 0.95 * true_m - 60  # the creep (67 m) may be lost in the drift gate


def test_can_speed__bounds_a_receiver_that_reports_no_speed() -> None:
    # A GGA-only receiver: no speed over ground. The truck's wheel speed (CAN) says it is parked.
    rng = random.Random(3)
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    for t in range(120):
        ts = T0 + timedelta(seconds=t)
        pipe.push_vehicle_speed(VehicleSpeed(t_mono=float(t), t_utc=ts, speed_kmh=0.0, raw=""))
        pipe.push_fix(_fix(t, rng.uniform(-30, 30), rng.uniform(-30, 30), None, 2.0, 6))
    s = pipe.summary()
    assert s["distance_km"] * 1000 <= UERE_M * 2.0 + 1e-6
    assert s["steps_without_speed"] == 0


def test_without_any_speed__positions_count_as_before() -> None:
    fixes = [_fix(t, 10.0 * t, 0.0, None, 0.9, 9) for t in range(60)]
    s = _replay(fixes)
    # 59 steps of 10 m; without a speed the drift gate holds the first four (it needs three fixes
    # outside its circle to call it a move), then counts the whole way from the anchor: 590 - 40 m.
    assert s["distance_km"] == pytest.approx(0.55, abs=0.001)
    assert s["steps_without_speed"] > 0 and s["distance_clipped_km"] == 0.0


@pytest.mark.parametrize("log", sorted(p.name for p in DATA.glob("*.log")))
def test_real_logs__distance_within_speed_integral_plus_accuracy_and_no_more_than_positions(log: str) -> None:
    lines = [ln for ln in (DATA / log).read_bytes().decode("ascii", "replace").splitlines() if not ln.startswith("#")]
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "replay")
    max_hdop = 0.0
    for fix in decode_lines(lines):
        pipe.push_fix(fix)
        max_hdop = max(max_hdop, fix.hdop or 2.0)
    s = pipe.summary()
    positions_km = s["distance_km"] + s["distance_clipped_km"]
    assert s["distance_km"] <= positions_km + 1e-9
    if s["steps_without_speed"] == 0:
        assert s["distance_km"] <= s["speed_distance_km"] + UERE_M * min(max_hdop, 5.0) / 1000 + 1e-9
