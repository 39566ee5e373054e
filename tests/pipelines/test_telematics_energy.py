"""Trips from vehicle counters: J1939 total fuel used and odometer, CNG in kg, a battery-electric van's kWh."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.drivers.readings import ActiveFaults, Fix, FuelRate, VehicleValue
from edge_agent.emissions import check_grid_factor, estimate_emissions, load_factors
from edge_agent.errors import ConfigError
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.pipeline import TruckPipeline

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M_PER_DEG = 111_319.49


def _fix(t_s: float, x_m: float, speed_kmh: float) -> Fix:
    return Fix(T0 + timedelta(seconds=t_s), 0.0, x_m / M_PER_DEG, speed_kmh, 90.0, True, 1, 9, 0.9, 10.0, "")


def _value(t_s: float, quantity: str, value: float, unit: str = "L", resolution: float = 0.001) -> VehicleValue:
    return VehicleValue(t_s, T0 + timedelta(seconds=t_s), quantity, value, unit, resolution, "j1939:test/SA0", "")


def _trip(pipe: TruckPipeline, counters: dict[str, tuple[float, float]], every_s: int = 1) -> dict[str, Any]:
    """10 s parked, 600 s at 36 km/h (6 km by GPS), then parked until the trip closes; counters rise linearly
    and are read every `every_s` seconds (from t = 7)."""
    records: list[tuple[str, dict[str, Any]]] = []
    x = 0.0
    for t in range(0, 1000):
        v = 36.0 if 10 <= t < 610 else 0.0
        x += v / 3.6 if t > 0 else 0.0
        for q, (start, end) in counters.items():
            frac = min(max((t - 10) / 600, 0.0), 1.0)
            if (t - 7) % every_s == 0:
                records += pipe.push_vehicle_value(_value(t, q, start + (end - start) * frac))
        records += pipe.push_fix(_fix(t, x, v))
    records += pipe.finish()
    trips = [b for k, b in records if k == "trip"]
    assert len(trips) == 1
    return trips[0]


def test_trip__total_fuel_used_counter_is_preferred_to_the_rate() -> None:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "京A12345")
    for t in range(0, 1000, 5):  # a fuel rate that would give a different answer (20 L/h)
        pipe.push_fuel_rate(FuelRate(t, T0 + timedelta(seconds=t), 20.0, "j1939_lfe", ""))
    trip = _trip(pipe, {"total_fuel_hr_l": (123456.0, 123458.345), "total_distance_hr_km": (854934.0, 854940.05)})
    assert trip["fuel_source"] == "j1939_total_fuel_hr"
    assert trip["fuel_used_l"] == pytest.approx(2.345, abs=0.01)
    assert trip["distance_source"] == "odometer_hr"
    assert trip["distance_km"] == pytest.approx(6.05, abs=0.01)
    assert trip["quality"]["gps_distance_km"] == pytest.approx(6.0, abs=0.05)
    assert trip["co2_wtw_kg"] == pytest.approx(2.345 * 3.18183, abs=0.03)


def test_trip__counters_read_seldom_are_taken_at_the_trip_s_ends() -> None:
    """Read every 30 s (the demo's bus at 30x), the first sample in the trip came 27 s after its start: the
    J1939 demo's trip was 6.5 % short of the GPS's. Between the samples around each end the counter is
    taken where the trip starts and ends."""
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    trip = _trip(pipe, {"total_fuel_hr_l": (1000.0, 1002.4), "total_distance_hr_km": (5000.0, 5006.0)}, every_s=30)
    assert trip["fuel_source"] == "j1939_total_fuel_hr" and trip["distance_source"] == "odometer_hr"
    # Taken as linear between the samples around each end, where the truck sets off or stops: 2.38 L and
    # 5.95 km (taking the first and last samples inside the trip gave 2.28 L and 5.70 km).
    assert trip["fuel_used_l"] == pytest.approx(2.4, abs=0.03)
    assert trip["distance_km"] == pytest.approx(6.0, abs=0.08)
    assert trip["quality"]["gps_distance_km"] == pytest.approx(6.0, abs=0.05)


def test_trip__low_resolution_counter_when_no_high_resolution_one() -> None:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    trip = _trip(pipe, {"total_fuel_l": (5000.0, 5002.5)})
    assert trip["fuel_source"] == "j1939_total_fuel" and trip["fuel_used_l"] == pytest.approx(2.5, abs=0.01)
    assert trip["distance_source"] == "gps"


def test_trip__counter_reset_inside_the_trip_falls_back() -> None:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    for t, v in ((0, 900.0), (200, 901.0), (400, 3.0), (999, 4.0)):  # the ECU was swapped mid-trip
        pipe.push_vehicle_value(_value(t, "total_fuel_l", v))
    trip = _trip(pipe, {})
    assert trip["fuel_source"] == "none" and trip["fuel_used_l"] is None


def test_trip__cng_truck_counts_kg_with_the_cng_factor() -> None:
    pipe = TruckPipeline(TelematicsConfig(fuel_type="cng"), load_factors(), "t")
    trip = _trip(pipe, {"total_gas_kg": (800.0, 803.0)})
    assert trip["fuel_source"] == "j1939_total_gas" and trip["fuel_used_kg"] == pytest.approx(3.0, abs=0.01)
    assert trip["fuel_used_l"] is None
    assert trip["emission"]["activity_unit"] == "kg"
    assert trip["co2_ttw_kg"] == pytest.approx(3.0 * 2.6928, rel=1e-3)
    assert [f["name"] for f in trip["emission"]["factors"]] == ["cng_ttw", "cng_ttw", "cng_wtt"]
    assert trip["co2_wtw_kg"] == pytest.approx(3.0 * (2.6928 + 0.53078), rel=1e-3) and trip["co2_boundary"] == "WTW"


def test_trip__battery_electric_van_records_kwh_co2_and_grid_factor() -> None:
    cfg = TelematicsConfig.model_validate(
        {"fuel_type": "electricity", "emissions": {"grid_factor": "grid_cn_east_2022"}}
    )
    pipe = TruckPipeline(cfg, load_factors(), "沪A·D12345")
    trip = _trip(pipe, {"energy_used_kwh": (5000.0, 5031.2)})
    assert trip["energy_kwh"] == pytest.approx(31.2, abs=0.05)
    assert trip["fuel_source"] == "energy_counter" and trip["fuel_used_l"] is None
    assert trip["co2_ttw_kg"] == 0.0
    assert trip["co2_kg"] == pytest.approx(trip["energy_kwh"] * 0.5617, rel=1e-3) and trip["co2_boundary"] == "WTW"
    assert trip["grid_factor"]["name"] == "grid_cn_east_2022" and trip["grid_factor"]["year"] == 2022
    assert "Ministry of Ecology and Environment" in trip["grid_factor"]["source"]


def test_trip__battery_electric_van_s_zero_at_the_wheel_says_its_gas() -> None:
    """Reported at TTW, an electric van's 0 kg is of every gas (CO2e); co2_gas was null beside a co2_kg of 0.0."""
    cfg = TelematicsConfig.model_validate(
        {"fuel_type": "electricity", "emissions": {"grid_factor": "grid_cn_east_2022", "report_boundary": "TTW"}}
    )
    trip = _trip(TruckPipeline(cfg, load_factors(), "t"), {"energy_used_kwh": (5000.0, 5031.2)})
    assert (trip["co2_kg"], trip["co2_boundary"], trip["co2_gas"]) == (0.0, "TTW", "CO2e")
    assert trip["co2_wtw_kg"] == pytest.approx(31.2 * 0.5617, rel=1e-3)  # China's grid factor: CO2 alone
    assert trip["grid_factor"]["gas"] == "CO2"


def test_readme_example__is_a_trip_record_as_the_pipeline_makes_it_now() -> None:
    """README's worked example (a demo trip) has a trip's keys, the table's factors and CO2 = activity x them;
    it kept diesel's old WTW figure and lacked co2_gas after both changed."""
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    body = json.loads(re.search(r"<!-- example-record -->\s*```json\n(.*?)```", text, re.S).group(1))["body"]
    made = _trip(TruckPipeline(TelematicsConfig(), load_factors(), "t"), {"total_fuel_hr_l": (1000.0, 1002.4)})
    assert set(body) == set(made)
    assert set(body["emission"]) == set(made["emission"]) and set(body["quality"]) == set(made["quality"])
    em = estimate_emissions(
        load_factors(),
        fuel_used_l=body["emission"]["activity"],
        fuel_type="diesel",
        distance_km=body["distance_km"],
        load_kg=body["load_avg_kg"],
        vehicle_class="rigid_26_32t",
    )
    assert body["emission"]["factors"] == [f.describe() for f in (em.ttw, *em.wtw) if f]
    assert body["co2_ttw_kg"] == pytest.approx(em.co2_ttw_kg, abs=0.01)
    assert body["co2_wtw_kg"] == pytest.approx(em.co2_wtw_kg, abs=0.01)
    assert (body["co2_kg"], body["co2_boundary"], body["co2_gas"]) == (body["co2_wtw_kg"], "WTW", em.gas("WTW"))


def test_grid_factor__must_be_an_electricity_row() -> None:
    table = load_factors()
    assert check_grid_factor(table, "grid_cn_south_2022").kg_co2e_per_unit == 0.3869
    with pytest.raises(ConfigError, match=r"telematics.emissions.grid_factor: expected an electricity \(kWh\) row"):
        check_grid_factor(table, "diesel_b7_ttw")
    with pytest.raises(ConfigError, match="grid_cn_north_2022"):
        check_grid_factor(table, "grid_mars")


def test_factor_table__china_regional_grids_and_gas_rows_cite_their_source() -> None:
    table = load_factors()
    regions = [n for n in table.names() if n.startswith("grid_cn_") and n != "grid_cn_2022"]
    assert len(regions) == 7
    national = table.get("grid_cn_2022").kg_co2e_per_unit
    values = [table.get(n).kg_co2e_per_unit for n in regions]
    assert min(values) < national < max(values)  # the national mean lies between the regions
    for fuel in ("petrol", "cng", "lng"):
        ttw, wtt = table.get(f"{fuel}_ttw"), table.get(f"{fuel}_wtt")
        assert ttw.source and ttw.year >= 2019 and ttw.boundary == "TTW"
        assert "DESNZ" in wtt.source and wtt.year == 2025 and wtt.unit == ttw.unit
    assert table.get("lng_wtt").kg_co2e_per_unit > table.get("cng_wtt").kg_co2e_per_unit  # liquefaction
    # The TTW rows follow from the IPCC defaults their notes give: kg CO2/TJ x TJ/Gg.
    assert table.get("cng_ttw").kg_co2e_per_unit == pytest.approx(56_100 * 48.0 / 1e6, abs=1e-4)
    assert table.get("petrol_ttw").kg_co2e_per_unit == pytest.approx(69_300 * 44.3 / 1e6 * 0.745, abs=1e-4)


def test_faults__an_event_when_the_active_codes_change() -> None:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    f1 = ActiveFaults(0.0, T0, 0, True, False, False, ((100, 1, 3),), "")
    assert [b["event"] for _, b in pipe.push_faults(f1)] == ["faults"]
    assert pipe.push_faults(f1) == []
    (_, body), *_ = pipe.push_faults(ActiveFaults(1.0, T0, 0, False, False, False, (), ""))
    assert body["dtcs"] == [] and body["source_address"] == 0


def test_counter_track__needs_samples_near_both_ends() -> None:
    pipe = TruckPipeline(TelematicsConfig(), load_factors(), "t")
    track = pipe.counters["total_distance_km"]
    track.push(0.0, 10.0)
    track.push(1000.0, 20.0)
    assert track.delta(0.0, 1000.0) == 10.0
    assert track.delta(0.0, 500.0) is None  # no sample within 120 s of the end
    assert not math.isnan(track.delta(0.0, 1000.0) or math.nan)


def test_config__factor_files_are_read_after_validation_not_in_validators(tmp_path: Path) -> None:
    from edge_agent.pipelines.sensors.config import GridConfig
    from edge_agent.settings import parse_config

    missing = tmp_path / "nope.csv"
    GridConfig(factors_file=missing, factor="grid_xx")  # a validator reads no file: this validates
    TelematicsConfig.model_validate({"emissions": {"factors_file": str(missing)}})
    base = {"profile": "truck", "device": {"id": "d", "site": "s"}}
    with pytest.raises(ConfigError, match=r"c.toml: .*nope.csv: file not found"):
        parse_config({**base, "telematics": {"emissions": {"factors_file": str(missing)}}}, "c.toml")
    with pytest.raises(ConfigError, match=r"c.toml: .*telematics.emissions.grid_factor: expected an electricity"):
        parse_config(
            {**base, "telematics": {"fuel_type": "electricity", "emissions": {"grid_factor": "diesel_b7_ttw"}}},
            "c.toml",
        )
    parse_config(
        {**base, "telematics": {"fuel_type": "electricity", "emissions": {"grid_factor": "grid_cn_south_2022"}}},
        "c.toml",
    )
