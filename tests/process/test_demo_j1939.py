"""`edge-agent demo --profile truck --bus j1939`: GPS and a J1939 bus (slcan twin) -> trips from the truck's own counters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.test_demo import run_demo


def _export(cfg: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "outbox", "export", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
def test_demo__j1939_truck_trip_uses_total_fuel_used_and_the_odometer(tmp_path: Path) -> None:
    s = run_demo("truck", 50, tmp_path, "--bus", "j1939")
    assert s["verified"] is True and s["intact"] is True
    records = _export(tmp_path / "etc" / "config.toml")
    trip = next(r["body"] for r in records if r["kind"] == "trip")
    assert isinstance(trip, dict)
    assert trip["route"] == "从北京仓库到廊坊中转站"
    assert trip["fuel_source"] == "j1939_total_fuel_hr" and trip["distance_source"] == "odometer_hr"
    assert 15 < trip["distance_km"] < 19  # 15 min at 72 km/h, less the CAN twin's 30 s ramps
    assert trip["fuel_used_l"] > 0 and trip["co2_kg"] > 0
    assert trip["load_source"] == "scale" and trip["load_avg_kg"] == 7400.0  # J1939 VW cargo weight
    faults = [r["body"] for r in records if r["kind"] == "event" and r["body"].get("event") == "faults"]  # type: ignore[union-attr]
    assert faults and faults[0]["dtcs"][0] == {"spn": 100, "fmi": 1, "occurrences": 3}  # type: ignore[index]
