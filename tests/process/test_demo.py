"""The quick start's demo end to end: twins -> agent -> local mosquitto -> a subscriber that verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_demo(profile: str, duration_s: int, work: Path, *extra: str) -> dict[str, object]:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "demo",
            "--profile",
            profile,
            "--duration",
            str(duration_s),
            "--json",
            "--dir",
            str(work),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + (work / "agent.log").read_text()[-3000:]
    summary: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return summary


def _exported(work: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "outbox", "export", "--config", str(work / "etc" / "config.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
def test_demo__truck_trips_are_signed_delivered_and_verified(tmp_path: Path) -> None:
    s = run_demo("truck", 55, tmp_path)
    assert s["verified"] is True and s["intact"] is True
    kinds = s["by_kind"]
    assert isinstance(kinds, dict)
    assert kinds.get("trip", 0) >= 1, kinds
    assert kinds.get("telemetry", 0) >= 5, kinds
    trips = _exported(tmp_path)
    trip = next(r["body"] for r in trips if r["kind"] == "trip")
    assert trip["route"] == "从北京仓库到廊坊中转站"
    assert 10 < trip["distance_km"] < 25  # 15 min at 72 km/h = 18 km
    assert trip["co2_kg"] is not None and trip["co2_kg"] > 0


@pytest.mark.slow
def test_demo__bench_inspections_are_signed_delivered_and_verified(tmp_path: Path) -> None:
    s = run_demo("bench", 25, tmp_path)
    assert s["verified"] is True
    kinds = s["by_kind"]
    assert isinstance(kinds, dict)
    assert kinds.get("return_inspection", 0) >= 2, kinds
    # Again in the same folder: the device's chain goes on, and that is no broken chain (it was NOT INTACT).
    again = run_demo("bench", 10, tmp_path)
    assert again["verified"] is True and isinstance(again["first_seq"], int) and again["first_seq"] > 1, again


@pytest.mark.slow
def test_demo__sensors_meters_on_one_line_are_signed_delivered_and_verified(tmp_path: Path) -> None:
    """The third profile's demo: a kWh meter and a thermometer on one RS-485 twin, kWh turned into CO2."""
    s = run_demo("sensors", 15, tmp_path)
    assert s["verified"] is True and s["intact"] is True
    kinds = s["by_kind"]
    assert isinstance(kinds, dict) and kinds.get("sensor", 0) >= 3, kinds
    bodies = [r["body"] for r in _exported(tmp_path) if r["kind"] == "sensor"]
    assert {b["meter"] for b in bodies} == {"main-board", "cold-room-1"}
    energy = [b["energy"] for b in bodies if b["meter"] == "main-board" and b["energy"]["kwh_delta"]]
    assert energy, bodies
    for e in energy:  # North China's grid factor counts CO2 alone, and the record says so
        assert e["gas"] == e["factor"]["gas"] == "CO2" and e["factor"]["name"] == "grid_cn_north_2022"
        assert e["co2_kg"] == pytest.approx(e["kwh_delta"] * 0.6776, rel=1e-6)
    assert any("temperature_c" in b["values"] for b in bodies if b["meter"] == "cold-room-1")


def test_demo__not_a_terminal_prints_plain_lines_as_records_arrive(tmp_path: Path) -> None:
    # stdout is a pipe here: no live table, one plain line per notable record, a readable footer
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "demo",
            "--profile",
            "truck",
            "--duration",
            "12",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("edge-agent demo: truck")
    assert "seq 1 event: agent_started" in lines
    footer = next(line for line in lines if line.startswith("records verified by the central subscriber"))
    assert "(INTACT)" in footer
    assert "{" not in footer and "event 1" in footer  # counts for people, not a Python dict
    assert "connection lost" not in (tmp_path / "agent.log").read_text().lower()


def test_demo__refuses_a_device_s_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --dir` on a folder `init --dir` made took the device's key and outbox: it signed demo records
    into the device's chain, which then failed verify."""
    from edge_agent.cli.main import main

    dev = tmp_path / "truck"
    assert main(["init", "--profile", "truck", "--device-id", "truck-042", "--site", "bj", "--dir", str(dev)]) == 0
    before = sorted(p.relative_to(dev) for p in dev.rglob("*"))
    capsys.readouterr()
    assert main(["demo", "--profile", "truck", "--duration", "5", "--dir", str(dev)]) == 1
    err = capsys.readouterr().err
    assert f"--dir {dev}: holds files a demo did not make" in err
    assert sorted(p.relative_to(dev) for p in dev.rglob("*")) == before
