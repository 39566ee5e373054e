"""The simulator's trips: CO2 as a truck's trip has it, activity x the factor table's row, never a made-up number."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from edge_agent.central.simulate import build_fleet, step
from edge_agent.emissions import load_factors

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _published(records: int, seed: str = "t") -> list[bytes]:
    dev = build_fleet(1, seed=seed)[0]
    return [o.payload for _ in range(records) for o in step(dev, "edge", NOW)]


def _trips(records: int) -> list[dict[str, Any]]:
    return [r["body"] for r in map(json.loads, _published(records)) if r["kind"] == "trip"]


def test_simulated_trip__co2_is_the_fuel_times_the_tables_diesel_factor_at_the_boundary_it_reports() -> None:
    table = load_factors()
    trips = _trips(220)  # a trip every 20th record; 11 of them go once round the simulator's fuel amounts
    assert len({t["fuel_used_l"] for t in trips}) == 11
    for body in trips:
        litres = body["fuel_used_l"]
        row = table.find("fuel", "diesel", body["co2_boundary"])
        assert row is not None, body["co2_boundary"]
        assert body["co2_kg"] == round(litres * row.kg_co2e_per_unit, 2), (litres, body["co2_kg"], row.name)
        assert body["co2_gas"] == row.gas
        ttw, wtw = table.find("fuel", "diesel", "TTW"), table.find("fuel", "diesel", "WTW")
        assert ttw is not None and wtw is not None
        assert body["co2_ttw_kg"] == round(litres * ttw.kg_co2e_per_unit, 2)
        assert body["co2_wtw_kg"] == round(litres * wtw.kg_co2e_per_unit, 2)
        assert body["emission"]["activity"] == litres and body["emission"]["activity_unit"] == "L"
        assert row.describe() in body["emission"]["factors"]


def test_simulated_trip__the_same_seed_publishes_the_same_bytes() -> None:
    assert _published(60) == _published(60)
    assert _published(60) != _published(60, seed="other")
