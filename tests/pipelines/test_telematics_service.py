"""TelematicsService end to end: a GPS twin on a pty, the driver runner, the pipeline and emit."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.drivers.nmea.twin import Leg, NmeaTwin
from edge_agent.pipelines.truck.service import TelematicsService
from edge_agent.service import ServiceContext
from edge_agent.settings import parse_config
from edge_agent.spine.clock import Clock


def test_telematics_service__twin_drive_becomes_trip_and_telemetry_records(tmp_path: Path) -> None:
    start = datetime(2025, 6, 1, 3, 0, 0, tzinfo=UTC)
    legs = [Leg(30, 0, 0), Leg(120, 60.0, 0), Leg(40, 0, 0)]  # 2 km north, then parked
    emitted: list[tuple[str, dict[str, Any]]] = []
    with NmeaTwin(tmp_path / "gps", legs=legs, start_lat=39.0, start_lon=117.0, start_t=start, speedup=60) as twin:
        cfg = parse_config(
            {
                "profile": "truck",
                "device": {"id": "truck-7", "site": "tj"},
                "telematics": {
                    "gps": {"kind": "nmea", "port": twin.path},
                    "trips": {"min_trip_s": 60, "min_parking_s": 20, "min_trip_km": 0.5},
                    "geofences": [{"name": "天津仓库", "lat": 39.0, "lon": 117.0, "radius_m": 200}],
                },
            }
        )
        clock = Clock()
        ctx = ServiceContext(
            config=cfg,
            emit=lambda k, b: emitted.append((k, b)),
            clock=clock,
            state_dir=tmp_path,
            stop=threading.Event(),
        )
        svc = TelematicsService()
        svc.start(ctx)
        try:
            deadline = time.monotonic() + 15
            while not any(k == "trip" for k, _ in emitted) and time.monotonic() < deadline:
                time.sleep(0.05)
            status = svc.status()
        finally:
            svc.stop()
    trips = [b for k, b in emitted if k == "trip"]
    assert len(trips) == 1, emitted[-3:]
    trip = trips[0]
    assert trip["transport_id"] == "truck-7" and trip["route"].startswith("从天津仓库到")
    assert abs(trip["distance_km"] - 2.0) < 0.02  # 120 s at 60 km/h (the first fixes may be lost to open())
    assert trip["fuel_source"] == "none" and trip["co2_kg"] is None  # no fuel source, no load: no guess
    assert any(k == "telemetry" for k, _ in emitted)
    assert status["drivers"]["gps"]["connected"] and status["gps"]["sentences"] > 0
    assert clock.gps_skew_s is not None  # GPS time reached the clock
    assert abs(svc.heartbeat() - time.monotonic()) < 5


def test_telematics_service__a_gps_that_reopens_but_never_reads_is_not_shown_as_connected(tmp_path: Path) -> None:
    # A KERN scale's real output on the GPS port (as a receiver at another baud rate): the driver gives up on it
    # after silence_timeout_s and reopens it. Between two failures the port is open again, and status said
    # 'device gps: connected', with the fault nowhere; it now says no reading came since it failed, and why.
    from edge_agent.app import device_states
    from edge_agent.cli.main import _station_and_device_lines
    from edge_agent.drivers.scale.twin import ScaleTwin
    from tests.helpers import wait_until

    kern = Path(__file__).parents[1] / "data" / "scale" / "kern_ew_6200-2nm_26_9g_stable.bin"
    with ScaleTwin(tmp_path / "gps", replay=kern, interval_s=0.05) as twin:
        cfg = parse_config(
            {
                "profile": "truck",
                "device": {"id": "truck-7", "site": "tj"},
                "telematics": {"gps": {"kind": "nmea", "port": twin.path, "silence_timeout_s": 0.5}},
            }
        )
        ctx = ServiceContext(
            config=cfg, emit=lambda k, b: None, clock=Clock(), state_dir=tmp_path, stop=threading.Event()
        )
        svc = TelematicsService()
        svc.start(ctx)
        seen: list[dict[str, Any]] = []

        def reopened() -> bool:
            gps = device_states(svc.status())["gps"]
            if gps["connected"] and gps["reconnects"]:
                seen.append(gps)
            return bool(seen)

        try:
            assert wait_until(reopened, 20), "the GPS port was not reopened after its first failure"
        finally:
            svc.stop()
    line = _station_and_device_lines({"station": None, "station_error": None, "devices": {"gps": seen[0]}})[0]
    assert line.startswith("device gps:    connected, no reading since it failed (lost "), line
    assert "no valid NMEA sentence for" in line, line
